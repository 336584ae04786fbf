"""A phone is created on one path, the converge path of phone settings (``phone_config.converge_many``),
whoever asks: the engine's one statement that inserts phones is ``store.phones.insert_many``, only that
path's writer calls it, and only ``phone_config.audit_event`` names the ``phone.create`` event (one
audit shape, with ``via``)."""

from __future__ import annotations

import ast
import os

import _opencapf

ENGINE = os.path.dirname(os.path.abspath(_opencapf.__file__))


def _text(node) -> str | None:
    """The text of a string literal (an f-string with its fields as ``x``), else None."""
    if isinstance(node, ast.JoinedStr):
        return "".join(part.value if isinstance(part, ast.Constant) else "x" for part in node.values)
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    return None


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


def test_the_engine_creates_a_phone_on_the_converge_path_only():
    inserts = _places(lambda node: "INSERT INTO phones " in (_text(node) or ""))
    assert inserts == {("store/phones.py", "insert_many")}, "statements that insert a phone"
    callers = _places(lambda node: isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                      and node.func.attr == "insert_many" and isinstance(node.func.value, ast.Name)
                      and node.func.value.id in ("phone_records", "phones"))
    assert callers == {("phone_config.py", "_write_plans")}, "callers of store.phones.insert_many"
    events = _places(lambda node: _text(node) == "phone.create")
    assert events == {("phone_config.py", "audit_event")}, "places that audit a phone's creation"
