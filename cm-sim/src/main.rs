//! `cm-sim`: run scenarios and seed sweeps of the deterministic cluster simulator.
//!
//! ```text
//! cm-sim list
//! cm-sim run <name|path|swarm> [--seed N] [--json] [--trace]
//! cm-sim sweep --seeds A..B [--scenario <name|path|swarm>] [--json]
//! cm-sim replay <journal dir|segment file> [--from N]
//! ```
//! Exit status: 0 ok (replay: identical), 1 violation, timing miss or replay divergence,
//! 2 usage or file error (replay: an unreadable journal).

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use cm_sim::daemon::Machines;
use cm_sim::replay;
use cm_sim::run::{Report, RunOptions, run};
use cm_sim::scenario::Scenario;
use cm_sim::swarm;

const USAGE: &str = "usage:
  cm-sim list
  cm-sim run <name|path|swarm|swarm-classic|swarm-resources|swarm-faults> [--seed N] [--json] [--trace]
  cm-sim sweep --seeds A..B [--scenario <name|path|swarm|swarm-classic|swarm-resources|swarm-faults>] [--json]
  cm-sim replay <journal dir|segment file> [--from N]";

fn scenarios_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("scenarios")
}

/// Resolves a scenario argument: `swarm`, a path, or a name in `cm-sim/scenarios/`.
fn load(arg: &str, seed: u64) -> Result<Scenario, String> {
    if let Some(s) = swarm::by_name(arg, seed) {
        return Ok(s);
    }
    let direct = PathBuf::from(arg);
    let path = if direct.is_file() {
        direct
    } else {
        scenarios_dir().join(format!("{arg}.toml"))
    };
    let text = std::fs::read_to_string(&path)
        .map_err(|e| format!("{}: {e} (try `cm-sim list`)", path.display()))?;
    Scenario::from_toml_str(&text).map_err(|e| {
        e.problems
            .iter()
            .map(|(loc, msg)| format!("{}: {loc}: {msg}", path.display()))
            .collect::<Vec<_>>()
            .join("\n")
    })
}

fn timed_run(s: &Scenario, source: &str, seed: u64, trace: bool) -> (Report, f64) {
    // Wall time is measured here, in the CLI only; the engine never reads a clock.
    #[allow(clippy::disallowed_methods)]
    let start = std::time::Instant::now();
    let r = run(s, source, seed, Box::new(Machines), RunOptions { trace });
    (r, start.elapsed().as_secs_f64())
}

fn json_of(r: &Report, wall: f64) -> serde_json::Value {
    let timings: serde_json::Map<String, serde_json::Value> = r
        .timings
        .iter()
        .map(|(k, v)| {
            (
                (*k).to_owned(),
                v.map_or(serde_json::Value::Null, serde_json::Value::from),
            )
        })
        .collect();
    serde_json::json!({
        "scenario": r.scenario,
        "seed": r.seed,
        "ok": r.ok(),
        "violations": r.violations.iter().map(|v| serde_json::json!({
            "at_s": v.at.as_secs_f64(), "rule": v.rule, "message": v.message,
        })).collect::<Vec<_>>(),
        "misses": r.misses,
        "timings": timings,
        "liveness_s": r.liveness_s,
        "sim_seconds": r.sim_seconds,
        "wall_seconds": wall,
        "events": r.events,
        "acked_writes": r.acked_writes,
        "trace_hash": format!("{:016x}", r.trace_hash),
        "repro": r.repro(),
    })
}

fn print_human(r: &Report, wall: f64) {
    for line in &r.timeline {
        println!("{line}");
    }
    println!("--- {} seed {}", r.scenario, r.seed);
    for (k, v) in &r.timings {
        match v {
            Some(v) => println!("  {k:<22} {v:.3}"),
            None => println!("  {k:<22} null"),
        }
    }
    println!(
        "  simulated {:.1} s in {:.2} s wall ({} events, {} acknowledged writes, trace {:016x})",
        r.sim_seconds, wall, r.events, r.acked_writes, r.trace_hash
    );
    if let Some(l) = r.liveness_s {
        println!("  liveness: converged {l:.1} s after healing");
    }
    report_failures(r);
}

fn report_failures(r: &Report) {
    if r.ok() {
        println!("OK");
        return;
    }
    for v in &r.violations {
        println!("VIOLATION at {}: {}", v.at, v.message);
    }
    for m in &r.misses {
        println!("TIMING MISS: {m}");
    }
    println!("state:\n{}", r.dump);
    println!("reproduce: {}", r.repro());
}

fn cmd_list() -> ExitCode {
    let mut names: Vec<(String, String)> = Vec::new();
    if let Ok(entries) = std::fs::read_dir(scenarios_dir()) {
        for e in entries.flatten() {
            let p = e.path();
            if p.extension().is_some_and(|x| x == "toml") {
                let name = p
                    .file_stem()
                    .map(|s| s.to_string_lossy().into_owned())
                    .unwrap_or_default();
                let desc = std::fs::read_to_string(&p)
                    .ok()
                    .and_then(|t| Scenario::from_toml_str(&t).ok())
                    .map_or_else(|| "(does not parse)".into(), |s| s.description);
                names.push((name, desc));
            }
        }
    }
    names.sort();
    for (n, d) in names {
        println!("{n:<30} {d}");
    }
    println!(
        "{:<30} random cluster, parameters and faults drawn from the seed",
        swarm::SWARM
    );
    println!(
        "{:<30} the generator before issue 11 (seeds found then reproduce here)",
        swarm::SWARM_CLASSIC
    );
    println!(
        "{:<30} `swarm` plus custom resources (SPEC §14: S7; scripts that fail, hang, flap, start slowly)",
        swarm::SWARM_RESOURCES
    );
    println!(
        "{:<30} `swarm` plus every other fault of the model (failed Builds, stalled recoveries, disk errors and hangs, SIGSTOP, a lost CMS store and its re-add, the leader isolated, network changes)",
        swarm::SWARM_FAULTS
    );
    ExitCode::SUCCESS
}

fn cmd_run(args: &[String]) -> Result<ExitCode, String> {
    let mut target = None;
    let (mut seed, mut json, mut trace) = (1u64, false, false);
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--seed" => {
                seed = it
                    .next()
                    .and_then(|s| s.parse().ok())
                    .ok_or("--seed needs a number")?
            }
            "--json" => json = true,
            "--trace" => trace = true,
            s if s.starts_with("--") => return Err(format!("unknown option {s}")),
            s => target = Some(s.to_owned()),
        }
    }
    let target = target.ok_or("run needs a scenario name, path or `swarm`")?;
    let s = load(&target, seed)?;
    if !json {
        println!("=== {}", s.description);
    }
    let (r, wall) = timed_run(&s, &target, seed, trace && !json);
    if json {
        println!("{}", json_of(&r, wall));
    } else {
        print_human(&r, wall);
    }
    Ok(if r.ok() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

fn parse_range(s: &str) -> Option<(u64, u64)> {
    let (a, b) = s.split_once("..")?;
    let (a, b) = (a.parse().ok()?, b.parse().ok()?);
    (a < b).then_some((a, b))
}

fn cmd_sweep(args: &[String]) -> Result<ExitCode, String> {
    let (mut range, mut target, mut json) = (None, swarm::SWARM.to_owned(), false);
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--seeds" => range = it.next().and_then(|s| parse_range(s)),
            "--scenario" => target = it.next().cloned().ok_or("--scenario needs a value")?,
            "--json" => json = true,
            s => return Err(format!("unknown argument {s}")),
        }
    }
    let (a, b) = range.ok_or("sweep needs --seeds A..B (A < B, B exclusive)")?;
    load(&target, a)?;
    let next = Arc::new(AtomicU64::new(a));
    let results: Arc<Mutex<Vec<(Report, f64)>>> = Arc::new(Mutex::new(Vec::new()));
    let panics: Arc<Mutex<Vec<(u64, String)>>> = Arc::new(Mutex::new(Vec::new()));
    // A seed whose run panics (a cm-core assertion) is a failure of that seed, not of the
    // sweep: one line, and the other seeds go on.
    std::panic::set_hook(Box::new(|info| eprintln!("panic: {info}")));
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    #[allow(clippy::disallowed_methods)]
    let start = std::time::Instant::now();
    let handles: Vec<_> = (0..threads)
        .map(|_| {
            let (next, results, target) = (next.clone(), results.clone(), target.clone());
            let panics = panics.clone();
            std::thread::spawn(move || {
                loop {
                    let seed = next.fetch_add(1, Ordering::SeqCst);
                    if seed >= b {
                        break;
                    }
                    let Ok(s) = load(&target, seed) else { break };
                    let run = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                        timed_run(&s, &target, seed, false)
                    }));
                    let Ok((r, wall)) = run else {
                        let repro =
                            format!("cargo run -p cm-sim --release -- run {target} --seed {seed}");
                        eprintln!("seed {seed}: PANICKED — {repro}");
                        if let Ok(mut v) = panics.lock() {
                            v.push((seed, repro));
                        }
                        continue;
                    };
                    if !r.ok() {
                        eprintln!("seed {seed}: FAILED — {}", r.repro());
                    }
                    if let Ok(mut v) = results.lock() {
                        v.push((r, wall));
                    }
                }
            })
        })
        .collect();
    for h in handles {
        h.join().map_err(|_| "a sweep thread panicked")?;
    }
    let wall = start.elapsed().as_secs_f64();
    let mut results = results
        .lock()
        .map_err(|_| "poisoned")?
        .drain(..)
        .collect::<Vec<_>>();
    results.sort_by_key(|(r, _)| r.seed);
    let sim: f64 = results.iter().map(|(r, _)| r.sim_seconds).sum();
    let failed: Vec<&Report> = results.iter().map(|(r, _)| r).filter(|r| !r.ok()).collect();
    let mut panicked = panics.lock().map_err(|_| "poisoned")?.clone();
    panicked.sort();
    if json {
        let runs: Vec<_> = results.iter().map(|(r, w)| json_of(r, *w)).collect();
        println!(
            "{}",
            serde_json::json!({
                "scenario": target, "seeds": [a, b], "runs": runs,
                "failed": failed.len() + panicked.len(),
                "panicked": panicked.iter().map(|(s, _)| s).collect::<Vec<_>>(),
                "sim_seconds": sim, "wall_seconds": wall, "sim_per_wall": sim / wall.max(1e-9),
            })
        );
    } else {
        for r in &failed {
            for v in &r.violations {
                println!("seed {}: {} — {}", r.seed, v.message, r.repro());
            }
            for m in &r.misses {
                println!("seed {}: timing miss {m} — {}", r.seed, r.repro());
            }
        }
        for (seed, repro) in &panicked {
            println!("seed {seed}: panicked (see stderr) — {repro}");
        }
        println!(
            "{} runs, {} failed; {:.0} simulated s in {:.1} wall s on {threads} threads = {:.0} sim-s/wall-s",
            results.len() + panicked.len(),
            failed.len() + panicked.len(),
            sim,
            wall,
            sim / wall.max(1e-9)
        );
    }
    Ok(if failed.is_empty() && panicked.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

/// `cm-sim replay`: re-feeds a daemon's journal to this build's machine (SPEC §17).
fn cmd_replay(args: &[String]) -> Result<ExitCode, String> {
    let mut path = None;
    let mut from = None;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--from" => {
                let n = it.next().ok_or("--from needs a record number")?;
                from = Some(n.parse::<u64>().map_err(|e| format!("--from {n}: {e}"))?);
            }
            p if path.is_none() && !p.starts_with("--") => path = Some(PathBuf::from(p)),
            other => return Err(format!("replay: unexpected argument {other}")),
        }
    }
    let path = path.ok_or("replay needs a journal directory or segment file")?;
    let segments = replay::load(&path)?;
    let outcome = replay::replay(&segments, from).map_err(|e| format!("cannot replay: {e}"))?;
    println!("{}: {outcome}", path.display());
    Ok(match outcome {
        replay::Outcome::Identical { .. } => ExitCode::SUCCESS,
        replay::Outcome::Diverged(_) => ExitCode::from(1),
    })
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("list") => Ok(cmd_list()),
        Some("run") => cmd_run(&args[1..]),
        Some("sweep") => cmd_sweep(&args[1..]),
        Some("replay") => cmd_replay(&args[1..]),
        _ => Err(USAGE.to_owned()),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("cm-sim: {e}");
            if !e.starts_with("usage") {
                eprintln!("{USAGE}");
            }
            ExitCode::from(2)
        }
    }
}
