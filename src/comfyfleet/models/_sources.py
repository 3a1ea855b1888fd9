"""Where a model file comes from: the source strings of manifests, checked and resolved.

  https://host/path            plain HTTP(S)
  hf://org/repo/path@revision  Hugging Face (revision defaults to main; token from HF_TOKEN)
  civitai://MODEL_VERSION_ID   Civitai (token from CIVITAI_API_TOKEN)
  s3://bucket/key              read through a pluggable streamer (comfyfleet.storage), with
  az://container/blob          the storage settings' endpoint and credentials
  /abs/path, ./rel, file://... a local file, copied

The base URLs of hf:// and civitai:// come from :class:`ModelSettings`, so tests point them at
a loopback server.
"""

from __future__ import annotations

import posixpath
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal
from urllib.parse import quote, unquote, urlsplit

from comfyfleet.models._errors import ManifestError
from comfyfleet.models._settings import ModelSettings

if TYPE_CHECKING:
    from comfyfleet.models._pinning import UrlGuard

HF_TOKEN_ENV = "HF_TOKEN"
CIVITAI_TOKEN_ENV = "CIVITAI_API_TOKEN"
_URL_SCHEMES = ("http://", "https://", "hf://", "civitai://", "s3://", "az://", "file://")
_SAFE_NAME = re.compile(r"[^A-Za-z0-9._-]+")

Kind = Literal["http", "stream"]


@dataclass(frozen=True)
class ResolvedSource:
    """How to fetch one source: an HTTP URL with headers, or a URL for a streamer."""

    source: str
    kind: Kind
    url: str
    scheme: str
    headers: Mapping[str, str] = field(default_factory=dict)
    token_env: str | None = None
    """The environment variable that carries this source's token, for error hints."""
    token_set: bool = False
    guard: UrlGuard | None = None
    """Set for a URL a client chose: connections go to checked addresses only (`_pinning`)."""


def is_url(text: str) -> bool:
    """Whether a loader input or an install argument is a source URL (not a file name)."""
    return text.startswith(_URL_SCHEMES)


def check_source(text: str) -> str:
    """The source unchanged, or ManifestError saying what is wrong with it."""
    if not text or text != text.strip():
        raise ManifestError(f"source {text!r} is empty or has surrounding spaces")
    if text.startswith(("http://", "https://")):
        if not urlsplit(text).netloc:
            raise ManifestError(f"source {text!r} has no host")
    elif text.startswith("hf://"):
        _split_hf(text)
    elif text.startswith("civitai://"):
        _civitai_id(text)
    elif text.startswith(("s3://", "az://")):
        parts = text[5:].split("/", 1)
        if len(parts) != 2 or not parts[0] or not parts[1]:
            scheme = text[:2]
            raise ManifestError(f"source {text!r} must be {scheme}://CONTAINER/KEY")
    elif "://" in text and not text.startswith("file://"):
        raise ManifestError(
            f"source {text!r} has an unknown scheme (use https://, hf://, civitai://, s3://,"
            " az:// or a local path)"
        )
    return text


def _split_hf(text: str) -> tuple[str, str, str]:
    body = text[len("hf://") :]
    revision = "main"
    if "@" in body:
        body, revision = body.rsplit("@", 1)
    parts = body.split("/")
    if len(parts) < 3 or not all(parts) or not revision or ".." in parts:
        raise ManifestError(f"source {text!r} must be hf://ORG/REPO/PATH[@REVISION]")
    return "/".join(parts[:2]), "/".join(parts[2:]), revision


def _civitai_id(text: str) -> str:
    ident = text[len("civitai://") :]
    if not ident.isdigit():
        raise ManifestError(f"source {text!r} must be civitai://MODEL_VERSION_ID (digits)")
    return ident


def resolve_source(
    text: str, settings: ModelSettings, env: Mapping[str, str] | None = None
) -> ResolvedSource:
    """Turn a checked source into what the downloader fetches."""
    env = env or {}
    check_source(text)
    if text.startswith("hf://"):
        repo, path, revision = _split_hf(text)
        base = settings.huggingface_url.rstrip("/")
        url = f"{base}/{repo}/resolve/{quote(revision, safe='')}/{quote(path)}"
        return _with_token(text, url, "hf", HF_TOKEN_ENV, env)
    if text.startswith("civitai://"):
        base = settings.civitai_url.rstrip("/")
        url = f"{base}/api/download/models/{_civitai_id(text)}"
        return _with_token(text, url, "civitai", CIVITAI_TOKEN_ENV, env)
    if text.startswith(("http://", "https://")):
        return ResolvedSource(text, "http", text, text.split("://", 1)[0])
    if text.startswith(("s3://", "az://")):
        return ResolvedSource(text, "stream", text, text[:2])
    path = unquote(text[len("file://") :]) if text.startswith("file://") else text
    return ResolvedSource(text, "stream", path, "file")


def _with_token(
    text: str, url: str, scheme: str, token_env: str, env: Mapping[str, str]
) -> ResolvedSource:
    token = env.get(token_env, "").strip()
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return ResolvedSource(text, "http", url, scheme, headers, token_env, bool(token))


def source_basename(text: str) -> str:
    """A file name for a source that names none (URL inputs, `install URL`)."""
    if text.startswith("civitai://"):
        return f"civitai-{_civitai_id(text)}.safetensors"
    body = text.split("://", 1)[-1]
    if text.startswith("hf://") and "@" in body:
        body = body.rsplit("@", 1)[0]
    path = urlsplit(text).path if text.startswith(("http://", "https://")) else body
    name = posixpath.basename(unquote(path).rstrip("/"))
    name = _SAFE_NAME.sub("_", name).strip("._")
    return name or "model"
