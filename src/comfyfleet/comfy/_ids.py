"""Prompt ids comfyfleet chooses for the prompts it queues on an instance.

ComfyUI 0.3.x takes any string as a client-chosen `prompt_id`; newer releases refuse everything
but a UUID in its canonical lowercase hyphenated form (HTTP 400, `invalid_prompt_id`). That form
is accepted by both, so it is the only one comfyfleet sends.
"""

from __future__ import annotations

import uuid


def new_prompt_id() -> str:
    """A fresh prompt id every ComfyUI release accepts."""
    return str(uuid.uuid4())
