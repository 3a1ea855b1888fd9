"""`OpenAISettings`: the `openai:` section of comfyfleet.yaml. Plain frozen data."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class OpenAISettings(BaseModel):
    """The OpenAI images API under `/openai/v1`: templates with an `openai` block as models."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    enabled: bool = Field(True, description="serve the OpenAI images API under /openai/v1")
    default_model: str | None = Field(
        None,
        description="the template a request without 'model' runs (none: 'model' is required)",
    )
    link_ttl_s: float = Field(
        3600.0,
        gt=0,
        le=7 * 86400,
        description="how long the signed URLs of url answers stay valid (outputs on local disk)",
    )
    max_images: int = Field(
        10,
        ge=1,
        le=100,
        description="largest n for a template without an n parameter (one job per image)",
    )
