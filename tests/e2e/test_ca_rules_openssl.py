"""CA certificates made by the real openssl command, uploaded through real ansible-playbook runs and the CLI.

Invariant: a CA certificate that deviates from the guide's CA rules without harm (a root without
pathlen, as `openssl req -x509` and enterprise PKIs make them; no KeyUsage) is accepted with a
warning that names the option path, the certificate and the rule; strict mode refuses it with an
error naming the same; a two-tier PKI uploads through ca_root/intermediates and as a chain.
"""

from __future__ import annotations

import json
import sqlite3

import pytest

from support.tools import openssl, run_cli

EC = ("-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-days", "30")
ISSUING_EXTENSIONS = "basicConstraints=critical,CA:TRUE,pathlen:0\nkeyUsage=critical,digitalSignature,keyCertSign,cRLSign\n"


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    """A plain `openssl req -x509` root, and a two-tier PKI: a root without pathlen (keyCertSign,
    cRLSign, as enterprise roots are) above an issuing CA with pathlen:0 signed by `openssl x509 -req`."""
    base = tmp_path_factory.mktemp("openssl-pki")
    paths = {name: str(base / name) for name in ("plain.pem", "plain.key", "root.pem", "root.key", "issuing.csr",
                                                 "issuing.key", "issuing.pem", "issuing.ext", "chain.pem")}
    openssl("req", "-x509", *EC, "-subj", "/CN=Plain Root", "-keyout", paths["plain.key"], "-out", paths["plain.pem"])
    openssl("req", "-x509", *EC, "-subj", "/O=Example/CN=Enterprise Root", "-addext", "keyUsage=critical,keyCertSign,cRLSign",
            "-keyout", paths["root.key"], "-out", paths["root.pem"])
    openssl("req", "-new", *EC[:-2], "-subj", "/O=Example/CN=Enterprise Issuing CA", "-keyout", paths["issuing.key"],
            "-out", paths["issuing.csr"])
    with open(paths["issuing.ext"], "w", encoding="ascii") as handle:
        handle.write(ISSUING_EXTENSIONS)
    openssl("x509", "-req", "-in", paths["issuing.csr"], "-CA", paths["root.pem"], "-CAkey", paths["root.key"],
            "-set_serial", "2", "-days", "30", "-extfile", paths["issuing.ext"], "-out", paths["issuing.pem"])
    text = openssl("x509", "-in", paths["root.pem"], "-noout", "-text").stdout.decode()
    assert "CA:TRUE" in text and "pathlen" not in text
    with open(paths["chain.pem"], "w", encoding="ascii") as handle:
        handle.write(open(paths["issuing.pem"], encoding="ascii").read() + open(paths["root.pem"], encoding="ascii").read())
    return paths


def _stored(store):
    with sqlite3.connect(store) as db:
        return sorted(db.execute("SELECT trust_store, common_name FROM trust_certificates"))


PLAYBOOK = """\
- hosts: localhost
  gather_facts: false
  tasks:
    - name: Plain root, check mode
      opencapf.capf.capf_trust_cert: {{store: "{lenient}", path: "{plain}", trust_store: [capf-trust]}}
      check_mode: true
    - name: Plain root
      opencapf.capf.capf_trust_cert: {{store: "{lenient}", path: "{plain}", trust_store: [capf-trust]}}
    - name: Plain root again
      opencapf.capf.capf_trust_cert: {{store: "{lenient}", path: "{plain}", trust_store: [capf-trust]}}
    - name: Plain root strict
      opencapf.capf.capf_trust_cert: {{store: "{strict}", path: "{plain}", trust_store: [capf-trust], strict_ca_rules: true}}
      ignore_errors: true
    - name: Two-tier through Table 1
      opencapf.capf.capf_trust_cert:
        store: "{lenient}"
        ca_root: "{{{{ lookup('ansible.builtin.file', '{root}') }}}}"
        intermediates: ["{{{{ lookup('ansible.builtin.file', '{issuing}') }}}}"]
    - name: Two-tier through Table 1 strict
      opencapf.capf.capf_trust_cert:
        store: "{strict}"
        ca_root: "{{{{ lookup('ansible.builtin.file', '{root}') }}}}"
        intermediates: ["{{{{ lookup('ansible.builtin.file', '{issuing}') }}}}"]
        strict_ca_rules: true
      ignore_errors: true
    - name: Two-tier chain file
      opencapf.capf.capf_trust_cert: {{store: "{lenient}", path: "{chain}", trust_store: [callmanager-trust]}}
"""


def test_openssl_cas_through_ansible_playbook(pki, tmp_path):
    from support.ansible_runner import install_collection, playbook, task_results

    lenient, strict = str(tmp_path / "lenient.db"), str(tmp_path / "strict.db")
    book = tmp_path / "trust.yml"
    book.write_text(PLAYBOOK.format(lenient=lenient, strict=strict, plain=pki["plain.pem"], root=pki["root.pem"],
                                    issuing=pki["issuing.pem"], chain=pki["chain.pem"]))
    run = playbook(install_collection(str(tmp_path / "collections")), str(book))

    def one(name):
        [result] = task_results(run, name)
        return result

    checked, first, again = one("Plain root, check mode"), one("Plain root"), one("Plain root again")
    assert checked["changed"] and first["changed"] and not again["changed"]
    for result in (checked, first):
        assert [text.split(" [rule ")[1].split(":")[0] for text in result["rule_warnings"]] == \
            ["ca-path-length", "ca-digital-signature"]
        assert all(text.startswith("path (Plain Root) ") for text in result["rule_warnings"])
    assert "path (Plain Root) has no BasicConstraints pathlen" in run.stdout + run.stderr  # shown as a task warning
    refused = one("Plain root strict")
    assert refused["failed"] and refused["msg"] == ("path (Plain Root) has no BasicConstraints pathlen (unlimited); "
                                                    "the guide asks for pathlen:0 [rule ca-path-length]")

    tiered = one("Two-tier through Table 1")
    assert tiered["changed"] and tiered["table1"]["scenario"] == 0
    assert tiered["rule_warnings"] == [
        "ca_root (Enterprise Root) has no BasicConstraints pathlen (unlimited); the guide asks for pathlen:1 "
        "[rule ca-path-length: a harmless deviation, accepted; strict_ca_rules refuses it]",
        "ca_root (Enterprise Root) lacks KeyUsage digitalSignature; the guide asks for digitalSignature and "
        "keyCertSign [rule ca-digital-signature: a harmless deviation, accepted; strict_ca_rules refuses it]"]
    strict_tiered = one("Two-tier through Table 1 strict")
    assert strict_tiered["failed"] and strict_tiered["msg"].startswith("ca_root (Enterprise Root) has no BasicConstraints")
    assert strict_tiered["msg"].endswith("[rule ca-path-length]")

    chain = one("Two-tier chain file")
    assert chain["changed"] and [item["common_name"] for item in chain["added"]] == ["Enterprise Issuing CA"]
    assert [text.split(" (")[0] for text in chain["rule_warnings"]] == ["path[1]", "path[1]"]
    assert "asks for pathlen:1" in chain["rule_warnings"][0]

    assert _stored(strict) == []
    assert _stored(lenient) == [("callmanager-trust", "Enterprise Issuing CA"), ("callmanager-trust", "Enterprise Root"),
                                ("capf-trust", "Enterprise Root"), ("capf-trust", "Plain Root")]
    with sqlite3.connect(lenient) as db:
        details = [json.loads(row[0]) for row in db.execute(
            "SELECT details FROM audit_events WHERE action = 'trust.add' AND subject = 'capf-trust'")]
    assert any("[rule ca-path-length" in text for item in details for text in item.get("rule_warnings", ()))


def _document(tmp_path, body: str) -> str:
    path = tmp_path / "deploy.yml"
    path.write_text("opencapf: 1\n" + body)
    return str(path)


def test_openssl_cas_through_the_cli(pki, tmp_path):
    store = str(tmp_path / "capf.db")
    run_cli("--store", store, "init", check=True)
    def indented(name, indent):
        with open(pki[name], encoding="ascii") as handle:
            return "".join(f"{indent}{line}\n" for line in handle.read().splitlines())

    document = _document(tmp_path, f"trust:\n  - path: {pki['plain.pem']}\n    trust_store: capf-trust\n"
                         + "  - ca_root: |\n" + indented("root.pem", " " * 6)
                         + "    intermediates:\n      - |\n" + indented("issuing.pem", " " * 10))
    planned = run_cli("--store", store, "plan", document, check=True)
    assert "opencapf: warning: trust[0].path (Plain Root) has no BasicConstraints pathlen" in planned.stderr
    assert "opencapf: warning: trust[1].ca_root (Enterprise Root) has no BasicConstraints pathlen (unlimited); " \
           "the guide asks for pathlen:1 [rule ca-path-length" in planned.stderr
    refused = run_cli("--store", store, "apply", "--strict-ca-rules", document)
    assert refused.returncode == 1 and refused.stderr == (
        "opencapf: error: trust[0].path (Plain Root) has no BasicConstraints pathlen (unlimited); the guide asks for "
        "pathlen:0 [rule ca-path-length]\n")
    assert _stored(store) == []
    applied = json.loads(run_cli("--store", store, "--json", "apply", document, check=True).stdout)
    assert applied["changed"] and any("[rule ca-digital-signature" in text for text in applied["warnings"])
    assert _stored(store) == [("callmanager-trust", "Enterprise Root"), ("capf-trust", "Enterprise Root"),
                              ("capf-trust", "Plain Root")]
    strict_item = _document(tmp_path, f"trust:\n  - path: {pki['plain.pem']}\n    trust_store: callmanager-trust\n"
                                      "    strict_ca_rules: true\n")
    refused = run_cli("--store", store, "plan", strict_item)
    assert refused.returncode == 1 and refused.stderr.startswith("opencapf: error: trust[0].path (Plain Root) ")
