"""Retention: what comfyfleet stores is pruned once it is older than its limit.

Finished jobs with their events, delivered and dead-lettered webhook deliveries, preview frames
(the store's records, pruned by one process of the deployment at a time), and this machine's
files: inputs no live job names, job output folders (by age, and oldest first past a size
cap), instance temp files. Nothing a queued or running job needs is removed. `Pruner` runs one
prune (or a dry run that lists what would go); `RetentionTask` runs it every `interval` inside
the long-running roles, and once for `comfyfleet gc`.
"""

from __future__ import annotations

from comfyfleet.retention._disk import Disk
from comfyfleet.retention._live import Live, named_assets, read_live
from comfyfleet.retention._pruner import Pruner
from comfyfleet.retention._records import Records
from comfyfleet.retention._report import Item, Kind, Reason, Report, Tally
from comfyfleet.retention._settings import RetentionSettings, parse_duration, parse_size
from comfyfleet.retention._task import LEASE, PruneBusy, RetentionTask

__all__ = [
    "LEASE",
    "Disk",
    "Item",
    "Kind",
    "Live",
    "PruneBusy",
    "Pruner",
    "Reason",
    "Records",
    "Report",
    "RetentionSettings",
    "RetentionTask",
    "Tally",
    "named_assets",
    "parse_duration",
    "parse_size",
    "read_live",
]
