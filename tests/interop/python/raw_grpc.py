"""Raw grpcio calls to the Workload API, without py-spiffe's client wrapper.

Usage: raw_grpc.py ENDPOINT

1. py-spiffe's generated stub, FetchX509SVID *without* the
   `workload.spiffe.io: true` metadata;
2. a hand-rolled unary-stream call on `/SpiffeWorkloadAPI/FetchX509SVID` with
   an empty request and no metadata;
3. the generated stub *with* the metadata (the control: same channel kind,
   the call succeeds).

Prints {"stub_no_header": {...}, "raw_no_header": {...}, "stub_with_header": {...}}.
"""

import sys

import grpc

from common import emit, versions

TIMEOUT = 10.0


def first_message(call):
    try:
        msg = next(call)
        return {"ok": True, "message": msg}
    except grpc.RpcError as e:
        return {"ok": False, "grpc_code": e.code().name, "grpc_details": e.details()}
    finally:
        call.cancel()


def main():
    endpoint = sys.argv[1]
    from spiffe._proto import workload_pb2, workload_pb2_grpc

    target = "unix:" + endpoint[len("unix:"):] if endpoint.startswith("unix:") else "unix:" + endpoint
    result = {"versions": versions()}
    with grpc.insecure_channel(target) as channel:
        stub = workload_pb2_grpc.SpiffeWorkloadAPIStub(channel)

        r = first_message(stub.FetchX509SVID(workload_pb2.X509SVIDRequest(), timeout=TIMEOUT))
        r.pop("message", None)
        result["stub_no_header"] = r

        raw = channel.unary_stream(
            "/SpiffeWorkloadAPI/FetchX509SVID",
            request_serializer=lambda b: b,
            response_deserializer=lambda b: b,
        )
        r = first_message(raw(b"", timeout=TIMEOUT))
        if r.get("ok"):
            r["message_len"] = len(r.pop("message"))
        result["raw_no_header"] = r

        r = first_message(
            stub.FetchX509SVID(
                workload_pb2.X509SVIDRequest(),
                timeout=TIMEOUT,
                metadata=(("workload.spiffe.io", "true"),),
            )
        )
        if r.get("ok"):
            r["spiffe_ids"] = [s.spiffe_id for s in r.pop("message").svids]
        result["stub_with_header"] = r
    emit(result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
