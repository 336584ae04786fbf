#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: contributors to opencapf.capf
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: capf_phone
short_description: Declare one phone and its CAPF certificate operation
version_added: 0.1.0
description:
  - Creates, updates or removes one phone in the CAPF store with its CAPF settings, the
    per-phone way of the CAPF configuration guide.
  - Setting O(certificate_operation) to something other than V(none) schedules that operation; the
    phone performs it at its next CAPF session. Declaring the same operation again changes nothing, whatever
    its status. A V(failed) or V(lapsed) operation is armed again by a new O(operation_completes_by), by
    O(operation_completes_by=none) (the deadline it lapsed by no longer holds), or by O(reissue=true).
    The status is the one every view reports (RV(status.operation_status)), also before the scheduler recorded
    it. An operation left in progress by a session no process serves any more is V(failed), or V(lapsed) once its
    deadline passed, and a pending one past its deadline is V(lapsed). The diff's C(before) shows that status,
    and the change records it, with the CSRs the scheduler would fail. An operation armed again with its deadline
    passed would lapse at once, so it is left as it is. An operation in progress in a session that may still be
    live is not armed again by a new deadline.
  - With a third-party CA (issuer V(online_ca) or V(offline_ca)), a change that withdraws the operation a CSR still
    at the CA was made for (another O(certificate_operation), a finished one armed again by O(reissue=true),
    O(state=absent), or key settings that no longer ask for the CSR's key) fails that CSR; the CA's answer for it is
    recorded stale and never delivered.
  - Authentication strings are stored only as keyed hashes. A generated string is returned once, in
    RV(authentication_string), and can never be read back.
  - Returns the phone's CAPF status (operation status, current LSC serial and expiry, last session).
author:
  - opencapf developers (@opencapf)
extends_documentation_fragment:
  - opencapf.capf.capf
  - opencapf.capf.capf.attributes
  - opencapf.capf.capf.phone_settings
options:
  name:
    description:
      - Device name, V(SEP) (or V(ATA), V(AN), V(BAT)) and 12 hex digits, or a softphone name with a
        V(CSF), V(BOT), V(TCT), V(TAB), V(CTI), V(UPC) or V(EC) prefix. Case-insensitive; stored upper case.
    type: str
    required: true
    aliases: [device_name]
  state:
    description:
      - Whether the phone exists in the store. V(absent) also removes its certificates and CSRs; its LSCs that are
        still valid are revoked first (reason V(cessation_of_operation)), and every revoked LSC of it stays on the
        CAPF CRL until a CRL issued after its notAfter has listed it (RFC 5280 section 3.3).
    type: str
    choices: [present, absent]
    default: present
  description:
    description: Free text, at most 200 characters.
    type: str
  authentication_string:
    description:
      - The 4–10 digit string the phone user enters, for O(authentication_mode=auth_string).
      - Compared with the stored keyed hash, so a second run with the same string reports no change.
      - Mutually exclusive with O(generate_authentication_string).
    type: str
  generate_authentication_string:
    description:
      - Generate a random string when the phone has none, when O(certificate_operation) changes, or when
        O(regenerate_authentication_string=true). It is returned once in RV(authentication_string).
    type: bool
    default: false
  regenerate_authentication_string:
    description: Generate a new string on every run (implies O(generate_authentication_string)).
    type: bool
    default: false
  authentication_string_length:
    description: Number of digits of a generated string, 4–10.
    type: int
    default: 8
  operation_completes_by:
    description:
      - Deadline of the pending operation, an ISO 8601 date or time (UTC unless an offset is given),
        for example C(2099-12-31T18:00:00Z). After it the operation lapses.
      - Times are kept to the second; a fraction of a second (C(2099-12-31T18:00:00.5Z)) fails the task with a
        message that starts with C(operation_completes_by must be a whole second), never cut to the second.
      - V(none) clears the deadline, so the operation waits for the phone without one (as
        O(certificate_operation=none) says no operation). A V(failed) or V(lapsed) operation whose deadline is
        cleared is V(pending) again, as with a new deadline; a pending one stays pending. Clearing the deadline
        of a phone that has none changes nothing. Check mode and diff mode show the old deadline before and
        V(null) after, and write nothing. The audit event C(phone.update) shows C(operation_completes_by) as
        V(null), like any other changed setting.
      - Leave the option out to keep the phone's deadline; an empty value is refused with a message that starts
        with C(operation_completes_by must be an ISO 8601 date or time), as by every path that changes a phone
        (M(opencapf.capf.capf_bulk_update), the declarative file, device templates). V(none) is the one word
        (lower case); a device template refuses it (see M(opencapf.capf.capf_device_template)).
    type: str
  reissue:
    description:
      - Arm the declared O(certificate_operation) again when it has finished (succeeded, failed or lapsed), for
        example to renew an LSC. A pending operation stays as it is, so the run after it reports no change
        until the phone has completed it.
    type: bool
    default: false
  revoke:
    description:
      - Revoke the phone's LSC with an RFC 5280 reason, in the store (CAPF no longer accepts it for authentication)
        and on the CAPF CRL (see docs/lifecycle.md). Without O(revoke.serial), every LSC the phone holds or was
        issued (status V(installed) or V(issued)) is revoked.
      - Idempotent - an LSC revoked already stays as it was. Without O(revoke.serial), a later run revokes an LSC
        installed since, too; name O(revoke.serial) or remove the option once it has been applied.
      - To give the phone a new LSC afterwards, set O(certificate_operation=install_upgrade) with an
        O(authentication_mode) other than V(existing_cert_lsc) (a revoked LSC no longer authenticates).
    type: dict
    suboptions:
      reason:
        description:
          - The RFC 5280 reason code, spelled in snake case (V(key_compromise) is keyCompromise).
          - V(unspecified) leaves the reason out of the CRL entry, as RFC 5280 asks.
        type: str
        required: true
        choices: [unspecified, key_compromise, affiliation_changed, superseded, cessation_of_operation,
                  privilege_withdrawn]
      serial:
        description: Serial number (hexadecimal) of the one LSC of this phone to revoke.
        type: str
"""

EXAMPLES = r"""
- name: Install an LSC on a phone that authenticates with a generated string
  opencapf.capf.capf_phone:
    name: SEP001122334455
    description: Reception
    device_pool: Default
    certificate_operation: install_upgrade
    authentication_mode: auth_string
    generate_authentication_string: true
    key_order: ec_preferred
    operation_completes_by: "{{ '%Y-%m-%dT18:00:00Z' | strftime(now(utc=true).timestamp() + 14 * 86400, utc=true) }}"
  register: phone

- name: Show the generated string once, to give it to the phone user
  ansible.builtin.debug:
    msg: "Enter {{ phone.authentication_string }} on the phone"
  when: phone.authentication_string is defined

- name: Let the phone's operation wait without a deadline (one set by mistake, or one that lapsed)
  opencapf.capf.capf_phone:
    name: SEP001122334455
    operation_completes_by: none

- name: A secure phone gets its LSC with its MIC
  opencapf.capf.capf_phone:
    name: SEP00AABBCCDDEE
    security_mode: encrypted
    certificate_operation: install_upgrade
    authentication_mode: existing_cert_mic

- name: Revoke the LSC of a stolen phone
  opencapf.capf.capf_phone:
    name: SEP001122334455
    revoke:
      reason: key_compromise

- name: Remove a phone from the store
  opencapf.capf.capf_phone:
    name: SEP001122334455
    state: absent
"""

RETURN = r"""
name:
  description: The canonical device name.
  returned: always
  type: str
  sample: SEP001122334455
phone:
  description: The phone's settings after the run (the authentication string only as set/unset).
  returned: when O(state=present)
  type: dict
  sample:
    name: SEP001122334455
    description: Reception
    model: CP-8865
    device_pool: Default
    security_mode: non_secure
    certificate_operation: install_upgrade
    authentication_mode: auth_string
    key_order: ec_preferred
    rsa_key_size: 2048
    ec_key_size: 256
    operation_completes_by: null
    operation_status: pending
    authentication_string: (set)
  contains:
    name:
      description: The canonical device name.
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
      description: The certificate operation.
      type: str
    authentication_mode:
      description: How the phone authenticates to CAPF.
      type: str
    key_order:
      description: Key the phone generates.
      type: str
    rsa_key_size:
      description: RSA key size in bits.
      type: int
    ec_key_size:
      description: EC key size (curve) in bits.
      type: int
    operation_completes_by:
      description: The operation deadline, UTC, or null.
      type: str
    operation_status:
      description: V(none), V(pending), V(in_progress), V(succeeded), V(failed) or V(lapsed).
      type: str
    authentication_string:
      description: V((set)), V((unset)), V((new)) or V((changed)); never the string.
      type: str
status:
  description: The phone's CAPF status; null in check mode for a phone that does not exist yet.
  returned: when O(state=present)
  type: dict
  sample:
    operation: install_upgrade
    operation_status: succeeded
    operation_reason: ""
    operation_completes_by: null
    locked: false
    authentication_failures: 0
    lsc: {serial: 5e0f3c2a1b, status: installed, not_after: "2031-12-05T05:38:24Z", issued_at: "2026-12-06T05:38:24Z",
          installed_at: "2026-12-06T05:38:25Z"}
    last_session: {outcome: succeeded, reason: "", operation: install_upgrade, peer: "192.0.2.10:51234",
                   started_at: "2026-12-06T05:38:24Z"}
  contains:
    operation:
      description: The pending or last certificate operation.
      type: str
      returned: always
    operation_status:
      description:
        - V(none), V(pending), V(in_progress), V(succeeded), V(failed) or V(lapsed), as at the time of the call,
          whether or not the scheduler has run since.
        - V(lapsed) once the deadline has passed (the phone's next session refuses the operation); V(failed) once the
          session that left the operation V(in_progress) has surely ended without a result (its service died).
      type: str
      returned: always
    operation_reason:
      description: Why the last operation failed or lapsed.
      type: str
      returned: always
    operation_completes_by:
      description: The operation deadline (UTC) or null.
      type: str
      returned: always
    locked:
      description: Whether the phone is locked out after repeated wrong authentication strings.
      type: bool
      returned: always
    authentication_failures:
      description: Wrong authentication strings since the last success.
      type: int
      returned: always
    lsc:
      description: The current LSC (the newest that is not stale), or null.
      type: dict
      returned: always
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
    last_session:
      description: The last CAPF session of the phone, or null.
      type: dict
      returned: always
      contains:
        outcome:
          description: How the session ended.
          type: str
        reason:
          description: Why, in words.
          type: str
        operation:
          description: The operation the session ran.
          type: str
        peer:
          description: The phone's address and port.
          type: str
        started_at:
          description: When it started, UTC.
          type: str
revoked:
  description: Serials of the LSCs this run revoked (would revoke, in check mode); empty when nothing changed.
    With O(state=absent), the LSCs the removal revokes.
  returned: when O(revoke) is set or O(state=absent)
  type: list
  elements: str
  sample: [3f2a9c0d41e5b7]
authentication_string:
  description: The generated authentication string, returned only by the run that generated it. In check mode
    C((to be generated)) when the real run would generate one.
  returned: when a string was generated
  type: str
  sample: "48213907"
"""

from ansible_collections.opencapf.capf.plugins.module_utils._ansible_args import (
    argument_spec, create_module, engine, exit_with, phone_settings_argument_spec)
from ansible_collections.opencapf.capf.plugins.module_utils._opencapf import phone_config
from ansible_collections.opencapf.capf.plugins.module_utils._opencapf import vocabulary as v

SETTINGS = tuple(phone_config.OPTION_COLUMNS)


def main():
    spec = argument_spec(
        name={"type": "str", "required": True, "aliases": ["device_name"]},
        state={"type": "str", "choices": ["present", "absent"], "default": "present"},
        description={"type": "str"},
        **phone_settings_argument_spec(),
        authentication_string={"type": "str", "no_log": True},
        generate_authentication_string={"type": "bool", "default": False},
        regenerate_authentication_string={"type": "bool", "default": False},
        authentication_string_length={"type": "int", "default": 8},
        operation_completes_by={"type": "str"},
        reissue={"type": "bool", "default": False},
        revoke={"type": "dict", "options": {
            "reason": {"type": "str", "required": True, "choices": list(v.REVOCATION_REASONS)},
            "serial": {"type": "str"},
        }},
    )
    module = create_module(spec, mutually_exclusive=[("authentication_string", "generate_authentication_string"),
                                                     ("authentication_string", "regenerate_authentication_string")])
    params = module.params
    auth = phone_config.AuthRequest(
        literal=params["authentication_string"],
        generate=params["generate_authentication_string"] or params["regenerate_authentication_string"],
        regenerate=params["regenerate_authentication_string"],
        length=params["authentication_string_length"],
    )
    with engine(module) as store:
        result = phone_config.converge(
            store, params["name"], state=params["state"], settings={key: params[key] for key in SETTINGS},
            auth=auth, reissue=params["reissue"], revoke=params["revoke"], check_mode=module.check_mode)
    extras = {"name": result["name"]}
    if params["state"] == "present":
        extras.update(phone={key: value for key, value in result["after"].items() if key != "lscs"},
                      status=result["status"])
    if "revoked" in result:
        extras["revoked"] = result.pop("revoked")
    if "authentication_string" in result:
        extras["authentication_string"] = result["authentication_string"]
    exit_with(module, result, **extras)


if __name__ == "__main__":
    main()
