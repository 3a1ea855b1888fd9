"""The exception tree of comfyfleet.

Every error that reaches a user is a :class:`ComfyfleetError`: a one-line message that says what
went wrong and where, plus an optional hint that says what to do about it. The CLI prints both and
exits non-zero; anything else escaping is a bug.
"""

from __future__ import annotations


class ComfyfleetError(Exception):
    """Base of every error comfyfleet raises on purpose."""

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return self.message if self.hint is None else f"{self.message} ({self.hint})"


class ConfigError(ComfyfleetError):
    """The settings file, an environment variable or a flag has a bad value."""


class WorkspaceError(ComfyfleetError):
    """The workspace is missing, unwritable, or not installed."""


class InstallError(ComfyfleetError):
    """An install step failed; the workspace is left marked as not installed."""


class SourceError(InstallError):
    """A ComfyUI source could not be resolved or fetched."""


class TorchError(InstallError):
    """No usable torch could be chosen or installed for this machine."""


class CustomNodeError(InstallError):
    """A custom node from the nodes list could not be installed."""


class LockError(InstallError):
    """The lock file is unreadable, or `--locked` found the environment drifting from it."""


class GpuError(ComfyfleetError):
    """GPUs were asked for that this machine does not have."""


class SupervisorError(ComfyfleetError):
    """The supervisor could not start, reach, or stop instances."""


class PortInUseError(SupervisorError):
    """A port an instance needs is taken and no other may be chosen."""


class NotRunningError(SupervisorError):
    """No supervisor is running for this workspace."""
