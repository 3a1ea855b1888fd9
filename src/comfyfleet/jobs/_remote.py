"""What a lane does for a server that shares no folder with comfyfleet (an attached one).

A supervised instance reads its inputs from, and writes its outputs to, this machine's folders,
so a lane hands it names and finds its files where it wrote them. An attached server has folders
of its own: before a graph is submitted, the stored assets it names are uploaded to it
(`POST /upload/image`, same folder and name), and after it ran, every output file of the job is
downloaded from it (`GET /view`) into this machine's output folder, from where it is published
like any other job's. Its model files are its own too, so nothing is fetched for it: the models
a graph names must already be there. Whether it has comfyfleet's runtime extension (the node
that confines a computed `filename_prefix`) is asked once, by the first graph that needs it.
"""

from __future__ import annotations

import asyncio
import os
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from comfyfleet.comfy import ComfyClient
from comfyfleet.jobs._confine import (
    PREFIX_NODE,
    escaping_path,
    has_linked_prefix,
    namespace_outputs,
)
from comfyfleet.jobs._outputs import JobOutput


@dataclass(frozen=True)
class RemoteFolders:
    """This machine's folders, as far as servers without them need them. None: not staged
    (a dispatcher in front of a store alone, as the unit tests run it)."""

    input_dir: Path | None = None
    output_dir: Path | None = None
    assets_folder: str = "comfyfleet-assets"
    """The input sub-folder where stored assets live (the `assets` package names it)."""


class RemoteServer:
    """One attached server's side of a lane: its client, and what was learnt about it."""

    def __init__(self, folders: RemoteFolders, client: ComfyClient) -> None:
        self.folders = folders
        self.client = client
        self._prefix_node: bool | None = None

    async def has_prefix_node(self) -> bool:
        """Whether the server loads comfyfleet's runtime extension (asked once)."""
        if self._prefix_node is None:
            self._prefix_node = bool(await self.client.object_info(PREFIX_NODE))
        return self._prefix_node

    async def graph_for(self, workflow: Mapping[str, Any], job_id: str) -> dict[str, Any]:
        """The graph to submit, its outputs confined to the job's folder (with what the server
        has for that), once the assets it names are on the server."""
        linked = has_linked_prefix(workflow)
        prefix_node = not linked or await self.has_prefix_node()
        graph = namespace_outputs(workflow, job_id, prefix_node=prefix_node)
        await self.stage_inputs(graph)
        return graph

    def asset_inputs(self, workflow: Mapping[str, Any]) -> list[str]:
        """The input values that name a stored asset (`<assets folder>/<file>`)."""
        marker = self.folders.assets_folder + "/"
        found = {
            value
            for node in workflow.values()
            for value in (node.get("inputs") or {}).values()
            if isinstance(value, str) and value.startswith(marker) and escaping_path(value) is None
        }
        return sorted(found)

    async def stage_inputs(self, workflow: Mapping[str, Any]) -> None:
        """Upload the assets the graph names; one missing here is left for ComfyUI to report,
        as a supervised instance would."""
        if self.folders.input_dir is None:
            return
        for value in self.asset_inputs(workflow):
            path = self.folders.input_dir / Path(*PurePosixPath(value).parts)
            if not path.is_file():
                continue
            data = await asyncio.to_thread(path.read_bytes)
            folder, _, name = value.rpartition("/")
            await self.client.upload_input(name, data, subfolder=folder)

    async def fetch_outputs(self, job_id: str, outputs: list[JobOutput]) -> None:
        """Download each output file under the job's folder to where a supervised instance
        would have written it. Raises ComfyError when the server cannot give it."""
        if self.folders.output_dir is None:
            return
        for output in outputs:
            relative = output.path
            if relative is None or escaping_path(relative) is not None:
                continue
            data = await self.client.view(
                str(output.filename), output.subfolder or "", str(output.type)
            )
            target = self.folders.output_dir / job_id / Path(*PurePosixPath(relative).parts)
            await asyncio.to_thread(_write_atomically, target, data)


def _write_atomically(target: Path, data: bytes) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    handle, temp = tempfile.mkstemp(dir=target.parent, prefix=".part-")
    try:
        with os.fdopen(handle, "wb") as file:
            file.write(data)
        os.replace(temp, target)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise
