//! The `join_token` node attestor, agent half: the payload is the token
//! the operator generated with `sigil-server token generate`, as UTF-8. The
//! server spends it on first use; there are no challenges. The token is a
//! secret until then, so `Debug` and errors never show it.

use std::fmt;

use sigil_proto::attestation::{ChannelBinding, JOIN_TOKEN, is_valid_join_token};

use super::{AttestorError, NodeAttestorClient};

/// Presents a join token.
pub struct JoinTokenClient {
    token: String,
}

impl JoinTokenClient {
    /// A client presenting `token`. Its form is checked when the payload is
    /// built.
    pub fn new(token: String) -> Self {
        JoinTokenClient { token }
    }
}

impl fmt::Debug for JoinTokenClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JoinTokenClient")
            .field("token", &"<redacted>")
            .finish()
    }
}

impl NodeAttestorClient for JoinTokenClient {
    fn name(&self) -> &'static str {
        JOIN_TOKEN
    }

    fn payload(&self) -> Result<Vec<u8>, AttestorError> {
        if !is_valid_join_token(&self.token) {
            return Err(AttestorError::MalformedJoinToken {
                len: self.token.len(),
            });
        }
        Ok(self.token.as_bytes().to_vec())
    }

    fn answer(&self, _challenge: &[u8], _: &ChannelBinding) -> Result<Vec<u8>, AttestorError> {
        Err(AttestorError::NoChallenges {
            attestor: JOIN_TOKEN,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TOKEN: &str = "0123456789abcdef0123456789abcdef";

    #[test]
    fn payload_is_the_token() {
        let client = JoinTokenClient::new(TOKEN.to_string());
        assert_eq!(client.name(), "join_token");
        assert_eq!(client.payload().unwrap(), TOKEN.as_bytes());
    }

    #[test]
    fn debug_redacts_the_token() {
        let client = JoinTokenClient::new(TOKEN.to_string());
        let debug = format!("{client:?}");
        assert!(!debug.contains(TOKEN), "{debug}");
        assert!(!debug.contains("0123456789"), "{debug}");
        assert!(debug.contains("redacted"), "{debug}");
        let pretty = format!("{client:#?}");
        assert!(!pretty.contains(TOKEN), "{pretty}");
    }

    #[test]
    fn there_are_no_challenges() {
        let client = JoinTokenClient::new(TOKEN.to_string());
        let err = client
            .answer(&[0; 32], &ChannelBinding([0; 32]))
            .unwrap_err();
        assert_eq!(err.to_string(), "join_token has no challenges");
    }

    #[test]
    fn malformed_tokens_are_refused_without_echo() {
        for token in ["", "secret/token", "secret token\n", &"s".repeat(129)] {
            let err = JoinTokenClient::new(token.to_string())
                .payload()
                .unwrap_err();
            assert!(
                matches!(err, AttestorError::MalformedJoinToken { .. }),
                "{err:?}"
            );
            let message = err.to_string();
            assert!(!message.contains("secret"), "{message}");
            assert!(!message.contains("sss"), "{message}");
        }
    }
}
