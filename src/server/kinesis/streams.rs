//! Stream lifecycle and listing: CreateStream, DeleteStream, DescribeStream(Summary), ListStreams,
//! ListShards.

use std::collections::BTreeMap;

use serde_json::{json, Value};

use crate::server::error::ApiError;
use crate::server::protocol::{timestamp, Input};
use crate::server::records::hash_range_json;
use crate::stream::{check_stream_name, ListShards, ShardDescription, ShardFilter};
use crate::{StreamConfig, StreamMode};

use super::settings::{encryption_type, shard_level_metrics, warm_throughput, KEY_ID};
use super::{
    decode_token, encode_token, kib_to_bytes, page_limit, parse_mode, positive_u32, without_nulls,
    Kinesis, Reply, MAX_PAGE,
};

impl Kinesis<'_> {
    pub(super) fn create_stream(&self, input: &Input<'_>) -> Reply {
        let name = input.str("StreamName")?;
        check_stream_name(name).map_err(|e| ApiError::validation(e.to_string()))?;
        let mode = match input.opt_object("StreamModeDetails")? {
            Some(details) => parse_mode(details.str("StreamMode")?)?,
            None => StreamMode::Provisioned,
        };
        let shard_count = input.opt_i64("ShardCount")?;
        let mut config = match (mode, shard_count) {
            (StreamMode::OnDemand, None) => StreamConfig::on_demand(),
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
            (StreamMode::Provisioned, Some(n)) => {
                StreamConfig::provisioned(positive_u32("ShardCount", n)?)
            }
        };
        if let Some(tags) = input.opt_string_map("Tags")? {
            super::settings::check_tag_characters(tags.keys().chain(tags.values()))?;
            let account = &self.ctx.options.account_id;
            super::settings::check_tag_count(name, &BTreeMap::new(), &tags, account)?;
            config.tags = tags;
        }
        if let Some(kib) = input.opt_i64("MaxRecordSizeInKiB")? {
            config.max_record_bytes = kib_to_bytes(kib)?;
        }
        self.ctx.store.create_stream(name, config)?;
        Ok(json!({}))
    }

    pub(super) fn delete_stream(&self, input: &Input<'_>) -> Reply {
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
        // With a delete delay the stream is DELETING first; a later request deletes it.
        if !self.ctx.lifecycle.begin(&name, super::State::Deleting) {
            self.ctx.store.delete_stream(&name)?;
            self.ctx.metrics.forget_stream(&name);
        }
        Ok(json!({}))
    }

    pub(super) fn describe_stream(&self, input: &Input<'_>) -> Reply {
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
            .filter(|s| after.is_none_or(|a| s.shard_id.index() > a))
            .collect();
        let has_more = shards.len() > limit;
        shards.truncate(limit);
        Ok(json!({
            "StreamDescription": without_nulls(json!({
                "StreamName": d.name,
                "StreamARN": self.arn(&d.name),
                "StreamStatus": self.status(&d.name, d.status),
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

    pub(super) fn describe_stream_summary(&self, input: &Input<'_>) -> Reply {
        let stream = self.stream(input)?;
        let d = stream.describe();
        Ok(json!({
            "StreamDescriptionSummary": without_nulls(json!({
                "StreamName": d.name,
                "StreamARN": self.arn(&d.name),
                "StreamStatus": self.status(&d.name, d.status),
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

    pub(super) fn list_streams(&self, input: &Input<'_>) -> Reply {
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
                    "StreamStatus": self.status(&d.name, d.status),
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

    pub(super) fn list_shards(&self, input: &Input<'_>) -> Reply {
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
}

pub(super) fn mode_name(mode: StreamMode) -> &'static str {
    match mode {
        StreamMode::Provisioned => "PROVISIONED",
        StreamMode::OnDemand => "ON_DEMAND",
    }
}

pub(super) fn parse_shard_filter(filter: &Input<'_>) -> Result<ShardFilter, ApiError> {
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

pub(super) fn shard_json(s: &ShardDescription) -> Value {
    let mut range = json!({ "StartingSequenceNumber": s.starting_sequence_number.to_string() });
    if let Some(end) = s.ending_sequence_number {
        range["EndingSequenceNumber"] = Value::String(end.to_string());
    }
    let mut out = json!({
        "ShardId": s.shard_id,
        "HashKeyRange": hash_range_json(&s.hash_key_range),
        "SequenceNumberRange": range,
    });
    if let Some(p) = s.parent_shard_id {
        out["ParentShardId"] = Value::String(p.to_string());
    }
    if let Some(p) = s.adjacent_parent_shard_id {
        out["AdjacentParentShardId"] = Value::String(p.to_string());
    }
    out
}
