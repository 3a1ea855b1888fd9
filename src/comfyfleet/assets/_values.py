"""Which graph input values are media to fetch or store, and which nodes load files.

A loader input (the table below) is a file name that ComfyUI reads from its input folder; there a
URL, a `data:...;base64,` URI, raw base64 of a known media type, or `asset:<id>` is replaced by a
stored asset. Any other input can hold free text (a prompt may contain a URL), so only the two
explicit forms are taken there: `asset:<64 hex>` and `data:<type>;base64,<payload>`. Loader file
names that climb out of the input folder (absolute, or with `..`) are refused: ComfyUI would
read them.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from pathlib import PurePosixPath
from types import MappingProxyType

from comfyfleet.assets._errors import BAD_BASE64, BAD_INPUT_PATH, MediaInputError
from comfyfleet.assets._sniff import SNIFF_BYTES, sniff
from comfyfleet.assets._store import normalize_id
from comfyfleet.netguard import short_url

LOADER_INPUTS: Mapping[str, frozenset[str]] = MappingProxyType(
    {
        "LoadImage": frozenset({"image"}),
        "LoadImageMask": frozenset({"image"}),
        "LoadImageOutput": frozenset({"image"}),
        "LoadVideo": frozenset({"file"}),
        "LoadAudio": frozenset({"audio"}),
        "VHS_LoadVideo": frozenset({"video"}),
        "VHS_LoadVideoFFmpeg": frozenset({"video"}),
        "VHS_LoadAudioUpload": frozenset({"audio"}),
    }
)
"""Node class -> the inputs that name a file in ComfyUI's input folder. Extend it here (or pass
another table to `resolve_media`)."""

MIN_RAW_BASE64 = 64
"""Shorter strings in a loader input are file names, never raw base64."""

_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://")
_DATA_URI = re.compile(r"^data:[^,;]*(?:;[^,;]*)*?;base64,", re.IGNORECASE)
_ASSET_REF = re.compile(r"^asset:(?:sha256:)?[0-9A-Fa-f]{64}$")
_RAW_BASE64 = re.compile(r"^[A-Za-z0-9+/]+={0,2}$")
_ANNOTATION = re.compile(r"\s*\[(?:input|output|temp)\]$")
_WHITESPACE = re.compile(r"\s+")


class Source(StrEnum):
    URL = "url"
    DATA_URI = "data_uri"
    BASE64 = "base64"
    ASSET = "asset"


@dataclass(frozen=True)
class MediaRef:
    """One media value found in a graph. `key` is the same for the same media: the URL, the
    asset id, or the SHA-256 of inline bytes."""

    source: Source
    key: str
    data: bytes | None = None

    @property
    def dedup_key(self) -> tuple[str, str]:
        """Equal for media stored once: the same URL, the same asset, the same bytes."""
        inline = self.source in (Source.DATA_URI, Source.BASE64)
        return ("bytes" if inline else str(self.source), self.key)

    @property
    def summary(self) -> str:
        """The original value, short enough for logs and answers (never the whole base64)."""
        if self.source is Source.URL:
            return short_url(self.key)
        if self.source is Source.ASSET:
            return f"asset:{self.key}"
        size = len(self.data or b"")
        kind = "data: URI" if self.source is Source.DATA_URI else "base64"
        return f"{kind}, {size} bytes, sha256 {self.key}"


def decode_base64(payload: str) -> bytes:
    """Standard or URL-safe base64, whitespace and missing padding forgiven; else `bad_base64`."""
    text = _WHITESPACE.sub("", payload)
    text += "=" * (-len(text) % 4)
    try:
        if "-" in text or "_" in text:
            return base64.b64decode(text, altchars=b"-_", validate=True)
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise MediaInputError(
            BAD_BASE64,
            f"the base64 data is not valid: {exc}",
            hint="encode the file with standard base64 (RFC 4648)",
        ) from exc


def _inline(source: Source, data: bytes) -> MediaRef:
    return MediaRef(source, hashlib.sha256(data).hexdigest(), data)


def _raw_base64(text: str) -> MediaRef | None:
    if len(text) < MIN_RAW_BASE64 or len(text) % 4 or not _RAW_BASE64.match(text):
        return None
    try:
        data = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        return None
    return _inline(Source.BASE64, data) if sniff(data[:SNIFF_BYTES]).known else None


def _check_file_name(text: str) -> None:
    name = _ANNOTATION.sub("", text).replace("\\", "/")
    parts = PurePosixPath(name).parts
    if name.startswith("/") or re.match(r"^[A-Za-z]:", name) or ".." in parts:
        raise MediaInputError(
            BAD_INPUT_PATH,
            f"{short_url(text, 80)!r} points outside ComfyUI's input folder",
            hint="upload the file (POST /v1/assets) and use 'asset:<id>', or give a URL",
        )


def parse_value(value: str, *, loader: bool) -> MediaRef | None:
    """The media `value` names, or None to leave it as it is. Raises :class:`MediaInputError`
    for an explicit form that is broken (bad base64, a malformed asset id in a loader input)."""
    head = value[:16].lower()
    if head.startswith("asset:") and (loader or _ASSET_REF.match(value.strip())):
        return MediaRef(Source.ASSET, normalize_id(value.strip()[len("asset:") :]))
    if head.startswith("data:"):
        match = _DATA_URI.match(value)
        if match:
            return _inline(Source.DATA_URI, decode_base64(value[match.end() :]))
        if loader:
            raise MediaInputError(
                BAD_BASE64,
                "only base64 data: URIs are taken (data:<type>;base64,<data>)",
                hint="encode the file in base64",
            )
        return None
    if not loader:
        return None
    text = value.strip()
    if _SCHEME.match(text):
        return MediaRef(Source.URL, text)
    raw = _raw_base64(text)
    if raw is not None:
        return raw
    _check_file_name(text)
    return None
