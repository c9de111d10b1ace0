//! The AWS JSON 1.1 protocol: the operation from `X-Amz-Target`, typed access to request
//! members, and errors as the SDKs read them (`{"__type": ..., "message": ...}` with a status).

use base64::Engine;
use serde_json::{Map, Value};

use super::error::ApiError;

/// Which API a request is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Api {
    Kinesis,
    Firehose,
    /// shardlog's own: consumer groups for workers in other processes.
    ConsumerGroups,
}

impl Api {
    /// The service name a SigV4 credential scope must name for this API (shardlog's consumer
    /// groups are signed as Kinesis calls).
    pub(crate) fn signing_name(self) -> &'static str {
        match self {
            Api::Kinesis | Api::ConsumerGroups => "kinesis",
            Api::Firehose => "firehose",
        }
    }
}

/// The API and operation named by an `X-Amz-Target` header (`Kinesis_20131202.PutRecord`).
pub(crate) fn parse_target(target: &str) -> Option<(Api, &str)> {
    let (prefix, operation) = target.split_once('.')?;
    let api = match prefix {
        "Kinesis_20131202" => Api::Kinesis,
        "Firehose_20150804" => Api::Firehose,
        "ShardlogConsumerGroups_20261126" => Api::ConsumerGroups,
        _ => return None,
    };
    (!operation.is_empty()).then_some((api, operation))
}

/// A successful answer: a JSON value, or a body already encoded (large outputs serialized
/// straight from typed structs).
pub(crate) enum Output {
    Value(Value),
    Encoded(Vec<u8>),
    /// SubscribeToShard: an event stream the server keeps open.
    Subscription(Box<super::subscribe::Subscription>),
}

impl From<Value> for Output {
    fn from(value: Value) -> Output {
        Output::Value(value)
    }
}

/// A request's members, read with the types the model gives them.
pub(crate) struct Input<'a> {
    members: &'a Map<String, Value>,
}

fn missing(name: &str) -> ApiError {
    ApiError::validation(format!(
        "1 validation error detected: Value null at '{}' failed to satisfy constraint: Member must not be null",
        lower_first(name)
    ))
}

fn wrong_type(name: &str, expected: &str) -> ApiError {
    ApiError::serialization(format!("{name} must be {expected}"))
}

/// `StreamName` → `streamName`, as AWS names members in validation messages.
pub(crate) fn lower_first(name: &str) -> String {
    let mut chars = name.chars();
    chars
        .next()
        .map(|c| c.to_ascii_lowercase().to_string() + chars.as_str())
        .unwrap_or_default()
}

impl<'a> Input<'a> {
    /// The members of a request body (which must be a JSON object).
    pub fn new(body: &'a Value) -> Result<Input<'a>, ApiError> {
        match body {
            Value::Object(members) => Ok(Input { members }),
            _ => Err(ApiError::serialization(
                "the request body must be a JSON object",
            )),
        }
    }

    fn get(&self, name: &str) -> Option<&'a Value> {
        self.members.get(name).filter(|v| !v.is_null())
    }

    /// A member as it was sent (for settings stored verbatim).
    pub fn raw(&self, name: &str) -> Option<&'a Value> {
        self.get(name)
    }

    /// A string member, if present.
    pub fn opt_str(&self, name: &str) -> Result<Option<&'a str>, ApiError> {
        match self.get(name) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(_) => Err(wrong_type(name, "a string")),
        }
    }

    /// A required string member.
    pub fn str(&self, name: &str) -> Result<&'a str, ApiError> {
        self.opt_str(name)?.ok_or_else(|| missing(name))
    }

    /// An integer member, if present.
    pub fn opt_i64(&self, name: &str) -> Result<Option<i64>, ApiError> {
        match self.get(name) {
            None => Ok(None),
            Some(Value::Number(n)) => n
                .as_i64()
                .map(Some)
                .ok_or_else(|| wrong_type(name, "an integer")),
            Some(_) => Err(wrong_type(name, "an integer")),
        }
    }

    /// A required integer member.
    pub fn i64(&self, name: &str) -> Result<i64, ApiError> {
        self.opt_i64(name)?.ok_or_else(|| missing(name))
    }

    /// A boolean member, if present.
    pub fn opt_bool(&self, name: &str) -> Result<Option<bool>, ApiError> {
        match self.get(name) {
            None => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(*b)),
            Some(_) => Err(wrong_type(name, "a boolean")),
        }
    }

    /// A timestamp member (epoch seconds, possibly fractional), in ms since the epoch.
    pub fn opt_timestamp_ms(&self, name: &str) -> Result<Option<i64>, ApiError> {
        match self.get(name) {
            None => Ok(None),
            Some(Value::Number(n)) => n
                .as_f64()
                .filter(|s| s.is_finite() && s.abs() < 1e14)
                .map(|s| Some((s * 1000.0).round() as i64))
                .ok_or_else(|| wrong_type(name, "a timestamp in epoch seconds")),
            Some(_) => Err(wrong_type(name, "a timestamp in epoch seconds")),
        }
    }

    /// A required blob member (base64 in JSON).
    pub fn blob(&self, name: &str) -> Result<Vec<u8>, ApiError> {
        let text = match self.get(name) {
            None => return Err(missing(name)),
            Some(Value::String(s)) => s,
            Some(_) => return Err(wrong_type(name, "a base64 string")),
        };
        base64::engine::general_purpose::STANDARD
            .decode(text)
            .map_err(|e| ApiError::serialization(format!("{name} is not valid base64: {e}")))
    }

    /// A structure member, if present.
    pub fn opt_object(&self, name: &str) -> Result<Option<Input<'a>>, ApiError> {
        match self.get(name) {
            None => Ok(None),
            Some(Value::Object(members)) => Ok(Some(Input { members })),
            Some(_) => Err(wrong_type(name, "a structure")),
        }
    }

    /// A list member, if present.
    pub fn opt_list(&self, name: &str) -> Result<Option<&'a [Value]>, ApiError> {
        match self.get(name) {
            None => Ok(None),
            Some(Value::Array(items)) => Ok(Some(items)),
            Some(_) => Err(wrong_type(name, "a list")),
        }
    }

    /// A map of strings to strings, if present.
    pub fn opt_string_map(
        &self,
        name: &str,
    ) -> Result<Option<std::collections::BTreeMap<String, String>>, ApiError> {
        match self.get(name) {
            None => Ok(None),
            Some(Value::Object(members)) => members
                .iter()
                .map(|(k, v)| match v {
                    Value::String(s) => Ok((k.clone(), s.clone())),
                    _ => Err(wrong_type(name, "a map of strings")),
                })
                .collect::<Result<_, _>>()
                .map(Some),
            Some(_) => Err(wrong_type(name, "a map of strings")),
        }
    }

    /// A list of strings, if present.
    pub fn opt_string_list(&self, name: &str) -> Result<Option<Vec<String>>, ApiError> {
        match self.opt_list(name)? {
            None => Ok(None),
            Some(items) => items
                .iter()
                .map(|v| match v {
                    Value::String(s) => Ok(s.clone()),
                    _ => Err(wrong_type(name, "a list of strings")),
                })
                .collect::<Result<_, _>>()
                .map(Some),
        }
    }
}

/// A page of tags (ListTagsForStream, ListTagsForDeliveryStream): `Limit` 1 to 50 (default 50)
/// after `ExclusiveStartTagKey`, in key order, with `HasMoreTags`.
pub(crate) fn tag_page(
    input: &Input<'_>,
    tags: &std::collections::BTreeMap<String, String>,
) -> Result<Value, ApiError> {
    let limit = match input.opt_i64("Limit")? {
        None => 50,
        Some(n) if (1..=50).contains(&n) => n as usize,
        Some(n) => return Err(ApiError::invalid(format!("Limit {n} is outside 1..=50"))),
    };
    let after = input.opt_str("ExclusiveStartTagKey")?;
    let remaining: Vec<(&String, &String)> = tags
        .iter()
        .filter(|(k, _)| after.is_none_or(|a| k.as_str() > a))
        .collect();
    let page: Vec<Value> = remaining
        .iter()
        .take(limit)
        .map(|(k, v)| serde_json::json!({ "Key": k, "Value": v }))
        .collect();
    Ok(serde_json::json!({ "Tags": page, "HasMoreTags": remaining.len() > limit }))
}

/// Epoch seconds as the JSON protocol writes timestamps.
pub(crate) fn timestamp(ms: i64) -> Value {
    serde_json::json!(ms as f64 / 1000.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_name_an_api_and_an_operation() {
        assert_eq!(
            parse_target("Kinesis_20131202.PutRecord"),
            Some((Api::Kinesis, "PutRecord"))
        );
        assert_eq!(
            parse_target("Firehose_20150804.ListDeliveryStreams"),
            Some((Api::Firehose, "ListDeliveryStreams"))
        );
        for bad in [
            "",
            "PutRecord",
            "Kinesis_20131202.",
            "DynamoDB_20120810.GetItem",
        ] {
            assert_eq!(parse_target(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn members_are_typed() {
        let body = serde_json::json!({
            "StreamName": "s", "Limit": 5, "Data": "aGk=", "Bad": 1.5, "At": 1.5, "Flag": true,
        });
        let input = Input::new(&body).unwrap();
        assert_eq!(input.str("StreamName").unwrap(), "s");
        assert_eq!(input.i64("Limit").unwrap(), 5);
        assert_eq!(input.blob("Data").unwrap(), b"hi");
        assert_eq!(input.opt_timestamp_ms("At").unwrap(), Some(1500));
        assert_eq!(input.opt_bool("Flag").unwrap(), Some(true));
        assert_eq!(input.i64("Bad").unwrap_err().kind, "SerializationException");
        assert_eq!(
            input.str("Limit").unwrap_err().kind,
            "SerializationException"
        );
        let missing = input.str("ShardId").unwrap_err();
        assert_eq!(missing.kind, "ValidationException");
        assert!(missing.message.contains("'shardId'"), "{}", missing.message);
        assert!(Input::new(&serde_json::json!([1])).is_err());
    }
}
