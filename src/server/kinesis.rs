//! Kinesis Data Streams operations (`Kinesis_20131202.*`) over the store: request members in,
//! response members out, as `kinesis/2013-12-02` defines them.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde_json::{json, Value};

use super::context::Context;
use super::error::ApiError;
use super::protocol::{lower_first, tag_page, timestamp, Input, Output};
use super::records::{child_shards_json, hash_range_json};
// PutRecords' limits are the stream's (Kinesis: 500 records, 10 MiB since records may be 10 MiB).
use crate::stream::{
    check_stream_name, IteratorStart, ListShards, PutFailureReason, PutRecord, ShardDescription,
    ShardFilter, Stream, MAX_PUT_RECORDS, MAX_PUT_RECORDS_BYTES,
};
use crate::{ConsumerEntry, StreamConfig, StreamMode, StreamModeConfig};

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
    match operation {
        "GetRecords" => return kinesis.get_records(&input),
        "SubscribeToShard" => return kinesis.subscribe_to_shard(&input),
        _ => {}
    }
    let reply = match operation {
        "CreateStream" => kinesis.create_stream(&input),
        "DeleteStream" => kinesis.delete_stream(&input),
        "DescribeStream" => kinesis.describe_stream(&input),
        "DescribeStreamSummary" => kinesis.describe_stream_summary(&input),
        "ListStreams" => kinesis.list_streams(&input),
        "ListShards" => kinesis.list_shards(&input),
        "PutRecord" => kinesis.put_record(&input),
        "PutRecords" => kinesis.put_records(&input),
        "GetShardIterator" => kinesis.get_shard_iterator(&input),
        "SplitShard" => kinesis.split_shard(&input),
        "MergeShards" => kinesis.merge_shards(&input),
        "UpdateShardCount" => kinesis.update_shard_count(&input),
        "UpdateStreamMode" => kinesis.update_stream_mode(&input),
        "UpdateMaxRecordSize" => kinesis.update_max_record_size(&input),
        "IncreaseStreamRetentionPeriod" => kinesis.change_retention(&input, true),
        "DecreaseStreamRetentionPeriod" => kinesis.change_retention(&input, false),
        "AddTagsToStream" => kinesis.add_tags(&input),
        "RemoveTagsFromStream" => kinesis.remove_tags(&input),
        "ListTagsForStream" => kinesis.list_tags(&input),
        "DescribeLimits" => kinesis.describe_limits(),
        "TagResource" => kinesis.tag_resource(&input),
        "UntagResource" => kinesis.untag_resource(&input),
        "ListTagsForResource" => kinesis.list_tags_for_resource(&input),
        "StartStreamEncryption" => kinesis.stream_encryption(&input, true),
        "StopStreamEncryption" => kinesis.stream_encryption(&input, false),
        "EnableEnhancedMonitoring" => kinesis.enhanced_monitoring(&input, true),
        "DisableEnhancedMonitoring" => kinesis.enhanced_monitoring(&input, false),
        "PutResourcePolicy" => kinesis.put_resource_policy(&input),
        "GetResourcePolicy" => kinesis.get_resource_policy(&input),
        "DeleteResourcePolicy" => kinesis.delete_resource_policy(&input),
        "DescribeAccountSettings" => kinesis.describe_account_settings(),
        "UpdateAccountSettings" => kinesis.update_account_settings(&input),
        "UpdateStreamWarmThroughput" => kinesis.update_warm_throughput(&input),
        "RegisterStreamConsumer" => kinesis.register_consumer(&input),
        "DeregisterStreamConsumer" => kinesis.deregister_consumer(&input),
        "DescribeStreamConsumer" => kinesis.describe_consumer(&input),
        "ListStreamConsumers" => kinesis.list_consumers(&input),
        other => Err(ApiError::new(
            400,
            "UnknownOperationException",
            format!("shardlog does not implement the Kinesis operation {other:?} (yet)"),
        )),
    };
    reply.map(Output::from)
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
        let by_name = input.opt_str("StreamName")?;
        let by_arn = match input.opt_str("StreamARN")? {
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

    fn create_stream(&self, input: &Input<'_>) -> Reply {
        let name = input.str("StreamName")?;
        check_stream_name(name).map_err(|e| ApiError::validation(e.to_string()))?;
        let mode = match input.opt_object("StreamModeDetails")? {
            Some(details) => parse_mode(details.str("StreamMode")?)?,
            None => StreamMode::Provisioned,
        };
        let shard_count = input.opt_i64("ShardCount")?;
        let mode = match (mode, shard_count) {
            (StreamMode::OnDemand, None) => StreamModeConfig::OnDemand,
            (StreamMode::OnDemand, Some(_)) => {
                return Err(ApiError::validation(
                    "ShardCount cannot be given for an ON_DEMAND stream",
                ))
            }
            (StreamMode::Provisioned, None) => {
                return Err(ApiError::validation(
                    "ShardCount is required for a PROVISIONED stream",
                ))
            }
            (StreamMode::Provisioned, Some(n)) => StreamModeConfig::Provisioned {
                shard_count: positive_u32("ShardCount", n)?,
            },
        };
        let mut config = StreamConfig {
            mode,
            ..StreamConfig::provisioned(1)
        };
        if let Some(tags) = input.opt_string_map("Tags")? {
            config.tags = tags;
        }
        if let Some(kib) = input.opt_i64("MaxRecordSizeInKiB")? {
            config.max_record_bytes = kib_to_bytes(kib)?;
        }
        self.ctx.store.create_stream(name, config)?;
        Ok(json!({}))
    }

    fn delete_stream(&self, input: &Input<'_>) -> Reply {
        let name = self.stream_name(input)?;
        let enforce = input.opt_bool("EnforceConsumerDeletion")?.unwrap_or(false);
        // A stream whose manifest is damaged has no consumers to speak of: it can be deleted.
        let consumers = match self.ctx.store.stream(&name) {
            Ok(stream) => stream.describe().consumers.len(),
            Err(crate::Error::Corrupt { .. }) => 0,
            Err(e) => return Err(e.into()),
        };
        if consumers > 0 && !enforce {
            return Err(ApiError::new(
                400,
                "ResourceInUseException",
                format!(
                    "stream {name} has {consumers} registered consumers; deregister them or set EnforceConsumerDeletion"
                ),
            ));
        }
        self.ctx.store.delete_stream(&name)?;
        self.ctx.metrics.forget_stream(&name);
        Ok(json!({}))
    }

    fn describe_stream(&self, input: &Input<'_>) -> Reply {
        let stream = self.stream(input)?;
        let d = stream.describe();
        let limit = page_limit(input.opt_i64("Limit")?)?;
        let after = match input.opt_str("ExclusiveStartShardId")? {
            Some(id) => Some(
                crate::ShardId::parse_loose(id)
                    .ok_or_else(|| ApiError::invalid(format!("{id:?} is not a shard id")))?
                    .index(),
            ),
            None => None,
        };
        let mut shards: Vec<&ShardDescription> = d
            .shards
            .iter()
            .filter(|s| {
                after.is_none_or(|a| crate::ShardId::parse(&s.shard_id).is_some_and(|i| i.0 > a))
            })
            .collect();
        let has_more = shards.len() > limit;
        shards.truncate(limit);
        Ok(json!({
            "StreamDescription": without_nulls(json!({
                "StreamName": d.name,
                "StreamARN": self.arn(&d.name),
                "StreamStatus": d.status,
                "StreamModeDetails": { "StreamMode": mode_name(d.mode) },
                "Shards": shards.into_iter().map(shard_json).collect::<Vec<_>>(),
                "HasMoreShards": has_more,
                "RetentionPeriodHours": d.retention_hours,
                "StreamCreationTimestamp": timestamp(d.created_ms),
                "EnhancedMonitoring": [{ "ShardLevelMetrics": shard_level_metrics(&d.settings) }],
                "EncryptionType": encryption_type(&d.settings),
                "KeyId": d.settings.get(KEY_ID).cloned().unwrap_or(Value::Null),
            }))
        }))
    }

    fn describe_stream_summary(&self, input: &Input<'_>) -> Reply {
        let stream = self.stream(input)?;
        let d = stream.describe();
        Ok(json!({
            "StreamDescriptionSummary": without_nulls(json!({
                "StreamName": d.name,
                "StreamARN": self.arn(&d.name),
                "StreamStatus": d.status,
                "StreamModeDetails": { "StreamMode": mode_name(d.mode) },
                "RetentionPeriodHours": d.retention_hours,
                "StreamCreationTimestamp": timestamp(d.created_ms),
                "EnhancedMonitoring": [{ "ShardLevelMetrics": shard_level_metrics(&d.settings) }],
                "EncryptionType": encryption_type(&d.settings),
                "KeyId": d.settings.get(KEY_ID).cloned().unwrap_or(Value::Null),
                "OpenShardCount": d.open_shard_count,
                "ConsumerCount": d.consumers.len(),
                "MaxRecordSizeInKiB": d.max_record_bytes / 1024,
                "WarmThroughput": warm_throughput(&d.settings),
            }))
        }))
    }

    fn list_streams(&self, input: &Input<'_>) -> Reply {
        let limit = page_limit(input.opt_i64("Limit")?)?;
        // The NextToken is the last name of the previous page, like ExclusiveStartStreamName.
        let after = match (
            input.opt_str("NextToken")?,
            input.opt_str("ExclusiveStartStreamName")?,
        ) {
            (Some(_), Some(_)) => {
                return Err(ApiError::invalid(
                    "NextToken and ExclusiveStartStreamName cannot both be given",
                ))
            }
            (Some(token), None) => Some(decode_token(token)?),
            (None, name) => name.map(str::to_string),
        };
        let names: Vec<String> = self
            .ctx
            .store
            .list_streams()
            .into_iter()
            .filter(|n| after.as_ref().is_none_or(|a| n > a))
            .collect();
        let has_more = names.len() > limit;
        let page = &names[..names.len().min(limit)];
        let summaries: Vec<Value> = page
            .iter()
            .filter_map(|name| self.ctx.store.stream(name).ok())
            .map(|s| {
                let d = s.describe();
                json!({
                    "StreamName": d.name,
                    "StreamARN": self.arn(&d.name),
                    "StreamStatus": d.status,
                    "StreamModeDetails": { "StreamMode": mode_name(d.mode) },
                    "StreamCreationTimestamp": timestamp(d.created_ms),
                })
            })
            .collect();
        let mut out = json!({
            "StreamNames": page,
            "HasMoreStreams": has_more,
            "StreamSummaries": summaries,
        });
        if let (true, Some(last)) = (has_more, page.last()) {
            out["NextToken"] = Value::String(encode_token(last));
        }
        Ok(out)
    }

    fn list_shards(&self, input: &Input<'_>) -> Reply {
        let max = match input.opt_i64("MaxResults")? {
            None => crate::stream::MAX_LIST_SHARDS,
            Some(n) if (1..=MAX_PAGE).contains(&n) => n as usize,
            Some(n) => {
                return Err(ApiError::invalid(format!(
                    "MaxResults {n} is outside 1..={MAX_PAGE}"
                )))
            }
        };
        let page = match input.opt_str("NextToken")? {
            Some(token) => {
                if input.opt_str("StreamName")?.is_some() || input.opt_str("StreamARN")?.is_some() {
                    return Err(ApiError::invalid(
                        "NextToken and StreamName/StreamARN cannot both be given",
                    ));
                }
                let stream = self.stream_of_list_token(token)?;
                stream.list_shards_page(ListShards::Next(token), max)?
            }
            None => {
                let stream = self.stream(input)?;
                let filter = match (
                    input.opt_object("ShardFilter")?,
                    input.opt_str("ExclusiveStartShardId")?,
                ) {
                    (Some(_), Some(_)) => {
                        return Err(ApiError::invalid(
                            "ShardFilter and ExclusiveStartShardId cannot both be given",
                        ))
                    }
                    (Some(f), None) => parse_shard_filter(&f)?,
                    (None, Some(id)) => ShardFilter::AfterShardId(id.to_string()),
                    (None, None) => ShardFilter::All,
                };
                stream.list_shards_page(ListShards::First(filter), max)?
            }
        };
        let mut out = json!({
            "Shards": page.shards.iter().map(shard_json).collect::<Vec<_>>(),
        });
        if let Some(token) = page.next_token {
            out["NextToken"] = Value::String(token);
        }
        Ok(out)
    }

    /// ListShards with only a NextToken: the token names its stream.
    fn stream_of_list_token(&self, token: &str) -> Result<Arc<Stream>, ApiError> {
        let name = crate::stream::stream_of_next_token(token)
            .ok_or_else(|| ApiError::invalid("NextToken is not a ListShards token"))?;
        Ok(self.ctx.store.stream(&name)?)
    }

    fn put_record(&self, input: &Input<'_>) -> Reply {
        let data = input.blob("Data")?;
        let partition_key = input.str("PartitionKey")?;
        let stream = self.stream(input)?;
        let put = stream.put_record(&PutRecord {
            partition_key,
            data: &data,
            explicit_hash_key: input.opt_str("ExplicitHashKey")?,
            sequence_number_for_ordering: input.opt_str("SequenceNumberForOrdering")?,
        })?;
        self.ctx
            .metrics
            .records_in(stream.name(), 1, data.len() as u64);
        Ok(json!({
            "ShardId": put.shard_id.to_string(),
            "SequenceNumber": put.sequence_number.to_string(),
            "EncryptionType": encryption_type(&stream.describe().settings),
        }))
    }

    fn put_records(&self, input: &Input<'_>) -> Reply {
        let entries = input
            .opt_list("Records")?
            .ok_or_else(|| ApiError::validation("Records is required"))?;
        if entries.is_empty() || entries.len() > MAX_PUT_RECORDS {
            return Err(ApiError::validation(format!(
                "1 validation error detected: Value with {} records at 'records' failed to satisfy constraint: Member must have length between 1 and {MAX_PUT_RECORDS}",
                entries.len()
            )));
        }
        let mut decoded = Vec::with_capacity(entries.len());
        for entry in entries {
            let entry = Input::new(entry)?;
            decoded.push((
                entry.blob("Data")?,
                entry.str("PartitionKey")?,
                entry.opt_str("ExplicitHashKey")?,
            ));
        }
        let total: usize = decoded.iter().map(|(d, k, _)| d.len() + k.len()).sum();
        if total > MAX_PUT_RECORDS_BYTES {
            return Err(ApiError::invalid(format!(
                "the records total {total} bytes (data and partition keys); a PutRecords call holds at most {MAX_PUT_RECORDS_BYTES}"
            )));
        }
        let stream = self.stream(input)?;
        let records: Vec<PutRecord<'_>> = decoded
            .iter()
            .map(|(data, key, hash)| PutRecord {
                partition_key: key,
                data,
                explicit_hash_key: *hash,
                sequence_number_for_ordering: None,
            })
            .collect();
        let results = stream.put_records(&records)?;
        let failed = results.iter().filter(|r| r.is_err()).count();
        let stored_bytes: usize = results
            .iter()
            .zip(&decoded)
            .filter(|(r, _)| r.is_ok())
            .map(|(_, (data, _, _))| data.len())
            .sum();
        self.ctx.metrics.records_in(
            stream.name(),
            (results.len() - failed) as u64,
            stored_bytes as u64,
        );
        let records: Vec<Value> = results
            .into_iter()
            .map(|r| match r {
                Ok(put) => json!({
                    "ShardId": put.shard_id.to_string(),
                    "SequenceNumber": put.sequence_number.to_string(),
                }),
                Err(f) => {
                    let code = match f.reason {
                        PutFailureReason::Throttled => "ProvisionedThroughputExceededException",
                        PutFailureReason::Internal => "InternalFailure",
                    };
                    json!({ "ErrorCode": code, "ErrorMessage": f.message })
                }
            })
            .collect();
        Ok(json!({
            "FailedRecordCount": failed,
            "Records": records,
            "EncryptionType": encryption_type(&stream.describe().settings),
        }))
    }

    fn get_shard_iterator(&self, input: &Input<'_>) -> Reply {
        let stream = self.stream(input)?;
        let shard_id = input.str("ShardId")?;
        let start = iterator_start(input, "ShardIteratorType", "StartingSequenceNumber")?;
        let iterator = stream.shard_iterator(shard_id, start)?;
        Ok(json!({ "ShardIterator": iterator }))
    }

    /// GetRecords, written as JSON straight from the records the shard lends (no owned copy, no
    /// allocation per record): a page holds up to 10,000 records.
    fn get_records(&self, input: &Input<'_>) -> Result<Output, ApiError> {
        let iterator = input.str("ShardIterator")?;
        let limit = match input.opt_i64("Limit")? {
            None => 10_000,
            Some(n) if (1..=10_000).contains(&n) => n as usize,
            Some(n) => return Err(ApiError::invalid(format!("Limit {n} is outside 1..=10000"))),
        };
        let (body, end, data_bytes) = get_records_json(&self.ctx.store, iterator, limit)?;
        if let Some(stream) = self.ctx.store.decode_iterator(iterator).map(|t| t.stream) {
            self.ctx.metrics.records_out(
                &stream,
                end.records,
                data_bytes,
                end.millis_behind_latest,
            );
        }
        Ok(Output::Encoded(body))
    }

    fn split_shard(&self, input: &Input<'_>) -> Reply {
        let stream = self.stream(input)?;
        stream.split_shard(input.str("ShardToSplit")?, input.str("NewStartingHashKey")?)?;
        Ok(json!({}))
    }

    fn merge_shards(&self, input: &Input<'_>) -> Reply {
        let stream = self.stream(input)?;
        stream.merge_shards(
            input.str("ShardToMerge")?,
            input.str("AdjacentShardToMerge")?,
        )?;
        Ok(json!({}))
    }

    fn update_shard_count(&self, input: &Input<'_>) -> Reply {
        let stream = self.stream(input)?;
        let target = positive_u32("TargetShardCount", input.i64("TargetShardCount")?)?;
        match input.str("ScalingType")? {
            "UNIFORM_SCALING" => {}
            other => {
                return Err(ApiError::validation(format!(
                    "ScalingType {other:?} is not UNIFORM_SCALING"
                )))
            }
        }
        let current = stream.describe().open_shard_count;
        stream.update_shard_count(target)?;
        let name = stream.name().to_string();
        Ok(json!({
            "StreamName": name,
            "StreamARN": self.arn(&name),
            "CurrentShardCount": current,
            "TargetShardCount": target,
        }))
    }

    fn update_stream_mode(&self, input: &Input<'_>) -> Reply {
        let arn = input.str("StreamARN")?;
        let stream = self.ctx.store.stream(stream_name_of_arn(arn)?)?;
        let details = input
            .opt_object("StreamModeDetails")?
            .ok_or_else(|| ApiError::validation("StreamModeDetails is required"))?;
        stream.set_mode(parse_mode(details.str("StreamMode")?)?)?;
        Ok(json!({}))
    }

    fn update_max_record_size(&self, input: &Input<'_>) -> Reply {
        let stream = self.stream(input)?;
        let bytes = kib_to_bytes(input.i64("MaxRecordSizeInKiB")?)?;
        stream.set_max_record_bytes(bytes)?;
        Ok(json!({}))
    }

    fn change_retention(&self, input: &Input<'_>, increase: bool) -> Reply {
        let stream = self.stream(input)?;
        let hours = input.i64("RetentionPeriodHours")?;
        let hours = u32::try_from(hours).map_err(|_| {
            ApiError::invalid(format!("RetentionPeriodHours {hours} is out of range"))
        })?;
        stream.set_retention_hours(hours, increase)?;
        Ok(json!({}))
    }

    fn add_tags(&self, input: &Input<'_>) -> Reply {
        let stream = self.stream(input)?;
        let tags = input
            .opt_string_map("Tags")?
            .ok_or_else(|| ApiError::validation("Tags is required"))?;
        stream.add_tags(&tags)?;
        Ok(json!({}))
    }

    fn remove_tags(&self, input: &Input<'_>) -> Reply {
        let stream = self.stream(input)?;
        let keys = input
            .opt_string_list("TagKeys")?
            .ok_or_else(|| ApiError::validation("TagKeys is required"))?;
        stream.remove_tags(&keys)?;
        Ok(json!({}))
    }

    fn list_tags(&self, input: &Input<'_>) -> Reply {
        let stream = self.stream(input)?;
        tag_page(input, &stream.describe().tags)
    }

    /// The stream a resource ARN names, and the settings key of the resource's policy (a
    /// consumer's policy is kept in its stream's settings under its own key).
    fn policy_resource(&self, input: &Input<'_>) -> Result<(Arc<Stream>, String), ApiError> {
        let (stream, consumer) = self.tagged(input)?;
        let key = match consumer {
            Some(c) => format!("{POLICY}/consumer/{}", c.name),
            None => POLICY.to_string(),
        };
        Ok((stream, key))
    }

    /// The stream, and the registered consumer if the resource ARN names one.
    fn tagged(&self, input: &Input<'_>) -> Result<(Arc<Stream>, Option<ConsumerEntry>), ApiError> {
        let arn = input.str("ResourceARN")?;
        if arn.contains("/consumer/") {
            let fields = serde_json::json!({ "ConsumerARN": arn });
            let (stream, consumer) = self.consumer(&Input::new(&fields)?)?;
            return Ok((stream, Some(consumer)));
        }
        Ok((self.ctx.store.stream(stream_name_of_arn(arn)?)?, None))
    }

    fn tag_resource(&self, input: &Input<'_>) -> Reply {
        let (stream, consumer) = self.tagged(input)?;
        let tags = input
            .opt_string_map("Tags")?
            .ok_or_else(|| ApiError::validation("Tags is required"))?;
        match consumer {
            Some(c) => stream.tag_consumer(&c.name, &tags, &[])?,
            None => stream.add_tags(&tags)?,
        }
        Ok(json!({}))
    }

    fn untag_resource(&self, input: &Input<'_>) -> Reply {
        let (stream, consumer) = self.tagged(input)?;
        let keys = input
            .opt_string_list("TagKeys")?
            .ok_or_else(|| ApiError::validation("TagKeys is required"))?;
        match consumer {
            Some(c) => stream.tag_consumer(&c.name, &BTreeMap::new(), &keys)?,
            None => stream.remove_tags(&keys)?,
        }
        Ok(json!({}))
    }

    fn list_tags_for_resource(&self, input: &Input<'_>) -> Reply {
        let (stream, consumer) = self.tagged(input)?;
        let tags = match consumer {
            Some(c) => c.tags,
            None => stream.describe().tags,
        };
        let tags: Vec<Value> = tags
            .iter()
            .map(|(k, v)| json!({ "Key": k, "Value": v }))
            .collect();
        Ok(json!({ "Tags": tags }))
    }

    /// Start/StopStreamEncryption: stored and described (EncryptionType, KeyId); records are
    /// not encrypted at rest by shardlog (there is no KMS here).
    fn stream_encryption(&self, input: &Input<'_>, start: bool) -> Reply {
        let stream = self.stream(input)?;
        let kind = input.str("EncryptionType")?;
        let key = input.str("KeyId")?.to_string();
        if kind != "KMS" {
            return Err(ApiError::invalid(format!(
                "EncryptionType {kind:?}: only KMS can be started or stopped"
            )));
        }
        stream.modify_settings(|settings| {
            if start {
                settings.insert(ENCRYPTION_TYPE.into(), json!("KMS"));
                settings.insert(KEY_ID.into(), json!(key));
            } else {
                settings.remove(ENCRYPTION_TYPE);
                settings.remove(KEY_ID);
            }
            Ok(())
        })?;
        Ok(json!({}))
    }

    /// Enable/DisableEnhancedMonitoring: the shard-level metrics asked for are stored and
    /// described; shardlog's own per-stream metrics are on `/metrics` either way.
    fn enhanced_monitoring(&self, input: &Input<'_>, enable: bool) -> Reply {
        let stream = self.stream(input)?;
        let asked = input
            .opt_string_list("ShardLevelMetrics")?
            .ok_or_else(|| ApiError::validation("ShardLevelMetrics is required"))?;
        if asked.is_empty() {
            return Err(ApiError::validation("ShardLevelMetrics must not be empty"));
        }
        let mut names: Vec<String> = Vec::new();
        for name in &asked {
            if name == "ALL" {
                names.extend(METRICS.iter().map(|m| m.to_string()));
            } else if METRICS.contains(&name.as_str()) {
                names.push(name.clone());
            } else {
                return Err(ApiError::validation(format!(
                    "ShardLevelMetrics {name:?} is not one of {METRICS:?} or ALL"
                )));
            }
        }
        let mut current = Vec::new();
        let mut desired = Vec::new();
        stream.modify_settings(|settings| {
            current = shard_level_metrics(settings);
            let mut next: std::collections::BTreeSet<String> = current.iter().cloned().collect();
            for name in names {
                if enable {
                    next.insert(name);
                } else {
                    next.remove(&name);
                }
            }
            desired = next.into_iter().collect();
            if desired.is_empty() {
                settings.remove(SHARD_LEVEL_METRICS);
            } else {
                settings.insert(SHARD_LEVEL_METRICS.into(), json!(desired));
            }
            Ok(())
        })?;
        let name = stream.name().to_string();
        Ok(json!({
            "StreamName": name,
            "StreamARN": self.arn(&name),
            "CurrentShardLevelMetrics": current,
            "DesiredShardLevelMetrics": desired,
        }))
    }

    /// Put/Get/DeleteResourcePolicy: the policy (a JSON document) is stored and returned; it is
    /// not enforced (requests are not authenticated by default).
    fn put_resource_policy(&self, input: &Input<'_>) -> Reply {
        let (stream, key) = self.policy_resource(input)?;
        let policy = input.str("Policy")?;
        match serde_json::from_str::<Value>(policy) {
            Ok(Value::Object(_)) => {}
            _ => {
                return Err(ApiError::invalid(
                    "Policy must be a JSON policy document (an object)",
                ))
            }
        }
        let policy = policy.to_string();
        stream.modify_settings(|settings| {
            settings.insert(key, json!(policy));
            Ok(())
        })?;
        Ok(json!({}))
    }

    fn get_resource_policy(&self, input: &Input<'_>) -> Reply {
        let (stream, key) = self.policy_resource(input)?;
        let policy = stream
            .describe()
            .settings
            .get(&key)
            .and_then(Value::as_str)
            .unwrap_or("{}")
            .to_string();
        Ok(json!({ "Policy": policy }))
    }

    fn delete_resource_policy(&self, input: &Input<'_>) -> Reply {
        let (stream, key) = self.policy_resource(input)?;
        let mut had = false;
        stream.modify_settings(|settings| {
            had = settings.remove(&key).is_some();
            Ok(())
        })?;
        if !had {
            return Err(ApiError::new(
                400,
                "ResourceNotFoundException",
                format!("stream {} has no resource policy", stream.name()),
            ));
        }
        Ok(json!({}))
    }

    /// The account's MinimumThroughputBillingCommitment, stored in the store's settings.json.
    fn describe_account_settings(&self) -> Reply {
        let settings = self.ctx.store.settings()?;
        match settings.get(BILLING_COMMITMENT) {
            Some(v) => Ok(json!({ "MinimumThroughputBillingCommitment": v })),
            None => Ok(json!({})),
        }
    }

    fn update_account_settings(&self, input: &Input<'_>) -> Reply {
        let commitment = input
            .opt_object("MinimumThroughputBillingCommitment")?
            .ok_or_else(|| {
                ApiError::validation("MinimumThroughputBillingCommitment is required")
            })?;
        let status = commitment.str("Status")?;
        let now = self.ctx.store.options().shard.clock.now_ms();
        let value = match status {
            "ENABLED" => json!({ "Status": "ENABLED", "StartedAt": timestamp(now) }),
            "DISABLED" => json!({ "Status": "DISABLED", "EndedAt": timestamp(now) }),
            other => {
                return Err(ApiError::validation(format!(
                    "Status {other:?} is not ENABLED or DISABLED"
                )))
            }
        };
        let stored = value.clone();
        self.ctx.store.modify_settings(|settings| {
            settings.insert(BILLING_COMMITMENT.into(), stored);
        })?;
        Ok(json!({ "MinimumThroughputBillingCommitment": value }))
    }

    /// UpdateStreamWarmThroughput: the target is stored and described (shardlog has no
    /// capacity to warm: every stream takes what the machine can write).
    fn update_warm_throughput(&self, input: &Input<'_>) -> Reply {
        let stream = self.stream(input)?;
        let mibps = input.i64("WarmThroughputMiBps")?;
        if mibps < 0 {
            return Err(ApiError::validation(format!(
                "WarmThroughputMiBps {mibps} must not be negative"
            )));
        }
        stream.modify_settings(|settings| {
            settings.insert(WARM_THROUGHPUT.into(), json!(mibps));
            Ok(())
        })?;
        let name = stream.name().to_string();
        Ok(json!({
            "StreamARN": self.arn(&name),
            "StreamName": name,
            "WarmThroughput": { "TargetMiBps": mibps, "CurrentMiBps": mibps },
        }))
    }

    fn consumer_arn(&self, stream: &str, consumer: &ConsumerEntry) -> String {
        format!(
            "{}/consumer/{}:{}",
            self.arn(stream),
            consumer.name,
            consumer.created_ms.div_euclid(1000)
        )
    }

    fn consumer_json(&self, stream: &str, consumer: &ConsumerEntry) -> Value {
        json!({
            "ConsumerName": consumer.name,
            "ConsumerARN": self.consumer_arn(stream, consumer),
            "ConsumerStatus": "ACTIVE",
            "ConsumerCreationTimestamp": timestamp(consumer.created_ms),
        })
    }

    /// The stream and registered consumer a request names: by ConsumerARN, or by StreamARN and
    /// ConsumerName.
    fn consumer(&self, input: &Input<'_>) -> Result<(Arc<Stream>, ConsumerEntry), ApiError> {
        let (stream_name, consumer_name, created_secs) = match input.opt_str("ConsumerARN")? {
            Some(arn) => {
                let (stream, consumer, secs) = parse_consumer_arn(arn)?;
                (stream.to_string(), consumer.to_string(), Some(secs))
            }
            None => {
                let arn = input.opt_str("StreamARN")?.ok_or_else(|| {
                    ApiError::invalid("give ConsumerARN, or StreamARN and ConsumerName")
                })?;
                let name = input.opt_str("ConsumerName")?.ok_or_else(|| {
                    ApiError::invalid("give ConsumerARN, or StreamARN and ConsumerName")
                })?;
                (stream_name_of_arn(arn)?.to_string(), name.to_string(), None)
            }
        };
        let stream = self.ctx.store.stream(&stream_name)?;
        let consumer = stream
            .describe()
            .consumers
            .into_iter()
            .find(|c| {
                c.name == consumer_name
                    && created_secs.is_none_or(|s| s == c.created_ms.div_euclid(1000))
            })
            .ok_or_else(|| {
                ApiError::from(crate::Error::ResourceNotFound {
                    kind: "consumer",
                    name: consumer_name.clone(),
                })
            })?;
        Ok((stream, consumer))
    }

    fn register_consumer(&self, input: &Input<'_>) -> Reply {
        let stream = self
            .ctx
            .store
            .stream(stream_name_of_arn(input.str("StreamARN")?)?)?;
        let tags = input.opt_string_map("Tags")?.unwrap_or_default();
        let consumer = stream.register_consumer(input.str("ConsumerName")?, &tags)?;
        Ok(json!({ "Consumer": self.consumer_json(stream.name(), &consumer) }))
    }

    fn deregister_consumer(&self, input: &Input<'_>) -> Reply {
        let (stream, consumer) = self.consumer(input)?;
        stream.deregister_consumer(&consumer.name)?;
        Ok(json!({}))
    }

    fn describe_consumer(&self, input: &Input<'_>) -> Reply {
        let (stream, consumer) = self.consumer(input)?;
        let mut description = self.consumer_json(stream.name(), &consumer);
        description["StreamARN"] = json!(self.arn(stream.name()));
        Ok(json!({ "ConsumerDescription": description }))
    }

    fn list_consumers(&self, input: &Input<'_>) -> Reply {
        let stream = self
            .ctx
            .store
            .stream(stream_name_of_arn(input.str("StreamARN")?)?)?;
        let max = match input.opt_i64("MaxResults")? {
            None => 100,
            Some(n) if (1..=10_000).contains(&n) => n as usize,
            Some(n) => {
                return Err(ApiError::invalid(format!(
                    "MaxResults {n} is outside 1..=10000"
                )))
            }
        };
        let skip = match input.opt_str("NextToken")? {
            Some(token) => decode_token(token)?
                .parse::<usize>()
                .map_err(|_| ApiError::invalid("NextToken is not a ListStreamConsumers token"))?,
            None => 0,
        };
        let consumers = stream.describe().consumers;
        let page: Vec<Value> = consumers
            .iter()
            .skip(skip)
            .take(max)
            .map(|c| self.consumer_json(stream.name(), c))
            .collect();
        let mut out = json!({ "Consumers": page });
        if skip + max < consumers.len() {
            out["NextToken"] = json!(encode_token(&(skip + max).to_string()));
        }
        Ok(out)
    }

    /// SubscribeToShard: checks the consumer, shard and position, then hands a shard iterator
    /// to the server, which streams events from it (see `subscribe.rs`).
    fn subscribe_to_shard(&self, input: &Input<'_>) -> Result<Output, ApiError> {
        let arn = input.str("ConsumerARN")?.to_string();
        let (stream, consumer) = self.consumer(input)?;
        let shard_id = input.str("ShardId")?;
        let position = input
            .opt_object("StartingPosition")?
            .ok_or_else(|| ApiError::validation("StartingPosition is required"))?;
        let start = iterator_start(&position, "Type", "SequenceNumber")?;
        let reader = crate::consumer::ShardSubscription::open(
            Arc::clone(&self.ctx.store),
            stream.name(),
            &consumer.name,
            shard_id,
            crate::consumer::SubscribeOptions::new(start),
        )?;
        Ok(Output::Subscription(Box::new(
            super::subscribe::Subscription {
                consumer_arn: arn,
                stream: stream.name().to_string(),
                shard_id: shard_id.to_string(),
                reader,
                cbor: false,
            },
        )))
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

/// Stream settings kept for the API (keys of `StreamDescription::settings`).
const ENCRYPTION_TYPE: &str = "EncryptionType";
const KEY_ID: &str = "KeyId";
const SHARD_LEVEL_METRICS: &str = "ShardLevelMetrics";
const POLICY: &str = "Policy";
const WARM_THROUGHPUT: &str = "WarmThroughputMiBps";
/// Store setting: the account's MinimumThroughputBillingCommitment.
const BILLING_COMMITMENT: &str = "MinimumThroughputBillingCommitment";
/// Kinesis's shard-level metrics (what `ALL` stands for).
const METRICS: [&str; 7] = [
    "IncomingBytes",
    "IncomingRecords",
    "OutgoingBytes",
    "OutgoingRecords",
    "WriteProvisionedThroughputExceeded",
    "ReadProvisionedThroughputExceeded",
    "IteratorAgeMilliseconds",
];

/// An object without its null members (absent optional members are left out, not null).
fn without_nulls(mut value: Value) -> Value {
    if let Value::Object(members) = &mut value {
        members.retain(|_, v| !v.is_null());
    }
    value
}

fn encryption_type(settings: &BTreeMap<String, Value>) -> &str {
    settings
        .get(ENCRYPTION_TYPE)
        .and_then(Value::as_str)
        .unwrap_or("NONE")
}

fn shard_level_metrics(settings: &BTreeMap<String, Value>) -> Vec<String> {
    settings
        .get(SHARD_LEVEL_METRICS)
        .and_then(Value::as_array)
        .map(|names| {
            names
                .iter()
                .filter_map(|n| n.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

fn warm_throughput(settings: &BTreeMap<String, Value>) -> Value {
    match settings.get(WARM_THROUGHPUT) {
        Some(mibps) => json!({ "TargetMiBps": mibps, "CurrentMiBps": mibps }),
        None => Value::Null,
    }
}

/// The GetRecords answer for `shard_iterator` as the wire's JSON, written straight from the records
/// the shard lends (no owned copy, no allocation per record); with where the page ends and the
/// bytes of data it holds. What the server's GetRecords handler sends.
pub fn get_records_json(
    store: &crate::Store,
    shard_iterator: &str,
    limit: usize,
) -> crate::Result<(Vec<u8>, crate::PageEnd, u64)> {
    let mut body = Vec::with_capacity(64 * 1024);
    body.extend_from_slice(b"{\"Records\":[");
    let mut data_bytes = 0u64;
    let mut first = true;
    let mut writer = RecordJson::default();
    let end = store.visit_records(shard_iterator, limit, |r| {
        if !first {
            body.push(b',');
        }
        first = false;
        data_bytes += r.data.len() as u64;
        writer.write(&mut body, &r);
    })?;
    body.push(b']');
    if let Some(next) = &end.next_shard_iterator {
        body.extend_from_slice(b",\"NextShardIterator\":");
        write_json_str(&mut body, next);
    }
    body.extend_from_slice(b",\"MillisBehindLatest\":");
    body.extend_from_slice(end.millis_behind_latest.to_string().as_bytes());
    if !end.child_shards.is_empty() {
        body.extend_from_slice(b",\"ChildShards\":");
        // Serializing JSON values into a Vec cannot fail.
        let _ = serde_json::to_writer(&mut body, &child_shards_json(&end.child_shards));
    }
    body.push(b'}');
    Ok((body, end, data_bytes))
}

/// Writes GetRecords records as JSON: the same members, in the same order, as
/// [`RecordOutput`](super::records::RecordOutput) serializes. Consecutive records of a shard have
/// consecutive sequence numbers, and the records of one append share an arrival time, so each
/// number after the first is the previous one's digits incremented and a repeated timestamp is
/// copied, not formatted again.
#[derive(Default)]
struct RecordJson {
    sequence: Option<(crate::SequenceNumber, Vec<u8>)>,
    arrival: Option<(i64, Vec<u8>)>,
}

impl RecordJson {
    fn write(&mut self, out: &mut Vec<u8>, r: &crate::stream::StreamRecordRef<'_>) {
        use base64::Engine;
        out.extend_from_slice(b"{\"SequenceNumber\":\"");
        let n = r.sequence_number;
        let follows = |prev: crate::SequenceNumber| {
            prev.shard_index() == n.shard_index()
                && prev.offset().checked_next() == Some(n.offset())
        };
        let incremented = match &mut self.sequence {
            Some((prev, digits)) if follows(*prev) => {
                *prev = n;
                increment_decimal(digits)
            }
            _ => false,
        };
        if !incremented {
            self.sequence = Some((n, n.to_string().into_bytes()));
        }
        if let Some((_, digits)) = &self.sequence {
            out.extend_from_slice(digits);
        }
        out.extend_from_slice(b"\",\"ApproximateArrivalTimestamp\":");
        match &self.arrival {
            Some((ms, text)) if *ms == r.approximate_arrival_ms => out.extend_from_slice(text),
            _ => {
                let mut text = Vec::with_capacity(24);
                // Serializing an f64 into a Vec cannot fail.
                let _ =
                    serde_json::to_writer(&mut text, &(r.approximate_arrival_ms as f64 / 1000.0));
                out.extend_from_slice(&text);
                self.arrival = Some((r.approximate_arrival_ms, text));
            }
        }
        out.extend_from_slice(b",\"Data\":\"");
        let engine = &base64::engine::general_purpose::STANDARD;
        let start = out.len();
        out.resize(
            start + base64::encoded_len(r.data.len(), true).unwrap_or(0),
            0,
        );
        let written = engine.encode_slice(r.data, &mut out[start..]).unwrap_or(0);
        out.truncate(start + written);
        out.extend_from_slice(b"\",\"PartitionKey\":");
        write_json_str(out, r.partition_key);
        out.push(b'}');
    }
}

/// Adds one to a decimal number written in ASCII digits, in place; `false` if it would need
/// another digit (the digits are then all zeros, and the caller formats the number afresh).
fn increment_decimal(digits: &mut [u8]) -> bool {
    for b in digits.iter_mut().rev() {
        if *b == b'9' {
            *b = b'0';
        } else {
            *b += 1;
            return true;
        }
    }
    false
}

/// Appends `s` as a JSON string (quoted, escaped).
fn write_json_str(out: &mut Vec<u8>, s: &str) {
    // Serializing a `str` into a Vec cannot fail.
    let _ = serde_json::to_writer(&mut *out, s);
}

/// Where to start reading, from an iterator type member and its sequence number / timestamp.
fn iterator_start(
    input: &Input<'_>,
    type_member: &str,
    sequence_member: &str,
) -> Result<IteratorStart, ApiError> {
    let kind = input.str(type_member)?;
    let sequence = || {
        input
            .opt_str(sequence_member)?
            .map(str::to_string)
            .ok_or_else(|| ApiError::invalid(format!("{kind} needs a {sequence_member}")))
    };
    Ok(match kind {
        "TRIM_HORIZON" => IteratorStart::TrimHorizon,
        "LATEST" => IteratorStart::Latest,
        "AT_SEQUENCE_NUMBER" => IteratorStart::AtSequenceNumber(sequence()?),
        "AFTER_SEQUENCE_NUMBER" => IteratorStart::AfterSequenceNumber(sequence()?),
        "AT_TIMESTAMP" => IteratorStart::AtTimestamp(
            input
                .opt_timestamp_ms("Timestamp")?
                .ok_or_else(|| ApiError::invalid("AT_TIMESTAMP needs a Timestamp"))?,
        ),
        other => {
            return Err(ApiError::validation(format!(
                "1 validation error detected: Value '{other}' at '{}' failed to satisfy constraint: Member must satisfy enum value set: [AT_SEQUENCE_NUMBER, AFTER_SEQUENCE_NUMBER, TRIM_HORIZON, LATEST, AT_TIMESTAMP]",
                lower_first(type_member)
            )))
        }
    })
}

/// (stream, consumer, creation seconds) of a consumer ARN
/// (`arn:aws:kinesis:REGION:ACCOUNT:stream/NAME/consumer/CONSUMER:SECONDS`).
fn parse_consumer_arn(arn: &str) -> Result<(&str, &str, i64), ApiError> {
    let bad = || ApiError::invalid(format!("{arn:?} is not a Kinesis consumer ARN"));
    let (stream_arn, consumer) = arn.split_once("/consumer/").ok_or_else(bad)?;
    let stream = stream_name_of_arn(stream_arn).map_err(|_| bad())?;
    let (name, secs) = consumer.rsplit_once(':').ok_or_else(bad)?;
    let secs = secs.parse().map_err(|_| bad())?;
    if name.is_empty() {
        return Err(bad());
    }
    Ok((stream, name, secs))
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

fn parse_mode(text: &str) -> Result<StreamMode, ApiError> {
    match text {
        "PROVISIONED" => Ok(StreamMode::Provisioned),
        "ON_DEMAND" => Ok(StreamMode::OnDemand),
        other => Err(ApiError::validation(format!(
            "StreamMode {other:?} is not PROVISIONED or ON_DEMAND"
        ))),
    }
}

fn mode_name(mode: StreamMode) -> &'static str {
    match mode {
        StreamMode::Provisioned => "PROVISIONED",
        StreamMode::OnDemand => "ON_DEMAND",
    }
}

fn parse_shard_filter(filter: &Input<'_>) -> Result<ShardFilter, ApiError> {
    let at = || {
        filter
            .opt_timestamp_ms("Timestamp")?
            .ok_or_else(|| ApiError::invalid("this ShardFilter type needs a Timestamp"))
    };
    Ok(match filter.str("Type")? {
        "AFTER_SHARD_ID" => ShardFilter::AfterShardId(filter.str("ShardId")?.to_string()),
        "AT_TRIM_HORIZON" => ShardFilter::AtTrimHorizon,
        "FROM_TRIM_HORIZON" => ShardFilter::FromTrimHorizon,
        "AT_LATEST" => ShardFilter::AtLatest,
        "AT_TIMESTAMP" => ShardFilter::AtTimestamp(at()?),
        "FROM_TIMESTAMP" => ShardFilter::FromTimestamp(at()?),
        other => {
            return Err(ApiError::validation(format!(
                "ShardFilter Type {other:?} is not one of AFTER_SHARD_ID, AT_TRIM_HORIZON, FROM_TRIM_HORIZON, AT_LATEST, AT_TIMESTAMP, FROM_TIMESTAMP"
            )))
        }
    })
}

fn shard_json(s: &ShardDescription) -> Value {
    let mut range = json!({ "StartingSequenceNumber": s.starting_sequence_number.to_string() });
    if let Some(end) = s.ending_sequence_number {
        range["EndingSequenceNumber"] = Value::String(end.to_string());
    }
    let mut out = json!({
        "ShardId": s.shard_id,
        "HashKeyRange": hash_range_json(&s.hash_key_range),
        "SequenceNumberRange": range,
    });
    if let Some(p) = &s.parent_shard_id {
        out["ParentShardId"] = Value::String(p.clone());
    }
    if let Some(p) = &s.adjacent_parent_shard_id {
        out["AdjacentParentShardId"] = Value::String(p.clone());
    }
    out
}

fn page_limit(limit: Option<i64>) -> Result<usize, ApiError> {
    match limit.unwrap_or(DEFAULT_PAGE) {
        n if (1..=MAX_PAGE).contains(&n) => Ok(n as usize),
        n => Err(ApiError::invalid(format!(
            "Limit {n} is outside 1..={MAX_PAGE}"
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
    use crate::server::records::RecordOutput;

    #[test]
    fn records_written_directly_match_the_serde_encoding() {
        use crate::{Offset, SequenceNumber};
        // Consecutive offsets (with carries through 9s), a jump, another shard, repeated and
        // changing arrival times, keys that need escaping.
        let cases: Vec<(u32, u64, i64, &str, Vec<u8>)> = vec![
            (0, 8, 1_700_000_000_123, "a", b"x".to_vec()),
            (0, 9, 1_700_000_000_123, "b\"q", vec![]),
            (0, 10, 1_700_000_000_124, "c\\", vec![0xff; 100]),
            (0, 99, 1_700_000_000_124, "d", b"hello".to_vec()),
            (0, 100, 1_700_000_000_124, "e\u{1}", b"hi".to_vec()),
            (0, 999_999, 5, "\u{e9}t\u{e9}", vec![1, 2, 3]),
            (0, 1_000_000, 5, "f", vec![]),
            (7, 1_000_001, 5, "g", vec![]),
            (7, u64::MAX, -1, "h", vec![9]),
        ];
        let mut writer = RecordJson::default();
        for (shard, offset, ms, key, data) in cases {
            let r = crate::stream::StreamRecordRef {
                sequence_number: SequenceNumber::new(shard, Offset::new(offset)),
                approximate_arrival_ms: ms,
                partition_key: key,
                explicit_hash_key: None,
                data: &data,
            };
            let mut direct = Vec::new();
            writer.write(&mut direct, &r);
            let owned = crate::StreamRecord {
                sequence_number: r.sequence_number,
                approximate_arrival_ms: ms,
                partition_key: key.to_string(),
                explicit_hash_key: None,
                data: bytes::Bytes::from(data.clone()),
            };
            let b64 = RecordOutput::base64_data(std::slice::from_ref(&owned));
            let expected = serde_json::to_vec(&RecordOutput::new(&owned, &b64[0])).unwrap();
            assert_eq!(
                String::from_utf8(direct).unwrap(),
                String::from_utf8(expected).unwrap(),
                "offset {offset}"
            );
        }
    }

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
