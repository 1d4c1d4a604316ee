//! Health probes and fencing of SPEC.md §3, §6 (agent side), §7.1 and §8: the phony-dead
//! counter, the disk probe and `DiskDamaged`, peer DN reachability, the system alarm, and the
//! agent self-fence with its streaming-quorum exception.

use core::time::Duration;

use super::instance::Fence;
use super::{
    Agent, AgentCommand, DISK_FAILURES_DAMAGED, PEER_PROBE_TRIES, PHONY_PROBE_MAX_CONNECT_TIMEOUT,
    PhonyProbe,
};
use crate::dn::{DnRole, ProcState};
use crate::ids::{InstanceId, OpId};
use crate::io::Alarm;
use crate::time::Instant;

const RESOURCES: [&str; 3] = ["cpu", "mem", "io"];

impl Agent {
    /// Per DN, when its check is due (§6): D/Z → hit; T → hit and the next check waits the T
    /// interval; otherwise a primary or standby gets a fresh-connection probe. Paused: reset.
    pub(super) fn phony_dead_loop(&mut self, now: Instant, out: &mut Vec<AgentCommand>) {
        let paused = self.paused(now);
        let (normal, in_t) = self.params.phony_dead_intervals();
        let ids: Vec<InstanceId> = self.insts.keys().copied().collect();
        for id in ids {
            let op = OpId(self.next_op);
            let Some(inst) = self.insts.get_mut(&id) else {
                continue;
            };
            if now < inst.next_phony {
                continue;
            }
            let stopped = inst.processes.contains(&ProcState::Stopped);
            let interval = if stopped { in_t.max(normal) } else { normal };
            inst.next_phony = now + interval;
            if paused || !inst.running() || inst.fence != Fence::None {
                inst.phony_hits = 0;
                continue;
            }
            let hung_state = inst.processes.iter().any(|p| {
                matches!(
                    p,
                    ProcState::DiskSleep | ProcState::Zombie | ProcState::Stopped
                )
            });
            if hung_state {
                inst.phony_hits += 1;
                continue;
            }
            // A DN in its start (crash recovery after a pending start, §1) is not hung for
            // being slow to answer until its start bound has passed (issue 18, defect 4).
            let serving = matches!(inst.known_role(), Some(DnRole::Primary | DnRole::Standby));
            if !serving || inst.in_start(now) {
                inst.phony_hits = 0;
                continue;
            }
            // A probe still outstanding from the previous check is superseded.
            inst.phony_probe = Some((op, normal));
            self.next_op += 1;
            out.push(AgentCommand::ProbePhonyDead {
                op,
                instance: id,
                connect_timeout: normal.min(PHONY_PROBE_MAX_CONNECT_TIMEOUT),
            });
        }
    }

    pub(super) fn on_phony_probe(&mut self, op: OpId, id: InstanceId, outcome: &PhonyProbe) {
        let Some(inst) = self.insts.get_mut(&id) else {
            return;
        };
        let Some((expected, interval)) = inst.phony_probe else {
            return;
        };
        if expected != op {
            return;
        }
        inst.phony_probe = None;
        let hit = match outcome {
            PhonyProbe::Answered | PhonyProbe::TooManyClients => false,
            // A failed probe is a hang only if the WAL directory has not changed within the
            // interval either (an unreadable directory counts as unchanged).
            PhonyProbe::Failed { newest_wal_age } => newest_wal_age.is_none_or(|a| a > interval),
        };
        if hit {
            inst.phony_hits += 1;
        } else {
            inst.phony_hits = 0;
        }
    }

    /// Every `disk_check_interval`: usage sample and (if none is outstanding) a write/read probe.
    pub(super) fn disk_loop(&mut self, now: Instant, out: &mut Vec<AgentCommand>) {
        let timeout = self.params.disk_check_timeout();
        let ids: Vec<InstanceId> = self.insts.keys().copied().collect();
        for instance in ids {
            let op = self.op();
            out.push(AgentCommand::SampleDisk { op, instance });
            if self
                .insts
                .get(&instance)
                .is_some_and(|i| i.disk_probe.is_none())
            {
                let op = self.op();
                if let Some(inst) = self.insts.get_mut(&instance) {
                    inst.disk_probe = Some((op, now + timeout));
                }
                out.push(AgentCommand::ProbeDisk {
                    op,
                    instance,
                    timeout,
                });
            }
        }
    }

    pub(super) fn on_disk_sample(&mut self, _op: OpId, id: InstanceId, data_pct: u8, log_pct: u8) {
        if let Some(inst) = self.insts.get_mut(&id) {
            inst.data_pct = data_pct;
            inst.log_pct = log_pct;
        }
    }

    /// A probe outstanding past `disk_check_timeout` counts as failed (hung) and is abandoned.
    pub(super) fn disk_hung_check(&mut self, now: Instant, out: &mut Vec<AgentCommand>) {
        let hung: Vec<InstanceId> = self
            .insts
            .iter()
            .filter(|(_, i)| i.disk_probe.is_some_and(|(_, at)| now >= at))
            .map(|(&id, _)| id)
            .collect();
        for id in hung {
            if let Some(inst) = self.insts.get_mut(&id) {
                inst.disk_probe = None;
            }
            self.disk_result(now, id, false, out);
        }
    }

    pub(super) fn on_disk_probe(
        &mut self,
        now: Instant,
        op: OpId,
        id: InstanceId,
        ok: bool,
        elapsed: Duration,
        out: &mut Vec<AgentCommand>,
    ) {
        let timeout = self.params.disk_check_timeout();
        let Some(inst) = self.insts.get_mut(&id) else {
            return;
        };
        if inst.disk_probe.is_none_or(|(o, _)| o != op) {
            return;
        }
        inst.disk_probe = None;
        self.disk_result(now, id, ok && elapsed <= timeout, out);
    }

    fn disk_result(&mut self, now: Instant, id: InstanceId, ok: bool, out: &mut Vec<AgentCommand>) {
        let Some(inst) = self.insts.get_mut(&id) else {
            return;
        };
        if ok {
            inst.disk_failures = 0;
            if inst.disk_damaged {
                tracing::info!(instance = %id, "disk probe works again: DiskDamaged cleared");
                inst.disk_damaged = false;
            }
            return;
        }
        inst.disk_failures += 1;
        if inst.disk_failures < DISK_FAILURES_DAMAGED || inst.disk_damaged {
            return;
        }
        inst.disk_damaged = true;
        let primary = inst.is_live_primary();
        self.alarm(now, Alarm::DiskDamaged { instance: id }, out);
        if primary {
            self.fence(id, "disk damaged", out);
        }
    }

    /// Every second: each live primary of a group with peers probes their reachability (§3).
    /// A probe still outstanding is not repeated until its bound (3 tries of
    /// `agent_connect_timeout`) has passed, so probes that never answer do not pile up.
    pub(super) fn peer_loop(&mut self, now: Instant, out: &mut Vec<AgentCommand>) {
        let connect_timeout = Duration::from_secs_f64(self.params.agent_connect_timeout.max(0.0));
        let ids: Vec<InstanceId> = self
            .insts
            .iter()
            .filter(|(_, i)| i.is_live_primary() && i.group.len() > 1)
            .filter(|(_, i)| i.peers_probe.is_none_or(|(_, until)| now >= until))
            .map(|(&id, _)| id)
            .collect();
        for instance in ids {
            let op = self.op();
            if let Some(inst) = self.insts.get_mut(&instance) {
                inst.peers_probe = Some((op, now + connect_timeout * PEER_PROBE_TRIES));
            }
            out.push(AgentCommand::ProbePeers {
                op,
                instance,
                connect_timeout,
            });
        }
    }

    /// A primary that reaches no peer DN while its CMS contact has lapsed is killed, unless
    /// paused (§3). While the CMS answers, the CMS decides.
    pub(super) fn on_peers(
        &mut self,
        now: Instant,
        op: OpId,
        id: InstanceId,
        reachable: bool,
        out: &mut Vec<AgentCommand>,
    ) {
        let paused = self.paused(now);
        let lapsed = self.contact_lapsed(now);
        let Some(inst) = self.insts.get_mut(&id) else {
            return;
        };
        if inst.peers_probe.is_none_or(|(o, _)| o != op) {
            return;
        }
        inst.peers_probe = None;
        if !reachable && !paused && lapsed && inst.is_live_primary() {
            self.fence(
                id,
                "isolated primary: no peer DN reachable, CMS contact lapsed",
                out,
            );
        }
    }

    /// cpu/mem/io above `environment_threshold` → alarm only, on each crossing (§3).
    pub(super) fn on_system(&mut self, now: Instant, usage: [u8; 3], out: &mut Vec<AgentCommand>) {
        let limits = self.params.environment_thresholds();
        for i in 0..3 {
            let above = usage[i] > limits[i];
            if above && !self.system_alarmed[i] {
                let alarm = Alarm::Environment {
                    resource: RESOURCES[i].into(),
                    usage_pct: usage[i],
                };
                self.alarm(now, alarm, out);
            }
            self.system_alarmed[i] = above;
        }
    }

    /// The agent self-fence of §8: a live primary is killed once `agent_self_fence_timeout`
    /// has passed since the send time of the newest report a leader answered, unless so many
    /// valid standbys stream from it that no Lock1 quorum can exist, or paused, or disabled.
    pub(super) fn self_fence_check(&mut self, now: Instant, out: &mut Vec<AgentCommand>) {
        if !self.params.enable_self_fence || self.paused(now) || !self.contact_lapsed(now) {
            return;
        }
        let staleness = self.params.streaming_reply_staleness();
        let doomed: Vec<InstanceId> = self
            .insts
            .iter()
            .filter(|(_, i)| i.is_live_primary() && !streaming_protected(i, now, staleness))
            .map(|(&id, _)| id)
            .collect();
        for id in doomed {
            self.fence(
                id,
                "self-fence: no leader-answered report within the timeout",
                out,
            );
        }
    }
}

/// The streaming-quorum exception of §8 ([`super::health::streaming_quorum`]) on the DN's
/// newest status.
fn streaming_protected(inst: &super::instance::Inst, now: Instant, staleness: Duration) -> bool {
    let Some(status) = &inst.status else {
        return false;
    };
    super::health::streaming_quorum(
        inst.id,
        &inst.group,
        &status.downstreams,
        now - inst.status_at,
        staleness,
    )
}

#[cfg(test)]
#[path = "probes_tests.rs"]
mod tests;
