"""Running installer subprocesses with their output in the install log and the progress line."""

from __future__ import annotations

import os
import subprocess
from collections import deque
from collections.abc import Mapping, Sequence
from pathlib import Path

from comfyfleet.errors import InstallError
from comfyfleet.provision._report import InstallLog, Reporter


class CommandFailed(InstallError):
    """A command exited non-zero; `tail` holds its last output lines."""

    def __init__(self, message: str, *, tail: list[str], hint: str | None = None) -> None:
        super().__init__(message, hint=hint)
        self.tail = tail

    @property
    def output(self) -> str:
        return "\n".join(self.tail)


def run_logged(
    argv: Sequence[str | Path],
    *,
    log: InstallLog,
    reporter: Reporter,
    what: str,
    cwd: Path | None = None,
    env: Mapping[str, str] | None = None,
    keep: int = 40,
) -> list[str]:
    """Run `argv`, streaming its output to the log and the reporter; return the last `keep` lines.

    Raises :class:`CommandFailed` naming `what` when it exits non-zero or cannot start.
    """
    args = [str(part) for part in argv]
    log.write("$ " + " ".join(args))
    full_env = {**os.environ, **(env or {}), "PYTHONUNBUFFERED": "1"}
    tail: deque[str] = deque(maxlen=keep)
    try:
        proc = subprocess.Popen(
            args,
            cwd=cwd,
            env=full_env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            text=True,
            errors="replace",
        )
    except OSError as exc:
        raise CommandFailed(
            f"{what}: cannot run {args[0]}: {exc.strerror or exc}", tail=[]
        ) from exc
    assert proc.stdout is not None
    with proc:
        for line in proc.stdout:
            line = line.rstrip()
            if not line:
                continue
            log.write(line)
            tail.append(line)
            reporter.detail(line)
    if proc.returncode != 0:
        raise CommandFailed(
            f"{what} failed (exit {proc.returncode}): {_last_meaningful(tail)}",
            tail=list(tail),
            hint=f"the full output is in {log.path}",
        )
    return list(tail)


def _last_meaningful(lines: deque[str]) -> str:
    """The line that explains a failure best: the last error-looking line, else the last line."""
    for line in reversed(lines):
        lowered = line.lower()
        if lowered.startswith(("error", "fatal")) or "error:" in lowered:
            return line.strip()
    return lines[-1].strip() if lines else "no output"
