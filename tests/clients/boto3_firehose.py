"""Drives every Firehose operation through boto3 against `shardlog serve`: delivery streams
with S3-style destinations (a local directory per bucket here), direct put and a Kinesis stream
as the source, updates with their version check, tags, encryption settings, and the objects
that come out. Run by tests/suite/server.rs with SHARDLOG_ENDPOINT and SHARDLOG_OBJECTS set."""

import gzip
import os
import pathlib
import time

import boto3
import botocore

endpoint = os.environ["SHARDLOG_ENDPOINT"]
objects = pathlib.Path(os.environ["SHARDLOG_OBJECTS"])
session = dict(endpoint_url=endpoint, region_name="us-east-1", aws_access_key_id="test",
               aws_secret_access_key="test",
               config=botocore.config.Config(retries={"max_attempts": 1}))
f = boto3.client("firehose", **session)
k = boto3.client("kinesis", **session)
ROLE = "arn:aws:iam::000000000000:role/firehose"


def expect_error(kind, fn, **kwargs):
    try:
        fn(**kwargs)
    except botocore.exceptions.ClientError as e:
        code = e.response["Error"]["Code"]
        assert code == kind, f"{fn.__name__}: expected {kind}, got {code}: {e}"
        return e
    raise AssertionError(f"{fn.__name__}({kwargs}) did not fail with {kind}")


def wait_for_lines(bucket, count, decode=lambda b: b):
    deadline = time.time() + 20
    while time.time() < deadline:
        files = sorted(p for p in (objects / bucket).rglob("*") if p.is_file() and not p.name.startswith("."))
        lines = [l for p in files for l in decode(p.read_bytes()).decode().splitlines()]
        if len(lines) >= count:
            return files, lines
        time.sleep(0.2)
    raise AssertionError(f"only {len(lines)} of {count} lines reached {bucket}")


arn = f.create_delivery_stream(
    DeliveryStreamName="clicks",
    DeliveryStreamType="DirectPut",
    ExtendedS3DestinationConfiguration={
        "RoleARN": ROLE,
        "BucketARN": "arn:aws:s3:::click-archive",
        "Prefix": "clicks/!{timestamp:yyyy}/",
        "ErrorOutputPrefix": "errors/!{firehose:error-output-type}/",
        "BufferingHints": {"SizeInMBs": 1, "IntervalInSeconds": 0},
        "CompressionFormat": "GZIP",
        "CloudWatchLoggingOptions": {"Enabled": False},
        "ProcessingConfiguration": {"Enabled": True, "Processors": [
            {"Type": "AppendDelimiterToRecord", "Parameters": [{"ParameterName": "Delimiter", "ParameterValue": "\\n"}]}]},
    },
    Tags=[{"Key": "team", "Value": "web"}],
)["DeliveryStreamARN"]
assert arn == "arn:aws:firehose:us-east-1:000000000000:deliverystream/clicks", arn
expect_error("ResourceInUseException", f.create_delivery_stream, DeliveryStreamName="clicks",
             ExtendedS3DestinationConfiguration={"RoleARN": ROLE, "BucketARN": "arn:aws:s3:::x"})
# Past the model's bound (SizeInMBs 1..128): the model's ValidationException, as AWS answers.
expect_error("ValidationException", f.create_delivery_stream, DeliveryStreamName="bad-hints",
             ExtendedS3DestinationConfiguration={"RoleARN": ROLE, "BucketARN": "arn:aws:s3:::x",
                                                 "BufferingHints": {"SizeInMBs": 129, "IntervalInSeconds": 60}})

d = f.describe_delivery_stream(DeliveryStreamName="clicks")["DeliveryStreamDescription"]
assert d["DeliveryStreamStatus"] == "ACTIVE" and d["VersionId"] == "1" and d["DeliveryStreamType"] == "DirectPut", d
dest = d["Destinations"][0]
assert dest["DestinationId"] == "destinationId-000000000001"
ext = dest["ExtendedS3DestinationDescription"]
assert ext["BucketARN"] == "arn:aws:s3:::click-archive" and ext["RoleARN"] == ROLE, ext
assert ext["BufferingHints"] == {"SizeInMBs": 1, "IntervalInSeconds": 0}, ext
assert ext["CompressionFormat"] == "GZIP" and ext["Prefix"] == "clicks/!{timestamp:yyyy}/", ext
assert ext["CloudWatchLoggingOptions"] == {"Enabled": False}, ext
assert ext["ProcessingConfiguration"]["Processors"][0]["Type"] == "AppendDelimiterToRecord"

# Puts: one, then a batch; every record comes out once, gzip-compressed, newline-delimited.
rid = f.put_record(DeliveryStreamName="clicks", Record={"Data": b"click-0"})["RecordId"]
assert rid, rid
batch = f.put_record_batch(DeliveryStreamName="clicks",
                           Records=[{"Data": f"click-{i}".encode()} for i in range(1, 300)])
assert batch["FailedPutCount"] == 0 and len(batch["RequestResponses"]) == 299, batch
files, lines = wait_for_lines("click-archive", 300, gzip.decompress)
assert sorted(lines) == sorted(f"click-{i}" for i in range(300)), lines[:5]
key = files[0].relative_to(objects / "click-archive").as_posix()
assert key.startswith("clicks/20") and key.split("/")[-1].startswith("clicks-1-"), key
assert key.endswith(".gz"), key
expect_error("ResourceNotFoundException", f.put_record, DeliveryStreamName="nope", Record={"Data": b"x"})
expect_error("ValidationException", f.put_record_batch, DeliveryStreamName="clicks",
             Records=[{"Data": b"x"}] * 501)

# Update with the version check, then the new settings apply.
expect_error("ConcurrentModificationException", f.update_destination, DeliveryStreamName="clicks",
             CurrentDeliveryStreamVersionId="7", DestinationId="destinationId-000000000001",
             ExtendedS3DestinationUpdate={"CompressionFormat": "UNCOMPRESSED"})
f.update_destination(DeliveryStreamName="clicks", CurrentDeliveryStreamVersionId="1",
                     DestinationId="destinationId-000000000001",
                     ExtendedS3DestinationUpdate={"CompressionFormat": "UNCOMPRESSED",
                                                  "BucketARN": "arn:aws:s3:::click-archive-2"})
d = f.describe_delivery_stream(DeliveryStreamName="clicks")["DeliveryStreamDescription"]
assert d["VersionId"] == "2" and "LastUpdateTimestamp" in d, d
ext = d["Destinations"][0]["ExtendedS3DestinationDescription"]
assert ext["CompressionFormat"] == "UNCOMPRESSED" and ext["BucketARN"] == "arn:aws:s3:::click-archive-2", ext
assert ext["Prefix"] == "clicks/!{timestamp:yyyy}/", "an update keeps what it does not mention"
f.put_record(DeliveryStreamName="clicks", Record={"Data": b"after-update"})
files, lines = wait_for_lines("click-archive-2", 1)
assert lines == ["after-update"], lines
assert files[0].name.startswith("clicks-2-"), files

# Tags and encryption settings.
f.tag_delivery_stream(DeliveryStreamName="clicks", Tags=[{"Key": "env", "Value": "test"}])
tags = f.list_tags_for_delivery_stream(DeliveryStreamName="clicks")
assert tags["Tags"] == [{"Key": "env", "Value": "test"}, {"Key": "team", "Value": "web"}] and not tags["HasMoreTags"], tags
f.untag_delivery_stream(DeliveryStreamName="clicks", TagKeys=["team"])
assert [t["Key"] for t in f.list_tags_for_delivery_stream(DeliveryStreamName="clicks")["Tags"]] == ["env"]
f.start_delivery_stream_encryption(DeliveryStreamName="clicks",
                                   DeliveryStreamEncryptionConfigurationInput={"KeyType": "AWS_OWNED_CMK"})
d = f.describe_delivery_stream(DeliveryStreamName="clicks")["DeliveryStreamDescription"]
assert d["DeliveryStreamEncryptionConfiguration"]["Status"] == "ENABLED", d
assert f.put_record(DeliveryStreamName="clicks", Record={"Data": b"x"})["Encrypted"] is True
f.stop_delivery_stream_encryption(DeliveryStreamName="clicks")
d = f.describe_delivery_stream(DeliveryStreamName="clicks")["DeliveryStreamDescription"]
assert d["DeliveryStreamEncryptionConfiguration"]["Status"] == "DISABLED", d

# A Kinesis stream as the source.
k.create_stream(StreamName="orders", ShardCount=2)
# Firehose reads a Kinesis source from LATEST: records put before the delivery stream exists are
# not delivered.
k.put_records(StreamName="orders", Records=[{"Data": f"early-{i}\n".encode(), "PartitionKey": str(i)} for i in range(10)])
stream_arn = k.describe_stream_summary(StreamName="orders")["StreamDescriptionSummary"]["StreamARN"]
f.create_delivery_stream(
    DeliveryStreamName="orders-archive",
    DeliveryStreamType="KinesisStreamAsSource",
    KinesisStreamSourceConfiguration={"KinesisStreamARN": stream_arn, "RoleARN": ROLE},
    S3DestinationConfiguration={"RoleARN": ROLE, "BucketARN": "arn:aws:s3:::orders",
                                "BufferingHints": {"SizeInMBs": 1, "IntervalInSeconds": 0}},
)
d = f.describe_delivery_stream(DeliveryStreamName="orders-archive")["DeliveryStreamDescription"]
assert d["DeliveryStreamType"] == "KinesisStreamAsSource", d
assert d["Source"]["KinesisStreamSourceDescription"]["KinesisStreamARN"] == stream_arn, d
k.put_records(StreamName="orders", Records=[{"Data": f"order-{i}\n".encode(), "PartitionKey": str(i)} for i in range(50)])
_, lines = wait_for_lines("orders", 50)
assert sorted(lines) == sorted(f"order-{i}" for i in range(50)), lines
expect_error("InvalidArgumentException", f.put_record, DeliveryStreamName="orders-archive", Record={"Data": b"x"})

listed = f.list_delivery_streams()
assert listed["DeliveryStreamNames"] == ["clicks", "orders-archive"] and not listed["HasMoreDeliveryStreams"], listed
assert f.list_delivery_streams(DeliveryStreamType="KinesisStreamAsSource")["DeliveryStreamNames"] == ["orders-archive"]
page = f.list_delivery_streams(Limit=1)
assert page["DeliveryStreamNames"] == ["clicks"] and page["HasMoreDeliveryStreams"]
assert f.list_delivery_streams(ExclusiveStartDeliveryStreamName="clicks")["DeliveryStreamNames"] == ["orders-archive"]

f.delete_delivery_stream(DeliveryStreamName="orders-archive")
expect_error("ResourceNotFoundException", f.describe_delivery_stream, DeliveryStreamName="orders-archive")
print("boto3: all Firehose checks passed")
