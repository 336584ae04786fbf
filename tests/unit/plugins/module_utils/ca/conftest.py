import pytest

from _opencapf.dependencies import ec, rsa


@pytest.fixture(scope="session")
def rsa_phone_key():
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture(scope="session")
def ec_phone_key():
    return ec.generate_private_key(ec.SECP256R1())
