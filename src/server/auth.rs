//! AWS Signature Version 4 checking (`shardlog serve --auth FILE`): each request's signature is
//! recomputed with the secret key of its access key id and compared; missing, unknown, stale
//! or wrong signatures are refused with the errors the SDKs expect.

use std::collections::BTreeMap;
use std::path::Path;

use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

use super::error::ApiError;
use crate::error::{Error, Result};

/// How far a request's `X-Amz-Date` may be from the server's clock (AWS: 15 minutes).
const MAX_SKEW_SECS: i64 = 15 * 60;

/// Access key ids and their secret keys.
#[derive(Clone, Default)]
pub struct Credentials {
    secrets: BTreeMap<String, String>,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print secrets.
        f.debug_struct("Credentials")
            .field("access_key_ids", &self.secrets.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl Credentials {
    /// Reads an AWS credentials file (`[profile]` sections with `aws_access_key_id` and
    /// `aws_secret_access_key`); every profile's key is accepted.
    pub fn from_file(path: &Path) -> Result<Credentials> {
        let text = std::fs::read_to_string(path).map_err(Error::io_at("read credentials", path))?;
        let credentials = Credentials::parse(&text);
        if credentials.secrets.is_empty() {
            return Err(Error::invalid(
                "credentials",
                format!(
                    "{} holds no aws_access_key_id / aws_secret_access_key pair",
                    path.display()
                ),
            ));
        }
        Ok(credentials)
    }

    /// Parses the credentials file format.
    pub fn parse(text: &str) -> Credentials {
        let mut secrets = BTreeMap::new();
        let (mut id, mut secret): (Option<String>, Option<String>) = (None, None);
        let mut flush = |id: &mut Option<String>, secret: &mut Option<String>| {
            if let (Some(i), Some(s)) = (id.take(), secret.take()) {
                secrets.insert(i, s);
            }
        };
        for line in text.lines().map(str::trim) {
            if line.starts_with('[') {
                flush(&mut id, &mut secret);
            } else if let Some((key, value)) = line.split_once('=') {
                let value = value.trim().to_string();
                match key.trim() {
                    "aws_access_key_id" => id = Some(value),
                    "aws_secret_access_key" => secret = Some(value),
                    _ => {}
                }
            }
        }
        flush(&mut id, &mut secret);
        Credentials { secrets }
    }

    /// One access key.
    pub fn single(access_key_id: &str, secret_access_key: &str) -> Credentials {
        Credentials {
            secrets: BTreeMap::from([(access_key_id.to_string(), secret_access_key.to_string())]),
        }
    }
}

/// What a signature is checked over, but the body: the headers are checked before the body is
/// read, so an unsigned or wrongly scoped request never gets to send a large one.
pub(crate) struct SignedRequest<'a> {
    pub method: &'a str,
    pub path: &'a str,
    pub query: &'a str,
    /// Header names in lower case, values as received.
    pub headers: &'a [(String, String)],
    pub now_secs: i64,
    /// The region the server answers for: the credential scope must name it.
    pub region: &'a str,
    /// The signing name of the API called (`kinesis`, `firehose`): the scope must name it.
    pub service: &'a str,
}

/// Headers that every signature must cover: a signature that leaves one out could be replayed
/// with another value (another host, another operation). Every other `x-amz-*` header sent
/// must be signed too, but for [`UNSIGNED_OK`].
const MUST_SIGN: [&str; 3] = ["host", "x-amz-date", "x-amz-target"];
/// `x-amz-*` headers SDKs send unsigned, which change nothing the server does.
const UNSIGNED_OK: [&str; 1] = ["x-amz-user-agent"];

/// A request whose headers passed [`SignedRequest::check_headers`]: what checking the signature
/// over the body needs.
pub(crate) struct PendingSignature<'a> {
    request: &'a SignedRequest<'a>,
    secret: &'a str,
    amz_date: &'a str,
    date: &'a str,
    signed_headers: &'a str,
    signature: &'a str,
}

fn forbidden(kind: &'static str, message: impl Into<String>) -> ApiError {
    ApiError::new(400, kind, message)
}

impl<'a> SignedRequest<'a> {
    fn header(&self, name: &str) -> Option<&'a str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// Checks everything the headers alone decide: the key, the credential scope (date,
    /// region, service), the clock skew, and that every header that matters is signed.
    pub fn check_headers(
        &'a self,
        credentials: &'a Credentials,
    ) -> std::result::Result<PendingSignature<'a>, ApiError> {
        // Presigned (query-string) authentication is not served; a request with both is
        // refused as AWS refuses it.
        let query_auth = self
            .query
            .split('&')
            .any(|pair| pair.split('=').next() == Some("X-Amz-Algorithm"));
        if query_auth && self.header("authorization").is_some() {
            return Err(forbidden(
                "InvalidSignatureException",
                "Found both 'X-Amz-Algorithm' as a query-string param and 'Authorization' as HTTP header.",
            ));
        }
        let authorization = self.header("authorization").ok_or_else(|| {
            forbidden(
                "MissingAuthenticationTokenException",
                if query_auth {
                    "presigned (query-string) authentication is not supported by shardlog; sign the Authorization header"
                } else {
                    "Missing Authentication Token"
                },
            )
        })?;
        let fields = authorization
            .strip_prefix("AWS4-HMAC-SHA256 ")
            .ok_or_else(|| {
                forbidden(
                    "IncompleteSignatureException",
                    "only AWS4-HMAC-SHA256 signatures are accepted",
                )
            })?;
        let mut credential = None;
        let mut signed_headers = None;
        let mut signature = None;
        for part in fields.split(',') {
            match part.trim().split_once('=') {
                Some(("Credential", v)) => credential = Some(v),
                Some(("SignedHeaders", v)) => signed_headers = Some(v),
                Some(("Signature", v)) => signature = Some(v),
                _ => {}
            }
        }
        let incomplete = || {
            forbidden(
                "IncompleteSignatureException",
                "Authorization needs Credential, SignedHeaders and Signature",
            )
        };
        let (credential, signed_headers, signature) = (
            credential.ok_or_else(incomplete)?,
            signed_headers.ok_or_else(incomplete)?,
            signature.ok_or_else(incomplete)?,
        );
        let (access_key_id, scope) = credential.split_once('/').ok_or_else(incomplete)?;
        let secret = credentials.secrets.get(access_key_id).ok_or_else(|| {
            forbidden(
                "UnrecognizedClientException",
                "The security token included in the request is invalid.",
            )
        })?;
        let mut scope_parts = scope.split('/');
        let (Some(date), Some(region), Some(service), Some("aws4_request"), None) = (
            scope_parts.next(),
            scope_parts.next(),
            scope_parts.next(),
            scope_parts.next(),
            scope_parts.next(),
        ) else {
            return Err(incomplete());
        };
        if region != self.region {
            return Err(forbidden(
                "InvalidSignatureException",
                format!(
                    "Credential should be scoped to a valid region, not '{region}'; this server answers for '{}'",
                    self.region
                ),
            ));
        }
        if service != self.service {
            return Err(forbidden(
                "InvalidSignatureException",
                format!(
                    "Credential should be scoped to correct service: '{}', not '{service}'",
                    self.service
                ),
            ));
        }
        let amz_date = self
            .header("x-amz-date")
            .ok_or_else(|| forbidden("IncompleteSignatureException", "X-Amz-Date is missing"))?;
        let request_secs = parse_amz_date(amz_date).ok_or_else(|| {
            forbidden(
                "IncompleteSignatureException",
                format!("X-Amz-Date {amz_date:?} is not yyyyMMddTHHmmssZ"),
            )
        })?;
        if !amz_date.starts_with(date) || date.len() != 8 {
            return Err(forbidden(
                "InvalidSignatureException",
                "the credential scope's date does not match X-Amz-Date",
            ));
        }
        if (request_secs - self.now_secs).abs() > MAX_SKEW_SECS {
            return Err(forbidden(
                "InvalidSignatureException",
                format!(
                    "Signature expired: {amz_date} is more than 15 minutes from the server's time"
                ),
            ));
        }
        let signed: Vec<&str> = signed_headers.split(';').collect();
        let must_sign = self
            .headers
            .iter()
            .map(|(n, _)| n.as_str())
            .filter(|n| n.starts_with("x-amz-") && !UNSIGNED_OK.contains(n))
            .chain(MUST_SIGN);
        for name in must_sign {
            if !signed.contains(&name) {
                return Err(forbidden(
                    "IncompleteSignatureException",
                    format!("the header {name:?} must be signed (SignedHeaders={signed_headers})"),
                ));
            }
        }
        Ok(PendingSignature {
            request: self,
            secret,
            amz_date,
            date,
            signed_headers,
            signature,
        })
    }
}

impl PendingSignature<'_> {
    /// Checks the signature over the request and `body`. The payload hash is always the body's
    /// own: an `X-Amz-Content-Sha256` that differs is refused (`XAmzContentSHA256Mismatch`)
    /// rather than trusted.
    pub fn verify(&self, body: &[u8]) -> std::result::Result<(), ApiError> {
        let payload_hash = hex(&Sha256::digest(body));
        if let Some(claimed) = self.request.header("x-amz-content-sha256") {
            if claimed != "UNSIGNED-PAYLOAD" && !claimed.eq_ignore_ascii_case(&payload_hash) {
                return Err(forbidden(
                    "XAmzContentSHA256Mismatch",
                    format!(
                        "The provided 'x-amz-content-sha256' header does not match what was computed: {payload_hash}"
                    ),
                ));
            }
        }
        let expected = self.signature(&payload_hash)?;
        if !constant_time_eq(expected.as_bytes(), self.signature.as_bytes()) {
            return Err(forbidden(
                "InvalidSignatureException",
                "The request signature we calculated does not match the signature you provided. Check your AWS Secret Access Key and signing method.",
            ));
        }
        Ok(())
    }

    fn signature(&self, payload_hash: &str) -> std::result::Result<String, ApiError> {
        let request = self.request;
        let mut canonical_headers = String::new();
        for name in self.signed_headers.split(';') {
            let values: Vec<&str> = request
                .headers
                .iter()
                .filter(|(n, _)| n == name)
                .map(|(_, v)| v.as_str())
                .collect();
            if values.is_empty() {
                return Err(forbidden(
                    "IncompleteSignatureException",
                    format!("signed header {name:?} is not in the request"),
                ));
            }
            let joined = values
                .iter()
                .map(|v| v.split_whitespace().collect::<Vec<_>>().join(" "))
                .collect::<Vec<_>>()
                .join(",");
            canonical_headers.push_str(&format!("{name}:{joined}\n"));
        }
        let canonical_request = format!(
            "{}\n{}\n{}\n{canonical_headers}\n{}\n{payload_hash}",
            request.method,
            canonical_uri(request.path),
            canonical_query(request.query),
            self.signed_headers,
        );
        let scope = format!(
            "{}/{}/{}/aws4_request",
            self.date, request.region, request.service
        );
        let string_to_sign = format!(
            "AWS4-HMAC-SHA256\n{}\n{scope}\n{}",
            self.amz_date,
            hex(&Sha256::digest(canonical_request.as_bytes()))
        );
        let k_date = hmac(
            format!("AWS4{}", self.secret).as_bytes(),
            self.date.as_bytes(),
        );
        let k_region = hmac(&k_date, request.region.as_bytes());
        let k_service = hmac(&k_region, request.service.as_bytes());
        let k_signing = hmac(&k_service, b"aws4_request");
        Ok(hex(&hmac(&k_signing, string_to_sign.as_bytes())))
    }
}

fn hmac(key: &[u8], data: &[u8]) -> Vec<u8> {
    // HMAC takes keys of any length.
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC accepts any key length");
    mac.update(data);
    mac.finalize().into_bytes().to_vec()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The path as SigV4 canonicalizes it (already URI-encoded by the client; empty is `/`).
fn canonical_uri(path: &str) -> &str {
    if path.is_empty() {
        "/"
    } else {
        path
    }
}

/// Query parameters sorted by name then value.
fn canonical_query(query: &str) -> String {
    let mut pairs: Vec<(&str, &str)> = query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| p.split_once('=').unwrap_or((p, "")))
        .collect();
    pairs.sort();
    pairs
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join("&")
}

/// `yyyyMMddTHHmmssZ` as seconds since the Unix epoch.
fn parse_amz_date(text: &str) -> Option<i64> {
    let b = text.as_bytes();
    if b.len() != 16 || b[8] != b'T' || b[15] != b'Z' {
        return None;
    }
    let num = |r: std::ops::Range<usize>| -> Option<i64> {
        let s = text.get(r)?;
        s.bytes()
            .all(|c| c.is_ascii_digit())
            .then(|| s.parse().ok())?
    };
    let (y, mo, d) = (num(0..4)?, num(4..6)?, num(6..8)?);
    let (h, mi, s) = (num(9..11)?, num(11..13)?, num(13..15)?);
    if !(1..=12).contains(&mo) || !(1..=31).contains(&d) || h > 23 || mi > 59 || s > 60 {
        return None;
    }
    Some(crate::utc::days_from_civil(y, mo, d) * 86_400 + h * 3600 + mi * 60 + s)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY";

    fn request<'a>(
        headers: &'a [(String, String)],
        region: &'a str,
        service: &'a str,
    ) -> SignedRequest<'a> {
        SignedRequest {
            method: "POST",
            path: "/",
            query: "",
            headers,
            now_secs: parse_amz_date("20150830T123600Z").unwrap(),
            region,
            service,
        }
    }

    /// Headers of a Kinesis call (and `extra`) signed with [`SECRET`] over `body`, with `signed`
    /// the SignedHeaders list.
    fn signed_headers_with(
        body: &[u8],
        signed: &str,
        region: &str,
        service: &str,
        extra: &[(&str, &str)],
    ) -> Vec<(String, String)> {
        let mut headers: Vec<(String, String)> = [
            ("host", "kinesis.us-east-1.amazonaws.com"),
            ("x-amz-date", "20150830T123600Z"),
            ("x-amz-target", "Kinesis_20131202.DeleteStream"),
        ]
        .iter()
        .chain(extra)
        .map(|(n, v)| (n.to_string(), v.to_string()))
        .collect();
        let unsigned = SignedRequest {
            region,
            service,
            ..request(&headers, region, service)
        };
        let pending = PendingSignature {
            request: &unsigned,
            secret: SECRET,
            amz_date: "20150830T123600Z",
            date: "20150830",
            signed_headers: signed,
            signature: "",
        };
        let signature = pending.signature(&hex(&Sha256::digest(body))).unwrap();
        headers.push((
            "authorization".into(),
            format!(
                "AWS4-HMAC-SHA256 Credential=AKID/20150830/{region}/{service}/aws4_request, SignedHeaders={signed}, Signature={signature}"
            ),
        ));
        headers
    }

    fn signed_headers(
        body: &[u8],
        signed: &str,
        region: &str,
        service: &str,
    ) -> Vec<(String, String)> {
        signed_headers_with(body, signed, region, service, &[])
    }

    fn check(headers: &[(String, String)], body: &[u8]) -> std::result::Result<(), &'static str> {
        let credentials = Credentials::single("AKID", SECRET);
        let request = request(headers, "us-east-1", "kinesis");
        request
            .check_headers(&credentials)
            .and_then(|pending| pending.verify(body))
            .map_err(|e| e.kind)
    }

    /// The example of AWS's SigV4 documentation (the generic IAM ListUsers example).
    #[test]
    fn the_documented_example_signature_is_reproduced() {
        let headers = vec![
            (
                "content-type".to_string(),
                "application/x-www-form-urlencoded; charset=utf-8".to_string(),
            ),
            ("host".to_string(), "iam.amazonaws.com".to_string()),
            ("x-amz-date".to_string(), "20150830T123600Z".to_string()),
        ];
        let request = SignedRequest {
            method: "GET",
            query: "Action=ListUsers&Version=2010-05-08",
            ..request(&headers, "us-east-1", "iam")
        };
        let pending = PendingSignature {
            request: &request,
            secret: SECRET,
            amz_date: "20150830T123600Z",
            date: "20150830",
            signed_headers: "content-type;host;x-amz-date",
            signature: "",
        };
        assert_eq!(
            pending.signature(&hex(&Sha256::digest(b""))).unwrap(),
            "5d672d79c15b13162d9279b0855cfba6789a8edb4c82c400e06b5924a6f2b5d7"
        );
    }

    #[test]
    fn a_signed_request_is_accepted_only_with_its_own_body() {
        let body = br#"{"StreamName":"scratch"}"#;
        let headers = signed_headers(body, "host;x-amz-date;x-amz-target", "us-east-1", "kinesis");
        assert_eq!(check(&headers, body), Ok(()));
        assert_eq!(
            check(&headers, br#"{"StreamName":"prod"}"#),
            Err("InvalidSignatureException")
        );
        // Claiming the original body's hash for another body is caught by hashing the body.
        let mut replay = headers.clone();
        replay.push(("x-amz-content-sha256".into(), hex(&Sha256::digest(body))));
        assert_eq!(
            check(&replay, br#"{"StreamName":"prod"}"#),
            Err("IncompleteSignatureException"),
            "an unsigned x-amz-* header is refused"
        );
        let signed = "host;x-amz-content-sha256;x-amz-date;x-amz-target";
        let hash = hex(&Sha256::digest(body));
        let with_hash = signed_headers_with(
            body,
            signed,
            "us-east-1",
            "kinesis",
            &[("x-amz-content-sha256", &hash)],
        );
        assert_eq!(check(&with_hash, body), Ok(()));
        assert_eq!(
            check(&with_hash, br#"{"StreamName":"prod"}"#),
            Err("XAmzContentSHA256Mismatch")
        );
    }

    #[test]
    fn query_string_authentication_is_named_in_the_refusal() {
        let credentials = Credentials::single("AKID", SECRET);
        let body = b"{}";
        let headers = signed_headers(body, "host;x-amz-date;x-amz-target", "us-east-1", "kinesis");
        let query = "X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=AKID";
        let both = SignedRequest {
            query,
            ..request(&headers, "us-east-1", "kinesis")
        };
        let e = both.check_headers(&credentials).err().unwrap();
        assert_eq!(e.kind, "InvalidSignatureException");
        assert!(
            e.message.starts_with("Found both 'X-Amz-Algorithm'"),
            "{}",
            e.message
        );
        let no_header: Vec<(String, String)> = headers
            .iter()
            .filter(|(n, _)| n != "authorization")
            .cloned()
            .collect();
        let presigned = SignedRequest {
            query,
            ..request(&no_header, "us-east-1", "kinesis")
        };
        let e = presigned.check_headers(&credentials).err().unwrap();
        assert_eq!(e.kind, "MissingAuthenticationTokenException");
        assert!(e.message.contains("presigned"), "{}", e.message);
    }

    #[test]
    fn host_date_and_target_must_be_signed() {
        let body = b"{}";
        for signed in [
            "x-amz-date;x-amz-target",
            "host;x-amz-target",
            "host;x-amz-date",
        ] {
            let headers = signed_headers(body, signed, "us-east-1", "kinesis");
            assert_eq!(
                check(&headers, body),
                Err("IncompleteSignatureException"),
                "{signed}"
            );
        }
        let mut headers =
            signed_headers(body, "host;x-amz-date;x-amz-target", "us-east-1", "kinesis");
        headers.push(("x-amz-user-agent".into(), "aws-sdk-js/3".into()));
        assert_eq!(
            check(&headers, body),
            Ok(()),
            "x-amz-user-agent may be unsigned"
        );
    }

    #[test]
    fn the_scope_must_name_this_region_and_the_service_called() {
        let body = b"{}";
        let signed = "host;x-amz-date;x-amz-target";
        for (region, service) in [("eu-west-1", "kinesis"), ("us-east-1", "s3"), ("x", "y")] {
            let headers = signed_headers(body, signed, region, service);
            assert_eq!(
                check(&headers, body),
                Err("InvalidSignatureException"),
                "{region}/{service}"
            );
        }
    }

    #[test]
    fn amz_dates_parse_to_epoch_seconds() {
        assert_eq!(parse_amz_date("19700101T000000Z"), Some(0));
        assert_eq!(parse_amz_date("20231114T221320Z"), Some(1_700_000_000));
        for bad in [
            "",
            "20231114 221320Z",
            "20231314T000000Z",
            "2023111T2213200Z",
        ] {
            assert_eq!(parse_amz_date(bad), None, "{bad}");
        }
    }

    #[test]
    fn credentials_files_yield_every_profiles_key() {
        let c = Credentials::parse(
            "[default]\naws_access_key_id = AKID1\naws_secret_access_key = s1\n\n[other]\naws_secret_access_key=s2\naws_access_key_id=AKID2\n[partial]\naws_access_key_id = lonely\n",
        );
        assert_eq!(c.secrets.len(), 2);
        assert_eq!(c.secrets["AKID2"], "s2");
        assert!(!format!("{c:?}").contains("s1"), "secrets are not printed");
    }
}
