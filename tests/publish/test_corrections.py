"""Corrections store: keyed by image digest, later lines win, malformed lines named."""

from __future__ import annotations

from pathlib import Path

import pytest

from builder.errors import UserError
from builder.images import image_digest
from builder.publish.corrections import (
    Correction,
    corrections_path,
    corrector,
    load_corrections,
    read_kept,
    save_corrections,
    write_kept,
)
from builder.records import Record

NAMES = ["cat", "dog", "bird"]


def test_later_corrections_win_and_apply_by_digest(tmp_path: Path) -> None:
    image = b"some image bytes"
    save_corrections(tmp_path, [Correction(digest=image_digest(image), labels=["dog"], by="a", at="1")])
    save_corrections(tmp_path, [Correction(digest=image_digest(image), labels=["bird", "cat"], by="b", at="2")])
    assert load_corrections(tmp_path)[image_digest(image)].by == "b"
    fix = corrector(tmp_path, NAMES)
    record = fix(Record(key="k", status="ok", labels=["dog"]), image)
    assert record.labels == ["cat", "bird"]  # vocabulary order
    assert record.review == {"machine_labels": ["dog"], "by": "b", "at": "2", "tool": "", "task": "",
                             "added": ["cat", "bird"], "removed": ["dog"]}
    untouched = fix(Record(key="j", status="ok", labels=["dog"]), b"other bytes")
    assert untouched.labels == ["dog"] and untouched.review is None
    failed = fix(Record(key="k", status="failed", error="decode"), image)
    assert failed.review is None


def test_kept_across_a_cleared_folder(tmp_path: Path) -> None:
    assert read_kept(tmp_path) is None
    save_corrections(tmp_path, [Correction(digest="d", labels=[])])
    kept = read_kept(tmp_path)
    corrections_path(tmp_path).unlink()
    write_kept(tmp_path, kept)
    assert list(load_corrections(tmp_path)) == ["d"]


def test_malformed_line_is_named(tmp_path: Path) -> None:
    path = corrections_path(tmp_path)
    path.parent.mkdir(parents=True)
    path.write_text('{"digest": "d", "labels": []}\n{"digest": "e", "colour": 1}\n')
    with pytest.raises(UserError, match=r"corrections.jsonl:2: not a correction line"):
        load_corrections(tmp_path)
