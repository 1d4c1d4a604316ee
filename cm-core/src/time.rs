//! Time as data: cm-core never reads a clock.
//!
//! [`Instant`] is a point on the caller's monotonic clock, in nanoseconds since an arbitrary
//! origin. Drivers pass it into every `step`; the simulator constructs it from virtual time.
//! Durations are `core::time::Duration`.

use core::fmt;
use core::ops::{Add, AddAssign, Sub};
use core::time::Duration;

use serde::{Deserialize, Serialize};

/// A monotonic instant in nanoseconds since an arbitrary, per-process origin.
///
/// Only differences between instants of the *same* process are meaningful: nodes' clocks differ,
/// so no `Instant` ever travels on the wire or into replicated state.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
pub struct Instant(u64);

impl Instant {
    /// The origin of the clock.
    pub const ZERO: Self = Self(0);
    /// The latest representable instant ("never").
    pub const MAX: Self = Self(u64::MAX);

    /// An instant `nanos` nanoseconds after the origin.
    pub const fn from_nanos(nanos: u64) -> Self {
        Self(nanos)
    }

    /// An instant `millis` milliseconds after the origin.
    pub const fn from_millis(millis: u64) -> Self {
        Self(millis.saturating_mul(1_000_000))
    }

    /// An instant `secs` seconds after the origin.
    pub const fn from_secs(secs: u64) -> Self {
        Self(secs.saturating_mul(1_000_000_000))
    }

    /// Nanoseconds since the origin.
    pub const fn as_nanos(self) -> u64 {
        self.0
    }

    /// Time since the origin.
    pub const fn since_origin(self) -> Duration {
        Duration::from_nanos(self.0)
    }

    /// `self - earlier`, or zero when `earlier` is later.
    pub fn saturating_since(self, earlier: Self) -> Duration {
        Duration::from_nanos(self.0.saturating_sub(earlier.0))
    }

    /// `self + d`, saturating at [`Instant::MAX`].
    pub fn saturating_add(self, d: Duration) -> Self {
        Self(self.0.saturating_add(duration_nanos(d)))
    }

    /// `self - d`, saturating at the origin.
    pub fn saturating_sub(self, d: Duration) -> Self {
        Self(self.0.saturating_sub(duration_nanos(d)))
    }

    /// Seconds since the origin as a float, for human-facing output only.
    pub fn as_secs_f64(self) -> f64 {
        self.0 as f64 / 1e9
    }
}

fn duration_nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

impl Add<Duration> for Instant {
    type Output = Self;
    fn add(self, rhs: Duration) -> Self {
        self.saturating_add(rhs)
    }
}

impl AddAssign<Duration> for Instant {
    fn add_assign(&mut self, rhs: Duration) {
        *self = self.saturating_add(rhs);
    }
}

impl Sub<Duration> for Instant {
    type Output = Self;
    fn sub(self, rhs: Duration) -> Self {
        self.saturating_sub(rhs)
    }
}

impl Sub for Instant {
    type Output = Duration;
    fn sub(self, rhs: Self) -> Duration {
        self.saturating_since(rhs)
    }
}

impl fmt::Display for Instant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ms = self.0 / 1_000_000;
        write!(f, "{}.{:03}s", ms / 1000, ms % 1000)
    }
}

/// Wall-clock time in milliseconds since the Unix epoch.
///
/// Used only where a deadline must outlive a process and cross nodes (cool-downs and timeouts
/// stored in the replicated state, §5.1). It enters cm-core as a field of an input, never read.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
pub struct WallMillis(pub u64);

impl WallMillis {
    /// `self + d`, saturating.
    pub fn saturating_add(self, d: Duration) -> Self {
        Self(
            self.0
                .saturating_add(u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
        )
    }
}

/// Keeps the last `now` a machine saw and enforces that time never goes backwards.
///
/// The check stays on in release builds: a clock that runs backwards would silently break every
/// timeout rule, and stopping is safer than deciding on a broken clock.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MonotonicGuard {
    last: Instant,
}

impl MonotonicGuard {
    /// Records `now`, panicking if it is earlier than the previous one.
    pub fn observe(&mut self, now: Instant) {
        assert!(
            now >= self.last,
            "time went backwards: {now} after {} (drivers must pass a monotonic clock)",
            self.last
        );
        self.last = now;
    }

    /// The latest instant observed.
    pub fn last(&self) -> Instant {
        self.last
    }
}

/// Scales a duration by a float factor (for the drift bounds `(1 ± ρ)`), rounding up to whole
/// nanoseconds so that safety margins never shrink by rounding.
pub fn scale_up(d: Duration, factor: f64) -> Duration {
    let nanos = (d.as_nanos() as f64 * factor).ceil();
    if nanos.is_finite() && nanos >= 0.0 {
        Duration::from_nanos(nanos.min(u64::MAX as f64) as u64)
    } else {
        Duration::MAX
    }
}

/// Scales a duration by a float factor, rounding down (for leases, which must not overrun).
pub fn scale_down(d: Duration, factor: f64) -> Duration {
    let nanos = (d.as_nanos() as f64 * factor).floor();
    if nanos.is_finite() && nanos >= 0.0 {
        Duration::from_nanos(nanos.min(u64::MAX as f64) as u64)
    } else {
        Duration::ZERO
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arithmetic_saturates() {
        assert_eq!(Instant::MAX + Duration::from_secs(1), Instant::MAX);
        assert_eq!(Instant::ZERO - Duration::from_secs(1), Instant::ZERO);
        assert_eq!(
            Instant::from_secs(1) - Instant::from_secs(3),
            Duration::ZERO
        );
        assert_eq!(
            Instant::from_secs(3) - Instant::from_secs(1),
            Duration::from_secs(2)
        );
    }

    #[test]
    fn display_is_seconds_with_millis() {
        assert_eq!(Instant::from_millis(63_250).to_string(), "63.250s");
    }

    #[test]
    #[should_panic(expected = "time went backwards")]
    fn guard_rejects_backwards_time() {
        let mut g = MonotonicGuard::default();
        g.observe(Instant::from_secs(2));
        g.observe(Instant::from_secs(1));
    }

    #[test]
    fn scaling_rounds_in_the_safe_direction() {
        let d = Duration::from_nanos(3);
        assert_eq!(scale_up(d, 1.0 / 3.0), Duration::from_nanos(1));
        assert_eq!(
            scale_down(Duration::from_nanos(10), 0.99),
            Duration::from_nanos(9)
        );
        assert_eq!(
            scale_up(Duration::from_secs(6), 1.01 / 0.99).as_millis(),
            6121
        );
    }
}
