//! Sigil node agent as a library: the parts of the agent the `sigil-agent`
//! binary and the end-to-end tests share. So far: node attestation, the
//! agent's half of proving which node it runs on.

pub mod node_attestor;
