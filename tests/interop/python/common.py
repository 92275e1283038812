"""Shared helpers of the Python interop scripts (run by tests/tests/interop_clients.rs).

Every script prints exactly one JSON object on stdout; the Rust test asserts on it.
Nothing here alters the client libraries: they are used as installed from PyPI.
"""

import json
import sys
from importlib import metadata


def drop_privileges_from_env():
    """Becomes the uid in SIGIL_INTEROP_RUN_AS (gid = uid, no groups).

    The test starts a workload of another uid as root and the script drops
    privileges itself, after its imports: the venv's base interpreter may sit
    where that uid cannot read it (pyenv under /root). Called after every
    import and before the first connection, so the Workload API attests the
    new uid (SO_PEERCRED is taken at connect). Nothing of the clients changes.
    """
    import os

    uid = os.environ.get("SIGIL_INTEROP_RUN_AS")
    if not uid:
        return
    uid = int(uid)
    # Import now what the libraries would otherwise import lazily later.
    import encodings.idna  # noqa: F401
    import grpc  # noqa: F401

    os.setgroups([])
    os.setresgid(uid, uid, uid)
    os.setresuid(uid, uid, uid)
    if os.getuid() != uid or os.geteuid() != uid:
        raise SystemExit("could not drop privileges")


def versions():
    """The versions of the client stack actually in use."""
    import ssl

    out = {"python": sys.version.split()[0], "openssl": ssl.OPENSSL_VERSION}
    for dist in ("spiffe", "grpcio", "protobuf", "cryptography"):
        out[dist] = metadata.version(dist)
    return out


def emit(obj):
    """Prints the result object as one JSON line and flushes."""
    sys.stdout.write(json.dumps(obj, sort_keys=True) + "\n")
    sys.stdout.flush()


def grpc_code(exc):
    """The gRPC status code name behind an exception (py-spiffe wraps RpcError)."""
    import grpc

    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, grpc.Call):
            return exc.code().name, exc.details()
        exc = exc.__cause__ or exc.__context__
    return None, None


def error_result(exc):
    code, details = grpc_code(exc)
    return {
        "ok": False,
        "error_type": type(exc).__name__,
        "error": str(exc),
        "grpc_code": code,
        "grpc_details": details,
    }


def cert_info(cert):
    """Facts about a cryptography x509.Certificate (every extension decoded)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization

    uris = []
    dns = []
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        uris = san.get_values_for_type(x509.UniformResourceIdentifier)
        dns = san.get_values_for_type(x509.DNSName)
    except x509.ExtensionNotFound:
        pass
    bc = cert.extensions.get_extension_for_class(x509.BasicConstraints).value
    return {
        "serial": format(cert.serial_number, "x"),
        "not_before": int(cert.not_valid_before_utc.timestamp()),
        "not_after": int(cert.not_valid_after_utc.timestamp()),
        "uris": uris,
        "dns": dns,
        "ca": bc.ca,
        # Decoding every extension is what a strict parser refuses on bad DER.
        "extensions": sorted(e.oid.dotted_string for e in cert.extensions),
        "der_hex": cert.public_bytes(serialization.Encoding.DER).hex(),
    }


def public_key_der(key):
    from cryptography.hazmat.primitives import serialization

    return key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def verify_issued_by(cert, issuer):
    """True when `cert` is signed by `issuer` (signature and names)."""
    try:
        cert.verify_directly_issued_by(issuer)
        return True
    except Exception:
        return False
