# Copyright: contributors to opencapf.capf
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The directory section: an LDAP directory of 20,000 people synced into an empty store, then again.

The directory is a real OpenLDAP ``slapd``, the one the tests start (``tests/support/slapd.py``:
loopback, its own certificate, a size limit of 500 entries for the sync account, so the sync reads
the directory in pages as from a production directory), loaded offline with ``slapadd``. Each sync
is ``directory.sync`` over LDAPS with a device template that generates an authentication string
per device: the whole directory read, every entry mapped to a Jabber softphone, every device
created in one transaction (first sync), or found unchanged (second sync).
"""

from __future__ import annotations

import os
import sys
import tempfile
import time

from _opencapf import directory, templates
from _opencapf.store import open_store

from . import ROOT
from .harness import Figure, benchmark

TESTS_PATH = os.path.join(ROOT, "tests")
if TESTS_PATH not in sys.path:
    sys.path.insert(0, TESTS_PATH)

from support.slapd import PEOPLE, SYNC_DN, SlapdServer  # noqa: E402 pylint: disable=wrong-import-position

ENTRIES = 20_000
SMOKE_ENTRIES = 300
TEMPLATE = {"certificate_operation": "install_upgrade", "authentication_mode": "auth_string",
            "generate_authentication_string": True, "key_order": "ec_preferred", "description": "Jabber of {user}"}


def _sync(store, server):
    config = {"name": "bench", "urls": [server.ldaps_url], "ca_file": server.ca_file, "bind_dn": SYNC_DN,
              "search_base": PEOPLE, "device_template": "jabber", "page_size": 500}
    start, cpu = time.perf_counter(), time.process_time()
    result = directory.sync(store, config, bind_password=server.sync_password)
    return time.perf_counter() - start, time.process_time() - cpu, result


@benchmark("directory.sync", ("directory.first_sync", "directory.noop_sync"), timeout=900)
def directory_sync(ctx):
    entries = ctx.size(ENTRIES, SMOKE_ENTRIES)
    server = SlapdServer({f"user{index:05d}": () for index in range(entries)})
    try:
        work_dir = tempfile.mkdtemp(prefix="directory-", dir=ctx.work_dir)
        store = open_store(os.path.join(work_dir, "capf.db"), actor="bench")
        try:
            templates.define(store, "jabber", TEMPLATE)
            first_seconds, first_cpu, first = _sync(store, server)
            noop_seconds, noop_cpu, noop = _sync(store, server)
        finally:
            store.close()
    finally:
        server.stop()
    created, unchanged = len(first["devices"]["created"]), noop["changed"] is False
    if created != entries or not unchanged or noop["devices"]["created"]:
        raise AssertionError(f"first sync created {created} of {entries}; second changed {noop['changed']}")
    common = {"phones": entries, "entries": first["directory"]["entries"], "page_size": 500,
              "transport": "LDAPS on loopback, slapd (mdb)"}
    return {
        "directory.first_sync": Figure(
            first_seconds, "s", f"LDAP directory sync of {entries:,} entries into an empty store: paged search, "
                                "every Jabber softphone created with the template (a generated string each)", None,
            dict(common, cpu_seconds=round(first_cpu, 3), generated=len(first["authentication_strings"]))),
        "directory.noop_sync": Figure(
            noop_seconds, "s", f"the same {entries:,}-entry sync again: the directory read, nothing to change", None,
            dict(common, cpu_seconds=round(noop_cpu, 3))),
    }
