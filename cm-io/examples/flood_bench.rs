//! Flood bench (issue 15 item 6, transport level): a "heartbeat" frame every 50 ms from one
//! authenticated peer to a TLS listener, measured without and then with a flood of bad
//! connections against the same listener (garbage bytes, TLS handshakes with a foreign CA's
//! certificate, silent connections), side by side. Loopback only, bounded in time and count.
//!
//! `cargo run --release -p cm-io --example flood_bench [SECONDS_PER_PHASE] [FLOODERS]`
//!
//! What it shows: the interval between heartbeats as the listener's event queue sees them
//! (p50, p99, max) and how many flood connections were refused, by reason. It does not run
//! cm_server's quorum: `cm_local bench --flood` measures a running cluster (BENCHMARKS.md).
//! The flooder is `cm_io::transport::flood`, shared with that bench.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use cm_core::io::NetEvent;
use cm_core::msg::{Endpoint, Envelope, Msg};
use cm_core::{NodeId, QuorumTerm};
use cm_io::transport::certgen::{self, Ca, Validity};
use cm_io::transport::flood::{Flood, FloodSpec};
use cm_io::transport::{
    AddressBook, Limits, Security, Tls, TlsFiles, Transport, TransportConfig, tls,
};

const CMS1: Endpoint = Endpoint::server(NodeId(1));
const CMS2: Endpoint = Endpoint::server(NodeId(2));
const HEARTBEAT: Duration = Duration::from_millis(50);
/// Bound on flood connections per flooder per phase.
const MAX_FLOOD_CONNECTIONS: u64 = 50_000;

fn security(dir: &std::path::Path, who: &str) -> Security {
    let names: BTreeMap<NodeId, String> = [(NodeId(1), "n1".into()), (NodeId(2), "n2".into())]
        .into_iter()
        .collect();
    let files = TlsFiles {
        ca: dir.join("ca.crt"),
        cert: dir.join(format!("{who}.crt")),
        key: dir.join(format!("{who}.key")),
    };
    Security::Tls(Arc::new(Tls::load(files, names).expect("material")))
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

struct Phase {
    intervals_ms: Vec<f64>,
    flood_opened: u64,
    refused: cm_io::transport::RefusalStats,
}

async fn phase(dir: &std::path::Path, seconds: u64, flooders: usize) -> Phase {
    let (server, mut rx) = Transport::start(TransportConfig {
        local: CMS1,
        security: security(dir, "n1"),
        listen: Some("127.0.0.1:0".parse().unwrap()),
        addresses: AddressBook::new(),
        limits: Limits::default(),
    })
    .await
    .expect("listener");
    let addr = server.local_addr().unwrap();
    let mut book = AddressBook::new();
    book.insert(CMS1, addr.to_string());
    let (client, mut crx) = Transport::start(TransportConfig {
        local: CMS2,
        security: security(dir, "n2"),
        listen: None,
        addresses: book,
        limits: Limits::default(),
    })
    .await
    .expect("dialer");
    client.connect(CMS1);
    while !matches!(crx.recv().await, Some(NetEvent::Connected { .. })) {}
    let flood = Flood::start(FloodSpec {
        targets: vec![(addr, CMS1)],
        claim: CMS2,
        foreign: security(dir, "foreign"),
        flooders,
        max_connections: MAX_FLOOD_CONNECTIONS,
        max_duration: Duration::from_secs(seconds) + Duration::from_secs(1),
    })
    .expect("a loopback flood");
    let sender = tokio::spawn(async move {
        let mut tick = tokio::time::interval(HEARTBEAT);
        for nonce in 0..(seconds * 1000 / HEARTBEAT.as_millis() as u64) {
            tick.tick().await;
            let env = Envelope {
                from: CMS2,
                to: CMS1,
                quorum_term: QuorumTerm(1),
                msg: Msg::TermCheck { nonce },
            };
            let _ = client.send(&env);
        }
        client
    });
    let mut arrivals = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(seconds) + Duration::from_millis(500);
    while Instant::now() < deadline {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, rx.recv()).await {
            Ok(Some(NetEvent::FrameReceived { .. })) => arrivals.push(Instant::now()),
            Ok(Some(_)) => {}
            Ok(None) | Err(_) => break,
        }
    }
    let flood_opened = flood.stop().await;
    let _client = sender.await;
    let mut intervals_ms: Vec<f64> = arrivals
        .windows(2)
        .map(|w| (w[1] - w[0]).as_secs_f64() * 1000.0)
        .collect();
    intervals_ms.sort_by(f64::total_cmp);
    let refused = server.stats().refused;
    server.shutdown().await;
    Phase {
        intervals_ms,
        flood_opened,
        refused,
    }
}

fn main() {
    let mut args = std::env::args().skip(1);
    let seconds: u64 = args
        .next()
        .and_then(|a| a.parse().ok())
        .unwrap_or(10)
        .min(120);
    let flooders: usize = args
        .next()
        .and_then(|a| a.parse().ok())
        .unwrap_or(4)
        .min(64);
    tls::install_crypto_provider();
    let dir = tempfile::tempdir().expect("temp dir");
    certgen::write_cluster_material(dir.path(), "bench", &["n1", "n2"], certgen::today())
        .expect("material");
    let foreign = Ca::new("foreign", Validity::for_days(certgen::today(), 30)).unwrap();
    let f = foreign
        .issue("n2", Validity::for_days(certgen::today(), 30))
        .unwrap();
    std::fs::write(dir.path().join("foreign.crt"), f.cert_pem).unwrap();
    std::fs::write(dir.path().join("foreign.key"), f.key_pem).unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let calm = rt.block_on(phase(dir.path(), seconds, 0));
    let flooded = rt.block_on(phase(dir.path(), seconds, flooders));
    println!(
        "heartbeat every {} ms, {seconds} s per phase, {flooders} flooders",
        HEARTBEAT.as_millis()
    );
    println!("| phase | heartbeats | p50 ms | p99 ms | max ms | flood connections | refused |");
    println!("|---|---|---|---|---|---|---|");
    for (name, p) in [("no flood", &calm), ("flood", &flooded)] {
        let i = &p.intervals_ms;
        println!(
            "| {name} | {} | {:.1} | {:.1} | {:.1} | {} | {} ({:?}) |",
            i.len() + 1,
            percentile(i, 0.5),
            percentile(i, 0.99),
            i.last().copied().unwrap_or(f64::NAN),
            p.flood_opened,
            p.refused.total(),
            p.refused
        );
    }
}
