//! WAL positions as PostgreSQL writes them: `X/Y` LSNs, timeline history files, and the
//! timeline of the segment file holding an LSN (§9: on a standby without a WAL receiver the
//! timeline comes from `pg_wal`, because `pg_control_checkpoint()` lags until a checkpoint).

use std::path::Path;
use std::time::{Duration, SystemTime};

use cm_core::dn::History;
use cm_core::{Lsn, Timeline};

/// Parses PostgreSQL's text form of an LSN (`16/B374D848`).
pub fn parse_lsn(text: &str) -> Option<Lsn> {
    let (hi, lo) = text.trim().split_once('/')?;
    let hi = u64::from_str_radix(hi, 16).ok()?;
    let lo = u64::from_str_radix(lo, 16).ok()?;
    if hi > u64::from(u32::MAX) || lo > u64::from(u32::MAX) {
        return None;
    }
    Some(Lsn(hi << 32 | lo))
}

/// Parses the text of `<tli>.history` into the history of timeline `timeline`. Each data line
/// is `parent_tli <TAB> switch_lsn <TAB> reason`; comments and blank lines are skipped.
pub fn parse_history(timeline: Timeline, text: &str) -> Option<History> {
    let mut forks = Vec::new();
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let mut fields = line.split_whitespace();
        let tli: u32 = fields.next()?.parse().ok()?;
        let lsn = parse_lsn(fields.next()?)?;
        if tli >= timeline.0
            || forks
                .last()
                .is_some_and(|(t, _): &(Timeline, Lsn)| t.0 >= tli)
        {
            return None;
        }
        forks.push((Timeline(tli), lsn));
    }
    Some(History { timeline, forks })
}

/// Reads the history of `timeline` from `<pg_wal>/<TTTTTTTT>.history` (timeline 1 has none).
pub fn read_history(pg_wal: &Path, timeline: Timeline) -> Option<History> {
    if timeline.0 <= 1 {
        return Some(History::root(timeline));
    }
    let text = std::fs::read_to_string(pg_wal.join(format!("{:08X}.history", timeline.0))).ok()?;
    parse_history(timeline, &text)
}

/// The part of a segment file name after the timeline (`XXXXXXXXYYYYYYYY`) for the segment
/// holding the byte just before `lsn` (an LSN at a segment boundary ends the previous one).
pub fn segment_suffix(lsn: Lsn, segment_size: u64) -> Option<String> {
    if segment_size == 0 || !segment_size.is_power_of_two() {
        return None;
    }
    let segno = lsn.0.saturating_sub(1) / segment_size;
    let per_id = 0x1_0000_0000 / segment_size;
    Some(format!("{:08X}{:08X}", segno / per_id, segno % per_id))
}

/// Whether `name` is a WAL segment file name, and its timeline.
fn segment_timeline(name: &str) -> Option<Timeline> {
    if name.len() != 24 || !name.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    u32::from_str_radix(&name[..8], 16).ok().map(Timeline)
}

/// The timeline of the newest segment file among `names` that holds `lsn`: after a timeline
/// switch a standby keeps both the old and the new timeline's file of the switch segment, and
/// its position is on the newer one.
pub fn timeline_of_lsn<'a>(
    names: impl IntoIterator<Item = &'a str>,
    lsn: Lsn,
    segment_size: u64,
) -> Option<Timeline> {
    let suffix = segment_suffix(lsn, segment_size)?;
    names
        .into_iter()
        .filter(|n| n.len() == 24 && n[8..] == suffix)
        .filter_map(segment_timeline)
        .max()
}

/// Like [`timeline_of_lsn`] over the entries of a `pg_wal` directory.
pub fn timeline_of_lsn_in(pg_wal: &Path, lsn: Lsn, segment_size: u64) -> Option<Timeline> {
    let names: Vec<String> = std::fs::read_dir(pg_wal)
        .ok()?
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .collect();
    timeline_of_lsn(names.iter().map(String::as_str), lsn, segment_size)
}

/// Age of the newest file in a directory (§6: the WAL directory of a hung instance stops
/// changing). `None` when the directory cannot be read or holds no file.
pub fn newest_file_age(dir: &Path) -> Option<Duration> {
    let newest = std::fs::read_dir(dir)
        .ok()?
        .filter_map(|e| e.ok()?.metadata().ok())
        .filter(std::fs::Metadata::is_file)
        .filter_map(|m| m.modified().ok())
        .max()?;
    Some(SystemTime::now().duration_since(newest).unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lsn_text_round_trips_and_garbage_is_refused() {
        assert_eq!(parse_lsn("0/5FA3240"), Some(Lsn(0x5FA_3240)));
        assert_eq!(parse_lsn("16/B374D848"), Some(Lsn(0x16_B374_D848)));
        assert_eq!(parse_lsn("5FA3240"), None);
        assert_eq!(parse_lsn("x/1"), None);
        assert_eq!(parse_lsn("1/100000000"), None);
    }

    #[test]
    fn history_file_lists_every_ancestor_with_its_switch_point() {
        let text = "1\t0/5FA3240\tno recovery target specified\n\n2\t0/7000000\tno recovery target specified\n";
        let h = parse_history(Timeline(3), text).expect("parses");
        assert_eq!(
            h.forks,
            vec![
                (Timeline(1), Lsn(0x5FA_3240)),
                (Timeline(2), Lsn(0x700_0000))
            ]
        );
        assert_eq!(h.timeline, Timeline(3));
        assert_eq!(
            parse_history(Timeline(2), text),
            None,
            "ancestor >= own tli"
        );
        assert_eq!(parse_history(Timeline(3), "1 zz reason"), None);
    }

    #[test]
    fn segment_of_an_lsn_uses_the_byte_before_it() {
        let mb16 = 16 * 1024 * 1024;
        assert_eq!(
            segment_suffix(Lsn(0x5FA_3240), mb16).as_deref(),
            Some("0000000000000005")
        );
        assert_eq!(
            segment_suffix(Lsn(0x600_0000), mb16).as_deref(),
            Some("0000000000000005")
        );
        assert_eq!(
            segment_suffix(Lsn(0x1_0000_0028), mb16).as_deref(),
            Some("0000000100000000")
        );
        assert_eq!(segment_suffix(Lsn(1), 3), None);
    }

    #[test]
    fn newest_timeline_holding_the_segment_wins() {
        let mb16 = 16 * 1024 * 1024;
        let names = [
            "000000010000000000000004",
            "000000010000000000000005",
            "000000020000000000000005",
            "00000002.history",
            "archive_status",
        ];
        assert_eq!(
            timeline_of_lsn(names, Lsn(0x5FA_3240), mb16),
            Some(Timeline(2))
        );
        assert_eq!(
            timeline_of_lsn(names, Lsn(0x4FA_3240), mb16),
            Some(Timeline(1))
        );
        assert_eq!(timeline_of_lsn(names, Lsn(0x7FA_3240), mb16), None);
    }
}
