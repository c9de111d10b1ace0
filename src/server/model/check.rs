//! The two passes over a request body: [`types`] (a `SerializationException` message for the
//! first member of the wrong type) and [`constraints`] (every violation, AWS's wording).

use base64::Engine;
use serde_json::Value;

use super::pattern::matches;
use super::{Kind, Model, Shape};

/// AWS reports at most this many violations in one answer.
const MAX_VIOLATIONS: usize = 10;

/// The first member of `value` (of shape `shape`) whose JSON type the shape does not allow, as
/// AWS words it. Nulls are absent members; members the shape lacks are ignored.
pub(super) fn types(model: &Model, shape: &str, value: &Value) -> Result<(), String> {
    let Some(shape) = model.shape(shape) else {
        return Ok(());
    };
    if value.is_null() {
        return Ok(());
    }
    let found = |value: &Value| match value {
        Value::Array(_) => Some("Start of list found where not expected".to_string()),
        Value::Object(_) => Some("Start of structure or map found where not expected.".to_string()),
        _ => None,
    };
    match shape.kind {
        Kind::Structure => match value {
            Value::Object(members) => {
                for (name, member_shape) in &shape.members {
                    if let Some(member) = members.get(name) {
                        types(model, member_shape, member)?;
                    }
                }
                Ok(())
            }
            Value::Array(_) => Err("Start of list found where not expected".into()),
            _ => Err("Expected null".into()),
        },
        Kind::List => match value {
            Value::Array(items) => {
                let member = shape.member.as_deref().unwrap_or_default();
                items.iter().try_for_each(|item| types(model, member, item))
            }
            Value::Object(_) => Err("Start of structure or map found where not expected.".into()),
            _ => Err("Expected list or null".into()),
        },
        Kind::Map => match value {
            Value::Object(entries) => {
                let member = shape.value.as_deref().unwrap_or_default();
                entries.values().try_for_each(|v| types(model, member, v))
            }
            Value::Array(_) => Err("Start of list found where not expected".into()),
            _ => Err("Expected map or null".into()),
        },
        Kind::String => match value {
            Value::String(_) => Ok(()),
            Value::Bool(_) => {
                Err("class java.lang.Boolean can not be converted to an String".into())
            }
            Value::Number(_) => {
                Err("class java.math.BigDecimal can not be converted to an String".into())
            }
            other => Err(found(other).unwrap_or_default()),
        },
        Kind::Blob => match value {
            Value::String(text) => blob(text).map(|_| ()),
            Value::Bool(_) => Err("class java.lang.Boolean can not be converted to a Blob".into()),
            Value::Number(_) => {
                Err("class java.math.BigDecimal can not be converted to a Blob".into())
            }
            other => Err(found(other).unwrap_or_default()),
        },
        Kind::Boolean => match value {
            Value::Bool(_) => Ok(()),
            Value::Number(_) => {
                Err("class java.math.BigDecimal can not be converted to an Boolean".into())
            }
            Value::String(text) => Err(format!(
                "'{}' can not be converted to an Boolean",
                text.to_uppercase()
            )),
            other => Err(found(other).unwrap_or_default()),
        },
        Kind::Integer | Kind::Long | Kind::Double => {
            let name = match shape.kind {
                Kind::Integer => "Integer",
                Kind::Long => "Long",
                _ => "Double",
            };
            match value {
                Value::Number(_) => Ok(()),
                Value::Bool(_) => Err(format!(
                    "class java.lang.Boolean can not be converted to an {name}"
                )),
                Value::String(_) => Err(format!(
                    "class java.lang.String can not be converted to an {name}"
                )),
                other => Err(found(other).unwrap_or_default()),
            }
        }
        // Epoch seconds as a number; the SDKs also accept ISO 8601 text.
        Kind::Timestamp => match value {
            Value::Number(_) | Value::String(_) => Ok(()),
            Value::Bool(_) => Err(
                "class java.lang.Boolean can not be converted to milliseconds since the epoch"
                    .into(),
            ),
            other => Err(found(other).unwrap_or_default()),
        },
    }
}

/// The bytes a blob member's base64 holds, or why AWS refuses it.
fn blob(text: &str) -> Result<Vec<u8>, String> {
    let refuse = |why: String| format!("'{text}' can not be converted to a Blob: {why}");
    if text.len() % 4 != 0 {
        return Err(refuse(format!(
            "Base64 encoded length is expected a multiple of 4 bytes but found: {}",
            text.len()
        )));
    }
    let body = text.trim_end_matches('=');
    let padding = text.len() - body.len();
    if let Some(c) = body
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || *c == '+' || *c == '/'))
        .or_else(|| (padding > 2).then_some('='))
    {
        return Err(refuse(format!("Invalid Base64 character: '{c}'")));
    }
    base64::engine::general_purpose::STANDARD
        .decode(text)
        .map_err(|_| refuse("Invalid last non-pad Base64 character dectected".into()))
}

/// Every constraint `value` (of shape `shape`, already type-checked) breaks, in the model's
/// member order, worded as AWS words them; at most [`MAX_VIOLATIONS`].
pub(super) fn constraints(model: &Model, shape: &str, value: &Value) -> Vec<String> {
    let mut violations = Vec::new();
    if let (Some(shape), Value::Object(members)) = (model.shape(shape), value) {
        structure(model, shape, members, "", &mut violations);
    }
    violations.truncate(MAX_VIOLATIONS);
    violations
}

fn structure(
    model: &Model,
    shape: &Shape,
    members: &serde_json::Map<String, Value>,
    parent: &str,
    out: &mut Vec<String>,
) {
    for (name, member_shape) in &shape.members {
        let Some(member) = model.shape(member_shape) else {
            continue;
        };
        let path = format!("{parent}{}", super::super::protocol::lower_first(name));
        let value = members.get(name).filter(|v| !v.is_null());
        let Some(value) = value else {
            if shape.required.contains(name) {
                out.push(format!(
                    "Value null at '{path}' failed to satisfy constraint: Member must not be null"
                ));
            }
            continue;
        };
        one(model, member, value, &path, out);
    }
}

/// The constraints of one present member at `path`, then its contents'.
fn one(model: &Model, shape: &Shape, value: &Value, path: &str, out: &mut Vec<String>) {
    for broken in own(shape, value) {
        out.push(format!(
            "Value {} at '{path}' failed to satisfy constraint: {broken}",
            shown(shape, value)
        ));
    }
    match (shape.kind, value) {
        (Kind::Structure, Value::Object(members)) => {
            structure(model, shape, members, &format!("{path}."), out);
        }
        (Kind::List, Value::Array(items)) => {
            let Some(member) = shape.member.as_deref().and_then(|m| model.shape(m)) else {
                return;
            };
            if member.kind == Kind::Structure {
                for (i, item) in items.iter().enumerate() {
                    if let Value::Object(members) = item {
                        structure(
                            model,
                            member,
                            members,
                            &format!("{path}.{}.member.", i + 1),
                            out,
                        );
                    }
                }
            } else if items
                .iter()
                .any(|item| !item.is_null() && !own(member, item).is_empty())
            {
                out.push(format!(
                    "Value {} at '{path}' failed to satisfy constraint: Member must satisfy constraint: [{}]",
                    shown(shape, value),
                    all_of(member).join(", ")
                ));
            }
        }
        (Kind::Map, Value::Object(entries)) => {
            let key = shape.key.as_deref().and_then(|k| model.shape(k));
            let item = shape.value.as_deref().and_then(|v| model.shape(v));
            if let Some(key) = key {
                if entries
                    .keys()
                    .any(|k| !own(key, &Value::String(k.clone())).is_empty())
                {
                    out.push(format!(
                        "Value {} at '{path}' failed to satisfy constraint: Map keys must satisfy constraint: [{}]",
                        shown(shape, value),
                        all_of(key).join(", ")
                    ));
                }
            }
            if let Some(item) = item {
                if entries
                    .values()
                    .any(|v| !v.is_null() && !own(item, v).is_empty())
                {
                    out.push(format!(
                        "Value {} at '{path}' failed to satisfy constraint: Map value must satisfy constraint: [{}]",
                        shown(shape, value),
                        all_of(item).join(", ")
                    ));
                }
            }
        }
        _ => {}
    }
}

/// The constraints of `shape` that `value` itself breaks (not its members'), in the order AWS
/// lists them: pattern, minimum, maximum, enum.
fn own(shape: &Shape, value: &Value) -> Vec<String> {
    let mut broken = Vec::new();
    if let (Some(pattern), Value::String(text)) = (&shape.pattern, value) {
        if !matches(pattern, text) {
            broken.push(format!(
                "Member must satisfy regular expression pattern: {pattern}"
            ));
        }
    }
    match size(shape.kind, value) {
        Some(Size::Length(len)) => {
            if shape.min.is_some_and(|min| (len as f64) < min) {
                broken.push(format!(
                    "Member must have length greater than or equal to {}",
                    bound(shape.min)
                ));
            }
            if shape.max.is_some_and(|max| (len as f64) > max) {
                broken.push(format!(
                    "Member must have length less than or equal to {}",
                    bound(shape.max)
                ));
            }
        }
        Some(Size::Value(n)) => {
            if shape.min.is_some_and(|min| n < min) {
                broken.push(format!(
                    "Member must have value greater than or equal to {}",
                    bound(shape.min)
                ));
            }
            if shape.max.is_some_and(|max| n > max) {
                broken.push(format!(
                    "Member must have value less than or equal to {}",
                    bound(shape.max)
                ));
            }
        }
        None => {}
    }
    if let (Some(allowed), Value::String(text)) = (&shape.allowed, value) {
        if !allowed.iter().any(|a| a == text) {
            broken.push(format!(
                "Member must satisfy enum value set: [{}]",
                allowed.join(", ")
            ));
        }
    }
    broken
}

/// Every constraint of `shape`, as AWS lists a list member's or a map key's constraints.
fn all_of(shape: &Shape) -> Vec<String> {
    let length = matches!(
        shape.kind,
        Kind::String | Kind::Blob | Kind::List | Kind::Map
    );
    let what = if length { "length" } else { "value" };
    let mut all = Vec::new();
    if shape.max.is_some() {
        all.push(format!(
            "Member must have {what} less than or equal to {}",
            bound(shape.max)
        ));
    }
    if shape.min.is_some() {
        all.push(format!(
            "Member must have {what} greater than or equal to {}",
            bound(shape.min)
        ));
    }
    if let Some(pattern) = &shape.pattern {
        all.push(format!(
            "Member must satisfy regular expression pattern: {pattern}"
        ));
    }
    if let Some(allowed) = &shape.allowed {
        all.push(format!(
            "Member must satisfy enum value set: [{}]",
            allowed.join(", ")
        ));
    }
    all
}

enum Size {
    Length(usize),
    Value(f64),
}

/// What `min`/`max` bound for a value of `kind`: the length of strings (UTF-16 units, as Java
/// counts), blobs (decoded bytes), lists and maps, or a number's value.
fn size(kind: Kind, value: &Value) -> Option<Size> {
    match (kind, value) {
        (Kind::String, Value::String(text)) => Some(Size::Length(text.encode_utf16().count())),
        (Kind::Blob, Value::String(text)) => Some(Size::Length(blob_len(text))),
        (Kind::List, Value::Array(items)) => Some(Size::Length(items.len())),
        (Kind::Map, Value::Object(entries)) => Some(Size::Length(entries.len())),
        (Kind::Integer | Kind::Long, Value::Number(n)) => {
            // AWS truncates a fractional number given for an integer member.
            n.as_f64().map(|f| Size::Value(f.trunc()))
        }
        (Kind::Double, Value::Number(n)) => n.as_f64().map(Size::Value),
        _ => None,
    }
}

/// The bytes a blob's base64 (checked by [`types`] first) holds, from its length: no decoding.
fn blob_len(text: &str) -> usize {
    let padding = text.len() - text.trim_end_matches('=').len();
    (text.len() / 4 * 3).saturating_sub(padding)
}

/// A bound as the model writes it (all are whole numbers).
fn bound(bound: Option<f64>) -> String {
    bound.map_or_else(String::new, |b| format!("{b}"))
}

/// `value` as AWS shows it in a violation: `null`, or quoted text; a blob as the Java buffer it
/// became; a list as `[a, b]`; a map as `{k=v}`.
fn shown(shape: &Shape, value: &Value) -> String {
    let plain = |value: &Value| match value {
        Value::String(text) => text.clone(),
        other => other.to_string(),
    };
    let text = match (shape.kind, value) {
        (_, Value::Null) => return "null".into(),
        (Kind::Blob, Value::String(text)) => {
            let len = blob_len(text);
            format!("java.nio.HeapByteBuffer[pos=0 lim={len} cap={len}]")
        }
        (Kind::List, Value::Array(items)) => {
            format!(
                "[{}]",
                items.iter().map(plain).collect::<Vec<_>>().join(", ")
            )
        }
        (Kind::Map, Value::Object(entries)) => format!(
            "{{{}}}",
            entries
                .iter()
                .map(|(k, v)| format!("{k}={}", plain(v)))
                .collect::<Vec<_>>()
                .join(", ")
        ),
        (_, other) => plain(other),
    };
    // A list of 500 records would make a message of tens of kilobytes: shown up to a bound.
    const SHOWN_CHARS: usize = 1024;
    match text.char_indices().nth(SHOWN_CHARS) {
        Some((cut, _)) => format!("'{}...'", &text[..cut]),
        None => format!("'{text}'"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blob_lengths_are_the_decoded_lengths() {
        let engine = &base64::engine::general_purpose::STANDARD;
        for len in 0..40 {
            let text = engine.encode(vec![7u8; len]);
            assert_eq!(blob_len(&text), len, "{text}");
        }
    }
}
