//! SubscribeToShard (enhanced fan-out): records pushed to a registered consumer as they are
//! appended, in `application/vnd.amazon.eventstream` messages, for up to 5 minutes per call.
//!
//! Message framing (AWS event stream): `total length u32 | headers length u32 | CRC32 of those 8
//! bytes | headers | payload | CRC32 of everything before`, big-endian; a header is `name length
//! u8 | name | type u8 (7 = string) | value length u16 | value`. The first message is the
//! `initial-response` event (`{}`); then `SubscribeToShardEvent`s with `Records`,
//! `ContinuationSequenceNumber`, `MillisBehindLatest` and, at a closed shard's end, `ChildShards`;
//! an error ends the stream with an `exception` message.

use std::convert::Infallible;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context as TaskContext, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use hyper::body::{Body, Frame};
use serde_json::{json, Value};

use super::context::Context;
use super::error::ApiError;

/// A subscription the operation accepted: what the pump reads.
pub(crate) struct Subscription {
    pub consumer_arn: String,
    pub stream: String,
    pub shard_id: String,
    /// The library's subscription: reads, budget, continuation.
    pub reader: crate::consumer::ShardSubscription,
    /// Event payloads in CBOR (the request was CBOR) instead of JSON.
    pub cbor: bool,
}

/// An event is sent at least this often, records or not (a heartbeat with MillisBehindLatest).
const HEARTBEAT: Duration = Duration::from_secs(1);

/// One event stream message.
pub(crate) fn message(headers: &[(&str, &str)], payload: &[u8]) -> Bytes {
    let mut encoded_headers = Vec::new();
    for (name, value) in headers {
        encoded_headers.push(name.len() as u8);
        encoded_headers.extend_from_slice(name.as_bytes());
        encoded_headers.push(7);
        encoded_headers.extend_from_slice(&(value.len() as u16).to_be_bytes());
        encoded_headers.extend_from_slice(value.as_bytes());
    }
    let total = 12 + encoded_headers.len() + payload.len() + 4;
    let mut out = Vec::with_capacity(total);
    out.extend_from_slice(&(total as u32).to_be_bytes());
    out.extend_from_slice(&(encoded_headers.len() as u32).to_be_bytes());
    let prelude_crc = crc32fast::hash(&out);
    out.extend_from_slice(&prelude_crc.to_be_bytes());
    out.extend_from_slice(&encoded_headers);
    out.extend_from_slice(payload);
    let crc = crc32fast::hash(&out);
    out.extend_from_slice(&crc.to_be_bytes());
    Bytes::from(out)
}

fn event(event_type: &str, payload: &Value, cbor: bool) -> Bytes {
    let (content_type, body) = if cbor {
        (super::cbor::CONTENT_TYPE, super::cbor::encode(payload))
    } else {
        (
            "application/json",
            serde_json::to_vec(payload).unwrap_or_default(),
        )
    };
    message(
        &[
            (":event-type", event_type),
            (":content-type", content_type),
            (":message-type", "event"),
        ],
        &body,
    )
}

fn exception(e: &ApiError) -> Bytes {
    message(
        &[
            (":exception-type", e.kind),
            (":content-type", "application/json"),
            (":message-type", "exception"),
        ],
        &serde_json::to_vec(&json!({ "message": e.message })).unwrap_or_default(),
    )
}

/// A response body fed by a channel.
pub(crate) struct ChannelBody {
    receiver: tokio::sync::mpsc::Receiver<Bytes>,
}

impl Body for ChannelBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        self.receiver
            .poll_recv(cx)
            .map(|chunk| chunk.map(|bytes| Ok(Frame::data(bytes))))
    }
}

/// Starts pushing events for `subscription`; the body ends after the context's subscription
/// lifetime, at a closed shard's end, on an error, or when the client goes away.
pub(crate) fn start(
    ctx: &Arc<Context>,
    subscription: Subscription,
) -> Result<ChannelBody, ApiError> {
    let key = (
        subscription.consumer_arn.clone(),
        subscription.shard_id.clone(),
    );
    ctx.subscriptions
        .admit(&key, ctx.options.limits.max_subscriptions)?;
    let (sender, receiver) = tokio::sync::mpsc::channel(4);
    let ctx = Arc::clone(ctx);
    tokio::spawn(async move {
        pump(&ctx, subscription, sender).await;
        ctx.subscriptions.release(&key);
    });
    Ok(ChannelBody { receiver })
}

async fn pump(
    ctx: &Arc<Context>,
    subscription: Subscription,
    sender: tokio::sync::mpsc::Sender<Bytes>,
) {
    if sender
        .send(event("initial-response", &json!({}), subscription.cbor))
        .await
        .is_err()
    {
        return;
    }
    let deadline = Instant::now() + ctx.options.subscription_lifetime;
    let cbor = subscription.cbor;
    let mut reader = subscription.reader;
    // Woken by every change of the stream: the pump waits for one without holding a thread
    // (reads are short blocking calls; the wait is an await).
    let changed = Arc::new(tokio::sync::Notify::new());
    let listener: Arc<crate::stream::ChangeListener> = {
        let changed = Arc::clone(&changed);
        Arc::new(move || changed.notify_one())
    };
    if let Ok(stream) = ctx.store.stream(&subscription.stream) {
        stream.on_change(&listener);
    }
    let mut last_sent = Instant::now();
    while Instant::now() < deadline {
        let turn = ctx.subscriptions.read_turn().await;
        let read = tokio::task::spawn_blocking(move || {
            let next = reader.next_event(Duration::ZERO);
            (reader, next)
        })
        .await;
        drop(turn);
        let event_or_end = match read {
            Ok((back, Ok(next))) => {
                reader = back;
                next
            }
            Ok((_, Err(e))) => {
                let _ = sender.send(exception(&ApiError::from(e))).await;
                return;
            }
            Err(e) => {
                let _ = sender
                    .send(exception(&ApiError::new(
                        500,
                        "InternalFailureException",
                        e.to_string(),
                    )))
                    .await;
                return;
            }
        };
        // A closed shard delivered to its end: the event before named its children.
        let Some(e) = event_or_end else { break };
        let has_news = !e.records.is_empty() || !e.child_shards.is_empty();
        if has_news || last_sent.elapsed() >= HEARTBEAT {
            ctx.metrics.records_out(
                &subscription.stream,
                e.records.len(),
                e.records.iter().map(|r| r.data.len() as u64).sum(),
                e.millis_behind_latest,
            );
            if sender
                .send(event("SubscribeToShardEvent", &event_payload(&e), cbor))
                .await
                .is_err()
            {
                return; // The client went away.
            }
            last_sent = Instant::now();
            if has_news && !reader.throttled() {
                continue; // More may be waiting: read again at once.
            }
        }
        // Caught up (or out of budget): wait for a change, the next heartbeat, or the budget.
        let mut wait = HEARTBEAT
            .saturating_sub(last_sent.elapsed())
            .min(deadline.saturating_duration_since(Instant::now()));
        if reader.throttled() {
            wait = wait.min(reader.poll());
        }
        tokio::select! {
            _ = changed.notified() => {}
            _ = tokio::time::sleep(wait) => {}
            _ = sender.closed() => return,
        }
    }
}

/// The JSON of a SubscribeToShardEvent.
fn event_payload(e: &crate::consumer::SubscriptionEvent) -> Value {
    let data = super::records::RecordOutput::base64_data(&e.records);
    let records: Vec<Value> = e
        .records
        .iter()
        .zip(&data)
        .map(|(r, d)| {
            serde_json::to_value(super::records::RecordOutput::new(r, d)).unwrap_or(Value::Null)
        })
        .collect();
    let mut payload = json!({
        "Records": records,
        "ContinuationSequenceNumber": e.continuation_sequence_number,
        "MillisBehindLatest": e.millis_behind_latest,
    });
    if !e.child_shards.is_empty() {
        payload["ChildShards"] = super::records::child_shards_json(&e.child_shards).into();
    }
    payload
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The example message of the AWS event stream specification's test suite
    /// ("positive/all_headers" has more types; this one has a payload and no headers).
    #[test]
    fn messages_have_a_checked_prelude_and_trailer() {
        let m = message(&[], b"{'foo':'bar'}");
        assert_eq!(
            &m[..],
            &[
                0x00, 0x00, 0x00, 0x1D, 0x00, 0x00, 0x00, 0x00, 0xfd, 0x52, 0x8c, 0x5a, 0x7b, 0x27,
                0x66, 0x6f, 0x6f, 0x27, 0x3a, 0x27, 0x62, 0x61, 0x72, 0x27, 0x7d, 0xc3, 0x65, 0x39,
                0x36
            ][..]
        );
        let with_header = message(&[(":event-type", "x")], b"");
        assert_eq!(with_header.len(), 12 + 1 + 11 + 1 + 2 + 1 + 4);
    }
}
