#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: contributors to opencapf.capf
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: capf_info
short_description: Read CAPF state, phones with their LSC status, CSRs, stale LSCs, jobs, sessions
version_added: 0.1.0
description:
  - Read-only view of the CAPF store. It returns the service parameters and service state, the CAPF
    certificates (active and retired), the trust stores, phones filtered like the bulk query with their LSC
    status, pending CSRs with timestamps, stale LSCs, jobs and recent sessions, the certificates within the
    certificate monitor's warn window, and the monitor's last run.
  - An LSC's status is the one it has when the module runs; an issued or installed LSC whose notAfter has
    passed is V(expired) (in the phones, the report and O(query.lsc_status)) until the scheduler revokes it.
  - Optionally writes the CAPF report of the selected phones to O(report_path), one CSV line per phone with
    its LSC status, or with O(report_format=html) one self-contained HTML page with charts and a sortable
    device table.
  - Stale LSCs are deleted with M(opencapf.capf.capf_stale_lsc).
author:
  - opencapf developers (@opencapf)
extends_documentation_fragment:
  - opencapf.capf.capf
  - opencapf.capf.capf.info_attributes
  - opencapf.capf.capf.query
options:
  gather:
    description: Which sections to return (default all).
    type: list
    elements: str
    choices: [service, capf_certificates, trust, phones, pending_csrs, stale_lscs, jobs, sessions, revoked_lscs, crl,
              expiring_certificates, monitor]
  limit:
    description: At most this many jobs, sessions and revoked LSCs (newest first), 1–100000.
    type: int
    default: 100
  authentication_string:
    description:
      - Only phones in auth_string mode whose stored string is this one (compared with the keyed hash;
        never returned).
    type: str
  report_path:
    description:
      - Write the CAPF report (mode 0600) of the phones selected by O(query) to this file on the managed
        host, in O(report_format). The file is written in check mode too, since it changes no CAPF state.
    type: path
  report_format:
    description:
      - Format of the report written to O(report_path).
      - V(csv) writes one line per phone with its LSC status.
      - V(html) writes one self-contained page that loads nothing from the network (inline SVG charts of
        LSC expiries by month, operations by status and by device pool, authentication modes, failures by
        reason; lock-outs, stale LSCs and pending CSRs of the selected phones; a device table that sorts
        by any column). It needs the Python library Jinja2 on the managed host (in the engine's
        requirements).
    type: str
    choices: [csv, html]
    default: csv
  order_by:
    description:
      - Order of RV(phones) and of the report. V(lsc_expiry) lists the soonest-expiring current LSC first
        (phones without a current LSC before all others), then by device name.
    type: str
    choices: [device_name, lsc_expiry]
    default: device_name
"""

EXAMPLES = r"""
- name: Everything
  opencapf.capf.capf_info:
  register: capf

- name: Phones in pool HQ whose LSC expires within 90 days, with a CSV report
  opencapf.capf.capf_info:
    gather: [phones]
    query:
      device_pool: [HQ]
      lsc_expires_before: "{{ '%Y-%m-%d' | strftime(now(utc=true).timestamp() + 90 * 86400, utc=true) }}"
    report_path: /srv/capf/report.csv
  register: expiring

- name: The HTML CAPF report of every phone, to open in a browser
  opencapf.capf.capf_info:
    gather: [phones]
    report_path: /srv/capf/report.html
    report_format: html

- name: Every phone, soonest LSC expiry first
  opencapf.capf.capf_info:
    gather: [phones]
    order_by: lsc_expiry
  register: by_expiry

- name: Certificates about to expire, and whether the monitor's last mail went out
  opencapf.capf.capf_info:
    gather: [expiring_certificates, monitor]
  register: lifecycle

- name: Phones whose current LSC is not installed (or installed but past its notAfter), or that have none
  opencapf.capf.capf_info:
    gather: [phones]
    query:
      lsc_status: [none, issued, revoked, expired]
  register: without_lsc

- name: Fail when a phone has no installed LSC
  ansible.builtin.assert:
    that: without_lsc.phones | length == 0
    fail_msg: "No installed LSC: {{ without_lsc.phones | map(attribute='device_name') | join(', ') }}"

- name: Phones locked out after wrong authentication strings
  opencapf.capf.capf_info:
    gather: [phones]
    query:
      locked: true
  register: locked_out
"""

RETURN = r"""
service:
  description: The service parameters, the online CA, the active CAPF certificate and the service state.
  returned: when gathered
  type: dict
  sample:
    parameters: {issuer: capf, validity_days: 1825, keepalive_minutes: 15, port: 3804}
    online_ca: null
    capf_certificate: {common_name: CAPF-7aaabd77, key_type: rsa2048, not_after: "2031-12-05T05:38:24Z"}
    state: {state: started, pid: 4242, running: true, accepting: true, address: 127.0.0.1, port: 3804}
  contains:
    parameters:
      description: Every service parameter, keyed by its name (see M(opencapf.capf.capf_service)).
      type: dict
      returned: always
    online_ca:
      description: The online CA settings (the password only as V((set)) or V((unset))), or null.
      type: dict
      returned: always
    capf_certificate:
      description: The active CAPF certificate, or null when the store has none.
      type: dict
      returned: always
      contains:
        common_name:
          description: Its common name, V(CAPF-) and 8 hex digits unless uploaded.
          type: str
        fingerprint:
          description: SHA-256 fingerprint, 64 lower-case hex digits.
          type: str
        key_type:
          description: Its key, for example V(rsa2048) or V(ec256).
          type: str
        not_after:
          description: End of its validity, UTC.
          type: str
        subject:
          description: Its subject (RFC 4514).
          type: str
        source:
          description: V(generated) or V(uploaded).
          type: str
    state:
      description: The CAPF service process.
      type: dict
      returned: always
      contains:
        state:
          description: V(started) when the process runs and accepts TLS connections, else V(stopped).
          type: str
        pid:
          description: Process id of the running service, or null.
          type: int
        running:
          description: Whether the service process runs.
          type: bool
        accepting:
          description: Whether a TLS handshake on the port succeeds.
          type: bool
        address:
          description: The address probed.
          type: str
        port:
          description: The CAPF port.
          type: int
        enrolment_service:
          description: V(active) when the service runs with O(opencapf.capf.capf_service#module:issuer=online_ca).
          type: str
capf_certificates:
  description: Every CAPF certificate, newest first.
  returned: when gathered
  type: list
  elements: dict
  sample:
    - {common_name: CAPF-7aaabd77, subject: CN=CAPF-7aaabd77, issuer: CN=CAPF-7aaabd77, serial: 4b2b6a66ff58300f,
       fingerprint: efb412ef97e1b680ab08191acedbcbe72c8c5c95138423f53628f37b1906863e, key_type: rsa, key_size: 2048,
       is_ca: true, not_before: "2026-12-06T05:38:24Z", not_after: "2031-12-05T05:38:24Z", active: true,
       source: generated, id: 1, created_at: "2026-12-06T05:38:24Z", retired_at: null}
  contains:
    common_name:
      description: Common name of the subject.
      type: str
    subject:
      description: Subject (RFC 4514).
      type: str
    issuer:
      description: Issuer (RFC 4514); the subject for a self-signed certificate.
      type: str
    serial:
      description: Serial number, hex.
      type: str
    fingerprint:
      description: SHA-256 fingerprint, 64 lower-case hex digits.
      type: str
    key_type:
      description: V(rsa) or V(ec).
      type: str
    key_size:
      description: Key size in bits (the curve size for EC).
      type: int
    is_ca:
      description: Whether it carries BasicConstraints CA:TRUE.
      type: bool
    not_before:
      description: Start of its validity, UTC.
      type: str
    not_after:
      description: End of its validity, UTC.
      type: str
    active:
      description: Whether it is the certificate that signs LSCs now.
      type: bool
    source:
      description: V(generated) or V(uploaded).
      type: str
    id:
      description: Its row id in the store.
      type: int
    created_at:
      description: When it entered the store, UTC.
      type: str
    retired_at:
      description: When a newer one replaced it, UTC, or null.
      type: str
trust:
  description: The trust stores, keyed by name (V(capf-trust), V(callmanager-trust)), each a list of certificates.
  returned: when gathered
  type: dict
  sample:
    capf-trust:
      - {trust_store: capf-trust, common_name: Example Root, fingerprint: 3f0c8e7d5b1a29c4e6f8a0b2c4d6e8f0a2b4c6d8e0f2a4b6c8d0e2f4a6b8c0d2,
         subject: "CN=Example Root,O=Example", issuer: "CN=Example Root,O=Example", is_ca: true,
         not_after: "2036-01-01T00:00:00Z", description: Enterprise root}
    callmanager-trust: []
phones:
  description: Phones matching O(query), in O(order_by) order, with their settings, operation status and current LSC.
  returned: when gathered
  type: list
  elements: dict
  sample:
    - {device_name: SEP001122334455, description: Reception, model: CP-8865, device_pool: HQ, security_mode: non_secure,
       certificate_operation: install_upgrade, operation_status: failed,
       operation_reason: "wrong authentication string",
       authentication_mode: auth_string, operation_completes_by: null, locked: true, lsc: null}
  contains:
    device_name:
      description: The phone.
      type: str
    description:
      description: Free text.
      type: str
    model:
      description: Phone model.
      type: str
    device_pool:
      description: Device pool.
      type: str
    security_mode:
      description: Device security mode.
      type: str
    certificate_operation:
      description: The pending or last certificate operation.
      type: str
    operation_status:
      description:
        - V(none), V(pending), V(in_progress), V(succeeded), V(failed) or V(lapsed), as at the time of the call,
          whether or not the scheduler has run since.
        - V(lapsed) once the deadline has passed (the phone's next session refuses the operation); V(failed) once the
          session that left the operation V(in_progress) has surely ended without a result (its service died).
      type: str
    operation_reason:
      description: Why the operation failed or lapsed, or is still pending; empty otherwise.
      type: str
    authentication_mode:
      description: How the phone authenticates to CAPF.
      type: str
    operation_completes_by:
      description: The operation deadline, UTC, or null.
      type: str
    locked:
      description: Whether the phone is locked out after wrong authentication strings.
      type: bool
    lsc:
      description: The current LSC (the newest that is not stale), or null.
      type: dict
      contains:
        serial:
          description: Serial number, hex.
          type: str
        status:
          description:
            - V(issued), V(installed), V(revoked) or V(expired), as it is when the module runs.
            - V(expired) is an issued or installed LSC whose notAfter has passed (valid through its notAfter
              second); the scheduler revokes it (V(revoked)) with C(revoke_after_expiry).
          type: str
        not_after:
          description: End of its validity, UTC.
          type: str
        issued_at:
          description: When it was signed, UTC.
          type: str
        installed_at:
          description: When the phone acknowledged storing it, UTC, or null.
          type: str
pending_csrs:
  description: CSRs waiting for a signature, oldest first.
  returned: when gathered
  type: list
  elements: dict
  sample:
    - {device_name: SEP001122334455, id: 7, status: pending, public_key_fingerprint: 9a8b7c6d5e4f,
       external_ref: null, created_at: "2026-12-06T05:38:24Z", updated_at: "2026-12-06T05:38:24Z"}
  contains:
    device_name:
      description: The phone whose key it is.
      type: str
    id:
      description: The CSR's id.
      type: int
    status:
      description: V(pending) (not sent to a CA yet) or V(submitted) (sent, not answered yet).
      type: str
    public_key_fingerprint:
      description: SHA-256 fingerprint of the phone's public key.
      type: str
    external_ref:
      description: The CA's reference of a submitted request, or null.
      type: str
    created_at:
      description: When the phone made the request, UTC.
      type: str
    updated_at:
      description: When its status last changed, UTC.
      type: str
stale_lscs:
  description: LSCs issued for a CSR but never installed, because the phone produced a newer one or answered that it did not store them.
  returned: when gathered
  type: list
  elements: dict
  sample:
    - {device_name: SEP001122334455, id: 12, serial: 5e0f3c2a1b, issuer: "CN=Example Issuing CA", fingerprint: 0a1b2c3d,
       not_after: "2028-12-06T05:38:24Z", issued_at: "2026-12-06T05:38:24Z", status_changed_at: "2026-12-07T08:00:00Z"}
  contains:
    device_name:
      description: The phone it was issued to.
      type: str
    id:
      description: Its row id in the store.
      type: int
    serial:
      description: Serial number, hex.
      type: str
    issuer:
      description: Its issuer (RFC 4514).
      type: str
    fingerprint:
      description: SHA-256 fingerprint.
      type: str
    not_after:
      description: End of its validity, UTC.
      type: str
    issued_at:
      description: When it was signed, UTC.
      type: str
    status_changed_at:
      description: When it became stale, UTC.
      type: str
jobs:
  description: Jobs, newest first, at most O(limit).
  returned: when gathered
  type: list
  elements: dict
  sample:
    - {id: 3, kind: bulk_update, status: scheduled, spec: {query: {device_pool: [HQ]}, set: {key_order: ec}},
       result: null, run_at: "2099-01-01T01:00:00Z", created_at: "2026-12-06T05:38:24Z", started_at: null,
       finished_at: null}
  contains:
    id:
      description: The job's id.
      type: int
    kind:
      description: What the job does.
      type: str
    status:
      description: The job's status.
      type: str
    spec:
      description: What the job was asked to do (its query and settings).
      type: dict
    result:
      description: What it did (C(counts), how many strings it generated, the strings file; for a failed job the
        reason, C(error)), or null before it ran (also for a job cancelled before it ran).
      type: dict
    run_at:
      description: When it runs, UTC.
      type: str
    created_at:
      description: When it was scheduled, UTC.
      type: str
    started_at:
      description: When it started, UTC, or null.
      type: str
    finished_at:
      description: When it finished, UTC, or null.
      type: str
sessions:
  description: Recent CAPF sessions, newest first, at most O(limit).
  returned: when gathered
  type: list
  elements: dict
  sample:
    - {session_id: 899621824, device_name: SEP001122334455, peer: "192.0.2.10:51234", operation: install_upgrade,
       outcome: auth_failed, reason: "wrong authentication string", started_at: "2026-12-06T05:38:24Z",
       duration_ms: 41}
  contains:
    session_id:
      description: The session's id (also in the service log).
      type: int
    device_name:
      description: The device name the phone gave.
      type: str
    peer:
      description: The phone's address and port.
      type: str
    operation:
      description: The operation the session ran.
      type: str
    outcome:
      description: How the session ended, for example V(succeeded), V(failed), V(auth_failed), V(no_operation).
      type: str
    reason:
      description: Why, in words.
      type: str
    started_at:
      description: When it started, UTC.
      type: str
    duration_ms:
      description: How long it took, in milliseconds.
      type: int
revoked_lscs:
  description:
    - Revoked LSCs, most recently revoked first (at most O(limit)).
    - Only LSCs that CAPF signed (V(issuer=capf)) are on the CAPF CRL; a third-party CA's LSC is revoked there.
    - Every revoked LSC is listed here, also one that no CRL lists any more - a CRL lists a revoked LSC until a CRL
      of its CAPF certificate issued after its notAfter and its revocation has listed it (RFC 5280 section 3.3, see
      docs/lifecycle.md).
  returned: when gathered
  type: list
  elements: dict
  sample:
    - {device_name: SEP001122334455, serial: 3f2a9c0d41e5b7, issuer: capf, source: capf, not_after: "2027-12-06T05:38:24Z",
       revoked_at: "2026-12-06T05:40:02Z", revocation_reason: superseded}
  contains:
    device_name:
      description: The phone.
      type: str
    serial:
      description: Serial number (hexadecimal).
      type: str
    issuer:
      description: V(capf), or the third-party CA that signed it.
      type: str
    source:
      description: How it was issued (V(capf), V(cli), V(online_ca), V(offline_ca) ...).
      type: str
    not_after:
      description: End of its validity (UTC).
      type: str
    revoked_at:
      description: When it was revoked (UTC).
      type: str
    revocation_reason:
      description: >-
        The RFC 5280 reason, V(superseded) (a newer LSC was installed), V(cessation_of_operation) (deleted from the
        phone, or expired with C(revoke_after_expiry)), or what an operator gave.
      type: str
crl:
  description:
    - The newest CRL of the active CAPF certificate (its fields null before the first), and under RV(crl.issuers) every
      CAPF certificate that keeps a CRL (the active one, and each retired one until it expires) with its newest CRL,
      where it is published and what keeps it from being signed or trusted.
    - Null when the store has no CAPF certificate yet.
  returned: when gathered
  type: dict
  sample:
    number: 4
    signer_fingerprint: "9c1e04b2d7a3f5e8..."
    this_update: "2026-12-06T05:40:02Z"
    next_update: "2026-12-13T05:40:02Z"
    entries: 12
    revocation_mark: "812:2026-12-06T05:39:58Z"
    created_at: "2026-12-06T05:40:02Z"
    issuers:
      - fingerprint: "9c1e04b2d7a3f5e8..."
        common_name: CAPF-5e0c1a2b
        serial: "4d2f..."
        active: true
        not_after: "2031-12-05T05:40:00Z"
        crl_sign: true
        key_held: true
        http_path: /capf-9c1e04b2d7a3f5e8.crl
        file: /srv/crl/capf-9c1e04b2d7a3f5e8.crl
        url: http://capf.example.com:8080/capf-9c1e04b2d7a3f5e8.crl
        number: 4
        this_update: "2026-12-06T05:40:02Z"
        next_update: "2026-12-13T05:40:02Z"
        entries: 12
        problems: []
      - fingerprint: "31aa97c0e4d25b16..."
        common_name: CAPF-0b7d9e41
        serial: "7a01..."
        active: false
        not_after: "2029-03-01T10:00:00Z"
        crl_sign: false
        key_held: true
        http_path: /capf-31aa97c0e4d25b16.crl
        file: /srv/crl/capf-31aa97c0e4d25b16.crl
        url: http://capf.example.com:8080/capf-31aa97c0e4d25b16.crl
        number: 3
        this_update: "2026-12-06T05:40:02Z"
        next_update: "2026-12-13T05:40:02Z"
        entries: 40
        problems:
          - "CAPF certificate CAPF-0b7d9e41 (retired): its KeyUsage lacks cRLSign, so relying parties that check it
             (OpenSSL does) refuse the CRL signed with its key; give its phones new LSCs (install_upgrade) from the
             active CAPF certificate"
  contains:
    number:
      description: The CRL number of the active CAPF certificate's newest CRL, or null before the first.
      type: int
    signer_fingerprint:
      description: SHA-256 fingerprint of the CAPF certificate that signed it (the active one).
      type: str
    this_update:
      description: thisUpdate (UTC).
      type: str
    next_update:
      description: nextUpdate (UTC); a new CRL is signed once half of the validity has passed.
      type: str
    entries:
      description: >-
        How many revoked LSCs it lists - those the active CAPF certificate signed, but each that a CRL before it
        listed beyond the LSC's validity (RFC 5280 section 3.3).
      type: int
    revocation_mark:
      description: Internal marker of the revocations it covers.
      type: str
    created_at:
      description: When it was signed (UTC).
      type: str
    issuers:
      description: Every CAPF certificate that keeps a CRL, the active one first (newest first).
      type: list
      elements: dict
      contains:
        fingerprint:
          description: SHA-256 fingerprint of the CAPF certificate; its first 16 hex digits name its CRL's locations.
          type: str
        common_name:
          description: Its common name.
          type: str
        serial:
          description: Its serial number (hex).
          type: str
        active:
          description: Whether it is the active CAPF certificate (else retired).
          type: bool
        not_after:
          description: When it expires (UTC); a retired one keeps a CRL until then.
          type: str
        crl_sign:
          description: >-
            Whether its KeyUsage allows signing CRLs (cRLSign); without it relying parties that check key usage refuse its
            CRL (see RV(crl.issuers[].problems)).
          type: bool
        key_held:
          description: Whether the store can load its private key; without it no CRL can be signed for its LSCs.
          type: bool
        http_path:
          description: Path of its CRL on the service's HTTP responder (O(opencapf.capf.capf_service#module:crl_http_port)).
          type: str
        file:
          description: Its CRL file beside O(opencapf.capf.capf_service#module:crl_path), or null without crl_path.
          type: str
        url:
          description: >-
            The CRL distribution point its LSCs name (from O(opencapf.capf.capf_service#module:crl_url)), or null
            without crl_url.
          type: str
        number:
          description: Its newest CRL's number, or null before the first.
          type: int
        this_update:
          description: Its newest CRL's thisUpdate (UTC), or null.
          type: str
        next_update:
          description: Its newest CRL's nextUpdate (UTC), or null.
          type: str
        entries:
          description: >-
            How many revoked LSCs its newest CRL lists (exactly the revoked LSCs it signed, but each that a CRL
            before it listed beyond the LSC's validity), or null.
          type: int
        problems:
          description: What keeps its CRL from being signed or trusted, each with its remedy; empty when nothing does.
          type: list
          elements: str
expiring_certificates:
  description:
    - Installed LSCs, CAPF certificates and trust-store certificates that expire within the largest of the
      C(monitor_warn_days) (or have expired; retired CAPF certificates only until they expire), soonest first.
  returned: when gathered
  type: list
  elements: dict
  contains:
    kind:
      description: V(lsc), V(capf_certificate), V(capf-trust) or V(callmanager-trust).
      type: str
      sample: lsc
    subject:
      description: The phone's device name for an LSC, else the certificate's common name.
      type: str
      sample: SEP001122334455
    device_name:
      description: The phone's device name.
      type: str
      returned: for an LSC
      sample: SEP001122334455
    serial:
      description: Serial number in hex (empty for trust-store certificates).
      type: str
    fingerprint:
      description: SHA-256 fingerprint of the certificate.
      type: str
    not_after:
      description: End of validity, UTC.
      type: str
      sample: "2027-01-05T10:00:00Z"
    days_left:
      description: Whole days left (negative once expired).
      type: int
      sample: 6
    threshold:
      description: The smallest warn threshold it reached (days), 0 once expired.
      type: int
      sample: 7
  sample:
    - {kind: lsc, subject: SEP001122334455, device_name: SEP001122334455, serial: 5f3a, fingerprint: 9c1e...,
       not_after: "2027-01-05T10:00:00Z", days_left: 6, threshold: 7}
monitor:
  description: The certificate monitor's last run, its last successful run and its next check.
  returned: when gathered
  type: dict
  contains:
    last_run:
      description: The newest run, or null when the monitor never ran.
      type: dict
      contains:
        checked_at:
          description: When it checked (the clock it used), UTC.
          type: str
        finished_at:
          description: When the run ended, UTC.
          type: str
        result:
          description:
            - V(sent) (one mail sent), V(nothing_due) (no new warning), V(not_configured) (warnings due but no
              recipients, relay or sender; logged only), V(failed) (the mail could not be sent) or V(unknown)
              (the relay's answer to its mail was lost, or the outcome of its mail was never recorded, the store
              connection lost while it was sent; its warnings are recorded as sent and not mailed again; its
              C(error) says so).
          type: str
        found:
          description: Certificates within the warn window.
          type: int
        warnings:
          description: Certificates whose warning was due.
          type: int
        mails_sent:
          description: Messages the relay accepted (0 or 1).
          type: int
        attempts:
          description: Delivery attempts made.
          type: int
        error:
          description: The last SMTP or network error of a failed run (the relay's reply; never the password).
          type: str
    last_success:
      description: When the newest run that did not fail, and whose outcome is known, checked, or null.
      type: str
    next_check:
      description: When the running service checks next (null when it never ran, at its next tick).
      type: str
  sample:
    last_run: {checked_at: "2026-12-06T05:00:00Z", finished_at: "2026-12-06T05:00:01Z", result: sent, found: 3,
               warnings: 1, mails_sent: 1, attempts: 1, error: ""}
    last_success: "2026-12-06T05:00:00Z"
    next_check: "2026-12-07T05:00:00Z"
report_path:
  description: The report written (CSV or HTML, see O(report_format)).
  returned: when O(report_path) is set
  type: str
  sample: /srv/capf/report.csv
"""

from ansible_collections.opencapf.capf.plugins.module_utils._ansible_args import (
    argument_spec, create_module, drop_none, engine, query_argument_spec)
from ansible_collections.opencapf.capf.plugins.module_utils._opencapf import reports, service_control
from ansible_collections.opencapf.capf.plugins.module_utils._opencapf.vocabulary import REPORT_FORMATS


def main():
    spec = argument_spec(
        gather={"type": "list", "elements": "str", "choices": list(reports.SECTIONS)},
        limit={"type": "int", "default": 100},
        report_path={"type": "path"},
        order_by={"type": "str", "choices": list(reports.PHONE_ORDERS), "default": "device_name"},
        report_format={"type": "str", "choices": list(REPORT_FORMATS), "default": "csv"},
        authentication_string={"type": "str", "no_log": True},
        **query_argument_spec(),
    )
    module = create_module(spec)
    params = module.params
    with engine(module) as store:
        result = reports.gather(store, params["gather"], query=drop_none(params["query"]), limit=params["limit"],
                                report_path=params["report_path"],
                                authentication_string=params["authentication_string"], order_by=params["order_by"],
                                report_format=params["report_format"])
        if "service" in result:
            result["service"]["state"] = service_control.status(store)
    module.exit_json(changed=False, **result)


if __name__ == "__main__":
    main()
