//! The local cm_server, for the agent's SampleCms/StartCms/StopCms/KillCms: started as the
//! agent's child in its own process group; found (also when a previous agent started it) by
//! scanning /proc for `cm_server` processes of this node's config and id. All blocking.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use cm_core::dn::ProcState;
use cm_io::process::Supervised;
use nix::sys::signal::{Signal, kill};

use crate::node;

/// How long a SIGTERM'ed cm_server may take to exit.
pub(super) const STOP_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a SIGKILL'ed cm_server may take to disappear.
pub(super) const KILL_TIMEOUT: Duration = Duration::from_secs(5);

/// Where the local cm_server's binary is and how it is recognised.
#[derive(Clone, Debug)]
pub(super) struct LocalServer {
    /// The cm_server binary.
    pub(super) bin: PathBuf,
    /// The config (absolute), passed as `--config`.
    pub(super) config: PathBuf,
    /// This node, passed as `--node`.
    pub(super) node: u32,
    /// The last full scan's findings ([`node::scan_cached`]).
    pub(super) cache: std::sync::Arc<node::ScanCache>,
}

impl LocalServer {
    /// The states of every cm_server process of this node.
    pub(super) fn sample(&self) -> Vec<ProcState> {
        node::scan_cached(&self.cache, "cm_server", &self.config, self.node)
            .into_iter()
            .map(|f| f.state)
            .collect()
    }

    /// Starts cm_server as our child in a new process group; its reaper thread collects it.
    pub(super) fn start(&self) -> Result<Supervised, String> {
        let mut cmd = Command::new(&self.bin);
        cmd.arg("--config")
            .arg(&self.config)
            .arg("--node")
            .arg(self.node.to_string())
            .stdin(std::process::Stdio::null());
        Supervised::spawn(cmd, None).map_err(|e| e.to_string())
    }

    /// SIGTERM every cm_server of this node and wait until none is left.
    pub(super) fn stop(&self) -> Result<(), String> {
        self.signal_and_wait(Signal::SIGTERM, STOP_TIMEOUT)
    }

    /// SIGKILL every cm_server of this node and wait until none is left.
    pub(super) fn kill(&self) -> Result<(), String> {
        self.signal_and_wait(Signal::SIGKILL, KILL_TIMEOUT)
    }

    fn live(&self) -> Vec<i32> {
        node::scan("cm_server", &self.config, self.node)
            .into_iter()
            .filter(|f| f.state != ProcState::Zombie)
            .map(|f| f.pid)
            .collect()
    }

    fn signal_and_wait(&self, sig: Signal, timeout: Duration) -> Result<(), String> {
        for pid in self.live() {
            // A process that exited meanwhile is what we want anyway.
            let _ = kill(nix::unistd::Pid::from_raw(pid), sig);
        }
        let deadline = Instant::now() + timeout;
        loop {
            let left = self.live();
            if left.is_empty() {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(format!(
                    "cm_server {left:?} still running {timeout:?} after {sig}"
                ));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// Whether `bin` can be started at all (a clearer error than the spawn's).
pub(super) fn check_binary(bin: &Path) -> Result<(), String> {
    if node::is_executable(bin) {
        Ok(())
    } else {
        Err(format!("{} is not an executable file", bin.display()))
    }
}
