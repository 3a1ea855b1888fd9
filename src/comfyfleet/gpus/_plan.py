"""Deciding how many ComfyUI instances to run and which device each one sees.

ComfyUI uses one device per process, so a fleet is one process per GPU, each told through
environment variables to see only its own GPU (to ComfyUI it is then always device 0). The plan is
pure data: the supervisor applies the env and args; nothing here touches the machine.
"""

from __future__ import annotations

from dataclasses import dataclass

from comfyfleet.errors import ConfigError, GpuError
from comfyfleet.gpus._detect import Gpu, Platform

_LABEL_PREFIX = {"nvidia": "cuda", "amd": "rocm", "apple": "mps"}


@dataclass(frozen=True)
class InstancePlan:
    """One ComfyUI process: the GPU it runs on (None for CPU), and how it is told so."""

    index: int
    gpu: Gpu | None
    env: dict[str, str]
    comfy_args: tuple[str, ...]
    label: str


def plan_instances(
    platform: Platform,
    *,
    instances: int | None = None,
    gpus: tuple[int, ...] | None = None,
) -> list[InstancePlan]:
    """One instance per GPU by default; `gpus` picks GPUs, `instances` spreads N over all of them.

    The two options are exclusive because together they are ambiguous (N instances over which of
    the listed GPUs?). A GPU listed twice in `gpus` gets two instances, which is how a user puts
    several instances on one big GPU while leaving others out.
    """
    if instances is not None and gpus is not None:
        raise GpuError(
            "--instances and --gpus were both given; they cannot be combined",
            hint="use --gpus to pick GPUs (one instance each) or --instances N to use all GPUs",
        )
    if instances is not None and instances < 1:
        raise ConfigError(
            f"--instances must be 1 or more, got {instances}",
            hint="leave it out to run one instance per GPU",
        )
    if gpus is not None and not gpus:
        raise ConfigError(
            "--gpus was given an empty list", hint="name GPU indices, e.g. --gpus 0,1"
        )
    if platform.kind == "cpu":
        if gpus is not None:
            raise GpuError(
                f"GPUs {_indices(gpus)} were asked for but this machine has no GPU "
                f"(found by {platform.how})",
                hint="drop --gpus to run CPU instances, or use --instances N",
            )
        return [_cpu_instance(i) for i in range(instances or 1)]
    chosen = _choose_gpus(platform, instances=instances, gpus=gpus)
    return [_gpu_instance(i, gpu) for i, gpu in enumerate(chosen)]


def _indices(indices: tuple[int, ...]) -> str:
    return ",".join(str(index) for index in indices)


def _choose_gpus(
    platform: Platform, *, instances: int | None, gpus: tuple[int, ...] | None
) -> list[Gpu]:
    by_index = {gpu.index: gpu for gpu in platform.gpus}
    if gpus is not None:
        missing = tuple(index for index in gpus if index not in by_index)
        if missing:
            have = _indices(tuple(sorted(by_index))) or "none"
            noun = "GPU" if len(missing) == 1 else "GPUs"
            raise GpuError(
                f"--gpus asked for {noun} {_indices(missing)}, which this machine does not have; "
                f"it has {platform.kind} GPUs {have} (found by {platform.how})",
                hint="pick from the GPUs listed by `comfyfleet doctor`",
            )
        return [by_index[index] for index in gpus]
    ordered = sorted(platform.gpus, key=lambda gpu: gpu.index)
    if instances is None:
        # Apple Silicon has one GPU shared by everything; NVIDIA/AMD get one instance each.
        return ordered
    return [ordered[i % len(ordered)] for i in range(instances)]


def _cpu_instance(index: int) -> InstancePlan:
    # An empty CUDA_VISIBLE_DEVICES hides any GPU torch might still find, so "--cpu" really is.
    return InstancePlan(index, None, {"CUDA_VISIBLE_DEVICES": ""}, ("--cpu",), "cpu")


def _gpu_instance(index: int, gpu: Gpu) -> InstancePlan:
    return InstancePlan(
        index=index,
        gpu=gpu,
        env=visibility_env(gpu),
        comfy_args=(),
        label=f"{_LABEL_PREFIX[gpu.vendor]}:{gpu.index} {gpu.name}",
    )


def visibility_env(gpu: Gpu) -> dict[str, str]:
    """The variables that make `gpu` the only device a process sees.

    NVIDIA: CUDA numbers GPUs fastest-first by default, but the index came from NVML/nvidia-smi,
    which number them by PCI bus; CUDA_DEVICE_ORDER=PCI_BUS_ID makes both agree.
    AMD: ROCR_VISIBLE_DEVICES filters first and HIP_VISIBLE_DEVICES then counts among what is
    left, so HIP must be 0 (the one remaining GPU), not the system index.
    Apple: there is one GPU, nothing to hide.
    """
    if gpu.vendor == "nvidia":
        return {"CUDA_DEVICE_ORDER": "PCI_BUS_ID", "CUDA_VISIBLE_DEVICES": str(gpu.index)}
    if gpu.vendor == "amd":
        return {"ROCR_VISIBLE_DEVICES": str(gpu.index), "HIP_VISIBLE_DEVICES": "0"}
    return {}
