"""Fixtures for the third-party CA tests: a test enterprise PKI, phone keys, phone-signed CSRs,
and the loopback EST / AD CS servers."""

from __future__ import annotations

import pytest

from _opencapf.dependencies import ec, rsa
from support.third_party_ca import PASSWORD, USERNAME, AdcsServer, EstServer, EnterprisePki, phone_csr


@pytest.fixture(scope="session")
def pki():
    return EnterprisePki()


@pytest.fixture(scope="session")
def other_pki():
    return EnterprisePki("Unrelated")


@pytest.fixture(scope="session")
def rsa_key():
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture(scope="session")
def ec_key():
    return ec.generate_private_key(ec.SECP256R1())


@pytest.fixture(scope="session")
def rsa_csr(rsa_key, pki):
    return phone_csr("SEP001122334455", rsa_key, pki.issuing.subject)


@pytest.fixture(scope="session")
def ec_csr(ec_key):
    return phone_csr("SEP00112233445F", ec_key)


@pytest.fixture
def est_server(pki, tmp_path):
    with EstServer(pki, str(tmp_path / "est"), username=USERNAME, password=PASSWORD) as server:
        yield server


@pytest.fixture
def adcs_server(pki, tmp_path, request):
    language = getattr(request, "param", "en")
    with AdcsServer(pki, str(tmp_path / "adcs"), language=language, username=USERNAME, password=PASSWORD) as server:
        yield server
