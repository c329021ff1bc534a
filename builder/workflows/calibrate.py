"""`tagllm calibrate`: revise a vocabulary's concept sheet on human-labeled images, decide on a dev
part and report a held-out part.

In order:

1. reads the first dev + held-out source items that carry human labels and splits them (seeded,
   stratified so rare labels land on both sides) into a dev part and a held-out part;
2. runs the recipe's strategy on the dev part (through a request cache, so a re-check only sends
   the verification questions whose prompt changed) and measures each label's errors;
3. asks an LLM for revised entries of the worst labels (`method.calibration`), re-checks them on
   the dev part and keeps one only when that label's dev F1 improves (or a person accepts it);
4. repeats for `rounds`, then tunes per-label thresholds on the dev scores;
5. measures the held-out part with the original and the calibrated sheet: the figures to quote;
6. writes the sheet with a `provenance` block (models, date, split, dev and held-out metrics,
   the dev keys, every proposal and what became of it).
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from builder import __version__
from builder.analysis.metrics import apply_thresholds, label_stats, overall, tune_thresholds
from builder.ask.cache import RequestCache
from builder.engines.base import Engine
from builder.errors import UserError
from builder.method.base import TaggingContext
from builder.method.calibration import (
    EPS,
    KEEP_RULE,
    SHEET_STRATEGIES,
    SIMULATED_NOTICE,
    Decide,
    Proposal,
    new_proposals,
    pick_targets,
    settle,
    with_entries,
)
from builder.recipe.concepts import Concept, ConceptSheet
from builder.recipe.model import LoadedRecipe, load_recipe
from builder.records import Item
from builder.workflows.calibrate_steps import (
    Calibrator,
    DevRun,
    Settings,
    calibration_engines,
    dev_and_held_out,
    prompt_decision,
)


@dataclass
class Figures:
    """Overall metrics of one part (dev or held-out) before, after, and after threshold tuning."""

    images: int
    before: dict[str, Any]
    after: dict[str, Any]
    after_tuned: dict[str, Any] | None = None


@dataclass
class CalibrationResult:
    sheet: ConceptSheet
    path: Path | None
    dev: Figures
    held_out: Figures | None
    rounds_run: int
    proposals: list[Proposal] = field(default_factory=list)
    simulated: bool = False

    @property
    def dev_size(self) -> int:
        return self.dev.images

    @property
    def before(self) -> dict[str, Any]:
        return self.dev.before

    @property
    def after(self) -> dict[str, Any]:
        return self.dev.after

    @property
    def kept(self) -> list[Proposal]:
        return [p for p in self.proposals if p.decision in ("kept", "accepted", "edited")]

    def summary(self) -> str:
        """A few lines for the command line: dev and held-out side by side."""
        lines = ["SIMULATED: " + SIMULATED_NOTICE] if self.simulated else []
        lines.append(f"rounds run: {self.rounds_run}; proposals {len(self.proposals)}, kept {len(self.kept)}")
        parts = [("dev", self.dev)] + ([("held-out", self.held_out)] if self.held_out else [])
        lines.append(f"{'':>13}  " + "  ".join(f"{f'{name} ({f.images} images)':<37}" for name, f in parts))
        for row in ("before", "after", "after_tuned"):
            cells = [_cells(getattr(f, row)) for _, f in parts]
            if all(cells):
                lines.append(f"{row.replace('_', ' '):>13}  " + "  ".join(f"{c:<37}" for c in cells))
        if self.held_out:
            lines.append("decisions were made on the dev images; quote the held-out figures")
            tuned = self.held_out.after_tuned
            if tuned and tuned["CF1"] < self.held_out.after["CF1"]:
                lines.append(f"warning: the tuned thresholds lower the held-out CF1 ({self.held_out.after['CF1']:.3f} "
                             f"-> {tuned['CF1']:.3f}): rerun with --no-tune or a larger --dev")
        for p in self.kept:
            after = p.metrics_after or {}
            lines.append(f"  kept {p.label!r} (round {p.round}, {p.decision}): dev F1 {p.metrics_before['f1']:.3f} -> "
                         f"{after.get('f1', float('nan')):.3f}, fp {p.metrics_before['fp']} -> {after.get('fp', '?')}")
        if self.path is not None:
            lines.append(f"sheet: {self.path}")
        return "\n".join(lines)


def _cells(m: dict[str, Any] | None) -> str:
    if not m:
        return ""
    return " ".join(f"{k} {m[k]:.3f}" for k in ("CF1", "OF1", "mAP") if m.get(k) is not None)


def calibrate(recipe: str | Path | LoadedRecipe, settings: Settings | None = None,
              out_sheet: str | Path | None = None, *, overrides: list[str] | None = None,
              engine: Engine | None = None, llm: Engine | None = None, decide: Decide | None = None,
              echo: Callable[[str], None] | None = None) -> CalibrationResult:
    """Calibrate the recipe's concept sheet as `settings` say (see the module doc and `Settings`).

    `engine` / `llm`: ready engines (else built from the recipe and the settings' LLM choice).
    `decide` replaces the terminal prompt of `settings.interactive`. `echo` prints progress lines.
    """
    loaded = recipe if isinstance(recipe, LoadedRecipe) else load_recipe(recipe, overrides or [])
    s = settings or Settings()
    name = s.strategy or loaded.recipe.tagging.strategy
    if name not in SHEET_STRATEGIES:
        raise UserError(f"strategy {name!r} does not use the concept sheet; calibrate with one of: "
                        f"{', '.join(SHEET_STRATEGIES)} (--strategy)")
    if s.rounds < 1 or s.worst < 1:
        raise UserError("--rounds and --worst must be at least 1")
    s = dataclasses.replace(s, held_out=s.dev if s.held_out is None else s.held_out,
                            interactive=s.interactive or decide is not None)
    TaggingContext(loaded)  # templates parse before anything runs
    say = echo or (lambda line: None)
    dev_items, held_items = dev_and_held_out(loaded, s.dev, s.held_out, s.seed, say)
    engine, llm = calibration_engines(loaded, s, engine, llm, dev_items + held_items)
    if decide is None and s.interactive:
        decide = lambda proposal: prompt_decision(proposal, loaded)  # noqa: E731
    with tempfile.TemporaryDirectory(prefix="tagllm-calibrate-") as tmp:
        cache = RequestCache(Path(s.work_dir or tmp) / "calibrate-cache.sqlite")
        try:
            cal = Calibrator(loaded, engine, llm, cache, name, say)
            result = asyncio.run(_with_engines(cal, _workflow(cal, dev_items, held_items, s, decide)))
        finally:
            cache.close()
    result.sheet.provenance = {**_describe_run(loaded, name, engine, llm, s), **result.sheet.provenance}
    if out_sheet is not None:
        result.path = Path(out_sheet)
        result.path.parent.mkdir(parents=True, exist_ok=True)
        result.sheet.save(result.path)
    return result


async def _with_engines(cal: Calibrator, work: Any) -> CalibrationResult:
    engines = [cal.engine] if cal.llm is cal.engine else [cal.engine, cal.llm]
    for e in engines:
        await e.start()
    try:
        return await work
    finally:
        for e in engines:
            await e.close()


@dataclass
class _State:
    """What the rounds carry from one to the next."""

    sheet: ConceptSheet
    current: DevRun
    proposals: list[Proposal] = field(default_factory=list)
    tried: dict[str, set[str]] = field(default_factory=dict)
    rejected: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    rounds_run: int = 0


async def _workflow(cal: Calibrator, dev_items: list[Item], held_items: list[Item], s: Settings,
                    decide: Decide | None) -> CalibrationResult:
    base = cal.loaded.concepts
    sheet = base.model_copy(deep=True)
    sheet.vocabulary = sheet.vocabulary or cal.vocab.name
    first = await _first_run(cal, dev_items, sheet)
    state = _State(sheet, first)
    for round_no in range(1, s.rounds + 1):
        if not await _round(cal, dev_items, state, round_no, s.worst, decide):
            break
    final = state.current
    thresholds, tuned_pred = _tune(final, cal.loaded, s.min_positives) if s.tune else ({}, final.pred)
    sheet = state.sheet
    if thresholds:
        sheet = with_entries(sheet, {n: sheet.concepts.get(n, Concept()).model_copy(update={"threshold": t})
                                     for n, t in thresholds.items()}, keep_threshold=False)
    dev = Figures(len(first.keys), first.overall(), final.overall(),
                  final.overall(tuned_pred) if thresholds else None)
    held = await _held_out(cal, held_items, base, state.sheet, thresholds)
    sheet.version = f"{base.version}+calibrated.{dt.date.today():%Y%m%d}"
    simulated = cal.engine.simulated or cal.llm.simulated
    sheet.provenance = _provenance(cal, first, final, dataclasses.replace(final, pred=tuned_pred), thresholds,
                                   dev, held, state, simulated)
    return CalibrationResult(sheet, None, dev, held, state.rounds_run, state.proposals, simulated)


async def _first_run(cal: Calibrator, items: list[Item], sheet: ConceptSheet) -> DevRun:
    first = await cal.measure(items, sheet)
    if first.failed:
        cal.echo(f"{first.failed} dev items failed (engine or image errors) and are left out of the metrics")
    if not len(first.keys):
        raise UserError("no dev item could be tagged; nothing to calibrate on")
    cal.echo(f"dev set: {len(first.keys)} images; before: CF1 {first.overall()['CF1']:.3f}")
    return first


async def _round(cal: Calibrator, items: list[Item], state: _State, round_no: int, worst: int,
                 decide: Decide | None) -> bool:
    """One propose / re-check / decide round; False when there is nothing left to try."""
    targets = pick_targets(state.current.target_rows(cal.vocab), worst)
    if not targets:
        cal.echo("no label has dev errors left; stopping")
        return False
    state.rounds_run = round_no
    cal.echo(f"round {round_no}: revising {', '.join(targets)}")
    fresh = new_proposals(await cal.propose(round_no, state.sheet, state.current, targets, state.rejected),
                          state.tried)
    if not fresh:
        cal.echo("  the LLM proposed nothing new; stopping")
        return False
    trial = await cal.measure(items, with_entries(state.sheet, {p.label: p.after for p in fresh}))
    for p in fresh:
        p.metrics_after = trial.label(p.label)
    accepted = settle(fresh, decide, state.rejected)
    for p in fresh:
        b, a = p.metrics_before, p.metrics_after or {}
        cal.echo(f"  {p.label}: F1 {b['f1']:.3f} -> {a['f1']:.3f}, fp {b['fp']} -> {a['fp']}, "
                 f"fn {b['fn']} -> {a['fn']} ({p.decision})")
    state.proposals += fresh
    if accepted:
        state.sheet = with_entries(state.sheet, accepted)
        state.current = await cal.measure(items, state.sheet)
        for p in fresh:
            if p.decision == "edited":
                p.metrics_after = state.current.label(p.label)  # the edited entry, as re-checked
    return True


def _tune(run: DevRun, loaded: LoadedRecipe, min_positives: int) -> tuple[dict[str, float], np.ndarray]:
    """Per-label thresholds that maximize each label's dev F1: only for labels with at least
    `min_positives` dev positives, and only where the tuned threshold beats the current one."""
    names = run.names
    best = tune_thresholds(run.truth, run.scores, names, loaded.recipe.tagging.threshold)
    tuned: dict[str, float] = {}
    pred = run.pred.copy()
    for c, n in enumerate(names):
        if run.truth[:, c].sum() < min_positives or not run.scores[:, c].any():
            continue
        t = round(float(best[n]), 2)
        column = apply_thresholds(run.scores[:, [c]], [n], {n: t})[:, 0]
        if label_stats(run.truth[:, c], column)["f1"] > label_stats(run.truth[:, c], run.pred[:, c])["f1"] + EPS:
            tuned[n] = t  # written only where it raises the label's dev F1
            pred[:, c] = column
    return tuned, pred


async def _held_out(cal: Calibrator, items: list[Item], base: ConceptSheet, sheet: ConceptSheet,
                    thresholds: dict[str, float]) -> Figures | None:
    """The original and the calibrated sheet on the held-out images (nothing was decided on them)."""
    if not items:
        return None
    before = await cal.measure(items, base)
    after = await cal.measure(items, sheet)
    tuned = after.pred.copy()
    for n, t in thresholds.items():
        c = after.names.index(n)
        tuned[:, c] = apply_thresholds(after.scores[:, [c]], [n], {n: t})[:, 0]
    cal.echo(f"held-out set: {len(after.keys)} images; CF1 {before.overall()['CF1']:.3f} -> "
             f"{after.overall()['CF1']:.3f}" + (f" ({after.overall(tuned)['CF1']:.3f} tuned)" if thresholds else ""))
    return Figures(len(after.keys), before.overall(), after.overall(),
                   overall(after.truth, tuned, after.scores) if thresholds else None)


def _provenance(cal: Calibrator, first: DevRun, final: DevRun, tuned: DevRun, thresholds: dict[str, float],
                dev: Figures, held: Figures | None, state: _State, simulated: bool) -> dict[str, Any]:
    labels = {}
    for name in cal.vocab.names:
        b, a = first.label(name), final.label(name)
        if b["support"] or b["fp"] or a["fp"]:
            row = {"before": b, "after": a}
            if name in thresholds:
                row.update(threshold=thresholds[name], after_tuned=tuned.label(name))
            labels[name] = row
    base = cal.loaded.concepts
    return {
        **({"notice": SIMULATED_NOTICE} if simulated else {}),
        "dev_metrics": dataclasses.asdict(dev),
        "held_out_metrics": dataclasses.asdict(held) if held else None,
        "labels": labels,
        "revisions": [p.to_provenance() for p in state.proposals],
        "rounds_run": state.rounds_run,
        "base_sheet": {"version": base.version, "digest": base.digest(), "provenance": base.provenance or None},
        "dev_keys": sorted(first.keys),
    }


def _describe_run(loaded: LoadedRecipe, strategy: str, engine: Engine, llm: Engine, s: Settings) -> dict[str, Any]:
    def about(e: Engine) -> dict[str, Any]:
        return {k: v for k, v in e.describe().items() if k in ("engine", "model", "simulated", "api")}

    return {
        "tool": f"tagllm {__version__} calibrate",
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "recipe": {"name": loaded.recipe.name, "origin": str(loaded.origin), "digest": loaded.digest()},
        "strategy": strategy,
        "tagging_engine": about(engine),
        "llm": about(llm),
        "split": {"dev": s.dev, "held_out": s.held_out, "seed": s.seed,
                  "rule": "the first dev + held-out source items with human labels, split seeded and stratified"},
        "settings": {"rounds": s.rounds, "worst": s.worst, "tune_thresholds": s.tune,
                     "min_positives": s.min_positives, "interactive": s.interactive, "keep_rule": KEEP_RULE},
        "note": ("revisions and thresholds were chosen on the dev images; held_out_metrics, measured on the "
                 "other images, are the figures to quote" if s.held_out else
                 "no held-out part: thresholds are tuned and measured on the same dev images (in-sample)"),
    }
