//! Kinesis Data Streams operations (`Kinesis_20131202.*`) over the store: request members in,
//! response members out, as `kinesis/2013-12-02` defines them. This file dispatches and holds
//! what every group of operations shares; the operations live by subject in `streams`, `data`
//! (records in and out), `resharding`, `settings` and `consumers`.

use std::sync::Arc;

use serde_json::{json, Value};

use super::context::Context;
use super::error::ApiError;
use super::lifecycle::State;
use super::protocol::{Input, Output};
use crate::stream::{check_stream_name, Stream};
use crate::StreamMode;

mod consumers;
mod data;
mod put_records;
mod resharding;
mod settings;
mod streams;

pub(crate) use put_records::put_records_from_json;

pub use data::get_records_json;

/// Largest DescribeStream / ListStreams page, as Kinesis.
const MAX_PAGE: i64 = 10_000;
/// Default page of DescribeStream and ListStreams.
const DEFAULT_PAGE: i64 = 100;

type Reply = Result<Value, ApiError>;

/// Every operation [`call`] answers (metrics label only these).
pub(crate) const OPERATIONS: [&str; 39] = [
    "GetRecords",
    "SubscribeToShard",
    "CreateStream",
    "DeleteStream",
    "DescribeStream",
    "DescribeStreamSummary",
    "ListStreams",
    "ListShards",
    "PutRecord",
    "PutRecords",
    "GetShardIterator",
    "SplitShard",
    "MergeShards",
    "UpdateShardCount",
    "UpdateStreamMode",
    "UpdateMaxRecordSize",
    "IncreaseStreamRetentionPeriod",
    "DecreaseStreamRetentionPeriod",
    "AddTagsToStream",
    "RemoveTagsFromStream",
    "ListTagsForStream",
    "DescribeLimits",
    "TagResource",
    "UntagResource",
    "ListTagsForResource",
    "StartStreamEncryption",
    "StopStreamEncryption",
    "EnableEnhancedMonitoring",
    "DisableEnhancedMonitoring",
    "PutResourcePolicy",
    "GetResourcePolicy",
    "DeleteResourcePolicy",
    "DescribeAccountSettings",
    "UpdateAccountSettings",
    "UpdateStreamWarmThroughput",
    "RegisterStreamConsumer",
    "DeregisterStreamConsumer",
    "DescribeStreamConsumer",
    "ListStreamConsumers",
];

/// Runs one Kinesis operation.
pub(crate) fn call(ctx: &Context, operation: &str, body: &Value) -> Result<Output, ApiError> {
    let input = Input::new(body)?;
    let kinesis = Kinesis { ctx };
    kinesis
        .run(operation, &input)
        .map_err(|e| kinesis.in_aws_words(e, &input))
}

impl Kinesis<'_> {
    /// [`in_aws_words`] with the stream the request names (by name, ARN or shard iterator).
    fn in_aws_words(&self, e: ApiError, input: &Input<'_>) -> ApiError {
        if e.not_found.is_none() {
            return e;
        }
        let stream = self.stream_name(input).ok().or_else(|| {
            let iterator = input.opt_str("ShardIterator").ok().flatten()?;
            Some(self.ctx.store.decode_iterator(iterator)?.stream)
        });
        in_aws_words(e, &self.ctx.options.account_id, stream.as_deref())
    }

    fn run(&self, operation: &str, input: &Input<'_>) -> Result<Output, ApiError> {
        self.settle_transient_states();
        self.check_transient_state(operation, input)?;
        let output = self.dispatch(operation, input)?;
        if let (Some(state), Ok(name)) = (changes_to(operation), self.stream_name(input)) {
            self.ctx.lifecycle.begin(&name, state);
        }
        Ok(output)
    }

    /// Deletes the streams whose DELETING time is over.
    fn settle_transient_states(&self) {
        for name in self.ctx.lifecycle.settle() {
            if let Err(e) = self.ctx.store.delete_stream(&name) {
                tracing::warn!(stream = %name, error = %e, "a stream DELETING could not be deleted");
            }
            self.ctx.metrics.forget_stream(&name);
        }
    }

    /// What a stream in a transient state lets a client do, as Kinesis does: describing and
    /// listing always; reads and writes while UPDATING (the stream is not found while CREATING or
    /// DELETING); no change until the stream is ACTIVE again.
    fn check_transient_state(&self, operation: &str, input: &Input<'_>) -> Result<(), ApiError> {
        if self.ctx.lifecycle.quiet() {
            return Ok(());
        }
        let Ok(name) = self.stream_name(input) else {
            return Ok(());
        };
        let Some(state) = self.ctx.lifecycle.state(&name) else {
            return Ok(());
        };
        let account = &self.ctx.options.account_id;
        match operation {
            "DescribeStream"
            | "DescribeStreamSummary"
            | "ListStreams"
            | "ListTagsForStream"
            | "ListTagsForResource"
            | "ListStreamConsumers"
            | "DescribeStreamConsumer"
            | "DescribeLimits"
            | "GetResourcePolicy" => Ok(()),
            "PutRecord" | "PutRecords" | "GetShardIterator" | "ListShards" => match state {
                State::Updating => Ok(()),
                _ => Err(ApiError::new(
                    400,
                    "ResourceNotFoundException",
                    format!("Stream {name} under account {account} not found."),
                )),
            },
            _ => Err(ApiError::new(
                400,
                "ResourceInUseException",
                format!(
                    "Stream {name} under account {account} not ACTIVE, instead in state {}.",
                    state.name()
                ),
            )),
        }
    }

    /// The status a stream reports: its transient state, if it is in one.
    fn status(&self, name: &str, stored: &str) -> String {
        self.ctx
            .lifecycle
            .state(name)
            .map_or_else(|| stored.to_string(), |s| s.name().to_string())
    }

    fn dispatch(&self, operation: &str, input: &Input<'_>) -> Result<Output, ApiError> {
        match operation {
            "GetRecords" => return self.get_records(input),
            "SubscribeToShard" => return self.subscribe_to_shard(input),
            _ => {}
        }
        let reply = match operation {
            "CreateStream" => self.create_stream(input),
            "DeleteStream" => self.delete_stream(input),
            "DescribeStream" => self.describe_stream(input),
            "DescribeStreamSummary" => self.describe_stream_summary(input),
            "ListStreams" => self.list_streams(input),
            "ListShards" => self.list_shards(input),
            "PutRecord" => self.put_record(input),
            "PutRecords" => self.put_records(input),
            "GetShardIterator" => self.get_shard_iterator(input),
            "SplitShard" => self.split_shard(input),
            "MergeShards" => self.merge_shards(input),
            "UpdateShardCount" => self.update_shard_count(input),
            "UpdateStreamMode" => self.update_stream_mode(input),
            "UpdateMaxRecordSize" => self.update_max_record_size(input),
            "IncreaseStreamRetentionPeriod" => self.change_retention(input, true),
            "DecreaseStreamRetentionPeriod" => self.change_retention(input, false),
            "AddTagsToStream" => self.add_tags(input),
            "RemoveTagsFromStream" => self.remove_tags(input),
            "ListTagsForStream" => self.list_tags(input),
            "DescribeLimits" => self.describe_limits(),
            "TagResource" => self.tag_resource(input),
            "UntagResource" => self.untag_resource(input),
            "ListTagsForResource" => self.list_tags_for_resource(input),
            "StartStreamEncryption" => self.stream_encryption(input, true),
            "StopStreamEncryption" => self.stream_encryption(input, false),
            "EnableEnhancedMonitoring" => self.enhanced_monitoring(input, true),
            "DisableEnhancedMonitoring" => self.enhanced_monitoring(input, false),
            "PutResourcePolicy" => self.put_resource_policy(input),
            "GetResourcePolicy" => self.get_resource_policy(input),
            "DeleteResourcePolicy" => self.delete_resource_policy(input),
            "DescribeAccountSettings" => self.describe_account_settings(),
            "UpdateAccountSettings" => self.update_account_settings(input),
            "UpdateStreamWarmThroughput" => self.update_warm_throughput(input),
            "RegisterStreamConsumer" => self.register_consumer(input),
            "DeregisterStreamConsumer" => self.deregister_consumer(input),
            "DescribeStreamConsumer" => self.describe_consumer(input),
            "ListStreamConsumers" => self.list_consumers(input),
            other => Err(ApiError::new(
                400,
                "UnknownOperationException",
                format!("shardlog does not implement the Kinesis operation {other:?} (yet)"),
            )),
        };
        reply.map(Output::from)
    }
}

/// The transient state an operation puts its stream in when it succeeds.
fn changes_to(operation: &str) -> Option<State> {
    match operation {
        "CreateStream" => Some(State::Creating),
        "SplitShard"
        | "MergeShards"
        | "UpdateShardCount"
        | "UpdateStreamMode"
        | "UpdateMaxRecordSize"
        | "IncreaseStreamRetentionPeriod"
        | "DecreaseStreamRetentionPeriod"
        | "StartStreamEncryption"
        | "StopStreamEncryption" => Some(State::Updating),
        // DeleteStream begins DELETING itself, before it would delete.
        _ => None,
    }
}

/// A store's "not found" as Kinesis words it: "Stream S under account N not found.", "Shard
/// shardId-… in stream S under account N does not exist" (`stream`: the one the request named).
pub(super) fn in_aws_words(e: ApiError, account: &str, stream: Option<&str>) -> ApiError {
    let message = match (&e.not_found, stream) {
        (Some(("stream", name)), _) => format!("Stream {name} under account {account} not found."),
        (Some(("shard", id)), Some(stream)) => {
            format!("Shard {id} in stream {stream} under account {account} does not exist")
        }
        _ => return e,
    };
    ApiError { message, ..e }
}

struct Kinesis<'a> {
    ctx: &'a Context,
}

impl Kinesis<'_> {
    fn arn(&self, name: &str) -> String {
        format!(
            "arn:aws:kinesis:{}:{}:stream/{name}",
            self.ctx.options.region, self.ctx.options.account_id
        )
    }

    /// The stream a request names by StreamName or StreamARN (both: they must agree).
    fn stream(&self, input: &Input<'_>) -> Result<Arc<Stream>, ApiError> {
        let name = self.stream_name(input)?;
        Ok(self.ctx.store.stream(&name)?)
    }

    fn stream_name(&self, input: &Input<'_>) -> Result<String, ApiError> {
        stream_name_given(input.opt_str("StreamName")?, input.opt_str("StreamARN")?)
    }

    /// ListShards with only a NextToken: the token names its stream.
    fn stream_of_list_token(&self, token: &str) -> Result<Arc<Stream>, ApiError> {
        let name = crate::stream::stream_of_next_token(token)
            .ok_or_else(|| ApiError::invalid("NextToken is not a ListShards token"))?;
        Ok(self.ctx.store.stream(&name)?)
    }

    fn describe_limits(&self) -> Reply {
        let streams: Vec<Arc<Stream>> = self
            .ctx
            .store
            .list_streams()
            .iter()
            .filter_map(|n| self.ctx.store.stream(n).ok())
            .collect();
        let open: usize = streams.iter().map(|s| s.describe().open_shard_count).sum();
        let on_demand = streams
            .iter()
            .filter(|s| s.describe().mode == StreamMode::OnDemand)
            .count();
        Ok(json!({
            "ShardLimit": self.ctx.store.options().max_open_shards_per_stream,
            "OpenShardCount": open,
            "OnDemandStreamCount": on_demand,
            "OnDemandStreamCountLimit": 50,
        }))
    }
}

/// An object without its null members (absent optional members are left out, not null).
/// The stream a request names by StreamName and/or StreamARN (which must agree).
fn stream_name_given(by_name: Option<&str>, arn: Option<&str>) -> Result<String, ApiError> {
    let by_arn = match arn {
        None => None,
        Some(arn) => Some(stream_name_of_arn(arn)?),
    };
    let name = match (by_name, by_arn) {
        (Some(a), Some(b)) if a != b => {
            return Err(ApiError::invalid(format!(
                "StreamName {a} and StreamARN (stream {b}) name different streams"
            )))
        }
        (Some(a), _) => a.to_string(),
        (None, Some(b)) => b.to_string(),
        (None, None) => {
            return Err(ApiError::invalid(
                "either StreamName or StreamARN must be given",
            ))
        }
    };
    check_stream_name(&name).map_err(|e| ApiError::validation(e.to_string()))?;
    Ok(name)
}

fn without_nulls(mut value: Value) -> Value {
    if let Value::Object(members) = &mut value {
        members.retain(|_, v| !v.is_null());
    }
    value
}

/// The stream name in a Kinesis stream ARN (`arn:aws:kinesis:REGION:ACCOUNT:stream/NAME`).
pub(crate) fn stream_name_of_arn(arn: &str) -> Result<&str, ApiError> {
    let parts: Vec<&str> = arn.splitn(6, ':').collect();
    match parts.as_slice() {
        ["arn", partition, "kinesis", _, account, resource]
            if partition.starts_with("aws")
                && account.len() == 12
                && account.bytes().all(|b| b.is_ascii_digit()) =>
        {
            resource
                .strip_prefix("stream/")
                .filter(|name| !name.is_empty() && !name.contains('/'))
                .ok_or_else(|| ApiError::invalid(format!("{arn:?} is not a stream ARN")))
        }
        _ => Err(ApiError::invalid(format!(
            "{arn:?} is not a Kinesis stream ARN"
        ))),
    }
}

fn page_limit(limit: Option<i64>) -> Result<usize, ApiError> {
    match limit.unwrap_or(DEFAULT_PAGE) {
        n if (1..=MAX_PAGE).contains(&n) => Ok(n as usize),
        n => Err(ApiError::invalid(format!(
            "Limit {n} is outside 1..={MAX_PAGE}"
        ))),
    }
}

/// A StreamMode as the wire names it.
fn parse_mode(text: &str) -> Result<StreamMode, ApiError> {
    match text {
        "PROVISIONED" => Ok(StreamMode::Provisioned),
        "ON_DEMAND" => Ok(StreamMode::OnDemand),
        other => Err(ApiError::validation(format!(
            "StreamMode {other:?} is not PROVISIONED or ON_DEMAND"
        ))),
    }
}

fn positive_u32(name: &str, n: i64) -> Result<u32, ApiError> {
    u32::try_from(n)
        .ok()
        .filter(|&n| n > 0)
        .ok_or_else(|| ApiError::validation(format!("{name} {n} must be a positive integer")))
}

fn kib_to_bytes(kib: i64) -> Result<usize, ApiError> {
    usize::try_from(kib)
        .ok()
        .and_then(|k| k.checked_mul(1024))
        .ok_or_else(|| ApiError::validation(format!("MaxRecordSizeInKiB {kib} is out of range")))
}

fn encode_token(last: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(last)
}

fn decode_token(token: &str) -> Result<String, ApiError> {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(token)
        .ok()
        .and_then(|b| String::from_utf8(b).ok())
        .ok_or_else(|| ApiError::invalid("NextToken is not a ListStreams token"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stream_arns_name_their_stream() {
        assert_eq!(
            stream_name_of_arn("arn:aws:kinesis:us-east-1:000000000000:stream/orders").unwrap(),
            "orders"
        );
        for bad in [
            "orders",
            "arn:aws:kinesis:us-east-1:000000000000:stream/",
            "arn:aws:sqs:us-east-1:000000000000:stream/orders",
            "arn:aws:kinesis:us-east-1:0:stream/orders",
            "arn:aws:kinesis:us-east-1:000000000000:table/orders",
        ] {
            assert!(stream_name_of_arn(bad).is_err(), "{bad}");
        }
    }
}
