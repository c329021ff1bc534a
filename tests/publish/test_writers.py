"""Writers: torch-free tars in webdataset's layout, read back by webdataset itself."""

from __future__ import annotations

import io
import json
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from builder.publish.writers.webdataset import TarSamples


def test_tars_written_with_the_standard_library_read_back_with_webdataset(tmp_path: Path) -> None:
    import webdataset as wds

    path = tmp_path / "shard-00000.tar"
    samples = {f"k{i:03d}": {"jpg": bytes([i]) * (100 + i), "json": json.dumps({"i": i, "name": "ñ"}).encode()}
               for i in range(20)}
    with open(path, "wb") as stream:
        tar = TarSamples(stream, mtime=0)
        for key, fields in samples.items():
            tar.write(key, fields)
        tar.close()
    back = list(wds.WebDataset(str(path), shardshuffle=False))
    assert [s["__key__"] for s in back] == list(samples)
    for sample in back:
        assert sample["jpg"] == samples[sample["__key__"]]["jpg"]
        assert json.loads(sample["json"]) == json.loads(samples[sample["__key__"]]["json"])
    with tarfile.open(path) as tf:  # members of a sample adjacent, sorted, read-only
        names = tf.getnames()
        assert names[:4] == ["k000.jpg", "k000.json", "k001.jpg", "k001.json"]
        assert {m.mode for m in tf.getmembers()} == {0o444}


def test_a_long_key_survives_the_tar_format(tmp_path: Path) -> None:
    import webdataset as wds

    key = "x" * 180  # over ustar's 100-character name field: PAX headers carry it
    buf = io.BytesIO()
    tar = TarSamples(buf)
    tar.write(key, {"txt": b"hello"})
    tar.close()
    path = tmp_path / "long.tar"
    path.write_bytes(buf.getvalue())
    assert [s["__key__"] for s in wds.WebDataset(str(path), shardshuffle=False)] == [key]


def test_building_and_the_cli_do_not_import_torch() -> None:
    code = ("import sys\n"
            "import builder.cli, builder.run.build, builder.dev.serve_sim\n"
            "from builder.publish.writers import make_writers\n"
            "import builder.publish.writers.webdataset, builder.publish.writers.hf, builder.publish.writers.index\n"
            "print('torch' in sys.modules)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


def test_the_card_says_what_each_format_costs_on_disk(build) -> None:
    import re

    result = build()
    line = next(x for x in (result.out / "README.md").read_text().splitlines() if x.startswith("| Size on disk |"))
    sizes = re.findall(r"(webdataset|hf parquet) ([\d.]+) MB", line)
    assert [name for name, _ in sizes] == ["webdataset", "hf parquet"]
    both = float(re.search(r"storing both: ([\d.]+)x", line).group(1))
    assert 1.0 < both <= 2.5  # each format holds the image bytes once


def test_the_record_json_is_encoded_once_and_reads_as_each_writer_expects() -> None:
    """The tar sample json equals `json.dumps(to_sample_json())` byte for byte, the index columns decode to
    the record's fields, and a record changed afterwards is encoded anew by its next `EncodedRecord`."""
    import json

    from builder.publish import layout
    from builder.records import EncodedRecord, Record

    record = Record(key="k", status="ok", labels=["cat"], scores={"cat": 0.91, "dog": 0.2}, candidates=["cat", "dog"],
                    reference=["cat"], raw=[{"tag": "verify:cat", "text": "é\"\n", "yes_prob": 0.3}],
                    source={"path": "a/ü.jpg"}, ext="jpg", width=3, height=4, usage={"requests": 2})

    def expected() -> bytes:
        return json.dumps(record.to_sample_json(), ensure_ascii=False, separators=(",", ":")).encode()

    assert EncodedRecord(record).sample_json == expected()
    row = layout.record_row(EncodedRecord(record), 3)
    assert all(json.loads(row[col]) == record.to_json()[col] for col in layout.JSON_COLUMNS) and row["shard"] == 3
    assert layout.row_record(row) == record
    record.labels = ["dog"]
    again = EncodedRecord(record)
    assert again.sample_json == expected() and json.loads(layout.record_row(again, 3)["labels"]) == ["dog"]


def test_every_writer_takes_its_columns_from_the_record_fields(tmp_path: Path) -> None:
    """Index columns are the record's fields (plus the shard), HF columns its dataset fields (plus the image),
    and all three writers store the same record: index row, tar sample json and HF row read back alike."""
    import dataclasses

    import pyarrow.parquet as pq

    from builder.publish import layout
    from builder.publish.writers import make_writers
    from builder.publish.writers.hf import hf_features
    from builder.recipe.vocab import Vocabulary
    from builder.records import DATASET_FIELDS, FIELD_KINDS, EncodedRecord, Record

    assert list(FIELD_KINDS) == [f.name for f in dataclasses.fields(Record)]
    vocab = Vocabulary.model_validate({"name": "v", "version": "1",
                                       "groups": [{"name": "g", "labels": [{"name": "cat"}, {"name": "dog"}]}]})
    assert list(hf_features(vocab)) == ["key", "image", *DATASET_FIELDS[1:]]
    assert {"raw", "usage", "detail"}.isdisjoint(DATASET_FIELDS)
    records = [Record(key="k", status="ok", labels=["cat"], scores={"cat": 0.9, "dog": 0.1}, candidates=["cat", "dog"],
                      reference=["cat"], raw=[{"tag": "verify:cat", "text": "é"}], source={"path": "ü.jpg", "b": 1},
                      ext="png", width=3, height=4, usage={"requests": 2}, simulated=True,
                      caption="a cat, ü", url="http://example.test/k.jpg", original_width=30, original_height=40,
                      review={"machine_labels": ["dog"], "by": "ann"}),
               Record(key="f", status="failed", error="decode", detail="bad bytes", source={"path": "f.jpg"})]
    writers = make_writers(tmp_path, vocab, ["webdataset", "hf"], include_failed=True)
    for w in writers:
        w.begin_shard(0)
    for record in records:
        encoded = EncodedRecord(record)
        for w in writers:
            w.write(encoded, b"img" if record.status == "ok" else None)
    for w in writers:
        w.end_shard()
    index = pq.read_table(layout.index_path(tmp_path, 0))
    assert index.schema.names == [*FIELD_KINDS, "shard"]
    assert [layout.row_record(row) for row in index.to_pylist()] == records
    with tarfile.open(layout.tar_path(tmp_path, 0)) as tar:
        samples = [json.loads(tar.extractfile(m).read()) for m in tar.getmembers() if m.name.endswith(".json")]
    assert [Record.from_json(s) for s in samples] == records
    hf = pq.read_table(next((tmp_path / layout.HF_DIR).iterdir())).to_pylist()
    assert [row["key"] for row in hf] == ["k", "f"] and hf[0]["image"]["bytes"] == b"img" and hf[1]["image"] is None
    assert (hf[0]["labels"], hf[0]["candidates"], hf[0]["reference"]) == ([0], [0, 1], [0])
    assert hf[0]["scores"] == pytest.approx([0.9, 0.1]) and hf[1]["reference"] is None
    assert json.loads(hf[0]["source"]) == records[0].source and json.loads(hf[0]["review"]) == records[0].review
    assert hf[1]["review"] is None and (hf[1]["status"], hf[1]["error"]) == ("failed", "decode")


def test_an_index_written_before_the_img2dataset_fields_still_reads(tmp_path: Path) -> None:
    """Outputs built before caption/url/original size existed lack those columns: their records read back
    with the fields None, from the index and from a tar sample json alike."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from builder.publish import layout
    from builder.records import EncodedRecord, Record

    new = ("caption", "url", "original_width", "original_height")
    record = Record(key="k", status="ok", labels=["cat"], scores={"cat": 0.9}, candidates=["cat"], ext="jpg")
    row = {k: v for k, v in layout.record_row(EncodedRecord(record), 0).items() if k not in new}
    (tmp_path / layout.INDEX_DIR).mkdir()
    pq.write_table(pa.Table.from_pylist([row]), layout.index_path(tmp_path, 0))
    layout.write_json(layout.shard_stats_path(tmp_path, 0), {"shard": 0, "images": 1})
    layout.write_json(tmp_path / layout.MANIFEST, {"status": "complete", "shards": 1})
    assert [layout.row_record(r) for r in pq.read_table(layout.index_path(tmp_path, 0)).to_pylist()] == [record]
    assert list(layout.iter_records(tmp_path)) == [record]
    old_sample = {k: v for k, v in record.to_sample_json().items() if k not in new}
    assert Record.from_json(old_sample) == record and record.caption is record.url is None
