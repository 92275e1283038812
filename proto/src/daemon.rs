//! The plumbing both Sigil daemons (`sigil-server`, `sigil-agent` and its
//! `helper` mode) share, one concept per module: logs, shutdown signals,
//! task supervision, Unix-socket binding and dialing, atomic file writes, the
//! owner-only data dir and config-file reading. Each daemon keeps its own policy (socket modes,
//! config validation, which tasks to run); the mechanics live here once.

pub mod config;
pub mod connect;
pub mod data_dir;
pub mod error_text;
pub mod files;
pub mod logs;
pub mod path_check;
pub mod signals;
pub mod socket;
pub mod supervise;
#[doc(hidden)]
pub mod umask_child;
