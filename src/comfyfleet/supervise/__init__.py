"""Supervising ComfyUI instances: state machines, restarts with backoff, probes, logs, control."""

from __future__ import annotations

from comfyfleet.supervise._attached import AttachedInstance, AttachedSpec
from comfyfleet.supervise._control import ControlClient
from comfyfleet.supervise._daemon import spawn_daemon
from comfyfleet.supervise._follow import FollowedSupervisor
from comfyfleet.supervise._instance import Instance, InstanceSpec, describe_exit
from comfyfleet.supervise._logs import RotatingLog, follow, tail_lines
from comfyfleet.supervise._ports import choose_port, port_is_free
from comfyfleet.supervise._probe import HttpProber, Prober, ProbeResult, UrlProber
from comfyfleet.supervise._process import Launcher, ProcessHandle, SubprocessLauncher
from comfyfleet.supervise._runner import build_supervisor, run_fleet
from comfyfleet.supervise._settings import FleetSettings, attach_url
from comfyfleet.supervise._states import SERVING, InstanceEvent, InvalidTransition, State
from comfyfleet.supervise._status import InstanceStatus
from comfyfleet.supervise._supervisor import Supervisor
from comfyfleet.supervise._warmup import WARMUP_CLIENT_ID, HttpWarmupRunner, Warmup, WarmupRunner

__all__ = [
    "SERVING",
    "WARMUP_CLIENT_ID",
    "AttachedInstance",
    "AttachedSpec",
    "ControlClient",
    "FleetSettings",
    "FollowedSupervisor",
    "HttpProber",
    "HttpWarmupRunner",
    "Instance",
    "InstanceEvent",
    "InstanceSpec",
    "InstanceStatus",
    "InvalidTransition",
    "Launcher",
    "ProbeResult",
    "Prober",
    "ProcessHandle",
    "RotatingLog",
    "State",
    "SubprocessLauncher",
    "Supervisor",
    "UrlProber",
    "Warmup",
    "WarmupRunner",
    "attach_url",
    "build_supervisor",
    "choose_port",
    "describe_exit",
    "follow",
    "port_is_free",
    "run_fleet",
    "spawn_daemon",
    "tail_lines",
]
