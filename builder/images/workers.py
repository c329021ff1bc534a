"""Image preparation in worker processes, fed through pipes by the event loop itself.

Decode threads share the GIL with the event loop: the Python parts of every decode (header
parsing, the load loop, handing the result back) and each GIL hand-over stall the loop that drives
the engine. Here the decodes run in a few worker processes (`python -m builder.images.workers`),
and the loop only writes the encoded bytes to a pipe and reads a short reply: no thread, no GIL
hand-over. Each worker prepares one image at a time, so decoded memory stays below one image
(at most `output.max_image_pixels`) per worker.

Frames, little-endian:
  request: id u64, max_pixels u64, limit_pixels u64, length u32, then the image bytes
  reply:   id u64, status u8, width u32, height u32, length u32, then `head \\0 body`
           status 0: head = the image's format ('jpg'), body = the bytes for the engine, empty when
           they are the original bytes; status 1: head = the failure reason, body = the detail.

A worker that dies (a decoder crash, the OOM killer) is restarted and its images sent again; an
image that a worker dies on twice fails as `decode`.
"""

from __future__ import annotations

import asyncio
import os
import struct
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

from builder.images.prepare import ImageProblem, Prepared, prepare_image

try:
    import fcntl
except ImportError:  # not POSIX: `decoding.decode_pool` uses threads there
    fcntl = None

REQUEST = struct.Struct("<QQQI")
REPLY = struct.Struct("<QBIII")
OK, PROBLEM = 0, 1
READ_SIZE = 1 << 20
F_SETPIPE_SZ = getattr(fcntl, "F_SETPIPE_SZ", 1031)  # Linux's number where Python does not name it
PIPE_BYTES = 1 << 20


@dataclass
class _Job:
    future: asyncio.Future
    frame: bytes
    data: bytes
    tries: int = 1


@dataclass
class _Worker:
    proc: subprocess.Popen
    jobs: dict[int, _Job] = field(default_factory=dict)
    inbox: bytearray = field(default_factory=bytearray)
    outbox: bytearray = field(default_factory=bytearray)
    loop: asyncio.AbstractEventLoop | None = None

    @property
    def rfd(self) -> int:
        return self.proc.stdout.fileno()  # type: ignore[union-attr]

    @property
    def wfd(self) -> int:
        return self.proc.stdin.fileno()  # type: ignore[union-attr]


class ProcessDecoders:
    """`prepare` awaited from the event loop; the work runs in `workers` processes."""

    def __init__(self, workers: int):
        self.workers = max(1, workers)
        self._procs: list[_Worker] = []
        self._next_id = 0

    async def prepare(self, data: bytes | None, max_pixels: int, limit_pixels: int) -> Prepared:
        if not data:  # missing or empty: nothing to send
            return prepare_image(data, max_pixels, limit_pixels)
        loop = asyncio.get_running_loop()
        worker = min(self._ready(loop), key=lambda w: len(w.jobs))
        self._next_id += 1
        job = _Job(loop.create_future(), REQUEST.pack(self._next_id, max_pixels, limit_pixels, len(data)) + data, data)
        worker.jobs[self._next_id] = job
        self._send(worker, job.frame)
        return await job.future

    def pids(self) -> list[int]:
        """Process ids of the running workers (for memory and CPU accounting)."""
        return [worker.proc.pid for worker in self._procs]

    def _ready(self, loop: asyncio.AbstractEventLoop) -> list[_Worker]:
        """Live workers watched by this loop (a new loop, e.g. the next `asyncio.run`, takes them over)."""
        if not self._procs:
            self._procs = [_spawn() for _ in range(self.workers)]
        for worker in self._procs:
            if worker.loop is not loop:
                self._detach(worker)
                worker.jobs.clear()  # their tasks died with the old loop; late replies are read and dropped
                worker.loop = loop
                loop.add_reader(worker.rfd, self._on_readable, worker)
                if worker.outbox:
                    loop.add_writer(worker.wfd, self._flush, worker)
        return self._procs

    def _send(self, worker: _Worker, frame: bytes) -> None:
        pending = bool(worker.outbox)
        worker.outbox += frame
        if not pending:
            self._flush(worker)

    def _flush(self, worker: _Worker) -> None:
        try:
            while worker.outbox:
                written = os.write(worker.wfd, worker.outbox)
                del worker.outbox[:written]
        except BlockingIOError:
            assert worker.loop is not None
            worker.loop.add_writer(worker.wfd, self._flush, worker)
            return
        except OSError:  # the worker is gone: the reader sees EOF and restarts it
            worker.outbox.clear()
            return
        if worker.loop is not None:
            worker.loop.remove_writer(worker.wfd)

    def _on_readable(self, worker: _Worker) -> None:
        try:
            chunk = os.read(worker.rfd, READ_SIZE)
        except BlockingIOError:
            return
        if not chunk:
            self._restart(worker)
            return
        worker.inbox += chunk
        while len(worker.inbox) >= REPLY.size:
            ident, status, width, height, length = REPLY.unpack_from(worker.inbox)
            end = REPLY.size + length
            if len(worker.inbox) < end:
                return
            head, _, body = bytes(worker.inbox[REPLY.size:end]).partition(b"\0")
            del worker.inbox[:end]
            job = worker.jobs.pop(ident, None)
            if job is None or job.future.done():
                continue
            if status == OK:
                job.future.set_result(Prepared(body or job.data, width, height, head.decode() or None))
            else:
                job.future.set_exception(ImageProblem(head.decode(), body.decode("utf-8", "replace")))

    def _restart(self, worker: _Worker) -> None:
        """A worker died: start another and send its images again (twice dead on one: a decode failure)."""
        loop = worker.loop
        self._detach(worker)
        worker.proc.wait()
        fresh = _spawn()
        self._procs[self._procs.index(worker)] = fresh
        fresh.loop = loop
        if loop is not None:
            loop.add_reader(fresh.rfd, self._on_readable, fresh)
        for ident, job in worker.jobs.items():
            if job.future.done():
                continue
            if job.tries >= 2:
                job.future.set_exception(ImageProblem(
                    "decode", f"the image decoder process died on this image (exit {worker.proc.returncode})"))
                continue
            job.tries += 1
            fresh.jobs[ident] = job
            self._send(fresh, job.frame)

    def _detach(self, worker: _Worker) -> None:
        if worker.loop is not None and not worker.loop.is_closed():
            worker.loop.remove_reader(worker.rfd)
            worker.loop.remove_writer(worker.wfd)
        worker.loop = None

    def close(self) -> None:
        for worker in self._procs:
            self._detach(worker)
            for stream in (worker.proc.stdin, worker.proc.stdout):
                if stream is not None:
                    stream.close()
            try:
                worker.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                worker.proc.kill()
                worker.proc.wait()
        self._procs = []


def _spawn() -> _Worker:
    package_root = str(Path(__file__).resolve().parents[1])
    env = dict(os.environ)
    env["PYTHONPATH"] = package_root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    proc = subprocess.Popen([sys.executable, "-m", "builder.images.workers"], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, env=env, bufsize=0, close_fds=True)
    assert proc.stdin is not None and proc.stdout is not None
    for fd in (proc.stdin.fileno(), proc.stdout.fileno()):
        try:  # a typical photo in one write (Linux pipes hold 64 KiB unless asked for more)
            fcntl.fcntl(fd, F_SETPIPE_SZ, PIPE_BYTES)
        except (OSError, AttributeError):
            pass
    os.set_blocking(proc.stdin.fileno(), False)
    os.set_blocking(proc.stdout.fileno(), False)
    return _Worker(proc)


def serve(source: BinaryIO, sink: BinaryIO) -> None:
    """The worker's loop: read a request, prepare the image, write the reply; until the pipe closes."""
    while True:
        header = source.read(REQUEST.size)
        if len(header) < REQUEST.size:
            return
        ident, max_pixels, limit_pixels, length = REQUEST.unpack(header)
        data = source.read(length)
        try:
            prepared = prepare_image(data, max_pixels, limit_pixels)
            body = b"" if prepared.data is data else prepared.data
            reply = (OK, prepared.width, prepared.height, (prepared.ext or "").encode(), body)
        except ImageProblem as exc:
            reply = (PROBLEM, 0, 0, exc.reason.encode(), exc.detail.encode())
        except Exception as exc:  # a decoder bug on a malformed file: that image fails, the worker lives on
            reply = (PROBLEM, 0, 0, b"decode", f"cannot decode image: {type(exc).__name__}: {exc}".encode())
        status, width, height, head, body = reply
        sink.write(REPLY.pack(ident, status, width, height, len(head) + 1 + len(body)) + head + b"\0" + body)
        sink.flush()


if __name__ == "__main__":
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle; EOF stops the worker
    try:
        serve(sys.stdin.buffer, sys.stdout.buffer)
    except BrokenPipeError:  # the parent is gone (Ctrl-C, a kill) while a reply was written: nothing to tell
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error at interpreter exit
