#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: contributors to opencapf.capf
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: capf_trust_cert
short_description: Certificates and chains present or absent in the CAPF trust stores
version_added: 0.1.0
description:
  - Makes certificates present in, or absent from, C(capf-trust) and C(callmanager-trust). A certificate is
    identified by its SHA-256 fingerprint, so a second run with the same PEM changes nothing.
  - Uploads follow the CA rules of the CAPF configuration guide, each with an id. Always enforced
    (the upload fails naming the option, the certificate and the rule) are C(capf-reserved-cn) (common names
    containing C(CAPF-) are reserved for the CAPF certificate), C(ca-basic-constraints) (a CA certificate
    carries CA:TRUE), C(ca-key-cert-sign) (its KeyUsage, when present, allows keyCertSign) and
    C(ca-path-length-chain) (a pathlen allows the intermediate CAs uploaded below it).
  - Harmless deviations are accepted with a warning naming the option path, the certificate and the rule, also
    returned in RV(rule_warnings) and recorded with the audit event. They are C(ca-path-length) (the guide asks for
    pathlen 0, or the number of intermediate CAs uploaded below a root; real-world roots often have none) and
    C(ca-digital-signature) (KeyUsage present with digitalSignature and keyCertSign). O(strict_ca_rules=true)
    refuses them instead.
  - A two-tier PKI (a root without pathlen above an issuing CA with pathlen 0) uploads as a chain in O(content) or
    O(path), or as O(ca_root) with O(intermediates).
  - With O(ca_root) and optionally O(https_certificate), Table 1 of the guide decides what is uploaded and
    where. The CA root goes to C(capf-trust) and C(callmanager-trust). The HTTPS certificate goes to
    C(capf-trust) only when it cannot be verified from the root (and the intermediates given).
  - O(remove_legacy_mic_roots=true) removes the four legacy Cisco manufacturing roots (C(CAP-RTP-001),
    C(CAP-RTP-002), C(Cisco_Manufacturing_CA), C(Cisco_Root_CA_2048)) by name, as recommended for older
    phone series that use LSCs.
author:
  - opencapf developers (@opencapf)
extends_documentation_fragment:
  - opencapf.capf.capf
  - opencapf.capf.capf.attributes
options:
  state:
    description: Whether the certificates are in the trust stores.
    type: str
    choices: [present, absent]
    default: present
  trust_store:
    description:
      - Trust stores for O(content) or O(path). Required with them.
      - With O(remove_legacy_mic_roots), the stores to clean (default C(callmanager-trust)).
    type: list
    elements: str
    choices: [capf-trust, callmanager-trust]
  content:
    description: PEM of one certificate or a chain (every certificate in it is handled); at most 1 MiB and 50 certificates.
    type: str
  path:
    description:
      - File on the managed host holding PEM (one certificate or a chain) or one DER certificate; at most 1 MiB and
        50 certificates.
      - 'A missing, unreadable or oversized file, or one holding no certificate, fails with a message that starts with
        C(path), for example C(path: cannot read certificate file /x: No such file or directory).'
    type: path
  description:
    description: Description stored with the certificates; changing it is a change.
    type: str
  ca_root:
    description: PEM of a third-party CA root; Table 1 decides the uploads together with O(https_certificate).
    type: str
  https_certificate:
    description: PEM of the CA's HTTPS server certificate. Needs O(ca_root).
    type: str
  intermediates:
    description: PEM of intermediate CAs between O(ca_root) and O(https_certificate) (Table 1, third row).
    type: list
    elements: str
  fingerprints:
    description:
      - With O(state=absent), remove the certificates with these SHA-256 fingerprints (64 hex digits, colons
        allowed) from O(trust_store), default both trust stores.
    type: list
    elements: str
  remove_legacy_mic_roots:
    description: Remove the four legacy Cisco manufacturing roots by common name.
    type: bool
    default: false
  strict_ca_rules:
    description:
      - Refuse CA certificates that deviate from the guide's CA rules without harm (rules C(ca-path-length) and
        C(ca-digital-signature)) instead of accepting them with a warning.
    type: bool
    default: false
"""

EXAMPLES = r"""
- name: Trust an enterprise CA for third-party signing (Table 1 decides)
  opencapf.capf.capf_trust_cert:
    ca_root: "{{ lookup('ansible.builtin.file', 'files/ca-root.pem') }}"
    https_certificate: "{{ lookup('ansible.builtin.file', 'files/ca-https.pem') }}"
    description: Enterprise CA
  register: trust

- name: Upload a CA chain to CallManager-trust from a file on the CAPF host
  opencapf.capf.capf_trust_cert:
    path: /etc/pki/capf/issuing-chain.pem
    trust_store: [callmanager-trust]
    description: Issuing CA chain

- name: Trust a two-tier enterprise PKI, refusing any deviation from the guide's CA rules
  opencapf.capf.capf_trust_cert:
    ca_root: "{{ lookup('ansible.builtin.file', 'files/root.pem') }}"
    intermediates:
      - "{{ lookup('ansible.builtin.file', 'files/issuing-ca.pem') }}"
    strict_ca_rules: true

- name: Remove a certificate by fingerprint from both trust stores
  opencapf.capf.capf_trust_cert:
    state: absent
    fingerprints:
      - 3f1d9a0b7c2e4f60a1b2c3d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f60718

- name: Remove the legacy MIC roots from CallManager-trust
  opencapf.capf.capf_trust_cert:
    remove_legacy_mic_roots: true
"""

RETURN = r"""
added:
  description: Certificates added (or that would be added in check mode).
  returned: always
  type: list
  elements: dict
  sample: [{trust_store: capf-trust, fingerprint: 3f0c8e7d5b1a29c4e6f8a0b2c4d6e8f0a2b4c6d8e0f2a4b6c8d0e2f4a6b8c0d2, common_name: Example Root}]
  contains:
    trust_store:
      description: V(capf-trust) or V(callmanager-trust).
      type: str
    fingerprint:
      description: SHA-256 fingerprint, 64 lower-case hex digits.
      type: str
    common_name:
      description: Common name of the certificate's subject.
      type: str
removed:
  description: Certificates removed (or that would be removed in check mode).
  returned: always
  type: list
  elements: dict
  sample: [{trust_store: capf-trust, fingerprint: 3f0c8e7d5b1a29c4e6f8a0b2c4d6e8f0a2b4c6d8e0f2a4b6c8d0e2f4a6b8c0d2, common_name: Example Root}]
  contains:
    trust_store:
      description: V(capf-trust) or V(callmanager-trust).
      type: str
    fingerprint:
      description: SHA-256 fingerprint, 64 lower-case hex digits.
      type: str
    common_name:
      description: Common name of the certificate's subject.
      type: str
table1:
  description: Table 1's decision when O(ca_root) was given.
  returned: when O(ca_root) is set
  type: dict
  sample: {scenario: 2, reason: "the HTTPS certificate is issued by the CA root: upload the CA root"}
  contains:
    scenario:
      description: 0 (no HTTPS certificate given) or the row of Table 1, 1–4.
      type: int
    reason:
      description: Why, in words.
      type: str
rule_warnings:
  description:
    - The harmless deviations from the CA rules that were accepted, each naming the option path, the certificate
      and the rule id (also shown as task warnings). Empty with O(strict_ca_rules=true), which refuses them.
  returned: always
  type: list
  elements: str
  sample:
    - "content (Example Root) has no BasicConstraints pathlen (unlimited); the guide asks for pathlen:0
      [rule ca-path-length: a harmless deviation, accepted; strict_ca_rules refuses it]"
certificates:
  description:
    - The affected trust stores after the run, keyed by name (V(capf-trust), V(callmanager-trust)), each a list of
      certificates (trust_store, fingerprint, common_name, subject, issuer, is_ca, not_after, description).
  returned: always
  type: dict
  sample:
    capf-trust:
      - {trust_store: capf-trust, fingerprint: 3f0c8e7d5b1a29c4e6f8a0b2c4d6e8f0a2b4c6d8e0f2a4b6c8d0e2f4a6b8c0d2,
         common_name: Example Root, subject: "CN=Example Root,O=Example", issuer: "CN=Example Root,O=Example",
         is_ca: true, not_after: "2036-01-01T00:00:00Z", description: Enterprise root}
"""

from ansible_collections.opencapf.capf.plugins.module_utils._ansible_args import (
    argument_spec, create_module, engine, exit_with)
from ansible_collections.opencapf.capf.plugins.module_utils._opencapf import trust
from ansible_collections.opencapf.capf.plugins.module_utils._opencapf import vocabulary as v


def main():
    spec = argument_spec(
        state={"type": "str", "choices": ["present", "absent"], "default": "present"},
        trust_store={"type": "list", "elements": "str", "choices": list(v.TRUST_STORES)},
        content={"type": "str"},
        path={"type": "path"},
        description={"type": "str"},
        ca_root={"type": "str"},
        https_certificate={"type": "str"},
        intermediates={"type": "list", "elements": "str"},
        fingerprints={"type": "list", "elements": "str"},
        remove_legacy_mic_roots={"type": "bool", "default": False},
        strict_ca_rules={"type": "bool", "default": False},
    )
    module = create_module(spec, mutually_exclusive=[("content", "path", "ca_root", "fingerprints")],
                           required_by={"https_certificate": "ca_root", "intermediates": "ca_root"})
    params = module.params
    with engine(module) as store:
        result = trust.converge(
            store, state=params["state"], trust_store=params["trust_store"], content=params["content"],
            path=params["path"], ca_root=params["ca_root"], https_certificate=params["https_certificate"],
            intermediates=params["intermediates"] or (), description=params["description"],
            fingerprints=params["fingerprints"],
            remove_legacy_mic_roots=params["remove_legacy_mic_roots"], strict_ca_rules=params["strict_ca_rules"],
            check_mode=module.check_mode)
    extras = {"added": result["added"], "removed": result["removed"], "certificates": result["after"],
              "rule_warnings": result["warnings"]}
    if "table1" in result:
        extras["table1"] = result["table1"]
    exit_with(module, result, **extras)


if __name__ == "__main__":
    main()
