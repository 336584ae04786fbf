#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: contributors to opencapf.capf
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: capf_ldap_sync
short_description: Create phones with their CAPF settings from an LDAP directory, through a device template
version_added: 0.1.0
description:
  - Binds to an LDAP directory (LDAPS, or LDAP with StartTLS; the server's certificate is always verified),
    searches O(search_base) with O(search_filter) in pages of O(page_size), maps each entry to device names
    (O(mapping)) and creates every mapped device with the CAPF settings of the device template
    O(device_template) (M(opencapf.capf.capf_device_template)).
  - The template applies to every device of the directory's first sync, devices that already exist included
    (the initial LDAP synchronisation of the CAPF configuration guide). Later syncs create the devices that are new with the template
    and leave the CAPF settings of existing devices as they are (use M(opencapf.capf.capf_bulk_update) to
    change them), unless O(reapply_template=true).
  - Devices an earlier sync of this directory mapped whose entry is no longer found are absent; O(absent_devices)
    says whether they are reported (with a warning), removed from the store, or let go silently.
  - 'The directory is read completely before the store is touched. An unreachable server, a certificate the CA
    does not verify, a refused bind or a failed search fails the task with one line naming the option, for
    example C(bind_password: ldaps://ldap.example.org:636 refused the bind of cn=capf,dc=example,dc=org: invalid
    credentials (wrong bind_dn or bind_password)), and changes nothing.'
  - Syncs of one directory at the same time (this task, C(opencapf ldap sync), the CAPF service's scheduled sync,
    other hosts of one store) never put an older state of the directory back. A sync whose reading of the
    directory is older than one another sync already applied applies nothing and returns RV(superseded=true),
    with a warning; the task does not fail. The CAPF service's scheduled sync, which syncs the configuration the
    store keeps, likewise applies nothing when a task replaced that configuration after it took it up.
    A superseded sync still keeps the O(bind_password) it was given and bound with (C(changed=true)), unless a
    later sync was given one, or this or the stored configuration has no O(sync_interval_minutes), or the stored
    one binds as another O(bind_dn) or to other O(urls); its warning says which.
  - The configuration is kept in the store under O(name) (never the password, unless O(sync_interval_minutes) is
    set; then the CAPF service syncs the directory on that schedule and keeps the password encrypted in the store).
  - 'Device names: with O(mapping=users) each entry gives C(CSF) + its O(user_attribute) upper-cased (Cisco Jabber
    for Windows and Mac), e.g. C(uid=jsmith) gives C(CSFJSMITH). Every name must be a device name the engine
    accepts: C(SEP) (or C(ATA)/C(AN)/C(BAT)) and 12 hex digits, or a C(CSF)/C(BOT)/C(TCT)/C(TAB)/C(CTI)/C(UPC)/C(EC)
    prefix and 1 to 46 letters, digits, C(.), C(_) or C(-), upper case. Entries that give no valid name, a device
    of another directory, or a device the template cannot take (e.g. a description over 200 characters) are
    returned in RV(skipped_entries) with the field and the reason and a warning; they never fail the sync, and
    the other entries are applied.'
author:
  - opencapf developers (@opencapf)
extends_documentation_fragment:
  - opencapf.capf.capf
  - opencapf.capf.capf.attributes
requirements:
  - ldap3 on the managed host
options:
  name:
    description: Name of the directory configuration (1-64 letters, digits, C(.), C(_), C(-)).
    type: str
    required: true
  urls:
    description:
      - The directory's servers, tried in order until one answers, C(ldaps://HOST[:PORT]) or C(ldap://HOST[:PORT]).
    type: list
    elements: str
    required: true
  start_tls:
    description: Secure C(ldap://) connections with StartTLS before the bind.
    type: bool
    default: true
  allow_plain:
    description: Allow C(ldap://) without StartTLS (O(start_tls=false)), which sends the bind password in clear.
    type: bool
    default: false
  ca_file:
    description: PEM file of the CA certificates that verify the servers' certificates; default the system's.
    type: path
  bind_dn:
    description: DN to bind as; an anonymous bind when not set.
    type: str
  bind_password:
    description:
      - Password of O(bind_dn). Required with O(bind_dn) unless the store keeps it from an earlier scheduled sync.
    type: str
  search_base:
    description: DN the search starts at.
    type: str
    required: true
  search_filter:
    description: LDAP filter of the entries to sync.
    type: str
    default: (objectClass=inetOrgPerson)
  search_scope:
    description: The search scope.
    type: str
    choices: [subtree, one_level, base]
    default: subtree
  page_size:
    description: Entries per page of the paged search (1-10000); keep it at or below the directory's size limit.
    type: int
    default: 500
  timeout_seconds:
    description: Connect and answer timeout for each server, 1-300 seconds.
    type: int
    default: 10
  mapping:
    description:
      - V(users) - one Jabber softphone per entry, C(CSF) + O(user_attribute), upper case.
      - V(attribute) - every value of the multi-valued O(device_attribute) is a device name.
      - V(template) - O(name_template) with the entry's attributes filled in.
    type: str
    choices: [users, attribute, template]
    default: users
  user_attribute:
    description: The attribute holding the user id, with O(mapping=users). Default C(uid).
    type: str
  device_attribute:
    description: The multi-valued attribute holding device names, required with O(mapping=attribute).
    type: str
  name_template:
    description: Device name pattern with C({attribute}) placeholders, e.g. C(BOT{uid}); required with O(mapping=template).
    type: str
  device_template:
    description: Name of the device template whose CAPF settings the synced devices get.
    type: str
    required: true
  absent_devices:
    description:
      - What happens to devices an earlier sync mapped whose entry left the directory.
      - V(report) - returned in RV(devices.absent) with a warning, each sync, until they are removed or come back.
      - V(remove) - deleted from the store (with their certificates).
      - V(keep) - kept, not reported, and no longer counted as the directory's.
    type: str
    choices: [keep, report, remove]
    default: report
  reapply_template:
    description: Apply the template to every mapped device on this sync, not only to devices new to the store.
    type: bool
    default: false
  strings_file:
    description:
      - Write the authentication strings the template generates for new devices to this CSV file (mode 0600),
        replacing it. The strings are also returned once in RV(authentication_strings); they can never be read back.
    type: path
  sync_interval_minutes:
    description:
      - Sync this directory from the CAPF service every so many minutes (1-10080), the password kept encrypted in
        the store. Unset, the service does not sync it and the store keeps no password.
      - The service's scheduler looks for due syncs every C(scheduler_interval_seconds); one process of all those
        serving the store runs them.
    type: int
"""

EXAMPLES = r"""
- name: Jabber softphones (CSF + uid) of every person in the directory, with the softphone template
  opencapf.capf.capf_ldap_sync:
    name: corp
    urls: [ldaps://ldap.example.org]
    ca_file: /etc/ssl/certs/example-root.pem
    bind_dn: uid=capf-sync,ou=services,dc=example,dc=org
    bind_password: "{{ vault_ldap_password }}"
    search_base: ou=people,dc=example,dc=org
    device_template: jabber
    strings_file: /srv/capf/jabber-strings.csv
  register: synced

- name: Desk phones listed in a multi-valued attribute, StartTLS, re-synced hourly by the service
  opencapf.capf.capf_ldap_sync:
    name: desk-phones
    urls: [ldap://ldap1.example.org, ldap://ldap2.example.org]
    ca_file: /etc/ssl/certs/example-root.pem
    bind_dn: uid=capf-sync,ou=services,dc=example,dc=org
    bind_password: "{{ vault_ldap_password }}"
    search_base: dc=example,dc=org
    search_filter: (objectClass=opencapfDevices)
    mapping: attribute
    device_attribute: opencapfDeviceName
    device_template: desk
    absent_devices: remove
    sync_interval_minutes: 60
"""

RETURN = r"""
devices:
  description: Device names by what the sync did (or would do in check mode).
  returned: always
  type: dict
  contains:
    created:
      description: Devices created with the template.
      type: list
      elements: str
    changed:
      description: Existing devices whose settings the template changed (first sync, or O(reapply_template)).
      type: list
      elements: str
    absent:
      description: Devices an earlier sync mapped whose entry left the directory (empty with O(absent_devices=keep)).
      type: list
      elements: str
    removed:
      description: Absent devices deleted from the store (O(absent_devices=remove)).
      type: list
      elements: str
  sample: {created: [CSFJSMITH], changed: [], absent: [CSFOLDUSER], removed: []}
directory:
  description: The sync.
  returned: always
  type: dict
  contains:
    name:
      description: The directory configuration's name.
      type: str
    first_sync:
      description: Whether this was the directory's first sync (the template applied to every mapped device).
      type: bool
    entries:
      description: Entries the search returned.
      type: int
    mapped:
      description: Devices the entries map to.
      type: int
  sample: {name: corp, first_sync: false, entries: 1200, mapped: 1198}
skipped_entries:
  description:
    - Entries that map to no valid device name, to a device of another directory, or to a device the
      template cannot take, each with its DN, the value, the field and the reason. Every other entry is applied.
    - Not C(skipped), which Ansible reads as the task's own status.
  returned: always
  type: list
  elements: dict
  contains:
    dn:
      description: The entry.
      type: str
    value:
      description: The name it gave, or null when it lacks the attribute.
      type: str
    field:
      description: The attribute (or C(name_template)) that gave no usable name, or the template option that broke a rule.
      type: str
    reason:
      description: Why it was skipped.
      type: str
  sample: [{dn: "uid=j doe,ou=people,dc=example,dc=org", value: CSFj doe, field: uid,
            reason: "must be SEP (or ATA/AN/BAT) followed by 12 hex digits, ..."}]
authentication_strings:
  description: Strings the template generated for new devices, returned once; empty in check mode.
  returned: always
  type: list
  elements: dict
  contains:
    device_name:
      description: The device.
      type: str
    authentication_string:
      description: Its new authentication string.
      type: str
  sample: [{device_name: CSFJSMITH, authentication_string: "40718265"}]
strings_file:
  description: The file the generated strings were written to, or null.
  returned: always
  type: str
superseded:
  description:
    - Whether a sync of the same directory that read it later applied first, so that this sync applied nothing
      (its older reading would have put the directory's older state back). RV(devices) are then empty and
      C(changed) is false, unless the bind password given to this sync was stored. Always false in check mode.
  returned: always
  type: bool
  sample: false
"""

from ansible_collections.opencapf.capf.plugins.module_utils._ansible_args import (
    argument_spec, create_module, engine, exit_with)
from ansible_collections.opencapf.capf.plugins.module_utils._opencapf import directory

CONFIG_OPTIONS = ("name", "urls", "start_tls", "allow_plain", "ca_file", "bind_dn", "search_base", "search_filter",
                  "search_scope", "page_size", "timeout_seconds", "mapping", "user_attribute", "device_attribute",
                  "name_template", "device_template", "absent_devices", "reapply_template", "strings_file",
                  "sync_interval_minutes")


def main():
    spec = argument_spec(
        name={"type": "str", "required": True},
        urls={"type": "list", "elements": "str", "required": True},
        start_tls={"type": "bool", "default": True},
        allow_plain={"type": "bool", "default": False},
        ca_file={"type": "path"},
        bind_dn={"type": "str"},
        bind_password={"type": "str", "no_log": True},
        search_base={"type": "str", "required": True},
        search_filter={"type": "str", "default": directory.DEFAULT_FILTER},
        search_scope={"type": "str", "choices": list(directory.SEARCH_SCOPES), "default": "subtree"},
        page_size={"type": "int", "default": 500},
        timeout_seconds={"type": "int", "default": 10},
        mapping={"type": "str", "choices": list(directory.MAPPINGS), "default": "users"},
        user_attribute={"type": "str"},
        device_attribute={"type": "str"},
        name_template={"type": "str"},
        device_template={"type": "str", "required": True},
        absent_devices={"type": "str", "choices": list(directory.ABSENT_DEVICES), "default": "report"},
        reapply_template={"type": "bool", "default": False},
        strings_file={"type": "path"},
        sync_interval_minutes={"type": "int"},
    )
    module = create_module(spec, required_if=[("mapping", "attribute", ("device_attribute",)),
                                              ("mapping", "template", ("name_template",))])
    params = module.params
    with engine(module) as store:
        result = directory.sync(store, {option: params[option] for option in CONFIG_OPTIONS},
                                bind_password=params["bind_password"], check_mode=module.check_mode)
    exit_with(module, result, devices=result["devices"], directory=result["directory"],
              skipped_entries=result["skipped"],
              authentication_strings=result["authentication_strings"], strings_file=result["strings_file"],
              superseded=result["superseded"])


if __name__ == "__main__":
    main()
