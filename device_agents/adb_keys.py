"""The RSA key pair a phone authorizes ("Allow USB debugging?"), kept where adb keeps it.

Sharing `~/.android/adbkey` with Google's adb means a phone that already trusts this
computer for `adb` also trusts lutbuild, and vice versa. The private key is created
0600 from the start (never world-readable, not even for an instant).
"""
from __future__ import annotations

import os
from pathlib import Path

from adb_shell.auth.keygen import keygen, write_public_keyfile
from adb_shell.auth.sign_pythonrsa import PythonRSASigner

from .contract import AgentError


def default_key_path() -> Path:
    """`$ANDROID_USER_HOME/adbkey` (adb's own override), else `~/.android/adbkey`."""
    home = os.environ.get("ANDROID_USER_HOME")
    base = Path(home) if home else Path.home() / ".android"
    return base / "adbkey"


def ensure_key(key_path: Path | str | None = None) -> Path:
    """Return the private key path, creating the pair with adb_shell's keygen if missing."""
    path = Path(key_path).expanduser() if key_path else default_key_path()
    pub = Path(str(path) + ".pub")
    if path.exists():
        if not pub.exists():
            write_public_keyfile(str(path), str(pub))
        return path
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    # Create the file 0600 first: keygen opens it "wb", which keeps the mode it finds.
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    os.close(fd)
    try:
        keygen(str(path))
    except Exception:
        path.unlink(missing_ok=True)
        raise
    os.chmod(path, 0o600)
    return path


def vendor_key_paths() -> list[Path]:
    """Private keys named by `ADB_VENDOR_KEYS` (files or folders, `:`-separated), as adb reads it."""
    found: list[Path] = []
    for entry in filter(None, os.environ.get("ADB_VENDOR_KEYS", "").split(os.pathsep)):
        p = Path(entry).expanduser()
        if p.is_dir():
            found += sorted(q for q in p.iterdir() if q.suffix == "" and Path(str(q) + ".pub").exists()
                            or q.name.endswith(".adb_key"))
        elif p.is_file():
            found.append(p)
    return found


def load_signers(key_path: Path | str | None = None) -> list:
    """Signers for adb-shell's `connect(rsa_keys=...)`: the given/default key, then vendor keys.

    The first signer's public key is what a phone is offered when no signature is accepted.
    """
    paths = [ensure_key(key_path)]
    if key_path is None:
        paths += [p for p in vendor_key_paths() if p != paths[0]]
    signers = []
    for p in paths:
        pub = Path(str(p) + ".pub")
        try:
            if pub.exists():
                signers.append(PythonRSASigner.FromRSAKeyPath(str(p)))
            else:
                signers.append(PythonRSASigner(None, p.read_text()))
        except (OSError, ValueError) as e:
            raise AgentError(f"cannot read ADB key {p}: {e}") from e
    return signers
