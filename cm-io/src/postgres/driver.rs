//! [`PgDriver`]: instance bookkeeping, managed files, connections, and the process half of the
//! actions (start pending, stop, kill). The replication actions are in `actions.rs`, the status
//! queries in `status.rs`.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cm_core::config::ClusterConfig;
use cm_core::dn::{DbState, StopMode};
use cm_core::params::SyncMode;
use cm_core::{InstanceId, NodeId};
use nix::sys::signal::Signal;
use tokio_postgres::error::SqlState;
use tokio_postgres::{Client, NoTls};

use super::settings::{self, Desired, Endpoint, Layout, Upstream};
use super::{DriverError, credential, owned_file};
use crate::process::{self, OsUser, Supervised};

/// Driver settings that are not per instance.
#[derive(Clone, Debug)]
pub struct PgOptions {
    /// Directory of `postgres`, `pg_rewind`, `pg_basebackup`, `initdb`.
    pub bin_dir: PathBuf,
    /// The OS user that runs PostgreSQL.
    pub os_user: String,
    /// The database user the driver and the standbys connect as (a superuser).
    pub db_user: String,
    /// Connect timeout of the status query (§3: 2 s).
    pub status_connect_timeout: Duration,
    /// How long a start may take before it is reported failed.
    pub start_timeout: Duration,
    /// How long a smart/fast/immediate stop may take.
    pub stop_timeout: Duration,
    /// How long a SIGKILL may take to leave only zombies (or pending kills).
    pub kill_timeout: Duration,
    /// `wait_seconds` of `pg_promote` (§9: 60 s); a `false` after it keeps polling.
    pub promote_wait: Duration,
    /// How long Promote keeps polling after `pg_promote` returned `false`.
    pub promote_timeout: Duration,
    /// How long Lock1 waits for `Prohibit`, and settings for a new session to see them.
    pub effect_timeout: Duration,
    /// `wal_sender_timeout` (§9).
    pub wal_sender_timeout: Duration,
    /// `wal_receiver_timeout` (§9).
    pub wal_receiver_timeout: Duration,
    /// `max_slot_wal_keep_size` in MB (bounds the WAL a slot of a dead member holds).
    pub max_slot_wal_keep_size_mb: u64,
    /// Synchronous replication mode (§9).
    pub sync_mode: SyncMode,
    /// Whether pg_rewind and pg_basebackup fsync what they wrote. Only throwaway test clusters
    /// turn it off.
    pub sync_data: bool,
    /// How long pg_rewind or pg_basebackup may run before it is killed and the Build fails.
    pub tool_timeout: Duration,
}

impl PgOptions {
    /// Options from the cluster config (`[database]` and `[params]`), other values defaulted.
    pub fn from_config(cfg: &ClusterConfig) -> Self {
        let p = &cfg.params;
        Self {
            bin_dir: PathBuf::from(&cfg.database.bin_dir),
            os_user: cfg.database.os_user.clone(),
            db_user: cfg.database.db_user.clone(),
            status_connect_timeout: Duration::from_secs(2),
            start_timeout: p.dn_start_bound(),
            stop_timeout: Duration::from_secs(60),
            kill_timeout: Duration::from_secs(5),
            promote_wait: Duration::from_secs(60),
            promote_timeout: Duration::from_secs(600),
            effect_timeout: Duration::from_secs(10),
            wal_sender_timeout: Duration::from_secs_f64(p.wal_sender_timeout),
            wal_receiver_timeout: Duration::from_secs_f64(p.wal_receiver_timeout),
            max_slot_wal_keep_size_mb: 1024,
            sync_mode: p.dn_sync_mode,
            sync_data: true,
            tool_timeout: Duration::from_secs(3600),
        }
    }
}

/// One local instance: where it lives, its process, and what it was last told.
pub(super) struct Instance {
    pub(super) id: InstanceId,
    pub(super) data_dir: PathBuf,
    pub(super) run_dir: PathBuf,
    pub(super) address: String,
    pub(super) port: u16,
    pub(super) proc: Mutex<Option<Supervised>>,
    pub(super) desired: Mutex<Desired>,
    /// A long action in progress (Promoting, Building), reported as `db_state`.
    pub(super) busy: Mutex<Option<DbState>>,
    /// The status queries' kept session (`status.rs`), so that a status query once a second
    /// does not make PostgreSQL fork a backend each time.
    pub(super) session: Mutex<StatusSession>,
}

/// The status queries' kept session of one instance. A query takes the client out and puts it
/// back only when it succeeded and no stop cleared the slot meanwhile (`generation`): a failed
/// or cancelled query drops its connection, and the next one connects afresh.
#[derive(Default)]
pub(super) struct StatusSession {
    /// Bumped by [`PgDriver::drop_status_session`].
    pub(super) generation: u64,
    pub(super) client: Option<Client>,
}

/// A status session on loan to one query.
pub(super) struct Lease {
    pub(super) client: Client,
    generation: u64,
    /// Taken from the slot (a reused session) rather than freshly connected.
    pub(super) reused: bool,
}

/// The PostgreSQL driver of one node (SPEC.md §9).
pub struct PgDriver {
    pub(super) cfg: Arc<ClusterConfig>,
    pub(super) opts: PgOptions,
    pub(super) user: OsUser,
    pub(super) instances: BTreeMap<InstanceId, Arc<Instance>>,
    /// The node's passfile (`<state_dir>/pgpass`, §16): the password of remote connections.
    pub(super) passfile: PathBuf,
    /// The OS user this agent runs as, mapped to the database user for peer authentication.
    agent_os_user: String,
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> DriverError + '_ {
    move |source| DriverError::Io {
        path: path.display().to_string(),
        source,
    }
}

/// Locks a mutex, ignoring poisoning (the guarded data stays consistent: single assignments).
pub(super) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl PgDriver {
    /// A driver for the instances the config places on `node`. Their run directories
    /// (`<state_dir>/dn_<id>`: managed settings, socket, log) are created and handed to the OS
    /// user; the desired state is restored from a previous run when present.
    pub fn new(
        cfg: Arc<ClusterConfig>,
        node: NodeId,
        opts: PgOptions,
    ) -> Result<Self, DriverError> {
        let user = OsUser::lookup(&opts.os_user)?;
        let node_cfg = cfg
            .node(node)
            .ok_or(DriverError::UnknownPeer(InstanceId(0)))?;
        let passfile = credential::passfile_path(Path::new(&node_cfg.state_dir));
        if !cfg.instances_on(node).is_empty() {
            // A node without databases connects to none.
            credential::check_passfile(&passfile, &opts.db_user, &user)?;
        }
        let euid = nix::unistd::geteuid();
        let agent_os_user = nix::unistd::User::from_uid(euid)
            .ok()
            .flatten()
            .map_or_else(|| euid.to_string(), |u| u.name);
        let mut instances = BTreeMap::new();
        for id in cfg.instances_on(node) {
            let (group, member) = cfg.member(id).ok_or(DriverError::UnknownInstance(id))?;
            let run_dir = Path::new(&node_cfg.state_dir).join(settings::instance_name(id));
            for dir in [run_dir.clone(), run_dir.join("sock")] {
                fs::create_dir_all(&dir).map_err(io_err(&dir))?;
                user.chown(&dir).map_err(io_err(&dir))?;
                set_mode(&dir, 0o700)?;
            }
            let members: Vec<InstanceId> = group.members.iter().map(|m| m.instance).collect();
            let desired =
                load_desired(&run_dir).unwrap_or_else(|| default_desired(&opts, &members));
            let data_dir = PathBuf::from(&member.data_dir);
            tidy_data_dir(id, &data_dir);
            instances.insert(
                id,
                Arc::new(Instance {
                    id,
                    data_dir,
                    run_dir,
                    address: node_cfg.address.clone(),
                    port: member.port,
                    proc: Mutex::new(None),
                    desired: Mutex::new(desired),
                    busy: Mutex::new(None),
                    session: Mutex::new(StatusSession::default()),
                }),
            );
        }
        Ok(Self {
            cfg,
            opts,
            user,
            instances,
            passfile,
            agent_os_user,
        })
    }

    /// The driver's options.
    pub fn options(&self) -> &PgOptions {
        &self.opts
    }

    /// The OS user PostgreSQL runs as (owner of everything the agent writes for it).
    pub fn os_user(&self) -> &OsUser {
        &self.user
    }

    /// The instances this driver manages.
    pub fn instances(&self) -> Vec<InstanceId> {
        self.instances.keys().copied().collect()
    }

    /// The unix socket directory of a local instance (for clients on this host).
    pub fn socket_dir(&self, id: InstanceId) -> Result<PathBuf, DriverError> {
        Ok(self.inst(id)?.run_dir.join("sock"))
    }

    pub(super) fn inst(&self, id: InstanceId) -> Result<Arc<Instance>, DriverError> {
        self.instances
            .get(&id)
            .cloned()
            .ok_or(DriverError::UnknownInstance(id))
    }

    /// Address and port of any member of the cluster.
    pub(super) fn endpoint(&self, id: InstanceId) -> Result<Endpoint, DriverError> {
        let (_, m) = self.cfg.member(id).ok_or(DriverError::UnknownPeer(id))?;
        let node = self.cfg.node(m.node).ok_or(DriverError::UnknownPeer(id))?;
        Ok(Endpoint {
            instance: id,
            address: node.address.clone(),
            port: m.port,
        })
    }

    /// The other members of an instance's group.
    pub(super) fn peers(&self, id: InstanceId) -> Vec<Endpoint> {
        let Some((group, _)) = self.cfg.member(id) else {
            return Vec::new();
        };
        group
            .members
            .iter()
            .filter(|m| m.instance != id)
            .filter_map(|m| self.endpoint(m.instance).ok())
            .collect()
    }

    /// The live postmaster of an instance: ours, or adopted from `postmaster.pid` (§1).
    pub(super) fn running(&self, inst: &Instance) -> Option<Supervised> {
        let mut proc = lock(&inst.proc);
        if let Some(p) = proc.as_ref().filter(|p| p.is_alive()) {
            return Some(p.clone());
        }
        let adopted = process::adopt_postmaster(&inst.data_dir).map(|(s, _)| s);
        proc.clone_from(&adopted);
        adopted
    }

    pub(super) fn require_running(&self, inst: &Instance) -> Result<Supervised, DriverError> {
        self.running(inst).ok_or(DriverError::NotRunning(inst.id))
    }

    /// Writes the managed settings and hba files from the desired state, persisting it too.
    pub(super) fn write_managed(&self, inst: &Instance) -> Result<(), DriverError> {
        let desired = lock(&inst.desired).clone();
        let upstream = match desired.upstream {
            Upstream::Follow { primary, .. } => Some(self.endpoint(primary)?),
            Upstream::None | Upstream::Lock1 => None,
        };
        let layout = Layout {
            instance: inst.id,
            data_dir: &inst.data_dir,
            run_dir: &inst.run_dir,
            listen_address: &inst.address,
            port: inst.port,
            db_user: &self.opts.db_user,
            passfile: &self.passfile,
            wal_sender_timeout: self.opts.wal_sender_timeout,
            wal_receiver_timeout: self.opts.wal_receiver_timeout,
            max_slot_wal_keep_size_mb: self.opts.max_slot_wal_keep_size_mb,
        };
        let conf = settings::render_config(&layout, &desired, upstream.as_ref());
        self.write_file(&inst.run_dir.join("postgresql.conf"), &conf)?;
        let mut addresses = vec![inst.address.clone()];
        addresses.extend(self.peers(inst.id).into_iter().map(|e| e.address));
        // The data directory belongs to the database OS user: read without following a link.
        let user_hba_path = inst.data_dir.join("pg_hba.conf");
        let user_hba = owned_file::read_regular(&user_hba_path).map_err(io_err(&user_hba_path))?;
        let hba = settings::render_hba(&self.opts.db_user, &addresses, &user_hba);
        self.write_file(&inst.run_dir.join("pg_hba.conf"), &hba)?;
        let user_ident_path = inst.data_dir.join("pg_ident.conf");
        let user_ident =
            owned_file::read_regular(&user_ident_path).map_err(io_err(&user_ident_path))?;
        let ident = settings::render_ident(
            &self.agent_os_user,
            &self.user.name,
            &self.opts.db_user,
            &user_ident,
        );
        self.write_file(&inst.run_dir.join("pg_ident.conf"), &ident)?;
        let json = serde_json::to_string_pretty(&desired).map_err(|e| DriverError::Io {
            path: "managed.json".into(),
            source: std::io::Error::other(e),
        })?;
        self.write_file(&inst.run_dir.join("managed.json"), &json)
    }

    /// Writes a file atomically (fresh temp + fsync + rename), mode 0600, owned by the OS user,
    /// following no symlink the OS user may have planted ([`owned_file::write_owned`]).
    pub(super) fn write_file(&self, path: &Path, text: &str) -> Result<(), DriverError> {
        owned_file::write_owned(path, text, &self.user).map_err(io_err(path))
    }

    /// Removes managed keys from `postgresql.auto.conf` (§9: at every start, after every Build).
    pub(super) fn strip_auto_conf(&self, inst: &Instance) -> Result<(), DriverError> {
        let path = inst.data_dir.join("postgresql.auto.conf");
        let text = owned_file::read_regular(&path).map_err(io_err(&path))?;
        if let Some(stripped) = settings::strip_auto_conf(&text) {
            tracing::info!(instance = %inst.id, "removed managed keys from postgresql.auto.conf");
            self.write_file(&path, &stripped)?;
        }
        Ok(())
    }

    /// Signals the postmaster to re-read its configuration.
    pub(super) fn reload(&self, inst: &Instance) -> Result<(), DriverError> {
        let pm = self.require_running(inst)?;
        pm.signal(Signal::SIGHUP)?;
        Ok(())
    }

    /// A fresh connection to a local instance over its unix socket, the whole handshake bounded
    /// by `timeout` (a SIGSTOPped postmaster accepts the TCP/unix connection in the kernel and
    /// then never answers, so the socket-level connect timeout alone is not enough).
    pub(super) async fn connect(
        &self,
        inst: &Instance,
        timeout: Duration,
    ) -> Result<Client, ConnectError> {
        let mut cfg = tokio_postgres::Config::new();
        cfg.host_path(inst.run_dir.join("sock"))
            .port(inst.port)
            .user(&self.opts.db_user)
            .dbname("postgres")
            .application_name("cm_agent")
            .connect_timeout(timeout);
        connect_with(cfg, timeout).await
    }

    /// A connection to any member over TCP (the source of a Build, an upstream's slots), with
    /// the cluster's password from the passfile (§16).
    pub(super) async fn connect_remote(
        &self,
        peer: &Endpoint,
        timeout: Duration,
    ) -> Result<Client, ConnectError> {
        let password = credential::read_password(&self.passfile, &self.opts.db_user)
            .map_err(ConnectError::Passfile)?;
        let mut cfg = tokio_postgres::Config::new();
        cfg.host(&peer.address)
            .port(peer.port)
            .user(&self.opts.db_user)
            .password(password)
            .dbname("postgres")
            .application_name("cm_agent")
            .connect_timeout(timeout);
        connect_with(cfg, timeout).await
    }

    pub(super) async fn connect_or_err(&self, inst: &Instance) -> Result<Client, DriverError> {
        self.connect(inst, self.opts.status_connect_timeout)
            .await
            .map_err(|e| e.into_driver(inst.id))
    }

    /// The kept status session of `inst` if it is still open, else a fresh connection (with
    /// the status connect timeout). Hand it back with [`PgDriver::give_back`] after a query
    /// that succeeded; dropping the lease closes the connection.
    pub(super) async fn status_lease(&self, inst: &Instance) -> Result<Lease, DriverError> {
        let (kept, generation) = {
            let mut s = lock(&inst.session);
            (s.client.take(), s.generation)
        };
        if let Some(client) = kept.filter(|c| !c.is_closed()) {
            return Ok(Lease {
                client,
                generation,
                reused: true,
            });
        }
        let client = self.connect_or_err(inst).await?;
        Ok(Lease {
            client,
            generation,
            reused: false,
        })
    }

    /// Keeps a lease's session for the next status query, unless the slot was cleared since
    /// it was taken (a stop) or another session is already kept.
    pub(super) fn give_back(&self, inst: &Instance, lease: Lease) {
        let mut s = lock(&inst.session);
        if s.generation == lease.generation && s.client.is_none() && !lease.client.is_closed() {
            s.client = Some(lease.client);
        }
    }

    /// Closes the kept status session (a smart shutdown waits for every session to end) and
    /// keeps any query in flight from putting its session back.
    pub(super) fn drop_status_session(&self, inst: &Instance) {
        let mut s = lock(&inst.session);
        s.generation += 1;
        s.client = None;
    }

    /// StartPending: standby.signal, empty upstream, managed files, stale lock removed, then
    /// `postgres` as our direct child in its own group; returns once it accepts connections.
    pub(super) async fn start_pending(&self, inst: &Instance) -> Result<(), DriverError> {
        if self.running(inst).is_some() {
            return Err(DriverError::AlreadyRunning(inst.id));
        }
        recover_data_dir(inst.id, &inst.data_dir)?;
        refuse_half_rewound(inst.id, &inst.data_dir)?;
        {
            let mut d = lock(&inst.desired);
            d.upstream = match d.rebuilt_from.take() {
                Some(primary) => Upstream::Follow {
                    primary,
                    locked: false,
                },
                None => Upstream::None,
            };
            d.pending = true;
        }
        self.write_managed(inst)?;
        self.strip_auto_conf(inst)?;
        self.write_file(&inst.data_dir.join("standby.signal"), "")?;
        process::remove_stale_pid_file(&inst.data_dir).map_err(io_err(&inst.data_dir))?;
        let log_path = inst.run_dir.join("postgres.log");
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .map_err(io_err(&log_path))?;
        let log2 = log.try_clone().map_err(io_err(&log_path))?;
        let mut cmd = Command::new(self.opts.bin_dir.join("postgres"));
        cmd.arg("-D")
            .arg(&inst.data_dir)
            .arg("-c")
            .arg(format!(
                "config_file={}",
                inst.run_dir.join("postgresql.conf").display()
            ))
            .current_dir(&inst.data_dir)
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log2);
        let child = Supervised::spawn(cmd, Some(&self.user))?;
        tracing::info!(instance = %inst.id, pid = child.pid(), "started postgres pending");
        *lock(&inst.proc) = Some(child.clone());
        self.wait_accepting(inst, &child).await?;
        super::actions::remove_old_copy(inst.id, &inst.data_dir);
        self.ensure_local_slots(inst).await;
        Ok(())
    }

    async fn wait_accepting(&self, inst: &Instance, child: &Supervised) -> Result<(), DriverError> {
        let deadline = tokio::time::Instant::now() + self.opts.start_timeout;
        loop {
            if !child.is_alive() {
                return Err(DriverError::StartFailed {
                    instance: inst.id,
                    log_tail: log_tail(&inst.run_dir.join("postgres.log")),
                });
            }
            if self.connect(inst, Duration::from_secs(1)).await.is_ok() {
                return Ok(());
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(DriverError::Timeout {
                    instance: inst.id,
                    what: "the start to accept connections".into(),
                    after: self.opts.start_timeout,
                });
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Stop with a mode (smart = SIGTERM, fast = SIGINT, immediate = SIGQUIT) and wait for the
    /// postmaster to exit; it is never escalated here (the agent decides to Kill).
    pub(super) async fn stop(&self, inst: &Instance, mode: StopMode) -> Result<(), DriverError> {
        self.drop_status_session(inst);
        let Some(pm) = self.running(inst) else {
            return Ok(());
        };
        let sig = match mode {
            StopMode::Smart => Signal::SIGTERM,
            StopMode::Fast => Signal::SIGINT,
            StopMode::Immediate => Signal::SIGQUIT,
        };
        pm.signal(sig)?;
        let timeout = self.opts.stop_timeout;
        let waiter = pm.clone();
        let exited = tokio::task::spawn_blocking(move || waiter.wait_exit(timeout))
            .await
            .unwrap_or(false);
        if !exited {
            return Err(DriverError::Timeout {
                instance: inst.id,
                what: format!("a {} stop", mode.as_str()),
                after: timeout,
            });
        }
        Ok(())
    }

    /// Kill (§3): SIGKILL to the whole group, confirmed, then the stale lock file removed.
    pub(super) async fn kill(&self, inst: &Instance) -> Result<(), DriverError> {
        // A dead postmaster's group can still hold live backends (they exit on their own only
        // when they notice), so the last known group is killed too.
        self.drop_status_session(inst);
        let Some(pm) = self.running(inst).or_else(|| lock(&inst.proc).clone()) else {
            process::remove_stale_pid_file(&inst.data_dir).map_err(io_err(&inst.data_dir))?;
            return Ok(());
        };
        let timeout = self.opts.kill_timeout;
        tokio::task::spawn_blocking(move || pm.kill_group(timeout))
            .await
            .map_err(|e| DriverError::Io {
                path: "kill".into(),
                source: std::io::Error::other(e),
            })??;
        process::remove_stale_pid_file(&inst.data_dir).map_err(io_err(&inst.data_dir))?;
        Ok(())
    }

    /// Kills every managed instance at once, without a runtime (test guards, agent shutdown).
    pub fn kill_all_blocking(&self) {
        for inst in self.instances.values() {
            if let Some(pm) = self.running(inst).or_else(|| lock(&inst.proc).clone()) {
                let _ = pm.kill_group(self.opts.kill_timeout);
            }
            let _ = process::remove_stale_pid_file(&inst.data_dir);
        }
    }

    /// Runs a PostgreSQL tool as the OS user; its stderr is returned in the error. It is killed
    /// (with everything it started) after `tool_timeout`: a source frozen mid-copy would
    /// otherwise hang the Build forever.
    pub(super) async fn run_tool(&self, tool: &str, args: Vec<String>) -> Result<(), DriverError> {
        let mut cmd = Command::new(self.opts.bin_dir.join(tool));
        cmd.args(&args).stdin(Stdio::null()).current_dir("/");
        self.user.apply(&mut cmd);
        run_bounded(cmd, tool, self.opts.tool_timeout).await
    }
}

/// Runs `cmd` in its own process group; on success `Ok`, else its exit status and the end of its
/// stderr. After `limit` the whole group is SIGKILLed and the error says so.
pub(super) async fn run_bounded(
    mut cmd: Command,
    tool: &str,
    limit: Duration,
) -> Result<(), DriverError> {
    use std::os::unix::process::CommandExt as _;
    cmd.process_group(0)
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let mut cmd = tokio::process::Command::from(cmd);
    cmd.kill_on_drop(true);
    let child = cmd.spawn().map_err(|source| DriverError::Io {
        path: tool.to_owned(),
        source,
    })?;
    let pid = child.id();
    let out = match tokio::time::timeout(limit, child.wait_with_output()).await {
        Ok(out) => out.map_err(|source| DriverError::Io {
            path: tool.to_owned(),
            source,
        })?,
        Err(_) => {
            // pg_basebackup forks its WAL streamer: the group goes, not only the tool.
            if let Some(pid) = pid.and_then(|p| i32::try_from(p).ok()) {
                let _ = nix::sys::signal::killpg(nix::unistd::Pid::from_raw(pid), Signal::SIGKILL);
            }
            return Err(DriverError::Tool {
                tool: tool.to_owned(),
                status: format!("killed after {} s without finishing", limit.as_secs_f64()),
                stderr: "its source stopped answering, or the copy is larger than the time limit"
                    .into(),
            });
        }
    };
    if out.status.success() {
        return Ok(());
    }
    let stderr = String::from_utf8_lossy(&out.stderr);
    let tail: Vec<&str> = stderr.lines().rev().take(5).collect();
    Err(DriverError::Tool {
        tool: tool.to_owned(),
        status: out.status.to_string(),
        stderr: tail.into_iter().rev().collect::<Vec<_>>().join(" | "),
    })
}

/// A connection attempt's failure, keeping "too many clients" apart (§6).
#[derive(Debug)]
pub(super) enum ConnectError {
    TimedOut,
    TooManyClients,
    Other(tokio_postgres::Error),
    /// The password could not be read (a remote connection only).
    Passfile(DriverError),
}

impl ConnectError {
    pub(super) fn into_driver(self, instance: InstanceId) -> DriverError {
        match self {
            Self::Other(source) => DriverError::Sql { instance, source },
            Self::TimedOut => DriverError::Timeout {
                instance,
                what: "a connection".into(),
                after: Duration::ZERO,
            },
            Self::TooManyClients => DriverError::BadStatus {
                instance,
                what: "too many clients".into(),
            },
            Self::Passfile(e) => e,
        }
    }
}

async fn connect_with(
    cfg: tokio_postgres::Config,
    timeout: Duration,
) -> Result<Client, ConnectError> {
    match tokio::time::timeout(timeout, cfg.connect(NoTls)).await {
        Err(_) => Err(ConnectError::TimedOut),
        Ok(Err(e)) if e.code() == Some(&SqlState::TOO_MANY_CONNECTIONS) => {
            Err(ConnectError::TooManyClients)
        }
        Ok(Err(e)) => Err(ConnectError::Other(e)),
        Ok(Ok((client, conn))) => {
            tokio::spawn(async move {
                let _ = conn.await;
            });
            Ok(client)
        }
    }
}

pub(super) fn set_mode(path: &Path, mode: u32) -> Result<(), DriverError> {
    use std::os::unix::fs::PermissionsExt as _;
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).map_err(io_err(path))
}

fn load_desired(run_dir: &Path) -> Option<Desired> {
    serde_json::from_str(&fs::read_to_string(run_dir.join("managed.json")).ok()?).ok()
}

/// Before any SetSyncStandbys: `ANY (n − q)` of all members in quorum mode (§9).
fn default_desired(opts: &PgOptions, members: &[InstanceId]) -> Desired {
    let n = members.len() as u32;
    let q = n.div_ceil(2);
    let sync_k = match opts.sync_mode {
        SyncMode::Quorum => n - q,
        SyncMode::Off => 0,
    };
    Desired {
        upstream: Upstream::None,
        pending: true,
        sync_k,
        sync_members: members.to_vec(),
        read_only: false,
        rebuilt_from: None,
    }
}

/// The last lines of a log file, for error messages.
pub(super) fn log_tail(path: &Path) -> String {
    let text = fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().rev().take(8).collect();
    lines.into_iter().rev().collect::<Vec<_>>().join(" | ")
}

/// Puts back a data directory an interrupted full copy left missing (see `swap.rs`).
fn recover_data_dir(id: InstanceId, data: &Path) -> Result<(), DriverError> {
    match super::swap::recover(data)? {
        super::swap::Recovered::Nothing => {}
        done => {
            tracing::warn!(instance = %id, ?done, "recovered the data directory of an interrupted full copy")
        }
    }
    Ok(())
}

/// A data directory a pg_rewind left half-rewound is never started (see `swap.rs`).
fn refuse_half_rewound(id: InstanceId, data: &Path) -> Result<(), DriverError> {
    match super::swap::half_rewound(data) {
        Some(marker) => Err(DriverError::HalfRewound {
            instance: id,
            data: data.display().to_string(),
            marker: marker.display().to_string(),
        }),
        None => Ok(()),
    }
}

/// At driver start: an interrupted swap is recovered, and the disk probe of an old deployment
/// inside the data directory removed. Failures are only logged here (the start repeats the
/// recovery and reports its error).
fn tidy_data_dir(id: InstanceId, data: &Path) {
    if let Err(e) = recover_data_dir(id, data) {
        tracing::warn!(instance = %id, error = %e, "could not recover the data directory");
    }
    match super::swap::remove_legacy_probe(data) {
        Ok(true) => {
            tracing::info!(instance = %id, "removed the old disk probe from the data directory")
        }
        Ok(false) => {}
        Err(e) => tracing::warn!(instance = %id, error = %e, "could not remove the old disk probe"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Review finding J of issue 18: a tool that never ends (a source frozen mid-copy) is killed
    /// at its limit, its process group with it, and the error says so.
    #[tokio::test]
    async fn a_tool_that_never_ends_is_killed_at_its_limit() {
        let tmp = tempfile::tempdir().unwrap();
        let pidfile = tmp.path().join("grandchild.pid");
        let mut cmd = Command::new("sh");
        cmd.arg("-c")
            .arg(format!("sleep 600 & echo $! > {}; wait", pidfile.display()));
        let started = std::time::Instant::now();
        let err = run_bounded(cmd, "pg_basebackup", Duration::from_millis(300))
            .await
            .expect_err("killed")
            .to_string();
        assert!(started.elapsed() < Duration::from_secs(10), "bounded");
        assert!(
            err.contains("pg_basebackup") && err.contains("killed after 0.3 s"),
            "{err}"
        );
        let pid: i32 = fs::read_to_string(&pidfile)
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        let gone = (0..100).any(|_| {
            std::thread::sleep(Duration::from_millis(20));
            let stat = fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            stat.is_empty() || stat.contains(") Z ")
        });
        assert!(gone, "the forked child was killed with the tool");
    }

    #[test]
    fn a_half_rewound_data_directory_is_refused_saying_what_and_where() {
        let tmp = tempfile::tempdir().unwrap();
        let data = tmp.path().join("dn1");
        fs::create_dir_all(&data).unwrap();
        refuse_half_rewound(InstanceId(6001), &data).expect("no marker: starts");
        super::super::swap::mark_rewinding(&data).unwrap();
        let refused = refuse_half_rewound(InstanceId(6001), &data).expect_err("refused");
        let err = refused.to_string();
        // The agent is told it as its own kind, with the same message (it reports a failed
        // Build, so the CMS builds the member again).
        assert_eq!(
            cm_core::dn::ActionError::from(refused),
            cm_core::dn::ActionError::HalfRewound(err.clone())
        );
        for part in [
            "6001",
            "half-rewound",
            &data.display().to_string(),
            &tmp.path().join("dn1.cm_rewinding").display().to_string(),
            "copies it in full",
        ] {
            assert!(err.contains(part), "{part:?} missing: {err}");
        }
        super::super::swap::clear_rewinding(&data).unwrap();
        refuse_half_rewound(InstanceId(6001), &data).expect("cleared: starts");
    }

    #[tokio::test]
    async fn a_failing_tool_reports_its_status_and_stderr() {
        let mut cmd = Command::new("sh");
        cmd.arg("-c").arg("echo 'could not connect' >&2; exit 3");
        let err = run_bounded(cmd, "pg_rewind", Duration::from_secs(30))
            .await
            .expect_err("fails")
            .to_string();
        assert!(
            err.contains("could not connect") && err.contains('3'),
            "{err}"
        );
        run_bounded(Command::new("true"), "true", Duration::from_secs(30))
            .await
            .expect("succeeds");
    }
}
