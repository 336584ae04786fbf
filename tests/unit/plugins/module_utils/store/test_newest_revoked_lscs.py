"""capf_info's ``revoked_lscs``, the newest revoked LSCs (``certificates.revoked_lscs`` with ``newest``):
(1) the very rows, in the very order, of a straightforward reading of every revoked LSC sorted newest
first, ties of revocation time included, of every issuer and of one; (2) its work does not grow with the
revoked LSCs of the years (every renewal revokes the LSC it replaces): it reads the newest of each issuer."""

from __future__ import annotations

import datetime as dt
import itertools

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from support.store_phones import create_phone
from support.stores import vm_steps
from _opencapf import reports
from _opencapf.store import certificates, open_store, phones
from _opencapf.vocabulary import format_utc

ISSUERS = ("capf", "CN=Other CA", "CN=Third CA")
NAMES = tuple(f"SEP00000000D{index:03d}" for index in range(4))
TIMES = tuple(f"2026-0{month}-01T00:00:00Z" for month in (3, 4, 5))  # few: revocations at one time
_runs = itertools.count(1)

LSCS = st.lists(st.tuples(st.integers(0, len(NAMES) - 1), st.integers(0, len(ISSUERS) - 1),
                          st.sampled_from(("revoked", "revoked", "installed", "stale")),
                          st.integers(0, len(TIMES) - 1)), min_size=0, max_size=30)


def _lsc(tx, phone_id: int, serial: str, issuer: str, status: str = "installed", not_after: str = "2030-01-01T00:00:00Z"):
    return certificates.insert(tx, phone_id=phone_id, kind="lsc", serial=serial, issuer=issuer,
                               fingerprint=f"f{serial}", public_key_fingerprint=f"k{serial}", status=status,
                               source="capf", pem=f"pem {serial}", not_before="2026-01-01T00:00:00Z",
                               not_after=not_after)


def _straightforward(tx, issuer=None, with_pem=False) -> list[dict]:
    """Every revoked LSC (of ``issuer``), newest first: the whole oldest-first listing, reversed (its order,
    revocation time then id, is total)."""
    return list(reversed(certificates.revoked_lscs(tx, issuer, with_pem=with_pem)))


@pytest.mark.both_backends
@settings(max_examples=25, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(lscs=LSCS, removed=st.sets(st.integers(0, len(NAMES) - 1), max_size=2),
       newest=st.integers(1, 12), with_pem=st.booleans())
def test_the_newest_revoked_lscs_are_those_of_a_reading_of_every_one(more_store_locations, state_dir, lscs,
                                                                     removed, newest, with_pem):
    """Revoked LSCs of three issuers on four phones, some removed since (their revoked LSCs kept),
    revoked at three times only (ties ordered by id, a removed phone's by its negative id)."""
    with open_store(more_store_locations(f"newest-{next(_runs)}"), state_dir=state_dir, actor="test") as store:
        with store.transaction() as tx:
            ids = {name: create_phone(tx, name)["id"] for name in NAMES}
            for serial, (phone, issuer, status, time) in enumerate(lscs):
                certificate_id = _lsc(tx, ids[NAMES[phone]], f"{serial:x}", ISSUERS[issuer],
                                      "installed" if status == "revoked" else status)
                if status == "revoked":
                    certificates.revoke(tx, "test", certificate_id, NAMES[phone], "superseded", TIMES[time])
            for phone in sorted(removed):
                phones.delete(tx, "test", NAMES[phone])
        with store.read() as tx:
            everything = _straightforward(tx, with_pem=with_pem)
            assert certificates.revoked_lscs(tx, with_pem=with_pem, newest=newest) == everything[:newest]
            for issuer in ISSUERS + ("CN=Nobody",):
                assert (certificates.revoked_lscs(tx, issuer, with_pem=with_pem, newest=newest)
                        == _straightforward(tx, issuer, with_pem=with_pem)[:newest]), issuer
        assert reports.gather(store, ["revoked_lscs"], limit=newest)["revoked_lscs"] == _straightforward_of(store)[:newest]


def _straightforward_of(store) -> list[dict]:
    with store.read() as tx:
        return _straightforward(tx)


OLD_REVOKED = 5000


def test_the_newest_revoked_lscs_do_not_read_those_of_the_years(sqlite_store):
    """SQLite's virtual machine steps of capf_info's ``revoked_lscs`` (limit 10) with a few revoked LSCs of
    two issuers and a removed phone's, before and after 5,000 LSCs revoked long ago (each superseded by a
    renewal): those add no reading."""
    store = sqlite_store
    with store.transaction() as tx:
        recent = create_phone(tx, NAMES[0])
        for serial, issuer in enumerate(("capf", "capf", "CN=Other CA")):
            certificates.revoke(tx, "test", _lsc(tx, recent["id"], f"a{serial}", issuer), NAMES[0], "key_compromise",
                                f"2026-11-0{serial + 1}T00:00:00Z")
        gone = create_phone(tx, NAMES[1])
        certificates.revoke(tx, "test", _lsc(tx, gone["id"], "b0", "capf"), NAMES[1], "superseded",
                            "2026-11-05T00:00:00Z")
        phones.delete(tx, "test", NAMES[1])

    def steps() -> tuple[int, list[str]]:
        with vm_steps(store) as counted:
            listed = reports.gather(store, ["revoked_lscs"], limit=10)["revoked_lscs"]
        return counted[0], [row["serial"] for row in listed]

    baseline, listed = steps()
    assert listed == ["b0", "a2", "a1", "a0"]
    long_ago = dt.datetime(2020, 1, 1, tzinfo=dt.timezone.utc)
    with store.transaction() as tx:
        phone = create_phone(tx, NAMES[2])
        for index in range(OLD_REVOKED):
            moment = long_ago + dt.timedelta(hours=index)
            certificate_id = _lsc(tx, phone["id"], f"e{index:05x}", ("capf", "CN=Other CA")[index % 2],
                                  not_after=format_utc(moment + dt.timedelta(days=1)))
            certificates.revoke(tx, "test", certificate_id, NAMES[2], "superseded", format_utc(moment))
    after, listed = steps()
    assert listed[:4] == ["b0", "a2", "a1", "a0"] and len(listed) == 10
    # Reading and sorting 5,000 revoked LSCs takes hundreds of thousands of steps; the newest ten of each
    # issuer, a few hundred.
    assert after < baseline + 2000, (baseline, after)
