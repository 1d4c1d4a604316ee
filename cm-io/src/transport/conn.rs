//! One authenticated connection (TLS or, in tests, plaintext): frames in (decoded with
//! `cm_core::codec`), frames out (from a bounded outbox). A malformed frame, a frame whose sender
//! is not the authenticated peer, an idle timeout, EOF or a write error ends the connection;
//! nothing here panics on input.

use std::future::Future;
use std::sync::atomic::Ordering;
use std::time::Duration;

use cm_core::codec;
use cm_core::io::NetEvent;
use cm_core::msg::Endpoint;
use tokio::io::{AsyncReadExt, AsyncWriteExt, ReadHalf, WriteHalf};
use tokio::sync::mpsc;

use super::Stats;
use super::handshake::BoxStream;

/// Why a connection ended (for logs).
#[derive(Debug)]
pub(crate) enum End {
    /// The peer closed it.
    Eof,
    /// No bytes for the idle timeout.
    Idle,
    /// A read or write failed.
    Io(std::io::Error),
    /// The peer sent something that is not a valid frame from it.
    Malformed(String),
    /// The transport closed it (disconnect, replacement, shutdown, events receiver gone).
    Local,
}

impl End {
    /// Logs the end of a connection: a misbehaving peer is a warning, the rest is routine.
    pub(crate) fn log(&self, peer: Endpoint, direction: &str) {
        match self {
            Self::Malformed(why) => {
                tracing::warn!(%peer, direction, "connection closed: malformed input: {why}");
            }
            // cm_ctl exits with its connections open (a reset under TLS): routine too.
            Self::Io(e) if peer.role == cm_core::msg::Role::Ctl => {
                tracing::debug!(%peer, direction, "connection closed: {e}");
            }
            Self::Io(e) => tracing::info!(%peer, direction, "connection closed: {e}"),
            // cm_ctl closes its connection after every command: routine.
            Self::Eof if peer.role == cm_core::msg::Role::Ctl => {
                tracing::debug!(%peer, direction, "connection closed by the peer");
            }
            Self::Eof => tracing::info!(%peer, direction, "connection closed by the peer"),
            Self::Idle => tracing::info!(%peer, direction, "connection closed: idle timeout"),
            Self::Local => tracing::debug!(%peer, direction, "connection closed locally"),
        }
    }
}

/// Runs the connection until it ends or `stop` resolves.
pub(crate) async fn run(
    stream: BoxStream,
    peer: Endpoint,
    outbox: mpsc::Receiver<Vec<u8>>,
    events: mpsc::Sender<NetEvent>,
    idle: Option<Duration>,
    stats: &Stats,
    stop: impl Future<Output = ()>,
) -> End {
    let (rd, wr) = tokio::io::split(stream);
    tokio::select! {
        end = read_loop(rd, peer, &events, idle, stats) => end,
        end = write_loop(wr, outbox) => end,
        () = stop => End::Local,
    }
}

async fn read_loop(
    mut rd: ReadHalf<BoxStream>,
    peer: Endpoint,
    events: &mpsc::Sender<NetEvent>,
    idle: Option<Duration>,
    stats: &Stats,
) -> End {
    let mut buf: Vec<u8> = Vec::with_capacity(16 * 1024);
    loop {
        loop {
            match codec::decode_frame(&buf) {
                Ok(Some((envelope, used))) => {
                    buf.drain(..used);
                    if envelope.from != peer {
                        stats.malformed.fetch_add(1, Ordering::Relaxed);
                        return End::Malformed(format!(
                            "frame claims to come from {} on a connection authenticated as {peer}",
                            envelope.from
                        ));
                    }
                    stats.received.fetch_add(1, Ordering::Relaxed);
                    if events
                        .send(NetEvent::FrameReceived { peer, envelope })
                        .await
                        .is_err()
                    {
                        return End::Local;
                    }
                }
                Ok(None) => break,
                Err(e) => {
                    stats.malformed.fetch_add(1, Ordering::Relaxed);
                    return End::Malformed(e.to_string());
                }
            }
        }
        let read = rd.read_buf(&mut buf);
        let n = match idle {
            Some(d) => match tokio::time::timeout(d, read).await {
                Ok(r) => r,
                Err(_) => return End::Idle,
            },
            None => read.await,
        };
        match n {
            Ok(0) => return End::Eof,
            Ok(_) => {}
            // A TLS peer that closes without close_notify (cm_ctl exiting): an ordinary close.
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return End::Eof,
            Err(e) => return End::Io(e),
        }
    }
}

async fn write_loop(mut wr: WriteHalf<BoxStream>, mut outbox: mpsc::Receiver<Vec<u8>>) -> End {
    while let Some(frame) = outbox.recv().await {
        if let Err(e) = wr.write_all(&frame).await {
            return End::Io(e);
        }
        // TLS buffers records: push them out once the queue is drained.
        if outbox.is_empty()
            && let Err(e) = wr.flush().await
        {
            return End::Io(e);
        }
    }
    End::Local
}
