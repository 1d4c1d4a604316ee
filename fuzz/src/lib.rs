//! Fuzz target logic. Each function takes arbitrary bytes and must never panic; the libFuzzer
//! binaries in `fuzz_targets/` call them, and `tests/corpus_replay.rs` replays every corpus file
//! through them on stable.

mod agent_steps;
pub mod bytes;
mod monitor_steps;
mod server_steps;
mod sim_scenario;

pub use agent_steps::agent_steps;
pub use monitor_steps::monitor_steps;
pub use server_steps::server_steps;
pub use sim_scenario::sim_scenario;

use clap::Parser;
use cm_core::codec;
use cm_core::config::ClusterConfig;
use cm_core::msg::{Envelope, Msg};

/// The frame decoder: arbitrary bytes as a stream; whatever decodes must re-encode to the same
/// frame (the codec is canonical).
pub fn frame_decoder(data: &[u8]) {
    let mut rest = data;
    while let Ok(Some((env, used))) = codec::decode_frame(rest) {
        let again = codec::encode(&env).expect("a decoded envelope re-encodes");
        assert_eq!(codec::decode(&again).expect("re-decodes"), env);
        rest = &rest[used..];
    }
    let _ = codec::decode_persisted::<cm_core::state::ClusterState>(data);
}

/// The journal reader (SPEC §17): arbitrary bytes as a segment. Every record decodes as each
/// daemon's types or yields an error; replaying the bytes as a journal gives an outcome or an
/// error. Nothing panics.
pub fn journal_decoder(data: &[u8]) {
    use cm_core::agent::{Agent, AgentCommand, AgentInput};
    use cm_core::journal::{Opening, Reader, RecordKind, Step};
    use cm_core::monitor::{Monitor, MonitorCommand, MonitorInput};
    use cm_core::server::{Server, ServerCommand, ServerInput};
    let Ok(reader) = Reader::new(data) else {
        return;
    };
    for rec in reader {
        let Ok(rec) = rec else {
            break;
        };
        match rec.kind {
            RecordKind::Opening => drop(rec.decode::<Opening>("opening")),
            RecordKind::Snapshot => {
                drop(rec.decode::<Monitor>("snapshot"));
                drop(rec.decode::<Agent>("snapshot"));
                drop(rec.decode::<Server>("snapshot"));
            }
            RecordKind::Step => {
                drop(rec.decode::<Step<MonitorInput>>("step"));
                drop(rec.decode::<Step<AgentInput>>("step"));
                drop(rec.decode::<Step<ServerInput>>("step"));
            }
            RecordKind::Commands => {
                drop(rec.decode::<Vec<MonitorCommand>>("commands"));
                drop(rec.decode::<Vec<AgentCommand>>("commands"));
                drop(rec.decode::<Vec<ServerCommand>>("commands"));
            }
            RecordKind::Gap => drop(rec.decode::<u64>("gap")),
        }
    }
    let segment = cm_sim::replay::Segment {
        name: "fuzz".into(),
        bytes: data.to_vec(),
    };
    let _ = cm_sim::replay::replay(&[segment], None);
}

/// The cluster config parser: any text either parses into a config that validates clean, or
/// yields an error that names what is wrong.
pub fn config_parser(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match ClusterConfig::from_toml_str(text) {
        Ok(cfg) => assert!(cfg.validate().is_empty(), "a parsed config is valid"),
        Err(e) => assert!(!e.to_string().is_empty(), "errors say something"),
    }
}

/// The TLS material loaders (SPEC §16): arbitrary bytes as a PEM file of certificates, as a
/// PEM private key, as a certificate's DER (its expiry), and as a link hello. Errors are
/// values; nothing panics.
pub fn tls_material(data: &[u8]) {
    use cm_io::transport::{handshake, tls};
    if let Ok(certs) = tls::parse_certs(data) {
        for c in &certs {
            let _ = tls::not_after_unix(c);
        }
    }
    let _ = tls::parse_key(data);
    let _ = tls::not_after_unix(data);
    let _ = handshake::parse_hello(data);
}

/// The ctl request paths: cm_ctl's argument parser on whitespace-split text, and ctl requests
/// decoded from frames.
pub fn ctl_request(data: &[u8]) {
    if let Ok(text) = std::str::from_utf8(data) {
        let mut argv = vec!["cm_ctl"];
        argv.extend(text.split_whitespace());
        if let Ok(cli) = cm_daemons::ctl_cli::Cli::try_parse_from(argv) {
            let _ = cm_daemons::ctl_cli::operation(sample_config(), &cli.command);
        }
    }
    if let Ok(Envelope {
        msg: Msg::CtlRequest { req, .. },
        ..
    }) = codec::decode(data)
    {
        let _ = format!("{req:?}");
    }
}

/// [`SAMPLE_CONFIG`] parsed once (parsing per input would dominate the step targets).
pub fn sample_config() -> &'static ClusterConfig {
    static CONFIG: std::sync::OnceLock<ClusterConfig> = std::sync::OnceLock::new();
    CONFIG.get_or_init(|| ClusterConfig::from_toml_str(SAMPLE_CONFIG).expect("sample config"))
}

/// A small valid cluster config used by targets that need one.
pub const SAMPLE_CONFIG: &str = cm_core::config::EXAMPLE_CONFIG;
