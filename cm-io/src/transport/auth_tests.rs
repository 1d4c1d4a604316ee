use cm_core::NodeId;
use cm_core::msg::Endpoint;
use tokio::io::{AsyncReadExt, AsyncWriteExt, duplex};

use super::*;

fn secret(s: &str) -> Secret {
    Secret::new(s.as_bytes().to_vec()).unwrap()
}

const CMS1: Endpoint = Endpoint::server(NodeId(1));
const CMA2: Endpoint = Endpoint::agent(NodeId(2));

async fn pair(
    client_secret: Secret,
    server_secret: Secret,
    expected: Option<Endpoint>,
) -> (Result<Endpoint, AuthError>, Result<Endpoint, AuthError>) {
    let (mut c, mut s) = duplex(1024);
    let client = async move {
        let r = client_handshake(&mut c, &client_secret, CMA2, expected).await;
        drop(c);
        r
    };
    let server = async move {
        let r = server_handshake(&mut s, &server_secret, CMS1).await;
        drop(s);
        r
    };
    tokio::join!(client, server)
}

#[tokio::test]
async fn same_secret_authenticates_both_ends_and_names_them() {
    let (c, s) = pair(
        secret("0123456789abcdef"),
        secret("0123456789abcdef"),
        Some(CMS1),
    )
    .await;
    assert_eq!(c.unwrap(), CMS1);
    assert_eq!(s.unwrap(), CMA2);
}

#[tokio::test]
async fn a_server_without_the_secret_is_refused_by_the_client() {
    let (c, s) = pair(
        secret("0123456789abcdef"),
        secret("fedcba9876543210"),
        Some(CMS1),
    )
    .await;
    assert!(matches!(c, Err(AuthError::BadProof)), "{c:?}");
    assert!(s.is_err());
}

#[tokio::test]
async fn a_client_without_the_secret_is_refused_by_the_server() {
    // A client that skips verifying the server and answers with a proof made from a wrong
    // secret: the server must reject the proof.
    let (mut c, mut s) = duplex(1024);
    let server =
        tokio::spawn(
            async move { server_handshake(&mut s, &secret("0123456789abcdef"), CMS1).await },
        );
    c.write_all(&hello(CMA2, &[7u8; NONCE_LEN])).await.unwrap();
    let mut buf = [0u8; HELLO_LEN + PROOF_LEN];
    c.read_exact(&mut buf).await.unwrap();
    let wrong = proof_mac(
        &secret("fedcba9876543210"),
        CLIENT_LABEL,
        &buf[10..HELLO_LEN],
        &[7u8; NONCE_LEN],
        CMA2,
        CMS1,
    );
    c.write_all(&wrong.finalize().into_bytes()).await.unwrap();
    assert!(matches!(server.await.unwrap(), Err(AuthError::BadProof)));
    let mut rest = Vec::new();
    c.read_to_end(&mut rest).await.unwrap();
    assert!(rest.is_empty(), "no ACCEPT after a bad proof");
}

#[tokio::test]
async fn the_servers_own_proof_cannot_be_reflected_as_a_client_proof() {
    // An attacker sends the server's nonce back as its own and replays the server's proof.
    let (mut c, mut s) = duplex(1024);
    let server =
        tokio::spawn(
            async move { server_handshake(&mut s, &secret("0123456789abcdef"), CMS1).await },
        );
    c.write_all(&hello(CMS1, &[9u8; NONCE_LEN])).await.unwrap();
    let mut buf = [0u8; HELLO_LEN + PROOF_LEN];
    c.read_exact(&mut buf).await.unwrap();
    c.write_all(&buf[HELLO_LEN..]).await.unwrap();
    assert!(matches!(server.await.unwrap(), Err(AuthError::BadProof)));
}

#[tokio::test]
async fn reaching_the_wrong_endpoint_is_an_error() {
    let (c, _s) = pair(
        secret("0123456789abcdef"),
        secret("0123456789abcdef"),
        Some(Endpoint::server(NodeId(3))),
    )
    .await;
    assert!(matches!(c, Err(AuthError::WrongPeer { found, .. }) if found == CMS1));
}

#[tokio::test]
async fn garbage_instead_of_a_hello_is_a_protocol_error() {
    let (mut c, mut s) = duplex(1024);
    c.write_all(&[b'X'; HELLO_LEN]).await.unwrap();
    let r = server_handshake(&mut s, &secret("0123456789abcdef"), CMS1).await;
    assert!(matches!(r, Err(AuthError::Protocol)));
}

#[test]
fn short_secrets_are_refused_with_the_file_named() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("secret");
    std::fs::write(&path, "short\n").unwrap();
    let err = Secret::load(&path).unwrap_err().to_string();
    assert!(err.contains(&path.display().to_string()), "{err}");
    assert!(err.contains("5 bytes"), "{err}");
    std::fs::write(&path, "0123456789abcdef\n").unwrap();
    assert!(Secret::load(&path).is_ok());
    let missing = dir.path().join("nope");
    let err = Secret::load(&missing).unwrap_err().to_string();
    assert!(err.contains("nope"), "{err}");
}
