"""What check mode predicts is what the real run does. For any starting state of the store and any
request through an engine entry point the modules call (``phone_config.converge`` for capf_phone,
``bulk.converge`` for capf_bulk_update and CSV imports, ``templates.define``/``apply``, ``trust.converge``,
``service_config.converge``):

1. the check-mode result (``changed``, before/after, and every count and list it returns) equals the
   result of the real run made next from the same state, and check mode writes nothing;
2. the real run's before/after is the store's actual difference (read before and after);
3. a second identical real run reports ``changed: false``, before == after, and writes nothing;
4. no secret (authentication string, password, key) is in a before/after.

A generated authentication string is the one thing check mode cannot know: the real run returns it once,
check mode returns ``(to be generated)`` in its place. A "now" a result stamps (``revoked_at``) is compared without its value.
"""

from __future__ import annotations

import json

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from _opencapf import bulk, parameters, phone_config, phone_query, service_config, templates, trust
from _opencapf.ca import lsc
from _opencapf.declarative import deployment, document
from _opencapf.errors import CapfError
from _opencapf.store import certificates as certificate_records
from _opencapf.store import open_store
from _opencapf.store import phones as phone_records
from _opencapf.vocabulary import NO_DEADLINE, REVOCATION_REASONS
from support import certfactory
from support.protocol import add_phone

pytestmark = pytest.mark.both_backends

PROPERTY = settings(max_examples=150, deadline=None, derandomize=True,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
NAMES = ("SEP00000000C001", "SEP00000000C002")
NEW_NAME = "SEP00000000C0FE"  # a phone a CSV import may create
STRING = "24681357"
OTHER_STRING = "97531864"
SECRETS = (STRING, OTHER_STRING)

phone_states = st.fixed_dictionaries({
    "exists": st.booleans(),
    "operation": st.sampled_from(("none", "install_upgrade", "delete", "troubleshoot")),
    "status": st.sampled_from(("as_armed", "succeeded", "failed", "lapsed")),
    "auth": st.sampled_from(("null_string", "auth_string", "existing_cert_mic")),
    "security_mode": st.sampled_from(("non_secure", "encrypted")),
    "locked": st.booleans(),
    "lscs": st.integers(0, 2),
    "deadline": st.sampled_from((None, "2030-01-01T00:00:00Z")),
})

requests = st.fixed_dictionaries({
    "name": st.sampled_from(NAMES),
    "state": st.sampled_from(("present", "present", "present", "absent")),
    "settings": st.fixed_dictionaries({}, optional={
        "certificate_operation": st.sampled_from(("none", "install_upgrade", "delete")),
        "authentication_mode": st.sampled_from(("null_string", "auth_string", "existing_cert_lsc")),
        "security_mode": st.sampled_from(("non_secure", "authenticated")),
        "device_pool": st.sampled_from(("", "Lobby")),
        "key_order": st.sampled_from(("rsa", "ec")),
        "operation_completes_by": st.sampled_from(("2030-01-01T00:00:00Z", "2031-06-01T00:00:00Z", NO_DEADLINE)),
    }),
    "auth": st.sampled_from(("none", "literal", "other_literal", "generate", "regenerate")),
    "reissue": st.booleans(),
    "revoke": st.sampled_from((None, "all", "first_serial", "unknown_serial")),
})


def _set_up_phone(store, name, state, key):
    """Put phone ``name`` in ``state`` through the store's own operations (as sessions leave phones)."""
    with store.transaction() as tx:
        phone_records.delete(tx, "test", name)
    if not state["exists"]:
        return
    auth = state["auth"]
    if auth == "auth_string" and state["security_mode"] != "non_secure":
        auth = "null_string"
    add_phone(store, name, operation=state["operation"], auth_mode=auth, security_mode=state["security_mode"],
              auth_string=STRING if auth == "auth_string" else None, locked=int(state["locked"]),
              auth_failures=3 if state["locked"] else 0, operation_deadline=state["deadline"])
    for _index in range(state["lscs"]):
        issued = lsc.issue(store, name, key.public_key(), source="capf", validity_days=30)
        with store.transaction() as tx:
            certificate_records.install(tx, "test", phone_records.get(tx, name), issued.id)
    if state["status"] != "as_armed" and state["operation"] != "none":
        with store.transaction() as tx:
            phone_records.set_operation_result(tx, "test", phone_records.get(tx, name), state["status"], "test")


def snapshot(store) -> dict:
    """Everything a phone change may touch, read back from the store: the phones' rows (their
    keyed hashes included), their LSCs, and how many audit events there are."""
    with store.read() as tx:
        phones = {}
        for name, row in phone_records.by_name(tx, NAMES + (NEW_NAME,)).items():
            lscs = [{key: item[key] for key in ("serial", "status", "revocation_reason")}
                    for item in certificate_records.for_phone(tx, row["id"], "lsc")]
            phones[name] = dict({column: row[column] for column in phone_config.WRITE_COLUMNS}, lscs=lscs)
        return {"phones": phones, "audit": tx.scalar("SELECT count(*) FROM audit_events")}


def _attempt(call):
    try:
        return call(), None
    except CapfError as exc:
        return None, str(exc)


def _check_then_run(call, read, before):
    """``call(check_mode)`` in check mode, then for real, from the state ``before`` (as ``read()`` gives
    it): check mode wrote nothing, both failed alike or neither did, and a failed run wrote nothing
    either. Returns (the check's result, the run's result (None: it failed), the state after)."""
    check, check_error = _attempt(lambda: call(True))
    assert read() == before, "check mode wrote to the store"
    real, real_error = _attempt(lambda: call(False))
    after = read()
    assert check_error == real_error
    if real is None:
        assert after == before
    return check, real, after


def _without_now(value):
    """A result with every ``revoked_at`` (stamped with the moment of the run) blanked."""
    if isinstance(value, dict):
        return {key: "(now)" if key == "revoked_at" else _without_now(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_without_now(item) for item in value]
    return value


def _stored_view(snap: dict, name: str, now=None) -> dict | None:
    """The reviewer's view of phone ``name`` as the store holds it (``settings_view`` of its row), its
    operation as reported at ``now`` (default: the current time)."""
    row = snap["phones"].get(name)
    return None if row is None else phone_config.settings_view(dict(row, name=name), now=now)


def _phone_call(store, request, serials, check_mode):
    auth = phone_config.AuthRequest(
        literal={"literal": STRING, "other_literal": OTHER_STRING}.get(request["auth"]),
        generate=request["auth"] in ("generate", "regenerate"), regenerate=request["auth"] == "regenerate")
    revoke = None
    if request["revoke"] is not None:
        revoke = {"reason": REVOCATION_REASONS[1]}
        if request["revoke"] == "first_serial":
            revoke["serial"] = serials[0] if serials else "7f7f7f"
        elif request["revoke"] == "unknown_serial":
            revoke["serial"] = "7f7f7f"
    return phone_config.converge(store, request["name"], state=request["state"], settings=request["settings"],
                                 auth=auth, reissue=request["reissue"], revoke=revoke, check_mode=check_mode)


@PROPERTY
@given(states=st.tuples(phone_states, phone_states), request=requests)
def test_capf_phone_check_mode_predicts_the_real_run_and_the_real_diff_is_the_store_s(ca_store, rsa_phone_key,
                                                                                      states, request):
    store = ca_store
    for name, state in zip(NAMES, states):
        _set_up_phone(store, name, state, rsa_phone_key)
    before = snapshot(store)
    current = before["phones"].get(request["name"])
    serials = [item["serial"] for item in current["lscs"]] if current else []

    # 1. The prediction is the run: the same error, or the same result (but the string generated).
    check, real, after = _check_then_run(lambda check_mode: _phone_call(store, request, serials, check_mode),
                                         lambda: snapshot(store), before)
    if real is None:
        return
    generated = real.pop("authentication_string", None)
    assert check.pop("authentication_string", None) == (phone_config.TO_BE_GENERATED if generated else None)
    assert _without_now(check) == _without_now(real)
    # 2. The diff is the store's difference.
    assert real["changed"] == (after != before)
    name = request["name"]
    shown_before = {key: value for key, value in (real["before"] or {}).items() if key != "lscs"}
    assert (shown_before or None) == _stored_view(before, name)
    if request["state"] == "absent":
        assert real["after"] is None and name not in after["phones"]
        assert sorted(real["revoked"]) == sorted(item["serial"] for item in (current or {}).get("lscs", ())
                                                 if item["status"] in ("issued", "installed"))
        with store.read() as tx:  # revoked, and kept on the CRL
            assert {row["serial"] for row in certificate_records.revoked_lscs(tx)} >= set(real["revoked"])
    else:
        shown = {k: v for k, v in real["after"].items() if k != "lscs"}
        stored = _stored_view(after, name)
        assert shown["authentication_string"] in ("(new)", "(changed)", "(set)", "(unset)")
        assert dict(shown, authentication_string=stored["authentication_string"]) == stored
        assert (shown["authentication_string"] != "(set)") == (before["phones"].get(name, {}).get("auth_hash")
                                                               != after["phones"][name]["auth_hash"]
                                                               and stored["authentication_string"] == "(set)"
                                                               or shown["authentication_string"] == "(unset)")
        with store.read() as tx:
            assert real["status"] == phone_query.phone_status(tx, name)
        revoked = {item["serial"] for item in (real["after"].get("lscs") or ())}
        assert revoked == set(real.get("revoked", ())), "the diff's LSCs are those revoked"
        for item in after["phones"][name]["lscs"]:
            was = {lsc_row["serial"]: lsc_row for lsc_row in current["lscs"]} if current else {}
            if item["serial"] in revoked:
                assert item["status"] == "revoked" and was[item["serial"]]["status"] != "revoked"
            else:
                assert item == was.get(item["serial"], item)
    # 4. No secret in the diff.
    shown_text = json.dumps([real["before"], real["after"]])
    assert not any(secret in shown_text for secret in SECRETS + ((generated,) if generated else ()))
    # 3. The same request again changes nothing (a string regenerated on request is new each time).
    if request["auth"] == "regenerate" and request["state"] == "present":
        return
    again = _phone_call(store, request, serials, False)
    assert again["changed"] is False and again["before"] == again["after"] or request["state"] == "absent" \
        and again["before"] is None
    assert snapshot(store) == after


bulk_requests = st.fixed_dictionaries({
    "source": st.sampled_from(("query", "query", "csv")),
    "query": st.sampled_from(({"names": list(NAMES)}, {"names": [NAMES[0], "SEP00000000C0FF"]},
                              {"operation_status": ["failed", "lapsed", "none"]}, {"locked": True})),
    "settings": requests.map(lambda request: request["settings"]),
    "auth": st.sampled_from(("none", "literal", "generate", "regenerate")),
    "reissue": st.booleans(),
    "csv_rows": st.lists(st.tuples(st.sampled_from(NAMES + (NEW_NAME,)),
                                   st.sampled_from(("", "Lobby")), st.sampled_from(("none", "install_upgrade")),
                                   st.sampled_from(("", STRING, "generate"))),
                         min_size=1, max_size=3, unique_by=lambda row: row[0]),
})


def _bulk_call(store, request, strings_file, check_mode):
    arguments = {"reissue": request["reissue"], "strings_file": strings_file, "check_mode": check_mode}
    if request["source"] == "csv":
        lines = ["device_name,device_pool,certificate_operation,authentication_mode,authentication_string"]
        lines += [f"{name},{pool},{operation},{'auth_string' if auth else 'null_string'},{auth}"
                  for name, pool, operation, auth in request["csv_rows"]]
        return bulk.converge(store, csv_content="\n".join(lines) + "\n", **arguments)
    auth = request["auth"]
    return bulk.converge(store, query=request["query"], settings=request["settings"],
                         authentication_string=STRING if auth == "literal" else None,
                         generate_authentication_strings=auth in ("generate", "regenerate"),
                         regenerate_authentication_strings=auth == "regenerate", **arguments)


def _changed_fields(view_before, view_after):
    keys = [key for key in view_after if view_after[key] != view_before.get(key)]
    return {key: view_before[key] for key in keys}, {key: view_after[key] for key in keys}


@PROPERTY
@given(states=st.tuples(phone_states, phone_states), request=bulk_requests)
def test_bulk_and_csv_check_mode_predicts_the_real_run_and_the_real_diff_is_the_store_s(ca_store, rsa_phone_key,
                                                                                        tmp_path, states, request):
    store = ca_store
    for name in NAMES + (NEW_NAME,):
        _set_up_phone(store, name, {"exists": False}, rsa_phone_key)
    for name, state in zip(NAMES, states):
        _set_up_phone(store, name, dict(state, lscs=0), rsa_phone_key)
    strings_file = str(tmp_path / "strings.csv")
    before = snapshot(store)

    check, real, after = _check_then_run(lambda check_mode: _bulk_call(store, request, strings_file, check_mode),
                                         lambda: snapshot(store), before)
    if real is None:
        return
    # 1. The prediction is the run: every count and list, the phones that get a generated string.
    generated = {item["device_name"]: item["authentication_string"] for item in real["authentication_strings"]}
    assert {item["device_name"]: item["authentication_string"] for item in check["authentication_strings"]} == {
        name: phone_config.TO_BE_GENERATED for name in generated}
    assert dict(check, authentication_strings=None) == dict(real, authentication_strings=None)
    # 2. The diff is the store's difference, phone by phone.
    assert real["changed"] == (after != before)
    changed = {name for name in set(before["phones"]) | set(after["phones"])
               if before["phones"].get(name) != after["phones"].get(name)}
    assert set(real["after"]["phones"]) == changed
    for name in changed:
        stored_after = _stored_view(after, name)
        if name not in before["phones"]:
            assert real["before"]["phones"][name] is None
            shown = real["after"]["phones"][name]
        else:
            stored_before, stored_after = _changed_fields(_stored_view(before, name), stored_after)
            assert {key: value for key, value in real["before"]["phones"][name].items()
                    if key != "authentication_string"} == {key: value for key, value in stored_before.items()
                                                           if key != "authentication_string"}
            shown = real["after"]["phones"][name]
        assert {key: value for key, value in shown.items() if key != "authentication_string"} == {
            key: value for key, value in stored_after.items() if key != "authentication_string"}
    # 4. No secret in the diff.
    shown_text = json.dumps([real["before"], real["after"]])
    assert not any(secret in shown_text for secret in SECRETS + tuple(generated.values()))
    # 3. Idempotence (regenerating strings is new strings each time, by request).
    if request["auth"] == "regenerate" and request["source"] == "query":
        return
    again = _bulk_call(store, request, strings_file, False)
    assert again["changed"] is False and again["after"] == {"phones": {}} and again["authentication_strings"] == []
    assert snapshot(store) == after


documents = st.fixed_dictionaries({
    "template": st.sampled_from((None, "keep", "reapply")),
    "template_before": st.sampled_from((None, "Lobby", "Hall")),
    "template_devices": st.lists(st.sampled_from(NAMES + (NEW_NAME,)), unique=True, min_size=1, max_size=2),
    "phones": st.lists(st.tuples(st.sampled_from(NAMES + (NEW_NAME,)), st.sampled_from(("present", "absent")),
                                 st.sampled_from((None, "8841")), st.booleans()),
                       max_size=3, unique_by=lambda item: item[0]),
    "bulk": st.sampled_from((None, {"query": {"device_pool": ["Lobby"]}},
                             {"query": {"names": [NAMES[0], NEW_NAME]}})),
})


def _document(parts) -> str:
    data: dict = {"opencapf": 1}
    if parts["template"] is not None:
        data["templates"] = [{"name": "lobby", "device_pool": "Lobby", "existing": parts["template"],
                              "devices": parts["template_devices"]}]
    if parts["phones"]:
        data["phones"] = []  # may stay empty
        for name, state, model, generate in parts["phones"]:
            if state == "absent" and "templates" in data and name in parts["template_devices"]:
                continue  # a file that creates a device and removes it again never converges
            item = {"name": name, "state": state}
            if state == "present" and model:
                item["model"] = model
            if state == "present" and generate:
                item.update(authentication_mode="auth_string", generate_authentication_string=True)
            data["phones"].append(item)
    if parts["bulk"] is not None:
        data["bulk"] = [dict(parts["bulk"], name="lobby", set={"description": "lobby phone"})]
    return json.dumps(data)


def _report(report) -> dict:
    return {"changes": [(item.section, item.item, item.action, item.details) for item in report.changes],
            "counts": report.counts, "warnings": report.warnings, "generated": sorted(report.generated_strings)}


@PROPERTY
@given(states=st.tuples(phone_states, phone_states), parts=documents)
def test_a_declarative_plan_is_what_apply_then_does_section_after_section(ca_store, rsa_phone_key, states, parts):
    """Sections depend on those before them (a template creates a phone the phones section then
    updates, a bulk query matches phones created or changed before it): the plan, made on a read-only
    store as ``opencapf plan`` does, must show what ``apply`` then does."""
    store = ca_store
    for name in NAMES + (NEW_NAME,):
        _set_up_phone(store, name, {"exists": False}, rsa_phone_key)
    for name, state in zip(NAMES, states):
        _set_up_phone(store, name, dict(state, lscs=0, auth="null_string"), rsa_phone_key)
    templates.remove(store, "lobby")
    if parts["template_before"] is not None:
        templates.define(store, "lobby", {"device_pool": parts["template_before"]})
    loaded = document.parse(_document(parts))
    before = snapshot(store)

    with open_store(store.location, state_dir=store.state_dir, read_only=True) as read_only:
        planned, plan_error = _attempt(lambda: deployment.plan(read_only, loaded))
    assert snapshot(store) == before, "the plan wrote to the store"
    applied, apply_error = _attempt(lambda: deployment.apply(store, loaded))
    assert plan_error == apply_error
    if applied is None:
        return
    assert _report(planned) == _report(applied)
    assert set(planned.generated_strings.values()) <= {phone_config.TO_BE_GENERATED}
    after = snapshot(store)
    assert applied.changed == (after != before)
    with open_store(store.location, state_dir=store.state_dir, read_only=True) as read_only:
        assert not deployment.plan(read_only, loaded).changed
    assert not deployment.apply(store, loaded).changed
    assert snapshot(store) == after


def test_a_plan_trusts_the_https_certificate_its_trust_section_adds_and_writes_no_strings_file(store, tmp_path):
    """The online CA of the service section is checked against capf-trust as the trust section before
    it leaves it (the plan failed where apply succeeds); strings a bulk job generates are named, not
    written, by the plan."""
    old = certfactory.make("old-ca.example.com", ca=False, dns=["old-ca.example.com"])[0]
    trust.converge(store, content=certfactory.pem(old), trust_store="capf-trust")
    https = tmp_path / "https.pem"
    https.write_text(certfactory.pem(certfactory.make("ca.example.com", ca=False, dns=["ca.example.com"])[0]))
    phone_config.converge(store, NAMES[0])
    strings = tmp_path / "strings.csv"
    loaded = document.parse(json.dumps({
        "opencapf": 1, "trust": [{"path": str(https), "trust_store": "capf-trust"}],
        "service": {"online_ca": {"hostname": "ca.example.com", "type": "est"}},
        "bulk": [{"query": {"names": [NAMES[0]]}, "set": {"authentication_mode": "auth_string"},
                  "generate_authentication_strings": True, "strings_file": str(strings)}]}))
    with open_store(store.location, state_dir=store.state_dir, read_only=True) as read_only:
        planned = deployment.plan(read_only, loaded)
    assert not strings.exists()
    assert planned.generated_strings == {NAMES[0]: phone_config.TO_BE_GENERATED}
    applied = deployment.apply(store, loaded)
    assert _report(planned) == _report(applied)
    assert strings.read_text().startswith("device_name,authentication_string\n" + NAMES[0] + ",")


TRUST_CERTIFICATES = [certfactory.make(f"Check Truth Root {index}")[0] for index in range(3)]
trust_states = st.lists(st.tuples(st.sampled_from(range(3)), st.sampled_from(("capf-trust", "callmanager-trust")),
                                  st.sampled_from(("", "kept"))), max_size=4, unique_by=lambda item: item[:2])
trust_requests = st.fixed_dictionaries({
    "state": st.sampled_from(("present", "absent")),
    "certificates": st.lists(st.sampled_from(range(3)), min_size=1, max_size=3),
    "trust_store": st.sampled_from(("capf-trust", ["capf-trust", "callmanager-trust"])),
    "description": st.sampled_from((None, "kept", "new")),
    "by_fingerprint": st.booleans(),
})


def _trust_snapshot(store) -> dict:
    with store.read() as tx:
        return {"trust": {store_name: trust.list_certificates(tx, store_name)
                          for store_name in ("callmanager-trust", "capf-trust")},
                "audit": tx.scalar("SELECT count(*) FROM audit_events")}


def _trust_call(store, request, check_mode):
    chosen = [TRUST_CERTIFICATES[index] for index in request["certificates"]]
    if request["state"] == "absent" and request["by_fingerprint"]:
        prints = [trust.c.fingerprint(item) for item in chosen]
        prints = [value.upper() if index % 2 else value for index, value in enumerate(prints)]
        return trust.converge(store, state="absent", fingerprints=prints, trust_store=request["trust_store"],
                              check_mode=check_mode)
    content = "".join(certfactory.pem(item) for item in chosen)
    return trust.converge(store, state=request["state"], content=content, trust_store=request["trust_store"],
                          description=request["description"] if request["state"] == "present" else None,
                          check_mode=check_mode)


@PROPERTY
@given(state=trust_states, request=trust_requests)
def test_trust_check_mode_predicts_the_real_run_and_the_real_diff_is_the_store_s(store, state, request):
    """Certificates named twice (a chain holding one twice, a fingerprint in two spellings) are one
    change: the result lists each certificate added or removed once, as the store changes once."""
    every = [trust.c.fingerprint(item) for item in TRUST_CERTIFICATES]
    trust.converge(store, state="absent", fingerprints=every)
    for index, where, description in state:
        trust.converge(store, content=certfactory.pem(TRUST_CERTIFICATES[index]), trust_store=where,
                       description=description)
    before = _trust_snapshot(store)
    check, real, after = _check_then_run(lambda check_mode: _trust_call(store, request, check_mode),
                                         lambda: _trust_snapshot(store), before)
    if real is None:
        return
    assert check == real
    assert real["changed"] == (after != before)
    for store_name, items in real["before"].items():
        assert items == before["trust"][store_name]
    for store_name, items in real["after"].items():
        assert items == after["trust"][store_name]
    added = {(item["trust_store"], item["fingerprint"]) for item in real["added"]}
    removed = {(item["trust_store"], item["fingerprint"]) for item in real["removed"]}
    assert len(added) == len(real["added"]) and len(removed) == len(real["removed"])

    def held(snap):
        return {(name, item["fingerprint"]) for name, items in snap["trust"].items() for item in items}
    assert added == held(after) - held(before) and removed == held(before) - held(after)
    again = _trust_call(store, request, False)
    assert again["changed"] is False and again["before"] == again["after"]
    assert _trust_snapshot(store) == after


template_settings = st.fixed_dictionaries({}, optional={
    "device_pool": st.sampled_from(("Lobby", "Hall")),
    "description": st.sampled_from(("Phone {device_name}", "Lobby phone")),
    "certificate_operation": st.sampled_from(("none", "install_upgrade")),
    "operation_completes_in_days": st.sampled_from((7, 30)),
    "authentication_mode": st.just("auth_string"),
})
template_strings = st.sampled_from(("none", "literal", "other_literal", "generate"))
NOW = "2026-01-01T00:00:00Z"


def _template_settings(settings_, string):
    result = dict(settings_)
    if result.get("authentication_mode") != "auth_string":
        return result
    if string in ("literal", "other_literal"):
        result["authentication_string"] = STRING if string == "literal" else OTHER_STRING
    else:
        result["generate_authentication_string"] = True
    return result


def _template_snapshot(store) -> dict:
    return dict(snapshot(store), template=templates.get(store, "truth"))


@PROPERTY
@given(states=st.tuples(phone_states, phone_states), first=template_settings, first_string=template_strings,
       wanted=template_settings, wanted_string=template_strings, existing=st.sampled_from(("keep", "reapply")),
       devices=st.lists(st.sampled_from(NAMES + (NEW_NAME,)), unique=True, max_size=3))
def test_templates_check_mode_predicts_the_real_run_and_the_real_diff_is_the_store_s(
        ca_store, rsa_phone_key, states, first, first_string, wanted, wanted_string, existing, devices):
    store = ca_store
    for name in NAMES + (NEW_NAME,):
        _set_up_phone(store, name, {"exists": False}, rsa_phone_key)
    for name, state in zip(NAMES, states):
        _set_up_phone(store, name, dict(state, lscs=0, auth="null_string", security_mode="non_secure"), rsa_phone_key)
    templates.remove(store, "truth")
    if first_string != "none":
        templates.define(store, "truth", _template_settings(first, first_string))
    settings_ = _template_settings(wanted, wanted_string)

    def run(call):
        before = _template_snapshot(store)
        check, real, after = _check_then_run(call, lambda: _template_snapshot(store), before)
        if real is not None:
            real_strings = real.get("authentication_strings") or []
            if real_strings:
                assert check["authentication_strings"] == [dict(item, authentication_string=phone_config.TO_BE_GENERATED)
                                                           for item in real_strings]
            assert dict(check, authentication_strings=None) == dict(real, authentication_strings=None)
            assert real["changed"] == (after != before)
            shown = json.dumps([real["before"], real["after"]])
            assert not any(secret in shown for secret in SECRETS)
            assert not any(item["authentication_string"] in shown for item in real_strings)
            again = call(False)
            assert again["changed"] is False and _template_snapshot(store) == after
        return real, before, after

    defined, before, after = run(lambda check_mode: templates.define(store, "truth", settings_,
                                                                     check_mode=check_mode))
    if defined is None:
        return
    string_view = defined["after"].get("authentication_string")
    assert dict(defined["after"], **({"authentication_string": "(set)"} if string_view else {})) == after["template"]
    assert defined["before"] == before["template"]
    applied, before, after = run(lambda check_mode: templates.apply(
        store, "truth", devices, via="template", existing=existing, check_mode=check_mode, now=NOW))
    for name in devices:
        if name in applied["after"]["phones"]:
            stored = _stored_view(after, name, now=NOW)  # the moment the template was applied at
            shown = applied["after"]["phones"][name]
            assert {key: value for key, value in shown.items() if key != "authentication_string"} == {
                key: stored[key] for key in shown if key != "authentication_string"}
        else:
            assert before["phones"].get(name) == after["phones"].get(name)


SERVICE_PARAMETERS = ("validity_days", "key_order", "listen_addresses", "lockout_failures")
service_parameters = st.fixed_dictionaries({}, optional={
    "validity_days": st.sampled_from((365, 1825)),
    "key_order": st.sampled_from(("rsa", "ec")),
    "listen_addresses": st.sampled_from((["0.0.0.0"], ["127.0.0.1", "::1"])),
    "lockout_failures": st.sampled_from((3, 5)),
})
service_requests = st.fixed_dictionaries({
    "parameters": service_parameters,
    "online_ca": st.sampled_from((None, {"hostname": "ca.example.com", "type": "est"},
                                  {"hostname": "CA.example.com.", "type": "est", "port": 443},
                                  {"hostname": "ca2.example.com", "type": "est", "profile_label": "phones"})),
    "password": st.sampled_from((None, "first-Secret-1", "second-Secret-2")),
    "update_password": st.sampled_from(("always", "on_create")),
})


def _service_call(store, request, check_mode):
    online_ca = request["online_ca"]
    if online_ca is not None and request["password"] is not None:
        online_ca = dict(online_ca, password=request["password"])
    return service_config.converge(store, parameters_wanted=request["parameters"], online_ca=online_ca,
                                   update_password=request["update_password"], check_mode=check_mode)


def _as_stored(view):
    """A view after a change as the store then shows it: a new or changed secret is ``(set)``."""
    if isinstance(view, dict):
        return {key: _as_stored(value) for key, value in view.items()}
    return "(set)" if view in ("(new)", "(changed)") else view


@PROPERTY
@given(start=service_requests, request=service_requests)
def test_service_check_mode_predicts_the_real_run_and_the_real_diff_is_the_store_s(ca_store, start, request):
    store = ca_store
    defaults = {name: parameters.defaults()[name] for name in SERVICE_PARAMETERS}
    service_config.converge(store, parameters_wanted=dict(defaults, **start["parameters"]))
    _attempt(lambda: _service_call(store, start, False))
    before = service_config.converge(store, check_mode=True)["before"]
    audit_before = snapshot(store)["audit"]
    check, check_error = _attempt(lambda: _service_call(store, request, True))
    assert snapshot(store)["audit"] == audit_before, "check mode wrote to the store"
    real, real_error = _attempt(lambda: _service_call(store, request, False))
    assert check_error == real_error
    if real is None:
        return
    assert check == real
    assert real["before"] == before
    stored_after = service_config.converge(store, check_mode=True)["before"]
    for key in stored_after["parameters"]:
        assert real["after"]["parameters"][key] == stored_after["parameters"][key], key
    assert _as_stored(real["after"]) == stored_after
    assert real["changed"] == (stored_after != before or real["online_ca_changed"])
    shown = json.dumps([real["before"], real["after"]])
    assert "Secret" not in shown
    audit_after = snapshot(store)["audit"]
    again = _service_call(store, request, False)
    assert again["changed"] is False and again["before"] == again["after"]
    assert snapshot(store)["audit"] == audit_after
