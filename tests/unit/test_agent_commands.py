"""The agent's command runner: commands from the store reach the supervisor once, and log lines
are written while (and only while) someone watches them."""

from __future__ import annotations

import asyncio
from pathlib import Path

from comfyfleet.errors import SupervisorError
from comfyfleet.jobs import InstanceCommand, MemoryRegistry
from comfyfleet.roles._commands import CommandRunner


class _Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _runner(tmp_path: Path, done: list[tuple[int, str]]) -> tuple[CommandRunner, _Clock]:
    clock = _Clock()

    async def control(index: int, action: str) -> str:
        if index == 9:
            raise SupervisorError("no instance 9 in this fleet")
        done.append((index, action))
        return f"instance {index} {action}ed"

    runner = CommandRunner(
        MemoryRegistry(),
        "agent-a",
        control=control,
        log_path=lambda index: tmp_path / f"instance-{index}.log",
        lines=3,
        clock=clock,
    )
    return runner, clock


def test_commands_reach_the_supervisor_once_and_a_failure_stops_nothing(tmp_path: Path) -> None:
    done: list[tuple[int, str]] = []
    runner, _ = _runner(tmp_path, done)

    async def scenario() -> None:
        registry = runner.registry
        for command_id, index, action in (("1", 0, "restart"), ("2", 9, "stop"), ("3", 1, "stop")):
            await registry.send_command(InstanceCommand(command_id, "agent-a", index, action, 1.0))
        await registry.send_command(InstanceCommand("4", "agent-b", 0, "stop", 1.0))
        await runner.run_once()
        await runner.settle()
        await runner.run_once()
        await runner.settle()

    asyncio.run(scenario())
    assert done == [(0, "restart"), (1, "stop")]


def test_log_lines_are_written_while_watched_and_when_the_file_changed(tmp_path: Path) -> None:
    runner, clock = _runner(tmp_path, [])
    log = tmp_path / "instance-0.log"

    async def scenario() -> None:
        registry = runner.registry
        await runner.run_once()
        assert await registry.log_tail("agent-a", 0) is None  # nobody watches: nothing written
        tail = InstanceCommand("t1", "agent-a", 0, "tail", clock.now, until=clock.now + 30)
        await registry.send_command(tail)
        await runner.run_once()
        found = await registry.log_tail("agent-a", 0)
        assert found is not None and found.lines == ()  # no log yet, said at once
        log.write_text("one\ntwo\nthree\nfour\n")
        clock.now += 1
        await runner.run_once()
        found = await registry.log_tail("agent-a", 0)
        assert found is not None and found.lines == ("two", "three", "four")
        assert found.updated_at == clock.now
        clock.now += 1
        await runner.run_once()  # the file did not change: nothing written
        found = await registry.log_tail("agent-a", 0)
        assert found is not None and found.updated_at == clock.now - 1
        clock.now += 40  # the watch ended
        with log.open("a") as handle:
            handle.write("five\n")
        await runner.run_once()
        found = await registry.log_tail("agent-a", 0)
        assert found is not None and found.lines == ("two", "three", "four")

    asyncio.run(scenario())


def test_a_woken_runner_acts_before_its_poll_interval(tmp_path: Path) -> None:
    done: list[tuple[int, str]] = []
    runner, _ = _runner(tmp_path, done)
    runner.poll_s = 30.0

    async def scenario() -> None:
        task = asyncio.create_task(runner.run())
        await asyncio.sleep(0.05)  # the first round found nothing; now it waits 30 s
        await runner.registry.send_command(InstanceCommand("1", "agent-a", 2, "start", 1.0))
        runner.wake()
        async with asyncio.timeout(2):
            while not done:
                await asyncio.sleep(0.01)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)

    asyncio.run(scenario())
    assert done == [(2, "start")]
