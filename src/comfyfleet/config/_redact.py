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

from pydantic import BaseModel

from comfyfleet.auth import redact as redact_keys

MASK = "***"
_SECRET_NAME = re.compile(
    r"secret|passw|token|api_?key|credential|access_?key|account_?key|signature|"
    r"(^|[_-])(sig|sas|auth|authorization)($|[_-])|private|cookie|connection_?string",
    re.IGNORECASE,
)
_PYDANTIC_MASK = "**********"
_USERINFO = re.compile(
    r"(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*://)(?P<user>[^:/@\s]*)(?::(?P<password>[^/@\s]*))?@"
)
_QUERY_VALUE = re.compile(r"(?P<lead>[?&;])(?P<name>[^=&#\s]+)=(?P<value>[^&#\s]*)")


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
    """`text` with the credentials of every URL in it masked (wherever it stands, as in
    `--index-url=https://user:pw@host/`): a password, or a user name alone (often a token), and
    the values of secret-looking query parameters."""
    text = _USERINFO.sub(_mask_userinfo, text)
    return _QUERY_VALUE.sub(_mask_query_value, text)


def _mask_userinfo(match: re.Match[str]) -> str:
    if match.group("password") is not None:
        return f"{match.group('scheme')}{match.group('user')}:{MASK}@"
    return f"{match.group('scheme')}{MASK}@"


def _mask_query_value(match: re.Match[str]) -> str:
    if not _SECRET_NAME.search(match.group("name")):
        return match.group(0)
    return f"{match.group('lead')}{match.group('name')}={MASK}"
