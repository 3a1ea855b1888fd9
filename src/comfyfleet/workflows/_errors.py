"""The one error of a conversion: which node could not be turned into the API format, and why."""

from __future__ import annotations

from comfyfleet.errors import ComfyfleetError


class ConversionError(ComfyfleetError):
    """A UI-format workflow that cannot become an API-format graph.

    `node_id` is the node's id as the editor shows it (`12`, or `5:12` inside subgraph 5) and
    `class_type` its type; both are None where the workflow as a whole is at fault."""

    def __init__(
        self,
        reason: str,
        *,
        node_id: str | None = None,
        class_type: str | None = None,
        hint: str | None = None,
    ) -> None:
        where = ""
        if node_id is not None:
            where = f"node {node_id}" + (f" ({class_type})" if class_type else "") + ": "
        super().__init__(where + reason, hint=hint)
        self.reason = reason
        self.node_id = node_id
        self.class_type = class_type


class TooManyNodes(ConversionError):
    """Opened up (every subgraph instance and group node spelt out), the workflow has more nodes
    than the caller allows; `count` is how many were found before stopping."""

    def __init__(self, count: int, limit: int) -> None:
        super().__init__(f"the workflow opens up into more than {limit} nodes")
        self.count = count
        self.limit = limit
