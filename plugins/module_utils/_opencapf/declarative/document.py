# Copyright: contributors to opencapf.capf
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Reading and validating a declarative file; every error names its path and its rule."""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass

from ..dependencies import jsonschema, require, yaml
from ..errors import ValidationError
from ..files import read_input_file
from ..vocabulary import MAX_DOCUMENT_BYTES, MAX_DOCUMENT_DEPTH, MAX_DOCUMENT_NODES
from .schema import schema

MAX_ERRORS = 20


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


class _TooLarge(Exception):
    """A declarative file beyond a limit (the message says which)."""


def _expanded_size(node, level: int, known: dict, open_nodes: set) -> tuple[int, int]:
    """(nodes, height) of ``node`` with every alias expanded: what validation and application walk.
    ``level`` is the node's depth in the expanded document; recursion never goes deeper than the limit."""
    key = id(node)
    if key in open_nodes:
        raise _TooLarge("refers to itself through an alias (a recursive structure)")
    if key not in known:
        if level > MAX_DOCUMENT_DEPTH:
            raise _TooLarge(f"nests deeper than {MAX_DOCUMENT_DEPTH} levels (the limit), counting aliases")
        open_nodes.add(key)
        total, height = 1, 1
        if isinstance(node, yaml.MappingNode):
            children = [part for pair in node.value for part in pair]
        elif isinstance(node, yaml.SequenceNode):
            children = node.value
        else:
            children = []
        for child in children:
            size, below = _expanded_size(child, level + 1, known, open_nodes)
            total, height = total + size, max(height, below + 1)
            if total > MAX_DOCUMENT_NODES:
                raise _TooLarge(f"expands to more than {MAX_DOCUMENT_NODES} YAML nodes (the limit; "
                                "aliases are counted each time they are used)")
        open_nodes.discard(key)
        known[key] = (total, height)
    total, height = known[key]
    if level + height - 1 > MAX_DOCUMENT_DEPTH:
        raise _TooLarge(f"nests deeper than {MAX_DOCUMENT_DEPTH} levels (the limit), counting aliases")
    return total, height


@functools.lru_cache(maxsize=1)
def _loader_class():
    """The safe loader with a depth-bounded composer. With libyaml, PyYAML's C parser produces the
    events (many times faster on large files) and the Python composer below builds the node graph,
    so the nesting bound holds whichever parser runs."""

    class BoundedComposer(yaml.composer.Composer):
        depth = 0

        def compose_node(self, parent, index):
            self.depth += 1
            if self.depth > MAX_DOCUMENT_DEPTH:
                raise _TooLarge(f"nests deeper than {MAX_DOCUMENT_DEPTH} levels (the limit)")
            try:
                return super().compose_node(parent, index)
            finally:
                self.depth -= 1

    parser = getattr(getattr(yaml, "cyaml", None), "CParser", None)
    if parser is None:
        class PureLoader(BoundedComposer, yaml.SafeLoader):  # pylint: disable=too-many-ancestors
            pass

        return _times_as_written(PureLoader)

    class LibyamlLoader(BoundedComposer, parser, yaml.constructor.SafeConstructor, yaml.resolver.Resolver):
        def __init__(self, stream):  # pylint: disable=super-init-not-called
            parser.__init__(self, stream)
            BoundedComposer.__init__(self)
            yaml.constructor.SafeConstructor.__init__(self)
            yaml.resolver.Resolver.__init__(self)

    return _times_as_written(LibyamlLoader)


def _times_as_written(loader):
    """``loader`` with YAML timestamps (an unquoted ``2026-12-31T23:00:00Z``) kept as the text written:
    every time of the file is then checked by the schema and the engine's one rule for times, as a
    quoted one is, instead of failing as "not a string" (and no time loses its fraction of a second
    or its offset on the way)."""
    loader.add_constructor("tag:yaml.org,2002:timestamp", yaml.constructor.SafeConstructor.construct_scalar)
    return loader


def safe_load(text):
    """``yaml.safe_load`` bounded: nesting at most MAX_DOCUMENT_DEPTH, at most MAX_DOCUMENT_NODES
    nodes after expanding aliases (a "billion laughs" file is refused before it is constructed),
    no recursive aliases. Only plain YAML types are built (the safe constructor)."""
    loader = _loader_class()(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        _expanded_size(node, 1, {}, set())
        return loader.construct_document(node)
    finally:
        loader.dispose()


def parse(text, source: str = "document", base_dir: str = ".") -> Document:
    """Parse YAML text (bounded, see ``safe_load``) and validate it against the schema."""
    require("PyYAML", "jsonschema")
    if len(text) > MAX_DOCUMENT_BYTES:
        raise ValidationError(source, f"is larger than the limit of {MAX_DOCUMENT_BYTES} bytes "
                                      f"({MAX_DOCUMENT_BYTES // (1024 * 1024)} MiB)")
    try:
        data = safe_load(text)
    except _TooLarge as exc:
        raise ValidationError(source, f"is refused: it {exc}") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise ValidationError(source, f"is not valid YAML{where}: {getattr(exc, 'problem', exc)}") from None
    if not isinstance(data, dict):
        raise ValidationError(source, "must be a YAML mapping with 'opencapf: 1' at the top")
    validate(data, source)
    return Document(data, source, base_dir)


def load(path: str) -> Document:
    """Read (at most MAX_DOCUMENT_BYTES), parse and validate a declarative file."""
    data = read_input_file(path, "declarative file", MAX_DOCUMENT_BYTES)
    return parse(data.decode("utf-8", "replace"), path, os.path.dirname(os.path.abspath(path)))
