"""Turning the warm-up settings into the graphs the supervisor runs, once, at start.

A warm-up that cannot be read (a missing file, a UI-format workflow, an unknown template, a bad
parameter) stops the start with an error that names the setting: better than an instance that
fails every start for a reason found only in its state.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from comfyfleet.errors import ComfyfleetError, ConfigError
from comfyfleet.jobs import check_workflow
from comfyfleet.supervise import Warmup
from comfyfleet.templates import TemplateLibrary
from comfyfleet.watchdog._settings import WarmupSettings, WatchdogSettings


def build_warmup(settings: WatchdogSettings, templates: TemplateLibrary) -> Warmup | None:
    """The warm-ups of `settings`, or None when no instance has one."""
    if settings.warmup is None and not any(settings.warmup_instances.values()):
        return None
    default = None if settings.warmup is None else _graph(settings.warmup, templates, "warmup")
    by_instance: dict[int, Mapping[str, Any] | None] = {}
    for index, each in settings.warmup_instances.items():
        where = f"warmup_instances.{index}"
        by_instance[index] = None if each is None else _graph(each, templates, where)
    return Warmup(default, by_instance, settings.warmup_timeout_s)


def _graph(warmup: WarmupSettings, templates: TemplateLibrary, where: str) -> dict[str, Any]:
    key = f"watchdog.{where}"
    try:
        if warmup.template is not None:
            graph = templates.get(warmup.template).apply(warmup.params)
        else:
            assert warmup.workflow is not None
            graph = json.loads(warmup.workflow.read_text(encoding="utf-8"))
        check_workflow(graph)
    except OSError as exc:
        raise ConfigError(
            f"{key}: cannot read {warmup.workflow}: {exc.strerror or exc}",
            hint="give the path of an API-format workflow file",
        ) from exc
    except ValueError as exc:  # json.JSONDecodeError
        raise ConfigError(f"{key}: {warmup.workflow} is not JSON: {exc}") from exc
    except ComfyfleetError as exc:  # unknown template, bad parameter, not a runnable graph
        raise ConfigError(f"{key}: {exc.message}", hint=exc.hint) from exc
    assert isinstance(graph, dict)
    return graph
