//! The Kinesis and Firehose service models, and request validation driven by them.
//!
//! `kinesis.json` and `firehose.json` are botocore's `service-2.json` stripped to what validation
//! needs (`strip_model.py` writes them; `tests/suite/wire_model.rs` checks them against the
//! installed botocore, so they cannot drift). A request is checked as AWS's JSON services check
//! one, in two passes over the whole body before anything else looks at it:
//!
//! 1. **Types** ([`check`]): every member the input shape has must hold its type; the first that
//!    does not is a `SerializationException` worded as AWS words it ("class java.lang.String can
//!    not be converted to an Integer"). Members the shape lacks, and nulls, are ignored.
//! 2. **Constraints**: `required`, `min`/`max` (length of strings, blobs, lists and maps; value of
//!    numbers), `pattern` and `enum`, in the model's member order; every violation (up to ten) is
//!    reported in one `ValidationException` ("2 validation errors detected: Value '…' at
//!    'streamName' failed to satisfy constraint: …; Value null at 'shardCount' …").
//!
//! Only then do the handlers make their semantic checks and look resources up.

mod check;
mod pattern;

use std::collections::HashMap;
use std::sync::OnceLock;

use serde::Deserialize;
use serde_json::Value;

use super::error::ApiError;
use super::protocol::Api;

/// One service's operations (name → input shape) and shapes.
#[derive(Debug, Deserialize)]
pub(crate) struct Model {
    pub operations: HashMap<String, Operation>,
    pub shapes: HashMap<String, Shape>,
}

#[derive(Debug, Deserialize)]
pub(crate) struct Operation {
    /// The input shape (every Kinesis and Firehose operation has one).
    pub input: Option<String>,
    /// Whether the operation answers anything: those that do not answer an empty body.
    pub output: bool,
}

/// A shape, with the constraints the model gives it.
#[derive(Debug, Deserialize)]
pub(crate) struct Shape {
    #[serde(rename = "type")]
    pub kind: Kind,
    /// A structure's members, in the model's order: (name, shape).
    #[serde(default)]
    pub members: Vec<(String, String)>,
    #[serde(default)]
    pub required: Vec<String>,
    pub min: Option<f64>,
    pub max: Option<f64>,
    pub pattern: Option<String>,
    #[serde(rename = "enum")]
    pub allowed: Option<Vec<String>>,
    /// A list's member shape.
    pub member: Option<String>,
    /// A map's key and value shapes.
    pub key: Option<String>,
    pub value: Option<String>,
}

/// The model's types.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Kind {
    Structure,
    List,
    Map,
    String,
    Blob,
    Boolean,
    Integer,
    Long,
    Double,
    Timestamp,
}

impl Model {
    fn parse(text: &str) -> Model {
        // The two models are part of the source, and a unit test parses both.
        serde_json::from_str(text).expect("the embedded service model parses")
    }

    /// The shape named `name` (every name a shape of the model uses is one of its shapes; the
    /// unit tests check it).
    pub(crate) fn shape(&self, name: &str) -> Option<&Shape> {
        self.shapes.get(name)
    }
}

/// The Kinesis model.
pub(crate) fn kinesis() -> &'static Model {
    static MODEL: OnceLock<Model> = OnceLock::new();
    MODEL.get_or_init(|| Model::parse(include_str!("kinesis.json")))
}

/// The Firehose model.
pub(crate) fn firehose() -> &'static Model {
    static MODEL: OnceLock<Model> = OnceLock::new();
    MODEL.get_or_init(|| Model::parse(include_str!("firehose.json")))
}

/// Checks `body` against the input shape of `operation`: types first, then every constraint.
/// Operations the model does not have (and shardlog's own consumer-group API) are left to their
/// handlers.
pub(crate) fn validate(api: Api, operation: &str, body: &Value) -> Result<(), ApiError> {
    let Some(model) = model_of(api) else {
        return Ok(());
    };
    let Some(input) = model
        .operations
        .get(operation)
        .and_then(|op| op.input.as_ref())
    else {
        return Ok(());
    };
    check::types(model, input, body).map_err(ApiError::serialization)?;
    let violations = check::constraints(model, input, body);
    if violations.is_empty() {
        return Ok(());
    }
    Err(ApiError::validation(format!(
        "{} validation error{} detected: {}",
        violations.len(),
        if violations.len() == 1 { "" } else { "s" },
        violations.join("; ")
    )))
}

/// Whether `operation` has an output shape (operations the model does not have are taken to).
pub(crate) fn has_output(api: Api, operation: &str) -> bool {
    model_of(api)
        .and_then(|model| model.operations.get(operation))
        .is_none_or(|op| op.output)
}

/// The AWS model of `api` (shardlog's own consumer-group API has none).
fn model_of(api: Api) -> Option<&'static Model> {
    match api {
        Api::Kinesis => Some(kinesis()),
        Api::Firehose => Some(firehose()),
        Api::ConsumerGroups => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_models_parse_and_every_shape_they_name_exists() {
        for model in [kinesis(), firehose()] {
            for op in model.operations.values() {
                let input = op.input.as_deref().unwrap();
                assert!(model.shape(input).is_some(), "{input}");
            }
            for (name, shape) in &model.shapes {
                let named = shape
                    .members
                    .iter()
                    .map(|(_, s)| s)
                    .chain(&shape.member)
                    .chain(&shape.key)
                    .chain(&shape.value);
                for target in named {
                    assert!(model.shape(target).is_some(), "{name} names {target}");
                }
                for required in &shape.required {
                    assert!(
                        shape.members.iter().any(|(m, _)| m == required),
                        "{name} requires {required}"
                    );
                }
            }
        }
    }

    fn message(api: Api, op: &str, body: &str) -> (String, String) {
        let e = validate(api, op, &serde_json::from_str(body).unwrap()).unwrap_err();
        (e.kind.to_string(), e.message)
    }

    #[test]
    fn all_violations_in_model_order_in_one_validation_exception() {
        let long = "a".repeat(129);
        let (kind, text) = message(
            Api::Kinesis,
            "CreateStream",
            &format!(r#"{{"StreamName":"{long}","ShardCount":0}}"#),
        );
        assert_eq!(kind, "ValidationException");
        assert_eq!(
            text,
            format!(
                "2 validation errors detected: Value '{long}' at 'streamName' failed to satisfy \
                 constraint: Member must have length less than or equal to 128; Value '0' at \
                 'shardCount' failed to satisfy constraint: Member must have value greater than \
                 or equal to 1"
            )
        );
        let (_, text) = message(
            Api::Kinesis,
            "PutRecords",
            r#"{"Records":[{"Data":"QQ=="},{"PartitionKey":"","Data":"QQ==","ExplicitHashKey":"x"}]}"#,
        );
        assert_eq!(
            text,
            "3 validation errors detected: Value null at 'records.1.member.partitionKey' failed \
             to satisfy constraint: Member must not be null; Value 'x' at \
             'records.2.member.explicitHashKey' failed to satisfy constraint: Member must \
             satisfy regular expression pattern: 0|([1-9]\\d{0,38}); Value '' at \
             'records.2.member.partitionKey' failed to satisfy constraint: Member must have \
             length greater than or equal to 1"
        );
    }

    #[test]
    fn a_wrong_type_is_a_serialization_exception_before_any_constraint() {
        let (kind, text) = message(Api::Kinesis, "CreateStream", r#"{"ShardCount":"3"}"#);
        assert_eq!(kind, "SerializationException");
        assert_eq!(
            text,
            "class java.lang.String can not be converted to an Integer"
        );
        let (_, text) = message(Api::Kinesis, "GetRecords", r#"{"ShardIterator":["a"]}"#);
        assert_eq!(text, "Start of list found where not expected");
        let (_, text) = message(
            Api::Kinesis,
            "PutRecord",
            r#"{"StreamName":"s","PartitionKey":"k","Data":"QQ="}"#,
        );
        assert_eq!(
            text,
            "'QQ=' can not be converted to a Blob: Base64 encoded length is expected a multiple of 4 bytes but found: 3"
        );
    }

    #[test]
    fn operations_without_output_are_known() {
        assert!(!has_output(Api::Kinesis, "CreateStream"));
        assert!(!has_output(Api::Kinesis, "AddTagsToStream"));
        assert!(has_output(Api::Kinesis, "ListStreams"));
        assert!(has_output(Api::Firehose, "CreateDeliveryStream"));
        assert!(has_output(Api::ConsumerGroups, "Checkpoint"));
    }

    #[test]
    fn unknown_members_and_nulls_are_ignored() {
        let body = serde_json::json!({"StreamName": "s", "Limit": null, "Whatever": [1]});
        validate(Api::Kinesis, "DescribeStream", &body).unwrap();
        validate(Api::ConsumerGroups, "Anything", &body).unwrap();
        validate(Api::Kinesis, "NoSuchOperation", &body).unwrap();
    }
}
