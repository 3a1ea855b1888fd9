"""comfyfleet.lock: round trip, stable output, reading errors, and readable diffs."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from comfyfleet.errors import LockError
from comfyfleet.provision._lock import (
    LOCK_VERSION,
    ComfyUILock,
    Lock,
    NodeLock,
    TorchLock,
    diff_locks,
    read_lock,
    write_lock,
)

SHA_A = "a" * 64
SHA_B = "b" * 64


def make_lock(**changes: object) -> Lock:
    lock = Lock(
        comfyui=ComfyUILock(
            source="git:https://github.com/comfyanonymous/ComfyUI.git@v0.3.75",
            version="0.3.75",
            sha256=SHA_A,
            commit="1" * 40,
        ),
        python="3.11.7",
        torch=TorchLock(
            choice="auto",
            variant="cu128",
            version="2.8.0+cu128",
            index_url="https://download.pytorch.org/whl/cu128",
        ),
        packages={"torch": "2.8.0+cu128", "numpy": "2.1.0", "aiohttp": "3.10.0"},
        custom_nodes=(
            NodeLock("zeta-nodes", "https://example.org/zeta.git", "v1", "2" * 40, SHA_A),
            NodeLock("alpha-nodes", "/srv/alpha", None, None, SHA_B),
        ),
        repairs=(),
    )
    return dataclasses.replace(lock, **changes)  # type: ignore[arg-type]


# --- JSON ---------------------------------------------------------------------------------------


def test_round_trip() -> None:
    lock = make_lock(repairs=("torchvision-ops-stub",))
    again = Lock.from_json(lock.to_json(), "comfyfleet.lock")
    assert again == lock
    assert again.custom_nodes == lock.custom_nodes
    assert again.torch.index_url == "https://download.pytorch.org/whl/cu128"


def test_output_is_sorted_and_stable() -> None:
    text = make_lock().to_json()
    assert text.endswith("\n")
    data = json.loads(text)
    assert list(data) == sorted(data)
    assert list(data["packages"]) == ["aiohttp", "numpy", "torch"]
    assert data["lock_version"] == LOCK_VERSION
    shuffled = make_lock(packages={"numpy": "2.1.0", "aiohttp": "3.10.0", "torch": "2.8.0+cu128"})
    assert shuffled.to_json() == text
    assert Lock.from_json(text, "x").to_json() == text


def test_write_then_read(tmp_path: Path) -> None:
    path = tmp_path / "comfyfleet.lock"
    write_lock(path, make_lock())
    assert read_lock(path) == make_lock()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["comfyfleet.lock"]


def test_missing_lock_file_says_how_to_make_one(tmp_path: Path) -> None:
    path = tmp_path / "comfyfleet.lock"
    with pytest.raises(LockError, match="no lock file") as info:
        read_lock(path)
    assert str(path) in str(info.value)
    assert info.value.hint is not None and "without --locked" in info.value.hint


@pytest.mark.parametrize(
    "text",
    [
        "{not json",
        "",
        json.dumps({"lock_version": 1}),
        json.dumps({"lock_version": 1, "comfyui": {"source": "git"}, "python": "3.11"}),
    ],
)
def test_broken_lock_file_names_the_file(tmp_path: Path, text: str) -> None:
    path = tmp_path / "comfyfleet.lock"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(LockError, match="is not a valid lock file") as info:
        read_lock(path)
    assert str(path) in str(info.value)


@pytest.mark.parametrize("version", [None, 0, 2, "1"])
def test_unsupported_lock_version(version: object) -> None:
    data = json.loads(make_lock().to_json())
    data["lock_version"] = version
    with pytest.raises(LockError, match=f"lock version {version} is not supported"):
        Lock.from_json(json.dumps(data), "ws/comfyfleet.lock")


@pytest.mark.parametrize("text", ["[]", "null"])
def test_lock_file_that_is_not_an_object(text: str) -> None:
    with pytest.raises(LockError, match="not a valid lock file"):
        Lock.from_json(text, "ws/comfyfleet.lock")


# --- diff ---------------------------------------------------------------------------------------


def test_no_difference() -> None:
    assert diff_locks(make_lock(), make_lock()) == []


def test_package_added_removed_changed() -> None:
    old = make_lock(packages={"numpy": "2.1.0", "pillow": "10.0.0", "torch": "2.8.0"})
    new = make_lock(packages={"numpy": "2.2.0", "safetensors": "0.4.5", "torch": "2.8.0"})
    assert diff_locks(old, new) == [
        "package numpy: 2.1.0 -> 2.2.0",
        "package pillow: removed (was 10.0.0)",
        "package safetensors: added 0.4.5",
    ]


def test_torch_change() -> None:
    new_torch = TorchLock("cu130", "cu130", "2.9.0+cu130", "https://download.pytorch.org/whl/cu130")
    lines = diff_locks(make_lock(), make_lock(torch=new_torch))
    assert lines == ["torch: cu128 2.8.0+cu128 -> cu130 2.9.0+cu130"]


def test_custom_node_commit_change_added_and_removed() -> None:
    old = make_lock()
    new = make_lock(
        custom_nodes=(
            NodeLock("zeta-nodes", "https://example.org/zeta.git", "v2", "3" * 40, SHA_B),
            NodeLock("beta-nodes", "/srv/beta", None, None, SHA_A),
        )
    )
    assert diff_locks(old, new) == [
        f"custom node alpha-nodes: removed (was {SHA_B[:12]})",
        f"custom node beta-nodes: added {SHA_A[:12]}",
        f"custom node zeta-nodes: {'2' * 40} -> {'3' * 40}",
    ]


def test_comfyui_python_and_repairs_changes() -> None:
    old = make_lock()
    new = make_lock(
        comfyui=ComfyUILock("path:/srv/ComfyUI", "0.3.76", SHA_B),
        python="3.12.1",
        repairs=("torchvision-ops-stub",),
    )
    lines = diff_locks(old, new)
    assert lines[0].startswith("comfyui: git:")
    assert "0.3.75" in lines[0] and "0.3.76" in lines[0] and "path:/srv/ComfyUI" in lines[0]
    assert SHA_A[:12] in lines[0] and SHA_B[:12] in lines[0]
    assert lines[1:] == ["python: 3.11.7 -> 3.12.1", "repairs: [] -> ['torchvision-ops-stub']"]


def test_generated_by_is_not_a_difference() -> None:
    assert diff_locks(make_lock(), make_lock(generated_by="comfyfleet 0.2")) == []
    assert make_lock() == make_lock(generated_by="comfyfleet 0.2")
