# -*- coding: utf-8 -*-
# Copyright: contributors to opencapf.capf
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Documentation shared by the opencapf.capf modules."""

from __future__ import annotations


class ModuleDocFragment:

    # The store option, common to every module (see plugins/module_utils/_ansible_args.py).
    DOCUMENTATION = r"""
options:
  store:
    description:
      - Location of the CAPF store on the managed host (an SQLite file path).
      - When not set, C($OPENCAPF_STORE) on the managed host, else C(/var/lib/opencapf/capf.db) when
        running as root, else C(~/.local/share/opencapf/capf.db).
      - The store's key directory and secret file live next to the database file (or in
        C($OPENCAPF_STATE_DIR)); a store reached through a symbolic link uses the ones beside the real file.
      - A store file, store directory or state directory that the group or others may write is refused
        (sticky bit or not), with the path and its mode in the message.
      - Set it once for every module with C(module_defaults) and the C(group/opencapf.capf.capf) action group.
    type: str
requirements:
  - python >= 3.11 on the managed host
  - cryptography
notes:
  - The module runs where the store is, normally the CAPF host.
  - Errors name the option and the rule that was broken, for example
    C(validity_days must be 1–1825 days, got 2000).
"""

    # Attributes of the modules that change the store.
    ATTRIBUTES = r"""
attributes:
  check_mode:
    description:
      - Can run in check_mode and return changed status prediction without modifying the store.
      - In check mode the store is opened read-only and no file is written, beside it either; a store at an
        older schema version is planned against through a migrated temporary copy.
    support: full
  diff_mode:
    description:
      - Returns C(before) and C(after) views of what changed (or would change in check mode);
        M(opencapf.capf.capf_deployment) returns the plan's text, as C(opencapf plan) prints it.
    support: full
  idempotent:
    description: A second run with the same options reports C(changed=false).
    support: full
  platform:
    description: Target OS/families that can be operated against.
    support: full
    platforms: posix
  action_group:
    description: Action is part of action_group(s), for convenient setting of module_defaults.
    support: full
    membership:
      - opencapf.capf.capf
"""

    # Attributes of the read-only modules.
    INFO_ATTRIBUTES = r"""
attributes:
  check_mode:
    description: Read-only; runs the same in check mode.
    support: full
  diff_mode:
    description: Read-only; there is nothing to diff.
    support: N/A
  idempotent:
    description: Never changes the store.
    support: full
  platform:
    description: Target OS/families that can be operated against.
    support: full
    platforms: posix
  action_group:
    description: Action is part of action_group(s), for convenient setting of module_defaults.
    support: full
    membership:
      - opencapf.capf.capf
"""

    # The bulk-administration phone query (capf_bulk_update, capf_info).
    QUERY = r"""
options:
  query:
    description:
      - Which phones to select. Every filter given must hold (AND); a filter with a list matches any of its values.
      - An empty mapping selects every phone.
    type: dict
    suboptions:
      names:
        description: Explicit device names (case-insensitive).
        type: list
        elements: str
      name_pattern:
        description: Device-name pattern with C(*) and C(?) wildcards, case-insensitive, for example C(SEP00AA*).
        type: str
      device_pool:
        description: Device pool names.
        type: list
        elements: str
      model:
        description: Phone models.
        type: list
        elements: str
      security_mode:
        description: Device security modes.
        type: list
        elements: str
        choices: [non_secure, authenticated, encrypted]
      certificate_operation:
        description: The phone's certificate operation.
        type: list
        elements: str
        choices: [none, install_upgrade, delete, troubleshoot]
      operation_status:
        description: Status of the phone's CAPF operation.
        type: list
        elements: str
        choices: [none, pending, in_progress, succeeded, failed, lapsed]
      lsc_status:
        description:
          - Status of the phone's current LSC (the newest LSC that is not stale); V(none) selects phones without one.
          - The status is the one the LSC has when the query runs, V(expired) for an issued or installed LSC whose
            notAfter has passed (it is valid through its notAfter second) until the scheduler revokes it
            (C(revoke_after_expiry)); V(installed) and V(issued) select only LSCs still valid then.
        type: list
        elements: str
        choices: [none, issued, installed, stale, revoked, expired]
      lsc_expires_before:
        description: Phones whose current LSC expires before this ISO 8601 date or UTC time, for example C(2099-01-31).
        type: str
      locked:
        description:
          - V(true) selects only the phones locked out after wrong authentication strings, V(false) only the others.
          - Not set selects both.
        type: bool
"""

    # The CAPF settings of a device, declared per phone (capf_phone) or per device template (capf_device_template).
    PHONE_SETTINGS = r"""
options:
  model:
    description: Phone model, for example C(Cisco 8845) or C(Cisco Unified Client Services Framework).
    type: str
  device_pool:
    description: Device pool name.
    type: str
  security_mode:
    description:
      - Device security mode. A device created without this setting is V(non_secure).
      - An V(authenticated) or V(encrypted) device does not register before it has an LSC and never contacts
        CAPF by itself, so it cannot use O(authentication_mode=auth_string) with an O(certificate_operation) other
        than V(none); the module fails with an error saying so.
    type: str
    choices: [non_secure, authenticated, encrypted]
  certificate_operation:
    description:
      - The CAPF operation the device performs at its next session. A device created without this setting has V(none).
    type: str
    choices: [none, install_upgrade, delete, troubleshoot]
  authentication_mode:
    description:
      - How the device authenticates to CAPF. A device created without this setting uses V(null_string).
      - V(existing_cert_lsc) and V(existing_cert_mic) use an installed certificate (precedence to the LSC
        or to the MIC); the operation fails on a device that has neither.
    type: str
    choices: [auth_string, null_string, existing_cert_lsc, existing_cert_mic]
  key_order:
    description:
      - Key the device generates.
      - A device created without this setting takes the service parameter
        O(opencapf.capf.capf_service#module:key_order), whose default is V(rsa).
    type: str
    choices: [rsa, ec, ec_preferred]
  rsa_key_size:
    description:
      - RSA key size in bits.
      - A device created without this setting takes the service parameter
        O(opencapf.capf.capf_service#module:rsa_key_size), whose default is V(2048).
    type: int
    choices: [1024, 2048, 3072, 4096]
  ec_key_size:
    description:
      - EC key size (curve) in bits.
      - A device created without this setting takes the service parameter
        O(opencapf.capf.capf_service#module:ec_key_size), whose default is V(256).
    type: int
    choices: [256, 384, 521]
"""
