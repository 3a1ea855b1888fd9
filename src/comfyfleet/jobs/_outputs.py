"""A job's outputs, and turning a finished prompt's history into them: every file of every type.

An output is a :class:`JobOutput`: a file ComfyUI wrote (`filename`, `subfolder`, `type`; once
stored also `url`, `key`, `content_type`, `size`, `sha256`), a text, or what a model install
downloaded. The lane makes them, the output publisher completes them, the stores keep them as
a JSON list, and the views and facades read their attributes. `from_json` and `to_json` are the
one place they cross to and from JSON; what a stored output holds that this version does not
know (a field of a newer one, a value of an unexpected type) is kept in `others`, unchanged.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from typing import Any
from urllib.parse import quote

from comfyfleet.comfy import output_items

_FILE_KEYS = frozenset({"filename", "type"})


@dataclass(frozen=True)
class JobOutput:
    """One output of a job. Every field is optional: which ones are set depends on its kind."""

    node_id: str | None = None
    """The graph node that made it."""
    kind: str | None = None
    """What ComfyUI listed it under (`images`, `gifs`, `audio`, ...), `text`, or `model`."""
    file: str | None = None
    """A model install: the file name it downloaded."""
    filename: str | None = None
    subfolder: str | None = None
    type: str | None = None
    """ComfyUI's folder type (`output`, `temp`), or `text`."""
    text: str | None = None
    path: str | None = None
    """Under the job's own folder: where `/v1/outputs/{job}/{path}` serves it."""
    url: str | None = None
    store_s: float | None = None
    """How long storing it took."""
    key: str | None = None
    """Its key in the output store."""
    content_type: str | None = None
    size: int | None = None
    sha256: str | None = None
    skipped: bool | None = None
    """A model install: the file was there already."""
    others: Mapping[str, Any] = field(default_factory=dict)
    """What the stored output holds beyond the fields above (or did not parse into them)."""

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> JobOutput:
        # Exact types (a JSON true is no size): what the stores read back on every row.
        known = {k: v for k, v in data.items() if type(v) in _TYPES.get(k, ())}
        if len(known) == len(data):
            return cls(**known)
        others = {k: v for k, v in data.items() if k not in known}
        return cls(**known, others=others)

    def to_json(self) -> dict[str, Any]:
        """The JSON object stored and shown: its fields in a fixed order (a kept value of a
        field's name in that field's place), then the others."""
        out: dict[str, Any] = {}
        for name in _TYPES:
            value = getattr(self, name)
            if value is not None:
                out[name] = value
            elif name in self.others:
                out[name] = self.others[name]
        for name, value in self.others.items():
            out.setdefault(name, value)
        return out


_SPECIAL: dict[str, frozenset[type]] = {
    "store_s": frozenset({int, float}),
    "size": frozenset({int}),
    "skipped": frozenset({bool}),
}
_TYPES = {
    f.name: _SPECIAL.get(f.name, frozenset({str})) for f in fields(JobOutput) if f.name != "others"
}
"""The fields in the order `to_json` writes them (the order the lane, then the publisher, add
them), and the JSON type each takes."""


def outputs_from_json(data: Any) -> list[JobOutput]:
    """A stored list of outputs (anything else that is not an object reads as no output)."""
    if not isinstance(data, list):
        return []
    return [JobOutput.from_json(item) for item in data if isinstance(item, Mapping)]


def outputs_to_json(outputs: list[JobOutput]) -> list[dict[str, Any]]:
    return [output.to_json() for output in outputs]


def outputs_from_history(job_id: str, entry: dict[str, Any]) -> list[JobOutput]:
    """Files (images, gifs, video, audio, 3d ...) and texts from every output node.

    Files written under the job's own prefix are addressed by `/v1/outputs/{job}/{path}`.
    """
    found: list[JobOutput] = []
    for node_id, kind, item in output_items(entry.get("outputs")):
        if isinstance(item, dict) and _FILE_KEYS <= set(item):
            found.append(_file(job_id, node_id, kind, item))
        elif isinstance(item, str) and kind == "text":
            found.append(JobOutput(node_id=node_id, kind="text", text=item))
    return found


def _file(job_id: str, node_id: str, kind: str, item: dict[str, Any]) -> JobOutput:
    subfolder = str(item.get("subfolder") or "")
    filename = str(item["filename"])
    out = JobOutput(
        node_id=node_id, kind=kind, filename=filename, subfolder=subfolder, type=str(item["type"])
    )
    if item["type"] == "output" and (subfolder == job_id or subfolder.startswith(job_id + "/")):
        relative = (subfolder[len(job_id) :].strip("/") + "/" + filename).lstrip("/")
        url = f"/v1/outputs/{quote(job_id)}/{quote(relative)}"
        out = replace(out, path=relative, url=url)
    return out
