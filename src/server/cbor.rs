//! The AWS CBOR 1.1 protocol (`application/x-amz-cbor-1.1`, what the Java SDK sends to Kinesis
//! by default): the same members as JSON 1.1, but blobs are CBOR byte strings and timestamps
//! are epoch seconds under tag 1. Requests are converted to the JSON form the operations read
//! (byte strings become base64 text); answers are converted back, blobs and timestamps by
//! member name (`Data`; `*Timestamp`, `StartedAt`, `EndedAt`, `EarliestAllowedEndAt`).

use base64::Engine;
use ciborium::value::{Integer, Value as Cbor};
use serde_json::{Map, Number, Value};

use super::error::ApiError;

/// The content type of CBOR requests and answers.
pub(crate) const CONTENT_TYPE: &str = "application/x-amz-cbor-1.1";

/// Nesting deeper than this is refused (a request is a few levels deep).
const MAX_DEPTH: usize = 64;

/// Decodes a CBOR request body into the JSON form.
pub(crate) fn decode(body: &[u8]) -> Result<Value, ApiError> {
    let value: Cbor = ciborium::de::from_reader_with_recursion_limit(body, MAX_DEPTH)
        .map_err(|e| ApiError::serialization(format!("the body is not valid CBOR: {e}")))?;
    to_json(value, 0)
}

fn to_json(value: Cbor, depth: usize) -> Result<Value, ApiError> {
    if depth > MAX_DEPTH {
        return Err(ApiError::serialization("the CBOR body nests too deeply"));
    }
    Ok(match value {
        Cbor::Null => Value::Null,
        Cbor::Bool(b) => Value::Bool(b),
        Cbor::Integer(i) => {
            let n = i128::from(i);
            match (i64::try_from(n), u64::try_from(n)) {
                (Ok(v), _) => Value::from(v),
                (_, Ok(v)) => Value::from(v),
                _ => return Err(ApiError::serialization("an integer is out of range")),
            }
        }
        Cbor::Float(f) => Number::from_f64(f)
            .map(Value::Number)
            .ok_or_else(|| ApiError::serialization("a number is not finite"))?,
        Cbor::Text(s) => Value::String(s),
        Cbor::Bytes(b) => Value::String(base64::engine::general_purpose::STANDARD.encode(b)),
        // Tag 1: epoch-based date/time; other tags are read as their content.
        Cbor::Tag(_, inner) => to_json(*inner, depth + 1)?,
        Cbor::Array(items) => Value::Array(
            items
                .into_iter()
                .map(|v| to_json(v, depth + 1))
                .collect::<Result<_, _>>()?,
        ),
        Cbor::Map(entries) => {
            let mut map = Map::new();
            for (k, v) in entries {
                let Cbor::Text(key) = k else {
                    return Err(ApiError::serialization("map keys must be text"));
                };
                map.insert(key, to_json(v, depth + 1)?);
            }
            Value::Object(map)
        }
        _ => return Err(ApiError::serialization("unsupported CBOR value")),
    })
}

fn is_timestamp(member: &str) -> bool {
    member.ends_with("Timestamp")
        || matches!(member, "StartedAt" | "EndedAt" | "EarliestAllowedEndAt")
}

/// Encodes an answer (or an error body) as CBOR.
pub(crate) fn encode(value: &Value) -> Vec<u8> {
    let mut out = Vec::new();
    // Writing into a Vec cannot fail.
    let _ = ciborium::ser::into_writer(&to_cbor(value, None), &mut out);
    out
}

fn to_cbor(value: &Value, member: Option<&str>) -> Cbor {
    match value {
        Value::Null => Cbor::Null,
        Value::Bool(b) => Cbor::Bool(*b),
        Value::Number(n) => {
            let number = match (n.as_i64(), n.as_u64()) {
                (Some(i), _) => Cbor::Integer(Integer::from(i)),
                (_, Some(u)) => Cbor::Integer(Integer::from(u)),
                _ => Cbor::Float(n.as_f64().unwrap_or(0.0)),
            };
            if member.is_some_and(is_timestamp) {
                Cbor::Tag(1, Box::new(number))
            } else {
                number
            }
        }
        Value::String(s) if member == Some("Data") => {
            match base64::engine::general_purpose::STANDARD.decode(s) {
                Ok(bytes) => Cbor::Bytes(bytes),
                Err(_) => Cbor::Text(s.clone()),
            }
        }
        Value::String(s) => Cbor::Text(s.clone()),
        Value::Array(items) => Cbor::Array(items.iter().map(|v| to_cbor(v, None)).collect()),
        Value::Object(map) => Cbor::Map(
            map.iter()
                .map(|(k, v)| (Cbor::Text(k.clone()), to_cbor(v, Some(k))))
                .collect(),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blobs_and_timestamps_cross_as_cbor_types() {
        let request = Cbor::Map(vec![
            (Cbor::Text("StreamName".into()), Cbor::Text("s".into())),
            (Cbor::Text("Data".into()), Cbor::Bytes(b"hi".to_vec())),
            (
                Cbor::Text("Timestamp".into()),
                Cbor::Tag(1, Box::new(Cbor::Float(1.5))),
            ),
            (Cbor::Text("Limit".into()), Cbor::Integer(7.into())),
        ]);
        let mut bytes = Vec::new();
        ciborium::ser::into_writer(&request, &mut bytes).unwrap();
        let json = decode(&bytes).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"StreamName": "s", "Data": "aGk=", "Timestamp": 1.5, "Limit": 7})
        );

        let answer = serde_json::json!({
            "Records": [{"Data": "aGk=", "ApproximateArrivalTimestamp": 1700000000.25, "PartitionKey": "k"}],
            "MillisBehindLatest": 0,
        });
        let back: Cbor = ciborium::de::from_reader(&encode(&answer)[..]).unwrap();
        // Map order depends on serde_json's features: look members up by name.
        let member = |v: &Cbor, name: &str| -> Cbor {
            v.as_map()
                .and_then(|m| m.iter().find(|(k, _)| k.as_text() == Some(name)))
                .map(|(_, v)| v.clone())
                .unwrap_or(Cbor::Null)
        };
        let records = member(&back, "Records");
        let record = &records.as_array().unwrap()[0];
        assert_eq!(member(record, "Data"), Cbor::Bytes(b"hi".to_vec()));
        assert_eq!(
            member(record, "ApproximateArrivalTimestamp"),
            Cbor::Tag(1, Box::new(Cbor::Float(1_700_000_000.25)))
        );
        assert_eq!(member(record, "PartitionKey"), Cbor::Text("k".into()));
        assert!(decode(b"\xff\x00").is_err());
        // Deep nesting is refused, not overflowed.
        let deep = vec![0x81u8; 10_000];
        assert!(decode(&deep).is_err());
    }
}
