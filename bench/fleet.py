# Copyright: contributors to opencapf.capf
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""A large, realistic store in seconds: phones, their certificates and CSRs, in one transaction.

Rows are written with ``executemany`` straight into the real schema, so reports and bulk jobs
can be measured over 100,000 phones without issuing 100,000 certificates first. The mix of
statuses and expiries is deterministic for a given seed. Certificate rows carry a real LSC's
PEM text (one LSC signed by the store's CAPF key, reused) so rows have their real size; serials
and fingerprints are distinct per row.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import random

from _opencapf.ca import authority, keys, lsc
from _opencapf.ca import certificates as c
from _opencapf.store import audit
from _opencapf.vocabulary import LIVENESS_MARGIN_SECONDS, MAX_SESSION_SECONDS, format_utc, utc_now

MODELS = ("CP-8845", "CP-8865", "CP-7841", "CP-8811", "CP-7821", "CP-8851")
LSC_VALIDITY_DAYS = 1825
MIC_ISSUER = "Cisco_Manufacturing_CA_SHA2"
PHONE_COLUMNS = ("id", "name", "description", "model", "device_pool", "security_mode", "operation", "auth_mode",
                 "key_order", "rsa_key_size", "ec_key_size", "operation_deadline", "operation_status",
                 "last_session_at", "created_at", "updated_at")
CERTIFICATE_COLUMNS = ("id", "phone_id", "kind", "serial", "issuer", "fingerprint", "public_key_fingerprint", "status",
                       "source", "pem", "not_before", "not_after", "issued_at", "installed_at", "status_changed_at",
                       "recency")
CSR_COLUMNS = ("phone_id", "public_key_fingerprint", "public_key", "status", "certificate_id", "created_at",
               "updated_at")


@dataclasses.dataclass(frozen=True)
class Fleet:
    """What was generated: counts per table and status, and the fixed "now" it was generated at."""

    phones: int
    certificates: dict
    csrs: dict
    now: str
    first_name: str
    last_name: str
    # CSRs that views report waiting for a signature at ``now`` (``csrs.awaiting_signature``): those
    # stored pending or submitted, less the pending ones an abandoned session left (reported failed).
    csrs_awaiting: int = 0


def _insert_sql(table: str, columns: tuple[str, ...]) -> str:
    return f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({', '.join('?' for _column in columns)})"


def _choose(rng: random.Random, weighted: tuple[tuple[str, float], ...]) -> str:
    point = rng.random()
    for value, weight in weighted:
        point -= weight
        if point < 0:
            return value
    return weighted[-1][0]


def _utc_text(moment: _dt.datetime) -> str:
    """``format_utc`` for a naive UTC datetime, several times faster (it runs ~300,000 times)."""
    return moment.isoformat(timespec="seconds") + "Z"


class _Builder:
    """Builds the row tuples for one fleet; ids are assigned here so rows can refer to each other."""

    def __init__(self, rng: random.Random, now: _dt.datetime, phone_id: int, certificate_id: int, pem: str,
                 public_key_der: bytes):
        self.rng, self.pem, self.public_key_der = rng, pem, public_key_der
        self.now = now.astimezone(_dt.timezone.utc).replace(tzinfo=None, microsecond=0)
        self.phone_id, self.certificate_id = phone_id, certificate_id
        self.unbounded_before = _utc_text(self.now - _dt.timedelta(seconds=MAX_SESSION_SECONDS[1] + LIVENESS_MARGIN_SECONDS))
        self.phones: list[tuple] = []
        self.certificates: list[tuple] = []
        self.csrs: list[tuple] = []
        self.certificate_counts: dict[str, int] = {}
        self.csr_counts: dict[str, int] = {}
        self.csrs_abandoned = 0

    def _fingerprint(self) -> str:
        """A distinct SHA-256-sized hex string (rows need the shape of a fingerprint, not a real one)."""
        return f"{self.rng.getrandbits(256):064x}"

    def _time(self, days_ago_low: float, days_ago_high: float) -> str:
        return _utc_text(self.now - _dt.timedelta(days=self.rng.uniform(days_ago_low, days_ago_high)))

    def phone(self, name: str) -> None:
        rng = self.rng
        phone_id = self.phone_id
        self.phone_id += 1
        operation = _choose(rng, (("none", 0.85), ("install_upgrade", 0.12), ("delete", 0.02), ("troubleshoot", 0.01)))
        if operation == "none":
            status, deadline = _choose(rng, (("succeeded", 0.7), ("none", 0.25), ("failed", 0.05))), None
        else:
            status = _choose(rng, (("pending", 0.9), ("in_progress", 0.05), ("lapsed", 0.05)))
            deadline = _utc_text(self.now + _dt.timedelta(days=rng.randint(1, 30)))
        created = self._time(400, 2000)
        settings = (rng.choice(MODELS), f"DP-SITE{rng.randint(1, 50):02d}",
                    _choose(rng, (("authenticated", 0.6), ("encrypted", 0.3), ("non_secure", 0.1))), operation,
                    _choose(rng, (("null_string", 0.5), ("existing_cert_mic", 0.35), ("existing_cert_lsc", 0.15))),
                    _choose(rng, (("rsa", 0.8), ("ec_preferred", 0.15), ("ec", 0.05))), 2048, 256, deadline, status)
        last_session = self._time(0, 30)
        self.phones.append((phone_id, name, f"phone {name}", *settings, last_session, created, self._time(0, 400)))
        if rng.random() < 0.7:
            self._certificate(phone_id, name, "mic", "installed", issuer=MIC_ISSUER, source="troubleshoot",
                              issued_days_ago=rng.uniform(1000, 3000), validity_days=7300)
        # An operation in progress whose session started more than the longest session ago (none has a
        # recorded bound here) was abandoned: views report the key request that session made failed.
        abandoned_since = last_session if status == "in_progress" and last_session < self.unbounded_before else None
        self._lscs(phone_id, name, abandoned_since)

    def _lscs(self, phone_id: int, name: str, abandoned_since: str | None = None) -> None:
        rng = self.rng
        if rng.random() < 0.2:  # an older LSC replaced by the current one
            self._certificate(phone_id, name, "lsc", "revoked", issued_days_ago=rng.uniform(1500, 1900))
        if rng.random() < 0.03:  # signed for a CSR the phone replaced before installing it
            self._certificate(phone_id, name, "lsc", "stale", issued_days_ago=rng.uniform(1, 300))
        kind = _choose(rng, (("installed", 0.88), ("issued", 0.02), ("none", 0.10)))
        current = None
        if kind != "none":
            issued_days_ago = rng.uniform(0, 1900)  # some already past their 1825 days
            status = "expired" if kind == "installed" and issued_days_ago > LSC_VALIDITY_DAYS else kind
            current = self._certificate(phone_id, name, "lsc", status, issued_days_ago=issued_days_ago)
        csr = _choose(rng, (("pending", 0.04), ("submitted", 0.01), ("issued", 0.5), ("none", 0.45)))
        if csr == "issued" and current is None:
            csr = "none"
        if csr != "none":
            created = self._time(0, 30) if csr != "issued" else self._time(30, 1800)
            self.csrs.append((phone_id, self._fingerprint(), self.public_key_der, csr,
                              current if csr == "issued" else None, created, created))
            self.csr_counts[csr] = self.csr_counts.get(csr, 0) + 1
            if csr == "pending" and abandoned_since is not None and created >= abandoned_since:
                self.csrs_abandoned += 1

    def _certificate(self, phone_id: int, name: str, kind: str, status: str, *, issued_days_ago: float,
                     issuer: str = lsc.CAPF_ISSUER, source: str = "protocol", validity_days: int = LSC_VALIDITY_DAYS):
        certificate_id = self.certificate_id
        self.certificate_id += 1
        issued = self.now - _dt.timedelta(days=issued_days_ago)
        issued_text = _utc_text(issued)
        installed = _utc_text(issued + _dt.timedelta(minutes=2)) if status in ("installed", "expired") else None
        self.certificates.append((
            certificate_id, phone_id, kind, f"{certificate_id:x}{self.rng.getrandbits(96):024x}", issuer,
            self._fingerprint(), self._fingerprint(), status, source, self.pem, issued_text,
            _utc_text(issued + _dt.timedelta(days=validity_days)), issued_text, installed,
            installed or issued_text, 0 if status == "stale" else certificate_id,  # issued and installed in id order
        ))
        key = f"{kind}:{status}"
        self.certificate_counts[key] = self.certificate_counts.get(key, 0) + 1
        return certificate_id


def _sample_material(store) -> tuple[str, bytes]:
    """A real LSC's PEM and a real RSA-2048 public key, signed by the store's CAPF certificate."""
    authority.ensure(store)
    signer = authority.signer(store)
    public_key = keys.generate("rsa2048").public_key()
    certificate = lsc.build_lsc(signer, "SEP0000000FEED0", public_key, LSC_VALIDITY_DAYS, 1)
    return c.to_pem(certificate), c.public_key_der(public_key)


def generate(store, phones: int, *, seed: int = 7, now: _dt.datetime | None = None, first_mac: int = 0x00A0B0000000,
             ) -> Fleet:
    """Add ``phones`` phones (names ``SEP`` + 12 hex from ``first_mac``) with certificates and CSRs."""
    now = now or utc_now()
    pem, public_key_der = _sample_material(store)
    rng = random.Random(seed)
    with store.transaction() as tx:
        phone_base = (tx.scalar("SELECT COALESCE(MAX(id), 0) FROM phones") or 0) + 1
        certificate_base = (tx.scalar("SELECT COALESCE(MAX(id), 0) FROM certificates") or 0) + 1
        builder = _Builder(rng, now, phone_base, certificate_base, pem, public_key_der)
        names = [f"SEP{first_mac + index:012X}" for index in range(phones)]
        for name in names:
            builder.phone(name)
        tx.executemany(_insert_sql("phones", PHONE_COLUMNS), builder.phones)
        tx.executemany(_insert_sql("certificates", CERTIFICATE_COLUMNS), builder.certificates)
        tx.executemany(_insert_sql("csrs", CSR_COLUMNS), builder.csrs)
        audit.record(tx, store.actor, "bench.fleet_generated", "phones", phones=phones, seed=seed,
                     certificates=len(builder.certificates), csrs=len(builder.csrs))
    awaiting = builder.csr_counts.get("pending", 0) + builder.csr_counts.get("submitted", 0) - builder.csrs_abandoned
    return Fleet(phones, dict(sorted(builder.certificate_counts.items())), dict(sorted(builder.csr_counts.items())),
                 format_utc(now), names[0] if names else "", names[-1] if names else "", awaiting)
