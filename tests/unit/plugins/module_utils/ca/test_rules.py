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
    ({"path_length": None}, r"no BasicConstraints pathlen \(unlimited\); the guide asks for pathlen:0 \[rule ca-path-length\]"),
    ({"usage": ("key_cert_sign",)}, r"lacks KeyUsage digitalSignature.*\[rule ca-digital-signature\]"),
    ({"usage": None}, r"no KeyUsage extension.*\[rule ca-digital-signature\]"),
])
def test_capf_certificate_rule_failures_name_the_rule(kwargs, message):
    """The CAPF certificate serves TLS to phones: every rule of the table holds for it."""
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


# One rule table for every CA upload: each rule has an id, says what it checks and is either
# always enforced or a harmless deviation (a warning by default, a refusal in strict mode).
BREAKS_ONLY = {
    # rule id -> keyword arguments of make_cert for a self-signed CA that breaks that rule alone
    "capf-reserved-cn": {"common_name": "Corp CAPF-Root"},
    "ca-basic-constraints": {"ca": False},
    "ca-key-cert-sign": {"usage": ("digital_signature", "crl_sign")},
    "ca-path-length": {"path_length": None},
    "ca-digital-signature": {"usage": ("key_cert_sign", "crl_sign")},
}


def test_rule_table_is_complete_and_the_always_enforced_rules_are_the_decided_ones():
    assert [rule.id for rule in rules.CA_RULES] == list(rules.RULES_BY_ID)
    assert all(rule.severity in (rules.ENFORCED, rules.HARMLESS) and rule.checks for rule in rules.CA_RULES)
    enforced = {rule.id for rule in rules.CA_RULES if rule.severity == rules.ENFORCED}
    assert enforced == {"capf-reserved-cn", "ca-basic-constraints", "ca-key-cert-sign", "ca-path-length-chain"}
    assert set(BREAKS_ONLY) | {"ca-path-length-chain"} == set(rules.RULES_BY_ID)


@pytest.mark.parametrize("rule_id", sorted(BREAKS_ONLY))
@pytest.mark.parametrize("strict", [False, True])
def test_each_rule_warns_or_refuses_by_its_severity(rule_id, strict):
    kwargs = dict(BREAKS_ONLY[rule_id])
    certificate, _unused_key = make_cert(kwargs.pop("common_name", "Corp Root"), **kwargs)
    rule = rules.RULES_BY_ID[rule_id]
    if rule.severity == rules.ENFORCED or strict:
        with pytest.raises(CertificateError, match=rf"^ca_root \(.*\) .*\[rule {rule_id}\]$"):
            rules.check_ca_rules(certificate, "ca_root", strict=strict, as_ca=True)
    else:
        warnings = rules.check_ca_rules(certificate, "ca_root", strict=strict, as_ca=True)
        assert [item.rule for item in warnings] == [rule_id]
        assert str(warnings[0]).startswith("ca_root (Corp Root) ")
        assert f"[rule {rule_id}: a harmless deviation, accepted; strict_ca_rules refuses it]" in str(warnings[0])


def test_a_conforming_ca_passes_strict_mode_without_warnings():
    certificate, _unused_key = make_cert("Guide Conforming CA")
    assert rules.check_ca_rules(certificate, "path", strict=True) == []


def test_two_tier_pki_root_without_pathlen_uploads_with_a_warning():
    root = make_cert("Two Tier Root", path_length=None)
    issuing = make_cert("Two Tier Issuing CA", issuer=root)
    https, _unused_key = make_cert("ca.example.com", issuer=issuing, ca=False, usage=("digital_signature",))
    plan = rules.table1(root[0], https, [issuing[0]])
    assert plan.scenario == 3
    assert [(item.field, item.rule) for item in plan.warnings] == [("ca_root", "ca-path-length")]
    assert "asks for pathlen:1" in str(plan.warnings[0])
    with pytest.raises(CertificateError, match=r"^ca_root \(Two Tier Root\) .*\[rule ca-path-length\]$"):
        rules.table1(root[0], https, [issuing[0]], strict=True)


def test_two_tier_pki_with_guide_path_lengths_passes_strict_mode():
    root = make_cert("Exact Root", path_length=1)
    issuing = make_cert("Exact Issuing CA", issuer=root)
    assert rules.table1(root[0], None, [issuing[0]], strict=True).warnings == []
    assert rules.check_upload_set([(issuing[0], "path[0]", None), (root[0], "path[1]", None)], strict=True) == []


def test_a_root_whose_pathlen_forbids_its_intermediate_is_always_refused():
    root = make_cert("Too Short Root", path_length=0)
    issuing = make_cert("Orphaned Issuing CA", issuer=root)
    with pytest.raises(CertificateError, match=r"^ca_root \(Too Short Root\) .*\[rule ca-path-length-chain\]$"):
        rules.table1(root[0], None, [issuing[0]])
    with pytest.raises(CertificateError, match=r"^path\[1\] \(Too Short Root\) .*\[rule ca-path-length-chain\]$"):
        rules.check_upload_set([(issuing[0], "path[0]", None), (root[0], "path[1]", None)])
