"""``phones[].reissue`` in a declarative file: capf_phone's ``reissue``, with the same meaning, the
same validation and the same idempotence, on both store backends."""

from __future__ import annotations

import datetime as dt
import json

import pytest

from _opencapf import phone_config
from _opencapf.cli import main as cli
from _opencapf.declarative import deployment, document
from _opencapf.store import ENV_STATE_DIR, open_store
from _opencapf.store import phones as phone_records
from _opencapf.vocabulary import format_utc

NAME = "SEP00000000C0DE"
FILE = """\
opencapf: 1
phones:
  - name: {name}
    certificate_operation: install_upgrade
    authentication_mode: null_string
{extra}"""
STATUSES = ("none", "pending", "in_progress", "succeeded", "failed", "lapsed")


@pytest.fixture
def store(store_location, state_dir, monkeypatch):
    monkeypatch.setenv(ENV_STATE_DIR, state_dir)
    opened = open_store(store_location, state_dir=state_dir, actor="test")
    yield opened
    opened.close()


def _file(tmp_path, extra="    reissue: true\n", name=NAME):
    path = tmp_path / f"deploy-{name}.yml"
    path.write_text(FILE.format(name=name, extra=extra))
    return str(path)


def _finish(store, name, status):
    """The phone's operation as a session leaves it (``store.phones.set_operation_result``); in progress, as
    a session that is still live puts it (an hour to go: one no process serves is reported failed)."""
    if status == "none":  # no operation declared: as an operator leaves it (no session records it)
        phone_config.converge(store, name, settings={"certificate_operation": "none"})
        return
    with store.transaction() as tx:
        phone = phone_records.get(tx, name)
        if status == "in_progress":
            live_until = dt.datetime.now(dt.timezone.utc) + dt.timedelta(hours=1)
            phone_records.record_session_start(tx, phone, True, format_utc(live_until))
            return
        phone_records.set_operation_result(tx, "test", phone, status,
                                           "" if status in ("none", "succeeded") else "a reason")


def _status(store, name):
    with store.read() as tx:
        return phone_records.get(tx, name)["operation_status"]


def _cli(capsys, *argv):
    status = cli.main(list(argv))
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def test_reissue_rearms_a_finished_operation_and_is_idempotent(store, store_options, tmp_path, capsys):
    path = _file(tmp_path)
    status, out, err = _cli(capsys, "apply", path, "--json", *store_options)
    assert status == 0, err
    assert json.loads(out)["counts"]["phones"]["created"] == 1 and _status(store, NAME) == "pending"
    # Pending: reissue leaves it as it is, so a second apply changes nothing.
    assert _cli(capsys, "plan", path, *store_options)[1].strip() == "no changes"
    assert json.loads(_cli(capsys, "apply", path, "--json", *store_options)[1])["changed"] is False

    _finish(store, NAME, "succeeded")
    status, out, _err = _cli(capsys, "plan", path, *store_options)
    assert status == 0 and f"~ phones {NAME}" in out and "operation_status: 'succeeded' -> 'pending'" in out
    assert _status(store, NAME) == "succeeded", "plan writes nothing"
    assert _cli(capsys, "plan", "--detailed-exitcode", path, *store_options)[0] == 2
    assert json.loads(_cli(capsys, "apply", path, "--json", *store_options)[1])["counts"]["phones"]["updated"] == 1
    assert _status(store, NAME) == "pending"
    assert json.loads(_cli(capsys, "apply", path, "--json", *store_options)[1])["changed"] is False

    # Without reissue the same file leaves a finished operation alone: reissue is what arms it again.
    _finish(store, NAME, "succeeded")
    plain = _file(tmp_path, extra="    reissue: false\n")
    assert _cli(capsys, "plan", plain, *store_options)[1].strip() == "no changes"
    assert _cli(capsys, "plan", _file(tmp_path, extra=""), *store_options)[1].strip() == "no changes"


def test_reissue_means_what_capf_phone_reissue_means(store, tmp_path):
    """From every operation status, the file and capf_phone's engine call make the same change."""
    settings = {"certificate_operation": "install_upgrade", "authentication_mode": "null_string"}
    for index, status in enumerate(STATUSES):
        by_file, by_module = f"SEP00000000F1{index:02X}", f"SEP00000000F0{index:02X}"
        for name in (by_file, by_module):
            phone_config.converge(store, name, settings=settings)
            _finish(store, name, status)
        module = phone_config.converge(store, by_module, settings=settings, reissue=True)
        report = deployment.apply(store, document.load(_file(tmp_path, name=by_file)))
        assert report.changed == module["changed"], status
        assert _status(store, by_file) == _status(store, by_module), status
        assert _status(store, by_file) == ("pending" if status in ("none", "succeeded", "failed", "lapsed")
                                           else status)


@pytest.mark.usefixtures("store")
def test_reissue_is_validated_like_every_field(store_options, tmp_path, capsys):
    status, _out, err = _cli(capsys, "plan", _file(tmp_path, extra="    reissue: maybe\n"), *store_options)
    assert status == 1
    assert "phones[0].reissue: must be of type boolean" in err and "Traceback" not in err
    schema = json.loads(_cli(capsys, "schema", *store_options)[1])
    assert schema["properties"]["phones"]["items"]["properties"]["reissue"]["type"] == "boolean"
