"""Image preparation: as-is JPEGs pass through after a draft decode that still catches damage."""

from __future__ import annotations

import io

import pytest
from PIL import Image
from tinydata import jpeg

from builder.images import ImageProblem, prepare_image

BIG = 10_000_000


def _encode(img: Image.Image, fmt: str = "JPEG", **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt, **kw)
    return buf.getvalue()


def test_an_upright_rgb_jpeg_is_sent_as_is() -> None:
    data = jpeg(1, (320, 240))
    prepared = prepare_image(data, BIG, BIG)
    assert prepared.data is data and (prepared.width, prepared.height) == (320, 240)


@pytest.mark.parametrize("cut", [0.5, 0.9, 0.99])
def test_a_truncated_jpeg_fails_as_decode_even_with_draft_validation(cut: float) -> None:
    data = jpeg(2, (320, 240))
    with pytest.raises(ImageProblem) as info:
        prepare_image(data[: int(len(data) * cut)], BIG, BIG)
    assert info.value.reason == "decode" and "truncated" in info.value.detail


def test_a_corrupt_jpeg_stream_fails_as_decode() -> None:
    data = bytearray(jpeg(3, (320, 240)))
    data[len(data) // 2: len(data) // 2 + 64] = b"\xff" * 64
    with pytest.raises(ImageProblem) as info:
        prepare_image(bytes(data), BIG, BIG)
    assert info.value.reason == "decode"


def test_a_large_jpeg_is_downscaled_to_the_pixel_target() -> None:
    data = _encode(Image.new("RGB", (1600, 1200), (10, 200, 30)), quality=90)
    prepared = prepare_image(data, 120_000, BIG)
    out = Image.open(io.BytesIO(prepared.data))
    assert (prepared.width, prepared.height) == (1600, 1200)  # the original size is recorded
    assert out.size == (400, 300) and out.mode == "RGB"
    assert abs(out.getpixel((200, 150))[1] - 200) < 8  # the colour survives the scaled decode


def test_exif_rotation_is_applied_and_the_size_is_upright() -> None:
    img = Image.new("RGB", (200, 100), (255, 0, 0))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees on display
    data = _encode(img, exif=exif.tobytes())
    prepared = prepare_image(data, 5_000, BIG)  # also over the target: drafted, rotated, resized
    out = Image.open(io.BytesIO(prepared.data))
    assert (prepared.width, prepared.height) == (100, 200)
    assert out.height > out.width and out.width * out.height <= 5_000


def test_other_modes_and_formats_become_rgb_jpeg() -> None:
    for img, fmt in ((Image.new("RGBA", (64, 48), (0, 0, 255, 128)), "PNG"),
                     (Image.new("CMYK", (64, 48), (0, 50, 0, 0)), "JPEG"),
                     (Image.new("I;16", (64, 48), 3000), "PNG")):
        prepared = prepare_image(_encode(img, fmt), BIG, BIG)
        out = Image.open(io.BytesIO(prepared.data))
        assert out.format == "JPEG" and out.mode == "RGB" and out.size == (64, 48)


def test_limits_and_missing_bytes_have_their_reasons() -> None:
    data = jpeg(4, (320, 240))
    for bad, reason in ((None, "missing"), (b"", "empty"), (b"not an image", "decode")):
        with pytest.raises(ImageProblem) as info:
            prepare_image(bad, BIG, BIG)
        assert info.value.reason == reason
    with pytest.raises(ImageProblem) as info:
        prepare_image(data, BIG, 320 * 240 - 1)
    assert info.value.reason == "too_large"


def test_the_budget_is_held_with_the_header_pixels_around_the_decode() -> None:
    held: list[int] = []

    class Hold:
        def __init__(self, pixels: int):
            held.append(pixels)

        def __enter__(self) -> None:
            return None

        def __exit__(self, *exc: object) -> None:
            held.append(-1)

    prepare_image(jpeg(5, (320, 240)), BIG, BIG, budget=Hold)
    with pytest.raises(ImageProblem):
        prepare_image(jpeg(5, (320, 240)), BIG, 100, budget=Hold)  # too large: refused before any hold
    assert held == [320 * 240, -1]
