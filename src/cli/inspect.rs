//! `shardlog inspect`: a summary tree of streams, shards and segments, read from headers, seals
//! and index sizes (only active segments' frames are read).

use std::io::Write;
use std::path::Path;
use std::process::ExitCode;

use serde::Serialize;

use super::target::{self, StreamShard, Target};
use super::{human_bytes, CliResult};
use crate::clock::{Clock, SystemClock};
use crate::hash_key::shard_id;
use crate::log::remote::{read_remote_log, RemoteSegment, REMOTE_LOG_FILE};
use crate::log::shard::{segment_bases, summarize_segment, SegmentReport};
use crate::manifest::StreamManifest;
use crate::sequence::SequenceNumber;
use crate::utc::rfc3339_utc;
use crate::Offset;

/// Everything `inspect` reports, as printed by `--json`.
#[derive(Debug, Serialize)]
struct Inspection {
    path: String,
    /// Streams (empty when the path is a shard or segment outside a stream).
    streams: Vec<StreamInfo>,
    /// Shards outside any stream (a bare shard directory or segment file).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    shards: Vec<ShardInfo>,
    /// Delivery streams of a data directory.
    #[cfg(feature = "firehose")]
    #[serde(skip_serializing_if = "Vec::is_empty")]
    delivery_streams: Vec<crate::firehose::DeliveryStreamFiles>,
    /// Consumer groups of a data directory.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    consumer_groups: Vec<crate::consumer::GroupFiles>,
    totals: Totals,
}

#[derive(Debug, Serialize)]
struct StreamInfo {
    name: String,
    dir: String,
    mode: String,
    retention_hours: u32,
    created: String,
    /// The stream's own tiering setting (absent: the store's).
    #[serde(skip_serializing_if = "Option::is_none")]
    tiering: Option<crate::StreamTiering>,
    shards: Vec<ShardInfo>,
    totals: Totals,
    retention: RetentionOutlook,
}

#[derive(Debug, Serialize)]
struct ShardInfo {
    /// `shardId-…` for a shard of a stream.
    #[serde(skip_serializing_if = "Option::is_none")]
    shard_id: Option<String>,
    dir: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    hash_key_range: Option<(String, String)>,
    /// `OPEN` or `CLOSED` for a shard of a stream.
    #[serde(skip_serializing_if = "Option::is_none")]
    state: Option<&'static str>,
    parents: Vec<String>,
    segments: Vec<SegmentInfo>,
    totals: Totals,
    /// Tiered storage, when the shard has remote segments or a `remote.log`.
    #[serde(skip_serializing_if = "Option::is_none")]
    tier: Option<ShardTierInfo>,
}

/// Where a tiered shard's segments are.
#[derive(Debug, Default, Serialize)]
struct ShardTierInfo {
    remote_segments: u64,
    remote_bytes: u64,
    /// Sealed segments only local: the upload backlog.
    backlog_segments: u64,
    backlog_bytes: u64,
}

#[derive(Debug, Serialize)]
struct SegmentInfo {
    file: String,
    base_offset: u64,
    /// Sequence numbers for a shard of a stream, offsets otherwise.
    first: Option<String>,
    last: Option<String>,
    first_arrival: Option<String>,
    last_arrival: Option<String>,
    #[serde(skip)]
    last_arrival_ms: Option<i64>,
    records: u64,
    bytes: u64,
    state: &'static str,
    /// `local`, `remote` (only in the object store) or `local+remote`.
    location: &'static str,
    index_entries: u64,
    #[serde(skip_serializing_if = "is_zero")]
    lost_after: u64,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    problems: Vec<String>,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

#[derive(Debug, Default, Clone, Copy, Serialize)]
struct Totals {
    shards: u64,
    segments: u64,
    records: u64,
    bytes: u64,
}

impl Totals {
    fn add(&mut self, other: Totals) {
        self.shards += other.shards;
        self.segments += other.segments;
        self.records += other.records;
        self.bytes += other.bytes;
    }
}

/// What the retention pass will delete: now, and next.
#[derive(Debug, Default, Serialize)]
struct RetentionOutlook {
    /// Segments whose newest record is already older than the retention period (the next pass
    /// deletes them).
    expired_segments: u64,
    expired_records: u64,
    expired_bytes: u64,
    /// The segment that expires next, and when.
    next: Option<NextDeletion>,
}

#[derive(Debug, Serialize)]
struct NextDeletion {
    at: String,
    shard_id: String,
    file: String,
    records: u64,
    bytes: u64,
}

fn segment_info(report: SegmentReport, stream: Option<&StreamShard>) -> SegmentInfo {
    let label = |offset: Offset| match stream {
        Some(s) => SequenceNumber::new(s.index, offset).to_string(),
        None => offset.to_string(),
    };
    let has_records = report.records > 0;
    let state = if !report.problems.is_empty() {
        "DAMAGED"
    } else if report.sealed {
        "SEALED"
    } else {
        "ACTIVE"
    };
    SegmentInfo {
        file: report
            .path
            .file_name()
            .map_or_else(String::new, |n| n.to_string_lossy().into_owned()),
        base_offset: report.base.get(),
        first: has_records.then(|| label(report.base)),
        last: has_records.then(|| label(Offset::new(report.end_offset().get() - 1))),
        first_arrival: report.first_arrival_ms.map(rfc3339_utc),
        last_arrival: report.last_arrival_ms.map(rfc3339_utc),
        last_arrival_ms: report.last_arrival_ms,
        records: report.records,
        bytes: report.file_bytes,
        state,
        location: "local",
        index_entries: report.index_entries,
        lost_after: report.lost_after,
        problems: report.problems.iter().map(|p| p.to_string()).collect(),
    }
}

fn shard_info(
    dir: &Path,
    stream: Option<&StreamShard>,
    manifest: Option<&StreamManifest>,
    only: Option<Offset>,
) -> CliResult<ShardInfo> {
    let bases = if dir.exists() {
        segment_bases(dir)?
    } else {
        Vec::new() // a shard of a stream that was never written
    };
    let remote = read_remote_log(dir)?;
    let mut tier =
        (!remote.is_empty() || dir.join(REMOTE_LOG_FILE).exists()).then(ShardTierInfo::default);
    let mut segments = Vec::new();
    for base in bases
        .iter()
        .copied()
        .filter(|b| only.is_none_or(|o| o == *b))
    {
        let mut info = segment_info(summarize_segment(dir, base)?, stream);
        if remote.contains_key(&base) {
            info.location = "local+remote";
        } else if let (Some(tier), "SEALED") = (tier.as_mut(), info.state) {
            tier.backlog_segments += 1;
            tier.backlog_bytes += info.bytes;
        }
        segments.push(info);
    }
    for (base, r) in &remote {
        if let Some(tier) = tier.as_mut() {
            tier.remote_segments += 1;
            tier.remote_bytes += r.bytes;
        }
        if bases.binary_search(base).is_err() && only.is_none_or(|o| o == *base) {
            segments.push(remote_segment_info(r, stream));
        }
    }
    segments.sort_by_key(|s| s.base_offset);
    let totals = Totals {
        shards: 1,
        segments: segments.len() as u64,
        records: segments.iter().map(|s| s.records).sum(),
        bytes: segments.iter().map(|s| s.bytes).sum(),
    };
    let entry =
        stream.and_then(|s| manifest.and_then(|m| m.shards.iter().find(|e| e.index == s.index)));
    Ok(ShardInfo {
        shard_id: stream.map(|s| shard_id(s.index)),
        dir: dir.display().to_string(),
        hash_key_range: entry
            .map(|e| (e.hash_range.start.to_string(), e.hash_range.end.to_string())),
        state: entry.map(|e| if e.closed.is_some() { "CLOSED" } else { "OPEN" }),
        parents: entry
            .map(|e| {
                e.parent
                    .into_iter()
                    .chain(e.adjacent_parent)
                    .map(shard_id)
                    .collect()
            })
            .unwrap_or_default(),
        segments,
        totals,
        tier,
    })
}

/// A segment only in the object store, as `remote.log` records it (not downloaded).
fn remote_segment_info(r: &RemoteSegment, stream: Option<&StreamShard>) -> SegmentInfo {
    let label = |offset: u64| match stream {
        Some(s) => SequenceNumber::new(s.index, Offset::new(offset)).to_string(),
        None => offset.to_string(),
    };
    let has_records = r.end > r.base;
    SegmentInfo {
        file: crate::log::format::file_name(Offset::new(r.base), crate::log::format::SEGMENT_EXT),
        base_offset: r.base,
        first: has_records.then(|| label(r.base)),
        last: has_records.then(|| label(r.end - 1)),
        first_arrival: None,
        last_arrival: r.last_arrival_ms.map(rfc3339_utc),
        last_arrival_ms: r.last_arrival_ms,
        records: r.end.saturating_sub(r.base),
        bytes: r.bytes,
        state: "SEALED",
        location: "remote",
        index_entries: 0,
        lost_after: r.lost_after,
        problems: Vec::new(),
    }
}

fn stream_info(stream_dir: &Path, now_ms: i64) -> CliResult<StreamInfo> {
    let manifest = target::manifest(stream_dir)?;
    let mut shards = Vec::new();
    let mut totals = Totals::default();
    for entry in &manifest.shards {
        let location = StreamShard {
            stream_dir: stream_dir.to_path_buf(),
            index: entry.index,
        };
        let dir = target::shard_dir(stream_dir, entry.index);
        let shard = shard_info(&dir, Some(&location), Some(&manifest), None)?;
        totals.add(shard.totals);
        shards.push(shard);
    }
    let retention = retention_outlook(&shards, manifest.retention_hours, now_ms);
    Ok(StreamInfo {
        name: manifest.name.clone(),
        dir: stream_dir.display().to_string(),
        mode: format!("{:?}", manifest.mode).to_uppercase(),
        retention_hours: manifest.retention_hours,
        created: rfc3339_utc(manifest.created_ms),
        tiering: manifest.tiering,
        shards,
        totals,
        retention,
    })
}

/// Segments are deleted whole, oldest first, once their newest record is older than the
/// retention period.
fn retention_outlook(shards: &[ShardInfo], retention_hours: u32, now_ms: i64) -> RetentionOutlook {
    let period_ms = i64::from(retention_hours) * 3_600_000;
    let mut outlook = RetentionOutlook::default();
    let mut next: Option<(i64, NextDeletion)> = None;
    for shard in shards {
        for segment in &shard.segments {
            let Some(newest) = segment.last_arrival_ms else {
                continue;
            };
            let expires = newest.saturating_add(period_ms);
            if expires <= now_ms {
                outlook.expired_segments += 1;
                outlook.expired_records += segment.records;
                outlook.expired_bytes += segment.bytes;
            } else if next.as_ref().is_none_or(|(t, _)| expires < *t) {
                next = Some((
                    expires,
                    NextDeletion {
                        at: rfc3339_utc(expires),
                        shard_id: shard.shard_id.clone().unwrap_or_default(),
                        file: segment.file.clone(),
                        records: segment.records,
                        bytes: segment.bytes,
                    },
                ));
            }
        }
    }
    outlook.next = next.map(|(_, n)| n);
    outlook
}

pub(super) fn run(path: &Path, json: bool, out: &mut impl Write) -> CliResult<ExitCode> {
    let now_ms = SystemClock.now_ms();
    let mut inspection = Inspection {
        path: path.display().to_string(),
        streams: Vec::new(),
        shards: Vec::new(),
        #[cfg(feature = "firehose")]
        delivery_streams: Vec::new(),
        consumer_groups: Vec::new(),
        totals: Totals::default(),
    };
    match target::resolve(path)? {
        Target::Data(dir) => {
            for stream in target::stream_dirs(&dir)? {
                inspection.streams.push(stream_info(&stream, now_ms)?);
            }
            inspection.consumer_groups = crate::consumer::read_group_files(&dir)?;
            #[cfg(feature = "firehose")]
            for delivery in target::delivery_stream_dirs(&dir)? {
                inspection
                    .delivery_streams
                    .push(crate::firehose::read_delivery_stream(&delivery)?);
            }
        }
        Target::Stream(dir) => inspection.streams.push(stream_info(&dir, now_ms)?),
        Target::Shard { dir, stream } => {
            let manifest = stream
                .as_ref()
                .map(|s| target::manifest(&s.stream_dir))
                .transpose()?;
            inspection
                .shards
                .push(shard_info(&dir, stream.as_ref(), manifest.as_ref(), None)?);
        }
        Target::Segment { dir, base, stream } => {
            let manifest = stream
                .as_ref()
                .map(|s| target::manifest(&s.stream_dir))
                .transpose()?;
            inspection.shards.push(shard_info(
                &dir,
                stream.as_ref(),
                manifest.as_ref(),
                Some(base),
            )?);
        }
    }
    for s in &inspection.streams {
        inspection.totals.add(s.totals);
    }
    for s in &inspection.shards {
        inspection.totals.add(s.totals);
    }
    if json {
        serde_json::to_writer_pretty(&mut *out, &inspection).map_err(std::io::Error::from)?;
        writeln!(out)?;
    } else {
        print_human(&inspection, out)?;
    }
    Ok(ExitCode::SUCCESS)
}

/// A stream's own tiering setting, as `inspect` prints it after the stream's line.
fn describe_tiering(tiering: crate::StreamTiering) -> String {
    if !tiering.enabled {
        return ", tiering off".into();
    }
    let mut text = ", tiering on".to_string();
    if let Some(bytes) = tiering.local_retention_bytes {
        text.push_str(&format!(", {bytes} bytes kept locally"));
    }
    if let Some(hours) = tiering.local_retention_hours {
        text.push_str(&format!(", {hours} h kept locally"));
    }
    text
}

fn print_human(inspection: &Inspection, out: &mut impl Write) -> std::io::Result<()> {
    for stream in &inspection.streams {
        writeln!(
            out,
            "stream {}  {}, retention {} h, created {}, {} shards ({} open){}",
            stream.name,
            stream.mode,
            stream.retention_hours,
            stream.created,
            stream.shards.len(),
            stream
                .shards
                .iter()
                .filter(|s| s.state == Some("OPEN"))
                .count(),
            stream.tiering.map_or_else(String::new, describe_tiering)
        )?;
        for shard in &stream.shards {
            print_shard(shard, out)?;
        }
        print_totals("  stream totals", stream.totals, out)?;
        let r = &stream.retention;
        if r.expired_segments > 0 {
            writeln!(
                out,
                "  retention: {} segments ({} records, {}) have expired; the next pass deletes them",
                r.expired_segments,
                r.expired_records,
                human_bytes(r.expired_bytes)
            )?;
        }
        match &r.next {
            Some(n) => writeln!(
                out,
                "  retention: next deletion at {}: {} of {} ({} records, {})",
                n.at,
                n.file,
                n.shard_id,
                n.records,
                human_bytes(n.bytes)
            )?,
            None => writeln!(out, "  retention: nothing more to delete")?,
        }
        writeln!(out)?;
    }
    for shard in &inspection.shards {
        print_shard(shard, out)?;
    }
    #[cfg(feature = "firehose")]
    for d in &inspection.delivery_streams {
        print_delivery_stream(d, out)?;
    }
    for g in &inspection.consumer_groups {
        print_group(g, out)?;
    }
    print_totals("totals", inspection.totals, out)
}

fn print_group(g: &crate::consumer::GroupFiles, out: &mut impl Write) -> std::io::Result<()> {
    let workers: Vec<&str> = g.workers.keys().map(String::as_str).collect();
    writeln!(
        out,
        "consumer group {}  reads {}, lease {} ms, workers: {}",
        g.name,
        g.stream,
        g.lease_ms,
        if workers.is_empty() {
            "-".to_string()
        } else {
            workers.join(", ")
        }
    )?;
    print_group_shards(&g.shards, out)?;
    writeln!(out)
}

fn print_group_shards(
    shards: &[crate::consumer::GroupShardFiles],
    out: &mut impl Write,
) -> std::io::Result<()> {
    for s in shards {
        writeln!(
            out,
            "  {}  {}  owner {} (lease until {})  checkpoint {}",
            s.shard_id,
            if s.finished { "FINISHED" } else { "ACTIVE" },
            s.owner.as_deref().unwrap_or("-"),
            rfc3339_utc(s.lease_expires_ms),
            s.checkpoint.as_deref().unwrap_or("-"),
        )?;
    }
    Ok(())
}

#[cfg(feature = "firehose")]
fn print_delivery_stream(
    d: &crate::firehose::DeliveryStreamFiles,
    out: &mut impl Write,
) -> std::io::Result<()> {
    let c = &d.config;
    writeln!(
        out,
        "delivery stream {}  version {}, {}, buffering {} MiB / {} s, created {}",
        d.name,
        d.version,
        c.compression,
        c.buffering.size_mib,
        c.buffering.interval_secs,
        rfc3339_utc(d.created_ms)
    )?;
    writeln!(
        out,
        "  to {}  prefix {}  error prefix {}{}",
        d.destination.describe(),
        c.prefix.as_deref().unwrap_or("(default)"),
        c.error_output_prefix.as_deref().unwrap_or("(default)"),
        d.transform
            .as_ref()
            .map_or_else(String::new, |t| format!("  transform {t}"))
    )?;
    match &d.source_stream {
        Some(stream) => {
            writeln!(out, "  reads stream {stream}; delivered per shard:")?;
            match &d.source_group {
                Some(group) => print_group_shards(&group.shards, out)?,
                None => writeln!(out, "  (nothing read yet)")?,
            }
        }
        None => writeln!(
            out,
            "  delivered below offset {}, buffered up to {}: backlog {} records",
            d.delivered, d.buffered_end, d.backlog
        )?,
    }
    if let Some((from, to, key)) = &d.pending {
        writeln!(out, "  pending batch {from}..{to} -> {key}")?;
    }
    writeln!(out)
}

fn print_shard(shard: &ShardInfo, out: &mut impl Write) -> std::io::Result<()> {
    match &shard.shard_id {
        Some(id) => {
            let (start, end) = shard.hash_key_range.clone().unwrap_or_default();
            let parents = if shard.parents.is_empty() {
                "-".to_string()
            } else {
                shard.parents.join(", ")
            };
            writeln!(
                out,
                "  {id}  {:<6}  hash keys {start}..={end}  parents {parents}",
                shard.state.unwrap_or("")
            )?;
        }
        None => writeln!(out, "shard {}", shard.dir)?,
    }
    if let Some(t) = &shard.tier {
        writeln!(
            out,
            "    tiered: {} segments ({}) in the object store; upload backlog {} segments ({})",
            t.remote_segments,
            human_bytes(t.remote_bytes),
            t.backlog_segments,
            human_bytes(t.backlog_bytes)
        )?;
    }
    if shard.segments.is_empty() {
        return writeln!(out, "    (no segments)");
    }
    let width = shard
        .segments
        .iter()
        .filter_map(|s| s.last.as_ref().map(String::len))
        .max()
        .unwrap_or(5)
        .max(5);
    writeln!(
        out,
        "    {:<24}  {:>w$}  {:>w$}  {:<24}  {:<24}  {:>9}  {:>10}  {:<7}  {:<12}  {:>5}",
        "SEGMENT",
        "FIRST",
        "LAST",
        "FIRST ARRIVAL",
        "LAST ARRIVAL",
        "RECORDS",
        "BYTES",
        "STATE",
        "LOCATION",
        "INDEX",
        w = width
    )?;
    for s in &shard.segments {
        writeln!(
            out,
            "    {:<24}  {:>w$}  {:>w$}  {:<24}  {:<24}  {:>9}  {:>10}  {:<7}  {:<12}  {:>5}",
            s.file,
            s.first.as_deref().unwrap_or("-"),
            s.last.as_deref().unwrap_or("-"),
            s.first_arrival.as_deref().unwrap_or("-"),
            s.last_arrival.as_deref().unwrap_or("-"),
            s.records,
            human_bytes(s.bytes),
            s.state,
            s.location,
            s.index_entries,
            w = width
        )?;
        if s.lost_after > 0 {
            writeln!(out, "      then {} offsets lost (repaired)", s.lost_after)?;
        }
        for p in &s.problems {
            writeln!(out, "      problem: {p}")?;
        }
    }
    Ok(())
}

fn print_totals(label: &str, t: Totals, out: &mut impl Write) -> std::io::Result<()> {
    writeln!(
        out,
        "{label}: {} shards, {} segments, {} records, {}",
        t.shards,
        t.segments,
        t.records,
        human_bytes(t.bytes)
    )
}
