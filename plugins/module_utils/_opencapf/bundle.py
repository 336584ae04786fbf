# Copyright: contributors to opencapf.capf
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The engine's file list, so a module can hand the whole engine to a daemon.

An Ansible module runs from a temporary AnsiballZ zip that holds only the module_utils files the
module imports (found by reading import statements) and that is deleted when the module ends.
``_manifest()`` is never called: its imports exist so that Ansible bundles every engine file with
``capf_service``, which then extracts them (``service_control.extract_engine``) for the daemon.
A unit test keeps ``PACKAGE_FILES`` and these imports equal to the files of the package.
"""

from __future__ import annotations

PACKAGE_FILES = (
    "__init__.py", "__main__.py", "authstrings.py", "bulk.py", "bundle.py", "csv_import.py", "dependencies.py",
    "errors.py", "files.py", "parameters.py", "phone_config.py", "phone_query.py", "reports.py", "results.py",
    "scheduler.py", "secretbox.py", "service_config.py", "service_control.py", "trust.py", "vocabulary.py",
    "ca/__init__.py", "ca/authority.py", "ca/certificates.py", "ca/keys.py", "ca/lsc.py", "ca/rules.py",
    "cli/__init__.py", "cli/ca.py", "cli/init.py", "cli/issue.py", "cli/jobs.py", "cli/main.py", "cli/render.py",
    "store/__init__.py", "store/audit.py", "store/backend.py", "store/certificates.py", "store/migrations.py",
    "store/phones.py", "store/service.py", "store/sqlite.py",
)


def _manifest():  # pragma: no cover - read by Ansible's module_utils finder, never run
    # pylint: disable=unused-import,import-outside-toplevel
    from . import __main__, authstrings, bulk, csv_import, dependencies, errors, files, parameters  # noqa: F401
    from . import phone_config, phone_query, reports, results, scheduler, secretbox, service_config  # noqa: F401
    from . import service_control, trust, vocabulary  # noqa: F401
    from .ca import authority, certificates, keys, lsc, rules  # noqa: F401
    from .cli import ca, init, issue, jobs, main, render  # noqa: F401
    from .store import audit, backend, migrations, phones, service, sqlite  # noqa: F401
    from .store import certificates as _store_certificates  # noqa: F401
