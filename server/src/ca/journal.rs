//! The CA journal's records: the two CA key slots (A and B), each moving
//! PREPARED → ACTIVE → OLD, the two JWT signing key slots beside them (same
//! lifecycle), and the versioned journal that holds them. The
//! CA manager decides the transitions; the store persists the journal with
//! compare-and-swap on `version`. This file depends on nothing in the crate,
//! so the store can import it without a circle.

use serde::{Deserialize, Serialize};

/// Which of the two CA key slots.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum SlotId {
    A,
    B,
}

impl SlotId {
    pub fn other(self) -> SlotId {
        match self {
            SlotId::A => SlotId::B,
            SlotId::B => SlotId::A,
        }
    }
    pub fn name(self) -> &'static str {
        match self {
            SlotId::A => "a",
            SlotId::B => "b",
        }
    }
}

/// Lifecycle of a CA key slot: PREPARED → ACTIVE → OLD.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum SlotState {
    Prepared,
    Active,
    Old,
}

/// One CA key slot as recorded in the journal. The private key is not here:
/// it lives with the key manager under `key_id`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CaSlot {
    pub slot: SlotId,
    pub state: SlotState,
    /// Name of the key in the key manager.
    pub key_id: String,
    /// DER: the CA certificate first, then any upstream intermediates.
    pub cert_chain: Vec<Vec<u8>>,
    /// Lowercase hex serial of the CA certificate.
    pub serial: String,
    pub not_before: i64,
    pub not_after: i64,
    pub tainted: bool,
    /// Unix seconds of the taint, if tainted.
    #[serde(default)]
    pub tainted_at: Option<i64>,
}

/// One JWT signing key slot. Like a CA slot, the private key lives with the
/// key manager under `key_id`; the journal holds the public key and `kid`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JwtSlot {
    pub slot: SlotId,
    pub state: SlotState,
    /// Name of the key in the key manager.
    pub key_id: String,
    /// The JWS `kid`: random (128 bits, hex), never reused.
    pub kid: String,
    /// SubjectPublicKeyInfo DER.
    pub public_key: Vec<u8>,
    /// Unix seconds: the key's own timeline (minted, and end of signing).
    pub not_before: i64,
    pub not_after: i64,
    pub tainted: bool,
    #[serde(default)]
    pub tainted_at: Option<i64>,
}

/// The CA journal: the state of both slots, versioned for compare-and-swap.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CaJournal {
    /// Incremented by the store on every successful write.
    pub version: u64,
    pub slots: Vec<CaSlot>,
    /// The JWT signing key slots (empty in a journal written before
    /// JWT-SVIDs existed: the CA manager then mints one at start).
    #[serde(default)]
    pub jwt_slots: Vec<JwtSlot>,
}

impl CaJournal {
    pub fn slot(&self, id: SlotId) -> Option<&CaSlot> {
        self.slots.iter().find(|s| s.slot == id)
    }
    pub fn active(&self) -> Option<&CaSlot> {
        self.slots.iter().find(|s| s.state == SlotState::Active)
    }
    pub fn prepared(&self) -> Option<&CaSlot> {
        self.slots.iter().find(|s| s.state == SlotState::Prepared)
    }
    pub fn jwt_slot(&self, id: SlotId) -> Option<&JwtSlot> {
        self.jwt_slots.iter().find(|s| s.slot == id)
    }
    pub fn jwt_active(&self) -> Option<&JwtSlot> {
        self.jwt_slots.iter().find(|s| s.state == SlotState::Active)
    }
    pub fn jwt_prepared(&self) -> Option<&JwtSlot> {
        self.jwt_slots
            .iter()
            .find(|s| s.state == SlotState::Prepared)
    }
}
