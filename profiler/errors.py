"""Problems a user can cause in `lutbuild` (bad option values, nothing to verify, ...).

The CLI prints `str(error)` as one line and exits with code 1; anything else is a bug and
stays a traceback. LUT-file problems are `lut_db.errors.LutError`, device problems
`device_agents.contract.AgentError`, unknown spaces `search.spaces.UnknownSpace`.
"""
from __future__ import annotations


class ProfilerError(Exception):
    """A user-fixable problem with a `lutbuild` request (one-line message, exit code 1)."""


class UnknownRuntime(ProfilerError):
    def __init__(self, runtime: str, known: tuple[str, ...]) -> None:
        super().__init__(f"--runtime: unknown runtime {runtime!r}, expected one of {', '.join(known)}")
