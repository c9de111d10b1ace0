//! One HTTP request, from routing to response: the API call (protocol and codec chosen by the
//! request's headers, body read within the limits, the operation run, metrics and request id),
//! health and metrics endpoints, and the responses' shapes.

use std::convert::Infallible;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use serde_json::Value;

use super::context::Context;
use super::error::ApiError;
use super::protocol::{parse_target, Api, Output};
use super::{auth, cbor, firehose, groups, kinesis, subscribe, Role};

pub(super) type HttpResponse = Response<BoxBody<Bytes, Infallible>>;

pub(super) async fn handle(ctx: Arc<Context>, req: Request<Incoming>, role: Role) -> HttpResponse {
    let request_id = request_id(&ctx);
    let metrics_here = match role {
        Role::Metrics => true,
        Role::Api => ctx.options.metrics_listen.is_none(),
    };
    // Browsers (the AWS SDK for JavaScript in a page) send an Origin and a preflight first.
    let origin = req.headers().contains_key(hyper::header::ORIGIN);
    if origin && req.method() == Method::OPTIONS && role == Role::Api {
        return with_request_id(preflight(&req), &request_id);
    }
    let response = match (req.method(), req.uri().path(), role) {
        (&Method::GET, "/health", _) => text(StatusCode::OK, "ok\n"),
        (&Method::GET, "/metrics", _)
            if metrics_here && (role == Role::Metrics || ctx.options.auth.is_none()) =>
        {
            let mut body = ctx.metrics.render();
            if ctx.store.is_tiered() {
                body.push_str(&super::metrics::render_tier(&ctx.store.tier_status()));
            }
            text(StatusCode::OK, &body)
        }
        (&Method::GET, "/metrics", Role::Api) => error_response(&ApiError::new(
            403,
            "AccessDeniedException",
            if metrics_here {
                "with --auth, /metrics is served only on its own address (--metrics-listen)"
            } else {
                "/metrics is served on the --metrics-listen address"
            },
        )),
        // AWS does not look at the path.
        (&Method::POST, _, Role::Api) => api_call(&ctx, req).await,
        (_, _, Role::Metrics) => error_response(&ApiError::new(
            404,
            "UnknownOperationException",
            "this address serves only GET /metrics and /health",
        )),
        _ => access_denied(),
    };
    let mut response = with_request_id(response, &request_id);
    if origin {
        let headers = response.headers_mut();
        headers.insert(
            hyper::header::ACCESS_CONTROL_ALLOW_ORIGIN,
            hyper::header::HeaderValue::from_static("*"),
        );
        headers.insert(
            hyper::header::ACCESS_CONTROL_EXPOSE_HEADERS,
            hyper::header::HeaderValue::from_static(
                "x-amzn-RequestId,x-amzn-ErrorType,x-amz-request-id,x-amz-id-2,x-amzn-ErrorMessage,Date",
            ),
        );
    }
    response
}

/// The answer to a CORS preflight, as AWS gives it: any origin, the headers and method asked
/// for, cached for two days.
fn preflight(req: &Request<Incoming>) -> HttpResponse {
    let mut response = Response::builder().status(StatusCode::OK);
    for (asked, allowed) in [
        (
            hyper::header::ACCESS_CONTROL_REQUEST_HEADERS,
            hyper::header::ACCESS_CONTROL_ALLOW_HEADERS,
        ),
        (
            hyper::header::ACCESS_CONTROL_REQUEST_METHOD,
            hyper::header::ACCESS_CONTROL_ALLOW_METHODS,
        ),
    ] {
        if let Some(value) = req.headers().get(asked) {
            response = response.header(allowed, value);
        }
    }
    response
        .header(hyper::header::ACCESS_CONTROL_ALLOW_ORIGIN, "*")
        .header(hyper::header::ACCESS_CONTROL_MAX_AGE, "172800")
        .body(Full::new(Bytes::new()).boxed())
        .unwrap_or_else(|_| Response::new(Full::new(Bytes::new()).boxed()))
}

/// What AWS answers a request that is not a POST (or names no operation and has no content type
/// it serves): 403, in XML.
fn access_denied() -> HttpResponse {
    xml(
        StatusCode::FORBIDDEN,
        "<AccessDeniedException>\n  <Message>Unable to determine service/operation name to be authorized</Message>\n</AccessDeniedException>\n",
    )
}

fn xml(status: StatusCode, body: &'static str) -> HttpResponse {
    let mut response = Response::new(Full::new(Bytes::from_static(body.as_bytes())).boxed());
    *response.status_mut() = status;
    response
}

pub(super) async fn api_call(ctx: &Arc<Context>, req: Request<Incoming>) -> HttpResponse {
    let target = req
        .headers()
        .get("x-amz-target")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let content_type = req
        .headers()
        .get(hyper::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .map(|v| v.trim().to_ascii_lowercase())
        .unwrap_or_default();
    let codec = match content_type.as_str() {
        "application/x-amz-json-1.1" => Codec::Json,
        "application/x-amz-cbor-1.1" => Codec::Cbor,
        // JSON 1.0: AWS answers it, with 200, in its own envelope and never runs the operation.
        "application/json" => return json_1_0(ctx, req).await,
        // Neither: 404 when the target has both parts, else 403, both in XML.
        _ => {
            let named = target
                .as_deref()
                .and_then(|t| t.split_once('.'))
                .is_some_and(|(service, op)| !service.is_empty() && !op.is_empty());
            return if named {
                xml(StatusCode::NOT_FOUND, "<UnknownOperationException/>\n")
            } else {
                access_denied()
            };
        }
    };
    let Some((api, operation)) = target.as_deref().and_then(parse_target) else {
        return codec.error(&ApiError::new(
            400,
            "UnknownOperationException",
            format!(
                "X-Amz-Target {:?} names no Kinesis_20131202, Firehose_20150804 or ShardlogConsumerGroups_20261126 operation",
                target.unwrap_or_default()
            ),
        ));
    };
    let operation = operation.to_string();
    let started = Instant::now();
    let result = read_and_run(ctx, api, &operation, codec, req).await;
    ctx.metrics.observe(
        metric_label(api, &operation),
        result.is_err(),
        started.elapsed(),
    );
    match result {
        // Operations the model gives no output answer an empty body, as AWS does.
        Ok(Output::Value(_)) if !super::model::has_output(api, &operation) => {
            body_response(StatusCode::OK, Vec::new(), codec.content_type())
        }
        Ok(Output::Value(value)) => codec.response(StatusCode::OK, &value),
        Ok(Output::Encoded(body)) => match codec {
            Codec::Json => body_response(StatusCode::OK, body, Codec::Json.content_type()),
            Codec::Cbor => match serde_json::from_slice::<Value>(&body) {
                Ok(value) => codec.response(StatusCode::OK, &value),
                Err(e) => codec.error(&ApiError::new(
                    500,
                    "InternalFailureException",
                    e.to_string(),
                )),
            },
        },
        Ok(Output::Subscription(mut subscription)) => {
            subscription.cbor = codec == Codec::Cbor;
            match subscribe::start(ctx, *subscription) {
                Ok(body) => Response::builder()
                    .status(StatusCode::OK)
                    .header(
                        hyper::header::CONTENT_TYPE,
                        "application/vnd.amazon.eventstream",
                    )
                    .body(body.boxed())
                    .unwrap_or_else(|_| Response::new(Full::new(Bytes::new()).boxed())),
                Err(e) => codec.error(&e),
            }
        }
        Err(e) => {
            // A 503 is a limit doing its job (back-pressure, shutdown): not worth an error line
            // per request, which a flood of clients would turn into a flood of logs.
            if e.status >= 500 && e.status != 503 {
                tracing::error!(%operation, error = %e.message, "request failed");
            } else {
                tracing::debug!(%operation, kind = e.kind, error = %e.message, "request refused");
            }
            codec.error(&e)
        }
    }
}

/// The operation's name as a metrics label: one of the operations the API answers, or
/// `unknown`, so that clients cannot grow the label set (and `/metrics`) without bound.
pub(super) fn metric_label(api: Api, operation: &str) -> &'static str {
    let known: &[&'static str] = match api {
        Api::Kinesis => &kinesis::OPERATIONS,
        Api::Firehose => &firehose::OPERATIONS,
        Api::ConsumerGroups => &groups::OPERATIONS,
    };
    known
        .iter()
        .find(|&&k| k == operation)
        .copied()
        .unwrap_or("unknown")
}

/// The protocol of a request, which its answer uses too.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Codec {
    /// `application/x-amz-json-1.1` (and plain JSON).
    Json,
    /// `application/x-amz-cbor-1.1`.
    Cbor,
}

impl Codec {
    fn content_type(self) -> &'static str {
        match self {
            Codec::Json => "application/x-amz-json-1.1",
            Codec::Cbor => cbor::CONTENT_TYPE,
        }
    }

    fn response(self, status: StatusCode, value: &Value) -> HttpResponse {
        let body = match self {
            Codec::Json => serde_json::to_vec(value).unwrap_or_default(),
            Codec::Cbor => cbor::encode(value),
        };
        body_response(status, body, self.content_type())
    }

    fn error(self, e: &ApiError) -> HttpResponse {
        let status = StatusCode::from_u16(e.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let mut response = self.response(status, &e.body());
        if let Ok(kind) = hyper::header::HeaderValue::from_str(e.kind) {
            response.headers_mut().insert("x-amzn-errortype", kind);
        }
        response
    }
}

/// Reads a request body of at most `limit` bytes (`expected` reserved up front), within the
/// body read timeout, and gives up if the server stops meanwhile.
pub(super) async fn read_body(
    ctx: &Context,
    body: Incoming,
    expected: usize,
    limit: usize,
) -> std::result::Result<Vec<u8>, ApiError> {
    let mut stopping = ctx.stopping.clone();
    let collect = async {
        let mut body = Limited::new(body, limit);
        let mut bytes = Vec::with_capacity(expected.min(limit));
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|e| {
                if e.is::<http_body_util::LengthLimitError>() {
                    ApiError::new(
                        413,
                        "SerializationException",
                        format!("the request body is over {limit} bytes"),
                    )
                } else {
                    ApiError::serialization(format!("cannot read the request body: {e}"))
                }
            })?;
            if let Some(data) = frame.data_ref() {
                bytes.extend_from_slice(data);
            }
        }
        Ok(bytes)
    };
    let timeout = ctx.options.limits.body_read_timeout;
    tokio::select! {
        read = tokio::time::timeout(timeout, collect) => read.unwrap_or_else(|_| {
            Err(ApiError::new(
                408,
                "RequestTimeoutException",
                format!("the request body did not arrive within {timeout:?}"),
            ))
        }),
        _ = stopping.wait_for(|&stop| stop) => Err(ApiError::new(
            503,
            "ServiceUnavailableException",
            "the server is stopping",
        )),
    }
}

pub(super) async fn read_and_run(
    ctx: &Arc<Context>,
    api: Api,
    operation: &str,
    codec: Codec,
    req: Request<Incoming>,
) -> std::result::Result<Output, ApiError> {
    super::replica::check_writable(ctx.options.replica_of.as_deref(), api, operation)?;
    let limit = ctx.options.max_body_bytes;
    let method = req.method().as_str().to_string();
    let path = req.uri().path().to_string();
    let query = req.uri().query().unwrap_or("").to_string();
    let mut headers: Vec<(String, String)> = req
        .headers()
        .iter()
        .filter_map(|(n, v)| Some((n.as_str().to_string(), v.to_str().ok()?.to_string())))
        .collect();
    if !headers.iter().any(|(n, _)| n == "host") {
        // HTTP/2 carries the host in :authority.
        if let Some(authority) = req.uri().authority() {
            headers.push(("host".into(), authority.to_string()));
        }
    }
    let now_secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    let signed = auth::SignedRequest {
        method: &method,
        path: &path,
        query: &query,
        headers: &headers,
        now_secs,
        region: &ctx.options.region,
        service: api.signing_name(),
    };
    // The headers are checked before the body is read: an unsigned or wrongly signed request
    // is refused without its body.
    let pending = match &ctx.options.auth {
        Some(credentials) => Some(signed.check_headers(credentials)?),
        None => None,
    };
    let declared = req
        .headers()
        .get(hyper::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let too_large = || {
        ApiError::new(
            413,
            "SerializationException",
            format!("the request body is over {limit} bytes"),
        )
    };
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(too_large());
    }
    // Room in the server's budget first: past it, back-pressure and then a retryable 503.
    let expected = declared.map_or(limit, |n| n as usize);
    let _held = ctx.body_budget.reserve(expected).await?;
    let body = read_body(ctx, req.into_body(), expected, limit).await?;
    if let Some(pending) = pending {
        pending.verify(&body)?;
    }
    let ctx = Arc::clone(ctx);
    let operation = operation.to_string();
    tokio::task::spawn_blocking(move || {
        // The hot path: PutRecords read straight from the bytes when they are in the shape
        // SDKs send (anything else goes the generic way below, with its exact errors).
        if api == Api::Kinesis && operation == "PutRecords" && codec == Codec::Json {
            if let Some(output) = kinesis::put_records_from_json(&ctx, &body) {
                return output;
            }
        }
        if body.is_empty() {
            // AWS: an empty body is not a request (SDKs send `{}` for an empty input).
            return Err(ApiError::serialization("the request body is empty"));
        }
        let value: Value = if codec == Codec::Cbor {
            cbor::decode(&body)?
        } else {
            serde_json::from_slice(&body)
                .map_err(|e| ApiError::serialization(format!("the body is not valid JSON: {e}")))?
        };
        // The model's types and constraints first, all of them, as AWS checks a request.
        super::model::validate(api, &operation, &value)?;
        match api {
            Api::Kinesis => kinesis::call(&ctx, &operation, &value),
            Api::Firehose => firehose::call(&ctx, &operation, &value),
            Api::ConsumerGroups => groups::call(&ctx, &operation, &value),
        }
    })
    .await
    .unwrap_or_else(|e| {
        Err(ApiError::new(
            500,
            "InternalFailureException",
            format!("the operation failed unexpectedly: {e}"),
        ))
    })
}

/// A request in `application/json` (AWS JSON 1.0 framing): AWS answers 200 with its JSON 1.0
/// envelope and never runs the operation: a `SerializationException` for a body that is not a
/// JSON object, an `UnknownOperationException` otherwise.
async fn json_1_0(ctx: &Arc<Context>, req: Request<Incoming>) -> HttpResponse {
    let limit = ctx.options.max_body_bytes;
    let declared = req
        .headers()
        .get(hyper::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok())
        .map_or(limit, |n| n.min(limit));
    // Within the server's body budget, like every other body.
    let read = async {
        let _held = ctx.body_budget.reserve(declared).await?;
        read_body(ctx, req.into_body(), declared, limit).await
    };
    let body = match read.await {
        Ok(body) => body,
        Err(e) => return error_response(&e),
    };
    let parsed = serde_json::from_slice::<Value>(&body).is_ok_and(|v| v.is_object());
    let output = if parsed {
        serde_json::json!({
            "Output": {"__type": "com.amazon.coral.service#UnknownOperationException", "message": null},
            "Version": "1.0",
        })
    } else {
        serde_json::json!({
            "Output": {"__type": "com.amazon.coral.service#SerializationException", "Message": null},
            "Version": "1.0",
        })
    };
    body_response(
        StatusCode::OK,
        serde_json::to_vec(&output).unwrap_or_default(),
        "application/json",
    )
}

/// A request id in the UUID format the SDKs log.
pub(super) fn request_id(ctx: &Context) -> String {
    use md5::{Digest, Md5};
    let n = ctx.requests.fetch_add(1, Ordering::Relaxed);
    let mut hasher = Md5::new();
    hasher.update(n.to_le_bytes());
    hasher.update(ctx.started.elapsed().as_nanos().to_le_bytes());
    hasher.update(std::process::id().to_le_bytes());
    let h = hasher.finalize();
    let hex: String = h.iter().map(|b| format!("{b:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..32]
    )
}

pub(super) fn with_request_id(mut response: HttpResponse, id: &str) -> HttpResponse {
    if let Ok(value) = hyper::header::HeaderValue::from_str(id) {
        response
            .headers_mut()
            .insert("x-amzn-requestid", value.clone());
        response.headers_mut().insert("x-amz-id-2", value);
    }
    response
}

pub(super) fn body_response(status: StatusCode, body: Vec<u8>, content_type: &str) -> HttpResponse {
    Response::builder()
        .status(status)
        .header(hyper::header::CONTENT_TYPE, content_type)
        .body(Full::new(Bytes::from(body)).boxed())
        .unwrap_or_else(|_| Response::new(Full::new(Bytes::new()).boxed()))
}

pub(super) fn error_response(e: &ApiError) -> HttpResponse {
    Codec::Json.error(e)
}

pub(super) fn text(status: StatusCode, body: &str) -> HttpResponse {
    Response::builder()
        .status(status)
        .header(hyper::header::CONTENT_TYPE, "text/plain; version=0.0.4")
        .body(Full::new(Bytes::from(body.to_string())).boxed())
        .unwrap_or_else(|_| Response::new(Full::new(Bytes::new()).boxed()))
}
