//! `cm_local bench --http`: the cost of the agents' health endpoints (SPEC §15) on a real local
//! cluster — `/primary` on the primary's agent at a fixed rate, one fresh TCP connection per
//! request (as HAProxy's checks do), latency from connect to the last byte of the answer.

use std::io::{Read as _, Write as _};

use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};

use super::cluster::primary_node;
use super::{LocalCluster, LocalOptions};

/// What one run measured.
#[derive(Clone, Debug, PartialEq)]
pub struct HttpBench {
    /// Requests sent.
    pub requests: usize,
    /// Requests per second asked for.
    pub rate: u32,
    /// Answers with status 200.
    pub ok: usize,
    /// Latencies, sorted, in microseconds.
    pub latencies_us: Vec<u64>,
    /// The same requests, interleaved, to a trivial server in the bench process (a thread that
    /// answers a fixed 200 on each connection): what this machine's scheduling alone costs.
    pub baseline_us: Vec<u64>,
}

impl HttpBench {
    /// The `q`-quantile (0..=1) of the latencies in microseconds (nearest rank).
    pub fn quantile_us(&self, q: f64) -> u64 {
        nearest_rank(&self.latencies_us, q)
    }

    /// The printed table.
    pub fn render(&self) -> String {
        format!(
            "HTTP /primary on the primary's agent: {} requests at {}/s, one connection each\n\
             status 200: {}/{}\n\
             latency (connect to last byte): p50 {:.3} ms, p90 {:.3} ms, p99 {:.3} ms, max {:.3} ms\n\
             goal p99 < 1 ms: {}\n",
            self.requests,
            self.rate,
            self.ok,
            self.requests,
            ms(self.quantile_us(0.5)),
            ms(self.quantile_us(0.9)),
            ms(self.quantile_us(0.99)),
            ms(self.quantile_us(1.0)),
            if self.quantile_us(0.99) < 1000 {
                "met"
            } else {
                "MISSED"
            }
        ) + &format!(
            "baseline (a trivial server thread in the bench, same requests interleaved): \
             p50 {:.3} ms, p99 {:.3} ms, max {:.3} ms\n",
            ms(nearest_rank(&self.baseline_us, 0.5)),
            ms(nearest_rank(&self.baseline_us, 0.99)),
            ms(nearest_rank(&self.baseline_us, 1.0)),
        )
    }
}

fn ms(us: u64) -> f64 {
    us as f64 / 1000.0
}

/// Nearest-rank quantile of sorted values (0 when empty).
pub fn nearest_rank(sorted: &[u64], q: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = (q.clamp(0.0, 1.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// Brings up a fast-profile cluster in `opts.dir`, waits until the primary's agent answers
/// `/primary` with 200, then sends `requests` requests at `rate` per second. Tears down after.
pub fn run(mut opts: LocalOptions, requests: usize, rate: u32) -> anyhow::Result<HttpBench> {
    // A nearly full build disk must not make the primary read-only (503 by design).
    opts.extra_params
        .push(("datastorage_threshold_value_check".into(), "99".into()));
    let _ = std::fs::remove_dir_all(&opts.dir);
    let mut c = LocalCluster::create(opts)?;
    c.start_monitors()?;
    let s = c.wait_normal(Duration::from_secs(120), |_| {})?;
    let p = primary_node(&s).context("no primary")?;
    let port = c
        .rest_port(p)
        .context("the primary's node has no rest_port")?;
    let tls = c.http_tls(p)?;
    let deadline = Instant::now() + Duration::from_secs(60);
    while !get(port, Some(&tls), "/primary").is_ok_and(|(code, _)| code == 200) {
        if Instant::now() > deadline {
            bail!("/primary on node {p} did not answer 200 within 60 s");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let baseline_port = trivial_server(requests)?;
    let gap = Duration::from_secs(1) / rate.max(1);
    let start = Instant::now();
    let mut latencies = Vec::with_capacity(requests);
    let mut baseline = Vec::with_capacity(requests);
    let mut ok = 0;
    for i in 0..requests {
        let due = start + gap * u32::try_from(i).unwrap_or(u32::MAX);
        if let Some(wait) = due.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
        let t = Instant::now();
        let (code, _) = get(port, Some(&tls), "/primary")?;
        latencies.push(u64::try_from(t.elapsed().as_micros()).unwrap_or(u64::MAX));
        if code == 200 {
            ok += 1;
        }
        let t = Instant::now();
        get(baseline_port, None, "/")?;
        baseline.push(u64::try_from(t.elapsed().as_micros()).unwrap_or(u64::MAX));
    }
    latencies.sort_unstable();
    baseline.sort_unstable();
    c.teardown();
    Ok(HttpBench {
        requests,
        rate,
        ok,
        latencies_us: latencies,
        baseline_us: baseline,
    })
}

/// A thread that answers `count` connections with a fixed 200 (the baseline's server).
fn trivial_server(count: usize) -> anyhow::Result<u16> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    let port = listener.local_addr()?.port();
    std::thread::spawn(move || {
        for stream in listener.incoming().take(count) {
            let Ok(mut s) = stream else { continue };
            let mut buf = [0u8; 1024];
            let mut seen = Vec::new();
            while !seen.windows(4).any(|w| w == b"\r\n\r\n") {
                match s.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => seen.extend_from_slice(&buf[..n]),
                }
            }
            let _ =
                s.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\n{}");
        }
    });
    Ok(port)
}

/// One GET on a fresh connection to 127.0.0.1:`port` (HTTPS when `tls` is given, the
/// handshake included in the time): (status, body).
pub fn get(
    port: u16,
    tls: Option<&cm_io::http::ClientTls>,
    target: &str,
) -> anyhow::Result<(u16, String)> {
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    Ok(cm_io::http::request(
        addr,
        tls,
        "GET",
        target,
        Duration::from_secs(5),
    )?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_quantiles() {
        let v: Vec<u64> = (1..=100).collect();
        assert_eq!(nearest_rank(&v, 0.5), 50);
        assert_eq!(nearest_rank(&v, 0.99), 99);
        assert_eq!(nearest_rank(&v, 1.0), 100);
        assert_eq!(nearest_rank(&v, 0.0), 1);
        assert_eq!(nearest_rank(&[], 0.5), 0);
        let b = HttpBench {
            requests: 3,
            rate: 100,
            ok: 3,
            latencies_us: vec![200, 300, 1500],
            baseline_us: vec![100],
        };
        assert!(b.render().contains("p99 1.500 ms"), "{}", b.render());
        assert!(b.render().contains("MISSED"));
    }
}
