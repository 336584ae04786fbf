# Copyright: contributors to opencapf.capf
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Text forms of engine results for people."""

from __future__ import annotations

import csv
import io

_FIELDS = ("common_name", "subject", "issuer", "serial", "fingerprint", "key_type", "key_size", "not_before",
           "not_after", "source", "active")


def certificate_text(summary: dict) -> str:
    width = max(len(field) for field in _FIELDS)
    return "\n".join(f"  {field.ljust(width)}  {summary[field]}" for field in _FIELDS if field in summary)


def pem_text(pem: str) -> str:
    """PEM text ending with exactly one newline, to print alone or one after another."""
    return pem.strip() + "\n"


def cell(value) -> str:
    """A value as one table or CSV cell: empty for None, ``yes``/``no`` for booleans."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "yes" if value else "no"
    return str(value)


def table(rows: list[dict], columns: tuple[str, ...]) -> str:
    """Rows as an aligned text table headed by ``columns`` (the last column is not padded)."""
    cells = [list(columns)] + [[cell(row.get(column)) for column in columns] for row in rows]
    widths = [max(len(line[index]) for line in cells) for index in range(len(columns))]
    return "\n".join("  ".join(text.ljust(width) for text, width in zip(line, widths)).rstrip() for line in cells)


def csv_text(rows: list[dict], columns: tuple[str, ...]) -> str:
    """Rows as CSV headed by ``columns``."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(columns)
    for row in rows:
        writer.writerow([cell(row.get(column)) for column in columns])
    return buffer.getvalue()
