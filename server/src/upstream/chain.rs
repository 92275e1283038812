//! The checks an upstream CA must pass before Sigil mints its intermediate
//! under it, at `validate` and at start, so that a bad upstream is refused
//! with a reason instead of producing chains every verifier rejects:
//!
//! - `cert_file`'s first certificate chains, through the rest of
//!   `cert_file`, to one of the `bundle_file` roots (or is one of them),
//!   every signature verified;
//! - every certificate on that path is a CA whose pathLenConstraint leaves
//!   room for what follows it, Sigil's intermediate included: the signing
//!   certificate needs pathLen ≥ 1 or none, the one above it ≥ 2, and so on;
//! - every certificate on that path is valid now;
//! - the key file gives no permission to group or others.
//!
//! URI name constraints are refused in [`super::disk`] (webpki fails closed
//! on them), so a constraint never has to be evaluated against the trust
//! domain here.

use std::os::unix::fs::MetadataExt;
use std::path::Path;

use x509_parser::prelude::*;

/// A refusal: the rule broken, without the file (the caller names it).
pub type Refusal = String;

/// The longest upstream path followed (certificates above the signing one).
const MAX_DEPTH: usize = 8;

/// The key file must be the owner's alone.
pub fn check_key_mode(key_file: &Path) -> Result<(), Refusal> {
    let meta = std::fs::metadata(key_file).map_err(|e| format!("cannot inspect it: {e}"))?;
    let mode = meta.mode() & 0o7777;
    if mode & 0o077 != 0 {
        return Err(format!(
            "mode {mode:04o} gives group or others access to the upstream CA's private key; it \
             must be 0600 or stricter (chmod 0600, owned by the server's user)"
        ));
    }
    Ok(())
}

fn parse(der: &[u8]) -> Result<X509Certificate<'_>, Refusal> {
    X509Certificate::from_der(der)
        .map(|(_, c)| c)
        .map_err(|e| format!("not an X.509 certificate: {e}"))
}

fn when(t: ASN1Time) -> String {
    format!("{t} (unix {})", t.timestamp())
}

/// Validity, CA flag and pathLen of the certificate `below` certificates
/// above the signing one (0: the signing certificate itself).
fn check_one(cert: &X509Certificate<'_>, below: usize, now: i64) -> Result<(), Refusal> {
    let subject = cert.subject();
    let v = cert.validity();
    if v.not_after.timestamp() <= now {
        return Err(format!(
            "the certificate {subject} expired at {}",
            when(v.not_after)
        ));
    }
    if v.not_before.timestamp() > now {
        return Err(format!(
            "the certificate {subject} is not valid until {}",
            when(v.not_before)
        ));
    }
    let bc = cert.basic_constraints().ok().flatten().map(|b| b.value);
    let Some(bc) = bc.filter(|b| b.ca) else {
        return Err(format!(
            "the certificate {subject} is not a CA (basicConstraints cA=true is required)"
        ));
    };
    // CA certificates that may follow it: the ones between it and the
    // signing certificate, then Sigil's own intermediate.
    let needed = below + 1;
    if let Some(len) = bc.path_len_constraint
        && (len as usize) < needed
    {
        return Err(format!(
            "the certificate {subject} has pathLenConstraint {len}, but {needed} CA \
             certificate(s) must follow it (Sigil's intermediate CA signs the SVIDs, so the \
             signing certificate needs pathLen >= 1 or none, and each one above it one more)"
        ));
    }
    Ok(())
}

/// Checks the path from `certs[0]` (the signing certificate) through the
/// rest of `certs` to one of `anchors`.
pub fn check_chain(certs: &[Vec<u8>], anchors: &[Vec<u8>], now: i64) -> Result<(), Refusal> {
    let signing = certs.first().ok_or("no certificate")?;
    let mut current_der: &[u8] = signing;
    let mut current = parse(current_der)?;
    for below in 0..=MAX_DEPTH {
        check_one(&current, below, now)?;
        if anchors.iter().any(|a| a.as_slice() == current_der) {
            return Ok(());
        }
        // Its issuer: a root of the bundle first, else the rest of cert_file.
        let issuer = anchors
            .iter()
            .chain(certs.iter().skip(1))
            .filter(|c| c.as_slice() != current_der)
            .find_map(|der| {
                let c = parse(der).ok()?;
                (c.subject() == current.issuer()
                    && current.verify_signature(Some(c.public_key())).is_ok())
                .then_some((der.as_slice(), c))
            });
        let Some((der, cert)) = issuer else {
            return Err(format!(
                "the certificate {} does not chain to any root of bundle_file: no certificate \
                 in cert_file or bundle_file named {} verifies its signature (bundle_file must \
                 hold the root(s) cert_file was issued under)",
                current.subject(),
                current.issuer()
            ));
        };
        current_der = der;
        current = cert;
    }
    Err(format!(
        "the path from cert_file to a root of bundle_file is longer than {MAX_DEPTH} certificates"
    ))
}
