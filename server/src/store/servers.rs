//! Server records as stored (issue 17): one per server instance sharing the
//! store, keyed by its stable instance id ([`crate::instance_id`]). Each
//! holds that server's own CA journal (its key slots; the keys stay on its
//! own disk or with its upstream), when it started and was last seen
//! (heartbeat), and whether an operator forgot it (`server forget`). The own
//! trust bundle is the union of the records' published CAs and JWT keys
//! (`crate::ca::union`).

use serde::{Deserialize, Serialize};

use crate::ca::journal::CaJournal;

/// One server instance sharing the store.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServerRecord {
    /// 32 lowercase hex characters.
    pub instance_id: String,
    /// This server's key slots (CA and JWT), versioned for compare-and-swap.
    pub journal: CaJournal,
    /// Unix seconds: when the record was created.
    pub started_at: i64,
    /// Unix seconds: the server's last heartbeat.
    pub last_seen: i64,
    /// Unix seconds: when an operator forgot the server (`server forget`).
    /// Its CAs and JWT keys stay in the bundle until they expire; the record
    /// is removed after that.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub forgotten_at: Option<i64>,
}
