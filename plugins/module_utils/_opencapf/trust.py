# Copyright: contributors to opencapf.capf
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Trust stores (``capf-trust``, ``callmanager-trust``): certificates present or absent, by fingerprint.

A converge call first computes a plan (pure: which rows to add, re-describe or remove, with the
CA rules and Table 1 applied), then applies it in one transaction with one audit event per row.
"""

from __future__ import annotations

import fnmatch
import logging
from dataclasses import dataclass, field as _field

from .ca import certificates as c
from .ca import rules
from .dependencies import x509
from .errors import ValidationError
from .files import read_option_file
from .results import converged, text_or_none
from .store import Store, audit
from .store import trust as trust_records
from .store.backend import Transaction
from .vocabulary import LEGACY_MIC_ROOTS, TRUST_STORES, check_bool, check_choice, format_utc

log = logging.getLogger("opencapf.trust")


def check_trust_store(value, field: str = "trust_store") -> str:
    if isinstance(value, str):
        value = value.strip().lower()
    return check_choice(field, value, TRUST_STORES)


def load_certificates(content=None, path=None, field: str = "content") -> list:
    """Certificates from PEM/DER ``content`` or a file ``path`` (exactly one of them)."""
    if (content is None) == (path is None):
        raise ValidationError(field, "needs exactly one of content or path")
    if path is not None:
        content = read_option_file(path, field, "certificate file")
    return c.load_pem_certificates(content, field)


def _row_view(row: dict) -> dict:
    return {
        "trust_store": row["trust_store"], "fingerprint": row["fingerprint"], "common_name": row["common_name"],
        "subject": row["subject"], "issuer": row["issuer"], "is_ca": bool(row["is_ca"]),
        "not_after": row["not_after"], "description": row["description"],
    }


def list_certificates(tx: Transaction, trust_store: str | None = None) -> list[dict]:
    return [_row_view(row) for row in trust_records.listing(tx, trust_store)]


def find_certificate(tx: Transaction, fingerprint: str) -> list[dict]:
    """The certificate ``fingerprint`` in each trust store holding it, with its PEM (empty: in none)."""
    fingerprint = check_fingerprint(fingerprint)
    return [dict(_row_view(row), pem=row["pem"]) for row in trust_records.with_pem(tx, fingerprint)]


def _dns_names(certificate) -> list[str]:
    try:
        san = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return []
    return [str(name) for name in san.get_values_for_type(x509.DNSName)]


def https_certificate_names(tx: Transaction) -> list[list[str]]:
    """Host names of the CA HTTPS certificates in capf-trust: leaf certificates, and CA
    certificates that carry DNS names (Table 1's 'root and HTTPS certificate are the same')."""
    result = []
    for row in trust_records.anchors(tx):
        certificate = c.load_pem_certificate(row["pem"], "stored trust certificate")
        dns = _dns_names(certificate)
        if row["is_ca"] and not dns:
            continue
        names = dns + [c.common_name(certificate.subject)]
        result.append([name for name in names if name])
    return result


def hostname_matches(hostname: str, names: list[str]) -> bool:
    """Exact (case-insensitive) or single-label wildcard match, as TLS clients check host names."""
    host = hostname.lower().rstrip(".")
    for name in names:
        pattern = name.lower().rstrip(".")
        if pattern == host:
            return True
        if pattern.startswith("*.") and host.count(".") == pattern.count(".") and fnmatch.fnmatchcase(host, pattern):
            return True
    return False


@dataclass
class TrustPlan:
    """What a converge call will do; ``reason`` carries Table 1's explanation when it applied."""

    add: list = _field(default_factory=list)          # (trust_store, certificate, description)
    describe: list = _field(default_factory=list)     # (trust_store, fingerprint, old, new)
    remove: list = _field(default_factory=list)       # row views
    reason: str = ""
    scenario: int | None = None
    warnings: list = _field(default_factory=list)     # rules.RuleWarning, harmless deviations accepted

    @property
    def changed(self) -> bool:
        return bool(self.add or self.describe or self.remove)


def _check_upload(certificates: list, field: str, strict: bool) -> list:
    """The CA rules for everything uploaded together (``rules.CA_RULES``): the reserved prefix for
    all, the CA rules for CAs, each CA's path length judged against the CAs uploaded below it.
    Returns the warnings for harmless deviations (refused in ``strict`` mode)."""
    labelled = [(certificate, field if len(certificates) == 1 else f"{field}[{index}]", None)
                for index, certificate in enumerate(certificates)]
    return rules.check_upload_set(labelled, strict=strict)


def plan_present(tx: Transaction, uploads: list, description: str | None) -> TrustPlan:
    """``uploads`` is a list of (certificate, trust stores)."""
    plan = TrustPlan()
    seen = set()
    for certificate, stores in uploads:
        fingerprint = c.fingerprint(certificate)
        for trust_store in stores:
            if (trust_store, fingerprint) in seen:
                continue
            seen.add((trust_store, fingerprint))
            row = trust_records.get(tx, trust_store, fingerprint)
            if row is None:
                plan.add.append((trust_store, certificate, description or ""))
            elif description is not None and row["description"] != description:
                plan.describe.append((trust_store, fingerprint, row["description"], description))
    return plan


def plan_absent(tx: Transaction, certificates: list, stores) -> TrustPlan:
    plan = TrustPlan()
    for certificate in certificates:
        for trust_store in stores:
            row = trust_records.get(tx, trust_store, c.fingerprint(certificate))
            if row is not None:
                plan.remove.append(_row_view(row))
    return plan


def check_fingerprint(value, field: str = "fingerprint") -> str:
    """A SHA-256 fingerprint: 64 hex digits, colons and case ignored."""
    text = str(value).replace(":", "").strip().lower()
    if len(text) != 64 or any(ch not in "0123456789abcdef" for ch in text):
        raise ValidationError(field, "must be a SHA-256 fingerprint (64 hex digits, colons allowed)", value)
    return text


def plan_absent_by_fingerprint(tx: Transaction, fingerprints, stores) -> TrustPlan:
    plan = TrustPlan()
    for fingerprint in fingerprints:
        for trust_store in stores:
            row = trust_records.get(tx, trust_store, fingerprint)
            if row is not None:
                plan.remove.append(_row_view(row))
    return plan


def plan_legacy_removal(tx: Transaction, stores) -> TrustPlan:
    """Remove the four legacy Cisco manufacturing roots, matched by common name."""
    plan = TrustPlan()
    for trust_store in stores:
        for row in trust_records.by_common_names(tx, trust_store, LEGACY_MIC_ROOTS):
            plan.remove.append(_row_view(row))
    return plan


def _once(rows: list) -> list:
    """Rows to remove, each once: a certificate named twice (twice in a chain, by two spellings of its
    fingerprint, as a legacy root too) is removed once, with one audit event, and listed once."""
    seen, result = set(), []
    for row in rows:
        if (row["trust_store"], row["fingerprint"]) not in seen:
            seen.add((row["trust_store"], row["fingerprint"]))
            result.append(row)
    return result


def add(tx: Transaction, actor: str, trust_store: str, certificate, description: str = "",
        rule_warnings=()) -> None:
    """Record ``certificate`` in ``trust_store`` with its ``trust.add`` audit event (and the harmless
    deviations accepted for it, ``rule_warnings``)."""
    fingerprint = c.fingerprint(certificate)
    trust_records.add(tx, trust_store=trust_store, fingerprint=fingerprint,
                      subject=certificate.subject.rfc4514_string(), common_name=c.common_name(certificate.subject),
                      issuer=certificate.issuer.rfc4514_string(), is_ca=c.is_ca(certificate),
                      not_after=format_utc(c.not_after(certificate)), description=description,
                      pem=c.to_pem(certificate))
    details = {"rule_warnings": list(rule_warnings)} if rule_warnings else {}
    audit.record(tx, actor, "trust.add", trust_store, fingerprint=fingerprint,
                 common_name=c.common_name(certificate.subject), **details)


def apply(tx: Transaction, actor: str, plan: TrustPlan) -> None:
    for trust_store, certificate, description in plan.add:
        fingerprint = c.fingerprint(certificate)
        add(tx, actor, trust_store, certificate, description,
            [str(item) for item in plan.warnings if item.fingerprint == fingerprint])
    for trust_store, fingerprint, old, new in plan.describe:
        trust_records.set_description(tx, trust_store, fingerprint, new)
        audit.record(tx, actor, "trust.describe", trust_store, fingerprint=fingerprint, before=old, after=new)
    for row in plan.remove:
        trust_records.delete(tx, row["trust_store"], row["fingerprint"])
        audit.record(tx, actor, "trust.remove", row["trust_store"], fingerprint=row["fingerprint"],
                     common_name=row["common_name"])


def _view_order(item: dict) -> tuple:
    """The order of a trust store's certificates in a diff, before and after alike (by code point:
    the database's collation, for PostgreSQL that of its locale, may order names otherwise)."""
    return item["common_name"], item["fingerprint"]


def _view(tx: Transaction, stores) -> dict:
    return {store: sorted(list_certificates(tx, store), key=_view_order) for store in sorted(stores)}


def _after_view(before: dict, plan: TrustPlan) -> dict:
    after = {store: [dict(item) for item in items] for store, items in before.items()}
    removed = {(row["trust_store"], row["fingerprint"]) for row in plan.remove}
    for store in after:
        after[store] = [item for item in after[store] if (store, item["fingerprint"]) not in removed]
    for trust_store, fingerprint, _old, new in plan.describe:
        for item in after.setdefault(trust_store, []):
            if item["fingerprint"] == fingerprint:
                item["description"] = new
    for trust_store, certificate, description in plan.add:
        described = c.describe(certificate)
        after.setdefault(trust_store, []).append({
            "trust_store": trust_store, "fingerprint": described["fingerprint"],
            "common_name": described["common_name"], "subject": described["subject"],
            "issuer": described["issuer"], "is_ca": described["is_ca"], "not_after": described["not_after"],
            "description": description,
        })
    for store in after:
        after[store].sort(key=_view_order)
    return after


def converge(store: Store, *, state: str = "present", trust_store=None, content=None, path=None,
             ca_root=None, https_certificate=None, intermediates=(), description: str | None = None,
             fingerprints=None, remove_legacy_mic_roots: bool = False, strict_ca_rules: bool = False,
             check_mode: bool = False) -> dict:
    """Make certificates present or absent in trust stores.

    Either ``content``/``path`` (one certificate or a chain) with ``trust_store`` (one store or a
    list), or ``ca_root`` (+ ``https_certificate``, ``intermediates``) for Table 1, which decides the
    certificates and stores itself. ``remove_legacy_mic_roots`` removes the four legacy MIC roots
    by name from ``trust_store`` (default callmanager-trust). ``fingerprints`` (with
    ``state=absent``) removes certificates by SHA-256 fingerprint from ``trust_store`` (default both).
    Uploads follow ``rules.CA_RULES``: a harmless deviation is accepted, returned in ``warnings``,
    logged and recorded with the audit event; ``strict_ca_rules`` refuses it instead.
    """
    state = check_choice("state", state, ("present", "absent"))
    description = text_or_none(description, "description")  # None: keep stored descriptions
    if trust_store is None:
        stores: tuple = ()
    elif isinstance(trust_store, (list, tuple)):
        stores = tuple(check_trust_store(item, f"trust_store[{i}]") for i, item in enumerate(trust_store))
    else:
        stores = (check_trust_store(trust_store),)
    given = content is not None or path is not None
    prints = [check_fingerprint(item, f"fingerprints[{index}]") for index, item in enumerate(fingerprints or ())]
    if prints and (state != "absent" or given or ca_root is not None):
        raise ValidationError("fingerprints", "are only used with state absent, without content, path or ca_root")
    if given and ca_root is not None:
        raise ValidationError("ca_root", "cannot be combined with content or path")
    if https_certificate is not None and ca_root is None:
        raise ValidationError("https_certificate", "needs ca_root (Table 1 decides from both)")
    if given and not stores:
        raise ValidationError("trust_store", "is required with content or path (capf-trust or callmanager-trust)")
    if not given and ca_root is None and not remove_legacy_mic_roots and not prints:
        raise ValidationError("content", "is required: give content, path, ca_root, or remove_legacy_mic_roots")

    strict = check_bool("strict_ca_rules", strict_ca_rules)
    uploads, reason, scenario, warnings = [], "", None, []
    if given:
        certificates = load_certificates(content, path, "content" if content is not None else "path")
        if state == "present":
            warnings = _check_upload(certificates, "content" if content is not None else "path", strict)
        uploads = [(certificate, stores) for certificate in certificates]
    elif ca_root is not None:
        root = c.load_pem_certificate(ca_root, "ca_root")
        https = c.load_pem_certificate(https_certificate, "https_certificate") if https_certificate else None
        chain = []
        for index, item in enumerate(intermediates or ()):
            chain.extend(c.load_pem_certificates(item, f"intermediates[{index}]"))
        decision = rules.table1(root, https, chain, strict=strict and state == "present")
        uploads = [(certificate, tuple(where)) for _role, certificate, where in decision.uploads]
        reason, scenario = decision.reason, decision.scenario
        warnings = decision.warnings if state == "present" else []

    legacy_stores = stores or ("callmanager-trust",)
    with store.transaction(write=not check_mode) as tx:
        if state == "present":
            plan = plan_present(tx, uploads, description)
        else:
            plan = plan_absent(tx, [certificate for certificate, _stores in uploads],
                               {where for _certificate, stores_ in uploads for where in stores_})
        if remove_legacy_mic_roots:
            plan.remove.extend(plan_legacy_removal(tx, legacy_stores).remove)
        print_stores = stores or TRUST_STORES
        if prints:
            plan.remove.extend(plan_absent_by_fingerprint(tx, prints, print_stores).remove)
        plan.remove = _once(plan.remove)
        plan.reason, plan.scenario, plan.warnings = reason, scenario, warnings
        touched = {where for _certificate, stores_ in uploads for where in stores_}
        if remove_legacy_mic_roots:
            touched.update(legacy_stores)
        if prints:
            touched.update(print_stores)
        before = _view(tx, touched)
        after = _after_view(before, plan)
        if plan.changed and not check_mode:
            apply(tx, store.actor, plan)
    extras = {"added": [{"trust_store": s, "fingerprint": c.fingerprint(cert), "common_name": c.common_name(cert.subject)}
                        for s, cert, _d in plan.add],
              "removed": [{"trust_store": r["trust_store"], "fingerprint": r["fingerprint"],
                           "common_name": r["common_name"]} for r in plan.remove]}
    if scenario is not None:
        extras["table1"] = {"scenario": scenario, "reason": reason}
    extras["warnings"] = [str(item) for item in warnings]
    for item in warnings:
        log.info("trust upload accepted with a warning: %s", item)
    return converged(plan.changed, before, after, **extras)
