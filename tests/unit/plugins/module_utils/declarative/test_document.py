"""The declarative file's schema: errors name the exact path and the rule."""

from __future__ import annotations

import pytest

from _opencapf import parameters, phone_config
from _opencapf.declarative import document, schema
from _opencapf.dependencies import jsonschema
from _opencapf.errors import ValidationError


def problems(text):
    with pytest.raises(document.DocumentError) as caught:
        document.parse(text, "deploy.yml")
    return caught.value.problems


def test_schema_is_valid_and_follows_the_engine_vocabulary():
    generated = schema.schema()
    jsonschema.Draft202012Validator.check_schema(generated)
    properties = generated["properties"]
    assert set(properties["service"]["properties"]["parameters"]["properties"]) == set(parameters.PARAMETERS)
    phone = properties["phones"]["items"]["properties"]
    assert set(phone_config.OPTION_COLUMNS) <= set(phone)
    assert phone["certificate_operation"]["enum"] == ["none", "install_upgrade", "delete", "troubleshoot"]


def test_minimal_document_is_valid():
    loaded = document.parse("opencapf: 1\n", "deploy.yml")
    assert loaded.data == {"opencapf": 1}


@pytest.mark.parametrize("text,expected", [
    ("opencapf: 1\nphones:\n - name: SEP001122334455\n - name: SEP001122334456\n - name: SEP001122334457\n"
     " - name: SEP001122334458\n   authentication_string: '12'\n",
     "phones[3].authentication_string: must be 4\u201310 digits (quote it in YAML so it stays a string)"),
    ("opencapf: 1\nservice:\n  parameters:\n    validity_days: 2000\n",
     "service.parameters.validity_days: must be 1\u20131825, got 2000"),
    ("opencapf: 1\nservice:\n  parameters:\n    keepalive_minutes: 4\n",
     "service.parameters.keepalive_minutes: must be 5\u201360, got 4"),
    ("opencapf: 1\nservice:\n  parameters:\n    session_retention_days: -1\n",
     "service.parameters.session_retention_days: must be 0\u20133650, got -1"),
    ("opencapf: 1\nphones:\n  - name: SEP001122334455\n    colour: red\n", "phones[0].colour: is not a known field"),
    ("opencapf: 1\nphones:\n  - description: x\n", "phones[0].name: is required"),
    ("opencapf: 1\nphones:\n  - name: PHONE1\n", "phones[0].name: must be SEP"),
    ("opencapf: 1\nservice:\n  online_ca: {hostname: ca.example.com, type: adcs}\n",
     "service.online_ca.type: must be one of microsoft, est, got 'adcs'"),
    ("opencapf: 1\nservice:\n  parameters:\n    monitor_warn_days: [30, 0]\n",
     "service.parameters.monitor_warn_days[1]: must be 1\u20133650, got 0"),
    ("opencapf: 1\nservice:\n  parameters:\n    monitor_smtp_security: ssl\n",
     "service.parameters.monitor_smtp_security: must be one of starttls, tls, none, got 'ssl'"),
    ("opencapf: 2\n", "opencapf: must be 1 (the file format version)"),
    ("phones: []\n", "opencapf: is required"),
])
def test_schema_errors_name_path_and_rule(text, expected):
    found = problems(text)
    assert any(problem.startswith(expected) for problem in found), found


def test_secret_values_are_not_echoed():
    found = problems("opencapf: 1\nphones:\n  - name: SEP001122334455\n    authentication_string: 'abc123'\n")
    assert found == ["phones[0].authentication_string: must be 4\u201310 digits (quote it in YAML so it stays a string)"]
    assert not any("abc123" in problem for problem in found)


@pytest.mark.parametrize("text,message", [
    ("opencapf: 1\nphones: [\n", "is not valid YAML at line"),
    ("- just\n- a list\n", "must be a YAML mapping"),
])
def test_unreadable_documents(text, message):
    with pytest.raises(ValidationError, match=message):
        document.parse(text, "deploy.yml")


def test_oversized_file_is_refused(tmp_path):
    path = tmp_path / "huge.yml"
    path.write_text("opencapf: 1\n" + "#" * (32 * 1024 * 1024 + 10))
    with pytest.raises(Exception, match="larger than the limit of 33554432 bytes"):
        document.load(str(path))


def test_a_file_over_one_mebibyte_is_read(tmp_path):
    """Large fleets are declared in one file: 4,000 phones already take more than 1 MiB."""
    path = tmp_path / "fleet.yml"
    phones = "".join(f"  - name: SEP{index:012X}\n    description: {'x' * 200}\n" for index in range(5000))
    path.write_text("opencapf: 1\nphones:\n" + phones)
    assert path.stat().st_size > 1024 * 1024
    loaded = document.load(str(path))
    assert len(loaded.data["phones"]) == 5000 and loaded.data["phones"][-1]["name"] == "SEP000000001387"


@pytest.mark.parametrize("written", ["2026-12-31T23:00:00Z", "2026-12-31 23:00:00+01:00", "2026-12-31"])
def test_an_unquoted_time_is_read_as_written(written):
    """YAML reads an unquoted time as a timestamp: the file keeps it as the text written, so that the
    schema and the engine judge it as they judge a quoted one (the same value, the same rules)."""
    unquoted = document.parse(f"opencapf: 1\nphones:\n  - name: SEP001122334455\n    operation_completes_by: {written}\n")
    quoted = document.parse(f"opencapf: 1\nphones:\n  - name: SEP001122334455\n    operation_completes_by: '{written}'\n")
    assert unquoted.data == quoted.data
    assert unquoted.data["phones"][0]["operation_completes_by"] == written


def test_an_unquoted_time_with_a_fraction_of_a_second_is_refused_by_the_engine_s_rule():
    loaded = document.parse("opencapf: 1\nphones:\n  - name: SEP001122334455\n"
                            "    operation_completes_by: 2026-12-31T23:00:00.5Z\n")
    with pytest.raises(ValidationError, match="must be a whole second"):
        phone_config.check_settings({"operation_completes_by": loaded.data["phones"][0]["operation_completes_by"]})
