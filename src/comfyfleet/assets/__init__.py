"""Media inputs of the job API: uploaded assets, base64, and URLs, stored once by content.

`AssetStore` keeps files under ComfyUI's input folder (`comfyfleet-assets/<sha256>.<ext>`);
`UrlFetcher` fetches http(s) through the SSRF guard (`comfyfleet.netguard`) and s3/az through
readers passed in; `resolve_media` rewrites a graph so ComfyUI's loaders read the stored files.
`stored_files` and `remove_unused` are what retention removes unused ones with.
"""

from __future__ import annotations

from comfyfleet.assets._errors import (
    ASSET_NOT_FOUND,
    BAD_BASE64,
    BAD_INPUT_PATH,
    EMPTY_INPUT,
    INPUT_TOO_LARGE,
    URL_NOT_FOUND,
    URL_REFUSED,
    URL_UNREACHABLE,
    AssetNotFound,
    MediaInputError,
)
from comfyfleet.assets._fetch import ObjectReader, UrlFetcher
from comfyfleet.assets._resolve import AssetResolver, MediaResolver, Rewrite, resolve_media
from comfyfleet.assets._settings import AssetSettings
from comfyfleet.assets._sniff import MediaType, sniff
from comfyfleet.assets._store import (
    ASSETS_FOLDER,
    DEFAULT_MAX_UPLOAD_BYTES,
    Asset,
    AssetStore,
    normalize_id,
)
from comfyfleet.assets._sweep import StoredFile, remove_unused, stored_files
from comfyfleet.assets._values import LOADER_INPUTS, decode_base64

__all__ = [
    "ASSETS_FOLDER",
    "ASSET_NOT_FOUND",
    "BAD_BASE64",
    "BAD_INPUT_PATH",
    "DEFAULT_MAX_UPLOAD_BYTES",
    "EMPTY_INPUT",
    "INPUT_TOO_LARGE",
    "LOADER_INPUTS",
    "URL_NOT_FOUND",
    "URL_REFUSED",
    "URL_UNREACHABLE",
    "Asset",
    "AssetNotFound",
    "AssetResolver",
    "AssetSettings",
    "AssetStore",
    "MediaInputError",
    "MediaResolver",
    "MediaType",
    "ObjectReader",
    "Rewrite",
    "StoredFile",
    "UrlFetcher",
    "decode_base64",
    "normalize_id",
    "remove_unused",
    "resolve_media",
    "sniff",
    "stored_files",
]
