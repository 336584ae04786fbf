# Copyright: contributors to opencapf.capf
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Private keys: generation, 0600 files, and the public-key rules for phones."""

from __future__ import annotations

from ..dependencies import ec, require, rsa, serialization
from ..errors import CertificateError, CertificateInputError, ValidationError
from ..files import read_private_file, write_private_file
from ..vocabulary import CAPF_KEY_TYPES, EC_KEY_SIZES, check_choice
from . import certificates as c

_CURVES = {256: "SECP256R1", 384: "SECP384R1", 521: "SECP521R1"}
PHONE_RSA_BITS = (1024, 4096)


def curve_for(bits: int):
    """The NIST curve object for a size in bits (256, 384, 521)."""
    require("cryptography")
    if bits not in _CURVES:
        raise ValidationError("ec_key_size", "must be one of %s" % ", ".join(map(str, EC_KEY_SIZES)), bits)
    return getattr(ec, _CURVES[bits])()


def generate(key_type: str, field: str = "key_type"):
    """A fresh private key for ``rsa2048``/``rsa3072``/``rsa4096``/``ec256``/``ec384``."""
    require("cryptography")
    check_choice(field, key_type, CAPF_KEY_TYPES)
    if key_type.startswith("rsa"):
        return rsa.generate_private_key(public_exponent=65537, key_size=int(key_type[3:]))
    return ec.generate_private_key(curve_for(int(key_type[2:])))


def key_type_of(public_key) -> str:
    kind, size = c.key_description(public_key)
    return f"{kind}{size}"


def private_key_pem(key) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def save_private_key(path: str, key) -> None:
    """Write a private key as unencrypted PKCS#8 PEM, mode 0600, atomically."""
    write_private_file(path, private_key_pem(key))


def load_private_key(path: str):
    """Load a private key file, refusing one that group or others can read."""
    require("cryptography")
    return parse_private_key(read_private_file(path, "key file"), f"key file {path}")


def parse_private_key(data: bytes, field: str = "private_key"):
    require("cryptography")
    try:
        key = serialization.load_pem_private_key(bytes(data), password=None)
    except (ValueError, TypeError) as exc:
        raise CertificateInputError(field, f"is not an unencrypted PEM private key: {exc}") from None
    if not isinstance(key, (rsa.RSAPrivateKey, ec.EllipticCurvePrivateKey)):
        raise CertificateInputError(field, "must be an RSA or EC key")
    return key


def check_phone_public_key(public_key, field: str = "public_key") -> tuple[str, int]:
    """A phone key is RSA 1024\u20134096 bits or EC P-256/P-384/P-521."""
    kind, size = c.key_description(public_key)
    if kind == "rsa":
        if not PHONE_RSA_BITS[0] <= size <= PHONE_RSA_BITS[1]:
            raise CertificateError(f"{field} is RSA-{size}; phone RSA keys must be 1024\u20134096 bits")
    elif size not in _CURVES:
        raise CertificateError(f"{field} uses an unsupported curve; only P-256, P-384 and P-521 are accepted")
    elif public_key.curve.name not in ("secp256r1", "secp384r1", "secp521r1"):
        raise CertificateError(f"{field} uses curve {public_key.curve.name}; only P-256, P-384 and P-521 are accepted")
    return kind, size


def keys_match(private_key, certificate) -> bool:
    return c.public_key_der(private_key.public_key()) == c.public_key_der(certificate.public_key())
