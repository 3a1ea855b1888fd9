"""Image conversion with the real Pillow."""

from __future__ import annotations

import io
import sys

import pytest
from PIL import Image

from comfyfleet.storage import StorageConfigError, convert_image


def png(mode: str, color: object, size: tuple[int, int] = (8, 6)) -> bytes:
    out = io.BytesIO()
    Image.new(mode, size, color).save(out, "PNG")  # type: ignore[arg-type]
    return out.getvalue()


def opened(data: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(data))
    image.load()
    return image


def test_png_to_webp_keeps_size_and_alpha() -> None:
    result = convert_image(png("RGBA", (10, 200, 30, 128)), "webp", 90)
    assert result is not None
    data, content_type, suffix = result
    assert (content_type, suffix) == ("image/webp", ".webp")
    image = opened(data)
    assert image.format == "WEBP"
    assert image.size == (8, 6)
    assert image.mode == "RGBA"
    assert abs(image.getpixel((0, 0))[3] - 128) <= 2  # type: ignore[index]


def test_transparent_png_to_jpeg_goes_onto_white() -> None:
    result = convert_image(png("RGBA", (0, 0, 0, 0)), "jpeg", 95)
    assert result is not None
    data, content_type, suffix = result
    assert (content_type, suffix) == ("image/jpeg", ".jpg")
    image = opened(data)
    assert image.format == "JPEG"
    assert image.mode == "RGB"
    red, green, blue = image.getpixel((3, 3))  # type: ignore[misc]
    assert min(red, green, blue) >= 250, "a fully transparent pixel becomes white, not black"


def test_opaque_colours_survive_jpeg() -> None:
    result = convert_image(png("RGB", (200, 20, 20)), "jpeg", 95)
    assert result is not None
    red, green, blue = opened(result[0]).getpixel((4, 3))  # type: ignore[misc]
    assert red > 180 and green < 50 and blue < 50


def test_palette_and_grey_images_convert() -> None:
    for mode, color in (("P", 3), ("L", 128), ("LA", (128, 100)), ("I;16", 3000)):
        for fmt in ("webp", "jpeg"):
            result = convert_image(png(mode, color), fmt, 80)
            assert result is not None, (mode, fmt)
            assert opened(result[0]).size == (8, 6)


def test_quality_changes_the_size() -> None:
    noisy = Image.effect_noise((64, 64), 80).convert("RGB")
    out = io.BytesIO()
    noisy.save(out, "PNG")
    low = convert_image(out.getvalue(), "jpeg", 10)
    high = convert_image(out.getvalue(), "jpeg", 95)
    assert low is not None and high is not None
    assert len(low[0]) < len(high[0])


def test_animated_gif_stays_animated_in_webp() -> None:
    frames = [Image.new("RGB", (8, 8), (i * 60, 0, 0)) for i in range(3)]
    out = io.BytesIO()
    frames[0].save(out, "GIF", save_all=True, append_images=frames[1:], duration=50, loop=0)
    result = convert_image(out.getvalue(), "webp", 80)
    assert result is not None
    assert getattr(opened(result[0]), "n_frames", 1) == 3


@pytest.mark.parametrize(
    "data", [b"", b"not an image", b"\x00\x00\x00\x18ftypmp42 video", b"\x89PNG\r\n\x1a\ntrunc"]
)
def test_non_images_are_left_to_the_caller(data: bytes) -> None:
    assert convert_image(data, "webp", 80) is None


@pytest.mark.parametrize("quality", [0, 101, -5])
def test_quality_out_of_range_is_refused(quality: int) -> None:
    with pytest.raises(ValueError, match="between 1 and 100"):
        convert_image(png("RGB", "red"), "jpeg", quality)


def test_unknown_format_is_refused() -> None:
    with pytest.raises(ValueError, match="webp, jpeg"):
        convert_image(png("RGB", "red"), "gif", 80)  # type: ignore[arg-type]


def test_missing_pillow_says_which_extra_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "PIL", None)
    with pytest.raises(StorageConfigError) as caught:
        convert_image(b"anything", "webp", 80)
    assert caught.value.hint == "pip install 'comfyfleet[images]'"
