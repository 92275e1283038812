"""Fetches the X.509-SVID and the X.509 bundles with py-spiffe's WorkloadApiClient.

Usage: fetch.py ENDPOINT [--write DIR]
(as another uid: SIGIL_INTEROP_RUN_AS=UID, see common.drop_privileges_from_env)

Prints {"ok": true, "versions", "svid": {...}, "bundles": {...}} or
{"ok": false, "grpc_code", ...}. With --write, saves svid.pem (chain), key.pem
and bundle.pem (the own trust domain's authorities) into DIR through py-spiffe.
"""

import argparse
import os
import sys

from common import (
    cert_info,
    drop_privileges_from_env,
    emit,
    error_result,
    public_key_der,
    verify_issued_by,
    versions,
)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("endpoint")
    p.add_argument("--write")
    p.add_argument("--timeout", type=float, default=10.0)
    args = p.parse_args()

    from cryptography.hazmat.primitives import serialization
    from spiffe import WorkloadApiClient

    result = {"versions": versions()}
    drop_privileges_from_env()
    result["uid"] = os.getuid()
    try:
        with WorkloadApiClient(args.endpoint, default_timeout=args.timeout) as client:
            svid = client.fetch_x509_svid()
            bundles = client.fetch_x509_bundles()
    except Exception as e:  # reported to the Rust test, which asserts on it
        result.update(error_result(e))
        emit(result)
        return 1

    chain = svid.cert_chain
    leaf = svid.leaf
    td = svid.spiffe_id.trust_domain
    own = bundles.get_bundle_for_trust_domain(td)
    authorities = list(own.x509_authorities) if own else []
    result["ok"] = True
    result["svid"] = {
        "spiffe_id": str(svid.spiffe_id),
        "chain": [cert_info(c) for c in chain],
        "key_matches_leaf": public_key_der(svid.private_key.public_key())
        == public_key_der(leaf.public_key()),
        # The leaf (or the top of the chain) is signed by one of the authorities.
        "chains_to_bundle": any(verify_issued_by(chain[-1], a) for a in authorities),
    }
    result["bundles"] = {
        str(b.trust_domain): sorted(cert_info(a)["der_hex"] for a in b.x509_authorities)
        for b in bundles.bundles
    }
    if args.write:
        os.makedirs(args.write, exist_ok=True)
        svid.save(
            os.path.join(args.write, "svid.pem"),
            os.path.join(args.write, "key.pem"),
            serialization.Encoding.PEM,
        )
        own.save(os.path.join(args.write, "bundle.pem"), serialization.Encoding.PEM)
    emit(result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
