// Fetches the X.509-SVID from a SPIFFE Workload API with @grpc/grpc-js
// (node:http2, i.e. nghttp2) and @grpc/proto-loader reading Sigil's own
// workload.proto. Run by tests/tests/interop_clients.rs.
//
// Usage: node fetch_x509.js ENDPOINT PROTO_FILE
//   ENDPOINT is unix:///abs/path (the SPIFFE_ENDPOINT_SOCKET form).
//
// Prints one JSON object: the versions in use, the outcome of a call without
// the security header (must be INVALID_ARGUMENT), and the SVID of a call with
// it: SPIFFE ID, every DER certificate of the chain parsed by
// crypto.X509Certificate, whether the key matches the leaf and whether the
// chain verifies to the bundle.
'use strict';

const crypto = require('node:crypto');
const grpc = require('@grpc/grpc-js');
const protoLoader = require('@grpc/proto-loader');

const TIMEOUT_MS = 10000;
// A hard stop, whatever happens below.
setTimeout(() => {
  process.stdout.write(JSON.stringify({ ok: false, error: 'timed out' }) + '\n');
  process.exit(2);
}, 3 * TIMEOUT_MS).unref();

// Splits concatenated DER certificates (SEQUENCE, definite length).
function splitDer(buf) {
  const out = [];
  let i = 0;
  while (i < buf.length) {
    if (buf[i] !== 0x30) throw new Error(`not a DER SEQUENCE at ${i}`);
    let len = buf[i + 1];
    let hdr = 2;
    if (len & 0x80) {
      const n = len & 0x7f;
      if (n < 1 || n > 4) throw new Error(`bad DER length at ${i}`);
      len = 0;
      for (let k = 0; k < n; k++) len = len * 256 + buf[i + 2 + k];
      hdr += n;
    }
    if (i + hdr + len > buf.length) throw new Error(`truncated DER at ${i}`);
    out.push(buf.subarray(i, i + hdr + len));
    i += hdr + len;
  }
  return out;
}

function versionOf(pkg) {
  return require(`${pkg}/package.json`).version;
}

function firstMessage(client, metadata) {
  return new Promise((resolve) => {
    const call = client.FetchX509SVID({}, metadata, { deadline: Date.now() + TIMEOUT_MS });
    let done = false;
    call.on('data', (msg) => {
      if (done) return;
      done = true;
      resolve({ ok: true, msg });
      call.cancel();
    });
    call.on('error', (err) => {
      if (done) return;
      done = true;
      resolve({ ok: false, grpc_code: grpc.status[err.code], grpc_details: err.details });
    });
    call.on('end', () => {
      if (done) return;
      done = true;
      resolve({ ok: false, error: 'stream ended without a message' });
    });
  });
}

function certInfo(c) {
  return {
    subject_alt_name: c.subjectAltName,
    serial: c.serialNumber.toLowerCase(),
    ca: c.ca,
    valid_to: c.validTo,
  };
}

async function main() {
  const [endpoint, protoFile] = process.argv.slice(2);
  const def = protoLoader.loadSync(protoFile, {
    keepCase: true,
    longs: String,
    defaults: true,
  });
  const proto = grpc.loadPackageDefinition(def);
  const client = new proto.SpiffeWorkloadAPI(endpoint, grpc.credentials.createInsecure());
  const result = {
    versions: {
      node: process.versions.node,
      nghttp2: process.versions.nghttp2,
      openssl: process.versions.openssl,
      '@grpc/grpc-js': versionOf('@grpc/grpc-js'),
      '@grpc/proto-loader': versionOf('@grpc/proto-loader'),
    },
  };

  const bare = await firstMessage(client, new grpc.Metadata());
  delete bare.msg;
  result.no_header = bare;

  const md = new grpc.Metadata();
  md.set('workload.spiffe.io', 'true');
  const r = await firstMessage(client, md);
  if (!r.ok) {
    Object.assign(result, r, { ok: false });
  } else {
    const svid = r.msg.svids[0];
    const chain = splitDer(svid.x509_svid).map((d) => new crypto.X509Certificate(d));
    const bundle = splitDer(svid.bundle).map((d) => new crypto.X509Certificate(d));
    const key = crypto.createPrivateKey({ key: svid.x509_svid_key, format: 'der', type: 'pkcs8' });
    const top = chain[chain.length - 1];
    result.ok = true;
    result.svid_count = r.msg.svids.length;
    result.spiffe_id = svid.spiffe_id;
    result.chain = chain.map(certInfo);
    result.key_matches_leaf = chain[0].checkPrivateKey(key);
    result.chains_to_bundle = bundle.some((ca) => top.checkIssued(ca) && top.verify(ca.publicKey));
    result.bundle_len = bundle.length;
  }
  client.close();
  process.stdout.write(JSON.stringify(result) + '\n');
}

main().catch((e) => {
  process.stdout.write(JSON.stringify({ ok: false, error: String(e && e.stack ? e.stack : e) }) + '\n');
  process.exit(1);
});
