# Copyright: contributors to opencapf.capf
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The engine's error hierarchy: every message names the field (or thing) and the rule."""

from __future__ import annotations


class CapfError(Exception):
    """Base class of every error the engine raises on purpose."""


class FieldError(CapfError):
    """An error about the value of one field: ``field`` names the option/column/path, ``rule``
    says what is allowed. ``prefixed`` re-reads the field as a path inside a larger document."""

    separator = " "

    def __init__(self, field: str, rule: str, value: object = None, *, show_value: bool = True):
        self.field = field
        self.rule = rule
        self.value = value
        self.show_value = show_value
        message = f"{field}{self.separator}{rule}"
        if show_value and value is not None:
            message += f", got {value!r}"
        super().__init__(message)

    def prefixed(self, prefix: str) -> "FieldError":
        """The same error of the same class, its field read as ``prefix`` + field (a path in a file)."""
        if self.field.startswith(prefix):
            return self
        error = self.__class__.__new__(self.__class__)
        FieldError.__init__(error, prefix + self.field, self.rule, self.value, show_value=self.show_value)
        return error


class ValidationError(FieldError, ValueError):
    """A value broke a rule."""


class DependencyError(CapfError):
    """A required third-party library is missing."""


class StoreError(CapfError):
    """The store cannot be opened, read, migrated or written."""


class LeadLost(StoreError):
    """A duty's write was refused, writing nothing: this connection no longer holds the duty's lead
    (``Store.leading``); another process may lead it now."""


class StoreUnreachable(StoreError):
    """The store's database cannot be reached now: its connection could not be made, was lost, or its
    host did not answer in time (a database down, a network cut). The failed work wrote nothing, unless the
    connection was lost after its commit was sent (then it may have committed)."""


class StoreBusy(StoreError):
    """Another writer (such as a long ``opencapf apply``) held the store's write lock for longer than
    the caller may wait for it; nothing was written."""


class StepUndone(StoreBusy):
    """A step of a CAPF session met the store's write lock, taken by another writer, before the step had
    written anything or asked a CA anything: the session and its decider are back as they were before the
    step, which may run again (with the same input) once the lock is free."""


class NotFoundError(CapfError, LookupError):
    """A named object does not exist in the store."""


class ConflictError(CapfError):
    """The requested change contradicts the current state."""


class CertificateError(CapfError):
    """A certificate or key is malformed or breaks a certificate rule."""


class CertificateInputError(FieldError, CertificateError):
    """A certificate or key given for option ``field`` cannot be read or breaks a rule."""


class InputFileError(ValidationError):
    """The file named by option ``field`` cannot be read (missing, unreadable, too large)."""

    separator = ": "


class CodedError(CapfError):
    """A failure with a short machine-readable ``code`` recorded beside its message (CA and enrolment failures)."""

    def __init__(self, code: str, message: str):
        self.code = code
        super().__init__(message)


class PermissionProblem(CapfError):
    """A file has permissions that would expose a secret."""
