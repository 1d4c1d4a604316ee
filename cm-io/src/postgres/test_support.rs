//! Throwaway PostgreSQL clusters for end-to-end tests (feature `test-support`): a temporary
//! root owned by the database OS user, a cluster config with one node per member on
//! 127.0.0.1 and free ports, one [`PgDriver`] per node, `initdb`, and a guard that kills every
//! process and removes every directory when dropped — also when a test panics.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use cm_core::InstanceId;
use cm_core::config::ClusterConfig;
use cm_core::params::SyncMode;
use tokio_postgres::{Client, NoTls};

use super::{DriverError, PgDriver, PgOptions, credential};
use crate::process::{self, OsUser};

/// The PostgreSQL binaries the tests use.
pub const BIN_DIR: &str = "/usr/lib/postgresql/15/bin";

/// Whether PostgreSQL server binaries exist here; prints why a test is skipped when not.
pub fn postgres_available() -> bool {
    let ok = Path::new(BIN_DIR).join("postgres").exists()
        && Path::new(BIN_DIR).join("initdb").exists()
        && OsUser::lookup("postgres").is_ok();
    if !ok {
        eprintln!("skipped: no PostgreSQL binaries in {BIN_DIR} or no `postgres` OS user");
    }
    ok
}

/// A free TCP port on 127.0.0.1 (bound, read, released).
pub fn free_port() -> u16 {
    // The kernel may hand the same ephemeral port out again once its probe socket is closed
    // (CI once got one port for two nodes of one config): never return a port twice in this
    // process.
    static GIVEN: std::sync::Mutex<std::collections::BTreeSet<u16>> =
        std::sync::Mutex::new(std::collections::BTreeSet::new());
    let mut given = GIVEN
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    loop {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("a free port");
        if given.insert(port) {
            return port;
        }
    }
}

/// A cluster of `n` members (instances 6001…), one per node, all on 127.0.0.1.
pub struct TestCluster {
    /// The temporary root holding data directories and state directories.
    pub root: PathBuf,
    /// The cluster config the drivers were built from.
    pub config: Arc<ClusterConfig>,
    /// One driver per member, in member order.
    pub drivers: Vec<PgDriver>,
    /// The database user's password (in every node's passfile; `initdb` sets it).
    pub password: String,
}

impl TestCluster {
    /// Creates the directories and drivers (no instance is initialised yet). `sync` chooses
    /// `dn_sync_mode`. `None` (with a printed reason) when PostgreSQL is not installed.
    pub fn new(tag: &str, n: usize, sync: SyncMode) -> Option<Self> {
        if !postgres_available() {
            return None;
        }
        let user = OsUser::lookup("postgres").expect("postgres user");
        let root = std::env::temp_dir().join(format!("cm-pg-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        std::fs::create_dir_all(&root).expect("create test root");
        user.chown(&root).expect("chown test root");
        let config = Arc::new(Self::config(&root, n, sync));
        let password = credential::new_password().expect("a password");
        let mut cluster = Self {
            root,
            config: Arc::clone(&config),
            drivers: Vec::new(),
            password,
        };
        for i in 0..n {
            let dir = cluster.data_dir(i);
            std::fs::create_dir_all(&dir).expect("data dir");
            user.chown(&dir).expect("chown data dir");
            // The cluster's password, on every node (§16), created with the cluster.
            let state = Path::new(&config.nodes[i].state_dir);
            std::fs::create_dir_all(state).expect("state dir");
            credential::write_passfile(
                &credential::passfile_path(state),
                "postgres",
                &cluster.password,
                &user,
            )
            .expect("passfile");
            let node = cm_core::NodeId(i as u32 + 1);
            let opts = PgOptions {
                sync_data: false,
                ..PgOptions::from_config(&config)
            };
            let driver = PgDriver::new(Arc::clone(&config), node, opts).expect("driver");
            cluster.drivers.push(driver);
        }
        Some(cluster)
    }

    fn config(root: &Path, n: usize, sync: SyncMode) -> ClusterConfig {
        let mut toml = String::from("name = \"e2e\"\n");
        for i in 0..n {
            let cms = if i == 0 {
                format!("cms_port = {}\n", free_port())
            } else {
                String::new()
            };
            toml += &format!(
                "[[node]]\nid = {}\nname = \"n{}\"\naddress = \"127.0.0.1\"\naz = \"AZ1\"\n\
                 state_dir = \"{}/state{}\"\nmonitor_port = {}\n{cms}",
                i + 1,
                i + 1,
                root.display(),
                i + 1,
                free_port()
            );
        }
        toml += "[[group]]\nid = 1\n";
        for i in 0..n {
            toml += &format!(
                "[[group.member]]\ninstance = {}\nnode = {}\ndata_dir = \"{}/data{}\"\nport = {}\n",
                6001 + i,
                i + 1,
                root.display(),
                i + 1,
                free_port()
            );
        }
        let mode = match sync {
            SyncMode::Quorum => "quorum",
            SyncMode::Off => "off",
        };
        toml += &format!(
            "[database]\nbin_dir = \"{BIN_DIR}\"\n[params]\nprofile = \"fast\"\ndn_sync_mode = \"{mode}\"\n"
        );
        ClusterConfig::from_toml_str(&toml).expect("test config is valid")
    }

    /// The instance id of member `i`.
    pub fn id(&self, i: usize) -> InstanceId {
        InstanceId(6001 + i as u32)
    }

    /// The driver of member `i`.
    pub fn driver(&self, i: usize) -> &PgDriver {
        &self.drivers[i]
    }

    /// The data directory of member `i`.
    pub fn data_dir(&self, i: usize) -> PathBuf {
        self.root.join(format!("data{}", i + 1))
    }

    /// The port of member `i`.
    pub fn port(&self, i: usize) -> u16 {
        self.config.groups[0].members[i].port
    }

    /// `initdb` of member `i` as the `postgres` OS user with the cluster's password, peer
    /// authentication locally and SCRAM over TCP (`fsync = off`: throwaway).
    pub fn initdb(&self, i: usize) -> Result<(), DriverError> {
        let user = OsUser::lookup("postgres")?;
        let pwfile = self.root.join(format!("initdb-pw{i}"));
        std::fs::write(&pwfile, format!("{}\n", self.password)).map_err(|source| {
            DriverError::Io {
                path: pwfile.display().to_string(),
                source,
            }
        })?;
        user.chown(&pwfile).map_err(|source| DriverError::Io {
            path: pwfile.display().to_string(),
            source,
        })?;
        let mut cmd = Command::new(Path::new(BIN_DIR).join("initdb"));
        cmd.arg("-D")
            .arg(self.data_dir(i))
            .arg(format!("--pwfile={}", pwfile.display()))
            .args([
                "-U",
                "postgres",
                "--auth-local=peer",
                "--auth-host=scram-sha-256",
                "--no-sync",
                "--no-instructions",
            ])
            .current_dir("/");
        user.apply(&mut cmd);
        let out = cmd.output().map_err(|source| DriverError::Io {
            path: "initdb".into(),
            source,
        });
        let _ = std::fs::remove_file(&pwfile);
        let out = out?;
        if out.status.success() {
            // Throwaway data: skip fsync (also the whole-directory sync after a crash, which
            // takes seconds here). Rewinds and base backups copy this file to the others.
            let conf = self.data_dir(i).join("postgresql.conf");
            let mut text = std::fs::read_to_string(&conf).map_err(|source| DriverError::Io {
                path: conf.display().to_string(),
                source,
            })?;
            text.push_str("\nfsync = off\n");
            std::fs::write(&conf, text).map_err(|source| DriverError::Io {
                path: conf.display().to_string(),
                source,
            })?;
            return Ok(());
        }
        Err(DriverError::Tool {
            tool: "initdb".into(),
            status: out.status.to_string(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        })
    }

    /// A client session to member `i` over TCP (as a user's application would connect), with
    /// the cluster's password.
    pub async fn client(&self, i: usize) -> Result<Client, tokio_postgres::Error> {
        self.client_with(i, Some(&self.password)).await
    }

    /// A client session to member `i` over TCP as the `postgres` user, with `password` (or none).
    pub async fn client_with(
        &self,
        i: usize,
        password: Option<&str>,
    ) -> Result<Client, tokio_postgres::Error> {
        let mut cfg = tokio_postgres::Config::new();
        if let Some(p) = password {
            cfg.password(p);
        }
        cfg.host("127.0.0.1")
            .port(self.port(i))
            .user("postgres")
            .dbname("postgres")
            .connect_timeout(std::time::Duration::from_secs(2));
        let (client, conn) = cfg.connect(NoTls).await?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        Ok(client)
    }
}

impl Drop for TestCluster {
    fn drop(&mut self) {
        for d in &self.drivers {
            d.kill_all_blocking();
        }
        // Anything the drivers lost track of (a test spawned it another way).
        for i in 0..self.drivers.len() {
            if let Some((pm, _)) = process::adopt_postmaster(&self.data_dir(i)) {
                let _ = pm.kill_group(std::time::Duration::from_secs(5));
            }
        }
        if std::env::var_os("CM_TEST_KEEP").is_none() {
            let _ = std::fs::remove_dir_all(&self.root);
        }
    }
}
