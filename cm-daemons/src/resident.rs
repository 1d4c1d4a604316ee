//! What a resident daemon keeps mapped (issue 16: om_monitor + cm_agent ≤ 10 MB resident per
//! node).
//!
//! Most of an idle daemon's resident memory is not its heap but file pages it mapped: its own
//! code and read-only data, and the shared libraries'. The kernel maps 64 kB around every
//! page fault in a file mapping ("fault-around"), so the code run once at start — config and
//! certificate parsing, TLS setup, the first connections — stays mapped for the life of the
//! process beside whatever neighbours it, though an idle loop runs a small part of it.
//! [`release_file_pages`] unmaps this process's pages of read-only private file mappings;
//! what runs afterwards faults back in from the page cache (a minor fault, no IO while the
//! file is cached), so the resident set becomes what the daemon actually ran since. The
//! pages stay in the page cache, shared and reclaimable, as any file page the kernel may
//! reclaim from a running program under memory pressure.

use std::time::Duration;

/// When a daemon first releases its file pages; the wait before each next release doubles
/// up to [`RELEASE_EVERY`] (releases 10, 30, 70, 150, 310 s after the start, then every
/// 300 s): the
/// start's one-off work (connections, TLS handshakes, the first reports, starting cm_server)
/// ends at no fixed time, and what it ran is dropped soon whenever it ends.
pub const FIRST_RELEASE: Duration = Duration::from_secs(10);

/// How often it releases them at most, once started (code run once since, e.g. by a
/// failover, is dropped again).
pub const RELEASE_EVERY: Duration = Duration::from_secs(300);

/// The wait before each release: [`FIRST_RELEASE`], then doubling, at most [`RELEASE_EVERY`].
pub fn release_waits() -> impl Iterator<Item = Duration> {
    std::iter::successors(Some(FIRST_RELEASE), |w| Some((*w * 2).min(RELEASE_EVERY)))
}

/// One mapping that may be released: `start..end` of this process's address space.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Releasable {
    /// First address.
    pub start: usize,
    /// One past the last address.
    pub end: usize,
    /// Its resident size when read, kB.
    pub rss_kb: u64,
}

/// The mappings of `smaps` (the text of `/proc/self/smaps`) whose pages can be dropped and
/// read again from their file unchanged: private, not writable, backed by a file (an inode),
/// no anonymous page in them (a page written since it was mapped, as the dynamic loader's
/// relocations of a RELRO segment before it made it read-only, exists nowhere else), and
/// either executable (code: the loader never writes it) or a read-only mapping of `exe`
/// itself (this program's constant data; nothing maps more of it while it runs, whereas a
/// library being loaded by another thread maps its data read-only before relocating it).
/// Mappings with nothing resident are left out.
pub fn releasable(smaps: &str, exe: &str) -> Vec<Releasable> {
    struct Cur {
        start: usize,
        end: usize,
        eligible: bool,
        rss_kb: u64,
        anon_kb: u64,
    }
    let mut out = Vec::new();
    let mut cur: Option<Cur> = None;
    let finish = |c: Option<Cur>, out: &mut Vec<Releasable>| {
        if let Some(c) = c
            && c.eligible
            && c.rss_kb > 0
            && c.anon_kb == 0
        {
            out.push(Releasable {
                start: c.start,
                end: c.end,
                rss_kb: c.rss_kb,
            });
        }
    };
    for line in smaps.lines() {
        let mut fields = line.split_whitespace();
        let Some(first) = fields.next() else {
            continue;
        };
        if let Some((lo, hi)) = first.split_once('-')
            && let (Ok(start), Ok(end)) =
                (usize::from_str_radix(lo, 16), usize::from_str_radix(hi, 16))
        {
            // A mapping's header: range perms offset dev inode [path].
            finish(cur.take(), &mut out);
            let perms = fields.next().unwrap_or("").as_bytes();
            let _offset = fields.next();
            let _dev = fields.next();
            let inode = fields.next().unwrap_or("0");
            let path = fields.collect::<Vec<_>>().join(" ");
            let private_ro =
                perms.len() == 4 && perms[0] == b'r' && perms[1] == b'-' && perms[3] == b'p';
            let code = perms.get(2) == Some(&b'x');
            let eligible =
                private_ro && inode != "0" && path.starts_with('/') && (code || path == exe);
            cur = Some(Cur {
                start,
                end,
                eligible,
                rss_kb: 0,
                anon_kb: 0,
            });
            continue;
        }
        let kb = || fields.clone().next().and_then(|v| v.parse::<u64>().ok());
        if let Some(c) = cur.as_mut() {
            match first {
                "Rss:" => c.rss_kb = kb().unwrap_or(0),
                // Unknown means written: never release it.
                "Anonymous:" => c.anon_kb = kb().unwrap_or(u64::MAX),
                _ => {}
            }
        }
    }
    finish(cur, &mut out);
    out
}

/// Unmaps this process's resident pages of the [`releasable`] mappings (see the module
/// documentation); returns the kB that were resident in them. Errors: /proc unreadable, or
/// `madvise` refused (the mappings before it were released).
#[allow(unsafe_code)]
pub fn release_file_pages() -> std::io::Result<u64> {
    use nix::sys::mman::{MmapAdvise, madvise};
    let smaps = std::fs::read_to_string("/proc/self/smaps")?;
    let exe = std::fs::read_link("/proc/self/exe")?;
    let mut released = 0;
    for m in releasable(&smaps, &exe.to_string_lossy()) {
        let Some(addr) = std::ptr::NonNull::new(std::ptr::with_exposed_provenance_mut(m.start))
        else {
            continue;
        };
        // SAFETY: `MADV_DONTNEED` on a private file mapping that holds no anonymous page only
        // drops this process's page table entries: the next access maps the same page of the
        // file again, so no memory this program can see changes. `releasable` admits only
        // mappings that are read-only (nothing can have written them since they were read:
        // a written page would be anonymous and excluded), file-backed, and code or this
        // executable's constant data, which no one makes writable while the program runs.
        // This is what the kernel's own reclaim does to a running program's file pages.
        unsafe { madvise(addr, m.end - m.start, MmapAdvise::MADV_DONTNEED) }
            .map_err(std::io::Error::from)?;
        released += m.rss_kb;
    }
    Ok(released)
}

/// Releases the file pages after each of [`release_waits`], on the current tokio runtime (a
/// read of /proc/self/smaps and a few system calls each time). A failure is logged once at
/// debug level and ends the task.
pub fn spawn_release_task() {
    tokio::spawn(async {
        for wait in release_waits() {
            tokio::time::sleep(wait).await;
            match release_file_pages() {
                Ok(kb) => tracing::debug!(released_kb = kb, "file pages released"),
                Err(e) => {
                    tracing::debug!(error = %e, "cannot release file pages; not trying again");
                    return;
                }
            }
        }
    });
}

/// How many malloc arenas a daemon's threads share (glibc's default is 8 per core, one per
/// thread that allocates while the others' are taken). Each arena's touched pages stay
/// resident; a daemon's threads mostly wait for IO, so two are plenty: the first thread's
/// and one for every other thread.
pub const MALLOC_ARENAS: i32 = 2;

/// Limits glibc's malloc arenas to [`MALLOC_ARENAS`]; call it first in `main`. Elsewhere
/// than glibc, nothing. False if glibc refused.
#[allow(unsafe_code)]
pub fn limit_malloc_arenas() -> bool {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // SAFETY: `mallopt` only sets an allocator parameter; it takes the allocator's own
        // lock and touches no memory of ours.
        unsafe { nix::libc::mallopt(nix::libc::M_ARENA_MAX, MALLOC_ARENAS) == 1 }
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    {
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SMAPS: &str = "\
55d0c0000000-55d0c0100000 r--p 00000000 fd:01 1234 /opt/cm/cm_agent
Size:               1024 kB
Rss:                 900 kB
Anonymous:             0 kB
55d0c0100000-55d0c0500000 r-xp 00100000 fd:01 1234 /opt/cm/cm_agent
Size:               4096 kB
Rss:                3000 kB
Anonymous:             0 kB
55d0c0500000-55d0c0580000 r--p 00500000 fd:01 1234 /opt/cm/cm_agent
Size:                512 kB
Rss:                 200 kB
Anonymous:           200 kB
55d0c0580000-55d0c0590000 rw-p 00580000 fd:01 1234 /opt/cm/cm_agent
Size:                 64 kB
Rss:                  64 kB
Anonymous:            60 kB
55d0c1000000-55d0c1100000 rw-p 00000000 00:00 0 [heap]
Rss:                 500 kB
Anonymous:           500 kB
7f0000000000-7f0000100000 r--p 00000000 fd:01 99 /usr/lib/x86_64-linux-gnu/libc.so.6
Rss:                 150 kB
Anonymous:             0 kB
7f0000100000-7f0000300000 r-xp 00100000 fd:01 99 /usr/lib/x86_64-linux-gnu/libc.so.6
Rss:                1100 kB
Anonymous:             0 kB
7f0000300000-7f0000310000 r-xp 00000000 fd:01 98 /usr/lib/libpatched.so
Rss:                  64 kB
Anonymous:             4 kB
7f0000400000-7f0000410000 r-xp 00000000 fd:01 97 /usr/lib/libcold.so
Rss:                   0 kB
Anonymous:             0 kB
7f0000500000-7f0000510000 r-xs 00000000 fd:01 96 /dev/shm/shared
Rss:                  64 kB
Anonymous:             0 kB
7ffd00000000-7ffd00002000 r-xp 00000000 00:00 0 [vdso]
Rss:                   8 kB
Anonymous:             0 kB
";

    #[test]
    fn only_unwritten_read_only_code_and_this_programs_constants_are_released() {
        let r = releasable(SMAPS, "/opt/cm/cm_agent");
        assert_eq!(
            r,
            vec![
                // Our constant data and our code.
                Releasable {
                    start: 0x55d0c0000000,
                    end: 0x55d0c0100000,
                    rss_kb: 900
                },
                Releasable {
                    start: 0x55d0c0100000,
                    end: 0x55d0c0500000,
                    rss_kb: 3000
                },
                // libc's code, not its read-only data.
                Releasable {
                    start: 0x7f0000100000,
                    end: 0x7f0000300000,
                    rss_kb: 1100
                },
            ],
            "not: the relocated RELRO (anonymous pages), writable data, the heap, a library's \
             read-only data, code with a written page, nothing resident, shared mappings, vdso"
        );
        // Another program's name: only code.
        assert_eq!(releasable(SMAPS, "/opt/cm/om_monitor").len(), 2);
    }

    #[test]
    fn releases_come_soon_after_the_start_then_every_five_minutes() {
        let waits: Vec<u64> = release_waits().take(8).map(|d| d.as_secs()).collect();
        assert_eq!(waits, [10, 20, 40, 80, 160, 300, 300, 300]);
    }

    #[test]
    fn glibc_takes_the_arena_limit() {
        assert!(limit_malloc_arenas());
    }

    #[test]
    fn an_unreadable_anonymous_count_keeps_the_mapping() {
        let smaps = "7f0000100000-7f0000300000 r-xp 00100000 fd:01 99 /lib/libc.so.6\n\
                     Rss:                1100 kB\nAnonymous: garbage\n";
        assert!(releasable(smaps, "/x").is_empty());
    }

    /// On this process: what is released is resident before and mostly not right after, and
    /// the program runs on (its code faults back in).
    #[test]
    fn releasing_unmaps_this_processs_code_and_it_runs_on() {
        let rss_of = || {
            let smaps = std::fs::read_to_string("/proc/self/smaps").unwrap();
            let exe = std::fs::read_link("/proc/self/exe").unwrap();
            releasable(&smaps, &exe.to_string_lossy())
                .iter()
                .map(|m| m.rss_kb)
                .sum::<u64>()
        };
        let before = rss_of();
        let released = release_file_pages().unwrap();
        assert!(released > 0, "something was resident ({before} kB)");
        let after = rss_of();
        assert!(
            after < released,
            "released {released} kB, still {after} kB resident right after"
        );
        // Code and constants still work.
        let text = format!("{:?}", releasable(SMAPS, "/opt/cm/cm_agent"));
        assert!(text.contains("rss_kb: 3000"));
    }
}
