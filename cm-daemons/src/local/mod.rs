//! `cm_local`: a whole three-node cluster on this machine with one command, for a newcomer to
//! try the cluster manager and for the end-to-end tests and the failover benchmark, which drive
//! the same code.
//!
//! Layout under the cluster directory (`./.local-cluster` by default):
//! `cluster.toml`, `tls/` (a generated CA, node and operator certificates; keys 0600), `nodeN/` (state directory of node N), `data/dnN` (data
//! directory of DN 600N, owned by the database OS user), `logs/` (one log per om_monitor, whose
//! children inherit it) and `cm_local.pid` (the foreground launcher, for `cm_local down`).

pub mod bench;
pub mod cluster;
pub mod db;
pub mod flood_bench;
pub mod footprint;
pub mod http_bench;
pub mod nemesis;
pub mod procs;

use std::fmt::Write as _;
use std::net::TcpListener;
use std::path::{Path, PathBuf};

use cm_core::params::Profile;

pub use cluster::{KEEP_JOURNALS_ENV, LocalCluster};

/// Where Debian/Ubuntu install the PostgreSQL 15 server binaries.
pub const DEFAULT_PG_BIN: &str = "/usr/lib/postgresql/15/bin";

/// The OS user that runs PostgreSQL (initdb refuses root).
pub const DB_OS_USER: &str = "postgres";

/// Number of nodes (each with a CMS, an om_monitor and one DN of the single group).
pub const NODES: u32 = 3;

/// The tools the launcher and the agents run.
pub const PG_TOOLS: &[&str] = &["postgres", "initdb", "pg_ctl", "pg_basebackup", "pg_rewind"];

/// How to bring up a local cluster.
#[derive(Clone, Debug)]
pub struct LocalOptions {
    /// The cluster directory (created; removed at teardown unless `keep`).
    pub dir: PathBuf,
    /// Parameter profile.
    pub profile: Profile,
    /// Directory of the PostgreSQL binaries.
    pub pg_bin: PathBuf,
    /// Directory of om_monitor, cm_agent, cm_server and cm_ctl.
    pub cm_bin: PathBuf,
    /// Extra `[params]` lines (`name = value`, TOML syntax) appended after the profile.
    pub extra_params: Vec<(String, String)>,
    /// Keep the directory at teardown.
    pub keep: bool,
    /// Durable data as in production: data checksums and fsync on (the demo default is off).
    pub durable: bool,
    /// Add the example custom resource (`cm_local up`: a `sleep` on every node kept alive by
    /// the shipped `resource-example.sh`, so `cm_ctl query` shows a resource table).
    pub example_resource: bool,
}

impl LocalOptions {
    /// Options with the defaults: PostgreSQL 15 from Debian's path, the cluster manager
    /// binaries next to the running executable.
    pub fn new(dir: PathBuf, profile: Profile) -> Self {
        Self {
            dir,
            profile,
            pg_bin: PathBuf::from(DEFAULT_PG_BIN),
            cm_bin: sibling_bin_dir(),
            extra_params: Vec::new(),
            keep: false,
            durable: false,
            example_resource: false,
        }
    }
}

/// The directory holding the cluster manager's binaries: the running executable's directory,
/// or its parent when that is cargo's `deps` (a test binary).
pub fn sibling_bin_dir() -> PathBuf {
    let exe = std::env::current_exe().unwrap_or_else(|_| PathBuf::from("."));
    let dir = exe
        .parent()
        .map_or_else(|| PathBuf::from("."), Path::to_path_buf);
    if dir.file_name().is_some_and(|n| n == "deps") {
        dir.parent().map_or_else(|| dir.clone(), Path::to_path_buf)
    } else {
        dir
    }
}

/// Something the machine lacks, with what to do about it.
#[derive(Debug, thiserror::Error)]
pub enum Missing {
    /// A PostgreSQL tool is not installed.
    #[error(
        "PostgreSQL is not installed: {tool} was not found in {dir}.\n\
         Install it, then run cm_local again:\n  \
         Debian/Ubuntu:  sudo apt-get install postgresql\n\
         (or give the directory of another installation with --pg-bin DIR)"
    )]
    PgTool {
        /// The tool.
        tool: String,
        /// Where it was looked for.
        dir: String,
    },
    /// Not running as root.
    #[error(
        "cm_local must run as root: it starts PostgreSQL as the `postgres` user and the \
         daemons as root.\n  Run it again with sudo (e.g. `sudo target/release/cm_local up`)"
    )]
    NotRoot,
    /// The database OS user does not exist.
    #[error(
        "there is no `{user}` OS user to run PostgreSQL (initdb refuses root).\n\
         Installing the server package creates it:\n  \
         Debian/Ubuntu:  sudo apt-get install postgresql"
    )]
    OsUser {
        /// The user.
        user: String,
    },
    /// A cluster manager binary is not built.
    #[error(
        "{bin} was not found in {dir}: build the daemons first with\n  \
         cargo build -p cm-daemons --bins"
    )]
    CmBinary {
        /// The binary.
        bin: String,
        /// Where it was looked for.
        dir: String,
    },
}

/// The file whose presence tells a running `cm_local up` to keep the directory at teardown
/// (`cm_local down --keep` writes it before asking the launcher to tear down).
pub const KEEP_MARKER: &str = "cm_local.keep";

/// Refuses a non-root user with what to do.
pub fn root_check(is_root: bool) -> Result<(), Missing> {
    if is_root {
        Ok(())
    } else {
        Err(Missing::NotRoot)
    }
}

/// Checks that PostgreSQL, its OS user and the daemons' binaries are present.
pub fn check_prerequisites(opts: &LocalOptions) -> Result<(), Missing> {
    root_check(nix::unistd::geteuid().is_root())?;
    for tool in PG_TOOLS {
        if !opts.pg_bin.join(tool).exists() {
            return Err(Missing::PgTool {
                tool: (*tool).into(),
                dir: opts.pg_bin.display().to_string(),
            });
        }
    }
    if cm_io::process::OsUser::lookup(DB_OS_USER).is_err() {
        return Err(Missing::OsUser {
            user: DB_OS_USER.into(),
        });
    }
    for bin in ["om_monitor", "cm_agent", "cm_server", "cm_ctl"] {
        if !opts.cm_bin.join(bin).exists() {
            return Err(Missing::CmBinary {
                bin: bin.into(),
                dir: opts.cm_bin.display().to_string(),
            });
        }
    }
    Ok(())
}

/// The ports of one local cluster.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ports {
    /// om_monitor control port per node.
    pub monitor: Vec<u16>,
    /// cm_server port per node.
    pub cms: Vec<u16>,
    /// cm_server HTTP port (`/metrics`, `/cluster`) per node.
    pub cms_http: Vec<u16>,
    /// Database port per DN (DN i on node i).
    pub dn: Vec<u16>,
    /// cm_agent HTTP port per node (§15: `/primary`, `/replica`, `/metrics`, ...).
    pub rest: Vec<u16>,
}

impl Ports {
    /// Free loopback ports, all distinct (each is bound until all are chosen).
    pub fn pick() -> std::io::Result<Self> {
        let n = NODES as usize;
        let listeners = (0..5 * n)
            .map(|_| TcpListener::bind("127.0.0.1:0"))
            .collect::<std::io::Result<Vec<_>>>()?;
        let ports = listeners
            .iter()
            .map(|l| l.local_addr().map(|a| a.port()))
            .collect::<std::io::Result<Vec<_>>>()?;
        Ok(Self {
            monitor: ports[..n].to_vec(),
            cms: ports[n..2 * n].to_vec(),
            dn: ports[2 * n..3 * n].to_vec(),
            cms_http: ports[3 * n..4 * n].to_vec(),
            rest: ports[4 * n..].to_vec(),
        })
    }
}

/// Paths of a cluster directory.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Paths {
    /// The cluster directory (absolute).
    pub dir: PathBuf,
}

impl Paths {
    /// The cluster config.
    pub fn config(&self) -> PathBuf {
        self.dir.join("cluster.toml")
    }
    /// The generated TLS material (CA, node and operator certificates).
    pub fn tls_dir(&self) -> PathBuf {
        self.dir.join("tls")
    }
    /// The state directory of node `n` (1-based).
    pub fn state_dir(&self, n: u32) -> PathBuf {
        self.dir.join(format!("node{n}"))
    }
    /// The parent of the data directories (owned by the database user).
    pub fn data_root(&self) -> PathBuf {
        self.dir.join("data")
    }
    /// The data directory of the DN on node `n`.
    pub fn data_dir(&self, n: u32) -> PathBuf {
        self.data_root().join(format!("dn{n}"))
    }
    /// The log directory.
    pub fn logs(&self) -> PathBuf {
        self.dir.join("logs")
    }
    /// The foreground launcher's pid file.
    pub fn pid_file(&self) -> PathBuf {
        self.dir.join("cm_local.pid")
    }
}

/// The instance id of the DN on node `n`.
pub fn instance_of(n: u32) -> u32 {
    6000 + n
}

/// Renders the cluster config: 3 nodes on 127.0.0.1, each with a CMS, a monitor port and one
/// DN of group 1 (the DN of node 1 is the install-time primary).
pub fn render_config(
    paths: &Paths,
    ports: &Ports,
    profile: Profile,
    pg_bin: &Path,
    extra: &[(String, String)],
) -> String {
    let mut t = String::from(
        "# Written by cm_local: a three-node cluster on this machine.\nname = \"local\"\n",
    );
    t.push_str(&tls_keys(&paths.tls_dir()));
    t.push_str("\n[[az]]\nname = \"AZ1\"\npriority = 1\n");
    for n in 1..=NODES {
        let i = n as usize - 1;
        let _ = write!(
            t,
            "\n[[node]]\nid = {n}\nname = \"n{n}\"\naddress = \"127.0.0.1\"\naz = \"AZ1\"\n\
             state_dir = \"{}\"\nmonitor_port = {}\ncms_port = {}\ncms_http_port = {}\n",
            paths.state_dir(n).display(),
            ports.monitor[i],
            ports.cms[i],
            ports.cms_http[i]
        );
        if let Some(rest) = ports.rest.get(i) {
            let _ = writeln!(t, "rest_port = {rest}");
        }
    }
    t.push_str("\n[[group]]\nid = 1\n");
    for n in 1..=NODES {
        let _ = write!(
            t,
            "[[group.member]]\ninstance = {}\nnode = {n}\ndata_dir = \"{}\"\nport = {}\n",
            instance_of(n),
            paths.data_dir(n).display(),
            ports.dn[n as usize - 1]
        );
    }
    let _ = write!(
        t,
        "\n[database]\nkind = \"postgres\"\nbin_dir = \"{}\"\nos_user = \"{DB_OS_USER}\"\n\
         db_user = \"{DB_OS_USER}\"\n\n[params]\nprofile = \"{}\"\n",
        pg_bin.display(),
        match profile {
            Profile::Default => "default",
            Profile::Fast => "fast",
        }
    );
    for (k, v) in extra {
        let _ = writeln!(t, "{k} = {v}");
    }
    t
}

/// The config keys naming the material [`write_tls_material`] (or
/// `certgen::write_cluster_material`) wrote into `tls_dir`.
pub fn tls_keys(tls_dir: &Path) -> String {
    let f = |name: &str| tls_dir.join(name).display().to_string();
    format!(
        "ssl_ca_file = \"{}\"\nssl_cert_file = \"{}\"\nssl_key_file = \"{}\"\n\
         ssl_operator_cert_file = \"{}\"\nssl_operator_key_file = \"{}\"\n",
        f("ca.crt"),
        f("{node}.crt"),
        f("{node}.key"),
        f("operator.crt"),
        f("operator.key")
    )
}

/// Generates the cluster's CA and the certificates of nodes `n1`..`nN` and of the operator
/// into [`Paths::tls_dir`] (keys 0600), with the ring provider rustls uses.
pub fn write_tls_material(paths: &Paths) -> anyhow::Result<()> {
    let names: Vec<String> = (1..=NODES).map(|n| format!("n{n}")).collect();
    let names: Vec<&str> = names.iter().map(String::as_str).collect();
    cm_io::transport::certgen::write_cluster_material(
        &paths.tls_dir(),
        "local",
        &names,
        cm_io::transport::certgen::today(),
    )?;
    Ok(())
}

/// The shipped HAProxy config (`cm-daemons/dist/haproxy.cfg`).
pub const HAPROXY_SAMPLE: &str = include_str!("../../dist/haproxy.cfg");

/// How long HAProxy needs after it starts to mark down the servers whose checks fail: it
/// takes every server for up until `fall` (2) checks failed (`inter` 500 ms, `fastinter`
/// 250 ms, `timeout check` 1 s; HAProxy 3.1's `init-state down` removes the need).
pub const HAPROXY_FIRST_CHECKS: std::time::Duration = std::time::Duration::from_secs(2);

/// Where Debian installs HAProxy.
pub const HAPROXY_BIN: &str = "/usr/sbin/haproxy";

/// The shipped HAProxy config with the local cluster's ports: the write and read listeners on
/// 127.0.0.1 at `write` and `read`, one server per node (its DN port, checked on its agent's
/// rest port). Every check and option stays as shipped.
pub fn render_haproxy(ports: &Ports, ca: &Path, write: u16, read: u16) -> String {
    let mut out = String::new();
    let mut servers_done = false;
    for line in HAPROXY_SAMPLE.lines() {
        let t = line.trim_start();
        if t.starts_with("listen ") {
            servers_done = false;
        }
        if t == "bind *:5000" {
            let _ = writeln!(out, "    bind 127.0.0.1:{write}");
        } else if t == "bind *:5001" {
            let _ = writeln!(out, "    bind 127.0.0.1:{read}");
        } else if t.starts_with("server ") {
            if !servers_done {
                for (i, (dn, rest)) in ports.dn.iter().zip(&ports.rest).enumerate() {
                    let _ = writeln!(
                        out,
                        "    server n{n} 127.0.0.1:{dn} check port {rest} check-ssl verify required \
                         ca-file {} verifyhost n{n} check-sni n{n}",
                        ca.display(),
                        n = i + 1
                    );
                }
                servers_done = true;
            }
        } else {
            out.push_str(line);
            out.push('\n');
        }
    }
    out
}

/// The shipped example resource script (`cm-daemons/dist/resource-example.sh`), written into
/// the cluster directory by `cm_local up`.
pub const EXAMPLE_RESOURCE_SCRIPT: &str = include_str!("../../dist/resource-example.sh");

/// Where `cm_local up` writes the example script.
pub fn example_resource_script(paths: &Paths) -> PathBuf {
    paths.dir.join("resource-example.sh")
}

/// The `[[resource]]` table of the example resource: `demo-sleep`, instance 900N on node N,
/// a `sleep` kept alive by the example script with its pid file under `<dir>/res`.
pub fn render_example_resource(paths: &Paths) -> String {
    let mut t = String::from(
        "
# An example custom resource (SPEC §14): see cm-daemons/README.md.
",
    );
    t.push_str(
        "[[resource]]
name = \"demo-sleep\"
",
    );
    let _ = writeln!(
        t,
        "script = \"{}\"",
        example_resource_script(paths).display()
    );
    let instances: Vec<String> = (1..=NODES)
        .map(|n| {
            format!(
                "{{ node = {n}, id = {}, args = \"{} /bin/sleep 2147483647\" }}",
                9000 + n,
                paths.dir.join("res").display()
            )
        })
        .collect();
    let _ = writeln!(t, "instances = [{}]", instances.join(", "));
    t
}

/// The first ancestor of `dir` that other users cannot enter (the database user must reach
/// its data directory through every ancestor).
pub fn untraversable_ancestor(dir: &Path) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt as _;
    dir.ancestors().skip(1).find_map(|a| {
        let mode = std::fs::metadata(a).ok()?.permissions().mode();
        (mode & 0o001 == 0).then(|| a.to_path_buf())
    })
}

#[cfg(test)]
#[path = "local_tests.rs"]
mod tests;
