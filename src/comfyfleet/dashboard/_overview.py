"""The overview's view model: `/v1/instances`, `/v1/jobs?status=running` and `/v1/stats` turned
into instance cards, machines, the queue and warnings.

Pure functions of the API's answers (and the time), so what a page shows is tested without a
browser or a fleet.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from comfyfleet.dashboard._format import ago, duration, percent, size

TONES = {
    "ready": "ok",
    "busy": "busy",
    "starting": "warn",
    "probing": "warn",
    "stopping": "warn",
    "backoff": "bad",
    "exited": "bad",
    "fatal": "bad",
    "unreachable": "bad",
    "not_comfyui": "bad",
    "gone": "bad",
    "stopped": "off",
}
"""How each instance state looks: a colour family the stylesheet knows."""
TROUBLE = frozenset({"backoff", "exited", "fatal", "unreachable", "not_comfyui"})
DISK_WARN = 90.0
DISK_BAD = 97.0


@dataclass(frozen=True)
class RunningJob:
    id: str
    label: str
    percent: float | None
    node: str | None


@dataclass(frozen=True)
class InstanceCard:
    ref: str
    """How `/v1/instances/{ref}/...` and `/instances/{ref}/` name it."""
    name: str
    agent: str
    host: str
    index: int
    state: str
    tone: str
    device: str
    vram: str
    vram_percent: float | None
    uptime: str
    restarts: int
    memory: str
    reason: str
    attached: bool
    pid: int | None
    port: int | None
    version: str | None
    job: RunningJob | None = None


@dataclass(frozen=True)
class Disk:
    folders: str
    used: str
    total: str
    free: str
    percent: float
    tone: str


@dataclass(frozen=True)
class Gpu:
    name: str
    utilization: int | None
    memory: str
    memory_percent: float | None
    temperature: int | None


@dataclass(frozen=True)
class Machine:
    host: str
    agent: str
    alive: bool
    seen: str
    cpu_percent: float | None
    cpus: int | None
    load: str
    memory: str
    memory_percent: float | None
    disks: list[Disk] = field(default_factory=list)
    gpus: list[Gpu] = field(default_factory=list)


@dataclass(frozen=True)
class Warning:
    level: str
    """`warn` or `bad`."""
    text: str
    link: str | None = None


def job_label(job: dict[str, Any]) -> str:
    """What made a job: its template's name, a retry's, a model install, or "workflow"."""
    options = job.get("options") or {}
    template = options.get("template")
    if isinstance(template, dict) and template.get("name"):
        return str(template["name"])
    if options.get("install_preset"):
        return f"install {options['install_preset']}"
    model = options.get("install_model")
    if isinstance(model, dict):
        return f"install {model.get('filename') or model.get('source')}"
    return "workflow"


def _refs(instances: list[dict[str, Any]]) -> dict[tuple[str, int], str]:
    """A bare index where only one agent has it, `agent:index` where several do."""
    counts = Counter(int(i["index"]) for i in instances)
    return {
        (_agent_id(i), int(i["index"])): (
            str(i["index"]) if counts[int(i["index"])] == 1 else f"{_agent_id(i)}:{i['index']}"
        )
        for i in instances
    }


def _agent_id(instance: dict[str, Any]) -> str:
    agent = instance.get("agent")
    return str(agent.get("id")) if isinstance(agent, dict) else str(agent)


def instance_cards(
    fleet: dict[str, Any], running: list[dict[str, Any]], now: float
) -> list[InstanceCard]:
    instances = list(fleet.get("instances") or [])
    refs = _refs(instances)
    by_place = {(j.get("agent"), j.get("instance")): j for j in running}
    by_index = {j.get("instance"): j for j in running}
    cards = []
    for each in instances:
        agent = each.get("agent") if isinstance(each.get("agent"), dict) else {}
        agent_id, index = _agent_id(each), int(each["index"])
        ref = refs[(agent_id, index)]
        state = str(each.get("state"))
        job = by_place.get((agent_id, index))
        if job is None and ":" not in ref:
            job = by_index.get(index)
        serving = state in ("ready", "busy")
        since = each.get("ready_since") if serving else None
        used, total = (each.get("vram_used"), each.get("vram_total")) if serving else (None, None)
        cards.append(
            InstanceCard(
                ref=ref,
                name=f"Instance {ref}",
                agent=agent_id,
                host=str(agent.get("host") or ""),
                index=index,
                state=state,
                tone=TONES.get(state, "warn"),
                device=str(each.get("device") or "—"),
                vram=_pair(used, total),
                vram_percent=percent(used, total),
                uptime=duration(now - since) if isinstance(since, int | float) else "—",
                restarts=int(each.get("restarts") or 0),
                memory=size(each.get("rss_bytes")),
                reason=str(each.get("reason") or ""),
                attached=bool(each.get("attached")),
                pid=each.get("pid"),
                port=each.get("port"),
                version=each.get("version"),
                job=_running(job) if job is not None and serving else None,
            )
        )
    return cards


def _running(job: dict[str, Any]) -> RunningJob:
    progress = job.get("progress") or {}
    fraction = progress.get("fraction")
    return RunningJob(
        id=str(job["id"]),
        label=job_label(job),
        percent=round(100 * fraction, 1) if isinstance(fraction, int | float) else None,
        node=None if progress.get("node") is None else str(progress["node"]),
    )


def _pair(used: Any, total: Any) -> str:
    if not isinstance(total, int | float) or not total:
        return "—"
    return f"{size(used)} of {size(total)}"


def machines(fleet: dict[str, Any], now: float) -> list[Machine]:
    found = []
    for agent in fleet.get("agents") or []:
        machine = agent.get("machine") or {}
        cpu = machine.get("cpu") or {}
        memory = machine.get("memory") or {}
        load = cpu.get("load")
        found.append(
            Machine(
                host=str(agent.get("host") or agent.get("id")),
                agent=str(agent.get("id")),
                alive=bool(agent.get("alive")),
                seen=ago(agent.get("heartbeat_at"), now),
                cpu_percent=cpu.get("percent"),
                cpus=cpu.get("count"),
                load=" / ".join(f"{x:g}" for x in load) if isinstance(load, list) else "—",
                memory=_pair(memory.get("used"), memory.get("total")),
                memory_percent=percent(memory.get("used"), memory.get("total")),
                disks=[disk_view(d) for d in machine.get("disks") or []],
                gpus=[_gpu(g) for g in machine.get("gpus") or []],
            )
        )
    return found


def disk_view(disk: dict[str, Any]) -> Disk:
    """A disk of a machine report, with its fullness as a tone."""
    used = float(disk.get("percent") or 0.0)
    tone = "bad" if used >= DISK_BAD else "warn" if used >= DISK_WARN else "ok"
    return Disk(
        folders=", ".join(disk.get("folders") or []),
        used=size(disk.get("used")),
        total=size(disk.get("total")),
        free=size(disk.get("free")),
        percent=used,
        tone=tone,
    )


def _gpu(gpu: dict[str, Any]) -> Gpu:
    return Gpu(
        name=str(gpu.get("name") or f"GPU {gpu.get('index')}"),
        utilization=gpu.get("utilization_percent"),
        memory=_pair(gpu.get("memory_used"), gpu.get("memory_total")),
        memory_percent=percent(gpu.get("memory_used"), gpu.get("memory_total")),
        temperature=gpu.get("temperature_c"),
    )


def warnings(
    fleet: dict[str, Any] | None,
    *,
    now: float,
    fleet_error: str | None = None,
    failed_deliveries: int | None = None,
    retrying: list[dict[str, Any]] | None = None,
) -> list[Warning]:
    """What needs someone's attention, worst first. `retrying`: pending webhook deliveries
    (a target that fails them again and again is down)."""
    if fleet is None:
        return [Warning("bad", f"The fleet cannot be read from the store: {fleet_error}")]
    found: list[Warning] = []
    instances = list(fleet.get("instances") or [])
    refs = _refs(instances)
    for each in instances:
        state = str(each.get("state"))
        if state in TROUBLE:
            ref = refs[(_agent_id(each), int(each["index"]))]
            reason = f" ({each['reason']})" if each.get("reason") else ""
            text = f"Instance {ref}: {state}{reason}"
            found.append(Warning("bad", text, "/dashboard/instances"))
    for agent in fleet.get("agents") or []:
        if not agent.get("alive"):
            seen = ago(agent.get("heartbeat_at"), now)
            found.append(
                Warning(
                    "bad",
                    f"Agent {agent.get('id')} on {agent.get('host')} last reported {seen}: "
                    "its instances serve nothing",
                )
            )
        for disk in (agent.get("machine") or {}).get("disks") or []:
            shown = disk_view(disk)
            if shown.tone != "ok":
                found.append(
                    Warning(
                        shown.tone,
                        f"The disk of {shown.folders} on {agent.get('host')} is "
                        f"{shown.percent:.0f}% full ({shown.free} free)",
                        "/dashboard/models",
                    )
                )
    if instances and not any(i.get("state") in ("ready", "busy") for i in instances):
        found.append(Warning("bad", "No instance is serving: jobs wait in the queue"))
    if not instances:
        found.append(Warning("warn", "No instance has registered yet"))
    found.extend(_targets_down(retrying or []))
    if failed_deliveries:
        many = "at least " if failed_deliveries >= 50 else ""
        found.append(
            Warning(
                "warn",
                f"{many}{failed_deliveries} webhook deliveries failed: their targets did not "
                "answer for the whole retry window",
                "/dashboard/settings#webhooks",
            )
        )
    return sorted(found, key=lambda w: w.level != "bad")


RETRIED = 2
"""Attempts after which a pending webhook delivery says its target is not answering."""


def _targets_down(pending: list[dict[str, Any]]) -> list[Warning]:
    """One warning per webhook target whose deliveries keep failing (by host: a URL may carry
    a token in its path or query)."""
    by_target: dict[str, list[dict[str, Any]]] = {}
    for delivery in pending:
        if int(delivery.get("attempts") or 0) >= RETRIED:
            by_target.setdefault(webhook_target(str(delivery.get("url") or "")), []).append(
                delivery
            )
    found = []
    for target, deliveries in sorted(by_target.items()):
        last = str(deliveries[0].get("last_error") or "no answer")
        found.append(
            Warning(
                "warn",
                f"The webhook target {target} is not answering: {len(deliveries)} deliveries "
                f"retrying (last error: {last})",
                "/dashboard/settings#webhooks",
            )
        )
    return found


def webhook_target(url: str) -> str:
    """Where a delivery goes, without its path, query and credentials (a webhook URL may carry
    a token)."""
    scheme, _, rest = url.partition("://")
    return f"{scheme}://{rest.split('/', 1)[0].rpartition('@')[2]}" if rest else ""
