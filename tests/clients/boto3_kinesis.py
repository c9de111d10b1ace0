"""Drives every Kinesis operation `shardlog serve` implements through boto3, as an application
would, and checks the answers. Run by tests/suite/server.rs with SHARDLOG_ENDPOINT set."""

import datetime
import os
import sys
import time

import boto3
import botocore

endpoint = os.environ["SHARDLOG_ENDPOINT"]
k = boto3.client(
    "kinesis",
    endpoint_url=endpoint,
    region_name="us-east-1",
    aws_access_key_id="test",
    aws_secret_access_key="test",
    config=botocore.config.Config(retries={"max_attempts": 1}),
)


def expect_error(kind, fn, **kwargs):
    try:
        fn(**kwargs)
    except botocore.exceptions.ClientError as e:
        code = e.response["Error"]["Code"]
        assert code == kind, f"{fn.__name__}: expected {kind}, got {code}: {e}"
        assert e.response["ResponseMetadata"]["RequestId"], "no request id"
        return e
    raise AssertionError(f"{fn.__name__}({kwargs}) did not fail with {kind}")


# Create, describe, list.
k.create_stream(StreamName="orders", ShardCount=2, Tags={"team": "data"})
k.create_stream(StreamName="events", StreamModeDetails={"StreamMode": "ON_DEMAND"})
expect_error("ResourceInUseException", k.create_stream, StreamName="orders", ShardCount=1)
desc = k.describe_stream(StreamName="orders")["StreamDescription"]
assert desc["StreamStatus"] == "ACTIVE" and len(desc["Shards"]) == 2, desc
assert desc["StreamARN"] == "arn:aws:kinesis:us-east-1:000000000000:stream/orders", desc
assert isinstance(desc["StreamCreationTimestamp"], datetime.datetime)
arn = desc["StreamARN"]
page = k.describe_stream(StreamName="orders", Limit=1)["StreamDescription"]
assert len(page["Shards"]) == 1 and page["HasMoreShards"]
rest = k.describe_stream(StreamName="orders", ExclusiveStartShardId=page["Shards"][0]["ShardId"])
assert [s["ShardId"] for s in rest["StreamDescription"]["Shards"]] == ["shardId-000000000001"]
summary = k.describe_stream_summary(StreamARN=arn)["StreamDescriptionSummary"]
assert summary["OpenShardCount"] == 2 and summary["StreamName"] == "orders", summary
assert k.describe_stream_summary(StreamName="events")["StreamDescriptionSummary"]["StreamModeDetails"] == {"StreamMode": "ON_DEMAND"}
streams = k.list_streams()
assert streams["StreamNames"] == ["events", "orders"] and not streams["HasMoreStreams"], streams
first = k.list_streams(Limit=1)
assert first["StreamNames"] == ["events"] and first["HasMoreStreams"]
second = k.list_streams(NextToken=first["NextToken"])
assert second["StreamNames"] == ["orders"], second
names = [n for p in k.get_paginator("list_streams").paginate(PaginationConfig={"PageSize": 1}) for n in p["StreamNames"]]
assert names == ["events", "orders"], names
expect_error("ResourceNotFoundException", k.describe_stream, StreamName="missing")

# Put and read back, by name and by ARN.
put = k.put_record(StreamName="orders", Data=b"first", PartitionKey="alpha")
assert put["SequenceNumber"].isdigit() and put["ShardId"].startswith("shardId-"), put
put2 = k.put_record(StreamARN=arn, Data=b"second", PartitionKey="alpha", SequenceNumberForOrdering=put["SequenceNumber"])
assert int(put2["SequenceNumber"]) > int(put["SequenceNumber"])
batch = k.put_records(
    StreamName="orders",
    Records=[{"Data": f"r{i}".encode(), "PartitionKey": f"p{i}"} for i in range(100)]
    + [{"Data": b"explicit", "PartitionKey": "x", "ExplicitHashKey": "0"}],
)
assert batch["FailedRecordCount"] == 0 and len(batch["Records"]) == 101, batch
assert batch["Records"][-1]["ShardId"] == "shardId-000000000000"
expect_error("InvalidArgumentException", k.put_record, StreamName="orders", Data=b"x" * (1024 * 1024), PartitionKey="k")
expect_error("ResourceNotFoundException", k.put_record, StreamName="missing", Data=b"x", PartitionKey="k")

got = []
for shard in k.list_shards(StreamName="orders")["Shards"]:
    it = k.get_shard_iterator(StreamName="orders", ShardId=shard["ShardId"], ShardIteratorType="TRIM_HORIZON")["ShardIterator"]
    while it:
        out = k.get_records(ShardIterator=it, Limit=25)
        got += [r["Data"] for r in out["Records"]]
        assert out["MillisBehindLatest"] >= 0
        if not out["Records"]:
            break
        it = out.get("NextShardIterator")
assert sorted(got) == sorted([b"first", b"second", b"explicit"] + [f"r{i}".encode() for i in range(100)]), len(got)

shard_id = put["ShardId"]
at = k.get_shard_iterator(StreamName="orders", ShardId=shard_id, ShardIteratorType="AT_SEQUENCE_NUMBER", StartingSequenceNumber=put["SequenceNumber"])
assert k.get_records(ShardIterator=at["ShardIterator"])["Records"][0]["Data"] == b"first"
after = k.get_shard_iterator(StreamName="orders", ShardId=shard_id, ShardIteratorType="AFTER_SEQUENCE_NUMBER", StartingSequenceNumber=put["SequenceNumber"])
assert k.get_records(ShardIterator=after["ShardIterator"])["Records"][0]["Data"] == b"second"
latest = k.get_shard_iterator(StreamName="orders", ShardId=shard_id, ShardIteratorType="LATEST")["ShardIterator"]
assert k.get_records(ShardIterator=latest)["Records"] == []
k.put_record(StreamName="orders", Data=b"late", PartitionKey="alpha")
assert [r["Data"] for r in k.get_records(ShardIterator=latest)["Records"]] == [b"late"]
# As AWS: a timestamp in the future is refused, not read as LATEST; one just past reads a suffix.
utc_now = datetime.datetime.now(datetime.timezone.utc)
expect_error("InvalidArgumentException", k.get_shard_iterator, StreamName="orders", ShardId=shard_id, ShardIteratorType="AT_TIMESTAMP", Timestamp=utc_now + datetime.timedelta(hours=1))
horizon = k.get_shard_iterator(StreamName="orders", ShardId=shard_id, ShardIteratorType="TRIM_HORIZON")["ShardIterator"]
held = [r["Data"] for r in k.get_records(ShardIterator=horizon)["Records"]]
ts = k.get_shard_iterator(StreamName="orders", ShardId=shard_id, ShardIteratorType="AT_TIMESTAMP", Timestamp=utc_now - datetime.timedelta(seconds=1))
recent = [r["Data"] for r in k.get_records(ShardIterator=ts["ShardIterator"])["Records"]]
assert b"late" in recent and recent == held[len(held) - len(recent):], (recent, held)
ts = k.get_shard_iterator(StreamName="orders", ShardId=shard_id, ShardIteratorType="AT_TIMESTAMP", Timestamp=datetime.datetime(2000, 1, 1))
assert k.get_records(ShardIterator=ts["ShardIterator"])["Records"][0]["Data"] == b"first"
expect_error("InvalidArgumentException", k.get_shard_iterator, StreamName="orders", ShardId=shard_id, ShardIteratorType="AT_SEQUENCE_NUMBER")
expect_error("ResourceNotFoundException", k.get_shard_iterator, StreamName="orders", ShardId="shardId-000000000009", ShardIteratorType="LATEST")
expect_error("InvalidArgumentException", k.get_records, ShardIterator="not-an-iterator")

# Resharding: split, merge, update shard count; list_shards filters and paging.
k.split_shard(StreamName="orders", ShardToSplit="shardId-000000000000", NewStartingHashKey=str(2**126))
shards = k.list_shards(StreamName="orders")["Shards"]
assert len(shards) == 4 and shards[2]["ParentShardId"] == "shardId-000000000000", shards
assert "EndingSequenceNumber" in shards[0]["SequenceNumberRange"]
open_ids = [s["ShardId"] for s in k.list_shards(StreamName="orders", ShardFilter={"Type": "AT_LATEST"})["Shards"]]
assert open_ids == ["shardId-000000000001", "shardId-000000000002", "shardId-000000000003"], open_ids
k.merge_shards(StreamName="orders", ShardToMerge="shardId-000000000002", AdjacentShardToMerge="shardId-000000000003")
page = k.list_shards(StreamName="orders", MaxResults=2)
assert len(page["Shards"]) == 2 and page["NextToken"]
page2 = k.list_shards(NextToken=page["NextToken"], MaxResults=10)
assert [s["ShardId"] for s in page2["Shards"]] == ["shardId-000000000002", "shardId-000000000003", "shardId-000000000004"], page2
after_id = k.list_shards(StreamName="orders", ExclusiveStartShardId="shardId-000000000003")["Shards"]
assert [s["ShardId"] for s in after_id] == ["shardId-000000000004"]
merged = [s for s in k.list_shards(StreamName="orders")["Shards"] if s["ShardId"] == "shardId-000000000004"][0]
assert merged["AdjacentParentShardId"] == "shardId-000000000003", merged
# A reader of a closed parent is told where to go next.
it = k.get_shard_iterator(StreamName="orders", ShardId="shardId-000000000000", ShardIteratorType="TRIM_HORIZON")["ShardIterator"]
children = None
while it:
    out = k.get_records(ShardIterator=it)
    if out.get("ChildShards"):
        children = out["ChildShards"]
    it = out.get("NextShardIterator")
assert [c["ShardId"] for c in children] == ["shardId-000000000002", "shardId-000000000003"], children
expect_error("ResourceNotFoundException", k.split_shard, StreamName="orders", ShardToSplit="shardId-000000000099", NewStartingHashKey="5")
count = k.update_shard_count(StreamName="events", TargetShardCount=8, ScalingType="UNIFORM_SCALING")
assert count["CurrentShardCount"] == 4 and count["TargetShardCount"] == 8, count
assert k.describe_stream_summary(StreamName="events")["StreamDescriptionSummary"]["OpenShardCount"] == 8

# Settings: mode, retention, record size, tags.
k.update_stream_mode(StreamARN=arn, StreamModeDetails={"StreamMode": "ON_DEMAND"})
assert k.describe_stream_summary(StreamName="orders")["StreamDescriptionSummary"]["StreamModeDetails"]["StreamMode"] == "ON_DEMAND"
k.increase_stream_retention_period(StreamName="orders", RetentionPeriodHours=48)
assert k.describe_stream(StreamName="orders")["StreamDescription"]["RetentionPeriodHours"] == 48
expect_error("InvalidArgumentException", k.increase_stream_retention_period, StreamName="orders", RetentionPeriodHours=24)
k.decrease_stream_retention_period(StreamName="orders", RetentionPeriodHours=24)
expect_error("InvalidArgumentException", k.decrease_stream_retention_period, StreamName="orders", RetentionPeriodHours=10)
k.update_max_record_size(StreamARN=arn, MaxRecordSizeInKiB=2048)
assert k.describe_stream_summary(StreamName="orders")["StreamDescriptionSummary"]["MaxRecordSizeInKiB"] == 2048
k.put_record(StreamName="orders", Data=b"y" * (1536 * 1024), PartitionKey="big")
k.add_tags_to_stream(StreamName="orders", Tags={"env": "test", "owner": "me"})
tags = k.list_tags_for_stream(StreamName="orders")
assert {t["Key"]: t["Value"] for t in tags["Tags"]} == {"env": "test", "owner": "me", "team": "data"}, tags
page = k.list_tags_for_stream(StreamName="orders", Limit=1)
assert page["HasMoreTags"] and page["Tags"] == [{"Key": "env", "Value": "test"}]
k.remove_tags_from_stream(StreamName="orders", TagKeys=["env"])
assert [t["Key"] for t in k.list_tags_for_stream(StreamName="orders")["Tags"]] == ["owner", "team"]
limits = k.describe_limits()
assert limits["OpenShardCount"] >= 10 and limits["OnDemandStreamCount"] == 2, limits

# Tags by ARN, and the settings shardlog stores and describes: encryption, enhanced monitoring,
# resource policies, warm throughput, account settings.
k.tag_resource(ResourceARN=arn, Tags={"cost": "42"})
tags = k.list_tags_for_resource(ResourceARN=arn)["Tags"]
assert {"Key": "cost", "Value": "42"} in tags, tags
k.untag_resource(ResourceARN=arn, TagKeys=["cost"])
assert "cost" not in [t["Key"] for t in k.list_tags_for_resource(ResourceARN=arn)["Tags"]]
expect_error("ResourceNotFoundException", k.list_tags_for_resource, ResourceARN=arn.replace("/orders", "/missing"))

k.start_stream_encryption(StreamName="orders", EncryptionType="KMS", KeyId="alias/aws/kinesis")
d = k.describe_stream(StreamName="orders")["StreamDescription"]
assert d["EncryptionType"] == "KMS" and d["KeyId"] == "alias/aws/kinesis", d
assert k.put_record(StreamName="orders", Data=b"enc", PartitionKey="k")["EncryptionType"] == "KMS"
expect_error("InvalidArgumentException", k.start_stream_encryption, StreamName="orders", EncryptionType="NONE", KeyId="x")
k.stop_stream_encryption(StreamName="orders", EncryptionType="KMS", KeyId="alias/aws/kinesis")
s = k.describe_stream_summary(StreamName="orders")["StreamDescriptionSummary"]
assert s["EncryptionType"] == "NONE" and "KeyId" not in s, s

on = k.enable_enhanced_monitoring(StreamName="orders", ShardLevelMetrics=["IncomingBytes", "IteratorAgeMilliseconds"])
assert on["CurrentShardLevelMetrics"] == [] and on["DesiredShardLevelMetrics"] == ["IncomingBytes", "IteratorAgeMilliseconds"], on
off = k.disable_enhanced_monitoring(StreamName="orders", ShardLevelMetrics=["IncomingBytes"])
assert off["DesiredShardLevelMetrics"] == ["IteratorAgeMilliseconds"], off
assert k.describe_stream(StreamName="orders")["StreamDescription"]["EnhancedMonitoring"] == [{"ShardLevelMetrics": ["IteratorAgeMilliseconds"]}]
all_on = k.enable_enhanced_monitoring(StreamName="orders", ShardLevelMetrics=["ALL"])
assert len(all_on["DesiredShardLevelMetrics"]) == 7, all_on

policy = '{"Version": "2012-10-17", "Statement": []}'
k.put_resource_policy(ResourceARN=arn, Policy=policy)
assert k.get_resource_policy(ResourceARN=arn)["Policy"] == policy
expect_error("InvalidArgumentException", k.put_resource_policy, ResourceARN=arn, Policy="not json")
k.delete_resource_policy(ResourceARN=arn)
expect_error("ResourceNotFoundException", k.delete_resource_policy, ResourceARN=arn)

warm = k.update_stream_warm_throughput(StreamName="orders", WarmThroughputMiBps=10)
assert warm["WarmThroughput"]["TargetMiBps"] == 10, warm
assert k.describe_stream_summary(StreamName="orders")["StreamDescriptionSummary"]["WarmThroughput"]["TargetMiBps"] == 10

assert "MinimumThroughputBillingCommitment" not in k.describe_account_settings()
k.update_account_settings(MinimumThroughputBillingCommitment={"Status": "ENABLED"})
assert k.describe_account_settings()["MinimumThroughputBillingCommitment"]["Status"] == "ENABLED"

# Registered consumers and SubscribeToShard (enhanced fan-out, over the event stream framing).
consumer = k.register_stream_consumer(StreamARN=arn, ConsumerName="fanout")["Consumer"]
assert consumer["ConsumerStatus"] == "ACTIVE" and consumer["ConsumerARN"].startswith(arn + "/consumer/fanout:"), consumer
expect_error("ResourceInUseException", k.register_stream_consumer, StreamARN=arn, ConsumerName="fanout")
described = k.describe_stream_consumer(ConsumerARN=consumer["ConsumerARN"])["ConsumerDescription"]
assert described["StreamARN"] == arn and described["ConsumerName"] == "fanout", described
assert k.describe_stream_consumer(StreamARN=arn, ConsumerName="fanout")["ConsumerDescription"]["ConsumerARN"] == consumer["ConsumerARN"]
k.register_stream_consumer(StreamARN=arn, ConsumerName="second")
listed = k.list_stream_consumers(StreamARN=arn, MaxResults=1)
assert [c["ConsumerName"] for c in listed["Consumers"]] == ["fanout"] and listed["NextToken"], listed
rest = k.list_stream_consumers(StreamARN=arn, NextToken=listed["NextToken"])
assert [c["ConsumerName"] for c in rest["Consumers"]] == ["second"], rest
assert k.describe_stream_summary(StreamName="orders")["StreamDescriptionSummary"]["ConsumerCount"] == 2

open_shard = k.list_shards(StreamName="orders", ShardFilter={"Type": "AT_LATEST"})["Shards"][0]["ShardId"]
sub = k.subscribe_to_shard(ConsumerARN=consumer["ConsumerARN"], ShardId=open_shard,
                           StartingPosition={"Type": "LATEST"})
expect_error("ResourceInUseException", k.subscribe_to_shard, ConsumerARN=consumer["ConsumerARN"],
             ShardId=open_shard, StartingPosition={"Type": "LATEST"})
# Records put after subscribing are pushed; the target shard is picked by explicit hash key.
start_key = [s for s in k.list_shards(StreamName="orders")["Shards"] if s["ShardId"] == open_shard][0]["HashKeyRange"]["StartingHashKey"]
for i in range(5):
    k.put_record(StreamName="orders", Data=f"pushed-{i}".encode(), PartitionKey="p", ExplicitHashKey=start_key)
pushed = []
for event in sub["EventStream"]:
    e = event["SubscribeToShardEvent"]
    assert e["MillisBehindLatest"] >= 0 and e["ContinuationSequenceNumber"].isdigit(), e
    pushed += [r["Data"] for r in e["Records"]]
    if len(pushed) >= 5:
        last = e["ContinuationSequenceNumber"]
        break
sub["EventStream"].close()
assert pushed == [f"pushed-{i}".encode() for i in range(5)], pushed
# A closed shard streams to its end, then names its children, and the stream ends.
closed = k.subscribe_to_shard(ConsumerARN=consumer["ConsumerARN"], ShardId="shardId-000000000000",
                              StartingPosition={"Type": "TRIM_HORIZON"})
children, count = None, 0
for event in closed["EventStream"]:
    e = event["SubscribeToShardEvent"]
    count += len(e["Records"])
    if e.get("ChildShards"):
        children = [c["ShardId"] for c in e["ChildShards"]]
assert children == ["shardId-000000000002", "shardId-000000000003"] and count > 0, (children, count)
expect_error("ResourceNotFoundException", k.subscribe_to_shard, ConsumerARN=arn + "/consumer/nobody:1",
             ShardId=open_shard, StartingPosition={"Type": "LATEST"})

k.tag_resource(ResourceARN=consumer["ConsumerARN"], Tags={"owner": "fanout-team"})
assert k.list_tags_for_resource(ResourceARN=consumer["ConsumerARN"])["Tags"] == [{"Key": "owner", "Value": "fanout-team"}]
k.untag_resource(ResourceARN=consumer["ConsumerARN"], TagKeys=["owner"])
assert k.list_tags_for_resource(ResourceARN=consumer["ConsumerARN"])["Tags"] == []
tagged = k.register_stream_consumer(StreamARN=arn, ConsumerName="tagged", Tags={"a": "b"})["Consumer"]
assert k.list_tags_for_resource(ResourceARN=tagged["ConsumerARN"])["Tags"] == [{"Key": "a", "Value": "b"}]
k.put_resource_policy(ResourceARN=tagged["ConsumerARN"], Policy=policy)
assert k.get_resource_policy(ResourceARN=tagged["ConsumerARN"])["Policy"] == policy
assert k.get_resource_policy(ResourceARN=arn)["Policy"] == "{}", "the stream's own policy is separate"
k.deregister_stream_consumer(StreamARN=arn, ConsumerName="tagged")

expect_error("ResourceInUseException", k.delete_stream, StreamName="orders")
k.deregister_stream_consumer(ConsumerARN=consumer["ConsumerARN"])
expect_error("ResourceNotFoundException", k.describe_stream_consumer, ConsumerARN=consumer["ConsumerARN"])

# Delete.
k.delete_stream(StreamName="events")
expect_error("ResourceNotFoundException", k.delete_stream, StreamName="events")
assert k.list_streams()["StreamNames"] == ["orders"]

# Waiters work (they poll DescribeStream for ACTIVE).
k.create_stream(StreamName="waited", ShardCount=1)
k.get_waiter("stream_exists").wait(StreamName="waited", WaiterConfig={"Delay": 1, "MaxAttempts": 3})

print("boto3: all Kinesis checks passed")
