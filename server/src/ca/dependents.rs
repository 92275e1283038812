//! Which attested agents still depend on a CA: an agent whose current SVID
//! that CA signed (recorded at signing as the agent's `ca_serial`) cannot
//! authenticate once the CA leaves the bundle, and would have to be
//! re-attested by hand. `ca revoke` refuses while there is one (unless
//! forced). Evicted agents have no record; banned agents and SVIDs that have
//! already expired do not count. A record written before the signing CA was
//! recorded counts too while its SVID is valid: nobody can tell it is safe.

use tracing::warn;

use crate::store::AttestedAgent;

/// How many agent IDs a refusal or warning names.
const NAMED: usize = 3;

/// Agents whose current SVID chains (or may chain) to the CA `ca_serial`.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Dependents {
    /// SPIFFE IDs, sorted.
    pub agent_ids: Vec<String>,
    /// Of those, how many have no recorded signing CA.
    pub unrecorded: usize,
}

impl Dependents {
    /// The agents in `agents` that still depend on the CA `ca_serial` at
    /// `now` (unix seconds).
    pub fn of(agents: &[AttestedAgent], ca_serial: &str, now: i64) -> Dependents {
        let mut d = Dependents::default();
        for a in agents {
            if a.banned || a.expires_at <= now {
                continue;
            }
            match &a.ca_serial {
                Some(s) if s != ca_serial => continue,
                Some(_) => {}
                None => d.unrecorded += 1,
            }
            d.agent_ids.push(a.spiffe_id.to_string());
        }
        d.agent_ids.sort();
        d
    }

    pub fn is_empty(&self) -> bool {
        self.agent_ids.is_empty()
    }

    /// "2 attested agents (spiffe://…, spiffe://…) hold an SVID signed by
    /// CA serial S"; names at most [`NAMED`] of them.
    pub fn describe(&self, ca_serial: &str) -> String {
        let n = self.agent_ids.len();
        let mut names = self
            .agent_ids
            .iter()
            .take(NAMED)
            .cloned()
            .collect::<Vec<_>>()
            .join(", ");
        if n > NAMED {
            names.push_str(&format!(", and {} more", n - NAMED));
        }
        let unrecorded = if self.unrecorded > 0 {
            format!(
                " ({} of them recorded before the signing CA was, so possibly)",
                self.unrecorded
            )
        } else {
            String::new()
        };
        format!(
            "{n} attested agent{} ({names}) hold{} an agent SVID signed by CA serial \
             {ca_serial}{unrecorded}",
            if n == 1 { "" } else { "s" },
            if n == 1 { "s" } else { "" },
        )
    }
}

/// The dependents check of `ca revoke` on the CA `serial` in `slot`: the
/// refusal, or (when forced or nobody depends on it) the warnings to show.
pub fn check_revoke(
    agents: &[AttestedAgent],
    slot: &str,
    serial: &str,
    now: i64,
    force: bool,
) -> Result<Vec<String>, String> {
    let d = Dependents::of(agents, serial, now);
    if d.is_empty() {
        return Ok(Vec::new());
    }
    let what = d.describe(serial);
    if !force {
        return Err(format!(
            "{what}; revoking slot {slot} would lock them out (each would need a new \
             attestation). Wait until they renew from the active CA (`agent list`), evict \
             the ones that are gone, or pass --force"
        ));
    }
    warn!(
        slot,
        serial,
        agents = d.agent_ids.len(),
        "revoking a CA that agents still depend on, as forced"
    );
    Ok(vec![format!(
        "{what}: they can no longer authenticate and must be attested again (new join \
         token, or x509pop re-attestation)"
    )])
}

#[cfg(test)]
mod tests {
    use super::*;
    use sigil_proto::SpiffeId;

    fn agent(path: &str, ca: Option<&str>, expires_at: i64, banned: bool) -> AttestedAgent {
        AttestedAgent {
            spiffe_id: SpiffeId::parse(&format!("spiffe://example.org{path}")).unwrap(),
            attestor: "join_token".into(),
            selectors: vec![],
            serial: "01".into(),
            previous_serial: None,
            expires_at,
            ca_serial: ca.map(str::to_string),
            banned,
            ban_rules: vec![],
            attested_at: 0,
            updated_at: 0,
        }
    }

    #[test]
    fn counts_only_live_agents_on_that_ca() {
        let agents = [
            agent("/a/on", Some("aa"), 100, false),
            agent("/b/other", Some("bb"), 100, false),
            agent("/c/expired", Some("aa"), 50, false),
            agent("/d/banned", Some("aa"), 100, true),
            agent("/e/legacy", None, 100, false),
        ];
        let d = Dependents::of(&agents, "aa", 60);
        assert_eq!(
            d.agent_ids,
            ["spiffe://example.org/a/on", "spiffe://example.org/e/legacy"]
        );
        assert_eq!(d.unrecorded, 1);
        let msg = d.describe("aa");
        assert!(msg.starts_with("2 attested agents ("), "{msg}");
        assert!(msg.contains("1 of them recorded before"), "{msg}");
        assert!(Dependents::of(&agents, "cc", 60).agent_ids == ["spiffe://example.org/e/legacy"]);
    }

    #[test]
    fn names_at_most_three() {
        let agents: Vec<_> = (0..5)
            .map(|i| agent(&format!("/n{i}"), Some("aa"), 100, false))
            .collect();
        let msg = Dependents::of(&agents, "aa", 0).describe("aa");
        assert!(msg.contains("/n2, and 2 more"), "{msg}");
        assert!(!msg.contains("/n3"), "{msg}");
    }
}
