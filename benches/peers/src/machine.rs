//! The machine's own limits, measured beside the engines: sequential write and read of a 1 GiB
//! file (as `dd` would, 1 MiB blocks, the write ended by fdatasync, the read after dropping the
//! page cache), the latency of a 4 KiB write plus fdatasync, and memcpy bandwidth.

use std::fs::File;
use std::io::{Read, Write};
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::time::Instant;

pub fn print_limits(dir: &Path) {
    let path = dir.join("machine-probe");
    let block = vec![0x5Au8; 1 << 20];
    let blocks = 1024;
    let t = Instant::now();
    let mut f = File::create(&path).expect("create the probe file");
    for _ in 0..blocks {
        f.write_all(&block).expect("write the probe file");
    }
    f.sync_data().expect("sync the probe file");
    let write = (blocks << 20) as f64 / t.elapsed().as_secs_f64() / 1e6;
    let cold = crate::drop_caches();
    let t = Instant::now();
    let mut f = File::open(&path).expect("open the probe file");
    let mut buf = vec![0u8; 1 << 20];
    let mut total = 0usize;
    loop {
        let n = f.read(&mut buf).expect("read the probe file");
        if n == 0 {
            break;
        }
        total += n;
    }
    let read = total as f64 / t.elapsed().as_secs_f64() / 1e6;
    drop(f);
    let _ = std::fs::remove_file(&path);

    let f = File::create(&path).expect("create the probe file");
    let page = [7u8; 4096];
    let mut lat: Vec<f64> = (0..200)
        .map(|i| {
            let t = Instant::now();
            f.write_all_at(&page, (i % 16) * 4096).expect("write");
            f.sync_data().expect("fdatasync");
            t.elapsed().as_secs_f64() * 1e3
        })
        .collect();
    lat.sort_by(|a, b| a.total_cmp(b));
    let _ = std::fs::remove_file(&path);

    let src = vec![1u8; 256 << 20];
    let mut dst = vec![0u8; 256 << 20];
    dst.copy_from_slice(&src); // fault the pages in first
    let t = Instant::now();
    for _ in 0..4 {
        dst.copy_from_slice(&src);
        std::hint::black_box(&dst);
    }
    let memcpy = (4usize * (256 << 20)) as f64 / t.elapsed().as_secs_f64() / 1e6;

    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let mem_gib = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .find(|l| l.starts_with("MemTotal:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
        })
        .map_or(0.0, |kib| kib / 1024.0 / 1024.0);
    println!(
        "machine: {cores} cores, {mem_gib:.0} GiB; data in {}",
        dir.display()
    );
    println!(
        "machine limits: write 1 GiB + fdatasync {write:.0} MB/s; read 1 GiB {} {read:.0} MB/s; 4 KiB write + fdatasync median {:.2} ms (p90 {:.2} ms); memcpy {memcpy:.0} MB/s",
        if cold { "cold" } else { "(warm: not root)" },
        lat[lat.len() / 2],
        lat[lat.len() * 9 / 10],
    );
}
