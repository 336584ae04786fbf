# Copyright: contributors to opencapf.capf
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The plain result every converging engine function returns.

``changed`` says whether the store changed (or, in check mode, would change); ``before`` and
``after`` are normalised, secret-free views a reviewer can read in a diff; anything else is an
extra specific to the function.
"""

from __future__ import annotations

from typing import Any


def converged(changed: bool, before: Any, after: Any, **extras: Any) -> dict[str, Any]:
    result = {"changed": bool(changed), "before": before, "after": after}
    result.update(extras)
    return result


def text_or_none(value, field: str, max_length: int = 200) -> str | None:
    """An optional free-text setting: stripped, bounded, printable."""
    from .errors import ValidationError

    if value is None:
        return None
    if not isinstance(value, str):
        value = str(value)
    value = value.strip()
    if len(value) > max_length:
        raise ValidationError(field, f"must be at most {max_length} characters", len(value))
    if any(ord(ch) < 32 for ch in value):
        raise ValidationError(field, "must not contain control characters", show_value=False)
    return value
