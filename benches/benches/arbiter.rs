//! The CMS leader's cost per DN report in steady state (a healthy group: valid primary,
//! streaming standbys), for one group of 3, 5 and 9 members, and for 1,000 groups of 3 behind
//! one leader (each agent report then carries 1,000 DN reports; the figure is per DN report).

use std::hint::black_box;
use std::time::Duration;

use cm_core::config::ClusterConfig;
use cm_core::dn::{DbState, DnReport, DnRole, Downstream, History, LockState, Upstream};
use cm_core::ids::{InstanceId, NodeId, Position, QuorumTerm, ReportSeq, Term, Timeline};
use cm_core::msg::AgentReport;
use cm_core::server::leader::Leader;
use cm_core::state::{ClusterState, InMemoryState};
use cm_core::time::{Instant, WallMillis};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};

/// `groups` groups of `members` members; member m of every group runs on node m.
fn config(groups: u32, members: u32) -> ClusterConfig {
    let mut t = String::from("name = \"bench\"\n");
    for n in 1..=members {
        t.push_str(&format!(
            "[[node]]\nid = {n}\nname = \"n{n}\"\naddress = \"10.0.0.{n}\"\naz = \"AZ1\"\n\
             state_dir = \"/s/{n}\"\nmonitor_port = 17001\n{}\n",
            if n <= 3 { "cms_port = 17101" } else { "" }
        ));
    }
    for g in 1..=groups {
        t.push_str(&format!("[[group]]\nid = {g}\n"));
        for m in 1..=members {
            t.push_str(&format!(
                "[[group.member]]\ninstance = {}\nnode = {m}\ndata_dir = \"/pg/{g}\"\nport = {}\n",
                g * 100 + m,
                10000 + g
            ));
        }
    }
    ClusterConfig::from_toml_str(&t).expect("bench config")
}

fn dn(instance: u32, primary: u32, members: u32) -> DnReport {
    let mut d = DnReport::down(InstanceId(instance));
    d.term = Term(1);
    d.db_state = DbState::Normal;
    d.position = Position::new(1, 1000);
    d.history = History::root(Timeline(1));
    d.lock = LockState::None;
    if instance == primary {
        d.role = DnRole::Primary;
        d.downstreams = (1..=members)
            .map(|m| primary - 1 + m)
            .filter(|i| *i != primary)
            .map(|i| Downstream {
                instance: InstanceId(i),
                reply_age: Duration::from_millis(200),
            })
            .collect();
    } else {
        d.role = DnRole::Standby;
        d.upstream = Some(Upstream {
            instance: InstanceId(primary),
            last_msg_age: Duration::from_millis(200),
        });
    }
    d
}

/// One agent report per node, each carrying that node's DN of every group.
fn reports(groups: u32, members: u32) -> Vec<(NodeId, AgentReport)> {
    (1..=members)
        .map(|m| {
            let dns = (1..=groups)
                .map(|g| dn(g * 100 + m, g * 100 + 1, members))
                .collect();
            (
                NodeId(m),
                AgentReport {
                    seq: ReportSeq(1),
                    dns,
                    cms_process: None,
                    normal_start: false,
                    resources: Vec::new(),
                },
            )
        })
        .collect()
}

fn elected(cfg: &ClusterConfig) -> (Leader, InMemoryState) {
    let mut state = InMemoryState::new(ClusterState::initial(cfg));
    for g in state.state_mut().groups.values_mut() {
        g.term = Term(1);
    }
    let mut leader = Leader::new(cfg);
    leader.on_elected(
        Instant::from_secs(1),
        WallMillis(1),
        QuorumTerm(1),
        &mut state,
    );
    (leader, state)
}

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("arbiter/steady_report");
    for (groups, members) in [(1u32, 3u32), (1, 5), (1, 9), (1000, 3)] {
        let cfg = config(groups, members);
        let reps = reports(groups, members);
        g.throughput(Throughput::Elements(u64::from(groups)));
        let (mut leader, mut state) = elected(&cfg);
        let mut now = Instant::from_secs(2);
        let mut i = 0usize;
        g.bench_function(format!("{groups}x{members}"), |b| {
            b.iter(|| {
                let (node, r) = &reps[i % reps.len()];
                now += Duration::from_micros(100);
                i += 1;
                black_box(leader.on_report(now, WallMillis(2), *node, r, &mut state))
            });
        });
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
