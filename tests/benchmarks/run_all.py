"""`make bench`: run every benchmark script, each in its own process, and print their lines.

Figure lines look like `NAME: ratio R (raw numbers) goal G PASS|MISS`; lines starting with `#` are
details (breakdowns, secondary figures, timings). The last line names the machine. A MISS does not
fail the run; a script that crashes does (exit status 1).

    .venv/bin/python tests/benchmarks/run_all.py [--quick] [--only overhead,saturation,mllm_work,memory,scaling,label_issues,decode_memory,sglang_server,object_store]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import benchlib as bl  # noqa: E402

SCRIPTS = ("overhead", "saturation", "mllm_work", "memory", "scaling", "label_issues", "decode_memory",
           "sglang_server", "object_store")  # memory also prints SCALE; sglang_server skips without the SGLang venv


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes (a smoke test, about a minute)")
    parser.add_argument("--only", help="comma-separated subset of: " + ", ".join(SCRIPTS))
    args = parser.parse_args()
    names = [n.strip() for n in args.only.split(",")] if args.only else list(SCRIPTS)
    unknown = [n for n in names if n not in SCRIPTS]
    if unknown:
        parser.error(f"unknown benchmark(s): {', '.join(unknown)}")
    started = time.perf_counter()
    failed: list[str] = []
    timings: list[str] = []
    for name in names:
        cmd = [sys.executable, str(HERE / f"bench_{name}.py")] + (["--quick"] if args.quick else [])
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, cwd=bl.REPO, env=bl.python_env(), stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True, bufsize=1)
        assert proc.stdout is not None
        for line in proc.stdout:
            print(line.rstrip("\n"), flush=True)
        stderr = proc.stderr.read() if proc.stderr else ""
        code = proc.wait()
        elapsed = time.perf_counter() - t0
        timings.append(f"{name} {elapsed:.0f} s")
        if code != 0:
            failed.append(name)
            print(f"# bench_{name}.py FAILED (exit {code}):", flush=True)
            for line in stderr.strip().splitlines()[-25:]:
                print(f"#   {line}", flush=True)
    total = time.perf_counter() - started
    print(f"# timings: {', '.join(timings)}; total {total:.0f} s{' (--quick)' if args.quick else ''}", flush=True)
    print(bl.machine(), flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
