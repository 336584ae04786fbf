# Copyright: contributors to opencapf.capf
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The existing-certificate proof (capf-protocol.md section 3.3), both sides.

The phone signs M = DEVICE_NAME bytes || 00 || certificate DER with SHA-1 (SIGNED_DATA) and
SHA-512 (SHA2_SIGNED_DATA). RSA phones do a raw "private encrypt" of the bare hash with type-1
padding and no DigestInfo; EC phones write ordinary DER ECDSA signatures.
"""

from __future__ import annotations

import hashlib

from ..dependencies import InvalidSignature, ec, hashes, rsa
from .constants import Hash

_HASHLIB = {Hash.SHA1: "sha1", Hash.SHA256: "sha256", Hash.SHA512: "sha512"}
# DER DigestInfo prefixes, accepted as a tolerance in front of the bare hash.
_DIGEST_INFO = {
    "sha1": bytes.fromhex("3021300906052b0e03021a05000414"),
    "sha256": bytes.fromhex("3031300d060960864801650304020105000420"),
    "sha512": bytes.fromhex("3051300d060960864801650304020305000440"),
}


def message(device_name_raw: bytes, certificate_der: bytes) -> bytes:
    return bytes(device_name_raw) + b"\x00" + bytes(certificate_der)


def _crypto_hash(name: str):
    return {"sha1": hashes.SHA1, "sha256": hashes.SHA256, "sha512": hashes.SHA512}[name]()


def sign(private_key, data: bytes, hash_name: str) -> bytes:
    """The phone's signature of ``data`` (raw bare-hash RSA, or DER ECDSA)."""
    if isinstance(private_key, ec.EllipticCurvePrivateKey):
        return private_key.sign(data, ec.ECDSA(_crypto_hash(hash_name)))
    numbers = private_key.private_numbers()
    n = numbers.public_numbers.n
    k = (n.bit_length() + 7) // 8
    digest = hashlib.new(hash_name, data).digest()
    if k < len(digest) + 11:
        raise ValueError(f"an RSA-{n.bit_length()} key is too short for a {hash_name} signature block")
    block = b"\x00\x01" + b"\xff" * (k - len(digest) - 3) + b"\x00" + digest
    return pow(int.from_bytes(block, "big"), numbers.d, n).to_bytes(k, "big")


def verify(public_key, signature: bytes, data: bytes, hash_name: str) -> bool:
    """Whether ``signature`` is the phone's proof over ``data`` with ``hash_name``."""
    if isinstance(public_key, ec.EllipticCurvePublicKey):
        try:
            public_key.verify(signature, data, ec.ECDSA(_crypto_hash(hash_name)))
        except (InvalidSignature, ValueError):
            return False
        return True
    if not isinstance(public_key, rsa.RSAPublicKey):
        return False
    numbers = public_key.public_numbers()
    k = (numbers.n.bit_length() + 7) // 8
    if len(signature) != k:
        return False
    value = int.from_bytes(signature, "big")
    if value >= numbers.n:
        return False
    block = pow(value, numbers.e, numbers.n).to_bytes(k, "big")
    digest = hashlib.new(hash_name, data).digest()
    if not block.startswith(b"\x00\x01"):
        return False
    separator = block.find(b"\x00", 2)
    if separator < 10 or block[2:separator] != b"\xff" * (separator - 2):
        return False
    payload = block[separator + 1:]
    return payload == digest or payload == _DIGEST_INFO[hash_name] + digest


def hash_name(code: int) -> str | None:
    """hashlib name for a SHA2_SIGNED_DATA hash code (2 or 3), else None."""
    if code in (Hash.SHA256, Hash.SHA512):
        return _HASHLIB[Hash(code)]
    return None
