//! `cm_ctl check -B NAME -T PATH`: is a process running whose program is NAME and which was
//! started with PATH (its config file or data directory)? Read from `/proc/*/cmdline`.

use std::path::{Component, Path, PathBuf};

/// Whether a command line (argv) is `binary` started with `path`: argv\[0\]'s file name is
/// `binary`, and some later argument is `path` — alone, as `--opt=PATH`, or glued to a short
/// option (`-DPATH`). Paths are compared in canonical form: a relative argument is taken from
/// the process's working directory `cwd`, a relative `path` from cm_ctl's own; `.`, `..`,
/// symbolic links and trailing slashes do not matter.
pub fn cmdline_matches(argv: &[String], binary: &str, path: &str, cwd: &Path) -> bool {
    let Some(program) = argv.first() else {
        return false;
    };
    if Path::new(program).file_name().and_then(|f| f.to_str()) != Some(binary) {
        return false;
    }
    let here = std::env::current_dir().unwrap_or_else(|_| PathBuf::from("/"));
    names_path(&argv[1..], &canonical(&here, path), cwd)
}

/// Whether some argument names the file `want` (canonical), alone, as `--opt=PATH` or glued
/// to a short option; relative arguments are taken from the process's working dir `cwd`.
pub fn names_path(args: &[String], want: &Path, cwd: &Path) -> bool {
    args.iter().any(|a| {
        let value = match a.split_once('=') {
            Some((opt, v)) if opt.starts_with('-') => v,
            _ => glued_value(a).unwrap_or(a.as_str()),
        };
        !value.is_empty() && canonical(cwd, value) == want
    })
}

/// The value glued to a short option (`-c/etc/x` gives `/etc/x`), whatever the option's
/// character (a multibyte one must not split a char).
fn glued_value(a: &str) -> Option<&str> {
    if a.starts_with("--") {
        return None;
    }
    let mut chars = a.strip_prefix('-')?.chars();
    chars.next()?;
    Some(chars.as_str()).filter(|v| !v.is_empty())
}

/// `p` as an absolute path without `.`, `..` or symbolic links (lexically when it does not
/// exist).
pub fn canonical(base: &Path, p: &str) -> PathBuf {
    let joined = base.join(p);
    if let Ok(c) = std::fs::canonicalize(&joined) {
        return c;
    }
    let mut out = PathBuf::from("/");
    for part in joined.components() {
        match part {
            Component::ParentDir => {
                out.pop();
            }
            Component::Normal(n) => out.push(n),
            Component::RootDir | Component::CurDir | Component::Prefix(_) => {}
        }
    }
    out
}

/// The ids of running processes that match (never this process).
pub fn find(binary: &str, path: &str) -> std::io::Result<Vec<u32>> {
    let me = std::process::id();
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc")? {
        let Ok(entry) = entry else { continue };
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        if pid == me {
            continue;
        }
        // Processes exit while we scan; an unreadable one is simply not a match.
        let Ok(raw) = std::fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        let argv: Vec<String> = raw
            .split(|b| *b == 0)
            .filter(|a| !a.is_empty())
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect();
        let cwd = std::fs::read_link(entry.path().join("cwd")).unwrap_or_else(|_| "/".into());
        if cmdline_matches(&argv, binary, path, &cwd) {
            found.push(pid);
        }
    }
    found.sort_unstable();
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn argv(s: &str) -> Vec<String> {
        s.split(' ').map(str::to_owned).collect()
    }

    fn cmdline_matches(argv: &[String], binary: &str, path: &str) -> bool {
        super::cmdline_matches(argv, binary, path, Path::new("/"))
    }

    #[test]
    fn a_multibyte_short_option_does_not_panic() {
        let want = Path::new("/etc/x");
        assert!(!names_path(&argv("-é -ü/etc/y"), want, Path::new("/")));
        assert!(names_path(&argv("-é/etc/x"), want, Path::new("/")));
        assert!(names_path(&argv("-c/etc/x"), want, Path::new("/")));
    }

    #[test]
    fn relative_and_absolute_paths_name_the_same_file() {
        let abs = "/nonexistent-cm/etc/cluster.toml";
        // Started as `cm_agent -c cluster.toml` in /nonexistent-cm/etc.
        assert!(super::cmdline_matches(
            &argv("cm_agent -c cluster.toml"),
            "cm_agent",
            abs,
            Path::new("/nonexistent-cm/etc")
        ));
        assert!(super::cmdline_matches(
            &argv("cm_agent -c ./x/../cluster.toml"),
            "cm_agent",
            abs,
            Path::new("/nonexistent-cm/etc")
        ));
        assert!(!super::cmdline_matches(
            &argv("cm_agent -c cluster.toml"),
            "cm_agent",
            abs,
            Path::new("/elsewhere")
        ));
        // `-T` relative to cm_ctl's own directory.
        let here = std::env::current_dir().unwrap();
        let full = here.join("cfg/c.toml").display().to_string();
        assert!(super::cmdline_matches(
            &argv(&format!("cm_agent -c {full}")),
            "cm_agent",
            "cfg/c.toml",
            Path::new("/")
        ));
    }

    #[test]
    fn program_name_and_path_must_both_match() {
        let path = "/etc/cm/cluster.toml";
        assert!(cmdline_matches(
            &argv("/usr/bin/cm_server -c /etc/cm/cluster.toml -n 1"),
            "cm_server",
            path
        ));
        assert!(cmdline_matches(
            &argv("cm_server --config=/etc/cm/cluster.toml"),
            "cm_server",
            path
        ));
        assert!(cmdline_matches(
            &argv("postgres -D/data/dn1/"),
            "postgres",
            "/data/dn1"
        ));
        assert!(!cmdline_matches(
            &argv("postgres -D /data/dn10"),
            "postgres",
            "/data/dn1"
        ));
        assert!(!cmdline_matches(
            &argv("cm_agent -c /etc/cm/cluster.toml"),
            "cm_server",
            path
        ));
        // cm_ctl's own command line names both, but its program is cm_ctl.
        assert!(!cmdline_matches(
            &argv("cm_ctl check -B cm_server -T /etc/cm/cluster.toml"),
            "cm_server",
            path
        ));
        assert!(!cmdline_matches(&[], "cm_server", path));
    }

    #[test]
    fn a_running_process_is_found_by_pid_until_it_exits() {
        let marker = format!("/tmp/cm-check-marker-{}", std::process::id());
        // argv = ["sh", "-c", "sleep 30; :", MARKER]: program `sh`, started with MARKER (the
        // trailing `:` keeps sh from exec'ing sleep in its place).
        use std::os::unix::process::CommandExt as _;
        let mut child = std::process::Command::new("sh")
            .args(["-c", "sleep 30; :", &marker])
            .process_group(0)
            .spawn()
            .unwrap();
        // Patience: right after fork the child still shows this test's command line.
        let mut found = Vec::new();
        for _ in 0..200 {
            found = find("sh", &marker).unwrap();
            if !found.is_empty() {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        // The whole group, so that the `sleep` does not outlive the test.
        let pgid = nix::unistd::Pid::from_raw(child.id() as i32);
        nix::sys::signal::killpg(pgid, nix::sys::signal::Signal::SIGKILL).unwrap();
        child.wait().unwrap();
        // sh's forked children show its command line too until they exec.
        assert!(
            found.contains(&child.id()),
            "{found:?} lacks {}",
            child.id()
        );
        let mut after = find("sh", &marker).unwrap();
        for _ in 0..200 {
            if after.is_empty() {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
            after = find("sh", &marker).unwrap();
        }
        assert_eq!(after, Vec::<u32>::new());
    }
}
