# Copyright: contributors to opencapf.capf
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Code tables of the CAPF protocol (see capf-protocol.md section 2)."""

from __future__ import annotations

import enum

PROTOCOL_ID = 0x55
HEADER_SIZE = 8
MAX_BODY = 0xFFFF
# Jabber reads a server message with a single 4096-byte read: nothing we send may be larger.
MAX_SERVER_MESSAGE = 4096
SERVER_VERSION = 3
DEFAULT_PORT = 3804


class Command(enum.IntEnum):
    AUTH_REQUEST = 1
    AUTH_RESPONSE = 2
    KEY_GENERATE_REQUEST = 3
    KEY_GENERATE_RESPONSE = 4
    ENCRYPT_RESPONSE = 5
    ENCRYPT_REQUEST = 6
    DECRYPT_REQUEST = 7
    DECRYPT_RESPONSE = 8
    STORE_CERTIFICATE_REQUEST = 9
    STORE_CERTIFICATE_RESPONSE = 10
    FETCH_CERTIFICATE_REQUEST = 11
    FETCH_CERTIFICATE_RESPONSE = 12
    DELETE_CERTIFICATE_REQUEST = 13
    DELETE_CERTIFICATE_RESPONSE = 14
    END_SESSION = 15
    RETRY_LATER = 16
    REQUEST_IN_PROGRESS = 17
    STATUS_REQUEST = 18
    STATUS_RESPONSE = 19
    ABORT_REQUEST = 20
    ABORT_RESPONSE = 21
    SIGN_CERTIFICATE_REQUEST = 22
    SIGN_CERTIFICATE_RESPONSE = 23


class Tag(enum.IntEnum):
    REASON = 1
    REASON_INFO = 2
    CERTIFICATE_TYPE = 3
    CERTIFICATE = 4
    CERTIFICATE_ID = 5
    SIGNED_DATA = 6
    VERSION = 7
    AUTH_TYPE = 8
    PUBLIC_KEY = 9
    KEY_SIZE = 10
    PASSWORD = 11
    RETRY_DELAY = 12
    DEVICE_NAME = 13
    SUDI_DATA = 16
    KEY_TYPE = 17
    CURVE = 18
    DIGEST_TYPE = 19
    SHA2_SIGNED_DATA = 20
    # Our "X-CSR/1" extension (capf-protocol.md 6.3); sent only to a peer that advertised X_CAPS.
    X_CAPS = 0xF0
    X_TBS = 0xF1


class Reason(enum.IntEnum):
    NO_ACTION = 0
    UPDATE_CERTIFICATE = 1  # success / OK
    INVALID_ELEMENT = 7  # generic failure
    UNKNOWN_DEVICE = 9


class AuthType(enum.IntEnum):
    NONE = 0
    PASSWORD = 1
    NO_PASSWORD = 2
    LSC = 3
    MIC = 4


class CertificateType(enum.IntEnum):
    LSC = 1
    MIC = 2


class KeyType(enum.IntEnum):
    RSA = 0
    EC = 1


class Curve(enum.IntEnum):
    P256 = 0
    P384 = 1
    P521 = 2


class Hash(enum.IntEnum):
    SHA1 = 1
    SHA256 = 2
    SHA512 = 3


CURVE_BITS = {Curve.P256: 256, Curve.P384: 384, Curve.P521: 521}
BITS_CURVE = {bits: curve for curve, bits in CURVE_BITS.items()}
RSA_SIZES = (512, 1024, 2048, 3072, 4096)
# Tags capfc understands in a server message; we send nothing else (quirk 7).
SERVER_TAGS = frozenset({1, 2, 3, 4, 7, 8, 10, 17, 18})

# X_CAPS bits (u16 BE): what an X-CSR/1 phone can do.
XCAP_SIGN_RSA = 0x1  # signs a CSR for an RSA key
XCAP_SIGN_EC = 0x2  # signs a CSR for an EC key
XCAP_PENDING_KEY = 0x4  # keeps a pending key across sessions; accepts STORE without KEY_GENERATE
XCAP_RETRY_LATER = 0x8  # understands RETRY_LATER
XCAPS_ALL = XCAP_SIGN_RSA | XCAP_SIGN_EC | XCAP_PENDING_KEY | XCAP_RETRY_LATER
