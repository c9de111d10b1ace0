//! How records and child shards look on the wire, shared by GetRecords (`kinesis`) and
//! SubscribeToShard events (`subscribe`).

use serde_json::{json, Value};

/// A record as GetRecords (and SubscribeToShard) returns it.
#[derive(serde::Serialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct RecordOutput<'a> {
    sequence_number: String,
    /// Epoch seconds.
    approximate_arrival_timestamp: f64,
    /// Base64.
    data: &'a str,
    partition_key: &'a str,
}

impl<'a> RecordOutput<'a> {
    /// Each record's data in base64, for [`RecordOutput::new`] to borrow.
    pub(crate) fn base64_data(records: &[crate::StreamRecord]) -> Vec<String> {
        records
            .iter()
            .map(|r| super::b64::encode(&r.data))
            .collect()
    }

    /// `record` with its data already in base64.
    pub(crate) fn new(record: &'a crate::StreamRecord, data: &'a str) -> RecordOutput<'a> {
        RecordOutput {
            sequence_number: record.sequence_number.to_string(),
            approximate_arrival_timestamp: record.approximate_arrival_ms as f64 / 1000.0,
            data,
            partition_key: &record.partition_key,
        }
    }
}

/// `ChildShards` as GetRecords and SubscribeToShard events carry them.
pub(crate) fn child_shards_json(children: &[crate::ChildShard]) -> Vec<Value> {
    children
        .iter()
        .map(|c| {
            json!({
                "ShardId": c.shard_id,
                "ParentShards": c.parent_shards,
                "HashKeyRange": hash_range_json(&c.hash_key_range),
            })
        })
        .collect()
}

pub(crate) fn hash_range_json(range: &crate::HashKeyRange) -> Value {
    json!({
        "StartingHashKey": range.start.to_string(),
        "EndingHashKey": range.end.to_string(),
    })
}
