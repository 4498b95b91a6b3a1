"""ADB wire format as adbd speaks it: 24-byte message headers, the Android RSA public key
struct, and the auth signature check.

Names follow AOSP's protocol.txt (A_CNXN, A_AUTH, ...). Everything is little-endian.
Learned from protocol.txt / SYNC.TXT and adb_shell's keygen (for the key layout); written
fresh so the endpoint does not share bugs with the client it tests.
"""
from __future__ import annotations

import base64
import struct
from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa, utils

HEADER = struct.Struct("<6I")  # command, arg0, arg1, data_length, data_check, magic

A_SYNC = 0x434E5953
A_CNXN = 0x4E584E43
A_AUTH = 0x48545541
A_OPEN = 0x4E45504F
A_OKAY = 0x59414B4F
A_CLSE = 0x45534C43
A_WRTE = 0x45545257
A_STLS = 0x534C5453

COMMAND_NAMES = {A_SYNC: "SYNC", A_CNXN: "CNXN", A_AUTH: "AUTH", A_OPEN: "OPEN",
                 A_OKAY: "OKAY", A_CLSE: "CLSE", A_WRTE: "WRTE", A_STLS: "STLS"}

A_VERSION_MIN = 0x01000000  # the original protocol: data checksums are checked
A_VERSION_SKIP_CHECKSUM = 0x01000001  # hosts >= this may send 0 as the checksum
MAX_PAYLOAD = 256 * 1024  # what current adbd offers; the host's CNXN may lower it

ADB_AUTH_TOKEN = 1
ADB_AUTH_SIGNATURE = 2
ADB_AUTH_RSAPUBLICKEY = 3
TOKEN_SIZE = 20  # adbd signs a 20-byte random token (the size of a SHA-1 digest)

ANDROID_PUBKEY_MODULUS_SIZE = 2048 // 8
PUBKEY_STRUCT = struct.Struct(f"<II{ANDROID_PUBKEY_MODULUS_SIZE}s{ANDROID_PUBKEY_MODULUS_SIZE}sI")


def checksum(data: bytes) -> int:
    """adb's 'checksum' is the byte sum (mod 2^32), not a CRC."""
    return sum(data) & 0xFFFFFFFF


@dataclass(frozen=True)
class Message:
    command: int
    arg0: int
    arg1: int
    data: bytes = b""

    @property
    def name(self) -> str:
        return COMMAND_NAMES.get(self.command, hex(self.command))

    def pack(self) -> bytes:
        header = HEADER.pack(self.command, self.arg0, self.arg1, len(self.data),
                             checksum(self.data), self.command ^ 0xFFFFFFFF)
        return header + self.data


class ProtocolError(Exception):
    """The peer sent something adbd would drop the connection for."""


def unpack_header(raw: bytes) -> tuple[int, int, int, int, int]:
    command, arg0, arg1, length, check, magic = HEADER.unpack(raw)
    if magic != command ^ 0xFFFFFFFF:
        raise ProtocolError(f"bad magic {magic:#x} for command {command:#x}")
    if command not in COMMAND_NAMES:
        raise ProtocolError(f"unknown command {command:#x}")
    return command, arg0, arg1, length, check


def decode_adb_pubkey(text: bytes | str) -> rsa.RSAPublicKey:
    """Parse an adbkey.pub line: base64(Android RSAPublicKey struct) + optional ' user@host'.

    The struct: modulus size in 32-bit words, n0inv, modulus (little-endian), rr, exponent.
    Only the modulus and exponent matter for verification; the sizes are checked.
    """
    if isinstance(text, bytes):
        text = text.decode("ascii", "replace")
    blob = base64.b64decode(text.strip().strip("\0").split()[0])
    words, _n0inv, modulus, _rr, exponent = PUBKEY_STRUCT.unpack(blob)
    if words != ANDROID_PUBKEY_MODULUS_SIZE // 4:
        raise ValueError(f"modulus of {words} words, expected {ANDROID_PUBKEY_MODULUS_SIZE // 4}")
    n = int.from_bytes(modulus, "little")
    return rsa.RSAPublicNumbers(exponent, n).public_key()


def pubkey_id(text: bytes | str) -> str:
    """The base64 part of a key line: what identifies a key regardless of its comment."""
    if isinstance(text, bytes):
        text = text.decode("ascii", "replace")
    return text.strip().strip("\0").split()[0]


def verify_token_signature(key: rsa.RSAPublicKey, token: bytes, signature: bytes) -> bool:
    """adb signs the raw token as if it were a SHA-1 digest (PKCS#1 v1.5, SHA-1 DigestInfo)."""
    try:
        key.verify(signature, token, padding.PKCS1v15(), utils.Prehashed(hashes.SHA1()))
        return True
    except (InvalidSignature, ValueError):
        return False
