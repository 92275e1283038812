//! Join-token agent IDs. An agent admitted with a join token is
//! `spiffe://<td>/sigil/agent/join_token/<first 32 hex of sha256(token)>`:
//! the ID names the token by its hash, so a spent token never shows up in
//! logs, `agent list` or agent certificates. Earlier builds put the token
//! itself there (the "old form"); stores are migrated at open
//! (`sled::migrate`), and an agent still holding an old-form SVID is
//! recognised by hashing its last segment ([`from_old_form`]) and renewed
//! to its new ID.

use ring::digest;
use sigil_proto::SpiffeId;

/// The path every join-token agent ID starts with.
pub const JOIN_TOKEN_AGENT_PREFIX: &str = "/sigil/agent/join_token/";

/// How many hex characters of the token's SHA-256 the agent ID carries
/// (128 bits).
pub const AGENT_ID_HASH_CHARS: usize = 32;

/// Lowercase hex SHA-256 of `token` (what the store keeps of a token).
pub fn sha256_hex(token: &str) -> String {
    hex::encode(digest::digest(&digest::SHA256, token.as_bytes()))
}

/// The agent ID path for the token whose lowercase hex SHA-256 is
/// `token_hash`.
pub fn agent_path(token_hash: &str) -> String {
    let short = token_hash.get(..AGENT_ID_HASH_CHARS).unwrap_or(token_hash);
    format!("{JOIN_TOKEN_AGENT_PREFIX}{short}")
}

/// For an old-form join-token agent ID (`.../join_token/<token>`), the ID
/// it was migrated to and the token's hash; `None` for any other ID. Every
/// join-token ID has this shape, so callers apply it only to an ID that has
/// no record of its own.
pub fn from_old_form(id: &SpiffeId) -> Option<(SpiffeId, String)> {
    let token = id.path().strip_prefix(JOIN_TOKEN_AGENT_PREFIX)?;
    if token.is_empty() || token.contains('/') {
        return None;
    }
    let token_hash = sha256_hex(token);
    let new = id.trust_domain().spiffe_id(&agent_path(&token_hash)).ok()?;
    Some((new, token_hash))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn old_form_maps_to_the_hash_form() {
        let token = "0123456789abcdef0123456789abcdef";
        let old = SpiffeId::parse(&format!(
            "spiffe://example.org/sigil/agent/join_token/{token}"
        ))
        .unwrap();
        let (new, hash) = from_old_form(&old).unwrap();
        assert_eq!(hash, sha256_hex(token));
        assert_eq!(
            new.as_str(),
            format!(
                "spiffe://example.org/sigil/agent/join_token/{}",
                &hash[..32]
            )
        );
        let other = SpiffeId::parse("spiffe://example.org/sigil/agent/x509pop/abc").unwrap();
        assert_eq!(from_old_form(&other), None);
    }
}
