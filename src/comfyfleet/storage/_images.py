"""Converting image outputs (ComfyUI writes PNG) to WebP or JPEG before they are stored.

Pillow is optional and imported on first use. Anything Pillow cannot open as an image (video,
audio, text, a broken file) is not an error here: `convert_image` returns None and the caller
stores the original bytes. Animated inputs stay animated in WebP; JPEG keeps the first frame.
Metadata (the workflow ComfyUI embeds in its PNG text chunks) is not carried over.
"""

from __future__ import annotations

import io
from typing import TYPE_CHECKING, Literal

from comfyfleet.storage._errors import missing_package

if TYPE_CHECKING:
    from PIL.Image import Image

ImageFormat = Literal["webp", "jpeg"]

_FORMATS: dict[str, tuple[str, str, str]] = {
    # requested name: (Pillow format, content type, suffix)
    "webp": ("WEBP", "image/webp", ".webp"),
    "jpeg": ("JPEG", "image/jpeg", ".jpg"),
}


def convert_image(data: bytes, fmt: ImageFormat, quality: int) -> tuple[bytes, str, str] | None:
    """`data` re-encoded as `fmt` at `quality` (1-100): (bytes, content type, suffix such as
    '.webp'). None when `data` is not an image Pillow can read. Transparent images become JPEG on
    a white background. ValueError for an unknown format or a quality out of range."""
    if fmt not in _FORMATS:
        raise ValueError(f"unknown image format {fmt!r}: use one of {', '.join(_FORMATS)}")
    if not 1 <= quality <= 100:
        raise ValueError(f"image quality must be between 1 and 100, not {quality}")
    try:
        from PIL import Image as pil
        from PIL import UnidentifiedImageError
    except ImportError as exc:
        raise missing_package("Pillow", "images") from exc
    pillow_format, content_type, suffix = _FORMATS[fmt]
    try:
        image = pil.open(io.BytesIO(data))
        image.load()
    except (UnidentifiedImageError, pil.DecompressionBombError, OSError, SyntaxError, ValueError):
        return None
    out = io.BytesIO()
    with image:
        if fmt == "jpeg":
            _flatten(image).save(out, pillow_format, quality=quality)
        elif getattr(image, "n_frames", 1) > 1:
            image.save(out, pillow_format, quality=quality, save_all=True)
        else:
            _for_webp(image).save(out, pillow_format, quality=quality)
    return out.getvalue(), content_type, suffix


def _for_webp(image: Image) -> Image:
    """WebP holds RGB and RGBA only."""
    if image.mode in ("RGB", "RGBA"):
        return image
    return image.convert("RGBA" if _has_alpha(image) else "RGB")


def _flatten(image: Image) -> Image:
    """An RGB image for JPEG: transparency composited onto white."""
    from PIL import Image as pil

    if not _has_alpha(image):
        return image if image.mode in ("RGB", "L") else image.convert("RGB")
    rgba = image.convert("RGBA")
    background = pil.new("RGB", rgba.size, (255, 255, 255))
    background.paste(rgba, mask=rgba.getchannel("A"))
    return background


def _has_alpha(image: Image) -> bool:
    return bool(image.mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in image.info)
