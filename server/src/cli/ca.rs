//! `sigil-server ca …`: show the key slots and the rotation timeline, and
//! steer rotation (prepare, activate, taint, revoke), of the X.509 CA or,
//! with `--kind jwt`, of the JWT signing keys.

use clap::{Subcommand, ValueEnum};
use sigil_proto::admin_api as pb;

use super::output::{Output, print_json, rfc3339};
use super::{Common, status_msg};
use crate::admin::client::connect;

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum SlotArg {
    A,
    B,
}

impl SlotArg {
    fn name(self) -> &'static str {
        match self {
            SlotArg::A => "a",
            SlotArg::B => "b",
        }
    }
}

/// Which key slots: the X.509 CA (default) or the JWT signing keys.
#[derive(Debug, Clone, Copy, Default, ValueEnum)]
pub enum KindArg {
    #[default]
    X509,
    Jwt,
}

impl KindArg {
    fn name(self) -> String {
        match self {
            KindArg::X509 => "x509",
            KindArg::Jwt => "jwt",
        }
        .to_string()
    }
}

#[derive(Debug, Subcommand)]
pub enum CaCommand {
    /// Both key slots and the rotation timeline.
    Show {
        /// The X.509 CA slots, or the JWT signing key slots.
        #[arg(long, value_enum, default_value = "x509")]
        kind: KindArg,
        #[command(flatten)]
        common: Common,
    },
    /// Prepare the next CA now (it is published in the bundle at once).
    Prepare {
        /// The X.509 CA slots, or the JWT signing key slots.
        #[arg(long, value_enum, default_value = "x509")]
        kind: KindArg,
        #[command(flatten)]
        common: Common,
    },
    /// Make the prepared CA the signing one now. Refused until it has been
    /// published for 2 x the bundle refresh hint (10m by default).
    Activate {
        /// Activate even if published for less than the minimum: agents and
        /// relying parties that have not fetched the bundle since the CA was
        /// prepared will reject the SVIDs it signs.
        #[arg(long)]
        force: bool,
        /// The X.509 CA slots, or the JWT signing key slots.
        #[arg(long, value_enum, default_value = "x509")]
        kind: KindArg,
        #[command(flatten)]
        common: Common,
    },
    /// Taint an inactive CA: agents re-issue every SVID it signed at once.
    Taint {
        #[arg(long, value_enum)]
        slot: SlotArg,
        /// The X.509 CA slots, or the JWT signing key slots.
        #[arg(long, value_enum, default_value = "x509")]
        kind: KindArg,
        #[command(flatten)]
        common: Common,
    },
    /// Remove a tainted, inactive CA from the bundle and delete its key.
    /// Refused under an upstream CA: revoke it at the upstream instead.
    /// Refused while attested agents' own SVIDs chain to it, unless --force.
    Revoke {
        #[arg(long, value_enum)]
        slot: SlotArg,
        /// Revoke anyway: those agents are locked out until attested again.
        #[arg(long)]
        force: bool,
        /// The X.509 CA slots, or the JWT signing key slots.
        #[arg(long, value_enum, default_value = "x509")]
        kind: KindArg,
        #[command(flatten)]
        common: Common,
    },
}

fn print_ca(output: Output, st: &pb::CaStatus) -> anyhow::Result<()> {
    let ts = |t: i64| (t != 0).then_some(t);
    let time = |t: i64| ts(t).map(rfc3339);
    match output {
        Output::Json => print_json(&serde_json::json!({
            "slots": st.slots.iter().map(|s| serde_json::json!({
                "slot": s.slot,
                "state": s.state,
                "serial": s.serial,
                "not_before": rfc3339(s.not_before),
                "not_after": rfc3339(s.not_after),
                "tainted": s.tainted,
                "in_bundle": s.in_bundle,
                "key_id": s.key_id,
                "kid": (!s.kid.is_empty()).then_some(&s.kid),
            })).collect::<Vec<_>>(),
            "kind": st.kind,
            "prepare_at": time(st.prepare_at),
            "activate_at": time(st.activate_at),
            "bundle_sequence": st.bundle_sequence,
            "warnings": st.warnings,
        })),
        Output::Text => {
            for slot in ["a", "b"] {
                match st.slots.iter().find(|s| s.slot == slot) {
                    None => println!("Slot {slot}: empty"),
                    Some(s) => {
                        println!(
                            "Slot {slot}: {}{}{}",
                            s.state,
                            if s.tainted { ", TAINTED" } else { "" },
                            if s.in_bundle { ", in bundle" } else { "" }
                        );
                        if s.kid.is_empty() {
                            println!("  serial      : {}", s.serial);
                        } else {
                            println!("  kid         : {}", s.kid);
                        }
                        println!("  not before  : {}", rfc3339(s.not_before));
                        println!("  not after   : {}", rfc3339(s.not_after));
                    }
                }
            }
            match ts(st.prepare_at) {
                Some(p) => {
                    let what = if st.kind == "jwt" { "JWT key" } else { "CA" };
                    println!("Timeline of the active {what}:");
                    println!("  prepare next: {}", rfc3339(p));
                    println!("  activate it : {}", rfc3339(st.activate_at));
                }
                None => println!("No active CA."),
            }
            println!("Bundle sequence: {}", st.bundle_sequence);
            Ok(())
        }
    }
}

pub async fn run_ca(cmd: CaCommand) -> anyhow::Result<()> {
    let (common, st) = match cmd {
        CaCommand::Show { kind, common } => {
            let mut c = connect(&common.socket).await?;
            let st = c
                .show_ca(pb::ShowCaRequest { kind: kind.name() })
                .await
                .map_err(status_msg)?
                .into_inner();
            (common, st)
        }
        CaCommand::Prepare { kind, common } => {
            let mut c = connect(&common.socket).await?;
            let st = c
                .prepare_ca(pb::ShowCaRequest { kind: kind.name() })
                .await
                .map_err(status_msg)?
                .into_inner();
            (common, st)
        }
        CaCommand::Activate {
            force,
            kind,
            common,
        } => {
            if force {
                eprintln!(
                    "warning: --force: a CA published for less than the minimum may be \
                     activated; agents and relying parties that have not fetched the bundle \
                     since it was prepared will reject the SVIDs it signs until they do"
                );
            }
            let mut c = connect(&common.socket).await?;
            let st = c
                .activate_ca(pb::ActivateCaRequest {
                    force,
                    kind: kind.name(),
                })
                .await
                .map_err(status_msg)?
                .into_inner();
            (common, st)
        }
        CaCommand::Taint { slot, kind, common } => {
            let mut c = connect(&common.socket).await?;
            let req = pb::CaSlotRequest {
                slot: slot.name().to_string(),
                kind: kind.name(),
            };
            let st = c.taint_ca(req).await.map_err(status_msg)?.into_inner();
            (common, st)
        }
        CaCommand::Revoke {
            slot,
            force,
            kind,
            common,
        } => {
            let mut c = connect(&common.socket).await?;
            let req = pb::RevokeCaRequest {
                slot: slot.name().to_string(),
                force,
                kind: kind.name(),
            };
            let st = c.revoke_ca(req).await.map_err(status_msg)?.into_inner();
            (common, st)
        }
    };
    for w in &st.warnings {
        eprintln!("warning: {w}");
    }
    print_ca(common.output, &st)
}
