"""`python -m comfyfleet.deploy ARGS...`: the image's entrypoint (see `_container`)."""

from __future__ import annotations

from comfyfleet.deploy._container import main

main()
