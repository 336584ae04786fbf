"""Actions of tests of the audit log's own mechanics (durability, batching, locks, the stored text of any
details), which record events no code of the engine records: known to the audit vocabulary
(``audit_actions.ACTIONS``) only while a test runs, with the keys it gives them (each optional)."""

from __future__ import annotations

import contextlib
from typing import Iterator

from _opencapf.store import audit_actions

TEST_MEANING = "an event of a test"


@contextlib.contextmanager
def extra_actions(*actions: str, keys=()) -> Iterator[None]:
    """``actions`` (none of the engine's) in the vocabulary while the block runs, each with ``keys`` optional."""
    previous = {action: audit_actions.ACTIONS.get(action) for action in actions}
    assert all(shape is None or shape.meaning == TEST_MEANING for shape in previous.values()), "an action of the engine"
    shape = audit_actions.Shape(TEST_MEANING, frozenset(), frozenset(keys), frozenset(keys))
    audit_actions.ACTIONS.update((action, shape) for action in actions)
    try:
        yield
    finally:
        for action, shape in previous.items():
            if shape is None:
                del audit_actions.ACTIONS[action]
            else:
                audit_actions.ACTIONS[action] = shape
