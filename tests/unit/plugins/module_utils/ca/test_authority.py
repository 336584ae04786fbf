"""The CAPF certificate: created on first use, regenerated, replaced, key files private."""

from __future__ import annotations

import datetime as dt
import os
import re
import stat

import pytest

from _opencapf.ca import authority, certificates as c, keys
from _opencapf.dependencies import x509
from _opencapf.errors import CertificateError, CertificateInputError, PermissionProblem, ValidationError
from support.pki import key_pem, make_cert, pem


@pytest.mark.parametrize("key_type,kind,size", [("rsa2048", "rsa", 2048), ("ec256", "ec", 256),
                                                ("ec384", "ec", 384)])
def test_created_certificate_follows_the_capf_rules(store, key_type, kind, size):
    summary, created = authority.ensure(store, key_type)
    assert created
    assert re.fullmatch(r"CAPF-[0-9a-f]{8}", summary["common_name"])
    assert (summary["key_type"], summary["key_size"]) == (kind, size)
    certificate = c.load_pem_certificate(summary["pem"])
    constraints = certificate.extensions.get_extension_for_class(x509.BasicConstraints)
    assert constraints.critical and constraints.value.ca and constraints.value.path_length == 0
    usage = certificate.extensions.get_extension_for_class(x509.KeyUsage)
    assert usage.critical and usage.value.digital_signature and usage.value.key_cert_sign
    assert not usage.value.key_encipherment and usage.value.crl_sign  # it signs the CAPF CRL
    ski = certificate.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    aki = certificate.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value
    assert aki.key_identifier == ski.digest
    signer = authority.signer(store)
    key_path = authority.key_file(store, signer)
    assert os.path.dirname(key_path) == store.keys_dir and stat.S_IMODE(os.stat(key_path).st_mode) == 0o600
    assert keys.keys_match(signer.private_key, certificate)
    assert keys.keys_match(keys.load_private_key(key_path), certificate)


def test_ensure_is_idempotent(store):
    first, created = authority.ensure(store)
    second, created_again = authority.ensure(store)
    assert created and not created_again
    assert first["fingerprint"] == second["fingerprint"]


def test_regenerate_keeps_history_and_switches_signer(ca_store):
    old = authority.current(ca_store)
    new = authority.regenerate(ca_store, "ec256")
    assert new["fingerprint"] != old["fingerprint"]
    history = authority.history(ca_store)
    assert [h["fingerprint"] for h in history] == [new["fingerprint"], old["fingerprint"]]
    assert [h["active"] for h in history] == [True, False]
    assert history[1]["retired_at"]
    assert c.fingerprint(authority.signer(ca_store).certificate) == new["fingerprint"]
    assert len(authority.all_certificates(ca_store)) == 2


def test_unknown_key_type_is_refused(store):
    with pytest.raises(ValidationError, match="key_type must be one of"):
        authority.ensure(store, "dsa1024")


def test_replace_by_upload(ca_store):
    certificate, key = make_cert("Uploaded CAPF root")
    summary, changed = authority.replace(ca_store, pem(certificate), key_pem(key))
    assert changed and summary["fingerprint"] == c.fingerprint(certificate)
    _again, changed_again = authority.replace(ca_store, pem(certificate), key_pem(key))
    assert not changed_again
    assert c.fingerprint(authority.signer(ca_store).certificate) == c.fingerprint(certificate)


@pytest.mark.parametrize("kwargs,message", [
    ({"ca": False}, "CA:TRUE"),
    ({"path_length": 2}, "pathlen:0"),
    ({"usage": ("digital_signature",)}, "keyCertSign"),
])
def test_upload_enforces_capf_certificate_rules(ca_store, kwargs, message):
    certificate, key = make_cert("Bad CAPF", **kwargs)
    before = authority.current(ca_store)["fingerprint"]
    with pytest.raises(CertificateError, match=message):
        authority.replace(ca_store, pem(certificate), key_pem(key))
    assert authority.current(ca_store)["fingerprint"] == before


@pytest.mark.parametrize("start,days,message", [
    (-40, 30, r"capf_certificate expired at \S+: a CAPF certificate must be valid now to sign LSCs \[rule capf-valid-now\]"),
    (2, 365, r"capf_certificate is not valid before \S+: a CAPF certificate must be valid now .*capf-valid-now"),
])
def test_upload_of_a_capf_certificate_not_valid_now_is_refused(ca_store, start, days, message):
    """Every LSC an expired CAPF certificate signed would outlive it, and phones refuse the TLS of a
    certificate outside its validity: the upload is refused, naming the field and the rule, and the
    active CAPF certificate stays."""
    certificate, key = make_cert("Uploaded CAPF", days=days,
                                 not_before=dt.datetime.now(dt.timezone.utc) + dt.timedelta(days=start))
    before = authority.current(ca_store)["fingerprint"]
    with pytest.raises(CertificateInputError, match=message):
        authority.replace(ca_store, pem(certificate), key_pem(key))
    assert authority.current(ca_store)["fingerprint"] == before
    assert [row["fingerprint"] for row in authority.history(ca_store)] == [before]


def test_upload_with_foreign_key_is_refused(ca_store):
    certificate, _key = make_cert("CAPF upload")
    _other, other_key = make_cert("Other")
    with pytest.raises(CertificateError, match="does not belong"):
        authority.replace(ca_store, pem(certificate), key_pem(other_key))


def test_world_readable_key_file_is_refused(store):
    authority.ensure(store)
    key_path = authority.key_file(store, authority.signer(store))
    os.chmod(key_path, 0o644)
    with pytest.raises(PermissionProblem, match="chmod 600"):
        authority.key_file(store, authority.signer(store))


def test_a_key_file_that_differs_from_the_sealed_key_is_rewritten(ca_store):
    active = authority.signer(ca_store)
    key_path = authority.key_file(ca_store, active)
    _certificate, other = make_cert("Planted")
    with open(key_path, "wb") as handle:
        handle.write(key_pem(other))
    assert authority.key_file(ca_store, active) == key_path
    assert keys.keys_match(keys.load_private_key(key_path), active.certificate)
