//! What a stream shows of itself: `describe`, `list_shards` and its paged form with NextTokens.

use std::collections::BTreeMap;

use super::Stream;
use crate::error::{Error, Result};
use crate::hash_key::{HashKeyRange, ShardId};
use crate::manifest::{ConsumerEntry, ShardEntry, StreamMode, StreamTiering};
use crate::sequence::SequenceNumber;
use crate::types::Offset;

/// A shard as describe and list_shards show it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShardDescription {
    /// Its id.
    pub shard_id: ShardId,
    /// The shard it was split from, or the first it was merged from.
    pub parent_shard_id: Option<ShardId>,
    /// The second shard it was merged from.
    pub adjacent_parent_shard_id: Option<ShardId>,
    /// The hash keys it owns.
    pub hash_key_range: HashKeyRange,
    /// The sequence number of its first record, ever.
    pub starting_sequence_number: SequenceNumber,
    /// Once closed: the largest sequence number it can hold.
    pub ending_sequence_number: Option<SequenceNumber>,
}

/// What describe_stream returns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamDescription {
    /// The stream's name.
    pub name: String,
    /// Always "ACTIVE": shardlog's operations complete before they return.
    pub status: &'static str,
    /// Provisioned or on-demand.
    pub mode: StreamMode,
    /// Whether the per-shard throughput limits are enforced.
    pub throughput_limits: bool,
    /// Retention in hours.
    pub retention_hours: u32,
    /// Creation time, ms since the Unix epoch.
    pub created_ms: i64,
    /// Largest record, in bytes.
    pub max_record_bytes: usize,
    /// Open shards.
    pub open_shard_count: usize,
    /// Every shard not yet removed by retention, in index order.
    pub shards: Vec<ShardDescription>,
    /// Tags.
    pub tags: BTreeMap<String, String>,
    /// Settings kept for the wire API (see [`Stream::modify_settings`]).
    pub settings: BTreeMap<String, serde_json::Value>,
    /// Registered consumers, in registration order.
    pub consumers: Vec<ConsumerEntry>,
    /// Its own tiering setting (`None`: the store's).
    pub tiering: Option<StreamTiering>,
}

/// Which shards list_shards returns (Kinesis ShardFilter).
#[derive(Debug, Clone, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub enum ShardFilter {
    /// All shards.
    #[default]
    All,
    /// Shards after this shard id (index order).
    AfterShardId(String),
    /// Open shards at the trim horizon: those holding the oldest records still stored.
    AtTrimHorizon,
    /// All shards from the trim horizon on (every shard still listed).
    FromTrimHorizon,
    /// Open shards only.
    AtLatest,
    /// Shards open at this time (ms since the Unix epoch).
    AtTimestamp(i64),
    /// Shards open at or after this time.
    FromTimestamp(i64),
}

/// One page of a paged list_shards.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShardPage {
    /// Shards of this page, in index order.
    pub shards: Vec<ShardDescription>,
    /// Pass to [`Stream::list_shards_page`] for the next page; `None` on the last page. Valid for
    /// 5 minutes, like Kinesis's.
    pub next_token: Option<String>,
}

/// What a paged list_shards asks for (Kinesis ListShards: a filter, or a NextToken, and
/// MaxResults from 1 to 10,000).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ListShards<'a> {
    /// The first page of shards matching a filter.
    First(ShardFilter),
    /// The page after the one that returned this token.
    Next(&'a str),
}

/// Longest a list_shards page may be.
pub const MAX_LIST_SHARDS: usize = 10_000;
const NEXT_TOKEN_TTL_MS: i64 = 300_000;

#[derive(serde::Serialize, serde::Deserialize)]
struct NextToken {
    /// The stream's name: a ListShards call may give only the token.
    #[serde(default)]
    stream: String,
    /// The stream's creation time: a token does not page through a re-created stream.
    created_ms: i64,
    issued_ms: i64,
    after_index: u32,
    filter: ShardFilter,
}

/// The stream a list_shards NextToken pages through (`None` if it is not such a token).
pub fn stream_of_next_token(token: &str) -> Option<String> {
    use base64::Engine;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(token)
        .ok()?;
    let token: NextToken = serde_json::from_slice(&bytes).ok()?;
    (!token.stream.is_empty()).then_some(token.stream)
}

fn describe_shard(entry: &ShardEntry) -> ShardDescription {
    ShardDescription {
        shard_id: ShardId(entry.index),
        parent_shard_id: entry.parent.map(ShardId),
        adjacent_parent_shard_id: entry.adjacent_parent.map(ShardId),
        hash_key_range: entry.hash_range,
        starting_sequence_number: SequenceNumber::new(entry.index, Offset::new(0)),
        ending_sequence_number: entry
            .closed
            .map(|c| SequenceNumber::new(entry.index, Offset::new(c.end_offset.saturating_sub(1)))),
    }
}

impl Stream {
    /// The stream's settings and shards.
    pub fn describe(&self) -> StreamDescription {
        let topology = self.read_topology();
        let m = &topology.manifest;
        StreamDescription {
            name: m.name.clone(),
            status: "ACTIVE",
            mode: m.mode,
            throughput_limits: self.limits_apply(m),
            retention_hours: m.retention_hours,
            created_ms: m.created_ms,
            max_record_bytes: m.max_record_bytes,
            open_shard_count: topology.routes.len(),
            shards: m.shards.iter().map(describe_shard).collect(),
            tags: m.tags.clone(),
            settings: m.settings.clone(),
            consumers: m.consumers.clone(),
            tiering: m.tiering,
        }
    }

    /// Shards matching `filter`, in index order.
    pub fn list_shards(&self, filter: &ShardFilter) -> Result<Vec<ShardDescription>> {
        let topology = self.read_topology();
        let shards = &topology.manifest.shards;
        let after = match filter {
            ShardFilter::AfterShardId(id) => Some(
                ShardId::parse_loose(id)
                    .ok_or_else(|| {
                        Error::invalid("ShardFilter.ShardId", format!("{id:?} is not a shard id"))
                    })?
                    .index(),
            ),
            _ => None,
        };
        // The shards holding the trim horizon: those with no parent still listed.
        let is_root = |s: &ShardEntry| {
            s.parent.and_then(|p| topology.entry(p)).is_none()
                && s.adjacent_parent.and_then(|p| topology.entry(p)).is_none()
        };
        let open_at =
            |s: &ShardEntry, t: i64| s.created_ms <= t && s.closed.is_none_or(|c| c.closed_ms > t);
        Ok(shards
            .iter()
            .filter(|s| match filter {
                ShardFilter::All | ShardFilter::FromTrimHorizon => true,
                ShardFilter::AfterShardId(_) => Some(s.index) > after,
                ShardFilter::AtTrimHorizon => is_root(s),
                ShardFilter::AtLatest => s.closed.is_none(),
                ShardFilter::AtTimestamp(t) => open_at(s, *t) || (is_root(s) && s.created_ms > *t),
                ShardFilter::FromTimestamp(t) => s.closed.is_none_or(|c| c.closed_ms > *t),
            })
            .map(describe_shard)
            .collect())
    }

    /// Shards page by page: at most `max_results` (1 to 10,000) at a time, with a token for the
    /// next page.
    pub fn list_shards_page(
        &self,
        request: ListShards<'_>,
        max_results: usize,
    ) -> Result<ShardPage> {
        use base64::Engine;
        let engine = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        if !(1..=MAX_LIST_SHARDS).contains(&max_results) {
            return Err(Error::invalid(
                "MaxResults",
                format!("{max_results} is outside 1..={MAX_LIST_SHARDS}"),
            ));
        }
        let now = self.context.clock.now_ms();
        let created_ms = self.created_ms();
        let (filter, after) = match request {
            ListShards::First(filter) => (filter, None),
            ListShards::Next(text) => {
                let token: NextToken = engine
                    .decode(text)
                    .ok()
                    .and_then(|bytes| serde_json::from_slice(&bytes).ok())
                    .filter(|t: &NextToken| t.created_ms == created_ms)
                    .ok_or_else(|| {
                        Error::invalid("NextToken", "not a list_shards token of this stream")
                    })?;
                if now.saturating_sub(token.issued_ms) > NEXT_TOKEN_TTL_MS {
                    return Err(Error::ExpiredNextToken {
                        reason: format!(
                            "issued {} ms ago; tokens last 300 s",
                            now - token.issued_ms
                        ),
                    });
                }
                (token.filter, Some(token.after_index))
            }
        };
        let all = self.list_shards(&filter)?;
        let mut rest = all
            .into_iter()
            .filter(|s| after.is_none_or(|a| s.shard_id.index() > a))
            .peekable();
        let shards: Vec<ShardDescription> = rest.by_ref().take(max_results).collect();
        let next_token = match (rest.peek(), shards.last()) {
            (Some(_), Some(last)) => {
                let token = NextToken {
                    stream: self.name.clone(),
                    created_ms,
                    issued_ms: now,
                    after_index: last.shard_id.index(),
                    filter,
                };
                let json = serde_json::to_vec(&token).expect("a token always serializes");
                Some(engine.encode(json))
            }
            _ => None,
        };
        Ok(ShardPage { shards, next_token })
    }
}
