"""Every shipped template run end to end through `POST /v1/templates/{name}/jobs` on a real
`comfyfleet serve` with a CPU instance, and the CLI a user runs them with.

The tiny random-weight SD1.5 checkpoint stands in for `v1-5-pruned-emaonly.safetensors` through
the templates' own `checkpoint` parameter (no file is renamed): small sizes and two steps keep
each job about a second on CPU. The images are noise; what is checked is that each template's
graph runs in ComfyUI with the values set and that the image comes back at the right size.
"""

from __future__ import annotations

import base64
import json
import struct
import time
import zlib
from collections.abc import Iterator
from importlib import resources
from pathlib import Path
from typing import Any

import pytest

from comfyfleet.facades.comfyui import PromptInvalid, validate_prompt
from comfyfleet.models import LOADER_INPUTS
from comfyfleet.templates import ParamType, TemplateLibrary, load_template
from tests.comfyui_env import workspace_sharing
from tests.integration.fleet import cli
from tests.integration.serve import Server, png_size, serve_config
from tests.tiny_model import tiny_checkpoint, tiny_vae
from tests.ui_workflows import references as ui_references

pytestmark = pytest.mark.comfyui

SD15 = ["txt2img", "img2img", "inpaint", "upscale", "batch"]
SDXL = [f"{name}-sdxl" for name in SD15]
SIZE = 64
BROKEN = "broken-graph.yaml"
TINY = "tiny-txt2img"


def _png(width: int, height: int, pixel: Any) -> bytes:
    """An RGBA PNG whose pixel (x, y) is `pixel(x, y)` (the project venv has no Pillow)."""
    rows = b"".join(
        b"\0" + b"".join(bytes(pixel(x, y)) for x in range(width)) for y in range(height)
    )

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    header = struct.pack(">IIBBBBB", width, height, 8, 6, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(rows))
        + chunk(b"IEND", b"")
    )


def _data_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode()


PICTURE = _png(SIZE, SIZE, lambda x, y: (x * 4, y * 4, 128, 255))
MASK = _png(SIZE, SIZE, lambda x, y: (255, 255, 255, 255) if x >= SIZE // 2 else (0, 0, 0, 255))


@pytest.fixture(scope="module")
def server(comfyui_install: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    tiny_checkpoint(comfyui_install)
    tiny_vae(comfyui_install)
    ws = workspace_sharing(comfyui_install, tmp_path_factory.mktemp("templates"))
    serve_config(ws, models_root=str(comfyui_install / "models"))
    (ws / "templates").mkdir()
    (ws / "templates" / BROKEN).write_text(
        "parameters:\n  steps: {type: integer, default: 2, sets: ['3.steps']}\n"
        "workflow:\n  '1': {class_type: EmptyImage, inputs: {width: 8}}\n",
        encoding="utf-8",
    )
    # A template of the user's own that loads the tiny checkpoint: its model is on disk.
    shipped = resources.files("comfyfleet.templates").joinpath("builtin", "txt2img.yaml")
    own = shipped.read_text(encoding="utf-8").replace(
        "v1-5-pruned-emaonly.safetensors", tiny_checkpoint(comfyui_install)
    )
    (ws / "templates" / f"{TINY}.yaml").write_text(own.replace("preset: sd15\n", ""))
    srv = Server(ws, instances=1).start()
    yield srv
    srv.close()


def _params(name: str, ckpt: str, vae: str | None) -> dict[str, Any]:
    """Small and fast values for each kind of template, with the tiny model files."""
    params: dict[str, Any] = {"checkpoint": ckpt, "steps": 2, "prompt": f"a fox {time.time_ns()}"}
    if vae is not None:
        params["vae"] = vae
    kind = name.removesuffix("-sdxl")
    if kind in ("txt2img", "batch"):
        params |= {"width": SIZE, "height": SIZE}
    if kind == "batch":
        params["n"] = 2
    if kind in ("img2img", "inpaint", "upscale"):
        params["image"] = _data_uri(PICTURE)
    if kind == "inpaint":
        params |= {"mask": _data_uri(MASK), "mask_channel": "red"}
    if kind == "upscale":
        params["scale"] = 1.5
    return params


EXPECTED = {  # images, and their size
    "txt2img": (1, (SIZE, SIZE)),
    "batch": (2, (SIZE, SIZE)),
    "img2img": (1, (SIZE, SIZE)),
    "inpaint": (1, (SIZE, SIZE)),
    "upscale": (1, (96, 96)),
}


def _run_all(server: Server, names: list[str], ckpt: str, vae: str | None) -> None:
    ids = {}
    for name in names:
        answer = server.http.post(
            f"/v1/templates/{name}/jobs", json={"params": _params(name, ckpt, vae)}
        )
        assert answer.status_code == 202, answer.text
        ids[name] = answer.json()["id"]
    jobs = dict(zip(names, server.wait_all(list(ids.values()), timeout=300), strict=True))
    for name, job in jobs.items():
        assert job["status"] == "succeeded", (name, job["error"])
        assert job["options"]["template"]["name"] == name
        assert isinstance(job["options"]["template"]["params"]["seed"], int)
        count, size = EXPECTED[name.removesuffix("-sdxl")]
        images = [o for o in job["outputs"] if o["content_type"] == "image/png"]
        assert len(images) == count, (name, job["outputs"])
        for image in images:
            png = server.http.get(image["url"])
            assert png.status_code == 200
            assert png_size(png.content) == size, name


def test_every_sd15_template_runs_and_its_image_comes_back(
    server: Server, comfyui_install: Path
) -> None:
    _run_all(server, SD15, tiny_checkpoint(comfyui_install), None)


def test_every_sdxl_template_graph_runs_with_stand_in_model_files(
    server: Server, comfyui_install: Path
) -> None:
    """The SDXL graphs run in ComfyUI with the tiny SD1.5 checkpoint and its VAE (TAESD, as a
    file of its own) given as `checkpoint` and `vae`.

    A true SDXL-architecture checkpoint cannot be made tiny: ComfyUI recognises SDXL by a fixed
    UNet configuration (transformer depths [0, 0, 2, 2, 10, 10], context 2048, adm 2816), about
    2.6 billion parameters whatever the weights, and sizes its CLIP-G text encoder from a fixed
    config too. So this proves every node, link and value of the SDXL graphs (the separate VAE
    loader included) in a real ComfyUI, not the SDXL weights; their defaults (1024 x 1024, 20
    steps, euler) are checked against the instances' node schemas in the next test."""
    _run_all(server, SDXL, tiny_checkpoint(comfyui_install), tiny_vae(comfyui_install))


def test_the_templates_defaults_and_choices_pass_comfyuis_checks_on_the_real_schemas(
    server: Server,
) -> None:
    """Each template with its defaults, as ComfyUI validates a prompt (every input present,
    types, min/max, choices) against the node schemas the instances registered; model and
    image file names are not checked (they are fetched or uploaded per job). Every declared
    choice must be one the input accepts, and every bound within the input's own."""
    info = server.http.get("/object_info").json()
    file_inputs = {(c, i) for c, inputs in LOADER_INPUTS.items() for i in inputs}
    file_inputs |= {("LoadImage", "image"), ("LoadImageMask", "image")}
    for template in TemplateLibrary().all():
        images = {n: "asset:x" for n, p in template.parameters.items() if p.type is ParamType.IMAGE}
        graph = template.apply(images)
        try:
            validate_prompt(graph, info, frozenset(file_inputs))
        except PromptInvalid as exc:
            pytest.fail(f"{template.name}: {exc.body()}")
        checked = server.http.post("/v1/jobs:validate", json={"workflow": graph})
        assert checked.status_code == 200, (template.name, checked.text)
        for parameter in template.parameters.values():
            for target in parameter.sets:
                node = template.workflow[target.node]
                spec = _input_spec(info[node["class_type"]], target.input)
                _within(template.name, parameter, spec)


def _input_spec(class_info: dict[str, Any], name: str) -> list[Any]:
    inputs = class_info["input"]
    found = {**inputs.get("required", {}), **inputs.get("optional", {})}
    spec: list[Any] = found[name]
    return spec


def _within(template: str, parameter: Any, spec: list[Any]) -> None:
    kind, options = spec[0], (spec[1] if len(spec) > 1 else {})
    where = f"{template}.{parameter.name}"
    accepted = kind if isinstance(kind, list) else options.get("options")
    if parameter.choices is not None and accepted is not None:
        assert set(parameter.choices) <= set(accepted), (
            where,
            set(parameter.choices) - set(accepted),
        )
    if parameter.minimum is not None and "min" in options:
        assert parameter.minimum >= options["min"], where
    if parameter.maximum is not None and "max" in options:
        assert parameter.maximum <= options["max"], where


def test_the_list_shows_the_broken_file_and_an_unknown_template_is_a_404(server: Server) -> None:
    listed = server.http.get("/v1/templates").json()
    assert sorted(t["name"] for t in listed["templates"]) == sorted([*SD15, *SDXL, TINY])
    present = {t["name"]: t["models_present"] for t in listed["templates"]}
    assert present[TINY] is True and present["txt2img"] is False
    assert server.http.get("/v1/templates/txt2img").json()["missing_models"] == [
        "checkpoints/v1-5-pruned-emaonly.safetensors"
    ]
    assert listed["broken"] == [
        {
            "file": BROKEN,
            "error": "parameters.steps.sets: '3.steps': the graph has no node '3'",
        }
    ]
    missing = server.http.get("/v1/templates/nope")
    assert missing.status_code == 404
    assert missing.json()["error"]["details"]["known"] == sorted([*SD15, *SDXL, TINY])
    refused = server.http.post("/v1/templates/txt2img/jobs", json={"params": {"steps": 151}})
    assert refused.status_code == 422
    assert refused.json()["error"] == {
        "code": "invalid_parameter",
        "message": "parameter 'steps' must be at most 150 (got 151)",
        "details": {"parameter": "steps", "maximum": 150},
    }


def test_cli_lists_templates_with_the_broken_one_and_runs_a_template(
    server: Server, comfyui_install: Path, tmp_path: Path
) -> None:
    listed = cli("templates", "list", "-w", server.ws)
    lines = listed.stdout.splitlines()
    assert any(line.split()[:2] == ["broken-graph", "broken"] for line in lines), listed.stdout
    assert any(line.startswith("txt2img ") for line in lines), listed.stdout
    picture = tmp_path / "picture.png"
    picture.write_bytes(PICTURE)
    out = cli(
        "run",
        "--template",
        "img2img",
        "-p",
        f"image={picture}",
        "-p",
        "prompt=a red fox",
        "-p",
        "steps=2",
        "-p",
        f"checkpoint={tiny_checkpoint(comfyui_install)}",
        "--out",
        tmp_path / "out",
        "--server",
        server.url,
    )
    assert "succeeded" in out.stdout, out.stdout
    [png] = list((tmp_path / "out").rglob("*.png"))
    assert png_size(png.read_bytes()) == (SIZE, SIZE)


def test_cli_new_from_a_graph_takes_bounds_and_choices_from_the_fleets_schemas(
    server: Server, tmp_path: Path
) -> None:
    graph = tmp_path / "saved_api.json"
    graph.write_text(json.dumps(dict(TemplateLibrary().get("txt2img").workflow)))
    target = tmp_path / "fox.yaml"
    args = ("templates", "new", "fox", "--from", graph, "--yes", "--out", target)
    cli(*args, "--server", server.url, "-w", server.ws)
    template = load_template(target)
    info = server.http.get("/object_info/KSampler").json()["KSampler"]["input"]["required"]
    samplers = info["sampler_name"][0]
    samplers = samplers if isinstance(samplers, list) else info["sampler_name"][1]["options"]
    assert template.parameters["sampler"].choices == tuple(samplers)
    assert template.parameters["steps"].maximum == info["steps"][1]["max"]
    assert template.parameters["seed"].random is True


def test_cli_new_from_a_workflow_saved_by_the_editor(server: Server, tmp_path: Path) -> None:
    """The editor's default workflow, as its Save writes it, becomes a template whose graph is
    what the editor's Run would send, with the prompt texts and sampler settings proposed."""
    default = ui_references()["workflows"]["default_workflow"]
    saved = tmp_path / "default.json"
    saved.write_text(json.dumps(default["workflow"]))
    target = tmp_path / "from-editor.yaml"
    args = ("templates", "new", "editor", "--from", saved, "--yes", "--out", target)
    cli(*args, "--server", server.url, "-w", server.ws)
    template = load_template(target)
    assert set(template.workflow) == set(default["output"])
    for node_id, node in default["output"].items():
        assert template.workflow[node_id]["class_type"] == node["class_type"]
    assert {"seed", "steps", "cfg", "sampler", "width", "height"} <= set(template.parameters)
    refused = cli("templates", "new", "x", "--from", saved, "-w", server.ws, check=False)
    assert refused.returncode == 1
    assert "saved by the editor" in refused.stderr and "--server" in refused.stderr


def test_cli_run_names_a_bad_parameter_and_an_unknown_template(server: Server) -> None:
    bound = cli("run", "-t", "txt2img", "-p", "steps=500", "--server", server.url, check=False)
    assert bound.returncode == 1
    assert "parameter 'steps' must be at most 150 (got 500)" in bound.stderr
    typed = cli("run", "-t", "txt2img", "-p", "steps=many", "--server", server.url, check=False)
    assert typed.returncode == 1 and "steps takes an integer" in typed.stderr
    unknown = cli("run", "-t", "txt2im", "--server", server.url, check=False)
    assert unknown.returncode == 1
    assert "no template named 'txt2im' (known: batch, batch-sdxl, img2img" in unknown.stderr
