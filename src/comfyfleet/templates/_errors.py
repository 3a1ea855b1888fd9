"""The errors of the templates package, each naming what was wrong and where.

Two moments can go wrong. Loading: a file that is not a template (`TemplateFileError`, naming
the file and the key), which the library lists as broken while the other templates still work.
Using: a name nobody defines (`TemplateNotFound`, listing the known ones) or a value a parameter
does not take (`ParameterError`, naming the parameter and the bound, or listing the known
parameters for an unknown one).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from comfyfleet.errors import ComfyfleetError


class TemplateError(ComfyfleetError):
    """Base of every error of the templates package."""


class TemplateFileError(TemplateError):
    """A template file that cannot be loaded. `file` is where it came from, `key` the dotted
    path of the offending entry (`parameters.steps.maximum`), or None for the whole file."""

    def __init__(self, file: str, key: str | None, problem: str) -> None:
        where = f"{file}: {key}" if key else file
        super().__init__(f"{where}: {problem}")
        self.file = file
        self.key = key
        self.problem = problem


class TemplateNotFound(TemplateError):
    """No template has that name; `known` lists those that do."""

    def __init__(self, name: str, known: Sequence[str]) -> None:
        shown = ", ".join(known) or "none"
        super().__init__(
            f"no template named '{name}' (known: {shown})",
            hint="put NAME.yaml in the workspace's templates/ folder or one in templates.folders",
        )
        self.name = name
        self.known = list(known)


class ParameterError(TemplateError):
    """A parameter value the template does not take. `parameter` names it (None when the
    parameters as a whole are wrong), `bound` holds what was broken (`{"maximum": 150}`), and
    `known` lists the template's parameters when the name itself is unknown."""

    def __init__(
        self,
        message: str,
        *,
        parameter: str | None,
        bound: Mapping[str, Any] | None = None,
        known: Sequence[str] | None = None,
    ) -> None:
        super().__init__(message)
        self.parameter = parameter
        self.bound = dict(bound or {})
        self.known = None if known is None else list(known)

    def details(self) -> dict[str, Any]:
        """What an API answer's `details` carries: the parameter, the bound, the known names."""
        out: dict[str, Any] = {"parameter": self.parameter, **self.bound}
        if self.known is not None:
            out["known"] = self.known
        return out
