"""The one error of media inputs, with a stable `code` the gateway maps to an HTTP answer.

Codes: `url_refused` (a scheme or an address the SSRF guard refuses), `url_unreachable`,
`url_not_found`, `input_too_large`, `bad_base64`, `asset_not_found`, `empty_input`,
`bad_input_path` (a loader file name that climbs out of the input folder).
"""

from __future__ import annotations

from comfyfleet.errors import ComfyfleetError
from comfyfleet.netguard import NetGuardError, TooManyRedirects

URL_REFUSED = "url_refused"
URL_UNREACHABLE = "url_unreachable"
URL_NOT_FOUND = "url_not_found"
INPUT_TOO_LARGE = "input_too_large"
BAD_BASE64 = "bad_base64"
ASSET_NOT_FOUND = "asset_not_found"
EMPTY_INPUT = "empty_input"
BAD_INPUT_PATH = "bad_input_path"


class MediaInputError(ComfyfleetError):
    """A media input that cannot be used. Once placed in a graph (:meth:`at`) the message starts
    with the node, its class and the input: `node 10 (LoadImage): input 'image': ...`."""

    def __init__(
        self,
        code: str,
        message: str,
        *,
        hint: str | None = None,
        node_id: str | None = None,
        class_type: str | None = None,
        input_name: str | None = None,
    ) -> None:
        super().__init__(message, hint=hint)
        self.code = code
        self.node_id = node_id
        self.class_type = class_type
        self.input_name = input_name

    @classmethod
    def from_guard(cls, exc: NetGuardError) -> MediaInputError:
        code = URL_UNREACHABLE if isinstance(exc, TooManyRedirects) else exc.code
        return cls(code, exc.message, hint=exc.hint)

    def at(self, node_id: str, class_type: str, input_name: str) -> MediaInputError:
        """The same error, placed at a node's input."""
        return type(self)(
            self.code,
            f"node {node_id} ({class_type}): input '{input_name}': {self.message}",
            hint=self.hint,
            node_id=node_id,
            class_type=class_type,
            input_name=input_name,
        )

    def details(self) -> dict[str, str | None]:
        return {"node_id": self.node_id, "class_type": self.class_type, "input": self.input_name}


class AssetNotFound(MediaInputError):
    """No stored asset has this id."""

    @classmethod
    def for_id(cls, asset_id: str) -> AssetNotFound:
        return cls(
            ASSET_NOT_FOUND,
            f"no asset {asset_id!r}",
            hint="upload it with POST /v1/assets and use the id it answers",
        )


def _size(count: int) -> str:
    if count >= 1024 * 1024:
        return f"{count / (1024 * 1024):.1f} MiB"
    return f"{count} bytes"


def too_large(limit: int, what: str = "the input") -> MediaInputError:
    return MediaInputError(
        INPUT_TOO_LARGE,
        f"{what} is larger than the limit of {_size(limit)}",
        hint="send a smaller file, or ask the operator to raise the limit",
    )
