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
from comfyfleet.jobs._graph import GraphError, check_workflow
from comfyfleet.jobs._limits import JobLimits
from comfyfleet.jobs._memory import MemoryJobStore
from comfyfleet.jobs._model import (
    TERMINAL,
    InvalidCursor,
    Job,
    JobConflict,
    JobEvent,
    JobNotFound,
    JobStatus,
    JobStoreError,
    NewJob,
    QueueFull,
)
from comfyfleet.jobs._open import open_store
from comfyfleet.jobs._postgres import PostgresJobStore
from comfyfleet.jobs._prepare import INSTALL_PRESET, ModelFetch, PrepareFailed, Preparer
from comfyfleet.jobs._remote import RemoteFolders
from comfyfleet.jobs._results import OutputPublisher
from comfyfleet.jobs._sqlite import SqliteJobStore
from comfyfleet.jobs._store import LEASE_EXPIRED, JobStore, QueueSignal

__all__ = [
    "INSTALL_PRESET",
    "LEASE_EXPIRED",
    "TERMINAL",
    "Dispatcher",
    "DispatcherSettings",
    "FreeText",
    "GraphError",
    "InvalidCursor",
    "Job",
    "JobConflict",
    "JobEvent",
    "JobLimits",
    "JobNotFound",
    "JobStatus",
    "JobStore",
    "JobStoreError",
    "MemoryJobStore",
    "ModelFetch",
    "NewJob",
    "OutputPublisher",
    "PostgresJobStore",
    "PrepareFailed",
    "Preparer",
    "QueueFull",
    "QueueSignal",
    "RemoteFolders",
    "SqliteJobStore",
    "check_workflow",
    "clean_prefix",
    "escaping_path",
    "namespace_outputs",
    "open_store",
    "unsafe_paths",
]
