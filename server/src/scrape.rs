//! The scrape-time refresher: reads the active CA, the registry and the
//! server's own SVID when `/metrics` is scraped and sets the gauges
//! [`crate::metrics`] names.

use std::sync::Arc;

use sigil_proto::clock::{Clock, unix_seconds};

use crate::ca::manager::CaManager;
use crate::metrics;
use crate::registry::Registry;
use crate::server_svid::ServerSvid;

/// Sets the gauges computed at scrape time.
pub fn refresher(
    ca: Arc<CaManager>,
    registry: Arc<Registry>,
    svid: Arc<ServerSvid>,
    clock: Arc<dyn Clock>,
) -> sigil_proto::health::Refresh {
    Arc::new(move || {
        let now = unix_seconds(clock.now());
        metrics::scrape_gauges(
            registry.count(),
            ca.active().not_after() - now,
            svid.not_after() - now,
        );
    })
}
