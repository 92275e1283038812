//! Which peer SPIFFE IDs a proxy listener accepts: a list of patterns, each
//! an exact ID (`spiffe://example.org/web`), an ID with whole-segment `*`
//! wildcards (`spiffe://example.org/ns/*/sa/web`: exactly one non-empty
//! segment each) or an ID ending in `/**` (`spiffe://example.org/ns/**`:
//! one or more further segments). The trust domain is always literal. An
//! empty list and any other use of `*` are refused when the config loads.

use sigil_proto::spiffe_id::{SpiffeId, TrustDomain};

/// One segment of a pattern's path.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Segment {
    Literal(String),
    /// `*`: any one segment.
    Any,
}

/// One allow pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pattern {
    text: String,
    td: TrustDomain,
    segments: Vec<Segment>,
    /// Ends in `/**`.
    subtree: bool,
}

impl Pattern {
    /// Parses `text`; the error says which rule it breaks.
    pub fn parse(text: &str) -> Result<Pattern, String> {
        let rest = text
            .strip_prefix("spiffe://")
            .ok_or_else(|| format!("{text:?} must start with spiffe://"))?;
        let (td, path) = rest.split_once('/').ok_or_else(|| {
            format!("{text:?} has no path (a trust domain alone is no workload ID)")
        })?;
        let td = TrustDomain::parse(td).map_err(|e| {
            format!("{text:?}: the trust domain is invalid ({e}); it cannot be a glob")
        })?;
        let mut parts: Vec<&str> = path.split('/').collect();
        let subtree = parts.last() == Some(&"**");
        if subtree {
            parts.pop();
        }
        let mut segments = Vec::with_capacity(parts.len());
        for p in parts {
            if p == "*" {
                segments.push(Segment::Any);
            } else if p.contains('*') {
                return Err(format!(
                    "{text:?}: {p:?} is not allowed: `*` must be a whole segment and `**` only \
                     the last one"
                ));
            } else {
                segments.push(Segment::Literal(p.to_string()));
            }
        }
        if segments.is_empty() {
            return Err(format!(
                "{text:?} would allow every ID of the trust domain: name at least one path segment \
                 before /**"
            ));
        }
        // The literal parts must make a valid ID (no empty segments, no
        // dot segments, allowed characters).
        let probe: Vec<&str> = segments
            .iter()
            .map(|s| match s {
                Segment::Literal(l) => l.as_str(),
                Segment::Any => "x",
            })
            .collect();
        SpiffeId::parse(&format!("spiffe://{}/{}", td.as_str(), probe.join("/")))
            .map_err(|e| format!("{text:?} is not a SPIFFE ID pattern: {e}"))?;
        Ok(Pattern {
            text: text.to_string(),
            td,
            segments,
            subtree,
        })
    }

    pub fn matches(&self, id: &SpiffeId) -> bool {
        if !id.is_member_of(&self.td) {
            return false;
        }
        let parts: Vec<&str> = id.path().trim_start_matches('/').split('/').collect();
        let n = self.segments.len();
        let len_ok = if self.subtree {
            parts.len() > n
        } else {
            parts.len() == n
        };
        len_ok
            && self.segments.iter().zip(&parts).all(|(s, p)| match s {
                Segment::Any => !p.is_empty(),
                Segment::Literal(l) => l == p,
            })
    }

    pub fn as_str(&self) -> &str {
        &self.text
    }
}

/// A non-empty list of patterns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AllowList(Vec<Pattern>);

impl AllowList {
    /// Parses every pattern; refuses an empty list.
    pub fn parse(patterns: &[String]) -> Result<AllowList, String> {
        if patterns.is_empty() {
            return Err(
                "is empty: name the SPIFFE IDs (or ID patterns) that may connect; there is no \
                 allow-all"
                    .into(),
            );
        }
        patterns
            .iter()
            .map(|p| Pattern::parse(p))
            .collect::<Result<_, _>>()
            .map(AllowList)
    }

    pub fn allows(&self, id: &SpiffeId) -> bool {
        self.0.iter().any(|p| p.matches(id))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn list(p: &[&str]) -> AllowList {
        AllowList::parse(&p.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap()
    }

    fn id(s: &str) -> SpiffeId {
        SpiffeId::parse(s).unwrap()
    }

    #[test]
    fn item1_allow_globs_match_exact_one_segment_and_subtree() {
        let l = list(&[
            "spiffe://example.org/web",
            "spiffe://example.org/ns/*/sa",
            "spiffe://example.org/batch/**",
        ]);
        for ok in [
            "spiffe://example.org/web",
            "spiffe://example.org/ns/a/sa",
            "spiffe://example.org/batch/x",
            "spiffe://example.org/batch/x/y",
        ] {
            assert!(l.allows(&id(ok)), "{ok}");
        }
        for no in [
            "spiffe://example.org/web/x",
            "spiffe://example.org/webx",
            "spiffe://other.org/web",
            "spiffe://example.org/ns/a/b/sa",
            "spiffe://example.org/ns/sa",
            "spiffe://example.org/batch",
            "spiffe://example.org/batchx/y",
        ] {
            assert!(!l.allows(&id(no)), "{no}");
        }
    }

    #[test]
    fn item1_empty_lists_and_bad_globs_are_refused() {
        assert!(AllowList::parse(&[]).unwrap_err().contains("is empty"));
        for bad in [
            "spiffe://example.org/web*",
            "spiffe://example.org/**/x",
            "spiffe://*.org/web",
            "spiffe://example.org/**",
            "spiffe://example.org",
            "https://example.org/web",
            "spiffe://example.org/a//b",
        ] {
            assert!(Pattern::parse(bad).is_err(), "{bad} accepted");
        }
    }
}
