#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: contributors to opencapf.capf
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: capf_bulk_update
short_description: Bulk administration of phone CAPF settings, now or scheduled, or phones from CSV
version_added: 0.1.0
description:
  - Selects phones with O(query) and applies the CAPF settings in O(set) to every one of them, the bulk
    administration of the CAPF configuration guide. Or inserts (and updates) phones with their CAPF settings
    from a CSV file, O(csv_file).
  - A job runs in one transaction; 40,000 phones converge in seconds. A second run with the same options
    reports no change.
  - With O(run_at) in the future the job is stored for the engine's scheduler, which runs it then. The running CAPF
    service checks for due jobs every C(scheduler_interval_seconds) (M(opencapf.capf.capf_service), default 10)
    and runs each once, with a log line and an audit event; while the service is down, C(opencapf jobs run-due)
    does the same by hand. The job and its result are listed by M(opencapf.capf.capf_info). Submitting the same
    job again changes nothing.
  - One shared O(authentication_string), or a unique generated string per phone
    (O(generate_authentication_strings)). Generated strings are returned once in RV(authentication_strings)
    and can be written to a 0600 CSV file, O(strings_file); they can never be read back later.
  - 'The CSV header names the columns: C(device_name) (required) and any of C(description), C(model),
    C(device_pool), C(security_mode), C(certificate_operation), C(authentication_mode),
    C(authentication_string) (digits, or C(generate)), C(key_order), C(rsa_key_size), C(ec_key_size),
    C(operation_completes_by). An empty cell leaves the setting as it is (a new phone gets its default); a
    C(none) in the C(operation_completes_by) column clears the deadline of the phone. Every bad row is reported with
    its line number and nothing is imported unless every row is valid.'
author:
  - opencapf developers (@opencapf)
extends_documentation_fragment:
  - opencapf.capf.capf
  - opencapf.capf.capf.attributes
  - opencapf.capf.capf.query
options:
  set:
    description: CAPF settings applied to every phone matched by O(query). Unset settings are left as they are.
    type: dict
    suboptions:
      description:
        description: Free text, at most 200 characters.
        type: str
      model:
        description: Phone model.
        type: str
      device_pool:
        description: Device pool name.
        type: str
      security_mode:
        description: Device security mode.
        type: str
        choices: [non_secure, authenticated, encrypted]
      certificate_operation:
        description: The CAPF operation to schedule.
        type: str
        choices: [none, install_upgrade, delete, troubleshoot]
      authentication_mode:
        description: How phones authenticate to CAPF.
        type: str
        choices: [auth_string, null_string, existing_cert_lsc, existing_cert_mic]
      key_order:
        description: Key the phones generate.
        type: str
        choices: [rsa, ec, ec_preferred]
      rsa_key_size:
        description: RSA key size in bits.
        type: int
        choices: [1024, 2048, 3072, 4096]
      ec_key_size:
        description: EC key size in bits.
        type: int
        choices: [256, 384, 521]
      operation_completes_by:
        description:
          - Deadline of the operation, ISO 8601 (UTC unless an offset is given).
          - Kept to the second; a fraction of a second fails the task with a message that starts with
            C(set.operation_completes_by must be a whole second) (in a CSV file, the row's line and
            C(operation_completes_by must be a whole second)).
          - V(none) clears the deadline of every matched phone (a scheduled job clears it when it runs). A
            V(failed) or V(lapsed) operation whose deadline is cleared is V(pending) again, as with a new deadline;
            a phone without a deadline is unchanged. The diff shows the old deadline before and V(null) after.
          - Leave the option out to keep each phone's deadline; an empty value is refused with a message that
            starts with C(set.operation_completes_by must be an ISO 8601 date or time).
        type: str
  authentication_string:
    description:
      - One 4–10 digit string shared by every matched phone in auth_string mode.
      - Excludes O(csv_file), whose C(authentication_string) column carries each phone's string.
      - For a scheduled job (O(run_at) in the future) the string is kept encrypted until the job has run. Submitting
        the same job again without O(authentication_string) keeps the stored string and reports no change; with a
        different string it replaces it. To drop a stored string, cancel the job (C(opencapf jobs cancel ID)) and
        submit it again without one.
    type: str
  generate_authentication_strings:
    description:
      - A unique generated string per phone in auth_string mode that has none, whose operation changes,
        or every one with O(regenerate_authentication_strings=true).
      - Excludes O(csv_file) (a C(generate) cell there asks for a string per phone).
    type: bool
    default: false
  regenerate_authentication_strings:
    description: Generate new strings for every matched phone in auth_string mode (needs O(generate_authentication_strings)).
    type: bool
    default: false
  authentication_string_length:
    description: Digits of generated strings, 4–10.
    type: int
    default: 8
  reissue:
    description:
      - Arm the operation again on phones where it has finished (succeeded, failed or lapsed), for example renewals.
        A pending operation stays as it is, so the run after it reports no change until the phones have completed it.
    type: bool
    default: false
  apply_config:
    description:
      - Record that the configuration is to be applied to the phones now (Cisco's "Apply Config"). The engine
        serves the new settings at each phone's next CAPF session either way; the flag is kept in the job
        result and the audit log for call-control integrations.
    type: bool
    default: false
  csv_file:
    description:
      - CSV file on the managed host with phones to insert or update. Excludes O(query), O(set) and O(run_at).
      - At most 32 MiB, 100,000 rows and 1,024 characters a cell; quoting is strict, and any bad row means nothing is imported.
      - 'Every error starts with C(csv_file), for example C(csv_file: cannot read CSV file /x: No such file or directory).'
    type: path
  strings_file:
    description: Write generated authentication strings to this CSV file (mode 0600). Required for scheduled jobs that generate strings.
    type: path
  run_at:
    description:
      - Run the job at this ISO 8601 time (UTC unless an offset is given). A time in the past runs the job now.
      - Times are kept to the second; a fraction of a second (C(2099-01-01T02:00:00.5Z)) fails the task with a
        message that starts with C(run_at must be a whole second).
    type: str
  fail_on_unmatched:
    description:
      - Names in O(query.names) that are not in the store (a typo, or a phone not created yet) are returned in
        RV(unmatched) and warned about; with V(true) the task fails naming them and changes nothing.
      - For a scheduled job (O(run_at) in the future) the names are checked when the job is submitted; names no
        longer in the store when it runs are named in the job's C(result.warnings) (M(opencapf.capf.capf_info)).
    type: bool
    default: false
  diff_format:
    description:
      - What C(--diff) shows of the phones a job changes or inserts.
      - V(full) shows every phone with its changed settings before and after (tens of thousands of lines for a
        few thousand phones).
      - V(summary) shows the first 20 phones (by name) and, after, a C(summary) with the number of phones
        changed and inserted and, per setting, on how many phones it changed.
      - V(auto) is V(full) when at most 100 phones change and V(summary) above.
      - Only the diff is shaped; RV(counts) and what the job writes are the same whatever the value.
    type: str
    choices: [auto, summary, full]
    default: auto
"""

EXAMPLES = r"""
- name: Renew every LSC that expires within 60 days in pool HQ, in tonight's window (01:00 to 06:00 UTC)
  opencapf.capf.capf_bulk_update:
    query:
      device_pool: [HQ]
      lsc_expires_before: "{{ '%Y-%m-%d' | strftime(now(utc=true).timestamp() + 60 * 86400, utc=true) }}"
    set:
      certificate_operation: install_upgrade
      authentication_mode: existing_cert_lsc
      operation_completes_by: "{{ '%Y-%m-%dT06:00:00Z' | strftime(now(utc=true).timestamp() + 86400, utc=true) }}"
    reissue: true
    run_at: "{{ '%Y-%m-%dT01:00:00Z' | strftime(now(utc=true).timestamp() + 86400, utc=true) }}"

- name: Operations in pool HQ wait for their phones without a deadline (those that lapsed are pending again)
  opencapf.capf.capf_bulk_update:
    query:
      device_pool: [HQ]
      certificate_operation: [install_upgrade]
    set:
      operation_completes_by: none

- name: New phones from CSV with a unique string each, written for distribution
  opencapf.capf.capf_bulk_update:
    csv_file: /srv/capf/new-phones.csv
    strings_file: /srv/capf/new-phones-strings.csv
  register: imported

- name: Every 8845 gets EC keys and one shared string
  opencapf.capf.capf_bulk_update:
    query:
      model: [Cisco 8845]
    set:
      certificate_operation: install_upgrade
      authentication_mode: auth_string
      key_order: ec_preferred
    authentication_string: "{{ vault_capf_string }}"
"""

RETURN = r"""
counts:
  description: Phones matched by the query, changed, unchanged, and inserted (CSV); null for a scheduled job.
  returned: always
  type: dict
  sample: {matched: 40000, changed: 40000, unchanged: 0, inserted: 0}
  contains:
    matched:
      description: Phones in the store the query (or the CSV) matched.
      type: int
    changed:
      description: Matched phones whose settings changed.
      type: int
    unchanged:
      description: Matched phones already as asked.
      type: int
    inserted:
      description: Phones created from the CSV.
      type: int
authentication_strings:
  description: Generated strings, returned once. In check mode the phones that would get one, each with
    C((to be generated)) as its string.
  returned: always
  type: list
  elements: dict
  sample: [{device_name: SEP001122334455, authentication_string: "48213907"}]
  contains:
    device_name:
      description: The phone.
      type: str
    authentication_string:
      description: Its new authentication string.
      type: str
strings_file:
  description: The file the generated strings were written to, or null.
  returned: always
  type: str
job:
  description: The scheduled job, or null when the job ran now.
  returned: always
  type: dict
  sample: {id: 3, kind: bulk_update, status: scheduled, spec: {query: {device_pool: [HQ]}, set: {key_order: ec}},
           result: null, run_at: "2099-01-01T01:00:00Z", created_at: "2026-12-06T05:38:24Z", started_at: null,
           finished_at: null}
  contains:
    id:
      description: The job's id (cancel it with C(opencapf jobs cancel ID)).
      type: int
    kind:
      description: V(bulk_update).
      type: str
    status:
      description:
        - V(scheduled), V(succeeded), V(failed) or V(cancelled). A job is claimed, run and recorded in one transaction,
          so it stays V(scheduled) until it has finished; V(running) is only found on a job an earlier version left.
      type: str
    spec:
      description: What the job will do (its query and settings; never a secret).
      type: dict
    result:
      description: What it did (RV(counts), how many strings it generated, the strings file; for a failed job the
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
unmatched:
  description:
    - Names given in O(query.names) that no phone in the store has (canonical upper case, sorted); a warning names
      them too. Empty when every name matched or no names were given.
  returned: always
  type: list
  elements: str
  sample: [SEP00112233445F]
"""

from ansible_collections.opencapf.capf.plugins.module_utils._ansible_args import (
    argument_spec, create_module, drop_none, engine, exit_with, phone_settings_argument_spec, query_argument_spec)
from ansible_collections.opencapf.capf.plugins.module_utils._opencapf import bulk
from ansible_collections.opencapf.capf.plugins.module_utils._opencapf import vocabulary as v


def main():
    spec = argument_spec(
        set={"type": "dict", "options": {
            "description": {"type": "str"},
            **phone_settings_argument_spec(),
            "operation_completes_by": {"type": "str"},
        }},
        authentication_string={"type": "str", "no_log": True},
        generate_authentication_strings={"type": "bool", "default": False},
        regenerate_authentication_strings={"type": "bool", "default": False},
        authentication_string_length={"type": "int", "default": 8},
        reissue={"type": "bool", "default": False},
        apply_config={"type": "bool", "default": False},
        csv_file={"type": "path"},
        strings_file={"type": "path"},
        run_at={"type": "str"},
        fail_on_unmatched={"type": "bool", "default": False},
        diff_format={"type": "str", "choices": list(v.DIFF_FORMATS), "default": "auto"},
        **query_argument_spec(),
    )
    module = create_module(spec, mutually_exclusive=[("csv_file", "query"), ("csv_file", "set"),
                                                     ("csv_file", "run_at"),
                                                     ("authentication_string", "generate_authentication_strings")],
                           required_one_of=[("query", "csv_file")])
    params = module.params
    with engine(module) as store:
        result = bulk.converge(
            store, query=drop_none(params["query"]), settings=drop_none(params["set"]),
            authentication_string=params["authentication_string"],
            generate_authentication_strings=params["generate_authentication_strings"],
            regenerate_authentication_strings=params["regenerate_authentication_strings"],
            authentication_string_length=params["authentication_string_length"], reissue=params["reissue"],
            apply_config=params["apply_config"], csv_file=params["csv_file"], strings_file=params["strings_file"],
            run_at=params["run_at"], fail_on_unmatched=params["fail_on_unmatched"], check_mode=module.check_mode,
            diff_format=params["diff_format"])
    exit_with(module, result, counts=result["counts"], authentication_strings=result["authentication_strings"],
              strings_file=result.get("strings_file"), job=result["job"], unmatched=result["unmatched"])


if __name__ == "__main__":
    main()
