//! Replays every seed corpus and every regression input through the fuzz targets on stable,
//! so CI exercises them even where nightly (and so cargo-fuzz) is missing.

use std::fs;
use std::path::Path;

fn replay(target: &str, run: fn(&[u8])) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut n = 0;
    for dir in [
        root.join("corpus").join(target),
        root.join("regressions").join(target),
    ] {
        let Ok(entries) = fs::read_dir(&dir) else {
            continue;
        };
        let mut files: Vec<_> = entries.filter_map(Result::ok).map(|e| e.path()).collect();
        files.sort();
        for f in files {
            let data = fs::read(&f).unwrap_or_else(|e| panic!("{}: {e}", f.display()));
            run(&data);
            n += 1;
        }
    }
    assert!(
        n > 0,
        "no corpus for {target}: seed files belong in fuzz/corpus/{target}/"
    );
    println!("{target}: replayed {n} inputs");
}

#[test]
fn frame_decoder_corpus() {
    replay("frame_decoder", cm_fuzz::frame_decoder);
}

#[test]
fn tls_material_corpus() {
    replay("tls_material", cm_fuzz::tls_material);
}

#[test]
fn config_parser_corpus() {
    replay("config_parser", cm_fuzz::config_parser);
}

#[test]
fn ctl_request_corpus() {
    replay("ctl_request", cm_fuzz::ctl_request);
}

#[test]
fn monitor_steps_corpus() {
    replay("monitor_steps", cm_fuzz::monitor_steps);
}

#[test]
fn agent_steps_corpus() {
    replay("agent_steps", cm_fuzz::agent_steps);
}

#[test]
fn server_steps_corpus() {
    replay("server_steps", cm_fuzz::server_steps);
}

#[test]
fn sim_scenario_corpus() {
    replay("sim_scenario", cm_fuzz::sim_scenario);
}

#[test]
fn journal_decoder_corpus() {
    replay("journal_decoder", cm_fuzz::journal_decoder);
}
