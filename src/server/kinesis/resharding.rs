//! SplitShard, MergeShards and UpdateShardCount.

use serde_json::json;

use crate::error::Error;
use crate::hash_key::parse_hash_key;
use crate::server::error::ApiError;
use crate::server::protocol::Input;

use super::{positive_u32, Kinesis, Reply};

impl Kinesis<'_> {
    pub(super) fn split_shard(&self, input: &Input<'_>) -> Reply {
        let stream = self.stream(input)?;
        let key_text = input.str("NewStartingHashKey")?;
        let key = parse_hash_key(key_text).ok_or_else(|| {
            Error::invalid(
                "NewStartingHashKey",
                format!("{key_text:?} is not a decimal 128-bit number"),
            )
        })?;
        let shard = stream.shard_by_id(input.str("ShardToSplit")?)?;
        stream.split_shard(shard, key)?;
        Ok(json!({}))
    }

    pub(super) fn merge_shards(&self, input: &Input<'_>) -> Reply {
        let stream = self.stream(input)?;
        let shard = stream.shard_by_id(input.str("ShardToMerge")?)?;
        let adjacent = stream.shard_by_id(input.str("AdjacentShardToMerge")?)?;
        stream.merge_shards(shard, adjacent)?;
        Ok(json!({}))
    }

    pub(super) fn update_shard_count(&self, input: &Input<'_>) -> Reply {
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
}
