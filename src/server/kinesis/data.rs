//! Records in and out: PutRecord(s), GetShardIterator, GetRecords (serialized straight from the
//! records the shard lends) and SubscribeToShard.

use std::sync::Arc;

use serde_json::json;

use crate::error::Error;
use crate::hash_key::parse_hash_key;
use crate::sequence::SequenceNumber;
use crate::server::error::ApiError;
use crate::server::protocol::{lower_first, Input, Output};
use crate::server::records::child_shards_json;
use crate::stream::{PutRecord, Start};

use super::settings::encryption_type;
use super::{Kinesis, Reply};

/// An ExplicitHashKey as the wire gives it: a decimal number from 0 to 2^128 - 1.
pub(super) fn explicit_hash_key(text: Option<&str>) -> Result<Option<u128>, ApiError> {
    let Some(text) = text else {
        return Ok(None);
    };
    // Kinesis' words (the model's pattern has refused anything but a decimal number already).
    let key = parse_hash_key(text).ok_or_else(|| {
        ApiError::invalid(format!(
            "Invalid ExplicitHashKey. ExplicitHashKey must be in the range: [0, 2^128-1]. Specified value was {text}"
        ))
    })?;
    Ok(Some(key))
}

impl Kinesis<'_> {
    pub(super) fn put_record(&self, input: &Input<'_>) -> Reply {
        let data = input.blob("Data")?;
        let partition_key = input.str("PartitionKey")?;
        let explicit_hash_key = explicit_hash_key(input.opt_str("ExplicitHashKey")?)?;
        let ordering_text = input.opt_str("SequenceNumberForOrdering")?;
        let stream = self.stream(input)?;
        // Kinesis' words for a bound it cannot use: one that is not a sequence number, or (here)
        // one of the record's shard at or past the number the record would get.
        let invalid_bound = |text: &str| {
            ApiError::invalid(format!(
                "ExclusiveMinimumSequenceNumber {text} used in PutRecord on stream {} under account {} is invalid.",
                stream.name(),
                self.ctx.options.account_id
            ))
        };
        let sequence_number_for_ordering = match ordering_text {
            None => None,
            Some(text) => Some(SequenceNumber::parse(text).ok_or_else(|| invalid_bound(text))?),
        };
        let put = stream
            .put_record(&PutRecord {
                partition_key,
                data: &data,
                explicit_hash_key,
                sequence_number_for_ordering,
            })
            .map_err(|e| match (e, ordering_text) {
                (
                    crate::Error::InvalidArgument {
                        name: "SequenceNumberForOrdering",
                        ..
                    },
                    Some(text),
                ) => invalid_bound(text),
                (e, _) => e.into(),
            })?;
        self.ctx
            .metrics
            .records_in(stream.name(), 1, data.len() as u64);
        Ok(json!({
            "ShardId": put.shard_id.to_string(),
            "SequenceNumber": put.sequence_number.to_string(),
            "EncryptionType": encryption_type(&stream.describe().settings),
        }))
    }

    pub(super) fn get_shard_iterator(&self, input: &Input<'_>) -> Reply {
        let stream = self.stream(input)?;
        let shard_id = input.str("ShardId")?;
        let now_ms = self.ctx.store.options().shard.clock.now_ms();
        let start = iterator_start(input, "ShardIteratorType", "StartingSequenceNumber", now_ms)?;
        let iterator = stream.shard_iterator(stream.shard_by_id(shard_id)?, start)?;
        Ok(json!({ "ShardIterator": iterator }))
    }

    /// GetRecords, written as JSON straight from the records the shard lends (no owned copy, no
    /// allocation per record): a page holds up to 10,000 records.
    pub(super) fn get_records(&self, input: &Input<'_>) -> Result<Output, ApiError> {
        let iterator = input.str("ShardIterator")?;
        let limit = match input.opt_i64("Limit")? {
            None => 10_000,
            Some(n) if (1..=10_000).contains(&n) => n as usize,
            Some(n) => return Err(ApiError::invalid(format!("Limit {n} is outside 1..=10000"))),
        };
        let Some(token) = self.ctx.store.decode_iterator(iterator) else {
            return Err(ApiError::invalid("Invalid ShardIterator."));
        };
        let (body, end, data_bytes) = get_records_json(&self.ctx.store, iterator, limit)?;
        self.ctx.metrics.records_out(
            &token.stream,
            end.records,
            data_bytes,
            end.millis_behind_latest,
        );
        Ok(Output::Encoded(body))
    }

    /// SubscribeToShard: checks the consumer, shard and position, then hands a shard iterator
    /// to the server, which streams events from it (see `subscribe.rs`).
    pub(super) fn subscribe_to_shard(&self, input: &Input<'_>) -> Result<Output, ApiError> {
        let arn = input.str("ConsumerARN")?.to_string();
        let (stream, consumer) = self.consumer(input)?;
        if self
            .ctx
            .lifecycle
            .consumer_creating(&self.consumer_arn(stream.name(), &consumer))
        {
            return Err(ApiError::new(
                400,
                "ResourceInUseException",
                format!("Consumer {arn} is not ACTIVE, instead in state CREATING."),
            ));
        }
        let shard_id = input.str("ShardId")?;
        let position = input
            .opt_object("StartingPosition")?
            .ok_or_else(|| ApiError::validation("StartingPosition is required"))?;
        let now_ms = self.ctx.store.options().shard.clock.now_ms();
        let start = iterator_start(&position, "Type", "SequenceNumber", now_ms)?;
        let reader = crate::consumer::ShardSubscription::open(
            Arc::clone(&self.ctx.store),
            stream.name(),
            &consumer.name,
            stream.shard_by_id(shard_id)?,
            crate::consumer::SubscribeOptions::new(start),
        )?;
        Ok(Output::Subscription(Box::new(
            crate::server::subscribe::Subscription {
                consumer_arn: arn,
                stream: stream.name().to_string(),
                shard_id: shard_id.to_string(),
                reader,
                cbor: false,
            },
        )))
    }
}

/// The GetRecords answer for `shard_iterator` as the wire's JSON, written straight from the records
/// the shard lends (no owned copy, no allocation per record); with where the page ends and the
/// bytes of data it holds. What the server's GetRecords handler sends.
pub fn get_records_json(
    store: &crate::Store,
    shard_iterator: &str,
    limit: usize,
) -> crate::Result<(Vec<u8>, crate::PageEnd, u64)> {
    let mut body = Vec::with_capacity(64 * 1024);
    body.extend_from_slice(b"{\"Records\":[");
    let mut data_bytes = 0u64;
    let mut first = true;
    let mut writer = RecordJson::default();
    let end = store.visit_records(shard_iterator, limit, |r| {
        if !first {
            body.push(b',');
        }
        first = false;
        data_bytes += r.data.len() as u64;
        writer.write(&mut body, &r);
    })?;
    body.push(b']');
    if let Some(next) = &end.next_shard_iterator {
        body.extend_from_slice(b",\"NextShardIterator\":");
        write_json_str(&mut body, next);
    }
    body.extend_from_slice(b",\"MillisBehindLatest\":");
    body.extend_from_slice(end.millis_behind_latest.to_string().as_bytes());
    if !end.child_shards.is_empty() {
        body.extend_from_slice(b",\"ChildShards\":");
        // Serializing JSON values into a Vec cannot fail.
        let _ = serde_json::to_writer(&mut body, &child_shards_json(&end.child_shards));
    }
    body.push(b'}');
    Ok((body, end, data_bytes))
}

/// Writes GetRecords records as JSON: the same members, in the same order, as
/// [`RecordOutput`](super::records::RecordOutput) serializes. Consecutive records of a shard have
/// consecutive sequence numbers, and the records of one append share an arrival time, so each
/// number after the first is the previous one's digits incremented and a repeated timestamp is
/// copied, not formatted again.
#[derive(Default)]
pub(super) struct RecordJson {
    sequence: Option<(crate::SequenceNumber, Vec<u8>)>,
    arrival: Option<(i64, Vec<u8>)>,
}

impl RecordJson {
    fn write(&mut self, out: &mut Vec<u8>, r: &crate::stream::StreamRecordRef<'_>) {
        out.extend_from_slice(b"{\"SequenceNumber\":\"");
        let n = r.sequence_number;
        let follows = |prev: crate::SequenceNumber| {
            prev.shard_index() == n.shard_index()
                && prev.offset().checked_next() == Some(n.offset())
        };
        let incremented = match &mut self.sequence {
            Some((prev, digits)) if follows(*prev) => {
                *prev = n;
                increment_decimal(digits)
            }
            _ => false,
        };
        if !incremented {
            self.sequence = Some((n, n.to_string().into_bytes()));
        }
        if let Some((_, digits)) = &self.sequence {
            out.extend_from_slice(digits);
        }
        out.extend_from_slice(b"\",\"ApproximateArrivalTimestamp\":");
        match &self.arrival {
            Some((ms, text)) if *ms == r.approximate_arrival_ms => out.extend_from_slice(text),
            _ => {
                let mut text = Vec::with_capacity(24);
                // Serializing an f64 into a Vec cannot fail.
                let _ =
                    serde_json::to_writer(&mut text, &(r.approximate_arrival_ms as f64 / 1000.0));
                out.extend_from_slice(&text);
                self.arrival = Some((r.approximate_arrival_ms, text));
            }
        }
        out.extend_from_slice(b",\"Data\":\"");
        crate::server::b64::encode_into(out, r.data);
        out.extend_from_slice(b"\",\"PartitionKey\":");
        write_json_str(out, r.partition_key);
        out.push(b'}');
    }
}

/// Adds one to a decimal number written in ASCII digits, in place; `false` if it would need
/// another digit (the digits are then all zeros, and the caller formats the number afresh).
pub(super) fn increment_decimal(digits: &mut [u8]) -> bool {
    for b in digits.iter_mut().rev() {
        if *b == b'9' {
            *b = b'0';
        } else {
            *b += 1;
            return true;
        }
    }
    false
}

/// Appends `s` as a JSON string (quoted, escaped). Printable ASCII without `"` or `\\` (what
/// partition keys mostly are) is copied as it is.
pub(super) fn write_json_str(out: &mut Vec<u8>, s: &str) {
    if s.bytes()
        .all(|b| (0x20..0x7f).contains(&b) && b != b'"' && b != b'\\')
    {
        out.push(b'"');
        out.extend_from_slice(s.as_bytes());
        out.push(b'"');
        return;
    }
    // Serializing a `str` into a Vec cannot fail.
    let _ = serde_json::to_writer(&mut *out, s);
}

/// The rule AWS states when an iterator type and a starting sequence number do not go together.
const SEQUENCE_RULE: &str = "Must either specify (1) AT_SEQUENCE_NUMBER or AFTER_SEQUENCE_NUMBER \
     and StartingSequenceNumber or (2) TRIM_HORIZON or LATEST and no StartingSequenceNumber.";

/// Where to start reading, from an iterator type member and its sequence number / timestamp,
/// checked as Kinesis checks them (messages as AWS words them): a sequence number exactly with
/// the `*_SEQUENCE_NUMBER` types, a timestamp with `AT_TIMESTAMP` and not after `now_ms`.
pub(super) fn iterator_start(
    input: &Input<'_>,
    type_member: &str,
    sequence_member: &'static str,
    now_ms: i64,
) -> Result<Start, ApiError> {
    let kind = input.str(type_member)?;
    let sequence = input.opt_str(sequence_member)?;
    let with_sequence = |sequence: Option<&str>| -> Result<SequenceNumber, ApiError> {
        let text = sequence.ok_or_else(|| {
            ApiError::invalid(format!(
                "{SEQUENCE_RULE} Request specified {kind} and no StartingSequenceNumber."
            ))
        })?;
        let parsed = SequenceNumber::parse(text).ok_or_else(|| {
            Error::invalid(
                sequence_member,
                format!("{text:?} is not a sequence number"),
            )
        })?;
        Ok(parsed)
    };
    let without_sequence = |start: Start| match sequence {
        Some(_) => Err(ApiError::invalid(format!(
            "{SEQUENCE_RULE} Request specified {kind} and also a StartingSequenceNumber."
        ))),
        None => Ok(start),
    };
    match kind {
        "TRIM_HORIZON" => without_sequence(Start::TrimHorizon),
        "LATEST" => without_sequence(Start::Latest),
        "AT_SEQUENCE_NUMBER" => Ok(Start::At(with_sequence(sequence)?)),
        "AFTER_SEQUENCE_NUMBER" => Ok(Start::After(with_sequence(sequence)?)),
        "AT_TIMESTAMP" => match input.opt_timestamp_ms("Timestamp")? {
            None => Err(ApiError::invalid(
                "Must specify timestampInMillis parameter for iterator of type AT_TIMESTAMP. \
                 Current request has no timestamp parameter.",
            )),
            Some(at) if at > now_ms => Err(ApiError::invalid(format!(
                "The timestampInMillis parameter cannot be greater than the \
                 currentTimestampInMillis. timestampInMillis: {at}, currentTimestampInMillis: \
                 {now_ms}"
            ))),
            Some(at) => Ok(Start::AtTimestamp(at)),
        },
        other => Err(ApiError::validation(format!(
            "1 validation error detected: Value '{other}' at '{}' failed to satisfy constraint: Member must satisfy enum value set: [AT_SEQUENCE_NUMBER, AFTER_SEQUENCE_NUMBER, TRIM_HORIZON, LATEST, AT_TIMESTAMP]",
            lower_first(type_member)
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::server::records::RecordOutput;

    #[test]
    fn records_written_directly_match_the_serde_encoding() {
        use crate::Offset;
        // Consecutive offsets (with carries through 9s), a jump, another shard, repeated and
        // changing arrival times, keys that need escaping.
        let cases: Vec<(u32, u64, i64, &str, Vec<u8>)> = vec![
            (0, 8, 1_700_000_000_123, "a", b"x".to_vec()),
            (0, 9, 1_700_000_000_123, "b\"q", vec![]),
            (0, 10, 1_700_000_000_124, "c\\", vec![0xff; 100]),
            (0, 99, 1_700_000_000_124, "d", b"hello".to_vec()),
            (0, 100, 1_700_000_000_124, "e\u{1}", b"hi".to_vec()),
            (0, 999_999, 5, "\u{e9}t\u{e9}", vec![1, 2, 3]),
            (0, 1_000_000, 5, "f", vec![]),
            (7, 1_000_001, 5, "g", vec![]),
            (7, u64::MAX, -1, "h", vec![9]),
            (7, 3, -1, "i/\u{7f} ~", vec![9, 8]),
        ];
        let mut writer = RecordJson::default();
        for (shard, offset, ms, key, data) in cases {
            let r = crate::stream::StreamRecordRef {
                sequence_number: SequenceNumber::new(shard, Offset::new(offset)),
                approximate_arrival_ms: ms,
                partition_key: key,
                explicit_hash_key: None,
                data: &data,
            };
            let mut direct = Vec::new();
            writer.write(&mut direct, &r);
            let owned = crate::StreamRecord {
                sequence_number: r.sequence_number,
                approximate_arrival_ms: ms,
                partition_key: key.to_string(),
                explicit_hash_key: None,
                data: bytes::Bytes::from(data.clone()),
            };
            let b64 = RecordOutput::base64_data(std::slice::from_ref(&owned));
            let expected = serde_json::to_vec(&RecordOutput::new(&owned, &b64[0])).unwrap();
            assert_eq!(
                String::from_utf8(direct).unwrap(),
                String::from_utf8(expected).unwrap(),
                "offset {offset}"
            );
        }
    }
}
