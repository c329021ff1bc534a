"""Drive a real Label Studio through one review round trip; run with Label Studio's own Python.

    .cache/label-studio/venv/bin/python builder/dev/label_studio_roundtrip.py EXPORT_DIR --save EXPORT.json \\
        [--answers ANSWERS.json | --answer-with human | --interactive]

EXPORT_DIR is what `tagllm review export` wrote (tasks.json, config.xml, images/). This script
starts Label Studio (SQLite in a temporary data dir, local-files serving rooted at EXPORT_DIR,
listening on 127.0.0.1 only, no browser, no version check or telemetry), creates a project with
the exported labeling config through `label-studio-sdk`, connects images/ as a Local Storage,
imports the tasks with their predictions, checks that an image is served, then gets annotations:

- `--answers FILE`: {key: [labels]} submitted through the API (what the tests do);
- `--answer-with human`: each task answered with the human labels shipped in its data (a scripted
  reviewer for unattended demos);
- `--interactive`: prints the URL and a one-time login; annotate in a browser, press Enter.

Then it exports the project as Label Studio JSON to --save and stops the server. It needs only
the standard library and label-studio-sdk, never tagllm: the two live in separate virtualenvs.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

HOST = "127.0.0.1"


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def start_server(root: Path, data_dir: Path, port: int, user: str, password: str, token: str) -> subprocess.Popen:
    """Label Studio on 127.0.0.1:port, files served from `root`; output goes to data_dir/server.log."""
    exe = Path(sys.executable).with_name("label-studio")
    env = dict(os.environ,
               LABEL_STUDIO_LOCAL_FILES_SERVING_ENABLED="true", LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT=str(root),
               LABEL_STUDIO_BASE_DATA_DIR=str(data_dir), DJANGO_DB="sqlite", LATEST_VERSION_CHECK="false",
               COLLECT_ANALYTICS="false", SENTRY_DSN="", FRONTEND_SENTRY_DSN="", FEATURE_FLAGS_OFFLINE="true",
               LABEL_STUDIO_DISABLE_SIGNUP_WITHOUT_LINK="true")
    cmd = [str(exe), "start", "--no-browser", "--internal-host", HOST, "--port", str(port),
           "--data-dir", str(data_dir), "--username", user, "--password", password,
           "--user-token", token, "--enable-legacy-api-token", "--log-level", "WARNING"]
    log = open(data_dir / "server.log", "wb")
    return subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, cwd=data_dir,
                            start_new_session=True)


def wait_ready(url: str, proc: subprocess.Popen, log: Path, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"label-studio exited with {proc.returncode}:\n{log.read_text(errors='replace')[-3000:]}")
        try:
            with urllib.request.urlopen(f"{url}/api/version", timeout=5) as r:
                if r.status == 200:
                    return
        except OSError:
            time.sleep(1.0)
    raise SystemExit(f"label-studio not ready after {timeout:.0f} s:\n{log.read_text(errors='replace')[-3000:]}")


def stop_server(proc: subprocess.Popen) -> None:
    """Stop the server's whole process group (it was started in its own session)."""
    if proc.poll() is not None:
        return
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=20)


def choices(labels: list[str]) -> list[dict]:
    return [{"from_name": "labels", "to_name": "image", "type": "choices", "value": {"choices": labels}}]


def fetch(url: str, token: str) -> bytes:
    req = urllib.request.Request(url, headers={"Authorization": f"Token {token}"})
    with urllib.request.urlopen(req, timeout=30) as r:
        return r.read()


def round_trip(args: argparse.Namespace, url: str, token: str, login: tuple[str, str]) -> dict:
    from label_studio_sdk import LabelStudio

    export_dir = args.export_dir.resolve()
    tasks = json.loads((export_dir / "tasks.json").read_text())
    ls = LabelStudio(base_url=url, api_key=token)
    project = ls.projects.create(title=args.title, label_config=(export_dir / "config.xml").read_text())
    ls.import_storage.local.create(project=project.id, path=str(export_dir / "images"), title="tagllm images",
                                   use_blob_urls=True)
    imported = ls.projects.import_tasks(project.id, request=tasks, return_task_ids=True)
    if imported.task_count != len(tasks) or imported.prediction_count != len(tasks):
        raise SystemExit(f"imported {imported.task_count} tasks / {imported.prediction_count} predictions "
                         f"of {len(tasks)}")
    served = list(ls.tasks.list(project=project.id))
    first = served[0].data
    name = first["image"].split("d=", 1)[-1].split("/")[-1] if "d=" in first["image"] else None
    if name is not None:  # local-files: the server must hand back the exact bytes
        if fetch(url + first["image"], token) != (export_dir / "images" / name).read_bytes():
            raise SystemExit(f"local-files serving returned other bytes for {first['image']}")
    answers: dict[str, list[str]] = {}
    if args.answers:
        answers = json.loads(Path(args.answers).read_text())
    elif args.answer_with == "human":
        answers = {t.data["key"]: list(t.data.get("human_labels") or []) for t in served}
    submitted = 0
    for task in served:
        key = task.data["key"]
        if key in answers:
            ls.annotations.create(task.id, result=choices(answers[key]), lead_time=1.0)
            submitted += 1
    if args.interactive:
        print(f"Label Studio: {url}/projects/{project.id}/data  (login {login[0]} / {login[1]})", flush=True)
        input("Annotate in the browser (submit each task), then press Enter to export... ")
    data = b"".join(ls.projects.exports.download_sync(project.id, export_type="JSON", download_all_tasks=True))
    args.save.parent.mkdir(parents=True, exist_ok=True)
    args.save.write_bytes(data)
    exported = json.loads(data)
    return {"project": project.id, "tasks": len(tasks), "submitted_by_script": submitted,
            "annotated": sum(1 for t in exported if t.get("annotations")), "saved": str(args.save)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("export_dir", type=Path, help="folder written by `tagllm review export`")
    parser.add_argument("--save", type=Path, required=True, help="where to write Label Studio's JSON export")
    how = parser.add_mutually_exclusive_group(required=True)
    how.add_argument("--answers", help="JSON {key: [labels]} to submit through the API")
    how.add_argument("--answer-with", choices=["human"], help="answer every task with its human labels")
    how.add_argument("--interactive", action="store_true", help="annotate in a browser, then press Enter")
    parser.add_argument("--title", default="tagllm review")
    parser.add_argument("--port", type=int, default=0, help="default: a free port")
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds to wait for the server")
    parser.add_argument("--data-dir", type=Path, help="Label Studio data dir (default: a temporary one, removed)")
    args = parser.parse_args()
    if not (args.export_dir / "tasks.json").is_file():
        parser.error(f"{args.export_dir}: no tasks.json (run `tagllm review export` first)")
    data_dir = args.data_dir or Path(tempfile.mkdtemp(prefix="tagllm-label-studio-"))
    data_dir.mkdir(parents=True, exist_ok=True)
    port = args.port or free_port()
    url = f"http://{HOST}:{port}"
    user, password, token = "reviewer@tagllm.local", secrets.token_urlsafe(12), secrets.token_hex(20)
    proc = start_server(args.export_dir.resolve(), data_dir, port, user, password, token)
    try:
        t0 = time.monotonic()
        wait_ready(url, proc, data_dir / "server.log", args.timeout)
        started = time.monotonic() - t0
        summary = round_trip(args, url, token, (user, password))
        summary["server_start_seconds"] = round(started, 1)
        print(json.dumps(summary), flush=True)
    finally:
        stop_server(proc)
        if args.data_dir is None:
            shutil.rmtree(data_dir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
