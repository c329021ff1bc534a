"""What every command shares: one-line errors, recipe overrides from options, the build summary."""

from __future__ import annotations

import functools
import json
import sys
from collections.abc import Callable
from typing import Any

import click

from builder.errors import RunError, UserError, os_failure

SIM_BANNER = ("SIMULATED ENGINE: labels are the source's human labels plus seeded noise, not model output. "
              "Use them to test the pipeline only.")


def handle_errors(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Turn our errors into one line on stderr and the right exit code."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except (UserError, RunError) as exc:
            click.echo(f"error: {exc}", err=True)
            sys.exit(exc.exit_code)
        except OSError as exc:  # a full disk, no permission, ...: one line naming the path; else the traceback
            problem = os_failure(exc, "the output")
            if problem is None:
                raise
            click.echo(f"error: {problem}", err=True)
            sys.exit(problem.exit_code)
        except KeyboardInterrupt:
            click.echo("interrupted: finished shards and cached answers are kept; rerun to resume", err=True)
            sys.exit(130)

    return wrapper




def build_overrides(engine: str | None, model: str | None, servers: tuple[str, ...], api: str | None,
                     limit: int | None, out: str | None, formats: tuple[str, ...], strategy: str | None,
                     sets: tuple[str, ...]) -> list[str]:
    overrides = []
    if servers and not engine:
        engine = "http"
    pairs = {"engine.kind": engine, "engine.model": model, "engine.api": api, "source.limit": limit,
             "output.dir": out, "tagging.strategy": strategy}
    overrides += [f"{k}={v}" for k, v in pairs.items() if v is not None]
    if servers:
        overrides.append("engine.servers=" + json.dumps(list(servers)))
    if formats:
        overrides.append("output.formats=" + json.dumps(list(formats)))
    return overrides + list(sets)


def print_summary(result: Any) -> None:
    s = result.stats
    cost = s.get("cost", {})
    reasons = ", ".join(f"{k} {v}" for k, v in s.get("failed_by_reason", {}).items()) or "none"
    click.echo(f"output: {getattr(result, 'target', None) or result.out}")
    click.echo(f"images {s['images']}: ok {s['ok']}, failed {s['failed']} ({reasons})")
    if s.get("failed"):
        from builder.publish.failures import failure_lines

        for line in failure_lines(result.out):
            click.echo(line)
    rerun = getattr(result, "rerun", None)
    if rerun:
        click.echo(f"items: {rerun['new']} new, {rerun['kept']} kept from the earlier build, "
                   f"{rerun['redone']} failed before and tried again")
    click.echo(f"requests/image {cost.get('requests_per_image')}, sent this run {result.sent}, "
               f"shards {result.shards} ({result.skipped_shards} kept from an earlier run)")
    for note in getattr(result, "notes", None) or []:
        if note:
            click.echo(note)
    top = list(s.get("label_counts", {}).items())[:8]
    if top:
        click.echo("most frequent labels: " + ", ".join(f"{k} {v}" for k, v in top))
    if result.simulated:
        click.echo(SIM_BANNER)


def need(extra: str, fn: Callable[[], Any]) -> Any:
    """Import an optional part; a missing dependency becomes one line naming the extra."""
    try:
        return fn()
    except ImportError as exc:
        hint = f"pip install -e '.[{extra}]' in a checkout"
        raise UserError(f"this command needs tagllm[{extra}] ({exc.name} is missing): {hint}") from exc
