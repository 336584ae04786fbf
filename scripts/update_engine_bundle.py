"""Rewrite plugins/module_utils/_opencapf/bundle.py from the engine's files on disk.

capf_service hands the whole engine to the daemon it starts, so bundle.py must import every engine
module (Ansible packs only what a module imports) and list every file. Run this after adding or
removing an engine file; a unit test fails while bundle.py is out of date.
"""

import os
import re
import sys

PACKAGE = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "plugins", "module_utils",
                       "_opencapf")


def engine_files():
    found = []
    for directory, _dirs, files in os.walk(PACKAGE):
        for name in files:
            if name.endswith(".py"):
                found.append(os.path.relpath(os.path.join(directory, name), PACKAGE).replace(os.sep, "/"))
    return sorted(found, key=lambda path: (path.count("/"), path))


def render(source, files):
    listing, line = "PACKAGE_FILES = (\n", "   "
    for path in files:
        item = f' "{path}",'
        if len(line) + len(item) > 116:
            listing, line = listing + line + "\n", "   "
        line += item
    listing += line + "\n)\n"
    source = re.sub(r"PACKAGE_FILES = \(\n.*?\n\)\n", lambda _m: listing, source, flags=re.S)
    imports, seen = [], set()
    for path in files:
        package, _slash, name = path.rpartition("/")
        name = name[:-3]
        if path == "bundle.py" or name == "__init__":
            continue
        origin = "." + package.replace("/", ".") if package else "."
        alias = f" as _{package.replace('/', '_')}_{name}" if name in seen else ""
        seen.add(name)
        imports.append(f"    from {origin} import {name}{alias}  # noqa: F401")
    marker = "    # pylint: disable=unused-import,import-outside-toplevel\n"
    return source[:source.index(marker) + len(marker)] + "\n".join(imports) + "\n"


def main():
    path = os.path.join(PACKAGE, "bundle.py")
    with open(path, encoding="utf-8") as handle:
        current = handle.read()
    wanted = render(current, engine_files())
    if "--check" in sys.argv:
        return 0 if wanted == current else 1
    with open(path, "w", encoding="utf-8") as handle:
        handle.write(wanted)
    return 0


if __name__ == "__main__":
    sys.exit(main())
