"""comfyfleet: run ComfyUI as a production service (install, supervise, serve)."""

from __future__ import annotations

from comfyfleet.errors import ComfyfleetError

__version__ = "0.1.0"

__all__ = ["ComfyfleetError", "__version__"]
