"""A virtual clock for the engine: every ``utc_now`` of it reads the test's clock, which a test moves."""

from __future__ import annotations

import time

from _opencapf import vocabulary


class VirtualTime:
    """``time`` as the engine's ``utc_now`` sees it: the test's clock (``now``, seconds since the epoch),
    everything else the real module's."""

    def __init__(self, start: float):
        self.now = start

    def time(self) -> float:
        return self.now

    def __getattr__(self, name):
        return getattr(time, name)


def virtual_clock(monkeypatch) -> VirtualTime:
    """The engine's clock made a ``VirtualTime`` from this second on, for the test that ``monkeypatch`` serves."""
    clock = VirtualTime(float(int(time.time())))
    monkeypatch.setattr(vocabulary, "time", clock)
    return clock
