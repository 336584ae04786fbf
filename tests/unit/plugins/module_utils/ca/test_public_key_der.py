"""``public_key_der``: a phone key's DER SubjectPublicKeyInfo is always the library's encoding of the key.

The invariant, over random keys and every form a phone may send: the result equals
``public_bytes(DER, SubjectPublicKeyInfo)`` of the key loaded from what was sent. The bytes a key was
loaded from are handed back as they are only when they are that encoding already (an EC P-256 key
with an uncompressed point); every other form is encoded again.
"""

from __future__ import annotations

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from _opencapf.ca import certificates as c

SPKI = (serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
P256_PRIME = 2 ** 256 - 2 ** 224 + 2 ** 192 + 2 ** 96 - 1
COMPRESSED_P256_PREFIX = bytes.fromhex("3039301306072a8648ce3d020106082a8648ce3d030107032200")


class _NotToEncode:
    """A key that must not be encoded again: its encoding is ``answer`` (or it fails the test)."""

    def __init__(self, answer: bytes | None = None):
        self.answer = answer
        self.encoded = 0

    def public_bytes(self, *_args):
        self.encoded += 1
        if self.answer is None:
            raise AssertionError("encoded again although the bytes it was loaded from are its encoding")
        return self.answer


def test_every_form_of_a_phone_key_gives_the_library_s_encoding():
    for _each in range(100):
        key = ec.generate_private_key(ec.SECP256R1()).public_key()
        canonical = key.public_bytes(*SPKI)
        compressed = COMPRESSED_P256_PREFIX + key.public_bytes(serialization.Encoding.X962,
                                                               serialization.PublicFormat.CompressedPoint)
        for sent in (canonical, bytearray(canonical), memoryview(canonical), compressed):
            loaded = serialization.load_der_public_key(bytes(sent))
            result = c.public_key_der(loaded, loaded_from=sent)
            assert type(result) is bytes  # pylint: disable=unidiomatic-typecheck
            assert result == loaded.public_bytes(*SPKI) == canonical
        assert c.public_key_der(key) == canonical
    for key in (ec.generate_private_key(ec.SECP384R1()).public_key(),
                rsa.generate_private_key(public_exponent=65537, key_size=2048).public_key()):
        encoded = key.public_bytes(*SPKI)
        assert c.public_key_der(key, loaded_from=encoded) == encoded


def test_the_uncompressed_p256_encoding_is_handed_back_without_encoding_again():
    canonical = ec.generate_private_key(ec.SECP256R1()).public_key().public_bytes(*SPKI)
    key = _NotToEncode()
    assert c.public_key_der(key, loaded_from=canonical) == canonical
    assert key.encoded == 0


def test_anything_else_is_encoded_again():
    canonical = ec.generate_private_key(ec.SECP256R1()).public_key().public_bytes(*SPKI)
    point = len(canonical) - 65
    too_large = (P256_PRIME + 1).to_bytes(32, "big")
    other_forms = [
        canonical[:point + 1] + too_large + canonical[point + 33:],  # X not below the field prime
        canonical[:point + 33] + too_large,  # Y not below the field prime
        canonical[:point] + b"\x06" + canonical[point + 1:],  # a hybrid point, not an uncompressed one
        canonical[:-1],  # cut short
        canonical + b"\x00",  # trailing bytes
        canonical[:9] + b"\x2b" + canonical[10:],  # another algorithm identifier
    ]
    for sent in other_forms:
        key = _NotToEncode(answer=b"encoded again")
        assert c.public_key_der(key, loaded_from=sent) == b"encoded again", sent.hex()
        assert key.encoded == 1
