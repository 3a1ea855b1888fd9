"""The UI-to-API conversion against ComfyUI's own editor: for every workflow kept in the
reference fixtures (the `comfyui_workflow_templates` package of the cached ComfyUI, the editor's
default workflow, hand-made cases), our graph equals the one the editor's `graphToPrompt` made of
the same file, node for node, input for input.

One field is compared differently: `_meta.title` of a node the file gives no title. The editor
shows its own English name for a few node types (`editor_titles` in the fixtures: 'Preview Any'
for the server's 'Preview as Text'); the server cannot know those names and uses the display
name the instances report. ComfyUI ignores `_meta`.
"""

from __future__ import annotations

import pytest

from comfyfleet.workflows import convert_workflow
from tests.ui_workflows import FirstChoice, expected_graph, object_info, references

WORKFLOWS = references()["workflows"]


def test_the_fixtures_cover_the_templates_package_and_say_what_they_left_out() -> None:
    data = references()
    templates = [n for n in WORKFLOWS if not n.startswith("case:") and n != "default_workflow"]
    assert data["versions"]["comfyui-frontend-package"] == "1.32.9"
    assert data["versions"]["comfyui-workflow-templates"] == "0.7.25"
    # 188 workflows ship in the package; 14 use node types these CPU instances lack (audio
    # nodes need torchaudio, one needs custom nodes), and none failed in the editor.
    assert len(templates) + len(data["skipped"]) == 188
    assert len(templates) == 174
    assert all("lacks" in reason for reason in data["skipped"].values())
    assert "default_workflow" in WORKFLOWS
    assert {n for n in WORKFLOWS if n.startswith("case:")} == {
        "case:mute_bypass_reroute",
        "case:primitives_and_widget_inputs",
        "case:subgraphs",
        "case:group_node",
    }


@pytest.mark.parametrize("name", sorted(WORKFLOWS))
def test_the_conversion_equals_what_the_editor_queues(name: str) -> None:
    ours = convert_workflow(WORKFLOWS[name]["workflow"], object_info(), rng=FirstChoice())
    assert ours == expected_graph(name)


def test_titles_differ_from_the_editor_only_where_its_names_differ_from_the_servers() -> None:
    differing: dict[str, int] = {}
    for case in WORKFLOWS.values():
        ours = convert_workflow(case["workflow"], object_info(), rng=FirstChoice())
        for node_id, node in case["output"].items():
            if ours[node_id]["_meta"] != node["_meta"]:
                kind = node["class_type"]
                assert node["_meta"]["title"] == references()["editor_titles"][kind]
                assert ours[node_id]["_meta"]["title"] == object_info()[kind]["display_name"]
                differing[kind] = differing.get(kind, 0) + 1
    assert differing == {"PreviewAny": 7, "Preview3D": 6, "EmptyHunyuanLatentVideo": 4}
