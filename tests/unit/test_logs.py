"""Log records as JSON lines with the job and instance they concern: the context that tasks
inherit, the formatter, and the process-wide setup the long-running commands make."""

from __future__ import annotations

import asyncio
import io
import json
import logging
from collections.abc import Iterator

import pytest

from comfyfleet.logs import (
    ContextFilter,
    JsonFormatter,
    LogSettings,
    TextFormatter,
    configure_logging,
    context_fields,
    log_context,
)


@pytest.fixture
def captured() -> Iterator[tuple[logging.Logger, io.StringIO]]:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.addFilter(ContextFilter())
    handler.setFormatter(JsonFormatter())
    logger = logging.getLogger("comfyfleet.test-logs")
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    logger.propagate = False
    yield logger, stream
    logger.removeHandler(handler)


def lines(stream: io.StringIO) -> list[dict[str, object]]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def test_a_record_is_one_json_line_with_the_fields_in_force(
    captured: tuple[logging.Logger, io.StringIO],
) -> None:
    logger, stream = captured
    logger.info("outside")
    with log_context(instance=1):
        with log_context(job_id="j-1", ignored=None):
            logger.warning("job %s failed:\nline two", "j-1")
        logger.info("instance only", extra={"state": "ready"})
    assert context_fields() == {}
    first, second, third = lines(stream)
    assert set(first) == {"time", "level", "logger", "message"}
    assert first["logger"] == "comfyfleet.test-logs" and first["level"] == "info"
    assert str(first["time"]).endswith("Z") and "T" in str(first["time"])
    assert second == second | {
        "level": "warning",
        "message": "job j-1 failed:\nline two",
        "job_id": "j-1",
        "instance": 1,
    }
    assert "ignored" not in second
    assert third == third | {"instance": 1, "state": "ready"} and "job_id" not in third
    assert len(stream.getvalue().splitlines()) == 3  # the newline in a message stays inside


def test_exceptions_and_odd_values_stay_on_their_line(
    captured: tuple[logging.Logger, io.StringIO],
) -> None:
    logger, stream = captured
    try:
        raise ValueError("bad thing")
    except ValueError:
        logger.exception("it broke", extra={"where": {1, 2}.__class__})
    [record] = lines(stream)
    assert record["level"] == "error"
    assert "ValueError: bad thing" in str(record["exception"])
    assert record["where"] == "<class 'set'>"


def test_tasks_keep_their_own_job_and_inherit_the_instance(
    captured: tuple[logging.Logger, io.StringIO],
) -> None:
    logger, stream = captured

    async def side(job_id: str) -> None:
        await asyncio.sleep(0.01)
        logger.info("storing the outputs of %s", job_id)

    async def job(job_id: str) -> None:
        with log_context(job_id=job_id):
            await asyncio.sleep(0.01)
            logger.info("working on %s", job_id)
            storing = asyncio.create_task(side(job_id))  # made in the job's context
        await storing
        logger.info("left %s", job_id)

    async def lane() -> None:
        with log_context(instance=3):
            await asyncio.gather(job("a"), job("b"))

    asyncio.run(lane())
    records = lines(stream)
    assert len(records) == 6
    for record in records:
        assert record["instance"] == 3
        if str(record["message"]).startswith("left"):
            assert "job_id" not in record  # the block ended
        else:
            assert str(record["message"]).endswith(str(record["job_id"]))


def test_text_lines_end_with_the_fields() -> None:
    record = logging.LogRecord("comfyfleet.jobs", logging.INFO, "", 0, "job %s ok", ("j",), None)
    with log_context(job_id="j", instance=0):
        ContextFilter().filter(record)
    text = TextFormatter().format(record)
    assert text.endswith("INFO comfyfleet.jobs: job j ok [job_id=j instance=0]")


def test_setup_leaves_the_default_text_output_alone_and_quiets_chatty_libraries() -> None:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    try:
        assert configure_logging(LogSettings()) is False
        assert root.handlers == handlers
        stream = io.StringIO()
        assert configure_logging(LogSettings(format="json"), stream=stream)
        logging.getLogger("comfyfleet.x").info("hello")
        logging.getLogger("httpx").info("HTTP Request: POST https://hooks.example/?token=s")
        assert [json.loads(line)["message"] for line in stream.getvalue().splitlines()] == ["hello"]
    finally:
        root.handlers, root.level = handlers, level
        logging.getLogger("httpx").setLevel(logging.NOTSET)
        for name in ("httpcore", "websockets", "asyncio"):
            logging.getLogger(name).setLevel(logging.NOTSET)
        logging.captureWarnings(False)
