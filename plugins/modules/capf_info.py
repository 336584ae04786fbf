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
  - Optionally writes the CAPF report of the selected phones to O(report_path): one CSV line per phone with
    its LSC status, or (O(report_format=html)) one self-contained HTML page with charts and a sortable
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
    choices: [service, capf_certificates, trust, phones, pending_csrs, stale_lscs, jobs, sessions]
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

- name: Phones in pool HQ whose LSC expires before February, with a CSV report
  opencapf.capf.capf_info:
    gather: [phones]
    query:
      device_pool: [HQ]
      lsc_expires_before: "2027-02-01"
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
report_path:
  description: The report written (CSV or HTML, see O(report_format)).
  returned: when O(report_path) is set
  type: str
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
