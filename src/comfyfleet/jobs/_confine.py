"""Keeping a job to its own files: where its outputs go and which files its inputs may name.

Outputs: every `filename_prefix` is made to write under `<job id>/`. A literal prefix is cleaned
here; a prefix that another node computes cannot be known before the graph runs, so a
`ComfyfleetJobPrefix` node (comfyfleet's runtime extension, loaded by every instance) is wired in
front of it and cleans it inside ComfyUI. Both clean the same way (`clean_prefix`; a test holds
the two to the same answers). A server without that extension (an attached one) gets the literal
`<job id>/<node id>` in place of the computed prefix: its files stay the job's own, named by
their node instead of by the computed name.

Inputs: a literal value that reads as a path leaving its folder (`..`, an absolute path, a
drive, a NUL, a `[output]`/`[temp]` annotation naming another job's files) is refused before the
job is queued, in every input that is not free text (prompts are). Computed file names are held
to the input folder inside ComfyUI by the same extension.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any

PREFIX_NODE = "ComfyfleetJobPrefix"
_UNSAFE = frozenset('\\:*?"<>|')
_MAX_COMPONENT_BYTES = 200
_DRIVE = re.compile(r"^[A-Za-z]:[\\/]")
_ANNOTATION = re.compile(r"\s\[(output|temp)\]$")


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


def _is_link(value: Any) -> bool:
    return isinstance(value, list) and len(value) == 2 and isinstance(value[1], int)


def has_linked_prefix(workflow: Mapping[str, Any]) -> bool:
    """Whether some `filename_prefix` is computed by another node (only known when it runs)."""
    return any(
        _is_link((node.get("inputs") or {}).get("filename_prefix")) for node in workflow.values()
    )


def namespace_outputs(
    workflow: Mapping[str, Any], job_id: str, *, prefix_node: bool = True
) -> dict[str, Any]:
    """A copy whose every `filename_prefix` writes under `<job_id>/`, so that two jobs never
    share (or overwrite) output files and a job's outputs can be found and served by its id,
    whatever feeds the prefix. `prefix_node`: whether the instance has `ComfyfleetJobPrefix`
    to clean a computed prefix; without it the computed prefix is dropped."""
    prepared: dict[str, Any] = {}
    for node_id, node in workflow.items():
        inputs = dict(node.get("inputs", {}))
        if "filename_prefix" in inputs:
            prefix = inputs["filename_prefix"]
            if _is_link(prefix) and not prefix_node:
                inputs["filename_prefix"] = clean_prefix(job_id, str(node_id))
            elif _is_link(prefix):
                guard = f"comfyfleet-prefix-{node_id}"
                prepared[guard] = {
                    "class_type": PREFIX_NODE,
                    "inputs": {"job_id": job_id, "prefix": prefix},
                }
                inputs["filename_prefix"] = [guard, 0]
            else:
                text = prefix if isinstance(prefix, str) else ""
                inputs["filename_prefix"] = clean_prefix(job_id, text)
        prepared[str(node_id)] = {**node, "inputs": inputs}
    return prepared


def escaping_path(value: str) -> str | None:
    """Why `value` reads as a path that leaves its folder, or None when it does not."""
    if "\x00" in value:
        return "it holds a NUL character"
    if _ANNOTATION.search(value):
        return "it names another job's files ([output] or [temp])"
    parts = value.replace("\\", "/").split("/")
    if ".." in (p.strip() for p in parts):
        return "it climbs out of its folder with '..'"
    if value.startswith(("/", "\\", "~")) or _DRIVE.match(value):
        return "it is an absolute path"
    return None


FreeText = Callable[[str, str], bool]
"""Whether input `name` of node class `class_type` is free text (a prompt), not a name."""


def unsafe_paths(
    workflow: Mapping[str, Any], free_text: FreeText
) -> list[tuple[str, str, str, str]]:
    """(node id, class, input, reason) for every literal input that reads as an escaping path.
    `filename_prefix` is left out: it is rewritten into the job's folder, not refused."""
    found = []
    for node_id, node in workflow.items():
        class_type = str(node.get("class_type"))
        for name, value in (node.get("inputs") or {}).items():
            if not isinstance(value, str) or name == "filename_prefix":
                continue
            if free_text(class_type, name):
                continue
            reason = escaping_path(value)
            if reason is not None:
                found.append((str(node_id), class_type, name, reason))
    return found
