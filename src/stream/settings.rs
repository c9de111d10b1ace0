//! A stream's settings: mode, throughput limits, retention period, record size, tags, the
//! settings kept for the wire API, and registered (fan-out) consumers.

use std::collections::BTreeMap;

use super::{check_resource_name, check_retention, Stream};
use crate::error::{Error, Result};
use crate::manifest::{ConsumerEntry, StreamMode, StreamTiering};

/// Most tags a stream (or a registered consumer) may have (Kinesis: 50).
pub const MAX_TAGS: usize = 50;

/// Tag keys take 1 to 128 characters, values up to 256.
pub(crate) fn check_tags(tags: &BTreeMap<String, String>) -> Result<()> {
    for (k, v) in tags {
        if !(1..=128).contains(&k.chars().count()) || v.chars().count() > 256 {
            return Err(Error::invalid(
                "Tags",
                format!("tag {k:?}: keys take 1 to 128 characters, values up to 256"),
            ));
        }
    }
    Ok(())
}

/// Most registered consumers a stream may have (Kinesis: 20).
pub const MAX_CONSUMERS: usize = 20;

impl Stream {
    /// Switches between provisioned and on-demand capacity (Kinesis UpdateStreamMode).
    pub fn set_mode(&self, mode: StreamMode) -> Result<()> {
        let mut topology = self.write_topology();
        self.update_manifest(&mut topology, |m| {
            m.mode = mode;
            Ok(())
        })
    }

    /// Turns the per-shard throughput limits on or off for this stream (`None`: the store's
    /// default).
    pub fn set_throughput_limits(&self, enforce: Option<bool>) -> Result<()> {
        let mut topology = self.write_topology();
        self.update_manifest(&mut topology, |m| {
            m.throughput_limits = enforce;
            Ok(())
        })
    }

    /// Sets the stream's own tiering in a tiered store (`None`: the store's); the next tiering
    /// round follows it.
    pub fn set_tiering(&self, tiering: Option<StreamTiering>) -> Result<()> {
        let mut topology = self.write_topology();
        self.update_manifest(&mut topology, |m| {
            m.tiering = tiering;
            Ok(())
        })
    }

    /// Sets the retention period (24 to 8,760 hours); `increase` says which way it may move, as
    /// Kinesis's IncreaseStreamRetentionPeriod and DecreaseStreamRetentionPeriod require.
    pub fn set_retention_hours(&self, hours: u32, increase: bool) -> Result<()> {
        check_retention(hours)?;
        let mut topology = self.write_topology();
        let current = topology.manifest.retention_hours;
        if (increase && hours < current) || (!increase && hours > current) {
            return Err(Error::invalid(
                "RetentionPeriodHours",
                format!(
                    "{hours} would {} the current {current}",
                    if increase { "decrease" } else { "increase" }
                ),
            ));
        }
        self.update_manifest(&mut topology, |m| {
            m.retention_hours = hours;
            Ok(())
        })
    }

    /// Sets the largest record (data + partition key): 1 MiB to 10 MiB, in whole KiB.
    pub fn set_max_record_bytes(&self, bytes: usize) -> Result<()> {
        if !(1024 * 1024..=10 * 1024 * 1024).contains(&bytes) || bytes % 1024 != 0 {
            return Err(Error::invalid(
                "MaxRecordSizeInKiB",
                format!("{bytes} bytes is not 1024 to 10240 KiB"),
            ));
        }
        let mut topology = self.write_topology();
        self.update_manifest(&mut topology, |m| {
            m.max_record_bytes = bytes;
            Ok(())
        })?;
        // Open shards keep their old limit until reopened; drop them so the next use reopens.
        for slot in topology.shards.values() {
            *slot.shard.lock().unwrap_or_else(|e| e.into_inner()) = None;
        }
        Ok(())
    }

    /// Adds or replaces tags (at most 50 per stream).
    pub fn add_tags(&self, tags: &BTreeMap<String, String>) -> Result<()> {
        check_tags(tags)?;
        let mut topology = self.write_topology();
        self.update_manifest(&mut topology, |m| {
            m.tags
                .extend(tags.iter().map(|(k, v)| (k.clone(), v.clone())));
            if m.tags.len() > 50 {
                return Err(Error::LimitExceeded {
                    reason: format!("{} tags; a stream has at most 50", m.tags.len()),
                });
            }
            Ok(())
        })
    }

    /// Changes the settings the stream keeps for the wire API but does not act on (encryption,
    /// enhanced monitoring, resource policy, warm throughput), persisted in its manifest.
    pub fn modify_settings(
        &self,
        change: impl FnOnce(&mut BTreeMap<String, serde_json::Value>) -> Result<()>,
    ) -> Result<()> {
        let mut topology = self.write_topology();
        self.update_manifest(&mut topology, |m| change(&mut m.settings))
    }

    /// Registers a consumer (Kinesis RegisterStreamConsumer): at most 20 per stream, names
    /// unique. Active at once.
    pub fn register_consumer(
        &self,
        name: &str,
        tags: &BTreeMap<String, String>,
    ) -> Result<ConsumerEntry> {
        check_resource_name("ConsumerName", name, 128)?;
        check_tags(tags)?;
        let entry = ConsumerEntry {
            name: name.to_string(),
            created_ms: self.context.clock.now_ms(),
            tags: tags.clone(),
        };
        let mut topology = self.write_topology();
        self.update_manifest(&mut topology, |m| {
            if m.consumers.iter().any(|c| c.name == name) {
                return Err(Error::ResourceInUse {
                    kind: "consumer",
                    name: name.to_string(),
                    reason: format!("stream {} has a consumer of that name", m.name),
                });
            }
            if m.consumers.len() >= MAX_CONSUMERS {
                return Err(Error::LimitExceeded {
                    reason: format!(
                        "stream {} has {MAX_CONSUMERS} registered consumers, the most it may have",
                        m.name
                    ),
                });
            }
            m.consumers.push(entry.clone());
            Ok(())
        })?;
        Ok(entry)
    }

    /// Adds tags to and removes tags from a registered consumer (at most 50 tags).
    pub fn tag_consumer(
        &self,
        name: &str,
        add: &BTreeMap<String, String>,
        remove: &[String],
    ) -> Result<()> {
        check_tags(add)?;
        let mut topology = self.write_topology();
        self.update_manifest(&mut topology, |m| {
            let consumer = m
                .consumers
                .iter_mut()
                .find(|c| c.name == name)
                .ok_or_else(|| Error::ResourceNotFound {
                    kind: "consumer",
                    name: name.to_string(),
                })?;
            consumer
                .tags
                .extend(add.iter().map(|(k, v)| (k.clone(), v.clone())));
            for key in remove {
                consumer.tags.remove(key);
            }
            if consumer.tags.len() > 50 {
                return Err(Error::LimitExceeded {
                    reason: format!("{} tags; a consumer has at most 50", consumer.tags.len()),
                });
            }
            Ok(())
        })
    }

    /// Deregisters a consumer ([`Error::ResourceNotFound`] if it is not registered).
    pub fn deregister_consumer(&self, name: &str) -> Result<()> {
        let mut topology = self.write_topology();
        self.update_manifest(&mut topology, |m| {
            let before = m.consumers.len();
            m.consumers.retain(|c| c.name != name);
            if m.consumers.len() == before {
                return Err(Error::ResourceNotFound {
                    kind: "consumer",
                    name: name.to_string(),
                });
            }
            Ok(())
        })
    }

    /// Removes tags.
    pub fn remove_tags(&self, keys: &[String]) -> Result<()> {
        let mut topology = self.write_topology();
        self.update_manifest(&mut topology, |m| {
            for k in keys {
                m.tags.remove(k);
            }
            Ok(())
        })
    }
}
