"""Readers whose item order comes from a cheap listing (split files, image lists, label rows).

The listing (names, ids and labels, never image bytes) is read once; an item's bytes are read only
when that item is produced. So shard i of n (`size`, `_slice`) reaches its items directly without
touching the image files of other shards (the `size` / `_slice` hooks of `Source`).
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Iterator
from typing import Any

from builder.records import Item
from builder.sources.base import Source


class ListedSource(Source):
    """A reader fills `_read_listing` (one cheap entry per item, stable order) and `_item_for` (entry -> Item)."""

    _cached: list[Any] | None = None

    @abstractmethod
    def _read_listing(self) -> list[Any]:
        """Every item's entry, in the stable order; read listings and labels only, no image bytes."""

    @abstractmethod
    def _item_for(self, entry: Any) -> Item:
        """The item of one entry: reads that one image."""

    def _listing(self) -> list[Any]:
        if self._cached is None:
            self._cached = self._read_listing()
        return self._cached

    def _items(self) -> Iterator[Item]:
        return self._produce(self._listing())

    def size(self) -> int | None:
        return len(self._listing())

    def _slice(self, start: int, stop: int) -> Iterator[Item]:
        return self._produce(self._listing()[start:stop])

    def _produce(self, entries: list[Any]) -> Iterator[Item]:
        """The items of these entries in order (a reader may read ahead: an object store's round trips)."""
        for entry in entries:
            yield self._item_for(entry)
