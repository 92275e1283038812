"""Cross-trust-domain mTLS with py-spiffe (issue 16; run by tests/tests/federation_workloads.rs).

Usage:
  federation.py serve ENDPOINT --peer-td TD --allow ID [--allow ID ...]
      An mTLS server whose certificate, key and trust anchors come only from
      py-spiffe's X509Source: its SVID, and the bundle of the peer trust
      domain TD (a federated bundle). It requires a client certificate and
      admits a peer only when its single URI SAN is on the allow-list.
      Prints {"port": N} once the source holds an SVID and TD's bundle, then
      serves until stdin closes, and prints a summary: handshakes, failures
      (with their errors), accepted and refused peers, and the serial of
      every server certificate it presented. The trust anchors and the
      certificate are re-read from the source after every update, so
      rotations on either side are followed without a restart.
  federation.py client ENDPOINT --port P --server-td TD --server-id ID
      A workload that connects to 127.0.0.1:P and verifies the server with
      what the Workload API gave it. Prints whether it holds TD's bundle and
      how the handshake ended.

Every line printed is one JSON object.
"""

import argparse
import os
import socket
import ssl
import sys
import tempfile
import threading
import time

from common import drop_privileges_from_env, emit, error_result, versions
from mtls import TIMEOUT, uri_sans


def write_material(source, tds, d):
    """The source's SVID and the bundles of `tds`, as PEM files in d."""
    from cryptography.hazmat.primitives import serialization
    from spiffe import TrustDomain

    svid = source.svid
    cert, key, cas = os.path.join(d, "svid.pem"), os.path.join(d, "key.pem"), os.path.join(d, "cas.pem")
    svid.save(cert, key, serialization.Encoding.PEM)
    pems = []
    for td in tds:
        b = source.get_bundle_for_trust_domain(TrustDomain(td))
        if b is not None:
            pems.extend(a.public_bytes(serialization.Encoding.PEM) for a in b.x509_authorities)
    with open(cas, "wb") as f:
        f.write(b"".join(pems))
    return cert, key, cas, format(svid.leaf.serial_number, "x"), len(pems)


def serve(args):
    from spiffe import TrustDomain, X509Source

    source = X509Source(socket_path=args.endpoint, timeout_in_seconds=15)
    dirty = threading.Event()
    source.subscribe_for_updates(dirty.set)
    deadline = time.monotonic() + 30
    while source.get_bundle_for_trust_domain(TrustDomain(args.peer_td)) is None:
        if time.monotonic() > deadline:
            emit({"ok": False, "error": f"no bundle for {args.peer_td} within 30 s"})
            return 1
        time.sleep(0.1)

    tmp = tempfile.TemporaryDirectory()
    state = {"ctx": None, "serial": None}
    stats = {"handshakes": 0, "failures": [], "accepted": 0, "refused": [], "serials": []}
    allow = set(args.allow)

    def context():
        if state["ctx"] is None or dirty.is_set():
            dirty.clear()
            cert, key, cas, serial, n = write_material(source, [args.peer_td], tmp.name)
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            ctx.verify_mode = ssl.CERT_REQUIRED
            ctx.load_cert_chain(cert, key)
            ctx.load_verify_locations(cafile=cas)
            state["ctx"], state["serial"] = ctx, serial
        return state["ctx"], state["serial"]

    context()
    lsock = socket.socket()
    lsock.bind(("127.0.0.1", 0))
    lsock.listen(64)

    def loop():
        while True:
            try:
                conn, _ = lsock.accept()
            except OSError:
                return
            conn.settimeout(TIMEOUT)
            ctx, serial = context()
            try:
                tls = ctx.wrap_socket(conn, server_side=True)
            except (ssl.SSLError, OSError) as e:
                stats["failures"].append(str(e))
                conn.close()
                continue
            stats["handshakes"] += 1
            if serial not in stats["serials"]:
                stats["serials"].append(serial)
            ids = uri_sans(tls.getpeercert())
            try:
                if len(ids) == 1 and ids[0] in allow:
                    stats["accepted"] += 1
                    tls.sendall(b"WELCOME " + ids[0].encode() + b"\n")
                else:
                    stats["refused"].append(ids)
                    tls.sendall(b"DENIED\n")
                tls.unwrap()
            except (ssl.SSLError, OSError):
                pass
            tls.close()

    t = threading.Thread(target=loop, daemon=True)
    t.start()
    emit({"port": lsock.getsockname()[1], "versions": versions()})
    sys.stdin.read()  # until the test closes stdin
    lsock.close()
    t.join(timeout=TIMEOUT)
    source.close()
    stats["ok"] = True
    emit(stats)
    return 0


def client(args):
    from spiffe import TrustDomain, X509Source

    drop_privileges_from_env()
    result = {"versions": versions(), "uid": os.getuid()}
    try:
        source = X509Source(socket_path=args.endpoint, timeout_in_seconds=15)
    except Exception as e:
        result.update(error_result(e))
        emit(result)
        return 1
    try:
        result["spiffe_id"] = str(source.svid.spiffe_id)
        result["has_server_bundle"] = source.get_bundle_for_trust_domain(TrustDomain(args.server_td)) is not None
        with tempfile.TemporaryDirectory() as d:
            # Everything it may trust: its own trust domain and the server's
            # (if the Workload API gave it that one).
            own = str(source.svid.spiffe_id.trust_domain)
            cert, key, cas, _, n = write_material(source, [own, args.server_td], d)
            result["trusted_cas"] = n
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_REQUIRED
            ctx.load_verify_locations(cafile=cas)
            ctx.load_cert_chain(cert, key)
            s = socket.create_connection(("127.0.0.1", args.port), timeout=TIMEOUT)
            try:
                tls = ctx.wrap_socket(s)
                ids = uri_sans(tls.getpeercert())
                result["handshake"] = {"ok": True, "server_ids": ids}
                tls.close()
            except (ssl.SSLError, OSError) as e:
                out = {"ok": False, "error_type": type(e).__name__, "error": str(e)}
                if isinstance(e, ssl.SSLCertVerificationError):
                    out["verify_message"] = e.verify_message
                result["handshake"] = out
            finally:
                s.close()
        result["ok"] = True
    finally:
        source.close()
    emit(result)
    return 0


def main():
    p = argparse.ArgumentParser()
    sub = p.add_subparsers(dest="mode", required=True)
    s = sub.add_parser("serve")
    s.add_argument("endpoint")
    s.add_argument("--peer-td", required=True)
    s.add_argument("--allow", action="append", required=True)
    c = sub.add_parser("client")
    c.add_argument("endpoint")
    c.add_argument("--port", type=int, required=True)
    c.add_argument("--server-td", required=True)
    c.add_argument("--server-id", required=True)
    args = p.parse_args()
    return serve(args) if args.mode == "serve" else client(args)


if __name__ == "__main__":
    sys.exit(main())
