//! Counters for `GET /metrics`, in the Prometheus text format: requests, errors and latency per
//! operation; records and bytes in and out per stream; how far behind readers are.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Mutex;
use std::time::Duration;

/// Upper bounds of the latency histogram's buckets, in seconds.
const BUCKETS: [f64; 12] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0,
];

#[derive(Default)]
pub(crate) struct Metrics {
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    operations: BTreeMap<String, Operation>,
    streams: BTreeMap<String, StreamTraffic>,
}

#[derive(Default)]
struct Operation {
    errors: u64,
    /// Per bucket of `BUCKETS` (and one more for larger): requests that took that long.
    buckets: [u64; BUCKETS.len() + 1],
    seconds: f64,
}

#[derive(Default)]
struct StreamTraffic {
    records_in: u64,
    bytes_in: u64,
    records_out: u64,
    bytes_out: u64,
    /// The latest GetRecords MillisBehindLatest.
    millis_behind_latest: i64,
}

impl Metrics {
    fn inner(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// One request of `operation` that took `elapsed`.
    pub fn observe(&self, operation: &str, failed: bool, elapsed: Duration) {
        let mut inner = self.inner();
        let op = match inner.operations.get_mut(operation) {
            Some(op) => op,
            None => inner.operations.entry(operation.to_string()).or_default(),
        };
        let secs = elapsed.as_secs_f64();
        let bucket = BUCKETS
            .iter()
            .position(|&b| secs <= b)
            .unwrap_or(BUCKETS.len());
        op.buckets[bucket] += 1;
        op.errors += u64::from(failed);
        op.seconds += secs;
    }

    fn stream<'a>(inner: &'a mut Inner, stream: &str) -> &'a mut StreamTraffic {
        if !inner.streams.contains_key(stream) {
            inner
                .streams
                .insert(stream.to_string(), StreamTraffic::default());
        }
        // Inserted just above if it was missing.
        inner.streams.get_mut(stream).expect("present")
    }

    /// Records put into `stream`.
    pub fn records_in(&self, stream: &str, records: u64, bytes: u64) {
        let mut inner = self.inner();
        let s = Self::stream(&mut inner, stream);
        s.records_in += records;
        s.bytes_in += bytes;
    }

    /// Records read from `stream`, and how far behind its reader was.
    pub fn records_out(&self, stream: &str, records: usize, data_bytes: u64, millis_behind: i64) {
        let mut inner = self.inner();
        let s = Self::stream(&mut inner, stream);
        s.records_out += records as u64;
        s.bytes_out += data_bytes;
        s.millis_behind_latest = millis_behind;
    }

    /// Drops a deleted stream's series, so that creating and deleting streams does not grow
    /// `/metrics` without bound.
    pub fn forget_stream(&self, stream: &str) {
        self.inner().streams.remove(stream);
    }

    /// The text format.
    pub fn render(&self) -> String {
        let inner = self.inner();
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = render(&inner, &mut out);
        out
    }
}

/// The tiering gauges and counters of a store, in the text format.
pub fn render_tier(status: &crate::StoreTierStatus) -> String {
    let series: [(&str, &str, &str, u64); 10] = [
        (
            "shardlog_tier_backlog_segments",
            "gauge",
            "Sealed segments not yet uploaded (open shards).",
            status.segments.local_only as u64,
        ),
        (
            "shardlog_tier_backlog_bytes",
            "gauge",
            "Bytes of sealed segments not yet uploaded (open shards).",
            status.segments.local_only_bytes,
        ),
        (
            "shardlog_tier_remote_only_segments",
            "gauge",
            "Segments only in the object store (open shards).",
            status.segments.remote_only as u64,
        ),
        (
            "shardlog_tier_remote_bytes",
            "gauge",
            "Bytes of segments in the object store (open shards).",
            status.segments.remote_bytes,
        ),
        (
            "shardlog_tier_uploaded_segments_total",
            "counter",
            "Segments uploaded since start.",
            status.uploaded,
        ),
        (
            "shardlog_tier_uploaded_bytes_total",
            "counter",
            "Bytes uploaded since start.",
            status.uploaded_bytes,
        ),
        (
            "shardlog_tier_cache_downloads_total",
            "counter",
            "Remote segments downloaded into the cache.",
            status.cache.downloads,
        ),
        (
            "shardlog_tier_range_reads_total",
            "counter",
            "Windows of remote segments fetched by range reads.",
            status.cache.range_reads,
        ),
        (
            "shardlog_tier_cache_resident_bytes",
            "gauge",
            "Bytes of remote segments cached.",
            status.cache.resident_bytes,
        ),
        (
            "shardlog_tier_failing",
            "gauge",
            "1 while tiering passes fail (the object store unreachable).",
            u64::from(status.last_error.is_some()),
        ),
    ];
    let mut out = String::new();
    for (name, kind, help, value) in series {
        out.push_str(&format!(
            "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}\n"
        ));
    }
    out
}

/// A label value escaped as the Prometheus text format requires (`\\`, `\"`, `\n`).
fn escape_label(value: &str) -> std::borrow::Cow<'_, str> {
    if !value.contains(['\\', '"', '\n']) {
        return std::borrow::Cow::Borrowed(value);
    }
    let mut escaped = String::with_capacity(value.len() + 2);
    for c in value.chars() {
        match c {
            '\\' => escaped.push_str("\\\\"),
            '"' => escaped.push_str("\\\""),
            '\n' => escaped.push_str("\\n"),
            c => escaped.push(c),
        }
    }
    std::borrow::Cow::Owned(escaped)
}

fn render(inner: &Inner, out: &mut String) -> std::fmt::Result {
    writeln!(
        out,
        "# HELP shardlog_requests_total API requests by operation."
    )?;
    writeln!(out, "# TYPE shardlog_requests_total counter")?;
    for (name, op) in &inner.operations {
        let name = escape_label(name);
        let count: u64 = op.buckets.iter().sum();
        writeln!(
            out,
            "shardlog_requests_total{{operation=\"{name}\"}} {count}"
        )?;
    }
    writeln!(
        out,
        "# HELP shardlog_request_errors_total Requests answered with an error."
    )?;
    writeln!(out, "# TYPE shardlog_request_errors_total counter")?;
    for (name, op) in &inner.operations {
        let name = escape_label(name);
        writeln!(
            out,
            "shardlog_request_errors_total{{operation=\"{name}\"}} {}",
            op.errors
        )?;
    }
    writeln!(
        out,
        "# HELP shardlog_request_seconds Request latency by operation."
    )?;
    writeln!(out, "# TYPE shardlog_request_seconds histogram")?;
    for (name, op) in &inner.operations {
        let name = escape_label(name);
        let mut cumulative = 0;
        for (bound, n) in BUCKETS.iter().zip(&op.buckets) {
            cumulative += n;
            writeln!(
                out,
                "shardlog_request_seconds_bucket{{operation=\"{name}\",le=\"{bound}\"}} {cumulative}"
            )?;
        }
        let count: u64 = op.buckets.iter().sum();
        writeln!(
            out,
            "shardlog_request_seconds_bucket{{operation=\"{name}\",le=\"+Inf\"}} {count}"
        )?;
        writeln!(
            out,
            "shardlog_request_seconds_sum{{operation=\"{name}\"}} {:.6}",
            op.seconds
        )?;
        writeln!(
            out,
            "shardlog_request_seconds_count{{operation=\"{name}\"}} {count}"
        )?;
    }
    let series: [(&str, &str, &str); 5] = [
        (
            "shardlog_records_in_total",
            "counter",
            "Records put, by stream.",
        ),
        (
            "shardlog_bytes_in_total",
            "counter",
            "Data bytes put, by stream.",
        ),
        (
            "shardlog_records_out_total",
            "counter",
            "Records read, by stream.",
        ),
        (
            "shardlog_bytes_out_total",
            "counter",
            "Data bytes read, by stream.",
        ),
        (
            "shardlog_iterator_age_milliseconds",
            "gauge",
            "MillisBehindLatest of the latest GetRecords, by stream.",
        ),
    ];
    for (i, (name, kind, help)) in series.iter().enumerate() {
        writeln!(out, "# HELP {name} {help}")?;
        writeln!(out, "# TYPE {name} {kind}")?;
        for (stream, t) in &inner.streams {
            let stream = escape_label(stream);
            let value = match i {
                0 => t.records_in as i64,
                1 => t.bytes_in as i64,
                2 => t.records_out as i64,
                3 => t.bytes_out as i64,
                _ => t.millis_behind_latest,
            };
            writeln!(out, "{name}{{stream=\"{stream}\"}} {value}")?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_values_are_escaped() {
        let m = Metrics::default();
        m.observe("a\"b\\c\nd", false, Duration::from_micros(1));
        let text = m.render();
        assert!(
            text.contains(r#"shardlog_requests_total{operation="a\"b\\c\nd"} 1"#),
            "{text}"
        );
        // An unescaped newline would start a line with the rest of the value.
        assert!(!text.lines().any(|l| l.starts_with("d\"")), "{text}");
    }

    #[test]
    fn latency_lands_in_cumulative_buckets() {
        let m = Metrics::default();
        m.observe("PutRecords", false, Duration::from_micros(700));
        m.observe("PutRecords", true, Duration::from_millis(30));
        m.records_in("orders", 500, 50_000);
        m.records_out("orders", 10, 1_000, 42);
        let text = m.render();
        for line in [
            "shardlog_requests_total{operation=\"PutRecords\"} 2",
            "shardlog_request_errors_total{operation=\"PutRecords\"} 1",
            "shardlog_request_seconds_bucket{operation=\"PutRecords\",le=\"0.0005\"} 0",
            "shardlog_request_seconds_bucket{operation=\"PutRecords\",le=\"0.001\"} 1",
            "shardlog_request_seconds_bucket{operation=\"PutRecords\",le=\"0.025\"} 1",
            "shardlog_request_seconds_bucket{operation=\"PutRecords\",le=\"0.05\"} 2",
            "shardlog_request_seconds_bucket{operation=\"PutRecords\",le=\"+Inf\"} 2",
            "shardlog_records_in_total{stream=\"orders\"} 500",
            "shardlog_bytes_out_total{stream=\"orders\"} 1000",
            "shardlog_iterator_age_milliseconds{stream=\"orders\"} 42",
        ] {
            assert!(text.contains(line), "{line} missing from\n{text}");
        }
    }
}
