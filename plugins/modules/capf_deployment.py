#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: contributors to opencapf.capf
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: capf_deployment
short_description: Converge the CAPF store to a declarative file, all or nothing
version_added: 0.1.0
description:
  - Applies a declarative CAPF file (the one C(opencapf plan|apply) reads, schema from C(opencapf schema)) to the
    store, as C(opencapf apply) does; in check mode it is planned, as C(opencapf plan) does.
  - Its sections (trust, service, templates, phones, bulk) are converged in that order through the same engine
    functions as M(opencapf.capf.capf_trust_cert), M(opencapf.capf.capf_service), M(opencapf.capf.capf_device_template),
    M(opencapf.capf.capf_phone) and M(opencapf.capf.capf_bulk_update), in one atomic change of the store. When any
    part fails, for a reason in the file or one only the store reveals while applying (a bulk query naming a phone
    the store does not have, a setting a phone contradicts by then), the task fails with the error naming its path
    in the file (for example C(bulk[1].query.names ...)) and nothing of the file is written.
  - The change holds the store's write lock until it commits; the CAPF service's writes wait for it (a session at
    most its step timeout, then it ends failed with nothing written; the service serves on meanwhile); apply large
    files in a maintenance window.
  - Check mode is the apply itself, rehearsed and rolled back, so a section sees what the sections before it do (the
    phones a template creates, the phones a bulk query then matches); nothing is written, beside the store either.
  - Unlike the per-section tasks of C(playbooks/apply_deployment.yml), one task is one change of the store.
author:
  - opencapf developers (@opencapf)
extends_documentation_fragment:
  - opencapf.capf.capf
  - opencapf.capf.capf.attributes
options:
  src:
    description:
      - Path of the declarative YAML file on the managed host. Relative paths inside it (certificate and key files,
        a bulk item's C(strings_file)) are relative to the file's directory.
      - An invalid file fails the task listing every problem, each with its path in the file and its rule.
    type: path
    required: true
  strict_ca_rules:
    description:
      - Refuse CA certificates that deviate from the CA rules without harm; by default they are accepted with a
        warning naming the rule. As C(strict_ca_rules=true) on every trust item of the file.
    type: bool
    default: false
  fail_on_unmatched:
    description:
      - Fail when a bulk query names devices that are not in the store; by default they are ignored with a warning.
        As C(fail_on_unmatched=true) on every bulk item of the file.
    type: bool
    default: false
  strings_file:
    description:
      - Write every authentication string the file generates (its phones, templates and bulk items) to this CSV
        file (C(device_name,authentication_string), mode 0600) instead of returning them in
        RV(authentication_strings).
      - It is written inside the same change of the store and put in place once it commits; a file that cannot be
        written fails the task and nothing of the file is applied. The store keeps only a keyed hash of each string.
      - Not written in check mode.
    type: path
"""

EXAMPLES = r"""
- name: Put the deployment file on the CAPF host
  ansible.builtin.copy:
    dest: /etc/opencapf/deploy.yml
    mode: "0600"
    content: |
      opencapf: 1
      service:
        parameters:
          validity_days: 730
      phones:
        - name: SEP001122334455
          device_pool: Lobby
          certificate_operation: install_upgrade
          authentication_mode: auth_string
          generate_authentication_string: true

- name: Converge the CAPF store to it, all or nothing
  opencapf.capf.capf_deployment:
    src: /etc/opencapf/deploy.yml
    strings_file: /srv/capf/deployment-strings.csv
  register: deployed

- name: Show what changed
  ansible.builtin.debug:
    msg: "{{ deployed.changes | map(attribute='item') | list }}"
"""

RETURN = r"""
changes:
  description: What was changed (or would be in check mode), one item per declared item that changed, in the order
    the sections run. Empty when the store already matches the file.
  returned: always
  type: list
  elements: dict
  sample: [{section: phones, item: SEP001122334455, action: create, details: ["device_pool: 'Lobby'"]}]
  contains:
    section:
      description: V(trust), V(service), V(templates), V(phones) or V(bulk).
      type: str
    item:
      description: The item, for example a device name, a template name or a bulk item's name.
      type: str
    action:
      description: V(create), V(update), V(delete) or V(run).
      type: str
    details:
      description: The fields that change, as C(field before -> after) or C(field value) lines.
      type: list
      elements: str
counts:
  description: Counts per section (keyed by section name, then by what was counted, such as C(created)).
  returned: always
  type: dict
  sample: {phones: {created: 1, updated: 0, deleted: 0, unchanged: 0}}
authentication_strings:
  description:
    - The authentication strings the file generated, returned once and never again (the store keeps only a keyed
      hash). Empty in check mode and when O(strings_file) took them.
  returned: always
  type: list
  elements: dict
  sample: [{device_name: SEP001122334455, authentication_string: "48213957"}]
  contains:
    device_name:
      description: The phone.
      type: str
    authentication_string:
      description: Its new authentication string.
      type: str
strings_file:
  description: O(strings_file) when the generated strings were written there, else null.
  returned: always
  type: str
  sample: /srv/capf/deployment-strings.csv
"""

from ansible_collections.opencapf.capf.plugins.module_utils._ansible_args import (
    argument_spec, create_module, engine, exit_with)
from ansible_collections.opencapf.capf.plugins.module_utils._opencapf.declarative import deployment


def main():
    spec = argument_spec(
        src={"type": "path", "required": True},
        strict_ca_rules={"type": "bool", "default": False},
        fail_on_unmatched={"type": "bool", "default": False},
        strings_file={"type": "path"},
    )
    module = create_module(spec)
    params = module.params
    options = deployment.Options(strict_ca_rules=params["strict_ca_rules"],
                                 fail_on_unmatched=params["fail_on_unmatched"])
    with engine(module) as store:
        result = deployment.converge(store, params["src"], options, check_mode=module.check_mode,
                                     strings_file=params["strings_file"])
    exit_with(module, result, changes=result["changes"], counts=result["counts"],
              authentication_strings=result["authentication_strings"], strings_file=result["strings_file"])


if __name__ == "__main__":
    main()
