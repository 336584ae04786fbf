"""A phone is created, and its settings changed, on one path, the converge path of phone settings
(``phone_config.converge_many``), whoever asks: the engine's one statement that inserts phones is
``store.phones.insert_many`` and its one statement that writes a phone's settings is
``store.phones.update_many`` (besides the engine's record of a finished operation), only that path's
writer calls them, and only ``phone_config.audit_event`` names the ``phone.create`` and ``phone.update``
events (one audit shape, with ``via``)."""

from __future__ import annotations

import ast
import os

import _opencapf
from _opencapf.store import phones as phone_records

ENGINE = os.path.dirname(os.path.abspath(_opencapf.__file__))
ADMINISTERED = phone_records.SETTINGS + ("auth_salt", "auth_hash")


def _text(node) -> str | None:
    """The text of a string literal (an f-string with its fields as ``x``), else None."""
    if isinstance(node, ast.JoinedStr):
        return "".join(part.value if isinstance(part, ast.Constant) else "x" for part in node.values)
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    return None


def _writes_settings(node) -> bool:
    """Whether ``node`` is a statement that updates phones and sets a column an administrator sets (their
    settings, the keyed hash of their authentication string), or columns it names at run time."""
    text = _text(node) or ""
    if not text.startswith("UPDATE phones SET "):
        return False
    assignments = text[len("UPDATE phones SET "):].split(" WHERE ")[0].split(",")
    columns = [assignment.partition("=")[0].strip() for assignment in assignments]
    return any(column in ADMINISTERED or "=" not in assignment for column, assignment in zip(columns, assignments))


def _places(test) -> set[tuple[str, str]]:
    """(engine file, function) of every node of the engine for which ``test(node)`` holds; a node outside
    any function is named by its file and ``<module>``."""
    found = set()
    for directory, dirs, files in os.walk(ENGINE):
        dirs[:] = sorted(name for name in dirs if name != "__pycache__")
        for name in sorted(files):
            if not name.endswith(".py"):
                continue
            path = os.path.join(directory, name)
            with open(path, encoding="utf-8") as handle:
                tree = ast.parse(handle.read(), path)
            functions = [node for node in ast.walk(tree) if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))]
            for node in ast.walk(tree):
                if not test(node):
                    continue
                around = [function.name for function in functions
                          if function.lineno <= node.lineno <= (function.end_lineno or function.lineno)]
                found.add((os.path.relpath(path, ENGINE), around[-1] if around else "<module>"))
    return found


def _calls(attribute: str) -> set[tuple[str, str]]:
    """Where the engine calls ``store.phones.<attribute>``."""
    return _places(lambda node: isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                   and node.func.attr == attribute and isinstance(node.func.value, ast.Name)
                   and node.func.value.id in ("phone_records", "phones"))


# The audit vocabulary names every action with its shape, and records none.
VOCABULARY = {("store/audit_actions.py", "<module>")}


def test_the_engine_creates_a_phone_on_the_converge_path_only():
    inserts = _places(lambda node: "INSERT INTO phones " in (_text(node) or ""))
    assert inserts == {("store/phones.py", "insert_many")}, "statements that insert a phone"
    callers = _calls("insert_many")
    assert callers == {("phone_config.py", "_write_plans")}, "callers of store.phones.insert_many"
    events = _places(lambda node: _text(node) == "phone.create") - VOCABULARY
    assert events == {("phone_config.py", "audit_event")}, "places that audit a phone's creation"


def test_the_engine_changes_a_phone_s_settings_on_the_converge_path_only():
    """No function besides the converge path's writes a phone's settings or a ``phone.update`` event: an
    older way that wrote both (``phone.update`` without ``via``) stays gone. The engine's record of a
    finished operation sets the operation back to ``none`` after a delete (its own ``phone.operation_*``
    event), the one other statement that writes a setting."""
    writes = _places(_writes_settings)
    assert writes == {("store/phones.py", "update_many"), ("store/phones.py", "set_operation_result")}, \
        "statements that write a phone's settings"
    assert _calls("update_many") == {("phone_config.py", "_write_plans")}, "callers of store.phones.update_many"
    events = _places(lambda node: _text(node) == "phone.update") - VOCABULARY
    assert events == {("phone_config.py", "audit_event")}, "places that audit a change of a phone's settings"
