"""A GCS emulator (PyPI `gcp-storage-emulator`) on 127.0.0.1, one per test session, reached through
STORAGE_EMULATOR_HOST as gcsfs reads it. A stand-in: it serves the JSON API gcsfs speaks, but ignores
preconditions (ifGenerationMatch), so the store lock's exclusivity is proven against moto's S3 only.
"""

from __future__ import annotations

import atexit
import itertools
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

_buckets = itertools.count()
_server: dict[str, str] = {}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def endpoint() -> str:
    """Start the emulator once (a process of its own) and return its URL."""
    if "url" not in _server:
        exe = shutil.which("gcp-storage-emulator", path=str(Path(sys.executable).parent))
        if exe is None:
            raise RuntimeError("gcp-storage-emulator is not installed (pip install -e '.[dev]')")
        port = _free_port()
        proc = subprocess.Popen([exe, "start", "--host=127.0.0.1", f"--port={port}", "--in-memory"],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        atexit.register(proc.terminate)
        deadline = time.monotonic() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("the GCS emulator did not start") from None
                time.sleep(0.1)
        _server["url"] = f"http://127.0.0.1:{port}"
    return _server["url"]


def new_bucket() -> str:
    import gcsfs

    name = f"tagllm-test-{os.getpid()}-{next(_buckets)}"
    gcsfs.GCSFileSystem.clear_instance_cache()
    gcsfs.GCSFileSystem(project="tagllm-test").mkdir(name)
    return f"gs://{name}"
