"""Problems a user can cause with a LUT file, each with a one-line message, and the base
of every user error of both CLIs.

The CLIs print `str(error)` and exit with code 1; anything else is a bug and stays a
traceback. Every message names the file (or the layer and slice) and what was expected.
"""
from __future__ import annotations


class UserError(Exception):
    """A problem the user can fix (bad input, missing file, wrong option): one-line message.

    `lutbuild` and `nas-search` print it as ``<prog>: error: <message>`` and exit with code 1
    (`profiler.cli_runner`). It lives here, in the lowest layer, so every package can derive
    its own errors from it: `LutError`, `profiler.errors.ProfilerError`,
    `search.errors.SearchError`, `search.spaces.UnknownSpace`. (`device_agents` may not
    import `lut_db`, so its `AgentError` is the one other root the CLIs catch.)
    """


class LutError(UserError):
    """Base of every user-facing LUT problem (one-line message, exit code 1)."""


class NotALutDatabase(LutError):
    """The file is not SQLite, or is SQLite but was not written by netadaptv2."""


class SchemaTooNew(LutError):
    """The file was written by a newer netadaptv2 whose schema this version cannot read."""

    def __init__(self, path: str, found: int, supported: int) -> None:
        super().__init__(
            f"{path}: schema version {found} is newer than this netadaptv2 supports ({supported}); "
            "upgrade netadaptv2"
        )
        self.path, self.found, self.supported = path, found, supported


class UnknownSlice(LutError):
    """No row of the LUT belongs to the requested (device, runtime, options) slice."""

    def __init__(self, path: str, device_id: str, runtime: str, runtime_options: str,
                 present: list[str]) -> None:
        there = "; ".join(present) if present else "the LUT is empty"
        super().__init__(
            f"{path}: no measurements for device {device_id!r}, runtime {runtime!r}, "
            f"options {runtime_options!r}; slices present: {there}"
        )
        self.path, self.device_id, self.runtime, self.runtime_options = path, device_id, runtime, runtime_options


class MissingLatencyError(LutError):
    """A layer the caller needs has no latency in the slice (and could not be interpolated).

    Never answered with a silent zero: a network that looks free would win the search.
    """

    def __init__(self, key: str, device_id: str, runtime: str, runtime_options: str,
                 path: str = "", reason: str = "") -> None:
        where = f" in {path}" if path else ""
        why = f" ({reason})" if reason else ""
        super().__init__(
            f"no latency for layer {key} on device {device_id!r}, runtime {runtime!r}, "
            f"options {runtime_options!r}{where}{why}; measure it with "
            f"`lutbuild build ... --device {device_id}` or load the table with interpolate=True"
        )
        self.key, self.device_id, self.runtime, self.runtime_options = key, device_id, runtime, runtime_options
