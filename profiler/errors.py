"""Problems a user can cause in `lutbuild` (bad option values, nothing to verify, ...).

The CLI prints `str(error)` as one line and exits with code 1 (`profiler.cli_runner`);
anything else is a bug and stays a traceback. Every user error derives from
`lut_db.errors.UserError` (LUT-file problems are its `LutError`) except device problems,
`device_agents.contract.AgentError`.
"""
from __future__ import annotations

from lut_db.errors import UserError


class ProfilerError(UserError):
    """A user-fixable problem with a `lutbuild` request (one-line message, exit code 1)."""


class UnknownRuntime(ProfilerError):
    def __init__(self, runtime: str, known: tuple[str, ...]) -> None:
        super().__init__(f"--runtime: unknown runtime {runtime!r}, expected one of {', '.join(known)}")
