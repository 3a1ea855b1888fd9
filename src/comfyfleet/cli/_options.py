"""Options shared by several commands, and turning flags into :class:`Settings`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from comfyfleet.config import Settings, load_settings

WorkspaceOpt = Annotated[
    Path | None,
    typer.Option(
        "--workspace", "-w", help="Workspace folder [env COMFYFLEET_WORKSPACE].", show_default=False
    ),
]
ConfigOpt = Annotated[
    Path | None,
    typer.Option(
        "--config",
        "-c",
        help="Settings file (default: ./comfyfleet.yaml, then "
        "WORKSPACE/comfyfleet.yaml) [env COMFYFLEET_CONFIG].",
        show_default=False,
    ),
]
GatewayPortOpt = Annotated[
    int | None, typer.Option("--port", help="Gateway port (default 8080).", show_default=False)
]
GatewayHostOpt = Annotated[
    str | None,
    typer.Option("--host", help="Gateway address (default 127.0.0.1).", show_default=False),
]
BasePortOpt = Annotated[
    int | None,
    typer.Option("--base-port", show_default=False, help="Instance i listens on base+i."),
]


def settings_from(workspace: Path | None, config: Path | None, **sections: Any) -> Settings:
    """Flags override env, which overrides the file; a flag left out (None) overrides nothing."""
    overrides: dict[str, Any] = {"workspace": workspace}
    overrides.update(sections)
    return load_settings(overrides, config_file=config)
