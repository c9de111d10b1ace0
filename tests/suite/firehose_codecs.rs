//! Every Firehose codec's objects open with the standard tools: `gzip -d`, `unzip`, `zstd -d`, and
//! python-snappy's framing and Hadoop decoders (`.ci/run` installs python-snappy).
#![cfg(feature = "firehose")]

use std::io::Write;
use std::process::{Command, Stdio};

use shardlog::firehose::{Compression, ObjectEncoder};

/// JSON-like records, newline-delimited, as a delivery stream would write them.
fn records() -> Vec<Vec<u8>> {
    (0..20_000)
        .map(|i| {
            format!(
                "{{\"order\":{i},\"customer\":\"c{}\",\"amount\":{}.{:02},\"note\":\"{}\"}}\n",
                i % 97,
                i * 7 % 1000,
                i % 100,
                "x".repeat(i % 40)
            )
            .into_bytes()
        })
        .collect()
}

fn encode(c: Compression, entry: &str) -> (Vec<u8>, Vec<u8>) {
    let mut plain = Vec::new();
    let mut e = ObjectEncoder::new(c, entry, 1_700_000_000_000).unwrap();
    for r in records() {
        e.write(&r).unwrap();
        plain.extend(r);
    }
    (e.finish().unwrap(), plain)
}

/// Runs `program args` with `input` on stdin and returns stdout, failing on a non-zero exit.
fn run(program: &str, args: &[&str], input: &[u8]) -> Vec<u8> {
    let mut child = Command::new(program)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{program} must be installed (.ci/run installs it): {e}"));
    let mut stdin = child.stdin.take().unwrap();
    let input = input.to_vec();
    let writer = std::thread::spawn(move || stdin.write_all(&input));
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{program} {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    writer.join().unwrap().unwrap();
    out.stdout
}

#[test]
fn gzip_objects_open_with_gzip() {
    let (object, plain) = encode(Compression::Gzip, "unused");
    assert_eq!(run("gzip", &["-dc"], &object), plain);
}

#[test]
fn zip_objects_open_with_unzip_and_hold_one_entry() {
    let (object, plain) = encode(Compression::Zip, "orders-1-2023-11-14-22-13-20-x");
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("o.zip");
    std::fs::write(&path, &object).unwrap();
    let listing = run("unzip", &["-Z1", path.to_str().unwrap()], b"");
    assert_eq!(listing, b"orders-1-2023-11-14-22-13-20-x\n");
    assert_eq!(run("unzip", &["-p", path.to_str().unwrap()], b""), plain);
}

#[test]
fn zstd_objects_open_with_zstd() {
    let (object, plain) = encode(Compression::Zstd, "unused");
    assert_eq!(run("zstd", &["-dc"], &object), plain);
}

const PYTHON_SNAPPY: &str = r#"
import sys, snappy
kind = sys.argv[1]
data = sys.stdin.buffer.read()
if kind == "framing":
    d = snappy.StreamDecompressor()
    out = d.decompress(data)
    d.flush()
else:
    out = snappy.HadoopStreamDecompressor().decompress(data)
sys.stdout.buffer.write(out)
"#;

#[test]
fn snappy_objects_open_with_a_snappy_framing_decoder() {
    let (object, plain) = encode(Compression::Snappy, "unused");
    assert_eq!(&object[..10], b"\xff\x06\x00\x00sNaPpY");
    assert_eq!(
        run("python3", &["-c", PYTHON_SNAPPY, "framing"], &object),
        plain
    );
}

#[test]
fn hadoop_snappy_objects_open_with_a_hadoop_snappy_decoder() {
    let (object, plain) = encode(Compression::HadoopSnappy, "unused");
    assert!(plain.len() > 256 * 1024, "the test needs several blocks");
    assert_eq!(
        run("python3", &["-c", PYTHON_SNAPPY, "hadoop"], &object),
        plain
    );
}

#[test]
fn uncompressed_objects_are_the_records() {
    let (object, plain) = encode(Compression::Uncompressed, "unused");
    assert_eq!(object, plain);
}
