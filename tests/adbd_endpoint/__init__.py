"""A loopback adbd for tests: `start_endpoint(sandbox, authorized_pubkeys) -> (host, port, stop)`.

Speaks the device side of ADB (CNXN/AUTH/OPEN/OKAY/WRTE/CLSE, `shell:` v1, `sync:` v1)
on 127.0.0.1, so adb-shell and Debian's `adb` client can be tested without a phone.
"""
from .server import DEFAULT_PROPS, Endpoint, Faults, start_endpoint

__all__ = ["DEFAULT_PROPS", "Endpoint", "Faults", "start_endpoint"]
