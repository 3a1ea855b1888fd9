"""The effective settings as something that may be shown: every secret replaced by `***`.

Secrets hide in several forms, and each is caught here: `SecretStr` fields (keys, tokens,
connection strings), passwords inside URLs (`postgresql://user:password@host/db`), secret-looking
query parameters (`?sig=...`, `?token=...`), values under secret-looking names in free-form
mappings (`fleet.env: {HF_TOKEN: ...}`, storage `http_headers`), and API keys in any text
(`comfyfleet.auth.redact`). What is left is what an operator needs to check a deployment:
folders, limits, addresses, which features are on.
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from pydantic import BaseModel

from comfyfleet.auth import redact as redact_keys

MASK = "***"
_SECRET_NAME = re.compile(
    r"secret|passw|token|api_?key|credential|access_?key|account_?key|signature|"
    r"(^|[_-])(sig|sas|auth|authorization)($|[_-])|private|cookie|connection_?string",
    re.IGNORECASE,
)
_PYDANTIC_MASK = "**********"


def redacted_settings(settings: BaseModel) -> dict[str, Any]:
    """`settings` as JSON data with every secret masked."""
    data = settings.model_dump(mode="json")
    cleaned = _clean(data, name="")
    assert isinstance(cleaned, dict)
    return cleaned


def _clean(value: Any, *, name: str) -> Any:
    if isinstance(value, dict):
        return {key: _clean(item, name=str(key)) for key, item in value.items()}
    if isinstance(value, list):
        return [_clean(item, name=name) for item in value]
    if not isinstance(value, str):
        return value
    if value == _PYDANTIC_MASK or (value and _SECRET_NAME.search(name)):
        return MASK
    return redact_keys(_clean_url(value))


def _clean_url(text: str) -> str:
    """`text` with a URL's password and secret-looking query values masked (other text as
    it is)."""
    if "://" not in text:
        return text
    try:
        parts = urlsplit(text)
        password = parts.password
    except ValueError:
        return text
    if password is not None:
        host = parts.netloc.rpartition("@")[2]
        parts = parts._replace(netloc=f"{parts.username or ''}:{MASK}@{host}")
    if parts.query:
        query = [
            (key, MASK if _SECRET_NAME.search(key) else item)
            for key, item in parse_qsl(parts.query, keep_blank_values=True)
        ]
        parts = parts._replace(query=urlencode(query, safe="*"))
    return urlunsplit(parts)
