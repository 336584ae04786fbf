"""``opencapf template list|show|apply`` on both backends: JSON results, check mode that writes
nothing, generated strings once in a 0600 CSV, a second application that changes nothing, and
one-line errors."""

from __future__ import annotations

import contextlib
import io
import json
import os
import stat
import subprocess


from _opencapf.cli.main import main
from support.stores import query
from support.tools import run_cli


def cli(*args, check=False):
    """The command line in this process (each child process costs seconds on a busy machine):
    the same ``main`` that ``python -m _opencapf`` runs; a usage error's exit status is returned too."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main(list(args))
        except SystemExit as stopped:
            code = stopped.code
    if check and code != 0:
        raise AssertionError(f"opencapf {' '.join(args)} failed ({code}): {err.getvalue()}")
    return subprocess.CompletedProcess(args, code, out.getvalue(), err.getvalue())


DEPLOYMENT = """\
opencapf: 1
templates:
  - name: Jabber softphones
    description: "Softphone of {user}"
    certificate_operation: install_upgrade
    authentication_mode: auth_string
    generate_authentication_string: true
"""


def test_template_list_show_apply(store_options, store_location, tmp_path, monkeypatch):
    # --state-dir sets $OPENCAPF_STATE_DIR in this process: recorded here, so that it is undone after the test.
    monkeypatch.setenv("OPENCAPF_STATE_DIR", "")
    monkeypatch.delenv("OPENCAPF_STATE_DIR")
    path = tmp_path / "deploy.yml"
    path.write_text(DEPLOYMENT)
    run_cli(*store_options, "apply", str(path), check=True)  # one real child process
    listed = json.loads(cli(*store_options, "--json", "template", "list", check=True).stdout)
    assert [view["name"] for view in listed] == ["Jabber softphones"]
    shown = json.loads(cli(*store_options, "--json", "template", "show", "Jabber softphones", check=True).stdout)
    assert shown == listed[0] and shown["generate_authentication_string"] is True
    missing = cli(*store_options, "template", "show", "Nope")
    assert missing.returncode == 1 and missing.stderr == (
        "opencapf: error: template: there is no device template named 'Nope'\n")

    apply = [*store_options, "--json", "template", "apply", "Jabber softphones", "csfjsmith", "CSFADOE",
             "--var", "user=somebody"]
    checked = json.loads(cli(*apply, "--check", check=True).stdout)
    assert checked["counts"]["created"] == 2
    # check mode names the phones that would get a generated string, never a string
    assert checked["authentication_strings"] == [
        {"device_name": name, "authentication_string": "(to be generated)"} for name in ("CSFJSMITH", "CSFADOE")]
    assert query(store_location, "SELECT name FROM phones") == []
    strings = str(tmp_path / "strings.csv")
    first = json.loads(cli(*apply, "--strings-file", strings, check=True).stdout)
    assert first["created"] == ["CSFJSMITH", "CSFADOE"] and first["strings_file"] == strings
    assert stat.S_IMODE(os.stat(strings).st_mode) == 0o600
    with open(strings, encoding="ascii") as handle:
        assert handle.readline().strip() == "device_name,authentication_string" and len(handle.readlines()) == 2
    again = json.loads(cli(*apply, "--existing", "reapply", check=True).stdout)
    assert again["changed"] is False and again["counts"]["unchanged"] == 2
    rows = query(store_location, "SELECT name, description, operation_status FROM phones ORDER BY name")
    assert rows == [{"name": "CSFADOE", "description": "Softphone of somebody", "operation_status": "pending"},
                    {"name": "CSFJSMITH", "description": "Softphone of somebody", "operation_status": "pending"}]

    without = cli(*store_options, "template", "apply", "Jabber softphones", "CSFNEW")
    assert without.returncode == 1 and without.stderr.startswith(
        "opencapf: error: phone CSFNEW: description uses the placeholder {user}") and without.stderr.count("\n") == 1
    assert cli(*store_options, "template", "apply", "Jabber softphones", "CSFNEW", "--var", "1=x").returncode == 2
