"""A v2 submission (`POST /api/v2/jobs`) read into the body the gateway's intake takes.

The contract's body is `{"workflow", "extra_data"?, "metadata"?}` (plus `priority`, which the
proxy also takes). What is v2-only is settled here, before the gateway's own checks run:

- a UI-export graph (top-level `nodes` and `links`) is `422 workflow_format_ui`;
- `webhook_url` and `inputs` are reserved by the contract: `422 invalid_workflow`;
- `extra_data` (a partner-node API key for ComfyUI) is refused with `400 invalid_request`: the
  fleet's instances are not given per-job credentials, and dropping the key silently would let
  the job fail later for a reason the client cannot see;
- `metadata` is string labels (at most 16, keys up to 64 and values up to 256 characters),
  kept in the job's options, so `/v1` shows them too; a bad map is `422 metadata_invalid`;
- every `core/ASSET` reference becomes the gateway's `asset:<sha256>` form, which its media step
  resolves (and checks the caller owns); one that names no stored asset is `422 missing_asset`.
"""

from __future__ import annotations

import re
from typing import Any

from comfyfleet.facades.comfy_v2._hashes import HashIndex, parse_hash
from comfyfleet.gateway import ApiError

MAX_LABELS = 16
_LABEL_KEY = re.compile(r"^[A-Za-z0-9_.:-]{1,64}$")
_MAX_LABEL_VALUE = 256
_FIELDS = frozenset({"workflow", "extra_data", "metadata", "priority"})
_RESERVED = ("webhook_url", "inputs")
_ASSET_TYPE = "core/ASSET"


def fleet_body(body: dict[str, Any], hashes: HashIndex) -> tuple[dict[str, Any], dict[str, str]]:
    """(the body for the gateway's `parse_job`, the job's labels) of a v2 request body."""
    if any(body.get(name) is not None for name in _RESERVED):
        raise ApiError(
            422, "invalid_workflow", "'webhook_url' and 'inputs' are reserved and not accepted"
        )
    unknown = sorted(set(body) - _FIELDS - set(_RESERVED))
    if unknown:
        raise ApiError(
            400,
            "invalid_request",
            f"unknown fields: {', '.join(u[:64] for u in unknown[:10])}",
            {"allowed": sorted(_FIELDS)},
        )
    workflow = body.get("workflow")
    if not isinstance(workflow, dict) or not workflow:
        raise ApiError(422, "invalid_workflow", "'workflow' must be an API-format graph")
    if isinstance(workflow.get("nodes"), list) and "links" in workflow:
        raise ApiError(
            422,
            "workflow_format_ui",
            "this is a UI-export graph; export the workflow in API format instead",
        )
    if body.get("extra_data") is not None:
        raise ApiError(
            400,
            "invalid_request",
            "'extra_data' (partner-node API keys) is not supported by this server",
            {"field": "extra_data"},
        )
    missing: list[str] = []
    resolved = _resolve_refs(workflow, hashes, missing)
    if missing:
        raise ApiError(
            422,
            "missing_asset",
            f"unresolvable core/ASSET reference(s): {', '.join(missing[:10])}",
            {"missing_ids": missing[:100]},
        )
    out: dict[str, Any] = {"workflow": resolved}
    if body.get("priority") is not None:
        out["priority"] = body["priority"]
    return out, labels_of(body.get("metadata"))


def labels_of(value: Any) -> dict[str, str]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ApiError(422, "metadata_invalid", "'metadata' must be an object of string labels")
    if len(value) > MAX_LABELS:
        raise ApiError(
            422,
            "metadata_invalid",
            f"'metadata' has {len(value)} labels; at most {MAX_LABELS} are kept",
            {"limit": MAX_LABELS},
        )
    for key, label in value.items():
        if not _LABEL_KEY.match(key):
            raise ApiError(
                422,
                "metadata_invalid",
                f"metadata key {key[:80]!r} must be 1-64 letters, digits or '_.:-'",
                {"key": key[:80]},
            )
        if not isinstance(label, str) or len(label) > _MAX_LABEL_VALUE:
            raise ApiError(
                422,
                "metadata_invalid",
                f"metadata value of {key!r} must be a string of at most {_MAX_LABEL_VALUE} "
                "characters",
                {"key": key},
            )
    return dict(value)


def _resolve_refs(node: Any, hashes: HashIndex, missing: list[str]) -> Any:
    if isinstance(node, dict):
        if node.get("__type") == _ASSET_TYPE:
            return _resolve_ref(node.get("info"), hashes, missing)
        return {key: _resolve_refs(value, hashes, missing) for key, value in node.items()}
    if isinstance(node, list):
        return [_resolve_refs(value, hashes, missing) for value in node]
    return node


def _resolve_ref(info: Any, hashes: HashIndex, missing: list[str]) -> Any:
    """`asset:<sha256>` for a reference naming a stored upload by id (authoritative) or, with
    no id, by hash; anything else is collected in `missing`."""
    if not isinstance(info, dict):
        missing.append("<core/ASSET without info>")
        return None
    ident = info.get("id")
    if isinstance(ident, str):
        found = parse_hash(ident if ":" in ident else f"sha256:{ident}")
        if found is not None and found[0] == "sha256":
            return f"asset:{found[1]}"
        missing.append(ident[:100])
        return None
    digest = info.get("hash")
    found = parse_hash(digest) if isinstance(digest, str) else None
    if found is not None:
        algorithm, hex_digest = found
        sha256 = hex_digest if algorithm == "sha256" else hashes.sha256_of(hex_digest)
        if sha256 is not None:
            return f"asset:{sha256}"
    missing.append(str(digest)[:100] if digest is not None else "<no id>")
    return None
