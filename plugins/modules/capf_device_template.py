#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: contributors to opencapf.capf
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: capf_device_template
short_description: Declare a device template, a named set of CAPF settings that new devices get
version_added: 0.1.0
description:
  - Creates, replaces or removes one device template in the CAPF store, the universal device template of the CAPF
    configuration guide. A template is exactly the settings given here; an option left out is unset in the template.
  - A template changes no device by itself. Devices get its settings when it is applied to them, by an LDAP directory
    sync that names it, by C(opencapf template apply NAME DEVICE...), or by the C(templates) section of a declarative
    file. An application creates the devices that do not exist yet with the template's settings and by default leaves
    the CAPF settings of existing devices as they are (bulk administration, M(opencapf.capf.capf_bulk_update), changes
    those); it can re-apply the template to them when asked.
  - Settings a template leaves unset are those of a new phone when a device is created (operation V(none),
    V(null_string), V(non_secure), the service's default key order and sizes), and stay as they are on re-application.
  - O(description) is a pattern. Its placeholders are C({device_name}) (the canonical device name), C({template}) (the
    template's name) and every variable the application gives for the device (a directory sync, the variables its
    mapping documents; C(opencapf template apply), those of C(--var NAME=VALUE)). Write C({{) and C(}}) for literal
    braces. A placeholder that has no value
    for a device fails the application naming the device, and nothing is written.
  - Removing a template changes no device that got it.
author:
  - opencapf developers (@opencapf)
extends_documentation_fragment:
  - opencapf.capf.capf
  - opencapf.capf.capf.attributes
  - opencapf.capf.capf.phone_settings
options:
  name:
    description:
      - The template's name, 1–64 letters, digits, spaces, C(.), C(_) or C(-), starting with a letter or digit.
        Case-sensitive.
    type: str
    required: true
  state:
    description: Whether the template exists.
    type: str
    choices: [present, absent]
    default: present
  description:
    description:
      - Description pattern of the devices, at most 200 characters, for example C(Softphone of {user}). See the
        placeholders above. Unset, created devices have an empty description.
    type: str
  authentication_string:
    description:
      - One 4–10 digit string shared by every device, for O(authentication_mode=auth_string).
      - Kept encrypted in the store, never returned; a second run with the same string reports no change.
      - Mutually exclusive with O(generate_authentication_string).
    type: str
  generate_authentication_string:
    description:
      - A unique random string per device, generated when the template is applied to it (and, on re-application,
        when its operation or authentication mode changes). Generated strings are handed out once by the application
        (returned, or written to a 0600 CSV file).
    type: bool
    default: false
  authentication_string_length:
    description:
      - Digits of generated strings, 4–10. Only with O(generate_authentication_string=true); the effective default
        is then 8.
    type: int
  operation_completes_in_days:
    description:
      - Deadline of the operation, 1–3650 days from the application that creates a device (or changes its operation
        on re-application); after it the operation lapses. Unset, no deadline.
      - Mutually exclusive with O(operation_completes_by).
    type: int
  operation_completes_by:
    description:
      - A fixed deadline for every device, an ISO 8601 date or time (UTC unless an offset is given).
      - Kept to the second; a fraction of a second fails the task with a message that starts with
        C(operation_completes_by must be a whole second).
      - Unset, no deadline; V(none), which clears a phone's deadline in M(opencapf.capf.capf_phone) and
        M(opencapf.capf.capf_bulk_update), is refused here with a message that starts with
        C(operation_completes_by must be an ISO 8601 date or time) and says a template cannot say V(none) - a
        template holds the settings devices get, and a device gets no deadline from a template that leaves the
        option out.
      - Mutually exclusive with O(operation_completes_in_days).
    type: str
seealso:
  - module: opencapf.capf.capf_bulk_update
  - module: opencapf.capf.capf_phone
"""

EXAMPLES = r"""
- name: Jabber softphones get an LSC with a generated string each, within two weeks
  opencapf.capf.capf_device_template:
    name: Jabber softphones
    description: "Softphone of {user}"
    model: Cisco Unified Client Services Framework
    device_pool: Softphones
    certificate_operation: install_upgrade
    authentication_mode: auth_string
    generate_authentication_string: true
    key_order: ec_preferred
    operation_completes_in_days: 14
  register: template

- name: Show what devices will get
  ansible.builtin.debug:
    var: template.template

- name: Desk phones authenticate with their MIC and get EC keys
  opencapf.capf.capf_device_template:
    name: Desk phones
    description: "Desk phone {device_name}"
    security_mode: encrypted
    certificate_operation: install_upgrade
    authentication_mode: existing_cert_mic
    key_order: ec
    ec_key_size: 384

- name: A template that is no longer used
  opencapf.capf.capf_device_template:
    name: Old lab
    state: absent
"""

RETURN = r"""
name:
  description: The template's name.
  returned: always
  type: str
  sample: Jabber softphones
template:
  description:
    - The template after the run, by option name; options the template leaves unset are absent. Null when
      O(state=absent).
  returned: always
  type: dict
  sample:
    name: Jabber softphones
    description: "Softphone of {user}"
    certificate_operation: install_upgrade
    authentication_mode: auth_string
    generate_authentication_string: true
    authentication_string_length: 8
    operation_completes_in_days: 14
  contains:
    name:
      description: The template's name.
      type: str
      returned: always
    description:
      description: The description pattern.
      type: str
      returned: when set
    model:
      description: The phone model.
      type: str
      returned: when set
    device_pool:
      description: The device pool.
      type: str
      returned: when set
    security_mode:
      description: The device security mode.
      type: str
      returned: when set
    certificate_operation:
      description: The CAPF operation.
      type: str
      returned: when set
    authentication_mode:
      description: The authentication mode.
      type: str
      returned: when set
    authentication_string:
      description: V((set)) when a shared string is kept (V((new)) or V((changed)) by the run that set it); never the string.
      type: str
      returned: when a shared string is set
    generate_authentication_string:
      description: V(true) when each device gets a generated string.
      type: bool
      returned: when set
    authentication_string_length:
      description: Digits of generated strings.
      type: int
      returned: when strings are generated
    key_order:
      description: The key order.
      type: str
      returned: when set
    rsa_key_size:
      description: The RSA key size.
      type: int
      returned: when set
    ec_key_size:
      description: The EC key size.
      type: int
      returned: when set
    operation_completes_in_days:
      description: The relative deadline in days.
      type: int
      returned: when set
    operation_completes_by:
      description: The fixed deadline (UTC).
      type: str
      returned: when set
"""

from ansible_collections.opencapf.capf.plugins.module_utils._ansible_args import (
    argument_spec, create_module, engine, exit_with, phone_settings_argument_spec)
from ansible_collections.opencapf.capf.plugins.module_utils._opencapf import templates


def main():
    spec = argument_spec(
        name={"type": "str", "required": True},
        state={"type": "str", "choices": ["present", "absent"], "default": "present"},
        description={"type": "str"},
        **phone_settings_argument_spec(),
        authentication_string={"type": "str", "no_log": True},
        generate_authentication_string={"type": "bool", "default": False},
        authentication_string_length={"type": "int"},
        operation_completes_in_days={"type": "int"},
        operation_completes_by={"type": "str"},
    )
    module = create_module(spec, mutually_exclusive=[("authentication_string", "generate_authentication_string"),
                                                     ("operation_completes_in_days", "operation_completes_by")])
    params = module.params
    with engine(module) as store:
        if params["state"] == "absent":
            result = templates.remove(store, params["name"], check_mode=module.check_mode)
        else:
            result = templates.define(store, params["name"], {option: params[option] for option in templates.OPTIONS},
                                      check_mode=module.check_mode)
    exit_with(module, result, name=result["name"], template=result["template"])


if __name__ == "__main__":
    main()
