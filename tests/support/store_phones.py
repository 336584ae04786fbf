"""Phones put into a test's store, and their settings changed, the way every phone's are: along the one
converge path of phone settings (``phone_config.converge_many``), so that a test's phone is validated,
written and audited (``phone.create``/``phone.update`` with ``via``) as an administrator's is."""

from __future__ import annotations

from typing import Any

from _opencapf import phone_config
from _opencapf.store import phones as _phones
from _opencapf.vocabulary import normalise_device_name

# What sessions and the engine keep of a phone, which no administrator's path sets: a test that needs a
# phone in such a state (its operation finished, locked out) gets it written after the creation.
ENGINE_STATE = ("operation_status", "operation_reason", "auth_failures", "locked", "last_session_at")


def create_phone(tx, name: str, *, secret: bytes = b"", auth_string: str | None = None, actor: str = "test",
                 via: str = "capf_phone", **columns: Any) -> dict[str, Any]:
    """Create the phone ``name`` in the caller's transaction and return its row. ``columns`` are store
    columns: its settings (``operation``, ``auth_mode``, ``key_order`` ...) and the engine state of
    ``ENGINE_STATE``; ``auth_string`` is its authentication string, kept under the store's ``secret``."""
    name = normalise_device_name(name, "name")
    state = {column: columns.pop(column) for column in ENGINE_STATE if column in columns}
    if auth_string is not None and not secret:
        raise TypeError("create_phone: an authentication string needs the store's secret")
    settings = _settings("create_phone", columns)
    request = phone_config.PhoneRequest(name, settings, phone_config.AuthRequest(literal=auth_string))
    phone_config.converge_many(tx, actor, secret, [(None, request)], via=via)
    row = _phones.get(tx, name)
    changed = {column: value for column, value in state.items() if row[column] != value}
    if changed:
        tx.execute("UPDATE phones SET %s WHERE id = ?" % ", ".join(f"{column} = ?" for column in changed),
                   (*changed.values(), row["id"]))
        row = _phones.get(tx, name)
    return row


def change_phone(tx, name: str, *, reissue: bool = False, secret: bytes = b"", auth_string: str | None = None,
                 actor: str = "test", via: str = "capf_phone", **columns: Any) -> dict[str, Any]:
    """Change the settings ``columns`` (store columns, as ``create_phone`` takes them) of the phone ``name``
    in the caller's transaction as an administrator does, and return its row: a new operation is pending,
    and ``reissue`` arms its operation again unless it is under way (pending, in progress), as capf_phone's
    ``reissue`` does; ``auth_string``: its authentication string, kept under the store's ``secret``. The
    engine state of ``ENGINE_STATE`` is the sessions' to set, not a change's."""
    name = normalise_device_name(name, "name")
    current = _phones.get(tx, name)
    if current is None:
        raise LookupError(f"change_phone: no phone {name}")
    if auth_string is not None and not secret:
        raise TypeError("change_phone: an authentication string needs the store's secret")
    request = phone_config.PhoneRequest(name, _settings("change_phone", columns),
                                        phone_config.AuthRequest(literal=auth_string), reissue=reissue)
    phone_config.converge_many(tx, actor, secret, [(current, request)], via=via)
    return _phones.get(tx, name)


def _settings(caller: str, columns: dict[str, Any]) -> dict[str, Any]:
    """``columns`` validated as the converge path takes them (``phone_config.check_settings``)."""
    unknown = sorted(set(columns) - set(phone_config.COLUMN_OPTIONS))
    if unknown:
        raise TypeError(f"{caller}: not a phone setting: {', '.join(unknown)}")
    return phone_config.check_settings({phone_config.COLUMN_OPTIONS[column]: value
                                        for column, value in columns.items()})
