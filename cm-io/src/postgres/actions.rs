//! The replication actions of §9 (Lock1, Lock2/Unlock/Notify, Promote, Build, SetReadOnly,
//! SetSyncStandbys), replication slots, and the [`DatabaseDriver`] implementation.

use std::fs;
use std::path::Path;
use std::time::Duration;

use cm_core::InstanceId;
use cm_core::dn::{DbState, DnAction, DnStatus, LockState, ProcState, StopMode};
use tokio_postgres::Client;

use super::credential;
use super::driver::{Instance, lock, set_mode};
use super::settings::{Endpoint, Upstream, instance_name, sync_standby_names};
use super::swap::{self, remove_tree, sibling};
use super::{DatabaseDriver, DriverError, PgDriver, PhonyDeadProbe, Streaming};

/// Polling period while waiting for an effect.
const POLL: Duration = Duration::from_millis(50);

const CREATE_SLOT_SQL: &str = "SELECT pg_create_physical_replication_slot($1, false) \
    WHERE NOT EXISTS (SELECT 1 FROM pg_replication_slots WHERE slot_name = $1)";

/// A member's slot the primary invalidated (`wal_status = 'lost'`: the member was away longer
/// than `max_slot_wal_keep_size` allows) refuses every stream for good; it is dropped so that
/// [`CREATE_SLOT_SQL`] makes a fresh one (issue 18).
const DROP_LOST_SLOT_SQL: &str = "SELECT pg_drop_replication_slot(slot_name) \
    FROM pg_replication_slots WHERE slot_name = $1 AND wal_status = 'lost' AND NOT active";

/// What a full copy of the source writes, about: its databases and its WAL (superuser or
/// `pg_monitor` for `pg_ls_waldir`).
const SOURCE_SIZE_SQL: &str = "SELECT ((SELECT coalesce(sum(pg_database_size(oid)), 0) FROM pg_database) \
    + (SELECT coalesce(sum(size), 0) FROM pg_ls_waldir()))::bigint";

const DROP_STALE_SLOTS_SQL: &str = "SELECT pg_drop_replication_slot(slot_name) \
    FROM pg_replication_slots WHERE slot_type = 'physical' AND NOT active \
    AND slot_name LIKE 'dn\\_%' AND slot_name <> ALL($1)";

impl PgDriver {
    async fn in_recovery(&self, inst: &Instance) -> Result<bool, DriverError> {
        let client = self.connect_or_err(inst).await?;
        let row = client
            .query_one("SELECT pg_is_in_recovery()", &[])
            .await
            .map_err(|source| DriverError::Sql {
                instance: inst.id,
                source,
            })?;
        Ok(row.get(0))
    }

    async fn require_standby(&self, inst: &Instance, what: &str) -> Result<(), DriverError> {
        self.require_running(inst)?;
        if self.in_recovery(inst).await? {
            Ok(())
        } else {
            Err(DriverError::WrongRole {
                instance: inst.id,
                what: format!("{what} applies to a standby, but it is a primary"),
            })
        }
    }

    /// Polls `check` until it yields `Some`, or the effect timeout passes.
    async fn wait_for<T, F, Fut>(
        &self,
        inst: &Instance,
        what: &str,
        mut check: F,
    ) -> Result<T, DriverError>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Option<T>>,
    {
        let deadline = tokio::time::Instant::now() + self.opts.effect_timeout;
        loop {
            if let Some(v) = check().await {
                return Ok(v);
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(DriverError::Timeout {
                    instance: inst.id,
                    what: what.to_owned(),
                    after: self.opts.effect_timeout,
                });
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// Waits until a *new* session sees `name = expected` (a reload reaches running sessions
    /// only at their next command; §9 asks for `SHOW` in a new session).
    async fn wait_setting(
        &self,
        inst: &Instance,
        name: &str,
        expected: &str,
    ) -> Result<(), DriverError> {
        self.wait_for(inst, &format!("{name} = '{expected}'"), || async {
            let client = self
                .connect(inst, self.opts.status_connect_timeout)
                .await
                .ok()?;
            let row = client
                .query_one("SELECT current_setting($1)", &[&name])
                .await
                .ok()?;
            (row.get::<_, String>(0) == expected).then_some(())
        })
        .await
    }

    /// Lock1: empty upstream + reload; done once the status query says `Prohibit`.
    async fn lock1(&self, inst: &Instance) -> Result<(), DriverError> {
        self.require_standby(inst, "Lock1").await?;
        lock(&inst.desired).upstream = Upstream::Lock1;
        self.write_managed(inst)?;
        self.reload(inst)?;
        self.wait_for(inst, "Prohibit", || async {
            let st = self.query_status(inst).await.ok()?;
            (st.lock == LockState::Prohibit).then_some(())
        })
        .await
    }

    /// Lock2 / Unlock / Notify: `primary_conninfo` at `primary` + reload. Naming the instance
    /// itself (a promoted member getting Unlock) just clears its lock.
    async fn follow(
        &self,
        inst: &Instance,
        primary: InstanceId,
        locked: bool,
    ) -> Result<(), DriverError> {
        if primary == inst.id {
            {
                let mut d = lock(&inst.desired);
                d.upstream = Upstream::None;
                d.pending = false;
            }
            self.write_managed(inst)?;
            if self.running(inst).is_some() {
                self.reload(inst)?;
            }
            return Ok(());
        }
        let upstream = self.endpoint(primary)?;
        self.require_standby(inst, "following a primary").await?;
        self.ensure_slot_on(&upstream, inst.id).await;
        {
            let mut d = lock(&inst.desired);
            d.upstream = Upstream::Follow { primary, locked };
            d.pending = false;
        }
        self.write_managed(inst)?;
        self.reload(inst)
    }

    /// Promote{term}: the term is already durable (agent). Make sure the synchronous standby
    /// names are in effect, then `pg_promote(wait => true)`; a `false` keeps us polling.
    async fn promote(&self, inst: &Instance) -> Result<(), DriverError> {
        self.require_running(inst)?;
        if !self.in_recovery(inst).await? {
            return Ok(());
        }
        let expected = {
            let mut d = lock(&inst.desired);
            d.upstream = Upstream::None;
            d.pending = false;
            sync_standby_names(d.sync_k, &d.sync_members)
        };
        self.write_managed(inst)?;
        self.reload(inst)?;
        self.wait_setting(inst, "synchronous_standby_names", &expected)
            .await?;
        let client = self.connect_or_err(inst).await?;
        let wait_s = self.opts.promote_wait.as_secs().clamp(1, i32::MAX as u64) as i32;
        let done: bool = client
            .query_one("SELECT pg_promote(true, $1)", &[&wait_s])
            .await
            .map_err(|source| DriverError::Sql {
                instance: inst.id,
                source,
            })?
            .get(0);
        if !done {
            tracing::warn!(instance = %inst.id, "pg_promote returned false; still polling");
            let deadline = tokio::time::Instant::now() + self.opts.promote_timeout;
            while self.in_recovery(inst).await.unwrap_or(true) {
                if tokio::time::Instant::now() >= deadline {
                    return Err(DriverError::Timeout {
                        instance: inst.id,
                        what: "promotion".into(),
                        after: self.opts.promote_timeout,
                    });
                }
                tokio::time::sleep(POLL).await;
            }
        }
        self.ensure_local_slots(inst).await;
        Ok(())
    }

    /// Build: a CHECKPOINT on the source (so its control file shows the new timeline), stop,
    /// `pg_rewind` from the source, else (or at once when `full`) `pg_basebackup`
    /// ([`base_backup`]); then the managed settings again. Leaves the instance stopped — but a
    /// source that cannot be reached fails the Build before the instance is touched.
    async fn build(
        &self,
        inst: &Instance,
        source: InstanceId,
        full: bool,
    ) -> Result<(), DriverError> {
        refuse_rewind_of_half_rewound(inst.id, &inst.data_dir, full)?;
        let src = self.endpoint(source)?;
        // The source first: a Build from a source that cannot be reached or cannot checkpoint
        // fails before it stops anything, so a running standby keeps running (and serving
        // reads) instead of being left stopped by a Build that could never start.
        let client = self
            .connect_remote(&src, self.opts.status_connect_timeout)
            .await
            .map_err(|e| e.into_driver(source))?;
        client
            .batch_execute("CHECKPOINT")
            .await
            .map_err(|source_err| DriverError::Sql {
                instance: source,
                source: source_err,
            })?;
        if let Err(e) = create_slot(&client, &instance_name(inst.id)).await {
            tracing::warn!(instance = %inst.id, %source, error = %super::pg_error(&e), "slot not created on the build source");
        }
        drop(client);
        if self.running(inst).is_some() && self.stop(inst, StopMode::Fast).await.is_err() {
            self.kill(inst).await?;
        }
        self.kill(inst).await?;
        self.write_managed(inst)?;
        // A root-owned probe of an old deployment makes pg_rewind fail (issue 18).
        swap::remove_legacy_probe(&inst.data_dir)?;
        // A single-user crash recovery (pg_rewind runs one) refuses standby mode.
        for f in ["standby.signal", "recovery.signal"] {
            let _ = fs::remove_file(inst.data_dir.join(f));
        }
        let conn = format!(
            "host={} port={} user={} dbname=postgres passfile={} {TOOL_CONNINFO}",
            src.address,
            src.port,
            self.opts.db_user,
            credential::conninfo_value(&self.passfile.display().to_string())
        );
        let half_rewound = swap::half_rewound(&inst.data_dir);
        let mut rewind_error = full_copy_reason(
            full,
            inst.data_dir.join("PG_VERSION").exists(),
            half_rewound.is_some(),
        )
        .map(String::from);
        if rewind_error.is_none() {
            // Marked before pg_rewind writes anything; cleared once the directory is whole.
            swap::mark_rewinding(&inst.data_dir)?;
            let args = vec![
                format!("--target-pgdata={}", inst.data_dir.display()),
                format!("--source-server={conn}"),
                format!(
                    "--config-file={}",
                    inst.run_dir.join("postgresql.conf").display()
                ),
            ];
            match self.run_tool("pg_rewind", args).await {
                Ok(()) => {
                    swap::clear_rewinding(&inst.data_dir)?;
                    tracing::info!(instance = %inst.id, %source, "rebuilt by pg_rewind");
                }
                Err(e) => {
                    tracing::warn!(instance = %inst.id, error = %e, "pg_rewind failed; full copy");
                    rewind_error = Some(e.to_string());
                }
            }
        }
        if let Some(why) = rewind_error {
            self.base_backup(inst, &src)
                .await
                .map_err(|e| DriverError::BuildFailed {
                    instance: inst.id,
                    half_rewound: swap::half_rewound(&inst.data_dir).is_some(),
                    reason: match swap::half_rewound(&inst.data_dir) {
                        Some(marker) => format!(
                            "{e} (full copy because {why}); the data directory {} is half-rewound (marker {}): it will not start, and the next Build copies it in full",
                            inst.data_dir.display(),
                            marker.display()
                        ),
                        None => format!("{e} (full copy because {why})"),
                    },
                })?;
            swap::clear_rewinding(&inst.data_dir)?;
            tracing::info!(instance = %inst.id, %source, because = %why, "rebuilt by pg_basebackup");
        }
        lock(&inst.desired).rebuilt_from = Some(source);
        self.strip_auto_conf(inst)?;
        self.write_managed(inst)
    }

    /// The full copy of a Build never leaves the member worse than it found it (issue 18,
    /// defect 2): `pg_basebackup` writes into a fresh directory beside the data directory
    /// (same filesystem), which is swapped in only once the copy succeeded; the old data moves
    /// to `<data>.cm_old` and stays until the new copy has started as a standby
    /// ([`remove_old_copy`], at the next successful start); the swap survives a crash
    /// ([`swap::recover`]) and never deletes the current data. A failed copy leaves the data
    /// directory as it was and returns pg_basebackup's own message. Only a data directory that
    /// is itself a mount point (nothing beside it is on its filesystem) is emptied in place.
    async fn base_backup(&self, inst: &Instance, src: &Endpoint) -> Result<(), DriverError> {
        let data = &inst.data_dir;
        if is_mount_point(data) {
            tracing::warn!(instance = %inst.id, "data directory is a mount point: full copy in place");
            self.prepare_empty(data)?;
            return self.run_basebackup(data, src).await;
        }
        let fresh = sibling(data, "cm_build");
        remove_tree(&fresh)?;
        self.check_copy_space(inst, &fresh, src).await?;
        self.prepare_empty(&fresh)?;
        if let Err(e) = self.run_basebackup(&fresh, src).await {
            let _ = remove_tree(&fresh);
            return Err(e);
        }
        swap::swap_in(data)
    }

    /// A full copy beside the data directory needs room for a second copy of the cluster: the
    /// source's databases and WAL, with a margin ([`copy_space_problem`]). Checked before
    /// anything is written; the data directory is not touched either way. When the source's
    /// size cannot be read the copy goes ahead (pg_basebackup's own error reports a full disk).
    async fn check_copy_space(
        &self,
        inst: &Instance,
        fresh: &Path,
        src: &Endpoint,
    ) -> Result<(), DriverError> {
        let need = match self
            .connect_remote(src, self.opts.status_connect_timeout)
            .await
        {
            Ok(client) => match client.query_one(SOURCE_SIZE_SQL, &[]).await {
                Ok(row) => u64::try_from(row.get::<_, i64>(0)).unwrap_or(0),
                Err(e) => {
                    tracing::warn!(instance = %inst.id, error = %super::pg_error(&e), "the source's size is unknown: free space not checked");
                    return Ok(());
                }
            },
            Err(e) => {
                let error = e.into_driver(src.instance);
                tracing::warn!(instance = %inst.id, %error, "the source's size is unknown: free space not checked");
                return Ok(());
            }
        };
        let parent = fresh.parent().unwrap_or_else(|| Path::new("/"));
        let st = nix::sys::statvfs::statvfs(parent).map_err(|e| DriverError::Io {
            path: parent.display().to_string(),
            source: std::io::Error::from(e),
        })?;
        let free = st.blocks_available().saturating_mul(st.fragment_size());
        match copy_space_problem(need, free, fresh) {
            Some(reason) => Err(DriverError::BuildFailed {
                instance: inst.id,
                reason,
                half_rewound: false,
            }),
            None => Ok(()),
        }
    }

    /// Creates `dir` (emptied if it exists), owned by the OS user, mode 0700 (PostgreSQL
    /// refuses a data directory others can read).
    fn prepare_empty(&self, dir: &Path) -> Result<(), DriverError> {
        let io = io_at(dir);
        fs::create_dir_all(dir).map_err(io)?;
        for entry in fs::read_dir(dir).map_err(io_at(dir))? {
            let path = entry.map_err(io_at(dir))?.path();
            let res = if path.is_dir() && !path.is_symlink() {
                fs::remove_dir_all(&path)
            } else {
                fs::remove_file(&path)
            };
            res.map_err(io_at(&path))?;
        }
        self.user.chown(dir).map_err(io_at(dir))?;
        set_mode(dir, 0o700)
    }

    async fn run_basebackup(&self, dir: &Path, src: &Endpoint) -> Result<(), DriverError> {
        let mut args: Vec<String> = vec![
            "-d".into(),
            format!(
                "host={} port={} user={} passfile={} {TOOL_CONNINFO}",
                src.address,
                src.port,
                self.opts.db_user,
                credential::conninfo_value(&self.passfile.display().to_string())
            ),
            "-D".into(),
            dir.display().to_string(),
            "-X".into(),
            "stream".into(),
            "-c".into(),
            "fast".into(),
            "--no-password".into(),
        ];
        if !self.opts.sync_data {
            args.push("--no-sync".into());
        }
        self.run_tool("pg_basebackup", args).await
    }

    async fn set_read_only(&self, inst: &Instance, on: bool) -> Result<(), DriverError> {
        lock(&inst.desired).read_only = on;
        self.write_managed(inst)?;
        if self.running(inst).is_none() {
            return Ok(());
        }
        self.reload(inst)?;
        self.wait_setting(
            inst,
            "default_transaction_read_only",
            if on { "on" } else { "off" },
        )
        .await
    }

    async fn set_sync(
        &self,
        inst: &Instance,
        k: u32,
        members: Vec<InstanceId>,
    ) -> Result<(), DriverError> {
        let expected = sync_standby_names(k, &members);
        {
            let mut d = lock(&inst.desired);
            d.sync_k = k;
            d.sync_members = members;
        }
        self.write_managed(inst)?;
        if self.running(inst).is_none() {
            return Ok(());
        }
        self.reload(inst)?;
        self.wait_setting(inst, "synchronous_standby_names", &expected)
            .await
    }

    /// A physical slot for every other member (so a new primary has them at once), unreserved
    /// until first used; slots of members no longer configured are dropped. Best effort.
    pub(super) async fn ensure_local_slots(&self, inst: &Instance) {
        let client = match self.connect(inst, self.opts.status_connect_timeout).await {
            Ok(client) => client,
            Err(e) => {
                let error = e.into_driver(inst.id);
                tracing::warn!(instance = %inst.id, %error, "could not connect to create replication slots");
                return;
            }
        };
        let names: Vec<String> = self
            .peers(inst.id)
            .iter()
            .map(|p| instance_name(p.instance))
            .collect();
        for name in &names {
            if let Err(e) = create_slot(&client, name).await {
                tracing::warn!(instance = %inst.id, slot = %name, error = %super::pg_error(&e), "slot not created");
            }
        }
        if let Err(e) = client.execute(DROP_STALE_SLOTS_SQL, &[&names]).await {
            tracing::warn!(instance = %inst.id, error = %super::pg_error(&e), "stale slots not dropped");
        }
    }

    /// Creates `member`'s slot on its upstream if missing (the upstream's own agent may not
    /// have run yet). Best effort: the standby retries streaming by itself.
    async fn ensure_slot_on(&self, upstream: &Endpoint, member: InstanceId) {
        let Ok(client) = self
            .connect_remote(upstream, self.opts.status_connect_timeout)
            .await
        else {
            return;
        };
        let name = instance_name(member);
        if let Err(e) = create_slot(&client, &name).await {
            tracing::warn!(upstream = %upstream.instance, slot = %name, error = %super::pg_error(&e), "slot not created");
        }
    }

    async fn run_action(&self, inst: &Instance, action: DnAction) -> Result<(), DriverError> {
        match action {
            DnAction::StartPending => self.start_pending(inst).await,
            DnAction::Stop { mode } => self.stop(inst, mode).await,
            DnAction::Kill => self.kill(inst).await,
            DnAction::Lock1 => self.lock1(inst).await,
            DnAction::Lock2 { primary } => self.follow(inst, primary, true).await,
            DnAction::Unlock { primary } | DnAction::NotifyStandby { primary } => {
                self.follow(inst, primary, false).await
            }
            DnAction::Promote { term } => {
                tracing::info!(instance = %inst.id, %term, "promoting");
                self.busy(inst, DbState::Promoting, self.promote(inst))
                    .await
            }
            DnAction::Demote => self.stop(inst, StopMode::Fast).await,
            DnAction::Build { source, full } => {
                self.busy(inst, DbState::Building, self.build(inst, source, full))
                    .await
            }
            DnAction::SetReadOnly { on } => self.set_read_only(inst, on).await,
            DnAction::SetSyncStandbys { k, members } => self.set_sync(inst, k, members).await,
        }
    }

    async fn busy<T>(
        &self,
        inst: &Instance,
        state: DbState,
        work: impl Future<Output = Result<T, DriverError>>,
    ) -> Result<T, DriverError> {
        *lock(&inst.busy) = Some(state);
        let res = work.await;
        *lock(&inst.busy) = None;
        res
    }
}

async fn create_slot(client: &Client, name: &str) -> Result<u64, tokio_postgres::Error> {
    let dropped = client.execute(DROP_LOST_SLOT_SQL, &[&name]).await?;
    if dropped > 0 {
        tracing::warn!(slot = %name, "dropped a lost replication slot (its member was away too long); a fresh one follows");
    }
    client.execute(CREATE_SLOT_SQL, &[&name]).await
}

impl DatabaseDriver for PgDriver {
    async fn run(&self, instance: InstanceId, action: DnAction) -> Result<(), DriverError> {
        let inst = self.inst(instance)?;
        self.run_action(&inst, action).await
    }

    async fn status(&self, instance: InstanceId) -> Result<DnStatus, DriverError> {
        let inst = self.inst(instance)?;
        self.require_running(&inst)?;
        self.query_status(&inst).await
    }

    async fn phony_dead_probe(
        &self,
        instance: InstanceId,
        interval: Duration,
    ) -> Result<PhonyDeadProbe, DriverError> {
        let inst = self.inst(instance)?;
        Ok(self.probe(&inst, interval).await)
    }

    async fn streaming(&self, instance: InstanceId) -> Result<Streaming, DriverError> {
        let inst = self.inst(instance)?;
        self.query_streaming(&inst).await
    }

    fn processes(&self, instance: InstanceId) -> Result<Vec<ProcState>, DriverError> {
        let inst = self.inst(instance)?;
        Ok(self.process_states(&inst))
    }

    fn is_running(&self, instance: InstanceId) -> Result<bool, DriverError> {
        let inst = self.inst(instance)?;
        Ok(self.running(&inst).is_some())
    }
}

fn is_mount_point(dir: &Path) -> bool {
    use std::os::unix::fs::MetadataExt as _;
    let dev = |p: &Path| fs::metadata(p).map(|m| m.dev()).ok();
    match (dir.parent(), dev(dir)) {
        (Some(parent), Some(d)) => dev(parent).is_some_and(|p| p != d),
        _ => false,
    }
}

/// Connection options of pg_rewind and pg_basebackup: a bounded connect, and TCP keepalives so
/// a source host that vanished mid-copy is noticed in about 20 s (a frozen postmaster is caught
/// by the tool time limit instead, see `run_bounded`).
const TOOL_CONNINFO: &str =
    "connect_timeout=5 keepalives=1 keepalives_idle=5 keepalives_interval=5 keepalives_count=3";

/// A Build ordered to rewind first (`full` false) a data directory an earlier pg_rewind left
/// half-rewound is refused, typed ([`DriverError::RewindRefused`]): the method is the CMS's
/// choice (issue 18), and the driver keeps only the interlock that never lets a second
/// pg_rewind start from a state neither side knows.
fn refuse_rewind_of_half_rewound(
    id: InstanceId,
    data: &Path,
    full: bool,
) -> Result<(), DriverError> {
    match swap::half_rewound(data) {
        Some(marker) if !full => Err(DriverError::RewindRefused {
            instance: id,
            data: data.display().to_string(),
            marker: marker.display().to_string(),
        }),
        _ => Ok(()),
    }
}

/// Why a Build copies everything without trying `pg_rewind` first: ordered to (by the CMS,
/// for data a pg_rewind left half-rewound, or `cm_ctl build --full`), or the data directory
/// holds no cluster to rewind. `None`: rewind first.
fn full_copy_reason(full: bool, has_pg_version: bool, half_rewound: bool) -> Option<&'static str> {
    if full && half_rewound {
        Some(
            "a full copy was ordered: an earlier pg_rewind stopped partway and left the data directory half-rewound",
        )
    } else if full {
        Some("a full copy was ordered (the CMS's choice, or cm_ctl build --full)")
    } else if !has_pg_version {
        Some("there is no PG_VERSION in the data directory")
    } else {
        None
    }
}

/// Why a full copy of `need` bytes into `fresh`, beside the data directory, must not start with `free`
/// bytes available there: the copy needs `need` plus a tenth plus 64 MiB (WAL written while it
/// runs, filesystem overhead). `None`: enough room.
fn copy_space_problem(need: u64, free: u64, fresh: &Path) -> Option<String> {
    const MIB: u64 = 1 << 20;
    let want = need.saturating_add(need / 10).saturating_add(64 * MIB);
    (free < want).then(|| {
        format!(
            "not enough free space for a full copy: {} MiB needed ({} MiB of the source's databases and WAL, plus a tenth and 64 MiB), {} MiB free on the filesystem of {}; the copy would go to {} beside the data directory, which was left as it was",
            want / MIB,
            need / MIB,
            free / MIB,
            fresh.parent().unwrap_or_else(|| Path::new("/")).display(),
            fresh.display(),
        )
    })
}

fn io_at(path: &Path) -> impl FnOnce(std::io::Error) -> DriverError + '_ {
    move |source| DriverError::Io {
        path: path.display().to_string(),
        source,
    }
}

/// The data a full copy replaced (`<data>.cm_old`) is removed once the new copy has started
/// as a standby; a failure to remove it is only logged (it is garbage, not a fault).
pub(super) fn remove_old_copy(id: InstanceId, data: &Path) {
    let old = sibling(data, "cm_old");
    if old.exists() {
        match remove_tree(&old) {
            Ok(()) => {
                tracing::info!(instance = %id, path = %old.display(), "removed the data a full copy replaced")
            }
            Err(e) => {
                tracing::warn!(instance = %id, error = %e, "could not remove the replaced data")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{copy_space_problem, full_copy_reason, refuse_rewind_of_half_rewound, swap};
    use std::path::Path;

    #[test]
    fn a_full_copy_without_room_for_a_second_cluster_is_refused_saying_what_and_where() {
        const MIB: u64 = 1 << 20;
        let fresh = Path::new("/var/lib/pg/dn1.cm_build");
        // 1000 MiB of source: 1000 + 100 + 64 MiB wanted.
        assert_eq!(copy_space_problem(1000 * MIB, 1164 * MIB, fresh), None);
        let why = copy_space_problem(1000 * MIB, 1163 * MIB, fresh).expect("refused");
        for part in [
            "not enough free space for a full copy",
            "1164 MiB needed",
            "1000 MiB of the source",
            "1163 MiB free on the filesystem of /var/lib/pg",
            "/var/lib/pg/dn1.cm_build",
            "left as it was",
        ] {
            assert!(why.contains(part), "{part:?} missing: {why}");
        }
        assert!(
            copy_space_problem(u64::MAX, u64::MAX - 1, fresh).is_some(),
            "no overflow"
        );
    }

    #[test]
    fn a_full_build_skips_pg_rewind_and_an_empty_directory_cannot_rewind() {
        assert_eq!(full_copy_reason(false, true, false), None, "rewind first");
        assert!(full_copy_reason(true, true, false).is_some_and(|r| r.contains("--full")));
        assert!(full_copy_reason(false, false, false).is_some_and(|r| r.contains("PG_VERSION")));
        assert!(full_copy_reason(true, false, false).is_some_and(|r| r.contains("--full")));
    }

    #[test]
    fn a_half_rewound_data_directory_copied_in_full_says_why() {
        for has_pg_version in [true, false] {
            assert!(
                full_copy_reason(true, has_pg_version, true)
                    .is_some_and(|r| r.contains("pg_rewind stopped partway")),
                "{has_pg_version}"
            );
        }
    }

    /// Issue 18: the driver does not choose the method; ordered to rewind half-rewound data
    /// it refuses, typed, before it touches anything (the agent is told `HalfRewound`, and the
    /// CMS orders a full copy); ordered to copy in full, or without the marker, it goes on.
    #[test]
    fn a_rewind_of_a_half_rewound_data_directory_is_refused_typed() {
        let tmp = tempfile::tempdir().unwrap();
        let data = tmp.path().join("dn1");
        std::fs::create_dir(&data).unwrap();
        let id = cm_core::ids::InstanceId(6001);
        refuse_rewind_of_half_rewound(id, &data, false).expect("no marker: rewind");
        swap::mark_rewinding(&data).unwrap();
        let refused = refuse_rewind_of_half_rewound(id, &data, false).expect_err("refused");
        let text = refused.to_string();
        for part in ["pg_rewind refused", "half-rewound", "dn1.cm_rewinding"] {
            assert!(text.contains(part), "{part:?} missing: {text}");
        }
        assert!(matches!(
            cm_core::dn::ActionError::from(refused),
            cm_core::dn::ActionError::HalfRewound(_)
        ));
        refuse_rewind_of_half_rewound(id, &data, true).expect("a full copy goes on");
        assert!(
            data.with_file_name("dn1.cm_rewinding").exists(),
            "untouched"
        );
    }
}
