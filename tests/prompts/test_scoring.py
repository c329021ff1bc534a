"""The one P(yes) function, the yes/no token ids, and non-ASCII labels in the grammar."""

from __future__ import annotations

import json
import math

import pytest

from builder.prompts.constraints import format_subset, parse_subset, subset_ebnf
from builder.prompts.scoring import (
    WORD_IDS,
    YesNoIds,
    by_word,
    ids_from_tokenized,
    logprobs_for,
    yes_no_token_ids,
    yes_probability,
)

IDS = YesNoIds((10, 11), (20,))


def test_yes_probability_sums_every_spelling_of_each_side() -> None:
    logprobs = {10: math.log(0.3), 11: math.log(0.1), 20: math.log(0.2), 99: math.log(0.4)}
    assert yes_probability(logprobs, IDS).p_yes == pytest.approx(0.4 / 0.6)


def test_no_side_seen_is_no_score_and_one_side_alone_is_certain_without_a_floor() -> None:
    assert yes_probability({99: -0.1}, IDS) is None
    assert yes_probability({}, IDS) is None
    assert yes_probability({10: -3.0}, IDS).p_yes == 1.0


def test_a_missing_side_is_bounded_by_the_smallest_top_logprob() -> None:
    score = yes_probability({10: math.log(0.5)}, IDS, floor=math.log(0.01))
    assert score.bounded and score.p_yes == pytest.approx(0.5 / 0.51)


def test_logprobs_for_a_probability_score_back_to_exactly_it() -> None:
    import random

    rng = random.Random(3)
    draws = [1 / (1 + math.exp(-rng.uniform(-12, 12))) for _ in range(5000)] + [rng.random() for _ in range(5000)]
    plain_misses = 0
    for p in [1e-9, 0.001, 0.5, 0.999, 1 - 1e-9, *draws]:
        logprobs = logprobs_for(p, IDS)
        assert set(logprobs) == {10, 20}
        assert yes_probability(logprobs, IDS).p_yes == p  # bit for bit, not approximately
        assert logprobs[10] == pytest.approx(math.log(p), rel=1e-12, abs=1e-14)
        assert logprobs[20] == pytest.approx(math.log1p(-p), rel=1e-12, abs=1e-14)
        plain_misses += yes_probability({10: math.log(p), 20: math.log1p(-p)}, IDS).p_yes != p
    assert plain_misses > 1000  # the plain pair alone would move the last digit of many scores


def test_token_texts_map_onto_stand_in_ids() -> None:
    pairs = [("Yes", math.log(0.2)), ("Ġyes", math.log(0.1)), (" No", math.log(0.3)), ("of", math.log(0.4))]
    assert yes_probability(by_word(pairs), WORD_IDS).p_yes == pytest.approx(0.3 / 0.6)


class WordTokenizer:
    """Single tokens for the spellings in `vocab`; anything else splits into characters."""

    def __init__(self, vocab: dict[str, int]):
        self.vocab = vocab

    def encode(self, text: str, add_special_tokens: bool = False) -> list[int]:
        return [self.vocab[text]] if text in self.vocab else [1000 + ord(c) for c in text]


def test_token_ids_from_a_tokenizer_and_from_a_servers_tokenize() -> None:
    tok = WordTokenizer({"yes": 1, "Yes": 2, " yes": 3, "no": 4, " No": 5})
    assert yes_no_token_ids(tok) == YesNoIds((1, 2, 3), (4, 5))
    assert ids_from_tokenized({"yes": [1], "Yes": [2, 9], "no": [4], " no": [4]}) == YesNoIds((1,), (4,))


def test_non_ascii_labels_stay_unescaped_in_grammar_and_answer() -> None:
    options = ("café", "ñandú", "dog")
    grammar = subset_ebnf(options)
    assert "café" in grammar and "\\u00e9" not in grammar and "\\\\u" not in grammar
    assert format_subset(["café", "ñandú"]) == '{"labels":["café","ñandú"]}'
    assert parse_subset(format_subset(["café"]), options) == ["café"]


def test_xgrammar_accepts_the_unescaped_non_ascii_answer_and_refuses_the_escaped_one() -> None:
    xgr = pytest.importorskip("xgrammar")
    options = ("café", "ñandú", "dog")
    grammar = xgr.Grammar.from_ebnf(subset_ebnf(options))

    def accepts(text: str) -> bool:
        return bool(xgr.testing._is_grammar_accept_string(grammar, text))

    assert accepts('{"labels":["café","ñandú"]}')
    assert accepts('{"labels":[]}')
    assert not accepts(json.dumps({"labels": ["café"]}, separators=(",", ":")))  # "caf\u00e9": refused
    assert not accepts('{"labels":["ñandú","café"]}')  # out of order
