"""Trust-store planning (host-name matching, Table 1 with intermediates) and the encrypted secrets."""

from __future__ import annotations

import os

import pytest

from support import certfactory

from _opencapf import secretbox, trust
from _opencapf.errors import StoreError
from _opencapf.store import open_store


@pytest.fixture
def store(store_on_both):
    """Every store test here runs against both backends."""
    return store_on_both


@pytest.mark.parametrize("host, names, expected", [
    ("ca.example.com", ["CA.Example.com"], True),
    ("ca.example.com.", ["ca.example.com"], True),
    ("ca.example.com", ["*.example.com"], True),
    ("a.b.example.com", ["*.example.com"], False),
    ("example.com", ["*.example.com"], False),
    ("ca.example.com", ["ca.example.org", "Example Root"], False),
])
def test_hostname_matching(host, names, expected):
    assert trust.hostname_matches(host, names) is expected


def test_table1_intermediate_uploads_only_the_root(store):
    root = certfactory.make("Root With Issuing CA", path_length=1)
    issuing = certfactory.make("Issuing CA", issuer=root)
    https, _key = certfactory.make("est.example.com", issuer=issuing, ca=False, dns=["est.example.com"])
    result = trust.converge(store, ca_root=certfactory.pem(root[0]), https_certificate=certfactory.pem(https),
                            intermediates=[certfactory.pem(issuing[0])])
    assert result["table1"]["scenario"] == 3
    assert sorted((a["trust_store"], a["common_name"]) for a in result["added"]) == [
        ("callmanager-trust", "Root With Issuing CA"), ("capf-trust", "Root With Issuing CA")]
    with store.read() as tx:
        assert trust.https_certificate_names(tx) == []


def test_absent_chain_and_description_kept(store):
    root = certfactory.make("Chain Root", path_length=1)
    issuing, _key = certfactory.make("Chain Issuing", issuer=root)
    chain = certfactory.pem(issuing) + certfactory.pem(root[0])
    trust.converge(store, content=chain, trust_store="CAPF-trust", description="chain")
    assert trust.converge(store, content=chain, trust_store="capf-trust")["changed"] is False
    with store.read() as tx:
        assert {row["description"] for row in trust.list_certificates(tx, "capf-trust")} == {"chain"}
    removed = trust.converge(store, content=chain, trust_store="capf-trust", state="absent", check_mode=True)
    assert removed["changed"] is True and len(removed["removed"]) == 2
    assert trust.converge(store, content=chain, trust_store="capf-trust", state="absent")["changed"] is True
    with store.read() as tx:
        assert trust.list_certificates(tx) == []


def test_secrets_round_trip_and_need_the_secret_file(store_location, state_dir):
    with open_store(store_location, state_dir=state_dir) as store:
        with store.transaction() as tx:
            secretbox.put(tx, store.secret(), "online_ca.password", "correct horse")
        with store.read() as tx:
            assert secretbox.get(tx, store.secret(), "online_ca.password") == "correct horse"
            assert secretbox.equals(tx, store.secret(), "online_ca.password", "correct horse")
            assert not secretbox.equals(tx, store.secret(), "online_ca.password", "correct horsE")
        with store.read() as tx:
            assert b"correct horse" not in bytes(tx.scalar("SELECT ciphertext FROM secrets"))
    os.unlink(os.path.join(state_dir, "secret.key"))  # a copy of the database alone
    with open_store(store_location, state_dir=state_dir) as store:
        with store.read() as tx:
            with pytest.raises(StoreError, match="cannot be decrypted with this store's secret file"):
                secretbox.get(tx, store.secret(), "online_ca.password")
