"""What tests declare to the store the way a user or a phone's history would: times in the forms a
declaration may give them, and phones holding an installed LSC of given dates."""

from __future__ import annotations

import datetime as dt
import secrets

from support.protocol import add_phone
from _opencapf.store import certificates
from _opencapf.vocabulary import format_utc


def as_declared(moment: dt.datetime, form: str):
    """``moment`` as a declaration may give it: ISO text with Z (``text_z``) or an offset
    (``text_offset``), or a datetime (``datetime``, as YAML gives one)."""
    if form == "datetime":
        return moment
    text = moment.isoformat()
    return text.replace("+00:00", "Z") if form == "text_z" else text


def installed_lsc(store, name: str, not_before: dt.datetime, not_after: dt.datetime, **settings) -> str:
    """A phone ``name`` (``settings``: its options) with an installed LSC valid from ``not_before`` to
    ``not_after``, recorded as a CAPF LSC issued at ``not_before``; the LSC's fingerprint."""
    phone = add_phone(store, name, **settings)
    fingerprint = secrets.token_hex(32)
    with store.transaction() as tx:
        certificates.insert(tx, phone_id=phone["id"], kind="lsc", serial=secrets.token_hex(8), issuer="CN=CAPF-test",
                            fingerprint=fingerprint, public_key_fingerprint=secrets.token_hex(32), status="installed",
                            source="capf", pem="-", not_before=format_utc(not_before), not_after=format_utc(not_after),
                            issued_at=format_utc(not_before))
    return fingerprint
