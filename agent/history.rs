//! The status page's memory of the last 24 hours: per status, the window's count (summed over
//! the APIs) at one point a minute, at most `MAX_POINTS`; ticks within one minute fold into
//! that minute's point, the latest winning. Drawn as inline SVG, with a table beside it for
//! browsers that draw no SVG (a terminal's).

use std::collections::{BTreeMap, VecDeque};
use std::fmt::Write;

use chrono::{DateTime, Utc};

use crate::common::escape::html_escaped as escape;
use crate::snapshot::Snapshot;

/// A day of minutes: the most points kept per status.
pub(crate) const MAX_POINTS: usize = 1_440;
const MINUTE: i64 = 60;

/// One minute's count: the minute (seconds since the epoch, a multiple of 60) and the count.
type Point = (i64, u64);

/// The points of each status, oldest first.
#[derive(Debug, Clone, Default)]
pub(crate) struct History {
    by_status: BTreeMap<String, VecDeque<Point>>,
}

/// The colours of the lines, one per status in name order, repeating.
const COLOURS: [&str; 8] = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf"];

impl History {
    /// Adds `snapshot`'s counts, summed by status, as its minute's point, and lets go of what
    /// is 24 hours old (a status with no point left goes too).
    pub(crate) fn record(&mut self, snapshot: &Snapshot) {
        let minute = snapshot.computed_at.timestamp().div_euclid(MINUTE) * MINUTE;
        let mut totals: BTreeMap<&str, u64> = BTreeMap::new();
        for series in &snapshot.series {
            *totals.entry(&series.status).or_default() += series.count;
        }
        for (status, total) in totals {
            // A day's room at once: a point a minute never makes it grow.
            let points = self.by_status.entry(status.to_owned()).or_insert_with(|| VecDeque::with_capacity(MAX_POINTS));
            match points.back_mut() {
                Some(last) if last.0 == minute => last.1 = total,
                // A clock that went back: the older minute's point is not drawn twice.
                Some(last) if last.0 > minute => *last = (minute, total),
                _ => {
                    if points.len() == MAX_POINTS {
                        points.pop_front();
                    }
                    points.push_back((minute, total));
                }
            }
        }
        let oldest = minute - (MAX_POINTS as i64 - 1) * MINUTE;
        for points in self.by_status.values_mut() {
            while points.front().is_some_and(|point| point.0 < oldest) {
                points.pop_front();
            }
        }
        self.by_status.retain(|_, points| !points.is_empty());
    }

    /// The bytes the points take: what the history adds to the agent's memory (a clone's
    /// deques hold just their points, so ask the one recorded into).
    pub(crate) fn bytes(&self) -> usize {
        self.by_status.iter().map(|(status, points)| status.capacity() + points.capacity() * size_of::<Point>()).sum()
    }

    /// The chart as of `now`: the last 24 hours, a line per status, and a table of each
    /// status's latest, lowest and highest count, and the `bytes` the history takes.
    pub(crate) fn render(&self, page: &mut String, now: DateTime<Utc>, bytes: usize) {
        if self.by_status.is_empty() {
            page.push_str("<p class=\"muted\">No history yet.</p>");
            return;
        }
        const WIDTH: f64 = 600.0;
        const HEIGHT: f64 = 180.0;
        let end = now.timestamp();
        let start = end - MAX_POINTS as i64 * MINUTE;
        let highest = self.by_status.values().flatten().map(|point| point.1).max().unwrap_or(0).max(1);
        let x = |minute: i64| ((minute - start) as f64 / (end - start) as f64 * WIDTH).clamp(0.0, WIDTH);
        let y = |count: u64| HEIGHT - count as f64 / highest as f64 * HEIGHT;
        let _ = write!(
            page,
            "<svg id=\"history\" viewBox=\"-70 -20 {} {}\" width=\"100%\" role=\"img\" \
             aria-label=\"Transactions in the window by status, the last 24 hours\" \
             style=\"max-width:40rem;font-size:20px\" xmlns=\"http://www.w3.org/2000/svg\">\
             <line x1=\"0\" y1=\"{HEIGHT}\" x2=\"{WIDTH}\" y2=\"{HEIGHT}\" stroke=\"#999\"/>\
             <line x1=\"0\" y1=\"0\" x2=\"0\" y2=\"{HEIGHT}\" stroke=\"#999\"/>\
             <text x=\"-6\" y=\"14\" text-anchor=\"end\">{highest}</text>\
             <text x=\"-6\" y=\"{HEIGHT}\" text-anchor=\"end\">0</text>\
             <text x=\"0\" y=\"{}\">24 h ago</text><text x=\"{WIDTH}\" y=\"{}\" text-anchor=\"end\">now</text>",
            WIDTH + 90.0,
            HEIGHT + 50.0,
            HEIGHT + 25.0,
            HEIGHT + 25.0,
        );
        for ((status, points), colour) in self.by_status.iter().zip(COLOURS.iter().cycle()) {
            let mut line = String::new();
            for &(minute, count) in points {
                let _ = write!(line, "{:.1},{:.1} ", x(minute), y(count));
            }
            let _ = write!(
                page,
                "<polyline data-status=\"{}\" fill=\"none\" stroke=\"{colour}\" stroke-width=\"2.5\" points=\"{}\"/>",
                escape(status),
                line.trim_end()
            );
        }
        page.push_str("</svg>");
        page.push_str(
            "<div class=\"scroll\"><table id=\"history-table\"><tr><th>status</th><th>now</th><th>lowest</th>\
             <th>highest</th><th>points</th></tr>",
        );
        for ((status, points), colour) in self.by_status.iter().zip(COLOURS.iter().cycle()) {
            let latest = points.back().map_or(0, |point| point.1);
            let lowest = points.iter().map(|point| point.1).min().unwrap_or(0);
            let highest = points.iter().map(|point| point.1).max().unwrap_or(0);
            let _ = write!(
                page,
                "<tr><th><span style=\"color:{colour}\">■</span> {}</th><td class=\"n\">{latest}</td>\
                 <td class=\"n\">{lowest}</td><td class=\"n\">{highest}</td><td class=\"n\">{}</td></tr>",
                escape(status),
                points.len()
            );
        }
        page.push_str("</table></div>");
        let n_points: usize = self.by_status.values().map(VecDeque::len).sum();
        let _ = write!(page, "<p class=\"muted\">{n_points} points, {:.1} KB of memory.</p>", bytes as f64 / 1_000.0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::snapshot::Series;

    fn snapshot(at: DateTime<Utc>, counts: &[(&str, &str, u64)]) -> Snapshot {
        Snapshot {
            computed_at: at,
            window_start: at,
            series: counts
                .iter()
                .map(|(api, status, count)| Series { api: api.to_string(), status: status.to_string(), count: *count })
                .collect(),
            n_rows_in_window: 0,
            n_rows_bad_timestamp: 0,
            n_rows_in_future: 0,
            n_rows_orphaned: 0,
            query_duration: std::time::Duration::ZERO,
        }
    }

    #[test]
    fn ticks_within_a_minute_fold_into_one_point_summed_over_the_apis() {
        let mut history = History::default();
        let start = DateTime::from_timestamp(1_799_999_940, 0).unwrap();
        for second in [0, 15, 30, 45] {
            let at = start + chrono::Duration::seconds(second);
            history.record(&snapshot(at, &[("A", "Failed", second as u64), ("B", "Failed", 1), ("A", "Pending", 7)]));
        }
        assert_eq!(history.by_status["Failed"], [(start.timestamp(), 46)]);
        assert_eq!(history.by_status["Pending"], [(start.timestamp(), 7)]);
    }

    #[test]
    fn a_day_of_ticks_every_15_seconds_keeps_1440_points_a_status_in_23_kb() {
        let mut history = History::default();
        let start = DateTime::from_timestamp(1_800_000_000, 0).unwrap();
        let statuses = ["Pending", "Processing", "Processed", "Failed", "TimedOut", "Cancelled"];
        // Two days, so the first day's points leave.
        for tick in 0..(2 * 86_400 / 15) {
            let at = start + chrono::Duration::seconds(tick * 15);
            let counts: Vec<(&str, &str, u64)> = statuses.iter().map(|status| ("A", *status, tick as u64)).collect();
            history.record(&snapshot(at, &counts));
        }
        for points in history.by_status.values() {
            assert_eq!(points.len(), MAX_POINTS);
            assert!(points.iter().zip(points.iter().skip(1)).all(|(a, b)| b.0 - a.0 == MINUTE));
        }
        // 1,440 points of 16 bytes a status, and the statuses' names.
        let bytes = history.bytes();
        println!("a day of 6 statuses: {bytes} bytes");
        assert!((6 * MAX_POINTS * 16..=6 * MAX_POINTS * 16 + 100).contains(&bytes), "{bytes}");
        let mut page = String::new();
        history.render(&mut page, start + chrono::Duration::days(2), bytes);
        assert_eq!(page.matches("<polyline").count(), 6);
        assert!(page.len() < 6 * MAX_POINTS * 14 + 4_000, "{}", page.len());
    }

    #[test]
    fn names_are_escaped_and_an_empty_history_says_so() {
        let mut page = String::new();
        History::default().render(&mut page, Utc::now(), 0);
        assert_eq!(page, "<p class=\"muted\">No history yet.</p>");
        let mut history = History::default();
        history.record(&snapshot(Utc::now(), &[("A", "<b>\"x\"</b>", 1)]));
        let mut page = String::new();
        history.render(&mut page, Utc::now(), history.bytes());
        assert!(!page.contains("<b>") && page.contains("&lt;b&gt;"), "{page}");
    }
}
