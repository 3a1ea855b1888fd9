"""What `run` and `submit` are given, turned into the request body a route takes.

`run()` takes an API-format graph (a dict), a path to a JSON file holding one (a `Path`, a
string ending in `.json`, or the path of an existing file), or any other string: the name of a
template on the server. `params`
then means, for a template, its parameters; for a graph, inputs to set, named
`"<node id>.<input>"` (`{"6.text": "a cat"}`), each checked against the graph so a typo is an
error here rather than a job that quietly ignores it.

A parameter value that is a `pathlib.Path`, `bytes` or an `Asset` is a file: it is uploaded
first (the same bytes are stored once) and passed as `asset:<id>`, which every loader input
and every template image parameter accepts.
"""

from __future__ import annotations

import copy
import json
import mimetypes
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypedDict
from urllib.parse import quote

from comfyfleet.client._errors import ComfyfleetClientError
from comfyfleet.client._records import Asset

WorkflowInput = Mapping[str, Any] | str | os.PathLike[str]
"""A graph, a JSON file's path, or a template's name."""

_MEDIA_PREFIXES = ("image/", "video/", "audio/")


class JobOptions(TypedDict, total=False):
    """What a job may ask for besides its workflow (all optional)."""

    priority: int
    """Higher runs first (a 32-bit integer; default 0)."""
    max_attempts: int
    """Attempts when an instance dies under the job (1-10)."""
    webhook: str | Mapping[str, Any]
    """A URL, or `{"url", "events"}`: where the job's events are POSTed, signed."""
    storage: str
    """A storage target configured on the server."""
    convert: Mapping[str, Any]
    """`{"format": "webp" | "jpeg", "quality": 1-100}` for image outputs."""
    timeouts: Mapping[str, float]
    """`{"queued_s", "running_s"}`: fail the job past these."""
    job_id: str
    """A job id of the client's choosing (the same id and body is the same job)."""


_OPTION_FIELDS = {name: name for name in JobOptions.__annotations__} | {"job_id": "id"}


@dataclass(frozen=True)
class Target:
    """A resolved workflow input: a template's name, or a graph of our own copy."""

    template: str | None
    graph: dict[str, Any] | None

    @property
    def route(self) -> str:
        if self.template is None:
            return "/v1/jobs"
        return f"/v1/templates/{quote(self.template, safe='')}/jobs"


def resolve(workflow: WorkflowInput) -> Target:
    """The template or graph `workflow` stands for (a file is read now)."""
    if isinstance(workflow, Mapping):
        return Target(None, copy.deepcopy(dict(workflow)))
    if isinstance(workflow, str) and not _names_file(workflow):
        if not workflow.strip():
            raise ComfyfleetClientError("the template name is empty")
        return Target(workflow, None)
    if isinstance(workflow, os.PathLike | str):
        return Target(None, read_graph(Path(workflow)))
    raise TypeError(
        f"run() takes a graph (dict), a JSON file's path or a template name, not {workflow!r}"
    )


def _names_file(text: str) -> bool:
    """A string names a workflow file when it ends in `.json` or is an existing file."""
    return text.lower().endswith(".json") or os.path.isfile(text)


def read_graph(path: Path) -> dict[str, Any]:
    try:
        graph = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ComfyfleetClientError(f"cannot read workflow file {path}: {exc.strerror}") from exc
    except ValueError as exc:
        raise ComfyfleetClientError(f"workflow file {path} is not JSON: {exc}") from exc
    if not isinstance(graph, dict):
        raise ComfyfleetClientError(
            f"workflow file {path} holds a JSON {type(graph).__name__}, not a graph object"
        )
    return graph


def is_file_value(value: Any) -> bool:
    """Whether a parameter value is a file to upload first."""
    return isinstance(value, Path | bytes | bytearray | memoryview)


def plain_value(value: Any) -> Any:
    """A parameter value as sent: an asset as its `asset:<id>` reference."""
    return value.ref if isinstance(value, Asset) else value


def set_inputs(graph: dict[str, Any], values: Mapping[str, Any]) -> dict[str, Any]:
    """`graph` with each `"<node>.<input>"` of `values` set (the graph is ours: changed in
    place). An unknown node, or a key without a dot, is an error naming it."""
    for key, value in values.items():
        node_id, dot, name = key.partition(".")
        if not dot or not node_id or not name:
            raise ComfyfleetClientError(
                f"params for a workflow graph are '<node id>.<input>': {key!r} is not "
                "(template parameters go with a template's name)"
            )
        node = graph.get(node_id)
        if not isinstance(node, dict):
            known = ", ".join(sorted(graph)[:20])
            raise ComfyfleetClientError(
                f"params {key!r}: the workflow has no node '{node_id}' (its nodes: {known})"
            )
        inputs = node.setdefault("inputs", {})
        if not isinstance(inputs, dict):
            raise ComfyfleetClientError(f"params {key!r}: node {node_id} has no inputs object")
        inputs[name] = value
    return graph


def job_body(target: Target, values: Mapping[str, Any], options: JobOptions) -> dict[str, Any]:
    """The JSON body of the submit route `target.route`."""
    unknown = sorted(set(options) - set(_OPTION_FIELDS))
    if unknown:
        known = ", ".join(sorted(_OPTION_FIELDS))
        raise TypeError(f"unknown job options: {', '.join(unknown)} (known: {known})")
    body: dict[str, Any] = {}
    if target.graph is not None:
        body["workflow"] = set_inputs(target.graph, values)
    else:
        body["params"] = dict(values)
    for name, value in options.items():
        if name == "webhook" and isinstance(value, str):
            value = {"url": value}
        body[_OPTION_FIELDS[name]] = value
    return body


def upload_content(value: Any) -> tuple[bytes, str | None]:
    """The bytes of a file value, and its name when it has one."""
    if isinstance(value, Path):
        try:
            return value.read_bytes(), value.name
        except OSError as exc:
            raise ComfyfleetClientError(f"cannot read {value}: {exc.strerror}") from exc
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value), None
    raise TypeError(f"upload() takes a Path or bytes, not {type(value).__name__}")


def media_type(filename: str | None, content_type: str | None) -> str:
    """The Content-Type an upload goes with: the one given, else one guessed from the name
    when it is a media type, else octet-stream (the server sniffs the stored type anyway)."""
    if content_type:
        return content_type
    guessed = mimetypes.guess_type(filename)[0] if filename else None
    if guessed and guessed.startswith(_MEDIA_PREFIXES):
        return guessed
    return "application/octet-stream"
