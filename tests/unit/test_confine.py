"""Keeping a job to its own files: output prefixes, path-like inputs, and the runtime
extension's side of the same rules."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

import pytest

from comfyfleet.jobs import clean_prefix, escaping_path, namespace_outputs, unsafe_paths

RUNTIME = (
    Path(__file__).parents[2] / "src/comfyfleet/workspace/comfy_nodes/comfyfleet_runtime/confine.py"
)


def runtime_confine() -> ModuleType:
    """The extension's module, loaded as ComfyUI loads it: a file of its own, no comfyfleet."""
    spec = importlib.util.spec_from_file_location("runtime_confine", RUNTIME)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


PREFIXES = [
    "cat",
    "portraits/cat",
    "../../other-job/planted",
    "/etc/cron.d/x",
    "..\\..\\windows\\x",
    "a/./b//c/",
    "\udc80x",
    "bad:name?*",
    "é" * 300,
    "",
    "..",
    " . ",
    "%year%/%width%x%height%",
]


@pytest.mark.parametrize("prefix", PREFIXES)
def test_gateway_and_runtime_clean_prefixes_the_same_way(prefix: str) -> None:
    assert clean_prefix("job1", prefix) == runtime_confine().clean_prefix("job1", prefix)


def test_a_prefix_always_lands_in_the_jobs_folder() -> None:
    assert clean_prefix("j", "portraits/cat") == "j/portraits/cat"
    assert clean_prefix("j", "../../other-job/planted") == "j/other-job/planted"
    assert clean_prefix("j", "..\\..\\windows\\x") == "j/windows/x"
    assert clean_prefix("j", "/etc/cron.d/x") == "j/etc/cron.d/x"
    assert clean_prefix("j", "..") == "j/out"
    assert clean_prefix("j", "\udc80x") == "j/_x"
    long = clean_prefix("j", "é" * 300).split("/")[1]
    assert len(long.encode()) <= 200 and set(long) == {"é"}


def test_a_linked_prefix_goes_through_the_runtime_node() -> None:
    graph = {
        "1": {"class_type": "PrimitiveString", "inputs": {"value": "other-job/planted"}},
        "2": {
            "class_type": "SaveImage",
            "inputs": {"images": ["3", 0], "filename_prefix": ["1", 0]},
        },
    }
    prepared = namespace_outputs(graph, "job1")
    assert prepared["2"]["inputs"]["filename_prefix"] == ["comfyfleet-prefix-2", 0]
    assert prepared["comfyfleet-prefix-2"] == {
        "class_type": "ComfyfleetJobPrefix",
        "inputs": {"job_id": "job1", "prefix": ["1", 0]},
    }
    assert runtime_confine().ComfyfleetJobPrefix().run("job1", "other-job/planted") == (
        "job1/other-job/planted",
    )


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ("../../../../etc/passwd", "it climbs out of its folder with '..'"),
        ("..\\secret.latent", "it climbs out of its folder with '..'"),
        ("/etc/passwd", "it is an absolute path"),
        ("~/.ssh/id_rsa", "it is an absolute path"),
        ("C:\\Windows\\win.ini", "it is an absolute path"),
        ("cat.png\x00.txt", "it holds a NUL character"),
        ("otherjob/cat_00001_.png [output]", "it names another job's files ([output] or [temp])"),
    ],
)
def test_path_like_values_that_leave_their_folder(value: str, reason: str) -> None:
    assert escaping_path(value) == reason


@pytest.mark.parametrize(
    "value",
    ["cat.png", "comfyfleet-assets/ab12.png", "sd15/model.safetensors", "a..b", "x [input]"],
)
def test_ordinary_names_pass(value: str) -> None:
    assert escaping_path(value) is None


def test_free_text_is_not_read_as_a_path() -> None:
    graph = {
        "6": {
            "class_type": "CLIPTextEncode",
            "inputs": {"text": "/imagine ../ a cat", "clip": ["4", 1]},
        },
        "7": {"class_type": "LoadLatent", "inputs": {"latent": "../../../../etc/passwd"}},
        "9": {"class_type": "SaveImage", "inputs": {"filename_prefix": "../x"}},
    }
    found = unsafe_paths(graph, lambda cls, name: (cls, name) == ("CLIPTextEncode", "text"))
    assert found == [("7", "LoadLatent", "latent", "it climbs out of its folder with '..'")]


class _FolderPaths:
    """ComfyUI's `folder_paths`, as far as the guard uses it."""

    def __init__(self, root: Path) -> None:
        self.input, self.output = root / "input", root / "output"
        self.input.mkdir()
        self.output.mkdir()

    def get_input_directory(self) -> str:
        return str(self.input)

    def annotated_filepath(self, name: str) -> tuple[str, str | None]:
        for tag, folder in (("[output]", self.output), ("[input]", self.input)):
            if name.endswith(tag):
                return name[: -len(tag) - 1], str(folder)
        return name, None

    def get_annotated_filepath(self, name: str, default_dir: str | None = None) -> str:
        bare, base = self.annotated_filepath(name)
        return str(Path(base or default_dir or self.input) / bare)

    def exists_annotated_filepath(self, name: str) -> bool:
        return Path(self.get_annotated_filepath(name)).exists()


def test_the_runtime_guard_keeps_lookups_in_the_input_folder(tmp_path: Path) -> None:
    paths = _FolderPaths(tmp_path)
    (paths.input / "cat.png").write_bytes(b"x")
    (paths.output / "other.png").write_bytes(b"x")
    (tmp_path / "secret").write_bytes(b"x")
    (paths.input / "link").symlink_to(tmp_path / "secret")
    runtime_confine().guard_annotated_paths(paths)
    assert paths.exists_annotated_filepath("cat.png")
    assert paths.get_annotated_filepath("cat.png [input]") == str(paths.input / "cat.png")
    for name in ("../secret", "/etc/passwd", "other.png [output]", "link"):
        assert not paths.exists_annotated_filepath(name)
        with pytest.raises(ValueError, match="is not in the input folder"):
            paths.get_annotated_filepath(name)
    assert not paths.exists_annotated_filepath("../nonexistent")  # same answer: no oracle
