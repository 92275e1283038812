//! P6 `cold-start`: a server whose store holds 100,000 entries, from exec
//! until `/ready` answers 200 (store open, entries loaded, CA active,
//! listeners bound); the best of a few restarts is not taken: the slowest
//! is reported.

use crate::common::{Ctx, Report, Target, ms, note, rss_mib};
use crate::procs::{Server, TRUST_DOMAIN};
use crate::scale::populate;

const S: &str = "cold-start";

pub async fn run(ctx: &Ctx, server: Option<Server>, report: &mut Report) -> anyhow::Result<()> {
    let total = ctx.size(100_000, 5_000);
    let mut server = match server {
        Some(s) => s,
        None => {
            note(format!("cold-start: creating {total} entries"));
            let s = Server::start().await?;
            let agent = format!("spiffe://{TRUST_DOMAIN}/bench/node/agent");
            populate(&s, total, 0, &agent).await?;
            s
        }
    };
    let restarts = ctx.size(3, 1);
    note(format!(
        "cold-start: {restarts} restarts with {total} entries"
    ));
    let mut worst = 0f64;
    for _ in 0..restarts {
        server.stop();
        let took = server.spawn().await?;
        worst = worst.max(ms(took));
    }
    report.fig(S, "entries", total as f64, "entries", Target::None);
    report.fig(S, "ready_ms", worst, "ms", Target::AtMost(2000.0));
    report.fig(
        S,
        "server_rss_mib",
        rss_mib(server.pid()?)?,
        "MiB",
        Target::AtMost(512.0),
    );
    Ok(())
}
