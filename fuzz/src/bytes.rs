//! A tiny decoder from fuzz bytes to small choices. It never fails: an exhausted input reads
//! as `None`, which ends the step sequence, so every prefix of an input is itself a valid run.

use core::time::Duration;

/// Reads choices off the front of the fuzz input.
pub struct Bytes<'a> {
    data: &'a [u8],
}

impl<'a> Bytes<'a> {
    /// A reader over `data`.
    pub fn new(data: &'a [u8]) -> Self {
        Self { data }
    }

    /// The next byte, if any.
    pub fn byte(&mut self) -> Option<u8> {
        let (&b, rest) = self.data.split_first()?;
        self.data = rest;
        Some(b)
    }

    /// The next byte, or 0 once the input is exhausted (for the fields of a step whose kind
    /// was already read, so a cut input still decodes).
    pub fn u8(&mut self) -> u8 {
        self.byte().unwrap_or(0)
    }

    /// A bit (the low bit of the next byte).
    pub fn bool(&mut self) -> bool {
        self.u8() & 1 == 1
    }

    /// A value below `n` (`n` > 0).
    pub fn below(&mut self, n: usize) -> usize {
        usize::from(self.u8()) % n
    }

    /// A small value in `0..=max`.
    pub fn small(&mut self, max: u8) -> u8 {
        self.u8() % max.saturating_add(1)
    }

    /// A time delta: bytes below 200 are steps of 10 ms (up to 2 s, the loops' grain), the
    /// rest whole seconds up to 55 s (so the 6 s, 10 s and 36 s rules are reached too).
    pub fn delta(&mut self) -> Duration {
        let b = u64::from(self.u8());
        if b < 200 {
            Duration::from_millis(b * 10)
        } else {
            Duration::from_secs(b - 199)
        }
    }

    /// One element of `items` chosen by the next byte, counting from the newest (the end).
    pub fn pick<T: Copy>(&mut self, items: &[T]) -> Option<T> {
        if items.is_empty() {
            return None;
        }
        let i = self.below(items.len());
        Some(items[items.len() - 1 - i])
    }
}

/// Keeps the newest `cap` entries of a list the harness picks answers from.
pub fn push_bounded<T>(list: &mut Vec<T>, item: T, cap: usize) {
    list.push(item);
    if list.len() > cap {
        list.remove(0);
    }
}
