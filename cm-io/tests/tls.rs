//! Refusals, limits, rotation and expiry of the TLS transport, with real sockets on loopback and
//! certificates generated per test: each refused connection is counted by its reason, nothing
//! panics, and the listener keeps serving authentic peers.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use cm_core::io::NetEvent;
use cm_core::msg::{Endpoint, Envelope, Msg, Role};
use cm_core::security::OPERATOR_NAME;
use cm_core::{NodeId, QuorumTerm};
use cm_io::transport::certgen::{Ca, Validity, today};
use cm_io::transport::handshake::{self, ClientError};
use cm_io::transport::tls::install_crypto_provider;
use cm_io::transport::{
    AddressBook, Limits, RefusalStats, Security, Tls, TlsFiles, Transport, TransportConfig,
    TransportStats,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc::Receiver;

const PATIENCE: Duration = Duration::from_secs(20);
const CMS1: Endpoint = Endpoint::server(NodeId(1));
const CMS2: Endpoint = Endpoint::server(NodeId(2));
const CTL: Endpoint = Endpoint {
    node: NodeId(77),
    role: Role::Ctl,
};

/// A directory of PEM files from one cluster CA (and whatever else a test writes there).
struct Pki {
    dir: tempfile::TempDir,
    ca: Ca,
}

fn valid() -> Validity {
    Validity::for_days(today(), 365)
}

impl Pki {
    fn new() -> Self {
        install_crypto_provider();
        let dir = tempfile::tempdir().unwrap();
        let ca = Ca::new("test CA", Validity::for_days(today(), 3650)).unwrap();
        std::fs::write(dir.path().join("ca.crt"), ca.cert_pem()).unwrap();
        let pki = Self { dir, ca };
        for n in ["n1", "n2", "n3", OPERATOR_NAME] {
            pki.issue(n, n, valid());
        }
        pki
    }

    fn path(&self, file: &str) -> PathBuf {
        self.dir.path().join(file)
    }

    /// Issues a certificate naming `name` from this CA into `file`.crt/.key.
    fn issue(&self, file: &str, name: &str, v: Validity) {
        let issued = self.ca.issue(name, v).unwrap();
        self.write(file, &issued.cert_pem, &issued.key_pem);
    }

    fn write(&self, file: &str, cert: &str, key: &str) {
        std::fs::write(self.path(&format!("{file}.crt")), cert).unwrap();
        std::fs::write(self.path(&format!("{file}.key")), key).unwrap();
    }

    fn tls(&self, file: &str) -> Arc<Tls> {
        let files = TlsFiles {
            ca: self.path("ca.crt"),
            cert: self.path(&format!("{file}.crt")),
            key: self.path(&format!("{file}.key")),
        };
        Arc::new(Tls::load(files, names()).unwrap())
    }

    fn security(&self, file: &str) -> Security {
        Security::Tls(self.tls(file))
    }
}

fn names() -> BTreeMap<NodeId, String> {
    (1..=3).map(|i| (NodeId(i), format!("n{i}"))).collect()
}

async fn server(security: Security, limits: Limits) -> (Transport, Receiver<NetEvent>) {
    Transport::start(TransportConfig {
        local: CMS1,
        security,
        listen: Some("127.0.0.1:0".parse().unwrap()),
        addresses: AddressBook::new(),
        limits,
    })
    .await
    .unwrap()
}

async fn link(
    security: &Security,
    addr: SocketAddr,
    local: Endpoint,
) -> Result<handshake::BoxStream, ClientError> {
    let tcp = TcpStream::connect(addr).await.unwrap();
    tokio::time::timeout(PATIENCE, handshake::client(security, tcp, local, CMS1))
        .await
        .expect("the handshake hung")
}

async fn until_stats(t: &Transport, what: &str, pred: impl Fn(&TransportStats) -> bool) {
    let give_up = tokio::time::Instant::now() + PATIENCE;
    while !pred(&t.stats()) {
        assert!(
            tokio::time::Instant::now() < give_up,
            "never reached: {what}; stats {:?}",
            t.stats()
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

fn envelope(from: Endpoint, nonce: u64) -> Envelope {
    Envelope {
        from,
        to: CMS1,
        quorum_term: QuorumTerm(1),
        msg: Msg::TermCheck { nonce },
    }
}

/// An authentic peer still gets a frame through.
async fn still_serves(pki: &Pki, server: &Transport, rx: &mut Receiver<NetEvent>) {
    let addr = server.local_addr().unwrap();
    let mut s = link(&pki.security("n2"), addr, CMS2).await.unwrap();
    s.write_all(&cm_core::codec::encode(&envelope(CMS2, 5)).unwrap())
        .await
        .unwrap();
    s.flush().await.unwrap();
    frame_from(rx, CMS2, 5).await;
}

/// Waits for the frame `nonce` from `peer`, skipping other events (closes of earlier links).
async fn frame_from(rx: &mut Receiver<NetEvent>, peer: Endpoint, nonce: u64) {
    let want = NetEvent::FrameReceived {
        peer,
        envelope: envelope(peer, nonce),
    };
    tokio::time::timeout(PATIENCE, async {
        while let Some(ev) = rx.recv().await {
            if ev == want {
                return;
            }
            assert!(matches!(ev, NetEvent::Closed { .. }), "unexpected {ev:?}");
        }
        panic!("events closed");
    })
    .await
    .expect("the frame did not arrive");
}

fn only(reason: impl Fn(&mut RefusalStats) -> &mut u64) -> RefusalStats {
    let mut r = RefusalStats::default();
    *reason(&mut r) = 1;
    r
}

#[tokio::test]
async fn a_certificate_from_another_ca_is_refused_as_untrusted() {
    let pki = Pki::new();
    let other = Ca::new("another CA", Validity::for_days(today(), 3650)).unwrap();
    let forged = other.issue("n2", valid()).unwrap();
    pki.write("forged", &forged.cert_pem, &forged.key_pem);
    let (server, mut rx) = server(pki.security("n1"), Limits::default()).await;
    let addr = server.local_addr().unwrap();
    assert!(link(&pki.security("forged"), addr, CMS2).await.is_err());
    until_stats(&server, "untrusted", |s| {
        s.refused == only(|r| &mut r.untrusted)
    })
    .await;
    still_serves(&pki, &server, &mut rx).await;
}

#[tokio::test]
async fn an_expired_certificate_is_refused_as_expired() {
    let pki = Pki::new();
    let expired = Validity {
        today: today(),
        from_days: -30,
        until_days: -1,
    };
    pki.issue("old", "n2", expired);
    let (server, mut rx) = server(pki.security("n1"), Limits::default()).await;
    let addr = server.local_addr().unwrap();
    assert!(link(&pki.security("old"), addr, CMS2).await.is_err());
    until_stats(&server, "expired", |s| {
        s.refused == only(|r| &mut r.expired)
    })
    .await;
    still_serves(&pki, &server, &mut rx).await;
}

#[tokio::test]
async fn a_certificate_naming_another_node_or_the_operator_is_refused() {
    let pki = Pki::new();
    let (server, mut rx) = server(pki.security("n1"), Limits::default()).await;
    let addr = server.local_addr().unwrap();
    // n3's certificate claiming to be node 2's cm_server.
    assert!(matches!(
        link(&pki.security("n3"), addr, CMS2).await,
        Err(ClientError::Refused)
    ));
    until_stats(&server, "wrong name", |s| s.refused.wrong_name == 1).await;
    // The operator's certificate on a component link.
    let op = pki.security(OPERATOR_NAME);
    assert!(link(&op, addr, Endpoint::agent(NodeId(2))).await.is_err());
    until_stats(&server, "operator", |s| {
        s.refused.operator_on_component == 1
    })
    .await;
    // A node's certificate claiming to be a cm_ctl.
    assert!(link(&pki.security("n2"), addr, CTL).await.is_err());
    until_stats(&server, "ctl", |s| s.refused.wrong_name == 2).await;
    // A node that is not in the config.
    assert!(
        link(&pki.security("n2"), addr, Endpoint::agent(NodeId(9)))
            .await
            .is_err()
    );
    until_stats(&server, "unknown", |s| s.refused.unknown_node == 1).await;
    // The operator's certificate as cm_ctl is fine.
    link(&op, addr, CTL).await.unwrap();
    still_serves(&pki, &server, &mut rx).await;
    assert_eq!(server.stats().refused.total(), 4);
}

#[tokio::test]
async fn plaintext_bytes_on_a_tls_port_are_refused_as_not_tls() {
    let pki = Pki::new();
    let (server, mut rx) = server(pki.security("n1"), Limits::default()).await;
    let addr = server.local_addr().unwrap();
    // What a plaintext-mode client sends first: its hello, in the clear.
    let hello = [b'C', b'M', b'H', b'1', 3, 0, 0, 0, 2];
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(&hello).await.unwrap();
    let mut buf = [0u8; 64];
    let _ = tokio::time::timeout(PATIENCE, s.read(&mut buf))
        .await
        .unwrap();
    until_stats(&server, "not tls", |s| {
        s.refused == only(|r| &mut r.not_tls)
    })
    .await;
    still_serves(&pki, &server, &mut rx).await;
}

/// A TLS client that trusts the cluster CA and presents no certificate.
fn anonymous_client(pki: &Pki) -> tokio_rustls::TlsConnector {
    let mut roots = rustls::RootCertStore::empty();
    let ca = std::fs::read(pki.path("ca.crt")).unwrap();
    for c in cm_io::transport::tls::parse_certs(&ca).unwrap() {
        roots.add(c).unwrap();
    }
    let config = rustls::ClientConfig::builder_with_provider(cm_io::transport::tls::provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    tokio_rustls::TlsConnector::from(Arc::new(config))
}

#[tokio::test]
async fn a_tls_client_without_a_certificate_is_refused() {
    let pki = Pki::new();
    let (server, mut rx) = server(pki.security("n1"), Limits::default()).await;
    let addr = server.local_addr().unwrap();
    let connector = anonymous_client(&pki);
    let tcp = TcpStream::connect(addr).await.unwrap();
    let name = rustls_pki_types::ServerName::try_from("n1").unwrap();
    // TLS 1.3: the client finishes first; the server's refusal arrives as an alert or EOF.
    if let Ok(mut s) = connector.connect(name, tcp).await {
        let _ = s.write_all(&[b'C', b'M', b'H', b'1', 3, 0, 0, 0, 2]).await;
        let _ = s.flush().await;
        let mut buf = [0u8; 8];
        let r = tokio::time::timeout(PATIENCE, s.read(&mut buf))
            .await
            .unwrap();
        assert!(matches!(r, Ok(0) | Err(_)), "no accept byte: {r:?}");
    }
    until_stats(&server, "no certificate", |s| {
        s.refused == only(|r| &mut r.no_certificate)
    })
    .await;
    still_serves(&pki, &server, &mut rx).await;
}

#[tokio::test]
async fn the_http_server_config_serves_a_client_without_a_certificate() {
    let pki = Pki::new();
    let tls = pki.tls("n1");
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(tls.http_server_config());
    let served = tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.unwrap();
        let mut s = acceptor.accept(tcp).await.unwrap();
        let mut req = [0u8; 4];
        s.read_exact(&mut req).await.unwrap();
        s.write_all(b"200\n").await.unwrap();
        s.flush().await.unwrap();
        req
    });
    let tcp = TcpStream::connect(addr).await.unwrap();
    let name = rustls_pki_types::ServerName::try_from("n1").unwrap();
    let mut s = anonymous_client(&pki).connect(name, tcp).await.unwrap();
    s.write_all(b"GET ").await.unwrap();
    s.flush().await.unwrap();
    let mut reply = [0u8; 4];
    tokio::time::timeout(PATIENCE, s.read_exact(&mut reply))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(&reply, b"200\n");
    assert_eq!(&served.await.unwrap(), b"GET ");
}

#[tokio::test]
async fn a_server_with_another_nodes_certificate_is_not_trusted_by_the_dialer() {
    let pki = Pki::new();
    // Something answers at node 1's address with node 3's certificate.
    let (impostor, _rx) = server(pki.security("n3"), Limits::default()).await;
    let addr = impostor.local_addr().unwrap();
    let err = link(&pki.security("n2"), addr, CMS2).await;
    let err = err.err().map(|e| e.to_string());
    assert!(
        err.as_deref().is_some_and(|e| e.contains("certificate")),
        "{err:?}"
    );
}

#[tokio::test]
async fn handshakes_per_address_and_connections_in_total_are_bounded_and_counted() {
    let pki = Pki::new();
    let per_address = Limits {
        max_pending_per_address: 2,
        ..Limits::default()
    };
    let (server1, _rx) = server(pki.security("n1"), per_address).await;
    let addr = server1.local_addr().unwrap();
    // Two silent connections hold the address's two handshake slots; the third is closed.
    let _a = TcpStream::connect(addr).await.unwrap();
    let _b = TcpStream::connect(addr).await.unwrap();
    let mut c = TcpStream::connect(addr).await.unwrap();
    let mut buf = [0u8; 8];
    let r = tokio::time::timeout(PATIENCE, c.read(&mut buf))
        .await
        .unwrap();
    assert!(matches!(r, Ok(0) | Err(_)), "{r:?}");
    until_stats(&server1, "per address", |s| {
        s.refused == only(|r| &mut r.too_many_from_address)
    })
    .await;

    let total = Limits {
        max_connections: 1,
        ..Limits::default()
    };
    let (server2, _rx) = server(pki.security("n1"), total).await;
    let addr = server2.local_addr().unwrap();
    // One connection is the total; a second authentic peer is closed before its handshake.
    let _first = link(&pki.security("n2"), addr, CMS2).await.unwrap();
    let second = link(&pki.security("n3"), addr, Endpoint::server(NodeId(3))).await;
    assert!(second.is_err());
    until_stats(&server2, "total", |s| {
        s.refused == only(|r| &mut r.too_many_connections)
    })
    .await;
}

#[tokio::test]
async fn reload_keeps_the_old_material_on_a_bad_file_and_rotates_the_ca_without_a_cut() {
    let pki = Pki::new();
    let tls = pki.tls("n1");
    let (server, mut rx) = server(Security::Tls(Arc::clone(&tls)), Limits::default()).await;
    let addr = server.local_addr().unwrap();
    let agent2 = Endpoint::agent(NodeId(2));
    let mut established = link(&pki.security("n2"), addr, agent2).await.unwrap();

    // A broken key: refused with the file named; the old material stays in use.
    std::fs::write(pki.path("n1.key"), "not a key").unwrap();
    let err = tls.reload().unwrap_err().to_string();
    assert!(
        err.contains("n1.key") && err.contains("PRIVATE KEY"),
        "{err}"
    );
    still_serves(&pki, &server, &mut rx).await;

    // CA rotation: both CAs trusted, node 1 moves to a certificate of the new CA.
    let new_ca = Ca::new("new CA", Validity::for_days(today(), 3650)).unwrap();
    let bundle = format!("{}{}", pki.ca.cert_pem(), new_ca.cert_pem());
    std::fs::write(pki.path("ca.crt"), &bundle).unwrap();
    let issued = new_ca.issue("n1", valid()).unwrap();
    pki.write("n1", &issued.cert_pem, &issued.key_pem);
    tls.reload().unwrap();
    // New connections use the new certificate (the client trusts both CAs) ...
    still_serves(&pki, &server, &mut rx).await;
    // ... and one that trusts only the old CA can no longer reach node 1,
    std::fs::write(pki.path("old-ca.crt"), pki.ca.cert_pem()).unwrap();
    let old_only = TlsFiles {
        ca: pki.path("old-ca.crt"),
        cert: pki.path("n3.crt"),
        key: pki.path("n3.key"),
    };
    let old_only = Security::Tls(Arc::new(Tls::load(old_only, names()).unwrap()));
    let three = Endpoint::server(NodeId(3));
    assert!(link(&old_only, addr, three).await.is_err());
    // ... while the connection established before the reload still carries frames.
    established
        .write_all(&cm_core::codec::encode(&envelope(agent2, 6)).unwrap())
        .await
        .unwrap();
    established.flush().await.unwrap();
    frame_from(&mut rx, agent2, 6).await;
}

#[tokio::test]
async fn a_certificate_expiring_within_the_threshold_raises_the_alarm_and_the_gauge() {
    let pki = Pki::new();
    pki.issue("short", "n1", Validity::for_days(today(), 10));
    let (server, _rx) = server(pki.security("short"), Limits::default()).await;
    until_stats(&server, "alarm", |s| s.cert_expiry_alarms == 1).await;
    let left = server.stats().cert_min_remaining_s.unwrap();
    assert!((9 * 86_400..=11 * 86_400).contains(&left), "{left}");
    // A certificate valid beyond the threshold raises nothing.
    let (calm, _rx) = server_with(pki.security("n1")).await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(calm.stats().cert_expiry_alarms, 0);
}

async fn server_with(security: Security) -> (Transport, Receiver<NetEvent>) {
    server(security, Limits::default()).await
}

/// A TCP relay that forwards both directions and records every byte it forwards.
async fn recording_relay(to: SocketAddr) -> (SocketAddr, Arc<std::sync::Mutex<Vec<u8>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
    let record = Arc::clone(&seen);
    tokio::spawn(async move {
        while let Ok((inbound, _)) = listener.accept().await {
            let Ok(outbound) = TcpStream::connect(to).await else {
                return;
            };
            let (ir, iw) = inbound.into_split();
            let (or, ow) = outbound.into_split();
            tokio::spawn(pump(ir, ow, Arc::clone(&record)));
            tokio::spawn(pump(or, iw, Arc::clone(&record)));
        }
    });
    (addr, seen)
}

async fn pump(
    mut r: impl tokio::io::AsyncRead + Unpin,
    mut w: impl tokio::io::AsyncWrite + Unpin,
    record: Arc<std::sync::Mutex<Vec<u8>>>,
) {
    let mut buf = [0u8; 4096];
    while let Ok(n) = r.read(&mut buf).await {
        if n == 0 || w.write_all(&buf[..n]).await.is_err() {
            return;
        }
        record.lock().unwrap().extend_from_slice(&buf[..n]);
    }
}

/// Sends a frame with a known field through a recording relay; true when the field's bytes
/// appear in the capture.
async fn field_visible_on_the_wire(client: Security, srv: Security) -> bool {
    const NONCE: u64 = 0x5eed_c0de_feed_f00d;
    let (server, mut rx) = server(srv, Limits::default()).await;
    let (relay, seen) = recording_relay(server.local_addr().unwrap()).await;
    let mut book = AddressBook::new();
    book.insert(CMS1, relay.to_string());
    let (dialer, mut drx) = Transport::start(TransportConfig {
        local: CMS2,
        security: client,
        listen: None,
        addresses: book,
        limits: Limits::default(),
    })
    .await
    .unwrap();
    dialer.connect(CMS1);
    let ev = tokio::time::timeout(PATIENCE, drx.recv()).await.unwrap();
    assert_eq!(ev, Some(NetEvent::Connected { peer: CMS1 }));
    dialer.send(&envelope(CMS2, NONCE)).unwrap();
    let got = tokio::time::timeout(PATIENCE, rx.recv()).await.unwrap();
    assert_eq!(
        got,
        Some(NetEvent::FrameReceived {
            peer: CMS2,
            envelope: envelope(CMS2, NONCE)
        })
    );
    let captured = seen.lock().unwrap().clone();
    let needle = NONCE.to_le_bytes();
    captured.windows(needle.len()).any(|w| w == needle)
}

#[tokio::test]
async fn a_recording_relay_sees_no_plaintext_with_tls_and_sees_it_without() {
    let pki = Pki::new();
    assert!(
        !field_visible_on_the_wire(pki.security("n2"), pki.security("n1")).await,
        "the frame's field crossed the relay in the clear under TLS"
    );
    assert!(
        field_visible_on_the_wire(Security::Plaintext, Security::Plaintext).await,
        "the control: without TLS the relay must see the field (else this test cannot fail)"
    );
}

#[test]
fn the_key_file_named_in_errors_and_missing_files_say_which() {
    let pki = Pki::new();
    let missing = TlsFiles {
        ca: pki.path("ca.crt"),
        cert: pki.path("nope.crt"),
        key: pki.path("n1.key"),
    };
    let err = Tls::load(missing, names()).unwrap_err().to_string();
    assert!(
        err.contains("certificate") && err.contains("nope.crt"),
        "{err}"
    );
    // A key that does not belong to the certificate.
    let mismatched = TlsFiles {
        ca: pki.path("ca.crt"),
        cert: pki.path("n1.crt"),
        key: pki.path("n2.key"),
    };
    let err = Tls::load(mismatched, names()).unwrap_err().to_string();
    assert!(err.contains("n1.crt"), "{err}");
}

#[test]
fn reload_refuses_a_certificate_of_another_node_another_ca_or_expired_and_keeps_the_old() {
    let pki = Pki::new();
    let files = TlsFiles {
        ca: pki.path("ca.crt"),
        cert: pki.path("n1.crt"),
        key: pki.path("n1.key"),
    };
    let tls = Tls::load_as(files.clone(), names(), "n1").unwrap();
    let before = tls.current();
    let other_ca = Ca::new("other CA", Validity::for_days(today(), 3650)).unwrap();
    let foreign = other_ca.issue("n1", valid()).unwrap();
    let expired = Validity {
        today: today(),
        from_days: -30,
        until_days: -1,
    };
    type Case<'a> = (&'a str, Box<dyn Fn() + 'a>);
    let cases: [Case<'_>; 3] = [
        (
            "does not name `n1`",
            Box::new(|| pki.issue("n1", "n2", valid())),
        ),
        (
            "not issued by a CA",
            Box::new(|| pki.write("n1", &foreign.cert_pem, &foreign.key_pem)),
        ),
        ("expired", Box::new(|| pki.issue("n1", "n1", expired))),
    ];
    for (why, write) in cases {
        write();
        let err = tls.reload().unwrap_err().to_string();
        assert!(err.contains(why) && err.contains("n1.crt"), "{why}: {err}");
        assert!(Arc::ptr_eq(&before, &tls.current()), "{why}: swapped");
        // The same files are refused at start too.
        let err = Tls::load_as(files.clone(), names(), "n1").unwrap_err();
        assert!(err.to_string().contains(why), "{why}: {err}");
    }
    // A good certificate still reloads.
    pki.issue("n1", "n1", valid());
    tls.reload().unwrap();
    assert!(!Arc::ptr_eq(&before, &tls.current()));
    // The operator's identity needs the operator's name.
    let op = TlsFiles {
        ca: pki.path("ca.crt"),
        cert: pki.path(&format!("{OPERATOR_NAME}.crt")),
        key: pki.path(&format!("{OPERATOR_NAME}.key")),
    };
    Tls::load_as(op.clone(), names(), OPERATOR_NAME).unwrap();
    assert!(Tls::load_as(op, names(), "n1").is_err());
}

#[tokio::test]
async fn a_handshake_flood_from_a_non_member_leaves_a_members_slot() {
    let pki = Pki::new();
    let limits = Limits {
        max_pending_handshakes: 4,
        max_pending_per_address: 100,
        ..Limits::default()
    };
    // Node 2 is a member at 127.0.0.1; the flood comes from 127.0.0.2.
    let mut addresses = AddressBook::new();
    addresses.insert(CMS2, "127.0.0.1:1");
    let (server, _rx) = Transport::start(TransportConfig {
        local: CMS1,
        security: pki.security("n1"),
        listen: Some("127.0.0.1:0".parse().unwrap()),
        addresses,
        limits,
    })
    .await
    .unwrap();
    let addr = server.local_addr().unwrap();
    let mut flood = Vec::new();
    for _ in 0..6 {
        let s = tokio::net::TcpSocket::new_v4().unwrap();
        s.bind("127.0.0.2:0".parse().unwrap()).unwrap();
        flood.push(s.connect(addr).await.unwrap());
    }
    // Three of the four slots are anyone's; the flood's other three are refused.
    until_stats(&server, "flood refused", |s| {
        s.refused.too_many_pending == 3
    })
    .await;
    let member = link(&pki.security("n2"), addr, CMS2).await;
    assert!(
        member.is_ok(),
        "the member was refused: {:?}",
        server.stats()
    );
    drop(flood);
}
