//! Seeds the widened swarm (issue 11) found failing before the core fixes of issue 11 and 18
//! merged, by the defect that made them fail. A class whose seeds all pass now runs in CI; a
//! seed that still fails, for another reason, moved to the `#[ignore]`d list of that reason at
//! the end (run one with `cargo nextest run -p cm-sim --run-ignored only -E 'test(NAME)'`).
//! Each list holds the first seeds of `cm-sim sweep --seeds 0..2000` whose first failure was of
//! that class alone; reproduce one with `cargo run -p cm-sim --release -- run swarm --seed N`
//! (`swarm-classic` where named).

use cm_sim::swarm::{SWARM, SWARM_CLASSIC, SWARM_FAULTS, failures_of};

fn assert_clean(name: &str, seeds: &[u64]) {
    let failed = failures_of(name, seeds.iter().copied());
    assert!(failed.is_empty(), "{}", failed.join("\n"));
}

/// Defect 1: a CMS late to the first election became a permanent non-voter; with one more CMS
/// down, the voters left are no majority and nothing arbitrates (`A`: no writable primary
/// although two of three CMS and a Lock1 quorum are up). The classic generator finds it too.
/// (54 and 188 fail for other reasons, below.)
#[test]
fn late_cms_non_voter() {
    assert_clean(SWARM, &[25, 120, 127, 332, 377, 575, 661, 703]);
    assert_clean(SWARM_CLASSIC, &[264, 451, 564, 581]);
}

/// Defect 2: two CMS (S1 two leaders of one quorum term or two leases outside the gateway
/// span, the quorum's "leader conflicts with committed entry" panic on healing, `A` with the
/// agent's 2-of-2 term confirmation).
#[test]
fn two_node_mode() {
    assert_clean(SWARM, &[5, 11, 12, 14, 17, 39, 49, 70, 78, 110]);
}

/// Found by S8 (`/primary` on two members, SPEC §15) once the agents' endpoint condition was
/// checked: 0.7 s after a two-node heal the merged leader failed group 1 over to 6004 (term 3)
/// while the other side's primary 6002 (term 2) still ran with a write lease from that side's
/// leader; 6002 was restarted only 0.26 s after 6004's promotion. Healing must fence the lower
/// side's primary before promoting anyone (SPEC §5.4, §4.1's fencing first). Fixed: the merged
/// leader waits the fencing floor from the instant it first heard, at its term, the peer it led
/// without (`Quorum::note_heard_at_term`), as after any election.
#[test]
fn two_node_heal_promotes_before_fencing() {
    assert_clean(SWARM, &[233]);
}

/// `cm-sim sweep --seeds 0..500` after seed 233's fix: the availability check counted B from a
/// picture taken before a fault that did not change it (a broken stream of a 1P1S group's only
/// standby, 255 and 424; a healed cut between the leader and the agents, 446): B runs from when
/// the group's faults last changed. A CMS leader whose disk hung kept its lease with one
/// follower and committed nothing for 44 s (494): it now stops counting itself once a write has
/// been pending for `instance_heartbeat_timeout`. The simulated operator left the cluster paused
/// (140) or a DN stopped (20, 187, 188, 360) after its resume or start failed for want of a
/// leader or an om_monitor: like an operator, it retries a failed start or resume after the heal.
#[test]
fn availability_clock_disk_hang_and_failed_operator_requests() {
    assert_clean(SWARM, &[20, 140, 187, 188, 255, 360, 424, 446, 494]);
}

/// Two-node healing discarded what the overwritten side committed alone besides group terms —
/// here an operator's acknowledged `resume` (212, 236): the cluster stayed paused, and a DN
/// killed later was never restarted. Pause requests are now stamped and the newer one of the
/// two sides survives the heal.
#[test]
fn two_node_heal_keeps_the_newer_resume() {
    assert_clean(SWARM, &[212, 236]);
}

/// Two-node healing (SPEC §5.4), found by `cm-sim sweep --seeds 0..500` once the quorum no
/// longer panicked on healing: two leases at once right after the two CMS were linked again
/// (each still acting on its isolation until it heard the other, or on a gateway answer until
/// its next probe), and two primaries left writable at the heal, then a group term lost by a
/// side that restarted and cut entries it had committed alone (285).
#[test]
fn two_node_healing() {
    assert_clean(
        SWARM,
        &[
            11, 12, 45, 102, 121, 141, 174, 254, 285, 287, 291, 293, 364, 441, 474, 476,
        ],
    );
}

/// Defect 3: a CMS leader cut from the DN agents (not from its peers) keeps its lease; a
/// group that needs a failover meanwhile gets none (`A`). (439 and 910 missed `A` later, at
/// the bound, below.)
#[test]
fn leader_cut_from_agents() {
    assert_clean(SWARM, &[1919]);
}

/// Defect 4: a switchover to a standby that has just died (or been stopped) is accepted and
/// leaves its group without a primary until the 120 s timeout (`A`, or `SW`). (133, below.)
#[test]
fn switchover_abort() {
    assert_clean(SWARM, &[26, 40, 74, 93, 94, 95, 105, 113, 129]);
}

/// Defect 5 (suspected): a promotion undone by a Demote within 1.5 s after switchovers.
/// (1708 and 1779, below.)
#[test]
fn switchover_flap() {
    assert_clean(SWARM, &[56, 84, 1032, 1735, 1883]);
}

/// Not one of the five: S6 failed when a DN was started while the leader's state said paused,
/// by an agent whose pause had lapsed with its CMS contact (a rebooted node, or an agent cut
/// from the CMS that self-fenced and restarted its primary as pending). SPEC §2 lets the
/// pause lapse; S6 is now read at the agent (a pause in force there). (20 and 223, below.)
#[test]
fn s6_with_a_lapsed_pause() {
    assert_clean(SWARM, &[28, 139, 296, 417, 479, 643, 685, 747]);
}

/// Once unclassified: a group left without a writable primary after a primary hung in D over
/// a full disk (1174), `A` misses some while after a switchover (897, 1081, 1299, 1620), and
/// a liveness miss (1067).
#[test]
fn once_unclassified() {
    assert_clean(SWARM, &[897, 1067, 1081, 1174, 1299, 1620]);
}

/// A switchover whose target died after `Switchover{term}` was sent (or an inherited one, which
/// a previous leader may have sent) kept its group out of arbitration until the 120 s timeout
/// (`A`, found by `cm-sim sweep --seeds 0..500`; 54 and 133 were listed under defects 1 and 4,
/// 223 under S6).
#[test]
fn switchover_target_died_after_it_was_sent() {
    assert_clean(SWARM, &[54, 133, 142, 149, 223, 245, 251, 256, 274, 277]);
}

/// A term check whose reply was lost stalled a sent Switchover until its timeout (the agent
/// asked each CMS once): the agent now asks the silent ones again.
#[test]
fn switchover_term_check_reply_lost() {
    assert_clean(SWARM, &[387]);
}

/// Once "A at the bound" (`cm-sim sweep --seeds 0..500` failed 83, 439, 495; 30, 229, 910,
/// 1779 were listed open): the miss is reported when B elapses, but these groups would have
/// stayed without a primary until the heal. 30 and 83 (two CMS, W1 leading, cut from the
/// agents W2 hears): §5.3's second rule now applies to a two-node W1 leader, which hands over
/// to W2. 439 and 910: the preferred candidate's agent reached one CMS of three, so it could
/// not confirm its term (§4.1) — the check now asks that of the candidate. 495: two-node W2's
/// disk hung; its peer still heard it, so no side could lead (§5.4) — exempt from the check.
/// 229 and 1779 pass again.
#[test]
fn availability_at_the_bound() {
    assert_clean(SWARM, &[30, 83, 229, 439, 495, 910, 1779]);
}

/// Once open (`L`): not converged after healing — a standby not streaming from the primary
/// (20, 188, 686, 1708), no write acknowledged (1275, 1490), no writable primary (1830); they
/// pass on the merged main.
#[test]
fn liveness_after_healing() {
    assert_clean(SWARM, &[20, 188, 686, 1275, 1490, 1708, 1830]);
}

/// `F`, found once the swarm drew the nemesis's crash loops (issue 16): four switchovers of one
/// group within 10 minutes, none requested — a restart-count switchover (§4.4) aborted, a new
/// CMS leader tried it again (the abort's hold-off is leader-local), then the disk rule (§7.2)
/// moved the primary off a full disk onto the crash-looped DN, which the restart-count rule at
/// once moved away again. The disk rule's target is no longer a member the restart-count rule
/// would switch away from.
#[test]
fn disk_rule_and_restart_rule_pass_the_primary_back() {
    assert_clean(SWARM, &[290]);
}

/// S8 (`/primary` on two members, found by the 0..2000 sweep after issue 11's fixes): a whole
/// host frozen while its DN was primary; the group failed over; at the thaw the agent took the
/// answer of a status query sent before the freeze as a fresh sample, so §8's streaming-quorum
/// exception (streaming rows read before the freeze) kept the old primary's `/primary` 200 and
/// held off its self-fence. A sample is now as old as its query. (150, S8 at 252.3 s, was
/// reported by a 0..400 sweep of a build without that fix; it fails without it and passes
/// with it.)
#[test]
fn thawed_primary_trusts_a_status_read_before_the_freeze() {
    assert_clean(SWARM, &[150, 1575, 1635]);
}

/// S3/S5 (found by the 0..2000 sweep after issue 11's fixes): a Failover sent to a member on a
/// host frozen just before it arrived was resent 5 s later with a fresh group term to another
/// member, which took acknowledged writes; at the thaw, 30 s on, the first member read its
/// Failover, its term check found no higher *quorum* term (the same leader still led) and it
/// promoted from an older position. The term check now also asks each CMS for the group's
/// highest term in its log (`Msg::GroupTermCheck`), and a newer one stops the promotion.
#[test]
fn a_superseded_failover_read_at_a_thaw() {
    assert_clean(SWARM, &[1475]);
}

/// `L` (and `A` before it), found by the 0..2000 sweep after issue 11's fixes: the only CMS's
/// disk hung while it led; it stepped down and campaigned in memory up to term 15, telling the
/// agents each term in its answers; it crashed before those writes completed, came back at
/// the term on its disk and led a term below 15 for good — every agent ignored it (SPEC §4.1).
/// A CMS now tells agents only a durable term (cm-core
/// `a_cms_tells_agents_only_a_term_its_store_holds`).
#[test]
fn agents_told_a_term_the_cms_had_not_written() {
    assert_clean(SWARM, &[1093]);
}

/// `A` (`cm-sim sweep --seeds 0..2000` on the merged main of issue 11's round): a standby whose
/// Build was running when its host crashed left a pending Build in its last report, which
/// counted against the group's build limit until the host came back; a standby whose WAL
/// diverged meanwhile was never built, and the group had no synchronous quorum. A member not
/// heard from for `instance_heartbeat_timeout` now counts no Build in progress (cm-core
/// `a_silent_members_stale_pending_build_does_not_block_another_build`).
#[test]
fn a_crashed_hosts_stale_build_blocks_another() {
    assert_clean(SWARM, &[619, 924]);
}

/// Once open (below): `F` (switchovers started and aborted again and again, 809, 1519) and
/// `A` at the bound with `L` after healing (1980); they pass since the nemesis and rejoin
/// fixes merged (`cm-sim sweep --seeds 0..2000` on the merged main).
#[test]
fn passing_since_the_nemesis_and_rejoin_fixes() {
    assert_clean(SWARM, &[809, 1519, 1980]);
}

/// Review of issue 18 defect 2: a host crash in the middle of a standby's Build leaves cm-io's
/// rewind marker, so the driver refuses every start of its data; the restarted agent had
/// forgotten the Build and the CMS rebuilds only a member whose last Build failed, so it stayed
/// Down for good (`L`). The agent now reports the refusal (`ActionError::HalfRewound`) as a
/// failed Build and the CMS builds it again, in full.
#[test]
fn a_build_cut_by_a_host_crash() {
    assert_clean(SWARM, &[37]);
}

/// `A` (`cm-sim sweep --seeds 0..2000` after issue 11's fixes): a switchover whose target's
/// processes turned zombie (1078) or hung just after the report the leader read: the
/// `Switchover{term}` went out, the promotion failed, and the group stayed out of arbitration
/// until the 120 s timeout, the target back as a healthy standby that nothing promoted. Once
/// sent, a target whose processes hang or are zombies, or that neither promotes nor reports
/// Primary at the term `instance_heartbeat_timeout` after the send, ends the request and
/// ordinary failover applies (SPEC §4.5; cm-core
/// `a_switchover_whose_target_turns_zombie_after_switchover_was_sent_ends_at_once`,
/// `a_switchover_whose_target_does_not_promote_ends_after_the_heartbeat_timeout`). 757 and
/// 871 (`A` at the bound, a DN in T during the faults) pass with the same change.
#[test]
fn a_switchover_target_that_hangs_after_switchover_was_sent() {
    assert_clean(SWARM, &[757, 871, 1078]);
}

/// `A` (`cm-sim sweep --seeds 0..2000` after issue 11's fixes): two CMS, W2 leading, cut from
/// every agent. §5.3's second rule exempted a W2 leader (every term confirmation needs its
/// weight), so nothing sent the `Notify standby` (1284: a killed standby of a synchronous 1P2S
/// group came back pending) or the stream back after a Build (824: a 1P1S group's standby)
/// until the cut healed. SPEC §5.3's second rule has no such exemption: a W2 leader cut from
/// the agents W1 hears steps down too (cm-core quorum
/// `a_w2_leader_hearing_fewer_dn_agents_than_w1_steps_down_at_exactly_10_s`). 607, which
/// once failed with that change, passes.
#[test]
fn a_two_node_w2_leader_cut_from_the_agents() {
    assert_clean(SWARM, &[607, 824, 1284]);
}

/// `A` (`cm-sim sweep --seeds 0..2000` after issue 11's fixes), 5 CMS: no leader for 18 s
/// after node 4 (the CMS leader, and group 1's primary) was isolated, although the side
/// [1, 2, 5] held three of five running cm_servers. cm_server 5 had restarted with an empty
/// store and, as SPEC §5.1 requires, neither voted nor campaigned until every other CMS node
/// answered that it never counted it — cm_server 3 was behind a one-way cut — so the side had
/// two voters of five. The core was right; the check counted a cm_server that may not vote.
/// It now counts only voters (`ServerObs::voter`).
#[test]
fn an_undecided_empty_store_is_no_voter_of_the_majority_side() {
    assert_clean(SWARM, &[1646]);
}

/// Still open after issue 11's round of fixes (`cm-sim sweep --seeds 0..2000`), by class;
/// each trace read:
/// * 1222 (`A` at 99 s; two CMS with the gateway rule, W2 on node 1): W1 (node 2) leads alone
///   at quorum term 4 while the agent of node 3 has seen W2's term 5 (W2 led alone on its side
///   before node 3 was cut from it): that agent rejects every command of W1 as from a deposed
///   term (§4.1) and W1 resends Lock1 every 0.75 s for 40 s. The agent carries term 5 in the
///   envelope of every report, which the CMS ignores. Tried: a CMS follows at a higher quorum
///   term an agent has seen (its next campaign above it). It fixes 1222 but breaks 1442: both
///   sides lead alone through the gateway (§5.4's traded span) and share agents, so each
///   learns the other's term from them and they leapfrog (quorum terms 6, 7, 8, 9 … within
///   seconds), and group 2 gets no primary. A fix must adopt only a term the agent can no
///   longer get commands at (e.g. a leader of the other side it no longer reaches). Its S1
///   (two leases at 181 s) is fixed (quorum
///   `a_restarted_w2_that_has_not_heard_its_peer_does_not_count_its_weight`).
/// * 2235 (`A` at the bound, 28.8 s of 28.7 s; two CMS without the gateway rule, sync off),
///   found by `cm-sim sweep --seeds 2000..2500` on this branch: an automatic switchover of
///   group 1 demoted 6002 at 277.4 s, AZ2 was isolated 1.4 s later and the side [1] (W2, 6001)
///   got no writable primary within the bound. Not read yet; it fails with the switchover
///   commit of this round alone too, so whether it is older was not settled.
/// * 2533 (`A` at the bound, 16.8 s, fast profile; 5 CMS, two of them CMS-only, 1P2S),
///   found by `cm-sim sweep --seeds 2500..3000` on this branch; fails with the switchover
///   commit alone too. Not read yet.
#[test]
#[ignore = "open: found by the 0..2000 sweep after issue 11's fixes"]
fn open_after_the_issue_11_sweep() {
    assert_clean(SWARM, &[1222, 2235, 2533]);
}

/// The CI smoke of `swarm-faults` (every fault of the model, see `cm_sim::swarm::SWARM_FAULTS`):
/// seeds 0..40, in four tests so that they run side by side, minus the seeds of
/// [`SWARM_FAULTS_OPEN`] (each still needs its fix; listed with its class below). A seed that
/// fails here is a new failure. Reproduce one with `cargo run -p cm-sim --release -- run
/// swarm-faults --seed N`.
fn swarm_faults_smoke(seeds: core::ops::Range<u64>) {
    let open: Vec<u64> = SWARM_FAULTS_OPEN
        .iter()
        .flat_map(|(_, s)| s.iter())
        .copied()
        .collect();
    let seeds: Vec<u64> = seeds.filter(|s| !open.contains(s)).collect();
    assert!(seeds.len() >= 7, "{seeds:?}");
    assert_clean(SWARM_FAULTS, &seeds);
}

#[test]
fn swarm_faults_smoke_0_to_10() {
    swarm_faults_smoke(0..10);
}

#[test]
fn swarm_faults_smoke_10_to_20() {
    swarm_faults_smoke(10..20);
}

#[test]
fn swarm_faults_smoke_20_to_30() {
    swarm_faults_smoke(20..30);
}

#[test]
fn swarm_faults_smoke_30_to_40() {
    swarm_faults_smoke(30..40);
}

/// `swarm-faults` (`cm-sim sweep --seeds 0..1000 --scenario swarm-faults`: 135 failed at
/// first, 129 of them drawing `stall_recovery`): an old primary whose recovery stalled
/// "starting up" after its group failed over was restarted as a stale primary or notified as
/// pending every start bound and never rebuilt (cm-core `an_old_primary_whose_recovery_
/// stalls_is_rebuilt_not_restarted`; 14, 42, 303, 487); a 1P1S synchronous group whose only
/// standby stalled counted it toward its Lock1 quorum in the availability check (115: a DN
/// refusing every connection can be neither locked nor a synchronous standby); and the
/// liveness phase gave a stall still in force at the heal one Build, not the two start
/// bounds of its cure (1, 3).
#[test]
fn swarm_faults_stalled_recovery() {
    assert_clean(SWARM_FAULTS, &[1, 3, 14, 42, 115, 303, 487]);
}

/// Still open in `cm-sim sweep --seeds 0..1000 --scenario swarm-faults` (17 of 1000 after the
/// fixes above, 135 before), by class; each needs its trace read.
const SWARM_FAULTS_OPEN: &[(&str, &[u64])] = &[
    // A filling data disk (`disk_usage` with growth): a DN left read-only below the clear
    // level after the heal (`L`), or the disk rule's switchovers begun again and again (`F`).
    ("filling disk", &[212, 269, 341, 344, 752]),
    // A stall still not cured 344–380 s after the heal, or a group without writes after it
    // (several restarts of the stalled DN, other members' faults meanwhile).
    ("stall not cured", &[583, 623, 690, 740, 826, 866, 920, 969]),
    // `A` missed by ≤ 0.1 s (a read-disk error and hung disks, 218; two-node, 838; 757 is
    // `swarm`'s own open seed).
    ("A at the bound", &[218, 757, 838]),
    // No CMS lease after the heal.
    ("no leader after the heal", &[684]),
];

#[test]
#[ignore = "open: found by the swarm-faults sweep 0..1000"]
fn open_swarm_faults() {
    let seeds: Vec<u64> = SWARM_FAULTS_OPEN
        .iter()
        .flat_map(|(_, s)| s.iter())
        .copied()
        .collect();
    assert_clean(SWARM_FAULTS, &seeds);
}
