"""Modules given hostile option values: oversized certificates and CSV, names that would be paths.

Each run fails with a message naming the option and the limit, and the store is left as it was.
"""

from __future__ import annotations

import pytest

from support import certfactory
from support.stores import query
from ansible_collections.opencapf.capf.plugins.modules import capf_bulk_update, capf_phone, capf_trust_cert

from _opencapf.vocabulary import MAX_CERTIFICATES, MAX_CSV_CELL, MAX_INPUT_BYTES

MIB = 1024 * 1024


def _rows(location, table):
    return query(location, f"SELECT * FROM {table} ORDER BY id")


@pytest.fixture
def trusted(run, location):
    """A store holding one trusted root, so 'unchanged' is not just 'empty'."""
    root, _key = certfactory.make("Kept Root")
    assert run(capf_trust_cert, {"store": location, "content": certfactory.pem(root),
                                 "trust_store": "capf-trust"})["changed"]
    return _rows(location, "trust_certificates")


def test_ten_megabyte_content_is_refused(run, location, trusted):
    root, _key = certfactory.make("Huge Root")
    block = certfactory.pem(root)
    result = run(capf_trust_cert, {"store": location, "content": block * (10 * MIB // len(block) + 1),
                                   "trust_store": "capf-trust"})
    assert result["failed"] and result["msg"].startswith("content is ")
    assert f"larger than the limit of {MAX_INPUT_BYTES} bytes" in result["msg"]
    assert _rows(location, "trust_certificates") == trusted


def test_ten_megabyte_path_is_refused(run, location, trusted, tmp_path):
    big = tmp_path / "bundle.pem"
    with open(big, "wb") as handle:
        handle.truncate(10 * MIB)
    result = run(capf_trust_cert, {"store": location, "path": str(big), "trust_store": "capf-trust"})
    assert result["failed"] and str(big) in result["msg"] and f"limit of {MAX_INPUT_BYTES} bytes" in result["msg"]
    assert _rows(location, "trust_certificates") == trusted


def test_too_long_a_chain_is_refused(run, location, trusted):
    root, _key = certfactory.make("Repeated Root")
    result = run(capf_trust_cert, {"store": location, "content": certfactory.pem(root) * (MAX_CERTIFICATES + 1),
                                   "trust_store": "capf-trust"})
    assert result["failed"] and f"at most {MAX_CERTIFICATES} are accepted" in result["msg"]
    assert _rows(location, "trust_certificates") == trusted


def test_csv_with_an_oversized_cell_imports_nothing(run, location, tmp_path):
    csv_file = tmp_path / "phones.csv"
    csv_file.write_text("device_name,description\nSEP000000000001,Lobby\n"
                        f"SEP000000000002,{'x' * (MAX_CSV_CELL + 1)}\n")
    result = run(capf_bulk_update, {"store": location, "csv_file": str(csv_file)})
    assert result["failed"]
    assert f"line 3: description is longer than the limit of {MAX_CSV_CELL} characters" in result["msg"]
    assert _rows(location, "phones") == []


@pytest.mark.parametrize("name", ["../../etc/x", "/etc/passwd", "SEP001122334455/..", ".."])
def test_phone_names_that_are_paths_are_refused(run, location, name):
    result = run(capf_phone, {"store": location, "name": name, "certificate_operation": "install_upgrade"})
    assert result["failed"] and result["msg"].startswith("name must be SEP")
