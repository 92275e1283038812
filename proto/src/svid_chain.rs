//! The certificate chain an X.509-SVID is handed out with: the leaf, then
//! the intermediates, never a root. The server's signing chain ends in its
//! CA, which is self-signed when there is no upstream CA; that root belongs
//! in the trust bundle only (consumers must not send it, and no `svid.pem`
//! may hold it). The agent drops it once in its cache (the Workload API, the
//! helper's files, `api fetch x509 --write`); the server in `x509 mint`.

/// `chain` (leaf first) without its self-signed certificates after the leaf.
pub fn leaf_and_intermediates(chain: &[Vec<u8>]) -> Vec<Vec<u8>> {
    chain
        .iter()
        .enumerate()
        .filter(|(i, der)| *i == 0 || !is_self_signed(der))
        .map(|(_, der)| der.clone())
        .collect()
}

/// Subject equals issuer and the certificate verifies under its own key.
fn is_self_signed(der: &[u8]) -> bool {
    x509_parser::parse_x509_certificate(der).is_ok_and(|(_, c)| {
        c.subject().as_raw() == c.issuer().as_raw() && c.verify_signature(None).is_ok()
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_pki::TestCa;

    #[test]
    fn the_root_is_dropped_and_intermediates_kept_in_order() {
        let root = TestCa::new("example.org");
        let inter = root.intermediate("example.org");
        let (leaf, _) = inter.leaf("spiffe://example.org/w");
        let chain = vec![leaf.clone(), inter.der.clone(), root.der.clone()];
        assert_eq!(
            leaf_and_intermediates(&chain),
            vec![leaf.clone(), inter.der.clone()]
        );
        let (leaf, _) = root.leaf("spiffe://example.org/w");
        assert_eq!(
            leaf_and_intermediates(&[leaf.clone(), root.der.clone()]),
            vec![leaf]
        );
    }
}
