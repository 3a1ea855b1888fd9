"""CPU meters for the benchmarks: what `serve` and its ComfyUI instances spend per job, read
from /proc (Linux only), beside the wall-clock figures, which a shared machine inflates."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

from tests.integration.serve import Server


class Cpu:
    """CPU seconds (user + system) a process has used so far, from /proc (Linux only)."""

    def __init__(self, pid: int) -> None:
        self.path = Path(f"/proc/{pid}/stat")
        self.tick = os.sysconf("SC_CLK_TCK")

    def seconds(self) -> float:
        fields = self.path.read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / self.tick


def instance_pids(ports: list[int]) -> list[int]:
    """The ComfyUI processes listening on `ports` (found by their command line)."""
    wanted = {str(p) for p in ports}
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            args = (entry / "cmdline").read_bytes().split(b"\0")
            words = [a.decode(errors="replace") for a in args]
            if "main.py" in " ".join(words) and "--port" in words:
                if words[words.index("--port") + 1] in wanted:
                    found.append(int(entry.name))
    return found


class Meters:
    """CPU meters of the `serve` process and of its ComfyUI instances."""

    def __init__(self, server: Server, ports: list[int]) -> None:
        assert server.proc is not None
        self.serve = Cpu(server.proc.pid)
        self.comfy = [Cpu(pid) for pid in instance_pids(ports)]

    def read(self) -> tuple[float, float]:
        return self.serve.seconds(), sum(c.seconds() for c in self.comfy)


def cpu_report(cpu: dict[str, list[float]], jobs: int) -> None:
    """CPU per job of each mode. `serve net` takes out what the serve process spends while it
    has no job (probes, reports, its loops), at the rate measured while direct ran: that part
    grows with the wall time of a job, which a loaded machine stretches."""
    serve_s, _, wall_s = cpu["direct"]
    idle = serve_s / wall_s if wall_s else 0.0
    print(f"CPU ms per job (serve idle: {idle * 1000:.1f} ms/s taken out for 'net'):")
    for name, (serve_s, comfy_s, wall_s) in cpu.items():
        net = (serve_s - idle * wall_s) / jobs * 1000
        shown = f"serve {serve_s / jobs * 1000:6.2f}  net {net:6.2f}"
        print(f"  {name:<10}: {shown}   comfyui {comfy_s / jobs * 1000:6.2f}")
