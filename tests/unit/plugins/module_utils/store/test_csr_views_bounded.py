"""A view of the key requests in a few statuses (those waiting for a signature, the pending ones, the
failed ones, the phone-signed ones of the offline CA) reads those requests from the ``csrs_status``
index, whatever the number of requests the years of enrolments left behind: every enrolment records
one (``issued``), and a view that reports the statuses as the scheduler would record them
(``csrs.reported_status``) must still not walk them all."""

from __future__ import annotations

from _opencapf.store import csrs as csr_records
from support.store_phones import create_phone
from support.stores import vm_steps

OLD_REQUESTS = 5000


def _steps(store, read) -> int:
    """SQLite's virtual machine steps of ``read(tx)``."""
    with store.read() as tx, vm_steps(store) as counted:
        read(tx)
    return counted[0]


def test_csr_views_of_a_few_statuses_do_not_walk_the_requests_of_the_years(sqlite_store):
    store = sqlite_store
    with store.transaction() as tx:
        phone = create_phone(tx, "SEP00000000C5A1")
        for index in range(OLD_REQUESTS):
            csr_records.add_issued(tx, phone["id"], f"{index:064x}", b"key", None)
        waiting = csr_records.add(tx, phone["id"], "f" * 64, b"key")
    views = {
        "awaiting signature": csr_records.awaiting_signature,
        "awaiting signature of the phone": lambda tx: csr_records.awaiting_signature_for(tx, phone["name"]),
        "pending": lambda tx: csr_records.listing(tx, "pending"),
        "failed": lambda tx: csr_records.listing(tx, "failed"),
        "phone-signed, pending": lambda tx: csr_records.offline_signed(tx, "pending"),
    }
    with store.read() as tx:
        assert [row["id"] for row in csr_records.awaiting_signature(tx)] == [waiting]
        assert [row["id"] for row in csr_records.listing(tx, "pending")] == [waiting]
    steps = {name: _steps(store, read) for name, read in views.items()}
    # A search of the index for one or two statuses takes a few hundred steps; reading 5,000 rows and
    # working out each one's reported status, hundreds of thousands.
    assert max(steps.values()) < 3000, steps
