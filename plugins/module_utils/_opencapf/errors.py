# Copyright: contributors to opencapf.capf
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The engine's error hierarchy: every message names the field (or thing) and the rule."""

from __future__ import annotations


class CapfError(Exception):
    """Base class of every error the engine raises on purpose."""


class ValidationError(CapfError, ValueError):
    """A value broke a rule. ``field`` names the option/column/path, ``rule`` says what is allowed."""

    def __init__(self, field: str, rule: str, value: object = None, *, show_value: bool = True):
        self.field = field
        self.rule = rule
        self.value = value
        message = f"{field} {rule}"
        if show_value and value is not None:
            message += f", got {value!r}"
        super().__init__(message)


class DependencyError(CapfError):
    """A required third-party library is missing."""


class StoreError(CapfError):
    """The store cannot be opened, read, migrated or written."""


class NotFoundError(CapfError, LookupError):
    """A named object does not exist in the store."""


class ConflictError(CapfError):
    """The requested change contradicts the current state."""


class CertificateError(CapfError):
    """A certificate or key is malformed or breaks a certificate rule."""


class CodedError(CapfError):
    """A failure with a short machine-readable ``code`` recorded beside its message (CA and enrolment failures)."""

    def __init__(self, code: str, message: str):
        self.code = code
        super().__init__(message)


class PermissionProblem(CapfError):
    """A file has permissions that would expose a secret."""
