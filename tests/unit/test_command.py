"""The command line and environment each ComfyUI instance is started with."""

from __future__ import annotations

from pathlib import Path

from comfyfleet.config import load_settings
from comfyfleet.gpus import Gpu, Platform, plan_instances
from comfyfleet.supervise._command import comfy_argv, instance_specs
from comfyfleet.workspace import Workspace


def _flag(argv: list[str], name: str) -> str:
    return argv[argv.index(name) + 1]


def test_cpu_instances_share_models_inputs_outputs_but_not_temp_or_user(tmp_path: Path) -> None:
    settings = load_settings(
        {
            "workspace": tmp_path / "ws",
            "fleet": {
                "instances": 2,
                "base_port": 9000,
                "extra_args": ["--lowvram"],
                "instance_args": {1: ["--highvram"]},
            },
        }
    )
    ws = Workspace.from_settings(settings)
    plans = plan_instances(Platform("cpu", (), None, None, None, "none"), instances=2)
    specs = instance_specs(ws, settings.fleet, plans)
    assert [s.wanted_port for s in specs] == [9000, 9001]
    first, second = (comfy_argv(ws, settings.fleet, p, 9000 + p.index) for p in plans)
    assert _flag(first, "--listen") == "127.0.0.1"
    assert _flag(second, "--port") == "9001"
    assert _flag(first, "--extra-model-paths-config") == str(ws.extra_model_paths)
    assert _flag(first, "--output-directory") == _flag(second, "--output-directory")
    assert _flag(first, "--input-directory") == str(ws.input_dir)
    assert _flag(first, "--temp-directory") != _flag(second, "--temp-directory")
    assert _flag(second, "--user-directory") == str(ws.instance_dir(1) / "user")
    assert _flag(first, "--database-url") == "sqlite:///:memory:"
    assert "--cpu" in first and "--lowvram" in first and "--highvram" not in first
    assert second[-2:] == ["--lowvram", "--highvram"]
    assert (ws.instance_dir(1) / "custom_nodes").is_dir()  # ComfyUI dies without it
    assert specs[0].env["CUDA_VISIBLE_DEVICES"] == ""


def test_each_gpu_instance_sees_only_its_gpu(tmp_path: Path) -> None:
    settings = load_settings({"workspace": tmp_path / "ws", "fleet": {"database": "per-instance"}})
    ws = Workspace.from_settings(settings)
    gpus = tuple(Gpu(i, "NVIDIA H100", 81559, f"GPU-{i}", "nvidia") for i in range(2))
    plans = plan_instances(Platform("nvidia", gpus, (13, 0), None, "580", "nvml"))
    specs = instance_specs(ws, settings.fleet, plans)
    assert [s.env["CUDA_VISIBLE_DEVICES"] for s in specs] == ["0", "1"]
    argv = comfy_argv(ws, settings.fleet, plans[1], 8189)
    assert "--cpu" not in argv
    assert (
        _flag(argv, "--database-url") == f"sqlite:///{ws.instance_dir(1) / 'user' / 'comfyui.db'}"
    )
