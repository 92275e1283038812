//! `sigil-server entry explain --parent-id AGENT --selector T:V …`: which
//! entries the agent would issue to a workload with those selectors (paste
//! them from the agent's `no identity issued` debug line) and, for the
//! nearest that it would not, the missing selectors, expired entries,
//! entries under another parent and the agent's node aliases.

use serde_json::{Value, json};
use sigil_proto::admin_api as pb;
use sigil_proto::{Selector, SpiffeId};

use super::output::{Output, entry_json, print_json, rfc3339};
use super::{Common, status_msg};
use crate::admin::client::connect;
use crate::admin::convert::selector_to_pb;

/// The command's flags.
#[derive(Debug, clap::Args)]
pub struct ExplainArgs {
    /// The agent the workload runs under.
    #[arg(long, value_parser = SpiffeId::parse)]
    pub parent_id: SpiffeId,
    /// The workload's selectors, type:value (repeatable).
    #[arg(long = "selector", value_parser = Selector::parse)]
    pub selectors: Vec<Selector>,
    /// Most near misses and wrong-parent entries shown each (server
    /// default 10).
    #[arg(long, default_value_t = 0)]
    pub limit: u32,
    #[command(flatten)]
    pub common: Common,
}

fn sel_text(s: &[pb::Selector]) -> String {
    let v: Vec<String> = s
        .iter()
        .map(|s| format!("{}:{}", s.r#type, s.value))
        .collect();
    v.join(", ")
}

fn item_json(x: &pb::ExplainedEntry) -> Value {
    json!({
        "entry": x.entry.as_ref().map(entry_json),
        "missing_selectors": x.missing_selectors.iter().map(|s| format!("{}:{}", s.r#type, s.value)).collect::<Vec<_>>(),
        "via_alias": (!x.via_alias.is_empty()).then_some(&x.via_alias),
        "reason": x.reason,
    })
}

fn item_line(x: &pb::ExplainedEntry) -> String {
    let (id, spiffe) = x
        .entry
        .as_ref()
        .map_or(("?", "?"), |e| (e.id.as_str(), e.spiffe_id.as_str()));
    let mut s = format!("  {spiffe} (entry {id}): {}", x.reason);
    if !x.missing_selectors.is_empty() {
        s.push_str(&format!(" [missing: {}]", sel_text(&x.missing_selectors)));
    }
    s
}

fn print_text(r: &pb::ExplainEntriesResponse, parent: &SpiffeId) {
    if !r.agent_known {
        println!(
            "Agent {parent} is not attested (no record): its node selectors are unknown, so \
             node aliases cannot apply"
        );
    } else if r.agent_banned {
        println!("Agent {parent} is BANNED: it gets no SVIDs at all");
    }
    println!("Node selectors: {}", sel_text(&r.node_selectors));
    println!("Node aliases: {}", r.aliases.join(", "));
    let sections: [(&str, &[pb::ExplainedEntry], u32); 4] = [
        ("Issued", &r.issued, 0),
        ("Near misses", &r.near_misses, r.near_misses_left_off),
        ("Expired", &r.expired, 0),
        ("Wrong parent", &r.wrong_parent, r.wrong_parent_left_off),
    ];
    for (title, items, left_off) in sections {
        println!("{title}: {}", items.len());
        for x in items {
            println!("{}", item_line(x));
        }
        if left_off > 0 {
            println!("  … and {left_off} more (--limit)");
        }
    }
    if r.issued.is_empty() {
        println!("No identity would be issued.");
    }
}

pub async fn run(a: ExplainArgs) -> anyhow::Result<()> {
    let mut c = connect(&a.common.socket).await?;
    let r = c
        .explain_entries(pb::ExplainEntriesRequest {
            parent_id: a.parent_id.to_string(),
            selectors: a.selectors.iter().map(selector_to_pb).collect(),
            limit: a.limit,
        })
        .await
        .map_err(status_msg)?
        .into_inner();
    match a.common.output {
        Output::Text => print_text(&r, &a.parent_id),
        Output::Json => print_json(&json!({
            "parent_id": a.parent_id.to_string(),
            "agent_known": r.agent_known,
            "agent_banned": r.agent_banned,
            "node_selectors": r.node_selectors.iter().map(|s| format!("{}:{}", s.r#type, s.value)).collect::<Vec<_>>(),
            "aliases": r.aliases,
            "issued": r.issued.iter().map(item_json).collect::<Vec<_>>(),
            "near_misses": r.near_misses.iter().map(item_json).collect::<Vec<_>>(),
            "near_misses_left_off": r.near_misses_left_off,
            "expired": r.expired.iter().map(item_json).collect::<Vec<_>>(),
            "wrong_parent": r.wrong_parent.iter().map(item_json).collect::<Vec<_>>(),
            "wrong_parent_left_off": r.wrong_parent_left_off,
            "evaluated_at": rfc3339(r.evaluated_at),
        }))?,
    }
    Ok(())
}
