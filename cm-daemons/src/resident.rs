//! What a resident daemon keeps in memory (issue 16: om_monitor + cm_agent ≤ 10 MB resident
//! per node): glibc gives every thread that allocates while the others' arenas are taken an
//! arena of its own (up to 8 per core), and each arena's touched pages stay resident; the
//! daemons' threads mostly wait for IO, so they share two.

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

    #[test]
    fn glibc_takes_the_arena_limit() {
        assert!(limit_malloc_arenas());
    }
}
