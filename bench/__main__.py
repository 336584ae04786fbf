# Copyright: contributors to opencapf.capf
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""``python -m bench``: see ``bench.cli``."""

from bench.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
