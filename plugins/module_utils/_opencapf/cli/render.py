# Copyright: contributors to opencapf.capf
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Text forms of engine results for people."""

from __future__ import annotations

_FIELDS = ("common_name", "subject", "issuer", "serial", "fingerprint", "key_type", "key_size", "not_before",
           "not_after", "source", "active")


def certificate_text(summary: dict, with_pem: bool = False) -> str:
    width = max(len(field) for field in _FIELDS)
    lines = [f"  {field.ljust(width)}  {summary[field]}" for field in _FIELDS if field in summary]
    if with_pem and summary.get("pem"):
        lines.append(summary["pem"].rstrip())
    return "\n".join(lines)
