# Copyright: contributors to opencapf.capf
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Benchmarks, figures and the timing loops they share.

A benchmark is a function ``(context) -> {figure name: Figure}`` registered with
``@benchmark``; a derived figure is computed from other figures of the same run with
``@derived``. Benchmarks never assert speed: they measure and report.
"""

from __future__ import annotations

import dataclasses
import os
import statistics
import time
from typing import Callable

BENCH_COMMAND = "scripts/bench"


@dataclasses.dataclass(frozen=True)
class Figure:
    """One measured number. ``baseline`` names a figure of the same run to compare with."""

    value: float
    unit: str
    description: str
    baseline: str | None = None
    details: dict = dataclasses.field(default_factory=dict)

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)


@dataclasses.dataclass(frozen=True)
class Context:
    """What a benchmark may know about the run: sizes, a scratch directory, the cores it may use."""

    smoke: bool
    work_dir: str
    cores: tuple[int, ...]

    @property
    def core(self) -> int:
        """The core single-core measurements are pinned to."""
        return self.cores[0]

    @property
    def client_core(self) -> int:
        """A second core for load generators, so they do not steal the measured core."""
        return self.cores[1] if len(self.cores) > 1 else self.cores[0]

    def size(self, full, smoke):
        return smoke if self.smoke else full


@dataclasses.dataclass(frozen=True)
class Benchmark:
    name: str
    section: str
    figures: tuple[str, ...]
    function: Callable[[Context], dict]
    timeout: int


@dataclasses.dataclass(frozen=True)
class Derived:
    name: str
    section: str
    inputs: tuple[str, ...]
    function: Callable[[dict], Figure]


BENCHMARKS: dict[str, Benchmark] = {}
DERIVED: dict[str, Derived] = {}


def benchmark(name: str, figures: tuple[str, ...] | None = None, timeout: int = 900):
    """Register a benchmark that produces ``figures`` (default: one figure named like it)."""
    def register(function):
        BENCHMARKS[name] = Benchmark(name, name.split(".", 1)[0], tuple(figures or (name,)), function, timeout)
        return function
    return register


def derived(name: str, inputs: tuple[str, ...]):
    """Register a figure computed from ``inputs`` (figure values of the same run)."""
    def register(function):
        DERIVED[name] = Derived(name, name.split(".", 1)[0], tuple(inputs), function)
        return function
    return register


def figure_names() -> list[str]:
    names = [name for bench in BENCHMARKS.values() for name in bench.figures]
    return names + list(DERIVED)


def producer(figure: str) -> Benchmark | Derived | None:
    if figure in DERIVED:
        return DERIVED[figure]
    for bench in BENCHMARKS.values():
        if figure in bench.figures:
            return bench
    return None


def reproduce_command(figure: str, smoke: bool) -> str:
    return f"{BENCH_COMMAND} --only {figure}" + (" --smoke" if smoke else "")


# --- running code pinned to one core -------------------------------------------------------------

def pin(core: int) -> list[int]:
    """Pin the calling process to ``core``; return the cores it may now run on."""
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {core})
        return sorted(os.sched_getaffinity(0))
    return []


def available_cores() -> tuple[int, ...]:
    if hasattr(os, "sched_getaffinity"):
        return tuple(sorted(os.sched_getaffinity(0)))
    return tuple(range(os.cpu_count() or 1))


# --- timing loops --------------------------------------------------------------------------------

def rate(operation: Callable[[], object], *, seconds: float, rounds: int, warmup: int = 3,
         clock: str = "wall") -> tuple[float, dict]:
    """Call ``operation`` repeatedly for ``seconds`` per round; return the median rate per second.

    ``clock="cpu"`` counts per second of this process's CPU time instead of wall time: what one
    core can do when it is fully ours, even when other work on the machine takes turns on it.
    The details keep both clocks for every round, so a reader sees how busy the core really was.
    """
    for _warm in range(warmup):
        operation()
    wall_rates, cpu_rates, total, wall, cpu = [], [], 0, 0.0, 0.0
    for _round in range(rounds):
        count = 0
        cpu_start = time.process_time()
        start = time.perf_counter()
        while True:
            operation()
            count += 1
            elapsed = time.perf_counter() - start
            if elapsed >= seconds:
                break
        used = time.process_time() - cpu_start
        cpu += used
        wall += elapsed
        total += count
        wall_rates.append(count / elapsed)
        cpu_rates.append(count / used if used > 0 else count / elapsed)
    return _result(wall_rates, cpu_rates, total, wall, cpu, clock)


def batches(operation: Callable[[int], object], *, count: int, rounds: int, warmup: int = 3,
            clock: str = "wall") -> tuple[float, dict]:
    """Call ``operation(i)`` ``count`` times per round, ``i`` distinct over the whole run.

    For operations that consume a fresh input each time (a new device, a new certificate), so the
    number of calls is known before the timed part and inputs can be prepared outside it.
    """
    index = 0
    for _warm in range(warmup):
        operation(index)
        index += 1
    wall_rates, cpu_rates, total, wall, cpu = [], [], 0, 0.0, 0.0
    for _round in range(rounds):
        cpu_start = time.process_time()
        start = time.perf_counter()
        for _call in range(count):
            operation(index)
            index += 1
        elapsed = time.perf_counter() - start
        used = time.process_time() - cpu_start
        cpu += used
        wall += elapsed
        total += count
        wall_rates.append(count / elapsed)
        cpu_rates.append(count / used if used > 0 else count / elapsed)
    return _result(wall_rates, cpu_rates, total, wall, cpu, clock)


def inputs_needed(count: int, rounds: int, warmup: int = 3) -> int:
    """How many distinct inputs ``batches`` consumes."""
    return warmup + count * rounds


def timed(operation: Callable[[], object], *, rounds: int) -> tuple[float, dict]:
    """Run ``operation`` ``rounds`` times; return the median wall seconds and what it returned last."""
    seconds, cpu, result = [], [], None
    for _round in range(rounds):
        # Free the previous round's result before the clock starts: freeing a listing of 100,000
        # phones costs about as much as a fifth of building it, and is no part of the next round.
        result = None
        cpu_start = time.process_time()
        start = time.perf_counter()
        result = operation()
        seconds.append(time.perf_counter() - start)
        cpu.append(time.process_time() - cpu_start)
    return statistics.median(seconds), {
        "rounds_seconds": [round(s, 6) for s in seconds],
        "cpu_seconds": [round(s, 6) for s in cpu],
        "result": result,
    }


def _result(wall_rates: list[float], cpu_rates: list[float], total: int, wall: float, cpu: float,
            clock: str) -> tuple[float, dict]:
    if clock not in ("wall", "cpu"):
        raise ValueError(f"clock must be wall or cpu, got {clock!r}")
    value = statistics.median(cpu_rates if clock == "cpu" else wall_rates)
    return value, {
        "clock": clock,
        "rounds_per_wall_second": [round(r, 3) for r in wall_rates],
        "rounds_per_cpu_second": [round(r, 3) for r in cpu_rates],
        "busy_share": round(cpu / wall, 4) if wall else None,
        "operations": total,
        "wall_seconds": round(wall, 6),
        "cpu_seconds": round(cpu, 6),
        "cpu_ms_per_operation": round(1000 * cpu / total, 6) if total else None,
        "wall_ms_per_operation": round(1000 * wall / total, 6) if total else None,
    }
