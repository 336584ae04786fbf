"""RFC 5280 linting with pkilint, in-process (one validator, many certificates)."""

from __future__ import annotations

import functools

from pkilint import loader, report
from pkilint.pkix import certificate, extension, name

SEVERE = ("ERROR", "FATAL")


@functools.lru_cache(maxsize=1)
def _validator():
    return certificate.create_pkix_certificate_validator_container(
        certificate.create_decoding_validators(name.ATTRIBUTE_TYPE_MAPPINGS, extension.EXTENSION_MAPPINGS),
        [
            certificate.create_issuer_validator_container([]),
            certificate.create_validity_validator_container(),
            certificate.create_subject_validator_container([]),
            certificate.create_extensions_validator_container([]),
            certificate.create_spki_validator_container([]),
        ],
    )


def lint_errors(der: bytes, label: str = "certificate") -> list[str]:
    """pkilint findings of ERROR or FATAL severity for one DER certificate."""
    document = loader.RFC5280CertificateDocumentLoader().load_der_document(der, label)
    results = _validator().validate(document.root)
    findings = []
    for result in results:
        for finding in result.finding_descriptions:
            if str(finding.finding.severity) in SEVERE:
                findings.append(f"{label}: {finding.finding.code} ({finding.finding.severity}) "
                                f"at {result.node.path}: {finding.message or ''}".rstrip(": "))
    return findings


__all__ = ["lint_errors", "report"]
