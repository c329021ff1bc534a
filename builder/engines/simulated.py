"""The simulated engine: a real backend whose answers come from human labels plus seeded noise.

It exists for tests, dry runs and demos on machines without a GPU. It reads requests exactly as a
model would receive them (the constraint's options, the label named in the question) and answers
in the same wire format, so every parser, writer and the cache see realistic traffic. Nothing it
produces says anything about model quality, and everything downstream labels it as simulated.
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

from builder.engines.base import Engine, EngineDied, Request, Result
from builder.prompts.constraints import Constraint, format_subset
from builder.vocab import Vocabulary, normalize_word

IMAGE_TOKENS = 256  # what a typical VLM spends on one image; token counts here are estimates


@dataclass
class NoiseModel:
    """Rates of the errors a real MLLM annotator makes, seeded so runs repeat exactly."""

    seed: int = 0
    miss_rate: float = 0.10  # a present label is not proposed in stage 1
    confusion_rate: float = 0.15  # stage 1 also proposes a wrong label of the same group
    false_positive_rate: float = 0.02  # stage 1 proposes a label in a group with nothing present
    flip_rate: float = 0.05  # stage 2 answers the wrong way
    score_sharpness: float = 4.0  # how far from 0.5 the stage-2 scores sit


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
        if vocab is not None:
            words = [(w, label.name) for label in vocab.labels for w in [label.name, *label.synonyms]]
            words.sort(key=lambda wl: -len(wl[0]))
            self._patterns = [(re.compile(rf"\b{re.escape(normalize_word(w))}\b"), n) for w, n in words]

    def asked_label(self, question: str) -> str | None:
        """The vocabulary label named first in the question (longest name wins a tie)."""
        text = normalize_word(question)
        best: tuple[int, int, str] | None = None
        for pattern, name in self._patterns:
            m = pattern.search(text)
            if m and (best is None or (m.start(), -(m.end() - m.start())) < (best[0], best[1])):
                best = (m.start(), -(m.end() - m.start()), name)
        return best[2] if best else None

    def answer(self, image: bytes | None, text: str, question: str, constraint: Constraint,
               reference: list[str] | None, want_logprobs: bool) -> Result:
        truth = set(reference or [])
        image_id = hashlib.sha256(image or b"").hexdigest()[:16]
        n = self.noise
        result = Result()
        if constraint.kind == "subset":
            rng = _rng(n.seed, image_id, "subset", constraint.options)
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
            says_yes = (label in truth) != (rng.random() < n.flip_rate)
            margin = abs(rng.gauss(n.score_sharpness / 2, n.score_sharpness / 3)) + 0.2
            logit = margin if says_yes else -margin
            p_yes = 1.0 / (1.0 + math.exp(-logit))
            result.text = "yes" if says_yes else "no"
            if want_logprobs:
                result.yes_prob = p_yes
                result.extra["logprobs"] = {"yes": math.log(p_yes), "no": math.log(1 - p_yes)}
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
        """Structured answers for calibration requests: fill string fields from the question."""
        try:
            spec = json.loads(schema) if schema else {}
        except json.JSONDecodeError:
            spec = {}
        out: dict = {}
        for name, prop in (spec.get("properties") or {}).items():
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
    name = "simulated"
    simulated = True

    def __init__(self, vocab: Vocabulary | None = None, noise: NoiseModel | None = None,
                 latency: float = 0.0, crash_every: int = 0, journal: str | None = None, **kwargs):
        kwargs.setdefault("model", "simulated")
        super().__init__(**kwargs)
        self.sim = SimulatedModel(vocab, noise)
        self.latency = latency
        self.crash_every = crash_every  # for tests of engine restarts: die after this many requests
        self._served = 0
        self.dead = False
        # For tests that count sends across killed runs: one line per answered request.
        self.journal = open(journal, "a", buffering=1) if journal else None

    async def start(self) -> None:
        self.dead = False
        self._served = 0

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
        result = self.sim.answer(request.image, request.prompt_text(), last_question(request),
                                 request.constraint, request.reference, request.logprobs)
        if self.journal is not None:
            ident = hashlib.sha256((request.image or b"") + request.prompt_text().encode()
                                   + request.constraint.key().encode() + str(request.seed).encode()).hexdigest()
            self.journal.write(ident + "\n")
        return result
