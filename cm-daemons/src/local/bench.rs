//! `cm_local bench`: the node-crash failover time on real PostgreSQL. Each trial brings up a
//! fresh local cluster, kills every process of the primary's node at once, and measures the
//! wall time until an INSERT commits on another node (tried every 20 ms). Figures, not a test.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use cm_core::params::Profile;
use tokio_postgres::NoTls;

use super::cluster::primary_node;
use super::{LocalCluster, LocalOptions, NODES};

/// A client session to a DN on 127.0.0.1 (as an application would connect).
pub async fn connect(port: u16, timeout: Duration) -> Result<tokio_postgres::Client, String> {
    let mut cfg = tokio_postgres::Config::new();
    cfg.host("127.0.0.1")
        .port(port)
        .user(super::DB_OS_USER)
        .dbname("postgres")
        .connect_timeout(timeout);
    let (client, conn) = cfg.connect(NoTls).await.map_err(|e| e.to_string())?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(client)
}

/// One statement on a fresh session; the error text when it fails. A statement still waiting
/// after 15 s (a commit waiting for a synchronous standby) counts as not acknowledged.
pub async fn execute(port: u16, sql: &str) -> Result<u64, String> {
    let c = connect(port, Duration::from_millis(500)).await?;
    match tokio::time::timeout(Duration::from_secs(15), c.execute(sql, &[])).await {
        Ok(r) => r.map_err(|e| {
            e.as_db_error()
                .map_or_else(|| e.to_string(), |d| d.message().to_owned())
        }),
        Err(_) => Err(format!("`{sql}` not acknowledged within 15 s")),
    }
}

/// Per-profile results in seconds.
#[derive(Clone, Debug)]
pub struct ProfileResult {
    /// The profile.
    pub profile: Profile,
    /// Seconds from the kill to the first committed INSERT, per successful trial.
    pub trials: Vec<f64>,
    /// Trials that failed, with why.
    pub failures: Vec<String>,
}

impl ProfileResult {
    /// Median, min and max, when there is a figure.
    pub fn stats(&self) -> Option<(f64, f64, f64)> {
        let mut v = self.trials.clone();
        if v.is_empty() {
            return None;
        }
        v.sort_by(f64::total_cmp);
        let mid = v.len() / 2;
        let median = if v.len() % 2 == 1 {
            v[mid]
        } else {
            (v[mid - 1] + v[mid]) / 2.0
        };
        Some((median, v[0], v[v.len() - 1]))
    }
}

/// One trial: fresh cluster, Normal, table created, kill the primary's node, time the first
/// INSERT elsewhere. The cluster is torn down before returning.
pub fn trial(opts: LocalOptions, rt: &tokio::runtime::Runtime) -> anyhow::Result<f64> {
    let mut c = LocalCluster::create(opts)?;
    c.start_monitors()?;
    let s = c.wait_normal(Duration::from_secs(180), |_| {})?;
    let primary = primary_node(&s).context("no primary")?;
    rt.block_on(execute(
        c.dn_port(primary),
        "CREATE TABLE bench (at timestamptz DEFAULT now())",
    ))
    .map_err(|e| anyhow::anyhow!("create table: {e}"))?;
    let others: Vec<u16> = (1..=NODES)
        .filter(|n| *n != primary)
        .map(|n| c.dn_port(n))
        .collect();
    let t0 = Instant::now();
    let left = c.kill_node(primary);
    if !left.is_empty() {
        bail!("node {primary} survived the kill: groups {left:?}");
    }
    let limit = Duration::from_secs(120);
    loop {
        for port in &others {
            if rt
                .block_on(execute(*port, "INSERT INTO bench DEFAULT VALUES"))
                .is_ok()
            {
                return Ok(t0.elapsed().as_secs_f64());
            }
        }
        if t0.elapsed() > limit {
            bail!("no INSERT succeeded within {limit:?} of the kill");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Runs `trials` trials per profile, each in a fresh directory under `root`, printing as it
/// goes.
pub fn run(
    root: &Path,
    profiles: &[Profile],
    trials: u32,
    template: &LocalOptions,
) -> anyhow::Result<Vec<ProfileResult>> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let mut results = Vec::new();
    for &profile in profiles {
        let mut r = ProfileResult {
            profile,
            trials: Vec::new(),
            failures: Vec::new(),
        };
        for i in 1..=trials {
            let mut opts = template.clone();
            opts.profile = profile;
            opts.dir = root.join(format!("{profile:?}-{i}").to_lowercase());
            opts.keep = false;
            match trial(opts, &rt) {
                Ok(t) => {
                    println!(
                        "{profile:?} trial {i}: writable on another node {t:.3} s after the node kill"
                    );
                    r.trials.push(t);
                }
                Err(e) => {
                    println!("{profile:?} trial {i}: FAILED: {e:#}");
                    r.failures.push(format!("{e:#}"));
                }
            }
        }
        results.push(r);
    }
    Ok(results)
}

/// The summary table.
pub fn render(results: &[ProfileResult]) -> String {
    let mut out = String::from("profile   trials  median_s  min_s   max_s   failed\n");
    for r in results {
        let (med, min, max) = r.stats().map_or_else(
            || ("-".into(), "-".into(), "-".into()),
            |(a, b, c)| (format!("{a:.3}"), format!("{b:.3}"), format!("{c:.3}")),
        );
        out.push_str(&format!(
            "{:<9} {:<7} {med:<9} {min:<7} {max:<7} {}\n",
            format!("{:?}", r.profile).to_lowercase(),
            r.trials.len(),
            r.failures.len()
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_is_the_middle_or_the_mean_of_the_two_middles() {
        let r = |v: Vec<f64>| ProfileResult {
            profile: Profile::Fast,
            trials: v,
            failures: vec![],
        };
        assert_eq!(r(vec![3.0, 1.0, 2.0]).stats(), Some((2.0, 1.0, 3.0)));
        assert_eq!(r(vec![4.0, 1.0, 2.0, 3.0]).stats(), Some((2.5, 1.0, 4.0)));
        assert_eq!(r(vec![]).stats(), None);
    }
}
