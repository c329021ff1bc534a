"""Writers: each format turns the records of one shard into files, atomically."""

from builder.publish.writers.base import Writer, make_writers

__all__ = ["Writer", "make_writers"]
