//! Pure functions that turn an identity and a clock reading into rcgen
//! certificate parameters following the X.509-SVID profile (DESIGN §5):
//! leaves get one URI SAN, cA=false, critical keyUsage digitalSignature, EKU
//! serverAuth+clientAuth, a backdated notBefore and an expiry capped at the
//! CA's; signing certificates get cA=true, keyCertSign+cRLSign and the trust
//! domain ID as their only URI SAN.

use std::time::Duration;

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyUsagePurpose, SanType, SerialNumber,
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

/// Parameters of an X.509-SVID leaf.
pub fn leaf_params(
    spiffe_id: &SpiffeId,
    dns_names: &[String],
    not_before: OffsetDateTime,
    not_after: OffsetDateTime,
    serial: SerialNumber,
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
    p.is_ca = IsCa::ExplicitNoCa;
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

    #[test]
    fn serials_are_positive_and_non_zero() {
        assert_eq!(serial_from_random([0xff; 16]).to_bytes()[0], 0x7f);
        assert_eq!(serial_from_random([0; 16]).to_bytes()[0], 1);
        assert_eq!(serial_from_random([0x80; 16]).to_bytes().len(), 16);
    }
}
