//! Firehose operations (`Firehose_20150804.*`) over the store's delivery streams, as
//! `firehose/2015-08-04` defines them. S3-style destinations map to a local directory (one
//! subdirectory per bucket) or to an S3 API endpoint, as the server is configured.

use std::collections::BTreeMap;

use serde_json::{json, Value};

use super::context::Context;
use super::error::ApiError;
use super::kinesis::stream_name_of_arn;
use super::protocol::{tag_page, timestamp, Input, Output};
use crate::firehose::{
    BufferingHints, Compression, DeliveryConfig, DeliveryStreamConfig, DeliveryStreamDescription,
    DestinationConfig, Firehose, SourceStart,
};

type Reply = Result<Value, ApiError>;

/// The one destination a delivery stream has.
const DESTINATION_ID: &str = "destinationId-000000000001";
/// Settings that hold what the API was given verbatim, returned by describe.
const KEPT_S3_SETTINGS: [&str; 8] = [
    "RoleARN",
    "EncryptionConfiguration",
    "CloudWatchLoggingOptions",
    "S3BackupMode",
    "FileExtension",
    "CustomTimeZone",
    "DataFormatConversionConfiguration",
    "DynamicPartitioningConfiguration",
];

/// Every operation [`call`] answers (metrics label only these).
pub(crate) const OPERATIONS: [&str; 12] = [
    "CreateDeliveryStream",
    "DeleteDeliveryStream",
    "DescribeDeliveryStream",
    "ListDeliveryStreams",
    "PutRecord",
    "PutRecordBatch",
    "UpdateDestination",
    "TagDeliveryStream",
    "UntagDeliveryStream",
    "ListTagsForDeliveryStream",
    "StartDeliveryStreamEncryption",
    "StopDeliveryStreamEncryption",
];

/// Runs one Firehose operation.
pub(crate) fn call(ctx: &Context, operation: &str, body: &Value) -> Result<Output, ApiError> {
    dispatch(ctx, operation, body).map(Output::from)
}

fn dispatch(ctx: &Context, operation: &str, body: &Value) -> Reply {
    let input = Input::new(body)?;
    let Some(firehose) = ctx.firehose.as_deref() else {
        return Err(ApiError::new(
            400,
            "UnknownOperationException",
            "this server runs without Firehose",
        ));
    };
    let api = FirehoseApi { ctx, firehose };
    match operation {
        "CreateDeliveryStream" => api.create(&input),
        "DeleteDeliveryStream" => api.delete(&input),
        "DescribeDeliveryStream" => api.describe(&input),
        "ListDeliveryStreams" => api.list(&input),
        "PutRecord" => api.put_record(&input),
        "PutRecordBatch" => api.put_record_batch(&input),
        "UpdateDestination" => api.update_destination(&input),
        "TagDeliveryStream" => api.tag(&input),
        "UntagDeliveryStream" => api.untag(&input),
        "ListTagsForDeliveryStream" => api.list_tags(&input),
        "StartDeliveryStreamEncryption" => api.encryption(&input, true),
        "StopDeliveryStreamEncryption" => api.encryption(&input, false),
        other => Err(ApiError::new(
            400,
            "UnknownOperationException",
            format!("Firehose has no operation {other:?}"),
        )),
    }
}

struct FirehoseApi<'a> {
    ctx: &'a Context,
    firehose: &'a Firehose,
}

impl FirehoseApi<'_> {
    fn arn(&self, name: &str) -> String {
        format!(
            "arn:aws:firehose:{}:{}:deliverystream/{name}",
            self.ctx.options.region, self.ctx.options.account_id
        )
    }

    fn name<'i>(&self, input: &Input<'i>) -> Result<&'i str, ApiError> {
        let name = input.str("DeliveryStreamName")?;
        crate::stream::check_resource_name("DeliveryStreamName", name, 64)
            .map_err(|e| ApiError::validation(e.to_string()))?;
        Ok(name)
    }

    /// Where a bucket's objects go: the bucket by name, resolved against the object store the
    /// delivery service runs with each time it opens.
    fn destination(&self, bucket: &str) -> DestinationConfig {
        DestinationConfig::Bucket {
            bucket: bucket.to_string(),
        }
    }

    fn create(&self, input: &Input<'_>) -> Reply {
        let name = self.name(input)?;
        let kind = input.opt_str("DeliveryStreamType")?.unwrap_or("DirectPut");
        let mut settings = BTreeMap::new();
        settings.insert("DeliveryStreamType".to_string(), json!(kind));
        let source_stream = match kind {
            "DirectPut" => None,
            "KinesisStreamAsSource" => {
                let source = input.opt_object("KinesisStreamSourceConfiguration")?.ok_or_else(|| {
                    ApiError::invalid(
                        "KinesisStreamAsSource needs a KinesisStreamSourceConfiguration",
                    )
                })?;
                let arn = source.str("KinesisStreamARN")?;
                let stream = stream_name_of_arn(arn)?.to_string();
                settings.insert(
                    "KinesisStreamSourceConfiguration".to_string(),
                    json!({ "KinesisStreamARN": arn, "RoleARN": source.opt_str("RoleARN")? }),
                );
                Some(stream)
            }
            other => {
                return Err(ApiError::invalid(format!(
                    "DeliveryStreamType {other} is not supported by shardlog (DirectPut or KinesisStreamAsSource)"
                )))
            }
        };
        let (s3, extended) = match (
            input.opt_object("ExtendedS3DestinationConfiguration")?,
            input.opt_object("S3DestinationConfiguration")?,
        ) {
            (Some(e), None) => (e, true),
            (None, Some(s)) => (s, false),
            (Some(_), Some(_)) => {
                return Err(ApiError::invalid(
                    "give one of ExtendedS3DestinationConfiguration and S3DestinationConfiguration",
                ))
            }
            (None, None) => {
                return Err(ApiError::invalid(
                    "shardlog delivers to S3-style destinations only: give ExtendedS3DestinationConfiguration (or S3DestinationConfiguration)",
                ))
            }
        };
        settings.insert("ExtendedS3".to_string(), json!(extended));
        let mut delivery = DeliveryConfig::default();
        let mut bucket = None;
        let transform = apply_s3(&s3, &mut delivery, &mut settings, &mut bucket, None)?;
        let bucket = bucket.ok_or_else(|| ApiError::validation("BucketARN is required"))?;
        if let Some(encryption) = input.opt_object("DeliveryStreamEncryptionConfigurationInput")? {
            settings.insert(
                "DeliveryStreamEncryption".to_string(),
                encryption_setting(&encryption, true)?,
            );
        }
        let tags = match input.opt_list("Tags")? {
            Some(list) => tag_list(list)?,
            None => BTreeMap::new(),
        };
        let config = DeliveryStreamConfig {
            delivery,
            destination: self.destination(&bucket),
            transform,
            source_stream,
            // Firehose reads a Kinesis source from LATEST.
            source_start: SourceStart::Latest,
            tags,
            settings,
        };
        self.firehose.create_delivery_stream(name, config)?;
        Ok(json!({ "DeliveryStreamARN": self.arn(name) }))
    }

    fn delete(&self, input: &Input<'_>) -> Reply {
        let name = self.name(input)?;
        let _force = input.opt_bool("AllowForceDelete")?;
        self.firehose.delete_delivery_stream(name)?;
        Ok(json!({}))
    }

    fn describe(&self, input: &Input<'_>) -> Reply {
        let name = self.name(input)?;
        if let Some(limit) = input.opt_i64("Limit")? {
            if !(1..=10_000).contains(&limit) {
                return Err(ApiError::invalid(format!(
                    "Limit {limit} is outside 1..=10000"
                )));
            }
        }
        let d = self.firehose.describe_delivery_stream(name)?;
        // The one destination is listed unless the caller starts after it.
        let after_ours = input
            .opt_str("ExclusiveStartDestinationId")?
            .is_some_and(|id| id >= DESTINATION_ID);
        let destinations = if after_ours {
            Vec::new()
        } else {
            vec![self.destination_description(&d)]
        };
        let kind = d
            .settings
            .get("DeliveryStreamType")
            .and_then(Value::as_str)
            .unwrap_or(if d.source_stream.is_some() {
                "KinesisStreamAsSource"
            } else {
                "DirectPut"
            })
            .to_string();
        let mut out = json!({
            "DeliveryStreamName": d.name,
            "DeliveryStreamARN": self.arn(&d.name),
            "DeliveryStreamStatus": d.status,
            "DeliveryStreamType": kind,
            "VersionId": d.version.to_string(),
            "CreateTimestamp": timestamp(d.created_ms),
            "Destinations": destinations,
            "HasMoreDestinations": false,
            "DeliveryStreamEncryptionConfiguration": d
                .settings
                .get("DeliveryStreamEncryption")
                .cloned()
                .unwrap_or_else(|| json!({ "Status": "DISABLED" })),
        });
        if let Some(ms) = d.updated_ms {
            out["LastUpdateTimestamp"] = timestamp(ms);
        }
        if let Some(source) = d.settings.get("KinesisStreamSourceConfiguration") {
            let mut description = source.clone();
            description["DeliveryStartTimestamp"] = timestamp(d.created_ms);
            out["Source"] = json!({ "KinesisStreamSourceDescription": description });
        }
        if let Some(error) = &d.stats.last_error {
            out["FailureDescription"] = json!({ "Type": "UNKNOWN_ERROR", "Details": error });
        }
        Ok(json!({ "DeliveryStreamDescription": out }))
    }

    fn destination_description(&self, d: &DeliveryStreamDescription) -> Value {
        let bucket = match &d.destination {
            DestinationConfig::LocalDirectory { path } => path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default(),
            DestinationConfig::S3(s3) => s3.bucket.clone(),
            DestinationConfig::Bucket { bucket } => bucket.clone(),
        };
        let mut s3 = json!({
            "RoleARN": d.settings.get("RoleARN").cloned().unwrap_or(json!("")),
            "BucketARN": format!("arn:aws:s3:::{bucket}"),
            "BufferingHints": {
                "SizeInMBs": d.config.buffering.size_mib,
                "IntervalInSeconds": d.config.buffering.interval_secs,
            },
            "CompressionFormat": d.config.compression.as_str(),
            "EncryptionConfiguration": d
                .settings
                .get("EncryptionConfiguration")
                .cloned()
                .unwrap_or_else(|| json!({ "NoEncryptionConfig": "NoEncryption" })),
        });
        if let Some(prefix) = &d.config.prefix {
            s3["Prefix"] = json!(prefix);
        }
        if let Some(prefix) = &d.config.error_output_prefix {
            s3["ErrorOutputPrefix"] = json!(prefix);
        }
        let mut extended = s3.clone();
        for key in KEPT_S3_SETTINGS.iter().skip(1) {
            if let Some(v) = d.settings.get(*key) {
                extended[*key] = v.clone();
                if *key == "CloudWatchLoggingOptions" {
                    s3[*key] = v.clone();
                }
            }
        }
        if let Some(v) = d.settings.get("ProcessingConfiguration") {
            extended["ProcessingConfiguration"] = v.clone();
        }
        if extended.get("S3BackupMode").is_none() {
            extended["S3BackupMode"] = json!("Disabled");
        }
        json!({
            "DestinationId": DESTINATION_ID,
            "S3DestinationDescription": s3,
            "ExtendedS3DestinationDescription": extended,
        })
    }

    fn list(&self, input: &Input<'_>) -> Reply {
        let limit = match input.opt_i64("Limit")? {
            None => 10,
            Some(n) if (1..=10_000).contains(&n) => n as usize,
            Some(n) => return Err(ApiError::invalid(format!("Limit {n} is outside 1..=10000"))),
        };
        let kind = input.opt_str("DeliveryStreamType")?;
        let after = input.opt_str("ExclusiveStartDeliveryStreamName")?;
        let names: Vec<String> = self
            .firehose
            .list_delivery_streams()
            .into_iter()
            .filter(|n| after.is_none_or(|a| n.as_str() > a))
            .filter(|n| {
                kind.is_none_or(|k| {
                    self.firehose
                        .describe_delivery_stream(n)
                        .is_ok_and(|d| match k {
                            "KinesisStreamAsSource" => d.source_stream.is_some(),
                            "DirectPut" => d.source_stream.is_none(),
                            _ => false,
                        })
                })
            })
            .collect();
        Ok(json!({
            "DeliveryStreamNames": names.iter().take(limit).collect::<Vec<_>>(),
            "HasMoreDeliveryStreams": names.len() > limit,
        }))
    }

    fn encrypted(&self, name: &str) -> bool {
        self.firehose.describe_delivery_stream(name).is_ok_and(|d| {
            d.settings
                .get("DeliveryStreamEncryption")
                .is_some_and(|e| e["Status"] == "ENABLED")
        })
    }

    fn put_record(&self, input: &Input<'_>) -> Reply {
        let name = self.name(input)?;
        let record = input
            .opt_object("Record")?
            .ok_or_else(|| ApiError::validation("Record is required"))?;
        let data = record.blob("Data")?;
        let stream = self.firehose.delivery_stream(name)?;
        let id = stream.put_record(&data)?;
        self.ctx.metrics.records_in(name, 1, data.len() as u64);
        Ok(json!({ "RecordId": id, "Encrypted": self.encrypted(name) }))
    }

    fn put_record_batch(&self, input: &Input<'_>) -> Reply {
        let name = self.name(input)?;
        let records = input
            .opt_list("Records")?
            .ok_or_else(|| ApiError::validation("Records is required"))?;
        let data: Vec<Vec<u8>> = records
            .iter()
            .map(|r| Input::new(r)?.blob("Data"))
            .collect::<Result<_, _>>()?;
        let stream = self.firehose.delivery_stream(name)?;
        let refs: Vec<&[u8]> = data.iter().map(Vec::as_slice).collect();
        let results = stream.put_record_batch(&refs)?;
        let failed = results.iter().filter(|r| r.is_err()).count();
        let stored: u64 = results
            .iter()
            .zip(&data)
            .filter(|(r, _)| r.is_ok())
            .map(|(_, d)| d.len() as u64)
            .sum();
        self.ctx
            .metrics
            .records_in(name, (results.len() - failed) as u64, stored);
        let responses: Vec<Value> = results
            .into_iter()
            .map(|r| match r {
                Ok(id) => json!({ "RecordId": id }),
                Err(f) => {
                    json!({ "ErrorCode": "InvalidArgumentException", "ErrorMessage": f.message })
                }
            })
            .collect();
        Ok(json!({
            "FailedPutCount": failed,
            "Encrypted": self.encrypted(name),
            "RequestResponses": responses,
        }))
    }

    fn update_destination(&self, input: &Input<'_>) -> Reply {
        let name = self.name(input)?;
        let version_text = input.str("CurrentDeliveryStreamVersionId")?;
        let version: u64 = version_text.parse().map_err(|_| {
            ApiError::validation(format!(
                "CurrentDeliveryStreamVersionId {version_text:?} is not a number"
            ))
        })?;
        let destination_id = input.str("DestinationId")?;
        if destination_id != DESTINATION_ID {
            return Err(ApiError::invalid(format!(
                "{name} has one destination, {DESTINATION_ID}, not {destination_id}"
            )));
        }
        let update =
            match (
                input.opt_object("ExtendedS3DestinationUpdate")?,
                input.opt_object("S3DestinationUpdate")?,
            ) {
                (Some(u), None) | (None, Some(u)) => u,
                (Some(_), Some(_)) => {
                    return Err(ApiError::invalid(
                        "give one of ExtendedS3DestinationUpdate and S3DestinationUpdate",
                    ))
                }
                (None, None) => return Err(ApiError::invalid(
                    "shardlog updates S3-style destinations only: give ExtendedS3DestinationUpdate",
                )),
            };
        let current = self.firehose.describe_delivery_stream(name)?;
        let mut delivery = current.config.clone();
        let mut settings = current.settings.clone();
        let mut bucket = None;
        let transform = apply_s3(
            &update,
            &mut delivery,
            &mut settings,
            &mut bucket,
            Some(current.transform.clone()),
        )?;
        if transform != current.transform {
            return Err(ApiError::invalid(
                "shardlog cannot change a delivery stream's Lambda transform with UpdateDestination yet",
            ));
        }
        let destination = match bucket {
            Some(bucket) => self.destination(&bucket),
            None => current.destination.clone(),
        };
        self.firehose.update_delivery_stream_settings(
            name,
            version,
            delivery,
            destination,
            Some(settings),
        )?;
        Ok(json!({}))
    }

    fn tag(&self, input: &Input<'_>) -> Reply {
        let name = self.name(input)?;
        let tags = tag_list(
            input
                .opt_list("Tags")?
                .ok_or_else(|| ApiError::validation("Tags is required"))?,
        )?;
        self.firehose.tag_delivery_stream(name, &tags)?;
        Ok(json!({}))
    }

    fn untag(&self, input: &Input<'_>) -> Reply {
        let name = self.name(input)?;
        let keys = input
            .opt_string_list("TagKeys")?
            .ok_or_else(|| ApiError::validation("TagKeys is required"))?;
        self.firehose.untag_delivery_stream(name, &keys)?;
        Ok(json!({}))
    }

    fn list_tags(&self, input: &Input<'_>) -> Reply {
        let name = self.name(input)?;
        tag_page(input, &self.firehose.describe_delivery_stream(name)?.tags)
    }

    /// Start/StopDeliveryStreamEncryption: the setting is stored and described. Objects are not
    /// encrypted by shardlog (there is no KMS here); describe says what was asked for.
    fn encryption(&self, input: &Input<'_>, start: bool) -> Reply {
        let name = self.name(input)?;
        let setting = match input.opt_object("DeliveryStreamEncryptionConfigurationInput")? {
            Some(config) if start => encryption_setting(&config, true)?,
            _ if start => json!({ "Status": "ENABLED", "KeyType": "AWS_OWNED_CMK" }),
            _ => json!({ "Status": "DISABLED" }),
        };
        self.firehose.modify_settings(name, |settings| {
            settings.insert("DeliveryStreamEncryption".to_string(), setting);
        })?;
        Ok(json!({}))
    }
}

/// Applies an S3 destination configuration (or update) to `delivery` and `settings`; sets
/// `bucket` if a BucketARN is given. Returns the transform the ProcessingConfiguration names
/// (`current` when an update does not mention processing).
fn apply_s3(
    s3: &Input<'_>,
    delivery: &mut DeliveryConfig,
    settings: &mut BTreeMap<String, Value>,
    bucket: &mut Option<String>,
    current: Option<Option<String>>,
) -> Result<Option<String>, ApiError> {
    if let Some(arn) = s3.opt_str("BucketARN")? {
        *bucket = Some(bucket_of_arn(arn)?.to_string());
    }
    for key in KEPT_S3_SETTINGS {
        if let Some(v) = s3.raw(key) {
            settings.insert(key.to_string(), v.clone());
        }
    }
    if let Some(prefix) = s3.opt_str("Prefix")? {
        delivery.prefix = (!prefix.is_empty()).then(|| prefix.to_string());
    }
    if let Some(prefix) = s3.opt_str("ErrorOutputPrefix")? {
        delivery.error_output_prefix = (!prefix.is_empty()).then(|| prefix.to_string());
    }
    if let Some(hints) = s3.opt_object("BufferingHints")? {
        let defaults = delivery.buffering;
        let size = hints
            .opt_i64("SizeInMBs")?
            .unwrap_or(i64::from(defaults.size_mib));
        let interval = hints
            .opt_i64("IntervalInSeconds")?
            .unwrap_or(i64::from(defaults.interval_secs));
        delivery.buffering = BufferingHints {
            size_mib: u32::try_from(size)
                .map_err(|_| ApiError::invalid(format!("SizeInMBs {size} is outside 1..=128")))?,
            interval_secs: u32::try_from(interval).map_err(|_| {
                ApiError::invalid(format!("IntervalInSeconds {interval} is outside 0..=900"))
            })?,
        };
    }
    if let Some(format) = s3.opt_str("CompressionFormat")? {
        delivery.compression = Compression::parse(format).ok_or_else(|| {
            ApiError::validation(format!(
                "CompressionFormat {format:?} is not one of UNCOMPRESSED, GZIP, ZIP, Snappy, HADOOP_SNAPPY (or shardlog's ZSTD)"
            ))
        })?;
    }
    let Some(processing) = s3.opt_object("ProcessingConfiguration")? else {
        return Ok(current.unwrap_or(None));
    };
    settings.insert(
        "ProcessingConfiguration".to_string(),
        s3.raw("ProcessingConfiguration")
            .cloned()
            .unwrap_or(Value::Null),
    );
    delivery.record_delimiter = None;
    if processing.opt_bool("Enabled")? == Some(false) {
        return Ok(None);
    }
    let mut transform = None;
    for processor in processing.opt_list("Processors")?.unwrap_or_default() {
        let processor = Input::new(processor)?;
        let parameters: BTreeMap<String, String> = processor
            .opt_list("Parameters")?
            .unwrap_or_default()
            .iter()
            .map(|p| {
                let p = Input::new(p)?;
                Ok((
                    p.str("ParameterName")?.to_string(),
                    p.str("ParameterValue")?.to_string(),
                ))
            })
            .collect::<Result<_, ApiError>>()?;
        match processor.str("Type")? {
            "Lambda" => {
                let arn = parameters.get("LambdaArn").ok_or_else(|| {
                    ApiError::invalid("a Lambda processor needs a LambdaArn parameter")
                })?;
                transform = Some(arn.clone());
            }
            "AppendDelimiterToRecord" => {
                let delimiter = parameters.get("Delimiter").map_or("\n".to_string(), |d| {
                    d.replace("\\n", "\n").replace("\\t", "\t").replace("\\r", "\r")
                });
                delivery.record_delimiter = Some(delimiter.into_bytes());
            }
            other => {
                return Err(ApiError::invalid(format!(
                    "processor type {other} is not supported by shardlog (Lambda, AppendDelimiterToRecord)"
                )))
            }
        }
    }
    Ok(transform)
}

/// The bucket of an S3 bucket ARN (`arn:aws:s3:::NAME`).
fn bucket_of_arn(arn: &str) -> Result<&str, ApiError> {
    let bucket = arn
        .split_once(":s3:::")
        .filter(|(head, _)| head.starts_with("arn:"))
        .map(|(_, b)| b)
        .filter(|b| crate::firehose::check_bucket_name(b).is_ok());
    bucket.ok_or_else(|| ApiError::validation(format!("BucketARN {arn:?} is not an S3 bucket ARN")))
}

fn encryption_setting(config: &Input<'_>, enabled: bool) -> Result<Value, ApiError> {
    let key_type = config.str("KeyType")?;
    if !matches!(key_type, "AWS_OWNED_CMK" | "CUSTOMER_MANAGED_CMK") {
        return Err(ApiError::validation(format!(
            "KeyType {key_type:?} is not AWS_OWNED_CMK or CUSTOMER_MANAGED_CMK"
        )));
    }
    let key_arn = config.opt_str("KeyARN")?;
    if key_type == "CUSTOMER_MANAGED_CMK" && key_arn.is_none() {
        return Err(ApiError::invalid("CUSTOMER_MANAGED_CMK needs a KeyARN"));
    }
    let mut setting = json!({
        "Status": if enabled { "ENABLED" } else { "DISABLED" },
        "KeyType": key_type,
    });
    if let Some(arn) = key_arn {
        setting["KeyARN"] = json!(arn);
    }
    Ok(setting)
}

fn tag_list(list: &[Value]) -> Result<BTreeMap<String, String>, ApiError> {
    list.iter()
        .map(|t| {
            let t = Input::new(t)?;
            Ok((
                t.str("Key")?.to_string(),
                t.opt_str("Value")?.unwrap_or("").to_string(),
            ))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bucket_arns_name_a_directory_safe_bucket() {
        assert_eq!(
            bucket_of_arn("arn:aws:s3:::my-bucket.logs").unwrap(),
            "my-bucket.logs"
        );
        for bad in [
            "my-bucket",
            "arn:aws:s3:::",
            "arn:aws:s3:::..",
            "arn:aws:s3:::a/b",
            "s3:::x",
        ] {
            assert!(bucket_of_arn(bad).is_err(), "{bad}");
        }
    }
}
