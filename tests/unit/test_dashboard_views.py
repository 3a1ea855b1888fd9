"""The dashboard's view models: `/v1` answers in, what a page shows out (no browser, no fleet)."""

from __future__ import annotations

from typing import Any

from comfyfleet.dashboard._admin import delivery_rows, key_rows
from comfyfleet.dashboard._charts import count_ceiling, latency_chart, throughput_chart
from comfyfleet.dashboard._forms import form_fields
from comfyfleet.dashboard._jobs import job_detail, job_rows
from comfyfleet.dashboard._models import model_groups, preset_rows, registry_models
from comfyfleet.dashboard._overview import instance_cards, machines, warnings
from comfyfleet.templates import shipped_templates

NOW = 1_000_000.0


def _instance(agent: str, index: int, state: str = "ready", **extra: Any) -> dict[str, Any]:
    return {
        "agent": {"id": agent, "host": f"host-{agent}", "alive": True},
        "index": index,
        "state": state,
        "device": "cuda:0",
        "vram_used": 20 * 1024**3,
        "vram_total": 80 * 1024**3,
        "ready_since": NOW - 3725,
        "restarts": 2,
        "rss_bytes": 3 * 1024**3,
        "reason": "",
        **extra,
    }


def _fleet(
    *instances: dict[str, Any], agents: list[dict[str, Any]] | None = None
) -> dict[str, Any]:
    return {"agents": agents or [], "instances": list(instances)}


def test_cards_name_instances_as_the_api_does_and_show_the_job_each_runs() -> None:
    fleet = _fleet(_instance("a", 0), _instance("a", 1, "busy"), _instance("b", 1, "backoff"))
    running = [
        {
            "id": "job-1",
            "agent": "a",
            "instance": 1,
            "progress": {"node": "3", "fraction": 0.25},
            "options": {"template": {"name": "txt2img"}},
        }
    ]
    first, busy, failing = instance_cards(fleet, running, NOW)
    assert [c.ref for c in (first, busy, failing)] == ["0", "a:1", "b:1"]
    assert (first.tone, first.uptime, first.vram, first.memory) == (
        "ok",
        "1 h 02 min",
        "20.0 GiB of 80.0 GiB",
        "3.0 GiB",
    )
    assert first.vram_percent == 25.0 and first.job is None
    assert busy.job is not None
    assert (busy.job.id, busy.job.label, busy.job.percent, busy.job.node) == (
        "job-1",
        "txt2img",
        25.0,
        "3",
    )
    assert (failing.tone, failing.uptime, failing.vram, failing.job) == ("bad", "—", "—", None)


def test_warnings_say_what_needs_attention_worst_first() -> None:
    disks = [
        {"folders": ["models"], "total": 100, "used": 98, "free": 2, "percent": 98.0},
        {"folders": ["outputs"], "total": 100, "used": 91, "free": 9, "percent": 91.0},
        {"folders": ["workspace"], "total": 100, "used": 20, "free": 80, "percent": 20.0},
    ]
    agents = [
        {"id": "a", "host": "gpu-1", "alive": True, "machine": {"disks": disks}},
        {"id": "b", "host": "gpu-2", "alive": False, "heartbeat_at": NOW - 125},
    ]
    fleet = _fleet(
        _instance("a", 0, "fatal", reason="exited with exit code 1 before it was ready"),
        _instance("b", 0, "gone"),
        agents=agents,
    )
    texts = [(w.level, w.text) for w in warnings(fleet, now=NOW, failed_deliveries=3)]
    assert texts == [
        ("bad", "Instance a:0: fatal (exited with exit code 1 before it was ready)"),
        ("bad", "The disk of models on gpu-1 is 98% full (2 B free)"),
        ("bad", "Agent b on gpu-2 last reported 2 min ago: its instances serve nothing"),
        ("bad", "No instance is serving: jobs wait in the queue"),
        ("warn", "The disk of outputs on gpu-1 is 91% full (9 B free)"),
        (
            "warn",
            "3 webhook deliveries failed: their targets did not answer for the whole retry window",
        ),
    ]
    assert [w.text for w in warnings(None, now=NOW, fleet_error="database is locked")] == [
        "The fleet cannot be read from the store: database is locked"
    ]
    assert warnings(_fleet(_instance("a", 0)), now=NOW) == []


def test_machines_show_cpu_memory_disks_and_gpus() -> None:
    machine = {
        "cpu": {"percent": 37.5, "count": 32, "load": [3.25, 2.5, 2.0]},
        "memory": {"total": 256 * 1024**3, "used": 64 * 1024**3},
        "disks": [{"folders": ["models", "outputs"], "total": 10, "used": 5, "free": 5}],
        "gpus": [
            {
                "index": 0,
                "name": "NVIDIA H100",
                "utilization_percent": 93,
                "memory_used": 40 * 1024**3,
                "memory_total": 80 * 1024**3,
                "temperature_c": 64,
            }
        ],
    }
    agents = [
        {"id": "a", "host": "gpu-1", "alive": True, "heartbeat_at": NOW - 1, "machine": machine}
    ]
    (found,) = machines(_fleet(agents=agents), NOW)
    assert (found.host, found.cpu_percent, found.cpus, found.load) == (
        "gpu-1",
        37.5,
        32,
        "3.25 / 2.5 / 2",
    )
    assert (found.memory, found.memory_percent, found.seen) == (
        "64.0 GiB of 256.0 GiB",
        25.0,
        "just now",
    )
    assert found.disks[0].folders == "models, outputs"
    (gpu,) = found.gpus
    assert (gpu.utilization, gpu.memory_percent, gpu.temperature) == (93, 50.0, 64)


def _stats(buckets: list[dict[str, Any]], p50: float | None = None) -> dict[str, Any]:
    return {
        "window_s": 180,
        "bucket_s": 60,
        "totals": {"succeeded": 4, "failed": 1, "cancelled": 0, "jobs_per_minute": 1.667},
        "latency": {"total_s": {"p50": p50, "p95": None if p50 is None else p50 * 2}},
        "buckets": buckets,
    }


def test_the_throughput_chart_stacks_each_buckets_endings_on_a_whole_number_axis() -> None:
    buckets = [
        {"succeeded": 3, "failed": 1, "cancelled": 0},
        {"succeeded": 0, "failed": 0, "cancelled": 0},
        {"succeeded": 1, "failed": 0, "cancelled": 0},
    ]
    chart = throughput_chart(_stats(buckets))
    assert chart.summary.startswith("5 jobs ended in the last 3 minutes (4 succeeded, 1 failed")
    assert [t.label for t in chart.y_ticks] == ["0", "2", "4"]
    ok, failed, lone = chart.bars
    assert (ok.kind, failed.kind, lone.kind) == ("succeeded", "failed", "succeeded")
    assert failed.y + failed.height == ok.y  # stacked: failed sits on succeeded
    assert ok.y + ok.height == chart.plot_bottom and lone.height == ok.height / 3
    assert [count_ceiling(v) for v in (0, 1, 3, 10, 11, 26, 130)] == [2, 2, 4, 10, 20, 50, 200]


def test_the_latency_chart_leaves_gaps_and_dots_lone_values() -> None:
    buckets = [
        {"total_p50": 2.0, "total_p95": 4.0},
        {"total_p50": None, "total_p95": None},
        {"total_p50": 1.0, "total_p95": 3.0},
        {"total_p50": 1.5, "total_p95": 2.0},
    ]
    chart = latency_chart(_stats(buckets, p50=1.5))
    assert chart.summary == "Submit to end over the window: median 1.50 s, 95th percentile 3.00 s"
    assert [(line.kind, len(line.dots)) for line in chart.lines] == [
        ("p95", 1),
        ("p95", 0),
        ("p50", 1),
        ("p50", 0),
    ]
    assert [t.label for t in chart.y_ticks] == ["0 s", "2.5 s", "5 s"]
    empty = latency_chart(_stats([{"total_p50": None, "total_p95": None}]))
    assert empty.empty and "no latency" in empty.summary


def test_a_templates_parameters_become_fields_with_the_declared_bounds() -> None:
    (txt2img,) = [t for t in shipped_templates() if t.name == "txt2img"]
    fields = {f.name: f for f in form_fields(txt2img.schema())}
    assert (fields["prompt"].kind, fields["prompt"].json_type) == ("textarea", "string")
    seed = fields["seed"]
    assert (seed.kind, seed.random, seed.value, seed.maximum) == (
        "number",
        True,
        "",
        "18446744073709551615",
    )
    assert seed.hint == "0 to 18446744073709551615; left empty: a random value"
    width = fields["width"]
    assert (width.minimum, width.maximum, width.step, width.value) == ("64", "2048", "8", "512")
    assert width.hint == "64 to 2048; a multiple of 8"
    assert fields["cfg"].value == "7.0" and fields["cfg"].step == "any"
    assert fields["sampler"].kind == "select" and "dpmpp_2m" in fields["sampler"].choices
    (img2img,) = [t for t in shipped_templates() if t.name == "img2img"]
    image = {f.name: f for f in form_fields(img2img.schema())}["image"]
    assert (image.kind, image.required) == ("image", True)


def _job(**extra: Any) -> dict[str, Any]:
    return {
        "id": "j1",
        "status": "failed",
        "attempts": 1,
        "max_attempts": 3,
        "priority": 2,
        "queue_position": None,
        "instance": 0,
        "progress": None,
        "timings": {"created_at": NOW - 30, "queued_s": 0.5, "running_s": 12.35},
        "outputs": [],
        "error": None,
        "options": {},
        **extra,
    }


def test_a_failed_job_shows_its_node_class_and_traceback() -> None:
    error = {
        "code": "node_error",
        "message": "node 5 (KSampler): RuntimeError: out of memory",
        "retryable": False,
        "node_id": "5",
        "node_type": "KSampler",
        "exception_type": "RuntimeError",
        "traceback": ['  File "nodes.py", line 1\n', "RuntimeError: out of memory\n"],
    }
    workflow = {
        "10": {"class_type": "SaveImage"},
        "5": {"class_type": "KSampler"},
        "2": {"class_type": "CLIPTextEncode"},
    }
    detail = job_detail(_job(error=error), workflow)
    assert [(n.id, n.class_type, n.state) for n in detail.nodes] == [
        ("2", "CLIPTextEncode", "waiting"),
        ("5", "KSampler", "waiting"),
        ("10", "SaveImage", "waiting"),
    ]
    assert detail.error is not None
    assert (detail.error.node_id, detail.error.node_type, detail.error.exception_type) == (
        "5",
        "KSampler",
        "RuntimeError",
    )
    assert detail.error.traceback == '  File "nodes.py", line 1\nRuntimeError: out of memory\n'
    assert (detail.terminal, detail.attempts, detail.tone) == (True, "1 of 3", "bad")


def test_outputs_become_a_gallery_by_media_type() -> None:
    outputs = [
        {"kind": "images", "filename": "a.png", "url": "/v1/outputs/j1/a.png", "size": 2048},
        {"kind": "video", "filename": "b.mp4", "url": "/v1/outputs/j1/b.mp4"},
        {"kind": "audio", "filename": "c.flac", "url": "/v1/outputs/j1/c.flac"},
        {"kind": "3d", "filename": "d.glb", "url": "/v1/outputs/j1/d.glb"},
        {"kind": "text", "text": "a caption", "node_id": "9"},
    ]
    detail = job_detail(_job(status="succeeded", outputs=outputs), {"1": {"class_type": "X"}})
    assert [(o.kind, o.size) for o in detail.outputs] == [
        ("image", "2.0 KiB"),
        ("video", "—"),
        ("audio", "—"),
        ("file", "—"),
        ("text", "—"),
    ]
    assert detail.nodes[0].state == "done" and detail.outputs[-1].text == "a caption"


def test_job_rows_say_what_made_each_job_and_how_long_it_took() -> None:
    rows = job_rows(
        [
            _job(options={"template": {"name": "txt2img"}}, status="succeeded"),
            _job(
                id="j2",
                options={"install_preset": "sd15"},
                status="running",
                progress={"fraction": 0.5},
            ),
            _job(id="j3", options={"retry_of": "j1"}, error={"message": "boom"}),
        ],
        NOW,
    )
    assert [(r.label, r.percent, r.error) for r in rows] == [
        ("txt2img", None, ""),
        ("install sd15", 50.0, ""),
        ("workflow", None, "boom"),
    ]
    assert (rows[0].created, rows[0].queued, rows[0].running) == ("30 s ago", "0.50 s", "12.3 s")


def test_model_files_group_by_folder_and_presets_say_what_is_missing_or_wrong() -> None:
    groups = model_groups(
        [
            {"folder_type": "loras", "name": "b.safetensors", "size": 1024, "sha256": "ab" * 32},
            {"folder_type": "checkpoints", "name": "x.ckpt", "size": 3 * 1024**3, "sha256": None},
            {"folder_type": "loras", "name": "A.safetensors", "size": 1024, "sha256": None},
        ]
    )
    assert [(g.folder_type, g.total, [f.name for f in g.files]) for g in groups] == [
        ("checkpoints", "3.0 GiB", ["x.ckpt"]),
        ("loras", "2.0 KiB", ["A.safetensors", "b.safetensors"]),
    ]
    assert groups[1].files[1].sha256 == "abababababab"
    presets = preset_rows(
        [
            {
                "name": "ok",
                "complete": True,
                "files": [{"type": "vae", "filename": "v", "state": "ok"}],
            },
            {
                "name": "half",
                "complete": False,
                "files": [
                    {"type": "checkpoints", "filename": "a", "state": "missing"},
                    {"type": "vae", "filename": "b", "state": "unverified"},
                ],
            },
            {
                "name": "bad",
                "complete": False,
                "files": [{"type": "x", "filename": "c", "state": "wrong_hash"}],
            },
        ]
    )
    assert [(p.state, p.tone) for p in presets] == [
        ("installed", "ok"),
        ("1 of 2 missing", "warn"),
        ("1 of 1 wrong", "bad"),
    ]
    fleet = _fleet(
        _instance("a", 0, models={"checkpoints": ["x.ckpt"]}),
        _instance("b", 0, models={"checkpoints": ["y.ckpt", "x.ckpt"]}),
    )
    (registered,) = registry_models(fleet)
    assert [f.name for f in registered.files] == ["x.ckpt", "y.ckpt"]


def test_keys_and_deliveries_show_no_secret() -> None:
    keys = key_rows(
        [
            {
                "id": "abc",
                "name": "ci",
                "scopes": ["submit", "read"],
                "status": "active",
                "created_at": NOW - 60,
                "expires_at": None,
                "hint": "x9Zq",
            },
            {
                "id": "def",
                "name": "old",
                "scopes": ["admin"],
                "status": "revoked",
                "created_at": NOW - 60,
                "expires_at": NOW + 86400,
                "hint": "AAAA",
            },
        ],
        NOW,
    )
    assert [(k.scopes, k.revocable, k.expires) for k in keys] == [
        ("submit, read", True, "never"),
        ("admin", False, "1970-01-13 13:46:40 UTC"),
    ]
    (delivery,) = delivery_rows(
        [
            {
                "id": "d1",
                "job_id": "j1",
                "type": "job.succeeded",
                "url": "https://user:pw@hooks.example:8443/in?token=secret",
                "state": "pending",
                "attempts": 2,
                "next_attempt_at": NOW + 90,
                "last_error": "HTTP 503",
            }
        ],
        NOW,
    )
    assert (delivery.target, delivery.next_try) == ("https://hooks.example:8443", "in 1 min 30 s")


def test_a_webhook_target_that_keeps_failing_is_a_warning_naming_only_its_host() -> None:
    pending = [
        {"url": "https://hooks.example/in?token=s3cret", "attempts": 4, "last_error": "HTTP 502"},
        {"url": "https://hooks.example/in?token=s3cret", "attempts": 2, "last_error": "HTTP 502"},
        {"url": "https://ok.example/x", "attempts": 1, "last_error": None},
    ]
    texts = [w.text for w in warnings(_fleet(_instance("a", 0)), now=NOW, retrying=pending)]
    assert texts == [
        "The webhook target https://hooks.example is not answering: 2 deliveries retrying "
        "(last error: HTTP 502)"
    ]
