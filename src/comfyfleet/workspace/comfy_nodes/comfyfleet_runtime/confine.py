"""Keeping every job's files to its own folders, inside ComfyUI.

comfyfleet rewrites each literal `filename_prefix` to `<job id>/...` before it submits a graph,
but a prefix can also be computed by another node (a string node, a concatenation) and a loader
can be fed a computed file name: neither can be checked before the graph runs. So:

- `ComfyfleetJobPrefix` takes such a computed prefix and turns it into `<job id>/<clean prefix>`;
  comfyfleet wires it in front of every save node whose prefix comes from a link;
- `guard_annotated_paths` makes ComfyUI's "annotated" file lookups (the ones LoadImage,
  LoadLatent, LoadAudio, ... use) refuse any name that resolves outside the input folder, so no
  graph can open (or learn the existence of) any other file of the machine or another job's
  outputs.

`clean_prefix` must give the same answer as comfyfleet's own `clean_prefix` (jobs package): a
test runs both over the same strings.
"""

from __future__ import annotations

import os
from typing import Any

_UNSAFE = frozenset('\\:*?"<>|')
_MAX_COMPONENT_BYTES = 200
"""Room for ComfyUI's `_00001_.png` suffix under the usual 255-byte limit on a file name."""


def _clean_component(part: str) -> str:
    chars = (
        "_" if ch in _UNSAFE or not ch.isprintable() or 0xD800 <= ord(ch) <= 0xDFFF else ch
        for ch in part
    )
    cleaned = "".join(chars)
    while len(cleaned.encode("utf-8")) > _MAX_COMPONENT_BYTES:
        cleaned = cleaned[:-1]
    return cleaned


def clean_prefix(job_id: str, prefix: str) -> str:
    """`prefix` as a path under `job_id/`: separators of either kind, no `.`/`..`/empty parts,
    unsafe or unprintable characters replaced, each part short enough for a file name."""
    parts = [p for p in prefix.replace("\\", "/").split("/") if p not in ("", ".", "..")]
    cleaned = [c for c in (_clean_component(p) for p in parts) if c.strip(" .")]
    return "/".join([job_id, *cleaned]) if cleaned else f"{job_id}/out"


class ComfyfleetJobPrefix:
    """A computed output prefix, kept inside the job's own output folder."""

    CATEGORY = "comfyfleet"
    RETURN_TYPES = ("STRING",)
    RETURN_NAMES = ("prefix",)
    FUNCTION = "run"
    DESCRIPTION = "Added by comfyfleet: keeps a computed filename_prefix in the job's folder."

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {
            "required": {
                "job_id": ("STRING", {"default": ""}),
                "prefix": ("STRING", {"forceInput": True}),
            }
        }

    def run(self, job_id: str, prefix: Any) -> tuple[str]:
        return (clean_prefix(job_id, str(prefix)),)


def _inside(base: str, path: str) -> bool:
    base = os.path.realpath(base)
    return os.path.commonpath((base, os.path.realpath(path))) == base


def guard_annotated_paths(folder_paths: Any) -> None:
    """Wrap `folder_paths`' annotated lookups so that names leaving their folder (`..`,
    absolute paths, links pointing out) and names annotated `[output]` or `[temp]` (another
    job's files) are refused: the lookup raises, the existence check says no."""
    original_get = folder_paths.get_annotated_filepath
    original_exists = folder_paths.exists_annotated_filepath

    def allowed(name: str, default_dir: str | None = None) -> bool:
        bare, base = folder_paths.annotated_filepath(name)
        input_dir = folder_paths.get_input_directory()
        if base is not None and os.path.realpath(base) != os.path.realpath(input_dir):
            return False
        base = base or default_dir or input_dir
        return _inside(base, os.path.join(base, bare))

    def get_annotated_filepath(name: str, default_dir: str | None = None) -> str:
        if not allowed(name, default_dir):
            raise ValueError(f"file {name!r} is not in the input folder")
        return str(original_get(name, default_dir))

    def exists_annotated_filepath(name: str) -> bool:
        return allowed(name) and bool(original_exists(name))

    folder_paths.get_annotated_filepath = get_annotated_filepath
    folder_paths.exists_annotated_filepath = exists_annotated_filepath
