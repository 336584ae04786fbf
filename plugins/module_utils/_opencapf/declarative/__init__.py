# Copyright: contributors to opencapf.capf
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The declarative CAPF file: one YAML document describing a whole deployment.

``schema.schema()`` is its JSON Schema (built from the engine's vocabularies and limits),
``document.load()`` validates a file and names the exact path of every error, and
``deployment.plan()``/``deployment.apply()`` converge a store through the same engine functions
the Ansible modules call.
"""
