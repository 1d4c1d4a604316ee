//! The simulated driver of cm_server: frames, durable writes and the wall clock in; the quorum
//! and arbitration's orders out. The fence command of §8 powers the target node off (a
//! STONITH), and the two-node gateway probe answers from the simulated network.

use cm_core::Instant;
use cm_core::io::Machine;
use cm_core::server::quorum::Role as QuorumRole;
use cm_core::server::{Server, ServerCommand, ServerInput};
use cm_core::state::ReplicatedState;
use cm_core::time::WallMillis;

use crate::daemon::{EnvOp, Obs, ServerObs, SimDaemon, SimInput, Spawn};

/// cm_server behind the simulator's vocabulary.
pub struct ServerAdapter {
    server: Server,
    wall_fed: bool,
    last_now: Instant,
}

impl ServerAdapter {
    /// Builds the server; `None` when its store does not decode (it refuses to start).
    pub fn new(s: &Spawn<'_>) -> Option<Self> {
        let server = Server::new(s.config, s.node, s.seed, s.restored.clone()).ok()?;
        Some(Self {
            server,
            wall_fed: false,
            last_now: Instant::ZERO,
        })
    }
}

fn op_of(c: ServerCommand) -> EnvOp {
    match c {
        ServerCommand::Net(n) => EnvOp::Net(n),
        ServerCommand::Persist(p) => EnvOp::Persist(p),
        ServerCommand::RunFenceCommand { group, node, .. } => EnvOp::FenceNode { group, node },
        ServerCommand::ProbeGateways => EnvOp::ProbeGateways,
        ServerCommand::RaiseAlarm(a) => EnvOp::Alarm(a),
    }
}

impl SimDaemon for ServerAdapter {
    fn handle(&mut self, now: Instant, wall: WallMillis, input: SimInput) -> Vec<EnvOp> {
        self.last_now = now;
        let mut out = Vec::new();
        if !self.wall_fed {
            self.wall_fed = true;
            let cmds = self.server.step(now, ServerInput::WallClock(wall));
            out.extend(cmds.into_iter().map(op_of));
        }
        let input = match input {
            SimInput::Tick => Some(ServerInput::Tick),
            SimInput::Net(ev) => Some(ServerInput::Net(ev)),
            SimInput::WriteDone(w) => Some(ServerInput::WriteCompleted(w)),
            SimInput::FenceDone { group, success } => {
                Some(ServerInput::FenceCommandDone { group, success })
            }
            SimInput::Gateways { reachable } => Some(ServerInput::GatewaysProbed { reachable }),
            _ => None,
        };
        if let Some(i) = input {
            out.extend(self.server.step(now, i).into_iter().map(op_of));
        }
        out
    }

    fn next_deadline(&self) -> Option<Instant> {
        self.server.next_deadline()
    }

    fn observe(&self) -> Obs {
        let q = self.server.quorum().status(self.last_now);
        let committed = self.server.quorum().committed();
        Obs::Server(ServerObs {
            quorum_term: q.term,
            leader: q.role == QuorumRole::Leader,
            lease_until: q.lease_until,
            group_terms: committed.groups.iter().map(|(g, s)| (*g, s.term)).collect(),
            paused: committed.paused,
            stopping: committed.stopping,
            switchovers: committed
                .groups
                .iter()
                .filter(|(_, s)| s.switchover.is_some())
                .map(|(g, _)| *g)
                .collect(),
            switchover_terms: committed
                .groups
                .iter()
                .filter_map(|(g, s)| s.switchover.as_ref().map(|sw| (*g, sw.term)))
                .collect(),
        })
    }

    fn dump(&self) -> String {
        let s = self.server.status();
        let committed = self.server.quorum().committed();
        let non_voters = &committed.non_voters;
        let groups: Vec<String> = committed
            .groups
            .iter()
            .map(|(g, st)| format!("{g}:{}/{}", st.term, st.static_primary))
            .collect();
        format!(
            "server {:?} {} leader={:?} commit={} lease={:?} arbitrating={} agents={} non_voters={non_voters:?} groups=[{}]",
            s.quorum.role,
            s.quorum.term,
            s.quorum.leader,
            s.quorum.commit_index,
            s.quorum.lease_until,
            s.arbitrating,
            s.agents_connected,
            groups.join(" ")
        )
    }
}
