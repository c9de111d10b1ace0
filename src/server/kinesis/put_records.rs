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
/// takes, or breaks any of the model's constraints (the caller then parses it generically and
/// validates it against the model, which words the errors as AWS does).
pub(crate) fn put_records_from_json(
    ctx: &Context,
    body: &[u8],
) -> Option<Result<Output, ApiError>> {
    // While a stream may be in a transient state, the generic path checks it.
    if !ctx.lifecycle.quiet() {
        return None;
    }
    let body: Body<'_> = serde_json::from_slice(body).ok()?;
    if !within_model(&body) {
        return None;
    }
    // One buffer for every record's data: base64 decodes to at most 3/4 of its length.
    let capacity: usize = body.records.iter().map(|e| e.data.len() / 4 * 3 + 3).sum();
    let mut data = Vec::with_capacity(capacity);
    let mut fields = Vec::with_capacity(body.records.len());
    for entry in &body.records {
        let start = data.len();
        crate::server::b64::decode_into(&mut data, entry.data).ok()?;
        let hash_key = match explicit_hash_key(entry.explicit_hash_key) {
            Ok(key) => key,
            Err(e) => return Some(Err(e)),
        };
        fields.push((start..data.len(), entry.partition_key, hash_key));
    }
    let decoded: Vec<Decoded<'_>> = fields
        .into_iter()
        .map(|(range, key, hash)| (&data[range], key, hash))
        .collect();
    Some(
        put_decoded_body(ctx, &body, &decoded)
            .map_err(|e| super::in_aws_words(e, &ctx.options.account_id, body.stream_name)),
    )
}

/// Whether `body` keeps every constraint the Kinesis model puts on PutRecords (the generic path
/// reports the ones it breaks): 1 to 500 records, partition keys of 1 to 256 characters, data of
/// at most 10 MiB, explicit hash keys `0|([1-9]\d{0,38})`, a stream name of 1 to 128 characters
/// of `[a-zA-Z0-9_.-]`. Bodies naming a stream ARN go the generic way too.
fn within_model(body: &Body<'_>) -> bool {
    const MAX_DATA_BYTES: usize = 10 * 1024 * 1024;
    let name_ok = body.stream_name.is_some_and(|name| {
        (1..=128).contains(&name.len())
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
    });
    let key_ok = |key: &str| {
        let len = if key.is_ascii() {
            key.len()
        } else {
            key.encode_utf16().count()
        };
        (1..=256).contains(&len)
    };
    let hash_ok = |hash: Option<&str>| {
        hash.is_none_or(|h| {
            h == "0"
                || (h.len() <= 39 && h.bytes().all(|b| b.is_ascii_digit()) && !h.starts_with('0'))
        })
    };
    name_ok
        && body.stream_arn.is_none()
        && (1..=MAX_PUT_RECORDS).contains(&body.records.len())
        && body.records.iter().all(|e| {
            key_ok(e.partition_key)
                && hash_ok(e.explicit_hash_key)
                && e.data.len() / 4 * 3 <= MAX_DATA_BYTES
        })
}

fn put_decoded_body(
    ctx: &Context,
    body: &Body<'_>,
    decoded: &[Decoded<'_>],
) -> Result<Output, ApiError> {
    check_total(decoded)?;
    let kinesis = Kinesis { ctx };
    let name = stream_name_given(body.stream_name, body.stream_arn)?;
    let stream = ctx.store.stream(&name)?;
    let results = kinesis.put_decoded(&stream, decoded)?;
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
    use proptest::prelude::*;

    #[test]
    fn the_hot_paths_bounds_are_the_models() {
        let model = crate::server::model::kinesis();
        let shape = |name: &str| model.shape(name).unwrap();
        let entry = shape("PutRecordsRequestEntry");
        let members: Vec<&str> = entry.members.iter().map(|(m, _)| m.as_str()).collect();
        assert_eq!(members, ["Data", "ExplicitHashKey", "PartitionKey"]);
        assert_eq!(
            (shape("PartitionKey").min, shape("PartitionKey").max),
            (Some(1.0), Some(256.0))
        );
        assert_eq!(shape("Data").max, Some(10.0 * 1024.0 * 1024.0));
        assert_eq!(
            shape("HashKey").pattern.as_deref(),
            Some("0|([1-9]\\d{0,38})")
        );
        let name = shape("StreamName");
        assert_eq!((name.min, name.max), (Some(1.0), Some(128.0)));
        assert_eq!(name.pattern.as_deref(), Some("[a-zA-Z0-9_.-]+"));
        let list = shape("PutRecordsRequestEntryList");
        assert_eq!(
            (list.min, list.max),
            (Some(1.0), Some(MAX_PUT_RECORDS as f64))
        );
    }

    proptest! {
        /// Whatever the hot path takes, the model validates: it never serves a body the generic
        /// path would refuse.
        #[test]
        fn what_the_hot_path_takes_the_model_accepts(
            name in "[a-z.\\- ]{0,3}|[a-z]{127,129}",
            keys in proptest::collection::vec("[a-z\u{e9}]{0,3}|k{255,257}", 0..4),
            hash in proptest::option::of("0|00|01|1|-1|x|[1-9][0-9]{37,39}"),
            data in "|AA==|QUJD|A===",
        ) {
            let records: Vec<Entry<'_>> = keys
                .iter()
                .map(|k| Entry { data: &data, partition_key: k, explicit_hash_key: hash.as_deref() })
                .collect();
            let body = Body { records, stream_name: Some(&name), stream_arn: None };
            if within_model(&body) {
                let value = serde_json::json!({
                    "StreamName": name,
                    "Records": keys.iter().map(|k| {
                        let mut entry = serde_json::json!({"PartitionKey": k, "Data": data});
                        if let Some(h) = &hash {
                            entry["ExplicitHashKey"] = serde_json::json!(h);
                        }
                        entry
                    }).collect::<Vec<_>>(),
                });
                let checked = crate::server::model::validate(
                    crate::server::protocol::Api::Kinesis, "PutRecords", &value);
                // Data's base64 is the decoder's to refuse (the hot path falls back then).
                let base64_refused = checked.as_ref().is_err_and(|e| e.kind == "SerializationException");
                prop_assert!(checked.is_ok() || base64_refused, "{:?}", checked);
            }
        }
    }

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
