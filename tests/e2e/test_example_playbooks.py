"""The example playbooks run for real against a store, change it once, then change nothing."""

from __future__ import annotations

import os

import pytest

from support.ansible_runner import changed_tasks, install_collection, playbook, task_results
from support.tools import ROOT, run_cli

EXAMPLES = os.path.join(ROOT, "playbooks", "examples")


@pytest.fixture(scope="module")
def collections(tmp_path_factory):
    return install_collection(str(tmp_path_factory.mktemp("collections")))


@pytest.fixture
def store(tmp_path):
    path = str(tmp_path / "state" / "capf.db")
    run_cli("--store", path, "init", check=True)
    return path


@pytest.mark.parametrize("example,changing", [
    ("keepalive.yml", ["Set the keep-alive timer"]),
    ("self_signed.yml", ["Issuer, validity, default key settings and the CAPF certificate"]),
])
def test_example_converges_then_is_idempotent(collections, store, example, changing):
    env = {"OPENCAPF_STORE": store}
    first = playbook(collections, os.path.join(EXAMPLES, example), env=env)
    assert changed_tasks(first) == changing
    second = playbook(collections, os.path.join(EXAMPLES, example), env=env)
    assert changed_tasks(second) == []
    check = playbook(collections, os.path.join(EXAMPLES, example), "--check", env=env)
    assert changed_tasks(check) == []


def test_keepalive_check_mode_changes_nothing_and_bad_value_is_named(collections, store):
    env = {"OPENCAPF_STORE": store}
    check = playbook(collections, os.path.join(EXAMPLES, "keepalive.yml"), "--check", env=env)
    assert changed_tasks(check) == ["Set the keep-alive timer"]
    assert run_cli("--store", store, "--json", "ca", "show", check=True).returncode == 0
    again = playbook(collections, os.path.join(EXAMPLES, "keepalive.yml"), "--check", env=env)
    assert changed_tasks(again) == ["Set the keep-alive timer"]
    bad = playbook(collections, os.path.join(EXAMPLES, "keepalive.yml"), "-e", "keepalive_minutes=61", env=env,
                   check=False)
    assert bad.returncode != 0
    message = task_results(bad, "Set the keep-alive timer")[0]["msg"]
    assert "keepalive_minutes must be 5\u201360 minutes, got 61" in message


def test_bulk_update_by_expiry_and_stale_cleanup_run(collections, store, tmp_path):
    env = {"OPENCAPF_STORE": store}
    strings = str(tmp_path / "strings.csv")
    first = playbook(collections, os.path.join(EXAMPLES, "bulk_update_by_expiry.yml"), "-e",
                     f"strings_file={strings}", env=env)
    assert task_results(first, "How many phones were queued")[0]["msg"]["matched"] == 0
    cleanup = playbook(collections, os.path.join(EXAMPLES, "stale_lsc_cleanup.yml"), env=env)
    assert changed_tasks(cleanup) == []
