//! Opening a link: TLS (or, on an all-loopback test cluster, plaintext), then a one-frame
//! hello in which the client says which endpoint it is, checked against its certificate.
//!
//! ```text
//! client → server  TLS 1.3 handshake, both sides present certificates of the cluster CA
//! client → server  HELLO = "CMH1" | role u8 | node u32 BE          (inside TLS)
//! server → client  ACCEPT (one byte 0xA5), or the connection closes
//! ```
//! The client checks the server's certificate names the node it dialled (rustls, server name =
//! the node's name). The server checks the client's certificate names the node of the claimed
//! endpoint, or [`OPERATOR_NAME`] for a cm_ctl; the operator's certificate never authenticates
//! a component (agent, monitor, server) and a node's never authenticates a cm_ctl. Every
//! refusal has a [`Refusal`] reason, counted by the transport.

use std::io;
use std::sync::Arc;

use cm_core::NodeId;
use cm_core::msg::{Endpoint, Role};
use cm_core::security::OPERATOR_NAME;
use rustls::server::ParsedCertificate;
use rustls::{CertificateError, Error as TlsErr};
use rustls_pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::{TlsAcceptor, TlsConnector};

use super::tls::Tls;

/// How links are protected.
#[derive(Clone, Debug)]
pub enum Security {
    /// Mutual TLS with this material (the only mode outside tests).
    Tls(Arc<Tls>),
    /// No TLS, no authentication (`allow_plaintext`, honoured on loopback only).
    Plaintext,
}

/// A byte stream a connection runs on (TCP, or TLS over TCP).
pub trait Stream: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Stream for T {}
/// A boxed [`Stream`].
pub type BoxStream = Box<dyn Stream>;

const MAGIC: [u8; 4] = *b"CMH1";
const HELLO_LEN: usize = 9;
const ACCEPT: u8 = 0xA5;

/// Why an inbound connection was refused (each counted in [`RefusalStats`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// The bytes were not a TLS handshake (plaintext on a TLS port, garbage).
    NotTls,
    /// The client presented no certificate.
    NoCertificate,
    /// The certificate does not chain to a trusted CA (or its signature is bad).
    Untrusted,
    /// The certificate has expired (or is not valid yet).
    Expired,
    /// The certificate does not name the endpoint the client claims to be.
    WrongName,
    /// The operator's certificate on a component link.
    OperatorOnComponent,
    /// The claimed node is not in the config.
    UnknownNode,
    /// The hello after the TLS handshake was malformed.
    BadHello,
    /// The handshake did not finish in time.
    Timeout,
    /// Too many handshakes in progress.
    TooManyPending,
    /// Too many handshakes in progress from one address.
    TooManyFromAddress,
    /// Too many established inbound connections.
    TooManyConnections,
    /// The peer closed or reset the connection mid-handshake (a client that gave up).
    Abandoned,
    /// Another TLS or socket failure.
    Other,
}

impl Refusal {
    /// True for reasons that say the peer is bad or misconfigured (logged as warnings); false
    /// for a peer that went away or for limits hit under load (logged at info).
    pub fn is_suspicious(self) -> bool {
        !matches!(self, Self::Abandoned)
    }
}

/// Refusal counts since start, one field per [`Refusal`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RefusalStats {
    /// [`Refusal::NotTls`].
    pub not_tls: u64,
    /// [`Refusal::NoCertificate`].
    pub no_certificate: u64,
    /// [`Refusal::Untrusted`].
    pub untrusted: u64,
    /// [`Refusal::Expired`].
    pub expired: u64,
    /// [`Refusal::WrongName`].
    pub wrong_name: u64,
    /// [`Refusal::OperatorOnComponent`].
    pub operator_on_component: u64,
    /// [`Refusal::UnknownNode`].
    pub unknown_node: u64,
    /// [`Refusal::BadHello`].
    pub bad_hello: u64,
    /// [`Refusal::Timeout`].
    pub timeout: u64,
    /// [`Refusal::TooManyPending`].
    pub too_many_pending: u64,
    /// [`Refusal::TooManyFromAddress`].
    pub too_many_from_address: u64,
    /// [`Refusal::TooManyConnections`].
    pub too_many_connections: u64,
    /// [`Refusal::Abandoned`].
    pub abandoned: u64,
    /// [`Refusal::Other`].
    pub other: u64,
}

impl RefusalStats {
    /// The counter of one reason.
    pub fn count_mut(&mut self, r: Refusal) -> &mut u64 {
        match r {
            Refusal::NotTls => &mut self.not_tls,
            Refusal::NoCertificate => &mut self.no_certificate,
            Refusal::Untrusted => &mut self.untrusted,
            Refusal::Expired => &mut self.expired,
            Refusal::WrongName => &mut self.wrong_name,
            Refusal::OperatorOnComponent => &mut self.operator_on_component,
            Refusal::UnknownNode => &mut self.unknown_node,
            Refusal::BadHello => &mut self.bad_hello,
            Refusal::Timeout => &mut self.timeout,
            Refusal::TooManyPending => &mut self.too_many_pending,
            Refusal::TooManyFromAddress => &mut self.too_many_from_address,
            Refusal::TooManyConnections => &mut self.too_many_connections,
            Refusal::Abandoned => &mut self.abandoned,
            Refusal::Other => &mut self.other,
        }
    }

    /// Each reason's metric label (snake case) with its count, in declaration order.
    pub fn by_reason(&self) -> [(&'static str, u64); 14] {
        [
            ("not_tls", self.not_tls),
            ("no_certificate", self.no_certificate),
            ("untrusted", self.untrusted),
            ("expired", self.expired),
            ("wrong_name", self.wrong_name),
            ("operator_on_component", self.operator_on_component),
            ("unknown_node", self.unknown_node),
            ("bad_hello", self.bad_hello),
            ("timeout", self.timeout),
            ("too_many_pending", self.too_many_pending),
            ("too_many_from_address", self.too_many_from_address),
            ("too_many_connections", self.too_many_connections),
            ("abandoned", self.abandoned),
            ("other", self.other),
        ]
    }

    /// Every refusal, whatever its reason.
    pub fn total(&self) -> u64 {
        let mut copy = *self;
        ALL.iter().map(|&r| *copy.count_mut(r)).sum()
    }
}

/// Every reason, for iterating counters.
pub(crate) const ALL: [Refusal; 14] = [
    Refusal::NotTls,
    Refusal::NoCertificate,
    Refusal::Untrusted,
    Refusal::Expired,
    Refusal::WrongName,
    Refusal::OperatorOnComponent,
    Refusal::UnknownNode,
    Refusal::BadHello,
    Refusal::Timeout,
    Refusal::TooManyPending,
    Refusal::TooManyFromAddress,
    Refusal::TooManyConnections,
    Refusal::Abandoned,
    Refusal::Other,
];

/// A refused handshake: the reason (counted) and the detail (logged).
#[derive(Debug, thiserror::Error)]
#[error("{detail}")]
pub struct Refused {
    /// The counted reason.
    pub reason: Refusal,
    /// What happened, for the log.
    pub detail: String,
}

fn refused(reason: Refusal, detail: impl Into<String>) -> Refused {
    Refused {
        reason,
        detail: detail.into(),
    }
}

/// Why dialing a peer failed (the client side).
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The socket failed or closed mid-handshake.
    #[error("handshake I/O: {0}")]
    Io(#[from] io::Error),
    /// The peer has no name in the config to check its certificate against.
    #[error("no node name for {0} in the config")]
    NoName(Endpoint),
    /// The peer refused our hello (our certificate does not name us, or limits).
    #[error(
        "the peer closed the connection without accepting us (check this process's \
             certificate and the peer's log)"
    )]
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

fn role_from(b: u8) -> Option<Role> {
    Some(match b {
        1 => Role::Monitor,
        2 => Role::Agent,
        3 => Role::Server,
        4 => Role::Ctl,
        _ => return None,
    })
}

fn hello(ep: Endpoint) -> [u8; HELLO_LEN] {
    let mut out = [0u8; HELLO_LEN];
    out[..4].copy_from_slice(&MAGIC);
    out[4] = role_byte(ep.role);
    out[5..].copy_from_slice(&ep.node.0.to_be_bytes());
    out
}

/// The endpoint a hello claims; `None` when it is not a hello.
pub fn parse_hello(buf: &[u8]) -> Option<Endpoint> {
    if buf.len() != HELLO_LEN || buf[..4] != MAGIC {
        return None;
    }
    let role = role_from(buf[4])?;
    let node = NodeId(u32::from_be_bytes([buf[5], buf[6], buf[7], buf[8]]));
    Some(Endpoint { node, role })
}

/// Runs the client side on a fresh TCP stream to `peer`; returns the stream to run frames on.
/// The caller bounds it with a timeout.
pub async fn client(
    security: &Security,
    tcp: TcpStream,
    local: Endpoint,
    peer: Endpoint,
) -> Result<BoxStream, ClientError> {
    let mut stream: BoxStream = match security {
        Security::Plaintext => Box::new(tcp),
        Security::Tls(tls) => {
            let name = tls.node_name(peer.node).ok_or(ClientError::NoName(peer))?;
            let name =
                ServerName::try_from(name.to_owned()).map_err(|_| ClientError::NoName(peer))?;
            let connector = TlsConnector::from(Arc::clone(&tls.current().client));
            Box::new(connector.connect(name, tcp).await?)
        }
    };
    stream.write_all(&hello(local)).await?;
    stream.flush().await?;
    let mut accept = [0u8; 1];
    match stream.read_exact(&mut accept).await {
        Ok(_) if accept[0] == ACCEPT => Ok(stream),
        Ok(_) => Err(ClientError::Refused),
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => Err(ClientError::Refused),
        // rustls reports the server's alert (bad certificate, ...) as an error.
        Err(e) if e.kind() == io::ErrorKind::InvalidData => Err(ClientError::Refused),
        Err(e) => Err(e.into()),
    }
}

/// The reason for a failed TLS accept.
fn classify(e: &io::Error) -> Refusal {
    let Some(tls) = e.get_ref().and_then(|i| i.downcast_ref::<TlsErr>()) else {
        return match e.kind() {
            io::ErrorKind::UnexpectedEof
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::BrokenPipe
            | io::ErrorKind::ConnectionAborted => Refusal::Abandoned,
            _ => Refusal::Other,
        };
    };
    match tls {
        TlsErr::NoCertificatesPresented => Refusal::NoCertificate,
        TlsErr::InvalidCertificate(c) => match c {
            CertificateError::Expired
            | CertificateError::ExpiredContext { .. }
            | CertificateError::NotValidYet
            | CertificateError::NotValidYetContext { .. } => Refusal::Expired,
            CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. } => {
                Refusal::WrongName
            }
            _ => Refusal::Untrusted,
        },
        TlsErr::InvalidMessage(_)
        | TlsErr::InappropriateMessage { .. }
        | TlsErr::InappropriateHandshakeMessage { .. } => Refusal::NotTls,
        _ => Refusal::Other,
    }
}

/// Runs the server side on an accepted TCP stream: returns the client's endpoint, proved by its
/// certificate, and the stream. The caller bounds it with a timeout.
pub(crate) async fn server(
    security: &Security,
    tcp: TcpStream,
) -> Result<(Endpoint, BoxStream), Refused> {
    let io_err = |e: io::Error| refused(classify(&e), format!("TLS handshake: {e}"));
    let (claimed, mut stream): (Endpoint, BoxStream) = match security {
        Security::Plaintext => {
            let mut s: BoxStream = Box::new(tcp);
            let claimed = read_hello(&mut s).await?;
            (claimed, s)
        }
        Security::Tls(tls) => {
            let acceptor = TlsAcceptor::from(Arc::clone(&tls.current().server));
            let mut s = acceptor.accept(tcp).await.map_err(io_err)?;
            let claimed = read_hello(&mut s).await?;
            let cert = s
                .get_ref()
                .1
                .peer_certificates()
                .and_then(|c| c.first())
                .ok_or_else(|| refused(Refusal::NoCertificate, "no client certificate"))?;
            check_identity(tls, cert, claimed)?;
            (claimed, Box::new(s))
        }
    };
    let done = async {
        stream.write_all(&[ACCEPT]).await?;
        stream.flush().await
    };
    done.await
        .map_err(|e| refused(classify(&e), format!("writing the accept: {e}")))?;
    Ok((claimed, stream))
}

async fn read_hello(s: &mut (impl AsyncRead + Unpin)) -> Result<Endpoint, Refused> {
    let mut buf = [0u8; HELLO_LEN];
    s.read_exact(&mut buf).await.map_err(|e| {
        let r = if e.kind() == io::ErrorKind::UnexpectedEof {
            Refusal::BadHello
        } else {
            classify(&e)
        };
        refused(r, format!("reading the hello: {e}"))
    })?;
    parse_hello(&buf).ok_or_else(|| refused(Refusal::BadHello, "not a cm hello"))
}

fn names(cert: &ParsedCertificate<'_>, name: &str) -> bool {
    ServerName::try_from(name).is_ok_and(|n| rustls::client::verify_server_name(cert, &n).is_ok())
}

/// The client's certificate (already chained to a trusted CA by rustls) must name what it
/// claims to be.
fn check_identity(
    tls: &Tls,
    cert: &rustls_pki_types::CertificateDer<'_>,
    claimed: Endpoint,
) -> Result<(), Refused> {
    let parsed = ParsedCertificate::try_from(cert)
        .map_err(|e| refused(Refusal::Untrusted, format!("client certificate: {e}")))?;
    if claimed.role == Role::Ctl {
        if names(&parsed, OPERATOR_NAME) {
            return Ok(());
        }
        return Err(refused(
            Refusal::WrongName,
            format!("a cm_ctl must present the operator certificate (`{OPERATOR_NAME}`)"),
        ));
    }
    let Some(name) = tls.node_name(claimed.node) else {
        return Err(refused(
            Refusal::UnknownNode,
            format!("{claimed} claims a node that is not in the config"),
        ));
    };
    if names(&parsed, name) {
        return Ok(());
    }
    if names(&parsed, OPERATOR_NAME) {
        return Err(refused(
            Refusal::OperatorOnComponent,
            format!("the operator certificate cannot authenticate {claimed}"),
        ));
    }
    Err(refused(
        Refusal::WrongName,
        format!("{claimed} presented a certificate that does not name `{name}`"),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_hello_round_trips_for_every_role_and_anything_else_is_none() {
        for ep in [
            Endpoint::monitor(NodeId(1)),
            Endpoint::agent(NodeId(7)),
            Endpoint::server(NodeId(u32::MAX)),
            Endpoint {
                node: NodeId(4242),
                role: Role::Ctl,
            },
        ] {
            assert_eq!(parse_hello(&hello(ep)), Some(ep));
        }
        let mut bad_role = hello(Endpoint::agent(NodeId(1)));
        bad_role[4] = 9;
        assert_eq!(parse_hello(&bad_role), None);
        assert_eq!(parse_hello(b"CMAU\x01\x00\x00\x00\x01"), None);
        assert_eq!(parse_hello(&hello(Endpoint::agent(NodeId(1)))[..8]), None);
        assert_eq!(parse_hello(b""), None);
    }

    #[test]
    fn refusal_counts_have_one_field_per_reason() {
        let mut s = RefusalStats::default();
        for (i, r) in ALL.iter().enumerate() {
            *s.count_mut(*r) += i as u64 + 1;
        }
        let n = ALL.len() as u64;
        assert_eq!(s.total(), n * (n + 1) / 2);
        assert!(!Refusal::Abandoned.is_suspicious());
        assert!(Refusal::Untrusted.is_suspicious());
    }

    #[test]
    fn socket_failures_mid_handshake_are_abandoned_and_tls_errors_classified() {
        let io = |k| io::Error::new(k, "x");
        assert_eq!(
            classify(&io(io::ErrorKind::UnexpectedEof)),
            Refusal::Abandoned
        );
        assert_eq!(
            classify(&io(io::ErrorKind::ConnectionReset)),
            Refusal::Abandoned
        );
        assert_eq!(
            classify(&io(io::ErrorKind::PermissionDenied)),
            Refusal::Other
        );
        let tls = |e: TlsErr| io::Error::new(io::ErrorKind::InvalidData, e);
        assert_eq!(
            classify(&tls(TlsErr::NoCertificatesPresented)),
            Refusal::NoCertificate
        );
        let expired = TlsErr::InvalidCertificate(CertificateError::Expired);
        assert_eq!(classify(&tls(expired)), Refusal::Expired);
        let unknown = TlsErr::InvalidCertificate(CertificateError::UnknownIssuer);
        assert_eq!(classify(&tls(unknown)), Refusal::Untrusted);
        let garbage = TlsErr::InvalidMessage(rustls::InvalidMessage::InvalidContentType);
        assert_eq!(classify(&tls(garbage)), Refusal::NotTls);
    }
}
