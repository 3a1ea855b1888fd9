"""The command line and environment of each ComfyUI instance.

Each instance gets its own base directory (`instances/N/`: temp, user, its own custom_nodes
search path) and an in-memory or per-instance database, and shares the models (through the
generated `extra_model_paths.yaml`), the custom nodes, and the input and output folders.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Sequence

from comfyfleet.gpus import InstancePlan
from comfyfleet.supervise._instance import InstanceSpec
from comfyfleet.supervise._settings import FleetSettings
from comfyfleet.workspace import Workspace


def comfy_argv(ws: Workspace, fleet: FleetSettings, plan: InstancePlan, port: int) -> list[str]:
    base = ws.instance_dir(plan.index)
    if fleet.database == "memory":
        database = "sqlite:///:memory:"
    else:
        database = f"sqlite:///{base / 'user' / 'comfyui.db'}"
    return [
        str(ws.python),
        "main.py",
        "--listen",
        fleet.host,
        "--port",
        str(port),
        "--base-directory",
        str(base),
        "--extra-model-paths-config",
        str(ws.extra_model_paths),
        "--input-directory",
        str(ws.input_dir),
        "--output-directory",
        str(ws.output_dir),
        "--temp-directory",
        str(base / "temp"),
        "--user-directory",
        str(base / "user"),
        "--database-url",
        database,
        "--disable-auto-launch",
        *plan.comfy_args,
        *fleet.extra_args,
        *fleet.instance_args.get(plan.index, ()),
    ]


def instance_specs(
    ws: Workspace, fleet: FleetSettings, plans: Sequence[InstancePlan]
) -> list[InstanceSpec]:
    specs = []
    for plan in plans:
        for sub in ("user", "custom_nodes", "temp"):
            # ComfyUI dies at start when its base directory has no custom_nodes/ folder.
            (ws.instance_dir(plan.index) / sub).mkdir(parents=True, exist_ok=True)
        env = {
            **os.environ,
            **plan.env,
            **fleet.env,
            "PYTHONUNBUFFERED": "1",
            "COMFYFLEET_INSTANCE": str(plan.index),
        }
        specs.append(
            InstanceSpec(
                index=plan.index,
                command=functools.partial(comfy_argv, ws, fleet, plan),
                env=env,
                cwd=ws.comfyui_dir,
                host=fleet.host,
                wanted_port=fleet.base_port + plan.index,
                device=plan.label,
                log_path=ws.instance_log(plan.index),
                pre_start_hook=fleet.pre_start_hook,
            )
        )
    return specs
