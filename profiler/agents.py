"""`--device` -> a `DeviceAgent`: `local` is this host; anything else goes to the ADB agent.

The profiler only ever talks to the `device_agents.contract.DeviceAgent` protocol, so a new
kind of device is a new factory here, not a change to the build loop.
"""
from __future__ import annotations

from pathlib import Path
from collections.abc import Sequence

from device_agents.adb_agent import open_agent as open_adb_agent
from device_agents.adb_transport import check_serial
from device_agents.contract import AgentError
from device_agents.local import LocalAgent

from .runtimes import DEFAULT_CACHE_DIR

LOCAL = "local"
RUNNERS = ("tool", "python")  # on the phone: the vendor benchmark binary, or runner.py with python3
#: Phone-only options of `open_agent`; given for `--device local` they are a user error.
PHONE_OPTIONS = ("binary", "transport", "key_path", "workdir", "runner", "auth_timeout_s", "connect_tries",
                 "backoff_s", "batch_tries", "settle_max_s", "cpu_core")

#: (flag, keyword, values that are fine for --device local) of the phone options a user types.
_USER_PHONE_FLAGS = (("--benchmark-binary", "binary", (None,)), ("--adb-key", "key_path", (None,)),
                     ("--transport", "transport", (None, "auto")), ("--runner", "runner", (None, "python")))


def default_workdir(cache_dir: str | Path) -> Path:
    """Host folder for what the phones' batches pull back (results files, the batch script)."""
    return Path(cache_dir).expanduser() / "adb-work"


def open_agent(device: str, runtime: str | None = None, **kwargs):
    """Agent for `device`: ``local`` (this host, `device_agents.local.LocalAgent`) or a phone
    (ADB serial or ``host:port``) handed to `device_agents.adb_agent.open_agent`.

    Phone keyword arguments: `binary` (the Android `benchmark_model` /
    `onnxruntime_perf_test`; None: the Python runner), `runner` ("tool" or "python": checked
    against `binary`), `transport` (auto, adb-shell, adb-server), `key_path`, `workdir`
    (default: `default_workdir(DEFAULT_CACHE_DIR)`), `auth_timeout_s` and the `AdbAgent`
    options. Raises `AgentError` (one line, naming the device) when the spec is empty or
    malformed, or the phone cannot be reached or has not authorized this computer.
    """
    device = (device or "").strip()
    if not device:
        raise AgentError("--device: expected 'local' or a phone (ADB serial or address), got nothing")
    if device == LOCAL:
        given = [flag for flag, key, ok in _USER_PHONE_FLAGS if kwargs.get(key) not in ok]
        if given:
            raise AgentError(f"--device local: {', '.join(given)} only apply to phones")
        return LocalAgent(**{k: v for k, v in kwargs.items() if k not in PHONE_OPTIONS})
    check_serial(device)
    kwargs = {k: v for k, v in kwargs.items() if v is not None}
    runner = kwargs.pop("runner", None)
    if runner not in (None, *RUNNERS):
        raise AgentError(f"--runner: unknown runner {runner!r}, expected one of {', '.join(RUNNERS)}")
    if runner == "tool" and not kwargs.get("binary"):
        raise AgentError("--runner tool needs --benchmark-binary (the Android benchmark_model or "
                         "onnxruntime_perf_test)")
    if runner == "python" and kwargs.get("binary"):
        raise AgentError("--runner python runs runner.py on the phone: drop --benchmark-binary, or use --runner tool")
    if "workdir" not in kwargs:
        kwargs["workdir"] = default_workdir(DEFAULT_CACHE_DIR)
    kwargs["workdir"] = Path(kwargs["workdir"]).expanduser()
    try:
        return open_adb_agent(device, runtime=runtime, **kwargs)
    except AgentError as exc:
        raise AgentError(name_device(device, str(exc))) from exc


def open_agents(devices: Sequence[str], runtime: str | None = None, **kwargs) -> list:
    """One agent per `--device`, all connected, or none: the first failure closes the
    others and raises (so a build with a phone that is unauthorized, unreachable or
    misnamed stops before the LUT file is touched)."""
    devices = [(d or "").strip() for d in devices]
    seen: set[str] = set()
    for d in devices:
        if d in seen:
            raise AgentError(f"--device {d!r} is given twice")
        seen.add(d)
    agents = []
    try:
        for d in devices:
            agents.append(open_agent(d, runtime, **kwargs))
    except BaseException:
        close_agents(agents)
        raise
    return agents


def close_agents(agents) -> None:
    for agent in agents:
        try:
            agent.close()
        except Exception:  # closing a dead connection: nothing left to release
            pass


def device_label(agent) -> str:
    """How messages name a device: the `--device` spec of a phone, `local` for this host."""
    shell = getattr(agent, "shell", None)
    return getattr(shell, "serial", None) or LOCAL


def name_device(device: str, message: str) -> str:
    """`message` as one line that starts with the device's name."""
    message = " ".join(message.split())
    return message if message.startswith(f"{device}:") else f"{device}: {message}"
