//! The agent's executor: one arm per [`AgentCommand`]. Nothing here blocks the loop — every
//! sample, probe, action and write runs on a tokio task or a blocking thread, and its answer
//! comes back through the loop's input channel as the matching [`AgentInput`].

use std::collections::BTreeMap;
use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use cm_core::Instant;
use cm_core::agent::{AgentCommand, AgentInput, PhonyProbe};
use cm_core::config::ClusterConfig;
use cm_core::dn::{ActionError, DnAction};
use cm_core::ids::{InstanceId, NodeId, OpId};
use cm_core::io::{Executor, Flow, PersistState, WriteCompleted};
use cm_core::resource::{ScriptExit, ScriptVerb, script_args};
use cm_io::disk::{self, DiskProber, ProbeOutcome};
use cm_io::flags::FlagDir;
use cm_io::postgres::{DatabaseDriver as _, PgDriver, ProbeConnect, settings};
use cm_io::process::Supervised;
use cm_io::script::{self, ScriptOutcome, ScriptSpec};
use cm_io::store::{Store, StoreWriter};
use cm_io::transport::Transport;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;
use tokio::sync::mpsc;

use super::cms::{self, LocalServer};
use super::system;

/// Extra time a status query may take after its 2 s connect timeout before it is reported
/// failed, so that a server that accepts but never answers cannot hang the report loop.
const STATUS_QUERY_GRACE: Duration = Duration::from_secs(2);

/// The store writer with a count of writes not yet completed, so that the agent can wait for
/// them before it exits.
#[derive(Clone)]
pub(super) struct Persister {
    writer: StoreWriter,
    pending: Arc<AtomicU64>,
    tx: mpsc::Sender<AgentInput>,
}

impl Persister {
    /// Starts the writer; completions are relayed to the loop as `WriteCompleted`.
    pub(super) fn spawn(store: Store, tx: mpsc::Sender<AgentInput>) -> Self {
        let (done_tx, mut done_rx) = mpsc::channel::<WriteCompleted>(64);
        let writer = StoreWriter::spawn(store, 64, done_tx, |w| w);
        let pending = Arc::new(AtomicU64::new(0));
        let relay_pending = Arc::clone(&pending);
        let relay_tx = tx.clone();
        tokio::spawn(async move {
            while let Some(done) = done_rx.recv().await {
                relay_pending.fetch_sub(1, Ordering::AcqRel);
                let _ = relay_tx.send(AgentInput::WriteCompleted(done)).await;
            }
        });
        Self {
            writer,
            pending,
            tx,
        }
    }

    /// Queues one write; a refused one is answered as a failed completion at once.
    pub(super) fn submit(&self, p: PersistState) {
        self.pending.fetch_add(1, Ordering::AcqRel);
        if let Err(failed) = self.writer.submit(p) {
            self.pending.fetch_sub(1, Ordering::AcqRel);
            let tx = self.tx.clone();
            tokio::spawn(async move {
                let _ = tx.send(AgentInput::WriteCompleted(failed)).await;
            });
        }
    }

    /// Waits (up to `timeout`) until every queued write finished; false if some did not.
    pub(super) async fn flushed(&self, timeout: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + timeout;
        while self.pending.load(Ordering::Acquire) > 0 {
            if tokio::time::Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        true
    }
}

/// What the executor is built from.
pub(super) struct Parts {
    /// The cluster config.
    pub(super) config: Arc<ClusterConfig>,
    /// Its absolute path (passed to cm_server).
    pub(super) config_path: PathBuf,
    /// This node.
    pub(super) node: NodeId,
    /// This node's state directory.
    pub(super) state_dir: PathBuf,
    /// The cm_server binary.
    pub(super) server_bin: PathBuf,
    /// The PostgreSQL driver.
    pub(super) driver: Arc<PgDriver>,
    /// The transport to the CMS nodes.
    pub(super) transport: Transport,
    /// The store writer.
    pub(super) persist: Persister,
    /// The loop's input sender.
    pub(super) tx: mpsc::Sender<AgentInput>,
}

/// Resource script runs and failures (§15) by verb, from the agent's start.
#[derive(Debug, Default)]
pub(crate) struct ScriptStats {
    /// Runs that ended (any outcome).
    pub(crate) runs: Family<VerbLabel, Counter>,
    /// Runs that failed ([`ScriptExit::failed`]).
    pub(crate) failures: Family<VerbLabel, Counter>,
}

/// A script verb as a label (`start`, `stop`, `check`, `clean`).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct VerbLabel {
    /// The verb without its dash.
    pub(crate) verb: String,
}

impl ScriptStats {
    /// Counts one ended run of `verb`.
    pub(crate) fn count(&self, verb: ScriptVerb, exit: &ScriptExit) {
        let label = VerbLabel {
            verb: verb.arg().trim_start_matches('-').to_owned(),
        };
        self.runs.get_or_create(&label).inc();
        if exit.failed(verb) {
            self.failures.get_or_create(&label).inc();
        }
    }

    /// Registers the counters (`…resource_script_runs_total`, `…resource_script_failures_total`).
    pub(crate) fn register(&self, registry: &mut Registry) {
        registry.register(
            "resource_script_runs",
            "Resource script runs that ended, by verb (SPEC 14)",
            self.runs.clone(),
        );
        registry.register(
            "resource_script_failures",
            "Resource script runs that failed, by verb: killed at time_out, not runnable, or an exit code that is no answer of the verb (-check: not 0, 1 or 3; others: not 0)",
            self.failures.clone(),
        );
    }
}

/// Executes the agent's commands.
pub(super) struct AgentExec {
    p: Parts,
    flags: FlagDir,
    server: LocalServer,
    /// The cm_server this agent started (kept so its reaper thread's handle lives).
    started_server: Option<Supervised>,
    probers: BTreeMap<InstanceId, (Duration, Arc<DiskProber>)>,
    /// Event trigger counters (§15).
    pub(super) triggers: Arc<super::triggers::TriggerStats>,
    /// Resource script counters (§15).
    pub(super) scripts: Arc<ScriptStats>,
}

impl AgentExec {
    /// An executor over `parts`.
    pub(super) fn new(p: Parts) -> Self {
        let server = LocalServer {
            bin: p.server_bin.clone(),
            config: p.config_path.clone(),
            node: p.node.0,
            cache: Arc::default(),
        };
        Self {
            flags: FlagDir::new(&p.state_dir),
            server,
            started_server: None,
            probers: BTreeMap::new(),
            triggers: Arc::default(),
            scripts: Arc::default(),
            p,
        }
    }

    /// Runs `work` on a blocking thread and sends its input to the loop.
    fn blocking<F>(&self, work: F)
    where
        F: FnOnce() -> Option<AgentInput> + Send + 'static,
    {
        let tx = self.p.tx.clone();
        tokio::spawn(async move {
            match tokio::task::spawn_blocking(work).await {
                Ok(Some(input)) => {
                    let _ = tx.send(input).await;
                }
                Ok(None) => {}
                Err(e) => tracing::error!("agent driver thread failed: {e}"),
            }
        });
    }

    /// Runs `fut` on a task and sends its input to the loop.
    fn task<F>(&self, fut: F)
    where
        F: Future<Output = AgentInput> + Send + 'static,
    {
        let tx = self.p.tx.clone();
        tokio::spawn(async move {
            let input = fut.await;
            let _ = tx.send(input).await;
        });
    }
}

impl Executor<AgentCommand> for AgentExec {
    fn execute(&mut self, _now: Instant, command: AgentCommand) -> Flow {
        match command {
            AgentCommand::Net(c) => self.p.transport.execute(c),
            AgentCommand::PersistState(p) => self.p.persist.submit(p),
            AgentCommand::SampleProcesses { op, instance } => self.sample_processes(op, instance),
            AgentCommand::QueryDnStatus { op, instance } => self.query_status(op, instance),
            AgentCommand::ProbePhonyDead {
                op,
                instance,
                connect_timeout,
            } => self.probe_phony_dead(op, instance, connect_timeout),
            AgentCommand::SampleDisk { op, instance } => self.sample_disk(op, instance),
            AgentCommand::ProbeDisk {
                op,
                instance,
                timeout,
            } => self.probe_disk(op, instance, timeout),
            AgentCommand::ProbePeers {
                op,
                instance,
                connect_timeout,
            } => self.probe_peers(op, instance, connect_timeout),
            AgentCommand::ReadFlags => self.read_flags(),
            AgentCommand::SampleSystem => self.blocking(|| {
                let (cpu_pct, mem_pct, io_pct) = system::sample();
                Some(AgentInput::SystemSampled {
                    cpu_pct,
                    mem_pct,
                    io_pct,
                })
            }),
            AgentCommand::RunDnAction {
                op,
                instance,
                action,
            } => self.run_action(op, instance, action),
            AgentCommand::SampleCms { op } => self.sample_cms(op),
            AgentCommand::StartCms { op } => self.start_cms(op),
            AgentCommand::StopCms { op } => self.cms_action(op, LocalServer::stop),
            AgentCommand::KillCms { op } => self.cms_action(op, LocalServer::kill),
            AgentCommand::RemoveFlag { flag } => {
                let flags = self.flags.clone();
                self.blocking(move || {
                    if let Err(e) = flags.remove(flag) {
                        tracing::error!("cannot remove a flag: {e}");
                    }
                    None
                });
            }
            AgentCommand::WriteFlag { flag } => {
                let flags = self.flags.clone();
                self.blocking(move || {
                    if let Err(e) = flags.write(flag, cm_core::dn::StopMode::Fast) {
                        tracing::error!("cannot write a flag: {e}");
                    }
                    None
                });
            }
            AgentCommand::RunScript {
                op,
                instance,
                verb,
                timeout,
            } => self.run_script(op, instance, verb, timeout),
            AgentCommand::RaiseAlarm(alarm) => crate::server::executor::raise(&alarm),
            AgentCommand::RunTrigger(run) => {
                super::triggers::spawn(run, Arc::clone(&self.triggers));
            }
            AgentCommand::Exit => {
                tracing::info!("every local instance is down under cluster_manual_start");
                return Flow::Stop;
            }
        }
        Flow::Continue
    }
}

impl AgentExec {
    /// Runs a resource script on a task (§14): the loop never waits for it; the runner kills
    /// it with its process group at `timeout` and keeps its output bounded.
    fn run_script(&self, op: OpId, instance: InstanceId, verb: ScriptVerb, timeout: Duration) {
        let (spec, name) = match script_for(&self.p.config, op, instance, verb, timeout) {
            Ok(planned) => planned,
            Err(failed) => {
                tracing::error!(%instance, "RunScript for an instance not in the config");
                // Completed (failed) all the same: the agent must not wait for it forever.
                self.task(async move { *failed });
                return;
            }
        };
        let scripts = Arc::clone(&self.scripts);
        self.task(async move {
            let r = script::run(&spec).await;
            let exit = match &r.outcome {
                ScriptOutcome::Exited(c) => ScriptExit::Code(*c),
                ScriptOutcome::Signaled(_) | ScriptOutcome::TimedOut => ScriptExit::Killed,
                ScriptOutcome::SpawnFailed(why) => ScriptExit::Failed(why.clone()),
            };
            scripts.count(verb, &exit);
            let (out, err) = (r.stdout.summary(), r.stderr.summary());
            if verb == ScriptVerb::Check && exit == ScriptExit::Code(0) {
                tracing::debug!(resource = %name, %instance, verb = verb.arg(), ?exit,
                    elapsed_ms = r.elapsed.as_millis() as u64, stdout = %out, stderr = %err,
                    "resource script");
            } else {
                tracing::info!(resource = %name, %instance, verb = verb.arg(), ?exit,
                    elapsed_ms = r.elapsed.as_millis() as u64, stdout = %out, stderr = %err,
                    "resource script");
            }
            AgentInput::ScriptCompleted { op, instance, exit }
        });
    }

    fn run_action(&self, op: OpId, instance: InstanceId, action: DnAction) {
        let driver = Arc::clone(&self.p.driver);
        self.task(async move {
            tracing::info!(%instance, %action, "DN action");
            // cm-core logs a failure with the action's kind (one line, not two).
            let result = driver
                .run(instance, action)
                .await
                .map_err(ActionError::from);
            AgentInput::ActionCompleted {
                op,
                instance,
                result,
            }
        });
    }

    fn sample_cms(&self, op: OpId) {
        let server = self.server.clone();
        self.blocking(move || {
            Some(AgentInput::CmsSampled {
                op,
                processes: server.sample(),
            })
        });
    }

    fn sample_processes(&self, op: OpId, instance: InstanceId) {
        let driver = Arc::clone(&self.p.driver);
        self.blocking(move || {
            // `is_running` first: it adopts a postmaster a previous agent left running (§1).
            let processes = driver
                .is_running(instance)
                .and_then(|_| driver.processes(instance))
                .unwrap_or_else(|e| {
                    tracing::error!(%instance, "cannot sample the DN processes: {e}");
                    Vec::new()
                });
            Some(AgentInput::ProcessesSampled {
                op,
                instance,
                processes,
            })
        });
    }

    fn query_status(&self, op: OpId, instance: InstanceId) {
        let driver = Arc::clone(&self.p.driver);
        let limit = driver.options().status_connect_timeout + STATUS_QUERY_GRACE;
        self.task(async move {
            let result = match tokio::time::timeout(limit, driver.status(instance)).await {
                Ok(r) => r.map_err(|e| e.to_string()),
                Err(_) => Err(format!("status query timed out after {limit:?}")),
            };
            AgentInput::DnStatusQueried {
                op,
                instance,
                result,
            }
        });
    }

    fn probe_phony_dead(&self, op: OpId, instance: InstanceId, connect_timeout: Duration) {
        let driver = Arc::clone(&self.p.driver);
        self.task(async move {
            // The driver connects with min(5 s, interval); the core already chose that bound.
            let outcome = match driver.phony_dead_probe(instance, connect_timeout).await {
                Ok(p) => match p.connect {
                    ProbeConnect::Answered => PhonyProbe::Answered,
                    ProbeConnect::TooManyClients => PhonyProbe::TooManyClients,
                    ProbeConnect::Failed(why) => {
                        tracing::debug!(%instance, "phony-dead probe failed: {why}");
                        PhonyProbe::Failed {
                            newest_wal_age: p.newest_wal_age,
                        }
                    }
                },
                Err(e) => {
                    tracing::warn!(%instance, "phony-dead probe error: {e}");
                    PhonyProbe::Failed {
                        newest_wal_age: None,
                    }
                }
            };
            AgentInput::PhonyDeadProbed {
                op,
                instance,
                outcome,
            }
        });
    }

    fn data_dir(&self, instance: InstanceId) -> Option<PathBuf> {
        let (_, m) = self.p.config.member(instance)?;
        Some(PathBuf::from(&m.data_dir))
    }

    fn sample_disk(&self, op: OpId, instance: InstanceId) {
        let Some(data) = self.data_dir(instance) else {
            return;
        };
        // The DN's log lives in its run directory (`postgres.log`), in the state directory.
        let log = self.p.state_dir.join(settings::instance_name(instance));
        self.blocking(move || {
            let pct = |r: Result<u8, cm_io::statedir::FileError>| {
                r.unwrap_or_else(|e| {
                    tracing::warn!(%instance, "disk usage unknown: {e}");
                    0
                })
            };
            Some(AgentInput::DiskSampled {
                op,
                instance,
                data_pct: pct(disk::data_dir_usage_pct(&data)),
                log_pct: pct(disk::usage_pct(&log)),
            })
        });
    }

    fn probe_disk(&mut self, op: OpId, instance: InstanceId, timeout: Duration) {
        let Some(data) = self.data_dir(instance) else {
            return;
        };
        let user = self.p.driver.os_user();
        let owner = (user.uid, user.gid);
        let new = || Arc::new(DiskProber::for_data_dir(&data, timeout, owner));
        let entry = self
            .probers
            .entry(instance)
            .or_insert_with(|| (timeout, new()));
        // A new timeout (parameters reloaded) needs a new prober, unless one is stuck.
        if entry.0 != timeout && !entry.1.busy() {
            *entry = (timeout, new());
        }
        let prober = Arc::clone(&entry.1);
        self.task(async move {
            let started = std::time::Instant::now();
            let result = match prober.probe().await {
                ProbeOutcome::Ok => Ok(()),
                ProbeOutcome::Failed(why) => Err(why),
                ProbeOutcome::Hung => Err(format!("no answer within {timeout:?}")),
            };
            AgentInput::DiskProbed {
                op,
                instance,
                result,
                elapsed: started.elapsed(),
            }
        });
    }

    fn probe_peers(&self, op: OpId, instance: InstanceId, connect_timeout: Duration) {
        let cfg = &self.p.config;
        let peers: Vec<(String, u16)> = cfg
            .member(instance)
            .map(|(g, _)| {
                g.members
                    .iter()
                    .filter(|m| m.instance != instance)
                    .filter_map(|m| Some((cfg.node(m.node)?.address.clone(), m.port)))
                    .collect()
            })
            .unwrap_or_default();
        self.task(async move {
            let reachable = super::peers::any_reachable(&peers, connect_timeout).await;
            AgentInput::PeersProbed {
                op,
                instance,
                reachable,
            }
        });
    }

    fn read_flags(&self) {
        let flags = self.flags.clone();
        self.blocking(move || match flags.read() {
            Ok(set) => Some(AgentInput::FlagsObserved(set)),
            Err(e) => {
                // No answer: the agent keeps the flags it last saw and asks again next second.
                tracing::error!("cannot read the flags: {e}");
                None
            }
        });
    }

    fn start_cms(&mut self, op: OpId) {
        let result = cms::check_binary(&self.server.bin).and_then(|()| self.server.start());
        let result = match result {
            Ok(sup) => {
                tracing::info!(pid = sup.pid(), "cm_server started");
                self.started_server = Some(sup);
                Ok(())
            }
            Err(e) => {
                tracing::error!("cannot start cm_server: {e}");
                Err(e)
            }
        };
        let tx = self.p.tx.clone();
        tokio::spawn(async move {
            let _ = tx.send(AgentInput::CmsActionCompleted { op, result }).await;
        });
    }

    fn cms_action(&self, op: OpId, action: fn(&LocalServer) -> Result<(), String>) {
        let server = self.server.clone();
        self.blocking(move || {
            let result = action(&server);
            Some(AgentInput::CmsActionCompleted { op, result })
        });
    }
}

/// The script run for `RunScript`: its spec and the resource's name, or — for an instance
/// not in the config — the failed completion to send back at once.
fn script_for(
    config: &ClusterConfig,
    op: OpId,
    instance: InstanceId,
    verb: ScriptVerb,
    timeout: Duration,
) -> Result<(ScriptSpec, String), Box<AgentInput>> {
    let Some((res, inst)) = config.resource_instance(instance) else {
        return Err(Box::new(AgentInput::ScriptCompleted {
            op,
            instance,
            exit: ScriptExit::Failed(format!("resource instance {instance} is not in the config")),
        }));
    };
    let spec = ScriptSpec::new(
        &res.script,
        script_args(verb, instance, &inst.args),
        timeout,
    );
    Ok((spec, res.name.clone()))
}

#[cfg(test)]
mod script_tests {
    use super::*;

    #[test]
    fn a_script_for_an_instance_not_in_the_config_completes_failed() {
        let config = ClusterConfig::from_toml_str(
            r#"
name = "t"
[[node]]
id = 1
name = "n1"
address = "127.0.0.1"
az = "AZ1"
state_dir = "/tmp/unused"
monitor_port = 17001
cms_port = 17101
[[group]]
id = 1
[[group.member]]
instance = 6001
node = 1
data_dir = "/d1"
port = 5432
"#,
        )
        .expect("valid");
        let r = script_for(
            &config,
            OpId(7),
            InstanceId(9001),
            ScriptVerb::Start,
            Duration::from_secs(1),
        );
        match r.map_err(|e| *e) {
            Err(AgentInput::ScriptCompleted {
                op: OpId(7),
                instance: InstanceId(9001),
                exit: ScriptExit::Failed(why),
            }) => assert!(why.contains("9001"), "{why}"),
            other => panic!("not a failed completion: {:?}", other.err()),
        }
    }
}
