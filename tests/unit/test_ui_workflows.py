"""UI-format workflows converted feature by feature, with the node definitions of the cached
ComfyUI (the fixture `/object_info`). Each workflow here is written as the editor saves it; the
expected graphs follow the editor's own rules (see `comfyfleet.workflows`), which the
conformance test checks against the editor itself on the shipped templates and hand-made cases.
"""

from __future__ import annotations

import datetime as dt
import random
from typing import Any

import pytest

from comfyfleet.workflows import (
    ConversionError,
    TooManyNodes,
    convert_workflow,
    is_ui_workflow,
    ui_node_count,
)
from tests.ui_workflows import FirstChoice, object_info, references


def slot(name: str, kind: str, link: int | None = None, widget: bool = False) -> dict[str, Any]:
    data: dict[str, Any] = {"name": name, "type": kind, "link": link}
    if widget:
        data["widget"] = {"name": name}
    return data


def node(
    node_id: int,
    kind: str,
    *,
    inputs: list[dict[str, Any]] | None = None,
    outputs: list[list[int]] | None = None,
    values: Any = None,
    mode: int = 0,
    **extra: Any,
) -> dict[str, Any]:
    """A saved node; `outputs` lists the link ids leaving each output slot."""
    data: dict[str, Any] = {"id": node_id, "type": kind, "mode": mode, "inputs": inputs or []}
    data["outputs"] = [
        {"name": f"out{i}", "type": "*", "links": ids} for i, ids in enumerate(outputs or [])
    ]
    if values is not None:
        data["widgets_values"] = values
    return data | extra


def workflow(nodes: list[dict[str, Any]], links: list[list[Any]], **extra: Any) -> dict[str, Any]:
    return {"version": 0.4, "nodes": nodes, "links": links, **extra}


def convert(ui: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
    return convert_workflow(ui, object_info(), **kwargs)


def inputs(graph: dict[str, Any], node_id: str) -> dict[str, Any]:
    found: dict[str, Any] = graph[node_id]["inputs"]
    return found


KSAMPLER_VALUES = [111, "fixed", 20, 7.5, "euler", "normal", 1]
KSAMPLER_WIDGETS = [
    slot("seed", "INT", widget=True),
    slot("steps", "INT", widget=True),
    slot("cfg", "FLOAT", widget=True),
]


def test_widget_values_map_to_input_names_without_the_control_widget() -> None:
    ui = workflow([node(3, "KSampler", values=KSAMPLER_VALUES)], [])
    graph = convert(ui)
    assert graph == {
        "3": {
            "class_type": "KSampler",
            "inputs": {
                "seed": 111,
                "steps": 20,
                "cfg": 7.5,
                "sampler_name": "euler",
                "scheduler": "normal",
                "denoise": 1,
            },
            "_meta": {"title": "KSampler"},
        }
    }


def test_control_after_generate_of_a_definition_takes_a_slot_but_is_not_sent() -> None:
    # PrimitiveInt asks for a control widget itself (`control_after_generate: true`).
    ui = workflow([node(1, "PrimitiveInt", values=[5, "increment"], title="count")], [])
    assert convert(ui)["1"] == {
        "class_type": "PrimitiveInt",
        "inputs": {"value": 5},
        "_meta": {"title": "count"},
    }


def test_a_legacy_sampler_name_is_renamed_as_the_editor_does() -> None:
    values = [1, "fixed", 20, 7.5, "sample_euler_ancestral", "normal", 1]
    graph = convert(workflow([node(3, "KSampler", values=values)], []))
    assert inputs(graph, "3")["sampler_name"] == "euler_ancestral"


def test_a_linked_widget_input_is_sent_as_the_link() -> None:
    ui = workflow(
        [
            node(1, "PrimitiveInt", values=[9, "fixed"], outputs=[[5]]),
            node(3, "KSampler", values=KSAMPLER_VALUES, inputs=[slot("steps", "INT", 5, True)]),
        ],
        [[5, 1, 0, 3, 0, "INT"]],
    )
    assert inputs(convert(ui), "3")["steps"] == ["1", 0]


def test_a_primitive_node_writes_its_value_into_every_widget_it_feeds() -> None:
    ui = workflow(
        [
            node(7, "PrimitiveNode", values=[424242, "fixed"], outputs=[[1, 2]]),
            node(3, "KSampler", values=KSAMPLER_VALUES, inputs=[slot("seed", "INT", 1, True)]),
            node(4, "KSampler", values=KSAMPLER_VALUES, inputs=[slot("seed", "INT", 2, True)]),
        ],
        [[1, 7, 0, 3, 0, "INT"], [2, 7, 0, 4, 0, "INT"]],
    )
    graph = convert(ui)
    assert set(graph) == {"3", "4"}  # the primitive itself never reaches the server
    assert inputs(graph, "3")["seed"] == inputs(graph, "4")["seed"] == 424242


def test_reroutes_pass_on_what_feeds_them() -> None:
    ui = workflow(
        [
            node(1, "EmptyImage", values=[8, 8, 1, 0], outputs=[[1]]),
            node(2, "Reroute", inputs=[slot("", "*", 1)], outputs=[[2]]),
            node(3, "Reroute", inputs=[slot("", "*", 2)], outputs=[[3]]),
            node(4, "SaveImage", values=["x"], inputs=[slot("images", "IMAGE", 3)]),
            node(5, "Note", values=["a note"]),
        ],
        [[1, 1, 0, 2, 0, "IMAGE"], [2, 2, 0, 3, 0, "*"], [3, 3, 0, 4, 0, "IMAGE"]],
    )
    graph = convert(ui)
    assert set(graph) == {"1", "4"}
    assert inputs(graph, "4") == {"filename_prefix": "x", "images": ["1", 0]}


def test_a_muted_node_is_left_out_with_the_inputs_it_feeds() -> None:
    ui = workflow(
        [
            node(1, "EmptyImage", values=[8, 8, 1, 0], outputs=[[1]], mode=2),
            node(2, "PrimitiveInt", values=[64, "fixed"], outputs=[[2]], mode=2),
            node(
                3,
                "ImageScale",
                values=["nearest-exact", 32, 32, "disabled"],
                inputs=[slot("image", "IMAGE", 1), slot("width", "INT", 2, True)],
            ),
        ],
        [[1, 1, 0, 3, 0, "IMAGE"], [2, 2, 0, 3, 1, "INT"]],
    )
    graph = convert(ui)
    assert set(graph) == {"3"}
    # Not even the widget's own value: the link took its place, then went with the node.
    assert inputs(graph, "3") == {
        "upscale_method": "nearest-exact",
        "height": 32,
        "crop": "disabled",
    }


def _bypassed_sampler(target_type: str) -> dict[str, Any]:
    return workflow(
        [
            node(1, "CheckpointLoaderSimple", values=["m.safetensors"], outputs=[[1], [], [4]]),
            node(2, "EmptyLatentImage", values=[64, 64, 1], outputs=[[2]]),
            node(
                3,
                "KSampler",
                mode=4,
                values=KSAMPLER_VALUES,
                inputs=[slot("model", "MODEL", 1), slot("latent_image", "LATENT", 2)],
                outputs=[[3]],
            ),
            node(
                4,
                "VAEDecode",
                inputs=[slot("samples", "LATENT", 3), slot("vae", "VAE", 4)],
            ),
        ],
        [
            [1, 1, 0, 3, 0, "MODEL"],
            [2, 2, 0, 3, 3, "LATENT"],
            [3, 3, 0, 4, 0, target_type],
            [4, 1, 2, 4, 1, "VAE"],
        ],
    )


def test_a_bypassed_node_passes_on_its_input_of_the_wanted_type() -> None:
    graph = convert(_bypassed_sampler("LATENT"))
    assert "3" not in graph
    # Output 0 is a LATENT: the first input of that type, not the MODEL at slot 0.
    assert inputs(graph, "4") == {"samples": ["2", 0], "vae": ["1", 2]}


def test_a_bypassed_node_without_an_input_of_the_wanted_type_leaves_the_input_unset() -> None:
    ui = workflow(
        [
            node(2, "EmptyLatentImage", values=[64, 64, 1], outputs=[[1]]),
            node(1, "CheckpointLoaderSimple", values=["m"], outputs=[[], [], [2]]),
            node(
                3,
                "VAEDecode",
                mode=4,
                inputs=[slot("samples", "LATENT", 1), slot("vae", "VAE", 2)],
                outputs=[[3]],
            ),
            node(4, "SaveImage", values=["x"], inputs=[slot("images", "IMAGE", 3)]),
        ],
        [[1, 2, 0, 3, 0, "LATENT"], [2, 1, 2, 3, 1, "VAE"], [3, 3, 0, 4, 0, "IMAGE"]],
    )
    assert inputs(convert(ui), "4") == {"filename_prefix": "x"}


def test_an_any_type_input_behind_a_bypassed_node_takes_the_input_at_the_same_index() -> None:
    ui = workflow(
        [
            node(1, "EmptyImage", values=[8, 8, 1, 0], outputs=[[1]]),
            node(
                2,
                "ImageScale",
                mode=4,
                values=["nearest-exact", 32, 32, "disabled"],
                inputs=[slot("image", "IMAGE", 1)],
                outputs=[[2]],
            ),
            node(3, "PreviewAny", inputs=[slot("source", "*", 2)]),
        ],
        [[1, 1, 0, 2, 0, "IMAGE"], [2, 2, 0, 3, 0, "IMAGE"]],
    )
    assert inputs(convert(ui), "3") == {"source": ["1", 0], "preview": ""}


def test_unknown_types_may_be_muted_or_bypassed_but_not_run() -> None:
    muted = workflow(
        [node(1, "NotInstalled", mode=2), node(2, "EmptyImage", values=[8, 8, 1, 0])], []
    )
    assert set(convert(muted)) == {"2"}
    running = workflow([node(5, "NotInstalled"), node(2, "EmptyImage", values=[8, 8, 1, 0])], [])
    with pytest.raises(ConversionError) as refused:
        convert(running)
    assert (refused.value.node_id, refused.value.class_type) == ("5", "NotInstalled")
    assert str(refused.value).startswith(
        "node 5 (NotInstalled): no instance of this fleet has this node type"
    )


def test_subgraph_nodes_run_as_their_inner_nodes_with_promoted_widget_values() -> None:
    case = references()["workflows"]["case:subgraphs"]["workflow"]
    graph = convert(case)
    # Node 6 inside subgraph node 10, itself inside subgraph node 11.
    sampler = inputs(graph, "11:10:6")
    assert sampler["positive"] == ["11:3", 0]  # a node of the outer subgraph
    assert sampler["negative"] == ["4", 0] and sampler["model"] == ["1", 0]  # from the top level
    assert sampler["steps"] == 17  # the promoted widget of the (unlinked) 'steps' input
    assert inputs(graph, "9")["images"] == ["11:10:7", 0]  # out through both subgraph outputs
    assert "11:10:8" not in graph  # bypassed inside
    assert not any(key in graph for key in ("10", "11", "12"))  # subgraph nodes are not sent


def test_a_legacy_group_node_runs_as_its_inner_nodes() -> None:
    case = references()["workflows"]["case:group_node"]["workflow"]
    graph = convert(case)
    assert {k for k in graph if k.startswith("9:")} == {"9:0", "9:1", "9:2", "9:3"}
    assert inputs(graph, "9:0") == {"text": "instance 99", "clip": ["1", 1]}
    assert inputs(graph, "9:2")["seed"] == 99
    assert inputs(graph, "9:2")["positive"] == ["9:0", 0]  # linked inside the group
    assert inputs(graph, "9:2")["latent_image"] == ["2", 0]  # fed through the group's input
    assert inputs(graph, "10")["images"] == ["9:3", 0]
    # A bypassed group node (11) has no input of its output's type: its consumer gets nothing.
    assert inputs(graph, "12") == {"filename_prefix": "ComfyUI"}


def test_dynamic_prompts_lose_comments_and_draw_one_option_per_choice() -> None:
    text = "a {red|green} fox // a comment\n/* gone */{big|small|{tiny|huge}} \\{kept\\}"
    ui = workflow([node(1, "CLIPTextEncode", values=[text])], [])
    assert inputs(convert(ui, rng=FirstChoice()), "1")["text"] == "a red fox \nbig {kept}"
    drawn = {inputs(convert(ui, rng=random.Random(seed)), "1")["text"] for seed in range(200)}
    assert drawn == {
        f"a {colour} fox \n{size} {{kept}}"
        for colour in ("red", "green")
        for size in ("big", "small", "tiny", "huge")
    }


def test_file_name_prefixes_take_dates_and_other_widgets_values() -> None:
    ui = workflow(
        [
            node(3, "KSampler", values=KSAMPLER_VALUES),
            node(9, "SaveImage", values=["%date:yyyy-MM-dd%/%KSampler.seed%_%Missing.x%"]),
        ],
        [],
    )
    now = dt.datetime(2025, 3, 4, 5, 6, 7)
    assert inputs(convert(ui, now=now), "9")["filename_prefix"] == "2025-03-04/111_%Missing.x%"


def test_a_loader_of_outputs_names_its_file_with_the_folder() -> None:
    ui = workflow([node(1, "LoadImageOutput", values=["made_before.png", False, "refresh"])], [])
    assert inputs(convert(ui), "1") == {"image": "made_before.png [output]", "refresh": "refresh"}


def test_text_boxes_hold_text_and_numbers_keep_javascript_precision() -> None:
    ui = workflow(
        [
            node(1, "CLIPTextEncode", values=["one\r\ntwo"]),
            node(2, "CLIPTextEncode", values=[None]),
            node(3, "KSampler", values=[2**64 - 1, "fixed", 20, 2.0, "euler", "normal", 1]),
        ],
        [],
    )
    graph = convert(ui)
    assert inputs(graph, "1")["text"] == "one\ntwo"
    assert inputs(graph, "2")["text"] == ""
    assert inputs(graph, "3")["seed"] == 18446744073709552000  # as JSON.parse reads it
    assert inputs(graph, "3")["cfg"] == 2 and isinstance(inputs(graph, "3")["cfg"], int)


def test_nodes_that_need_the_editors_browser_are_refused_by_name() -> None:
    ui = workflow([node(4, "WebcamCapture", values=["", 512, 512, True, "capture"])], [])
    with pytest.raises(ConversionError) as refused:
        convert(ui)
    assert refused.value.node_id == "4" and refused.value.class_type == "WebcamCapture"
    assert "webcam" in refused.value.reason


def test_a_subgraph_that_contains_itself_is_refused() -> None:
    loop = {
        "id": "loop-id",
        "name": "Loop",
        "nodes": [{"id": 1, "type": "loop-id", "mode": 0}],
        "links": [],
        "inputs": [],
        "outputs": [],
    }
    ui = workflow([node(1, "loop-id")], [], definitions={"subgraphs": [loop]})
    with pytest.raises(ConversionError, match="subgraph 'Loop' contains itself"):
        convert(ui)


def test_malformed_files_are_refused_with_what_is_wrong() -> None:
    with pytest.raises(ConversionError, match="'nodes' and 'links'"):
        convert({"1": {"class_type": "EmptyImage", "inputs": {}}})
    with pytest.raises(ConversionError, match="every node needs an 'id' and a 'type'"):
        convert(workflow([{"id": 1}], []))
    with pytest.raises(ConversionError, match="malformed link"):
        convert(workflow([node(1, "EmptyImage")], [[1, 1, "x", 2, 0, "IMAGE"]]))


def test_the_opened_up_graph_is_bounded() -> None:
    ui = workflow([node(i, "EmptyImage", values=[8, 8, 1, 0]) for i in range(1, 6)], [])
    assert ui_node_count(ui) == 5 and is_ui_workflow(ui)
    assert ui_node_count({"1": {}}) is None
    with pytest.raises(TooManyNodes) as refused:
        convert(ui, max_nodes=3)
    assert (refused.value.count, refused.value.limit) == (4, 3)


def test_subgraphs_nested_too_deep_are_refused() -> None:
    depth = 40
    subgraphs = [
        {
            "id": f"sg{level}",
            "name": f"level {level}",
            "nodes": [{"id": 1, "type": f"sg{level + 1}", "mode": 0}] if level < depth else [],
            "links": [],
        }
        for level in range(depth + 1)
    ]
    ui = workflow([node(1, "sg0")], [], definitions={"subgraphs": subgraphs})
    with pytest.raises(ConversionError, match="nested more than 32 deep"):
        convert(ui)


def test_a_long_chain_of_reroutes_is_followed_to_its_end() -> None:
    count = 3000  # far deeper than Python's recursion limit
    nodes = [node(1, "EmptyImage", values=[8, 8, 1, 0], outputs=[[1]])]
    links = [[1, 1, 0, 2, 0, "IMAGE"]]
    for i in range(2, count + 2):
        nodes.append(node(i, "Reroute", inputs=[slot("", "*", i - 1)], outputs=[[i]]))
        links.append([i, i, 0, i + 1, 0, "IMAGE"])
    nodes.append(node(count + 2, "PreviewImage", inputs=[slot("images", "IMAGE", count + 1)]))
    graph = convert(workflow(nodes, links))
    assert inputs(graph, str(count + 2)) == {"images": ["1", 0]}


def _mutated(value: Any, rng: random.Random, rate: float) -> Any:
    junk = [None, True, 0, -1, 7, 2**60, 1.5, "", "x", "-10", [], [1, 2], {}, {"name": "x"}]
    if rng.random() < rate:
        return rng.choice(junk)
    if isinstance(value, dict):
        return {k: _mutated(v, rng, rate) for k, v in value.items() if rng.random() > rate / 2}
    if isinstance(value, list):
        return [_mutated(v, rng, rate) for v in value if rng.random() > rate / 2]
    return value


@pytest.mark.parametrize("rate", [0.02, 0.1])
def test_damaged_files_are_refused_with_a_conversion_error_never_a_crash(rate: float) -> None:
    """Saved files mangled at random (fixed seeds): either a graph or a `ConversionError`."""
    rng = random.Random(rate)
    cases = references()["workflows"]
    names = sorted(cases)
    refused = 0
    for _ in range(300):
        damaged = _mutated(cases[rng.choice(names)]["workflow"], rng, rate)
        try:
            convert(damaged)
        except ConversionError:
            refused += 1
    assert refused > 0


def test_a_combo_with_a_control_widget_also_saves_its_filter_list() -> None:
    """A combo input with `control_after_generate` gets two widgets the server never sees:
    the control and a filter list; an INT named `seed` gets a control without asking."""
    info = {
        "PickOne": {
            "input": {
                "required": {
                    "choice": [["a", "b", "c"], {"control_after_generate": True}],
                    "seed": ["INT", {"default": 0}],
                    "strength": ["FLOAT", {"default": 1.0}],
                }
            },
            "input_order": {"required": ["choice", "seed", "strength"]},
            "output": ["STRING"],
            "output_name": ["STRING"],
            "display_name": "Pick one",
        }
    }
    saved = {
        "id": 1,
        "type": "PickOne",
        "mode": 0,
        "widgets_values": ["c", "increment", "", 5, "fixed", 0.5],
    }
    graph = convert_workflow(workflow([saved], []), info)
    assert graph["1"] == {
        "class_type": "PickOne",
        "inputs": {"choice": "c", "seed": 5, "strength": 0.5},
        "_meta": {"title": "Pick one"},
    }
