//! Peer DN reachability (§3): a TCP connection to each peer DN's address and port, up to
//! [`PEER_PROBE_TRIES`] tries each with the given timeout.

use std::time::Duration;

use cm_core::agent::PEER_PROBE_TRIES;
use tokio::net::TcpStream;

/// Whether at least one of `peers` (`host`, `port`) accepts a TCP connection.
pub(super) async fn any_reachable(peers: &[(String, u16)], connect_timeout: Duration) -> bool {
    for _ in 0..PEER_PROBE_TRIES {
        for (host, port) in peers {
            let attempt = TcpStream::connect((host.as_str(), *port));
            if let Ok(Ok(_)) = tokio::time::timeout(connect_timeout, attempt).await {
                return true;
            }
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_listening_peer_is_reachable_and_a_closed_port_is_not() {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let open = l.local_addr().unwrap().port();
        let closed = {
            let c = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            c.local_addr().unwrap().port()
        };
        let t = Duration::from_millis(500);
        assert!(
            any_reachable(
                &[("127.0.0.1".into(), closed), ("127.0.0.1".into(), open)],
                t
            )
            .await
        );
        assert!(!any_reachable(&[("127.0.0.1".into(), closed)], t).await);
        assert!(!any_reachable(&[], t).await);
    }
}
