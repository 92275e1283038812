//! `sigil-server federation …` (relationships with foreign trust domains)
//! and the foreign half of `sigil-server bundle …` (`set`, `list`, `delete`,
//! `show --trust-domain`), issue 16. `federation show --output json` prints
//! the shape `federation create|update --data FILE` reads (output-only
//! fields are ignored there).

use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::{Args, Subcommand};
use serde::Deserialize;
use sigil_proto::TrustDomain;
use sigil_proto::admin_api as pb;

use super::output::{Output, print_json, rfc3339};
use super::{BundleFormat, Common, status_msg};
use crate::admin::client::connect;

/// The fields of a relationship, from flags or `--data`.
#[derive(Debug, Clone, Args)]
pub struct RelationshipArgs {
    /// The foreign trust domain.
    #[arg(long, value_parser = TrustDomain::parse, required_unless_present = "data")]
    trust_domain: Option<TrustDomain>,
    /// https://host[:port][/path] of its bundle endpoint.
    #[arg(long, required_unless_present = "data")]
    bundle_endpoint_url: Option<String>,
    /// https_web or https_spiffe.
    #[arg(long, required_unless_present = "data")]
    bundle_endpoint_profile: Option<String>,
    /// https_spiffe: the exact SPIFFE ID the endpoint presents.
    #[arg(long)]
    endpoint_spiffe_id: Option<String>,
    /// https_web: PEM roots (absolute path, read by the server) instead of
    /// the system's web PKI.
    #[arg(long)]
    ca_file: Option<PathBuf>,
    /// The trust domain's bundle to start from (needed by https_spiffe).
    #[arg(long, value_name = "FILE")]
    trust_domain_bundle: Option<PathBuf>,
    /// pem or spiffe.
    #[arg(long, default_value = "pem", requires = "trust_domain_bundle")]
    trust_domain_bundle_format: String,
    /// A JSON file in the shape `federation show --output json` prints.
    #[arg(long, value_name = "FILE", conflicts_with_all = ["trust_domain", "bundle_endpoint_url", "bundle_endpoint_profile", "endpoint_spiffe_id", "ca_file"])]
    data: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
pub enum FederationCommand {
    /// Federate with a trust domain: fetch its bundle from its endpoint.
    Create {
        #[command(flatten)]
        rel: RelationshipArgs,
        #[command(flatten)]
        common: Common,
    },
    /// Replace a relationship's fields.
    Update {
        #[command(flatten)]
        rel: RelationshipArgs,
        #[command(flatten)]
        common: Common,
    },
    /// Every relationship (stored and from server.toml).
    List {
        #[command(flatten)]
        common: Common,
    },
    Show {
        #[arg(long, value_parser = TrustDomain::parse)]
        trust_domain: TrustDomain,
        #[command(flatten)]
        common: Common,
    },
    /// Stop federating (the foreign bundle stays until `bundle delete`).
    Delete {
        #[arg(long, value_parser = TrustDomain::parse)]
        trust_domain: TrustDomain,
        #[command(flatten)]
        common: Common,
    },
    /// Fetch the trust domain's bundle now.
    Refresh {
        #[arg(long, value_parser = TrustDomain::parse)]
        trust_domain: TrustDomain,
        #[command(flatten)]
        common: Common,
    },
}

/// `--data`: the JSON `federation show --output json` prints.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct DataFile {
    trust_domain: String,
    bundle_endpoint_url: String,
    bundle_endpoint_profile: String,
    #[serde(default)]
    endpoint_spiffe_id: Option<String>,
    #[serde(default)]
    ca_file: Option<String>,
    // Output only: ignored.
    #[serde(default, rename = "static")]
    _static: Option<serde_json::Value>,
    #[serde(default, rename = "created_at")]
    _created_at: Option<serde_json::Value>,
    #[serde(default, rename = "updated_at")]
    _updated_at: Option<serde_json::Value>,
    #[serde(default, rename = "last_refresh")]
    _last_refresh: Option<serde_json::Value>,
    #[serde(default, rename = "last_error")]
    _last_error: Option<serde_json::Value>,
    #[serde(default, rename = "bundle_sequence")]
    _bundle_sequence: Option<serde_json::Value>,
}

fn read_file(flag: &str, path: &Path) -> anyhow::Result<Vec<u8>> {
    std::fs::read(path).with_context(|| format!("{flag} {}", path.display()))
}

fn request(a: RelationshipArgs) -> anyhow::Result<pb::Federation> {
    let mut f = match &a.data {
        Some(path) => {
            let bytes = read_file("--data", path)?;
            let d: DataFile = serde_json::from_slice(&bytes).with_context(|| {
                format!("--data {}: not a federation relationship", path.display())
            })?;
            pb::Federation {
                trust_domain: d.trust_domain,
                bundle_endpoint_url: d.bundle_endpoint_url,
                bundle_endpoint_profile: d.bundle_endpoint_profile,
                endpoint_spiffe_id: d.endpoint_spiffe_id.unwrap_or_default(),
                ca_file: d.ca_file.unwrap_or_default(),
                ..Default::default()
            }
        }
        None => pb::Federation {
            trust_domain: a.trust_domain.map(|t| t.to_string()).unwrap_or_default(),
            bundle_endpoint_url: a.bundle_endpoint_url.unwrap_or_default(),
            bundle_endpoint_profile: a.bundle_endpoint_profile.unwrap_or_default(),
            endpoint_spiffe_id: a.endpoint_spiffe_id.unwrap_or_default(),
            ca_file: a
                .ca_file
                .map(|p| p.display().to_string())
                .unwrap_or_default(),
            ..Default::default()
        },
    };
    if let Some(path) = &a.trust_domain_bundle {
        f.trust_domain_bundle = read_file("--trust-domain-bundle", path)?;
        f.trust_domain_bundle_format = a.trust_domain_bundle_format;
    }
    Ok(f)
}

fn federation_json(f: &pb::Federation) -> serde_json::Value {
    let opt = |s: &str| (!s.is_empty()).then(|| s.to_string());
    serde_json::json!({
        "trust_domain": f.trust_domain,
        "bundle_endpoint_url": f.bundle_endpoint_url,
        "bundle_endpoint_profile": f.bundle_endpoint_profile,
        "endpoint_spiffe_id": opt(&f.endpoint_spiffe_id),
        "ca_file": opt(&f.ca_file),
        "static": f.r#static,
        "created_at": (f.created_at != 0).then(|| rfc3339(f.created_at)),
        "updated_at": (f.updated_at != 0).then(|| rfc3339(f.updated_at)),
        "last_refresh": (f.last_refresh != 0).then(|| rfc3339(f.last_refresh)),
        "last_error": opt(&f.last_error),
        "bundle_sequence": f.bundle_sequence,
    })
}

fn print_federations(output: Output, list: &[pb::Federation]) -> anyhow::Result<()> {
    match output {
        Output::Json => print_json(&serde_json::json!({
            "federations": list.iter().map(federation_json).collect::<Vec<_>>(),
        })),
        Output::Text => {
            if list.is_empty() {
                println!("Found 0 federation relationships");
            }
            for (i, f) in list.iter().enumerate() {
                if i > 0 {
                    println!();
                }
                println!("{:<20}: {}", "Trust domain", f.trust_domain);
                println!("{:<20}: {}", "Bundle endpoint URL", f.bundle_endpoint_url);
                println!("{:<20}: {}", "Profile", f.bundle_endpoint_profile);
                if !f.endpoint_spiffe_id.is_empty() {
                    println!("{:<20}: {}", "Endpoint SPIFFE ID", f.endpoint_spiffe_id);
                }
                if !f.ca_file.is_empty() {
                    println!("{:<20}: {}", "CA file", f.ca_file);
                }
                if f.r#static {
                    println!(
                        "{:<20}: server.toml ([[federation]]; wins over the admin API)",
                        "Source"
                    );
                } else {
                    println!("{:<20}: admin API", "Source");
                }
                match f.last_refresh {
                    0 => println!("{:<20}: never since the server started", "Last refresh"),
                    t => println!("{:<20}: {}", "Last refresh", rfc3339(t)),
                }
                if !f.last_error.is_empty() {
                    println!("{:<20}: {}", "Last error", f.last_error);
                }
                println!("{:<20}: {}", "Bundle sequence", f.bundle_sequence);
            }
            Ok(())
        }
    }
}

fn td_req(td: &TrustDomain) -> pb::TrustDomainRequest {
    pb::TrustDomainRequest {
        trust_domain: td.to_string(),
    }
}

pub async fn run(cmd: FederationCommand) -> anyhow::Result<()> {
    let (common, list) = match cmd {
        FederationCommand::Create { rel, common } => {
            let req = request(rel)?;
            let mut c = connect(&common.socket).await?;
            let f = c.create_federation(req).await.map_err(status_msg)?;
            (common, vec![f.into_inner()])
        }
        FederationCommand::Update { rel, common } => {
            let req = request(rel)?;
            let mut c = connect(&common.socket).await?;
            let f = c.update_federation(req).await.map_err(status_msg)?;
            (common, vec![f.into_inner()])
        }
        FederationCommand::List { common } => {
            let mut c = connect(&common.socket).await?;
            let r = c
                .list_federations(pb::ListFederationsRequest {})
                .await
                .map_err(status_msg)?;
            (common, r.into_inner().federations)
        }
        FederationCommand::Show {
            trust_domain,
            common,
        } => {
            let mut c = connect(&common.socket).await?;
            let f = c
                .get_federation(td_req(&trust_domain))
                .await
                .map_err(status_msg)?;
            if common.output == Output::Json {
                return print_json(&federation_json(&f.into_inner()));
            }
            (common, vec![f.into_inner()])
        }
        FederationCommand::Delete {
            trust_domain,
            common,
        } => {
            let mut c = connect(&common.socket).await?;
            let f = c
                .delete_federation(td_req(&trust_domain))
                .await
                .map_err(status_msg)?;
            if common.output == Output::Text {
                println!(
                    "Deleted the federation relationship with {trust_domain} (its bundle is \
                     kept: `sigil-server bundle delete --trust-domain {trust_domain}`)."
                );
                return Ok(());
            }
            (common, vec![f.into_inner()])
        }
        FederationCommand::Refresh {
            trust_domain,
            common,
        } => {
            let mut c = connect(&common.socket).await?;
            let f = c
                .refresh_federation(td_req(&trust_domain))
                .await
                .map_err(status_msg)?;
            (common, vec![f.into_inner()])
        }
    };
    print_federations(common.output, &list)
}

// ---- foreign bundles ----

/// `bundle set`: a foreign trust domain's bundle by hand.
#[derive(Debug, Clone, Args)]
pub struct BundleSetArgs {
    #[arg(long, value_parser = TrustDomain::parse)]
    trust_domain: TrustDomain,
    /// The bundle file.
    #[arg(long, value_name = "FILE")]
    path: PathBuf,
    /// pem or spiffe.
    #[arg(long, default_value = "pem")]
    format: String,
}

fn print_bundles(
    output: Output,
    format: BundleFormat,
    list: &[pb::ForeignBundle],
) -> anyhow::Result<()> {
    match output {
        Output::Json => {
            let items = list
                .iter()
                .map(|b| {
                    let jwks: serde_json::Value =
                        serde_json::from_str(&b.jwks).context("server sent invalid JWKS")?;
                    Ok(serde_json::json!({
                        "trust_domain": b.trust_domain,
                        "sequence": b.sequence,
                        "pem": sigil_proto::pem::to_pem(&b.x509_authorities),
                        "jwks": jwks,
                    }))
                })
                .collect::<anyhow::Result<Vec<_>>>()?;
            print_json(&serde_json::json!({ "bundles": items }))
        }
        Output::Text => {
            if list.is_empty() {
                println!("Found 0 foreign bundles");
            }
            for b in list {
                match format {
                    BundleFormat::Pem => {
                        println!("# {} (sequence {})", b.trust_domain, b.sequence);
                        print!("{}", sigil_proto::pem::to_pem(&b.x509_authorities));
                    }
                    BundleFormat::Jwks => println!("{}", b.jwks),
                }
            }
            Ok(())
        }
    }
}

/// `bundle set|list|delete` and `bundle show --trust-domain`.
pub async fn run_bundle(cmd: super::BundleCommand) -> anyhow::Result<()> {
    use super::BundleCommand as B;
    match cmd {
        B::Show {
            format,
            trust_domain: Some(td),
            common,
        } => {
            let mut c = connect(&common.socket).await?;
            let b = c
                .get_foreign_bundle(td_req(&td))
                .await
                .map_err(status_msg)?;
            let b = b.into_inner();
            match (common.output, format) {
                (Output::Text, BundleFormat::Pem) => {
                    print!("{}", sigil_proto::pem::to_pem(&b.x509_authorities));
                    Ok(())
                }
                (Output::Text, BundleFormat::Jwks) => {
                    println!("{}", b.jwks);
                    Ok(())
                }
                (Output::Json, f) => print_bundles(Output::Json, f, &[b]),
            }
        }
        B::Show { .. } => anyhow::bail!("the server's own bundle is shown by `bundle show`"),
        B::Set { args, common } => {
            let bundle = read_file("--path", &args.path)?;
            let mut c = connect(&common.socket).await?;
            let b = c
                .set_foreign_bundle(pb::SetForeignBundleRequest {
                    trust_domain: args.trust_domain.to_string(),
                    bundle,
                    format: args.format,
                })
                .await
                .map_err(status_msg)?
                .into_inner();
            match common.output {
                Output::Text => {
                    println!(
                        "Set the bundle of {} ({} X.509 authorities, sequence {}).",
                        b.trust_domain,
                        b.x509_authorities.len(),
                        b.sequence
                    );
                    Ok(())
                }
                Output::Json => print_bundles(Output::Json, BundleFormat::Pem, &[b]),
            }
        }
        B::List { format, common } => {
            let mut c = connect(&common.socket).await?;
            let r = c
                .list_foreign_bundles(pb::ListForeignBundlesRequest {})
                .await
                .map_err(status_msg)?;
            print_bundles(common.output, format, &r.into_inner().bundles)
        }
        B::Delete {
            trust_domain,
            common,
        } => {
            let mut c = connect(&common.socket).await?;
            let b = c
                .delete_foreign_bundle(td_req(&trust_domain))
                .await
                .map_err(status_msg)?
                .into_inner();
            match common.output {
                Output::Text => {
                    println!("Deleted the bundle of {trust_domain}; agents drop it.");
                    Ok(())
                }
                Output::Json => print_bundles(Output::Json, BundleFormat::Pem, &[b]),
            }
        }
    }
}
