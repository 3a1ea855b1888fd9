"""Proposing parameters from a saved API-format graph, and writing the kept ones as a template."""

from __future__ import annotations

from typing import Any

import pytest

from comfyfleet.templates import (
    ParameterError,
    TemplateLibrary,
    parse_text,
    propose_parameters,
    template_document,
    template_yaml,
)


def _shipped_graph(name: str) -> dict[str, Any]:
    return dict(TemplateLibrary().get(name).workflow)


def test_a_txt2img_graph_gives_the_usual_parameters_with_its_values_as_defaults() -> None:
    graph = _shipped_graph("txt2img")
    proposals = propose_parameters(graph)
    assert [p.name for p in proposals] == [
        "prompt",
        "negative",
        "seed",
        "steps",
        "cfg",
        "sampler",
        "scheduler",
        "denoise",
        "width",
        "height",
        "batch_size",
    ]
    by_name = {p.name: p.declaration for p in proposals}
    assert by_name["prompt"] == {
        "type": "text",
        "default": graph["6"]["inputs"]["text"],
        "sets": ["6.text"],
    }
    assert by_name["negative"]["sets"] == ["7.text"]
    assert by_name["seed"]["default"] == "random"
    assert by_name["width"] == {
        "type": "integer",
        "default": 512,
        "minimum": 16,
        "maximum": 16384,
        "multiple_of": 8,
        "sets": ["5.width"],
    }
    assert "choices" not in by_name["sampler"]  # no node schemas: no list to offer


def test_the_written_template_loads_and_its_defaults_give_back_the_graph() -> None:
    graph = _shipped_graph("img2img")
    document = template_document(graph, propose_parameters(graph), name="mine")
    text = template_yaml(document, header="made from img2img")
    template = parse_text(text, file="mine.yaml", suffix=".yaml", default_name="mine")
    assert text.startswith("# made from img2img\nname: mine\n")
    assert dict(template.models) == {"checkpoints": ("v1-5-pruned-emaonly.safetensors",)}
    with pytest.raises(ParameterError) as caught:
        template.apply({})
    assert caught.value.parameter == "image"
    applied = template.apply({"image": "asset:abc", "seed": graph["3"]["inputs"]["seed"]})
    expected = {**graph, "10": {"class_type": "LoadImage", "inputs": {"image": "asset:abc"}}}
    assert applied == expected


INFO: dict[str, Any] = {
    "MySampler": {
        "input": {
            "required": {
                "rng": [
                    "INT",
                    {"default": 0, "min": 0, "max": 1000, "control_after_generate": True},
                ],
                "steps": ["INT", {"default": 20, "min": 1, "max": 64}],
                "sampler_name": [["euler", "ddim"], {}],
                "scheduler": ["COMBO", {"options": ["normal", "karras"]}],
                "positive": ["CONDITIONING"],
                "negative": ["CONDITIONING"],
            },
            "optional": {"story": ["STRING", {"multiline": True}]},
        }
    },
    "LoadPicture": {"input": {"required": {"image": [["a.png"], {"image_upload": True}]}}},
    "LoadClip": {"input": {"required": {"video": [["a.mp4"], {"video_upload": True}]}}},
}


def test_node_schemas_give_bounds_choices_seeds_free_text_and_image_inputs() -> None:
    graph: dict[str, Any] = {
        "1": {"class_type": "Encode", "inputs": {"text": "a cat"}},
        "2": {"class_type": "Encode", "inputs": {"text": "dogs"}},
        "3": {"class_type": "Combine", "inputs": {"a": ["2", 0], "b": ["2", 0]}},
        "4": {
            "class_type": "MySampler",
            "inputs": {
                "rng": 5,
                "steps": 30,
                "sampler_name": "ddim",
                "scheduler": "karras",
                "positive": ["1", 0],
                "negative": ["3", 0],
                "story": "once upon a time",
            },
        },
        "5": {"class_type": "LoadPicture", "inputs": {"image": "a.png"}},
        "6": {"class_type": "LoadClip", "inputs": {"video": "a.mp4"}},
    }
    by_name = {p.name: p for p in propose_parameters(graph, INFO)}
    assert sorted(by_name) == [
        "image",
        "negative",
        "prompt",
        "prompt_2",
        "sampler",
        "scheduler",
        "seed",
        "steps",
    ]
    assert by_name["negative"].declaration["sets"] == ["2.text"]  # through Combine
    assert by_name["prompt"].declaration["sets"] == ["1.text"]
    assert by_name["prompt_2"].declaration["sets"] == ["4.story"]
    assert by_name["seed"].declaration == {
        "type": "integer",
        "default": "random",
        "minimum": 0,
        "maximum": 1000,
        "sets": ["4.rng"],
    }
    assert by_name["steps"].declaration["maximum"] == 64
    assert by_name["sampler"].declaration["choices"] == ["euler", "ddim"]
    assert by_name["scheduler"].declaration["choices"] == ["normal", "karras"]
    assert by_name["image"].declaration == {"type": "image", "sets": ["5.image"]}
    assert by_name["seed"].describe() == "seed: integer = random  [MySampler.rng]"


def test_a_second_sampler_gets_numbered_names_and_a_bound_the_value_breaks_is_dropped() -> None:
    graph = _shipped_graph("txt2img")
    graph["5"] = {**graph["5"], "inputs": {**graph["5"]["inputs"], "width": 1001}}
    graph["30"] = {**graph["3"], "inputs": {**graph["3"]["inputs"], "latent_image": ["3", 0]}}
    by_name = {p.name: p.declaration for p in propose_parameters(graph)}
    assert by_name["seed"]["sets"] == ["3.seed"] and by_name["seed_2"]["sets"] == ["30.seed"]
    assert by_name["steps_2"]["sets"] == ["30.steps"]
    assert by_name["width"] == {
        "type": "integer",
        "default": 1001,
        "minimum": 16,
        "maximum": 16384,
        "sets": ["5.width"],
    }
    document = template_document(graph, propose_parameters(graph), name="two")
    parse_text(template_yaml(document), file="two.yaml", suffix=".yaml", default_name="two")
