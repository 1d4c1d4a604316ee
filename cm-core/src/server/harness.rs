//! Test harness for the leader-side components: a cluster builder, a DN report builder, and a
//! driver that owns a [`Leader`] plus an [`InMemoryState`] committing on demand.

use core::time::Duration;

use crate::config::{
    AzConfig, ClusterConfig, DatabaseConfig, GroupConfig, MemberConfig, NodeConfig,
};
use crate::ctl::{CtlReply, CtlRequest};
use crate::dn::{DbState, DnReport, DnRole, History, LockState, Upstream};
use crate::ids::{
    AzName, ClientId, CmdSeq, CmdStamp, GroupId, InstanceId, NodeId, Position, QuorumTerm,
    ReportSeq, Term, Timeline,
};
use crate::msg::{AgentReport, CmsCommand, SequencedCommand};
use crate::params::Params;
use crate::state::{Change, ClusterState, GroupState, InMemoryState};
use crate::time::{Instant, WallMillis};

use super::leader::{Leader, LeaderOutput};

/// The group every harness cluster has.
pub(crate) const G: GroupId = GroupId(1);

/// Instance `6000 + i` runs on node `i` (i = 1..=n), in `azs[i-1]`; CMS on nodes 101..=103.
pub(crate) fn cluster(azs: &[(&str, u32)], member_azs: &[&str], params: Params) -> ClusterConfig {
    let mut nodes: Vec<NodeConfig> = member_azs
        .iter()
        .enumerate()
        .map(|(i, az)| NodeConfig {
            id: NodeId(i as u32 + 1),
            name: format!("n{}", i + 1),
            address: format!("10.0.0.{}", i + 1),
            az: AzName::from(*az),
            state_dir: format!("/s/{}", i + 1),
            monitor_port: 17001,
            cms_port: None,
            cms_http_port: None,
            rest_port: None,
        })
        .collect();
    for c in 101..=103u32 {
        nodes.push(NodeConfig {
            id: NodeId(c),
            name: format!("cms{c}"),
            address: format!("10.0.1.{c}"),
            az: AzName::from(member_azs[0]),
            state_dir: format!("/s/{c}"),
            monitor_port: 17001,
            cms_port: Some(17101),
            cms_http_port: None,
            rest_port: None,
        });
    }
    let members = (1..=member_azs.len() as u32)
        .map(|i| MemberConfig {
            instance: InstanceId(6000 + i),
            node: NodeId(i),
            data_dir: format!("/pg/{i}"),
            port: 5432,
        })
        .collect();
    ClusterConfig {
        name: "t".into(),
        security: Default::default(),
        azs: azs
            .iter()
            .map(|(n, p)| AzConfig {
                name: AzName::from(*n),
                priority: *p,
            })
            .collect(),
        nodes,
        groups: vec![GroupConfig { id: G, members }],
        database: DatabaseConfig::default(),
        params,
        event_triggers: Default::default(),
        resources: Vec::new(),
    }
}

/// A DN report builder: a Normal standby at (1, 100) on timeline 1, nothing else.
#[derive(Clone, Debug)]
pub(crate) struct Rb(pub DnReport);

/// A report of instance `6000 + i`.
pub(crate) fn dn(i: u32) -> Rb {
    let mut r = DnReport::down(InstanceId(6000 + i));
    r.role = DnRole::Standby;
    r.db_state = DbState::Normal;
    r.position = Position::new(1, 100);
    r.history = History::root(Timeline(1));
    r.lock = LockState::None;
    Rb(r)
}

impl Rb {
    pub(crate) fn primary(mut self, term: u64) -> Self {
        self.0.role = DnRole::Primary;
        self.0.term = Term(term);
        self
    }
    pub(crate) fn pending(mut self) -> Self {
        self.0.role = DnRole::Pending;
        self
    }
    pub(crate) fn down(mut self) -> Self {
        self.0.role = DnRole::Down;
        self.0.db_state = DbState::Unknown;
        self
    }
    pub(crate) fn db(mut self, s: DbState) -> Self {
        self.0.db_state = s;
        self
    }
    /// Lock1 took effect after the agent applied command `seq` of quorum term 1.
    pub(crate) fn prohibit(mut self, seq: u64) -> Self {
        self.0.lock = LockState::Prohibit;
        self.0.last_applied = stamp(seq);
        self
    }
    pub(crate) fn lock(mut self, l: LockState) -> Self {
        self.0.lock = l;
        self
    }
    pub(crate) fn applied(mut self, seq: u64) -> Self {
        self.0.last_applied = stamp(seq);
        self
    }
    pub(crate) fn pos(mut self, tli: u32, lsn: u64) -> Self {
        self.0.position = Position::new(tli, lsn);
        if self.0.history.timeline != Timeline(tli) {
            self.0.history = History::root(Timeline(tli));
        }
        self
    }
    pub(crate) fn hist(mut self, h: History) -> Self {
        self.0.history = h;
        self
    }
    pub(crate) fn upstream(mut self, i: u32, age_ms: u64) -> Self {
        self.0.upstream = Some(Upstream {
            instance: InstanceId(6000 + i),
            last_msg_age: Duration::from_millis(age_ms),
        });
        self
    }
    pub(crate) fn hits(mut self, n: u32) -> Self {
        self.0.phony_dead_hits = n;
        self
    }
    pub(crate) fn disk(mut self, pct: u8) -> Self {
        self.0.data_disk_pct = pct;
        self
    }
    pub(crate) fn ro(mut self, on: bool) -> Self {
        self.0.read_only = on;
        self
    }
    pub(crate) fn restarts(mut self, in_10min: u32, in_1h: u32) -> Self {
        self.0.restarts_10min = in_10min;
        self.0.restarts_1h = in_1h;
        self
    }
    /// Its agent's last Build of it failed.
    pub(crate) fn build_failed(mut self) -> Self {
        self.0.last_build.count += 1;
        self.0.last_build.error =
            Some("pg_basebackup: the database system is shutting down".into());
        self
    }
    /// Its agent's last Build of it, or a start, was refused: the data is half-rewound.
    pub(crate) fn build_refused_half_rewound(mut self) -> Self {
        self.0.last_build.count += 1;
        self.0.last_build.error = Some(
            "instance 6003: pg_rewind refused: the data directory /d/dn3 is half-rewound".into(),
        );
        self.0.last_build.half_rewound = true;
        self
    }
    /// Its agent has a Build of it queued or running.
    pub(crate) fn build_pending(mut self) -> Self {
        self.0.last_build.pending = true;
        self
    }
    /// Its processes are all in state `s`.
    pub(crate) fn procs(mut self, s: crate::dn::ProcState) -> Self {
        self.0.processes = vec![s; 3];
        self
    }
    pub(crate) fn manually_stopped(mut self) -> Self {
        self.0.manually_stopped = true;
        self
    }
}

/// The stamp of command `seq` under quorum term 1.
pub(crate) fn stamp(seq: u64) -> CmdStamp {
    CmdStamp {
        quorum_term: QuorumTerm(1),
        seq: CmdSeq(seq),
    }
}

/// `(instance, command)` of every command output, in order.
pub(crate) fn cmds(out: &[LeaderOutput]) -> Vec<(u32, CmsCommand)> {
    out.iter()
        .filter_map(|o| match o {
            LeaderOutput::Command { cmd, .. } => Some((cmd.instance.0, cmd.cmd.clone())),
            _ => None,
        })
        .collect()
}

/// The full output of a command to instance `6000 + i` (on node `i`) with sequence `seq`.
pub(crate) fn command(i: u32, seq: u64, cmd: CmsCommand) -> LeaderOutput {
    LeaderOutput::Command {
        node: NodeId(i),
        cmd: SequencedCommand {
            instance: InstanceId(6000 + i),
            seq: CmdSeq(seq),
            cmd,
        },
    }
}

/// A leader, its in-memory replicated state and a clock.
pub(crate) struct H {
    pub(crate) leader: Leader,
    pub(crate) state: InMemoryState,
    pub(crate) now: Instant,
    pub(crate) wall: WallMillis,
    pub(crate) cfg: ClusterConfig,
    seq: u64,
    lock1: std::collections::BTreeMap<u32, u64>,
}

impl H {
    /// A group of `n` members in one AZ with default parameters.
    pub(crate) fn new(n: usize) -> Self {
        Self::with(cluster(&[("AZ1", 1)], &vec!["AZ1"; n], Params::defaults()))
    }

    /// A cluster, elected at t = 100 s with the group at term 1.
    pub(crate) fn with(cfg: ClusterConfig) -> Self {
        let mut state = ClusterState::initial(&cfg);
        for g in state.groups.values_mut() {
            g.term = Term(1);
        }
        let mut h = Self {
            leader: Leader::new(&cfg),
            state: InMemoryState::new(state),
            now: Instant::from_secs(100),
            wall: WallMillis(1_000_000),
            cfg,
            seq: 0,
            lock1: Default::default(),
        };
        let out = h
            .leader
            .on_elected(h.now, h.wall, QuorumTerm(1), &mut h.state);
        assert!(out.is_empty());
        h
    }

    pub(crate) fn group(&self) -> &GroupState {
        &self.state.committed_ref().groups[&G]
    }

    pub(crate) fn group_mut(&mut self) -> &mut GroupState {
        self.state.state_mut().groups.get_mut(&G).unwrap()
    }

    pub(crate) fn advance_ms(&mut self, ms: u64) {
        self.now += Duration::from_millis(ms);
        self.wall = self.wall.saturating_add(Duration::from_millis(ms));
    }

    pub(crate) fn report(&mut self, r: Rb) -> Vec<LeaderOutput> {
        let node = self.cfg.member(r.0.instance).unwrap().1.node;
        self.seq += 1;
        let rep = AgentReport {
            seq: ReportSeq(self.seq),
            dns: vec![r.0],
            cms_process: None,
            normal_start: false,
            resources: Vec::new(),
        };
        let out = self
            .leader
            .on_report(self.now, self.wall, node, &rep, &mut self.state);
        self.observe(out)
    }

    /// Remembers the sequence number of the latest Lock1 sent to each instance.
    fn observe(&mut self, out: Vec<LeaderOutput>) -> Vec<LeaderOutput> {
        for o in &out {
            if let LeaderOutput::Command { cmd, .. } = o
                && cmd.cmd == CmsCommand::Lock1
            {
                self.lock1.insert(cmd.instance.0 - 6000, cmd.seq.0);
            }
        }
        out
    }

    /// The sequence number of the latest Lock1 sent to instance `6000 + i` (0: none).
    pub(crate) fn lock1_seq(&self, i: u32) -> u64 {
        self.lock1.get(&i).copied().unwrap_or(0)
    }

    /// A report of `6000 + i` saying Prohibit after its latest Lock1.
    pub(crate) fn locked(&self, i: u32) -> Rb {
        dn(i).prohibit(self.lock1_seq(i))
    }

    /// Reports in order, outputs concatenated.
    pub(crate) fn reports(&mut self, rs: Vec<Rb>) -> Vec<LeaderOutput> {
        rs.into_iter().flat_map(|r| self.report(r)).collect()
    }

    pub(crate) fn tick(&mut self) -> Vec<LeaderOutput> {
        let out = self.leader.on_tick(self.now, self.wall, &mut self.state);
        self.observe(out)
    }

    /// Commits every queued proposal and feeds the outcomes.
    pub(crate) fn commit(&mut self) -> Vec<LeaderOutput> {
        self.state.commit_all();
        let outcomes = crate::state::ReplicatedState::take_outcomes(&mut self.state);
        let out = self
            .leader
            .on_outcomes(self.now, self.wall, outcomes, &mut self.state);
        self.observe(out)
    }

    pub(crate) fn queued(&self) -> Vec<Change> {
        self.state.queued()
    }

    pub(crate) fn ctl(&mut self, client: u64, req: CtlRequest) -> Vec<LeaderOutput> {
        self.leader
            .on_ctl(self.now, self.wall, ClientId(client), req, &mut self.state)
    }

    /// A healthy round: 6001 primary at the group's term, the others streaming from it.
    pub(crate) fn healthy_round(&mut self, n: u32) -> Vec<LeaderOutput> {
        let term = self.group().term.0;
        let mut rs = vec![dn(1).primary(term)];
        rs.extend((2..=n).map(|i| dn(i).upstream(1, 100)));
        self.reports(rs)
    }
}

/// A reply output.
pub(crate) fn reply(client: u64, reply: CtlReply) -> LeaderOutput {
    LeaderOutput::Reply {
        client: ClientId(client),
        reply,
    }
}

/// Read access to the committed state without the trait in scope.
pub(crate) trait CommittedRef {
    fn committed_ref(&self) -> &ClusterState;
}

impl CommittedRef for InMemoryState {
    fn committed_ref(&self) -> &ClusterState {
        crate::state::ReplicatedState::committed(self)
    }
}
