#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: contributors to opencapf.capf
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: capf_stale_lsc
short_description: Delete stale LSCs, all of them or those of some devices
version_added: 0.1.0
description:
  - A stale LSC was issued for a CSR but never installed, because the phone produced a newer CSR first or
    answered that it did not store it.
    This module deletes them (C(utils capf stale-lsc delete all) in Cisco's CLI), for every phone or for the
    devices listed in O(devices).
  - List them first with M(opencapf.capf.capf_info) (section V(stale_lscs)).
author:
  - opencapf developers (@opencapf)
extends_documentation_fragment:
  - opencapf.capf.capf
  - opencapf.capf.capf.attributes
options:
  state:
    description: Stale LSCs are V(absent) after the run.
    type: str
    choices: [absent]
    default: absent
  devices:
    description: Only the stale LSCs of these device names. Not set means every stale LSC.
    type: list
    elements: str
  fail_on_unmatched:
    description:
      - Names in O(devices) that are not in the store (a typo, or a phone deleted since) are returned in
        RV(unmatched) and warned about; with V(true) the task fails naming them and deletes nothing.
    type: bool
    default: false
"""

EXAMPLES = r"""
- name: Delete every stale LSC
  opencapf.capf.capf_stale_lsc:

- name: Delete the stale LSCs of two phones
  opencapf.capf.capf_stale_lsc:
    devices: [SEP001122334455, SEP00AABBCCDDEE]
"""

RETURN = r"""
deleted:
  description: The stale LSCs deleted (or that would be deleted in check mode).
  returned: always
  type: list
  elements: dict
  sample: [{device_name: SEP001122334455, serial: 5e0f3c2a1b, not_after: "2028-12-06T05:38:24Z"}]
  contains:
    device_name:
      description: The phone the LSC was issued to.
      type: str
    serial:
      description: Serial number of the LSC, hex.
      type: str
    not_after:
      description: End of the LSC's validity, UTC.
      type: str
unmatched:
  description: Names given in O(devices) that no phone in the store has (canonical upper case, sorted).
  returned: always
  type: list
  elements: str
  sample: [SEP00112233445F]
"""

from ansible_collections.opencapf.capf.plugins.module_utils._ansible_args import (
    argument_spec, create_module, engine, exit_with)
from ansible_collections.opencapf.capf.plugins.module_utils._opencapf import reports


def main():
    spec = argument_spec(
        state={"type": "str", "choices": ["absent"], "default": "absent"},
        devices={"type": "list", "elements": "str"},
        fail_on_unmatched={"type": "bool", "default": False},
    )
    module = create_module(spec)
    with engine(module) as store:
        result = reports.delete_stale_lscs(store, device_names=module.params["devices"],
                                           fail_on_unmatched=module.params["fail_on_unmatched"],
                                           check_mode=module.check_mode)
    exit_with(module, result, deleted=result["deleted"], unmatched=result["unmatched"])


if __name__ == "__main__":
    main()
