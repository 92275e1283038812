"""Python `cryptography` (a strict DER parser) over every certificate and CSR
Sigil emits (run by tests/tests/strict_der.rs).

Input: a JSON file, a list of {label, kind: leaf|ca|csr, chain: [base64 DER],
roots: [base64 DER], spiffe_id}. For each item: every certificate of the
chain loads and every extension decodes (cryptography refuses an encoded
DEFAULT, a non-minimal length, a bad BIT STRING); a CSR's signature checks;
a leaf passes cryptography's RFC 5280 path validation (client verifier:
chain to the given roots, clientAuth, validity now) and carries exactly one
URI SAN, the expected SPIFFE ID. Prints one JSON object.
"""

import base64
import datetime
import json
import sys

from cryptography import x509
from cryptography.x509.oid import ExtensionOID
from cryptography.x509.verification import PolicyBuilder, Store

from common import emit, versions


def decode_all_extensions(obj):
    """Decodes every extension; returns their names."""
    names = []
    for ext in obj.extensions:
        # Touching .value makes cryptography parse the extension in full.
        _ = ext.value
        names.append(ext.oid._name)
    return names


def check(item):
    der = [base64.b64decode(c) for c in item["chain"]]
    out = {"label": item["label"], "ok": False}
    if item["kind"] == "csr":
        csr = x509.load_der_x509_csr(der[0])
        out["extensions"] = decode_all_extensions(csr)
        if not csr.is_signature_valid:
            raise ValueError("CSR signature does not verify")
        out["ok"] = True
        return out
    certs = [x509.load_der_x509_certificate(d) for d in der]
    out["extensions"] = decode_all_extensions(certs[0])
    for c in certs[1:]:
        decode_all_extensions(c)
    san = certs[0].extensions.get_extension_for_oid(ExtensionOID.SUBJECT_ALTERNATIVE_NAME)
    uris = san.value.get_values_for_type(x509.UniformResourceIdentifier)
    if uris != [item["spiffe_id"]]:
        raise ValueError(f"URI SANs {uris}, expected exactly [{item['spiffe_id']}]")
    bc = certs[0].extensions.get_extension_for_class(x509.BasicConstraints).value
    if bc.ca != (item["kind"] == "ca"):
        raise ValueError(f"basicConstraints cA={bc.ca} on a {item['kind']}")
    if item["kind"] == "leaf":
        roots = [x509.load_der_x509_certificate(base64.b64decode(r)) for r in item["roots"]]
        if not roots:
            raise ValueError("no roots to verify against")
        verifier = (
            PolicyBuilder()
            .store(Store(roots))
            .time(datetime.datetime.now(datetime.timezone.utc))
            .build_client_verifier()
        )
        verified = verifier.verify(certs[0], certs[1:])
        out["verified_chain_len"] = len(verified.chain)
    out["ok"] = True
    return out


def main():
    items = json.load(open(sys.argv[1]))
    results = []
    for item in items:
        try:
            results.append(check(item))
        except Exception as e:  # noqa: BLE001 - every failure is reported
            results.append(
                {"label": item["label"], "ok": False, "error": f"{type(e).__name__}: {e}"}
            )
    emit({"versions": versions(), "results": results})


if __name__ == "__main__":
    main()
