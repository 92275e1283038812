//! What the CA does at start with the keys its journal names. The journal is
//! the truth about which keys exist: a key it names that cannot be read or
//! parsed stops the start, naming the file and the cause, instead of being
//! replaced, because a new CA is trusted by no agent and the old key may
//! still back a published prepared CA or live SVIDs. A new CA is minted only
//! when the journal names no unexpired active CA (first start, or the active
//! one expired while the server was down). An active key that is truly gone
//! stops the start too; if a prepared CA is usable the message says so, and
//! the operator may switch to it at start (`run --activate-prepared`, what
//! `ca activate` does on a running server).

use tracing::warn;

use super::CaError;
use crate::key_manager::{KeyError, KeyManager};
use crate::store::{CaJournal, CaSlot, SlotId, SlotState};

/// Prefix of every CA key id, so that cleanup never touches other keys.
pub const KEY_PREFIX: &str = "ca-";
/// Prefix of every JWT signing key id.
pub const JWT_KEY_PREFIX: &str = "jwt-";

/// Loads every CA key file there is, before the store is opened (opening
/// it writes), so that an unreadable or corrupt key stops the start with
/// nothing in the data dir changed.
pub fn check_key_files(keys: &dyn KeyManager) -> Result<(), CaError> {
    for id in keys.list()? {
        if (id.starts_with(KEY_PREFIX) || id.starts_with(JWT_KEY_PREFIX))
            && let Err(e) = keys.load(&id)
            && !matches!(e, KeyError::NotFound { .. })
        {
            return Err(unusable(&format!("the CA key {},", keys.location(&id)), &e));
        }
    }
    Ok(())
}

fn unusable(what: &str, e: &KeyError) -> CaError {
    CaError::Start(format!(
        "{what} cannot be loaded: {e}. The server does not replace a CA key it cannot read \
         (agents trust only the published CAs): fix the file (permissions, disk) or restore it \
         from a backup, then start again"
    ))
}

/// Checks that every key the journal names loads. Returns the prepared slot
/// to activate when the active key is gone and `activate_prepared` allows
/// switching to a usable prepared CA.
pub fn check_keys(
    keys: &dyn KeyManager,
    journal: &CaJournal,
    now: i64,
    activate_prepared: bool,
) -> Result<Option<SlotId>, CaError> {
    let mut missing_active = None;
    for s in &journal.slots {
        match keys.load(&s.key_id) {
            Ok(_) => {}
            Err(KeyError::NotFound { .. }) if s.state == SlotState::Active && now < s.not_after => {
                missing_active = Some(s);
            }
            Err(KeyError::NotFound { .. }) => warn!(
                slot = s.slot.name(),
                serial = %s.serial,
                key = %keys.location(&s.key_id),
                "a CA key the journal names is missing; that CA can no longer sign"
            ),
            Err(e) => {
                return Err(unusable(
                    &format!(
                        "the key of the CA in slot {} (serial {}), {},",
                        s.slot.name(),
                        s.serial,
                        keys.location(&s.key_id)
                    ),
                    &e,
                ));
            }
        }
    }
    let Some(active) = missing_active else {
        return Ok(None);
    };
    let prepared = journal.prepared().filter(|p| keys.load(&p.key_id).is_ok());
    match prepared {
        Some(p) if activate_prepared => {
            warn!(
                lost = %active.serial,
                prepared = %p.serial,
                "the active CA key is missing; activating the prepared CA as asked"
            );
            Ok(Some(p.slot))
        }
        _ => Err(CaError::Start(missing_message(keys, active, prepared))),
    }
}

fn missing_message(keys: &dyn KeyManager, active: &CaSlot, prepared: Option<&CaSlot>) -> String {
    let mut m = format!(
        "the key of the active CA in slot {} (serial {}), {}, is missing although the CA \
         journal names it; the server does not mint a new CA in its place because no agent \
         trusts one. Restore the file from a backup and start again",
        active.slot.name(),
        active.serial,
        keys.location(&active.key_id)
    );
    if let Some(p) = prepared {
        m.push_str(&format!(
            ", or switch to the prepared CA in slot {} (serial {}, published since {} unix; \
             its key loads): start with `sigil-server run --activate-prepared`, which does what \
             `sigil-server ca activate` does; agents that have not fetched the bundle since then \
             must re-bootstrap",
            p.slot.name(),
            p.serial,
            p.not_before
        ));
    }
    m
}

/// Deletes CA keys that no journal slot references (left by a crash between
/// key generation and the journal write).
pub fn remove_orphan_keys(keys: &dyn KeyManager, journal: &CaJournal) -> Result<(), CaError> {
    for id in keys.list()? {
        if id.starts_with(KEY_PREFIX) && !journal.slots.iter().any(|s| s.key_id == id) {
            warn!(key_id = %id, "removing CA key not referenced by the CA journal");
            keys.delete(&id)?;
        }
    }
    Ok(())
}
