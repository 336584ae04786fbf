"""The CAPF private key is shared through the store, sealed under the state directory's secret.key:
never in plain text in the database, usable by every host with the same secret.key, by no other."""

from __future__ import annotations

import base64
import glob
import os
import re
import shutil

import pytest

from _opencapf import secretbox, service_config
from _opencapf.ca import authority, certificates as c, keys, lsc
from _opencapf.dependencies import ec, serialization
from _opencapf.errors import StoreError
from _opencapf.store import audit, capf_certificates, open_store
from _opencapf.store.migrations import MIGRATIONS
from _opencapf.vocabulary import format_utc
from support.pki import key_pem, make_cert, pem

TABLES = sorted({"schema_migrations"} | {name for _number, _description, statements in MIGRATIONS
                                         for statement in statements
                                         for name in re.findall(r"CREATE TABLE (\w+)", statement)})


def _upload(store):
    certificate, key = make_cert("Uploaded CAPF root")
    authority.replace(store, pem(certificate), key_pem(key))


def _module_upload(store):
    certificate, key = make_cert("Module CAPF root")
    service_config.converge(store, capf_certificate={"certificate": pem(certificate), "private_key": key_pem(key)})


# Every way a CAPF key enters the store: init, ca regenerate, ca upload, and the capf_service module.
RECORDS = {
    "init": authority.ensure,
    "ca_regenerate": lambda store: authority.regenerate(store, "ec256"),
    "ca_upload": _upload,
    "capf_service_regenerate": lambda store: service_config.converge(store, capf_certificate={"regenerate": True}),
    "capf_service_upload": _module_upload,
}


@pytest.fixture
def first(store_location, state_dir):
    """The host that makes the CAPF certificates."""
    opened = open_store(store_location, state_dir=state_dir, actor="first")
    yield opened
    opened.close()


def _host(location, directory, secret_from=None):
    """Another host on the same store: its own state directory (empty keys/), with a copy of
    ``secret_from``'s secret.key when given."""
    os.makedirs(directory, mode=0o700)
    if secret_from is not None:
        shutil.copy2(os.path.join(secret_from, "secret.key"), os.path.join(directory, "secret.key"))
    return open_store(location, state_dir=directory, actor="second")


def _forget_key_files(store):
    """Remove every key file of ``store``'s host: what the other host sees of them."""
    for path in glob.glob(os.path.join(store.keys_dir, "*.key")):
        os.unlink(path)


def _forms(private_key) -> dict[str, bytes]:
    """The ways a private key's bytes could sit in a column."""
    pkcs8 = private_key.private_bytes(serialization.Encoding.DER, serialization.PrivateFormat.PKCS8,
                                      serialization.NoEncryption())
    traditional = private_key.private_bytes(serialization.Encoding.DER, serialization.PrivateFormat.TraditionalOpenSSL,
                                            serialization.NoEncryption())
    pem_text = keys.private_key_pem(private_key)
    return {"PKCS#8 DER": pkcs8, "traditional DER": traditional, "PEM": pem_text,
            "PEM line": pem_text.splitlines()[1], "base64 DER": base64.b64encode(pkcs8)}


def _stored_bytes(store) -> bytes:
    """Every value of every table, as bytes (for SQLite also the database and log files themselves)."""
    chunks = []
    with store.read() as tx:
        for table in TABLES:
            for row in tx.query(f"SELECT * FROM {table}"):
                for value in row.values():
                    chunks.append(bytes(value) if isinstance(value, (bytes, memoryview)) else str(value).encode())
    if not store.location.startswith("postgres"):
        for path in glob.glob(store.location + "*"):
            with open(path, "rb") as handle:
                chunks.append(handle.read())
    return b"\n".join(chunks)


def test_every_capf_key_is_in_the_store_sealed_never_in_plain_text(first):
    made = []
    for record in RECORDS.values():
        record(first)
        made.append(authority.signer(first))
    stored = _stored_bytes(first)
    for active in made:
        for form, data in _forms(active.private_key).items():
            assert data not in stored, f"the {form} of the key of {active.common_name} is in the store"
    with first.read() as tx:
        for active in made:
            fingerprint = c.fingerprint(active.certificate)
            opened = secretbox.get(tx, first.secret(), f"capf_private_key:{fingerprint}")
            assert opened is not None and keys.keys_match(keys.parse_private_key(opened.encode()), active.certificate)


@pytest.mark.parametrize("change", sorted(RECORDS))
def test_a_key_made_on_one_host_signs_on_another_with_the_same_secret(first, store_location, state_dir, tmp_path,
                                                                      change):
    first.secret()  # the secret.key the role copies to every host
    if change != "init":
        authority.ensure(first)
    second = _host(store_location, str(tmp_path / "second"), secret_from=state_dir)
    try:
        if change != "init":
            assert authority.signer(second).id == authority.signer(first).id
        RECORDS[change](first)
        _forget_key_files(first)
        assert os.listdir(second.keys_dir) == []
        active = authority.current(first)
        phone_key = ec.generate_private_key(ec.SECP256R1())
        issued = lsc.issue(second, "SEP0011223344AA", phone_key.public_key(), source="test")
        certificate = c.load_pem_certificate(issued.pem)
        capf = c.load_pem_certificate(active["pem"])
        certificate.verify_directly_issued_by(capf)
        key_path = authority.key_file(second, authority.signer(second))
        assert keys.keys_match(keys.load_private_key(key_path), capf)
    finally:
        second.close()


def test_a_host_with_another_secret_key_cannot_open_the_capf_key(first, store_location, tmp_path):
    authority.ensure(first)
    other = _host(store_location, str(tmp_path / "other"))  # a fresh secret.key is made
    try:
        with pytest.raises(StoreError, match=r"private key of CAPF certificate CAPF-[0-9a-f]{8} cannot be decrypted "
                                             r"with .*secret\.key: every host sharing a store needs the secret\.key"):
            authority.signer(other)
    finally:
        other.close()


def _legacy_certificate(store):
    """A CAPF certificate as an engine before sealed keys recorded it: the key only in a key file."""
    private_key = keys.generate("rsa2048")
    certificate = authority.build_capf_certificate(private_key)
    path = os.path.join(store.keys_dir, f"{c.common_name(certificate.subject)}-legacy.key")
    keys.save_private_key(path, private_key)
    with store.transaction() as tx:
        capf_certificates.activate(
            tx, common_name=c.common_name(certificate.subject), serial=format(certificate.serial_number, "x"),
            fingerprint=c.fingerprint(certificate), key_type="rsa2048", key_path=path, pem=c.to_pem(certificate),
            not_before=format_utc(c.not_before(certificate)), not_after=format_utc(c.not_after(certificate)),
            source="generated")
    return certificate, path


@pytest.mark.parametrize("upgrade", ["init", "capf_service"])
def test_key_files_of_an_older_store_are_sealed_into_it(first, store_location, state_dir, tmp_path, upgrade):
    certificate, path = _legacy_certificate(first)
    assert keys.keys_match(authority.signer(first).private_key, certificate)  # still read from its file
    if upgrade == "init":
        authority.ensure(first)
    else:
        service_config.converge(first)
    assert os.path.exists(path)  # the file stays
    with first.read() as tx:
        assert secretbox.exists(tx, f"capf_private_key:{c.fingerprint(certificate)}")
        sealed = audit.events(tx, action="capf_certificate.key_sealed")
    assert len(sealed) == 1
    os.unlink(path)
    second = _host(store_location, str(tmp_path / "second"), secret_from=state_dir)
    try:
        assert c.fingerprint(authority.signer(second).certificate) == c.fingerprint(certificate)
    finally:
        second.close()
