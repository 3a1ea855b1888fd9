"""Jobs: the durable queue of ComfyUI workflows that the gateway fills and the dispatcher drains."""

from __future__ import annotations

from comfyfleet.jobs._confine import (
    FreeText,
    clean_prefix,
    escaping_path,
    namespace_outputs,
    unsafe_paths,
)
from comfyfleet.jobs._dispatcher import Dispatcher, DispatcherSettings
from comfyfleet.jobs._fleet import (
    COMMANDS,
    SERVING_STATES,
    AgentRecord,
    Fleet,
    InstanceCommand,
    InstanceRecord,
    LogTail,
    NodeSchemas,
    Registry,
    StoredFrame,
    digest_of,
)
from comfyfleet.jobs._fleet_memory import MemoryRegistry
from comfyfleet.jobs._fleet_postgres import PostgresRegistry
from comfyfleet.jobs._fleet_previews import PreviewWriter
from comfyfleet.jobs._fleet_sqlite import SqliteRegistry
from comfyfleet.jobs._graph import GraphError, check_workflow
from comfyfleet.jobs._limits import JobLimits
from comfyfleet.jobs._memory import MemoryJobStore
from comfyfleet.jobs._model import (
    TERMINAL,
    FinishedJob,
    InvalidCursor,
    Job,
    JobConflict,
    JobEnding,
    JobEvent,
    JobNotFound,
    JobStatus,
    JobStoreError,
    NewJob,
    QueueFull,
)
from comfyfleet.jobs._open import open_registry, open_store
from comfyfleet.jobs._options import Conversion, JobOptions, Timeouts, WebhookOption
from comfyfleet.jobs._outputs import JobOutput
from comfyfleet.jobs._postgres import PostgresJobStore
from comfyfleet.jobs._prepare import ModelFetch, PrepareFailed, Preparer
from comfyfleet.jobs._progress import JobProgress
from comfyfleet.jobs._remote import RemoteFolders
from comfyfleet.jobs._results import OutputPublisher
from comfyfleet.jobs._routing import CLAIM_WINDOW, Affinity
from comfyfleet.jobs._rules import LEASE_EXPIRED
from comfyfleet.jobs._sqlite import SqliteJobStore
from comfyfleet.jobs._stall import RestartInstance, StallSettings
from comfyfleet.jobs._store import BatchPublisher, JobStore, QueueSignal, publish_all
from comfyfleet.jobs._watch import PHASES, JobWatch, NoWatch

__all__ = [
    "CLAIM_WINDOW",
    "COMMANDS",
    "LEASE_EXPIRED",
    "PHASES",
    "SERVING_STATES",
    "TERMINAL",
    "Affinity",
    "AgentRecord",
    "BatchPublisher",
    "Conversion",
    "Dispatcher",
    "DispatcherSettings",
    "FinishedJob",
    "Fleet",
    "FreeText",
    "GraphError",
    "InstanceCommand",
    "InstanceRecord",
    "InvalidCursor",
    "Job",
    "JobConflict",
    "JobEnding",
    "JobEvent",
    "JobLimits",
    "JobNotFound",
    "JobOptions",
    "JobOutput",
    "JobProgress",
    "JobStatus",
    "JobStore",
    "JobStoreError",
    "JobWatch",
    "LogTail",
    "MemoryJobStore",
    "MemoryRegistry",
    "ModelFetch",
    "NewJob",
    "NoWatch",
    "NodeSchemas",
    "OutputPublisher",
    "PostgresJobStore",
    "PostgresRegistry",
    "PrepareFailed",
    "Preparer",
    "PreviewWriter",
    "QueueFull",
    "QueueSignal",
    "Registry",
    "RemoteFolders",
    "RestartInstance",
    "SqliteJobStore",
    "SqliteRegistry",
    "StallSettings",
    "StoredFrame",
    "Timeouts",
    "WebhookOption",
    "check_workflow",
    "clean_prefix",
    "digest_of",
    "escaping_path",
    "namespace_outputs",
    "open_registry",
    "open_store",
    "publish_all",
    "unsafe_paths",
]
