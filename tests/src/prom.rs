//! A strict reader of the Prometheus text exposition format (0.0.4) and a
//! minimal HTTP/1.1 GET, for tests of the daemons' `/metrics`, `/live` and
//! `/ready`.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use anyhow::{Context, bail, ensure};

/// `GET path` over a fresh connection: the status code and the body.
pub fn http_get(addr: SocketAddr, path: &str) -> anyhow::Result<(u16, String)> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw)?;
    let text = String::from_utf8(raw).context("response is not UTF-8")?;
    let (head, body) = text.split_once("\r\n\r\n").context("no header end")?;
    let status = head
        .split_whitespace()
        .nth(1)
        .context("no status")?
        .parse()?;
    let chunked = head.lines().any(|l| {
        l.to_ascii_lowercase()
            .starts_with("transfer-encoding: chunked")
    });
    let body = if chunked {
        dechunk(body)?
    } else {
        body.to_string()
    };
    Ok((status, body))
}

/// The body of a `Transfer-Encoding: chunked` response.
pub fn dechunk(mut body: &str) -> anyhow::Result<String> {
    let mut out = String::new();
    loop {
        let (size, rest) = body.split_once("\r\n").context("bad chunk")?;
        let n = usize::from_str_radix(size.trim(), 16)?;
        if n == 0 {
            return Ok(out);
        }
        ensure!(rest.len() >= n + 2, "short chunk");
        out.push_str(&rest[..n]);
        body = &rest[n + 2..];
    }
}

/// One sample: its labels and value.
#[derive(Debug, Clone)]
pub struct Sample {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub value: f64,
}

/// One metric family: `# TYPE`, `# HELP` and its samples.
#[derive(Debug, Clone, Default)]
pub struct Family {
    pub kind: String,
    pub help: Option<String>,
    pub samples: Vec<Sample>,
}

impl Family {
    /// The value of the sample named `name` whose labels include `want`.
    pub fn value(&self, name: &str, want: &[(&str, &str)]) -> Option<f64> {
        self.samples
            .iter()
            .find(|s| {
                s.name == name
                    && want
                        .iter()
                        .all(|(k, v)| s.labels.get(*k).is_some_and(|x| x == v))
            })
            .map(|s| s.value)
    }

    /// Sum of all samples named `name`.
    pub fn sum(&self, name: &str) -> f64 {
        self.samples
            .iter()
            .filter(|s| s.name == name)
            .map(|s| s.value)
            .sum()
    }
}

fn valid_name(n: &str) -> bool {
    let mut chars = n.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

fn parse_value(v: &str) -> anyhow::Result<f64> {
    Ok(match v {
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        "NaN" => f64::NAN,
        _ => v.parse().with_context(|| format!("bad value {v:?}"))?,
    })
}

/// Splits `{a="x",b="y"}` into labels; returns them and the rest.
fn parse_labels(s: &str) -> anyhow::Result<(BTreeMap<String, String>, &str)> {
    let mut labels = BTreeMap::new();
    let mut rest = s.strip_prefix('{').context("no {")?;
    loop {
        rest = rest.trim_start_matches(',');
        if let Some(r) = rest.strip_prefix('}') {
            return Ok((labels, r));
        }
        let (name, r) = rest.split_once("=\"").context("label without =\"")?;
        ensure!(valid_name(name), "bad label name {name:?}");
        let mut value = String::new();
        let mut chars = r.char_indices();
        let end = loop {
            match chars.next() {
                Some((i, '"')) => break i,
                Some((_, '\\')) => match chars.next() {
                    Some((_, 'n')) => value.push('\n'),
                    Some((_, c @ ('\\' | '"'))) => value.push(c),
                    other => bail!("bad escape {other:?}"),
                },
                Some((_, c)) => value.push(c),
                None => bail!("unterminated label value"),
            }
        };
        ensure!(
            labels.insert(name.to_string(), value).is_none(),
            "label {name} repeated"
        );
        rest = &r[end + 1..];
    }
}

/// The family a sample belongs to (histogram/summary suffixes removed when
/// such a family was declared).
fn family_of<'a>(name: &'a str, families: &BTreeMap<String, Family>) -> &'a str {
    for suffix in ["_bucket", "_sum", "_count"] {
        if let Some(base) = name.strip_suffix(suffix)
            && families
                .get(base)
                .is_some_and(|f| f.kind == "histogram" || f.kind == "summary")
        {
            return base;
        }
    }
    name
}

/// Parses a whole exposition, checking every line, and the histogram rules
/// (cumulative buckets ending in `+Inf` equal to `_count`).
pub fn parse(text: &str) -> anyhow::Result<BTreeMap<String, Family>> {
    let mut families: BTreeMap<String, Family> = BTreeMap::new();
    for (no, line) in text.lines().enumerate() {
        let ctx = || format!("line {}: {line:?}", no + 1);
        if line.trim().is_empty() {
            continue;
        }
        if let Some(c) = line.strip_prefix("# ") {
            let mut parts = c.splitn(3, ' ');
            match (parts.next(), parts.next(), parts.next()) {
                (Some("TYPE"), Some(name), Some(kind)) => {
                    ensure!(valid_name(name), "bad metric name: {}", ctx());
                    ensure!(
                        ["counter", "gauge", "histogram", "summary", "untyped"].contains(&kind),
                        "bad type: {}",
                        ctx()
                    );
                    let f = families.entry(name.to_string()).or_default();
                    ensure!(
                        f.kind.is_empty() && f.samples.is_empty(),
                        "TYPE after samples or twice: {}",
                        ctx()
                    );
                    f.kind = kind.to_string();
                }
                (Some("HELP"), Some(name), help) => {
                    ensure!(valid_name(name), "bad metric name: {}", ctx());
                    families.entry(name.to_string()).or_default().help =
                        Some(help.unwrap_or("").to_string());
                }
                _ => {} // a comment
            }
            continue;
        }
        ensure!(!line.starts_with('#'), "bad comment: {}", ctx());
        let name_end = line.find(['{', ' ']).with_context(ctx)?;
        let name = &line[..name_end];
        ensure!(valid_name(name), "bad metric name: {}", ctx());
        let (labels, rest) = if line[name_end..].starts_with('{') {
            parse_labels(&line[name_end..]).with_context(ctx)?
        } else {
            (BTreeMap::new(), &line[name_end..])
        };
        let mut fields = rest.split_whitespace();
        let value = parse_value(fields.next().with_context(ctx)?).with_context(ctx)?;
        if let Some(ts) = fields.next() {
            ts.parse::<i64>().with_context(ctx)?;
        }
        ensure!(fields.next().is_none(), "trailing fields: {}", ctx());
        let fam = family_of(name, &families).to_string();
        let f = families.entry(fam).or_default();
        if f.kind.is_empty() {
            f.kind = "untyped".into();
        }
        f.samples.push(Sample {
            name: name.to_string(),
            labels,
            value,
        });
    }
    for (name, f) in &families {
        if f.kind == "histogram" {
            check_histogram(name, f)?;
        }
        if f.kind == "counter" {
            for s in &f.samples {
                ensure!(s.value >= 0.0, "{name}: negative counter {}", s.value);
            }
        }
    }
    Ok(families)
}

/// A series' labels other than `le`.
type SeriesKey = Vec<(String, String)>;

fn check_histogram(name: &str, f: &Family) -> anyhow::Result<()> {
    // Group buckets (le, cumulative count) by their other labels.
    let mut series: BTreeMap<SeriesKey, Vec<(f64, f64)>> = BTreeMap::new();
    for s in f
        .samples
        .iter()
        .filter(|s| s.name == format!("{name}_bucket"))
    {
        let le = parse_value(s.labels.get("le").context("bucket without le")?)?;
        let key = s
            .labels
            .iter()
            .filter(|(k, _)| *k != "le")
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        series.entry(key).or_default().push((le, s.value));
    }
    ensure!(!series.is_empty(), "{name}: histogram without buckets");
    for (key, buckets) in series {
        let mut last = (f64::NEG_INFINITY, 0.0);
        for &(le, v) in &buckets {
            ensure!(le > last.0, "{name}: buckets out of order");
            ensure!(v >= last.1, "{name}: buckets not cumulative");
            last = (le, v);
        }
        ensure!(last.0 == f64::INFINITY, "{name}: no +Inf bucket");
        let want: Vec<(&str, &str)> = key.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        let count = f
            .value(&format!("{name}_count"), &want)
            .context("histogram without _count")?;
        ensure!(
            count == last.1,
            "{name}: +Inf bucket {} != count {count}",
            last.1
        );
        f.value(&format!("{name}_sum"), &want)
            .context("histogram without _sum")?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_checks() {
        let text = "# HELP a_total A.\n# TYPE a_total counter\na_total{k=\"v\\\"x\"} 3\n\
                    # TYPE h histogram\nh_bucket{le=\"0.1\"} 1\nh_bucket{le=\"+Inf\"} 2\nh_sum 0.3\nh_count 2\n\
                    g NaN\n";
        let f = parse(text).unwrap();
        assert_eq!(f["a_total"].value("a_total", &[("k", "v\"x")]), Some(3.0));
        assert_eq!(f["h"].kind, "histogram");
        assert_eq!(f["g"].kind, "untyped");
        for bad in [
            "a{k=\"v} 1\n",
            "a 1 2 3\n",
            "1a 3\n",
            "a x\n",
            "# TYPE a countr\n",
            "# TYPE h histogram\nh_bucket{le=\"1\"} 2\nh_bucket{le=\"+Inf\"} 1\nh_sum 0\nh_count 1\n",
            "# TYPE h histogram\nh_bucket{le=\"+Inf\"} 2\nh_sum 0\nh_count 1\n",
            "# TYPE c counter\nc -1\n",
        ] {
            assert!(parse(bad).is_err(), "{bad:?} accepted");
        }
    }
}
