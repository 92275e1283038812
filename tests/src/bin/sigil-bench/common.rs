//! What every scenario shares: the run context, the report (table or JSON
//! lines), percentiles, RSS from `/proc`, bounded polling.

use std::time::{Duration, Instant};

use anyhow::{Context, bail};

/// The run's settings.
#[derive(Debug, Clone)]
pub struct Ctx {
    pub quick: bool,
    /// CPUs this process may run on (the same cores the daemons share).
    pub cores: usize,
}

impl Ctx {
    pub fn new(quick: bool, _json: bool) -> anyhow::Result<Ctx> {
        let cores = std::thread::available_parallelism()
            .context("counting CPUs")?
            .get();
        Ok(Ctx { quick, cores })
    }

    /// `full` normally, `quick` with `--quick`.
    pub fn size(&self, full: usize, quick: usize) -> usize {
        if self.quick { quick } else { full }
    }
}

/// Which way a target points.
#[derive(Debug, Clone, Copy)]
pub enum Target {
    None,
    AtLeast(f64),
    AtMost(f64),
}

impl Target {
    fn value(self) -> Option<f64> {
        match self {
            Target::None => None,
            Target::AtLeast(v) | Target::AtMost(v) => Some(v),
        }
    }
    fn met(self, v: f64) -> Option<bool> {
        match self {
            Target::None => None,
            Target::AtLeast(t) => Some(v >= t),
            Target::AtMost(t) => Some(v <= t),
        }
    }
}

/// One reported figure.
#[derive(Debug, Clone)]
pub struct Figure {
    pub scenario: &'static str,
    pub metric: &'static str,
    pub value: f64,
    pub unit: &'static str,
    pub target: Target,
    /// For the figure's target check: the ratio is what has a target (P1)
    /// rather than the value itself.
    pub limit_ratio: Option<f64>,
}

pub struct Report {
    json: bool,
    figures: Vec<Figure>,
}

fn round(v: f64) -> f64 {
    if v.abs() >= 100.0 {
        v.round()
    } else {
        (v * 1000.0).round() / 1000.0
    }
}

impl Report {
    pub fn new(json: bool) -> Report {
        if !json {
            let (s, m, v, u, t, r) = (
                "scenario",
                "metric",
                "value",
                "unit",
                "target",
                "limit_ratio",
            );
            println!("{s:<13} {m:<34} {v:>12} {u:<8} {t:>10} {r:>11} met");
        }
        Report {
            json,
            figures: Vec::new(),
        }
    }

    pub fn add(&mut self, f: Figure) {
        let value = round(f.value);
        let ratio = f.limit_ratio.map(round);
        if self.json {
            let v = serde_json::json!({
                "scenario": f.scenario,
                "metric": f.metric,
                "value": value,
                "unit": f.unit,
                "target": f.target.value(),
                "limit_ratio": ratio,
            });
            println!("{v}");
        } else {
            let target = match f.target {
                Target::None => "-".to_string(),
                Target::AtLeast(t) => format!(">= {t}"),
                Target::AtMost(t) => format!("<= {t}"),
            };
            let met = match f.target.met(f.value) {
                None => "",
                Some(true) => "yes",
                Some(false) => "NO",
            };
            println!(
                "{:<13} {:<34} {:>12} {:<8} {:>10} {:>11} {}",
                f.scenario,
                f.metric,
                value,
                f.unit,
                target,
                ratio.map_or_else(|| "-".to_string(), |r| r.to_string()),
                met
            );
        }
        self.figures.push(f);
    }

    /// Shorthand for a figure without a limit ratio.
    pub fn fig(
        &mut self,
        scenario: &'static str,
        metric: &'static str,
        value: f64,
        unit: &'static str,
        target: Target,
    ) {
        self.add(Figure {
            scenario,
            metric,
            value,
            unit,
            target,
            limit_ratio: None,
        });
    }

    pub fn finish(&self, took: Duration) {
        let missed: Vec<&str> = self
            .figures
            .iter()
            .filter(|f| f.target.met(f.value) == Some(false))
            .map(|f| f.metric)
            .collect();
        eprintln!(
            "sigil-bench: {} figures in {:.1}s; targets missed: {}",
            self.figures.len(),
            took.as_secs_f64(),
            if missed.is_empty() {
                "none".to_string()
            } else {
                missed.join(", ")
            }
        );
    }
}

/// Progress on stderr (stdout carries only the figures).
pub fn note(msg: impl AsRef<str>) {
    eprintln!("sigil-bench: {}", msg.as_ref());
}

/// The `p`-th percentile (0..=100) of `v` (nearest rank); `v` is sorted here.
pub fn percentile(v: &mut [f64], p: f64) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(f64::total_cmp);
    let rank = ((p / 100.0) * v.len() as f64).ceil() as usize;
    v[rank.clamp(1, v.len()) - 1]
}

pub fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// Resident set size of `pid` in MiB, from `/proc/<pid>/status` `VmRSS`.
pub fn rss_mib(pid: u32) -> anyhow::Result<f64> {
    let path = format!("/proc/{pid}/status");
    let s = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
    let line = s
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .with_context(|| format!("{path} has no VmRSS line"))?;
    let kib: f64 = line
        .split_whitespace()
        .nth(1)
        .context("VmRSS value")?
        .parse()
        .context("VmRSS is not a number")?;
    Ok(kib / 1024.0)
}

/// Raises the soft RLIMIT_NOFILE to the hard limit (children inherit it).
pub fn raise_nofile() -> anyhow::Result<()> {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE).context("getrlimit")?;
    if soft < hard {
        setrlimit(Resource::RLIMIT_NOFILE, hard, hard).context("setrlimit RLIMIT_NOFILE")?;
    }
    let (soft, _) = getrlimit(Resource::RLIMIT_NOFILE).context("getrlimit")?;
    if soft < 2600 {
        note(format!(
            "warning: RLIMIT_NOFILE is {soft} even after raising the soft limit to the hard \
             one; 1,000 Workload API connections need about 2,600 descriptors (ulimit -n)"
        ));
    }
    Ok(())
}

/// Polls `f` every `every` until it returns `Some`, for at most `limit`.
pub async fn poll<T, F, Fut>(
    what: &str,
    limit: Duration,
    every: Duration,
    mut f: F,
) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<Option<T>>>,
{
    let deadline = Instant::now() + limit;
    loop {
        if let Some(v) = f().await? {
            return Ok(v);
        }
        if Instant::now() > deadline {
            bail!("{what}: not done after {limit:?}");
        }
        tokio::time::sleep(every).await;
    }
}

/// Runs `fut` with a time bound.
pub async fn bounded<T>(
    what: &str,
    limit: Duration,
    fut: impl std::future::Future<Output = anyhow::Result<T>>,
) -> anyhow::Result<T> {
    match tokio::time::timeout(limit, fut).await {
        Ok(r) => r,
        Err(_) => bail!("{what}: not done after {limit:?}"),
    }
}
