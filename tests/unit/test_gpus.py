"""Finding GPUs through fake probes, and planning one ComfyUI instance per GPU."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import pytest

from comfyfleet.errors import ConfigError, GpuError
from comfyfleet.gpus import (
    Gpu,
    Platform,
    detect_platform,
    parse_nvidia_smi_csv,
    plan_instances,
    run_command,
)

NVIDIA_SMI_QUERY = (
    "nvidia-smi",
    "--query-gpu=index,name,memory.total,uuid,driver_version",
    "--format=csv,noheader,nounits",
)
NVIDIA_SMI_BANNER = """\
+-----------------------------------------------------------------------------------------+
| NVIDIA-SMI 570.86.15              Driver Version: 570.86.15      CUDA Version: 12.8     |
|-----------------------------------------+------------------------+----------------------+
"""


@dataclass
class FakeRunner:
    """Answers known argv with canned output; any other program "does not exist"."""

    answers: dict[tuple[str, ...], tuple[int, str]] = field(default_factory=dict)
    calls: list[tuple[str, ...]] = field(default_factory=list)

    def __call__(self, argv: Sequence[str]) -> tuple[int, str] | None:
        self.calls.append(tuple(argv))
        return self.answers.get(tuple(argv))


@dataclass
class _Memory:
    total: int


class FakeNvml:
    """Enough of pynvml for the probe; old bindings return bytes, which some devices mimic."""

    def __init__(self, names: Sequence[str | bytes], cuda: int = 12080) -> None:
        self.names = list(names)
        self.cuda = cuda
        self.shut_down = False

    def nvmlInit(self) -> None:
        pass

    def nvmlShutdown(self) -> None:
        self.shut_down = True

    def nvmlDeviceGetCount(self) -> int:
        return len(self.names)

    def nvmlDeviceGetHandleByIndex(self, index: int) -> int:
        return index

    def nvmlDeviceGetName(self, handle: int) -> str | bytes:
        return self.names[handle]

    def nvmlDeviceGetMemoryInfo(self, handle: int) -> _Memory:
        return _Memory(total=81559 * 1024 * 1024)

    def nvmlDeviceGetUUID(self, handle: int) -> bytes:
        return f"GPU-{handle:04d}".encode()

    def nvmlSystemGetDriverVersion(self) -> str:
        return "570.86.15"

    def nvmlSystemGetCudaDriverVersion_v2(self) -> int:
        return self.cuda


class BrokenNvml(FakeNvml):
    """NVML whose library cannot be loaded, as in a container without the driver mounted."""

    def __init__(self) -> None:
        super().__init__([])

    def nvmlInit(self) -> None:
        raise OSError("libnvidia-ml.so.1: cannot open shared object file")


class FailsMidwayNvml(FakeNvml):
    def nvmlDeviceGetMemoryInfo(self, handle: int) -> _Memory:
        raise RuntimeError("NVMLError_GpuIsLost")


def detect(runner: FakeRunner, nvml: object, **kwargs: str) -> Platform:
    return detect_platform(
        run=runner,
        nvml=nvml,
        read_file=lambda path: kwargs.get("rocm_file"),
        system=kwargs.get("system", "Linux"),
        machine=kwargs.get("machine", "x86_64"),
    )


def test_nvml_finds_gpus_driver_and_cuda_version_and_shuts_down() -> None:
    nvml = FakeNvml([b"NVIDIA H100 80GB HBM3", "NVIDIA H100 80GB HBM3"])
    runner = FakeRunner()
    found = detect(runner, nvml)
    assert found.kind == "nvidia"
    assert found.how == "nvml"
    assert found.cuda_driver_version == (12, 8)
    assert found.driver_version == "570.86.15"
    assert found.gpus[0] == Gpu(0, "NVIDIA H100 80GB HBM3", 81559, "GPU-0000", "nvidia")
    assert [gpu.index for gpu in found.gpus] == [0, 1]
    assert nvml.shut_down
    assert runner.calls == []  # no subprocess when NVML answers


def test_nvml_cuda_13_decodes() -> None:
    assert detect(FakeRunner(), FakeNvml(["B200"], cuda=13000)).cuda_driver_version == (13, 0)


def test_nvidia_smi_is_used_when_nvml_cannot_load() -> None:
    runner = FakeRunner(
        {
            NVIDIA_SMI_QUERY: (0, "0, NVIDIA A100-SXM4-40GB, 40960, GPU-aaa, 550.54.15\n"),
            ("nvidia-smi",): (0, NVIDIA_SMI_BANNER),
        }
    )
    found = detect(runner, BrokenNvml())
    assert found.how == "nvidia-smi"
    assert found.gpus == (Gpu(0, "NVIDIA A100-SXM4-40GB", 40960, "GPU-aaa", "nvidia"),)
    assert found.driver_version == "550.54.15"
    assert found.cuda_driver_version == (12, 8)


def test_nvml_failing_after_init_still_shuts_down_and_falls_back() -> None:
    nvml = FailsMidwayNvml(["A10"])
    found = detect(FakeRunner(), nvml)
    assert nvml.shut_down
    assert found.kind == "cpu"


def test_odd_nvidia_smi_output_blank_lines_na_memory_and_comma_in_name() -> None:
    text = (
        "\n"
        "0, NVIDIA GH200 480GB, [N/A], GPU-1, 560.35.03\n"
        "   \n"
        "No devices were found\n"
        "1, Tesla V100, PCIe, 16GB, 16384, [N/A], 560.35.03\n"
    )
    gpus, driver = parse_nvidia_smi_csv(text)
    assert [(gpu.index, gpu.name, gpu.memory_mb, gpu.uuid) for gpu in gpus] == [
        (0, "NVIDIA GH200 480GB", None, "GPU-1"),
        (1, "Tesla V100, PCIe, 16GB", 16384, None),
    ]
    assert driver == "560.35.03"


def test_nvidia_smi_without_cuda_banner_leaves_cuda_unknown() -> None:
    runner = FakeRunner({NVIDIA_SMI_QUERY: (0, "0, T4, 15360, GPU-t, 535.1\n")})
    assert detect(runner, BrokenNvml()).cuda_driver_version is None


def test_failing_nvidia_smi_moves_on_to_amd() -> None:
    runner = FakeRunner(
        {
            NVIDIA_SMI_QUERY: (9, "NVIDIA-SMI has failed because it couldn't communicate"),
            ("rocm-smi", "--showproductname", "--json"): (
                0,
                "WARNING: AMD GPU device(s) is/are in a low-power state.\n"
                '{"card1": {"Card Series": "AMD Instinct MI300X", "GFX Version": "gfx942"},'
                ' "card0": {"Card series": "N/A", "Card model": "0x74a1"}}',
            ),
        }
    )
    found = detect(runner, BrokenNvml(), rocm_file="6.4.1-120\n")
    assert found.kind == "amd"
    assert found.how == "rocm-smi"
    assert found.rocm_version == "6.4.1-120"
    assert [(gpu.index, gpu.name, gpu.vendor) for gpu in found.gpus] == [
        (0, "0x74a1", "amd"),
        (1, "AMD Instinct MI300X", "amd"),
    ]


def test_amd_smi_when_rocm_smi_is_missing() -> None:
    listing = '[{"gpu": 0, "bdf": "0000:0c:00.0", "uuid": "u0"}, {"gpu": 1, "uuid": "u1"}]'
    runner = FakeRunner({("amd-smi", "list", "--json"): (0, listing)})
    found = detect(runner, BrokenNvml())
    assert found.how == "amd-smi"
    assert found.rocm_version is None  # the version file was unreadable
    assert [(gpu.index, gpu.uuid) for gpu in found.gpus] == [(0, "u0"), (1, "u1")]


def test_garbled_rocm_json_is_not_a_gpu() -> None:
    runner = FakeRunner({("rocm-smi", "--showproductname", "--json"): (0, "{not json")})
    assert detect(runner, BrokenNvml()).kind == "cpu"


def test_apple_silicon() -> None:
    found = detect(FakeRunner(), BrokenNvml(), system="Darwin", machine="arm64")
    assert found.kind == "apple"
    assert found.gpus == (Gpu(0, "Apple Silicon", None, None, "apple"),)


def test_intel_mac_and_plain_linux_are_cpu() -> None:
    for system, machine in (("Darwin", "x86_64"), ("Linux", "x86_64")):
        found = detect(FakeRunner(), BrokenNvml(), system=system, machine=machine)
        assert (found.kind, found.gpus, found.how) == ("cpu", (), "none")


def test_default_runner_reports_a_missing_program_as_none() -> None:
    assert run_command(["comfyfleet-no-such-program-xyz"]) is None


# --- planning -------------------------------------------------------------------------------


def nvidia(count: int = 2) -> Platform:
    gpus = tuple(Gpu(i, "NVIDIA H100", 81559, f"GPU-{i}", "nvidia") for i in range(count))
    return Platform("nvidia", gpus, (12, 8), None, "570.86.15", "nvml")


CPU = Platform("cpu", (), None, None, None, "none")
AMD = Platform(
    "amd",
    (Gpu(0, "MI300X", None, None, "amd"), Gpu(1, "MI300X", None, None, "amd")),
    None,
    "6.4.1",
    None,
    "rocm-smi",
)
APPLE = Platform(
    "apple", (Gpu(0, "Apple Silicon", None, None, "apple"),), None, None, None, "apple"
)


def test_nvidia_one_instance_per_gpu_each_seeing_only_its_gpu() -> None:
    plans = plan_instances(nvidia(2))
    assert [plan.env["CUDA_VISIBLE_DEVICES"] for plan in plans] == ["0", "1"]
    assert all(plan.env["CUDA_DEVICE_ORDER"] == "PCI_BUS_ID" for plan in plans)
    assert [plan.label for plan in plans] == ["cuda:0 NVIDIA H100", "cuda:1 NVIDIA H100"]
    assert [plan.index for plan in plans] == [0, 1]
    assert all(plan.comfy_args == () for plan in plans)


def test_nvidia_chosen_gpus() -> None:
    plans = plan_instances(nvidia(4), gpus=(3, 1))
    assert [plan.env["CUDA_VISIBLE_DEVICES"] for plan in plans] == ["3", "1"]
    assert [plan.index for plan in plans] == [0, 1]


def test_nvidia_instances_round_robin_over_gpus() -> None:
    plans = plan_instances(nvidia(2), instances=3)
    assert [plan.env["CUDA_VISIBLE_DEVICES"] for plan in plans] == ["0", "1", "0"]


def test_two_instances_on_one_gpu() -> None:
    plans = plan_instances(nvidia(1), instances=2)
    assert [plan.gpu.index if plan.gpu else None for plan in plans] == [0, 0]


def test_missing_gpu_index_is_named_with_the_ones_that_exist() -> None:
    with pytest.raises(GpuError) as caught:
        plan_instances(nvidia(2), gpus=(0, 5))
    assert caught.value.message == (
        "--gpus asked for GPU 5, which this machine does not have; "
        "it has nvidia GPUs 0,1 (found by nvml)"
    )
    assert caught.value.hint


def test_instances_and_gpus_together_are_refused() -> None:
    with pytest.raises(GpuError, match="--instances and --gpus"):
        plan_instances(nvidia(2), instances=2, gpus=(0,))


def test_bad_counts_are_config_errors() -> None:
    with pytest.raises(ConfigError, match="1 or more"):
        plan_instances(nvidia(2), instances=0)
    with pytest.raises(ConfigError, match="empty"):
        plan_instances(nvidia(2), gpus=())


def test_amd_visibility_hides_other_gpus_at_rocr_level() -> None:
    plans = plan_instances(AMD)
    assert [plan.env for plan in plans] == [
        {"ROCR_VISIBLE_DEVICES": "0", "HIP_VISIBLE_DEVICES": "0"},
        {"ROCR_VISIBLE_DEVICES": "1", "HIP_VISIBLE_DEVICES": "0"},
    ]
    assert plans[1].label == "rocm:1 MI300X"


def test_apple_one_instance_by_default_and_more_on_request() -> None:
    (only,) = plan_instances(APPLE)
    assert only.env == {}
    assert only.label == "mps:0 Apple Silicon"
    assert len(plan_instances(APPLE, instances=2)) == 2


def test_cpu_instances() -> None:
    (only,) = plan_instances(CPU)
    assert (only.gpu, only.comfy_args, only.env, only.label) == (
        None,
        ("--cpu",),
        {"CUDA_VISIBLE_DEVICES": ""},
        "cpu",
    )
    assert [plan.index for plan in plan_instances(CPU, instances=3)] == [0, 1, 2]


def test_gpus_on_a_cpu_machine() -> None:
    with pytest.raises(GpuError) as caught:
        plan_instances(CPU, gpus=(0, 1))
    assert caught.value.message == (
        "GPUs 0,1 were asked for but this machine has no GPU (found by none)"
    )
    assert caught.value.hint == "drop --gpus to run CPU instances, or use --instances N"
