//! An agent's entry sync stream as a test sees it: open `SyncEntries` (a
//! full set, or resumed from a revision) with a real agent identity, collect
//! what the server sends with bounded waits, and read it back as pages,
//! upserts and deletes.

use std::time::Duration;

use sigil_proto::agent_api::{self as pb, sync_entries_response::Kind};
use sigil_proto::attestation::JOIN_TOKEN;
use tonic::Streaming;

use crate::TestServer;
use crate::agent_client::{AgentIdentity, attest, identity, key_and_csr};

/// A join-token agent attested against `s`.
pub async fn attested_agent(s: &TestServer) -> AgentIdentity {
    let generated = s.cli_json(&["token", "generate"]);
    let token = generated["token"].as_str().expect("token").as_bytes();
    let mut client = s.agent_client(None).await.expect("agent API");
    let (key, csr) = key_and_csr();
    let svid = attest(&mut client, JOIN_TOKEN, token.to_vec(), csr).await;
    identity(&key, &svid.expect("join-token attestation"))
}

/// Creates `n` entries under `parent` through one `entry create --data`
/// (SPIFFE IDs `spiffe://<td>/<prefix>/<i>`); returns their ids.
pub fn create_entries(
    s: &TestServer,
    parent: &str,
    prefix: &str,
    n: usize,
    expires_at: Option<i64>,
) -> Vec<String> {
    let expiry = expires_at.map_or(String::new(), |t| format!(r#","expires_at":{t}"#));
    let items: Vec<String> = (0..n)
        .map(|i| {
            format!(
                r#"{{"spiffe_id":"spiffe://{}/{prefix}/{i}","parent_id":"{parent}","selectors":[{{"type":"unix","value":"uid:{i}"}}]{expiry}}}"#,
                s.trust_domain
            )
        })
        .collect();
    let file = s.dir.path().join(format!("{prefix}.json"));
    std::fs::write(&file, format!(r#"{{"entries":[{}]}}"#, items.join(","))).expect("write");
    let path = file.to_str().expect("utf-8 path");
    let out = s.cli_json(&["entry", "create", "--data", path]);
    let ids: Vec<String> = out["entries"]
        .as_array()
        .expect("entries")
        .iter()
        .map(|e| e["id"].as_str().expect("id").to_string())
        .collect();
    assert_eq!(ids.len(), n, "created {out}");
    ids
}

/// One open sync stream and everything it has sent so far.
pub struct SyncStream {
    stream: Streaming<pb::SyncEntriesResponse>,
    pub got: Vec<Kind>,
}

impl SyncStream {
    /// Opens a stream as `who`: the full set (`since` 0) or a resume.
    pub async fn open(s: &TestServer, who: &AgentIdentity, since: u64) -> SyncStream {
        let mut client = s.agent_client(Some(who)).await.expect("agent API");
        let request = pb::SyncEntriesRequest {
            since_revision: since,
            page_size: 0,
        };
        let stream = client.sync_entries(request).await.expect("sync");
        SyncStream {
            stream: stream.into_inner(),
            got: Vec::new(),
        }
    }

    /// Reads until `done` holds for what was received (true), or `limit`
    /// passes or the stream ends (false).
    pub async fn wait_for(&mut self, limit: Duration, done: impl Fn(&SyncStream) -> bool) -> bool {
        let deadline = tokio::time::Instant::now() + limit;
        while !done(self) {
            match tokio::time::timeout_at(deadline, self.stream.message()).await {
                Ok(Ok(Some(m))) => self.got.extend(m.kind),
                _ => return false,
            }
        }
        true
    }

    /// The revision of the last page of a full set, once received.
    pub fn full_revision(&self) -> Option<u64> {
        self.got.iter().find_map(|k| match k {
            Kind::Page(p) if p.last => Some(p.revision),
            _ => None,
        })
    }

    /// How many pages arrived.
    pub fn pages(&self) -> usize {
        let pages = self.got.iter().filter(|k| matches!(k, Kind::Page(_)));
        pages.count()
    }

    /// Ids of the entries in the pages.
    pub fn page_ids(&self) -> Vec<String> {
        let mut ids = Vec::new();
        for k in &self.got {
            if let Kind::Page(p) = k {
                ids.extend(p.entries.iter().map(|e| e.id.clone()));
            }
        }
        ids
    }

    /// Ids of the changes of `kind`, in the order sent.
    pub fn change_ids(&self, kind: pb::entry_change::Kind) -> Vec<String> {
        let matching = self.got.iter().filter_map(|k| match k {
            Kind::Change(c) if c.kind == kind as i32 => Some(c.entry_id.clone()),
            _ => None,
        });
        matching.collect()
    }

    pub fn deleted(&self) -> Vec<String> {
        self.change_ids(pb::entry_change::Kind::Deleted)
    }

    pub fn upserted(&self) -> Vec<String> {
        self.change_ids(pb::entry_change::Kind::Upserted)
    }

    /// Forgets what was received so far.
    pub fn clear(&mut self) {
        self.got.clear();
    }
}
