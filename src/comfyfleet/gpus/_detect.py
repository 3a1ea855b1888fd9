"""Finding the accelerators of this machine.

Each probe answers "which GPUs, which driver", and the first that answers wins: NVML (fast, exact,
no subprocess), then `nvidia-smi` (works where the NVML library cannot be loaded, e.g. some
containers), then `rocm-smi` / `amd-smi`, then Apple Silicon, else CPU. Probes never raise: a
machine without a GPU is a normal answer, not an error. Every outside call goes through a seam
(`run`, `nvml`, `read_file`, `system`, `machine`) so tests hand in fakes instead of patching.
"""

from __future__ import annotations

import json
import platform as _platform
import re
import subprocess
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol

Vendor = Literal["nvidia", "amd", "apple"]
PlatformKind = Literal["nvidia", "amd", "apple", "cpu"]

ROCM_VERSION_FILE = "/opt/rocm/.info/version"
_TIMEOUT_S = 10.0
_MIB = 1024 * 1024
_NVIDIA_SMI_QUERY = (
    "nvidia-smi",
    "--query-gpu=index,name,memory.total,uuid,driver_version",
    "--format=csv,noheader,nounits",
)
_CUDA_LINE = re.compile(r"CUDA Version:\s*(\d+)\.(\d+)")
_CARD_KEY = re.compile(r"card(\d+)$", re.IGNORECASE)


@dataclass(frozen=True)
class Gpu:
    """One accelerator as the driver numbers it; `index` is what the visibility variables take."""

    index: int
    name: str
    memory_mb: int | None
    uuid: str | None
    vendor: Vendor


@dataclass(frozen=True)
class Platform:
    """What this machine can run torch on, and which probe said so (shown to users in `doctor`)."""

    kind: PlatformKind
    gpus: tuple[Gpu, ...]
    cuda_driver_version: tuple[int, int] | None
    rocm_version: str | None
    driver_version: str | None
    how: str


class CommandRunner(Protocol):
    """Runs a program; returns (returncode, stdout), or None when the program does not exist."""

    def __call__(self, argv: Sequence[str]) -> tuple[int, str] | None: ...


FileReader = Callable[[str], "str | None"]


def run_command(argv: Sequence[str]) -> tuple[int, str] | None:
    """The default runner. A missing program is None; a hung or unrunnable one a non-zero code."""
    try:
        done = subprocess.run(
            list(argv),
            capture_output=True,
            text=True,
            errors="replace",
            timeout=_TIMEOUT_S,
            check=False,
        )
    except FileNotFoundError:
        return None
    except subprocess.TimeoutExpired:
        return 124, ""
    except OSError:
        return 126, ""
    return done.returncode, done.stdout


def read_text_file(path: str) -> str | None:
    """The default file reader: the text of `path`, or None when it cannot be read."""
    try:
        with open(path, encoding="utf-8", errors="replace") as handle:
            return handle.read()
    except OSError:
        return None


def detect_platform(
    *,
    run: CommandRunner | None = None,
    nvml: object | None = None,
    read_file: FileReader | None = None,
    system: str | None = None,
    machine: str | None = None,
) -> Platform:
    """Probe this machine. `nvml` stands in for the `pynvml` module, which is imported lazily."""
    runner: CommandRunner = run if run is not None else run_command
    reader: FileReader = read_file if read_file is not None else read_text_file
    found = _probe_nvml(nvml) or _probe_nvidia_smi(runner) or _probe_amd(runner, reader)
    if found is not None:
        return found
    system = _platform.system() if system is None else system
    machine = _platform.machine() if machine is None else machine
    if system == "Darwin" and machine == "arm64":
        apple = Gpu(index=0, name="Apple Silicon", memory_mb=None, uuid=None, vendor="apple")
        return Platform("apple", (apple,), None, None, None, how="apple")
    return Platform("cpu", (), None, None, None, how="none")


def _text(value: object) -> str:
    """NVML returns bytes in old bindings and str in new ones."""
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    return str(value)


def _load_pynvml() -> object | None:
    try:
        import pynvml
    except ImportError:
        return None
    module: object = pynvml
    return module


def _probe_nvml(nvml: object | None) -> Platform | None:
    """Ask NVML. Any failure (library not loadable, no driver, odd binding) means "not found"."""
    api: Any = nvml if nvml is not None else _load_pynvml()
    if api is None:
        return None
    try:
        api.nvmlInit()
    except Exception:
        return None
    try:
        return _read_nvml(api)
    except Exception:
        return None
    finally:
        try:
            api.nvmlShutdown()
        except Exception:
            pass


def _read_nvml(api: Any) -> Platform | None:
    gpus: list[Gpu] = []
    for index in range(int(api.nvmlDeviceGetCount())):
        handle = api.nvmlDeviceGetHandleByIndex(index)
        gpus.append(
            Gpu(
                index=index,
                name=_text(api.nvmlDeviceGetName(handle)).strip(),
                memory_mb=int(api.nvmlDeviceGetMemoryInfo(handle).total) // _MIB,
                uuid=_text(api.nvmlDeviceGetUUID(handle)).strip() or None,
                vendor="nvidia",
            )
        )
    if not gpus:
        return None
    driver = _text(api.nvmlSystemGetDriverVersion()).strip() or None
    get_cuda = getattr(api, "nvmlSystemGetCudaDriverVersion_v2", None) or getattr(
        api, "nvmlSystemGetCudaDriverVersion", None
    )
    cuda = _cuda_from_int(int(get_cuda())) if get_cuda is not None else None
    return Platform("nvidia", tuple(gpus), cuda, None, driver, how="nvml")


def _cuda_from_int(value: int) -> tuple[int, int] | None:
    """NVML encodes CUDA 12.8 as 12080 (major * 1000 + minor * 10)."""
    if value <= 0:
        return None
    return value // 1000, (value % 1000) // 10


def _probe_nvidia_smi(run: CommandRunner) -> Platform | None:
    result = run(list(_NVIDIA_SMI_QUERY))
    if result is None or result[0] != 0:
        return None
    gpus, driver = parse_nvidia_smi_csv(result[1])
    if not gpus:
        return None
    plain = run(["nvidia-smi"])
    cuda = parse_cuda_version(plain[1]) if plain is not None and plain[0] == 0 else None
    return Platform("nvidia", gpus, cuda, None, driver, how="nvidia-smi")


def parse_nvidia_smi_csv(text: str) -> tuple[tuple[Gpu, ...], str | None]:
    """Parse `index, name, memory.total, uuid, driver_version` rows; skip rows that are not.

    The name is everything between the first and the last three fields, so a comma inside a
    product name cannot shift the columns. Memory reads "[N/A]" on some boards (e.g. GH200).
    """
    gpus: list[Gpu] = []
    driver: str | None = None
    for line in text.splitlines():
        fields = [field.strip() for field in line.split(",")]
        if len(fields) < 5 or not fields[0].isdigit():
            continue
        memory, uuid, version = fields[-3:]
        gpus.append(
            Gpu(
                index=int(fields[0]),
                name=", ".join(fields[1:-3]),
                memory_mb=int(memory) if memory.isdigit() else None,
                uuid=uuid if uuid and not uuid.startswith("[") else None,
                vendor="nvidia",
            )
        )
        if driver is None and version and not version.startswith("["):
            driver = version
    return tuple(gpus), driver


def parse_cuda_version(text: str) -> tuple[int, int] | None:
    """The "CUDA Version: 12.8" in the banner of plain `nvidia-smi`."""
    match = _CUDA_LINE.search(text)
    return (int(match[1]), int(match[2])) if match else None


def _probe_amd(run: CommandRunner, read_file: FileReader) -> Platform | None:
    """rocm-smi first; amd-smi when rocm-smi is missing or finds nothing (newer ROCm drops it)."""
    result = run(["rocm-smi", "--showproductname", "--json"])
    gpus = parse_rocm_smi_json(result[1]) if result is not None and result[0] == 0 else ()
    how = "rocm-smi"
    if not gpus:
        result = run(["amd-smi", "list", "--json"])
        gpus = parse_amd_smi_json(result[1]) if result is not None and result[0] == 0 else ()
        how = "amd-smi"
    if not gpus:
        return None
    return Platform("amd", gpus, None, _first_line(read_file(ROCM_VERSION_FILE)), None, how=how)


def _first_line(text: str | None) -> str | None:
    """The ROCm version file holds e.g. "6.4.1-120\\n"; kept whole, build number included."""
    lines = (text or "").strip().splitlines()
    return lines[0].strip() if lines else None


def _json_payload(text: str) -> Any:
    """The JSON part of a tool's output; some ROCm tools print warnings before it."""
    starts = [pos for pos in (text.find("{"), text.find("[")) if pos >= 0]
    if not starts:
        return None
    try:
        return json.loads(text[min(starts) :])
    except ValueError:
        return None


def parse_rocm_smi_json(text: str) -> tuple[Gpu, ...]:
    """`rocm-smi --showproductname --json`: {"card0": {"Card Series": ...}, ...}."""
    payload = _json_payload(text)
    if not isinstance(payload, dict):
        return ()
    gpus: list[Gpu] = []
    for key, info in payload.items():
        match = _CARD_KEY.match(str(key))
        if match is None or not isinstance(info, dict):
            continue
        fields = {str(name).lower(): str(value).strip() for name, value in info.items()}
        name = next(
            (
                fields[field]
                for field in ("card series", "card model", "device name", "market name")
                if fields.get(field) and fields[field].upper() != "N/A"
            ),
            "AMD GPU",
        )
        gpus.append(Gpu(int(match[1]), name, None, None, vendor="amd"))
    return tuple(sorted(gpus, key=lambda gpu: gpu.index))


def parse_amd_smi_json(text: str) -> tuple[Gpu, ...]:
    """`amd-smi list --json`: a list of {"gpu": 0, "uuid": ..., ...} (maybe wrapped in a dict)."""
    payload = _json_payload(text)
    if isinstance(payload, dict):
        payload = next((value for value in payload.values() if isinstance(value, list)), None)
    if not isinstance(payload, list):
        return ()
    gpus: list[Gpu] = []
    for entry in payload:
        if not isinstance(entry, dict) or not str(entry.get("gpu", "")).isdigit():
            continue
        name = str(entry.get("market_name") or entry.get("name") or "AMD GPU")
        uuid = entry.get("uuid")
        gpus.append(Gpu(int(entry["gpu"]), name, None, str(uuid) if uuid else None, vendor="amd"))
    return tuple(sorted(gpus, key=lambda gpu: gpu.index))
