"""The prefix's outer layer, around the whole gateway app (outside the API-key check):

- it serves the signed links of `url` answers itself (`_links`): a link is its own credential,
  so a client that fetches it without its key (a browser, Open WebUI for another origin) gets
  the file, and one with a wrong, altered or expired signature gets a 403;
- it rewrites every error answer under the prefix into OpenAI's shape (`_errors`), whoever
  made it: the routes, the gateway's handlers, or the key middleware's 401, which no route of
  the app can reach.

Everything else passes through untouched (success answers are never buffered).
"""

from __future__ import annotations

import json
import mimetypes
import time
from pathlib import Path, PurePosixPath
from urllib.parse import parse_qs

from starlette.responses import FileResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from comfyfleet.facades.openai._errors import openai_body, translate
from comfyfleet.facades.openai._links import OUTPUTS_PATH, ImageLinks
from comfyfleet.gateway import JOB_ID

_READ_METHODS = ("GET", "HEAD")


class OpenAIEdge:
    """See the module docstring. `output_dir` is where outputs on this machine are."""

    def __init__(self, app: ASGIApp, *, links: ImageLinks, output_dir: Path) -> None:
        self.app = app
        self.links = links
        self.output_dir = output_dir
        self.prefix = links.prefix
        self.outputs = links.prefix + OUTPUTS_PATH

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "")
        if scope["type"] != "http" or not (
            path == self.prefix or path.startswith(self.prefix + "/")
        ):
            await self.app(scope, receive, send)
            return
        if path.startswith(self.outputs) and scope.get("method") in _READ_METHODS:
            await self._link(path[len(self.outputs) :], scope)(scope, receive, send)
            return
        await self.app(scope, receive, _in_openai_shape(send))

    def _link(self, rest: str, scope: Scope) -> Response:
        job_id, _, relative = rest.partition("/")
        parts = PurePosixPath(relative).parts
        if not JOB_ID.fullmatch(job_id) or not parts or ".." in parts or relative.startswith("/"):
            return _error(404, "output_not_found", "no such output")
        query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
        expires = (query.get("expires") or [""])[0]
        signature = (query.get("signature") or [""])[0]
        if expires.isdigit() and int(expires) < time.time():
            return _error(
                403, "link_expired", "this link has expired; make the image again for a new one"
            )
        if not self.links.valid(job_id, relative, expires, signature):
            return _error(403, "invalid_signature", "this link's signature is not valid")
        file = self.output_dir / job_id / Path(*parts)
        if not file.is_file():
            return _error(404, "output_not_found", f"job {job_id} has no output '{relative}'")
        media = mimetypes.guess_type(file.name)[0] or "application/octet-stream"
        left = max(int(expires) - int(time.time()), 0)
        return FileResponse(
            file, media_type=media, headers={"Cache-Control": f"private, max-age={left}"}
        )


def _error(status: int, code: str, message: str) -> Response:
    body = json.dumps(openai_body(code, message, None, status)).encode()
    return Response(body, status_code=status, media_type="application/json")


def _in_openai_shape(send: Send) -> Send:
    """`send` with error answers (JSON, 4xx and 5xx) rewritten into OpenAI's shape."""
    held: Message | None = None
    chunks: list[bytes] = []

    async def send_translated(message: Message) -> None:
        nonlocal held
        if message["type"] == "http.response.start":
            if message["status"] >= 400 and _is_json(message):
                held = message
                return
            await send(message)
            return
        if held is None or message["type"] != "http.response.body":
            await send(message)
            return
        chunks.append(message.get("body", b""))
        if message.get("more_body", False):
            return
        start, held = held, None
        status, body = start["status"], b"".join(chunks)
        headers = list(start.get("headers", []))
        shaped = translate(status, body)
        if shaped is not None:
            status, body = shaped
            headers = [(k, v) for k, v in headers if k.lower() != b"content-length"]
            headers.append((b"content-length", str(len(body)).encode()))
        await send({**start, "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    return send_translated


def _is_json(start: Message) -> bool:
    for name, value in start.get("headers", []):
        if name.lower() == b"content-type":
            return bytes(value).split(b";")[0].strip().lower() == b"application/json"
    return False
