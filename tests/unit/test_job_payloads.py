"""The typed job payloads: what the stores and the HTTP views write is what they read back."""

from __future__ import annotations

import json
from typing import Any

import pytest

from comfyfleet.jobs import (
    Conversion,
    JobOptions,
    JobOutput,
    JobProgress,
    Timeouts,
    WebhookOption,
)

EVERY_OPTION: dict[str, Any] = {
    "webhook": {"url": "https://hooks.example/x", "events": ["job.failed", "job.succeeded"]},
    "storage": "archive",
    "convert": {"format": "webp", "quality": 80},
    "timeouts": {"queued_s": 60.0, "running_s": 600.0},
    "comfyui": {"client_id": "c1", "number": 3},
    "extra_data": {"extra_pnginfo": {"workflow": {}}},
    "metadata": {"team": "a"},
    "template": {"name": "txt2img", "params": {"seed": 1}},
    "openai": {"endpoint": "images/generations", "user": "u-1"},
    "install_preset": "sd15",
    "install_model": {"source": "https://x/y.safetensors", "type": "checkpoints"},
    "retry_of": "old-job",
}


def test_every_known_option_becomes_a_typed_field() -> None:
    options = JobOptions.from_json(EVERY_OPTION)
    assert options.webhook == WebhookOption(
        "https://hooks.example/x", ("job.failed", "job.succeeded")
    )
    assert options.storage == "archive"
    assert options.convert == Conversion("webp", 80)
    assert options.timeouts == Timeouts(60.0, 600.0)
    assert options.comfyui == {"client_id": "c1", "number": 3}
    assert options.metadata == {"team": "a"}
    assert options.install_preset == "sd15" and options.installs
    assert options.retry_of == "old-job"
    assert options.others == {}


def test_the_json_written_is_the_json_read_byte_for_byte() -> None:
    text = json.dumps(EVERY_OPTION, separators=(",", ":"))
    options = JobOptions.from_json(json.loads(text))
    assert json.dumps(options.to_json(), separators=(",", ":")) == text
    assert JobOptions.from_json(options.to_json()) == options


@pytest.mark.parametrize(
    "options",
    [
        JobOptions(),
        JobOptions(webhook=WebhookOption("https://h/x", None)),
        JobOptions(timeouts=Timeouts(running_s=5.0)),
        JobOptions(timeouts=Timeouts()),
        JobOptions(convert=Conversion("jpeg"), storage="s3"),
        JobOptions(template={"name": "t", "params": {}}, openai={"endpoint": "images/edits"}),
        JobOptions(others={"from_a_newer_version": [1, 2]}, retry_of="j"),
    ],
)
def test_options_survive_a_round_trip(options: JobOptions) -> None:
    assert JobOptions.from_json(json.loads(json.dumps(options.to_json()))) == options


def test_keys_it_does_not_know_are_kept_where_they_were_written() -> None:
    stored = {"n": 1, "storage": "default", "timeout_s": 30, "retry_of": "a"}
    options = JobOptions.from_json(stored)
    assert options.others == {"n": 1, "timeout_s": 30}
    assert options.storage == "default" and options.retry_of == "a"
    assert list(options.to_json()) == ["storage", "n", "timeout_s", "retry_of"]
    assert options.to_json() == stored


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("webhook", "https://not-an-object"),
        ("webhook", {"url": "https://h/x"}),
        ("webhook", {"url": "https://h/x", "events": "all"}),
        ("timeouts", {"queued_s": "soon"}),
        ("timeouts", {"queued_s": 5, "forever": True}),
        ("convert", {"format": "webp", "quality": "high"}),
        ("storage", 7),
        ("extra_data", ["a"]),
    ],
)
def test_a_stored_value_of_an_unexpected_shape_is_kept_as_it_is(name: str, value: Any) -> None:
    """A row written before a check existed reads back, and rewrites, unchanged: the typed
    field stays empty, so no reader acts on a value it cannot understand."""
    options = JobOptions.from_json({name: value})
    assert getattr(options, name) is None
    assert options.others == {name: value}
    assert options.to_json() == {name: value}


def test_no_options_is_none_or_an_empty_object() -> None:
    assert JobOptions.from_json(None) == JobOptions.from_json({}) == JobOptions()
    assert JobOptions().to_json() == {}
    assert not JobOptions().installs


def test_a_facade_adds_its_fields_after_the_gateways() -> None:
    gateway = JobOptions(storage="archive")
    facade = gateway.but(comfyui={"client_id": None, "number": 1}, extra_data={"k": 1})
    assert gateway == JobOptions(storage="archive")
    assert list(facade.to_json()) == ["storage", "comfyui", "extra_data"]


PUBLISHED: dict[str, Any] = {
    "node_id": "9",
    "kind": "images",
    "filename": "cat_00001_.webp",
    "subfolder": "j1",
    "type": "output",
    "path": "cat_00001_.webp",
    "url": "/v1/outputs/j1/cat_00001_.webp",
    "store_s": 0.000412,
    "key": "j1/cat_00001_.webp",
    "content_type": "image/webp",
    "size": 1234,
    "sha256": "ab" * 32,
}


@pytest.mark.parametrize(
    "stored",
    [
        PUBLISHED,
        {"node_id": "12", "kind": "text", "text": "a cat"},
        {"kind": "model", "file": "v1.safetensors", "size": 9, "sha256": None, "skipped": True},
        {"node_id": "9", "kind": "images", "filename": "x.png", "subfolder": "", "type": "temp"},
    ],
)
def test_an_output_reads_and_writes_back_byte_for_byte(stored: dict[str, Any]) -> None:
    text = json.dumps(stored, separators=(",", ":"))
    output = JobOutput.from_json(json.loads(text))
    assert json.dumps(output.to_json(), separators=(",", ":")) == text
    assert JobOutput.from_json(output.to_json()) == output


def test_a_published_output_is_read_by_attribute() -> None:
    output = JobOutput.from_json(PUBLISHED)
    assert (output.key, output.size, output.content_type) == (
        "j1/cat_00001_.webp",
        1234,
        "image/webp",
    )
    assert output.others == {}


def test_output_fields_of_another_version_or_type_are_kept_aside() -> None:
    stored = {"filename": "a.png", "size": "12", "skipped": 1, "blurhash": "LEHV6n"}
    output = JobOutput.from_json(stored)
    assert output.filename == "a.png" and output.size is None and output.skipped is None
    assert output.others == {"size": "12", "skipped": 1, "blurhash": "LEHV6n"}
    assert output.to_json() == stored


def test_a_size_is_a_number_not_a_flag() -> None:
    assert JobOutput.from_json({"size": True}).size is None
    assert JobOutput.from_json({"skipped": False}).skipped is False


def test_progress_is_made_from_comfyuis_numbers() -> None:
    assert JobProgress.of("3", 5, 20) == JobProgress("3", 5, 20, 0.25)
    assert JobProgress.of(None, 0, 0) == JobProgress(None, 0, 1, 0.0)  # no steps: one step
    assert JobProgress.of(7, 2.0, 3) == JobProgress("7", 2, 3, 0.6667)
    with pytest.raises(ValueError):
        JobProgress.of("3", "x", 1)  # a broken message ends its attempt (see the lane's tests)


def test_progress_reads_and_writes_its_stored_form_byte_for_byte() -> None:
    progress = JobProgress.of("3", 5, 20)
    text = json.dumps(progress.to_json(), separators=(",", ":"))
    assert text == '{"node":"3","value":5,"max":20,"fraction":0.25}'
    assert JobProgress.from_json(json.loads(text)) == progress


def test_the_client_form_names_the_same_numbers_step_and_steps() -> None:
    progress = JobProgress.of("3", 5, 20)
    client = progress.to_client()
    assert client == {"node": "3", "step": 5, "steps": 20, "value": 0.25}
    assert JobProgress.from_client(client) == progress


def test_progress_missing_numbers_reads_as_nothing_done() -> None:
    assert JobProgress.from_json({"value": 1, "max": 4}) == JobProgress(None, 1, 4, 0.25)
    assert JobProgress.from_json({}) == JobProgress(None, 0, 0, 0.0)
    assert JobProgress.from_json({"value": True, "fraction": "x"}).fraction == 0.0
    assert JobProgress("n", 3, 2, 1.5).to_client()["value"] == 1.0  # clamped for clients
