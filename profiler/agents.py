"""`--device` -> a `DeviceAgent`: `local` is this host; anything else goes to the ADB agent.

The profiler only ever talks to the `device_agents.types.DeviceAgent` protocol, so a new
kind of device is a new factory here, not a change to the build loop.
"""
from __future__ import annotations

from device_agents.types import AgentError

LOCAL = "local"


def open_agent(device: str, runtime: str | None = None, **kwargs):
    """Agent for `device`: ``local`` (this host, `device_agents.local.LocalAgent`) or a phone spec
    handed to `device_agents.adb_agent.open_agent(device, runtime=..., **kwargs)` (serial,
    ``usb:<serial>``, ``tcp:<host>:<port>``, ... as that module documents).

    Raises `AgentError` (one line) when the spec is empty or ADB support is not available.
    """
    device = (device or "").strip()
    if not device:
        raise AgentError("--device: expected 'local' or a phone (ADB serial or address), got nothing")
    if device == LOCAL:
        from device_agents.local import LocalAgent

        return LocalAgent(**kwargs)
    try:
        from device_agents.adb_agent import open_agent as open_adb_agent
    except ImportError as exc:
        raise AgentError(f"--device {device!r}: ADB devices are not available in this install "
                         f"({exc}); use --device local") from None
    return open_adb_agent(device, runtime=runtime, **kwargs)
