//! What a request claims about its signature: from the `Authorization` header or from presigned
//! query parameters, and whether its time is valid.

use super::{forbidden, MAX_SKEW_SECS};
use crate::server::error::ApiError;

/// What a request claims about its signature, from the `Authorization` header or from the
/// presigned query parameters (percent-decoded).
pub(super) struct Claim {
    pub(super) algorithm: String,
    pub(super) credential: String,
    pub(super) signed_headers: String,
    pub(super) signature: String,
    pub(super) amz_date: String,
    /// Presigned only: how long after `amz_date` the signature is valid (`X-Amz-Expires`).
    pub(super) expires_secs: Option<i64>,
}

/// The longest a presigned request may be valid (AWS: seven days).
const MAX_PRESIGNED_EXPIRES_SECS: i64 = 7 * 24 * 3600;

impl Claim {
    /// The signature claimed by presigned query parameters, worded as AWS words missing ones.
    pub(super) fn from_query(query: Vec<(String, String)>) -> std::result::Result<Claim, ApiError> {
        let get = |name: &str| {
            query
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, v)| v.clone())
                .filter(|v| !v.is_empty())
        };
        let mut missing = String::new();
        let mut take = |name: &str| {
            let value = get(name);
            if value.is_none() {
                missing.push_str(&format!(
                    "AWS query-string parameters must include '{name}'. "
                ));
            }
            value.unwrap_or_default()
        };
        let algorithm = take("X-Amz-Algorithm");
        let credential = take("X-Amz-Credential");
        let signature = take("X-Amz-Signature");
        let signed_headers = take("X-Amz-SignedHeaders");
        let amz_date = take("X-Amz-Date");
        if !missing.is_empty() {
            return Err(forbidden(
                "IncompleteSignatureException",
                format!("{missing}Re-examine the query-string parameters."),
            ));
        }
        let expires_secs = match get("X-Amz-Expires") {
            None => None,
            Some(text) => Some(
                text.parse::<i64>()
                    .ok()
                    .filter(|s| (1..=MAX_PRESIGNED_EXPIRES_SECS).contains(s))
                    .ok_or_else(|| {
                        forbidden(
                            "IncompleteSignatureException",
                            format!(
                                "X-Amz-Expires must be a number of seconds from 1 to {MAX_PRESIGNED_EXPIRES_SECS}, not {text:?}"
                            ),
                        )
                    })?,
            ),
        };
        Ok(Claim {
            algorithm,
            credential,
            signed_headers,
            signature,
            amz_date,
            expires_secs,
        })
    }
}

/// A signature is valid within [`MAX_SKEW_SECS`] of its date, or, presigned with an expiry,
/// from [`MAX_SKEW_SECS`] before its date until the expiry.
pub(super) fn check_time(
    amz_date: &str,
    request_secs: i64,
    expires_secs: Option<i64>,
    now_secs: i64,
) -> std::result::Result<(), ApiError> {
    if request_secs - now_secs > MAX_SKEW_SECS {
        return Err(forbidden(
            "InvalidSignatureException",
            format!(
                "Signature not yet current: {amz_date} is more than 15 minutes ahead of the server's time"
            ),
        ));
    }
    let valid_until = request_secs + expires_secs.unwrap_or(MAX_SKEW_SECS);
    if now_secs > valid_until {
        return Err(forbidden(
            "InvalidSignatureException",
            match expires_secs {
                Some(expires) => format!(
                    "Signature expired: {amz_date} + X-Amz-Expires {expires} s is before the server's time"
                ),
                None => format!(
                    "Signature expired: {amz_date} is more than 15 minutes from the server's time"
                ),
            },
        ));
    }
    Ok(())
}
