"""Concept calibration: revise a vocabulary's concept sheet against a small human-labeled dev set.

`calibrate` does, in order:

1. takes the dev set: the first N source items that carry human labels;
2. runs the recipe's strategy on it (through a request cache, so a re-check only sends the
   verification questions whose prompt changed) and measures, per label, precision, recall, F1
   and the confusions: label L said where the human labels had M of L's group but not L;
3. picks the worst labels and asks an LLM (any engine of the registry; a text-only request
   with a JSON-schema constraint) for a revised entry of each;
4. re-checks the proposals on the dev set and keeps one only when that label's F1 improves
   (`interactive`: a person sees each proposal as a diff with its dev metrics and accepts,
   edits or skips it);
5. repeats for `rounds`, then tunes per-label thresholds on the dev scores and writes the sheet
   with a `provenance` block (models, date, dev size, per-label dev metrics before and after,
   every proposal and what became of it).

A label's verification question depends only on that label's entry, so the proposals of one
round are checked together in one pass and do not influence each other's numbers.
Thresholds tuned on the same dev images they are measured on are optimistic (in-sample).
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import difflib
import json
import tempfile
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import yaml
from pydantic import ValidationError

from builder import __version__
from builder.engines.base import Engine, Request, Result
from builder.errors import UserError
from builder.method.base import TaggingContext
from builder.method.strategies import make_strategy
from builder.prompts.constraints import Constraint, ParseError
from builder.recipe.concepts import Concept, ConceptSheet
from builder.recipe.model import LoadedRecipe, load_recipe
from builder.recipe.vocab import Vocabulary
from builder.records import Item, Record
from builder.run.asker import Asker
from builder.run.cache import RequestCache

SHEET_STRATEGIES = ("tagllm", "yes-no")  # the strategies whose verification question uses the sheet
SIMULATED_NOTICE = ("Calibrated with the simulated engine: its answers come from the human labels plus seeded "
                    "noise and a toy model of disambiguation. The metrics test the pipeline, not a model.")
LLM_SYSTEM = ("You write concept definitions for the labels of an image dataset, so that an image annotator "
              "model labels images the way this dataset's human annotators did. Answer with JSON only.")
EPS = 1e-9


# --- dev-set measurements -------------------------------------------------------------------------


@dataclass
class DevRun:
    """One pass of the strategy over the dev set, with everything calibration reads from it."""

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

    def overall(self) -> dict[str, Any]:
        return overall_metrics(self.truth, self.pred, self.scores)


def label_stats(truth: np.ndarray, pred: np.ndarray) -> dict[str, Any]:
    """Counts and P/R/F1 of one label (0 when undefined, as scikit-learn's zero_division=0)."""
    tp = int((truth & pred).sum())
    fp = int((~truth & pred).sum())
    fn = int((truth & ~pred).sum())
    p = tp / (tp + fp) if tp + fp else 0.0
    r = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * p * r / (p + r) if p + r else 0.0
    return {"support": tp + fn, "tp": tp, "fp": fp, "fn": fn,
            "precision": round(p, 4), "recall": round(r, 4), "f1": round(f1, 4)}


def overall_metrics(truth: np.ndarray, pred: np.ndarray, scores: np.ndarray | None = None) -> dict[str, Any]:
    """CP/CR/CF1/OP/OR/OF1 (and mAP when there are scores), as `tagllm eval` defines them."""
    from builder.analysis.evaluate import average_precisions, label_metrics

    m = label_metrics(truth, pred)
    out = {k: round(float(m[k]), 4) for k in ("CP", "CR", "CF1", "OP", "OR", "OF1")}
    out["mAP"] = None
    if scores is not None and scores.any() and truth.any():
        out["mAP"] = round(float(np.nanmean(average_precisions(truth, scores))), 4)
    return out


def better(after: dict[str, Any], before: dict[str, Any]) -> bool:
    """The keep rule: F1 rises; with F1 unchanged (e.g. a label with no dev positives), fewer
    false positives without losing a true positive also counts."""
    if after["f1"] > before["f1"] + EPS:
        return True
    return abs(after["f1"] - before["f1"]) <= EPS and after["tp"] >= before["tp"] and after["fp"] < before["fp"]


# --- proposals and decisions ------------------------------------------------------------------------


@dataclass
class Proposal:
    """One revised entry for one label, with the dev metrics before and (once re-checked) after."""

    round: int
    label: str
    before: Concept
    after: Concept
    metrics_before: dict[str, Any]
    confusions: list[dict[str, Any]] = field(default_factory=list)
    metrics_after: dict[str, Any] | None = None
    decision: str = ""  # kept | rejected (automatic); accepted | edited | skipped (interactive)
    dev_size: int = 0

    def improves(self) -> bool:
        return self.metrics_after is not None and better(self.metrics_after, self.metrics_before)

    def diff(self, after: Concept | None = None) -> str:
        old = entry_yaml(self.label, self.before).splitlines(keepends=True)
        new = entry_yaml(self.label, after or self.after).splitlines(keepends=True)
        return "".join(difflib.unified_diff(old, new, f"{self.label} (current)", f"{self.label} (proposed)"))

    def metrics_line(self) -> str:
        b, a = self.metrics_before, self.metrics_after or {}

        def pair(key: str, fmt: str) -> str:
            after = format(a[key], fmt) if key in a else "?"
            return f"{key} {format(b[key], fmt)} -> {after}"

        parts = [pair("f1", ".3f"), pair("precision", ".3f"), pair("recall", ".3f"), pair("fp", "d"), pair("fn", "d")]
        return (f"dev ({self.dev_size} images, {b['support']} with {self.label!r}): " + ", ".join(parts))

    def to_provenance(self) -> dict[str, Any]:
        out = {"round": self.round, "label": self.label, "decision": self.decision,
               "kept": self.decision in ("kept", "accepted", "edited"),
               "confusions": self.confusions,
               "f1_before": self.metrics_before["f1"],
               "f1_after": (self.metrics_after or {}).get("f1"),
               "fp_before": self.metrics_before["fp"], "fp_after": (self.metrics_after or {}).get("fp"),
               "fn_before": self.metrics_before["fn"], "fn_after": (self.metrics_after or {}).get("fn")}
        if not out["kept"]:
            out["proposed"] = _plain(self.after)
        return out


@dataclass
class Decision:
    """What a person (or a `decide` callback) made of a proposal."""

    action: Literal["accept", "edit", "skip"]
    concept: Concept | None = None  # the edited entry, for "edit"


Decide = Callable[[Proposal], Decision]


def entry_yaml(label: str, concept: Concept) -> str:
    return yaml.safe_dump(_plain(concept), sort_keys=False, allow_unicode=True, width=100)


def _plain(concept: Concept) -> dict[str, Any]:
    return concept.model_dump(exclude_none=True)


def parse_entry(text: str, vocab: Vocabulary, label: str) -> Concept:
    """An entry a person edited (YAML), validated against the vocabulary."""
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise UserError(f"{label}: not valid YAML ({exc})") from exc
    if not isinstance(data, dict):
        raise UserError(f"{label}: expected a mapping with description, includes, excludes, confusable")
    try:
        concept = Concept.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        raise UserError(f"{label}: {'.'.join(map(str, first['loc']))}: {first['msg']}") from exc
    ConceptSheet(concepts={label: concept}).check_against(vocab, "edited entry")
    return concept


def prompt_decision(proposal: Proposal, vocab: Vocabulary) -> Decision:
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
            edited = parse_entry(text, vocab, proposal.label)
        except UserError as exc:
            click.echo(f"error: {exc}")
            continue
        click.echo(proposal.diff(edited))
        return Decision("edit", edited)


# --- the LLM request --------------------------------------------------------------------------------


def revision_schema(names: list[str]) -> dict[str, Any]:
    """The JSON schema of a revised entry (the fields of `Concept` but the threshold; no uniqueItems)."""
    text_list = {"type": "array", "items": {"type": "string"}, "maxItems": 8}
    label_list = {"type": "array", "items": {"type": "string", "enum": list(names)}, "maxItems": 8}
    return {
        "type": "object",
        "properties": {
            "description": {"type": "string"},
            "includes": text_list,
            "excludes": text_list,
            "confusable": label_list,
            "cooccurring": label_list,
        },
        "required": ["description", "includes", "excludes", "confusable", "cooccurring"],
        "additionalProperties": False,
    }


def calibration_prompt(vocab: Vocabulary, label: str, entry: Concept, stats: dict[str, Any],
                       confusions: list[dict[str, Any]], missed_for: list[dict[str, Any]], dev_size: int,
                       rejected: list[dict[str, Any]]) -> str:
    """The question for the LLM. The findings travel in a ```json block, readable by any model
    (and by the simulated engine, which answers from them)."""
    group = vocab.group_of(label)
    members = [lab.name for g in vocab.groups if g.name == group for lab in g.labels]
    findings = {"label": label, "group": group, "entry": _plain(entry),
                "dev": {"images": dev_size, **stats}, "confusions": confusions, "missed_for": missed_for,
                "rejected_earlier": rejected}
    lines = [
        f'Revise the concept entry of the label "{label}" (group "{group}") of the vocabulary "{vocab.name}".',
        f"All labels of the vocabulary: {', '.join(vocab.names)}.",
        f"Labels of the same group: {', '.join(members)}.",
        f"On {dev_size} human-labeled images, with the current entry the annotator model reached precision "
        f"{stats['precision']:.2f}, recall {stats['recall']:.2f}, F1 {stats['f1']:.2f} "
        f"({stats['tp']} correct, {stats['fp']} said wrongly, {stats['fn']} missed).",
    ]
    if confusions:
        lines.append(f'It said "{label}" where the human labels had instead: '
                     + ", ".join(f"{c['label']} ({c['count']}x)" for c in confusions) + ".")
    if missed_for:
        lines.append(f'It missed "{label}" and said instead: '
                     + ", ".join(f"{c['label']} ({c['count']}x)" for c in missed_for) + ".")
    lines += [
        "Write a revised entry: a one- or two-sentence description of what counts as this label for these "
        "annotators; includes (cases that count); excludes (cases that do not, naming look-alike labels); "
        "confusable (labels of the vocabulary it is mistaken for); cooccurring (labels often seen with it). "
        "Keep what is right in the current entry. Proposals rejected earlier did not improve the dev F1.",
        "Findings:",
        "```json",
        json.dumps(findings, ensure_ascii=False),
        "```",
    ]
    return "\n".join(lines)


def revision_request(prompt: str, names: list[str], tag: str = "calibrate", max_tokens: int = 768) -> Request:
    """A text-only request (no image) constrained to the revision schema."""
    messages = [{"role": "system", "content": LLM_SYSTEM},
                {"role": "user", "content": [{"type": "text", "text": prompt}]}]
    return Request(messages=messages, image=None,
                   constraint=Constraint("json_schema", schema=json.dumps(revision_schema(names))),
                   max_tokens=max_tokens, temperature=0.0, tag=tag)


def parse_revision(vocab: Vocabulary, label: str, current: Concept) -> Callable[[Request, Result], Concept]:
    """Parser of the LLM's answer: validated, deduped, labels outside the vocabulary dropped."""
    names = set(vocab.names)

    def parse(request: Request, result: Result) -> Concept:
        try:
            data = json.loads(result.text)
        except json.JSONDecodeError as exc:
            raise ParseError(f"not JSON: {result.text[:60]!r}") from exc
        if not isinstance(data, dict) or not isinstance(data.get("description", ""), str):
            raise ParseError("expected an object with a description")

        def texts(key: str) -> list[str]:
            value = data.get(key) or []
            if not isinstance(value, list):
                raise ParseError(f"{key}: expected a list")
            return list(dict.fromkeys(str(v).strip() for v in value if str(v).strip()))

        def labels(key: str) -> list[str]:
            return [v for v in texts(key) if v in names and v != label]

        return Concept(description=data.get("description", "").strip() or current.description,
                       includes=texts("includes"), excludes=texts("excludes"), confusable=labels("confusable"),
                       cooccurring=labels("cooccurring"), threshold=current.threshold)

    return parse


# --- the calibration ---------------------------------------------------------------------------------


@dataclass
class CalibrationResult:
    sheet: ConceptSheet
    path: Path | None
    dev_size: int
    rounds_run: int
    before: dict[str, Any]
    after: dict[str, Any]
    after_tuned: dict[str, Any] | None
    proposals: list[Proposal]
    simulated: bool

    @property
    def kept(self) -> list[Proposal]:
        return [p for p in self.proposals if p.decision in ("kept", "accepted", "edited")]

    def summary(self) -> str:
        """A few lines for the command line."""
        lines = []
        if self.simulated:
            lines.append("SIMULATED: " + SIMULATED_NOTICE)
        lines.append(f"dev set: {self.dev_size} images; rounds run: {self.rounds_run}; proposals "
                     f"{len(self.proposals)}, kept {len(self.kept)}")
        for name, m in (("before", self.before), ("after", self.after), ("after tuning", self.after_tuned)):
            if m:
                lines.append(f"{name:>13}: CF1 {m['CF1']:.3f}  OF1 {m['OF1']:.3f}  CP {m['CP']:.3f}  CR {m['CR']:.3f}"
                             + (f"  mAP {m['mAP']:.3f}" if m.get("mAP") is not None else ""))
        for p in self.kept:
            after = p.metrics_after or {}
            lines.append(f"  kept {p.label!r} (round {p.round}, {p.decision}): F1 {p.metrics_before['f1']:.3f} -> "
                         f"{after.get('f1', float('nan')):.3f}, fp {p.metrics_before['fp']} -> {after.get('fp', '?')}")
        if self.path is not None:
            lines.append(f"sheet: {self.path}")
        return "\n".join(lines)


def _today() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")


class Calibrator:
    """Holds the dev set, the engines and the cache for one calibration."""

    def __init__(self, loaded: LoadedRecipe, items: list[Item], engine: Engine, llm: Engine,
                 cache: RequestCache | None, strategy: str, echo: Callable[[str], None]):
        self.loaded = loaded
        self.vocab = loaded.vocab
        self.items = items
        self.engine = engine
        self.llm = llm
        self.strategy = strategy
        self.echo = echo
        digest = self.vocab.digest()
        self.asker = Asker(engine, cache, digest)
        self.llm_asker = Asker(llm, cache, digest)

    async def run_dev(self, sheet: ConceptSheet) -> DevRun:
        """The strategy over the dev set with this sheet (cached answers are replayed)."""
        ctx = TaggingContext(self.loaded)
        ctx.concepts = sheet
        strategy = make_strategy(self.strategy, ctx, self.asker, self.engine.simulated)
        window = asyncio.Semaphore(max(4, min(self.engine.concurrency, 256)))

        async def one(item: Item) -> Record:
            async with window:
                return await strategy.tag(item)

        records = await asyncio.gather(*(one(item) for item in self.items))
        names = self.vocab.names
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


def pick_targets(run: DevRun, vocab: Vocabulary, worst: int) -> list[str]:
    """Labels with dev errors: most confusions first (what a concept entry can fix), then lowest
    F1, then most errors."""
    confusions = run.confusions(vocab)
    rows = [(name, run.label(name), sum(confusions[name].values())) for name in run.names]
    rows = [r for r in rows if r[1]["fp"] + r[1]["fn"] > 0]
    rows.sort(key=lambda r: (-r[2], r[1]["f1"], -(r[1]["fp"] + r[1]["fn"]), run.names.index(r[0])))
    return [name for name, _, _ in rows[:worst]]


def dev_items(loaded: LoadedRecipe, n: int) -> list[Item]:
    """The first `n` readable source items that carry human labels."""
    from builder.sources import open_source

    if n < 1:
        raise UserError("--dev must be at least 1")
    items = []
    for item in open_source(loaded.recipe.source, loaded.vocab, loaded.base_dir):
        if item.error is None and item.reference is not None:
            items.append(item)
            if len(items) >= n:
                break
    if not items:
        raise UserError(f"{loaded.origin}: the source has no items with human labels to calibrate on")
    return items


def _llm_engine(loaded: LoadedRecipe, engine: Engine, kind: str | None, model: str | None,
                servers: list[str], api: str | None) -> Engine:
    """The calibration LLM: the tagging engine itself unless another engine/model/server is named."""
    from builder.engines.registry import engine_from_spec

    spec = loaded.recipe.engine
    same_kind = kind is None or kind == engine.name
    if same_kind and model in (None, engine.model) and not servers and api is None:
        return engine
    kind = kind or engine.name
    update: dict[str, Any] = {"kind": kind, "model": model or (spec.model if kind == spec.kind else None)}
    if kind != spec.kind:
        update["args"] = {}
    if servers:
        update["servers"] = list(servers)
    if api is not None:
        update["api"] = api
    return engine_from_spec(spec.model_copy(update=update), loaded.vocab, kind)


def calibrate(
    recipe: str | Path | LoadedRecipe,
    dev: int = 200,
    rounds: int = 2,
    out_sheet: str | Path | None = None,
    *,
    overrides: list[str] | None = None,
    engine: Engine | None = None,
    llm: Engine | None = None,
    llm_engine: str | None = None,
    llm_model: str | None = None,
    llm_servers: list[str] | tuple[str, ...] = (),
    llm_api: str | None = None,
    strategy: str | None = None,
    worst: int = 5,
    tune_thresholds: bool = True,
    min_positives: int = 3,
    interactive: bool = False,
    decide: Decide | None = None,
    work_dir: str | Path | None = None,
    echo: Callable[[str], None] | None = None,
) -> CalibrationResult:
    """Calibrate the recipe's concept sheet on its first `dev` human-labeled items; see the module doc.

    `engine` / `llm`: ready engines (else built from the recipe; the LLM from `llm_engine`,
    `llm_model`, `llm_servers`, `llm_api`, defaulting to the tagging engine). `interactive` asks
    on the terminal (click) about each proposal; `decide` replaces that prompt (tests, other UIs).
    `work_dir` keeps the request cache so a rerun replays every answer already given.
    """
    from builder.engines.registry import engine_from_spec
    from builder.run.build import choose_engine_kind

    loaded = recipe if isinstance(recipe, LoadedRecipe) else load_recipe(recipe, overrides or [])
    name = strategy or loaded.recipe.tagging.strategy
    if name not in SHEET_STRATEGIES:
        raise UserError(f"strategy {name!r} does not use the concept sheet; calibrate with one of: "
                        f"{', '.join(SHEET_STRATEGIES)} (--strategy)")
    if rounds < 1 or worst < 1:
        raise UserError("--rounds and --worst must be at least 1")
    TaggingContext(loaded)  # templates parse before anything runs
    items = dev_items(loaded, dev)
    if engine is None:
        engine = engine_from_spec(loaded.recipe.engine, loaded.vocab, choose_engine_kind(loaded.recipe.engine.kind))
    if llm is None:
        llm = _llm_engine(loaded, engine, llm_engine, llm_model, list(llm_servers), llm_api)
    if decide is None and interactive:
        vocab = loaded.vocab
        decide = lambda proposal: prompt_decision(proposal, vocab)  # noqa: E731
    say = echo or (lambda line: None)
    with tempfile.TemporaryDirectory(prefix="tagllm-calibrate-") as tmp:
        folder = Path(work_dir) if work_dir else Path(tmp)
        cache = RequestCache(folder / "calibrate-cache.sqlite")
        try:
            calibrator = Calibrator(loaded, items, engine, llm, cache, name, say)
            result = asyncio.run(_calibrate(calibrator, rounds, worst, decide, tune_thresholds, min_positives))
        finally:
            cache.close()
    about = _describe_run(loaded, name, engine, llm, dev, rounds, worst, min_positives, tune_thresholds,
                          decide is not None)
    result.sheet.provenance = {**about, **result.sheet.provenance}
    if out_sheet is not None:
        path = Path(out_sheet)
        path.parent.mkdir(parents=True, exist_ok=True)
        result.sheet.save(path)
        result.path = path
    return result


async def _calibrate(cal: Calibrator, rounds: int, worst: int, decide: Decide | None, tune: bool,
                     min_positives: int) -> CalibrationResult:
    engines = [cal.engine] if cal.llm is cal.engine else [cal.engine, cal.llm]
    for e in engines:
        await e.start()
    try:
        return await _rounds(cal, rounds, worst, decide, tune, min_positives)
    finally:
        for e in engines:
            await e.close()


async def _rounds(cal: Calibrator, rounds: int, worst: int, decide: Decide | None, tune: bool,
                  min_positives: int) -> CalibrationResult:
    vocab = cal.vocab
    base = cal.loaded.concepts
    sheet = base.model_copy(deep=True)
    sheet.vocabulary = sheet.vocabulary or vocab.name
    first = current = await cal.run_dev(sheet)
    if first.failed:
        cal.echo(f"{first.failed} dev items failed (engine or image errors) and are left out of the metrics")
    if not len(first.keys):
        raise UserError("no dev item could be tagged; nothing to calibrate on")
    cal.echo(f"dev set: {len(first.keys)} images; before: CF1 {first.overall()['CF1']:.3f}")
    proposals: list[Proposal] = []
    tried: dict[str, set[str]] = {}
    rejected: dict[str, list[dict[str, Any]]] = {}
    rounds_run = 0
    for round_no in range(1, rounds + 1):
        targets = pick_targets(current, vocab, worst)
        if not targets:
            cal.echo("no label has dev errors left; stopping")
            break
        rounds_run = round_no
        cal.echo(f"round {round_no}: revising {', '.join(targets)}")
        fresh = []
        for p in await cal.propose(round_no, sheet, current, targets, rejected):
            key = json.dumps(_plain(p.after), sort_keys=True)
            if p.after == p.before or key in tried.setdefault(p.label, set()):
                continue  # nothing new to try for this label
            tried[p.label].add(key)
            fresh.append(p)
        if not fresh:
            cal.echo("  the LLM proposed nothing new; stopping")
            break
        trial_sheet = _with(sheet, {p.label: p.after for p in fresh})
        trial = await cal.run_dev(trial_sheet)
        for p in fresh:
            p.metrics_after = trial.label(p.label)
        accepted: dict[str, Concept] = {}
        for p in fresh:
            if decide is None:
                p.decision = "kept" if p.improves() else "rejected"
                if p.improves():
                    accepted[p.label] = p.after
            else:
                d = decide(p)
                if d.action == "skip":
                    p.decision = "skipped"
                else:
                    p.decision = "accepted" if d.action == "accept" else "edited"
                    if d.action == "edit" and d.concept is not None:
                        p.after = d.concept
                    accepted[p.label] = p.after
            if p.decision in ("rejected", "skipped"):
                rejected.setdefault(p.label, []).append({"entry": _plain(p.after), "dev": p.metrics_after})
            b, a = p.metrics_before, p.metrics_after
            cal.echo(f"  {p.label}: F1 {b['f1']:.3f} -> {a['f1']:.3f}, fp {b['fp']} -> {a['fp']}, "
                     f"fn {b['fn']} -> {a['fn']} ({p.decision})")
        proposals += fresh
        if accepted:
            sheet = _with(sheet, accepted)
            current = await cal.run_dev(sheet)
            for p in fresh:
                if p.decision == "edited":
                    p.metrics_after = current.label(p.label)  # the edited entry, as re-checked
    final = final_tuned = current
    tuned_metrics = None
    thresholds: dict[str, float] = {}
    if tune and final.scores.any():
        thresholds, tuned_pred = _tune(final, cal.loaded, min_positives)
        if thresholds:
            sheet = _with(sheet, {n: sheet.concepts.get(n, Concept()).model_copy(update={"threshold": t})
                                  for n, t in thresholds.items()}, keep_threshold=False)
            tuned_metrics = overall_metrics(final.truth, tuned_pred, final.scores)
            final_tuned = dataclasses.replace(final, pred=tuned_pred)
    sheet.version = f"{base.version}+calibrated.{dt.date.today():%Y%m%d}"
    labels = {}
    for name in vocab.names:
        b, a = first.label(name), final.label(name)
        if b["support"] or b["fp"] or a["fp"]:
            row = {"before": b, "after": a}
            if name in thresholds:
                row["threshold"] = thresholds[name]
                row["after_tuned"] = final_tuned.label(name)
            labels[name] = row
    simulated = cal.engine.simulated or cal.llm.simulated
    sheet.provenance = {
        **({"notice": SIMULATED_NOTICE} if simulated else {}),
        "dev_metrics": {"images": len(first.keys), "before": first.overall(), "after": final.overall(),
                        "after_tuned": tuned_metrics},
        "labels": labels,
        "revisions": [p.to_provenance() for p in proposals],
        "rounds_run": rounds_run,
        "base_sheet": {"version": base.version, "digest": base.digest(), "provenance": base.provenance or None},
    }
    return CalibrationResult(sheet, None, len(first.keys), rounds_run, first.overall(), final.overall(),
                             tuned_metrics, proposals, simulated)


def _with(sheet: ConceptSheet, entries: dict[str, Concept], keep_threshold: bool = True) -> ConceptSheet:
    """A copy of the sheet with these entries replaced (keeping each label's earlier threshold)."""
    out = sheet.model_copy(deep=True)
    for label, concept in entries.items():
        old = sheet.concepts.get(label)
        if keep_threshold and old is not None and concept.threshold is None:
            concept = concept.model_copy(update={"threshold": old.threshold})
        out.concepts[label] = concept
    return out


def _tune(run: DevRun, loaded: LoadedRecipe, min_positives: int) -> tuple[dict[str, float], np.ndarray]:
    """Per-label thresholds that maximize each label's dev F1: only for labels with at least
    `min_positives` dev positives, and only where the tuned threshold beats the current one."""
    from builder.analysis.evaluate import apply_thresholds, tune_thresholds

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


def _describe_run(loaded: LoadedRecipe, strategy: str, engine: Engine, llm: Engine, dev: int, rounds: int,
                  worst: int, min_positives: int, tuned: bool, interactive: bool) -> dict[str, Any]:
    def about(e: Engine) -> dict[str, Any]:
        return {k: v for k, v in e.describe().items() if k in ("engine", "model", "simulated", "api")}

    return {
        "tool": f"tagllm {__version__} calibrate",
        "date": _today(),
        "recipe": {"name": loaded.recipe.name, "origin": str(loaded.origin), "digest": loaded.digest()},
        "strategy": strategy,
        "tagging_engine": about(engine),
        "llm": about(llm),
        "dev": {"requested": dev, "rule": "first items of the source with human labels"},
        "settings": {"rounds": rounds, "worst": worst, "tune_thresholds": tuned, "min_positives": min_positives,
                     "interactive": interactive,
                     "keep_rule": "F1 on the dev set rises (or, with F1 unchanged, fewer false positives)"},
        "note": "thresholds are tuned and measured on the same dev images (in-sample)",
    }
