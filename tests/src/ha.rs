//! Several real `sigil-server`s on one throwaway PostgreSQL database (issue
//! 17, high availability): each server has its own temp dir (`data_dir`,
//! keys, admin socket, agent API and bundle endpoint ports) and the same
//! `[store.postgres]`; agents attach to any of them with
//! [`TestAgent::start`] / [`TestAgent::start_with`].
//!
//! ```ignore
//! let Some(mut ha) = Ha::start(2) else { return }; // skipped: no PostgreSQL
//! let a = TestAgent::start(ha.server(0))?;
//! let b = TestAgent::start(ha.server(1))?;
//! ha.psql("SELECT count(*) FROM sigil_servers");
//! ```
//!
//! [`Ha::start`] returns `None` (after printing SKIPPED) when PostgreSQL is
//! not installed, outside CI ([`crate::pg::cluster`]). Servers start one
//! after the other, each waited for until healthy; stop, kill and restart
//! them through [`TestServer`] (`ha.servers[i].kill()`, `.spawn()`).

use crate::pg::{self, PgCluster};
use crate::{ServerOptions, TestServer};

/// Servers sharing one database of the test process's PostgreSQL cluster.
pub struct Ha {
    pub pg: &'static PgCluster,
    /// The database they share.
    pub db: String,
    pub servers: Vec<TestServer>,
}

impl Ha {
    /// `n` servers with the default options on a new database.
    pub fn start(n: usize) -> Option<Ha> {
        Self::start_with(n, &ServerOptions::default())
    }

    /// `n` servers with `opts` (its `extra` TOML gets the store section
    /// appended) on a new database; panics if one does not start.
    pub fn start_with(n: usize, opts: &ServerOptions) -> Option<Ha> {
        let pg = pg::cluster()?;
        let mut ha = Ha {
            pg,
            db: pg.create_database(),
            servers: Vec::new(),
        };
        for _ in 0..n {
            ha.add_server(opts.clone());
        }
        Some(ha)
    }

    /// Starts one more server on the database; its index.
    pub fn add_server(&mut self, mut opts: ServerOptions) -> usize {
        opts.extra.push_str(&self.store_toml());
        let i = self.servers.len();
        let s = TestServer::start(opts)
            .unwrap_or_else(|e| panic!("server {i} on PostgreSQL did not start: {e:#}"));
        self.servers.push(s);
        i
    }

    /// Server `i`.
    pub fn server(&self, i: usize) -> &TestServer {
        &self.servers[i]
    }

    /// The `[store.postgres]` section every server of this set uses.
    pub fn store_toml(&self) -> String {
        format!(
            "\n[store.postgres]\nconnection_string = \"{}\"\nmax_connections = 8\n",
            self.pg.connection_string(&self.db)
        )
    }

    /// Runs one SQL command on the shared database; its output (`psql -t -A`).
    pub fn psql(&self, sql: &str) -> String {
        self.pg
            .psql(&self.db, sql)
            .unwrap_or_else(|e| panic!("{sql}: {e:#}"))
    }

    /// The instance id server `i` keeps in its `data_dir`.
    pub fn instance_id(&self, i: usize) -> String {
        let path = self.servers[i].data_dir.join("instance_id");
        std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
            .trim()
            .to_string()
    }
}
