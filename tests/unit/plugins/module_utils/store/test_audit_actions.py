"""One audit shape per action, whoever records it: the audit vocabulary (``store/audit_actions.py``)
lists every action with the detail keys it always carries and those it may carry, the store refuses an
event of another shape, and ``docs/audit.md`` lists the same table.

* An event of an action the vocabulary does not know, or without a key its action always carries, or
  with a key it never carries, is refused (``AuditShapeError``, naming the action and the key) and
  nothing of it is recorded: by ``audit.record``, in a batch, and by ``audit.record_many``.
* ``certificate.issued`` carries the same keys, with the values the store holds, whether the CAPF
  certificate signed the LSC or a third-party CA did (``signer``: the common name of the certificate that
  signed it; ``issuer``: as the store records it).
* Every key request that becomes ``superseded`` is one ``csr.superseded`` event of its phone with its
  ``csr_id`` and the ``reason`` stored, whatever superseded it (the phone's newer request, the phone's
  refusal of a delivered certificate; the sessions' supersessions are held by the fleet's machine in
  ``test_audit_one_shape_truth``).
"""

from __future__ import annotations

import ast
import json
import os

import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from hypothesis import HealthCheck, given, settings, strategies as st

from support.store_phones import create_phone
from support.third_party_ca import EnterprisePki, pem, phone_csr
from _opencapf import enrolment, phone_config, trust
from _opencapf.ca import certificates as c
from _opencapf.ca import lsc
from _opencapf.store import audit, audit_actions
from _opencapf.store import phones as phone_records
from _opencapf.store.audit_actions import ACTIONS, AuditShapeError

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__)))))))
DOCS = os.path.join(ROOT, "docs", "audit.md")
PHONE_KEY = ec.generate_private_key(ec.SECP256R1())


def _count(store) -> int:
    with store.read() as tx:
        return tx.scalar("SELECT count(*) FROM audit_events")


def _record_each_way(store, action: str, details: dict) -> list[str]:
    """The messages of the errors of recording the event each way (``record``, batched, ``record_many``)."""
    messages = []
    for way in ("record", "batched", "many"):
        with pytest.raises(AuditShapeError) as raised:
            with store.transaction() as tx:
                if way == "record":
                    audit.record(tx, "test", action, "subject", **details)
                elif way == "batched":
                    with audit.batched(tx):
                        audit.record(tx, "test", "template.remove", "recorded before it")
                        audit.record(tx, "test", action, "subject", **details)
                else:
                    audit.record_many(tx, "test", "2026-01-01T00:00:00Z",
                                      [("template.remove", "before it", {}), (action, "subject", details)])
        messages.append(str(raised.value))
    return messages


ACTION = st.sampled_from(sorted(ACTIONS))
UNKNOWN_KEY = st.from_regex(r"\A[a-z][a-z_]{0,14}\Z").filter(lambda key: key not in ("tx", "actor", "action", "subject"))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(action=ACTION, data=st.data())
def test_an_event_of_another_shape_is_refused_naming_its_action_and_key(sqlite_store, action, data):
    shape = ACTIONS[action]
    whole = {key: 1 for key in shape.required} | {key: 1 for key in data.draw(st.sets(st.sampled_from(
        sorted(shape.optional) or ["none"])).map(lambda keys: keys & shape.optional))}
    before = _count(sqlite_store)
    with sqlite_store.transaction() as tx:
        audit.record(tx, "test", action, "subject", **whole)  # its own shape is recorded
    assert _count(sqlite_store) == before + 1
    if shape.required:
        missing = data.draw(st.sampled_from(sorted(shape.required)))
        for message in _record_each_way(sqlite_store, action, {k: v for k, v in whole.items() if k != missing}):
            assert repr(action) in message and f"missing key(s) {missing}" in message, message
    unknown = data.draw(UNKNOWN_KEY.filter(lambda key: key not in shape.keys))
    for message in _record_each_way(sqlite_store, action, dict(whole, **{unknown: "x"})):
        assert repr(action) in message and f"unknown key(s) {unknown}" in message, message
    stray = action + "_not_in_the_vocabulary"
    for message in _record_each_way(sqlite_store, stray, whole):
        assert repr(stray) in message and "not in the audit vocabulary" in message, message
    assert _count(sqlite_store) == before + 1  # nothing of a refused event, nor of its transaction


def test_the_docs_list_the_vocabulary():
    with open(DOCS, encoding="utf-8") as handle:
        text = handle.read()
    start = text.index("<!-- audit actions: from store/audit_actions.py (audit_actions.markdown()) -->\n")
    end = text.index("<!-- end of audit actions -->")
    listed = text[text.index("\n", start) + 1:end]
    assert listed == audit_actions.markdown(), "docs/audit.md: replace the table with audit_actions.markdown()"


def test_a_phone_s_change_may_tell_each_setting_it_records():
    """``phone.create``/``phone.update`` tell what ``phone_config.audit_event`` may put in them: every option
    and state column it writes (by option name) but the hidden ones, ``auth_change`` and ``via``."""
    written = {phone_config.COLUMN_OPTIONS.get(column, column) for column in phone_config.WRITE_COLUMNS
               if column not in phone_config.AUDIT_HIDDEN}
    for action in ("phone.create", "phone.update"):
        assert ACTIONS[action].keys == written | {"auth_change", "via"}, action


def _calls_of_record(path: str):
    """``(line, action, keys, open)`` of each ``audit.record`` call in ``path`` whose action is a literal:
    its keyword names, and whether it passes more (``**details``)."""
    with open(path, encoding="utf-8") as handle:
        tree = ast.parse(handle.read(), path)
    for node in ast.walk(tree):
        if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "record"
                and isinstance(node.func.value, ast.Name) and node.func.value.id == "audit" and len(node.args) >= 3
                and isinstance(node.args[2], ast.Constant)):
            keys = {keyword.arg for keyword in node.keywords if keyword.arg is not None}
            yield node.lineno, node.args[2].value, keys, len(keys) < len(node.keywords)


def test_every_literal_call_of_record_in_the_engine_and_the_benchmarks_has_its_action_s_shape():
    """What the runs of the tests cannot reach, the source says: every ``audit.record`` call naming its
    action names a known action, only keys of its shape, and (passing no more) every key it always carries."""
    paths = [os.path.join(folder, name) for base in ("plugins/module_utils/_opencapf", "bench")
             for folder, _dirs, names in os.walk(os.path.join(ROOT, base)) for name in names if name.endswith(".py")]
    calls = [(os.path.relpath(path, ROOT), *call) for path in paths for call in _calls_of_record(path)]
    assert len(calls) > 30, calls
    for path, line, action, keys, more in calls:
        where = f"{path}:{line}: {action}"
        assert action in ACTIONS, f"{where}: not in the audit vocabulary"
        assert keys <= ACTIONS[action].keys, f"{where}: unknown key(s) {sorted(keys - ACTIONS[action].keys)}"
        assert more or ACTIONS[action].required <= keys, f"{where}: missing {sorted(ACTIONS[action].required - keys)}"


# -- certificate.issued, whoever signs the LSC -----------------------------------------------------------

def _events(store, action: str) -> list[dict]:
    with store.read() as tx:
        return [dict(row, details=json.loads(row["details"])) for row in tx.query(
            "SELECT subject, details FROM audit_events WHERE action = ? ORDER BY id", (action,))]


def _lsc_row(store, certificate_id: int) -> dict:
    with store.read() as tx:
        return tx.one("SELECT id, serial, issuer, source, not_after, pem FROM certificates WHERE id = ?",
                      (certificate_id,))


def _issued_by_the_offline_ca(store, name: str) -> int:
    pki = EnterprisePki()
    trust.converge(store, content=pem(pki.root) + pem(pki.issuing), trust_store=["capf-trust"])
    signed = phone_csr(name, PHONE_KEY)
    with store.transaction() as tx:
        phone = create_phone(tx, name, operation="install_upgrade")
        csr_id = enrolment.add_request(tx, "test", phone, signed)
    certificate = pki.sign_request(signed.csr)
    result = enrolment.import_certificates(store, "test", [("signed.pem", (pem(certificate) + pem(pki.issuing)).encode())])
    assert result.matched == [name], result
    with store.read() as tx:
        return tx.scalar("SELECT certificate_id FROM csrs WHERE id = ?", (csr_id,))


@pytest.mark.parametrize("signer", ["capf", "offline_ca"])
def test_an_lsc_issued_is_told_in_one_shape_whoever_signs_it(ca_store, signer):
    name = "SEP0000000A0001"
    if signer == "capf":
        certificate_id = lsc.issue(ca_store, name, PHONE_KEY.public_key()).id
    else:
        certificate_id = _issued_by_the_offline_ca(ca_store, name)
    (event,) = _events(ca_store, "certificate.issued")
    row = _lsc_row(ca_store, certificate_id)
    certificate = c.load_pem_certificate(row["pem"])
    told = {key: value for key, value in event["details"].items() if key not in ("validity_capped", "validity_days")}
    assert event["subject"] == name  # (a CAPF certificate's LSC may also tell that its validity was shortened)
    assert told == {"certificate_id": row["id"], "serial": row["serial"], "issuer": row["issuer"],
                    "signer": c.common_name(certificate.issuer), "source": row["source"],
                    "not_after": row["not_after"]}


# -- csr.superseded, whatever supersedes the request ------------------------------------------------------

def _superseded_told(store, name: str) -> None:
    """Every superseded request of phone ``name`` is one csr.superseded event with its csr_id and stored reason."""
    with store.read() as tx:
        stored = {row["id"]: row["reason"] for row in tx.query(
            "SELECT r.id, r.reason FROM csrs r JOIN phones p ON p.id = r.phone_id "
            "WHERE p.name = ? AND r.status = 'superseded'", (name,))}
    told = [(event["details"]["csr_id"], event["details"]["reason"]) for event in _events(store, "csr.superseded")
            if event["subject"] == name]
    assert stored and sorted(told) == sorted(stored.items()), (stored, told)


def test_a_request_the_phone_replaced_is_told_superseded(ca_store):
    name = "SEP0000000A0002"
    with ca_store.transaction() as tx:
        phone = create_phone(tx, name, operation="install_upgrade")
        first = enrolment.add_request(tx, "test", phone, phone_csr(name, PHONE_KEY))
        enrolment.add_request(tx, "test", phone, phone_csr(name, ec.generate_private_key(ec.SECP256R1())))
    _superseded_told(ca_store, name)
    (created,) = [event for event in _events(ca_store, "csr.created") if event["details"]["superseded"]]
    assert created["details"]["superseded"] == [first]  # also listed by the request that replaced it


def test_a_request_whose_certificate_the_phone_refused_is_told_superseded(ca_store):
    name = "SEP0000000A0003"
    certificate_id = _issued_by_the_offline_ca(ca_store, name)
    with ca_store.transaction() as tx:
        assert enrolment.refused_delivery(tx, "test", phone_records.get(tx, name), certificate_id, session_id=7)
    _superseded_told(ca_store, name)
    (event,) = _events(ca_store, "csr.superseded")
    assert event["details"]["session_id"] == 7


def test_a_running_ca_records_an_event_of_another_shape_and_logs_it(sqlite_store, monkeypatch, caplog):
    """Outside strict mode (``OPENCAPF_AUDIT_STRICT``, which the tests set), a defect of an event's shape
    costs no change: the event is recorded as it is, and the error names the action and the key."""
    monkeypatch.setattr(audit_actions, "STRICT", False)
    with sqlite_store.transaction() as tx:
        audit.record(tx, "test", "certificate.installed", "SEP000000000001", certificate_id=1, extra=2)
    with sqlite_store.read() as tx:
        event = audit.events(tx, limit=1)[0]
    assert (event["action"], event["details"]) == ("certificate.installed", {"certificate_id": 1, "extra": 2})
    assert "audit action 'certificate.installed': unknown key(s) extra" in caplog.text
