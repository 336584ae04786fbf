"""When the CAPF service reclaims the memory of ended connections (a full collection and
``malloc_trim``): once per burst, when the burst is over; not at every hundred connections of a
steady stream of sessions, which would pay a full collection every few seconds; and under a
stream that never stops, still at least once, at most once per ``longest`` seconds."""

from __future__ import annotations

import asyncio

from _opencapf.server.admission import Reclaimer

DELAY = 0.1


async def _stream(reclaimer: Reclaimer, seconds: float, gap: float = 0.01) -> None:
    """Connections end one every ``gap`` seconds (well within DELAY of each other) for ``seconds``."""
    end = asyncio.get_running_loop().time() + seconds
    while asyncio.get_running_loop().time() < end:
        reclaimer.ended()
        await asyncio.sleep(gap)


def test_a_steady_stream_is_not_collected_at_every_burst_but_once_it_stops():
    async def scenario():
        reclaimer = Reclaimer(after=5, delay=DELAY)
        await _stream(reclaimer, 1.0)  # some 100 ended connections: 20 times `after`, 10 times DELAY
        assert reclaimer.runs == 0
        await asyncio.sleep(DELAY * 3)
        assert reclaimer.runs == 1
        reclaimer.close()

    asyncio.run(scenario())


def test_a_burst_then_quiet_is_collected_once():
    async def scenario():
        reclaimer = Reclaimer(after=5, delay=DELAY)
        for _each in range(50):
            reclaimer.ended()
        await asyncio.sleep(DELAY / 2)
        assert reclaimer.runs == 0  # its stragglers may still end
        await asyncio.sleep(DELAY * 3)
        assert reclaimer.runs == 1
        for _each in range(4):  # fewer than `after`: nothing to reclaim
            reclaimer.ended()
        await asyncio.sleep(DELAY * 3)
        assert reclaimer.runs == 1
        reclaimer.ended()
        await asyncio.sleep(DELAY * 3)
        assert reclaimer.runs == 2
        reclaimer.close()

    asyncio.run(scenario())


def test_a_never_ending_stream_is_collected_at_most_once_per_longest():
    async def scenario():
        longest = 0.5
        reclaimer = Reclaimer(after=5, delay=DELAY, longest=longest)
        await _stream(reclaimer, 2.0)
        assert 2 <= reclaimer.runs <= 2.0 / longest
        reclaimer.close()

    asyncio.run(scenario())


def test_close_cancels_a_pending_collection():
    async def scenario():
        reclaimer = Reclaimer(after=1, delay=DELAY)
        reclaimer.ended()
        reclaimer.close()
        await asyncio.sleep(DELAY * 3)
        assert reclaimer.runs == 0

    asyncio.run(scenario())
