"""The launcher that starts ComfyUI instances through the fork server, or the plain way.

The first start of every instance is plain: the fork server is started once the fleet is ready
(its preloading would otherwise compete with those starts for the CPU), from the first start's
command and environment. Every later ComfyUI start (a crash, a watchdog's restart) asks the fork
server. Anything else the supervisor runs (pre-start hooks) and every start the server cannot do
is a plain start, with a line in the instance's log that says why: the server is still
preloading, failed its checks or went away, the start uses another Python or ComfyUI folder, or
an environment variable differs from the server's where a library may have read it while being
imported (only the device-visibility variables, read when the GPU is first used, after the
fork, may differ per instance).
"""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

from comfyfleet.supervise._forkserver import ForkServer, ForkUnavailable
from comfyfleet.supervise._logs import RotatingLog
from comfyfleet.supervise._process import Launcher, ProcessHandle, SubprocessLauncher, pump_output

DEFAULT_PRELOAD = (
    "numpy",
    "torch",
    "torchvision",
    "scipy.stats",
    "scipy.integrate",
    "PIL.Image",
    "PIL.ImageDraw",
    "PIL.ImageOps",
    "PIL.ImageSequence",
    "PIL.PngImagePlugin",
    "safetensors.torch",
    "einops",
    "einops.layers.torch",
    "transformers:CLIPTokenizer",
    "transformers:T5TokenizerFast",
    "transformers:LlamaTokenizerFast",
    "transformers:Qwen2Tokenizer",
    "transformers:BertTokenizer",
    "transformers:ByT5Tokenizer",
    "tokenizers",
    "sentencepiece",
    "torchsde",
    "kornia",
    "kornia.filters",
    "spandrel",
    "av",
    "aiohttp.web",
    "sqlalchemy.orm",
    "sqlalchemy.dialects.sqlite",
    "alembic.command",
    "alembic.config",
    "alembic.runtime.migration",
    "pydantic_settings",
    "requests",
    "yaml",
    "psutil",
    "tqdm",
    "comfyui_frontend_package",
    "comfyui_workflow_templates",
    "comfyui_embedded_docs",
    "comfy_api_nodes.apis.*",
    "comfy_api.internal",
    "comfy_config.config_parser",
    "app.database.models",
)
"""What ComfyUI imports at start that needs neither its arguments nor a device (measured with
`python -X importtime main.py` on 0.3.75: about three quarters of its import time). Modules a
ComfyUI version lacks are skipped; ComfyUI modules that turn out to reach its arguments or the
device are refused by the server and imported by each instance instead."""

PER_INSTANCE_ENV = frozenset(
    {
        "CUDA_VISIBLE_DEVICES",
        "CUDA_DEVICE_ORDER",
        "HIP_VISIBLE_DEVICES",
        "ROCR_VISIBLE_DEVICES",
        "ZE_AFFINITY_MASK",
        "ONEAPI_DEVICE_SELECTOR",
    }
)
"""Read when the GPU runtime starts (after the fork, in the instance), so they may differ."""

MAX_SERVER_STARTS = 5


def fork_unsupported() -> str | None:
    """Why this platform cannot use a fork server, or None. macOS forbids forking a process
    that has started its Objective-C runtime (torch does), and Windows cannot fork."""
    if not sys.platform.startswith("linux"):
        return f"no fork server on {sys.platform} (Linux only)"
    return None


def _per_instance(key: str) -> bool:
    return key in PER_INSTANCE_ENV or key.startswith("COMFYFLEET_")


def env_mismatch(wanted: Mapping[str, str], server: Mapping[str, str]) -> str | None:
    """The first variable that differs between an instance's environment and the server's where
    it must not, or None."""
    for key in sorted(set(wanted) | set(server)):
        if wanted.get(key) != server.get(key) and not _per_instance(key):
            return key
    return None


def is_comfyui_start(argv: Sequence[str]) -> bool:
    """`python main.py ...`: what the fork server can run (hooks and the like are not)."""
    return len(argv) >= 2 and argv[1].endswith(".py") and not argv[1].startswith("-")


class ForkLauncher:
    """A Launcher that forks ComfyUI instances from a fork server, else starts them plainly."""

    def __init__(
        self,
        *,
        log_path: Path,
        log_max_bytes: int,
        log_backups: int,
        preload: Sequence[str] = DEFAULT_PRELOAD,
        plain: Launcher | None = None,
    ) -> None:
        self._log_path = log_path
        self._log_limits = (log_max_bytes, log_backups)
        self._preload = tuple(preload)
        self._plain = plain or SubprocessLauncher()
        self._log: RotatingLog | None = None
        self.server: ForkServer | None = None
        self._first: tuple[list[str], dict[str, str], Path] | None = None
        self._starts = 0
        self._disabled = fork_unsupported()

    async def spawn(
        self, argv: Sequence[str], *, env: Mapping[str, str], cwd: Path, log: RotatingLog
    ) -> ProcessHandle:
        if not is_comfyui_start(argv):
            return await self._plain.spawn(argv, env=env, cwd=cwd, log=log)
        found = await self._server_for(argv, env, cwd)
        if isinstance(found, ForkServer):
            try:
                return await self._fork(found, argv, env, cwd, log)
            except ForkUnavailable as exc:
                found = str(exc)
        log.line(f"plain start: {found}")
        return await self._plain.spawn(argv, env=env, cwd=cwd, log=log)

    async def fleet_ready(self) -> None:
        """Start the fork server, from the first ComfyUI start's command and environment (the
        supervisor calls this once every instance's first start is over)."""
        if self.server is None and self._first is not None and self._disabled is None:
            await self._start_server(*self._first)

    async def _server_for(
        self, argv: Sequence[str], env: Mapping[str, str], cwd: Path
    ) -> ForkServer | str:
        if self._disabled is not None:
            return self._disabled
        server = self.server
        if server is None:
            if self._first is None:
                self._first = (list(argv), dict(env), cwd)
            return "the fork server starts once every instance is ready"
        if server.python != argv[0] or server.comfyui_dir != str(cwd):
            return "the fork server runs another Python or ComfyUI folder"
        mismatch = env_mismatch(env, server.env)
        if mismatch is not None:
            return (
                f"environment variable {mismatch} differs from the fork server's "
                "(libraries may read it when imported)"
            )
        if server.state == "ready":
            return server
        if server.state == "starting":
            return "the fork server is still preloading"
        if server.state == "gone":
            await self._start_server(argv, env, cwd)
            return f"{server.reason}; starting a new one"
        if server.state == "failed":
            self._disabled = server.reason
        return server.reason or f"the fork server is {server.state}"

    async def _start_server(
        self, argv: Sequence[str], env: Mapping[str, str], cwd: Path
    ) -> ForkServer:
        if self._log is None:
            self._log = RotatingLog(
                self._log_path, max_bytes=self._log_limits[0], backups=self._log_limits[1]
            )
        server = ForkServer(
            python=argv[0],
            comfyui_dir=str(cwd),
            env={k: v for k, v in env.items() if not _per_instance(k)},
            preload=self._preload,
            title_room=max(2048, 2 * sum(len(os.fsencode(a)) + 1 for a in argv)),
            log=self._log,
        )
        self.server = server
        self._starts += 1
        if self._starts > MAX_SERVER_STARTS:
            self._disabled = f"the fork server went away {MAX_SERVER_STARTS} times"
            self._log.line(f"{self._disabled}: plain starts from now on")
            return server
        await server.start()
        return server

    async def _fork(
        self,
        server: ForkServer,
        argv: Sequence[str],
        env: Mapping[str, str],
        cwd: Path,
        log: RotatingLog,
    ) -> ProcessHandle:
        read_end, write_end = os.pipe()
        try:
            child = await server.fork(argv, env, str(cwd), write_end)
        except BaseException:
            os.close(read_end)
            raise
        finally:
            os.close(write_end)
        reader = asyncio.StreamReader(limit=1 << 20)
        loop = asyncio.get_running_loop()
        pipe = os.fdopen(read_end, "rb", buffering=0)
        await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), pipe)
        child.pump = asyncio.create_task(pump_output(reader, log), name=f"log-pump-{child.pid}")
        log.line(
            f"forked by the fork server (pid {server.details.get('pid')}): libraries preloaded, "
            "so ComfyUI's warning that torch was imported early is expected"
        )
        return child

    async def aclose(self) -> None:
        """Stop the fork server (after the instances: they die with it)."""
        if self.server is not None:
            await self.server.aclose()
        if self._log is not None:
            self._log.close()
            self._log = None
