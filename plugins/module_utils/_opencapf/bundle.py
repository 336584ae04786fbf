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
    "__init__.py", "__main__.py", "authstrings.py", "bulk.py", "bundle.py", "csr.py", "csv_import.py",
    "dependencies.py", "der.py", "directory.py", "enrolment.py", "errors.py", "faults.py", "files.py", "monitor.py",
    "parameters.py", "phone_config.py", "phone_query.py", "renewal.py", "report_html.py", "report_page.py",
    "reports.py", "results.py", "retention.py", "revocation.py", "scheduler.py", "secretbox.py", "service_config.py",
    "service_control.py", "sockets.py", "templates.py", "trust.py", "vocabulary.py", "ca/__init__.py",
    "ca/authority.py", "ca/certificates.py", "ca/crl.py", "ca/keys.py", "ca/lsc.py", "ca/lsc_template.py",
    "ca/rules.py", "cli/__init__.py", "cli/ca.py", "cli/crl.py", "cli/deployment.py", "cli/init.py", "cli/issue.py",
    "cli/jobs.py", "cli/ldap.py", "cli/main.py", "cli/micca.py", "cli/monitor.py", "cli/options.py", "cli/phone.py",
    "cli/phones.py", "cli/progress.py", "cli/render.py", "cli/renew.py", "cli/report.py", "cli/serve.py",
    "cli/service.py", "cli/template.py", "cli/trust.py", "cli/workqueue.py", "declarative/__init__.py",
    "declarative/deployment.py", "declarative/document.py", "declarative/schema.py", "issuers/__init__.py",
    "issuers/acceptance.py", "issuers/adcs.py", "issuers/base.py", "issuers/est.py", "issuers/offline.py",
    "issuers/online.py", "issuers/transport.py", "protocol/__init__.py", "protocol/codec.py",
    "protocol/constants.py", "protocol/phone.py", "protocol/proof.py", "protocol/session.py", "server/__init__.py",
    "server/admission.py", "server/crl_http.py", "server/decider.py", "server/event_loop.py", "server/metrics.py",
    "server/scheduling.py", "server/service.py", "server/supervisor.py", "server/tls_link.py",
    "simulator/__init__.py", "simulator/addressing.py", "simulator/client.py", "simulator/fleet.py",
    "simulator/identity.py", "simulator/manufacturing.py", "store/__init__.py", "store/audit.py",
    "store/audit_actions.py", "store/backend.py", "store/capf_certificates.py", "store/certificates.py",
    "store/crls.py", "store/csrs.py", "store/directories.py", "store/jobs.py", "store/migrations.py",
    "store/monitor.py", "store/phones.py", "store/postgresql.py", "store/renewals.py", "store/secrets.py",
    "store/service.py", "store/sessions.py", "store/sqlite.py", "store/templates.py", "store/trust.py",
)


def _manifest():  # pragma: no cover - read by Ansible's module_utils finder, never run
    # pylint: disable=unused-import,import-outside-toplevel
    from . import __main__  # noqa: F401
    from . import authstrings  # noqa: F401
    from . import bulk  # noqa: F401
    from . import csr  # noqa: F401
    from . import csv_import  # noqa: F401
    from . import dependencies  # noqa: F401
    from . import der  # noqa: F401
    from . import directory  # noqa: F401
    from . import enrolment  # noqa: F401
    from . import errors  # noqa: F401
    from . import faults  # noqa: F401
    from . import files  # noqa: F401
    from . import monitor  # noqa: F401
    from . import parameters  # noqa: F401
    from . import phone_config  # noqa: F401
    from . import phone_query  # noqa: F401
    from . import renewal  # noqa: F401
    from . import report_html  # noqa: F401
    from . import report_page  # noqa: F401
    from . import reports  # noqa: F401
    from . import results  # noqa: F401
    from . import retention  # noqa: F401
    from . import revocation  # noqa: F401
    from . import scheduler  # noqa: F401
    from . import secretbox  # noqa: F401
    from . import service_config  # noqa: F401
    from . import service_control  # noqa: F401
    from . import sockets  # noqa: F401
    from . import templates  # noqa: F401
    from . import trust  # noqa: F401
    from . import vocabulary  # noqa: F401
    from .ca import authority  # noqa: F401
    from .ca import certificates  # noqa: F401
    from .ca import crl  # noqa: F401
    from .ca import keys  # noqa: F401
    from .ca import lsc  # noqa: F401
    from .ca import lsc_template  # noqa: F401
    from .ca import rules  # noqa: F401
    from .cli import ca  # noqa: F401
    from .cli import crl as _cli_crl  # noqa: F401
    from .cli import deployment  # noqa: F401
    from .cli import init  # noqa: F401
    from .cli import issue  # noqa: F401
    from .cli import jobs  # noqa: F401
    from .cli import ldap  # noqa: F401
    from .cli import main  # noqa: F401
    from .cli import micca  # noqa: F401
    from .cli import monitor as _cli_monitor  # noqa: F401
    from .cli import options  # noqa: F401
    from .cli import phone  # noqa: F401
    from .cli import phones  # noqa: F401
    from .cli import progress  # noqa: F401
    from .cli import render  # noqa: F401
    from .cli import renew  # noqa: F401
    from .cli import report  # noqa: F401
    from .cli import serve  # noqa: F401
    from .cli import service  # noqa: F401
    from .cli import template  # noqa: F401
    from .cli import trust as _cli_trust  # noqa: F401
    from .cli import workqueue  # noqa: F401
    from .declarative import deployment as _declarative_deployment  # noqa: F401
    from .declarative import document  # noqa: F401
    from .declarative import schema  # noqa: F401
    from .issuers import acceptance  # noqa: F401
    from .issuers import adcs  # noqa: F401
    from .issuers import base  # noqa: F401
    from .issuers import est  # noqa: F401
    from .issuers import offline  # noqa: F401
    from .issuers import online  # noqa: F401
    from .issuers import transport  # noqa: F401
    from .protocol import codec  # noqa: F401
    from .protocol import constants  # noqa: F401
    from .protocol import phone as _protocol_phone  # noqa: F401
    from .protocol import proof  # noqa: F401
    from .protocol import session  # noqa: F401
    from .server import admission  # noqa: F401
    from .server import crl_http  # noqa: F401
    from .server import decider  # noqa: F401
    from .server import event_loop  # noqa: F401
    from .server import metrics  # noqa: F401
    from .server import scheduling  # noqa: F401
    from .server import service as _server_service  # noqa: F401
    from .server import supervisor  # noqa: F401
    from .server import tls_link  # noqa: F401
    from .simulator import addressing  # noqa: F401
    from .simulator import client  # noqa: F401
    from .simulator import fleet  # noqa: F401
    from .simulator import identity  # noqa: F401
    from .simulator import manufacturing  # noqa: F401
    from .store import audit  # noqa: F401
    from .store import audit_actions  # noqa: F401
    from .store import backend  # noqa: F401
    from .store import capf_certificates  # noqa: F401
    from .store import certificates as _store_certificates  # noqa: F401
    from .store import crls  # noqa: F401
    from .store import csrs  # noqa: F401
    from .store import directories  # noqa: F401
    from .store import jobs as _store_jobs  # noqa: F401
    from .store import migrations  # noqa: F401
    from .store import monitor as _store_monitor  # noqa: F401
    from .store import phones as _store_phones  # noqa: F401
    from .store import postgresql  # noqa: F401
    from .store import renewals  # noqa: F401
    from .store import secrets  # noqa: F401
    from .store import service as _store_service  # noqa: F401
    from .store import sessions  # noqa: F401
    from .store import sqlite  # noqa: F401
    from .store import templates as _store_templates  # noqa: F401
    from .store import trust as _store_trust  # noqa: F401
