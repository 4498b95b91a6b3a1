"""`python -m tests.adbd_endpoint --sandbox DIR [--port 5555] [--authorize KEY.pub ...]`

Runs the loopback adbd in the foreground until Ctrl-C; prints `host:port` first so a
script can `adb connect` to it.
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

from .server import Endpoint, Faults


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m tests.adbd_endpoint", description=__doc__)
    p.add_argument("--sandbox", type=Path, required=True, help="host folder that plays /data/local/tmp")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=0, help="0 picks a free port")
    p.add_argument("--authorize", type=Path, action="append",
                   help="adbkey.pub allowed to connect (repeatable); none given: no auth")
    p.add_argument("--model", default=None, help="ro.product.model to report")
    p.add_argument("--serial", default=None, help="ro.serialno to report")
    p.add_argument("--drop-on-shell-command", type=int, default=None)
    p.add_argument("--drop-after-sync-bytes", type=int, default=None)
    a = p.parse_args(argv)
    props = {}
    if a.model:
        props["ro.product.model"] = a.model
    if a.serial:
        props["ro.serialno"] = a.serial
    ep = Endpoint(a.sandbox, a.authorize, props=props, host=a.host, port=a.port,
                  faults=Faults(drop_on_shell_command=a.drop_on_shell_command,
                                drop_after_sync_bytes=a.drop_after_sync_bytes)).start()
    print(f"{ep.host}:{ep.port}", flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
    finally:
        ep.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
