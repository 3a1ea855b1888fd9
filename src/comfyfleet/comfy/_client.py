"""An async HTTP client for one ComfyUI instance.

It speaks only the handful of endpoints a fleet needs (queue a prompt, wait for its history entry,
fetch its files, interrupt, free memory) and turns every failure into a :class:`ComfyError`, so
the supervisor and the API never see a raw httpx exception. The transport is injectable so tests
(and anything that wants a different network stack) never have to patch.
"""

from __future__ import annotations

import asyncio
import json
import time
from types import TracebackType
from typing import Any
from urllib.parse import quote, urlencode, urlsplit

import httpx

from comfyfleet.comfy._errors import (
    ComfyProtocolError,
    ComfyUnavailable,
    PromptRejected,
    PromptTimeout,
    excerpt,
)
from comfyfleet.comfy._results import PromptResult, history_result
from comfyfleet.comfy._wire import Answer, Http11, WireError

LARGE_PROMPT_NODES = 2000
"""Graphs with more nodes than this are encoded in a worker thread."""


def _strict_json(payload: Any) -> bytes:
    """What ComfyUI can read back, or an error: ValueError for NaN and Infinity (which JSON has
    no words for), UnicodeEncodeError for a lone surrogate."""
    text = json.dumps(payload, ensure_ascii=False, allow_nan=False, separators=(",", ":"))
    return text.encode("utf-8")


class ComfyClient:
    """Talks HTTP to the ComfyUI at `base_url`; use as `async with ComfyClient(...) as c:`.

    Over plain http (every instance the fleet runs) requests go through a lean HTTP/1.1 client
    (`_wire`: a fleet sends several requests per job, and httpx's CPU per request is taken from
    the graphs on a machine whose cores run the instances too); uploads, https, and an injected
    transport go through httpx."""

    def __init__(
        self,
        base_url: str,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
        timeout: float = 30.0,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        # trust_env=False: the instances are ours and local; a proxy from the environment would
        # only break the connection to them.
        self._http = httpx.AsyncClient(
            base_url=self.base_url, transport=transport, timeout=timeout, trust_env=False
        )
        self._has_jobs_api: bool | None = None  # unknown until the first cancel
        self._wire: Http11 | None = None
        self._prefix = ""
        url = urlsplit(self.base_url)
        if transport is None and url.scheme == "http" and url.hostname:
            self._prefix = url.path
            self._wire = Http11(url.hostname, url.port or 80, timeout=timeout, authority=url.netloc)

    async def __aenter__(self) -> ComfyClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the connection pool; the client is unusable afterwards."""
        if self._wire is not None:
            await self._wire.aclose()
        await self._http.aclose()

    # -- reading state ---------------------------------------------------------------------

    async def system_stats(self) -> dict[str, Any]:
        """GET /system_stats: versions, RAM and devices; also the cheapest liveness probe."""
        return await self._get_object("/system_stats")

    async def comfyui_version(self) -> str | None:
        """The ComfyUI version the instance reports, or None when it does not say."""
        system = (await self.system_stats()).get("system")
        version = system.get("comfyui_version") if isinstance(system, dict) else None
        return str(version) if version is not None else None

    async def queue_remaining(self) -> int:
        """Prompts queued plus running, as ComfyUI counts them (GET /prompt)."""
        data = await self._get_object("/prompt")
        exec_info = data.get("exec_info")
        remaining = exec_info.get("queue_remaining") if isinstance(exec_info, dict) else None
        if not isinstance(remaining, int):
            raise self._protocol("GET /prompt has no exec_info.queue_remaining", 200, str(data))
        return remaining

    async def object_info(self, node_class: str | None = None) -> dict[str, Any]:
        """GET /object_info: every node class this instance can run, with its inputs; with
        `node_class`, only that one (an empty object when the instance does not know it)."""
        if node_class is None:
            return await self._get_object("/object_info")
        return await self._get_object(f"/object_info/{quote(node_class, safe='')}")

    async def history(self, prompt_id: str) -> dict[str, Any] | None:
        """The history entry of one prompt, or None while it is queued, running, or unknown.

        ComfyUI answers `{}` in all three cases, so they cannot be told apart here.
        """
        data = await self._get_object(f"/history/{prompt_id}")
        entry = data.get(prompt_id)
        return entry if isinstance(entry, dict) else None

    async def history_when_written(self, prompt_id: str, limit_s: float = 10.0) -> dict[str, Any]:
        """The history entry of a prompt that ended. ComfyUI sends `execution_success` just
        before it files the entry, so it can be missing for a moment: ask again briefly
        (ComfyUnavailable after `limit_s`) instead of losing the outputs."""
        deadline = time.monotonic() + limit_s
        delay = 0.002
        while True:
            entry = await self.history(prompt_id)
            if entry is not None and "outputs" in entry:
                return entry
            if time.monotonic() > deadline:
                raise ComfyUnavailable(f"no history for prompt {prompt_id} after {limit_s:g}s")
            await asyncio.sleep(delay)
            delay = min(delay * 2, 0.1)

    # -- running prompts -------------------------------------------------------------------

    async def submit(
        self,
        prompt: dict[str, Any],
        *,
        client_id: str | None = None,
        prompt_id: str | None = None,
        extra_data: dict[str, Any] | None = None,
    ) -> str:
        """Queue an API-format graph and return its prompt id.

        Passing our own `prompt_id` lets a caller record the id before the request, so a crash
        between queueing and recording cannot lose track of the job. `client_id` routes the
        WebSocket progress events to that client. `extra_data` goes with the prompt as ComfyUI
        takes it (`extra_pnginfo`, which SaveImage writes into the PNG, for one).
        """
        payload: dict[str, Any] = {"prompt": prompt}
        if client_id is not None:
            payload["client_id"] = client_id
        if prompt_id is not None:
            payload["prompt_id"] = prompt_id
        if extra_data:
            payload["extra_data"] = extra_data
        if len(prompt) > LARGE_PROMPT_NODES:  # thousands of nodes: encoded off the event loop
            encoded = await asyncio.to_thread(_strict_json, payload)
        else:
            encoded = _strict_json(payload)
        response = await self._send("POST", "/prompt", raw=encoded)
        if response.status_code == 400:
            data = self._decode(response)
            if isinstance(data, dict):
                raise PromptRejected.from_response(response.text, data, prompt)
        data = self._object(self._ok(response))
        queued_id = data.get("prompt_id")
        if not isinstance(queued_id, str):
            raise self._protocol("POST /prompt answered without a prompt_id", 200, response.text)
        return queued_id

    async def wait(self, prompt_id: str, *, timeout: float, poll: float = 0.05) -> PromptResult:
        """Poll the history until the prompt is done; raise PromptFailed if it failed.

        Polling (rather than the WebSocket) is enough for a single job and survives a reconnect;
        the interval is short because a finished prompt is one cheap GET away.
        """
        deadline = time.monotonic() + timeout
        while True:
            entry = await self.history(prompt_id)
            if entry is not None:
                return history_result(prompt_id, entry)
            if time.monotonic() >= deadline:
                raise PromptTimeout(
                    f"prompt {prompt_id} did not finish on {self.base_url} within {timeout:g}s",
                    prompt_id=prompt_id,
                    hint="it may still be queued or running; interrupt it or wait longer",
                )
            await asyncio.sleep(poll)

    async def interrupt(self, prompt_id: str | None = None) -> None:
        """Stop the running prompt; with a prompt id, only if that prompt is the one running."""
        body = {} if prompt_id is None else {"prompt_id": prompt_id}
        self._ok(await self._send("POST", "/interrupt", body=body))

    async def cancel(self, prompt_id: str) -> None:
        """Take a prompt out of the queue, or interrupt it if it is the one running; a no-op for
        one that ended or that the instance does not know.

        Newer ComfyUI has a jobs API whose `POST /api/jobs/{id}/cancel` does both in one call,
        checked against the running prompt under ComfyUI's own lock; it is used where the
        instance has it. An instance without it (0.3.x answers 404) gets the two older calls,
        a queue delete and an interrupt that names the prompt, and is not asked again.
        """
        if self._has_jobs_api is not False:
            path = f"/api/jobs/{quote(prompt_id, safe='')}/cancel"
            response = await self._send("POST", path, body={})
            if response.status_code not in (404, 405):
                self._ok(response)
                self._has_jobs_api = True
                return
            self._has_jobs_api = False
        await self.delete_queued([prompt_id])
        await self.interrupt(prompt_id)

    async def delete_queued(self, prompt_ids: list[str]) -> None:
        """Drop prompts that have not started yet; running or unknown ids are ignored."""
        self._ok(await self._send("POST", "/queue", body={"delete": list(prompt_ids)}))

    async def free(self, unload_models: bool = True, free_memory: bool = True) -> None:
        """Ask ComfyUI to unload models and/or free cached memory once it is idle."""
        body = {"unload_models": unload_models, "free_memory": free_memory}
        self._ok(await self._send("POST", "/free", body=body))

    async def view(self, filename: str, subfolder: str = "", type: str = "output") -> bytes:
        """Download one output (or input/temp) file as ComfyUI stores it."""
        params = {"filename": filename, "subfolder": subfolder, "type": type}
        return self._ok(await self._send("GET", "/view", params=params)).content

    async def upload_input(self, name: str, data: bytes, subfolder: str = "") -> None:
        """Put a file into the instance's input folder (`POST /upload/image`, which takes any
        file type), replacing one of the same name: for servers that share no folder with us."""
        form = {"subfolder": subfolder, "type": "input", "overwrite": "true"}
        files = {"image": (name, data, "application/octet-stream")}
        self._ok(await self._send("POST", "/upload/image", form=form, files=files))

    # -- plumbing --------------------------------------------------------------------------

    async def _send(
        self,
        method: str,
        path: str,
        *,
        body: Any = None,
        params: dict[str, str] | None = None,
        form: dict[str, str] | None = None,
        files: dict[str, tuple[str, bytes, str]] | None = None,
        raw: bytes | None = None,
    ) -> Answer:
        try:
            if self._wire is not None and files is None:
                response = await self._send_wire(method, path, body=body, params=params, raw=raw)
            else:
                response = await self._send_httpx(
                    method, path, body=body, params=params, form=form, files=files, raw=raw
                )
        except (httpx.TransportError, WireError) as exc:
            reason = str(exc) or type(exc).__name__
            raise ComfyUnavailable(
                f"ComfyUI at {self.base_url} is not answering: {reason}",
                hint="is the instance running and listening on that address?",
            ) from exc
        if response.status_code >= 500:
            raise self._protocol(f"{method} {path} failed", response.status_code, response.text)
        return response

    async def _send_wire(
        self,
        method: str,
        path: str,
        *,
        body: Any,
        params: dict[str, str] | None,
        raw: bytes | None,
    ) -> Answer:
        assert self._wire is not None
        target = self._prefix + path + (f"?{urlencode(params)}" if params else "")
        if raw is None and body is not None:
            raw = json.dumps(body).encode()
        if raw is None:
            return await self._wire.request(method, target)
        return await self._wire.request(method, target, raw, "application/json")

    async def _send_httpx(
        self,
        method: str,
        path: str,
        *,
        body: Any,
        params: dict[str, str] | None,
        form: dict[str, str] | None,
        files: dict[str, tuple[str, bytes, str]] | None,
        raw: bytes | None,
    ) -> Answer:
        if files is not None:
            response = await self._http.request(method, path, data=form, files=files)
        elif raw is not None:
            headers = {"content-type": "application/json"}
            response = await self._http.request(method, path, content=raw, headers=headers)
        else:
            response = await self._http.request(method, path, json=body, params=params)
        return Answer(response.status_code, response.content, method, path)

    def _ok(self, response: Answer) -> Answer:
        if response.status_code != 200:
            where = f"{response.method} {response.path}"
            raise self._protocol(f"{where} failed", response.status_code, response.text)
        return response

    def _decode(self, response: Answer) -> Any:
        try:
            return json.loads(response.content)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            where = f"{response.method} {response.path}"
            raise self._protocol(
                f"{where} answered with non-JSON", response.status_code, response.text
            ) from exc

    def _object(self, response: Answer) -> dict[str, Any]:
        data = self._decode(response)
        if not isinstance(data, dict):
            where = f"{response.method} {response.path}"
            raise self._protocol(
                f"{where} answered with JSON that is not an object",
                response.status_code,
                response.text,
            )
        return data

    async def _get_object(self, path: str) -> dict[str, Any]:
        return self._object(self._ok(await self._send("GET", path)))

    def _protocol(self, what: str, status: int | None, body: str) -> ComfyProtocolError:
        message = f"ComfyUI at {self.base_url}: {what} (HTTP {status})"
        if body.strip():
            message += f": {excerpt(body, 120)!r}"
        return ComfyProtocolError(message, status=status, body=body)
