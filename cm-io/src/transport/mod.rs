//! TCP transport for [`Envelope`] frames between the processes of a cluster.
//!
//! Every connection is mutual TLS 1.3 against the cluster CA, and the client's certificate must
//! name the endpoint it claims ([`handshake`]), before any frame is read (`allow_plaintext`
//! test clusters skip TLS); frames are `cm_core::codec` frames. The core decides which
//! connections exist (`NetCommand::Connect`/`Disconnect`); this module keeps them and reports
//! facts as [`NetEvent`]s:
//!
//! * `connect(peer)` dials the peer's address ([`AddressBook`]) and keeps the connection up
//!   until `disconnect(peer)`: each failed attempt is a `ConnectFailed`, each success a
//!   `Connected`, and the next attempt follows after an exponential backoff (capped).
//! * Inbound connections (to cm_server, or om_monitor's control port) are identified by the
//!   endpoint their handshake proved; a newer inbound connection from the same endpoint
//!   replaces the older one (an agent that reconnects, or a cm_ctl re-run).
//! * `send(envelope)` routes to a connection whose peer is `envelope.to` (the outbound one if
//!   both directions exist); with none, or a full outbox, the frame is dropped and counted.
//! * `Closed{peer}` is reported when the *last* connection to a peer closes by itself; closes
//!   the core ordered (`disconnect`) are not reported back.
//!
//! Every queue is bounded: per-connection outboxes (overflow dropped and counted), the event
//! queue (full → readers wait, which pushes back on the peers through TCP), the handshakes in
//! progress (in total and per source address), the established inbound connections and the
//! handshake time (each excess refused and counted in [`RefusalStats`]); frames longer than
//! the codec's limit close the connection (counted as malformed).
//!
//! With TLS, a task checks every `cert_check_interval` whether a certificate in use expires
//! within `cert_expire_alert` (`ssl_cert_expire_alert_threshold`): an error log (the alarm), a
//! counter, and the gauge [`TransportStats::cert_min_remaining_s`].

mod addresses;
pub mod certgen;
mod conn;
pub mod flood;
pub mod handshake;
pub mod tls;

use std::collections::{BTreeSet, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use cm_core::codec;
use cm_core::io::{NetCommand, NetEvent};
use cm_core::msg::{Endpoint, Envelope};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, mpsc, watch};
use tokio::task::JoinHandle;

pub use addresses::AddressBook;
pub use handshake::{Refusal, RefusalStats, Security};
pub use tls::{Tls, TlsError, TlsFiles};

/// Timeouts, backoff and queue bounds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Bound on a TCP connect, and separately on the TLS handshake and hello.
    pub handshake_timeout: Duration,
    /// A connection that receives nothing for this long is closed (`None`: never).
    pub idle_timeout: Option<Duration>,
    /// A connection whose sent bytes stay unacknowledged by the peer's TCP for this long is
    /// closed by the kernel (`TCP_USER_TIMEOUT`), and an outbound one redialled at once
    /// (`None`: the kernel's retransmission limits, many minutes). Without it a connection cut
    /// by a partition stays silent long after the heal, its retransmissions backed off
    /// (nemesis, issue 16: a CMS pre-vote sat 14 s in such a connection).
    pub unacked_timeout: Option<Duration>,
    /// First wait between connection attempts to a peer.
    pub backoff_initial: Duration,
    /// Cap of the doubling wait between attempts.
    pub backoff_max: Duration,
    /// Frames queued per connection before sends are dropped.
    pub outbox_frames: usize,
    /// Events queued for the machine before readers wait.
    pub event_queue: usize,
    /// Inbound handshakes in progress before new connections are closed at once (a quarter of
    /// them is kept for the addresses of the cluster's members).
    pub max_pending_handshakes: usize,
    /// Inbound handshakes in progress from one IP address.
    pub max_pending_per_address: usize,
    /// Inbound connections (in handshake or established).
    pub max_connections: usize,
    /// Alarm when a certificate in use expires within this (`ssl_cert_expire_alert_threshold`).
    pub cert_expire_alert: Duration,
    /// How often the certificates' expiry is checked.
    pub cert_check_interval: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            handshake_timeout: Duration::from_secs(2),
            idle_timeout: Some(Duration::from_secs(60)),
            unacked_timeout: None,
            backoff_initial: Duration::from_millis(100),
            backoff_max: Duration::from_secs(3),
            outbox_frames: 1024,
            event_queue: 4096,
            max_pending_handshakes: 64,
            max_pending_per_address: 8,
            max_connections: 512,
            cert_expire_alert: Duration::from_secs(30 * 86_400),
            cert_check_interval: Duration::from_secs(3600),
        }
    }
}

/// What a transport needs to start.
#[derive(Clone, Debug)]
pub struct TransportConfig {
    /// This process.
    pub local: Endpoint,
    /// TLS material (or plaintext, on a loopback test cluster).
    pub security: Security,
    /// Where to accept connections (`None`: outbound only, e.g. cm_agent or cm_ctl).
    pub listen: Option<SocketAddr>,
    /// Where peers listen.
    pub addresses: AddressBook,
    /// Timeouts and bounds.
    pub limits: Limits,
}

/// A transport that could not start.
#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    /// The listening socket could not be bound.
    #[error("cannot listen on {addr} for {local}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// This process.
        local: Endpoint,
        /// The OS error (address in use, permission).
        #[source]
        source: std::io::Error,
    },
}

/// Why a frame was not queued (it is counted in [`TransportStats`] too).
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SendError {
    /// No connection to the addressee.
    #[error("no connection to the addressee")]
    NoRoute,
    /// The connection's outbox is full (the peer reads too slowly).
    #[error("outbox full")]
    OutboxFull,
    /// The envelope cannot be encoded (too large).
    #[error("cannot encode the envelope")]
    Encode,
}

/// Counters since start (a snapshot).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TransportStats {
    /// Frames queued for sending.
    pub sent: u64,
    /// Frames received and delivered as events.
    pub received: u64,
    /// Sends dropped: no connection to the addressee.
    pub dropped_no_route: u64,
    /// Sends dropped: outbox full.
    pub dropped_outbox_full: u64,
    /// Sends dropped: encoding failed.
    pub dropped_encode: u64,
    /// Connections closed for a malformed frame or a forged sender.
    pub malformed: u64,
    /// Inbound connections refused, by reason (bad certificate, limits, timeout, ...).
    pub refused: RefusalStats,
    /// Outbound connection attempts that failed.
    pub connect_failed: u64,
    /// Expiry checks that found a certificate expiring within the threshold (alarms raised).
    pub cert_expiry_alarms: u64,
    /// Seconds until the first certificate in use expires (`None` without TLS).
    pub cert_min_remaining_s: Option<i64>,
}

#[derive(Debug, Default)]
struct Stats {
    sent: AtomicU64,
    received: AtomicU64,
    no_route: AtomicU64,
    outbox_full: AtomicU64,
    encode: AtomicU64,
    malformed: AtomicU64,
    refused: [AtomicU64; handshake::ALL.len()],
    connect_failed: AtomicU64,
    cert_alarms: AtomicU64,
}

fn bump(c: &AtomicU64) {
    c.fetch_add(1, Ordering::Relaxed);
}

impl Stats {
    fn snapshot(&self) -> TransportStats {
        let g = |c: &AtomicU64| c.load(Ordering::Relaxed);
        TransportStats {
            sent: g(&self.sent),
            received: g(&self.received),
            dropped_no_route: g(&self.no_route),
            dropped_outbox_full: g(&self.outbox_full),
            dropped_encode: g(&self.encode),
            malformed: g(&self.malformed),
            refused: self.refusals(),
            connect_failed: g(&self.connect_failed),
            cert_expiry_alarms: g(&self.cert_alarms),
            cert_min_remaining_s: None,
        }
    }

    fn refusals(&self) -> RefusalStats {
        let mut out = RefusalStats::default();
        for (i, &r) in handshake::ALL.iter().enumerate() {
            *out.count_mut(r) = self.refused[i].load(Ordering::Relaxed);
        }
        out
    }

    fn refuse(&self, r: Refusal) {
        if let Some(i) = handshake::ALL.iter().position(|&x| x == r) {
            bump(&self.refused[i]);
        }
    }
}

/// A live connection's entry: dropping `tx` closes the connection.
#[derive(Debug)]
struct Conn {
    id: u64,
    outbound: bool,
    tx: mpsc::Sender<Vec<u8>>,
}

#[derive(Debug, Default)]
struct Registry {
    conns: HashMap<Endpoint, Vec<Conn>>,
    /// Dialers by peer; dropping the sender cancels the dialer.
    dialers: HashMap<Endpoint, watch::Sender<()>>,
    next_id: u64,
}

impl Registry {
    fn add(&mut self, peer: Endpoint, outbound: bool, tx: mpsc::Sender<Vec<u8>>) -> u64 {
        self.next_id += 1;
        let id = self.next_id;
        let list = self.conns.entry(peer).or_default();
        list.retain(|c| c.outbound != outbound);
        list.push(Conn { id, outbound, tx });
        id
    }

    /// Removes a connection; true when it was registered and was the peer's last one.
    fn remove(&mut self, peer: Endpoint, id: u64) -> bool {
        let Some(list) = self.conns.get_mut(&peer) else {
            return false;
        };
        let before = list.len();
        list.retain(|c| c.id != id);
        let removed = list.len() < before;
        if list.is_empty() {
            self.conns.remove(&peer);
        }
        removed && !self.conns.contains_key(&peer)
    }

    fn route(&self, peer: Endpoint) -> Option<&mpsc::Sender<Vec<u8>>> {
        let list = self.conns.get(&peer)?;
        list.iter()
            .find(|c| c.outbound)
            .or_else(|| list.last())
            .map(|c| &c.tx)
    }
}

/// What the transport's tasks share.
#[derive(Debug)]
struct Ctx {
    local: Endpoint,
    security: Security,
    addresses: AddressBook,
    limits: Limits,
    registry: Mutex<Registry>,
    /// Handshakes in progress by source address.
    pending_by_address: Mutex<HashMap<IpAddr, usize>>,
    stats: Stats,
    events: mpsc::Sender<NetEvent>,
}

impl Ctx {
    fn pending_by_address(&self) -> MutexGuard<'_, HashMap<IpAddr, usize>> {
        self.pending_by_address
            .lock()
            .unwrap_or_else(|p| p.into_inner())
    }

    /// Counts and logs a refused inbound connection.
    fn refuse(&self, addr: SocketAddr, reason: Refusal, detail: &str) {
        self.stats.refuse(reason);
        if reason.is_suspicious() {
            tracing::warn!(%addr, local = %self.local, ?reason, "connection refused: {detail}");
        } else {
            tracing::info!(%addr, local = %self.local, ?reason, "connection dropped: {detail}");
        }
    }

    fn registry(&self) -> MutexGuard<'_, Registry> {
        // A panic while holding the lock leaves the maps consistent (no multi-step updates).
        self.registry.lock().unwrap_or_else(|p| p.into_inner())
    }

    async fn emit(&self, event: NetEvent) {
        // The receiver gone means the machine is shutting down; nothing to tell.
        let _ = self.events.send(event).await;
    }
}

/// Resolves when the transport shuts down (flag set or handle dropped).
async fn stopped(mut shutdown: watch::Receiver<bool>) {
    let _ = shutdown.wait_for(|s| *s).await;
}

/// Resolves when a dialer's cancel sender is dropped (it never sends).
async fn cancelled(mut cancel: watch::Receiver<()>) {
    while cancel.changed().await.is_ok() {}
}

#[derive(Debug)]
struct Inner {
    ctx: Arc<Ctx>,
    shutdown: watch::Sender<bool>,
    listener: Mutex<Option<JoinHandle<()>>>,
    local_addr: Option<SocketAddr>,
}

/// The transport handle. Cheap to clone; when the last clone is dropped (or on
/// [`Transport::shutdown`]) the listener, dialers and connections stop.
#[derive(Clone, Debug)]
pub struct Transport {
    inner: Arc<Inner>,
}

impl Transport {
    /// Binds the listener (if any) and starts the transport on the current tokio runtime.
    /// Returns the handle and the receiver of connection events.
    pub async fn start(
        config: TransportConfig,
    ) -> Result<(Self, mpsc::Receiver<NetEvent>), TransportError> {
        let (events, rx) = mpsc::channel(config.limits.event_queue.max(1));
        let (shutdown, _) = watch::channel(false);
        let ctx = Arc::new(Ctx {
            local: config.local,
            security: config.security,
            addresses: config.addresses,
            limits: config.limits,
            registry: Mutex::new(Registry::default()),
            pending_by_address: Mutex::new(HashMap::new()),
            stats: Stats::default(),
            events,
        });
        let (listener, local_addr) = match config.listen {
            Some(addr) => {
                let l = TcpListener::bind(addr)
                    .await
                    .map_err(|source| TransportError::Bind {
                        addr,
                        local: ctx.local,
                        source,
                    })?;
                let bound = l.local_addr().ok();
                let task = tokio::spawn(accept_loop(Arc::clone(&ctx), l, shutdown.subscribe()));
                (Some(task), bound)
            }
            None => (None, None),
        };
        if let Security::Tls(tls) = &ctx.security {
            tokio::spawn(expiry_loop(
                Arc::clone(&ctx),
                Arc::clone(tls),
                shutdown.subscribe(),
            ));
        }
        let inner = Inner {
            ctx,
            shutdown,
            listener: Mutex::new(listener),
            local_addr,
        };
        Ok((
            Self {
                inner: Arc::new(inner),
            },
            rx,
        ))
    }

    /// This process's endpoint.
    pub fn local(&self) -> Endpoint {
        self.inner.ctx.local
    }

    /// The address the listener is bound to (the real port when 0 was asked for).
    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.inner.local_addr
    }

    /// Counters since start.
    pub fn stats(&self) -> TransportStats {
        let mut s = self.inner.ctx.stats.snapshot();
        if let Security::Tls(tls) = &self.inner.ctx.security {
            s.cert_min_remaining_s = tls.min_remaining_s(unix_now());
        }
        s
    }

    /// One connection attempt and handshake to `peer`, closed at once: why cm_ctl cannot use
    /// a peer, in words.
    pub async fn probe(&self, peer: Endpoint) -> Result<(), String> {
        dial(&self.inner.ctx, peer)
            .await
            .map(drop)
            .map_err(|e| e.to_string())
    }

    /// Opens and keeps a connection to `peer` until [`Transport::disconnect`]. A peer without
    /// a listening address (an agent, a cm_ctl) gets one `ConnectFailed`.
    pub fn connect(&self, peer: Endpoint) {
        let ctx = &self.inner.ctx;
        if ctx.addresses.get(peer).is_none() {
            tracing::warn!(%peer, "no address to connect to");
            bump(&ctx.stats.connect_failed);
            let ctx = Arc::clone(ctx);
            tokio::spawn(async move { ctx.emit(NetEvent::ConnectFailed { peer }).await });
            return;
        }
        let mut reg = ctx.registry();
        if reg.dialers.get(&peer).is_some_and(|d| !d.is_closed()) {
            return;
        }
        let (cancel, cancel_rx) = watch::channel(());
        reg.dialers.insert(peer, cancel);
        drop(reg);
        tokio::spawn(dial_loop(
            Arc::clone(ctx),
            peer,
            cancel_rx,
            self.inner.shutdown.subscribe(),
        ));
    }

    /// Stops dialing `peer` and closes every connection to it (either direction). No `Closed`
    /// event follows: the caller ordered it.
    pub fn disconnect(&self, peer: Endpoint) {
        let mut reg = self.inner.ctx.registry();
        reg.dialers.remove(&peer);
        reg.conns.remove(&peer);
    }

    /// Queues an envelope on a connection to `envelope.to`; dropped and counted when there is
    /// none or its outbox is full.
    pub fn send(&self, envelope: &Envelope) -> Result<(), SendError> {
        let stats = &self.inner.ctx.stats;
        let Ok(frame) = codec::encode(envelope) else {
            bump(&stats.encode);
            return Err(SendError::Encode);
        };
        let reg = self.inner.ctx.registry();
        let Some(tx) = reg.route(envelope.to) else {
            bump(&stats.no_route);
            return Err(SendError::NoRoute);
        };
        match tx.try_send(frame) {
            Ok(()) => {
                bump(&stats.sent);
                Ok(())
            }
            Err(mpsc::error::TrySendError::Full(_)) => {
                bump(&stats.outbox_full);
                Err(SendError::OutboxFull)
            }
            Err(mpsc::error::TrySendError::Closed(_)) => {
                bump(&stats.no_route);
                Err(SendError::NoRoute)
            }
        }
    }

    /// Executes one network command of a machine. Send failures are counted and logged at
    /// debug level: the core learns of lost peers from `Closed` events, not from sends.
    pub fn execute(&self, command: NetCommand) {
        match command {
            NetCommand::Connect { peer } => self.connect(peer),
            NetCommand::Disconnect { peer } => self.disconnect(peer),
            NetCommand::Send { envelope } => {
                if let Err(e) = self.send(&envelope) {
                    tracing::debug!(to = %envelope.to, "frame dropped: {e}");
                }
            }
        }
    }

    /// Stops everything and waits until the listening socket is closed (so that a successor
    /// can bind the same port). Other clones of the handle stop working too.
    pub async fn shutdown(&self) {
        self.inner.shutdown.send_replace(true);
        let task = self
            .inner
            .listener
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        if let Some(task) = task {
            let _ = task.await;
        }
        let mut reg = self.inner.ctx.registry();
        reg.dialers.clear();
        reg.conns.clear();
    }
}

/// Keeps one outbound connection to `peer` up until cancelled.
async fn dial_loop(
    ctx: Arc<Ctx>,
    peer: Endpoint,
    cancel: watch::Receiver<()>,
    shutdown: watch::Receiver<bool>,
) {
    let limits = ctx.limits.clone();
    let mut backoff = limits.backoff_initial;
    let over = |c: &watch::Receiver<()>, s: &watch::Receiver<bool>| {
        c.has_changed().is_err() || *s.borrow() || s.has_changed().is_err()
    };
    loop {
        let attempt = tokio::select! {
            r = dial(&ctx, peer) => r,
            () = cancelled(cancel.clone()) => return,
            () = stopped(shutdown.clone()) => return,
        };
        match attempt {
            Ok(stream) => {
                backoff = limits.backoff_initial;
                let (tx, rx) = mpsc::channel(limits.outbox_frames.max(1));
                let id = ctx.registry().add(peer, true, tx);
                ctx.emit(NetEvent::Connected { peer }).await;
                let stop = async {
                    tokio::select! {
                        () = cancelled(cancel.clone()) => {},
                        () = stopped(shutdown.clone()) => {},
                    }
                };
                let end = conn::run(
                    stream,
                    peer,
                    rx,
                    ctx.events.clone(),
                    limits.idle_timeout,
                    &ctx.stats,
                    stop,
                )
                .await;
                end.log(peer, "outbound");
                if ctx.registry().remove(peer, id) && !over(&cancel, &shutdown) {
                    ctx.emit(NetEvent::Closed { peer }).await;
                }
            }
            Err(e) => {
                tracing::debug!(%peer, "connection attempt failed: {e}");
                bump(&ctx.stats.connect_failed);
                ctx.emit(NetEvent::ConnectFailed { peer }).await;
            }
        }
        if over(&cancel, &shutdown) {
            return;
        }
        tokio::select! {
            () = tokio::time::sleep(backoff) => {},
            () = cancelled(cancel.clone()) => return,
            () = stopped(shutdown.clone()) => return,
        }
        backoff = (backoff * 2).min(limits.backoff_max);
    }
}

/// Why one connection attempt failed.
#[derive(Debug, thiserror::Error)]
enum DialError {
    #[error("no address")]
    NoAddress,
    #[error("connect to {addr}: {source}")]
    Connect {
        addr: String,
        source: std::io::Error,
    },
    #[error("timed out ({what})")]
    Timeout { what: &'static str },
    #[error(transparent)]
    Handshake(#[from] handshake::ClientError),
}

async fn dial(ctx: &Ctx, peer: Endpoint) -> Result<handshake::BoxStream, DialError> {
    let addr = ctx.addresses.get(peer).ok_or(DialError::NoAddress)?;
    let t = ctx.limits.handshake_timeout;
    let stream = tokio::time::timeout(t, TcpStream::connect(addr))
        .await
        .map_err(|_| DialError::Timeout { what: "connect" })?
        .map_err(|source| DialError::Connect {
            addr: addr.to_owned(),
            source,
        })?;
    let _ = stream.set_nodelay(true);
    set_unacked_timeout(&stream, ctx.limits.unacked_timeout);
    let stream = tokio::time::timeout(t, handshake::client(&ctx.security, stream, ctx.local, peer))
        .await
        .map_err(|_| DialError::Timeout { what: "handshake" })??;
    Ok(stream)
}

/// Sets [`Limits::unacked_timeout`] on a connected socket (a failure is logged: the connection
/// still works, only without the bound).
fn set_unacked_timeout(stream: &TcpStream, timeout: Option<Duration>) {
    if let Some(t) = timeout
        && let Err(e) = socket2::SockRef::from(stream).set_tcp_user_timeout(Some(t))
    {
        tracing::warn!("cannot set TCP_USER_TIMEOUT: {e}");
    }
}

/// The part of the pending-handshake budget kept for the cluster's members (a quarter, at
/// least one when the budget has two): a flood from elsewhere cannot take all of it.
fn member_reserve(max_pending: usize) -> usize {
    if max_pending >= 2 {
        (max_pending / 4).max(1)
    } else {
        0
    }
}

/// The IP addresses of the cluster's members (the address book's hosts, resolved once).
async fn member_ips(book: &AddressBook) -> BTreeSet<IpAddr> {
    let mut ips = BTreeSet::new();
    for hp in book.all() {
        if let Ok(sa) = hp.parse::<SocketAddr>() {
            ips.insert(sa.ip());
            continue;
        }
        match tokio::net::lookup_host(hp).await {
            Ok(found) => ips.extend(found.map(|sa| sa.ip())),
            Err(e) => tracing::warn!(
                address = hp,
                "cannot resolve a member's address; its handshakes get no reserved slot: {e}"
            ),
        }
    }
    ips
}

async fn accept_loop(ctx: Arc<Ctx>, listener: TcpListener, shutdown: watch::Receiver<bool>) {
    let max_pending = ctx.limits.max_pending_handshakes.max(1);
    let reserve = member_reserve(max_pending);
    let pending = Arc::new(Semaphore::new(max_pending - reserve));
    let reserved = Arc::new(Semaphore::new(reserve));
    let members = member_ips(&ctx.addresses).await;
    let established = Arc::new(Semaphore::new(ctx.limits.max_connections.max(1)));
    loop {
        let accepted = tokio::select! {
            r = listener.accept() => r,
            () = stopped(shutdown.clone()) => return,
        };
        let (stream, addr) = match accepted {
            Ok(a) => a,
            Err(e) => {
                // Out of descriptors and similar: pause instead of spinning.
                tracing::warn!(local = %ctx.local, "accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        // Every inbound connection, in handshake or established, holds a slot of the total.
        let Ok(slot) = Arc::clone(&established).try_acquire_owned() else {
            ctx.refuse(addr, Refusal::TooManyConnections, "too many connections");
            continue;
        };
        let permit = Arc::clone(&pending).try_acquire_owned().or_else(|e| {
            if members.contains(&addr.ip()) {
                Arc::clone(&reserved).try_acquire_owned()
            } else {
                Err(e)
            }
        });
        let Ok(permit) = permit else {
            ctx.refuse(
                addr,
                Refusal::TooManyPending,
                "too many handshakes in progress",
            );
            continue;
        };
        let Some(from_address) = PendingFrom::take(&ctx, addr.ip()) else {
            ctx.refuse(
                addr,
                Refusal::TooManyFromAddress,
                "too many handshakes in progress from this address",
            );
            continue;
        };
        let ctx = Arc::clone(&ctx);
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            let _ = stream.set_nodelay(true);
            set_unacked_timeout(&stream, ctx.limits.unacked_timeout);
            let peer = inbound_handshake(&ctx, stream, addr).await;
            drop(from_address);
            drop(permit);
            let Some((peer, stream)) = peer else { return };
            serve_inbound(&ctx, stream, peer, shutdown).await;
            drop(slot);
        });
    }
}

/// One handshake in progress from an address; dropping it releases the count.
struct PendingFrom {
    ctx: Arc<Ctx>,
    ip: IpAddr,
}

impl PendingFrom {
    fn take(ctx: &Arc<Ctx>, ip: IpAddr) -> Option<Self> {
        let mut map = ctx.pending_by_address();
        let n = map.entry(ip).or_insert(0);
        if *n >= ctx.limits.max_pending_per_address.max(1) {
            return None;
        }
        *n += 1;
        drop(map);
        Some(Self {
            ctx: Arc::clone(ctx),
            ip,
        })
    }
}

impl Drop for PendingFrom {
    fn drop(&mut self) {
        let mut map = self.ctx.pending_by_address();
        if let Some(n) = map.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                map.remove(&self.ip);
            }
        }
    }
}

async fn inbound_handshake(
    ctx: &Ctx,
    stream: TcpStream,
    addr: SocketAddr,
) -> Option<(Endpoint, handshake::BoxStream)> {
    let hs = tokio::time::timeout(
        ctx.limits.handshake_timeout,
        handshake::server(&ctx.security, stream),
    )
    .await;
    match hs {
        Ok(Ok(peer)) => Some(peer),
        Ok(Err(e)) => {
            ctx.refuse(addr, e.reason, &e.detail);
            None
        }
        Err(_) => {
            ctx.refuse(addr, Refusal::Timeout, "handshake timed out");
            None
        }
    }
}

async fn serve_inbound(
    ctx: &Ctx,
    stream: handshake::BoxStream,
    peer: Endpoint,
    shutdown: watch::Receiver<bool>,
) {
    let (tx, rx) = mpsc::channel(ctx.limits.outbox_frames.max(1));
    let id = ctx.registry().add(peer, false, tx);
    let end = conn::run(
        stream,
        peer,
        rx,
        ctx.events.clone(),
        ctx.limits.idle_timeout,
        &ctx.stats,
        stopped(shutdown.clone()),
    )
    .await;
    end.log(peer, "inbound");
    if ctx.registry().remove(peer, id) && !*shutdown.borrow() && shutdown.has_changed().is_ok() {
        ctx.emit(NetEvent::Closed { peer }).await;
    }
}

/// Seconds since the Unix epoch (0 if the clock is before it).
fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

/// Raises the expiry alarm (an error log and a counter) while a certificate in use expires
/// within the threshold; checks at start, then every `cert_check_interval`.
async fn expiry_loop(ctx: Arc<Ctx>, tls: Arc<Tls>, shutdown: watch::Receiver<bool>) {
    let threshold = i64::try_from(ctx.limits.cert_expire_alert.as_secs()).unwrap_or(i64::MAX);
    let every = ctx.limits.cert_check_interval.max(Duration::from_secs(1));
    loop {
        for e in tls.expiring(unix_now(), threshold) {
            bump(&ctx.stats.cert_alarms);
            tracing::error!(
                local = %ctx.local,
                certificate = %e.what,
                remaining_days = e.remaining_s / 86_400,
                "ALARM: a certificate in use expires within ssl_cert_expire_alert_threshold \
                 ({} days): renew it and send SIGHUP",
                threshold / 86_400
            );
        }
        tokio::select! {
            () = tokio::time::sleep(every) => {},
            () = stopped(shutdown.clone()) => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Issue 16: the bound on unacknowledged sends reaches the socket (and `None` leaves the
    /// kernel's default).
    #[tokio::test]
    async fn the_unacked_timeout_is_set_on_the_socket() {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let stream = TcpStream::connect(addr).await.expect("connect");
        let (accepted, _) = listener.accept().await.expect("accept");
        set_unacked_timeout(&stream, Some(Duration::from_millis(1_250)));
        set_unacked_timeout(&accepted, None);
        let get = |s: &TcpStream| {
            socket2::SockRef::from(s)
                .tcp_user_timeout()
                .expect("getsockopt")
        };
        assert_eq!(get(&stream), Some(Duration::from_millis(1_250)));
        assert_eq!(get(&accepted), None);
    }
}
