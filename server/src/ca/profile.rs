//! Pure functions that turn an identity and a clock reading into rcgen
//! certificate parameters following the X.509-SVID profile (DESIGN §5):
//! leaves get one URI SAN, cA=false, critical keyUsage digitalSignature, EKU
//! serverAuth+clientAuth, a backdated notBefore and an expiry capped at the
//! CA's; signing certificates get cA=true, keyCertSign+cRLSign and the trust
//! domain ID as their only URI SAN.

use std::time::Duration;

use rcgen::{
    BasicConstraints, CertificateParams, CustomExtension, DistinguishedName, DnType,
    ExtendedKeyUsagePurpose, IsCa, KeyUsagePurpose, SanType, SerialNumber,
};
use sigil_proto::{SpiffeId, TrustDomain};
use time::OffsetDateTime;

use super::CaError;

/// How far notBefore is backdated, to absorb clock skew between hosts.
pub const BACKDATE: Duration = Duration::from_secs(10);

/// A positive, non-zero 128-bit serial from 16 random bytes.
pub fn serial_from_random(mut bytes: [u8; 16]) -> SerialNumber {
    bytes[0] &= 0x7f;
    if bytes[0] == 0 {
        bytes[0] = 1;
    }
    SerialNumber::from_slice(&bytes)
}

fn uri(id: &SpiffeId) -> Result<SanType, CaError> {
    let ia5 = id
        .as_str()
        .to_string()
        .try_into()
        .map_err(|e: rcgen::Error| CaError::Params(e.to_string()))?;
    Ok(SanType::URI(ia5))
}

/// Validity of a leaf issued at `now` for `ttl` by a CA valid in
/// `[ca_not_before, ca_not_after]`: backdated by [`BACKDATE`] (not before the
/// CA), and cut at the CA's expiry.
pub fn leaf_validity(
    now: OffsetDateTime,
    ttl: Duration,
    ca_not_before: OffsetDateTime,
    ca_not_after: OffsetDateTime,
) -> Result<(OffsetDateTime, OffsetDateTime), CaError> {
    if now >= ca_not_after {
        return Err(CaError::Expired {
            not_after: ca_not_after.unix_timestamp(),
        });
    }
    let not_before = (now - BACKDATE).max(ca_not_before);
    let not_after = (now + ttl).min(ca_not_after);
    Ok((not_before, not_after))
}

/// OID of the basicConstraints extension (RFC 5280 §4.2.1.9).
const OID_BASIC_CONSTRAINTS: &[u64] = &[2, 5, 29, 19];
/// OID of the subjectKeyIdentifier extension (RFC 5280 §4.2.1.2).
const OID_SUBJECT_KEY_IDENTIFIER: &[u64] = &[2, 5, 29, 14];

/// The leaf's basicConstraints value: an empty SEQUENCE. `cA` is
/// `BOOLEAN DEFAULT FALSE`, and DER never encodes a DEFAULT value (X.690
/// §11.5), so "not a CA" is `30 00`, not `30 03 01 01 00` (which is what
/// rcgen's `IsCa::ExplicitNoCa` writes, and what Python `cryptography`
/// refuses).
const LEAF_BASIC_CONSTRAINTS: [u8; 2] = [0x30, 0x00];

/// The subject key identifier of a key: the first 160 bits of the SHA-256
/// of its DER SubjectPublicKeyInfo (RFC 7093 §2 method 1 applied to the
/// whole SPKI; the same value rcgen derives for CA certificates).
pub fn key_identifier(subject_public_key_info: &[u8]) -> Vec<u8> {
    let digest = ring::digest::digest(&ring::digest::SHA256, subject_public_key_info);
    digest.as_ref()[..20].to_vec()
}

/// DER of an OCTET STRING holding `bytes` (short form: `bytes` is < 128 bytes).
fn octet_string(bytes: &[u8]) -> Vec<u8> {
    debug_assert!(bytes.len() < 0x80);
    let mut der = Vec::with_capacity(2 + bytes.len());
    der.push(0x04);
    // Key identifiers are 20 bytes; the short length form always fits.
    der.push(bytes.len() as u8);
    der.extend_from_slice(bytes);
    der
}

/// Parameters of an X.509-SVID leaf for the key whose DER
/// SubjectPublicKeyInfo is `subject_public_key_info`.
pub fn leaf_params(
    spiffe_id: &SpiffeId,
    dns_names: &[String],
    not_before: OffsetDateTime,
    not_after: OffsetDateTime,
    serial: SerialNumber,
    subject_public_key_info: &[u8],
) -> Result<CertificateParams, CaError> {
    if spiffe_id.is_trust_domain_id() {
        return Err(CaError::Params(format!(
            "{spiffe_id} is a trust domain ID; an X.509-SVID needs a path"
        )));
    }
    let mut p = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, "Sigil");
    if let Some(first) = dns_names.first() {
        dn.push(DnType::CommonName, first.as_str());
    }
    p.distinguished_name = dn;
    p.subject_alt_names.push(uri(spiffe_id)?);
    for name in dns_names {
        let ia5 = name
            .clone()
            .try_into()
            .map_err(|e: rcgen::Error| CaError::Params(format!("DNS name {name:?}: {e}")))?;
        p.subject_alt_names.push(SanType::DnsName(ia5));
    }
    // basicConstraints (critical, cA absent = false) and the subject key
    // identifier are written by hand: rcgen's `ExplicitNoCa` encodes the
    // DEFAULT cA=FALSE, which is not DER.
    p.is_ca = IsCa::NoCa;
    let mut bc =
        CustomExtension::from_oid_content(OID_BASIC_CONSTRAINTS, LEAF_BASIC_CONSTRAINTS.to_vec());
    bc.set_criticality(true);
    p.custom_extensions.push(bc);
    p.custom_extensions.push(CustomExtension::from_oid_content(
        OID_SUBJECT_KEY_IDENTIFIER,
        octet_string(&key_identifier(subject_public_key_info)),
    ));
    p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    p.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    p.use_authority_key_identifier_extension = true;
    p.not_before = not_before;
    p.not_after = not_after;
    p.serial_number = Some(serial);
    Ok(p)
}

/// Parameters of a signing (CA) certificate for `td`. `intermediate` adds an
/// authority key identifier (the issuer is an upstream CA).
pub fn ca_params(
    td: &TrustDomain,
    not_before: OffsetDateTime,
    not_after: OffsetDateTime,
    serial: SerialNumber,
    intermediate: bool,
) -> Result<CertificateParams, CaError> {
    let mut p = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, "Sigil");
    // Each CA gets a distinct subject so that old and new CAs never share an
    // issuer name during rotation.
    let short: String = hex::encode(serial.to_bytes()).chars().take(16).collect();
    dn.push(DnType::CommonName, format!("Sigil CA {td} {short}"));
    p.distinguished_name = dn;
    p.subject_alt_names.push(uri(&td.id())?);
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    p.use_authority_key_identifier_extension = intermediate;
    p.not_before = not_before;
    p.not_after = not_after;
    p.serial_number = Some(serial);
    Ok(p)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: i64) -> OffsetDateTime {
        OffsetDateTime::from_unix_timestamp(s).unwrap()
    }

    #[test]
    fn validity_is_backdated_and_capped() {
        let (nb, na) = leaf_validity(t(1000), Duration::from_secs(3600), t(0), t(100_000)).unwrap();
        assert_eq!((nb, na), (t(990), t(4600)));
        // Capped at the CA's expiry.
        let (_, na) = leaf_validity(t(1000), Duration::from_secs(3600), t(0), t(2000)).unwrap();
        assert_eq!(na, t(2000));
        // Never before the CA's notBefore.
        let (nb, _) = leaf_validity(t(1000), Duration::from_secs(60), t(995), t(2000)).unwrap();
        assert_eq!(nb, t(995));
        // An expired CA signs nothing.
        assert!(matches!(
            leaf_validity(t(2000), Duration::from_secs(60), t(0), t(2000)),
            Err(CaError::Expired { .. })
        ));
    }

    /// The DER of the extension `oid` in `cert` and whether it is critical.
    fn extension(cert: &[u8], oid: &str) -> (bool, Vec<u8>) {
        let (_, c) = x509_parser::parse_x509_certificate(cert).unwrap();
        let ext = c
            .extensions()
            .iter()
            .find(|e| e.oid.to_id_string() == oid)
            .unwrap_or_else(|| panic!("no extension {oid}"));
        (ext.critical, ext.value.to_vec())
    }

    #[test]
    fn leaf_basic_constraints_is_canonical_der_and_the_ski_names_the_key() {
        let ca_key = rcgen::KeyPair::generate().unwrap();
        let td: TrustDomain = "example.org".parse().unwrap();
        let ca = ca_params(&td, t(0), t(100_000), serial_from_random([1; 16]), false)
            .unwrap()
            .self_signed(&ca_key)
            .unwrap();
        let issuer = rcgen::Issuer::from_ca_cert_der(ca.der(), &ca_key).unwrap();
        let leaf_key = rcgen::KeyPair::generate().unwrap();
        let id: SpiffeId = "spiffe://example.org/w".parse().unwrap();
        let spki = rcgen::PublicKeyData::subject_public_key_info(&leaf_key);
        let leaf = leaf_params(&id, &[], t(10), t(1000), serial_from_random([2; 16]), &spki)
            .unwrap()
            .signed_by(&leaf_key, &issuer)
            .unwrap();
        // cA=FALSE is the DEFAULT: DER encodes an empty SEQUENCE, never
        // `30 03 01 01 00`.
        assert_eq!(extension(leaf.der(), "2.5.29.19"), (true, vec![0x30, 0x00]));
        let (critical, ski) = extension(leaf.der(), "2.5.29.14");
        assert!(!critical);
        let mut want = vec![0x04, 20];
        want.extend(key_identifier(&spki));
        assert_eq!(ski, want);
        let (_, c) = x509_parser::parse_x509_certificate(leaf.der()).unwrap();
        assert!(!c.is_ca());
        // The profile check every Sigil verifier runs accepts it.
        sigil_proto::check_leaf(leaf.der()).unwrap();
        // The CA keeps cA=TRUE (encoded: TRUE is not the DEFAULT).
        assert_eq!(
            extension(ca.der(), "2.5.29.19"),
            (true, vec![0x30, 0x03, 0x01, 0x01, 0xff])
        );
    }

    #[test]
    fn serials_are_positive_and_non_zero() {
        assert_eq!(serial_from_random([0xff; 16]).to_bytes()[0], 0x7f);
        assert_eq!(serial_from_random([0; 16]).to_bytes()[0], 1);
        assert_eq!(serial_from_random([0x80; 16]).to_bytes().len(), 16);
    }
}
