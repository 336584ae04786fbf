"""The declarative file sets the certificate monitor: its parameters, and the SMTP password from an environment
variable (sealed in the store, shown only as set or changed), with engine rule errors under their path."""

from __future__ import annotations

import pytest

from _opencapf.declarative import deployment, document
from _opencapf.errors import CapfError
from _opencapf.store import open_store
from _opencapf.store import service as service_records

TEXT = """opencapf: 1
service:
  monitor_smtp_password_env: CAPF_SMTP_PASSWORD
  parameters:
    monitor_warn_days: [45, 10]
    monitor_recipients: [voice@example.com]
    monitor_sender: capf@example.com
    monitor_smtp_host: smtp.example.com
    monitor_smtp_username: capf
"""


def test_the_file_sets_the_monitor_and_its_sealed_password(store_path, monkeypatch):
    monkeypatch.setenv("CAPF_SMTP_PASSWORD", "Env-Smtp-Pa55")
    parsed = document.parse(TEXT, "deploy.yml")
    with open_store(store_path, actor="test") as store:
        planned = deployment.plan(store, parsed)
        applied = deployment.apply(store, parsed)
        again = deployment.plan(store, parsed)
        with store.read() as tx:
            assert service_records.value(tx, "monitor_warn_days") == [45, 10]
    rendered = deployment.render(planned) + deployment.render(applied)
    assert "monitor_smtp_password: (unset) -> (set)" in rendered and "Env-Smtp-Pa55" not in rendered
    assert "service" not in deployment.render(again)


def test_engine_rules_name_the_path_in_the_file(store_path, monkeypatch):
    monkeypatch.delenv("CAPF_SMTP_PASSWORD", raising=False)
    parsed = document.parse(TEXT, "deploy.yml")
    with open_store(store_path, actor="test") as store:
        with pytest.raises(CapfError) as raised:
            deployment.plan(store, parsed)
    assert str(raised.value) == "service.monitor_smtp_password_env names an unset environment variable, got 'CAPF_SMTP_PASSWORD'"
    monkeypatch.setenv("CAPF_SMTP_PASSWORD", "x")
    unsafe = document.parse(TEXT + "    monitor_smtp_security: none\n", "deploy.yml")
    with open_store(store_path, actor="test") as store:
        with pytest.raises(CapfError) as raised:
            deployment.plan(store, unsafe)
    assert str(raised.value).startswith("service.monitor_smtp_security must be starttls or tls")
