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
  - Optionally writes the CAPF report, one CSV line per selected phone with its LSC status, to O(report_path).
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
    choices: [service, capf_certificates, trust, phones, pending_csrs, stale_lscs, jobs, sessions, expiring_certificates,
              monitor]
  limit:
    description: At most this many jobs and sessions (newest first), 1–100000.
    type: int
    default: 100
  authentication_string:
    description:
      - Only phones in auth_string mode whose stored string is this one (compared with the keyed hash;
        never returned).
    type: str
  report_path:
    description:
      - Write the CAPF report (CSV, mode 0600) of the phones selected by O(query) to this file on the managed
        host. The file is written in check mode too, since it changes no CAPF state.
    type: path
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

- name: Phones in pool HQ whose LSC expires before February, with a CSV report
  opencapf.capf.capf_info:
    gather: [phones]
    query:
      device_pool: [HQ]
      lsc_expires_before: "2027-02-01"
    report_path: /srv/capf/report.csv
  register: expiring

- name: Every phone, soonest LSC expiry first
  opencapf.capf.capf_info:
    gather: [phones]
    order_by: lsc_expiry
  register: by_expiry

- name: Certificates about to expire, and whether the monitor's last mail went out
  opencapf.capf.capf_info:
    gather: [expiring_certificates, monitor]
  register: lifecycle

- name: Fail when a phone has no installed LSC
  ansible.builtin.assert:
    that: expiring.phones | rejectattr('lsc') | list | length == 0
"""

RETURN = r"""
service:
  description:
    - Service parameters (V(parameters)), online CA (password as set/unset), active CAPF certificate, and
      V(state) (started/stopped with pid, accepting, port).
  returned: when gathered
  type: dict
capf_certificates:
  description: Every CAPF certificate, newest first (subject, serial, fingerprint, not_after, active, source ...).
  returned: when gathered
  type: list
  elements: dict
trust:
  description: The trust stores, each a list of certificates.
  returned: when gathered
  type: dict
phones:
  description:
    - Phones matching O(query) with their settings, operation status and current LSC (serial, status,
      not_after, issued_at, installed_at, or null).
  returned: when gathered
  type: list
  elements: dict
pending_csrs:
  description: CSRs waiting for a signature (device_name, status, created_at, updated_at, external_ref).
  returned: when gathered
  type: list
  elements: dict
stale_lscs:
  description: LSCs issued for a CSR but never installed because the phone produced a newer one.
  returned: when gathered
  type: list
  elements: dict
jobs:
  description: Jobs, newest first (id, kind, status, spec, result, run_at, started_at, finished_at).
  returned: when gathered
  type: list
  elements: dict
sessions:
  description: Recent CAPF sessions, newest first (device_name, peer, operation, outcome, reason, started_at).
  returned: when gathered
  type: list
  elements: dict
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
              recipients, relay or sender; logged only) or V(failed) (the mail could not be sent).
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
      description: When the newest run that did not fail checked, or null.
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
  description: The CSV report written.
  returned: when O(report_path) is set
  type: str
"""

from ansible_collections.opencapf.capf.plugins.module_utils._ansible_args import (
    argument_spec, create_module, drop_none, engine, query_argument_spec)
from ansible_collections.opencapf.capf.plugins.module_utils._opencapf import reports, service_control


def main():
    spec = argument_spec(
        gather={"type": "list", "elements": "str", "choices": list(reports.SECTIONS)},
        limit={"type": "int", "default": 100},
        report_path={"type": "path"},
        order_by={"type": "str", "choices": list(reports.PHONE_ORDERS), "default": "device_name"},
        authentication_string={"type": "str", "no_log": True},
        **query_argument_spec(),
    )
    module = create_module(spec)
    params = module.params
    with engine(module) as store:
        result = reports.gather(store, params["gather"], query=drop_none(params["query"]), limit=params["limit"],
                                report_path=params["report_path"],
                                authentication_string=params["authentication_string"], order_by=params["order_by"])
        if "service" in result:
            result["service"]["state"] = service_control.status(store)
    module.exit_json(changed=False, **result)


if __name__ == "__main__":
    main()
