"""capf_trust_cert: present/absent by fingerprint, CA rules, Table 1, legacy MIC roots."""

from __future__ import annotations

from cryptography.hazmat.primitives import hashes

from support import certfactory
from ansible_collections.opencapf.capf.plugins.modules import capf_trust_cert
from support.stores import query, store_exists


def _stored(location):
    rows = query(location, "SELECT trust_store, common_name, description FROM trust_certificates")
    return sorted(tuple(row.values()) for row in rows)


def test_present_check_run_idempotent_absent(run, location):
    root, _key = certfactory.make("Example Root CA")
    args = {"store": location, "content": certfactory.pem(root), "trust_store": ["capf-trust", "callmanager-trust"],
            "description": "Example CA"}
    checked = run(capf_trust_cert, args, check=True, diff=True)
    assert checked["changed"] is True and len(checked["added"]) == 2
    assert checked["diff"]["before"] == {"callmanager-trust": [], "capf-trust": []}
    assert checked["diff"]["after"]["capf-trust"][0]["common_name"] == "Example Root CA"
    assert not store_exists(location)
    first = run(capf_trust_cert, args)
    assert first["changed"] is True
    assert _stored(location) == [("callmanager-trust", "Example Root CA", "Example CA"),
                                 ("capf-trust", "Example Root CA", "Example CA")]
    assert run(capf_trust_cert, args)["changed"] is False
    redescribed = run(capf_trust_cert, dict(args, description="Renamed"), diff=True)
    assert redescribed["changed"] is True
    assert redescribed["diff"]["after"]["capf-trust"][0]["description"] == "Renamed"
    assert run(capf_trust_cert, dict(args, description=None))["changed"] is False
    removed = run(capf_trust_cert, dict(args, state="absent", trust_store=["capf-trust"]))
    assert removed["changed"] is True and [r["trust_store"] for r in removed["removed"]] == ["capf-trust"]
    assert _stored(location) == [("callmanager-trust", "Example Root CA", "Renamed")]
    assert run(capf_trust_cert, dict(args, state="absent", trust_store=["capf-trust"]))["changed"] is False


def test_absent_by_fingerprint(run, location):
    root, _key = certfactory.make("Fingerprinted Root")
    run(capf_trust_cert, {"store": location, "content": certfactory.pem(root),
                          "trust_store": ["capf-trust", "callmanager-trust"]})
    fingerprint = root.fingerprint(hashes.SHA256()).hex()
    colons = ":".join(fingerprint[i:i + 2] for i in range(0, 64, 2)).upper()
    one = run(capf_trust_cert, {"store": location, "state": "absent", "fingerprints": [colons],
                                "trust_store": ["capf-trust"]})
    assert one["changed"] is True and _stored(location) == [("callmanager-trust", "Fingerprinted Root", "")]
    rest = run(capf_trust_cert, {"store": location, "state": "absent", "fingerprints": [fingerprint]})
    assert rest["changed"] is True and _stored(location) == []
    assert run(capf_trust_cert, {"store": location, "state": "absent", "fingerprints": [fingerprint]})["changed"] is False
    bad = run(capf_trust_cert, {"store": location, "state": "absent", "fingerprints": ["abc"]})
    assert bad["failed"] and bad["msg"].startswith("fingerprints[0] must be a SHA-256 fingerprint")
    present = run(capf_trust_cert, {"store": location, "fingerprints": [fingerprint]})
    assert present["failed"] and present["msg"].startswith("fingerprints are only used with state absent")


def test_file_path_and_chain(run, location, tmp_path):
    root = certfactory.make("Chain Root", path_length=1)
    intermediate, _key = certfactory.make("Chain Issuing CA", issuer=root)
    path = tmp_path / "chain.pem"
    path.write_text(certfactory.pem(intermediate) + certfactory.pem(root[0]))
    result = run(capf_trust_cert, {"store": location, "path": str(path), "trust_store": ["callmanager-trust"]})
    assert result["changed"] is True and len(result["added"]) == 2


def test_ca_rules_are_enforced(run, location):
    reserved, _key = certfactory.make("CAPF-1234abcd")
    result = run(capf_trust_cert, {"store": location, "content": certfactory.pem(reserved), "trust_store": ["capf-trust"]})
    assert result["failed"] and "reserved for the CAPF certificate [rule capf-reserved-cn]" in result["msg"]
    no_sign, _key = certfactory.make("No keyCertSign", key_cert_sign=False)
    result = run(capf_trust_cert, {"store": location, "content": certfactory.pem(no_sign), "trust_store": ["capf-trust"]})
    assert result["failed"] and result["msg"] == \
        "content (No keyCertSign) must have KeyUsage keyCertSign [rule ca-key-cert-sign]"
    unlimited, _key = certfactory.make("Unlimited", path_length=None)
    result = run(capf_trust_cert, {"store": location, "content": certfactory.pem(unlimited), "trust_store": ["capf-trust"],
                                   "strict_ca_rules": True})
    assert result["failed"] and result["msg"] == ("content (Unlimited) has no BasicConstraints pathlen (unlimited); the "
                                                  "guide asks for pathlen:0 [rule ca-path-length]")
    missing = run(capf_trust_cert, {"store": location, "content": certfactory.pem(unlimited)})
    assert missing["failed"] and missing["msg"].startswith("trust_store is required with content or path")
    garbage = run(capf_trust_cert, {"store": location, "content": "hello", "trust_store": ["capf-trust"]})
    assert garbage["failed"] and garbage["msg"].startswith("content contains no PEM certificate")
    assert _stored(location) == []


def test_table1_decides_uploads(run, location):
    root = certfactory.make("Enterprise Root")
    https, _key = certfactory.make("ca.example.com", issuer=root, ca=False, dns=["ca.example.com"])
    result = run(capf_trust_cert, {"store": location, "ca_root": certfactory.pem(root[0]),
                                   "https_certificate": certfactory.pem(https)})
    assert result["table1"]["scenario"] == 2
    assert sorted((a["trust_store"], a["common_name"]) for a in result["added"]) == [
        ("callmanager-trust", "Enterprise Root"), ("capf-trust", "Enterprise Root")]
    again = run(capf_trust_cert, {"store": location, "ca_root": certfactory.pem(root[0]),
                                  "https_certificate": certfactory.pem(https)})
    assert again["changed"] is False

    self_signed_https, _key = certfactory.make("est.example.com", ca=False, dns=["est.example.com"])
    other = certfactory.make("Other Root")
    row4 = run(capf_trust_cert, {"store": location, "ca_root": certfactory.pem(other[0]),
                                 "https_certificate": certfactory.pem(self_signed_https)})
    assert row4["table1"]["scenario"] == 4
    assert ("capf-trust", "est.example.com") in [(a["trust_store"], a["common_name"]) for a in row4["added"]]
    assert ("callmanager-trust", "est.example.com") not in [(a["trust_store"], a["common_name"]) for a in row4["added"]]


def test_legacy_mic_roots_removed_by_name(run, location):
    for name in ("CAP-RTP-001", "Cisco_Root_CA_2048", "Keep Me"):
        certificate, _key = certfactory.make(name)
        run(capf_trust_cert, {"store": location, "content": certfactory.pem(certificate),
                              "trust_store": ["callmanager-trust"]})
    checked = run(capf_trust_cert, {"store": location, "remove_legacy_mic_roots": True}, check=True)
    assert checked["changed"] is True and len(_stored(location)) == 3
    result = run(capf_trust_cert, {"store": location, "remove_legacy_mic_roots": True})
    assert sorted(r["common_name"] for r in result["removed"]) == ["CAP-RTP-001", "Cisco_Root_CA_2048"]
    assert _stored(location) == [("callmanager-trust", "Keep Me", "")]
    assert run(capf_trust_cert, {"store": location, "remove_legacy_mic_roots": True})["changed"] is False
