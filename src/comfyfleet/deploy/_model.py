"""What a deployment is made of: the settings, and the few facts no setting says.

The host targets (systemd, supervisord) run the `comfyfleet` command of the machine they are
installed on, as a service user; the container targets run an image built from the project's
Dockerfile in one of its variants. Everything else comes from the settings.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from comfyfleet import __version__
from comfyfleet.config import Settings
from comfyfleet.deploy._errors import DeployError

VARIANTS = ("minimal", "standard", "full")
"""The image variants, each built on the one before (see the Dockerfile's header)."""

DEFAULT_VARIANT = "standard"


@dataclass(frozen=True)
class Deployment:
    """The inputs of every target: the settings plus how the files will be used."""

    settings: Settings
    variant: str = DEFAULT_VARIANT
    """The image variant the compose files and Kubernetes manifests run."""
    executable: Path = Path("/opt/comfyfleet/bin/comfyfleet")
    """The `comfyfleet` command on the machine that runs the host targets."""
    service_user: str = "comfyfleet"
    """The user the host targets run as."""
    config_file: Path | None = None
    """The settings file the host targets point `COMFYFLEET_CONFIG` at, if any."""

    def __post_init__(self) -> None:
        if self.variant not in VARIANTS:
            raise DeployError(
                f"unknown image variant '{self.variant}'",
                hint=f"choose one of {', '.join(VARIANTS)}",
            )
        if not self.executable.is_absolute():
            raise DeployError(
                f"the comfyfleet command must be an absolute path, not '{self.executable}'"
            )

    @property
    def image(self) -> str:
        """The tag the Dockerfile's build command gives the variant the containers run."""
        return f"comfyfleet:{__version__}-{self.variant}"


@dataclass(frozen=True)
class Rendered:
    """The files of one target (path relative to its folder: text) and what the user should
    know about them (settings left out, choices made for them)."""

    files: dict[str, str]
    notes: tuple[str, ...] = ()
