"""A generated fleet (``bench.fleet``) counts the key requests views report waiting for a signature: the
pending request an abandoned session left (its operation in progress since before the longest session)
is reported failed, so ``store.pending_csrs`` lists fewer than the fleet stored pending or submitted."""

from __future__ import annotations

import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from bench import fleet  # noqa: E402
from _opencapf.store import csrs, open_store  # noqa: E402  (bench puts the engine on sys.path)


def test_a_fleet_counts_the_requests_views_report_waiting(store_path):
    with open_store(store_path, actor="test") as store:
        generated = fleet.generate(store, 20_000)
        with store.read() as tx:
            listed = len(csrs.awaiting_signature(tx))
    stored = generated.csrs["pending"] + generated.csrs["submitted"]
    assert generated.csrs_awaiting < stored  # the seed's fleet has abandoned requests
    assert listed == generated.csrs_awaiting
