"""Which accelerators this machine has, and one ComfyUI instance per GPU planned over them."""

from __future__ import annotations

from comfyfleet.gpus._detect import (
    ROCM_VERSION_FILE,
    CommandRunner,
    FileReader,
    Gpu,
    Platform,
    PlatformKind,
    Vendor,
    detect_platform,
    parse_amd_smi_json,
    parse_cuda_version,
    parse_nvidia_smi_csv,
    parse_rocm_smi_json,
    read_text_file,
    run_command,
)
from comfyfleet.gpus._plan import InstancePlan, plan_instances, visibility_env
from comfyfleet.gpus._usage import GpuMeter, GpuUsage

__all__ = [
    "ROCM_VERSION_FILE",
    "CommandRunner",
    "FileReader",
    "Gpu",
    "GpuMeter",
    "GpuUsage",
    "InstancePlan",
    "Platform",
    "PlatformKind",
    "Vendor",
    "detect_platform",
    "parse_amd_smi_json",
    "parse_cuda_version",
    "parse_nvidia_smi_csv",
    "parse_rocm_smi_json",
    "plan_instances",
    "read_text_file",
    "run_command",
    "visibility_env",
]
