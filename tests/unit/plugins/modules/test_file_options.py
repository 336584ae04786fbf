"""Every module option that names an input file: a missing file and a file that is not what the option
takes fail the task with a message that starts with the option path, and change nothing.

The set of options is read from the modules' own documentation (every option or suboption of type
``path``), so an option added later without a case here fails ``test_every_path_option_is_covered``.
Every problem with an SQLite store; a missing file with a PostgreSQL store too (the store left as it was).
"""

from __future__ import annotations

import os

import pytest
import yaml

from support import certfactory
from support.stores import backend_cases, query, store_exists
from ansible_collections.opencapf.capf.plugins.modules import (
    capf_bulk_update, capf_deployment, capf_info, capf_ldap_sync, capf_offline_ca, capf_phone, capf_service,
    capf_stale_lsc, capf_trust_cert)

MODULES = (capf_bulk_update, capf_deployment, capf_info, capf_ldap_sync, capf_offline_ca, capf_phone, capf_service,
           capf_stale_lsc, capf_trust_cert)
EST = {"hostname": "ca.example.com", "type": "est", "profile_label": "phones"}
# Options of type path that name a file or directory the module writes, not one it reads.
OUTPUTS = {("capf_offline_ca", "path"), ("capf_bulk_update", "strings_file"), ("capf_info", "report_path"),
           ("capf_ldap_sync", "strings_file"), ("capf_deployment", "strings_file")}
LDAP = {"name": "corp", "urls": ["ldaps://localhost:1"], "search_base": "dc=example,dc=org", "device_template": "jabber"}


def _client_pair(directory):
    certificate, key = certfactory.make("capf.example.com", ca=False)
    cert_path, key_path = os.path.join(directory, "client.pem"), os.path.join(directory, "client.key")
    with open(cert_path, "w", encoding="ascii") as handle:
        handle.write(certfactory.pem(certificate))
    with open(key_path, "w", encoding="ascii") as handle:
        handle.write(certfactory.key_pem(key))
    os.chmod(key_path, 0o600)
    return cert_path, key_path


def _ca_file(directory):
    """A CA certificate: in an import it only serves as an intermediate, so it changes nothing by itself."""
    certificate, _key = certfactory.make("Offline Issuing CA")
    path = os.path.join(directory, "issuing-ca.pem")
    with open(path, "w", encoding="ascii") as handle:
        handle.write(certfactory.pem(certificate))
    return path


def _client_certificate(path, directory):
    return {"online_ca": dict(EST, client_certificate=path, client_key=_client_pair(directory)[1])}


def _client_key(path, directory):
    return {"online_ca": dict(EST, client_certificate=_client_pair(directory)[0], client_key=path)}


# (module, option path as the message names it, the arguments that give ``path`` to that option)
CASES = [
    (capf_trust_cert, "path", lambda path, _d: {"path": path, "trust_store": ["capf-trust"]}),
    (capf_offline_ca, "src[0]", lambda path, _d: {"state": "imported", "src": [path]}),
    (capf_offline_ca, "src[1]", lambda path, d: {"state": "imported", "src": [_ca_file(d), path]}),
    (capf_bulk_update, "csv_file", lambda path, _d: {"csv_file": path}),
    (capf_service, "online_ca.client_certificate", _client_certificate),
    (capf_service, "online_ca.client_key", _client_key),
    (capf_ldap_sync, "ca_file", lambda path, _d: dict(LDAP, ca_file=path)),
    (capf_deployment, "src", lambda path, _d: {"src": path}),
]
IDS = [f"{module.__name__.rsplit('.', 1)[1]}-{option}" for module, option, _args in CASES]


def _path_options(options: dict, prefix: str = ""):
    for name, spec in (options or {}).items():
        if spec.get("type") == "path" or spec.get("elements") == "path":
            yield prefix + name
        yield from _path_options(spec.get("suboptions"), f"{prefix}{name}.")


def test_every_path_option_is_covered():
    documented = {(module.__name__.rsplit(".", 1)[1], option) for module in MODULES
                  for option in _path_options(yaml.safe_load(module.DOCUMENTATION)["options"])}
    covered = {(module.__name__.rsplit(".", 1)[1], option.split("[", maxsplit=1)[0]) for module, option, _args in CASES}
    assert documented == covered | OUTPUTS


def _tables(location):
    if not store_exists(location):
        return None
    return [query(location, f"SELECT COUNT(*) AS n FROM {table}")[0]["n"]
            for table in ("trust_certificates", "phones", "service_parameters", "certificates", "audit_events")]


@pytest.mark.parametrize("module,option,arguments", CASES, ids=IDS)
@pytest.mark.parametrize("store_location, problem", backend_cases(["missing", "not_pem", "directory"], ["missing"]),
                         indirect=["store_location"])
def test_a_bad_file_fails_naming_the_option(run, location, tmp_path, module, option, arguments, problem):
    # An existing store that must stay as it is; the offline CA's root is trusted, so an import gets to the files.
    run(capf_phone, {"store": location, "name": "SEP001122334455"})
    root, _key = certfactory.make("Offline Root")
    run(capf_trust_cert, {"store": location, "content": certfactory.pem(root), "trust_store": ["capf-trust"]})
    before = _tables(location)
    path = str(tmp_path / "input.pem")
    if problem == "not_pem":
        with open(path, "w", encoding="ascii") as handle:
            handle.write("this is not a certificate, a key or a CSV header\n")
        os.chmod(path, 0o600)
    elif problem == "directory":
        os.mkdir(path)
    result = run(module, dict(arguments(path, str(tmp_path)), store=location))
    assert result["failed"], result
    assert result["msg"].startswith(option), result["msg"]
    if problem == "missing":
        assert result["msg"].startswith(f"{option}: ") and "No such file or directory" in result["msg"]
    assert "Traceback" not in result["msg"] and "\n" not in result["msg"]
    assert _tables(location) == before
