"""The one error of the deploy package."""

from __future__ import annotations

from comfyfleet.errors import ComfyfleetError


class DeployError(ComfyfleetError):
    """The settings cannot be turned into the deployment files asked for (an unknown target or
    variant, or a choice that the target cannot carry, such as a CPU torch in a CUDA image)."""
