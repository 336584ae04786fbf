"""Applying a declarative file is all or nothing. For any file whose sections before the last one
change the store in any way (trust, service parameters, a template and its devices, phones, a bulk
job writing a strings file), and whose last section then fails for a reason only the store knows
while applying (a bulk query naming a phone the store does not have, a setting that contradicts
what a phone has by then, an online CA hostname the HTTPS certificate in capf-trust does not name):

1. ``apply`` fails with the error naming its path in the file;
2. every table of the store holds exactly what it held before (``support.stores.dump``);
3. no strings file of a bulk item is written, nor left half-written beside its path.

A plan of the file fails with the same error; the same file without its failing part then applies
(its strings file written once it has).
"""

from __future__ import annotations

import csv
import json
import os

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from _opencapf.ca import authority
from _opencapf.declarative import deployment, document
from _opencapf.errors import CapfError
from _opencapf.store import open_store
from support import certfactory
from support.stores import dump

PROPERTY = settings(max_examples=40, deadline=None, derandomize=True,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
NAMES = ("SEP00000000D001", "SEP00000000D002", "SEP00000000D003")
FAILING = "SEP00000000DFA1"  # the phone the failing part makes encrypted, then gives auth_string
MISSING = "SEP00000000DFFF"  # never in the store
ROOTS = ("Atomic Root 1", "Atomic Root 2")

leading = st.fixed_dictionaries({
    "trust": st.lists(st.tuples(st.sampled_from(range(len(ROOTS))), st.sampled_from(("capf-trust", "callmanager-trust"))),
                      max_size=2, unique=True),
    "parameters": st.fixed_dictionaries({}, optional={"validity_days": st.sampled_from((365, 730, 1825)),
                                                      "keepalive_minutes": st.sampled_from((15, 20, 45))}),
    "template": st.sampled_from((None, "keep", "reapply")),
    "template_pool": st.sampled_from(("Lobby", "Hall")),
    "template_devices": st.lists(st.sampled_from(NAMES), unique=True, min_size=1, max_size=2),
    "template_generates": st.booleans(),
    "phones": st.lists(st.tuples(st.sampled_from(NAMES), st.sampled_from(("present", "present", "absent")),
                                 st.sampled_from((None, "Lobby", "Hall")), st.sampled_from((None, "desk", "wall"))),
                       max_size=3, unique_by=lambda item: item[0]),
    "bulk": st.sampled_from((None, "describe", "generate")),
})
failures = st.sampled_from(("unmatched_bulk_name", "phone_contradicts_its_template", "bulk_contradicts_a_phone",
                            "online_ca_hostname_not_trusted"))


def _leading(parts, files) -> dict:
    """The sections of a file that apply without error, from any state of the store."""
    data: dict = {"opencapf": 1}
    if parts["trust"]:
        data["trust"] = [{"path": files[f"root{index}"], "trust_store": where} for index, where in parts["trust"]]
    if parts["parameters"]:
        data["service"] = {"parameters": dict(parts["parameters"])}
    if parts["template"] is not None:
        template = {"name": "lobby", "device_pool": parts["template_pool"], "existing": parts["template"],
                    "devices": parts["template_devices"]}
        if parts["template_generates"]:
            template.update(authentication_mode="auth_string", generate_authentication_string=True)
        data["templates"] = [template]
    phones = []
    for name, state, pool, description in parts["phones"]:
        templated = parts["template"] is not None and name in parts["template_devices"]
        if state == "absent" and templated:
            continue  # a file that creates a device and removes it again never converges
        if templated and parts["template"] == "reapply":
            pool = None  # nor does one that reapplies a template's device_pool and then sets another
        item = {"name": name, "state": state}
        if state == "present":
            item.update({key: value for key, value in (("device_pool", pool), ("description", description)) if value})
        phones.append(item)
    if phones:
        data["phones"] = phones
    if parts["bulk"] == "describe":
        data["bulk"] = [{"query": {"device_pool": ["Lobby"]}, "set": {"description": "lobby phone"}}]
    elif parts["bulk"] == "generate":
        data["bulk"] = [{"query": {"names": list(NAMES[:2])}, "set": {"authentication_mode": "auth_string"},
                         "generate_authentication_strings": True, "strings_file": files["strings"]}]
    return data


def _with_failure(data: dict, failure: str, files) -> tuple[dict, str]:
    """``data`` with a last part that fails while applying, and the start of the error it must give."""
    data = json.loads(json.dumps(data))
    if failure == "unmatched_bulk_name":
        data.setdefault("bulk", []).append({"query": {"names": [MISSING]}, "set": {"description": "x"},
                                            "fail_on_unmatched": True})
        return data, f"bulk[{len(data['bulk']) - 1}].query.names names 1 device(s) that are not in the store"
    if failure == "online_ca_hostname_not_trusted":
        data.setdefault("trust", []).append({"path": files["https"], "trust_store": "capf-trust"})
        data.setdefault("service", {})["online_ca"] = {"hostname": "other.example.com", "type": "est"}
        return data, "service.online_ca.hostname must match the CN or a DNS name of the CA's HTTPS certificate"
    # An encrypted phone with an operation to do, made by a template of the file; the phones section
    # or a bulk job after it then asks for auth_string, which such a phone cannot use.
    data.setdefault("templates", []).append({
        "name": "secure", "security_mode": "encrypted", "authentication_mode": "null_string",
        "certificate_operation": "install_upgrade", "existing": "reapply", "devices": [FAILING]})
    if failure == "phone_contradicts_its_template":
        data.setdefault("phones", []).append({"name": FAILING, "authentication_mode": "auth_string",
                                              "authentication_string": "2468"})
        return data, f"phones[{len(data['phones']) - 1}].authentication_mode must not be auth_string"
    data.setdefault("bulk", []).append({"query": {"names": [FAILING]}, "set": {"authentication_mode": "auth_string"},
                                        "authentication_string": "2468"})
    return data, f"bulk[{len(data['bulk']) - 1}].phone {FAILING}: authentication_mode must not be auth_string"


@pytest.fixture
def files(tmp_path):
    made = {}
    for index, name in enumerate(ROOTS):
        made[f"root{index}"] = tmp_path / f"root{index}.pem"
        made[f"root{index}"].write_text(certfactory.pem(certfactory.make(name)[0]))
    made["https"] = tmp_path / "https.pem"
    made["https"].write_text(certfactory.pem(certfactory.make("ca.example.com", ca=False, dns=["ca.example.com"])[0]))
    out = tmp_path / "out"
    out.mkdir(mode=0o700)
    made["strings"] = out / "strings.csv"
    return {key: str(value) for key, value in made.items()}


@pytest.fixture
def seeded(store_on_both):
    """A store with a CAPF certificate and phones in it already."""
    authority.ensure(store_on_both)
    deployment.apply(store_on_both, document.parse(json.dumps({"opencapf": 1, "phones": [
        {"name": NAMES[0], "device_pool": "Lobby"}, {"name": NAMES[2], "description": "seeded"}]})))
    return store_on_both


@PROPERTY
@given(parts=leading, failure=failures)
def test_a_file_that_fails_while_applying_leaves_the_store_as_it_was(seeded, files, parts, failure):
    store = seeded
    strings = files["strings"]
    if os.path.exists(strings):
        os.unlink(strings)
    data, error = _with_failure(_leading(parts, files), failure, files)
    loaded = document.parse(json.dumps(data), "deploy.yml")
    before = dump(store)
    with open_store(store.location, state_dir=store.state_dir, read_only=True) as read_only:
        with pytest.raises(CapfError) as planned:
            deployment.plan(read_only, loaded)
    with pytest.raises(CapfError) as raised:
        deployment.apply(store, loaded)
    assert str(raised.value).startswith(error), str(raised.value)
    assert str(planned.value) == str(raised.value), "the plan foretells the error"
    assert dump(store) == before, "a failed apply left part of the file in the store"
    assert os.listdir(os.path.dirname(strings)) == [], "a failed apply wrote a strings file"

    # Without the failing part, the same file applies, all of it.
    good = document.parse(json.dumps(_leading(parts, files)), "deploy.yml")
    applied = deployment.apply(store, good)
    listing = os.listdir(os.path.dirname(strings))
    assert listing == ([] if parts["bulk"] != "generate" else listing) and listing in ([], ["strings.csv"])
    if listing:  # the bulk job's strings, as the store now holds them
        with open(strings, encoding="ascii") as handle:
            rows = list(csv.reader(handle))[1:]
        assert rows and all(applied.generated_strings[name] == value for name, value in rows)
    assert applied.changed == (dump(store) != before)
