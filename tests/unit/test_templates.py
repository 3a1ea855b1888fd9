"""Templates: loading (and the errors that name the file and the key), applying parameters,
their bounds, random seeds, the JSON Schema, and the library's shipped + folder order."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from comfyfleet.models import Catalog
from comfyfleet.templates import (
    ParameterError,
    TemplateFileError,
    TemplateLibrary,
    TemplateNotFound,
    parse_text,
    shipped_templates,
)

SHIPPED = ["batch", "img2img", "inpaint", "txt2img", "upscale"]

GRAPH: dict[str, Any] = {
    "3": {
        "class_type": "KSampler",
        "inputs": {"seed": 0, "steps": 20, "cfg": 7.0, "model": ["4", 0], "denoise": 1.0},
    },
    "4": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "a.safetensors"}},
    "5": {"class_type": "EmptyLatentImage", "inputs": {"width": 512, "height": 512}},
    "6": {"class_type": "CLIPTextEncode", "inputs": {"text": "", "clip": ["4", 1]}},
    "9": {"class_type": "SaveImage", "inputs": {"images": ["3", 0], "filename_prefix": "t"}},
}


def _doc(**parameters: Any) -> dict[str, Any]:
    return {"description": "test", "parameters": parameters, "workflow": GRAPH}


def _parse(document: Any, file: str = "mine.yaml") -> Any:
    return parse_text(
        yaml.safe_dump(document, sort_keys=False),
        file=file,
        suffix=".yaml",
        default_name=Path(file).stem,
    )


def _failure(document: Any) -> TemplateFileError:
    with pytest.raises(TemplateFileError) as caught:
        _parse(document)
    return caught.value


STEPS = {"type": "integer", "default": 20, "minimum": 1, "maximum": 150, "sets": ["3.steps"]}
SIZE = {"type": "integer", "default": 512, "minimum": 64, "maximum": 2048, "multiple_of": 8}


def test_every_shipped_template_loads_with_models_that_a_preset_provides() -> None:
    templates = {t.name: t for t in shipped_templates()}
    assert sorted(templates) == sorted([*SHIPPED, *(f"{n}-sdxl" for n in SHIPPED)])
    catalog = Catalog.load()
    for template in templates.values():
        assert template.preset is not None, template.name
        preset = catalog.preset(template.preset)
        provided = {f"{f.type}/{f.filename}" for f in preset.files}
        assert set(template.model_keys()) <= provided, template.name
        assert template.source == f"builtin:{template.name}.yaml"


def test_sdxl_templates_default_to_1024_pixels_20_steps_and_euler() -> None:
    for name in SHIPPED:
        given = {} if name in ("txt2img", "batch") else {"image": "asset:x"}
        values = _shipped(f"{name}-sdxl").resolve(given)
        assert values["steps"] == 20 and values["sampler"] == "euler", name
        if not given:
            assert (values["width"], values["height"]) == (1024, 1024)
            sd15 = _shipped(name).resolve(given)
            assert (sd15["width"], sd15["height"]) == (512, 512)


def _shipped(name: str) -> Any:
    return TemplateLibrary().get(name)


def test_apply_sets_every_target_of_a_parameter_and_leaves_the_template_alone() -> None:
    template = _parse(
        _doc(
            prompt={"type": "text", "default": "a cat", "sets": ["6.text"]},
            size={**SIZE, "sets": ["5.width", "5.height"]},
            steps=STEPS,
        )
    )
    graph = template.apply({"prompt": "a fox", "size": 64})
    assert graph["6"]["inputs"]["text"] == "a fox"
    assert (graph["5"]["inputs"]["width"], graph["5"]["inputs"]["height"]) == (64, 64)
    assert graph["3"]["inputs"]["steps"] == 20  # the default
    assert template.workflow["6"]["inputs"]["text"] == ""  # a copy was changed, not the template
    assert graph["3"]["inputs"]["model"] == ["4", 0]


def test_a_random_seed_is_drawn_for_every_job_within_its_bounds() -> None:
    seed = {"type": "integer", "default": "random", "minimum": 5, "maximum": 2**64 - 1}
    template = _parse(_doc(seed={**seed, "sets": ["3.seed"]}))
    drawn = {template.apply({})["3"]["inputs"]["seed"] for _ in range(20)}
    assert len(drawn) == 20
    assert all(5 <= s <= 2**64 - 1 for s in drawn)
    assert template.apply({"seed": 42})["3"]["inputs"]["seed"] == 42
    small = _parse(_doc(seed={**seed, "maximum": 7, "sets": ["3.seed"]}))
    assert {small.apply({})["3"]["inputs"]["seed"] for _ in range(200)} == {5, 6, 7}
    schema = template.schema()["properties"]["seed"]
    assert schema["x-random"] is True and "default" not in schema
    assert "seed" not in template.schema()["required"]


def test_resolve_then_apply_runs_with_the_values_resolve_showed() -> None:
    seed = {"type": "integer", "default": "random", "sets": ["3.seed"]}
    template = _parse(_doc(seed=seed))
    values = template.resolve({})
    assert template.apply(values)["3"]["inputs"]["seed"] == values["seed"]


@pytest.mark.parametrize(
    ("params", "message", "details"),
    [
        (
            {"steps": 151},
            "parameter 'steps' must be at most 150 (got 151)",
            {"parameter": "steps", "maximum": 150},
        ),
        (
            {"steps": 0},
            "parameter 'steps' must be at least 1 (got 0)",
            {"parameter": "steps", "minimum": 1},
        ),
        (
            {"size": 100},
            "parameter 'size' must be a multiple of 8 (got 100)",
            {"parameter": "size", "multiple_of": 8},
        ),
        (
            {"steps": "8"},
            "parameter 'steps' must be an integer (got '8')",
            {"parameter": "steps", "type": "integer"},
        ),
        (
            {"steps": 2.5},
            "parameter 'steps' must be an integer (got 2.5)",
            {"parameter": "steps", "type": "integer"},
        ),
        (
            {"steps": True},
            "parameter 'steps' must be an integer (got True)",
            {"parameter": "steps", "type": "integer"},
        ),
        (
            {"sampler": "fast"},
            "parameter 'sampler' must be one of euler, ddim (got 'fast')",
            {"parameter": "sampler", "choices": ["euler", "ddim"]},
        ),
        (
            {"cfg": float("nan")},
            "parameter 'cfg' must be a finite number (got nan)",
            {"parameter": "cfg", "type": "number"},
        ),
        (
            {"stpes": 8},
            "template 'mine' has no parameter 'stpes' (known: steps, size, sampler, cfg)",
            {"parameter": "stpes", "known": ["steps", "size", "sampler", "cfg"]},
        ),
    ],
)
def test_a_bad_value_names_the_parameter_and_the_bound(
    params: dict[str, Any], message: str, details: dict[str, Any]
) -> None:
    template = _parse(
        _doc(
            steps=STEPS,
            size={**SIZE, "sets": ["5.width"]},
            sampler={
                "type": "string",
                "default": "euler",
                "choices": ["euler", "ddim"],
                "sets": ["6.text"],
            },
            cfg={"type": "number", "default": 7, "sets": ["3.cfg"]},
        )
    )
    with pytest.raises(ParameterError) as caught:
        template.apply(params)
    assert caught.value.message == message
    assert caught.value.details() == details


def test_a_required_parameter_must_be_given_and_an_optional_one_keeps_the_graph_value() -> None:
    template = _parse(
        _doc(
            image={"type": "image", "sets": ["6.text"]},
            mask={"type": "image", "required": False, "sets": ["9.filename_prefix"]},
        )
    )
    with pytest.raises(ParameterError) as caught:
        template.apply({})
    assert caught.value.message == (
        "parameter 'image' is required (an image: a URL, data: URI, base64 or asset:<id>)"
    )
    assert caught.value.details() == {"parameter": "image", "required": True}
    graph = template.apply({"image": "asset:abc"})
    assert graph["6"]["inputs"]["text"] == "asset:abc"
    assert graph["9"]["inputs"]["filename_prefix"] == "t"
    assert template.schema()["required"] == ["image"]


def test_numbers_take_integers_and_integers_take_integral_floats() -> None:
    template = _parse(_doc(cfg={"type": "number", "default": 7, "sets": ["3.cfg"]}, steps=STEPS))
    graph = template.apply({"cfg": 4, "steps": 8.0})
    assert graph["3"]["inputs"]["cfg"] == 4.0 and isinstance(graph["3"]["inputs"]["cfg"], float)
    assert graph["3"]["inputs"]["steps"] == 8 and isinstance(graph["3"]["inputs"]["steps"], int)


def test_the_schema_is_json_schema_of_the_parameters() -> None:
    template = _parse(
        _doc(
            prompt={"type": "text", "default": "a cat", "description": "what", "sets": ["6.text"]},
            size={**SIZE, "sets": ["5.width"]},
            image={"type": "image", "sets": ["6.text"]},
        )
    )
    schema = template.schema()
    assert schema["type"] == "object" and schema["additionalProperties"] is False
    assert schema["required"] == ["image"]
    assert schema["properties"]["prompt"] == {
        "type": "string",
        "x-type": "text",
        "description": "what",
        "default": "a cat",
        "x-sets": ["6.text"],
    }
    assert schema["properties"]["size"] == {
        "type": "integer",
        "x-type": "integer",
        "default": 512,
        "minimum": 64,
        "maximum": 2048,
        "multipleOf": 8,
        "x-sets": ["5.width"],
    }
    assert schema["properties"]["image"]["contentMediaType"] == "image/*"
    json.dumps(schema)  # plain JSON


@pytest.mark.parametrize(
    ("document", "key", "problem"),
    [
        ([1, 2], None, "the top level must be a mapping (name, parameters, workflow, ...)"),
        (
            {"workflow": GRAPH, "params": {}},
            "params",
            "unknown key (known: name, description, models, preset, parameters, openai, workflow)",
        ),
        (
            {"parameters": {}},
            "workflow",
            "missing: the API-format graph (node id -> class_type, inputs)",
        ),
        (
            _doc(steps={**STEPS, "type": "float"}),
            "parameters.steps.type",
            "unknown type 'float' (known: text, string, integer, number, boolean, image)",
        ),
        (
            _doc(steps={**STEPS, "sets": ["8.steps"]}),
            "parameters.steps.sets",
            "'8.steps': the graph has no node '8'",
        ),
        (
            _doc(steps={**STEPS, "sets": ["3.step"]}),
            "parameters.steps.sets",
            "'3.step': node 3 (KSampler) has no input 'step' (its inputs: seed, steps, cfg, "
            "model, denoise)",
        ),
        (
            _doc(steps={**STEPS, "sets": ["3.model"]}),
            "parameters.steps.sets",
            "'3.model': input 'model' of node 3 is a link",
        ),
        (
            _doc(steps={**STEPS, "default": 200}),
            "parameters.steps.default",
            "parameter 'steps' must be at most 150 (got 200)",
        ),
        (
            _doc(steps={**STEPS, "minimum": 10, "maximum": 5, "default": 7}),
            "parameters.steps.maximum",
            "5 is below the minimum 10",
        ),
        (
            _doc(cfg={"type": "number", "default": "random", "sets": ["3.cfg"]}),
            "parameters.cfg.default",
            "'random' is a default for integer parameters only",
        ),
        (
            _doc(steps={**STEPS, "max": 3}),
            "parameters.steps.max",
            "unknown key (known: type, default, description, sets, minimum, maximum, "
            "multiple_of, choices, required)",
        ),
        (
            _doc(steps={**STEPS, "required": True}),
            "parameters.steps.required",
            "a parameter with a default is never required",
        ),
        (
            {**_doc(steps=STEPS), "openai": {"n": "batch_size"}},
            "openai.n",
            "no parameter 'batch_size' (known: steps)",
        ),
        (
            {**_doc(steps=STEPS), "models": {"checkpoints": ["b.safetensors"]}},
            "models.checkpoints",
            "the graph loads 'a.safetensors', which is not listed",
        ),
        (
            {"workflow": {"nodes": [], "links": []}},
            "workflow",
            "this is a UI-format workflow (nodes and links); the API needs the API format "
            "(in ComfyUI use 'Export (API)' / 'Save (API Format)')",
        ),
    ],
)
def test_a_malformed_template_is_refused_naming_the_file_and_the_key(
    document: Any, key: str | None, problem: str
) -> None:
    error = _failure(document)
    assert (error.file, error.key, error.problem) == ("mine.yaml", key, problem)
    assert error.message == f"mine.yaml: {key}: {problem}" if key else f"mine.yaml: {problem}"


def test_bad_yaml_and_json_name_the_file_and_the_place() -> None:
    with pytest.raises(TemplateFileError) as caught:
        parse_text("a: [1, 2\nb: 3\n", file="x.yaml", suffix=".yaml", default_name="x")
    assert caught.value.message.startswith("x.yaml: not valid YAML: line 2, column 2: ")
    with pytest.raises(TemplateFileError) as caught:
        parse_text("{", file="x.json", suffix=".json", default_name="x")
    assert caught.value.message.startswith("x.json: not valid JSON: ")


def test_models_default_to_what_the_graph_loads() -> None:
    assert dict(_parse(_doc(steps=STEPS)).models) == {"checkpoints": ("a.safetensors",)}


def _write(folder: Path, name: str, document: Any) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    text = (
        json.dumps(document)
        if name.endswith(".json")
        else yaml.safe_dump(document, sort_keys=False)
    )
    path.write_text(text, encoding="utf-8")
    return path


def test_the_library_lets_later_folders_override_and_lists_broken_files(tmp_path: Path) -> None:
    own, extra = tmp_path / "templates", tmp_path / "extra"
    _write(own, "txt2img.yaml", _doc(steps=STEPS) | {"description": "my txt2img"})
    _write(own, "mine.json", _doc(steps=STEPS))
    _write(extra, "mine.yaml", _doc(steps=STEPS) | {"description": "from extra"})
    broken = _write(extra, "bad.yaml", _doc(steps={**STEPS, "sets": ["3.nope"]}))
    (extra / "notes.txt").write_text("not a template")
    library = TemplateLibrary.for_workspace(tmp_path, [extra])
    assert library.names() == sorted([*SHIPPED, *(f"{n}-sdxl" for n in SHIPPED), "mine"])
    assert library.get("txt2img").description == "my txt2img"
    assert library.get("mine").description == "from extra"
    assert [b.to_dict() for b in library.broken()] == [
        {
            "file": "bad.yaml",
            "error": "parameters.steps.sets: '3.nope': node 3 (KSampler) has no input 'nope' "
            "(its inputs: seed, steps, cfg, model, denoise)",
        }
    ]
    assert str(library.broken()[0]).startswith(f"{broken}: parameters.steps.sets: ")


def test_a_broken_override_leaves_the_shipped_template_in_place(tmp_path: Path) -> None:
    _write(tmp_path / "templates", "txt2img.yaml", {"workflow": {}})
    library = TemplateLibrary.for_workspace(tmp_path)
    assert library.get("txt2img").source == "builtin:txt2img.yaml"
    assert [b.to_dict()["file"] for b in library.broken()] == ["txt2img.yaml"]


def test_two_files_of_one_name_in_a_folder_the_second_is_broken(tmp_path: Path) -> None:
    _write(tmp_path, "a.yaml", _doc(steps=STEPS) | {"name": "same"})
    _write(tmp_path, "b.yaml", _doc(steps=STEPS) | {"name": "same"})
    library = TemplateLibrary([tmp_path], shipped=False)
    assert library.get("same").source == str(tmp_path / "a.yaml")
    assert [b.to_dict() for b in library.broken()] == [
        {"file": "b.yaml", "error": "name: 'same' is defined by a.yaml in the same folder too"}
    ]


def test_a_configured_folder_that_does_not_exist_is_listed_as_broken(tmp_path: Path) -> None:
    library = TemplateLibrary.for_workspace(tmp_path, [tmp_path / "gone"])
    assert [b.to_dict() for b in library.broken()] == [
        {"file": "gone", "error": "the folder does not exist"}
    ]
    assert "txt2img" in library.names()


def test_an_unknown_template_lists_the_known_names(tmp_path: Path) -> None:
    library = TemplateLibrary([tmp_path], shipped=False)
    _write(tmp_path, "one.yaml", _doc(steps=STEPS))
    assert library.refresh() is True
    assert library.refresh() is False
    with pytest.raises(TemplateNotFound) as caught:
        library.get("two")
    assert caught.value.message == "no template named 'two' (known: one)"
    assert caught.value.known == ["one"]


def test_refresh_sees_an_edited_file(tmp_path: Path) -> None:
    path = _write(tmp_path, "one.yaml", _doc(steps=STEPS))
    library = TemplateLibrary([tmp_path], shipped=False)
    path.write_text(yaml.safe_dump(_doc(steps=STEPS) | {"description": "edited, longer"}))
    assert library.refresh() is True
    assert library.get("one").description == "edited, longer"
