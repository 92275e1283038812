"""Verifies a JWT-SVID with PyJWT (an independent JOSE library) using only what
OIDC discovery serves: the provider configuration (issuer, algorithms) and the
key set from its jwks_uri (/keys), as a cloud provider or Vault would.

Usage: pyjwt_oidc.py CONFIGURATION_JSON_FILE KEYS_JSON_FILE TOKEN AUDIENCE

Prints {"ok": true, "pyjwt", "claims", "wrong_issuer_refused"} or
{"ok": false, "error"}.
"""

import json
import sys
from importlib import metadata

from common import emit


def main():
    conf_file, keys_file, token, audience = sys.argv[1:5]
    import jwt

    result = {"pyjwt": metadata.version("pyjwt"), "cryptography": metadata.version("cryptography")}
    try:
        with open(conf_file) as f:
            conf = json.load(f)
        with open(keys_file) as f:
            keys = json.load(f)
        kid = jwt.get_unverified_header(token)["kid"]
        jwk = next(k for k in keys["keys"] if k["kid"] == kid)
        key = jwt.PyJWK.from_dict(jwk)
        algs = conf["id_token_signing_alg_values_supported"]
        claims = jwt.decode(token, key.key, algorithms=algs, audience=audience, issuer=conf["issuer"])
        try:
            jwt.decode(token, key.key, algorithms=algs, audience=audience, issuer="https://evil.example")
            result["wrong_issuer_refused"] = False
        except jwt.InvalidIssuerError as e:
            result["wrong_issuer_refused"] = type(e).__name__
    except Exception as e:
        result.update({"ok": False, "error": f"{type(e).__name__}: {e}"})
        emit(result)
        return 1
    result["ok"] = True
    result["claims"] = claims
    result["key_alg"] = key.algorithm_name
    emit(result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
