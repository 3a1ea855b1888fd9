"""The contract's progress snapshot, folded from a job's events.

The fleet records progress as ComfyUI reports it: which node runs (`executing`), which finished
(`executed`), and the step of the running node (`progress`). The contract wants one complete
snapshot per update (`value` 0..1 over the whole graph, nodes done of nodes total, the current
node and its class, step of steps), "the same data the SSE stream pushes" as the job's poll
answer. So both the poll (`GET /api/v2/jobs/{id}`) and the stream fold the same events with
`Progress`; a new attempt (a retry's `running` status) starts the count again.

Nodes ComfyUI serves from its cache send no `executed`, so `nodes_done` can stay below
`nodes_total` until the job succeeds; `value` is then 1.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from comfyfleet.jobs import Job, JobEvent, JobProgress, JobStatus, JobStore

EVENT_PAGE = 1000


@dataclass
class Progress:
    """What is known of one attempt's progress."""

    classes: dict[str, str]
    """Node id -> class type, from the job's graph (its size is `nodes_total`)."""
    done: set[str] = field(default_factory=set)
    current: str | None = None
    step: int | None = None
    steps: int | None = None
    finished: bool = False

    @classmethod
    def of(cls, job: Job) -> Progress:
        classes = {
            str(node_id): str(node.get("class_type", ""))
            for node_id, node in job.workflow.items()
            if isinstance(node, dict)
        }
        return cls(classes, finished=job.status == JobStatus.SUCCEEDED)

    def restart(self) -> None:
        self.done.clear()
        self.current = self.step = self.steps = None

    def stored(self, event: JobEvent) -> bool:
        """Fold a store event; whether it changed the snapshot."""
        data = event.data
        if event.kind == "progress":
            return self._step(JobProgress.from_json(data))
        return self._fold(event.kind, data)

    def client(self, kind: str, data: dict[str, Any]) -> bool:
        """Fold a client event (`comfyfleet.gateway.ClientEvent`); whether it changed it."""
        if kind == "progress":
            return self._step(JobProgress.from_client(data))
        return self._fold(kind, data)

    def _fold(self, kind: str, data: dict[str, Any]) -> bool:
        if kind == "status":
            status = data.get("status")
            if status == "running":
                self.restart()
            self.finished = status == "succeeded"
            return False
        node = data.get("node")
        if node is None:
            return False
        if kind == "executing":
            if str(node) != self.current:
                self.current, self.step, self.steps = str(node), None, None
            return True
        if kind == "executed":
            self.done.add(str(node))
            return True
        return False

    def _step(self, progress: JobProgress) -> bool:
        if progress.node is not None and progress.node != self.current:
            self.current = progress.node
        self.step, self.steps = progress.step, progress.steps
        return True

    def snapshot(self) -> dict[str, Any]:
        total = len(self.classes)
        done = len(self.done & set(self.classes)) if not self.finished else total
        partial = 0.0
        if not self.finished and self.current not in self.done and self.steps:
            partial = min(1.0, (self.step or 0) / self.steps)
        value = 1.0 if self.finished else (min(1.0, (done + partial) / total) if total else 0.0)
        node_class = self.classes.get(self.current) if self.current is not None else None
        message = None
        if node_class and self.steps:
            message = f"{node_class} {self.step or 0}/{self.steps}"
        return {
            "value": round(value, 4),
            "nodes_done": done,
            "nodes_total": total,
            "current_node": None if self.finished else self.current,
            "current_node_class": None if self.finished else node_class,
            "step": None if self.finished else self.step,
            "steps": None if self.finished else self.steps,
            "message": None if self.finished else message,
        }


async def fold_backlog(store: JobStore, job: Job, progress: Progress) -> int:
    """Fold every event the store holds for `job` into `progress`; the last seq read."""
    after = 0
    while True:
        events = await store.events(job.id, after=after, limit=EVENT_PAGE)
        for event in events:
            progress.stored(event)
            after = event.seq
        if len(events) < EVENT_PAGE:
            return after


async def job_progress(store: JobStore, job: Job) -> dict[str, Any] | None:
    """The progress a job's poll answer shows: none while queued or after failing or being
    cancelled, the whole graph once succeeded, and the folded events while running."""
    if job.status == JobStatus.SUCCEEDED:
        return Progress.of(job).snapshot()
    if job.status != JobStatus.RUNNING:
        return None
    progress = Progress.of(job)
    await fold_backlog(store, job, progress)
    return progress.snapshot()
