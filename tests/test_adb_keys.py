"""ADB key pair: created once, private key 0600, public key in adb's format."""
import stat
from pathlib import Path

from device_agents.adb_keys import ensure_key, load_signers, vendor_key_paths


def test_key_is_created_0600_and_reused(tmp_path):
    key = ensure_key(tmp_path / ".android" / "adbkey")
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert Path(str(key) + ".pub").read_text().split()[0]
    before = key.read_bytes()
    assert ensure_key(key) == key and key.read_bytes() == before  # never regenerated


def test_default_location_follows_home(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.delenv("ANDROID_USER_HOME", raising=False)
    monkeypatch.delenv("ADB_VENDOR_KEYS", raising=False)
    signers = load_signers()
    assert (tmp_path / ".android" / "adbkey").exists() and len(signers) == 1


def test_public_key_is_the_android_struct(tmp_path):
    import sys
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from tests.adbd_endpoint.protocol import decode_adb_pubkey

    key = ensure_key(tmp_path / "adbkey")
    pub = decode_adb_pubkey(Path(str(key) + ".pub").read_text())
    assert pub.key_size == 2048 and pub.public_numbers().e == 65537


def test_vendor_keys_are_added_after_the_main_key(tmp_path, monkeypatch):
    vendor = ensure_key(tmp_path / "vendor" / "adbkey")
    monkeypatch.setenv("ADB_VENDOR_KEYS", str(tmp_path / "vendor"))
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.delenv("ANDROID_USER_HOME", raising=False)
    assert vendor_key_paths() == [vendor]
    assert len(load_signers()) == 2
    assert len(load_signers(tmp_path / "explicit" / "adbkey")) == 1  # --adb-key: only that key
