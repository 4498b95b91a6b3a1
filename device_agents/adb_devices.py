"""`lutbuild devices`: which phones are reachable, and is this computer authorized on each.

From the adb server when one is running (it already knows every USB/TCP phone), plus the
`host:port`s the user names, reached directly with adb-shell.
"""
from __future__ import annotations

import shutil
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from .adb_keys import load_signers
from .adb_transport import (
    AdbServerTransport,
    AdbShellTransport,
    DeviceShell,
    adb_server_running,
    check_serial,
    list_server_devices,
)
from .contract import AgentError

_PROPS = ("ro.product.model", "ro.soc.model", "ro.board.platform", "ro.build.version.release",
          "ro.product.cpu.abi")


@dataclass(frozen=True)
class DeviceListing:
    serial: str
    state: str  # "device", "unauthorized", "offline", "unreachable"
    authorized: bool
    model: str = ""
    soc: str = ""
    android: str = ""
    via: str = ""  # "adb-server" or "adb-shell"
    note: str = ""  # why a device could not be queried, one line
    abi: str = ""  # ro.product.cpu.abi: what --benchmark-binary must be built for


def _describe(shell: DeviceShell, via: str) -> DeviceListing:
    out, _ = shell.shell("; ".join(f"echo {p}=$(getprop {p})" for p in _PROPS), 30.0)
    props = dict(line.split("=", 1) for line in out.splitlines() if "=" in line)
    return DeviceListing(shell.serial, "device", True, props.get("ro.product.model", ""),
                         props.get("ro.soc.model") or props.get("ro.board.platform", ""),
                         props.get("ro.build.version.release", ""), via, abi=props.get("ro.product.cpu.abi", ""))


def list_devices(specs: Iterable[str] = (), *, key_path: Path | str | None = None, adb: str | None = None,
                 auth_timeout_s: float = 5.0) -> list[DeviceListing]:
    listings: list[DeviceListing] = []
    adb = adb or shutil.which("adb")
    if adb and adb_server_running():
        for d in list_server_devices(adb):
            if d.state != "device":
                listings.append(DeviceListing(d.serial, d.state, d.state != "unauthorized",
                                              d.details.get("model", ""), via="adb-server"))
                continue
            try:
                listings.append(_describe(AdbServerTransport(d.serial, adb=adb, connect_tries=1), "adb-server"))
            except AgentError as e:
                listings.append(DeviceListing(d.serial, "offline", True, via="adb-server", note=str(e)))
    seen = {item.serial for item in listings}
    for spec in specs:
        if spec in seen:
            continue
        seen.add(spec)
        try:
            check_serial(spec)
        except AgentError as e:
            listings.append(DeviceListing(spec, "invalid", False, via="", note=str(e)))
            continue
        try:
            shell = AdbShellTransport(spec, load_signers(key_path), connect_tries=1,
                                      auth_timeout_s=auth_timeout_s)
        except AgentError as e:
            unauthorized = "has not authorized" in str(e)
            listings.append(DeviceListing(spec, "unauthorized" if unauthorized else "unreachable",
                                          not unauthorized, via="adb-shell", note=str(e)))
            continue
        try:
            listings.append(_describe(shell, "adb-shell"))
        except AgentError as e:  # connected, then lost it
            listings.append(DeviceListing(spec, "offline", True, via="adb-shell", note=str(e)))
        finally:
            shell.close()
    return listings
