#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: contributors to opencapf.capf
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: capf_offline_ca
short_description: Export pending CSRs for an offline CA and import the certificates it signed
version_added: 0.1.0
description:
  - With the service parameter C(issuer=offline_ca), a phone that runs Install/Upgrade generates its key, signs the
    CSR that CAPF builds for it (the opencapf X-CSR/1 protocol extension), and keeps the key pending. The CSR waits in
    the store.
  - O(state=exported) writes the pending CSRs to O(path) for the CA operator, one C(<DEVICE>.csr.pem) per phone or
    one bundle (O(bundle=true)). Files are rewritten only when their content differs.
  - O(state=imported) reads the certificates the CA signed (PEM, DER or PKCS#7 files, bundles too), matches each to
    its CSR by public key, checks it against what was asked for and records it. The phone receives it on its next CAPF
    session. A certificate whose CSR the phone has since replaced is recorded as stale and never delivered.
    Certificates imported before are reported, not recorded again.
  - "The check, the same as for an online CA's answer: the public key is the phone's key of the CSR; the subject holds
    exactly one CN, equal to the device name (case included), and besides it only O, OU, L, ST and C, which the CA may
    set; every subjectAltName entry, when there is one, names the device (a directoryName under the subject rule, or a
    dNSName or URI that is the device name); not a CA (no BasicConstraints CA:TRUE, no KeyUsage keyCertSign or
    cRLSign); KeyUsage digitalSignature and keyEncipherment (EC keys: keyEncipherment or keyAgreement) and, when
    ExtendedKeyUsage is present, clientAuth; notBefore at most 5 minutes ahead of now (clock skew) and notAfter after
    now; a chain, through the CA certificates in the imported files, to a certificate in C(CAPF-trust), each CA
    certificate of it within its validity."
  - A certificate that fails the check is reported under RV(problems) with its file, a code and the reason, recorded
    as a C(certificate.refused) audit event and on the phone's CSR and operation reason, and never recorded as an LSC
    or delivered; the CSR keeps waiting for a certificate that passes.
  - Pending CSRs with their timestamps are also listed by M(opencapf.capf.capf_info) (section V(pending_csrs)).
author:
  - opencapf developers (@opencapf)
extends_documentation_fragment:
  - opencapf.capf.capf
  - opencapf.capf.capf.attributes
options:
  state:
    description:
      - V(exported) writes pending CSRs to O(path); V(imported) imports signed certificates from O(src).
    type: str
    choices: [exported, imported]
    required: true
  path:
    description: Directory that receives the CSR files (created with mode 0700 when missing). Required with V(exported).
    type: path
  bundle:
    description: Write one file, C(capf-csr-bundle.pem), each CSR preceded by its device name and request time.
    type: bool
    default: false
  devices:
    description: Export only the CSRs of these device names. Not set means every pending CSR.
    type: list
    elements: str
  fail_on_unmatched:
    description:
      - Names in O(devices) that are not in the store (a typo, or a phone not created yet) are returned in
        RV(unmatched) and warned about; with V(true) the task fails naming them and writes nothing.
    type: bool
    default: false
  src:
    description:
      - Files holding the signed certificates (and optionally the CA chain). Required with V(imported).
      - 'A file that cannot be read fails the task with a message that starts with its option path, for example
        C(src[1]: cannot read certificate file /x: No such file or directory). A file holding no certificate is
        reported in RV(problems) and, with O(fail_on_problems), fails the task naming C(src[1]) and the file.'
    type: list
    elements: path
  fail_on_problems:
    description:
      - Fail when a certificate cannot be used (any entry in RV(problems), such as no matching CSR, another device's
        name, KeyUsage missing, no chain to C(CAPF-trust), expired). The usable ones are recorded either way (except
        in check mode).
    type: bool
    default: true
"""

EXAMPLES = r"""
- name: Export every pending CSR, one file per phone
  opencapf.capf.capf_offline_ca:
    state: exported
    path: /srv/capf/csr-out

- name: Import what the CA operator signed
  opencapf.capf.capf_offline_ca:
    state: imported
    src:
      - /srv/capf/signed/SEP001122334455.cer
      - /srv/capf/signed/bundle.p7b
"""

RETURN = r"""
files:
  description: With V(exported), the CSR files that hold the pending CSRs.
  returned: state is exported
  type: list
  elements: str
written:
  description: With V(exported), the files written (or that would be written in check mode).
  returned: state is exported
  type: list
  elements: str
csrs:
  description: With V(exported), the exported CSRs.
  returned: state is exported
  type: list
  elements: dict
  sample: [{device_name: SEP001122334455, requested_at: "2026-12-06T05:38:24Z"}]
  contains:
    device_name:
      description: The phone whose CSR it is.
      type: str
    requested_at:
      description: When the phone made the request, UTC.
      type: str
unmatched:
  description: With V(exported), names given in O(devices) that no phone in the store has (canonical upper case, sorted).
  returned: state is exported
  type: list
  elements: str
  sample: [SEP00112233445F]
matched:
  description: With V(imported), the device names whose certificates were recorded for delivery.
  returned: state is imported
  type: list
  elements: str
already_imported:
  description: With V(imported), certificates recorded by an earlier import.
  returned: state is imported
  type: list
  elements: dict
  sample: [{file: /srv/capf/signed/SEP001122334455.pem, device_name: SEP001122334455}]
  contains:
    file:
      description: The O(src) file it came from.
      type: str
    device_name:
      description: The phone it belongs to.
      type: str
stale:
  description: With V(imported), certificates for replaced CSRs, recorded as stale.
  returned: state is imported
  type: list
  elements: dict
  sample:
    - {file: /srv/capf/signed/SEP001122334455.pem, device_name: SEP001122334455,
       reason: "the phone replaced the CSR before the LSC was delivered"}
  contains:
    file:
      description: The O(src) file it came from.
      type: str
    device_name:
      description: The phone it was meant for.
      type: str
    reason:
      description: Why it is stale.
      type: str
problems:
  description: With V(imported), certificates (or files) that cannot be used; none of them is recorded or delivered.
  returned: state is imported
  type: list
  elements: dict
  sample:
    - {file: /srv/capf/signed/SEP001122334455.pem, subject: "CN=SEP001122334455", device_name: SEP001122334455,
       code: wrong_key, reason: "SEP001122334455: the certificate is not for the key of the phone's CSR"}
  contains:
    file:
      description: The O(src) file the certificate came from.
      type: str
    subject:
      description: The certificate's subject (RFC 4514), empty when the file could not be read.
      type: str
    device_name:
      description: The phone whose CSR the certificate was checked against, empty when it matches none.
      type: str
    code:
      description:
        - Why it was refused. V(wrong_key) (not the key of the phone's CSR, or of any pending CSR),
          V(wrong_subject) (the CN is not exactly the device name, or an attribute other than O, OU, L, ST, C),
          V(wrong_subject_alt_name), V(is_ca), V(missing_key_usage), V(not_yet_valid), V(expired),
          V(untrusted_chain) (no chain to C(CAPF-trust)), V(unreadable) (not a certificate, or unreadable
          extensions), V(duplicate) (a second certificate for a CSR already matched in this import).
      type: str
      choices: [wrong_key, wrong_subject, wrong_subject_alt_name, is_ca, missing_key_usage, not_yet_valid, expired,
                untrusted_chain, unreadable, duplicate]
    reason:
      description: The refusal in words, naming the device and the rule.
      type: str
"""

from ansible_collections.opencapf.capf.plugins.module_utils._ansible_args import (
    argument_spec, create_module, engine, exit_with)
from ansible_collections.opencapf.capf.plugins.module_utils._opencapf import enrolment
from ansible_collections.opencapf.capf.plugins.module_utils._opencapf.issuers import offline


def main():
    spec = argument_spec(
        state={"type": "str", "choices": ["exported", "imported"], "required": True},
        path={"type": "path"},
        bundle={"type": "bool", "default": False},
        devices={"type": "list", "elements": "str"},
        src={"type": "list", "elements": "path"},
        fail_on_problems={"type": "bool", "default": True},
        fail_on_unmatched={"type": "bool", "default": False},
    )
    module = create_module(spec, required_if=[("state", "exported", ["path"]), ("state", "imported", ["src"])])
    params = module.params
    with engine(module) as store:
        if params["state"] == "exported":
            result = enrolment.converge_export(store, params["path"], bundle=params["bundle"],
                                               devices=params["devices"], fail_on_unmatched=params["fail_on_unmatched"],
                                               check_mode=module.check_mode)
            unchanged = sorted(set(result["files"]) - set(result["written"]))
            exit_with(module, {"changed": result["changed"], "before": {"files": unchanged},
                               "after": {"files": result["files"]}, "warnings": result["warnings"]},
                      files=result["files"], written=result["written"], csrs=result["csrs"],
                      unmatched=result["unmatched"])
        report = enrolment.import_certificates(store, store.actor, offline.read_files(params["src"]),
                                               check_mode=module.check_mode)
    values = report.as_dict()
    if report.problems and params["fail_on_problems"]:
        options = {path: f"src[{index}]" for index, path in reversed(list(enumerate(params["src"])))}
        module.fail_json(msg="; ".join(f"{options.get(item['file'], 'src')} ({item['file']}): {item['reason']} [{item['code']}]"
                                       for item in values["problems"]),
                         changed=report.changed and not module.check_mode, **values)
    exit_with(module, {"changed": report.changed, "before": {"imported": []},
                       "after": {"imported": report.matched, "stale": [item["device_name"] for item in values["stale"]]}},
              **values)


if __name__ == "__main__":
    main()
