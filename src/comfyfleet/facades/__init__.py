"""Front doors that speak what clients already speak, each a thin translation onto the job model:
the ComfyUI API and editor (`comfyui`), Comfy API v2 (`comfy_v2`), the instances' own UIs
(`instances`).

Every door takes jobs through `comfyfleet.gateway`'s intake steps, so each refuses the same
things the `/v1` API refuses and runs its jobs on the whole fleet, durably.
"""
