"""An audit event's details are stored as one text: ``json.dumps`` of the details, keys sorted,
anything JSON has no form for as its ``str``, and every value whose key names a secret (in dicts
within the details too, at any depth) replaced by ``********``. Whatever the details, that text is
exactly what is stored, and the caller's details are left as they were: readers (``audit.events``,
reports, an operator's query of the log) see the same text for the same event."""

from __future__ import annotations

import copy
import datetime
import json

from hypothesis import HealthCheck, given, settings, strategies as st

from support.audit_vocabulary import extra_actions
from _opencapf.store import audit

SECRET_WORDS = ("password", "authentication_string", "auth_string", "secret", "private_key", "key_pem")


def _expected(details: dict) -> str:
    """What the log must hold, by the rule above (made here, independently of the store's code)."""

    def scrub(value: dict) -> dict:
        return {key: "********" if any(word in key.lower() for word in SECRET_WORDS)
                else scrub(item) if isinstance(item, dict) else item for key, item in value.items()}

    return json.dumps(scrub(details), sort_keys=True, default=str)


KEYS = st.one_of(st.sampled_from(("reason", "serial", "certificate_id", "Password", "new_secret", "key_pem_file",
                                  "revoked", "z", "a", "\u00e9t\u00e9")),
                 st.text(max_size=12))
LEAVES = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=20),
                   st.dates().map(lambda day: datetime.datetime.combine(day, datetime.time())),
                   st.lists(st.integers(), max_size=3), st.tuples(st.text(max_size=5), st.integers()))
VALUES = st.recursive(LEAVES, lambda inner: st.one_of(st.lists(inner, max_size=3),
                                                      st.dictionaries(KEYS, inner, max_size=4)), max_leaves=12)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(details=st.dictionaries(KEYS.filter(lambda key: key.isidentifier() and key not in ("tx", "actor", "action", "subject")),
                               VALUES, max_size=8))
def test_an_event_s_details_are_stored_as_their_sorted_scrubbed_json(sqlite_store, details):
    before = copy.deepcopy(details)
    with extra_actions("test.details", keys=details), sqlite_store.transaction() as tx:
        audit.record(tx, "test", "test.details", "subject", **details)
        with audit.batched(tx):
            audit.record(tx, "test", "test.details", "batched", **details)
        audit.record_many(tx, "test", "2026-01-01T00:00:00Z", [("test.details", "many", details)])
        stored = [row["details"] for row in tx.query(
            "SELECT details FROM audit_events WHERE action = 'test.details' ORDER BY id DESC LIMIT 3")]
    assert stored == [_expected(before)] * 3
    assert repr(details) == repr(before)  # the caller's details are not changed (NaN != NaN: compared as text)
