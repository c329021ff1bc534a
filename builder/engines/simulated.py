"""The simulated engine: a real backend whose answers come from human labels plus seeded noise.

It exists for tests, dry runs and demos on machines without a GPU. It reads requests exactly as a
model would receive them (the constraint's options, the label named in the question) and answers
in the same wire format, so every parser, writer and the cache see realistic traffic. Nothing it
produces says anything about model quality, and everything downstream labels it as simulated.

How it answers, by constraint:

- subset (stage 1): each present option is proposed unless missed (`miss_rate`); sometimes a wrong
  option of the same group is added (`confusion_rate`, or `false_positive_rate` in a group with
  nothing present). A request with a seed (stage-1 ensemble variants > 0) draws its own noise, so
  ensembling unites genuinely different answers; without a seed the draw is the same as ever.
- yesno (stage 2): the truth, flipped with `flip_rate`, with P(yes) from a seeded margin. The model
  answers with the yes/no token logprobs of that P(yes) (its own token ids `YES_ID` / `NO_ID`), and
  the engine scores them with `prompts.scoring.yes_probability`, the function every engine uses.
  On top of that sits a deliberately simple **model of disambiguation**, so concept calibration
  can be exercised end to end: when the asked label is absent but another label of its group is
  present (a "look-alike"), the sim says yes with `verify_confusion_rate` and a less confident
  score, *unless the question warns against every present look-alike*. A look-alike counts as
  warned about when it is named in a line of the question that contains a negation cue ("not",
  "confuse", "exclude") - which is what the stage-2 template's `Do not confuse it with: ...`
  (from `concept.confusable`) and `Does not count: ...` (from `concept.excludes`) lines produce.
  This is a model of disambiguation for testing, not a claim about how real models behave.
- json_schema: a calibration request (one that carries a ```json block with "label" and
  "confusions", see `builder.method.calibration`) gets a revised concept entry that names the
  reported confusions as `confusable` and `excludes`; any other schema gets empty defaults.
- free: the present objects named, sometimes by a synonym, sometimes with an unmappable word.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import math
import random
import re
from collections import OrderedDict
from dataclasses import dataclass
from functools import lru_cache

from builder.engines.base import Engine, EngineDied, Request, Result
from builder.engines.references import MakeReferences, References
from builder.images import image_digest
from builder.prompts.constraints import Constraint, format_subset
from builder.prompts.scoring import YesNoIds, logprobs_for, yes_probability
from builder.recipe.vocab import Vocabulary, normalize_word

IMAGE_TOKENS = 256  # what a typical VLM spends on one image; token counts here are estimates
YES_ID, NO_ID = 9891, 2152  # the simulated tokenizer's "yes" and "no" (serve-sim answers with them too)
SIM_IDS = YesNoIds((YES_ID,), (NO_ID,))


@dataclass
class NoiseModel:
    """Rates of the errors a real MLLM annotator makes, seeded so runs repeat exactly."""

    seed: int = 0
    miss_rate: float = 0.10  # a present label is not proposed in stage 1
    confusion_rate: float = 0.15  # stage 1 also proposes a wrong label of the same group
    false_positive_rate: float = 0.02  # stage 1 proposes a label in a group with nothing present
    flip_rate: float = 0.05  # stage 2 answers the wrong way
    score_sharpness: float = 4.0  # how far from 0.5 the stage-2 scores sit
    # stage 2 says yes to an absent label when a look-alike of its group is present and unwarned
    verify_confusion_rate: float = 0.5


def _rng(*parts: object) -> random.Random:
    digest = hashlib.sha256("\x1f".join(str(p) for p in parts).encode()).digest()
    return random.Random(int.from_bytes(digest[:8], "big"))


class SimulatedModel:
    """Answers one request; shared by the in-process engine and `tagllm serve-sim`."""

    def __init__(self, vocab: Vocabulary | None, noise: NoiseModel | None = None):
        self.vocab = vocab
        self.noise = noise or NoiseModel()
        self._prefixes: OrderedDict[str, None] = OrderedDict()
        self._patterns: list[tuple[re.Pattern[str], str]] = []
        self._mentions: list[tuple[re.Pattern[str], str]] = []
        if vocab is not None:
            words = [(w, label.name) for label in vocab.labels for w in [label.name, *label.synonyms]]
            words.sort(key=lambda wl: -len(wl[0]))
            self._patterns = [(re.compile(rf"\b{re.escape(normalize_word(w))}\b"), n) for w, n in words]
            # mentions in the concept lines may be plural ("stuffed toy cats")
            self._mentions = [(re.compile(rf"\b{re.escape(normalize_word(w))}(?:s|es)?\b"), n) for w, n in words]
        # The same few questions come back for every image: read each one once.
        self.asked_label = lru_cache(maxsize=8192)(self.asked_label)  # type: ignore[method-assign]
        self.warned = lru_cache(maxsize=8192)(self.warned)  # type: ignore[method-assign]

    def asked_label(self, question: str) -> str | None:
        """The vocabulary label named first in the question (longest name wins a tie)."""
        text = normalize_word(question)
        best: tuple[int, int, str] | None = None
        for pattern, name in self._patterns:
            m = pattern.search(text)
            if m and (best is None or (m.start(), -(m.end() - m.start())) < (best[0], best[1])):
                best = (m.start(), -(m.end() - m.start()), name)
        return best[2] if best else None

    def mentioned(self, text: str) -> set[str]:
        """Every vocabulary label named in `text`, also in the plural (a longer name hides a shorter
        one inside it: "teddy bear" is not a mention of "bear")."""
        line = normalize_word(text)
        found: set[str] = set()
        for pattern, name in self._mentions:  # longest words first
            if pattern.search(line):
                found.add(name)
                line = pattern.sub(" ", line)
        return found

    def warned(self, question: str) -> frozenset[str]:
        """Labels the question tells the model not to confuse with (lines with a negation cue)."""
        out: set[str] = set()
        for line in question.splitlines():
            if _NEGATION.search(line):
                out |= self.mentioned(line)
        return frozenset(out)

    def lookalikes(self, label: str | None, truth: set[str], question: str) -> list[str]:
        """Present labels of the asked label's group that the question does not warn against."""
        if label is None or self.vocab is None or label in truth or label not in self.vocab.names:
            return []
        group = self.vocab.group_of(label)
        present = sorted(m for m in truth if m != label and m in self.vocab.names and self.vocab.group_of(m) == group)
        if not present:
            return []
        warned = self.warned(question) - {label}
        return [m for m in present if m not in warned]

    def answer(self, image: bytes | None, text: str, question: str, constraint: Constraint,
               reference: list[str] | None, want_logprobs: bool, seed: int | None = None) -> Result:
        truth = set(reference or [])
        image_id = image_digest(image or b"")[:16]
        n = self.noise
        result = Result()
        if constraint.kind == "subset":
            parts: tuple = (n.seed, image_id, "subset", constraint.options)
            rng = _rng(*parts) if seed is None else _rng(*parts, "seed", seed)
            options = list(constraint.options)
            present = [o for o in options if o in truth]
            chosen = {o for o in present if rng.random() >= n.miss_rate}
            absent = [o for o in options if o not in truth]
            if absent:
                rate = n.confusion_rate if present else n.false_positive_rate
                if rng.random() < rate:
                    chosen.add(rng.choice(absent))
            result.text = format_subset([o for o in options if o in chosen])
        elif constraint.kind == "yesno":
            label = self.asked_label(question)
            rng = _rng(n.seed, image_id, "yesno", label)
            flipped = rng.random() < n.flip_rate
            says_yes = (label in truth) != flipped
            margin = abs(rng.gauss(n.score_sharpness / 2, n.score_sharpness / 3)) + 0.2
            if not says_yes and self.lookalikes(label, truth, question):
                confuse = _rng(n.seed, image_id, "confuse", label)
                if confuse.random() < n.verify_confusion_rate:
                    says_yes = True  # taken in by a look-alike: a yes, but a less sure one
                    margin = abs(confuse.gauss(n.score_sharpness / 4, n.score_sharpness / 6)) + 0.1
            logit = margin if says_yes else -margin
            result.text = "yes" if says_yes else "no"
            if want_logprobs:  # what a model's first token gives: logprobs, not a score
                result.extra["logprobs"] = logprobs_for(1.0 / (1.0 + math.exp(-logit)), SIM_IDS)
        elif constraint.kind == "json_schema":
            result.text = json.dumps(self._schema_answer(constraint.schema, question))
        else:  # free text: name the present objects, sometimes with a synonym
            rng = _rng(n.seed, image_id, "free")
            words = []
            for name in sorted(truth):
                if rng.random() < n.miss_rate:
                    continue
                synonyms = self.vocab.label(name).synonyms if self.vocab and name in self.vocab.names else []
                words.append(rng.choice(synonyms) if synonyms and rng.random() < 0.3 else name)
            if rng.random() < n.false_positive_rate * 5:
                words.append("shadow")  # something no vocabulary maps: open-ended answers do this
            result.text = ", ".join(words)
        prefix = image_id + str(len(text))
        result.prompt_tokens = IMAGE_TOKENS + math.ceil(len(text) / 4)
        result.cached_tokens = self._cached(image_id, text)
        result.completion_tokens = max(1, math.ceil(len(result.text) / 4))
        result.extra["prefix"] = prefix
        return result

    def _cached(self, image_id: str, text: str) -> int:
        """Emulate prefix caching: a repeated image (with its leading prompt) hits the cache."""
        if image_id in self._prefixes:
            self._prefixes.move_to_end(image_id)
            return IMAGE_TOKENS + math.ceil(min(len(text), 400) / 4)
        self._prefixes[image_id] = None
        if len(self._prefixes) > 4096:
            self._prefixes.popitem(last=False)
        return 0

    def _schema_answer(self, schema: str, question: str) -> dict:
        """Structured answers: a concept revision for calibration requests, empty defaults otherwise."""
        try:
            spec = json.loads(schema) if schema else {}
        except json.JSONDecodeError:
            spec = {}
        revision = self._revision(question)
        out: dict = {}
        for name, prop in (spec.get("properties") or {}).items():
            if name in revision:
                out[name] = revision[name]
                continue
            kind = prop.get("type")
            if kind == "array":
                out[name] = []
            elif kind in ("number", "integer"):
                out[name] = 0
            elif kind == "boolean":
                out[name] = False
            else:
                out[name] = ""
        return out

    def _revision(self, question: str) -> dict:
        """Read the calibration findings out of the request; propose an entry that names the confusions.

        The request carries a ```json block with "label", the current "entry" and "confusions"
        (labels seen in its place); see `builder.method.calibration.calibration_prompt`.
        """
        match = _JSON_BLOCK.search(question)
        if not match:
            return {}
        try:
            data = json.loads(match.group(1))
        except json.JSONDecodeError:
            return {}
        if not isinstance(data, dict) or not isinstance(data.get("label"), str):
            return {}
        label = data["label"]
        entry = data.get("entry") if isinstance(data.get("entry"), dict) else {}
        names = set(self.vocab.names) if self.vocab is not None else None
        confused = []
        for c in data.get("confusions") or []:
            other = c.get("label") if isinstance(c, dict) else c
            if isinstance(other, str) and other != label and (names is None or other in names):
                confused.append(other)
        description = entry.get("description") or ""
        if not description and self.vocab is not None and label in self.vocab.names:
            description = self.vocab.label(label).description
        confusable = list(dict.fromkeys([*entry.get("confusable", []), *confused]))
        excludes = list(entry.get("excludes", []))
        for other in confused:
            if not any(other in line for line in excludes):
                excludes.append(f"{other} (a separate label)")
        return {"description": description, "includes": list(entry.get("includes", [])), "excludes": excludes,
                "confusable": confusable, "cooccurring": list(entry.get("cooccurring", []))}


_NEGATION = re.compile(r"\b(not|confuse|exclude[sd]?)\b", re.IGNORECASE)
_JSON_BLOCK = re.compile(r"```json\s*(\{.*?\})\s*```", re.DOTALL)


def last_question(request: Request) -> str:
    """The text of the last user turn: where templates put the question."""
    for message in reversed(request.messages):
        if message.get("role") == "user":
            content = message["content"]
            if isinstance(content, str):
                return content
            return "\n".join(p["text"] for p in content if p.get("type") == "text")
    return ""


class SimulatedEngine(Engine):
    """The in-process simulated backend. `references` (image digest -> human labels, see
    `engines.references`) is what it answers from: a table, or a function that makes it, called once
    at the first `start`. An image it has no labels for is answered as an unlabeled one."""

    name = "simulated"
    simulated = True

    def __init__(self, vocab: Vocabulary | None = None, noise: NoiseModel | None = None,
                 references: References | MakeReferences | None = None, latency: float = 0.0, crash_every: int = 0,
                 journal: str | None = None, **kwargs):
        kwargs.setdefault("model", "simulated")
        super().__init__(**kwargs)
        self.sim = SimulatedModel(vocab, noise)
        self.latency = latency
        self.crash_every = crash_every  # for tests of engine restarts: die after this many requests
        self._served = 0
        self.dead = False
        self._make_references = references if callable(references) else None
        self.references: References = {} if callable(references) else (references or {})
        # For tests that count sends across killed runs: one line per answered request.
        self.journal = open(journal, "a", buffering=1) if journal else None

    async def start(self) -> None:
        self.dead = False
        self._served = 0
        if self._make_references is not None:  # once: a restart keeps the table
            make, self._make_references = self._make_references, None
            self.references = await asyncio.to_thread(make)

    def describe(self) -> dict:
        info = super().describe()
        info["noise"] = vars(self.sim.noise)
        return info

    async def _generate_one(self, request: Request) -> Result:
        if self.crash_every:
            self._served += 1
            if self.dead or self._served > self.crash_every:
                self.dead = True
                raise EngineDied("simulated crash")
        if self.latency:
            await asyncio.sleep(self.latency)
        reference = self.references.get(image_digest(request.image or b""))
        result = self.sim.answer(request.image, request.prompt_text(), last_question(request),
                                 request.constraint, reference, request.logprobs, seed=request.seed)
        logprobs = result.extra.pop("logprobs", None)
        if logprobs is not None:  # scored as every engine scores the logprobs its model returned
            score = yes_probability(logprobs, SIM_IDS)
            result.yes_prob = score.p_yes if score is not None else None
        if self.journal is not None:
            ident = hashlib.sha256((request.image or b"") + request.prompt_text().encode()
                                   + request.constraint.key().encode() + str(request.seed).encode()).hexdigest()
            self.journal.write(ident + "\n")
        return result
