"""What a file is, from its first bytes: the stored name's extension comes from here, never from
the client (a `.png` that is an HTML page is stored as `.bin`).

Known: PNG, JPEG, GIF, WebP, BMP, TIFF, AVIF/HEIC, MP4/MOV/M4A, WebM/MKV, WAV, MP3, FLAC, OGG.
Anything else is `application/octet-stream` with `.bin`: still stored (custom nodes read formats
we do not know), but ComfyUI's own loaders will not read it.
"""

from __future__ import annotations

from dataclasses import dataclass

SNIFF_BYTES = 4096
"""How many leading bytes :func:`sniff` looks at (Matroska names its doc type a little way in)."""


@dataclass(frozen=True)
class MediaType:
    content_type: str
    ext: str

    @property
    def known(self) -> bool:
        return self.ext != "bin"


UNKNOWN = MediaType("application/octet-stream", "bin")

_PREFIXES = (
    (b"\x89PNG\r\n\x1a\n", MediaType("image/png", "png")),
    (b"\xff\xd8\xff", MediaType("image/jpeg", "jpg")),
    (b"GIF87a", MediaType("image/gif", "gif")),
    (b"GIF89a", MediaType("image/gif", "gif")),
    (b"II*\x00", MediaType("image/tiff", "tiff")),
    (b"MM\x00*", MediaType("image/tiff", "tiff")),
    (b"fLaC", MediaType("audio/flac", "flac")),
    (b"OggS", MediaType("audio/ogg", "ogg")),
    (b"ID3", MediaType("audio/mpeg", "mp3")),
)
_RIFF = {
    b"WEBP": MediaType("image/webp", "webp"),
    b"WAVE": MediaType("audio/wav", "wav"),
    b"AVI ": MediaType("video/x-msvideo", "avi"),
}
_FTYP_BRANDS = {
    b"qt  ": MediaType("video/quicktime", "mov"),
    b"M4A ": MediaType("audio/mp4", "m4a"),
    b"avif": MediaType("image/avif", "avif"),
    b"avis": MediaType("image/avif", "avif"),
    b"heic": MediaType("image/heic", "heic"),
    b"heix": MediaType("image/heic", "heic"),
}
_MP4 = MediaType("video/mp4", "mp4")
_QUICKTIME_ATOMS = (b"moov", b"mdat", b"wide")
_BMP_HEADER_SIZES = frozenset({12, 40, 52, 56, 64, 108, 124})
_EBML = b"\x1a\x45\xdf\xa3"


def _is_bmp(head: bytes) -> bool:
    """Two bytes "BM" are too weak (base64 text can decode to them): check the DIB header too."""
    return (
        len(head) >= 18
        and head[:2] == b"BM"
        and int.from_bytes(head[14:18], "little") in _BMP_HEADER_SIZES
    )


def _is_mp3_frame(head: bytes) -> bool:
    """An MPEG audio layer III frame header (files without an ID3 tag start with one)."""
    if len(head) < 4 or head[0] != 0xFF or head[1] & 0xE0 != 0xE0:
        return False
    version, layer = (head[1] >> 3) & 0b11, (head[1] >> 1) & 0b11
    bitrate, rate = head[2] >> 4, (head[2] >> 2) & 0b11
    return version != 0b01 and layer == 0b01 and bitrate not in (0, 15) and rate != 0b11


def _iso_media(head: bytes) -> MediaType | None:
    if head[4:8] == b"ftyp":
        return _FTYP_BRANDS.get(head[8:12], _MP4)
    if head[4:8] in _QUICKTIME_ATOMS:
        return _FTYP_BRANDS[b"qt  "]
    return None


def sniff(head: bytes) -> MediaType:
    """The media type of a file whose first bytes (up to :data:`SNIFF_BYTES`) are `head`."""
    for prefix, media in _PREFIXES:
        if head.startswith(prefix):
            return media
    if head[:4] == b"RIFF" and head[8:12] in _RIFF:
        return _RIFF[head[8:12]]
    if head.startswith(_EBML):
        webm = b"\x42\x82\x84webm" in head[:SNIFF_BYTES]
        return MediaType("video/webm", "webm") if webm else MediaType("video/x-matroska", "mkv")
    iso = _iso_media(head)
    if iso is not None:
        return iso
    if _is_bmp(head):
        return MediaType("image/bmp", "bmp")
    if _is_mp3_frame(head):
        return MediaType("audio/mpeg", "mp3")
    return UNKNOWN
