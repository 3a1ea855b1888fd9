"""`TemplateSettings`: the `templates:` section of comfyfleet.yaml. Plain frozen data."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field


class TemplateSettings(BaseModel):
    """Where templates come from besides the shipped ones and the workspace's `templates/`."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    folders: tuple[Path, ...] = Field(
        default=(),
        description="more folders of template files (YAML or JSON), read after the workspace's"
        " templates/; a later folder's template replaces an earlier one of the same name",
    )
