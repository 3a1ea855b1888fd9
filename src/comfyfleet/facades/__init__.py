"""Front doors that speak what clients already speak, each a thin translation onto the job model:
the ComfyUI API and editor (`comfyui`), Comfy API v2 (`comfy_v2`), the instances' own UIs
(`instances`).

Every door takes jobs through `comfyfleet.gateway`'s intake steps, so each refuses the same
things the `/v1` API refuses and runs its jobs on the whole fleet, durably.

The gateway's OpenAPI document (`/docs`) describes the native `/v1` API. The doors here speak
contracts that are not ours to document (ComfyUI's API, comfy-api-proxy's v2): their routes are
left out of it, and they are tested with their own clients instead.
"""
