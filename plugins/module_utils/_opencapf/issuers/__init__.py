# Copyright: contributors to opencapf.capf
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Third-party CAs that sign phone LSCs: Online CA (EST, Microsoft AD CS) and Offline CA.

Wiring, in the order a protocol session uses it (capf-protocol.md 6.3):

1. ``csr.prepare(device, spki_der, subject_from=..., digest=...)``: KEY_TYPE, DIGEST_TYPE and X_TBS
   (``request.info``) for ENCRYPT_REQUEST; the simulator answers with ``csr.phone_sign(...)``.
2. ``csr.assemble(request, SIGNED_DATA)``: the verified PKCS#10 (``.der``, ``.pem``); a signature
   that does not verify with the request's own key raises ``csr.CsrError``.
3. Online CA: ``online.build(settings, capf_trust_pems, password=...)`` then ``issuer.submit(der)``
   giving ``base.Issued`` / ``base.Pending`` / ``base.Rejected``; ``base.resolve(...)`` waits within
   a time budget, ``issuer.poll(reference, der)`` picks a pending request up later. Failures that
   say nothing about the request raise ``base.IssuerError`` with a ``code``.
4. Offline CA: ``offline.export(pending, directory, bundle=...)`` and
   ``offline.import_certificates(offline.read_files(paths), pending, anchors, superseded=...)``.
5. Whatever a CA returned passes ``acceptance.check(certificate, device_name=..., public_key=...,
   anchors=..., intermediates=...)`` before it is recorded or delivered: ``Accepted`` with the
   verified chain, or ``Refused`` with a code of ``vocabulary.CERTIFICATE_REFUSALS``. Offline
   imports call it per certificate; ``enrolment`` calls it for every online answer.
"""
