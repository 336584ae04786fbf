"""``format_utc``: the store's one text form of a time, whatever order moments come in and however often.

The invariant: ``format_utc(m)`` is always ``m`` in UTC as ``YYYY-MM-DDTHH:MM:SSZ`` (``strftime``'s
answer), for any sequence of moments (repeated, interleaved, more than it remembers), in any zone.
"""

from __future__ import annotations

import datetime as dt
import random

from _opencapf import vocabulary
from _opencapf.vocabulary import format_utc, utc_now


def _expected(moment: dt.datetime) -> str:
    utc = moment.astimezone(dt.timezone.utc)
    return f"{utc.year:04d}-" + utc.strftime("%m-%dT%H:%M:%SZ")


def _moments(seed: int, count: int) -> list[dt.datetime]:
    chooser = random.Random(seed)
    zones = [dt.timezone.utc, dt.timezone(dt.timedelta(hours=5, minutes=30)), dt.timezone(dt.timedelta(hours=-8))]
    start = dt.datetime(2, 1, 1, tzinfo=dt.timezone.utc)
    span = (dt.datetime(9998, 12, 31, tzinfo=dt.timezone.utc) - start).total_seconds()
    moments = []
    for _each in range(count):
        moment = start + dt.timedelta(seconds=chooser.uniform(0, span))
        moments.append(moment.astimezone(chooser.choice(zones)))
    return moments


def test_every_moment_in_any_order_and_zone_has_its_own_text():
    moments = _moments(7, 600)  # more than format_utc remembers at once
    order = random.Random(8)
    for _round in range(3):
        sequence = moments + moments[:50] * 2
        order.shuffle(sequence)
        for moment in sequence:
            assert format_utc(moment) == _expected(moment), moment
    assert len(vocabulary._formatted) <= vocabulary._FORMATTED_KEPT  # pylint: disable=protected-access


def test_a_session_s_moments_interleaved_keep_their_texts():
    now = utc_now()
    later = [now + dt.timedelta(days=365), now + dt.timedelta(seconds=90), now - dt.timedelta(microseconds=1)]
    for _each in range(5):
        for moment in (now, *later, now):
            assert format_utc(moment) == _expected(moment)
    # Instants equal in two zones share one text; a microsecond apart across a second boundary do not.
    assert format_utc(now.astimezone(dt.timezone(dt.timedelta(hours=2)))) == format_utc(now)
    assert format_utc(later[2]) != format_utc(now)


def test_none_stays_none():
    assert format_utc(None) is None
