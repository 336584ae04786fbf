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
    status, pending CSRs with timestamps, stale LSCs, jobs and recent sessions.
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
    choices: [service, capf_certificates, trust, phones, pending_csrs, stale_lscs, jobs, sessions, revoked_lscs, crl]
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
revoked_lscs:
  description:
    - Revoked LSCs, most recently revoked first (at most O(limit)).
    - Only LSCs that CAPF signed (V(issuer=capf)) are on the CAPF CRL; a third-party CA's LSC is revoked there.
  returned: when gathered
  type: list
  elements: dict
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
  description: The newest CRL the service signed, or null before the first.
  returned: when gathered
  type: dict
  contains:
    number:
      description: Its CRL number.
      type: int
    signer_fingerprint:
      description: SHA-256 fingerprint of the CAPF certificate that signed it.
      type: str
    this_update:
      description: thisUpdate (UTC).
      type: str
    next_update:
      description: nextUpdate (UTC); a new CRL is signed once half of the validity has passed.
      type: str
    entries:
      description: How many revoked LSCs it lists.
      type: int
    revocation_mark:
      description: Internal marker of the revocations it covers.
      type: str
    created_at:
      description: When it was signed (UTC).
      type: str
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
