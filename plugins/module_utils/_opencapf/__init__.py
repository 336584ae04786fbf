# Copyright: contributors to opencapf.capf
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The opencapf CAPF engine.

Private API of the opencapf.capf collection. The package imports only relatively and nothing
from Ansible, so the same code runs inside Ansible modules and as the stand-alone daemon and CLI
(``python -m _opencapf``).
"""

from __future__ import annotations

__version__ = "0.1.0"
