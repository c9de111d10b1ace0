//! What a stream (or the account) keeps besides records: mode, record size, retention, tags,
//! encryption, enhanced monitoring, resource policies, account settings, warm throughput.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde_json::{json, Value};

use crate::server::error::ApiError;
use crate::server::protocol::{tag_page, timestamp, Input};
use crate::stream::Stream;
use crate::ConsumerEntry;

use super::{kib_to_bytes, parse_mode, stream_name_of_arn, Kinesis, Reply};

/// Refuses tag keys or values with characters Kinesis does not allow, in its words: Unicode
/// letters, digits, white space and `_ . / = + - % @ :`.
pub(super) fn check_tag_characters<'a>(
    texts: impl Iterator<Item = &'a String>,
) -> Result<(), ApiError> {
    // White space: Unicode separators (`\p{Z}`), not tabs or line feeds.
    let allowed = |c: char| {
        c.is_alphanumeric() || (c.is_whitespace() && !c.is_control()) || "_./=+-%@:".contains(c)
    };
    for text in texts {
        if !text.chars().all(allowed) {
            return Err(ApiError::invalid(
                "Some tags contain invalid characters. Valid characters: Unicode letters, digits, white space, _ . / = + - % @ :.",
            ));
        }
    }
    Ok(())
}

/// Refuses tags that would leave a stream with more than [`crate::stream::MAX_TAGS`], as Kinesis
/// does (an InvalidArgumentException).
pub(super) fn check_tag_count(
    stream: &str,
    existing: &BTreeMap<String, String>,
    added: &BTreeMap<String, String>,
    account: &str,
) -> Result<(), ApiError> {
    let total = existing.len() + added.keys().filter(|k| !existing.contains_key(*k)).count();
    if total > crate::stream::MAX_TAGS {
        return Err(ApiError::invalid(format!(
            "Failed to add tags to stream {stream} under account {account} because a given stream cannot have more than {} tags associated with it.",
            crate::stream::MAX_TAGS
        )));
    }
    Ok(())
}

impl Kinesis<'_> {
    pub(super) fn update_stream_mode(&self, input: &Input<'_>) -> Reply {
        let arn = input.str("StreamARN")?;
        let stream = self.ctx.store.stream(stream_name_of_arn(arn)?)?;
        let details = input
            .opt_object("StreamModeDetails")?
            .ok_or_else(|| ApiError::validation("StreamModeDetails is required"))?;
        stream.set_mode(parse_mode(details.str("StreamMode")?)?)?;
        Ok(json!({}))
    }

    pub(super) fn update_max_record_size(&self, input: &Input<'_>) -> Reply {
        let stream = self.stream(input)?;
        let bytes = kib_to_bytes(input.i64("MaxRecordSizeInKiB")?)?;
        stream.set_max_record_bytes(bytes)?;
        Ok(json!({}))
    }

    /// Increase/DecreaseStreamRetentionPeriod, refused in AWS's words.
    pub(super) fn change_retention(&self, input: &Input<'_>, increase: bool) -> Reply {
        let stream = self.stream(input)?;
        let hours = input.i64("RetentionPeriodHours")?;
        let (min, max) = (
            i64::from(crate::stream::MIN_RETENTION_HOURS),
            i64::from(crate::stream::MAX_RETENTION_HOURS),
        );
        if hours < min {
            return Err(ApiError::invalid(format!(
                "Minimum allowed retention period is {min} hours. Requested retention period ({hours} hours) is too short."
            )));
        }
        if hours > max {
            return Err(ApiError::invalid(format!(
                "Maximum allowed retention period is {max} hours. Requested retention period ({hours} hours) is too long."
            )));
        }
        let current = i64::from(stream.describe().retention_hours);
        if increase && hours < current {
            return Err(ApiError::invalid(format!(
                "Requested retention period ({hours} hours) for stream {} can not be shorter than existing retention period ({current} hours). Use DecreaseRetentionPeriod API.",
                stream.name()
            )));
        }
        if !increase && hours > current {
            return Err(ApiError::invalid(format!(
                "Requested retention period ({hours} hours) for stream {} can not be longer than existing retention period ({current} hours). Use IncreaseRetentionPeriod API.",
                stream.name()
            )));
        }
        // Within bounds: the conversion cannot fail.
        stream.set_retention_hours(u32::try_from(hours).unwrap_or(u32::MAX), increase)?;
        Ok(json!({}))
    }

    pub(super) fn add_tags(&self, input: &Input<'_>) -> Reply {
        let stream = self.stream(input)?;
        let tags = input
            .opt_string_map("Tags")?
            .ok_or_else(|| ApiError::validation("Tags is required"))?;
        check_tag_characters(tags.keys().chain(tags.values()))?;
        check_tag_count(
            stream.name(),
            &stream.describe().tags,
            &tags,
            &self.ctx.options.account_id,
        )?;
        stream.add_tags(&tags)?;
        Ok(json!({}))
    }

    pub(super) fn remove_tags(&self, input: &Input<'_>) -> Reply {
        let stream = self.stream(input)?;
        let keys = input
            .opt_string_list("TagKeys")?
            .ok_or_else(|| ApiError::validation("TagKeys is required"))?;
        check_tag_characters(keys.iter())?;
        stream.remove_tags(&keys)?;
        Ok(json!({}))
    }

    pub(super) fn list_tags(&self, input: &Input<'_>) -> Reply {
        let stream = self.stream(input)?;
        tag_page(input, &stream.describe().tags)
    }

    /// The stream a resource ARN names, and the settings key of the resource's policy (a
    /// consumer's policy is kept in its stream's settings under its own key).
    pub(super) fn policy_resource(
        &self,
        input: &Input<'_>,
    ) -> Result<(Arc<Stream>, String), ApiError> {
        let (stream, consumer) = self.tagged(input)?;
        let key = match consumer {
            Some(c) => format!("{POLICY}/consumer/{}", c.name),
            None => POLICY.to_string(),
        };
        Ok((stream, key))
    }

    /// The stream, and the registered consumer if the resource ARN names one.
    pub(super) fn tagged(
        &self,
        input: &Input<'_>,
    ) -> Result<(Arc<Stream>, Option<ConsumerEntry>), ApiError> {
        let arn = input.str("ResourceARN")?;
        if arn.contains("/consumer/") {
            let fields = serde_json::json!({ "ConsumerARN": arn });
            let (stream, consumer) = self.consumer(&Input::new(&fields)?)?;
            return Ok((stream, Some(consumer)));
        }
        Ok((self.ctx.store.stream(stream_name_of_arn(arn)?)?, None))
    }

    pub(super) fn tag_resource(&self, input: &Input<'_>) -> Reply {
        let (stream, consumer) = self.tagged(input)?;
        let tags = input
            .opt_string_map("Tags")?
            .ok_or_else(|| ApiError::validation("Tags is required"))?;
        check_tag_characters(tags.keys().chain(tags.values()))?;
        match consumer {
            Some(c) => stream.tag_consumer(&c.name, &tags, &[])?,
            None => {
                let account = &self.ctx.options.account_id;
                check_tag_count(stream.name(), &stream.describe().tags, &tags, account)?;
                stream.add_tags(&tags)?
            }
        }
        Ok(json!({}))
    }

    pub(super) fn untag_resource(&self, input: &Input<'_>) -> Reply {
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

    pub(super) fn list_tags_for_resource(&self, input: &Input<'_>) -> Reply {
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
    pub(super) fn stream_encryption(&self, input: &Input<'_>, start: bool) -> Reply {
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
    pub(super) fn enhanced_monitoring(&self, input: &Input<'_>, enable: bool) -> Reply {
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
    pub(super) fn put_resource_policy(&self, input: &Input<'_>) -> Reply {
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

    pub(super) fn get_resource_policy(&self, input: &Input<'_>) -> Reply {
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

    pub(super) fn delete_resource_policy(&self, input: &Input<'_>) -> Reply {
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
    pub(super) fn describe_account_settings(&self) -> Reply {
        let settings = self.ctx.store.settings()?;
        match settings.get(BILLING_COMMITMENT) {
            Some(v) => Ok(json!({ "MinimumThroughputBillingCommitment": v })),
            None => Ok(json!({})),
        }
    }

    pub(super) fn update_account_settings(&self, input: &Input<'_>) -> Reply {
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
    pub(super) fn update_warm_throughput(&self, input: &Input<'_>) -> Reply {
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
}

/// Stream settings kept for the API (keys of `StreamDescription::settings`).
pub(super) const ENCRYPTION_TYPE: &str = "EncryptionType";
pub(super) const KEY_ID: &str = "KeyId";
pub(super) const SHARD_LEVEL_METRICS: &str = "ShardLevelMetrics";
pub(super) const POLICY: &str = "Policy";
pub(super) const WARM_THROUGHPUT: &str = "WarmThroughputMiBps";
/// Store setting: the account's MinimumThroughputBillingCommitment.
pub(super) const BILLING_COMMITMENT: &str = "MinimumThroughputBillingCommitment";
/// Kinesis's shard-level metrics (what `ALL` stands for).
pub(super) const METRICS: [&str; 7] = [
    "IncomingBytes",
    "IncomingRecords",
    "OutgoingBytes",
    "OutgoingRecords",
    "WriteProvisionedThroughputExceeded",
    "ReadProvisionedThroughputExceeded",
    "IteratorAgeMilliseconds",
];

pub(super) fn encryption_type(settings: &BTreeMap<String, Value>) -> &str {
    settings
        .get(ENCRYPTION_TYPE)
        .and_then(Value::as_str)
        .unwrap_or("NONE")
}

pub(super) fn shard_level_metrics(settings: &BTreeMap<String, Value>) -> Vec<String> {
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

pub(super) fn warm_throughput(settings: &BTreeMap<String, Value>) -> Value {
    match settings.get(WARM_THROUGHPUT) {
        Some(mibps) => json!({ "TargetMiBps": mibps, "CurrentMiBps": mibps }),
        None => Value::Null,
    }
}
