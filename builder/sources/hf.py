"""Hugging Face `datasets` reader: Hub ids, local script-free dirs (parquet, imagefolder) or `save_to_disk`.

The image column is cast to `Image(decode=False)` so the original encoded bytes travel untouched
(no decode/re-encode, no quality loss). Rows are iterated, never collected, so a streaming split
of any size works.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from builder.errors import RunError, UserError
from builder.records import Item
from builder.sources.base import Source
from builder.sources.folder import IMAGE_EXTS, read_image_file, safe_key, split_ext


def sniff_ext(data: bytes) -> str:
    """Extension from the image header ('jpeg' -> 'jpg'); 'bin' when PIL does not know it."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(data)) as im:
            fmt = (im.format or "").lower()
    except (UnidentifiedImageError, OSError, ValueError):
        return "bin"
    return {"jpeg": "jpg", "": "bin"}.get(fmt, fmt)


def class_label_of(feature: Any) -> Any:
    """The ClassLabel inside a feature (itself, or the element of a List/Sequence/LargeList), else None."""
    import datasets

    while feature is not None and not isinstance(feature, datasets.ClassLabel):
        feature = getattr(feature, "feature", None)
    return feature


HUB_TIMEOUT = 5.0  # seconds for the one look-up that tells "unreachable" from "missing" before loading


def check_hub(name: str, timeout: float | None = None) -> None:
    """Look the dataset up on the Hub once, without retries, so an unreachable Hub fails in seconds
    (`datasets` itself retries each file with backoff for about half a minute). Skipped offline."""
    from huggingface_hub import HfApi, constants
    from huggingface_hub.errors import GatedRepoError, RepositoryNotFoundError

    if constants.HF_HUB_OFFLINE:
        return  # datasets reads its cache
    try:
        HfApi().dataset_info(name, timeout=timeout or HUB_TIMEOUT)
    except GatedRepoError:
        return  # it exists; datasets says what access it needs
    except RepositoryNotFoundError as exc:
        raise UserError(f"source.path: no dataset {name!r} on the Hub (or it is private: `hf auth login`)") \
            from exc
    except Exception as exc:  # noqa: BLE001 - httpx's connect, DNS and timeout errors, an HTTP 5xx
        why = "no answer in time" if "Timeout" in type(exc).__name__ else (str(exc).splitlines() or [""])[0][:120]
        raise RunError(f"source: cannot reach the Hub at {constants.ENDPOINT} to look up {name!r} ({why}); "
                       "check the network or HF_ENDPOINT, or set HF_HUB_OFFLINE=1 to read a cached copy") \
            from exc


class HFSource(Source):
    """One split of a Hugging Face dataset, read row by row."""

    kind = "hf"

    def _load(self) -> Any:
        import datasets

        spec = self.spec
        local = self.resolve(spec.path)
        if spec.from_disk:
            if not local.exists():
                raise UserError(f"source.path: no saved dataset at {local}")
            ds = datasets.load_from_disk(str(local))
            if isinstance(ds, datasets.DatasetDict):
                if spec.split not in ds:
                    raise UserError(f"source.split: {spec.split!r} not in {local} (splits: {', '.join(ds)})")
                ds = ds[spec.split]
            return ds.to_iterable_dataset() if spec.streaming else ds
        target = str(local) if local.exists() else spec.path
        if not local.exists():
            check_hub(spec.path)
        try:
            return datasets.load_dataset(target, spec.config, split=spec.split, streaming=spec.streaming)
        except ConnectionError as exc:  # the Hub (or a mirror) is unreachable: not the recipe's fault
            raise RunError(f"source: cannot reach {spec.path!r}: {exc}") from exc
        except (FileNotFoundError, ValueError) as exc:
            raise UserError(f"source: cannot load {spec.path!r} split {spec.split!r}: {exc}") from exc

    def _prepared(self) -> tuple[Any, Any]:
        """(dataset with only the needed columns, images left encoded; the label ClassLabel), loaded once."""
        if getattr(self, "_ready", None) is None:
            import datasets

            spec = self.spec
            ds = self._load()
            features = ds.features
            wanted = [c for c in (spec.image_column, spec.label_column, spec.key_column) if c]
            if features is not None:
                absent = [c for c in wanted if c not in features]
                if absent:
                    raise UserError(f"source: no column {absent[0]!r} in {spec.path} (columns: {', '.join(features)})")
                ds = ds.select_columns(list(dict.fromkeys(wanted)))
                if isinstance(features[spec.image_column], datasets.Image):
                    ds = ds.cast_column(spec.image_column, datasets.Image(decode=False))
            label_feature = class_label_of(features[spec.label_column]) if features and spec.label_column else None
            self._ready = (ds, label_feature)
        return self._ready

    def _random_access(self) -> Any:
        """The map-style dataset when rows can be reached by index (not streaming), else None."""
        import datasets

        ds = self._prepared()[0]
        return ds if isinstance(ds, datasets.Dataset) else None

    def _items(self) -> Iterator[Item]:
        ds, label_feature = self._prepared()
        if self._random_access() is not None:
            yield from self._slice(0, len(ds))
            return
        seen: set[str] = set()
        for index, row in enumerate(ds):
            yield self._item(index, row, label_feature, seen)

    def size(self) -> int | None:
        """Rows of the split when it is on disk (not streaming): shards by index, and a progress total."""
        ds = self._random_access()
        return None if ds is None else len(ds)

    def _slice(self, start: int, stop: int) -> Iterator[Item]:
        """Rows [start, stop) by index; only the key column of earlier rows is read (for repeated keys)."""
        ds = self._random_access()
        if ds is None:  # streaming: positions are reached by reading the stream
            yield from super()._slice(start, stop)
            return
        label_feature = self._prepared()[1]
        stop = min(stop, len(ds))
        if start >= stop:
            return
        seen: set[str] = set()
        if self.spec.key_column and start > 0:
            for index, value in enumerate(ds.select(range(start))[self.spec.key_column]):
                self._key(index, {self.spec.key_column: value}, seen)
        for offset, row in enumerate(ds.select(range(start, stop))):
            yield self._item(start + offset, row, label_feature, seen)

    def _key(self, index: int, row: dict[str, Any], seen: set[str]) -> str:
        """Row index by default; a key column is made safe and, if it repeats, suffixed with the index."""
        key = f"{index:08d}"
        if self.spec.key_column and row.get(self.spec.key_column) not in (None, ""):
            key = safe_key(str(row[self.spec.key_column]))
            if key in seen:
                key = f"{key}_{index:08d}"
        seen.add(key)
        return key

    def _item(self, index: int, row: dict[str, Any], label_feature: Any, seen: set[str]) -> Item:
        spec = self.spec
        ref = {"dataset": spec.path, "split": spec.split, "index": index}
        key = self._key(index, row, seen)
        reference: list[str] | None = None
        error: str | None = None
        detail = ""
        if spec.label_column:
            try:
                names = self._label_names(row.get(spec.label_column), label_feature)
                reference = self.map_labels(names, f"{spec.path}[{index}].{spec.label_column}")
            except ValueError as exc:
                error, detail = "source", str(exc)
        image, ext, img_error, img_detail = self._image(row.get(spec.image_column))
        if img_error:
            error, detail = img_error, img_detail
        return Item(key=key, image=image, ext=ext, ref=ref, reference=reference, error=error, detail=detail)

    def _image(self, value: Any) -> tuple[bytes | None, str, str | None, str]:
        """(bytes, ext, error, detail) from an encoded image cell: {'bytes','path'}, raw bytes or a path."""
        data: bytes | None = None
        path: str | None = None
        if isinstance(value, dict):
            data, path = value.get("bytes"), value.get("path")
        elif isinstance(value, (bytes, bytearray)):
            data = bytes(value)
        elif isinstance(value, str):
            path = value
        elif value is not None:
            return None, "", "source", f"column {self.spec.image_column!r} holds {type(value).__name__}, not an image"
        path_ext = split_ext(path)[1] if path else ""
        if data is None:
            if not path:
                return None, path_ext, "missing", f"no image in column {self.spec.image_column!r}"
            data, error, detail = read_image_file(Path(path))
            if error:
                return None, path_ext, error, detail
        if not data:
            return None, path_ext, "empty", "zero bytes"
        ext = path_ext if path_ext in IMAGE_EXTS else sniff_ext(data)
        return data, ext, None, ""

    def _label_names(self, value: Any, feature: Any) -> list[Any]:
        """Names from ClassLabel ids, a list of names/ids, or one name; ValueError on anything else."""
        if value is None:
            raise ValueError(f"no value in label column {self.spec.label_column!r}")
        values = list(value) if isinstance(value, (list, tuple)) else [value]
        names = []
        for v in values:
            if isinstance(v, bool) or not isinstance(v, (int, str)):
                raise ValueError(f"label {v!r} is neither a name nor a class id")
            if isinstance(v, int) and feature is not None:
                names.append(feature.int2str(v))  # raises ValueError for ids out of range (-1 = no label)
            else:
                names.append(v)
        return names
