# Copyright: contributors to opencapf.capf
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Jinja2 templates of the engine's pages, each a module holding its source.

They are Python modules rather than ``.j2`` files because an Ansible module carries only the
Python files it imports (its AnsiballZ zip), and the engine bundle (``bundle.py``) lists Python
files: as modules, the templates reach a managed host with ``capf_info`` and the daemon's copy of
the engine with everything else.
"""
