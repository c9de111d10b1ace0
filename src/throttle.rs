//! Kinesis's per-shard throughput limits, as token buckets driven by the store's clock: writes
//! 1 MiB/s and 1,000 records/s, reads 2 MiB/s and 5 GetRecords calls/s. Each bucket holds one
//! second's worth and refills continuously. Reads may overdraw the byte bucket, as Kinesis lets one
//! GetRecords call return up to 10 MiB and then throttles the shard until it has paid the debt.
//!
//! The same counters give an on-demand stream the write rate of each shard over a window.

/// Writes per second and shard.
pub const WRITE_BYTES_PER_SEC: f64 = 1024.0 * 1024.0;
/// Records per second and shard.
pub const WRITE_RECORDS_PER_SEC: f64 = 1000.0;
/// Bytes read per second and shard.
pub const READ_BYTES_PER_SEC: f64 = 2.0 * 1024.0 * 1024.0;
/// GetRecords calls per second and shard.
pub const READ_CALLS_PER_SEC: f64 = 5.0;

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    rate: f64,
}

impl Bucket {
    fn full(rate: f64) -> Bucket {
        Bucket { tokens: rate, rate }
    }

    fn refill(&mut self, elapsed_ms: i64) {
        let gained = self.rate * elapsed_ms.max(0) as f64 / 1000.0;
        self.tokens = (self.tokens + gained).min(self.rate);
    }
}

/// The throughput state of one shard.
#[derive(Debug, Clone)]
pub(crate) struct ShardThrottle {
    last_ms: Option<i64>,
    write_bytes: Bucket,
    write_records: Bucket,
    read_bytes: Bucket,
    read_calls: Bucket,
    /// Records and bytes written since `window_start_ms`, for on-demand scaling.
    window_start_ms: Option<i64>,
    window_records: u64,
    window_bytes: u64,
}

impl Default for ShardThrottle {
    fn default() -> Self {
        ShardThrottle {
            last_ms: None,
            write_bytes: Bucket::full(WRITE_BYTES_PER_SEC),
            write_records: Bucket::full(WRITE_RECORDS_PER_SEC),
            read_bytes: Bucket::full(READ_BYTES_PER_SEC),
            read_calls: Bucket::full(READ_CALLS_PER_SEC),
            window_start_ms: None,
            window_records: 0,
            window_bytes: 0,
        }
    }
}

impl ShardThrottle {
    fn refill(&mut self, now_ms: i64) {
        let elapsed = self.last_ms.map_or(0, |last| now_ms - last);
        for b in [
            &mut self.write_bytes,
            &mut self.write_records,
            &mut self.read_bytes,
            &mut self.read_calls,
        ] {
            b.refill(elapsed);
        }
        self.last_ms = Some(self.last_ms.map_or(now_ms, |last| last.max(now_ms)));
    }

    /// Takes room for one record of `bytes` if the write limits allow it now.
    pub(crate) fn try_write(&mut self, now_ms: i64, bytes: usize) -> bool {
        self.refill(now_ms);
        let bytes = bytes as f64;
        if self.write_records.tokens < 1.0 || self.write_bytes.tokens < bytes {
            return false;
        }
        self.write_records.tokens -= 1.0;
        self.write_bytes.tokens -= bytes;
        true
    }

    /// Takes one GetRecords call if the read limits allow it now (and the byte debt is paid).
    pub(crate) fn try_read_call(&mut self, now_ms: i64) -> bool {
        self.refill(now_ms);
        if self.read_calls.tokens < 1.0 || self.read_bytes.tokens < 0.0 {
            return false;
        }
        self.read_calls.tokens -= 1.0;
        true
    }

    /// Charges the bytes a GetRecords call returned, overdrawing if needed.
    pub(crate) fn charge_read(&mut self, bytes: usize) {
        self.read_bytes.tokens -= bytes as f64;
    }

    /// Counts records written, for the on-demand write rate.
    pub(crate) fn note_written(&mut self, now_ms: i64, records: u64, bytes: u64) {
        self.window_start_ms.get_or_insert(now_ms);
        self.window_records += records;
        self.window_bytes += bytes;
    }

    /// If a window of `window_ms` has passed since counting began: whether the shard wrote faster
    /// than a shard's limit over it, and a new window starts. `None` while the window is open.
    pub(crate) fn close_window(&mut self, now_ms: i64, window_ms: i64) -> Option<bool> {
        let start = self.window_start_ms?;
        let elapsed = now_ms - start;
        if elapsed < window_ms {
            return None;
        }
        let secs = elapsed.max(1) as f64 / 1000.0;
        let hot = self.window_records as f64 / secs > WRITE_RECORDS_PER_SEC
            || self.window_bytes as f64 / secs > WRITE_BYTES_PER_SEC;
        self.window_start_ms = Some(now_ms);
        self.window_records = 0;
        self.window_bytes = 0;
        Some(hot)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_are_limited_to_a_thousand_records_a_second() {
        let mut t = ShardThrottle::default();
        let accepted = (0..1500).filter(|_| t.try_write(0, 10)).count();
        assert_eq!(accepted, 1000);
        assert!(!t.try_write(0, 10));
        assert!(
            !t.try_write(499, 10) || t.try_write(499, 10),
            "refill is gradual"
        );
        let after_half_second = (0..1000).filter(|_| t.try_write(1000, 10)).count();
        assert!(
            (450..=1000).contains(&after_half_second),
            "{after_half_second}"
        );
    }

    #[test]
    fn writes_are_limited_to_a_mebibyte_a_second() {
        let mut t = ShardThrottle::default();
        assert!(t.try_write(0, 600 * 1024));
        assert!(!t.try_write(0, 600 * 1024));
        assert!(t.try_write(1000, 600 * 1024));
    }

    #[test]
    fn reads_allow_five_calls_a_second_and_a_large_read_must_be_paid_for() {
        let mut t = ShardThrottle::default();
        assert_eq!((0..10).filter(|_| t.try_read_call(0)).count(), 5);
        assert!(t.try_read_call(1000));
        t.charge_read(10 * 1024 * 1024);
        assert!(!t.try_read_call(2000), "in debt after a 10 MiB read");
        assert!(t.try_read_call(6000), "paid after about 4 more seconds");
    }

    #[test]
    fn the_write_rate_window_tells_hot_shards() {
        let mut t = ShardThrottle::default();
        t.note_written(0, 5000, 100);
        assert_eq!(t.close_window(1000, 2000), None);
        assert_eq!(t.close_window(2000, 2000), Some(true));
        t.note_written(2000, 100, 100);
        assert_eq!(t.close_window(4000, 2000), Some(false));
    }
}
