"""Builds of the demo against real servers: vLLM (CPU) with a tiny random Idefics3, and the real
sglang-router in front of two serve-sim workers. Marker `real`; `make test-real` prepares them.

The tiny model is random: its yes/no preferences are noise, so these tests assert structure
(every item ok, every candidate scored from logprobs, scores not all equal, token counts), never
label quality.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from real.conftest import build

pytestmark = pytest.mark.real


def scored_checks(records: list) -> tuple[int, int]:
    """(candidates, scored candidates) over ok records; each verify answer must carry yes_prob."""
    candidates = sum(len(r.candidates) for r in records if r.status == "ok")
    scored = sum(1 for r in records for raw in r.raw if raw["tag"].startswith("verify:") and "yes_prob" in raw)
    return candidates, scored


@pytest.mark.parametrize("api", ["vllm", "openai"])
def test_demo_on_real_vllm(vllm_server: str, tmp_path: Path, api: str) -> None:
    stats, records, result = build(tmp_path, api, ["engine.kind=http", f"engine.api={api}",
                                                   f"engine.servers=[{vllm_server}]", "engine.timeout=300"])
    ok = [r for r in records if r.status == "ok"]
    candidates, scored = scored_checks(records)
    scores = [s for r in ok for s in r.scores.values()]
    print(f"\n[{api}] images {stats['images']} ok {stats['ok']} failed {stats['failed']} "
          f"{stats['failed_by_reason']} candidates {candidates} scored {scored} distinct scores "
          f"{len(set(scores))} prompt_tokens {stats['prompt_tokens']} cached_tokens {stats['cached_tokens']} "
          f"completion_tokens {stats['completion_tokens']} sent {result.sent} "
          f"kind {result.engine.get('server_kind')} ids {result.engine.get('server_info', {}).get('yes_no_token_ids')}",
          file=sys.stderr)
    assert result.engine["server_kind"] == "vllm"  # detected from the server when --api openai
    assert stats["ok"] == stats["images"] == 25, stats["failed_by_reason"]
    assert candidates == scored > 0
    assert all(0.0 <= s <= 1.0 for s in scores) and len(set(scores)) > 1
    assert stats["prompt_tokens"] > 0 and stats["completion_tokens"] > 0
    assert not result.simulated


def test_demo_through_real_sglang_router(router_over_two_sims: str, tmp_path: Path) -> None:
    stats, records, result = build(tmp_path, "router", ["engine.kind=http", "engine.api=http-sglang",
                                                        f"engine.servers=[{router_over_two_sims}]"])
    candidates, scored = scored_checks(records)
    print(f"\n[router] images {stats['images']} ok {stats['ok']} failed {stats['failed']} "
          f"candidates {candidates} scored {scored} sent {result.sent}", file=sys.stderr)
    assert stats["ok"] == stats["images"] == 25
    assert candidates == scored > 0
