//! A read replica's server (`serve --replica-of`): the operations it serves (those that change
//! nothing) and the refusal of every other.

use super::error::ApiError;
use super::protocol::Api;

/// Kinesis operations that only read.
const KINESIS_READS: [&str; 14] = [
    "DescribeStream",
    "DescribeStreamSummary",
    "DescribeStreamConsumer",
    "DescribeLimits",
    "DescribeAccountSettings",
    "GetRecords",
    "GetShardIterator",
    "GetResourcePolicy",
    "ListShards",
    "ListStreams",
    "ListStreamConsumers",
    "ListTagsForStream",
    "ListTagsForResource",
    "SubscribeToShard",
];

/// Firehose operations that only read.
const FIREHOSE_READS: [&str; 3] = [
    "DescribeDeliveryStream",
    "ListDeliveryStreams",
    "ListTagsForDeliveryStream",
];

/// `Ok` unless this server is a replica and `operation` would change something: then an
/// `AccessDeniedException` naming the primary's bucket (SDKs do not retry it).
pub(super) fn check_writable(
    replica_of: Option<&str>,
    api: Api,
    operation: &str,
) -> Result<(), ApiError> {
    let Some(primary) = replica_of else {
        return Ok(());
    };
    let reads: &[&str] = match api {
        Api::Kinesis => &KINESIS_READS,
        Api::Firehose => &FIREHOSE_READS,
        // Leases and checkpoints are writes: consumer groups run against the primary.
        Api::ConsumerGroups => &[],
    };
    if reads.contains(&operation) {
        return Ok(());
    }
    Err(ApiError::new(
        400,
        "AccessDeniedException",
        format!(
            "this server is a read replica of {primary}: {operation} changes data, send it to the primary that tiers there"
        ),
    ))
}
