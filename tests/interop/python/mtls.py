"""The safe mTLS pattern with SPIFFE SVIDs and nothing but Python's `ssl`.

Usage: mtls.py --server DIR --server-id ID --allow ID [--allow ID ...]
               --allowed-client DIR --unlisted-client DIR

Each DIR holds svid.pem (chain), key.pem and bundle.pem as written by
fetch.py --write (SVIDs obtained through py-spiffe). The server:
  * requires a client certificate (CERT_REQUIRED),
  * trusts only the bundle (load_verify_locations with the bundle file; no
    default paths),
  * after the handshake, admits a peer only when its certificate carries
    exactly one URI SAN and that SPIFFE ID is on the allow-list.
Clients trust only the bundle too and check the server's SPIFFE ID.

Four clients connect, one at a time: the allowed workload; one with no
certificate; one with a self-signed certificate carrying the allowed SPIFFE ID
(made here with `cryptography`); one with a valid SVID that is not on the
allow-list. For each, what the server and the client saw is printed as JSON.
"""

import argparse
import datetime
import os
import queue
import socket
import ssl
import sys
import tempfile
import threading

from common import emit, versions

TIMEOUT = 10.0


def uri_sans(peer):
    return [v for (k, v) in peer.get("subjectAltName", ()) if k == "URI"]


def ssl_error(stage, e):
    out = {"stage": stage, "error_type": type(e).__name__, "reason": getattr(e, "reason", None), "error": str(e)}
    if isinstance(e, ssl.SSLCertVerificationError):
        out["verify_code"] = e.verify_code
        out["verify_message"] = e.verify_message
    return out


def server_context(d):
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.verify_mode = ssl.CERT_REQUIRED
    ctx.load_cert_chain(os.path.join(d, "svid.pem"), os.path.join(d, "key.pem"))
    ctx.load_verify_locations(cafile=os.path.join(d, "bundle.pem"))
    return ctx


def serve(lsock, ctx, allow, records):
    while True:
        try:
            conn, _ = lsock.accept()
        except OSError:
            return
        conn.settimeout(TIMEOUT)
        try:
            tls = ctx.wrap_socket(conn, server_side=True)
        except (ssl.SSLError, OSError) as e:
            records.put(ssl_error("handshake", e))
            conn.close()
            continue
        ids = uri_sans(tls.getpeercert())
        if len(ids) == 1 and ids[0] in allow:
            tls.sendall(b"WELCOME " + ids[0].encode() + b"\n")
            records.put({"stage": "application", "outcome": "accepted", "peer_ids": ids})
        else:
            tls.sendall(b"DENIED\n")
            records.put({"stage": "application", "outcome": "refused", "peer_ids": ids})
        try:
            tls.unwrap()
        except (ssl.SSLError, OSError):
            pass
        tls.close()


def client(addr, bundle, server_id, cert=None, key=None):
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False  # SPIFFE: authorize by the URI SAN, not a DNS name
    ctx.verify_mode = ssl.CERT_REQUIRED
    ctx.load_verify_locations(cafile=bundle)
    if cert:
        ctx.load_cert_chain(cert, key)
    s = socket.create_connection(addr, timeout=TIMEOUT)
    try:
        try:
            tls = ctx.wrap_socket(s)
        except (ssl.SSLError, OSError) as e:
            return ssl_error("handshake", e)
        ids = uri_sans(tls.getpeercert())
        if ids != [server_id]:
            tls.close()
            return {"stage": "server_check", "error": "unexpected server ID", "server_ids": ids}
        data = b""
        try:
            while True:
                chunk = tls.recv(4096)
                if not chunk:
                    break
                data += chunk
        except (ssl.SSLError, OSError) as e:
            out = ssl_error("read", e)
            out["received"] = data.decode(errors="replace")
            out["server_ids"] = ids
            return out
        tls.close()
        return {"stage": "done", "received": data.decode(errors="replace"), "server_ids": ids}
    finally:
        s.close()


def self_signed(spiffe_id, d):
    """A self-signed certificate carrying `spiffe_id`, written to DIR."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID

    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.timezone.utc)
    name = x509.Name([x509.NameAttribute(x509.oid.NameOID.COUNTRY_NAME, "US")])
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=1))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(x509.SubjectAlternativeName([x509.UniformResourceIdentifier(spiffe_id)]), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(True, False, False, False, False, False, False, False, False), critical=True
        )
        .add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH, ExtendedKeyUsageOID.SERVER_AUTH]),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    cp, kp = os.path.join(d, "self.pem"), os.path.join(d, "self.key")
    with open(cp, "wb") as f:
        f.write(cert.public_bytes(serialization.Encoding.PEM))
    with open(kp, "wb") as f:
        f.write(
            key.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            )
        )
    uris = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    return cp, kp, uris.get_values_for_type(x509.UniformResourceIdentifier)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--server", required=True)
    p.add_argument("--server-id", required=True)
    p.add_argument("--allow", action="append", required=True)
    p.add_argument("--allowed-client", required=True)
    p.add_argument("--unlisted-client", required=True)
    args = p.parse_args()

    ctx = server_context(args.server)
    lsock = socket.socket()
    lsock.bind(("127.0.0.1", 0))
    lsock.listen(8)
    addr = lsock.getsockname()
    records = queue.Queue()
    threading.Thread(target=serve, args=(lsock, ctx, set(args.allow), records), daemon=True).start()

    bundle = os.path.join(args.server, "bundle.pem")
    result = {
        "versions": versions(),
        "allow": sorted(args.allow),
        # What the server trusts: the bundle's CA certificates and nothing else.
        "server_trust_store": ctx.cert_store_stats(),
        "cases": {},
    }
    with tempfile.TemporaryDirectory() as tmp:
        ss_cert, ss_key, ss_ids = self_signed(args.allow[0], tmp)
        result["self_signed_ids"] = ss_ids
        cases = [
            ("allowed", os.path.join(args.allowed_client, "svid.pem"), os.path.join(args.allowed_client, "key.pem")),
            ("no_cert", None, None),
            ("self_signed", ss_cert, ss_key),
            ("not_listed", os.path.join(args.unlisted_client, "svid.pem"), os.path.join(args.unlisted_client, "key.pem")),
        ]
        for name, cert, key in cases:
            c = client(addr, bundle, args.server_id, cert, key)
            try:
                s = records.get(timeout=TIMEOUT)
            except queue.Empty:
                s = {"stage": "none", "error": "server recorded nothing"}
            result["cases"][name] = {"client": c, "server": s}
    lsock.close()
    emit(result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
