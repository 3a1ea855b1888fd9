"""Fuzz campaigns against a live `comfyfleet serve` (real CPU ComfyUI instances).

Bounded for CI by default; `COMFYFLEET_FUZZ_EXAMPLES=2000` runs a longer campaign and
`COMFYFLEET_FUZZ_SEED=N` another one (see `live.fuzz_settings`).
"""
