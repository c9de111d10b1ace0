//! PutRecords: the request decoded from the generic JSON members, or (the hot path) straight
//! from the body bytes into borrowed strings and one buffer of decoded data; the answer written
//! as JSON bytes without building a value per record.

use std::sync::Arc;

use serde::Deserialize;
use serde_json::{json, Value};

use crate::hash_key::ShardId;
use crate::server::context::Context;
use crate::server::error::ApiError;
use crate::server::protocol::{Input, Output};
use crate::stream::{
    Put, PutFailure, PutFailureReason, PutRecord, Stream, MAX_PUT_RECORDS, MAX_PUT_RECORDS_BYTES,
};

use super::data::explicit_hash_key;
use super::settings::encryption_type;
use super::{stream_name_given, Kinesis, Reply};

/// PutRecords as the SDKs send it, borrowed from the body. A body this does not take (escapes in
/// a string, an unknown or wrongly typed member, a missing one) goes the generic way, which
/// answers it exactly as before.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Body<'a> {
    #[serde(rename = "Records", borrow)]
    records: Vec<Entry<'a>>,
    #[serde(rename = "StreamName", borrow, default)]
    stream_name: Option<&'a str>,
    #[serde(rename = "StreamARN", borrow, default)]
    stream_arn: Option<&'a str>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Entry<'a> {
    #[serde(rename = "Data", borrow)]
    data: &'a str,
    #[serde(rename = "PartitionKey", borrow)]
    partition_key: &'a str,
    #[serde(rename = "ExplicitHashKey", borrow, default)]
    explicit_hash_key: Option<&'a str>,
}

/// One entry's fields, its data decoded.
type Decoded<'a> = (&'a [u8], &'a str, Option<u128>);

/// PutRecords from the body bytes, or `None` when the body is not in the shape the hot path
/// takes (the caller then parses it generically).
pub(crate) fn put_records_from_json(
    ctx: &Context,
    body: &[u8],
) -> Option<Result<Output, ApiError>> {
    let body: Body<'_> = serde_json::from_slice(body).ok()?;
    Some(put_records_body(ctx, &body))
}

fn put_records_body(ctx: &Context, body: &Body<'_>) -> Result<Output, ApiError> {
    check_count(body.records.len())?;
    // One buffer for every record's data: base64 decodes to at most 3/4 of its length.
    let capacity: usize = body.records.iter().map(|e| e.data.len() / 4 * 3 + 3).sum();
    let mut data = Vec::with_capacity(capacity);
    let mut fields = Vec::with_capacity(body.records.len());
    for entry in &body.records {
        let start = data.len();
        crate::server::b64::decode_into(&mut data, entry.data)
            .map_err(|e| ApiError::serialization(format!("Data is not valid base64: {e}")))?;
        fields.push((
            start..data.len(),
            entry.partition_key,
            explicit_hash_key(entry.explicit_hash_key)?,
        ));
    }
    let decoded: Vec<Decoded<'_>> = fields
        .into_iter()
        .map(|(range, key, hash)| (&data[range], key, hash))
        .collect();
    check_total(&decoded)?;
    let kinesis = Kinesis { ctx };
    let name = stream_name_given(body.stream_name, body.stream_arn)?;
    let stream = ctx.store.stream(&name)?;
    let results = kinesis.put_decoded(&stream, &decoded)?;
    Ok(Output::Encoded(answer_json(
        &results,
        encryption_type(&stream.describe().settings),
    )))
}

impl Kinesis<'_> {
    /// PutRecords from the generic JSON members (CBOR requests, and JSON the hot path leaves).
    pub(super) fn put_records(&self, input: &Input<'_>) -> Reply {
        let entries = input
            .opt_list("Records")?
            .ok_or_else(|| ApiError::validation("Records is required"))?;
        check_count(entries.len())?;
        let mut owned = Vec::with_capacity(entries.len());
        for entry in entries {
            let entry = Input::new(entry)?;
            owned.push((
                entry.blob("Data")?,
                entry.str("PartitionKey")?,
                explicit_hash_key(entry.opt_str("ExplicitHashKey")?)?,
            ));
        }
        let decoded: Vec<Decoded<'_>> = owned
            .iter()
            .map(|(data, key, hash)| (&data[..], *key, *hash))
            .collect();
        check_total(&decoded)?;
        let stream = self.stream(input)?;
        let results = self.put_decoded(&stream, &decoded)?;
        Ok(answer_value(
            &results,
            encryption_type(&stream.describe().settings),
        ))
    }

    /// Puts the decoded entries and counts what was stored.
    fn put_decoded(
        &self,
        stream: &Arc<Stream>,
        decoded: &[Decoded<'_>],
    ) -> Result<Vec<Result<Put, PutFailure>>, ApiError> {
        let records: Vec<PutRecord<'_>> = decoded
            .iter()
            .map(|&(data, partition_key, explicit_hash_key)| PutRecord {
                partition_key,
                data,
                explicit_hash_key,
                sequence_number_for_ordering: None,
            })
            .collect();
        let results = stream.put_records(&records)?;
        let (stored, bytes) = results
            .iter()
            .zip(decoded)
            .filter(|(r, _)| r.is_ok())
            .fold((0u64, 0u64), |(n, b), (_, (data, _, _))| {
                (n + 1, b + data.len() as u64)
            });
        self.ctx.metrics.records_in(stream.name(), stored, bytes);
        Ok(results)
    }
}

fn check_count(count: usize) -> Result<(), ApiError> {
    if count == 0 || count > MAX_PUT_RECORDS {
        return Err(ApiError::validation(format!(
            "1 validation error detected: Value with {count} records at 'records' failed to satisfy constraint: Member must have length between 1 and {MAX_PUT_RECORDS}"
        )));
    }
    Ok(())
}

// PutRecords' limits are the stream's (Kinesis: 500 records, 10 MiB since records may be 10 MiB).
fn check_total(decoded: &[Decoded<'_>]) -> Result<(), ApiError> {
    let total: usize = decoded.iter().map(|(d, k, _)| d.len() + k.len()).sum();
    if total > MAX_PUT_RECORDS_BYTES {
        return Err(ApiError::invalid(format!(
            "the records total {total} bytes (data and partition keys); a PutRecords call holds at most {MAX_PUT_RECORDS_BYTES}"
        )));
    }
    Ok(())
}

fn error_code(failure: &PutFailure) -> &'static str {
    match failure.reason {
        PutFailureReason::Throttled => "ProvisionedThroughputExceededException",
        PutFailureReason::Internal => "InternalFailure",
    }
}

/// The answer as a JSON value (its members in the order `serde_json` keeps them: sorted).
fn answer_value(results: &[Result<Put, PutFailure>], encryption: &str) -> Value {
    let failed = results.iter().filter(|r| r.is_err()).count();
    let records: Vec<Value> = results
        .iter()
        .map(|r| match r {
            Ok(put) => json!({
                "ShardId": put.shard_id.to_string(),
                "SequenceNumber": put.sequence_number.to_string(),
            }),
            Err(f) => json!({ "ErrorCode": error_code(f), "ErrorMessage": f.message }),
        })
        .collect();
    json!({
        "FailedRecordCount": failed,
        "Records": records,
        "EncryptionType": encryption,
    })
}

/// The same answer written straight as JSON bytes, byte for byte what `answer_value` encodes to.
fn answer_json(results: &[Result<Put, PutFailure>], encryption: &str) -> Vec<u8> {
    use std::io::Write as _;
    let failed = results.iter().filter(|r| r.is_err()).count();
    let mut out = Vec::with_capacity(64 + results.len() * 90);
    out.extend_from_slice(b"{\"EncryptionType\":");
    write_json_str(&mut out, encryption);
    // Writing into a Vec cannot fail.
    let _ = write!(out, ",\"FailedRecordCount\":{failed},\"Records\":[");
    // The shard ids' text, formatted once per call (a call's records go to a few shards).
    let mut shard_ids: Vec<(ShardId, String)> = Vec::new();
    for (i, r) in results.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        match r {
            Ok(put) => {
                out.extend_from_slice(b"{\"SequenceNumber\":\"");
                out.extend_from_slice(&put.sequence_number.decimal());
                out.extend_from_slice(b"\",\"ShardId\":\"");
                let id = match shard_ids.iter().find(|(id, _)| *id == put.shard_id) {
                    Some((_, text)) => text,
                    None => {
                        shard_ids.push((put.shard_id, put.shard_id.to_string()));
                        // Just pushed.
                        &shard_ids[shard_ids.len() - 1].1
                    }
                };
                out.extend_from_slice(id.as_bytes());
                out.extend_from_slice(b"\"}");
            }
            Err(f) => {
                out.extend_from_slice(b"{\"ErrorCode\":");
                write_json_str(&mut out, error_code(f));
                out.extend_from_slice(b",\"ErrorMessage\":");
                write_json_str(&mut out, &f.message);
                out.push(b'}');
            }
        }
    }
    out.extend_from_slice(b"]}");
    out
}

fn write_json_str(out: &mut Vec<u8>, text: &str) {
    // serde_json's own escaping: the bytes match `answer_value`'s encoding.
    let _ = serde_json::to_writer(&mut *out, text);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hash_key::ShardId;
    use crate::sequence::SequenceNumber;
    use crate::types::Offset;

    #[test]
    fn the_written_answer_matches_the_value_encoding() {
        let results = vec![
            Ok(Put {
                shard_id: ShardId(3),
                sequence_number: SequenceNumber::new(3, Offset::new(99)),
            }),
            Err(PutFailure {
                reason: PutFailureReason::Throttled,
                message: "shard \"3\" is\nbusy".into(),
            }),
            Err(PutFailure {
                reason: PutFailureReason::Internal,
                message: "disk full".into(),
            }),
            Ok(Put {
                shard_id: ShardId(0),
                sequence_number: SequenceNumber::new(0, Offset::new(0)),
            }),
        ];
        for encryption in ["NONE", "KMS"] {
            let value = serde_json::to_vec(&answer_value(&results, encryption)).unwrap();
            assert_eq!(
                String::from_utf8(answer_json(&results, encryption)).unwrap(),
                String::from_utf8(value).unwrap()
            );
        }
    }

    #[test]
    fn bodies_the_hot_path_leaves_to_the_generic_one() {
        let parse = |text: &str| serde_json::from_str::<Body<'_>>(text).is_ok();
        assert!(parse(
            r#"{"StreamName":"s","Records":[{"Data":"AA==","PartitionKey":"k"}]}"#
        ));
        assert!(parse(
            r#"{"StreamARN":"a","Records":[{"Data":"AA==","PartitionKey":"k","ExplicitHashKey":null}]}"#
        ));
        // An escape cannot be borrowed; an unknown member, a wrong type or a missing member
        // gets the generic path's exact errors.
        assert!(!parse(
            r#"{"StreamName":"s","Records":[{"Data":"AA==","PartitionKey":"\u00e9"}]}"#
        ));
        assert!(!parse(r#"{"StreamName":"s","Extra":1,"Records":[]}"#));
        assert!(!parse(
            r#"{"StreamName":"s","Records":[{"Data":1,"PartitionKey":"k"}]}"#
        ));
        assert!(!parse(
            r#"{"StreamName":"s","Records":[{"PartitionKey":"k"}]}"#
        ));
        assert!(!parse(r#"{"StreamName":"s"}"#));
    }
}
