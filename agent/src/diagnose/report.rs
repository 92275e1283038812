//! What `diagnose` prints: the verdict line (`ok: …` or `FAIL: <cause>:
//! <fix> [<code>]`), then the evidence — the presented chain (subject,
//! issuer and key ids, SPIFFE IDs, validity), the bundle's CAs (subject
//! and key id), the check time and, for `--connect`, what the handshake
//! showed. `--output json` prints the same as one object.

use serde::Serialize;
use serde_json::json;
use sigil_proto::tls::verdict::Diagnosis;

use super::connect::Probe;
use super::facts::CertFacts;
use super::judge::{Finding, rfc3339};

/// `--output`: the verdict line and evidence as text, or one JSON object.
/// (Its own type: `cli` depends on this module, not the reverse.)
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Output {
    Text,
    Json,
}

/// One diagnosis, ready to print.
#[derive(Debug)]
pub struct Report {
    diagnosis: Option<Diagnosis>,
    spiffe_id: Option<String>,
    checked_at: i64,
    chain: Vec<CertFacts>,
    bundle: Vec<CertFacts>,
    probe: Option<Probe>,
}

#[derive(Serialize)]
struct CertJson<'a> {
    #[serde(flatten)]
    facts: &'a CertFacts,
    not_before_rfc3339: String,
    not_after_rfc3339: String,
}

fn cert_json(f: &CertFacts) -> CertJson<'_> {
    CertJson {
        facts: f,
        not_before_rfc3339: rfc3339(f.not_before),
        not_after_rfc3339: rfc3339(f.not_after),
    }
}

impl Report {
    pub fn of_cert(f: Finding, at: i64) -> Report {
        Report {
            diagnosis: f.diagnosis,
            spiffe_id: f.spiffe_id.map(|i| i.to_string()),
            checked_at: at,
            chain: f.chain,
            bundle: f.bundle,
            probe: None,
        }
    }

    pub fn of_connect(
        diagnosis: Option<Diagnosis>,
        f: Option<Finding>,
        probe: Probe,
        at: i64,
    ) -> Report {
        let (spiffe_id, chain, bundle) = match f {
            Some(f) => (f.spiffe_id.map(|i| i.to_string()), f.chain, f.bundle),
            None => (None, Vec::new(), Vec::new()),
        };
        Report {
            diagnosis,
            spiffe_id,
            checked_at: at,
            chain,
            bundle,
            probe: Some(probe),
        }
    }

    /// True when the connection would succeed.
    pub fn ok(&self) -> bool {
        self.diagnosis.is_none()
    }

    fn verdict_line(&self) -> String {
        match &self.diagnosis {
            Some(d) => format!("FAIL: {d}"),
            None => format!(
                "ok: {} would be accepted",
                self.spiffe_id.as_deref().unwrap_or("the peer")
            ),
        }
    }

    pub fn print(&self, output: Output) -> anyhow::Result<()> {
        match output {
            Output::Json => println!("{}", serde_json::to_string_pretty(&self.json())?),
            Output::Text => print!("{}", self.text()),
        }
        Ok(())
    }

    fn json(&self) -> serde_json::Value {
        json!({
            "ok": self.ok(),
            "verdict": self.diagnosis.as_ref().map_or("ok", |d| d.verdict.code()),
            "detail": self.diagnosis.as_ref().map(|d| d.detail.clone()),
            "fix": self.diagnosis.as_ref().map(|d| d.verdict.fix()),
            "line": self.verdict_line(),
            "spiffe_id": self.spiffe_id,
            "checked_at": rfc3339(self.checked_at),
            "chain": self.chain.iter().map(cert_json).collect::<Vec<_>>(),
            "bundle": self.bundle.iter().map(cert_json).collect::<Vec<_>>(),
            "connect": self.probe,
        })
    }

    fn text(&self) -> String {
        let mut s = format!("{}\n", self.verdict_line());
        s.push_str(&format!("  checked at {}\n", rfc3339(self.checked_at)));
        if let Some(p) = &self.probe {
            s.push_str(&format!(
                "  connect {}: TLS {}, client certificate requested: {}, our SVID: {}, \
                 accepted us: {}\n",
                p.address,
                p.tls_version.as_deref().unwrap_or("-"),
                if p.client_cert_requested { "yes" } else { "no" },
                p.presented_as.as_deref().unwrap_or("not sent"),
                match p.accepted_us {
                    Some(true) => "yes (no refusal)",
                    Some(false) => "no",
                    None => "-",
                }
            ));
        }
        for (i, c) in self.chain.iter().enumerate() {
            s.push_str(&format!(
                "  presented[{i}] {} ids [{}] serial {} issuer {} valid {} .. {}{}{}\n",
                c.subject,
                c.uri_sans.join(", "),
                c.serial,
                c.issuer_label(),
                rfc3339(c.not_before),
                rfc3339(c.not_after),
                if c.is_ca { " cA" } else { "" },
                match (&c.key_usage, &c.ext_key_usage) {
                    (None, None) => String::new(),
                    (ku, eku) => format!(
                        " keyUsage [{}] extKeyUsage [{}]",
                        ku.as_deref().unwrap_or_default().join(", "),
                        eku.as_deref().unwrap_or_default().join(", ")
                    ),
                }
            ));
        }
        for c in &self.bundle {
            s.push_str(&format!("  bundle CA {}\n", c.ca_label()));
        }
        s
    }
}
