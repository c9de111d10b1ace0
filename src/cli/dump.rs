//! `shardlog dump`: records, one per line, as text or JSON.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use base64::Engine as _;

use super::target::{self, StreamShard, Target};
use super::{CliError, CliResult, DataEncoding};
use crate::hash_key::shard_id;
use crate::log::shard::segment_bases;
use crate::sequence::SequenceNumber;
use crate::utc::{parse_time, rfc3339_utc};
use crate::{Offset, ReadLimits, Record, Shard, ShardOptions};

/// Characters of data a preview shows.
const PREVIEW_BYTES: usize = 40;

/// What `dump` was asked for.
#[derive(Debug, Default)]
pub(super) struct DumpOptions {
    pub from: Option<String>,
    pub at_time: Option<String>,
    pub limit: Option<u64>,
    pub json: bool,
    pub data: Option<DataEncoding>,
}

/// Where to start reading a shard.
#[derive(Debug, Clone, Copy)]
enum Start {
    Offset(Offset),
    Time(i64),
}

/// One shard to dump, and the offsets of it to show.
struct Source {
    dir: PathBuf,
    stream: Option<StreamShard>,
    start: Start,
    /// The first offset to show (the base of a single segment).
    floor: Offset,
    /// One past the last offset to show (the end of a single segment).
    end: Option<Offset>,
}

fn usage(message: impl Into<String>) -> CliError {
    CliError::Usage(message.into())
}

/// `--from` for a shard: a sequence number of that shard, or (outside a stream) an offset.
fn start_in_shard(from: &str, stream: Option<&StreamShard>) -> CliResult<Start> {
    if let Some(seq) = SequenceNumber::parse(from) {
        return match stream {
            Some(s) if s.index != seq.shard_index() => Err(usage(format!(
                "--from {from} is a sequence number of {}, not of {}",
                shard_id(seq.shard_index()),
                shard_id(s.index)
            ))),
            _ => Ok(Start::Offset(seq.offset())),
        };
    }
    match (from.parse::<u64>(), stream) {
        (Ok(offset), None) => Ok(Start::Offset(Offset::new(offset))),
        (Ok(_), Some(_)) | (Err(_), _) => Err(usage(format!(
            "--from {from}: expected a 39-digit sequence number{}",
            if stream.is_none() {
                " or an offset"
            } else {
                ""
            }
        ))),
    }
}

fn sources(path: &Path, options: &DumpOptions) -> CliResult<Vec<Source>> {
    let default_start = match &options.at_time {
        Some(t) => Start::Time(parse_time(t).ok_or_else(|| {
            usage(format!(
                "--at-time {t}: expected RFC 3339 (2026-11-25T10:00:00Z) or milliseconds since the epoch"
            ))
        })?),
        None => Start::Offset(Offset::new(0)),
    };
    let stream_sources = |stream_dir: &Path| -> CliResult<Vec<Source>> {
        let manifest = target::manifest(stream_dir)?;
        let wanted = match &options.from {
            Some(from) => {
                let seq = SequenceNumber::parse(from).ok_or_else(|| {
                    usage(format!(
                        "--from {from}: expected a 39-digit sequence number"
                    ))
                })?;
                if !manifest.shards.iter().any(|s| s.index == seq.shard_index()) {
                    return Err(usage(format!(
                        "--from {from}: stream {} has no shard {}",
                        manifest.name,
                        shard_id(seq.shard_index())
                    )));
                }
                Some((seq.shard_index(), Start::Offset(seq.offset())))
            }
            None => None,
        };
        Ok(manifest
            .shards
            .iter()
            .filter(|s| wanted.is_none_or(|(index, _)| index == s.index))
            .map(|s| Source {
                dir: target::shard_dir(stream_dir, s.index),
                stream: Some(StreamShard {
                    stream_dir: stream_dir.to_path_buf(),
                    index: s.index,
                }),
                start: wanted.map_or(default_start, |(_, start)| start),
                floor: Offset::new(0),
                end: None,
            })
            .collect())
    };
    let start_for = |stream: Option<&StreamShard>| -> CliResult<Start> {
        options
            .from
            .as_deref()
            .map_or(Ok(default_start), |from| start_in_shard(from, stream))
    };
    Ok(match target::resolve(path)? {
        Target::Data(dir) => {
            if options.from.is_some() {
                return Err(usage(
                    "--from needs a stream or shard directory, not a whole data directory",
                ));
            }
            let mut all = Vec::new();
            for stream in target::stream_dirs(&dir)? {
                all.extend(stream_sources(&stream)?);
            }
            all
        }
        Target::Stream(dir) => stream_sources(&dir)?,
        Target::Shard { dir, stream } => vec![Source {
            start: start_for(stream.as_ref())?,
            dir,
            stream,
            floor: Offset::new(0),
            end: None,
        }],
        Target::Segment { dir, base, stream } => {
            let end = segment_bases(&dir)?.into_iter().find(|&b| b > base);
            vec![Source {
                start: start_for(stream.as_ref())?,
                dir,
                stream,
                floor: base,
                end: Some(end.unwrap_or(Offset::new(u64::MAX))),
            }]
        }
    })
}

pub(super) fn run(path: &Path, options: &DumpOptions, out: &mut impl Write) -> CliResult<ExitCode> {
    if options.json && options.data == Some(DataEncoding::Raw) {
        return Err(usage("--data raw cannot be combined with --json"));
    }
    for source in sources(path, options)? {
        if !source.dir.exists() {
            continue; // a shard of a stream that was never written
        }
        dump_shard(&source, options, out)?;
    }
    Ok(ExitCode::SUCCESS)
}

fn dump_shard(source: &Source, options: &DumpOptions, out: &mut impl Write) -> CliResult<()> {
    let shard = Shard::open_read_only(&source.dir, ShardOptions::default())?;
    let cursor = match source.start {
        Start::Offset(o) => o,
        Start::Time(t) => shard.seek_time(t)?,
    };
    let mut cursor = cursor.max(source.floor);
    let mut left = options.limit.unwrap_or(u64::MAX);
    while left > 0 {
        let limits = ReadLimits {
            max_records: left.min(10_000) as usize,
            ..ReadLimits::default()
        };
        let batch = shard.read(cursor, limits)?;
        if batch.records.is_empty() {
            break;
        }
        for record in &batch.records {
            if source.end.is_some_and(|end| record.offset >= end) {
                return Ok(());
            }
            print_record(record, source.stream.as_ref(), options, out)?;
            left -= 1;
        }
        cursor = batch.next_offset;
    }
    Ok(())
}

fn print_record(
    r: &Record,
    stream: Option<&StreamShard>,
    options: &DumpOptions,
    out: &mut impl Write,
) -> std::io::Result<()> {
    let position = match stream {
        Some(s) => SequenceNumber::new(s.index, r.offset).to_string(),
        None => r.offset.to_string(),
    };
    let key = String::from_utf8_lossy(&r.partition_key);
    if options.json {
        let data = match options.data {
            Some(DataEncoding::Hex) => hex(&r.data),
            _ => base64::engine::general_purpose::STANDARD.encode(&r.data),
        };
        let mut line = serde_json::json!({
            "offset": r.offset.get(),
            "arrival": rfc3339_utc(r.arrival_ms),
            "arrival_ms": r.arrival_ms,
            "partition_key": key,
            "hash_key": r.hash_key().to_string(),
            "size": r.data.len(),
            "data": data,
        });
        if let Some(s) = stream {
            if let Some(name) = s.stream_dir.file_name() {
                line["stream"] = name.to_string_lossy().into();
            }
            line["shard_id"] = shard_id(s.index).into();
            line["sequence_number"] = position.into();
        }
        serde_json::to_writer(&mut *out, &line)?;
        return writeln!(out);
    }
    write!(
        out,
        "{position}\t{}\t{}\t{}\t{}\t",
        rfc3339_utc(r.arrival_ms),
        key.escape_debug(),
        r.hash_key(),
        r.data.len()
    )?;
    match options.data {
        None => writeln!(out, "{}", preview(&r.data)),
        Some(DataEncoding::Raw) => {
            out.write_all(&r.data)?;
            writeln!(out)
        }
        Some(DataEncoding::Base64) => writeln!(
            out,
            "{}",
            base64::engine::general_purpose::STANDARD.encode(&r.data)
        ),
        Some(DataEncoding::Hex) => writeln!(out, "{}", hex(&r.data)),
    }
}

fn hex(data: &[u8]) -> String {
    use std::fmt::Write as _;
    let mut s = String::with_capacity(data.len() * 2);
    for b in data {
        // Writing to a String cannot fail.
        let _ = write!(s, "{b:02x}");
    }
    s
}

/// Up to [`PREVIEW_BYTES`] of the data: as text if it is UTF-8, else hex; `…` if cut.
fn preview(data: &[u8]) -> String {
    let head = &data[..data.len().min(PREVIEW_BYTES)];
    let cut = if head.len() < data.len() { "…" } else { "" };
    // A multi-byte character cut at the end still counts as text.
    let text = match std::str::from_utf8(head) {
        Ok(text) => Some(text),
        Err(e) if e.error_len().is_none() && head.len() < data.len() => {
            std::str::from_utf8(&head[..e.valid_up_to()]).ok()
        }
        Err(_) => None,
    };
    match text {
        Some(text) => format!("{}{cut}", text.escape_debug()),
        None => format!("{}{cut}", hex(head)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn previews_show_text_or_hex() {
        assert_eq!(preview(b"hello\n"), "hello\\n");
        assert_eq!(preview(&[0xff, 0x00]), "ff00");
        let long = "é".repeat(30);
        assert_eq!(preview(long.as_bytes()), format!("{}…", "é".repeat(20)));
    }

    #[test]
    fn from_takes_sequence_numbers_of_the_right_shard() {
        let s = StreamShard {
            stream_dir: PathBuf::from("/x"),
            index: 3,
        };
        let seq = SequenceNumber::new(3, Offset::new(42)).to_string();
        assert!(matches!(
            start_in_shard(&seq, Some(&s)),
            Ok(Start::Offset(o)) if o.get() == 42
        ));
        let other = SequenceNumber::new(4, Offset::new(42)).to_string();
        assert!(start_in_shard(&other, Some(&s)).is_err());
        assert!(start_in_shard("42", Some(&s)).is_err());
        assert!(matches!(start_in_shard("42", None), Ok(Start::Offset(o)) if o.get() == 42));
    }
}
