"""The fork server's protocol and its checks, and the server itself run by the test's own Python
over a stand-in `main.py` (no ComfyUI): requests, exits, signals, a server that goes away."""

from __future__ import annotations

import asyncio
import importlib.machinery
import os
import signal
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from comfyfleet.supervise._forklaunch import (
    ForkLauncher,
    env_mismatch,
    is_comfyui_start,
)
from comfyfleet.supervise._forkserver import ForkServer
from comfyfleet.supervise._logs import RotatingLog
from comfyfleet.supervise._zygote import check_request, decode, encode
from comfyfleet.supervise._zygote_prep import compile_tree, preload, use_compiled


# --- messages --------------------------------------------------------------------------------
def test_a_message_round_trips() -> None:
    message = {"id": 3, "argv": ["python", "main.py"], "env": {"A": "é"}, "cwd": "/c"}
    assert decode(encode(message)) == message
    assert check_request(message) == (3, ["python", "main.py"], {"A": "é"}, "/c")


@pytest.mark.parametrize(
    ("packet", "error"),
    [(b"{not json", "not JSON"), (b"[1, 2]", "not an object"), (b"\xff\xfe", "not JSON")],
)
def test_a_malformed_packet_is_named(packet: bytes, error: str) -> None:
    with pytest.raises(ValueError, match=error):
        decode(packet)


@pytest.mark.parametrize(
    ("change", "error"),
    [
        ({"id": "1"}, "'id' must be an integer"),
        ({"argv": ["python"]}, "'argv' must be"),
        ({"argv": ["python", 3]}, "'argv' must be"),
        ({"env": {"A": 1}}, "'env' must map strings"),
        ({"cwd": None}, "'cwd' must be a string"),
    ],
)
def test_a_bad_request_names_its_field(change: dict[str, object], error: str) -> None:
    request = {"id": 1, "argv": ["python", "main.py"], "env": {}, "cwd": "/c", **change}
    with pytest.raises(ValueError, match=error):
        check_request(request)


def test_only_device_visibility_may_differ_from_the_servers_environment() -> None:
    server = {"PATH": "/bin", "HF_HOME": "/h"}
    same = {**server, "CUDA_VISIBLE_DEVICES": "1", "COMFYFLEET_INSTANCE": "1"}
    assert env_mismatch(same, server) is None
    assert env_mismatch({**server, "HF_HOME": "/other"}, server) == "HF_HOME"
    assert env_mismatch({"PATH": "/bin"}, server) == "HF_HOME"
    assert env_mismatch({**server, "OMP_NUM_THREADS": "2"}, server) == "OMP_NUM_THREADS"


def test_only_a_python_script_is_forked() -> None:
    assert is_comfyui_start(["/venv/bin/python", "main.py", "--port", "1"])
    assert not is_comfyui_start(["/hooks/pre-start.sh"])
    assert not is_comfyui_start(["/venv/bin/python", "-m", "thing"])


# --- preloading and compiling ------------------------------------------------------------------
@pytest.fixture
def comfy_tree(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A stand-in ComfyUI folder on sys.path; its modules are forgotten afterwards."""
    root = tmp_path / "comfy"
    root.mkdir()
    files = {
        "folder_paths.py": "READ_ARGS = True\n",
        "fz_pure.py": "VALUE = 1\n",
        "fz_impure.py": "import fz_pure\nimport folder_paths\n",
        "fz_catches.py": "try:\n    import folder_paths\nexcept ImportError:\n    pass\n",
    }
    for name, text in files.items():
        (root / name).write_text(text)
    monkeypatch.syspath_prepend(str(root))
    before = set(sys.modules)
    yield root
    for name in set(sys.modules) - before:
        del sys.modules[name]


def test_preloading_refuses_what_reads_comfyuis_arguments(comfy_tree: Path) -> None:
    loaded, skipped = preload(
        ["fz_pure", "fz_impure", "fz_catches", "fz_missing", "json:dumps"], str(comfy_tree)
    )
    assert loaded == ["fz_pure", "json:dumps"]
    assert [s.split(" ", 1)[0] for s in skipped] == ["fz_impure", "fz_catches", "fz_missing"]
    assert "imports folder_paths" in skipped[1]
    assert "fz_catches" not in sys.modules  # imported half-way: taken out again
    assert "folder_paths" not in sys.modules
    assert "fz_pure" in sys.modules  # fully imported before the refusal: kept


def test_compiled_code_is_used_only_for_an_unchanged_file(
    comfy_tree: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    loader = importlib.machinery.SourceFileLoader
    monkeypatch.setattr(loader, "source_to_code", loader.source_to_code)  # restored after
    monkeypatch.setattr(sys, "dont_write_bytecode", True)
    (comfy_tree / "fz_same.py").write_text("WHERE = 'disk'\n")
    (comfy_tree / "fz_changed.py").write_text("WHERE = 'disk'\n")
    table = compile_tree(str(comfy_tree))
    assert str(comfy_tree / "fz_same.py") in table
    # Different code for the same source proves which one the import ran.
    for name in ("fz_same.py", "fz_changed.py"):
        path = str(comfy_tree / name)
        table[path] = (table[path][0], compile("WHERE = 'cache'\n", path, "exec"))
    (comfy_tree / "fz_changed.py").write_text("WHERE = 'edited'\n")
    use_compiled(table)
    import fz_changed  # type: ignore[import-not-found]
    import fz_same  # type: ignore[import-not-found]

    assert (fz_same.WHERE, fz_changed.WHERE) == ("cache", "edited")


# --- the server, for real -------------------------------------------------------------------
MAIN = """
import os, sys, time
print("argv", sys.argv[1:], "cwd", os.getcwd(), "gpu", os.environ.get("CUDA_VISIBLE_DEVICES"))
print("same session", os.getsid(0) == os.getpid(), flush=True)
if "--sleep" in sys.argv:
    time.sleep(60)
sys.exit(int(sys.argv[-1]))
"""


def _server(
    tmp_path: Path, log: RotatingLog, preload_names: tuple[str, ...] = ("json",)
) -> ForkServer:
    (tmp_path / "main.py").write_text(textwrap.dedent(MAIN))
    return ForkServer(
        python=sys.executable,
        comfyui_dir=str(tmp_path),
        env={"PATH": os.environ.get("PATH", ""), "PYTHONUNBUFFERED": "1"},
        preload=preload_names,
        title_room=512,
        log=log,
    )


def _launcher(tmp_path: Path) -> ForkLauncher:
    return ForkLauncher(
        log_path=tmp_path / "fork-server.log",
        log_max_bytes=1 << 20,
        log_backups=1,
        preload=("json",),
    )


async def _first_start_then_server(
    launcher: ForkLauncher, argv: list[str], env: dict[str, str], cwd: Path, log: RotatingLog
) -> int:
    """The first start is plain; the server then starts (as once the fleet is ready)."""
    code = await (await launcher.spawn(argv, env=env, cwd=cwd, log=log)).wait()
    await launcher.fleet_ready()
    assert launcher.server is not None
    assert await launcher.server.wait_ready(30)
    return code


def test_a_forked_instance_runs_with_its_own_argv_env_and_session(tmp_path: Path) -> None:
    (tmp_path / "main.py").write_text(textwrap.dedent(MAIN))
    log = RotatingLog(tmp_path / "instance.log", max_bytes=1 << 20, backups=1)

    async def main() -> tuple[int, int]:
        launcher = _launcher(tmp_path)
        try:
            env = {"PATH": os.environ.get("PATH", ""), "CUDA_VISIBLE_DEVICES": "7"}
            argv = [sys.executable, "main.py", "--port", "5"]
            assert await _first_start_then_server(launcher, argv, env, tmp_path, log) == 5
            first = await launcher.spawn(argv, env=env, cwd=tmp_path, log=log)
            second = await launcher.spawn([*argv[:-1], "0"], env=env, cwd=tmp_path, log=log)
            return await first.wait(), await second.wait()
        finally:
            await launcher.aclose()

    try:
        assert asyncio.run(main()) == (5, 0)
    finally:
        log.close()
    text = (tmp_path / "instance.log").read_text()
    assert f"argv ['--port', '5'] cwd {tmp_path} gpu 7" in text
    assert "same session True" in text
    assert text.count("forked by the fork server") == 2
    assert text.count("plain start: the fork server starts once every instance is ready") == 1


def test_a_signal_to_the_group_ends_a_forked_instance(tmp_path: Path) -> None:
    log = RotatingLog(tmp_path / "fork-server.log", max_bytes=1 << 20, backups=1)

    async def main() -> int:
        server = _server(tmp_path, log)
        await server.start()
        assert await server.wait_ready(30)
        read_end, write_end = os.pipe()
        try:
            argv = [sys.executable, "main.py", "--sleep", "0"]
            child = await server.fork(argv, server.env, str(tmp_path), write_end)
        finally:
            os.close(write_end)
        os.read(read_end, 100)  # it runs
        os.close(read_end)
        child.signal_group(signal.SIGTERM)
        code = await child.wait()
        await server.aclose()
        return code

    try:
        assert asyncio.run(main()) == -signal.SIGTERM
    finally:
        log.close()


def test_when_the_server_dies_its_instances_end_and_the_next_start_is_plain(
    tmp_path: Path,
) -> None:
    (tmp_path / "main.py").write_text(textwrap.dedent(MAIN))
    log = RotatingLog(tmp_path / "instance.log", max_bytes=1 << 20, backups=1)

    async def main() -> tuple[int, str, int]:
        launcher = _launcher(tmp_path)
        env = {"PATH": os.environ.get("PATH", "")}
        argv = [sys.executable, "main.py", "--sleep", "4"]
        try:
            await _first_start_then_server(launcher, [*argv[:-2], "0"], env, tmp_path, log)
            child = await launcher.spawn(argv, env=env, cwd=tmp_path, log=log)
            assert launcher.server is not None
            os.kill(int(launcher.server.details["pid"]), signal.SIGKILL)
            code = await asyncio.wait_for(child.wait(), 10)
            state = launcher.server.state
            plain = await launcher.spawn([*argv[:-2], "4"], env=env, cwd=tmp_path, log=log)
            return code, state, await plain.wait()
        finally:
            await launcher.aclose()

    try:
        assert asyncio.run(main()) == (-signal.SIGKILL, "gone", 4)
    finally:
        log.close()
    text = (tmp_path / "instance.log").read_text()
    assert "plain start: fork server it exited; starting a new one" in text


def test_a_server_that_started_a_thread_while_preloading_is_not_used(tmp_path: Path) -> None:
    (tmp_path / "fz_threads.py").write_text(
        "import threading, time\n"
        "threading.Thread(target=time.sleep, args=(30,), daemon=True).start()\n"
    )

    log = RotatingLog(tmp_path / "fork-server.log", max_bytes=1 << 20, backups=1)

    async def main() -> tuple[bool, str]:
        server = _server(tmp_path, log, ("fz_threads",))
        await server.start()
        ready = await server.wait_ready(30)
        await server.aclose()
        return ready, server.reason

    try:
        ready, reason = asyncio.run(main())
    finally:
        log.close()
    assert not ready
    assert (
        reason
        == "fork server not safe to fork from: 1 Python threads were started while preloading"
    )
