"""Fetches a JWT-SVID with py-spiffe, validates it through the Workload API and
verifies it locally against the JWT bundle (JwtSvid.parse_and_validate).

Usage: jwt_svid_interop.py ENDPOINT AUDIENCE

Prints {"ok": true, "versions", "spiffe_id", "token", "bundle_kids",
"validated_id", "local_id", "wrong_audience_refused", "tampered_refused"} or
{"ok": false, "grpc_code", ...}.
"""

import argparse
import base64
import json
import sys

from common import emit, error_result, versions


def tamper(token):
    """The token with its payload's sub changed and the signature kept."""
    h, p, s = token.split(".")
    claims = json.loads(base64.urlsafe_b64decode(p + "=" * (-len(p) % 4)))
    claims["sub"] = claims["sub"] + "-x"
    p2 = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=").decode()
    return ".".join([h, p2, s])


def main():
    p = argparse.ArgumentParser()
    p.add_argument("endpoint")
    p.add_argument("audience")
    p.add_argument("--timeout", type=float, default=10.0)
    args = p.parse_args()

    from spiffe import JwtSvid, WorkloadApiClient

    result = {"versions": versions()}
    try:
        with WorkloadApiClient(args.endpoint, default_timeout=args.timeout) as client:
            svid = client.fetch_jwt_svid({args.audience})
            bundles = client.fetch_jwt_bundles()
            validated = client.validate_jwt_svid(svid.token, args.audience)
    except Exception as e:  # reported to the Rust test, which asserts on it
        result.update(error_result(e))
        emit(result)
        return 1

    bundle = bundles.get_bundle_for_trust_domain(svid.spiffe_id.trust_domain)
    local = JwtSvid.parse_and_validate(svid.token, bundle, {args.audience})
    refused = {}
    for name, token, aud in [
        ("wrong_audience_refused", svid.token, {"not-" + args.audience}),
        ("tampered_refused", tamper(svid.token), {args.audience}),
    ]:
        try:
            JwtSvid.parse_and_validate(token, bundle, aud)
            refused[name] = False
        except Exception as e:
            refused[name] = type(e).__name__
    result.update(refused)
    result["ok"] = True
    result["spiffe_id"] = str(svid.spiffe_id)
    result["token"] = svid.token
    result["bundle_kids"] = sorted(bundle.jwt_authorities.keys()) if bundle else []
    result["validated_id"] = str(validated.spiffe_id)
    result["local_id"] = str(local.spiffe_id)
    result["local_audience"] = sorted(local.audience)
    emit(result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
