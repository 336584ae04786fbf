# Copyright: contributors to opencapf.capf
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The opencapf benchmark suite (``scripts/bench``, ``python -m bench``).

Each benchmark is a function that returns named figures; the harness runs each one in a fresh
child interpreter, prints one table and writes a JSON file in which every figure carries its
value, unit and the command that reproduces it. The engine is imported the way ``bin/opencapf``
imports it: ``plugins/module_utils`` on ``sys.path``.
"""

from __future__ import annotations

import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ENGINE_PATH = os.path.join(ROOT, "plugins", "module_utils")
if ENGINE_PATH not in sys.path:
    sys.path.insert(0, ENGINE_PATH)
