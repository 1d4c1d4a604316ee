//! A bounded flood of bad connections against transport listeners, for the flood benches
//! (issue 15 item 6): `cargo run -p cm-io --example flood_bench` against one listener, and
//! `cm_local bench --flood` against a running local cluster's cm_servers.
//!
//! Each flooder task opens connections one after another, cycling through three kinds of abuse:
//! plaintext garbage (an HTTP request) on the TLS port, a full TLS handshake with a certificate
//! from a foreign CA (refused as untrusted once the server has done the work of checking it),
//! and a silent connection that holds a handshake slot for 20 ms. Loopback targets only, and
//! bounded: every flooder stops after [`FloodSpec::max_connections`] connections or
//! [`FloodSpec::max_duration`], whichever comes first, or when [`Flood::stop`] is called.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use cm_core::NodeId;
use cm_core::msg::Endpoint;
use tokio::io::AsyncWriteExt as _;
use tokio::net::TcpStream;
use tokio::task::JoinHandle;

use super::certgen::{self, Ca, Validity};
use super::{Security, Tls, TlsFiles, handshake};

/// How long a silent flood connection holds its slot before the flooder drops it.
const SILENT_HOLD: Duration = Duration::from_millis(20);
/// Bound on one flood TLS handshake.
const HANDSHAKE_BOUND: Duration = Duration::from_secs(2);

/// What to flood, with what, and for how long at most.
#[derive(Clone)]
pub struct FloodSpec {
    /// The listeners (loopback addresses) and the endpoint each serves (its TLS name).
    pub targets: Vec<(SocketAddr, Endpoint)>,
    /// The endpoint the TLS flood connections claim to be.
    pub claim: Endpoint,
    /// The flood's TLS material: a certificate the targets do not trust
    /// ([`foreign_security`]).
    pub foreign: Security,
    /// Concurrent flooder tasks (each cycles over the targets).
    pub flooders: usize,
    /// Connection attempts per flooder, at most.
    pub max_connections: u64,
    /// How long a flooder runs, at most.
    pub max_duration: Duration,
}

/// Why a flood cannot start.
#[derive(Debug, thiserror::Error)]
pub enum FloodError {
    /// A target is not a loopback address: the flood stays on this machine.
    #[error("flood target {0} is not a loopback address (the flood stays on this machine)")]
    NotLoopback(SocketAddr),
    /// Nothing to flood.
    #[error("no flood target")]
    NoTarget,
    /// The foreign material could not be made.
    #[error("foreign TLS material: {0}")]
    Material(String),
}

/// A running flood (spawned on the current tokio runtime).
pub struct Flood {
    stop: Arc<AtomicBool>,
    opened: Arc<AtomicU64>,
    tasks: Vec<JoinHandle<()>>,
}

impl Flood {
    /// Starts `spec.flooders` flooder tasks on the current tokio runtime.
    pub fn start(spec: FloodSpec) -> Result<Self, FloodError> {
        if spec.targets.is_empty() {
            return Err(FloodError::NoTarget);
        }
        if let Some((a, _)) = spec.targets.iter().find(|(a, _)| !a.ip().is_loopback()) {
            return Err(FloodError::NotLoopback(*a));
        }
        let stop = Arc::new(AtomicBool::new(false));
        let opened = Arc::new(AtomicU64::new(0));
        let spec = Arc::new(spec);
        let tasks = (0..spec.flooders)
            .map(|i| {
                tokio::spawn(flooder(
                    Arc::clone(&spec),
                    i,
                    Arc::clone(&stop),
                    Arc::clone(&opened),
                ))
            })
            .collect();
        Ok(Self {
            stop,
            opened,
            tasks,
        })
    }

    /// Connections opened (TCP connected) so far.
    pub fn opened(&self) -> u64 {
        self.opened.load(Ordering::Relaxed)
    }

    /// Whether every flooder has stopped by itself (a bound was reached).
    pub fn finished(&self) -> bool {
        self.tasks.iter().all(JoinHandle::is_finished)
    }

    /// Stops every flooder and waits for them; the connections opened in all.
    pub async fn stop(mut self) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        for t in std::mem::take(&mut self.tasks) {
            let _ = t.await;
        }
        self.opened.load(Ordering::Relaxed)
    }
}

impl Drop for Flood {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// One flooder: connections in a loop until stopped or a bound is reached, cycling through
/// the kinds of abuse and, starting at its own offset, through the targets.
async fn flooder(
    spec: Arc<FloodSpec>,
    index: usize,
    stop: Arc<AtomicBool>,
    opened: Arc<AtomicU64>,
) {
    let until = tokio::time::Instant::now() + spec.max_duration;
    let mut n = 0u64;
    while !stop.load(Ordering::Relaxed)
        && n < spec.max_connections
        && tokio::time::Instant::now() < until
    {
        let (addr, target) = spec.targets[(index + n as usize) % spec.targets.len()];
        n += 1;
        let Ok(mut tcp) = TcpStream::connect(addr).await else {
            // A target that is down (a killed node): do not spin.
            tokio::time::sleep(Duration::from_millis(1)).await;
            continue;
        };
        opened.fetch_add(1, Ordering::Relaxed);
        match n % 3 {
            0 => {
                let _ = tcp.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").await;
            }
            1 => {
                let hs = handshake::client(&spec.foreign, tcp, spec.claim, target);
                let _ = tokio::time::timeout(HANDSHAKE_BOUND, hs).await;
                continue;
            }
            _ => tokio::time::sleep(SILENT_HOLD).await,
        }
        drop(tcp);
    }
}

/// Generates a foreign CA and a certificate from it naming `claim_name` into `dir`
/// (`foreign-ca.crt`, `foreign.crt`, `foreign.key`), and loads it unchecked with the cluster's
/// CA file `cluster_ca` as the trust anchor, so that the flood's client verifies the real
/// server and the server must refuse the certificate. `names` maps the targets' nodes to
/// their names.
pub fn foreign_security(
    dir: &Path,
    cluster_ca: &Path,
    names: BTreeMap<NodeId, String>,
    claim_name: &str,
) -> Result<Security, FloodError> {
    let err = |e: &dyn std::fmt::Display| FloodError::Material(e.to_string());
    let validity = Validity::for_days(certgen::today(), 30);
    let ca = Ca::new("flood foreign CA", validity).map_err(|e| err(&e))?;
    let issued = ca.issue(claim_name, validity).map_err(|e| err(&e))?;
    std::fs::create_dir_all(dir).map_err(|e| err(&e))?;
    let (cert, key) = (dir.join("foreign.crt"), dir.join("foreign.key"));
    std::fs::write(dir.join("foreign-ca.crt"), ca.cert_pem()).map_err(|e| err(&e))?;
    std::fs::write(&cert, issued.cert_pem).map_err(|e| err(&e))?;
    std::fs::write(&key, issued.key_pem).map_err(|e| err(&e))?;
    let files = TlsFiles {
        ca: cluster_ca.to_path_buf(),
        cert,
        key,
    };
    let tls = Tls::load(files, names).map_err(|e| err(&e))?;
    Ok(Security::Tls(Arc::new(tls)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_loopback_targets_are_flooded() {
        let spec = |addr: &str| FloodSpec {
            targets: vec![(addr.parse().unwrap(), Endpoint::server(NodeId(1)))],
            claim: Endpoint::agent(NodeId(2)),
            foreign: Security::Plaintext,
            flooders: 1,
            max_connections: 1,
            max_duration: Duration::from_secs(30),
        };
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            assert!(matches!(
                Flood::start(spec("10.1.2.3:5000")),
                Err(FloodError::NotLoopback(_))
            ));
            let mut none = spec("127.0.0.1:1");
            none.targets.clear();
            assert!(matches!(Flood::start(none), Err(FloodError::NoTarget)));
            // Bounded by count: one attempt, then the flooder ends by itself; nothing listens
            // on port 1, so nothing was opened.
            let f = Flood::start(spec("127.0.0.1:1")).unwrap();
            while !f.finished() {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            assert_eq!(f.stop().await, 0);
            // Against a listener: three attempts, three connections.
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let mut three = spec(&listener.local_addr().unwrap().to_string());
            three.max_connections = 3;
            let f = Flood::start(three).unwrap();
            while !f.finished() {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            assert_eq!(f.stop().await, 3);
            // Bounded by time: ends by itself well before its connection bound.
            let mut timed = spec("127.0.0.1:1");
            timed.max_connections = u64::MAX;
            timed.max_duration = Duration::from_millis(100);
            let f = Flood::start(timed).unwrap();
            tokio::time::timeout(Duration::from_secs(20), async {
                while !f.finished() {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            })
            .await
            .expect("the flood outlived its time bound");
            assert_eq!(f.stop().await, 0);
        });
    }
}
