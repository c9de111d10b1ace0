//! The models' `pattern` constraints as regular expressions, matched against a whole value (as
//! AWS matches them), each compiled once.
//!
//! The `regex` crate has no look-around, which a few Firehose patterns use. A negative look-ahead
//! at the start (`^(?!aws:)…`, `^(?!\s*$).+`) is kept exactly, as a second expression the value
//! must *not* match at its start; look-arounds anywhere else are dropped, so those patterns
//! (one: Redshift JDBC URLs) are checked a little more loosely than AWS checks them. `\d`, `\w` and
//! `\s` match ASCII only, as in Java.

use std::collections::HashMap;
use std::sync::OnceLock;

use regex::Regex;

/// A compiled pattern: `accept` must match the whole value, `reject` must not match its start.
struct Compiled {
    accept: Option<Regex>,
    reject: Option<Regex>,
}

/// Whether `text` satisfies `pattern`, one of the models' patterns. A pattern that does not
/// compile even without its look-arounds accepts everything (none of the models' does; a unit
/// test checks it).
pub(super) fn matches(pattern: &str, text: &str) -> bool {
    static COMPILED: OnceLock<HashMap<&'static str, Compiled>> = OnceLock::new();
    let compiled = COMPILED.get_or_init(|| {
        [super::kinesis(), super::firehose()]
            .into_iter()
            .flat_map(|model| model.shapes.values())
            .filter_map(|shape| shape.pattern.as_deref())
            .map(|pattern| (pattern, compile(pattern)))
            .collect()
    });
    let fallback;
    let compiled = match compiled.get(pattern) {
        Some(c) => c,
        None => {
            fallback = compile(pattern);
            &fallback
        }
    };
    compiled.accept.as_ref().is_none_or(|r| r.is_match(text))
        && !compiled.reject.as_ref().is_some_and(|r| r.is_match(text))
}

fn compile(pattern: &str) -> Compiled {
    let (body, reject) = without_lookarounds(pattern);
    Compiled {
        accept: Regex::new(&format!("^(?:{body})$")).ok(),
        reject: reject.and_then(|r| Regex::new(&format!("^(?:{r})")).ok()),
    }
}

/// `pattern` with its look-around groups removed, and the body of a negative look-ahead that
/// opens it (after an optional `^`), which the value must not start with.
fn without_lookarounds(pattern: &str) -> (String, Option<String>) {
    let mut out = String::with_capacity(pattern.len());
    let mut reject = None;
    let mut rest = pattern;
    while !rest.is_empty() {
        let opener = ["(?!", "(?<!", "(?=", "(?<="]
            .into_iter()
            .find(|o| rest.starts_with(o));
        if let Some(opener) = opener {
            let inner_start = opener.len();
            let end = closing_paren(rest).unwrap_or(rest.len());
            let inner = &rest[inner_start..end.min(rest.len())];
            let at_start = out.is_empty() || out == "^";
            if opener == "(?!" && at_start && reject.is_none() {
                reject = Some(inner.to_string());
            }
            rest = rest.get(end + 1..).unwrap_or("");
            continue;
        }
        let mut chars = rest.chars();
        let c = chars.next().unwrap_or_default();
        out.push(c);
        if c == '\\' {
            // An escaped character is copied whole (it may be a parenthesis); Java's classes
            // are ASCII-only, so they are written out (a class may nest in another here).
            match chars.next() {
                Some(class @ ('d' | 'D' | 'w' | 'W' | 's' | 'S')) => {
                    out.pop();
                    out.push_str(java_class(class));
                }
                Some(escaped) => out.push(escaped),
                None => {}
            }
        }
        rest = chars.as_str();
    }
    (out, reject)
}

/// What Java's `\\d`, `\\w`, `\\s` (and their negations) match.
fn java_class(class: char) -> &'static str {
    match class {
        'd' => "[0-9]",
        'D' => "[^0-9]",
        'w' => "[0-9A-Za-z_]",
        'W' => "[^0-9A-Za-z_]",
        's' => "[ \\t\\n\\x0B\\f\\r]",
        _ => "[^ \\t\\n\\x0B\\f\\r]",
    }
}

/// The index of the `)` closing the group that opens `text`.
fn closing_paren(text: &str) -> Option<usize> {
    let mut depth = 0usize;
    let mut escaped = false;
    for (i, c) in text.char_indices() {
        match c {
            _ if escaped => escaped = false,
            '\\' => escaped = true,
            '(' => depth += 1,
            ')' => {
                depth -= 1;
                if depth == 0 {
                    return Some(i);
                }
            }
            _ => {}
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_pattern_of_both_models_compiles() {
        for model in [super::super::kinesis(), super::super::firehose()] {
            for (name, shape) in &model.shapes {
                if let Some(pattern) = &shape.pattern {
                    let compiled = compile(pattern);
                    assert!(compiled.accept.is_some(), "{name}: {pattern}");
                }
            }
        }
    }

    #[test]
    fn whole_values_and_leading_negative_lookaheads() {
        assert!(matches("[a-zA-Z0-9_.-]+", "my-stream_1.x"));
        assert!(!matches("[a-zA-Z0-9_.-]+", "my stream"));
        assert!(!matches("0|([1-9]\\d{0,38})", "01"));
        assert!(matches("0|([1-9]\\d{0,38})", "0"));
        let tag = r"^(?!aws:)[\p{L}\p{Z}\p{N}_.:\/=+\-@%]*$";
        assert!(matches(tag, "team:a b"));
        assert!(!matches(tag, "aws:reserved"));
        assert!(!matches(tag, "semi;colon"));
        let not_blank = r"^(?!\s*$).+";
        assert!(matches(not_blank, " x "));
        assert!(!matches(not_blank, "   "));
        assert!(!matches(not_blank, ""));
        assert!(
            !matches("[0-9]+", "\u{663}"),
            "Arabic-Indic digits are not \\d"
        );
        assert!(
            !matches("\\d+", "\u{663}"),
            "Arabic-Indic digits are not \\d"
        );
        assert!(matches(
            r"arn:.*:s3:::[\w\.\-]{1,255}",
            "arn:aws:s3:::my.bucket-1"
        ));
        assert!(!matches(
            r"arn:.*:s3:::[\w\.\-]{1,255}",
            "arn:aws:s3:::my bucket"
        ));
    }
}
