use cm_core::config::{ClusterConfig, ONE_NODE_CONFIG};
use cm_core::journal::{DaemonKind, Reader, RecordKind};
use cm_core::monitor::{MonitorCommand, MonitorInput, StartKind};
use cm_core::{Instant, NodeId};

use super::*;

fn opening() -> (Opening, Monitor) {
    let config = ClusterConfig::from_toml_str(ONE_NODE_CONFIG).expect("config");
    let m = Monitor::new(&config, NodeId(1), 0, None);
    let o = Opening {
        kind: DaemonKind::Monitor,
        node: NodeId(1),
        config,
        seed: 0,
        restored: None,
        start_kind: StartKind::Normal,
        start: true,
    };
    (o, m)
}

/// Steps the monitor `n` times (one tick a second), journaling through the loop's hooks.
fn drive(j: &mut FileJournal, m: &mut Monitor, from: u64, n: u64) {
    for i in from..from + n {
        let now = Instant::from_secs(i);
        Journal::<Monitor>::before_step(j, m, now, &MonitorInput::Tick);
        let cmds = m.step(now, MonitorInput::Tick);
        Journal::<Monitor>::after_step(j, m, &cmds);
    }
}

fn kinds(path: &Path) -> Vec<RecordKind> {
    let bytes = fs::read(path).expect("segment");
    Reader::new(&bytes)
        .expect("header")
        .map(|r| r.expect("record").kind)
        .collect()
}

#[test]
fn a_journal_holds_the_opening_a_snapshot_and_every_step_with_its_commands() {
    let dir = tempfile::tempdir().unwrap();
    let (o, mut m) = opening();
    let mut j = FileJournal::open(dir.path(), &o, 64 << 20)
        .unwrap()
        .expect("on");
    let stats = j.stats();
    drive(&mut j, &mut m, 0, 3);
    drop(j);
    let files = segments(dir.path()).unwrap();
    assert_eq!(files.len(), 1);
    let path = dir.path().join(segment_name(0));
    use RecordKind::*;
    assert_eq!(
        kinds(&path),
        [
            Opening, Snapshot, Step, Commands, Step, Commands, Step, Commands
        ]
    );
    let bytes = fs::read(&path).unwrap();
    let recs: Vec<_> = Reader::new(&bytes).unwrap().map(Result::unwrap).collect();
    let op: journal::Opening = recs[0].decode("opening").unwrap();
    assert!(op.start);
    assert_eq!(op.kind, DaemonKind::Monitor);
    let first: Vec<MonitorCommand> = recs[3].decode("commands").unwrap();
    assert!(first.contains(&MonitorCommand::SampleAgent), "{first:?}");
    assert_eq!(stats.records_written.load(Ordering::Relaxed), 8);
    assert_eq!(
        stats.bytes_written.load(Ordering::Relaxed),
        bytes.len() as u64
    );
    assert_eq!(stats.records_dropped.load(Ordering::Relaxed), 0);
}

#[test]
fn journaling_is_off_at_zero_megabytes() {
    let dir = tempfile::tempdir().unwrap();
    let (o, _) = opening();
    assert!(FileJournal::open(dir.path(), &o, 0).unwrap().is_none());
}

/// Segments rotate, each opening with a continuation record and a snapshot; the oldest are
/// deleted to keep the bound; a restarted daemon numbers its segments after the old ones.
#[test]
fn segments_rotate_within_the_bound_and_a_restart_continues_the_numbering() {
    let dir = tempfile::tempdir().unwrap();
    let (o, mut m) = opening();
    let max = 4 * MIN_SEGMENT_BYTES;
    // A queue that holds every record: on a loaded machine the writer thread can fall behind
    // the loop, and dropped records would leave too little to rotate (what this test checks
    // is rotation, not dropping — another test covers a full queue).
    let mut j = FileJournal::open_with_capacity(dir.path(), &o, max, 100_000)
        .unwrap()
        .unwrap();
    let stats = j.stats();
    drive(&mut j, &mut m, 0, 40_000);
    drop(j);
    assert_eq!(stats.records_dropped.load(Ordering::Relaxed), 0);
    let started = stats.segments_started.load(Ordering::Relaxed);
    assert!(started > 6, "{started} segments");
    let files = segments(dir.path()).unwrap();
    let total: u64 = files.iter().map(|(_, b)| b).sum();
    assert!(total <= max + MIN_SEGMENT_BYTES, "{total} bytes kept");
    assert!(files.len() < started as usize, "{files:?}");
    assert_eq!(files.last().unwrap().0, started - 1);
    for (n, _) in &files {
        let k = kinds(&dir.path().join(segment_name(*n)));
        assert_eq!(k[..2], [RecordKind::Opening, RecordKind::Snapshot], "{n}");
    }
    let first = fs::read(dir.path().join(segment_name(files[0].0))).unwrap();
    let op: Opening = Reader::new(&first)
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .decode("opening")
        .unwrap();
    assert!(!op.start, "a rotated segment continues the run");

    let mut j = FileJournal::open(dir.path(), &o, max).unwrap().unwrap();
    drive(&mut j, &mut m, 40_000, 1);
    drop(j);
    let again = segments(dir.path()).unwrap();
    assert_eq!(again.last().unwrap().0, started);
}

/// A full queue drops records without blocking and counts them; the next step that gets
/// through writes a gap and a snapshot, and no commands without their step.
#[test]
fn a_full_queue_drops_and_counts_and_resumes_with_a_gap_and_a_snapshot() {
    let dir = tempfile::tempdir().unwrap();
    let (o, mut m) = opening();
    let (tx, rx) = mpsc::sync_channel(3);
    let shared = Arc::new(Shared {
        stats: Arc::new(JournalStats::default()),
        need_snapshot: AtomicBool::new(true),
    });
    let mut j = FileJournal {
        tx: Some(tx),
        shared: Arc::clone(&shared),
        gap: 0,
        writer: None,
    };
    // Snapshot, step, commands fill the queue; the next two steps are dropped.
    drive(&mut j, &mut m, 0, 3);
    assert_eq!(shared.stats.records_dropped.load(Ordering::Relaxed), 4);
    let mut w = Writer {
        dir: dir.path().to_owned(),
        openings: [
            encode_opening(&o).unwrap(),
            encode_opening(&journal::Opening {
                start: false,
                ..o.clone()
            })
            .unwrap(),
        ],
        segment_bytes: 1 << 20,
        max_bytes: 4 << 20,
        next: 0,
        current: None,
        rotate: false,
        failed: false,
        shared: Arc::clone(&shared),
    };
    while let Ok(item) = rx.try_recv() {
        w.handle(item);
    }
    drive(&mut j, &mut m, 3, 1);
    drop(j);
    while let Ok(item) = rx.try_recv() {
        w.handle(item);
    }
    drop(w);
    use RecordKind::*;
    assert_eq!(
        kinds(&dir.path().join(segment_name(0))),
        [
            Opening, Snapshot, Step, Commands, Gap, Snapshot, Step, Commands
        ]
    );
}
