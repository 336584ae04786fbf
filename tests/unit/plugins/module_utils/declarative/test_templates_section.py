"""The ``templates`` section of the declarative file: its schema follows the engine, plan writes
nothing, apply defines the templates and creates the devices they list, a second plan is empty, and
every error names its path in the file with nothing written."""

from __future__ import annotations

import pytest

from _opencapf import templates, vocabulary as v
from _opencapf.declarative import deployment, document, schema
from _opencapf.errors import ValidationError
from _opencapf.store import open_store

FILE = """\
opencapf: 1
templates:
  - name: Jabber softphones
    description: "Softphone {device_name}"
    device_pool: Softphones
    certificate_operation: install_upgrade
    authentication_mode: auth_string
    generate_authentication_string: true
    operation_completes_in_days: 14
    devices: [csfjsmith, CSFADOE, CSFKEPT]
  - name: Desk phones
    authentication_mode: existing_cert_mic
    certificate_operation: install_upgrade
    variables: {site: HQ}
    description: "{site} desk phone"
    devices: [SEP001122334455]
phones:
  - name: CSFKEPT
    device_pool: Mine
"""


def _state(store):
    with store.read() as tx:
        return (tx.query("SELECT * FROM phones ORDER BY name"), tx.query("SELECT * FROM device_templates ORDER BY name"),
                tx.scalar("SELECT count(*) FROM audit_events"))


def test_schema_follows_the_engine():
    item = schema.schema()["properties"]["templates"]["items"]
    assert set(item["properties"]) == set(templates.OPTIONS) | {"name", "state", "devices", "variables", "existing"}
    assert item["properties"]["existing"]["enum"] == list(v.TEMPLATE_EXISTING)
    assert (item["properties"]["operation_completes_in_days"]["minimum"],
            item["properties"]["operation_completes_in_days"]["maximum"]) == v.DEADLINE_DAYS


def test_plan_apply_plan(store_on_both):
    store = store_on_both
    loaded = document.parse(FILE, "deploy.yml")
    # A device that exists already keeps its CAPF settings.
    deployment.apply(store, document.parse("opencapf: 1\nphones:\n  - name: CSFKEPT\n    device_pool: Mine\n"))
    before = _state(store)
    planned = deployment.plan(store, loaded)
    assert _state(store) == before, "plan writes nothing"
    assert planned.counts["templates"] == {"declared": 2, "created": 2, "updated": 0, "deleted": 0,
                                           "devices_created": 3, "devices_updated": 0}
    assert planned.generated_strings == {}
    applied = deployment.apply(store, loaded)
    assert [(c.section, c.item, c.action) for c in applied.changes] == [
        ("templates", "Jabber softphones", "create"), ("templates", "Jabber softphones applied", "run"),
        ("templates", "Desk phones", "create"), ("templates", "Desk phones applied", "run")]
    assert sorted(applied.generated_strings) == ["CSFADOE", "CSFJSMITH"]
    with store.read() as tx:
        rows = {row["name"]: row for row in tx.query("SELECT * FROM phones")}
    assert rows["CSFJSMITH"]["description"] == "Softphone CSFJSMITH" and rows["CSFJSMITH"]["operation_deadline"]
    assert rows["SEP001122334455"]["description"] == "HQ desk phone"
    assert rows["CSFKEPT"]["device_pool"] == "Mine" and rows["CSFKEPT"]["operation"] == "none"
    again = deployment.plan(store, loaded)
    assert not again.changed and deployment.render(again) == "no changes"
    assert not deployment.apply(store, loaded).changed
    reapplied = document.parse(FILE.replace("devices: [csfjsmith", "existing: reapply\n    devices: [csfjsmith"))
    changes = deployment.apply(store, reapplied)
    assert changes.counts["templates"]["devices_updated"] == 1 and list(changes.generated_strings) == ["CSFKEPT"]
    # The phones section comes after the templates: what it declares of a device wins.
    assert changes.counts["phones"]["updated"] == 1
    removed = document.parse("opencapf: 1\ntemplates:\n  - name: Desk phones\n    state: absent\n")
    assert [(c.item, c.action) for c in deployment.apply(store, removed).changes] == [("Desk phones", "delete")]
    assert [view["name"] for view in templates.list_all(store)] == ["Jabber softphones"]


@pytest.mark.parametrize("text,expected", [
    ("opencapf: 1\ntemplates:\n  - name: A\n  - name: B\n    operation_completes_in_days: 0\n",
     "templates[1].operation_completes_in_days: must be 1\u20133650 days, got 0"),
    ("opencapf: 1\ntemplates:\n  - name: A\n    colour: blue\n", "templates[0].colour: is not a known field"),
    ("opencapf: 1\ntemplates:\n  - name: ' -A'\n", "templates[0].name: " + v.TEMPLATE_NAME_RULE),
    ("opencapf: 1\ntemplates:\n  - name: A\n    existing: replace\n", "templates[0].existing: must be one of keep, reapply"),
    ("opencapf: 1\ntemplates:\n  - name: A\n    devices: [SEP12]\n", "templates[0].devices[0]: must be SEP"),
    ("opencapf: 1\ntemplates:\n  - name: A\n    variables: {1x: a}\n", "templates[0].variables"),
])
def test_schema_errors_name_the_path(text, expected):
    with pytest.raises(document.DocumentError) as caught:
        document.parse(text, "deploy.yml")
    assert any(problem.startswith(expected) for problem in caught.value.problems), caught.value.problems


@pytest.mark.parametrize("item,expected", [
    ("    security_mode: encrypted\n    certificate_operation: install_upgrade\n    authentication_mode: auth_string\n"
     "    generate_authentication_string: true\n", "templates[1].authentication_mode must not be auth_string"),
    ("    operation_completes_in_days: 3\n    operation_completes_by: '2030-01-01'\n",
     "templates[1].operation_completes_in_days cannot be combined with operation_completes_by"),
    ("    description: 'Phone of {user}'\n    devices: [CSFA]\n",
     "templates[1].phone CSFA: description uses the placeholder {user}"),
    ("    devices: [CSFA, csfa]\n", "templates[1].devices[1] repeats devices[0]"),
])
@pytest.mark.parametrize("step", ["plan", "apply"])
def test_engine_errors_name_the_path_and_write_nothing(store_path, item, expected, step):
    text = "opencapf: 1\ntemplates:\n  - name: First\n    devices: [CSFFIRST]\n  - name: Second\n" + item
    loaded = document.parse(text, "deploy.yml")
    with open_store(store_path, actor="test") as store:
        before = _state(store)
        with pytest.raises(ValidationError) as caught:
            getattr(deployment, step)(store, loaded)
        assert str(caught.value).startswith(expected), str(caught.value)
        assert _state(store) == before  # every item is checked before the first is written
