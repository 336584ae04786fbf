"""The store is the only place that speaks SQL: no engine file outside ``store/`` holds a statement.

Every string literal of every engine module outside ``store/`` (adjacent literals joined, f-strings
with their fields as ``x``) is searched for an SQL statement's keywords, and every call is checked
for a transaction's statement methods (``tx.execute(...)`` and the like).
"""

from __future__ import annotations

import ast
import os
import re

import pytest

import _opencapf

ENGINE = os.path.dirname(os.path.abspath(_opencapf.__file__))
STORE = os.path.join(ENGINE, "store")
SQL = re.compile(r"\b(SELECT|INSERT INTO|UPDATE [A-Za-z_]+ SET|DELETE FROM|CREATE (TABLE|INDEX))\b")
STATEMENT_METHODS = {"execute", "executemany", "insert", "query", "one", "scalar", "rows"}


def _literal_text(node: ast.JoinedStr) -> str:
    return "".join(part.value if isinstance(part, ast.Constant) else "x" for part in node.values)


def sql_in(source: str, filename: str = "<source>") -> list[tuple[int, str]]:
    """(line, what) for each SQL statement text and each transaction statement call in ``source``."""
    tree = ast.parse(source, filename)
    inside_fstrings = {id(part) for node in ast.walk(tree) if isinstance(node, ast.JoinedStr) for part in node.values}
    found = []
    for node in ast.walk(tree):
        text = None
        if isinstance(node, ast.JoinedStr):
            text = _literal_text(node)
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in inside_fstrings:
            text = node.value
        elif (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
              and node.func.attr in STATEMENT_METHODS and isinstance(node.func.value, ast.Name)
              and node.func.value.id == "tx"):
            found.append((node.lineno, f"tx.{node.func.attr}(...)"))
        if text is not None:
            match = SQL.search(text)
            if match:
                found.append((node.lineno, f"SQL {match.group(0)!r} in a string"))
    return sorted(found)


def engine_files_outside_store() -> list[str]:
    paths = []
    for directory, dirs, files in os.walk(ENGINE):
        dirs[:] = sorted(name for name in dirs if os.path.join(directory, name) != STORE and name != "__pycache__")
        paths.extend(os.path.join(directory, name) for name in sorted(files) if name.endswith(".py"))
    return paths


def test_no_engine_file_outside_the_store_speaks_sql():
    files = engine_files_outside_store()
    assert len(files) > 50 and not any(path.startswith(STORE + os.sep) for path in files)
    offences = []
    for path in files:
        with open(path, encoding="utf-8") as handle:
            source = handle.read()
        offences += [f"{os.path.relpath(path, ENGINE)}:{line}: {what}" for line, what in sql_in(source, path)]
    assert not offences, "SQL outside store/ (move it into a store/ record module):\n" + "\n".join(offences)


@pytest.mark.parametrize("source, line", [
    ('rows = tx.query(sql)\n', 1),
    ('def f(tx):\n    return tx.one(statement, (1,))\n', 2),
    ('STATEMENT = "SELECT pem FROM trust_certificates"\n', 1),
    ('sql = (\n    "SELECT id "\n    "FROM csrs")\n', 2),
    ('SQL = "UPDATE phones SET %s WHERE id = ?" % columns\n', 1),
    ('SQL = (f"UPDATE {table} SET a = ?")\n', 1),
    ('q = f"SELECT {columns} FROM phones"\n', 1),
    ('INSERT = "INSERT INTO phones (name) VALUES (?)"\n', 1),
    ('"""Module.\n\nDELETE FROM phones happens here."""\n', 1),
    ('DDL = """CREATE TABLE x (id INTEGER)"""\n', 1),
    ('DDL = "CREATE INDEX i ON x (id)"\n', 1),
])
def test_the_check_finds_statements_and_statement_calls(source, line):
    assert [found_line for found_line, _what in sql_in(source)] == [line]


@pytest.mark.parametrize("source", [
    '# SELECT id FROM phones in a comment\nx = 1\n',
    'text = "select a phone, then update it"\n',
    'UPDATE_PASSWORD = ("always", "on_create")\n',
    'rows = phone_query.select(tx, query)\n',
    'value = store.one(thing)\n',
    'label = "UPDATE_PASSWORD SET"\n',
])
def test_the_check_leaves_other_text_alone(source):
    assert sql_in(source) == []
