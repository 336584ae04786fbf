# Copyright: contributors to opencapf.capf
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Third-party imports, guarded in one place.

Modules import the names from here; ``require()`` turns a missing library into a clear
``DependencyError`` (and Ansible modules into ``missing_required_lib``). Nothing here may be
dereferenced at import time by other engine modules, so the package imports without them.
"""

from __future__ import annotations

from .errors import DependencyError

try:
    from cryptography import x509
    from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM
    from cryptography.hazmat.primitives.serialization import pkcs7
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
    CRYPTOGRAPHY_IMPORT_ERROR = None
except ImportError as _exc:  # reported by require()
    x509 = hashes = serialization = ec = padding = rsa = AESGCM = pkcs7 = None
    ExtendedKeyUsageOID = NameOID = None
    InvalidSignature = UnsupportedAlgorithm = Exception
    CRYPTOGRAPHY_IMPORT_ERROR = _exc

try:
    import yaml
    YAML_IMPORT_ERROR = None
except ImportError as _exc:  # reported by require()
    yaml = None
    YAML_IMPORT_ERROR = _exc

try:
    import jsonschema
    JSONSCHEMA_IMPORT_ERROR = None
except ImportError as _exc:  # reported by require()
    jsonschema = None
    JSONSCHEMA_IMPORT_ERROR = _exc

try:
    import requests
    from requests.adapters import HTTPAdapter
    REQUESTS_IMPORT_ERROR = None
except ImportError as _exc:  # reported by require()
    requests = None
    HTTPAdapter = object
    REQUESTS_IMPORT_ERROR = _exc

try:
    from requests_ntlm import HttpNtlmAuth
    REQUESTS_NTLM_IMPORT_ERROR = None
except ImportError as _exc:  # reported by require()
    HttpNtlmAuth = None
    REQUESTS_NTLM_IMPORT_ERROR = _exc

try:
    import jinja2
    JINJA2_IMPORT_ERROR = None
except ImportError as _exc:  # reported by require()
    jinja2 = None
    JINJA2_IMPORT_ERROR = _exc

try:
    import ldap3
    from ldap3.core import exceptions as ldap3_exceptions
    LDAP3_IMPORT_ERROR = None
except ImportError as _exc:  # reported by require()
    ldap3 = ldap3_exceptions = None
    LDAP3_IMPORT_ERROR = _exc

__all__ = [
    "x509", "InvalidSignature", "UnsupportedAlgorithm", "hashes", "serialization", "ec", "padding", "rsa", "ExtendedKeyUsageOID", "NameOID",
    "yaml", "jsonschema", "missing", "require", "pkcs7", "requests", "HTTPAdapter", "HttpNtlmAuth", "AESGCM",
    "prometheus", "jinja2",
    "ldap3", "ldap3_exceptions",
]

_ERRORS = {
    "cryptography": lambda: CRYPTOGRAPHY_IMPORT_ERROR,
    "PyYAML": lambda: YAML_IMPORT_ERROR,
    "jsonschema": lambda: JSONSCHEMA_IMPORT_ERROR,
    "requests": lambda: REQUESTS_IMPORT_ERROR,
    "requests-ntlm": lambda: REQUESTS_NTLM_IMPORT_ERROR,
    "Jinja2": lambda: JINJA2_IMPORT_ERROR,
    "ldap3": lambda: LDAP3_IMPORT_ERROR,
}


def missing(*libraries: str) -> list[str]:
    """Names of the given libraries that cannot be imported."""
    return [name for name in libraries if _ERRORS[name]() is not None]


def require(*libraries: str) -> None:
    """Raise DependencyError naming every missing library."""
    absent = missing(*libraries)
    if absent:
        raise DependencyError(
            "missing Python librar%s %s on this host; install %s"
            % ("y" if len(absent) == 1 else "ies", ", ".join(absent), " ".join(absent))
        )


def prometheus():
    """The ``prometheus_client`` package, imported on first use: only a service with a metrics endpoint
    needs it, and its import (a tenth of a second) is not worth paying in every module run."""
    try:
        import prometheus_client  # pylint: disable=import-outside-toplevel
        from prometheus_client import multiprocess, values  # pylint: disable=import-outside-toplevel,unused-import
    except ImportError as exc:
        raise DependencyError(f"the metrics endpoint needs the Python library prometheus-client: {exc}") from None
    return prometheus_client
