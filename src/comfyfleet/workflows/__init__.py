"""Workflows saved from the ComfyUI editor (UI format: `nodes` and `links`) turned into the API
format that ComfyUI runs, as the editor's own Run button would.

`convert_workflow(workflow, object_info)` is a pure function of the file and the node
definitions (a ComfyUI `/object_info` answer); `ConversionError` names the node that cannot be
converted and why.
"""

from __future__ import annotations

from comfyfleet.workflows._convert import convert_workflow
from comfyfleet.workflows._errors import ConversionError, TooManyNodes
from comfyfleet.workflows._format import is_ui_workflow, ui_node_count

__all__ = [
    "ConversionError",
    "TooManyNodes",
    "convert_workflow",
    "is_ui_workflow",
    "ui_node_count",
]
