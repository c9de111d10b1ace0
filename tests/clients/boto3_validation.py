"""The server's model validation as boto3 sees it, with boto3's own validation off
(`parameter_validation=False`), so what is tested is the server's answer (issue #18)."""
import os

import boto3
import botocore.config
import botocore.exceptions

endpoint = os.environ["SHARDLOG_ENDPOINT"]
config = botocore.config.Config(retries={"max_attempts": 1}, parameter_validation=False)
session = dict(endpoint_url=endpoint, region_name="us-east-1", aws_access_key_id="test",
               aws_secret_access_key="test", config=config)
k = boto3.client("kinesis", **session)
f = boto3.client("firehose", **session)


def refused(fn, **kwargs):
    try:
        fn(**kwargs)
    except botocore.exceptions.ClientError as e:
        return e.response["Error"]["Code"], e.response["Error"]["Message"]
    raise AssertionError(f"{fn.__name__}({kwargs}) succeeded")


code, message = refused(k.create_stream, StreamName="a" * 129, ShardCount=0)
assert code == "ValidationException", (code, message)
assert message.startswith("2 validation errors detected: Value '" + "a" * 129 + "' at 'streamName'"), message
assert "Value '0' at 'shardCount' failed to satisfy constraint: Member must have value greater than or equal to 1" in message, message

code, message = refused(k.create_stream, StreamName="s", ShardCount="3")
assert (code, message) == ("SerializationException", "class java.lang.String can not be converted to an Integer"), (code, message)

code, message = refused(k.get_records, ShardIterator="x", Limit=10001)
assert code == "ValidationException" and "at 'limit'" in message, (code, message)

code, message = refused(k.list_streams, ExclusiveStartStreamName="")
assert code == "ValidationException" and "at 'exclusiveStartStreamName'" in message, (code, message)

code, message = refused(k.remove_tags_from_stream, StreamName="missing", TagKeys=["k"] * 51)
assert code == "ValidationException" and "Member must have length less than or equal to 50" in message, (code, message)

code, message = refused(k.put_records, StreamName="s", Records=[{"PartitionKey": "", "Data": b"x"}])
assert code == "ValidationException" and "at 'records.1.member.partitionKey'" in message, (code, message)

code, message = refused(f.put_record_batch, DeliveryStreamName="d", Records=[])
assert code == "ValidationException" and "at 'records'" in message, (code, message)

code, message = refused(f.create_delivery_stream, DeliveryStreamName="bad name!")
assert code == "ValidationException" and "at 'deliveryStreamName'" in message, (code, message)

# Valid requests still work.
k.create_stream(StreamName="s", ShardCount=1)
k.get_waiter("stream_exists").wait(StreamName="s")
put = k.put_records(StreamName="s", Records=[{"PartitionKey": "k", "Data": b"x"}])
assert put["FailedRecordCount"] == 0, put
print("boto3_validation.py: ok")
