"""OpenAI's images API in front of the fleet, under `/openai/v1` (never colliding with `/v1`):
`GET /models`, `POST /images/generations`, `POST /images/edits`.

The models are the templates whose file has an `openai` block, which says which template
parameter each OpenAI field sets (`prompt`, `size` -> width and height, `n` -> batch size,
`image`, `mask`, ...). A client written for OpenAI (the `openai` package, Open WebUI's OpenAI
image engine) points its base URL at `.../openai/v1`, uses a gateway API key as its OpenAI key,
and names a template as its model. Each request becomes ordinary fleet jobs through the
gateway's intake, answered once they end. The modules:

    _routes     the routes, submitting through the intake and waiting for the jobs' end
    _request    the request's fields checked, and mapped onto the template's parameters
    _form       the multipart body of /images/edits, its files stored as assets
    _answer     finished jobs as OpenAI's ImagesResponse (b64_json, or URLs)
    _links      signed, expiring links to outputs on the gateway's disk
    _edge       the outer layer: serves those links, puts every error in OpenAI's shape
    _errors     OpenAI's error shape
    _settings   the `openai:` settings section
"""

from __future__ import annotations

from pathlib import Path

from starlette.types import ASGIApp

from comfyfleet.assets import AssetStore
from comfyfleet.facades.openai._edge import OpenAIEdge
from comfyfleet.facades.openai._links import ImageLinks
from comfyfleet.facades.openai._routes import PREFIX, OpenAIImages, openai_router
from comfyfleet.facades.openai._settings import OpenAISettings
from comfyfleet.gateway import Service
from comfyfleet.templates import TemplateLibrary


def openai_images(
    service: Service,
    library: TemplateLibrary,
    assets: AssetStore,
    settings: OpenAISettings,
    *,
    secret: bytes,
    max_upload_bytes: int,
) -> OpenAIImages:
    """The facade's state; `secret` keys the signed links (see `ImageLinks`)."""
    links = ImageLinks(secret, prefix=PREFIX, ttl_s=settings.link_ttl_s)
    return OpenAIImages(service, library, assets, links, settings, max_upload_bytes)


def openai_edge(app: ASGIApp, images: OpenAIImages, output_dir: Path) -> ASGIApp:
    """`app` (the whole gateway, key check included) behind the prefix's outer layer."""
    return OpenAIEdge(app, links=images.links, output_dir=output_dir)


__all__ = [
    "PREFIX",
    "ImageLinks",
    "OpenAIEdge",
    "OpenAIImages",
    "OpenAISettings",
    "openai_edge",
    "openai_images",
    "openai_router",
]
