# Copyright: contributors to opencapf.capf
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Section 4: fleet convergence through real ``ansible-playbook`` runs and the declarative CLI.

A 40,000-phone store is generated with ``bench.fleet``; then each step runs the way an
administrator runs it, timed from outside as one command (Ansible's start-up included):

- ``capf_bulk_update`` with a query matching every phone and settings that change every one of
  them (first run), then the same playbook again (no-op re-run: ``changed`` false);
- ``capf_phone`` in a loop over 500 phones (one task, ``loop:``), each one changed: the per-task
  baseline the bulk module is compared with, per phone;
- ``opencapf apply`` of a 40,000-phone declarative file into an empty store, then again (no-op).

Every step is checked in the store afterwards: a run that skipped work would fail the benchmark.
"""

from __future__ import annotations

import json
import os
import re
import resource
import subprocess
import sys
import tempfile
import time

from _opencapf import bulk
from _opencapf.store import open_store
from _opencapf.vocabulary import utc_now

from . import ENGINE_PATH, ROOT, fleet
from .harness import Figure, benchmark

PHONES = 40_000
SMOKE_PHONES = 40
LOOP_PHONES = 500
SMOKE_LOOP_PHONES = 4
DEADLINE = "2031-01-31T06:00:00Z"  # later than any the generator writes, so every phone changes
LOOP_DEADLINE = "2031-02-28T06:00:00Z"
BIN = os.path.dirname(sys.executable)

BULK_PLAYBOOK = """\
- name: Bulk update of every phone
  hosts: localhost
  gather_facts: false
  tasks:
    - name: Every phone renews with EC keys by the deadline
      opencapf.capf.capf_bulk_update:
        store: {store}
        query:
          name_pattern: "SEP*"
        set:
          certificate_operation: install_upgrade
          authentication_mode: null_string
          key_order: ec_preferred
          ec_key_size: 384
          operation_completes_by: "{deadline}"
        reissue: false
"""

LOOP_PLAYBOOK = """\
- name: One task per phone
  hosts: localhost
  gather_facts: false
  vars:
    devices: {devices}
  tasks:
    - name: Each phone renews with EC keys by the deadline
      opencapf.capf.capf_phone:
        store: {store}
        name: "{{{{ item }}}}"
        certificate_operation: install_upgrade
        authentication_mode: null_string
        key_order: ec_preferred
        ec_key_size: 384
        operation_completes_by: "{deadline}"
      loop: "{{{{ devices }}}}"
"""

PING_PLAYBOOK = """\
- name: Ansible alone
  hosts: localhost
  gather_facts: false
  tasks:
    - name: One module that does nothing
      ansible.builtin.ping:
"""
BULK_SETTINGS = {"certificate_operation": "install_upgrade", "authentication_mode": "null_string",
                 "key_order": "ec_preferred", "ec_key_size": 384, "operation_completes_by": DEADLINE}

_RECAP = re.compile(r"localhost\s*:\s*ok=(\d+)\s+changed=(\d+)\s+unreachable=(\d+)\s+failed=(\d+)")


def _collections(work_dir: str) -> str:
    """The checkout as the collection opencapf.capf, the way ``scripts/demo`` installs it."""
    base = os.path.join(work_dir, "collections")
    os.makedirs(os.path.join(base, "ansible_collections", "opencapf"), exist_ok=True)
    link = os.path.join(base, "ansible_collections", "opencapf", "capf")
    if not os.path.islink(link):
        os.symlink(ROOT, link)
    return base


def _playbook(work_dir: str, collections: str, name: str, text: str) -> tuple[float, dict]:
    """Run ``ansible-playbook`` once with the default output; return its wall seconds and recap."""
    path = os.path.join(work_dir, name)
    with open(path, "w", encoding="utf-8") as handle:
        handle.write(text)
    environment = dict(os.environ)
    environment.update({
        "ANSIBLE_COLLECTIONS_PATH": collections,
        "ANSIBLE_LOCALHOST_WARNING": "false",
        "ANSIBLE_INVENTORY_UNPARSED_WARNING": "false",
        "ANSIBLE_PYTHON_INTERPRETER": sys.executable,
        "ANSIBLE_NOCOLOR": "1",
        "ANSIBLE_RETRY_FILES_ENABLED": "false",
        "ANSIBLE_LOCAL_TEMP": os.path.join(work_dir, "ansible-local"),
        "ANSIBLE_REMOTE_TEMP": os.path.join(work_dir, "ansible-remote"),
        "PATH": BIN + os.pathsep + environment.get("PATH", ""),
    })
    command = [os.path.join(BIN, "ansible-playbook"), "-i", "localhost,", "-c", "local", path]
    seconds, cpu, done = _run(command, environment)
    found = _RECAP.search(done.stdout)
    if done.returncode != 0 or found is None:
        raise AssertionError(f"ansible-playbook {name} failed ({done.returncode}):\n{done.stdout[-4000:]}\n"
                             f"{done.stderr[-2000:]}")
    ok, changed, unreachable, failed = (int(group) for group in found.groups())
    return seconds, {"ok": ok, "changed": changed, "unreachable": unreachable, "failed": failed,
                     "output_bytes": len(done.stdout), "cpu_seconds": cpu}


def _run(command: list[str], environment: dict) -> tuple[float, float, subprocess.CompletedProcess]:
    """Run a command; return its wall seconds, the CPU seconds of it and its children, and the process.

    On a shared machine the wall clock includes waiting for a core; the CPU time does not.
    """
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, env=environment, timeout=2400, check=False)
    seconds = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return seconds, round(cpu, 3), done


def _cli(store_path: str, *args: str) -> tuple[float, dict]:
    """Run the ``opencapf`` command line once (``--json``); return its wall seconds and result."""
    environment = dict(os.environ, PYTHONPATH=ENGINE_PATH)
    command = [sys.executable, "-m", "_opencapf", "--store", store_path, "--json", *args]
    seconds, cpu, done = _run(command, environment)
    if done.returncode != 0:
        raise AssertionError(f"opencapf {' '.join(args)} failed ({done.returncode}): {done.stderr[-3000:]}")
    return seconds, dict(json.loads(done.stdout), cpu_seconds=cpu)


def _count(path: str, sql: str, params: tuple = ()) -> int:
    store = open_store(path, actor="bench")
    try:
        with store.read() as tx:
            return tx.scalar(sql, params)
    finally:
        store.close()


def _renewing(path: str, deadline: str) -> int:
    """Phones that carry exactly the settings the playbooks set."""
    return _count(path, "SELECT count(*) FROM phones WHERE operation = 'install_upgrade' AND auth_mode = 'null_string' "
                        "AND key_order = 'ec_preferred' AND ec_key_size = 384 AND operation_deadline = ?",
                  (deadline,))


def _bulk_and_loop(work_dir: str, phones: int, loop_phones: int) -> dict:
    collections = _collections(work_dir)
    path = os.path.join(work_dir, "fleet.db")
    store = open_store(path, actor="bench")
    try:
        generated = fleet.generate(store, phones, now=utc_now())
    finally:
        store.close()
    if _renewing(path, DEADLINE) != 0:
        raise AssertionError("the generated store already has phones with the bulk settings")
    playbook = BULK_PLAYBOOK.format(store=path, deadline=DEADLINE)
    first_seconds, first = _playbook(work_dir, collections, "bulk.yml", playbook)
    updated = _renewing(path, DEADLINE)
    audited = _count(path, "SELECT count(*) FROM audit_events WHERE action = 'phone.update'")
    if first["changed"] != 1 or updated != phones or audited != phones:
        raise AssertionError(f"first bulk run: recap {first}, {updated} of {phones} phones updated, "
                             f"{audited} audit events")
    noop_seconds, noop = _playbook(work_dir, collections, "bulk.yml", playbook)
    if noop["changed"] != 0 or _count(path, "SELECT count(*) FROM audit_events WHERE action = 'phone.update'") != phones:
        raise AssertionError(f"no-op bulk run changed something: recap {noop}")
    # Where a run's time goes: Ansible alone (one ping task), and the engine's job alone, in this process.
    ping_seconds, ping = _playbook(work_dir, collections, "ping.yml", PING_PLAYBOOK)
    engine_seconds, engine_cpu, counts = _engine_noop(path)
    if counts["unchanged"] != phones:
        raise AssertionError(f"the engine's no-op job found changes: {counts}")
    profile = {"ansible_ping_playbook_seconds": round(ping_seconds, 3),
               "ansible_ping_playbook_cpu_seconds": ping["cpu_seconds"],
               "engine_noop_job_seconds": round(engine_seconds, 3), "engine_noop_job_cpu_seconds": engine_cpu}

    # The loop gives the last phones another deadline, so that each of its tasks changes its phone.
    devices = [_name(phones - 1 - index) for index in range(loop_phones)]
    loop = LOOP_PLAYBOOK.format(store=path, deadline=LOOP_DEADLINE, devices=json.dumps(devices))
    loop_seconds, looped = _playbook(work_dir, collections, "loop.yml", loop)
    loop_updated = _renewing(path, LOOP_DEADLINE)
    if looped["changed"] != 1 or loop_updated != loop_phones:
        raise AssertionError(f"capf_phone loop: recap {looped}, {loop_updated} of {loop_phones} phones updated")
    return {"first": (first_seconds, first), "noop": (noop_seconds, noop), "loop": (loop_seconds, looped),
            "generated_certificates": generated.certificates, "profile": profile}


def _engine_noop(path: str) -> tuple[float, float, dict]:
    """The bulk job the module runs, called in this process: the engine's share of a no-op run."""
    store = open_store(path, actor="bench")
    try:
        cpu_start = time.process_time()
        start = time.perf_counter()
        result = bulk.converge(store, query={"name_pattern": "SEP*"}, settings=BULK_SETTINGS)
        return time.perf_counter() - start, round(time.process_time() - cpu_start, 3), result["counts"]
    finally:
        store.close()


def _name(index: int) -> str:
    return f"SEP{0x00A0B0000000 + index:012X}"


def _deployment(work_dir: str, phones: int) -> tuple[float, float, dict, dict]:
    """``opencapf apply`` of a file that declares ``phones`` phones, into an empty store, then again."""
    path = os.path.join(work_dir, "declared.db")
    document = {"opencapf": 1, "phones": [
        {"name": _name(index), "description": f"desk {index}", "device_pool": f"DP-SITE{index % 50:02d}",
         "model": fleet.MODELS[index % len(fleet.MODELS)], "security_mode": "authenticated",
         "certificate_operation": "install_upgrade", "authentication_mode": "null_string",
         "key_order": "ec_preferred", "operation_completes_by": DEADLINE}
        for index in range(phones)]}
    deployment = os.path.join(work_dir, "deployment.yml")
    with open(deployment, "w", encoding="utf-8") as handle:
        # Block-style YAML as a person would write it, one phone per few lines.
        handle.write("opencapf: 1\nphones:\n")
        for phone in document["phones"]:
            lines = [f"{key}: {json.dumps(value)}" for key, value in phone.items()]
            handle.write("  - " + "\n    ".join(lines) + "\n")
    first_seconds, first = _cli(path, "apply", deployment)
    counts = first["counts"]["phones"]
    declared = _count(path, "SELECT count(*) FROM phones WHERE operation = 'install_upgrade' "
                            "AND operation_deadline = ? AND key_order = 'ec_preferred'", (DEADLINE,))
    if counts["created"] != phones or declared != phones:
        raise AssertionError(f"first apply: {counts}, {declared} of {phones} phones in the store")
    again_seconds, again = _cli(path, "apply", deployment)
    if again["changed"] or again["counts"]["phones"]["created"] or again["counts"]["phones"]["updated"]:
        raise AssertionError(f"re-apply changed something: {again['counts']}")
    return (first_seconds, again_seconds,
            {"file_bytes": os.path.getsize(deployment), "counts": counts, "cpu_seconds": first["cpu_seconds"]},
            {"counts": again["counts"], "cpu_seconds": again["cpu_seconds"]})


@benchmark("fleet.convergence", ("fleet.bulk_update_first_run", "fleet.bulk_update_noop_run",
                                 "fleet.phone_loop_run", "fleet.bulk_vs_loop_per_phone",
                                 "fleet.declarative_apply_first", "fleet.declarative_apply_noop"), timeout=3600)
def fleet_convergence(ctx):
    # Two processes take part (ansible-playbook and the module it starts): no pinning, as a user runs it.
    phones = ctx.size(PHONES, SMOKE_PHONES)
    loop_phones = ctx.size(LOOP_PHONES, SMOKE_LOOP_PHONES)
    work_dir = tempfile.mkdtemp(prefix="convergence-", dir=ctx.work_dir)
    runs = _bulk_and_loop(work_dir, phones, loop_phones)
    first_seconds, first = runs["first"]
    noop_seconds, noop = runs["noop"]
    loop_seconds, looped = runs["loop"]
    bulk_per_phone = first_seconds / phones
    loop_per_phone = loop_seconds / loop_phones
    common = {"phones": phones, "playbook_command": "ansible-playbook -i localhost, -c local (default output)"}
    figures = {
        "fleet.bulk_update_first_run": Figure(
            first_seconds, "s", f"capf_bulk_update changing all {phones:,} phones: one ansible-playbook run, "
                                "start-up included", None,
            dict(common, recap=first, ms_per_phone=round(1000 * bulk_per_phone, 4), profile=runs["profile"])),
        "fleet.bulk_update_noop_run": Figure(
            noop_seconds, "s", f"the same capf_bulk_update again over {phones:,} phones, nothing to change", None,
            dict(common, recap=noop, profile=runs["profile"])),
        "fleet.phone_loop_run": Figure(
            loop_seconds, "s", f"capf_phone in a loop over {loop_phones} phones, each changed (one task, loop:)", None,
            {"phones": loop_phones, "recap": looped, "ms_per_phone": round(1000 * loop_per_phone, 4)}),
        "fleet.bulk_vs_loop_per_phone": Figure(
            loop_per_phone / bulk_per_phone, "x", "seconds per phone of the capf_phone loop over those of the "
                                                  "first capf_bulk_update run", None,
            {"phones": phones, "loop_phones": loop_phones, "bulk_ms_per_phone": round(1000 * bulk_per_phone, 4),
             "loop_ms_per_phone": round(1000 * loop_per_phone, 4)}),
    }
    apply_seconds, reapply_seconds, applied, reapplied = _deployment(work_dir, phones)
    figures["fleet.declarative_apply_first"] = Figure(
        apply_seconds, "s", f"opencapf apply of a {phones:,}-phone declarative file into an empty store", None,
        dict(applied, phones=phones))
    figures["fleet.declarative_apply_noop"] = Figure(
        reapply_seconds, "s", f"opencapf apply of the same {phones:,}-phone file again, nothing to change", None,
        dict(reapplied, phones=phones))
    return figures
