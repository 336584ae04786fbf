# Copyright: contributors to opencapf.capf
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The machine a run measured: enough to tell whether two result files are comparable."""

from __future__ import annotations

import os
import platform
import sqlite3
import ssl
import sys


def _cpuinfo() -> dict:
    info: dict = {}
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as handle:
            for line in handle:
                key, _colon, value = line.partition(":")
                key, value = key.strip(), value.strip()
                if key in ("model name", "flags") and key not in info:
                    info[key] = value
    except OSError:
        pass
    flags = set(info.get("flags", "").split())
    return {"model": info.get("model name") or platform.processor() or platform.machine(),
            "has_aes_ni": "aes" in flags, "has_sha_ni": "sha_ni" in flags,
            "has_avx2": "avx2" in flags, "has_adx": "adx" in flags}


def _memory_bytes() -> int | None:
    try:
        with open("/proc/meminfo", encoding="ascii") as handle:
            for line in handle:
                if line.startswith("MemTotal:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def _filesystem(path: str) -> str:
    """The file system type of ``path`` (it decides what an fsync costs)."""
    best, kind = "", "unknown"
    try:
        real = os.path.realpath(path)
        with open("/proc/mounts", encoding="utf-8") as handle:
            for line in handle:
                fields = line.split()
                if len(fields) >= 3 and (real == fields[1] or real.startswith(fields[1].rstrip("/") + "/")):
                    if len(fields[1]) >= len(best):
                        best, kind = fields[1], fields[2]
    except OSError:
        pass
    return kind


def _cryptography() -> dict:
    try:
        import cryptography
        from cryptography.hazmat.backends.openssl.backend import backend
        return {"cryptography": cryptography.__version__, "cryptography_openssl": backend.openssl_version_text()}
    except ImportError:
        return {"cryptography": None, "cryptography_openssl": None}


def describe(work_dir: str) -> dict:
    """CPU model, cores, memory, Python, OpenSSL and cryptography versions, scratch file system."""
    cores = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None
    memory = _memory_bytes()
    description = {
        "cpu": _cpuinfo(),
        "cores_online": os.cpu_count(),
        "cores_usable": len(cores) if cores is not None else os.cpu_count(),
        "memory_bytes": memory,
        "memory_gib": round(memory / 2 ** 30, 1) if memory else None,
        "os": f"{platform.system()} {platform.release()}",
        "python": f"{platform.python_implementation()} {platform.python_version()}",
        "python_executable": _relative_to_checkout(sys.executable),
        "openssl": ssl.OPENSSL_VERSION,
        "sqlite": sqlite3.sqlite_version,
        "scratch_dir": work_dir,
        "scratch_filesystem": _filesystem(work_dir),
    }
    description.update(_cryptography())
    return description


def summary(machine: dict) -> str:
    """One line for the table's header and the docs."""
    return (f"{machine['cpu']['model']}, {machine['cores_usable']} usable cores, {machine['memory_gib']} GiB, "
            f"{machine['python']}, {machine['openssl']}, cryptography {machine['cryptography']} "
            f"({machine['cryptography_openssl']}), SQLite {machine['sqlite']}, "
            f"scratch on {machine['scratch_filesystem']}")


def _relative_to_checkout(path: str) -> str:
    """A path inside the checkout as a relative path, so results carry no machine's directories."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    absolute = os.path.abspath(path)
    return os.path.relpath(absolute, root) if absolute.startswith(root + os.sep) else os.path.basename(absolute)
