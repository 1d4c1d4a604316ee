//! Mutual challenge–response authentication of a connection by the per-cluster secret,
//! before any frame is accepted.
//!
//! ```text
//! client → server  HELLO  = "CMAU" | version | node u32 BE | role u8 | nonce_c[32]
//! server → client  HELLO  (server's endpoint, nonce_s)
//!                  proof_s = HMAC-SHA256(secret, "cm-auth-v1 server" | nonce_c | nonce_s | ep_s | ep_c)
//! client → server  proof_c = HMAC-SHA256(secret, "cm-auth-v1 client" | nonce_s | nonce_c | ep_c | ep_s)
//! server → client  ACCEPT (one byte)
//! ```
//! Each side proves knowledge of the secret over the other side's fresh nonce and both
//! claimed endpoints; the direction label stops a proof made by one side from being reflected
//! back as the other's. Proofs are compared in constant time (`Mac::verify_slice`).
//! This authenticates peers; it does not encrypt or protect the stream against an attacker on
//! the path (use a private network or a tunnel for that).

use std::io;
use std::path::{Path, PathBuf};

use cm_core::NodeId;
use cm_core::msg::{Endpoint, Role};
use hmac::{Hmac, Mac};
use sha2::Sha256;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

type HmacSha256 = Hmac<Sha256>;

const MAGIC: [u8; 4] = *b"CMAU";
const VERSION: u8 = 1;
const NONCE_LEN: usize = 32;
const HELLO_LEN: usize = 4 + 1 + 4 + 1 + NONCE_LEN;
const PROOF_LEN: usize = 32;
const ACCEPT: u8 = 0xA5;
/// The shortest secret accepted, in bytes.
pub const MIN_SECRET_LEN: usize = 16;

/// The per-cluster secret shared by every process of the cluster.
#[derive(Clone)]
pub struct Secret(Vec<u8>);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(..)")
    }
}

/// A secret that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    /// The secret file could not be read.
    #[error("cannot read the cluster secret file {}: {source}", .path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// The secret is too short to resist guessing.
    #[error("the cluster secret{} has {len} bytes; it needs at least {MIN_SECRET_LEN} \
             (e.g. `head -c 32 /dev/urandom | base64 > FILE`)",
            .path.as_ref().map(|p| format!(" in {}", p.display())).unwrap_or_default())]
    TooShort {
        /// The file, when it came from one.
        path: Option<PathBuf>,
        /// Its length.
        len: usize,
    },
}

impl Secret {
    /// A secret from bytes (at least [`MIN_SECRET_LEN`]).
    pub fn new(bytes: impl Into<Vec<u8>>) -> Result<Self, SecretError> {
        let bytes = bytes.into();
        if bytes.len() < MIN_SECRET_LEN {
            return Err(SecretError::TooShort {
                path: None,
                len: bytes.len(),
            });
        }
        Ok(Self(bytes))
    }

    /// Reads the secret file named by the cluster config; trailing whitespace (the newline an
    /// editor adds) is not part of the secret.
    pub fn load(path: &Path) -> Result<Self, SecretError> {
        let mut bytes = std::fs::read(path).map_err(|source| SecretError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        while bytes.last().is_some_and(u8::is_ascii_whitespace) {
            bytes.pop();
        }
        Self::new(bytes).map_err(|e| match e {
            SecretError::TooShort { len, .. } => SecretError::TooShort {
                path: Some(path.to_path_buf()),
                len,
            },
            other => other,
        })
    }

    fn mac(&self) -> HmacSha256 {
        HmacSha256::new_from_slice(&self.0).expect("HMAC accepts keys of any length")
    }
}

/// Why a handshake failed.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// The socket failed or closed mid-handshake.
    #[error("handshake I/O: {0}")]
    Io(#[from] io::Error),
    /// The peer does not speak this handshake (or this version of it).
    #[error("peer does not speak the cm handshake (bad magic or version)")]
    Protocol,
    /// The peer claimed a role byte that does not exist.
    #[error("peer claimed an unknown role {0}")]
    BadRole(u8),
    /// The peer's proof is wrong: it does not hold the cluster secret.
    #[error("peer failed authentication (wrong cluster secret?)")]
    BadProof,
    /// The peer is authentic but is not the endpoint we meant to reach (config mismatch).
    #[error("reached {found} but expected {expected}: check the addresses in the cluster config")]
    WrongPeer {
        /// Whom we dialled.
        expected: Endpoint,
        /// Who answered.
        found: Endpoint,
    },
    /// The server closed without accepting our proof.
    #[error("peer refused our authentication (wrong cluster secret?)")]
    Refused,
}

fn role_byte(role: Role) -> u8 {
    match role {
        Role::Monitor => 1,
        Role::Agent => 2,
        Role::Server => 3,
        Role::Ctl => 4,
    }
}

fn role_from(b: u8) -> Result<Role, AuthError> {
    match b {
        1 => Ok(Role::Monitor),
        2 => Ok(Role::Agent),
        3 => Ok(Role::Server),
        4 => Ok(Role::Ctl),
        other => Err(AuthError::BadRole(other)),
    }
}

fn endpoint_bytes(ep: Endpoint) -> [u8; 5] {
    let n = ep.node.0.to_be_bytes();
    [n[0], n[1], n[2], n[3], role_byte(ep.role)]
}

fn hello(ep: Endpoint, nonce: &[u8; NONCE_LEN]) -> [u8; HELLO_LEN] {
    let mut out = [0u8; HELLO_LEN];
    out[..4].copy_from_slice(&MAGIC);
    out[4] = VERSION;
    out[5..10].copy_from_slice(&endpoint_bytes(ep));
    out[10..].copy_from_slice(nonce);
    out
}

fn parse_hello(buf: &[u8; HELLO_LEN]) -> Result<(Endpoint, [u8; NONCE_LEN]), AuthError> {
    if buf[..4] != MAGIC || buf[4] != VERSION {
        return Err(AuthError::Protocol);
    }
    let node = NodeId(u32::from_be_bytes([buf[5], buf[6], buf[7], buf[8]]));
    let role = role_from(buf[9])?;
    let mut nonce = [0u8; NONCE_LEN];
    nonce.copy_from_slice(&buf[10..]);
    Ok((Endpoint { node, role }, nonce))
}

fn fresh_nonce() -> Result<[u8; NONCE_LEN], AuthError> {
    let mut n = [0u8; NONCE_LEN];
    getrandom::fill(&mut n).map_err(|e| AuthError::Io(io::Error::other(e.to_string())))?;
    Ok(n)
}

/// The proof that `prover` holds the secret, over the verifier's nonce.
fn proof_mac(
    secret: &Secret,
    label: &[u8],
    verifier_nonce: &[u8],
    prover_nonce: &[u8],
    prover: Endpoint,
    verifier: Endpoint,
) -> HmacSha256 {
    let mut mac = secret.mac();
    mac.update(label);
    mac.update(verifier_nonce);
    mac.update(prover_nonce);
    mac.update(&endpoint_bytes(prover));
    mac.update(&endpoint_bytes(verifier));
    mac
}

const SERVER_LABEL: &[u8] = b"cm-auth-v1 server";
const CLIENT_LABEL: &[u8] = b"cm-auth-v1 client";

/// Runs the client side on a fresh stream: proves `local`, and checks that the server is
/// `expected` (or, when `expected` is `None`, accepts any authentic server). Returns the
/// server's endpoint. The caller bounds it with a timeout.
pub async fn client_handshake<S: AsyncRead + AsyncWrite + Unpin>(
    stream: &mut S,
    secret: &Secret,
    local: Endpoint,
    expected: Option<Endpoint>,
) -> Result<Endpoint, AuthError> {
    let nonce_c = fresh_nonce()?;
    stream.write_all(&hello(local, &nonce_c)).await?;
    let mut buf = [0u8; HELLO_LEN];
    stream.read_exact(&mut buf).await?;
    let (server, nonce_s) = parse_hello(&buf)?;
    let mut proof_s = [0u8; PROOF_LEN];
    stream.read_exact(&mut proof_s).await?;
    proof_mac(secret, SERVER_LABEL, &nonce_c, &nonce_s, server, local)
        .verify_slice(&proof_s)
        .map_err(|_| AuthError::BadProof)?;
    if let Some(expected) = expected.filter(|&e| e != server) {
        return Err(AuthError::WrongPeer {
            expected,
            found: server,
        });
    }
    let proof_c = proof_mac(secret, CLIENT_LABEL, &nonce_s, &nonce_c, local, server);
    stream.write_all(&proof_c.finalize().into_bytes()).await?;
    let mut accept = [0u8; 1];
    match stream.read_exact(&mut accept).await {
        Ok(_) if accept[0] == ACCEPT => Ok(server),
        Ok(_) => Err(AuthError::Protocol),
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => Err(AuthError::Refused),
        Err(e) => Err(e.into()),
    }
}

/// Runs the server side on an accepted stream: proves `local` and returns the client's
/// authenticated endpoint. The caller bounds it with a timeout and drops the stream on error.
pub async fn server_handshake<S: AsyncRead + AsyncWrite + Unpin>(
    stream: &mut S,
    secret: &Secret,
    local: Endpoint,
) -> Result<Endpoint, AuthError> {
    let mut buf = [0u8; HELLO_LEN];
    stream.read_exact(&mut buf).await?;
    let (client, nonce_c) = parse_hello(&buf)?;
    let nonce_s = fresh_nonce()?;
    let proof_s = proof_mac(secret, SERVER_LABEL, &nonce_c, &nonce_s, local, client);
    let mut reply = Vec::with_capacity(HELLO_LEN + PROOF_LEN);
    reply.extend_from_slice(&hello(local, &nonce_s));
    reply.extend_from_slice(&proof_s.finalize().into_bytes());
    stream.write_all(&reply).await?;
    let mut proof_c = [0u8; PROOF_LEN];
    stream.read_exact(&mut proof_c).await?;
    proof_mac(secret, CLIENT_LABEL, &nonce_s, &nonce_c, client, local)
        .verify_slice(&proof_c)
        .map_err(|_| AuthError::BadProof)?;
    stream.write_all(&[ACCEPT]).await?;
    Ok(client)
}

#[cfg(test)]
#[path = "auth_tests.rs"]
mod tests;
