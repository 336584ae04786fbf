"""The engine's layout: no module is hidden by a package of the same name (``x.py`` beside ``x/``
makes ``import x`` load the package, and the module's functions vanish without an error at import)."""

from __future__ import annotations

import os

ENGINE = os.path.join(os.path.dirname(__file__), "..", "..", "..", "..", "plugins", "module_utils", "_opencapf")


def test_no_module_shares_its_name_with_a_package():
    clashes = []
    for directory, subdirectories, files in os.walk(ENGINE):
        subdirectories[:] = [name for name in subdirectories if name != "__pycache__"]
        modules = {name[:-3] for name in files if name.endswith(".py")}
        clashes += [os.path.join(directory, name) for name in subdirectories if name in modules]
    assert os.path.isfile(os.path.join(ENGINE, "__init__.py"))
    assert not clashes, f"a package hides the module of the same name: {clashes}"
