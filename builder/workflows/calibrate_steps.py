"""The pieces `workflows/calibrate.py` composes: its settings, the labeled items and their split, the
engines, one strategy pass over a set of images (`Calibrator.measure`), and the LLM's proposals
(`Calibrator.propose`)."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from builder.analysis.metrics import label_stats, overall
from builder.analysis.split import split_dev_heldout
from builder.ask.asker import Asker
from builder.ask.cache import RequestCache
from builder.engines.base import Engine, Request, Result
from builder.engines.references import reference_labels
from builder.errors import UserError
from builder.method.base import TaggingContext
from builder.method.calibration import (
    Decision,
    Proposal,
    calibration_prompt,
    entry_yaml,
    parse_entry,
    parse_revision,
    revision_request,
)
from builder.method.strategies import make_strategy
from builder.recipe.concepts import Concept, ConceptSheet
from builder.recipe.model import LoadedRecipe
from builder.recipe.vocab import Vocabulary
from builder.records import Item, Record


@dataclass
class Settings:
    """What a calibration is asked to do (the split and the rounds are recorded in the provenance)."""

    dev: int = 200  # images the decisions are made on
    held_out: int | None = None  # images only measured: None as many as dev, 0 none (every figure in-sample)
    seed: int = 0  # of the dev / held-out split
    rounds: int = 2
    worst: int = 5  # labels revised per round
    tune: bool = True  # tune per-label thresholds on the dev scores
    min_positives: int = 3  # dev positives a label needs before its threshold is tuned
    interactive: bool = False  # ask on the terminal about each proposal
    strategy: str | None = None  # run on the dev set; None: the recipe's
    llm_engine: str | None = None  # the LLM that revises entries; all four None: the tagging engine
    llm_model: str | None = None
    llm_servers: tuple[str, ...] = ()
    llm_api: str | None = None
    work_dir: str | Path | None = None  # keeps the request cache, so a rerun replays every answer


@dataclass
class DevRun:
    """One pass of the strategy over a set of images, with everything calibration reads from it."""

    keys: list[str]
    truth: np.ndarray  # images x labels, human
    pred: np.ndarray  # images x labels, the strategy's final labels
    scores: np.ndarray  # images x labels, stage-2 scores (0 = never scored)
    names: list[str]
    failed: int = 0

    def label(self, name: str) -> dict[str, Any]:
        c = self.names.index(name)
        return label_stats(self.truth[:, c], self.pred[:, c])

    def confusions(self, vocab: Vocabulary) -> dict[str, Counter[str]]:
        """Predicted L -> how often each human label M of L's group was there instead of L."""
        out: dict[str, Counter[str]] = {n: Counter() for n in self.names}
        group = {n: vocab.group_of(n) for n in self.names}
        for i in range(len(self.keys)):
            present = [self.names[c] for c in np.flatnonzero(self.truth[i])]
            for c in np.flatnonzero(self.pred[i] & ~self.truth[i]):
                wrong = self.names[c]
                out[wrong].update(m for m in present if group[m] == group[wrong])
        return out

    def target_rows(self, vocab: Vocabulary) -> list[tuple[str, dict[str, Any], int]]:
        """(label, stats, confusions) per label, as `method.calibration.pick_targets` reads them."""
        confusions = self.confusions(vocab)
        return [(n, self.label(n), sum(confusions[n].values())) for n in self.names]

    def overall(self, pred: np.ndarray | None = None) -> dict[str, Any]:
        return overall(self.truth, self.pred if pred is None else pred, self.scores)


def labeled_items(loaded: LoadedRecipe, n: int) -> list[Item]:
    """The first `n` readable source items that carry human labels."""
    from builder.sources import open_source

    items = []
    for item in open_source(loaded.recipe.source, loaded.vocab, loaded.base_dir):
        if item.error is None and item.reference is not None:
            items.append(item)
            if len(items) >= n:
                break
    if not items:
        raise UserError(f"{loaded.origin}: the source has no items with human labels to calibrate on")
    return items


def dev_and_held_out(loaded: LoadedRecipe, dev: int, held_out: int, seed: int,
                     echo: Callable[[str], None]) -> tuple[list[Item], list[Item]]:
    """Read dev + held_out labeled items and split them (seeded, stratified); held_out 0: no split."""
    if dev < 1 or held_out < 0:
        raise UserError("--dev must be at least 1 and --held-out at least 0")
    items = labeled_items(loaded, dev + held_out)
    if held_out == 0:
        echo("no held-out images (--held-out 0): every figure below is in-sample")
        return items, []
    if len(items) <= dev:
        raise UserError(f"{loaded.origin}: only {len(items)} items with human labels; --dev {dev} leaves none "
                        "to hold out (lower --dev, or pass --held-out 0 to measure in-sample)")
    if len(items) < dev + held_out:
        echo(f"only {len(items)} items with human labels: held-out part has {len(items) - dev}, not {held_out}")
    d, h = split_dev_heldout([it.reference or [] for it in items], dev, len(items) - dev, seed)
    return [items[i] for i in d], [items[i] for i in h]


def calibration_engines(loaded: LoadedRecipe, s: Settings, engine: Engine | None, llm: Engine | None,
                        items: list[Item]) -> tuple[Engine, Engine]:
    """The tagging engine, and the calibration LLM: the tagging engine itself unless the settings name
    another. A simulated tagging engine answers from the human labels of `items`."""
    from builder.engines.registry import engine_from_spec, open_engine

    spec = loaded.recipe.engine
    if engine is None:
        limits = (spec.max_pixels, loaded.recipe.output.max_image_pixels)  # as the strategy prepares images
        engine = open_engine(spec, loaded.vocab, references=lambda: reference_labels(items, *limits))
    if llm is not None:
        return engine, llm
    kind, model, servers, api = s.llm_engine, s.llm_model, list(s.llm_servers), s.llm_api
    if (kind is None or kind == engine.name) and model in (None, engine.model) and not servers and api is None:
        return engine, engine
    kind = kind or engine.name
    update: dict[str, Any] = {"kind": kind, "model": model or (spec.model if kind == spec.kind else None)}
    if kind != spec.kind:
        update["args"] = {}
    if servers:
        update["servers"] = servers
    if api is not None:
        update["api"] = api
    return engine, engine_from_spec(spec.model_copy(update=update), loaded.vocab, kind)


class Calibrator:
    """Holds the engines and the cache for one calibration."""

    def __init__(self, loaded: LoadedRecipe, engine: Engine, llm: Engine, cache: RequestCache | None,
                 strategy: str, echo: Callable[[str], None]):
        self.loaded = loaded
        self.vocab = loaded.vocab
        self.engine = engine
        self.llm = llm
        self.strategy = strategy
        self.echo = echo
        digest = self.vocab.digest()
        self.asker = Asker(engine, cache, digest)
        self.llm_asker = Asker(llm, cache, digest)

    async def measure(self, items: list[Item], sheet: ConceptSheet) -> DevRun:
        """The strategy over these items with this sheet (cached answers are replayed)."""
        ctx = TaggingContext(self.loaded)
        ctx.concepts = sheet
        strategy = make_strategy(self.strategy, ctx, self.asker, self.engine.simulated)
        window = asyncio.Semaphore(max(4, min(self.engine.concurrency, 256)))

        async def one(item: Item) -> Record:
            async with window:
                return await strategy.tag(item)

        records = await asyncio.gather(*(one(item) for item in items))
        return _dev_run(records, self.vocab.names)

    async def propose(self, round_no: int, sheet: ConceptSheet, run: DevRun, targets: list[str],
                      rejected: dict[str, list[dict[str, Any]]]) -> list[Proposal]:
        """Ask the LLM for a revised entry of each target label (all requests together)."""
        confusions = run.confusions(self.vocab)
        requests: list[Request] = []
        parsers: dict[str, Callable[[Request, Result], Concept]] = {}
        pending: list[Proposal] = []
        for label in targets:
            current = sheet.concept(self.vocab, label)
            said = [{"label": m, "count": n} for m, n in confusions[label].most_common(5)]
            missed = [{"label": other, "count": cnt[label]} for other, cnt in confusions.items() if cnt[label]]
            missed.sort(key=lambda c: -c["count"])
            stats = run.label(label)
            prompt = calibration_prompt(self.vocab, label, current, stats, said, missed[:5], len(run.keys),
                                        rejected.get(label, []))
            requests.append(revision_request(prompt, self.vocab.names, tag=f"calibrate:{label}"))
            parsers[f"calibrate:{label}"] = parse_revision(self.vocab, label, current)
            pending.append(Proposal(round_no, label, current, current, stats, said, dev_size=len(run.keys)))
        answers = await self.llm_asker.ask(requests, lambda req, res: parsers[req.tag](req, res))
        out = []
        for proposal, answer in zip(pending, answers, strict=True):
            if not answer.ok:
                self.echo(f"  {proposal.label}: no usable revision ({answer.result.error})")
                continue
            proposal.after = answer.value
            out.append(proposal)
        return out


def _dev_run(records: list[Record], names: list[str]) -> DevRun:
    col = {n: i for i, n in enumerate(names)}
    ok = [r for r in records if r.status == "ok"]
    truth = np.zeros((len(ok), len(names)), dtype=bool)
    pred = np.zeros_like(truth)
    scores = np.zeros(truth.shape)
    for i, r in enumerate(ok):
        truth[i, [col[n] for n in r.reference or [] if n in col]] = True
        pred[i, [col[n] for n in r.labels if n in col]] = True
        for n, s in r.scores.items():
            if n in col:
                scores[i, col[n]] = s
    return DevRun([r.key for r in ok], truth, pred, scores, names, failed=len(records) - len(ok))


def prompt_decision(proposal: Proposal, loaded: LoadedRecipe) -> Decision:
    """Show a proposal (diff + dev metrics) and ask accept / edit (in $EDITOR) / skip, with click."""
    import click

    click.echo(f"\n--- round {proposal.round}: {proposal.label} ---")
    click.echo(proposal.diff() or "(no change to the entry)")
    click.echo(proposal.metrics_line())
    verdict = "improves F1" if proposal.improves() else "does not improve F1"
    click.echo(f"the proposal {verdict} on the dev set")
    default = "a" if proposal.improves() else "s"
    while True:
        choice = click.prompt("[a]ccept, [e]dit, [s]kip", type=click.Choice(["a", "e", "s"]),
                              default=default, show_choices=False)
        if choice == "a":
            return Decision("accept", proposal.after)
        if choice == "s":
            return Decision("skip")
        text = click.edit(entry_yaml(proposal.label, proposal.after), extension=".yaml")
        if text is None:
            click.echo("nothing saved; the proposal is unchanged")
            continue
        try:
            edited = parse_entry(text, loaded.vocab, proposal.label)
        except UserError as exc:
            click.echo(f"error: {exc}")
            continue
        click.echo(proposal.diff(edited))
        return Decision("edit", edited)
