"""Install/Upgrade sessions of one phone driven through their ``StoreDecider`` alone, a step at a time, with
whichever issuer the store names (the CAPF, the online EST CA of ``support.third_party_ca``, the offline
CA), and what the store and its views report of the phone's key requests."""

from __future__ import annotations

from _opencapf import csr as csr_module
from _opencapf import reports
from _opencapf.dependencies import ec, serialization
from _opencapf.errors import CapfError
from _opencapf.protocol.session import AuthOffer, Deferred, Issued, KeyChoice
from _opencapf.store import csrs as csr_records
from support.sessions import DeciderLeg

_SPKI = (serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
# What becomes of a session: the phone stores the LSC delivered to it (or, with a third-party CA that holds
# its request, ends deferred and keeps its key); answers that it did not store it (or keeps no pending key);
# the session's process dies after its start, or after its request (the LSC's issuance with the CAPF).
FATES = ("completes", "ends without storing", "dies after its start", "dies after its request")


def holds(est, held: bool) -> None:
    """The online CA ``est`` holds the requests it gets from now on (until further notice), or signs them at once."""
    est.pending_first = 10 ** 6 if held else 0


class InstallLeg(DeciderLeg):
    """One session of the phone, a step at a time: its start (authentication); with a third-party issuer the
    pending key's state, then the request (which the online CA ``est`` holds when ``held``); with the CAPF
    the LSC for a new key; the phone's answer and the end. ``fate``: one of ``FATES``."""

    def __init__(self, store, est, name: str, fate: str, held: bool, max_session: int):
        self.est, self.held = est, held
        self.delivered: list[int] = []  # the certificates sent to the phone (ids)
        super().__init__(store, name, fate, max_session)

    @property
    def requests(self) -> set:
        """The requests it sent or waits on."""
        return {csr_id for csr_id in (self.decider._csr_id, self.decider._adopted)  # pylint: disable=protected-access
                if csr_id is not None}

    def _answer(self, issued: Issued):
        """The phone's STORE_CERTIFICATE_RESPONSE for a delivered LSC, and the session's end."""
        self.delivered.append(issued.certificate_id)
        if self.fate == "completes":
            self.decider.stored(self.plan, issued, True)
            self._end("succeeded", "LSC installed")
        else:
            self.decider.stored(self.plan, issued, False)
            self._end("failed", "phone did not store the certificate")

    def _steps(self):
        self.plan = self.decider.begin(self.name)
        assert not self.plan.refusal, self.plan
        if self.plan.operation == "none":  # another session completed it: a check-in
            self._end("succeeded", "nothing to do")
            return
        assert self.decider.authenticate(self.plan, AuthOffer(self.name.encode(), None)).ok
        yield
        if self.fate == "dies after its start":
            self.done = True
            return
        if self.plan.issuer == "capf":
            yield from self._capf_steps()
            return
        try:
            state = self.decider.third_party_state(self.plan)
        except CapfError as exc:
            self._end("failed", str(exc))
            return
        yield
        if isinstance(state, Issued):
            self._answer(state)
            return
        if isinstance(state, Deferred):  # the CA holds the request of the key the phone kept
            self._end("deferred", state.reason)
            return
        key = ec.generate_private_key(ec.SECP256R1())
        request = self.decider.prepare_csr(self.plan, key.public_key().public_bytes(*_SPKI), KeyChoice("ec", 256))
        signature = csr_module.phone_sign(request.info, key, "sha256", request.key_type_code)
        if self.est is not None:
            holds(self.est, self.held)
        try:
            result = self.decider.submit_csr(self.plan, request, signature)
        except CapfError as exc:  # not sent, or refused by the CA
            self._end("failed", str(exc))
            return
        yield
        if self.fate == "dies after its request":
            self.done = True
        elif isinstance(result, Issued):
            self._answer(result)
        elif self.fate == "completes":
            self._end("deferred", result.reason)
        else:
            self._end("failed", "the phone cannot keep a pending key")

    def _capf_steps(self):
        key = ec.generate_private_key(ec.SECP256R1())
        try:
            issued = self.decider.issue(self.plan, key.public_key().public_bytes(*_SPKI), KeyChoice("ec", 256))
        except CapfError as exc:
            self._end("failed", str(exc))
            return
        yield
        if self.fate == "dies after its request":
            self.done = True
        else:
            self._answer(issued)


def reported_requests(store, name: str, moment: str) -> dict:
    """csr id -> status of the phone's requests as the CSR listing reports them at ``moment``, after
    checking that the requests waiting for a signature (``capf_info``'s ``pending_csrs``) are those it
    reports ``pending``."""
    with store.read() as tx:
        listed = {row["id"]: row["status"] for row in csr_records.listing(tx, None, now=moment,
                                                                          clock_skew=store.clock_skew)
                  if row["device_name"] == name}
        awaiting = {row["id"] for row in csr_records.awaiting_signature(tx, now=moment, clock_skew=store.clock_skew)
                    if row["device_name"] == name}
    gathered = {row["id"] for row in reports.gather(store, ["pending_csrs"], now=moment)["pending_csrs"]
                if row["device_name"] == name}
    pending = {csr_id for csr_id, status in listed.items() if status == "pending"}
    assert awaiting == gathered == pending, (listed, awaiting, gathered)
    return listed


def recorded_requests(store, name: str) -> dict:
    """csr id -> status of the phone's requests as stored."""
    with store.read() as tx:
        return {row["id"]: row["status"] for row in tx.query(
            "SELECT r.id, r.status FROM csrs r JOIN phones p ON p.id = r.phone_id WHERE p.name = ?", (name,))}


def certificates_of_requests(store, name: str) -> dict:
    """csr id -> (certificate id, its status) of the phone's phone-signed requests a certificate was
    recorded for (a certificate the CA returned for a request that no longer waited is on no request:
    recorded ``stale``, ``enrolment``)."""
    with store.read() as tx:
        return {row["id"]: (row["certificate_id"], row["status"]) for row in tx.query(
            "SELECT r.id, r.certificate_id, c.status FROM csrs r JOIN phones p ON p.id = r.phone_id "
            "JOIN certificates c ON c.id = r.certificate_id WHERE p.name = ? AND r.csr_pem IS NOT NULL", (name,))}
