//! Cutting batches by the buffering hints, recording them as pending, and encoding their objects
//! (transformed, compressed, named).

use base64::Engine as _;

use crate::error::{Error, Result};
use crate::firehose::codec::ObjectEncoder;
use crate::firehose::destination::Destination;
use crate::firehose::naming::{self, error_object_key, object_key, NameParts};
use crate::{Offset, ReadLimits, Record};

use super::checkpoint::{Checkpoint, Pending};
use super::source::{read_stream, Source};
use super::transform::Transformed;
use super::{record_id, DeliveryStream, Setup, BUFFER_DIR, PROCESSING_FAILED};

/// A batch cut and encoded: its pending record and its objects, ready to write.
pub(super) struct Batch {
    pub(super) pending: Pending,
    /// (key, bytes): the error output first, then the records.
    pub(super) objects: Vec<(String, Vec<u8>)>,
    pub(super) counts: BatchCounts,
}

#[derive(Debug, Clone, Copy, Default)]
pub(super) struct BatchCounts {
    pub(super) delivered: u64,
    pub(super) bytes: u64,
    pub(super) dropped: u64,
    pub(super) failed: u64,
}

impl Batch {
    /// Puts the batch's objects; returns once all are durable.
    pub(super) fn write(&self, destination: &dyn Destination) -> Result<()> {
        for (key, bytes) in &self.objects {
            destination.put(key, bytes)?;
        }
        Ok(())
    }
}

impl DeliveryStream {
    /// The next due batch of a Kinesis-stream source: from the first of the `readable` shards
    /// (see [`Self::sync_source`]) with a due batch. Closed shards read to their end are marked
    /// finished in `position` on the way (saved with it).
    pub(super) fn cut_stream(
        &self,
        store: &crate::Store,
        stream_name: &str,
        readable: &[u32],
        position: &mut Checkpoint,
        force: bool,
        setup: &Setup,
    ) -> Result<Option<Batch>> {
        let hints = setup.config.buffering;
        let now = self.buffer.options().clock.now_ms();
        for &index in readable {
            if position.finished.contains(&index) {
                continue;
            }
            let from = position.shards.get(&index).copied().unwrap_or(0);
            let (records, at_end) =
                read_stream(store, stream_name, index, from, None, hints.size_bytes())?;
            let Some(first) = records.first() else {
                if at_end {
                    position.finished.insert(index);
                    position.shards.entry(index).or_insert(from);
                }
                continue;
            };
            let bytes: usize = records.iter().map(|r| r.data.len()).sum();
            let due = force
                || bytes >= hints.size_bytes()
                || now.saturating_sub(first.arrival_ms) >= hints.interval_ms();
            if !due {
                continue;
            }
            let to = records.last().map_or(from, |r| r.offset.get() + 1);
            let batch_id = format!("{}:{stream_name}:{index}:{from}-{to}", self.name);
            let pending =
                self.pending(Some(index), from, to, first.arrival_ms, &batch_id, setup)?;
            return self.encode(pending, &records, setup).map(Some);
        }
        Ok(None)
    }

    /// The next due batch of the source after `position`, encoded.
    pub(super) fn cut_next(
        &self,
        position: &mut Checkpoint,
        readable: &[u32],
        force: bool,
        setup: &Setup,
    ) -> Result<Option<Batch>> {
        match &self.source {
            Source::DirectPut => self.cut(position.delivered, force, setup),
            Source::KinesisStream { store, stream } => {
                self.cut_stream(store, stream, readable, position, force, setup)
            }
        }
    }

    /// The next batch from `from`, if one is due: records up to the size hint, cut when the
    /// size is reached, the oldest record has waited the interval, or `force`.
    pub(super) fn cut(&self, from: u64, force: bool, setup: &Setup) -> Result<Option<Batch>> {
        let end = self.buffer.next_offset().get();
        if from >= end {
            return Ok(None);
        }
        let hints = setup.config.buffering;
        let limit = hints.size_bytes();
        let (mut to, mut bytes, mut records) = (from, 0usize, Vec::new());
        while to < end && bytes < limit {
            let batch = self.buffer.read(
                Offset::new(to),
                ReadLimits {
                    max_records: 10_000,
                    max_bytes: limit - bytes,
                },
            )?;
            if batch.records.is_empty() {
                break;
            }
            for r in batch.records {
                bytes += r.data.len();
                to = r.offset.get() + 1;
                records.push(r);
                if bytes >= limit {
                    break;
                }
            }
        }
        let Some(first_arrival) = records.first().map(|r| r.arrival_ms) else {
            return Ok(None);
        };
        let now = self.buffer.options().clock.now_ms();
        let due =
            force || bytes >= limit || now.saturating_sub(first_arrival) >= hints.interval_ms();
        if !due {
            return Ok(None);
        }
        let batch_id = format!("{}:{from}-{to}", self.name);
        let pending = self.pending(None, from, to, first_arrival, &batch_id, setup)?;
        self.encode(pending, &records, setup).map(Some)
    }

    /// A batch of offsets `from..to` (of `shard`, for a stream source) with its object keys,
    /// which derive from `batch_id` and the first record's arrival time only.
    pub(super) fn pending(
        &self,
        shard: Option<u32>,
        from: u64,
        to: u64,
        first_arrival: i64,
        batch_id: &str,
        setup: &Setup,
    ) -> Result<Pending> {
        let parts = NameParts {
            stream: &self.name,
            version: setup.version,
            time_ms: first_arrival,
            batch_id: batch_id.as_bytes(),
            compression: setup.config.compression,
        };
        let invalid = |e: naming::PrefixError| Error::invalid("Prefix", e.to_string());
        Ok(Pending {
            shard,
            from,
            to,
            key: object_key(setup.config.prefix.as_deref(), &parts).map_err(invalid)?,
            error_key: error_object_key(
                setup.config.error_output_prefix.as_deref(),
                PROCESSING_FAILED,
                &parts,
            )
            .map_err(invalid)?,
        })
    }

    /// Transforms and encodes a batch's records into its objects (error output first).
    pub(super) fn encode(&self, p: Pending, records: &[Record], setup: &Setup) -> Result<Batch> {
        let first_arrival = records.first().map_or(0, |r| r.arrival_ms);
        // Without a transform every record is delivered as it is: no ids, no copies.
        let ids: Vec<(String, &[u8])> = match &setup.transform {
            None => Vec::new(),
            Some(_) => records
                .iter()
                .map(|r| (record_id(r.offset), &r.data[..]))
                .collect(),
        };
        let results: Vec<Transformed> = match &setup.transform {
            None => Vec::new(),
            Some(t) => {
                let out = t.transform(&ids);
                if out.len() == ids.len() {
                    out
                } else {
                    let reason = format!(
                        "the transform returned {} results for {} records",
                        out.len(),
                        ids.len()
                    );
                    vec![Transformed::ProcessingFailed(reason); ids.len()]
                }
            }
        };
        let entry_name = p.key.rsplit('/').next().unwrap_or(&p.key);
        let entry_name = entry_name
            .strip_suffix(setup.config.compression.extension())
            .unwrap_or(entry_name);
        let io = |e: std::io::Error| Error::io("encode object", &self.dir, e);
        let mut main =
            ObjectEncoder::new(setup.config.compression, entry_name, first_arrival).map_err(io)?;
        let mut errors =
            ObjectEncoder::new(setup.config.compression, entry_name, first_arrival).map_err(io)?;
        let (mut delivered, mut bytes, mut dropped, mut failed) = (0u64, 0u64, 0u64, 0u64);
        let now = self.buffer.options().clock.now_ms();
        let delimiter = setup.config.record_delimiter.as_deref();
        let mut deliver = |data: &[u8]| -> Result<()> {
            main.write(data).map_err(io)?;
            if let Some(d) = delimiter {
                main.write(d).map_err(io)?;
            }
            delivered += 1;
            bytes += data.len() as u64;
            Ok(())
        };
        if setup.transform.is_none() {
            for record in records {
                deliver(&record.data)?;
            }
        }
        for (((id, raw), record), result) in ids.iter().zip(records).zip(&results) {
            match result {
                Transformed::Ok(data) => deliver(&data[..])?,
                Transformed::Dropped => dropped += 1,
                Transformed::ProcessingFailed(reason) => {
                    let line = serde_json::json!({
                        "attemptsMade": 1,
                        "arrivalTimestamp": record.arrival_ms,
                        "errorCode": "Lambda.ProcessingFailed",
                        "errorMessage": reason,
                        "attemptEndingTimestamp": now,
                        "rawData": base64::engine::general_purpose::STANDARD.encode(raw),
                        "recordId": id,
                    });
                    errors.write(line.to_string().as_bytes()).map_err(io)?;
                    errors.write(b"\n").map_err(io)?;
                    failed += 1;
                }
            }
        }
        let mut objects = Vec::new();
        if failed > 0 {
            objects.push((p.error_key.clone(), errors.finish().map_err(io)?));
        }
        if delivered > 0 {
            objects.push((p.key.clone(), main.finish().map_err(io)?));
        }
        Ok(Batch {
            pending: p,
            objects,
            counts: BatchCounts {
                delivered,
                bytes,
                dropped,
                failed,
            },
        })
    }

    /// The records of a pending batch, read back from its source.
    pub(super) fn read_pending(&self, p: &Pending) -> Result<Vec<Record>> {
        match (&self.source, p.shard) {
            (Source::KinesisStream { store, stream }, Some(shard)) => {
                Ok(read_stream(store, stream, shard, p.from, Some(p.to), usize::MAX)?.0)
            }
            _ => self.read_range(p.from, p.to),
        }
    }

    pub(super) fn read_range(&self, from: u64, to: u64) -> Result<Vec<Record>> {
        let mut out = Vec::with_capacity((to - from) as usize);
        let mut cursor = Offset::new(from);
        while cursor.get() < to {
            let batch = self.buffer.read(
                cursor,
                ReadLimits {
                    max_records: (to - cursor.get()).min(10_000) as usize,
                    ..ReadLimits::default()
                },
            )?;
            if batch.records.is_empty() {
                return Err(Error::corrupt(
                    &self.dir.join(BUFFER_DIR),
                    0,
                    format!("buffered records {cursor}..{to} of a pending batch are missing"),
                ));
            }
            cursor = batch.next_offset;
            out.extend(batch.records.into_iter().filter(|r| r.offset.get() < to));
        }
        Ok(out)
    }
}
