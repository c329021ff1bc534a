"""The stage-2 score: P(yes) from the logprobs of the first answer token, the same way for every engine.

Every backend, the simulated one included, turns what its model returned into `{token_id: logprob}`
and calls `yes_probability`; nothing else turns logprobs into a score. The yes/no token ids come from
`yes_no_token_ids` (an in-process tokenizer), from a server's `/tokenize` (`SPELLINGS` lists what to
ask it for), or are the simulated tokenizer's own (`engines.simulated.SIM_IDS`, whose logprobs
`logprobs_for` chooses).

When a server returns token *texts* only (hosted OpenAI-compatible APIs), `by_word` maps them onto
two stand-in ids so the same function applies. When only one side (yes or no) is among the top
logprobs, the other side's probability is at most the smallest logprob returned: `floor` uses that
bound, and the result says it is bounded.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from builder.prompts.constraints import ParseError

YES_WORDS = ("yes",)
NO_WORDS = ("no",)
# What tokenizers make of the answer words: with/without a leading space, capitalised.
SPELLINGS = {"yes": ("yes", "Yes", "YES", " yes", " Yes", " YES"), "no": ("no", "No", "NO", " no", " No", " NO")}
WORD_YES_ID, WORD_NO_ID = -1, -2  # stand-in ids for servers that return token texts only


@dataclass(frozen=True)
class YesNoIds:
    """The token ids that start a yes / a no answer."""

    yes: tuple[int, ...]
    no: tuple[int, ...]

    def __bool__(self) -> bool:
        return bool(self.yes and self.no)

    def all(self) -> list[int]:
        return [*self.yes, *self.no]


@dataclass(frozen=True)
class Score:
    """P(yes) and whether a missing side was bounded rather than seen."""

    p_yes: float
    bounded: bool = False


def yes_probability(logprobs: Mapping[int, float | None], ids: YesNoIds,
                    floor: float | None = None) -> Score | None:
    """P(yes) / (P(yes) + P(no)) summed over every yes and no token id.

    None when neither side was seen. A side not seen gets `exp(floor)` when `floor` is given
    (the smallest logprob the server returned: the missing side is at most that likely), else 0.
    """
    def mass(token_ids: Iterable[int]) -> float:
        return sum(math.exp(lp) for t in token_ids if (lp := logprobs.get(t)) is not None and lp > -math.inf)

    p_yes, p_no = mass(ids.yes), mass(ids.no)
    if p_yes <= 0 and p_no <= 0:
        return None
    bounded = False
    if floor is not None and (p_yes <= 0 or p_no <= 0):
        bounded = True
        p_yes, p_no = (p_yes or math.exp(floor)), (p_no or math.exp(floor))
    return Score(p_yes / (p_yes + p_no), bounded)


def logprobs_for(p_yes: float, ids: YesNoIds) -> dict[int, float]:
    """First-token logprobs {ids.yes[0]: ~log p, ids.no[0]: ~log(1 - p)} that `yes_probability` scores as
    exactly `p_yes`, 0 < p_yes < 1 (what a simulated model answers).

    Plain log p and log(1 - p) score within a unit in the last place of p; a nudge of a few units in
    the last place of each logprob makes the score exact, so a simulated P(yes) survives the one
    scoring path bit for bit.
    """
    yes, no = ids.yes[0], ids.no[0]
    for lp_yes in _units_around(math.log(p_yes), 3):
        mass = math.exp(lp_yes)
        for total in _units_around(mass / p_yes, 2):
            if total <= mass:
                continue
            for lp_no in _units_around(math.log(total - mass), 1):
                score = yes_probability({yes: lp_yes, no: lp_no}, ids)
                if score is not None and score.p_yes == p_yes:
                    return {yes: lp_yes, no: lp_no}
    return {yes: math.log(p_yes), no: math.log1p(-p_yes)}  # never seen in 300k draws: within one unit


def _units_around(x: float, n: int) -> Iterator[float]:
    """x, then the floats 1, 2, ... n units in the last place below and above it."""
    yield x
    below = above = x
    for _ in range(n):
        below, above = math.nextafter(below, -math.inf), math.nextafter(above, math.inf)
        yield below
        yield above


def answer_word(token: Any) -> str:
    """A token's text as an answer word: no spaces or BPE space marks, lower case."""
    return str(token or "").replace("Ġ", " ").replace("▁", " ").strip().lower()


WORD_IDS = YesNoIds((WORD_YES_ID,), (WORD_NO_ID,))


def by_word(pairs: Iterable[tuple[Any, float | None]]) -> dict[int, float]:
    """(token text, logprob) pairs -> {stand-in id: logprob} for use with `WORD_IDS` (texts summed)."""
    mass: dict[int, float] = {}
    for token, lp in pairs:
        if lp is None:
            continue
        word = answer_word(token)
        key = WORD_YES_ID if word in YES_WORDS else WORD_NO_ID if word in NO_WORDS else None
        if key is not None:
            mass[key] = mass.get(key, 0.0) + math.exp(lp)
    return {k: math.log(v) for k, v in mass.items()}


def yes_no_token_ids(tokenizer: Any) -> YesNoIds:
    """Token ids of every single-token spelling of yes and no (any case, with or without a space).

    When no spelling of a word is a single token, the first token of one stands in, provided it
    differs from every first token of the other word (so the two groups never share a token).
    """

    def collect(spellings: tuple[str, ...]) -> tuple[list[int], list[int]]:
        single, first = [], []
        for word in spellings:
            ids = tokenizer.encode(word, add_special_tokens=False)
            if len(ids) == 1:
                single.append(int(ids[0]))
            elif ids:
                first.append(int(ids[0]))
        return list(dict.fromkeys(single)), list(dict.fromkeys(first))

    yes_single, yes_first = collect(SPELLINGS["yes"])
    no_single, no_first = collect(SPELLINGS["no"])
    yes = yes_single or [t for t in yes_first if t not in set(no_single + no_first)][:1]
    no = no_single or [t for t in no_first if t not in set(yes_single + yes_first)][:1]
    clash = set(yes) & set(no)
    return YesNoIds(tuple(t for t in yes if t not in clash), tuple(t for t in no if t not in clash))


def ids_from_tokenized(tokenized: Mapping[str, list[int]]) -> YesNoIds:
    """YesNoIds from `{spelling: token ids}` as a server's `/tokenize` returned them (single tokens only)."""
    def pick(word: str) -> tuple[int, ...]:
        out: list[int] = []
        for text in SPELLINGS[word]:
            tokens = tokenized.get(text) or []
            if len(tokens) == 1 and int(tokens[0]) not in out:
                out.append(int(tokens[0]))
        return tuple(out)

    return YesNoIds(pick("yes"), pick("no"))


class NoScore(ParseError):
    """A yes/no answer that carries no usable logprob: recorded as `no_score`, not re-asked."""
