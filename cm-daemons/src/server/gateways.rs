//! Two-node mode's gateway check (SPEC.md §5.4): does every `third_party_gateway_ip` answer?
//!
//! `ping` (ICMP) needs privileges or a setuid binary that is not always installed, so a gateway
//! is probed over TCP instead: a gateway **answers** when, within the time limit, a TCP
//! connection to it either completes or is actively refused (a RST proves the host is up and
//! reachable from here). A timeout or a "host/network unreachable" error is no answer. An entry
//! may be `ip` (ports 80 and 443 are tried at once; either answering is enough) or `ip:port`.
//! An empty list answers `false`: without a witness, isolation cannot be told from a dead peer.

use std::io::ErrorKind;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use tokio::net::TcpStream;

/// Ports tried for an entry without an explicit port.
const DEFAULT_PORTS: [u16; 2] = [80, 443];

/// The socket addresses to try per entry; an unparsable entry is an error naming it.
pub fn parse(list: &str) -> Result<Vec<Vec<SocketAddr>>, String> {
    list.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|entry| {
            if let Ok(sa) = entry.parse::<SocketAddr>() {
                Ok(vec![sa])
            } else if let Ok(ip) = entry.trim_matches(['[', ']']).parse::<IpAddr>() {
                Ok(DEFAULT_PORTS
                    .iter()
                    .map(|p| SocketAddr::new(ip, *p))
                    .collect())
            } else {
                Err(format!(
                    "third_party_gateway_ip: `{entry}` is not an IP address or ip:port"
                ))
            }
        })
        .collect()
}

/// Whether a connection attempt's outcome is an answer: connected or refused. `None` is a
/// timeout.
pub fn is_answer(outcome: Option<&std::io::Result<()>>) -> bool {
    match outcome {
        Some(Ok(())) => true,
        Some(Err(e)) => e.kind() == ErrorKind::ConnectionRefused,
        None => false,
    }
}

/// Whether one address answers within `limit`.
async fn answers(addr: SocketAddr, limit: Duration) -> bool {
    let outcome = tokio::time::timeout(limit, TcpStream::connect(addr))
        .await
        .ok()
        .map(|r| r.map(drop));
    is_answer(outcome.as_ref())
}

/// Whether every gateway in `list` answers within `limit` (all probed concurrently).
pub async fn all_answer(list: &str, limit: Duration) -> bool {
    let entries = match parse(list) {
        Ok(e) if !e.is_empty() => e,
        Ok(_) => return false,
        Err(e) => {
            tracing::error!("{e}");
            return false;
        }
    };
    let mut tasks = tokio::task::JoinSet::new();
    for (i, addrs) in entries.iter().enumerate() {
        for a in addrs {
            let a = *a;
            tasks.spawn(async move { (i, answers(a, limit).await) });
        }
    }
    let mut answered = vec![false; entries.len()];
    while let Some(r) = tasks.join_next().await {
        if let Ok((i, true)) = r {
            answered[i] = true;
        }
    }
    answered.iter().all(|a| *a)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_are_ips_with_default_ports_or_explicit_socket_addresses() {
        let p = parse(" 10.0.0.1 , 10.0.0.2:8080,,::1").unwrap();
        assert_eq!(
            p,
            vec![
                vec![
                    "10.0.0.1:80".parse().unwrap(),
                    "10.0.0.1:443".parse().unwrap()
                ],
                vec!["10.0.0.2:8080".parse().unwrap()],
                vec!["[::1]:80".parse().unwrap(), "[::1]:443".parse().unwrap()],
            ]
        );
        assert!(
            parse("gateway.example")
                .unwrap_err()
                .contains("gateway.example")
        );
        assert!(parse("").unwrap().is_empty());
    }

    #[tokio::test]
    async fn listening_and_refusing_hosts_answer_silent_ones_do_not() {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let open = l.local_addr().unwrap();
        // A port that was just free: connecting is refused, which proves the host is up.
        let closed = {
            let t = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            t.local_addr().unwrap()
        };
        let limit = Duration::from_secs(10);
        assert!(all_answer(&format!("{open},{closed}"), limit).await);
        assert!(!all_answer("", limit).await);
        assert!(!all_answer("not-an-ip", limit).await);
    }

    #[test]
    fn only_a_connection_or_a_refusal_is_an_answer() {
        use std::io::Error;
        assert!(is_answer(Some(&Ok(()))));
        assert!(is_answer(Some(&Err(Error::from(
            ErrorKind::ConnectionRefused
        )))));
        assert!(!is_answer(Some(&Err(Error::from(
            ErrorKind::HostUnreachable
        )))));
        assert!(!is_answer(Some(&Err(Error::from(
            ErrorKind::NetworkUnreachable
        )))));
        assert!(!is_answer(Some(&Err(Error::from(ErrorKind::TimedOut)))));
        assert!(!is_answer(None));
    }
}
