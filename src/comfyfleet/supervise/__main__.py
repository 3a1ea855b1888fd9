"""The detached supervisor: `python -m comfyfleet.supervise SETTINGS_JSON`.

`comfyfleet up --detach` writes the settings it resolved (flags, env and file already applied)
to a JSON file and starts this in a new session; the CLI then talks to it over the control socket.
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

from comfyfleet.config import Settings
from comfyfleet.errors import ComfyfleetError
from comfyfleet.supervise._runner import run_fleet


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: python -m comfyfleet.supervise SETTINGS_JSON", file=sys.stderr)
        return 2
    settings = Settings.model_validate_json(Path(argv[0]).read_text(encoding="utf-8"))
    try:
        asyncio.run(run_fleet(settings))
    except ComfyfleetError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
