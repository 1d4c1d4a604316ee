//! Creating the three databases: `initdb` of the first DN, a temporary start of it, a base
//! backup per other DN (each with its own `application_name`), then a stop — so that all three
//! DNs come up pending under the agents and the CMS promotes the install-time primary.

use std::path::Path;
use std::process::{Command, Output, Stdio};

use anyhow::{Context as _, bail};
use cm_io::postgres::credential;
use cm_io::process::OsUser;

use super::{DB_OS_USER, NODES, Paths, Ports, instance_of};

/// Runs a PostgreSQL tool as the database user in its own process group (a Ctrl-C at the
/// terminal is for the launcher, which then cleans up), failing with its stderr.
fn run_tool(user: &OsUser, pg_bin: &Path, tool: &str, args: &[&str]) -> anyhow::Result<Output> {
    use std::os::unix::process::CommandExt as _;
    let mut cmd = Command::new(pg_bin.join(tool));
    cmd.args(args)
        .current_dir("/")
        .stdin(Stdio::null())
        .process_group(0);
    user.apply(&mut cmd);
    let out = cmd
        .output()
        .with_context(|| format!("cannot run {}", pg_bin.join(tool).display()))?;
    if !out.status.success() {
        bail!(
            "{tool} {} failed ({}):\n{}{}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(out)
}

fn path_str(p: &Path) -> anyhow::Result<&str> {
    p.to_str()
        .with_context(|| format!("{} is not valid UTF-8", p.display()))
}

/// Creates the data directories: initdb of DN 1, base backups of the others from it.
/// `durable`: data checksums and fsync on, as in production (the harness shape of issue 18);
/// otherwise throwaway data without fsync.
pub fn create_databases(
    paths: &Paths,
    ports: &Ports,
    pg_bin: &Path,
    durable: bool,
) -> anyhow::Result<()> {
    let user = OsUser::lookup(DB_OS_USER)?;
    let root = paths.data_root();
    std::fs::create_dir_all(&root).with_context(|| format!("cannot create {}", root.display()))?;
    user.chown(&root)
        .with_context(|| format!("cannot chown {} to {DB_OS_USER}", root.display()))?;
    // §16: the database user's password, created once here: set by initdb, and the same
    // passfile on every node (0600, owned by the database OS user).
    let password = credential::new_password().context("cannot generate a password")?;
    for n in 1..=NODES {
        crate::node::ensure_state_dir(&paths.state_dir(n))?;
        let passfile = credential::passfile_path(&paths.state_dir(n));
        credential::write_passfile(&passfile, DB_OS_USER, &password, &user)?;
    }
    // initdb reads the password from a file of its own (one line, the password alone).
    let pwfile = paths.dir.join("initdb.pw");
    {
        use std::io::Write as _;
        use std::os::unix::fs::OpenOptionsExt as _;
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&pwfile)
            .with_context(|| format!("cannot create {}", pwfile.display()))?;
        writeln!(f, "{password}").with_context(|| format!("cannot write {}", pwfile.display()))?;
        user.chown(&pwfile)
            .with_context(|| format!("cannot chown {} to {DB_OS_USER}", pwfile.display()))?;
    }
    let first = paths.data_dir(1);
    let first_s = path_str(&first)?;
    let pwfile_arg = format!("--pwfile={}", path_str(&pwfile)?);
    let mut initdb = vec![
        "-D",
        first_s,
        "-U",
        DB_OS_USER,
        &pwfile_arg,
        "--auth-local=peer",
        "--auth-host=scram-sha-256",
        "--no-instructions",
    ];
    initdb.push(if durable {
        "--data-checksums"
    } else {
        "--no-sync"
    });
    let created = run_tool(&user, pg_bin, "initdb", &initdb);
    let _ = std::fs::remove_file(&pwfile);
    created?;
    // A throwaway demo cluster: no fsync (a crash then costs a whole-directory sync that
    // takes seconds on a loaded machine). Base backups copy this file to the other DNs.
    let conf = first.join("postgresql.conf");
    let mut text = std::fs::read_to_string(&conf)
        .with_context(|| format!("cannot read {}", conf.display()))?;
    // wal_keep_size: the first base backup needs the WAL written after it (the second backup's
    // checkpoint and the stop's would otherwise recycle it before its DN ever streams).
    if !durable {
        text.push_str("\n# cm_local: throwaway data\nfsync = off\n");
    }
    text.push_str("\nshared_buffers = 32MB\nwal_keep_size = 256MB\n");
    std::fs::write(&conf, text).with_context(|| format!("cannot write {}", conf.display()))?;

    let port = ports.dn[0].to_string();
    let opts = format!("-p {port} -c listen_addresses=127.0.0.1 -c unix_socket_directories=''");
    let log = paths.logs().join("initial_primary.log");
    std::fs::create_dir_all(paths.logs())?;
    std::fs::File::create(&log)?;
    user.chown(&log)?;
    run_tool(
        &user,
        pg_bin,
        "pg_ctl",
        &[
            "-D",
            first_s,
            "-w",
            "-t",
            "60",
            "-l",
            path_str(&log)?,
            "-o",
            &opts,
            "start",
        ],
    )?;
    let backups = base_backups(&user, paths, &port, pg_bin);
    let stop = run_tool(
        &user,
        pg_bin,
        "pg_ctl",
        &["-D", first_s, "-w", "-t", "60", "-m", "fast", "stop"],
    );
    backups?;
    stop?;
    Ok(())
}

fn base_backups(user: &OsUser, paths: &Paths, port: &str, pg_bin: &Path) -> anyhow::Result<()> {
    for n in 2..=NODES {
        let dir = paths.data_dir(n);
        let conninfo = format!(
            "host=127.0.0.1 port={port} user={DB_OS_USER} passfile={} application_name=dn_{}",
            credential::conninfo_value(path_str(&credential::passfile_path(&paths.state_dir(1)))?),
            instance_of(n)
        );
        run_tool(
            user,
            pg_bin,
            "pg_basebackup",
            &[
                "-d",
                &conninfo,
                "-D",
                path_str(&dir)?,
                "-X",
                "stream",
                "-c",
                "fast",
                "-R",
                "--no-sync",
            ],
        )?;
    }
    Ok(())
}
