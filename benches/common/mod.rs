//! Helpers shared by the benchmarks.

/// Where benchmark data goes: $SHARDLOG_BENCH_DIR, else the system temp directory.
pub fn bench_dir() -> std::path::PathBuf {
    std::env::var_os("SHARDLOG_BENCH_DIR")
        .map(Into::into)
        .unwrap_or_else(std::env::temp_dir)
}
