# Copyright: contributors to opencapf.capf
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Progress of long commands (``apply``, ``phone fleet``, ``csr import``) on one terminal line.

The engine reports ``progress(stage, done, total)``; ``Progress`` redraws one line on standard
error, at most ten times a second, and ends it when a stage is done. It writes nothing at all
when standard error is not a terminal (a pipe, a file, a CI log) or when results are JSON, so
logs and scripted output stay free of carriage returns.
"""

from __future__ import annotations

import time

BAR_WIDTH = 30
REDRAW_SECONDS = 0.1


def is_terminal(stream) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError, OSError):
        return False


class Progress:
    """A ``progress(stage, done, total)`` callable drawing a bar on ``stream`` when it is a terminal."""

    def __init__(self, stream, *, enabled: bool | None = None, clock=time.monotonic):
        self.stream = stream
        self.enabled = is_terminal(stream) if enabled is None else enabled
        self._clock = clock
        self._stage: str | None = None
        self._drawn = float("-inf")
        self._open = False  # a line is drawn and not yet ended

    @classmethod
    def for_output(cls, output) -> Progress:
        """Progress on the command's standard error; off for ``--json``."""
        return cls(output.errors, enabled=False if output.as_json else None)

    def __call__(self, stage: str, done: int = 0, total: int = 0) -> None:
        """Draw ``stage`` at ``done`` of ``total``; with no total, the stage's name alone ("stage ...")."""
        if not self.enabled:
            return
        now = self._clock()
        finished = total > 0 and done >= total
        if stage == self._stage and (not self._open or total <= 0 or not finished and now - self._drawn < REDRAW_SECONDS):
            return
        if stage != self._stage and self._open:
            self.stream.write("\n")
        self._stage, self._drawn = stage, now
        if total > 0:
            filled = BAR_WIDTH * min(done, total) // total
            self.stream.write(f"\r\x1b[K{stage} [{'#' * filled}{'.' * (BAR_WIDTH - filled)}] {done}/{total}")
        else:
            self.stream.write(f"\r\x1b[K{stage} ...")
        self._open = not finished
        if finished:
            self.stream.write("\n")
        self.stream.flush()

    def close(self) -> None:
        """End a line left open (a stage interrupted before it finished)."""
        if self.enabled and self._open:
            self.stream.write("\n")
            self.stream.flush()
            self._open = False
