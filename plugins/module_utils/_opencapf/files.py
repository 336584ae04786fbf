# Copyright: contributors to opencapf.capf
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Private files: key files and secrets are written 0600, atomically, and read only when private."""

from __future__ import annotations

import os
import re
import secrets
import stat
import tempfile

from .errors import CapfError, InputFileError, PermissionProblem
from .vocabulary import MAX_INPUT_BYTES


_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]+")


def safe_file_name(text: str, fallback: str = "file") -> str:
    """``text`` as one plain file name: no directory separators, no leading dot (so never ``..``),
    at most 64 characters. Names taken from certificates or devices go through this before they
    become part of a path."""
    name = _UNSAFE.sub("_", str(text or "")).lstrip(".")[:64]
    return name or fallback


def ensure_private_dir(path: str) -> str:
    """Create ``path`` (mode 0700) when missing; return it."""
    os.makedirs(path, mode=0o700, exist_ok=True)
    return path


def write_private_file(path: str, data: bytes, mode: int = 0o600) -> None:
    """Write ``data`` to ``path`` with ``mode`` (0600), replacing it atomically: a new file created
    O_EXCL beside it, then renamed over ``path``. A symbolic link at ``path`` is replaced, never
    followed, so a planted link cannot send a key elsewhere."""
    temporary = stage_private_file(path, data, mode)
    try:
        os.replace(temporary, path)
    except BaseException:
        discard_staged_file(temporary)
        raise


def stage_private_file(path: str, data: bytes, mode: int = 0o600) -> str:
    """The first half of ``write_private_file``: ``data`` on disk in a new file beside ``path``
    (returned), for ``os.replace`` to put in place later, or ``discard_staged_file`` to remove."""
    directory = os.path.dirname(os.path.abspath(path))
    ensure_private_dir(directory)
    fd, temporary = tempfile.mkstemp(dir=directory, prefix=".tmp-")
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
    except BaseException:
        discard_staged_file(temporary)
        raise
    return temporary


def discard_staged_file(temporary: str) -> None:
    if os.path.exists(temporary):
        os.unlink(temporary)


def check_private_file(path: str, what: str = "key file") -> None:
    """Refuse a secret file that group or others may read or write."""
    try:
        mode = stat.S_IMODE(os.stat(path).st_mode)
    except OSError as exc:
        raise CapfError(f"cannot read {what} {path}: {exc.strerror}") from None
    if mode & 0o077:
        raise PermissionProblem(
            f"{what} {path} has mode {mode:04o}, readable or writable by group/others; "
            f"run 'chmod 600 {path}'"
        )


def check_private_location(path: str, what: str) -> None:
    """Refuse a store file or directory (or the state directory beside it) that the group or others
    may write, sticky bit or not: whoever can write there can replace the store that decides who gets
    certificates, or its secret. A path that does not exist yet passes (it is created private)."""
    try:
        status = os.stat(path)
    except FileNotFoundError:
        return
    mode = stat.S_IMODE(status.st_mode)
    if mode & 0o022:
        fix = "0700 or 0750" if stat.S_ISDIR(status.st_mode) else "0600 or 0640"
        raise PermissionProblem(f"{what} {path} is writable by group or others (mode {mode:04o}); make it {fix}")


def read_private_file(path: str, what: str = "key file") -> bytes:
    check_private_file(path, what)
    try:
        with open(path, "rb") as handle:
            data = handle.read(MAX_INPUT_BYTES + 1)
    except OSError as exc:
        raise CapfError(f"cannot read {what} {path}: {exc.strerror}") from None
    _check_size(data, what, path, MAX_INPUT_BYTES)
    return data


def _check_size(data: bytes, what: str, path: str, max_bytes: int) -> None:
    if len(data) > max_bytes:
        raise CapfError(f"{what} {path} is larger than the limit of {max_bytes} bytes ({max_bytes // (1024 * 1024)} MiB)")


def read_input_file(path: str, what: str, max_bytes: int = MAX_INPUT_BYTES) -> bytes:
    """Read a user-supplied file (certificate, key, YAML), refusing anything over ``max_bytes`` (default 1 MiB)."""
    try:
        with open(path, "rb") as handle:
            data = handle.read(max_bytes + 1)
    except OSError as exc:
        raise CapfError(f"cannot read {what} {path}: {exc.strerror}") from None
    _check_size(data, what, path, max_bytes)
    return data


def read_option_file(path, option: str, what: str, *, private: bool = False,
                     max_bytes: int = MAX_INPUT_BYTES) -> bytes:
    """The contents of the file an option names; every error starts with the option path, e.g.
    ``path: cannot read certificate file /x: No such file or directory``. ``private`` files (keys)
    must also be unreadable by group and others."""
    if not isinstance(path, str) or not path:
        raise InputFileError(option, f"must name a {what}", path)
    try:
        if private:
            return read_private_file(path, what)
        return read_input_file(path, what, max_bytes)
    except CapfError as exc:  # missing, unreadable, too large, or a key that others may read
        raise InputFileError(option, str(exc)) from None


def read_or_create_secret(path: str, size: int = 32) -> bytes:
    """Return the secret in ``path``, creating it with fresh random bytes when missing."""
    if not os.path.exists(path):
        try:
            ensure_private_dir(os.path.dirname(os.path.abspath(path)))
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
        except FileExistsError:
            pass  # another process created it first
        else:
            with os.fdopen(fd, "wb") as handle:
                handle.write(secrets.token_bytes(size))
                handle.flush()
                os.fsync(handle.fileno())
    data = read_private_file(path, "secret file")
    if len(data) < 16:
        raise CapfError(f"secret file {path} is truncated ({len(data)} bytes)")
    return data
