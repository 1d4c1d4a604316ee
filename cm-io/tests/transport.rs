//! The mutual-TLS transport on loopback (port 0), with real sockets and generated certificates.

use std::net::SocketAddr;
use std::sync::{Arc, LazyLock};
use std::time::Duration;

use cm_core::NodeId;
use cm_core::QuorumTerm;
use cm_core::codec;
use cm_core::io::NetEvent;
use cm_core::msg::{Endpoint, Envelope, Msg, Role};
use cm_io::transport::handshake::{self, BoxStream};
use cm_io::transport::{
    AddressBook, Limits, Security, SendError, Tls, TlsFiles, Transport, TransportConfig,
    TransportStats, certgen,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc::Receiver;

/// Generous bound that only stops a broken test from hanging; never a timing assertion.
const PATIENCE: Duration = Duration::from_secs(20);

const CMS1: Endpoint = Endpoint::server(NodeId(1));
const CMS2: Endpoint = Endpoint::server(NodeId(2));
const CMM1: Endpoint = Endpoint::monitor(NodeId(1));
const CTL9: Endpoint = Endpoint {
    node: NodeId(9),
    role: Role::Ctl,
};

/// One generated CA with certificates `n1`..`n9` and the operator's, for every test.
static PKI: LazyLock<tempfile::TempDir> = LazyLock::new(|| {
    let dir = tempfile::tempdir().unwrap();
    let names: Vec<String> = (1..=9).map(|i| format!("n{i}")).collect();
    let names: Vec<&str> = names.iter().map(String::as_str).collect();
    certgen::write_cluster_material(dir.path(), "t", &names, certgen::today()).unwrap();
    dir
});

fn names() -> std::collections::BTreeMap<NodeId, String> {
    (1..=9).map(|i| (NodeId(i), format!("n{i}"))).collect()
}

/// The material of `who` (a node name or `operator`) in the shared PKI.
fn tls(who: &str) -> Security {
    cm_io::transport::tls::install_crypto_provider();
    let d = PKI.path();
    let files = TlsFiles {
        ca: d.join("ca.crt"),
        cert: d.join(format!("{who}.crt")),
        key: d.join(format!("{who}.key")),
    };
    Security::Tls(Arc::new(Tls::load(files, names()).unwrap()))
}

/// The material an endpoint uses: its node's certificate, or the operator's for a cm_ctl.
fn material(ep: Endpoint) -> Security {
    if ep.role == Role::Ctl {
        tls("operator")
    } else {
        tls(&format!("n{}", ep.node.0))
    }
}

/// Opens a link to `peer` at `addr` as `local`, by hand (no transport on this side).
async fn raw_link(addr: SocketAddr, local: Endpoint, peer: Endpoint) -> BoxStream {
    let tcp = TcpStream::connect(addr).await.unwrap();
    handshake::client(&material(local), tcp, local, peer)
        .await
        .unwrap()
}

fn limits() -> Limits {
    Limits {
        backoff_initial: Duration::from_millis(10),
        backoff_max: Duration::from_millis(100),
        ..Limits::default()
    }
}

async fn listener_on(
    local: Endpoint,
    security: Security,
    addr: SocketAddr,
    limits: Limits,
) -> (Transport, Receiver<NetEvent>) {
    Transport::start(TransportConfig {
        local,
        security,
        listen: Some(addr),
        addresses: AddressBook::new(),
        limits,
    })
    .await
    .unwrap()
}

async fn listener(local: Endpoint, security: Security) -> (Transport, Receiver<NetEvent>) {
    listener_on(local, security, "127.0.0.1:0".parse().unwrap(), limits()).await
}

async fn dialer(
    local: Endpoint,
    security: Security,
    peers: &[(Endpoint, &Transport)],
) -> (Transport, Receiver<NetEvent>) {
    let mut book = AddressBook::new();
    for (ep, t) in peers {
        book.insert(*ep, t.local_addr().unwrap().to_string());
    }
    Transport::start(TransportConfig {
        local,
        security,
        listen: None,
        addresses: book,
        limits: limits(),
    })
    .await
    .unwrap()
}

fn envelope(from: Endpoint, to: Endpoint, nonce: u64) -> Envelope {
    Envelope {
        from,
        to,
        quorum_term: QuorumTerm(3),
        msg: Msg::TermCheck { nonce },
    }
}

async fn next(rx: &mut Receiver<NetEvent>) -> NetEvent {
    tokio::time::timeout(PATIENCE, rx.recv())
        .await
        .expect("no event in time")
        .expect("event channel closed")
}

/// The next event that is not a `ConnectFailed` (retries while a peer is down).
async fn next_settled(rx: &mut Receiver<NetEvent>) -> NetEvent {
    loop {
        match next(rx).await {
            NetEvent::ConnectFailed { .. } => {}
            other => return other,
        }
    }
}

async fn until_stats(t: &Transport, what: &str, pred: impl Fn(&TransportStats) -> bool) {
    let give_up = tokio::time::Instant::now() + PATIENCE;
    while !pred(&t.stats()) {
        assert!(
            tokio::time::Instant::now() < give_up,
            "never reached: {what}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Reads until the peer's end closes the stream (EOF or reset).
async fn read_until_closed(s: &mut (impl tokio::io::AsyncRead + Unpin)) {
    let mut buf = [0u8; 256];
    tokio::time::timeout(PATIENCE, async {
        loop {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    })
    .await
    .expect("connection was not closed");
}

#[tokio::test]
async fn a_ctl_client_and_a_monitor_exchange_frames_both_ways() {
    let (monitor, mut mon_rx) = listener(CMM1, material(CMM1)).await;
    let (ctl, mut ctl_rx) = dialer(CTL9, material(CTL9), &[(CMM1, &monitor)]).await;
    ctl.connect(CMM1);
    assert_eq!(next(&mut ctl_rx).await, NetEvent::Connected { peer: CMM1 });

    ctl.send(&envelope(CTL9, CMM1, 1)).unwrap();
    assert_eq!(
        next(&mut mon_rx).await,
        NetEvent::FrameReceived {
            peer: CTL9,
            envelope: envelope(CTL9, CMM1, 1)
        }
    );
    // The monitor answers over the connection the client opened.
    monitor.send(&envelope(CMM1, CTL9, 2)).unwrap();
    assert_eq!(
        next(&mut ctl_rx).await,
        NetEvent::FrameReceived {
            peer: CMM1,
            envelope: envelope(CMM1, CTL9, 2)
        }
    );
    assert_eq!(monitor.stats().received, 1);
    assert_eq!(ctl.stats().sent, 1);
}

#[tokio::test]
async fn malformed_oversized_and_forged_frames_close_that_connection_only() {
    let agent = Endpoint::agent(NodeId(5));
    let (server, mut srv_rx) = listener(CMS1, material(CMS1)).await;
    let addr = server.local_addr().unwrap();
    let oversized = [b'C', b'M', codec::VERSION, 1, 0xff, 0xff, 0xff, 0xff];
    let forged = codec::encode(&envelope(CMS2, CMS1, 1)).unwrap();
    let garbage = b"GET / HTTP/1.1\r\n\r\n".to_vec();
    let bad_body = {
        let mut f = codec::encode(&envelope(agent, CMS1, 1)).unwrap();
        for b in &mut f[codec::HEADER_LEN..] {
            *b = 0xff;
        }
        f
    };
    let payloads: [&[u8]; 4] = [&garbage, &oversized, &forged, &bad_body];
    for (i, payload) in payloads.into_iter().enumerate() {
        let mut s = raw_link(addr, agent, CMS1).await;
        s.write_all(payload).await.unwrap();
        s.flush().await.unwrap();
        read_until_closed(&mut s).await;
        assert_eq!(next(&mut srv_rx).await, NetEvent::Closed { peer: agent });
        until_stats(&server, "malformed counted", |st| {
            st.malformed == i as u64 + 1
        })
        .await;
    }
    // The listener keeps serving authentic peers.
    let (client, mut cli_rx) = dialer(CMS2, material(CMS2), &[(CMS1, &server)]).await;
    client.connect(CMS1);
    assert_eq!(next(&mut cli_rx).await, NetEvent::Connected { peer: CMS1 });
    client.send(&envelope(CMS2, CMS1, 9)).unwrap();
    assert_eq!(
        next(&mut srv_rx).await,
        NetEvent::FrameReceived {
            peer: CMS2,
            envelope: envelope(CMS2, CMS1, 9)
        }
    );
}

#[tokio::test]
async fn a_silent_peer_is_dropped_at_the_handshake_timeout_and_counted() {
    let quick = Limits {
        handshake_timeout: Duration::from_millis(100),
        ..limits()
    };
    let (server, _rx) =
        listener_on(CMS1, material(CMS1), "127.0.0.1:0".parse().unwrap(), quick).await;
    let mut s = TcpStream::connect(server.local_addr().unwrap())
        .await
        .unwrap();
    read_until_closed(&mut s).await;
    until_stats(&server, "timeout refusal", |st| st.refused.timeout == 1).await;
}

#[tokio::test]
async fn the_dialer_reconnects_after_the_server_restarts() {
    let (server, mut srv_rx) = listener(CMS1, material(CMS1)).await;
    let addr = server.local_addr().unwrap();
    let (client, mut cli_rx) = dialer(CMS2, material(CMS2), &[(CMS1, &server)]).await;
    client.connect(CMS1);
    assert_eq!(next(&mut cli_rx).await, NetEvent::Connected { peer: CMS1 });
    client.send(&envelope(CMS2, CMS1, 1)).unwrap();
    assert!(matches!(
        next(&mut srv_rx).await,
        NetEvent::FrameReceived { .. }
    ));

    server.shutdown().await;
    drop(server);
    assert_eq!(
        next_settled(&mut cli_rx).await,
        NetEvent::Closed { peer: CMS1 }
    );

    let (server, mut srv_rx) = listener_on(CMS1, material(CMS1), addr, limits()).await;
    assert_eq!(
        next_settled(&mut cli_rx).await,
        NetEvent::Connected { peer: CMS1 }
    );
    client.send(&envelope(CMS2, CMS1, 2)).unwrap();
    assert_eq!(
        next(&mut srv_rx).await,
        NetEvent::FrameReceived {
            peer: CMS2,
            envelope: envelope(CMS2, CMS1, 2)
        }
    );
    drop(server);
}

#[tokio::test]
async fn an_idle_connection_is_closed_and_the_dialer_reopens_it() {
    let idle = Limits {
        idle_timeout: Some(Duration::from_millis(100)),
        ..limits()
    };
    let (server, mut srv_rx) =
        listener_on(CMS1, material(CMS1), "127.0.0.1:0".parse().unwrap(), idle).await;
    let (client, mut cli_rx) = dialer(CMS2, material(CMS2), &[(CMS1, &server)]).await;
    client.connect(CMS1);
    assert_eq!(next(&mut cli_rx).await, NetEvent::Connected { peer: CMS1 });
    assert_eq!(next(&mut srv_rx).await, NetEvent::Closed { peer: CMS2 });
    assert_eq!(
        next_settled(&mut cli_rx).await,
        NetEvent::Closed { peer: CMS1 }
    );
    assert_eq!(
        next_settled(&mut cli_rx).await,
        NetEvent::Connected { peer: CMS1 }
    );
}

#[tokio::test]
async fn disconnect_closes_both_ends_without_a_closed_event_to_the_caller() {
    let (server, mut srv_rx) = listener(CMS1, material(CMS1)).await;
    let (client, mut cli_rx) = dialer(CMS2, material(CMS2), &[(CMS1, &server)]).await;
    client.connect(CMS1);
    assert_eq!(next(&mut cli_rx).await, NetEvent::Connected { peer: CMS1 });
    client.disconnect(CMS1);
    // The server sees its inbound connection go.
    assert_eq!(next(&mut srv_rx).await, NetEvent::Closed { peer: CMS2 });
    assert_eq!(
        client.send(&envelope(CMS2, CMS1, 1)),
        Err(SendError::NoRoute)
    );
    // Reconnecting works and is the only thing the client then reports.
    client.connect(CMS1);
    assert_eq!(next(&mut cli_rx).await, NetEvent::Connected { peer: CMS1 });
}

#[tokio::test]
async fn a_newer_inbound_connection_from_the_same_peer_replaces_the_older() {
    let agent = Endpoint::agent(NodeId(4));
    let (server, mut srv_rx) = listener(CMS1, material(CMS1)).await;
    let addr = server.local_addr().unwrap();
    let mut old = raw_link(addr, agent, CMS1).await;
    let mut new = raw_link(addr, agent, CMS1).await;
    // The old connection is closed by the server, without a Closed event (one remains).
    read_until_closed(&mut old).await;
    let frame = codec::encode(&envelope(CMS1, agent, 5)).unwrap();
    server.send(&envelope(CMS1, agent, 5)).unwrap();
    let mut got = vec![0u8; frame.len()];
    tokio::time::timeout(PATIENCE, new.read_exact(&mut got))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(got, frame);
    assert!(srv_rx.try_recv().is_err());
}

#[tokio::test]
async fn connecting_to_an_endpoint_without_an_address_fails_once() {
    let (client, mut rx) = dialer(CMS2, material(CMS2), &[]).await;
    let agent = Endpoint::agent(NodeId(3));
    client.connect(agent);
    assert_eq!(next(&mut rx).await, NetEvent::ConnectFailed { peer: agent });
}
