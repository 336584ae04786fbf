"""Certificate rules and Table 1."""

from __future__ import annotations

import pytest

from _opencapf.ca import rules
from _opencapf.errors import CertificateError
from support.pki import make_cert


@pytest.fixture(scope="module")
def root():
    return make_cert("Example Root CA", path_length=1)


def test_good_ca_passes():
    certificate, _unused_key = make_cert("Example CA")
    rules.check_ca_certificate(certificate)
    rules.check_trust_upload(certificate)


@pytest.mark.parametrize("kwargs,message", [
    ({"ca": False}, "must have BasicConstraints CA:TRUE"),
    ({"basic_constraints": False}, "must have BasicConstraints CA:TRUE"),
    ({"path_length": None}, "pathlen:0, has pathlen unlimited"),
    ({"usage": ("key_cert_sign",)}, "digitalSignature and keyCertSign"),
    ({"usage": None}, "digitalSignature and keyCertSign"),
])
def test_ca_rule_failures_name_the_rule(kwargs, message):
    certificate, _unused_key = make_cert("Broken CA", **kwargs)
    with pytest.raises(CertificateError, match=message):
        rules.check_ca_certificate(certificate, "ca_root")


def test_reserved_prefix_is_refused():
    certificate, _unused_key = make_cert("My CAPF-Root")
    with pytest.raises(CertificateError, match="reserved for the CAPF certificate"):
        rules.check_trust_upload(certificate, "certificate")


def test_ipsec_certificate_must_not_be_a_ca(root):
    leaf, _unused_key = make_cert("ipsec.example.com", issuer=root, ca=False, usage=("digital_signature",))
    rules.check_ipsec_certificate(leaf)
    bad, _unused_key = make_cert("ipsec-ca.example.com", issuer=root)
    with pytest.raises(CertificateError, match="must not have BasicConstraints CA:TRUE"):
        rules.check_ipsec_certificate(bad)


def test_table1_same_certificate():
    ca = make_cert("Root and HTTPS")
    plan = rules.table1(ca[0], ca[0])
    assert plan.scenario == 1
    assert [(role, stores) for role, _c, stores in plan.uploads] == [("ca_root", ("capf-trust", "callmanager-trust"))]


def test_table1_https_issued_by_root():
    ca = make_cert("Root CA")
    https, _unused_key = make_cert("ca.example.com", issuer=ca, ca=False, usage=("digital_signature",))
    plan = rules.table1(ca[0], https)
    assert plan.scenario == 2 and [u[0] for u in plan.uploads] == ["ca_root"]


def test_table1_https_issued_by_intermediate(root):
    intermediate = make_cert("Issuing CA", issuer=root)
    https, _unused_key = make_cert("ca.example.com", issuer=intermediate, ca=False, usage=("digital_signature",))
    plan = rules.table1(root[0], https, intermediates=[intermediate[0]])
    assert plan.scenario == 3 and [u[0] for u in plan.uploads] == ["ca_root"]


def test_table1_https_not_verifiable_from_root(root):
    intermediate = make_cert("Hidden Issuing CA", issuer=root)
    https, _unused_key = make_cert("ca.example.com", issuer=intermediate, ca=False, usage=("digital_signature",))
    plan = rules.table1(root[0], https)
    assert plan.scenario == 4
    assert [(role, stores) for role, _c, stores in plan.uploads] == [
        ("ca_root", ("capf-trust", "callmanager-trust")), ("https_certificate", ("capf-trust",))]


def test_table1_refuses_a_non_root():
    root = make_cert("Some Root")
    intermediate, _unused_key = make_cert("Not a root", issuer=root)
    with pytest.raises(CertificateError, match="self-signed root"):
        rules.table1(intermediate)


def test_build_chain_through_intermediate(root):
    intermediate = make_cert("Chain CA", issuer=root)
    leaf, _unused_key = make_cert("SEP001122334455", issuer=intermediate, ca=False, usage=("digital_signature",))
    chain = rules.build_chain(leaf, [root[0]], [intermediate[0]])
    assert [c.subject for c in chain] == [leaf.subject, intermediate[0].subject, root[0].subject]


def test_build_chain_refuses_untrusted(root):
    stranger = make_cert("Stranger CA")
    leaf, _unused_key = make_cert("SEP001122334455", issuer=stranger, ca=False, usage=("digital_signature",))
    with pytest.raises(CertificateError, match="does not chain to a trusted certificate"):
        rules.build_chain(leaf, [root[0]])
