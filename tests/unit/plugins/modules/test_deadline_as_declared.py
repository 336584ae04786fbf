"""An operation's deadline is what was declared: the store keeps times to the second, so an
``operation_completes_by`` with a fraction of a second is refused on every path that accepts it
(``capf_phone``, a bulk job now or scheduled, a CSV import, the declarative file's phones and
templates, ``capf_device_template``), naming the option at its path and the rule, with nothing
written; never cut to the whole second, which would report and enforce another deadline than the one
declared."""

from __future__ import annotations

import datetime as dt
import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ansible_collections.opencapf.capf.plugins.modules import capf_bulk_update, capf_device_template, capf_phone

from _opencapf import phone_config
from _opencapf.cli.main import main as cli_main
from _opencapf.errors import ValidationError
from _opencapf.phone_query import phone_status
from _opencapf.store import open_store
from _opencapf.vocabulary import parse_utc
from support.declarations import as_declared
from support.stores import dump

NAME = "SEP001122334455"
FRACTION = "2099-01-01T18:00:00.500Z"
RULE = "operation_completes_by must be a whole second"
_OFFSETS = (dt.timezone.utc, dt.timezone(dt.timedelta(hours=2)), dt.timezone(dt.timedelta(hours=-5, minutes=-30)))


def _through_module(module, args):
    def attempt(run, store_path, _tmp_path, _capsys):
        result = run(module, dict(args, store=store_path))
        assert result["failed"], result
        return result["msg"]
    return attempt


def _through_csv(run, store_path, tmp_path, _capsys):
    path = tmp_path / "phones.csv"
    path.write_text(f"device_name,certificate_operation,operation_completes_by\n{NAME},install_upgrade,{FRACTION}\n")
    result = run(capf_bulk_update, {"store": store_path, "csv_file": str(path)})
    assert result["failed"], result
    return result["msg"]


def _through_apply(section):
    def attempt(_run, store_path, tmp_path, capsys):
        item = ({"name": NAME, "certificate_operation": "install_upgrade", "operation_completes_by": FRACTION}
                if section == "phones" else
                {"name": "Desk", "certificate_operation": "install_upgrade", "operation_completes_by": FRACTION,
                 "devices": [NAME]})
        path = tmp_path / "deploy.yml"
        path.write_text(json.dumps({"opencapf": 1, section: [item]}))
        capsys.readouterr()
        code = cli_main(["--store", store_path, "apply", str(path)])
        assert code != 0
        return capsys.readouterr().err
    return attempt


PATHS = {
    "capf_phone": (_through_module(capf_phone, {"name": NAME, "certificate_operation": "install_upgrade",
                                                "operation_completes_by": FRACTION}), RULE),
    "bulk": (_through_module(capf_bulk_update, {"query": {"names": [NAME]},
                                                "set": {"operation_completes_by": FRACTION}}), "set." + RULE),
    "bulk_scheduled": (_through_module(capf_bulk_update, {"query": {"names": [NAME]},
                                                          "set": {"operation_completes_by": FRACTION},
                                                          "run_at": "2099-01-01T00:00:00Z"}), "set." + RULE),
    "csv": (_through_csv, "line 2: " + RULE),
    "apply_phones": (_through_apply("phones"), "phones[0]." + RULE),
    "apply_templates": (_through_apply("templates"), "templates[0]." + RULE),
    "capf_device_template": (_through_module(capf_device_template, {"name": "Desk",
                                                                    "operation_completes_by": FRACTION}), RULE),
}


@pytest.mark.parametrize("path", sorted(PATHS))
def test_a_deadline_with_a_fraction_of_a_second_is_refused_on_every_path(path, run, store_path, tmp_path, capsys):
    with open_store(store_path, actor="test") as store:
        phone_config.converge(store, NAME, settings={"certificate_operation": "install_upgrade",
                                                     "operation_completes_by": "2099-01-01T12:00:00Z"})
        before = dump(store)
    attempt, expected = PATHS[path]
    message = attempt(run, store_path, tmp_path, capsys)
    assert expected in message and "Traceback" not in message, message
    with open_store(store_path, actor="test") as store:
        assert dump(store) == before, f"a refused deadline ({path}) wrote to the store"


@settings(max_examples=60, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(st.datetimes(min_value=dt.datetime(2000, 1, 1), max_value=dt.datetime(2200, 1, 1),
                    timezones=st.sampled_from(_OFFSETS)),
       st.booleans(), st.sampled_from(("text_z", "text_offset", "datetime")))
def test_the_deadline_reported_is_the_deadline_declared(store, moment, whole, form):
    """Whatever instant ``operation_completes_by`` names, in whatever form: the phone's status reports
    exactly that instant as its deadline, or the declaration is refused naming the option and its rule
    and nothing is written."""
    if whole:
        moment = moment.replace(microsecond=0)
    before = dump(store)
    try:
        result = phone_config.converge(store, NAME, settings={"certificate_operation": "install_upgrade",
                                                              "operation_completes_by": as_declared(moment, form)})
    except ValidationError as exc:
        assert moment.microsecond != 0, exc
        assert exc.field == "operation_completes_by" and str(exc).startswith(RULE), str(exc)
        assert dump(store) == before, "a refused deadline wrote to the store"
        return
    assert moment.microsecond == 0, ("a deadline with a fraction of a second was accepted", moment, result)
    assert parse_utc(result["status"]["operation_completes_by"], "deadline") == moment, result["status"]
    with store.read() as tx:
        assert parse_utc(phone_status(tx, NAME)["operation_completes_by"], "deadline") == moment
