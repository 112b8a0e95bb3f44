//! What goes on the wire: a snapshot as remote-write time series (labels sorted, `__name__`
//! first among them, no empty values), stale markers for series that left, and the
//! snappy-compressed protobuf body. No IO.

use std::collections::BTreeMap;

use crate::exposition::config::MetricConfig;
use crate::snapshot::Snapshot;

/// The protobuf messages compiled from `proto/`.
pub mod proto {
    include!(concat!(env!("OUT_DIR"), "/prometheus.rs"));
}

use proto::{Label, Sample, TimeSeries};

/// Prometheus's staleness marker: a NaN with exactly these bits tells the receiver the series
/// ended, so graphs stop drawing it at once instead of five minutes later.
pub const STALE_NAN_BITS: u64 = 0x7ff0_0000_0000_0002;

/// A series' labels, sorted by name, as they go on the wire.
pub(crate) type LabelSet = Vec<Label>;

/// The labels of one series: `__name__`, the series' own, the constant ones; sorted by name,
/// with empty values left out (an empty label is no label to Prometheus).
pub fn label_set(name: &str, own: &[(&str, &str)], constant: &BTreeMap<String, String>) -> LabelSet {
    let mut labels: Vec<Label> = std::iter::once(("__name__", name))
        .chain(own.iter().copied())
        .chain(constant.iter().map(|(label, value)| (label.as_str(), value.as_str())))
        .filter(|(_, value)| !value.is_empty())
        .map(|(label, value)| Label { name: label.to_owned(), value: value.to_owned() })
        .collect();
    labels.sort_by(|a, b| a.name.cmp(&b.name));
    labels
}

/// One tick's series, and the label sets of those that go on, to pass as `previous` next time.
#[derive(Debug)]
pub(crate) struct TickSeries {
    pub(crate) series: Vec<TimeSeries>,
    pub(crate) label_sets: Vec<LabelSet>,
}

/// One tick's series: the aggregate and the snapshot's row counts, each with one sample at
/// `timestamp_ms`, plus a stale marker for every series of `previous` that is gone now.
pub(crate) fn tick_series(
    snapshot: &Snapshot,
    metric: &MetricConfig,
    constant: &BTreeMap<String, String>,
    timestamp_ms: i64,
    previous: &[LabelSet],
) -> TickSeries {
    let mut values: Vec<(LabelSet, f64)> = snapshot
        .series
        .iter()
        .map(|series| {
            let labels = label_set(&metric.name, &[("api", &series.api), ("status", &series.status)], constant);
            (labels, series.count as f64)
        })
        .collect();
    values.push((label_set("apimetrics_agent_rows_in_window", &[], constant), snapshot.n_rows_in_window as f64));
    for (reason, n_rows) in [("bad_timestamp", snapshot.n_rows_bad_timestamp), ("orphaned", snapshot.n_rows_orphaned)] {
        values.push((label_set("apimetrics_agent_rows_skipped", &[("reason", reason)], constant), n_rows as f64));
    }
    let label_sets: Vec<LabelSet> = values.iter().map(|(labels, _)| labels.clone()).collect();
    let gone = previous.iter().filter(|labels| !label_sets.contains(labels));
    let stale = gone.map(|labels| (labels.clone(), f64::from_bits(STALE_NAN_BITS)));
    let series = values
        .into_iter()
        .chain(stale)
        .map(|(labels, value)| TimeSeries { labels, samples: vec![Sample { value, timestamp: timestamp_ms }] })
        .collect();
    TickSeries { series, label_sets }
}

/// The request body: the protobuf `WriteRequest` of these series, compressed with snappy's block
/// format. Encoded field by field, as `WriteRequest` would be, without copying the series into one.
pub fn encode<'a>(timeseries: impl IntoIterator<Item = &'a TimeSeries>) -> Vec<u8> {
    let mut protobuf = Vec::new();
    for series in timeseries {
        prost::encoding::message::encode(1, series, &mut protobuf);
    }
    snap::raw::Encoder::new().compress_vec(&protobuf).expect("snappy compresses any input")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::snapshot::Series;
    use chrono::DateTime;
    use prost::Message;
    use proto::WriteRequest;
    use std::time::Duration;

    fn snapshot(series: &[(&str, &str, u64)]) -> Snapshot {
        Snapshot {
            computed_at: DateTime::UNIX_EPOCH,
            window_start: DateTime::UNIX_EPOCH,
            series: series
                .iter()
                .map(|(api, status, count)| Series { api: (*api).into(), status: (*status).into(), count: *count })
                .collect(),
            n_rows_in_window: series.iter().map(|(_, _, count)| count).sum(),
            n_rows_bad_timestamp: 0,
            n_rows_in_future: 0,
            n_rows_orphaned: 0,
            query_duration: Duration::ZERO,
        }
    }

    fn metric() -> MetricConfig {
        MetricConfig { name: "api_transactions".into(), help: "API Transactions".into(), zero_fill: false }
    }

    fn names(labels: &LabelSet) -> Vec<(&str, &str)> {
        labels.iter().map(|label| (label.name.as_str(), label.value.as_str())).collect()
    }

    #[test]
    fn labels_are_sorted_with_the_name_and_without_empty_values() {
        let constant =
            BTreeMap::from([("site".to_owned(), "nairobi-1".to_owned()), ("job".to_owned(), "apimetrics".to_owned())]);
        let labels = label_set("api_transactions", &[("status", "Pending"), ("api", "")], &constant);
        assert_eq!(
            names(&labels),
            [("__name__", "api_transactions"), ("job", "apimetrics"), ("site", "nairobi-1"), ("status", "Pending")]
        );
    }

    #[test]
    fn a_series_that_leaves_gets_one_stale_marker() {
        let constant = BTreeMap::new();
        let first = tick_series(&snapshot(&[("A", "Pending", 2), ("B", "Failed", 1)]), &metric(), &constant, 1000, &[]);
        assert_eq!(first.series.len(), 5);
        let second = tick_series(&snapshot(&[("A", "Pending", 3)]), &metric(), &constant, 2000, &first.label_sets);
        let stale: Vec<_> =
            second.series.iter().filter(|series| series.samples[0].value.to_bits() == STALE_NAN_BITS).collect();
        assert_eq!(stale.len(), 1);
        assert_eq!(names(&stale[0].labels), [("__name__", "api_transactions"), ("api", "B"), ("status", "Failed")]);
        assert_eq!(stale[0].samples[0].timestamp, 2000);
        let third = tick_series(&snapshot(&[("A", "Pending", 3)]), &metric(), &constant, 3000, &second.label_sets);
        assert!(third.series.iter().all(|series| !series.samples[0].value.is_nan()), "a marker is sent once");
    }

    #[test]
    fn the_body_is_snappy_block_format_of_the_protobuf() {
        let series = tick_series(&snapshot(&[("A", "Pending", 2)]), &metric(), &BTreeMap::new(), 1000, &[]).series;
        let body = encode(&series);
        let protobuf = snap::raw::Decoder::new().decompress_vec(&body).unwrap();
        let whole = WriteRequest { timeseries: series.clone(), metadata: Vec::new() };
        assert_eq!(protobuf, whole.encode_to_vec(), "the same bytes as encoding a WriteRequest");
        let decoded = WriteRequest::decode(protobuf.as_slice()).unwrap();
        assert_eq!(decoded.timeseries, series);
        assert!(decoded.metadata.is_empty(), "no metadata goes on the wire");
        // The framed format would start with its stream identifier chunk.
        assert_ne!(&body[..4], b"\xff\x06\x00\x00");
    }
}
