# Copyright: contributors to opencapf.capf
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Service configuration: parameters, the online CA and the CAPF certificate, converged.

``plan()`` reads the store and computes what would change (validating every value and the
cross-field rules of the configuration guide); ``apply()`` writes a plan in one transaction;
``converge()`` does both and returns before/after views without secrets.
"""

from __future__ import annotations

import re
import ssl
from dataclasses import dataclass, field as _field
from typing import Any

from . import parameters, secretbox, trust
from .ca import authority, keys, rules
from .ca import certificates as c
from .errors import CertificateError, ValidationError
from .files import read_option_file
from .results import converged, text_or_none
from .store import Store, audit, capf_certificates
from .store import service as service_records
from .store.backend import Transaction
from .vocabulary import CAPF_KEY_TYPES, ONLINE_CA_TYPES, check_choice, check_port

ONLINE_CA_KEY = "online_ca"
PASSWORD_SECRET = "online_ca.password"
SMTP_PASSWORD = "monitor_smtp_password"
SMTP_PASSWORD_SECRET = "monitor.smtp_password"
UPDATE_PASSWORD = ("always", "on_create")
ONLINE_CA_FIELDS = ("hostname", "port", "type", "template", "profile_label", "username", "auth", "client_certificate",
                    "client_key", "ec_supported")
ONLINE_CA_AUTH = ("basic", "ntlm")
_HOSTNAME = re.compile(r"(?=.{1,253}$)[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*\.?")


def check_online_ca(value: dict, field: str = "online_ca") -> dict:
    """The online CA mapping in canonical form (password excluded), with its own field rules."""
    if not isinstance(value, dict):
        raise ValidationError(field, "must be a mapping", value)
    unknown = sorted(set(value) - set(ONLINE_CA_FIELDS) - {"password"})
    if unknown:
        raise ValidationError(field, "accepts only %s" % ", ".join(ONLINE_CA_FIELDS + ("password",)), unknown)
    hostname = value.get("hostname")
    if not isinstance(hostname, str) or not _HOSTNAME.fullmatch(hostname.strip()):
        raise ValidationError(f"{field}.hostname", "must be the CA's host name (the CN/FQDN of its HTTPS certificate)",
                              hostname)
    ca_type = check_choice(f"{field}.type", value.get("type"), ONLINE_CA_TYPES)
    result = {
        "hostname": hostname.strip().lower().rstrip("."),
        "port": check_port(value.get("port") if value.get("port") is not None else 443, f"{field}.port"),
        "type": ca_type,
        "template": text_or_none(value.get("template"), f"{field}.template"),
        "profile_label": text_or_none(value.get("profile_label"), f"{field}.profile_label"),
        "username": text_or_none(value.get("username"), f"{field}.username"),
    }
    if result["template"] and ca_type != "microsoft":
        raise ValidationError(f"{field}.template", "is only used with type microsoft", result["template"])
    if result["profile_label"] and ca_type != "est":
        raise ValidationError(f"{field}.profile_label", "is only used with type est", result["profile_label"])
    if ca_type == "microsoft" and not result["template"]:
        raise ValidationError(f"{field}.template", "is required with type microsoft (the certificate template name)")
    result.update(_check_online_ca_options(value, ca_type, field))
    return result


def _check_online_ca_options(value: dict, ca_type: str, field: str) -> dict:
    """The optional settings (authentication method, mutual TLS, EC); kept only when given, so that
    stores written before they existed still compare equal."""
    extra: dict = {}
    if value.get("auth") is not None:
        extra["auth"] = check_choice(f"{field}.auth", value["auth"], ONLINE_CA_AUTH)
        if extra["auth"] == "ntlm" and ca_type != "microsoft":
            raise ValidationError(f"{field}.auth", "ntlm is only available with type microsoft", "ntlm")
    for name in ("client_certificate", "client_key"):
        if value.get(name) is not None:
            extra[name] = text_or_none(value[name], f"{field}.{name}")
    if bool(extra.get("client_certificate")) != bool(extra.get("client_key")):
        raise ValidationError(f"{field}.client_key", "and client_certificate go together (mutual TLS towards the CA)")
    if value.get("ec_supported") is not None:
        if not isinstance(value["ec_supported"], bool):
            raise ValidationError(f"{field}.ec_supported", "must be true or false", value["ec_supported"])
        extra["ec_supported"] = value["ec_supported"]
    return extra


def check_client_files(online_ca: dict, field: str = "online_ca") -> None:
    """The mutual-TLS files must be readable where they are configured: the certificate as PEM,
    the key as an unencrypted PEM key in a private (0600) file that belongs to the certificate.
    Every error names the option, e.g. ``online_ca.client_certificate: cannot read ...``."""
    if not online_ca.get("client_certificate"):
        return
    certificate_field, key_field = f"{field}.client_certificate", f"{field}.client_key"
    certificate = c.load_pem_certificates(
        read_option_file(online_ca["client_certificate"], certificate_field, "certificate file"), certificate_field)[0]
    private_key = keys.parse_private_key(
        read_option_file(online_ca["client_key"], key_field, "key file", private=True), key_field)
    if not keys.keys_match(private_key, certificate):
        raise ValidationError(key_field, f"does not belong to {certificate_field} (the first certificate in it)")


@dataclass
class ServicePlan:
    parameters: dict = _field(default_factory=dict)     # name -> (before, after)
    online_ca: tuple | None = None                       # (before, after) mappings
    password: str | None = None                          # new password to store (never shown)
    password_action: str = ""                            # "", "set", "changed"
    smtp_password: str | None = None                     # new SMTP password of the monitor (never shown)
    smtp_password_action: str = ""                       # "", "set", "changed"
    certificate_action: str = ""                         # "", "create", "regenerate", "upload"
    key_type: str | None = None
    upload: tuple | None = None                          # (certificate, private key)
    before: dict = _field(default_factory=dict)
    after: dict = _field(default_factory=dict)

    @property
    def changed(self) -> bool:
        return bool(self.parameters or self.online_ca or self.password_action or self.smtp_password_action
                    or self.certificate_action)


def _certificate_view(row: dict | None) -> dict | None:
    if row is None:
        return None
    certificate = c.load_pem_certificate(row["pem"], "stored CAPF certificate")
    return {"common_name": row["common_name"], "fingerprint": row["fingerprint"], "key_type": row["key_type"],
            "not_after": row["not_after"], "source": row["source"],
            "subject": certificate.subject.rfc4514_string()}


def _check_hostname_against_trust(tx: Transaction, online_ca: dict) -> None:
    names = trust.https_certificate_names(tx)
    if names and not any(trust.hostname_matches(online_ca["hostname"], group) for group in names):
        shown = sorted({name for group in names for name in group})
        raise ValidationError(
            "online_ca.hostname",
            "must match the CN or a DNS name of the CA's HTTPS certificate in capf-trust (%s)" % ", ".join(shown),
            online_ca["hostname"],
        )


def _plan_certificate(tx: Transaction, plan: ServicePlan, capf_certificate: dict | None) -> None:
    row = capf_certificates.active(tx)
    plan.before["capf_certificate"] = _certificate_view(row)
    plan.after["capf_certificate"] = plan.before["capf_certificate"]
    spec = dict(capf_certificate or {})
    key_type = spec.get("key_type")
    if key_type is not None:
        key_type = check_choice("capf_certificate.key_type", key_type, CAPF_KEY_TYPES)
    if spec.get("certificate") or spec.get("private_key"):
        if not (spec.get("certificate") and spec.get("private_key")):
            raise ValidationError("capf_certificate", "needs both certificate and private_key to upload")
        if spec.get("regenerate") or key_type:
            raise ValidationError("capf_certificate", "cannot combine an upload with regenerate or key_type")
        certificate = c.load_pem_certificates(spec["certificate"], "capf_certificate.certificate")[0]
        private_key = keys.parse_private_key(
            spec["private_key"].encode() if isinstance(spec["private_key"], str) else spec["private_key"],
            "capf_certificate.private_key")
        rules.check_ca_certificate(certificate, "capf_certificate.certificate")
        if not keys.keys_match(private_key, certificate):
            raise CertificateError("capf_certificate.private_key does not belong to capf_certificate.certificate")
        fingerprint = c.fingerprint(certificate)
        known = capf_certificates.state(tx, fingerprint)
        if known == "active":
            return
        if known == "retired":
            raise CertificateError("capf_certificate.certificate was used before and has been retired; upload a new one")
        plan.certificate_action, plan.upload = "upload", (certificate, private_key)
        view = c.describe(certificate)
        plan.after["capf_certificate"] = {"common_name": view["common_name"], "fingerprint": fingerprint,
                                          "key_type": f"{view['key_type']}{view['key_size']}",
                                          "not_after": view["not_after"], "source": "uploaded",
                                          "subject": view["subject"]}
        return
    wanted = key_type or (row["key_type"] if row else authority.DEFAULT_KEY_TYPE)
    if row is None:
        plan.certificate_action = "create"
    elif spec.get("regenerate"):
        plan.certificate_action = "regenerate"
    elif key_type and row["key_type"] != key_type:
        plan.certificate_action = "regenerate"
    if plan.certificate_action:
        plan.key_type = wanted
        plan.after["capf_certificate"] = {"common_name": "CAPF-(new)", "fingerprint": "(new)", "key_type": wanted,
                                          "not_after": "(new)", "source": "generated"}


def check_password(value, field: str) -> str:
    """A password to store: a non-empty string of at most 1024 characters (never echoed)."""
    if not isinstance(value, str) or not value or len(value) > 1024:
        raise ValidationError(field, "must be a non-empty string of at most 1024 characters", show_value=False)
    return value


def _plan_smtp_password(tx: Transaction, store_secret: bytes, result: ServicePlan, password: str | None,
                        update_password: str) -> None:
    stored = secretbox.exists(tx, SMTP_PASSWORD_SECRET)
    result.before[SMTP_PASSWORD] = "(set)" if stored else "(unset)"
    result.after[SMTP_PASSWORD] = result.before[SMTP_PASSWORD]
    if password is None:
        return
    check_password(password, SMTP_PASSWORD)
    if not stored:
        result.smtp_password, result.smtp_password_action = password, "set"
    elif update_password == "always" and not secretbox.equals(tx, store_secret, SMTP_PASSWORD_SECRET, password):
        result.smtp_password, result.smtp_password_action = password, "changed"
    if result.smtp_password_action:
        result.after[SMTP_PASSWORD] = "(%s)" % result.smtp_password_action


def _check_monitor(merged: dict, result: ServicePlan, password_given: bool) -> None:
    """The monitor's cross-field rules, against the values in force after the change."""
    if merged["monitor_recipients"]:
        for name in ("monitor_smtp_host", "monitor_sender"):
            if not merged[name]:
                raise ValidationError(name, "is required when monitor_recipients names anyone to write to")
    if merged["monitor_smtp_username"]:
        if merged["monitor_smtp_security"] == "none":
            raise ValidationError("monitor_smtp_security", "must be starttls or tls with monitor_smtp_username "
                                                           "(a password is never sent in clear)", "none")
        if result.after[SMTP_PASSWORD] == "(unset)":
            raise ValidationError(SMTP_PASSWORD, "is required with monitor_smtp_username")
    elif password_given:
        raise ValidationError(SMTP_PASSWORD, "needs monitor_smtp_username (the user it logs in as)")
    ca_file = result.parameters.get("monitor_smtp_ca_file", (None, None))[1]
    if ca_file:  # read where it is set (the CAPF host), so that a wrong path fails now, not at the first mail
        data = read_option_file(ca_file, "monitor_smtp_ca_file", "CA file")
        try:
            ssl.create_default_context(cadata=data.decode("ascii", "replace"))
        except (ssl.SSLError, ValueError):
            raise ValidationError("monitor_smtp_ca_file", "must hold PEM CA certificates (-----BEGIN CERTIFICATE-----)",
                                  ca_file) from None


def plan(tx: Transaction, store_secret: bytes, *, parameters_wanted: dict | None = None,
         online_ca: dict | None = None, capf_certificate: dict | None = None,
         update_password: str = "always", monitor_smtp_password: str | None = None) -> ServicePlan:
    """Compute the changes; raises ValidationError/CertificateError for any rule the values break."""
    update_password = check_choice("update_password", update_password, UPDATE_PASSWORD)
    wanted = parameters.check_all({k: v for k, v in (parameters_wanted or {}).items() if v is not None})
    current = service_records.read(tx)
    result = ServicePlan()
    result.before["parameters"] = current
    merged = dict(current)
    merged.update(wanted)
    result.after["parameters"] = merged
    result.parameters = {name: (current[name], value) for name, value in wanted.items() if current[name] != value}

    stored_ca = service_records.read_raw(tx, ONLINE_CA_KEY)
    password_set = secretbox.exists(tx, PASSWORD_SECRET)
    result.before[ONLINE_CA_KEY] = None if stored_ca is None else {
        **stored_ca, "password": "(set)" if password_set else "(unset)"}
    effective_ca = stored_ca
    password_view = "(set)" if password_set else "(unset)"
    if online_ca is not None:
        effective_ca = check_online_ca({k: v for k, v in online_ca.items() if k != "password"})
        check_client_files(effective_ca)
        if effective_ca != stored_ca:
            result.online_ca = (stored_ca, effective_ca)
        password = online_ca.get("password")
        if password is not None:
            check_password(password, "online_ca.password")
            if not password_set:
                result.password, result.password_action, password_view = password, "set", "(set)"
            elif update_password == "always" and not secretbox.equals(tx, store_secret, PASSWORD_SECRET, password):
                result.password, result.password_action, password_view = password, "changed", "(changed)"
    result.after[ONLINE_CA_KEY] = None if effective_ca is None else {**effective_ca, "password": password_view}

    # Cross-field rules, checked against the values in force after the change.
    if merged["issuer"] == "online_ca" and effective_ca is None:
        raise ValidationError("issuer", "online_ca needs the online_ca settings (hostname, type ...)", "online_ca")
    if effective_ca is not None and effective_ca["type"] == "microsoft" and merged["fips_mode"]:
        raise ValidationError("online_ca.type", "must not be microsoft when fips_mode is true (use est)", "microsoft")
    if effective_ca is not None and (result.online_ca or merged["issuer"] == "online_ca"):
        _check_hostname_against_trust(tx, effective_ca)
    _plan_smtp_password(tx, store_secret, result, monitor_smtp_password, update_password)
    _check_monitor(merged, result, monitor_smtp_password is not None)
    _plan_certificate(tx, result, capf_certificate)
    return result


def apply(store: Store, tx: Transaction, result: ServicePlan) -> None:
    """Write a plan inside the caller's write transaction."""
    if result.parameters:
        service_records.write(tx, store.actor, {name: after for name, (_b, after) in result.parameters.items()})
    if result.online_ca:
        service_records.write(tx, store.actor, {ONLINE_CA_KEY: result.online_ca[1]})
    if result.password_action:
        secretbox.put(tx, store.secret(), PASSWORD_SECRET, result.password)
        audit.record(tx, store.actor, "service.online_ca_password", "online_ca", change=result.password_action)
    if result.smtp_password_action:
        secretbox.put(tx, store.secret(), SMTP_PASSWORD_SECRET, result.smtp_password)
        audit.record(tx, store.actor, "service.monitor_smtp_password", "monitor", change=result.smtp_password_action)
    if result.certificate_action == "upload":
        certificate, private_key = result.upload
        authority._record(store, tx, certificate, private_key, "uploaded")  # pylint: disable=protected-access
    elif result.certificate_action:
        private_key = keys.generate(result.key_type, "capf_certificate.key_type")
        source = "generated" if result.certificate_action == "create" else "regenerated"
        authority._record(store, tx, authority.build_capf_certificate(private_key), private_key,  # pylint: disable=protected-access
                          source)


def converge(store: Store, *, parameters_wanted: dict | None = None, online_ca: dict | None = None,
             capf_certificate: dict | None = None, update_password: str = "always",
             monitor_smtp_password: str | None = None, check_mode: bool = False) -> dict[str, Any]:
    """Converge the service configuration; one transaction; returns changed/before/after. Key files
    of an older store are sealed into it first (``authority.seal_key_files``)."""
    if not check_mode:
        authority.seal_key_files(store)
    secret = store.secret()
    with store.transaction(write=not check_mode) as tx:
        result = plan(tx, secret, parameters_wanted=parameters_wanted, online_ca=online_ca,
                      capf_certificate=capf_certificate, update_password=update_password,
                      monitor_smtp_password=monitor_smtp_password)
        if result.changed and not check_mode:
            apply(store, tx, result)
    after = result.after
    if result.certificate_action and not check_mode:
        certificate = authority.current(store)
        shown = ("common_name", "fingerprint", "not_after", "subject")
        after["capf_certificate"] = {key: certificate[key] for key in shown}
        after["capf_certificate"].update(key_type=f"{certificate['key_type']}{certificate['key_size']}",
                                         source=certificate["source"])
    return converged(result.changed, result.before, after,
                     changed_parameters=sorted(result.parameters),
                     online_ca_changed=bool(result.online_ca or result.password_action),
                     monitor_smtp_password_changed=bool(result.smtp_password_action),
                     capf_certificate_action=result.certificate_action or "none")
