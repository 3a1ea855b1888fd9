"""A finished job's outputs, in hand: bytes, files saved to a folder, or PIL images.

`run()` and `job.wait()` download every output file of a succeeded job (checking its sha256)
before they return, so a :class:`Result` needs no more network and reads the same from the
sync and the async client. Pillow is optional: `image()` imports it when called.
"""

from __future__ import annotations

import builtins
import io
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any

from comfyfleet.client._errors import ComfyfleetClientError
from comfyfleet.client._records import JobRecord

if TYPE_CHECKING:
    from PIL.Image import Image


@dataclass(frozen=True)
class Output:
    """One output of a job: a file (`name`, `content_type`, ...) or a text (`text`)."""

    node: str
    """The id of the node that produced it."""
    kind: str
    """What ComfyUI called it: `images`, `gifs`, `audio`, `video`, `text`, ..."""
    name: str | None = None
    """The file's name (None for a text)."""
    path: str | None = None
    """Its path inside the job's output folder (the name, below subfolders if any)."""
    url: str | None = None
    content_type: str | None = None
    size: int | None = None
    sha256: str | None = None
    text: str | None = None
    data: builtins.bytes | None = field(default=None, repr=False)
    """The file's content, once downloaded."""
    raw: dict[str, Any] = field(default_factory=dict, repr=False)

    @property
    def is_file(self) -> bool:
        return self.text is None

    def bytes(self) -> builtins.bytes:
        """The content (a text as UTF-8)."""
        if self.text is not None:
            return self.text.encode("utf-8")
        if self.data is None:
            raise ComfyfleetClientError(
                f"output {self.name!r} of node {self.node} was not downloaded "
                "(download=False, or no URL): fetch it with client.download(output)"
            )
        return self.data

    def save(self, folder: str | Path) -> Path:
        """Write the file under `folder` (its subfolders kept, created as needed); its path."""
        if self.text is not None:
            raise ComfyfleetClientError(f"output of node {self.node} is a text, not a file")
        target = Path(folder) / _safe_relative(self.path or self.name or "output")
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(self.bytes())
        return target

    def image(self) -> Image:
        """The file as a PIL image (needs Pillow: `pip install Pillow`)."""
        try:
            from PIL import Image as PILImage
        except ImportError as exc:
            raise ComfyfleetClientError(
                "Output.image() needs Pillow: pip install Pillow (or use bytes() / save())"
            ) from exc
        picture = PILImage.open(io.BytesIO(self.bytes()))
        picture.load()
        return picture

    @classmethod
    def from_dict(cls, data: dict[str, Any], content: builtins.bytes | None = None) -> Output:
        text = data.get("text")
        size = data.get("size")
        return cls(
            node=str(data.get("node_id") or ""),
            kind=str(data.get("kind") or ""),
            name=data.get("filename"),
            path=data.get("path"),
            url=data.get("url"),
            content_type=data.get("content_type"),
            size=size if isinstance(size, int) else None,
            sha256=data.get("sha256"),
            text=text if isinstance(text, str) else None,
            data=content,
            raw=data,
        )


@dataclass(frozen=True)
class Result:
    """A succeeded job: its record and its outputs."""

    job: JobRecord
    outputs: list[Output]

    @property
    def id(self) -> str:
        return self.job.id

    @property
    def files(self) -> list[Output]:
        """The outputs that are files (not texts)."""
        return [o for o in self.outputs if o.is_file]

    @property
    def texts(self) -> list[str]:
        return [o.text for o in self.outputs if o.text is not None]

    def save(self, folder: str | Path) -> list[Path]:
        """Write every file output under `folder`; their paths."""
        return [output.save(folder) for output in self.files]

    def images(self) -> list[Image]:
        """Every image output as a PIL image (needs Pillow)."""
        return [o.image() for o in self.files if (o.content_type or "").startswith("image/")]


def _safe_relative(path: str) -> Path:
    """A server-given relative path, kept inside the folder it is saved to."""
    parts = [p for p in PurePosixPath(path.replace("\\", "/")).parts if p not in ("", ".", "/")]
    if not parts or ".." in parts or any(":" in p for p in parts[:1]):
        parts = [PurePosixPath(path.replace("\\", "/")).name or "output"]
        if parts[0] in ("..", "."):
            parts = ["output"]
    return Path(*parts)
