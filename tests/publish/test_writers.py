"""Writers: torch-free tars in webdataset's layout, read back by webdataset itself."""

from __future__ import annotations

import io
import json
import subprocess
import sys
import tarfile
from pathlib import Path

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
    the record's fields, and a record changed after a write is encoded anew (not served from the memo)."""
    import json

    from builder.publish import layout
    from builder.records import Record

    record = Record(key="k", status="ok", labels=["cat"], scores={"cat": 0.91, "dog": 0.2}, candidates=["cat", "dog"],
                    reference=["cat"], raw=[{"tag": "verify:cat", "text": "é\"\n", "yes_prob": 0.3}],
                    source={"path": "a/ü.jpg"}, ext="jpg", width=3, height=4, usage={"requests": 2})

    def expected() -> bytes:
        return json.dumps(record.to_sample_json(), ensure_ascii=False, separators=(",", ":")).encode()

    assert layout.sample_json(record) == expected()
    row = layout.record_row(record, 3)
    assert all(json.loads(row[col]) == record.to_json()[col] for col in layout.JSON_COLUMNS) and row["shard"] == 3
    record.labels = ["dog"]
    assert layout.sample_json(record) == expected() and json.loads(layout.record_row(record, 3)["labels"]) == ["dog"]
