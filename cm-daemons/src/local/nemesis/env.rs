//! The nemesis's private machine room: a network namespace per node joined by veth pairs to a
//! bridge in a "hub" namespace (10.77.0.N for node N, 10.77.0.254 for the hub, where the
//! nemesis itself and its client run), a cgroup v1 freezer per node (whole-node freeze and
//! kill: per-process signals race forks), a size-limited tmpfs per node for its data
//! directory, and nftables rules inside the node namespaces for partitions.
//!
//! Nothing is created in the host's network namespace. Every resource is recorded as soon as
//! it exists, and [`Env::cleanup`] (also run on drop: on an error, a panic, or after Ctrl-C
//! stopped the run) kills every process of every node and removes rules, mounts, cgroups,
//! namespaces and the directory.

use std::fs;
use std::io::Write as _;
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

/// Where cgroup v1's freezer hierarchy is mounted.
pub const FREEZER_ROOT: &str = "/sys/fs/cgroup/freezer";

/// The private subnet's prefix.
pub const SUBNET: &str = "10.77.0";

/// The hub's address on the bridge (the client's source address).
pub const HUB_ADDR: &str = "10.77.0.254";

/// Node `n`'s address.
pub fn node_addr(n: u32) -> String {
    format!("{SUBNET}.{n}")
}

/// The tools the environment runs (checked before anything is created).
pub const TOOLS: &[&str] = &["ip", "nft", "nsenter", "mount", "umount", "sh"];

/// Where `tool` is on the PATH, if anywhere.
pub fn which(tool: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_else(|| "/usr/sbin:/usr/bin:/sbin:/bin".into());
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/sbin"].map(PathBuf::from))
        .map(|d| d.join(tool))
        .find(|p| p.is_file())
}

/// What the machine lacks for a nemesis run, in words (empty: nothing).
pub fn missing_prerequisites(is_root: bool) -> Vec<String> {
    let mut out = Vec::new();
    if !is_root {
        out.push(
            "cm_local nemesis must run as root: it creates network namespaces, veth pairs and \
             nftables rules, mounts a tmpfs per node and freezes nodes through cgroups \
             (run it again with sudo)"
                .into(),
        );
    }
    for t in TOOLS {
        if which(t).is_none() {
            let pkg = match *t {
                "nft" => "nftables",
                "ip" => "iproute2",
                _ => "util-linux",
            };
            out.push(format!(
                "`{t}` is not installed (Debian/Ubuntu: sudo apt-get install {pkg})"
            ));
        }
    }
    if !Path::new(FREEZER_ROOT).join("freezer.state").exists()
        && !Path::new(FREEZER_ROOT).join("cgroup.procs").exists()
    {
        out.push(format!(
            "cgroup v1's freezer is not mounted at {FREEZER_ROOT} (whole-node freeze needs it: \
             mount -t cgroup -o freezer freezer {FREEZER_ROOT})"
        ));
    }
    out
}

/// Runs a command to completion, failing with its output.
pub fn run(cmd: &mut Command) -> anyhow::Result<String> {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("cannot run {cmd:?}"))?;
    if !out.status.success() {
        bail!(
            "{cmd:?} failed ({}): {}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout).trim(),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn ip(args: &[&str]) -> anyhow::Result<String> {
    run(Command::new("ip").args(args))
}

/// The rules cutting node traffic from `peers` (as nftables text): input from them always,
/// output to them too when `both_ways`.
pub fn partition_rules(peers: &[String], both_ways: bool) -> String {
    // nft's anonymous set: elements separated by `,`; the rule by `;` before the `}`.
    let set = peers.join(", ");
    let mut t = format!(
        "table inet nemesis {{\n  chain input {{ type filter hook input priority 0; policy accept; \
         ip saddr {{ {set} }} drop; }}\n"
    );
    if both_ways {
        t += &format!(
            "  chain output {{ type filter hook output priority 0; policy accept; \
             ip daddr {{ {set} }} drop; }}\n"
        );
    }
    t + "}\n"
}

/// The run tag and its process id if `name` names a resource of a nemesis run: its
/// namespaces (`cmnem<pid>-hub`, `cmnem<pid>-n1`), cgroups, tmpfs sources (`cmnem<pid>-fs1`),
/// or a test's (`cmnemt<pid>-…`).
pub fn run_tag(name: &str) -> Option<(&str, u32)> {
    let (tag, _) = name.split_once('-')?;
    let digits = tag.strip_prefix("cmnem")?;
    let digits = digits.strip_prefix('t').unwrap_or(digits);
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some((tag, digits.parse().ok()?))
}

/// `name`'s run tag if it belongs to a run whose process is gone: a run killed before its
/// cleanup could run (SIGKILL, the end of a login session, a machine's OOM killer). A pid
/// reused since is taken as alive, so a live run's resources are never touched.
fn orphan_tag(name: &str) -> Option<String> {
    run_tag(name)
        .filter(|(_, pid)| !Path::new(&format!("/proc/{pid}")).exists())
        .map(|(tag, _)| tag.to_owned())
}

/// A path field of `/proc/mounts`, whose space, tab, newline and backslash are octal escapes.
fn unescape_mount_path(field: &str) -> PathBuf {
    let mut out = Vec::with_capacity(field.len());
    let b = field.as_bytes();
    let mut i = 0;
    while i < b.len() {
        let octal = b
            .get(i + 1..i + 4)
            .filter(|d| d.iter().all(|c| (b'0'..=b'7').contains(c)));
        match (b[i], octal) {
            (b'\\', Some(d)) => {
                out.push((d[0] - b'0') * 64 + (d[1] - b'0') * 8 + (d[2] - b'0'));
                i += 4;
            }
            (c, _) => {
                out.push(c);
                i += 1;
            }
        }
    }
    use std::os::unix::ffi::OsStringExt as _;
    PathBuf::from(std::ffi::OsString::from_vec(out))
}

/// Removes what earlier nemesis runs that were killed before their cleanup left on this
/// machine — their processes (through their freezer cgroups, and a postmaster on their data
/// filesystems), tmpfs mounts, cgroups and network namespaces — and returns a line for each
/// thing removed or that could not be. Their run directories stay (logs and journals for a
/// post-mortem; the next run refuses an existing `--dir`). Resources of a live run, this
/// machine's other namespaces and mounts are never touched: only names of the nemesis's own
/// form whose run's process is gone.
pub fn reap_orphans() -> Vec<String> {
    let mut notes = Vec::new();
    let cgroups: Vec<PathBuf> = fs::read_dir(FREEZER_ROOT)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| orphan_tag(&e.file_name().to_string_lossy()).is_some())
        .map(|e| e.path())
        .collect();
    for cg in &cgroups {
        let pids = || -> Vec<i32> {
            fs::read_to_string(cg.join("cgroup.procs"))
                .unwrap_or_default()
                .lines()
                .filter_map(|l| l.trim().parse().ok())
                .collect()
        };
        let _ = fs::write(cg.join("freezer.state"), "THAWED");
        let deadline = Instant::now() + Duration::from_secs(10);
        while !pids().is_empty() && Instant::now() < deadline {
            for p in pids() {
                let _ = kill(Pid::from_raw(p), Signal::SIGKILL);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        if !pids().is_empty() {
            notes.push(format!(
                "processes {:?} of the interrupted run's {} survived SIGKILL",
                pids(),
                cg.display()
            ));
        }
    }
    let mounts = fs::read_to_string("/proc/mounts").unwrap_or_default();
    for line in mounts.lines() {
        let mut fields = line.split(' ');
        let (Some(source), Some(point)) = (fields.next(), fields.next()) else {
            continue;
        };
        if orphan_tag(source).is_none() || !source.contains("-fs") {
            continue;
        }
        let point = unescape_mount_path(point);
        // The postmaster that made the base backups runs outside the node cgroups.
        for data in fs::read_dir(&point).into_iter().flatten().flatten() {
            if let Some(pid) = super::super::procs::postmaster_pid(&data.path()) {
                let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
            }
        }
        if run(Command::new("umount").arg(&point)).is_ok()
            || run(Command::new("umount").arg("-l").arg(&point)).is_ok()
        {
            notes.push(format!("unmounted {source} from {}", point.display()));
        } else {
            notes.push(format!("cannot unmount {}", point.display()));
        }
    }
    for cg in cgroups {
        let mut removed = false;
        for _ in 0..100 {
            if fs::remove_dir(&cg).is_ok() {
                removed = true;
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        notes.push(if removed {
            format!("removed the cgroup {}", cg.display())
        } else {
            format!("cannot remove the cgroup {}", cg.display())
        });
    }
    let mut namespaces: Vec<String> = fs::read_dir("/run/netns")
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| orphan_tag(n).is_some())
        .collect();
    namespaces.sort();
    for ns in namespaces {
        notes.push(match ip(&["netns", "del", &ns]) {
            Ok(_) => format!("removed the network namespace {ns}"),
            Err(e) => format!("{e:#}"),
        });
    }
    notes
}

/// The resources of one nemesis run.
#[derive(Debug)]
pub struct Env {
    /// The run's tag (`cmnem<pid>`): prefix of its namespaces and cgroups.
    pub tag: String,
    /// The run directory.
    pub dir: PathBuf,
    /// Size of each node's data filesystem.
    pub disk_mb: u64,
    /// Keep the directory at cleanup.
    pub keep: bool,
    nodes: u32,
    netns: Vec<String>,
    cgroups: Vec<PathBuf>,
    mounts: Vec<PathBuf>,
    launchers: Vec<Option<Child>>,
    dir_created: bool,
    cleaned: bool,
}

impl Env {
    /// An empty environment (nothing created yet) for `nodes` nodes in `dir`.
    pub fn new(dir: PathBuf, disk_mb: u64, nodes: u32) -> Self {
        Self {
            tag: format!("cmnem{}", std::process::id()),
            dir,
            disk_mb,
            keep: false,
            nodes,
            netns: Vec::new(),
            cgroups: Vec::new(),
            mounts: Vec::new(),
            launchers: (0..nodes).map(|_| None).collect(),
            dir_created: false,
            cleaned: false,
        }
    }

    /// The hub namespace's name.
    pub fn hub(&self) -> String {
        format!("{}-hub", self.tag)
    }

    /// Node `n`'s namespace name.
    pub fn netns(&self, n: u32) -> String {
        format!("{}-n{n}", self.tag)
    }

    /// Node `n`'s freezer cgroup.
    pub fn cgroup(&self, n: u32) -> PathBuf {
        Path::new(FREEZER_ROOT).join(format!("{}-n{n}", self.tag))
    }

    /// Node `n`'s data filesystem (a tmpfs mount point).
    pub fn fs_dir(&self, n: u32) -> PathBuf {
        self.dir.join(format!("fs{n}"))
    }

    /// Node `n`'s data directory (inside its filesystem, so that a Build's sibling copy and
    /// its rename stay on it).
    pub fn data_dir(&self, n: u32) -> PathBuf {
        self.fs_dir(n).join(format!("dn{n}"))
    }

    /// Creates everything: the directory, namespaces, bridge, veths, cgroups and mounts.
    /// On an error what was created so far stays recorded for [`Env::cleanup`].
    pub fn create(&mut self) -> anyhow::Result<()> {
        if self.dir.exists() {
            bail!(
                "{} exists: give another --dir (the nemesis removes its directory at the end)",
                self.dir.display()
            );
        }
        fs::create_dir_all(&self.dir)
            .with_context(|| format!("cannot create {}", self.dir.display()))?;
        self.dir_created = true;
        self.dir = self.dir.canonicalize()?;
        {
            use std::os::unix::fs::PermissionsExt as _;
            fs::set_permissions(&self.dir, fs::Permissions::from_mode(0o755))?;
        }
        if let Some(a) = super::super::untraversable_ancestor(&self.dir) {
            bail!(
                "the database user cannot enter {} (no x permission for others): choose another \
                 --dir, e.g. /tmp/cm-nemesis",
                a.display()
            );
        }
        let hub = self.hub();
        ip(&["netns", "add", &hub])?;
        self.netns.push(hub.clone());
        ip(&["-n", &hub, "link", "set", "lo", "up"])?;
        ip(&["-n", &hub, "link", "add", "br0", "type", "bridge"])?;
        ip(&[
            "-n",
            &hub,
            "addr",
            "add",
            &format!("{HUB_ADDR}/24"),
            "dev",
            "br0",
        ])?;
        ip(&["-n", &hub, "link", "set", "br0", "up"])?;
        for n in 1..=self.nodes {
            let ns = self.netns(n);
            ip(&["netns", "add", &ns])?;
            self.netns.push(ns.clone());
            ip(&["-n", &ns, "link", "set", "lo", "up"])?;
            let v = format!("v{n}");
            ip(&[
                "-n", &hub, "link", "add", &v, "type", "veth", "peer", "name", "eth0", "netns", &ns,
            ])?;
            ip(&["-n", &hub, "link", "set", &v, "master", "br0", "up"])?;
            ip(&[
                "-n",
                &ns,
                "addr",
                "add",
                &format!("{}/24", node_addr(n)),
                "dev",
                "eth0",
            ])?;
            ip(&["-n", &ns, "link", "set", "eth0", "up"])?;

            let cg = self.cgroup(n);
            fs::create_dir(&cg).with_context(|| format!("cannot create {}", cg.display()))?;
            self.cgroups.push(cg);

            let fsd = self.fs_dir(n);
            fs::create_dir(&fsd)?;
            run(Command::new("mount").args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={}m,mode=0755", self.disk_mb),
                &format!("{}-fs{n}", self.tag),
                &fsd.display().to_string(),
            ]))?;
            self.mounts.push(fsd);
        }
        Ok(())
    }

    /// Moves the calling thread into the hub namespace: sockets it (and the threads and
    /// processes it starts afterwards) opens are on the bridge.
    pub fn enter_hub(&self) -> anyhow::Result<()> {
        let f = fs::File::open(format!("/run/netns/{}", self.hub()))?;
        nix::sched::setns(&f, nix::sched::CloneFlags::CLONE_NEWNET)
            .context("cannot enter the hub namespace")?;
        Ok(())
    }

    /// Starts `program args` as node `n`: in its cgroup (joined before the exec, so nothing
    /// it forks escapes) and its namespace, in its own process group, output to `log`.
    pub fn start_node(
        &mut self,
        n: u32,
        program: &Path,
        args: &[String],
        log: &Path,
    ) -> anyhow::Result<()> {
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .with_context(|| format!("cannot open {}", log.display()))?;
        let procs = self.cgroup(n).join("cgroup.procs");
        let netns = format!("/run/netns/{}", self.netns(n));
        let child = Command::new("sh")
            .arg("-c")
            .arg(r#"echo $$ > "$0" && ns="$1" && shift && exec nsenter --net="$ns" -- "$@""#)
            .arg(&procs)
            .arg(&netns)
            .arg(program)
            .args(args)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .process_group(0)
            .spawn()
            .context("cannot start a node")?;
        if let Some(mut old) = self.launchers[n as usize - 1].replace(child) {
            let _ = old.try_wait();
        }
        Ok(())
    }

    /// The pids in node `n`'s cgroup.
    pub fn pids(&self, n: u32) -> Vec<i32> {
        fs::read_to_string(self.cgroup(n).join("cgroup.procs"))
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.trim().parse().ok())
            .collect()
    }

    fn set_freezer(&self, n: u32, state: &str) -> anyhow::Result<()> {
        let f = self.cgroup(n).join("freezer.state");
        fs::write(&f, state).with_context(|| format!("cannot write {state} to {}", f.display()))?;
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let now = fs::read_to_string(&f).unwrap_or_default();
            if now.trim() == state {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!(
                    "node {n}'s freezer is {} after 10 s, not {state}",
                    now.trim()
                );
            }
            // FREEZING retries are the kernel's; writing again nudges a stuck one.
            let _ = fs::write(&f, state);
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Freezes every process of node `n` at once.
    pub fn freeze(&self, n: u32) -> anyhow::Result<()> {
        self.set_freezer(n, "FROZEN")
    }

    /// Thaws node `n`.
    pub fn thaw(&self, n: u32) -> anyhow::Result<()> {
        self.set_freezer(n, "THAWED")
    }

    /// SIGCONT to every process of node `n` (after a postmaster SIGSTOP).
    pub fn cont_all(&self, n: u32) {
        for p in self.pids(n) {
            let _ = kill(Pid::from_raw(p), Signal::SIGCONT);
        }
    }

    /// Kills every process of node `n` at once: frozen, SIGKILLed, thawed (so nothing forks
    /// in between), then waits until its cgroup is empty.
    pub fn kill_node(&mut self, n: u32) -> anyhow::Result<()> {
        let frozen = self.freeze(n);
        for p in self.pids(n) {
            let _ = kill(Pid::from_raw(p), Signal::SIGKILL);
        }
        self.thaw(n)?;
        frozen?;
        if let Some(mut c) = self.launchers[n as usize - 1].take() {
            let _ = c.wait();
        }
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let left = self.pids(n);
            if left.is_empty() {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!("node {n}: processes {left:?} survived SIGKILL for 15 s");
            }
            for p in left {
                let _ = kill(Pid::from_raw(p), Signal::SIGKILL);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Runs `nft -f -` with `rules` inside node `n`'s namespace.
    pub fn nft(&self, n: u32, rules: &str) -> anyhow::Result<()> {
        let mut child = Command::new("nsenter")
            .arg(format!("--net=/run/netns/{}", self.netns(n)))
            .args(["--", "nft", "-f", "-"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .context("cannot run nft")?;
        child
            .stdin
            .take()
            .context("nft stdin")?
            .write_all(rules.as_bytes())?;
        let out = child.wait_with_output()?;
        if !out.status.success() {
            bail!(
                "nft in node {n}'s namespace refused:\n{rules}\n{}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(())
    }

    /// Cuts node `n` from `peers` (input only, or both ways).
    pub fn partition(&self, n: u32, peers: &[u32], both_ways: bool) -> anyhow::Result<()> {
        let addrs: Vec<String> = peers.iter().map(|p| node_addr(*p)).collect();
        self.nft(
            n,
            &format!("flush ruleset\n{}", partition_rules(&addrs, both_ways)),
        )
    }

    /// Removes every rule in node `n`'s namespace.
    pub fn heal_net(&self, n: u32) -> anyhow::Result<()> {
        self.nft(n, "flush ruleset\n")
    }

    /// The file that fills node `n`'s data filesystem.
    fn filler(&self, n: u32) -> PathBuf {
        self.fs_dir(n).join("nemesis.fill")
    }

    /// Fills node `n`'s data filesystem to `pct` percent (allocated, not sparse).
    pub fn fill_disk(&self, n: u32, pct: u8) -> anyhow::Result<u8> {
        let fsd = self.fs_dir(n);
        let st = nix::sys::statvfs::statvfs(&fsd)?;
        let block = st.fragment_size();
        let total = st.blocks() * block;
        let used = (st.blocks() - st.blocks_free()) * block;
        let want = total * u64::from(pct) / 100;
        if want > used {
            let f = fs::File::create(self.filler(n))?;
            let len = i64::try_from(want - used).unwrap_or(i64::MAX);
            nix::fcntl::fallocate(&f, nix::fcntl::FallocateFlags::empty(), 0, len)
                .context("cannot fill the data filesystem")?;
        }
        Ok(cm_io::disk::usage_pct(&fsd)?)
    }

    /// Frees what [`Env::fill_disk`] took.
    pub fn free_disk(&self, n: u32) -> anyhow::Result<()> {
        match fs::remove_file(self.filler(n)) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e.into()),
            _ => Ok(()),
        }
    }

    /// Removes everything, in reverse: processes, rules (with their namespaces), mounts,
    /// cgroups, namespaces, the directory. Idempotent; returns what could not be removed.
    pub fn cleanup(&mut self) -> Vec<String> {
        if self.cleaned {
            return Vec::new();
        }
        self.cleaned = true;
        let mut notes = Vec::new();
        for n in 1..=self.nodes {
            if self.cgroups.contains(&self.cgroup(n))
                && let Err(e) = self.kill_node(n)
            {
                notes.push(format!("{e:#}"));
            }
        }
        // A postmaster outside the cgroups (the one that made the base backups).
        for n in 1..=self.nodes {
            if let Some(pid) = super::super::procs::postmaster_pid(&self.data_dir(n)) {
                let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
            }
        }
        for m in self.mounts.drain(..).rev() {
            let ok = run(Command::new("umount").arg(&m)).is_ok()
                || run(Command::new("umount").arg("-l").arg(&m)).is_ok();
            if !ok {
                notes.push(format!("cannot unmount {}", m.display()));
            }
        }
        for cg in self.cgroups.drain(..).rev() {
            let mut removed = false;
            for _ in 0..100 {
                if fs::remove_dir(&cg).is_ok() {
                    removed = true;
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            if !removed {
                notes.push(format!("cannot remove the cgroup {}", cg.display()));
            }
        }
        for ns in self.netns.drain(..).rev() {
            if let Err(e) = ip(&["netns", "del", &ns]) {
                notes.push(format!("{e:#}"));
            }
        }
        if self.dir_created
            && !self.keep
            && let Err(e) = fs::remove_dir_all(&self.dir)
        {
            notes.push(format!("cannot remove {}: {e}", self.dir.display()));
        }
        notes
    }
}

impl Drop for Env {
    fn drop(&mut self) {
        for note in self.cleanup() {
            eprintln!("nemesis cleanup: {note}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partition_rules_are_valid_nft_syntax_in_shape() {
        let r = partition_rules(&["10.77.0.2".into(), "10.77.0.3".into()], true);
        assert!(r.contains("ip saddr { 10.77.0.2, 10.77.0.3 } drop;"), "{r}");
        assert!(r.contains("ip daddr { 10.77.0.2, 10.77.0.3 } drop;"), "{r}");
        let one = partition_rules(&["10.77.0.1".into()], false);
        assert!(one.contains("chain input"));
        assert!(!one.contains("chain output"));
    }

    #[test]
    fn run_tags_are_recognised_only_in_the_nemesis_s_own_form() {
        assert_eq!(run_tag("cmnem12234-hub"), Some(("cmnem12234", 12234)));
        assert_eq!(run_tag("cmnem7-n3"), Some(("cmnem7", 7)));
        assert_eq!(run_tag("cmnemt99-fs1"), Some(("cmnemt99", 99)));
        for other in [
            "cmnem-hub",
            "cmnem12x-n1",
            "cmnem+5-n1",
            "cmnem5",
            "netns0",
            "cni-1234",
            "tmpfs",
            "cmnemtt5-n1",
        ] {
            assert_eq!(run_tag(other), None, "{other}");
        }
    }

    #[test]
    fn mount_paths_are_unescaped_as_proc_mounts_writes_them() {
        assert_eq!(
            unescape_mount_path(r"/tmp/a\040b/fs1"),
            PathBuf::from("/tmp/a b/fs1")
        );
        assert_eq!(unescape_mount_path(r"/x\134y"), PathBuf::from(r"/x\y"));
        assert_eq!(unescape_mount_path(r"/x\9"), PathBuf::from(r"/x\9"));
        assert_eq!(unescape_mount_path("/plain"), PathBuf::from("/plain"));
    }

    /// What a run killed before its cleanup left (a process frozen in its node, its tmpfs,
    /// cgroups and namespaces) is removed by the next run's reaping; its directory stays.
    /// Needs root and the tools; says so and passes vacuously only when they are missing.
    #[test]
    fn an_interrupted_run_s_leftovers_are_reaped_and_its_directory_kept() {
        let missing = missing_prerequisites(nix::unistd::geteuid().is_root());
        if !missing.is_empty() {
            eprintln!("skipped: {}", missing.join("; "));
            return;
        }
        // A tag whose pid is not running: a child that has exited and been waited for.
        let mut gone = Command::new("true").spawn().unwrap();
        let dead = gone.id();
        gone.wait().unwrap();
        assert!(!Path::new(&format!("/proc/{dead}")).exists());
        let dir = std::env::temp_dir().join(format!("cm-nemesis-orphan-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        let mut env = Env::new(dir.clone(), 16, 2);
        env.tag = format!("cmnemt{dead}");
        env.create().unwrap();
        env.start_node(
            1,
            Path::new("/bin/sleep"),
            &["600".into()],
            &dir.join("n1.log"),
        )
        .unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        while env.pids(1).is_empty() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        let pid = env.pids(1)[0];
        env.freeze(1).unwrap();
        let (hub, n1, cg) = (env.hub(), env.netns(1), env.cgroup(1));
        // The run dies here: nothing of its own cleanup runs.
        env.cleaned = true;
        drop(env);
        let notes = reap_orphans();
        assert!(
            notes
                .iter()
                .all(|n| !n.contains("cannot") && !n.contains("survived")),
            "{notes:?}"
        );
        assert!(notes.iter().any(|n| n.contains(&hub)), "{notes:?}");
        let gone_or_zombie = |p: i32| {
            fs::read_to_string(format!("/proc/{p}/stat")).map_or(true, |s| {
                s.rsplit(") ").next().is_some_and(|r| r.starts_with('Z'))
            })
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while !gone_or_zombie(pid) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        assert!(gone_or_zombie(pid), "pid {pid} still runs");
        for ns in [hub, n1] {
            assert!(!Path::new(&format!("/run/netns/{ns}")).exists(), "{ns}");
        }
        assert!(!cg.exists());
        let mounts = fs::read_to_string("/proc/mounts").unwrap();
        assert!(!mounts.contains(&dir.display().to_string()), "{mounts}");
        assert!(dir.exists(), "the run directory is kept for a post-mortem");
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn without_root_the_nemesis_refuses_and_says_why() {
        let m = missing_prerequisites(false);
        assert!(
            m.iter()
                .any(|r| r.contains("must run as root") && r.contains("network namespaces")),
            "{m:?}"
        );
    }

    /// Everything a run creates is gone after cleanup, with a process still running (and
    /// frozen) in a node. Needs root and the tools; says so and passes vacuously only
    /// when they are missing.
    #[test]
    fn cleanup_removes_processes_rules_mounts_cgroups_namespaces_and_the_directory() {
        let missing = missing_prerequisites(nix::unistd::geteuid().is_root());
        if !missing.is_empty() {
            eprintln!("skipped: {}", missing.join("; "));
            return;
        }
        let dir = std::env::temp_dir().join(format!("cm-nemesis-env-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        let mut env = Env::new(dir.clone(), 16, 2);
        env.tag = format!("cmnemt{}", std::process::id());
        env.create().unwrap();
        let log = dir.join("n1.log");
        env.start_node(1, Path::new("/bin/sleep"), &["600".into()], &log)
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        while env.pids(1).is_empty() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        let pid = env.pids(1)[0];
        // It runs in node 1's namespace, not ours: it joins it right after it entered the
        // node's cgroup (the launcher's setns), so allow it that moment on a busy machine.
        let ns = |p: &str| fs::read_link(p).unwrap();
        let own = ns("/proc/self/ns/net");
        while ns(&format!("/proc/{pid}/ns/net")) == own && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        assert_ne!(ns(&format!("/proc/{pid}/ns/net")), own);
        env.partition(1, &[2], true).unwrap();
        let fill = env.fill_disk(2, 90).unwrap();
        assert!(fill >= 89, "filled to {fill} %");
        env.freeze(1).unwrap();
        let (hub, n1, cg) = (env.hub(), env.netns(1), env.cgroup(1));
        let notes = env.cleanup();
        assert!(notes.is_empty(), "{notes:?}");
        assert!(!Path::new(&format!("/proc/{pid}")).exists());
        for ns in [hub, n1] {
            assert!(!Path::new(&format!("/run/netns/{ns}")).exists(), "{ns}");
        }
        assert!(!cg.exists());
        let mounts = fs::read_to_string("/proc/mounts").unwrap();
        assert!(!mounts.contains(&dir.display().to_string()), "{mounts}");
        assert!(!dir.exists());
    }
}
