"""Image preparation: decode and normalise one image (`prepare`), off the event loop in worker processes
(`workers`) or in bounded threads under a pixel budget (`pool`)."""

from builder.images.prepare import ImageProblem, Prepared, image_digest, prepare_image, sniff_extension

__all__ = ["ImageProblem", "Prepared", "image_digest", "prepare_image", "sniff_extension"]
