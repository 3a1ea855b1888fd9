"""The Grafana dashboard shipped in deploy/grafana/ asks only for what comfyfleet exports, and
shows all of it: its expressions are checked against the names and labels of a `/metrics`
page with every source filled in (the gateway's, the agent's work, the GPUs of a fake NVML)."""

from __future__ import annotations

import asyncio
import json
import re
from pathlib import Path
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from comfyfleet.jobs import MemoryJobStore, MemoryRegistry, NewJob
from comfyfleet.metrics import Metrics, Nvml, count_jobs, watch_fleet, watch_machine
from comfyfleet.supervise import InstanceStatus, State
from comfyfleet.webhooks import MemoryOutbox
from tests.unit.fake_nvml import FakeNvml

DASHBOARD = Path(__file__).resolve().parents[2] / "deploy" / "grafana" / "comfyfleet.json"
_NAME = re.compile(r"\bcomfyfleet_[a-z0-9_]+")
_BY = re.compile(r"\b(?:by|without)\s*\(([^)]*)\)")
PROMETHEUS_LABELS = {"instance", "job", "le"}
"""Labels Prometheus adds to every series (the scraped target) or histograms carry."""


def exported() -> tuple[set[str], set[str], set[str]]:
    """(family names, sample names, label names) of a page where every source has numbers."""

    async def page() -> str:
        store = MemoryJobStore()
        metrics = Metrics()
        tally = await count_jobs(metrics, store)
        watch_fleet(metrics, store, MemoryRegistry(), MemoryOutbox(), agent_timeout_s=15)
        status = InstanceStatus(0, State.READY, 1, 8188, "cuda:0", 1.0, 2.0, 0, 1, "v", "")
        watch_machine(metrics, lambda: [status], nvml=Nvml.open(FakeNvml()))
        work = metrics.work
        work.model_loads({"checkpoints/a.safetensors"})
        await store.enqueue(NewJob("a", {}))
        await store.claim("w", lease_s=30)
        await store.fail("a", "w", {"code": "node_error"}, retryable=False)
        await store.enqueue(NewJob("b", {}))
        await tally.catch_up()
        text = (await metrics.render()).decode()
        await metrics.close()
        return text

    families = list(text_string_to_metric_families(asyncio.run(page())))
    # prometheus-client's `_created` companions of counters are timestamps, not numbers to show.
    ours = [
        f for f in families if f.name.startswith("comfyfleet_") and not f.name.endswith("_created")
    ]
    samples = {s.name for f in ours for s in f.samples}
    labels = {label for f in ours for s in f.samples for label in s.labels}
    return {f.name for f in ours}, samples, labels


def expressions(panels: list[dict[str, Any]]) -> list[str]:
    found = []
    for panel in panels:
        found += [t["expr"] for t in panel.get("targets", [])]
        found += expressions(panel.get("panels", []))
    return found


def test_every_expression_names_exported_metrics_and_labels() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    exprs = expressions(dashboard["panels"])
    assert len(exprs) >= 25
    _, samples, labels = exported()
    for expr in exprs:
        names = set(_NAME.findall(expr))
        assert names, f"an expression that shows nothing of comfyfleet: {expr}"
        assert names <= samples, f"{expr}: not exported: {sorted(names - samples)}"
        for clause in _BY.findall(expr):
            used = {label.strip() for label in clause.split(",") if label.strip()}
            unknown = used - labels - PROMETHEUS_LABELS
            assert not unknown, f"{expr}: no such label {sorted(unknown)}"


def test_every_exported_metric_has_a_panel() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    used = {name for expr in expressions(dashboard["panels"]) for name in _NAME.findall(expr)}
    families, _, _ = exported()
    suffixes = ("", "_total", "_bucket", "_count", "_sum")
    shown = {f for f in families if any(f + s in used for s in suffixes)}
    assert families - shown == set()


def test_panels_have_unique_ids_and_one_prometheus_source() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    ids = [panel["id"] for panel in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    [source] = dashboard["templating"]["list"]
    assert (source["type"], source["query"]) == ("datasource", "prometheus")
    for panel in dashboard["panels"]:
        if panel["type"] != "row":
            assert panel["datasource"]["uid"] == "${datasource}"
