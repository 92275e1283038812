//! `sigil-server entry …`: create (from flags or a JSON file, see
//! [`super::entry_file`]), show (alias list), update, delete, count. Inputs are validated here before anything is sent, and
//! again by the server.

use std::io::Read;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::Subcommand;
use sigil_proto::admin_api as pb;
use sigil_proto::{Selector, SpiffeId, TrustDomain, parse_duration};
use tokio_stream::StreamExt;

use super::entry_file::{parse_entry_file, parse_rfc3339};
use super::output::{Output, entry_json, entry_text, print_json};
use super::{Common, secs, status_msg};
use crate::admin::client::connect;
use crate::admin::convert::{check_dns_name, selector_to_pb};
use crate::config::server_id;

type Client = sigil_proto::admin_api::admin_api_client::AdminApiClient<tonic::transport::Channel>;

/// A TTL flag: a duration of at least 1s, or `default` (zero: the
/// server's default, which is how `entry update` returns a TTL to it).
/// `0s` is refused rather than silently meaning the default.
fn parse_ttl(s: &str) -> Result<Duration, String> {
    if s == "default" {
        return Ok(Duration::ZERO);
    }
    let d = parse_duration(s).map_err(|e| e.to_string())?;
    if d < Duration::from_secs(1) {
        return Err("a TTL must be at least 1s (write `default` for the server default)".into());
    }
    Ok(d)
}

fn parse_dns(s: &str) -> Result<String, String> {
    check_dns_name(s).map(|()| s.to_string())
}

#[derive(Debug, Subcommand)]
pub enum EntryCommand {
    /// Create an entry from flags, or many from a JSON file (--data).
    Create {
        #[arg(long, value_parser = SpiffeId::parse, required_unless_present = "data")]
        spiffe_id: Option<SpiffeId>,
        /// The agent (or node alias) this entry is for.
        #[arg(long, value_parser = SpiffeId::parse, conflicts_with = "node")]
        parent_id: Option<SpiffeId>,
        /// A node entry: its parent is the server, its selectors are node
        /// selectors, and matching agents get this SPIFFE ID as an alias.
        #[arg(long)]
        node: bool,
        /// type:value, repeatable; all must match.
        #[arg(long = "selector", value_parser = Selector::parse)]
        selectors: Vec<Selector>,
        #[arg(long, value_parser = parse_ttl)]
        x509_svid_ttl: Option<Duration>,
        #[arg(long, value_parser = parse_ttl)]
        jwt_svid_ttl: Option<Duration>,
        #[arg(long = "dns-name", value_parser = parse_dns)]
        dns_names: Vec<String>,
        #[arg(long = "federates-with", value_parser = TrustDomain::parse)]
        federates_with: Vec<TrustDomain>,
        #[arg(long)]
        hint: Option<String>,
        #[arg(long)]
        admin: bool,
        #[arg(long)]
        downstream: bool,
        /// RFC 3339 time after which the entry no longer applies.
        #[arg(long, value_parser = parse_rfc3339)]
        expires_at: Option<i64>,
        /// Store selectors of a type no Sigil attestor produces (known
        /// types are always checked).
        #[arg(long)]
        allow_unknown_selector: bool,
        /// JSON file of entries ({"entries": [...]}), or - for stdin.
        #[arg(long, value_name = "FILE", conflicts_with_all = ["spiffe_id", "parent_id", "node", "selectors"])]
        data: Option<PathBuf>,
        #[command(flatten)]
        common: Common,
    },
    /// Which entries an agent would issue to a workload with these
    /// selectors, and why the nearest others would not.
    Explain(super::explain::ExplainArgs),
    /// Show entries matching all the given filters (all entries by default).
    #[command(visible_alias = "list")]
    Show {
        #[arg(long)]
        entry_id: Option<String>,
        #[arg(long, value_parser = SpiffeId::parse)]
        spiffe_id: Option<SpiffeId>,
        #[arg(long, value_parser = SpiffeId::parse)]
        parent_id: Option<SpiffeId>,
        #[arg(long = "selector", value_parser = Selector::parse)]
        selectors: Vec<Selector>,
        #[command(flatten)]
        common: Common,
    },
    /// Change fields of an entry; fields not given keep their value. Given
    /// selectors or DNS names replace the whole set; `--clear-dns-names`
    /// removes them, `--x509-svid-ttl default` returns to the server's
    /// default, `--expires-at never` and `--hint ''` clear those. An update
    /// that changes nothing keeps the revision and says "unchanged".
    Update {
        #[arg(long)]
        entry_id: String,
        #[arg(long, value_parser = SpiffeId::parse)]
        spiffe_id: Option<SpiffeId>,
        #[arg(long, value_parser = SpiffeId::parse)]
        parent_id: Option<SpiffeId>,
        #[arg(long = "selector", value_parser = Selector::parse)]
        selectors: Vec<Selector>,
        #[arg(long, value_parser = parse_ttl)]
        x509_svid_ttl: Option<Duration>,
        #[arg(long, value_parser = parse_ttl)]
        jwt_svid_ttl: Option<Duration>,
        #[arg(long = "dns-name", value_parser = parse_dns)]
        dns_names: Vec<String>,
        /// Remove every DNS name.
        #[arg(long, conflicts_with = "dns_names")]
        clear_dns_names: bool,
        #[arg(long)]
        hint: Option<String>,
        #[arg(long)]
        admin: Option<bool>,
        #[arg(long)]
        downstream: Option<bool>,
        #[arg(long, value_parser = parse_rfc3339)]
        expires_at: Option<i64>,
        /// Store selectors of a type no Sigil attestor produces.
        #[arg(long)]
        allow_unknown_selector: bool,
        #[command(flatten)]
        common: Common,
    },
    /// Delete an entry by id, or the entries with a SPIFFE ID (several
    /// only with --yes).
    Delete {
        #[arg(
            long,
            required_unless_present = "spiffe_id",
            conflicts_with = "spiffe_id"
        )]
        entry_id: Option<String>,
        #[arg(long, value_parser = SpiffeId::parse)]
        spiffe_id: Option<SpiffeId>,
        /// Delete every entry with --spiffe-id when several have it.
        #[arg(long, requires = "spiffe_id")]
        yes: bool,
        #[command(flatten)]
        common: Common,
    },
    /// Count entries.
    Count {
        #[command(flatten)]
        common: Common,
    },
}

/// Every entry matching `req`.
async fn list(c: &mut Client, req: pb::ListEntriesRequest) -> anyhow::Result<Vec<pb::Entry>> {
    let mut stream = c.list_entries(req).await.map_err(status_msg)?.into_inner();
    let mut v = Vec::new();
    while let Some(e) = stream.next().await {
        v.push(e.map_err(status_msg)?);
    }
    Ok(v)
}

/// The ids `entry delete` deletes: `entry_id`, or the entries with
/// `spiffe_id` (refused when several have it, unless `yes`).
async fn ids_to_delete(
    c: &mut Client,
    entry_id: Option<String>,
    spiffe_id: Option<SpiffeId>,
    yes: bool,
) -> anyhow::Result<Vec<String>> {
    let spiffe_id = match (entry_id, spiffe_id) {
        (Some(id), _) => return Ok(vec![id]),
        (None, Some(s)) => s,
        (None, None) => anyhow::bail!("give --entry-id or --spiffe-id"),
    };
    let found = list(
        c,
        pb::ListEntriesRequest {
            by_spiffe_id: spiffe_id.to_string(),
            ..Default::default()
        },
    )
    .await?;
    if found.is_empty() {
        anyhow::bail!("no entry has SPIFFE ID {spiffe_id}; nothing deleted");
    }
    if found.len() > 1 && !yes {
        let listed: Vec<String> = found
            .iter()
            .map(|e| {
                let sels: Vec<String> = e
                    .selectors
                    .iter()
                    .map(|s| format!("{}:{}", s.r#type, s.value))
                    .collect();
                format!("{} (parent {}, {})", e.id, e.parent_id, sels.join(" "))
            })
            .collect();
        anyhow::bail!(
            "{} entries have SPIFFE ID {spiffe_id}: {}; nothing deleted: pass --yes to delete \
             them all, or --entry-id to delete one",
            found.len(),
            listed.join(", ")
        );
    }
    Ok(found.into_iter().map(|e| e.id).collect())
}

fn print_entries(output: Output, entries: &[pb::Entry]) -> anyhow::Result<()> {
    match output {
        Output::Text => {
            if entries.is_empty() {
                println!("Found 0 entries");
            }
            for (i, e) in entries.iter().enumerate() {
                if i > 0 {
                    println!();
                }
                print!("{}", entry_text(e));
            }
        }
        Output::Json => print_json(&serde_json::json!({
            "entries": entries.iter().map(entry_json).collect::<Vec<_>>(),
        }))?,
    }
    Ok(())
}

pub async fn run(cmd: EntryCommand) -> anyhow::Result<()> {
    match cmd {
        EntryCommand::Create {
            spiffe_id,
            parent_id,
            node,
            selectors,
            x509_svid_ttl,
            jwt_svid_ttl,
            dns_names,
            federates_with,
            hint,
            admin,
            downstream,
            expires_at,
            allow_unknown_selector,
            data,
            common,
        } => {
            let entries = match (data, spiffe_id) {
                (Some(path), _) => {
                    let mut bytes = Vec::new();
                    if path.as_os_str() == "-" {
                        std::io::stdin().read_to_end(&mut bytes)?;
                    } else {
                        bytes = std::fs::read(&path)
                            .with_context(|| format!("reading {}", path.display()))?;
                    }
                    parse_entry_file(&bytes)?
                }
                (None, Some(id)) => {
                    let parent = match (node, parent_id) {
                        (true, _) => server_id(&id.trust_domain()),
                        (false, Some(p)) => p,
                        (false, None) => {
                            anyhow::bail!("--parent-id is required (or --node for a node entry)")
                        }
                    };
                    if selectors.is_empty() {
                        anyhow::bail!("at least one --selector is required (e.g. unix:uid:1000)");
                    }
                    vec![pb::Entry {
                        spiffe_id: id.to_string(),
                        parent_id: parent.to_string(),
                        selectors: selectors.iter().map(selector_to_pb).collect(),
                        x509_svid_ttl_seconds: secs(x509_svid_ttl),
                        jwt_svid_ttl_seconds: secs(jwt_svid_ttl),
                        dns_names,
                        federates_with: federates_with.iter().map(ToString::to_string).collect(),
                        hint: hint.unwrap_or_default(),
                        admin,
                        downstream,
                        expires_at: expires_at.unwrap_or(0),
                        ..Default::default()
                    }]
                }
                (None, None) => anyhow::bail!("give --spiffe-id or --data"),
            };
            let mut c = connect(&common.socket).await?;
            let results = c
                .create_entries(pb::CreateEntriesRequest {
                    entries,
                    allow_unknown_selectors: allow_unknown_selector,
                })
                .await
                .map_err(status_msg)?
                .into_inner()
                .results;
            let mut created = Vec::new();
            let mut failures = Vec::new();
            for (i, r) in results.into_iter().enumerate() {
                match r.result {
                    Some(pb::entry_result::Result::Entry(e)) => created.push(e),
                    Some(pb::entry_result::Result::Error(e)) => failures.push((i, e.message)),
                    None => failures.push((i, "no result".into())),
                }
            }
            match common.output {
                Output::Text => {
                    for e in &created {
                        print!("{}", entry_text(e));
                        println!();
                    }
                }
                Output::Json => print_json(&serde_json::json!({
                    "entries": created.iter().map(entry_json).collect::<Vec<_>>(),
                    "errors": failures.iter().map(|(i, m)| serde_json::json!({"index": i, "message": m})).collect::<Vec<_>>(),
                }))?,
            }
            if failures.is_empty() {
                Ok(())
            } else {
                let list: Vec<String> = failures.iter().map(|(_, m)| m.clone()).collect();
                anyhow::bail!(
                    "{} of {} entries not created: {}",
                    failures.len(),
                    failures.len() + created.len(),
                    list.join("; ")
                )
            }
        }
        EntryCommand::Show {
            entry_id,
            spiffe_id,
            parent_id,
            selectors,
            common,
        } => {
            let mut c = connect(&common.socket).await?;
            let entries = if let Some(id) = entry_id {
                let e = c
                    .get_entry(pb::GetEntryRequest { id })
                    .await
                    .map_err(status_msg)?
                    .into_inner();
                let filter = crate::entry::EntryFilter {
                    spiffe_id: spiffe_id.clone(),
                    parent_id: parent_id.clone(),
                    selectors: selectors.clone(),
                };
                let keep = filter
                    .spiffe_id
                    .as_ref()
                    .is_none_or(|s| s.as_str() == e.spiffe_id)
                    && filter
                        .parent_id
                        .as_ref()
                        .is_none_or(|p| p.as_str() == e.parent_id)
                    && selectors.iter().all(|s| {
                        e.selectors
                            .iter()
                            .any(|x| x.r#type == s.ty() && x.value == s.value())
                    });
                if keep { vec![e] } else { vec![] }
            } else {
                let req = pb::ListEntriesRequest {
                    by_spiffe_id: spiffe_id.map(|s| s.to_string()).unwrap_or_default(),
                    by_parent_id: parent_id.map(|s| s.to_string()).unwrap_or_default(),
                    by_selectors: selectors.iter().map(selector_to_pb).collect(),
                };
                list(&mut c, req).await?
            };
            print_entries(common.output, &entries)
        }
        EntryCommand::Update {
            entry_id,
            spiffe_id,
            parent_id,
            selectors,
            x509_svid_ttl,
            jwt_svid_ttl,
            dns_names,
            clear_dns_names,
            hint,
            admin,
            downstream,
            expires_at,
            allow_unknown_selector,
            common,
        } => {
            let req = pb::UpdateEntryRequest {
                id: entry_id,
                spiffe_id: spiffe_id.map(|s| s.to_string()),
                parent_id: parent_id.map(|s| s.to_string()),
                selectors: (!selectors.is_empty()).then(|| pb::SelectorList {
                    selectors: selectors.iter().map(selector_to_pb).collect(),
                }),
                x509_svid_ttl_seconds: x509_svid_ttl.map(|d| secs(Some(d))),
                jwt_svid_ttl_seconds: jwt_svid_ttl.map(|d| secs(Some(d))),
                dns_names: (clear_dns_names || !dns_names.is_empty())
                    .then_some(pb::StringList { values: dns_names }),
                federates_with: None,
                hint,
                admin,
                downstream,
                expires_at,
                allow_unknown_selectors: allow_unknown_selector,
            };
            let mut c = connect(&common.socket).await?;
            let resp = c.update_entry(req).await.map_err(status_msg)?;
            let unchanged = resp
                .metadata()
                .get(crate::admin::UNCHANGED_METADATA)
                .is_some_and(|v| v == "true");
            let e = resp.into_inner();
            match common.output {
                Output::Text if unchanged => {
                    println!(
                        "Entry {} unchanged (revision {}): it already had these values",
                        e.id, e.revision
                    );
                    Ok(())
                }
                Output::Text => print_entries(common.output, &[e]),
                Output::Json => print_json(&serde_json::json!({
                    "entries": [entry_json(&e)],
                    "unchanged": unchanged,
                })),
            }
        }
        EntryCommand::Delete {
            entry_id,
            spiffe_id,
            yes,
            common,
        } => {
            let mut c = connect(&common.socket).await?;
            let ids = ids_to_delete(&mut c, entry_id, spiffe_id, yes).await?;
            for id in &ids {
                c.delete_entry(pb::DeleteEntryRequest { id: id.clone() })
                    .await
                    .map_err(status_msg)?;
                if common.output == Output::Text {
                    println!("Deleted entry {id}");
                }
            }
            if common.output == Output::Json {
                print_json(&serde_json::json!({ "deleted": ids }))?;
            }
            Ok(())
        }
        EntryCommand::Explain(args) => super::explain::run(args).await,
        EntryCommand::Count { common } => {
            let mut c = connect(&common.socket).await?;
            let n = c
                .count_entries(pb::CountEntriesRequest {})
                .await
                .map_err(status_msg)?
                .into_inner()
                .count;
            match common.output {
                Output::Text => println!("{n} registration entries"),
                Output::Json => print_json(&serde_json::json!({ "count": n }))?,
            }
            Ok(())
        }
    }
}
