from __future__ import annotations

from pathlib import Path

import pytest

from tests.comfyui_env import installed_workspace
from tests.event_loop import loop  # noqa: F401  (a fixture for every tier)


@pytest.fixture(scope="session")
def comfyui_install() -> Path:
    """The real ComfyUI installed by comfyfleet's installer (cached across runs)."""
    return installed_workspace()
