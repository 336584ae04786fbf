# Copyright: contributors to opencapf.capf
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Reading and validating a declarative file; every error names its path and its rule."""

from __future__ import annotations

import os
from dataclasses import dataclass

from ..dependencies import jsonschema, require, yaml
from ..errors import ValidationError
from ..files import read_input_file
from .schema import schema

MAX_ERRORS = 20
MAX_BYTES = 32 * 1024 * 1024  # as for CSV imports: a file that declares 100,000 phones fits


@dataclass(frozen=True)
class Document:
    """A validated deployment: plain data, plus where it came from (for relative paths)."""

    data: dict
    source: str
    base_dir: str


class DocumentError(ValidationError):
    """Every schema error of a file, one per line, each naming the path and the rule."""

    def __init__(self, source: str, problems: list[str]):
        self.problems = problems
        super().__init__(source, "is not a valid opencapf file:\n  " + "\n  ".join(problems))


def format_path(parts) -> str:
    """``("phones", 3, "authentication_string")`` → ``phones[3].authentication_string``."""
    text = ""
    for part in parts:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text or "(document)"


def _describe(error) -> str:
    path = format_path(error.absolute_path)
    rule = error.schema.get("x-rule") if isinstance(error.schema, dict) else None
    if error.validator == "additionalProperties":
        extra = sorted(set(error.instance) - set(error.schema.get("properties", {})))
        return f"{format_path(list(error.absolute_path) + [extra[0]])}: is not a known field" if extra else \
            f"{path}: {error.message}"
    if error.validator == "required":
        missing = error.message.split("'")[1] if "'" in error.message else error.message
        return f"{format_path(list(error.absolute_path) + [missing])}: is required"
    if error.validator == "type":
        return f"{path}: must be of type {error.validator_value}"
    secret = isinstance(error.schema, dict) and error.schema.get("x-secret")
    if rule:
        return f"{path}: {rule}" + ("" if secret or isinstance(error.instance, (dict, list))
                                    else f", got {error.instance!r}")
    return f"{path}: {'value is not allowed' if secret else error.message}"


def validate(data, source: str = "document") -> None:
    """Raise DocumentError listing every schema error (sorted by path)."""
    require("jsonschema")
    validator = jsonschema.Draft202012Validator(schema())
    errors = sorted(validator.iter_errors(data), key=lambda e: (list(map(str, e.absolute_path)), e.validator))
    if errors:
        problems = []
        for error in errors:
            text = _describe(error)
            if text not in problems:
                problems.append(text)
        shown = problems[:MAX_ERRORS]
        if len(problems) > MAX_ERRORS:
            shown.append(f"... and {len(problems) - MAX_ERRORS} more")
        raise DocumentError(source, shown)


def parse(text, source: str = "document", base_dir: str = ".") -> Document:
    """Parse YAML text and validate it against the schema."""
    require("PyYAML", "jsonschema")
    try:
        # libyaml's parser when PyYAML has it: the same safe loader, many times faster on large files.
        data = yaml.load(text, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))  # nosec B506
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise ValidationError(source, f"is not valid YAML{where}: {getattr(exc, 'problem', exc)}") from None
    if not isinstance(data, dict):
        raise ValidationError(source, "must be a YAML mapping with 'opencapf: 1' at the top")
    validate(data, source)
    return Document(data, source, base_dir)


def load(path: str) -> Document:
    """Read (at most 32 MiB), parse and validate a declarative file."""
    data = read_input_file(path, "declarative file", MAX_BYTES)
    return parse(data.decode("utf-8", "replace"), path, os.path.dirname(os.path.abspath(path)))
