"""The CAPF service's counting gates (handshake and session slots): a free slot is taken at once,
waiters are served in arrival order as slots come free, and a waiter whose time runs out leaves
the count as it was."""

from __future__ import annotations

import asyncio

from _opencapf.server.service import _Slots  # pylint: disable=protected-access


def test_free_slots_are_taken_at_once_and_waiters_served_in_order():
    async def scenario():
        slots = _Slots()
        assert await slots.acquire(2, 1.0) and await slots.acquire(2, 1.0)
        assert slots.used == 2
        order = []

        async def wait(name):
            granted = await slots.acquire(2, 5.0)
            order.append((name, granted))

        waiters = [asyncio.ensure_future(wait(name)) for name in ("first", "second")]
        await asyncio.sleep(0.01)
        assert order == [] and slots.used == 2
        slots.release()
        await asyncio.sleep(0.01)
        assert order == [("first", True)] and slots.used == 2
        slots.release()
        await asyncio.gather(*waiters)
        assert order == [("first", True), ("second", True)] and slots.used == 2
        slots.release()
        slots.release()
        assert slots.used == 0

    asyncio.run(scenario())


def test_a_waiter_that_times_out_takes_nothing_and_a_lower_limit_holds_back():
    async def scenario():
        slots = _Slots()
        assert await slots.acquire(1, 1.0)
        assert not await slots.acquire(1, 0.05)  # full: gives up after its timeout
        assert slots.used == 1
        slots.release()
        assert slots.used == 0
        assert await slots.acquire(3, 1.0) and await slots.acquire(3, 1.0)
        # The limit comes with each acquire (max_sessions may have been lowered meanwhile).
        waiter = asyncio.ensure_future(slots.acquire(2, 5.0))
        await asyncio.sleep(0.01)
        slots.release()  # 1 in use again, under the waiter's limit of 2
        assert await waiter and slots.used == 2

    asyncio.run(scenario())
