//! The authenticated TCP transport on loopback (port 0), with real sockets.

use std::net::SocketAddr;
use std::time::Duration;

use cm_core::NodeId;
use cm_core::QuorumTerm;
use cm_core::codec;
use cm_core::io::NetEvent;
use cm_core::msg::{Endpoint, Envelope, Msg, Role};
use cm_io::transport::auth::client_handshake;
use cm_io::transport::{
    AddressBook, Limits, Secret, SendError, Transport, TransportConfig, TransportStats,
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

fn secret() -> Secret {
    Secret::new(b"a-cluster-secret-of-32-bytes!!!!".to_vec()).unwrap()
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
    secret: Secret,
    addr: SocketAddr,
    limits: Limits,
) -> (Transport, Receiver<NetEvent>) {
    Transport::start(TransportConfig {
        local,
        secret,
        listen: Some(addr),
        addresses: AddressBook::new(),
        limits,
    })
    .await
    .unwrap()
}

async fn listener(local: Endpoint, secret: Secret) -> (Transport, Receiver<NetEvent>) {
    listener_on(local, secret, "127.0.0.1:0".parse().unwrap(), limits()).await
}

async fn dialer(
    local: Endpoint,
    secret: Secret,
    peers: &[(Endpoint, &Transport)],
) -> (Transport, Receiver<NetEvent>) {
    let mut book = AddressBook::new();
    for (ep, t) in peers {
        book.insert(*ep, t.local_addr().unwrap().to_string());
    }
    Transport::start(TransportConfig {
        local,
        secret,
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
async fn read_until_closed(s: &mut TcpStream) {
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
    let (monitor, mut mon_rx) = listener(CMM1, secret()).await;
    let (ctl, mut ctl_rx) = dialer(CTL9, secret(), &[(CMM1, &monitor)]).await;
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
async fn a_peer_with_a_wrong_secret_is_refused_and_no_frame_passes() {
    let (server, mut srv_rx) = listener(CMS1, secret()).await;
    let wrong = Secret::new(b"some-other-secret-entirely-00000".to_vec()).unwrap();
    let (client, mut cli_rx) = dialer(CMS2, wrong, &[(CMS1, &server)]).await;
    client.connect(CMS1);
    assert_eq!(
        next(&mut cli_rx).await,
        NetEvent::ConnectFailed { peer: CMS1 }
    );
    until_stats(&server, "a failed handshake", |s| s.handshake_failed >= 1).await;
    assert_eq!(
        client.send(&envelope(CMS2, CMS1, 1)),
        Err(SendError::NoRoute)
    );
    assert_eq!(client.stats().dropped_no_route, 1);
    client.disconnect(CMS1);
    assert!(srv_rx.try_recv().is_err(), "the server reported nothing");
}

#[tokio::test]
async fn malformed_oversized_and_forged_frames_close_that_connection_only() {
    let agent = Endpoint::agent(NodeId(5));
    let (server, mut srv_rx) = listener(CMS1, secret()).await;
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
        let mut s = TcpStream::connect(addr).await.unwrap();
        let me = client_handshake(&mut s, &secret(), agent, Some(CMS1)).await;
        assert_eq!(me.unwrap(), CMS1);
        s.write_all(payload).await.unwrap();
        read_until_closed(&mut s).await;
        assert_eq!(next(&mut srv_rx).await, NetEvent::Closed { peer: agent });
        until_stats(&server, "malformed counted", |st| {
            st.malformed == i as u64 + 1
        })
        .await;
    }
    // The listener keeps serving authentic peers.
    let (client, mut cli_rx) = dialer(CMS2, secret(), &[(CMS1, &server)]).await;
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
async fn a_silent_unauthenticated_peer_is_dropped_at_the_handshake_timeout() {
    let quick = Limits {
        handshake_timeout: Duration::from_millis(100),
        ..limits()
    };
    let (server, _rx) = listener_on(CMS1, secret(), "127.0.0.1:0".parse().unwrap(), quick).await;
    let mut s = TcpStream::connect(server.local_addr().unwrap())
        .await
        .unwrap();
    read_until_closed(&mut s).await;
    until_stats(&server, "handshake failure", |st| st.handshake_failed == 1).await;
}

#[tokio::test]
async fn the_dialer_reconnects_after_the_server_restarts() {
    let (server, mut srv_rx) = listener(CMS1, secret()).await;
    let addr = server.local_addr().unwrap();
    let (client, mut cli_rx) = dialer(CMS2, secret(), &[(CMS1, &server)]).await;
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

    let (server, mut srv_rx) = listener_on(CMS1, secret(), addr, limits()).await;
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
        listener_on(CMS1, secret(), "127.0.0.1:0".parse().unwrap(), idle).await;
    let (client, mut cli_rx) = dialer(CMS2, secret(), &[(CMS1, &server)]).await;
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
    let (server, mut srv_rx) = listener(CMS1, secret()).await;
    let (client, mut cli_rx) = dialer(CMS2, secret(), &[(CMS1, &server)]).await;
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
    let (server, mut srv_rx) = listener(CMS1, secret()).await;
    let addr = server.local_addr().unwrap();
    let mut old = TcpStream::connect(addr).await.unwrap();
    client_handshake(&mut old, &secret(), agent, Some(CMS1))
        .await
        .unwrap();
    let mut new = TcpStream::connect(addr).await.unwrap();
    client_handshake(&mut new, &secret(), agent, Some(CMS1))
        .await
        .unwrap();
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
    let (client, mut rx) = dialer(CMS2, secret(), &[]).await;
    let agent = Endpoint::agent(NodeId(3));
    client.connect(agent);
    assert_eq!(next(&mut rx).await, NetEvent::ConnectFailed { peer: agent });
}
