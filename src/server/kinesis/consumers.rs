//! Registered (enhanced fan-out) consumers: Register/Deregister/Describe/ListStreamConsumers.

use std::sync::Arc;

use serde_json::{json, Value};

use crate::server::error::ApiError;
use crate::server::protocol::{timestamp, Input};
use crate::stream::Stream;
use crate::ConsumerEntry;

use super::{decode_token, encode_token, stream_name_of_arn, Kinesis, Reply};

impl Kinesis<'_> {
    pub(super) fn consumer_arn(&self, stream: &str, consumer: &ConsumerEntry) -> String {
        format!(
            "{}/consumer/{}:{}",
            self.arn(stream),
            consumer.name,
            consumer.created_ms.div_euclid(1000)
        )
    }

    pub(super) fn consumer_json(&self, stream: &str, consumer: &ConsumerEntry) -> Value {
        let arn = self.consumer_arn(stream, consumer);
        let status = if self.ctx.lifecycle.consumer_creating(&arn) {
            "CREATING"
        } else {
            "ACTIVE"
        };
        json!({
            "ConsumerName": consumer.name,
            "ConsumerARN": arn,
            "ConsumerStatus": status,
            "ConsumerCreationTimestamp": timestamp(consumer.created_ms),
        })
    }

    /// The stream and registered consumer a request names: by ConsumerARN, or by StreamARN and
    /// ConsumerName.
    pub(super) fn consumer(
        &self,
        input: &Input<'_>,
    ) -> Result<(Arc<Stream>, ConsumerEntry), ApiError> {
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

    pub(super) fn register_consumer(&self, input: &Input<'_>) -> Reply {
        let stream = self
            .ctx
            .store
            .stream(stream_name_of_arn(input.str("StreamARN")?)?)?;
        let tags = input.opt_string_map("Tags")?.unwrap_or_default();
        let consumer = stream.register_consumer(input.str("ConsumerName")?, &tags)?;
        self.ctx
            .lifecycle
            .begin_consumer(&self.consumer_arn(stream.name(), &consumer));
        Ok(json!({ "Consumer": self.consumer_json(stream.name(), &consumer) }))
    }

    pub(super) fn deregister_consumer(&self, input: &Input<'_>) -> Reply {
        let (stream, consumer) = self.consumer(input)?;
        stream.deregister_consumer(&consumer.name)?;
        Ok(json!({}))
    }

    pub(super) fn describe_consumer(&self, input: &Input<'_>) -> Reply {
        let (stream, consumer) = self.consumer(input)?;
        let mut description = self.consumer_json(stream.name(), &consumer);
        description["StreamARN"] = json!(self.arn(stream.name()));
        Ok(json!({ "ConsumerDescription": description }))
    }

    pub(super) fn list_consumers(&self, input: &Input<'_>) -> Reply {
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
}

/// (stream, consumer, creation seconds) of a consumer ARN
/// (`arn:aws:kinesis:REGION:ACCOUNT:stream/NAME/consumer/CONSUMER:SECONDS`).
pub(super) fn parse_consumer_arn(arn: &str) -> Result<(&str, &str, i64), ApiError> {
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
