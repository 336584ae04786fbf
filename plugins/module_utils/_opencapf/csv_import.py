# Copyright: contributors to opencapf.capf
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Phones with CAPF settings from a CSV file: header checked, every bad row reported, all or nothing.

Columns are the capf_phone option names: ``device_name`` (required) and any of ``description``,
``model``, ``device_pool``, ``security_mode``, ``certificate_operation``, ``authentication_mode``,
``authentication_string`` (digits, or ``generate``), ``key_order``, ``rsa_key_size``,
``ec_key_size``, ``operation_completes_by``. An empty cell leaves the setting as it is (a new phone
gets its default); ``none`` in ``operation_completes_by`` clears the phone's deadline.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass

from .errors import CapfError, ValidationError
from .files import read_option_file
from .phone_config import OPTION_COLUMNS, AuthRequest, check_settings
from .vocabulary import MAX_CSV_BYTES, MAX_CSV_CELL, MAX_CSV_ROWS, normalise_device_name

NAME_COLUMN = "device_name"
AUTH_COLUMN = "authentication_string"
COLUMNS = (NAME_COLUMN,) + tuple(OPTION_COLUMNS) + (AUTH_COLUMN,)
GENERATE = "generate"
MAX_ROWS = MAX_CSV_ROWS
MAX_ERRORS_SHOWN = 50
MAX_BYTES = MAX_CSV_BYTES


@dataclass(frozen=True)
class CsvPhone:
    line: int
    name: str
    settings: dict      # validated {column: value}
    auth: AuthRequest


def parse(data, source: str = "csv_file", length: int = 8) -> list[CsvPhone]:
    """Validate the whole file; raise one ValidationError listing every bad row by line number."""
    if len(data) > MAX_BYTES:
        raise ValidationError(source, f"is {len(data)} bytes, larger than the limit of {MAX_BYTES} bytes (32 MiB)")
    if isinstance(data, bytes):
        try:
            data = data.decode("utf-8-sig")
        except UnicodeDecodeError:
            raise ValidationError(source, "must be UTF-8 text") from None
    reader = csv.reader(io.StringIO(data), strict=True)  # a stray or unterminated quote is an error, never a merged row
    try:
        header = next(reader)
    except StopIteration:
        raise ValidationError(source, "is empty; the first line must be a header naming the columns") from None
    except csv.Error as exc:
        raise ValidationError(f"{source} header", f"is not CSV: {exc}", show_value=False) from None
    header = [column.strip().lower() for column in header]
    unknown = [column for column in header if column not in COLUMNS]
    if unknown or NAME_COLUMN not in header or len(set(header)) != len(header):
        raise ValidationError(
            f"{source} header",
            "must name %s and only known columns without repeats (%s)" % (NAME_COLUMN, ", ".join(COLUMNS)),
            ",".join(header),
        )
    rows, errors, seen = [], [], {}
    for record in _records(reader, source):
        line = reader.line_num
        if not any(cell.strip() for cell in record):
            continue
        if len(rows) + len(errors) >= MAX_ROWS:
            raise ValidationError(source, f"has more than {MAX_ROWS} rows (the limit); split it into several files")
        if len(record) != len(header):
            errors.append(f"line {line}: has {len(record)} fields, the header has {len(header)}")
            continue
        long_cells = [column for column, cell in zip(header, record) if len(cell) > MAX_CSV_CELL]
        if long_cells:
            errors.append(f"line {line}: {long_cells[0]} is longer than the limit of {MAX_CSV_CELL} characters")
            continue
        cells = {column: cell.strip() for column, cell in zip(header, record)}
        try:
            name = normalise_device_name(cells[NAME_COLUMN], NAME_COLUMN)
            if name in seen:
                raise ValidationError(NAME_COLUMN, f"repeats line {seen[name]}", name)
            seen[name] = line
            settings = check_settings({k: v for k, v in cells.items() if k in OPTION_COLUMNS and v != ""})
            secret = cells.get(AUTH_COLUMN, "")
            if secret.lower() == GENERATE:
                auth = AuthRequest(generate=True, length=length)
            elif secret:
                auth = AuthRequest(literal=secret, length=length).validated()
            else:
                auth = AuthRequest(length=length)
            rows.append(CsvPhone(line, name, settings, auth))
        except CapfError as exc:
            errors.append(f"line {line}: {exc}")
    if errors:
        shown = errors[:MAX_ERRORS_SHOWN]
        more = len(errors) - len(shown)
        raise ValidationError(source, "has %d bad row%s, nothing was imported: %s%s" % (
            len(errors), "" if len(errors) == 1 else "s", "; ".join(shown), f"; and {more} more" if more else ""))
    return rows


def _records(reader, source: str):
    """The reader's records; a line the csv module cannot read (NUL byte, a field beyond its own
    128 KiB limit, an unterminated quote) is a ValidationError naming the line."""
    while True:
        try:
            yield next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            raise ValidationError(source, f"is not valid CSV near line {reader.line_num}: {exc}; nothing was imported",
                                  show_value=False) from None


def read(path: str, length: int = 8) -> list[CsvPhone]:
    """Parse a CSV file of at most 32 MiB (a 100,000-phone fleet fits)."""
    return parse(read_option_file(path, "csv_file", "CSV file", max_bytes=MAX_BYTES), "csv_file", length)
