"""Lint every certificate the engine issued or generated during a test run.

Run after pytest with the run's ``--basetemp``: every store left there is opened read-only, and its
CAPF certificates and CAPF-issued LSCs are linted with pkilint's RFC 5280 linter. Any ERROR or
FATAL finding fails the run, and so does a PEM certificate that does not load. Rows of store tests
that stand for a certificate without being one (their ``pem`` holds no PEM certificate at all, e.g.
``-``) are counted and left out. Prints ``N passed, N failed`` (certificates) as its closing line.
"""

from __future__ import annotations

import os
import sqlite3
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from support.certificate_lint import lint_errors  # noqa: E402  pylint: disable=wrong-import-position

from cryptography import x509  # noqa: E402  pylint: disable=wrong-import-position
from cryptography.hazmat.primitives import serialization  # noqa: E402  pylint: disable=wrong-import-position

QUERIES = (
    "SELECT pem FROM capf_certificates WHERE source != 'uploaded'",
    "SELECT pem FROM certificates WHERE issuer = 'capf'",
)


def stores(root):
    for directory, _dirs, files in os.walk(root):
        for file_name in files:
            if file_name.endswith(".db"):
                yield os.path.join(directory, file_name)


def certificates_in(path):
    try:
        connection = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    except sqlite3.Error:
        return
    try:
        for query in QUERIES:
            try:
                rows = connection.execute(query).fetchall()
            except sqlite3.Error:
                continue  # not one of our stores, or deliberately corrupt
            for (pem,) in rows:
                yield pem
    finally:
        connection.close()


PEM_BEGIN = "-----BEGIN CERTIFICATE-----"


def main(root: str) -> int:
    seen, failures, placeholders = set(), [], 0
    for path in stores(root):
        for pem in certificates_in(path):
            if PEM_BEGIN not in (pem or ""):
                placeholders += 1
                continue
            certificate = x509.load_pem_x509_certificate(pem.encode())
            der = certificate.public_bytes(serialization.Encoding.DER)
            if der in seen:
                continue
            seen.add(der)
            label = f"{os.path.relpath(path, root)}:{certificate.subject.rfc4514_string()}"
            failures.extend(lint_errors(der, label))
    for failure in failures:
        sys.stdout.write(failure + "\n")
    bad = len({failure.split(": ")[0] for failure in failures})
    sys.stdout.write(f"certificates: {len(seen) - bad} passed, {bad} failed ({placeholders} store rows of tests hold no "
                     "PEM certificate)\n")
    if not seen:
        sys.stdout.write("certificates: none found to lint\n")
        return 1
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
