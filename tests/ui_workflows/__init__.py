"""Reference fixtures for the UI-to-API workflow conversion, made once by ComfyUI's own editor.

`references.json.gz`: for every workflow of the `comfyui_workflow_templates` package of the
cached ComfyUI whose node types its CPU instances have, for the editor's default workflow and for
the hand-made cases of `bench/tools/ui_reference_cases.js`: the file (`workflow`) and what the
editor's `app.graphToPrompt()` made of it (`output`), with the versions they came from.
`object_info.json.gz`: that ComfyUI's `/object_info`, which the conversion reads.

Regenerate (only when the cached ComfyUI, its frontend or the templates change version):
`python bench/tools/ui_references.py` (a few minutes; needs Debian's chromium).
"""

from __future__ import annotations

import functools
import gzip
import json
import random
from pathlib import Path
from typing import Any

HERE = Path(__file__).parent


@functools.cache
def references() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(gzip.decompress((HERE / "references.json.gz").read_bytes()))
    return data


@functools.cache
def object_info() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(gzip.decompress((HERE / "object_info.json.gz").read_bytes()))
    return data


class FirstChoice(random.Random):
    """What the references were made with: the editor's Math.random pinned to 0, so every
    `{a|b}` of a dynamic prompt takes its first option."""

    def randrange(self, *args: Any, **kwargs: Any) -> int:
        return 0


def expected_graph(name: str) -> dict[str, Any]:
    """The editor's graph for workflow `name`, with the editor's own English names of untitled
    nodes (`editor_titles`: 'Preview Any' for the server's 'Preview as Text') put back to the
    display names the server reports, which is all a server can know. ComfyUI ignores `_meta`."""
    data = references()
    editor_titles = data["editor_titles"]
    info = object_info()
    expected: dict[str, Any] = {}
    for node_id, node in data["workflows"][name]["output"].items():
        kind = node["class_type"]
        title = node["_meta"]["title"]
        if kind in editor_titles and title == editor_titles[kind]:
            title = info[kind].get("display_name") or kind
        expected[node_id] = {**node, "_meta": {"title": title}}
    return expected
