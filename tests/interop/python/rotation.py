"""An X509Source (py-spiffe) sees an overlapping rotation of its SVID.

Usage: rotation.py ENDPOINT WAIT_SECONDS

Opens an X509Source, records the SVID, then waits (bounded) until the source
holds an SVID with another serial. Prints both SVIDs and the time the new one
was seen, so the Rust test can check the overlap (the new SVID arrived while
the old one was still valid).
"""

import sys
import threading
import time

from common import cert_info, emit, error_result, versions


def main():
    endpoint, wait = sys.argv[1], float(sys.argv[2])
    from spiffe import X509Source

    result = {"versions": versions()}
    try:
        source = X509Source(socket_path=endpoint, timeout_in_seconds=15)
    except Exception as e:
        result.update(error_result(e))
        emit(result)
        return 1
    changed = threading.Event()
    source.subscribe_for_updates(changed.set)
    try:
        first = source.get_x509_context().default_svid
        old = cert_info(first.leaf)
        deadline = time.monotonic() + wait
        updates = 0
        new = None
        while time.monotonic() < deadline:
            changed.wait(timeout=max(0.0, min(1.0, deadline - time.monotonic())))
            if changed.is_set():
                changed.clear()
                updates += 1
            cur = source.get_x509_context().default_svid
            info = cert_info(cur.leaf)
            if info["serial"] != old["serial"]:
                new = info
                new["spiffe_id"] = str(cur.spiffe_id)
                break
        result.update(
            ok=new is not None,
            seen_at=int(time.time()),
            updates=updates,
            spiffe_id=str(first.spiffe_id),
            old=old,
            new=new,
        )
    finally:
        source.close()
    emit(result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
