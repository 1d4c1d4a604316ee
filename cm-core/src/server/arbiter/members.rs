//! Per-member bookkeeping of a group (§4.2): the newest report and its receipt, the round
//! counter, the Failover send count, and the command stamps that confirm a lock.

use core::time::Duration;

use crate::dn::{DbState, DnReport, DnRole, LockState};
use crate::ids::{AzName, CmdStamp, InstanceId, NodeId, Position, Term};
use crate::msg::CmsCommand;
use crate::params::Params;
use crate::server::outbox::Outbox;
use crate::server::phony_dead::PhonyDeadMember;
use crate::time::Instant;

/// Failovers sent to one member after which it is no candidate any more (CM's
/// `MAX_SEND_FAILOVER_TIMES`).
pub const MAX_FAILOVER_SENDS: u32 = 10;

/// A standby of the valid primary that does not stream from it (issue 18, defect 3): it is
/// neither caught up with the primary nor advancing while its receiver points there.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct StreamLoss {
    /// Receipt of the first report in a row that showed it.
    pub since: Instant,
    /// When it was re-pointed for it, `instance_heartbeat_timeout` after `since`.
    pub repointed: Option<Instant>,
}

/// The last command sent to a member, for resend suppression.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct LastCommand {
    /// The command.
    pub cmd: CmsCommand,
    /// Its stamp.
    pub stamp: CmdStamp,
    /// When it was sent.
    pub at: Instant,
}

/// What the leader knows about one member of a group.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct Member {
    /// The instance.
    pub instance: InstanceId,
    /// The node its agent runs on.
    pub node: NodeId,
    /// The node's AZ.
    pub az: AzName,
    /// The AZ's failover priority (lower preferred).
    pub az_priority: u32,
    /// The newest report (none since this node became leader).
    pub report: Option<DnReport>,
    /// Receipt of the newest report, or the election time (§8).
    pub receipt: Instant,
    /// Arbitration rounds (§4.2).
    pub rounds: u64,
    /// Failovers sent to it since the last reset.
    pub failovers_sent: u32,
    /// Stamp of the latest Lock1 sent to it, and when.
    pub lock1: Option<(CmdStamp, Instant)>,
    /// An Unlock or Lock2 was sent after the latest Lock1.
    pub released_since_lock1: bool,
    /// The last command sent, for resend suppression.
    pub last_cmd: Option<LastCommand>,
    /// The instance the latest Unlock/Lock2/Notify/Build sent to it points at, its stamp and send time
    /// (cleared by Lock1): tells a stale upstream setting from one not yet streaming.
    pub pointed: Option<(InstanceId, CmdStamp, Instant)>,
    /// Phony-dead bookkeeping (§6).
    pub phony: PhonyDeadMember,
    /// The newest role other than Unknown it reported under this leadership.
    pub known_role: Option<DnRole>,
    /// A Failover/Switchover sent to it that it has neither answered (reported Primary) nor
    /// disproved (reported Down, or a known non-primary status after a later Restart): its
    /// term and stamp. Until then it may be a primary, and fencing comes first.
    pub promotion: Option<(Term, CmdStamp)>,
    /// Stamp of the latest Restart sent to it.
    pub restart: Option<CmdStamp>,
    /// Since when its reports say a running DN whose role its agent does not know (none
    /// persisted either): the receipt of the first such report in a row.
    pub unknown_since: Option<Instant>,
    /// Its stream from the valid primary is lost (see [`StreamLoss`]).
    pub stream_loss: Option<StreamLoss>,
    /// The primary, receipt and position of the newest report the stream check looked at.
    pub stream_checked: Option<(InstanceId, Instant, Position)>,
    /// The receipt of the first of the newest reports in a row that found it streaming from
    /// the primary (`None` when the newest did not). A [`StreamLoss`] ends only once the
    /// stream has held for `instance_heartbeat_timeout`: a receiver that streams for one
    /// report every few seconds and fails in between is still repaired (issue 18).
    #[serde(default)]
    pub streaming_since: Option<Instant>,
    /// A Build without a full copy (pg_rewind first) was sent to it from this primary and it
    /// has not streamed from it since: its next Build copies everything (issue 18: a standby
    /// whose stream start the primary no longer has stays refused after any number of rewinds).
    #[serde(default)]
    pub rewound_from: Option<InstanceId>,
    /// Since when its reports say Down after a failed Build, with no report of a started DN
    /// (Pending, Standby, Primary) in between: the receipt of the first such report.
    #[serde(default)]
    pub build_failed_down: Option<Instant>,
    /// Since when its reports say a DN that came back from a pending start (the report before
    /// said `Starting`) or from a rewind without a status query answered since — `Unknown`, no position, with
    /// whatever role its agent last read (§3): its recovery stalls "starting up" (issue 16).
    /// Started pending and never answered, it cannot be serving as a primary; only a Build
    /// cures it (swarm-faults: an old primary whose recovery stalled was restarted as a
    /// stale primary, or notified as pending, every start bound, and never rebuilt).
    #[serde(default)]
    pub start_stalled: Option<Instant>,
}

impl Member {
    /// A member nobody has heard from, with `receipt` as its newest receipt.
    pub fn new(
        instance: InstanceId,
        node: NodeId,
        az: AzName,
        az_priority: u32,
        receipt: Instant,
    ) -> Self {
        Self {
            instance,
            node,
            az,
            az_priority,
            report: None,
            receipt,
            rounds: 0,
            failovers_sent: 0,
            lock1: None,
            released_since_lock1: false,
            last_cmd: None,
            pointed: None,
            phony: PhonyDeadMember::default(),
            known_role: None,
            promotion: None,
            restart: None,
            unknown_since: None,
            stream_loss: None,
            stream_checked: None,
            streaming_since: None,
            rewound_from: None,
            build_failed_down: None,
            start_stalled: None,
        }
    }

    /// Forgets everything learned under a previous leadership; `now` becomes the receipt.
    pub fn reset(&mut self, now: Instant) {
        *self = Self::new(
            self.instance,
            self.node,
            self.az.clone(),
            self.az_priority,
            now,
        );
    }

    /// Forgets what the stream check learned (another primary, another role, a Build).
    pub fn forget_stream(&mut self) {
        self.stream_loss = None;
        self.stream_checked = None;
        self.streaming_since = None;
    }

    /// Its newest report, checked against `primary`, found it streaming from it (not
    /// necessarily for long: see [`Member::streaming_since`]).
    pub fn streams_now(&self, primary: InstanceId) -> bool {
        self.streaming_since.is_some() && self.stream_checked.is_some_and(|(p, _, _)| p == primary)
    }

    /// Time since the newest receipt.
    pub fn silence(&self, now: Instant) -> Duration {
        now.saturating_since(self.receipt)
    }

    /// Silent for half of `instance_heartbeat_timeout`: its role is Unknown (§4.3).
    pub fn timed_out(&self, now: Instant, params: &Params) -> bool {
        self.silence(now) >= params.instance_heartbeat_timeout() / 2
    }

    /// Silent for all of `instance_heartbeat_timeout`: its group's rounds are raised (§4.3).
    pub fn heartbeat_expired(&self, now: Instant, params: &Params) -> bool {
        self.silence(now) >= params.instance_heartbeat_timeout()
    }

    /// The role arbitration works with: Unknown when timed out, never reported since the
    /// election, or a phony-dead primary (§6); otherwise the reported role.
    pub fn role(&self, now: Instant, params: &Params) -> DnRole {
        match &self.report {
            None => DnRole::Unknown,
            Some(_) if self.timed_out(now, params) => DnRole::Unknown,
            Some(r) if r.role == DnRole::Primary && self.phony.is_hung(r, params) => {
                DnRole::Unknown
            }
            Some(r) => r.role,
        }
    }

    /// A primary that serves: reported Primary, heard from recently, not hung, disk healthy.
    pub fn is_live_primary(&self, now: Instant, params: &Params) -> bool {
        self.role(now, params) == DnRole::Primary
            && self
                .report
                .as_ref()
                .is_some_and(|r| !r.disk_damaged && r.db_state != DbState::DiskDamaged)
    }

    /// The newest report says Primary (whether or not it is still heard from).
    pub fn last_said_primary(&self) -> bool {
        self.report
            .as_ref()
            .is_some_and(|r| r.role == DnRole::Primary)
    }

    /// The member may be serving as a primary, so another may not be promoted before it is
    /// fenced (§4.2, §6 "fencing comes first", §8): its newest report says Primary; or a
    /// promotion sent to it is unresolved; or its agent reports a running DN whose role it
    /// does not know (a restarted agent, a kill in progress) and the last role known of it was
    /// Primary — or, with nothing known under this leadership, it is the static primary.
    pub fn may_be_primary(&self, static_primary: InstanceId) -> bool {
        if self.promotion.is_some()
            || self
                .report
                .as_ref()
                .is_some_and(|r| r.db_state == DbState::Promoting)
        {
            return true;
        }
        if self.start_stalled.is_some() {
            return false;
        }
        match self.report.as_ref().map(|r| r.role) {
            Some(DnRole::Primary) => true,
            Some(DnRole::Unknown) => match self.known_role {
                Some(k) => k == DnRole::Primary,
                None => self.instance == static_primary,
            },
            _ => false,
        }
    }

    /// Bookkeeping of a new report: the known role, and whether it resolves an outstanding
    /// promotion.
    pub fn note_report(&mut self, r: &DnReport, now: Instant) {
        let no_status = r.role != DnRole::Down
            && r.db_state == DbState::Unknown
            && r.position == Position::default();
        // Back from a pending start, or rewound and not streaming since (the driver starts the
        // rewound DN itself, with no `Starting` report in between).
        let from_start = self
            .report
            .as_ref()
            .is_some_and(|p| p.db_state == DbState::Starting)
            || self.rewound_from.is_some();
        if !no_status {
            self.start_stalled = None;
        } else if from_start {
            self.start_stalled.get_or_insert(now);
        }
        if r.role == DnRole::Unknown {
            self.unknown_since.get_or_insert(now);
        } else {
            self.known_role = Some(r.role);
            self.unknown_since = None;
        }
        let Some((_, sent)) = self.promotion else {
            return;
        };
        let resolved = match r.role {
            DnRole::Primary => true,
            // No process after it took the command: a Down report from before it could be
            // followed by a restart as pending and the delayed promotion.
            DnRole::Down => r.last_applied >= sent,
            DnRole::Standby | DnRole::Pending => {
                r.db_state != DbState::Unknown
                    && self
                        .restart
                        .is_some_and(|s| s > sent && r.last_applied >= s)
            }
            DnRole::Unknown => false,
        };
        if resolved {
            self.promotion = None;
        }
    }

    /// Its newest report says a stalled start (see [`Member::start_stalled`]) and no
    /// promotion sent to it is unresolved.
    pub fn may_be_stalled_old_primary(&self) -> bool {
        self.start_stalled.is_some() && self.promotion.is_none()
    }

    /// Its recovery has stalled (see [`Member::start_stalled`]) for at least `d`.
    pub fn start_stalled_for(&self, now: Instant, d: Duration) -> bool {
        self.start_stalled
            .is_some_and(|since| now.saturating_since(since) >= d)
    }

    /// A standby or pending member that is heard from (Lock1 goes to these, §4.2).
    pub fn is_follower(&self, now: Instant, params: &Params) -> bool {
        matches!(self.role(now, params), DnRole::Standby | DnRole::Pending)
    }

    /// Locked (§4.2): its newest report was sent after it applied the latest Lock1 sent to it,
    /// says Prohibit, no Unlock/Lock2 was sent since, and fewer than 10 Failovers were sent.
    pub fn is_locked(&self, now: Instant, params: &Params) -> bool {
        let (Some(r), Some((stamp, _))) = (&self.report, self.lock1) else {
            return false;
        };
        self.is_follower(now, params)
            && !r.disk_damaged
            && r.lock == LockState::Prohibit
            && r.last_applied >= stamp
            && !self.released_since_lock1
            && self.failovers_sent < MAX_FAILOVER_SENDS
    }

    /// The reported position (origin when never reported).
    pub fn position(&self) -> Position {
        self.report.as_ref().map(|r| r.position).unwrap_or_default()
    }

    /// Sends a command, recording what lock confirmation and send counting need.
    pub fn send(&mut self, out: &mut Outbox, now: Instant, cmd: CmsCommand) -> CmdStamp {
        let stamp = out.command(self.node, self.instance, cmd.clone());
        match &cmd {
            CmsCommand::Lock1 => {
                self.lock1 = Some((stamp, now));
                self.released_since_lock1 = false;
                self.pointed = None;
            }
            CmsCommand::Unlock { primary } | CmsCommand::Lock2 { primary } => {
                self.released_since_lock1 = true;
                self.pointed = Some((*primary, stamp, now));
            }
            CmsCommand::NotifyStandby { primary }
            | CmsCommand::Build {
                source: primary, ..
            } => {
                self.pointed = Some((*primary, stamp, now));
            }
            CmsCommand::Failover { term, .. } => {
                self.failovers_sent += 1;
                self.promotion = Some((*term, stamp));
            }
            CmsCommand::Switchover { term } => self.promotion = Some((*term, stamp)),
            CmsCommand::Restart => self.restart = Some(stamp),
            _ => {}
        }
        self.last_cmd = Some(LastCommand {
            cmd,
            stamp,
            at: now,
        });
        stamp
    }

    /// A command that sets its upstream to `primary` (Unlock, Lock2, Notify standby or Build
    /// from it, sent under this leadership) was applied, or sent less than `resend` ago.
    pub fn pointed_at(
        &self,
        primary: InstanceId,
        r: &DnReport,
        now: Instant,
        resend: Duration,
    ) -> bool {
        self.pointed.is_some_and(|(p, stamp, at)| {
            p == primary && (r.last_applied >= stamp || now.saturating_since(at) < resend)
        })
    }

    /// Sends `cmd` unless the same command went out less than `resend` ago.
    pub fn send_unless_recent(
        &mut self,
        out: &mut Outbox,
        now: Instant,
        cmd: CmsCommand,
        resend: Duration,
    ) -> bool {
        if let Some(last) = &self.last_cmd
            && last.cmd == cmd
            && now.saturating_since(last.at) < resend
        {
            return false;
        }
        self.send(out, now, cmd);
        true
    }
}
