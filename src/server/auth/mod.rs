//! AWS Signature Version 4 checking (`shardlog serve --auth FILE`): each request's signature is
//! recomputed with the secret key of its access key id and compared; missing, unknown, stale
//! or wrong signatures are refused with the errors the SDKs expect.

use std::collections::BTreeMap;
use std::path::Path;

use sha2::{Digest, Sha256};

use super::error::ApiError;
use crate::error::{Error, Result};

mod claim;
mod encoding;

use claim::{check_time, Claim};
use encoding::{
    canonical_query, canonical_uri, constant_time_eq, hex, hmac, parse_amz_date, query_pairs,
};

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
/// with another value (another host, another operation). `x-amz-date` too when the date is a
/// header. Every other `x-amz-*` header sent must be signed too, but for [`UNSIGNED_OK`].
const MUST_SIGN: [&str; 2] = ["host", "x-amz-target"];
/// `x-amz-*` headers SDKs send unsigned, which change nothing the server does.
const UNSIGNED_OK: [&str; 1] = ["x-amz-user-agent"];

/// A request whose headers passed [`SignedRequest::check_headers`]: what checking the signature
/// over the body needs.
pub(crate) struct PendingSignature<'a> {
    request: &'a SignedRequest<'a>,
    secret: &'a str,
    /// The credential scope's date (`yyyyMMdd`).
    date: String,
    claim: Claim,
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

    /// Checks everything the headers (and the query string) alone decide: the key, the
    /// credential scope (date, region, service), the clock skew or the presigned expiry, and
    /// that every header that matters is signed. The signature itself is either in the
    /// `Authorization` header or, presigned, in `X-Amz-*` query parameters (never both).
    pub fn check_headers(
        &'a self,
        credentials: &'a Credentials,
    ) -> std::result::Result<PendingSignature<'a>, ApiError> {
        let query = query_pairs(self.query);
        let query_auth = query.iter().any(|(name, _)| name == "X-Amz-Algorithm");
        let claim = match (self.header("authorization"), query_auth) {
            (Some(_), true) => {
                return Err(forbidden(
                    "InvalidSignatureException",
                    "Found both 'X-Amz-Algorithm' as a query-string param and 'Authorization' as HTTP header.",
                ))
            }
            (None, false) => {
                return Err(forbidden(
                    "MissingAuthenticationTokenException",
                    "Missing Authentication Token",
                ))
            }
            (Some(authorization), false) => self.header_claim(authorization)?,
            (None, true) => Claim::from_query(query)?,
        };
        if claim.algorithm != "AWS4-HMAC-SHA256" {
            return Err(forbidden(
                "IncompleteSignatureException",
                format!(
                    "Unsupported AWS 'algorithm': '{}'; only AWS4-HMAC-SHA256 signatures are accepted",
                    claim.algorithm
                ),
            ));
        }
        let incomplete = || {
            forbidden(
                "IncompleteSignatureException",
                format!(
                    "Credential should be 'ACCESS_KEY_ID/yyyyMMdd/REGION/SERVICE/aws4_request', not '{}'",
                    claim.credential
                ),
            )
        };
        let (access_key_id, scope) = claim.credential.split_once('/').ok_or_else(incomplete)?;
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
        let amz_date = claim.amz_date.as_str();
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
        check_time(amz_date, request_secs, claim.expires_secs, self.now_secs)?;
        let signed: Vec<&str> = claim.signed_headers.split(';').collect();
        // A presigned request carries its date in the query (signed as part of it).
        let date_header = (!query_auth).then_some("x-amz-date");
        let must_sign = self
            .headers
            .iter()
            .map(|(n, _)| n.as_str())
            .filter(|n| n.starts_with("x-amz-") && !UNSIGNED_OK.contains(n))
            .chain(MUST_SIGN)
            .chain(date_header);
        for name in must_sign {
            if !signed.contains(&name) {
                return Err(forbidden(
                    "IncompleteSignatureException",
                    format!(
                        "the header {name:?} must be signed (SignedHeaders={})",
                        claim.signed_headers
                    ),
                ));
            }
        }
        Ok(PendingSignature {
            request: self,
            secret,
            date: date.to_string(),
            claim,
        })
    }

    /// The signature claimed by an `Authorization` header (AWS's wording when parts are missing).
    fn header_claim(&self, authorization: &str) -> std::result::Result<Claim, ApiError> {
        let (algorithm, fields) = authorization
            .trim()
            .split_once(' ')
            .unwrap_or((authorization.trim(), ""));
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
        let amz_date = self.header("x-amz-date");
        let mut missing = String::new();
        for (name, value) in [
            ("Credential", credential),
            ("Signature", signature),
            ("SignedHeaders", signed_headers),
        ] {
            if value.is_none_or(str::is_empty) {
                missing.push_str(&format!(
                    "Authorization header requires '{name}' parameter. "
                ));
            }
        }
        if amz_date.is_none() {
            missing.push_str("Authorization header requires existence of either a 'X-Amz-Date' or a 'Date' header. ");
        }
        match (credential, signed_headers, signature, amz_date) {
            (Some(credential), Some(signed_headers), Some(signature), Some(amz_date))
                if missing.is_empty() =>
            {
                Ok(Claim {
                    algorithm: algorithm.to_string(),
                    credential: credential.to_string(),
                    signed_headers: signed_headers.to_string(),
                    signature: signature.to_string(),
                    amz_date: amz_date.to_string(),
                    expires_secs: None,
                })
            }
            _ => Err(forbidden(
                "IncompleteSignatureException",
                format!("{missing}Authorization={authorization}"),
            )),
        }
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
        if !constant_time_eq(expected.as_bytes(), self.claim.signature.as_bytes()) {
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
        for name in self.claim.signed_headers.split(';') {
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
            self.claim.signed_headers,
        );
        let scope = format!(
            "{}/{}/{}/aws4_request",
            self.date, request.region, request.service
        );
        let string_to_sign = format!(
            "AWS4-HMAC-SHA256\n{}\n{scope}\n{}",
            self.claim.amz_date,
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

    /// What computing the signature of `request` with [`SECRET`] needs.
    fn unsigned_pending<'a>(
        request: &'a SignedRequest<'a>,
        signed_headers: &str,
    ) -> PendingSignature<'a> {
        PendingSignature {
            request,
            secret: SECRET,
            date: "20150830".into(),
            claim: Claim {
                algorithm: "AWS4-HMAC-SHA256".into(),
                credential: String::new(),
                signed_headers: signed_headers.into(),
                signature: String::new(),
                amz_date: "20150830T123600Z".into(),
                expires_secs: None,
            },
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
        let pending = unsigned_pending(&unsigned, signed);
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
        let pending = unsigned_pending(&request, "content-type;host;x-amz-date");
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

    /// The presigned example of AWS's S3 SigV4 documentation (a GET with `UNSIGNED-PAYLOAD`,
    /// S3's payload hash for presigned URLs): the canonical query leaves the signature out and
    /// re-encodes what the client escaped.
    #[test]
    fn the_documented_presigned_example_is_reproduced() {
        let headers = vec![(
            "host".to_string(),
            "examplebucket.s3.amazonaws.com".to_string(),
        )];
        let query = "X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=AKIAIOSFODNN7EXAMPLE%2F20130524%2Fus-east-1%2Fs3%2Faws4_request&X-Amz-Date=20130524T000000Z&X-Amz-Expires=86400&X-Amz-SignedHeaders=host&X-Amz-Signature=aeeed9bbccd4d02ee5c0109b86d86835f995330da4c265957d157751f604d404";
        let request = SignedRequest {
            method: "GET",
            path: "/test.txt",
            query,
            ..request(&headers, "us-east-1", "s3")
        };
        let claim = Claim::from_query(query_pairs(query)).unwrap();
        assert_eq!(
            claim.credential,
            "AKIAIOSFODNN7EXAMPLE/20130524/us-east-1/s3/aws4_request"
        );
        assert_eq!(claim.expires_secs, Some(86_400));
        let pending = PendingSignature {
            request: &request,
            secret: "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
            date: "20130524".into(),
            claim,
        };
        assert_eq!(
            pending.signature("UNSIGNED-PAYLOAD").unwrap(),
            pending.claim.signature
        );
    }

    /// A presigned request: the query parameters of `query` plus the signature over `body`.
    fn presigned(headers: &[(String, String)], query: &str, body: &[u8]) -> String {
        let unsigned = SignedRequest {
            query,
            ..request(headers, "us-east-1", "kinesis")
        };
        let pending = unsigned_pending(&unsigned, "host;x-amz-target");
        let signature = pending.signature(&hex(&Sha256::digest(body))).unwrap();
        format!("{query}&X-Amz-Signature={signature}")
    }

    fn check_presigned(query: &str, body: &[u8], now: &str) -> std::result::Result<(), ApiError> {
        let credentials = Credentials::single("AKID", SECRET);
        let headers = target_only();
        let request = SignedRequest {
            query,
            now_secs: parse_amz_date(now).unwrap(),
            ..request(&headers, "us-east-1", "kinesis")
        };
        request
            .check_headers(&credentials)
            .and_then(|pending| pending.verify(body))
    }

    fn target_only() -> Vec<(String, String)> {
        vec![
            ("host".into(), "kinesis.us-east-1.amazonaws.com".into()),
            (
                "x-amz-target".into(),
                "Kinesis_20131202.DeleteStream".into(),
            ),
        ]
    }

    const PRESIGN: &str = "X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=AKID%2F20150830%2Fus-east-1%2Fkinesis%2Faws4_request&X-Amz-Date=20150830T123600Z&X-Amz-Expires=3600&X-Amz-SignedHeaders=host%3Bx-amz-target";

    #[test]
    fn presigned_requests_are_checked_over_their_body_and_expiry() {
        let body = br#"{"StreamName":"scratch"}"#;
        let query = presigned(&target_only(), PRESIGN, body);
        assert!(check_presigned(&query, body, "20150830T123600Z").is_ok());
        // Valid past the header skew, up to X-Amz-Expires.
        assert!(check_presigned(&query, body, "20150830T133500Z").is_ok());
        let expired = check_presigned(&query, body, "20150830T133700Z").unwrap_err();
        assert_eq!(expired.kind, "InvalidSignatureException");
        assert!(expired.message.contains("expired"), "{}", expired.message);
        let early = check_presigned(&query, body, "20150830T121000Z").unwrap_err();
        assert!(early.message.contains("not yet"), "{}", early.message);
        let other_body = check_presigned(&query, br#"{"StreamName":"prod"}"#, "20150830T123600Z");
        assert_eq!(other_body.unwrap_err().kind, "InvalidSignatureException");
        // The expiry is signed: lengthening it breaks the signature.
        let longer = query.replace("X-Amz-Expires=3600", "X-Amz-Expires=7200");
        let e = check_presigned(&longer, body, "20150830T133700Z").unwrap_err();
        assert_eq!(e.kind, "InvalidSignatureException");
        assert!(e.message.contains("does not match"), "{}", e.message);
        // Escapes are the client's choice: `/` sent as is signs the same.
        let plain = query.replace("%2F", "/");
        assert!(check_presigned(&plain, body, "20150830T123600Z").is_ok());
        for bad in ["0", "604801", "soon"] {
            let e = check_presigned(
                &query.replace("X-Amz-Expires=3600", &format!("X-Amz-Expires={bad}")),
                body,
                "20150830T123600Z",
            )
            .unwrap_err();
            assert_eq!(e.kind, "IncompleteSignatureException", "{bad}");
        }
    }

    #[test]
    fn presigned_requests_must_sign_the_target() {
        let body = b"{}";
        let query = PRESIGN.replace("host%3Bx-amz-target", "host");
        let e = check_presigned(
            &presigned(&target_only(), &query, body),
            body,
            "20150830T123600Z",
        )
        .unwrap_err();
        assert_eq!(e.kind, "IncompleteSignatureException");
        assert!(e.message.contains("x-amz-target"), "{}", e.message);
    }

    #[test]
    fn query_and_header_authentication_are_refused_as_aws_words_it() {
        let credentials = Credentials::single("AKID", SECRET);
        let body = b"{}";
        let headers = signed_headers(body, "host;x-amz-date;x-amz-target", "us-east-1", "kinesis");
        let both = SignedRequest {
            query: "X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=AKID",
            ..request(&headers, "us-east-1", "kinesis")
        };
        let e = both.check_headers(&credentials).err().unwrap();
        assert_eq!(e.kind, "InvalidSignatureException");
        assert!(
            e.message.starts_with("Found both 'X-Amz-Algorithm'"),
            "{}",
            e.message
        );
        let e = check_presigned(
            "X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Date=20150830T123600Z",
            body,
            "20150830T123600Z",
        )
        .unwrap_err();
        assert_eq!(e.kind, "IncompleteSignatureException");
        assert_eq!(
            e.message,
            "AWS query-string parameters must include 'X-Amz-Credential'. AWS query-string parameters must include 'X-Amz-Signature'. AWS query-string parameters must include 'X-Amz-SignedHeaders'. Re-examine the query-string parameters."
        );
        let partial = vec![
            ("host".to_string(), "h".to_string()),
            (
                "authorization".to_string(),
                "AWS4-HMAC-SHA256 Credential=AKID/20150830/us-east-1/kinesis/aws4_request"
                    .to_string(),
            ),
        ];
        let e = request(&partial, "us-east-1", "kinesis")
            .check_headers(&credentials)
            .err()
            .unwrap();
        assert_eq!(
            e.message,
            "Authorization header requires 'Signature' parameter. Authorization header requires 'SignedHeaders' parameter. Authorization header requires existence of either a 'X-Amz-Date' or a 'Date' header. Authorization=AWS4-HMAC-SHA256 Credential=AKID/20150830/us-east-1/kinesis/aws4_request"
        );
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
