//! What every TCP listener of both daemons needs to hold under hostile
//! connections, one concept per module: a keyed connection counter with a
//! global and a per-key cap ([`conn_cap`]), defaults sized from the
//! process's open-file limit ([`limits`]), an accept loop that backs off on
//! `EMFILE`/`ENFILE` instead of spinning ([`accept`]), and an HTTP/1 server
//! loop with those caps and a header-read timeout ([`http1`]).

pub mod accept;
pub mod conn_cap;
pub mod http1;
pub mod limits;

pub use accept::Acceptor;
pub use conn_cap::{CapFull, ConnCap, ConnPermit};
pub use limits::{HttpLimits, nofile_soft};
