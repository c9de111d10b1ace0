"""A consumer-group worker in Python against `shardlog serve`: leases and checkpoints through
shardlog's group API (plain HTTP and JSON), records through boto3's Kinesis client, unchanged.

    remote_worker.py GROUP STREAM WORKER_ID EXPECTED

Processes until the group is caught up and EXPECTED records were seen; prints each record's data
on a line of its own, then "done". Endpoint: SHARDLOG_ENDPOINT.
"""
import json
import os
import sys
import time
import urllib.request

import boto3

ENDPOINT = os.environ["SHARDLOG_ENDPOINT"]
GROUP, STREAM, WORKER, EXPECTED = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])

kinesis = boto3.client(
    "kinesis",
    endpoint_url=ENDPOINT,
    region_name="us-east-1",
    aws_access_key_id="shardlog",
    aws_secret_access_key="shardlog",
)


def groups(operation, **body):
    request = urllib.request.Request(
        ENDPOINT + "/",
        data=json.dumps(body).encode(),
        headers={
            "X-Amz-Target": "ShardlogConsumerGroups_20261126." + operation,
            "Content-Type": "application/x-amz-json-1.1",
        },
    )
    with urllib.request.urlopen(request) as reply:
        return json.loads(reply.read())


seen = 0
deadline = time.time() + 60
while time.time() < deadline:
    leased = groups(
        "LeaseShards", GroupName=GROUP, StreamName=STREAM, WorkerId=WORKER,
        LeaseDurationMillis=5000,
    )
    for shard in leased["Shards"]:
        page = kinesis.get_records(ShardIterator=shard["ShardIterator"], Limit=100)
        records = page["Records"]
        for record in records:
            print(record["Data"].decode(), flush=True)
        seen += len(records)
        if records:
            groups("Checkpoint", GroupName=GROUP, WorkerId=WORKER,
                   SequenceNumber=records[-1]["SequenceNumber"])
        elif page.get("NextShardIterator") is None:
            # A closed shard read to its end: its children may now be leased.
            groups("FinishShard", GroupName=GROUP, WorkerId=WORKER, ShardId=shard["ShardId"])
    described = groups("DescribeGroup", GroupName=GROUP)
    if seen >= EXPECTED and all(s["LagRecords"] == 0 for s in described["Shards"]):
        groups("ReleaseLeases", GroupName=GROUP, WorkerId=WORKER)
        print("done", flush=True)
        sys.exit(0)
    time.sleep(0.05)
sys.exit(f"timed out after {seen} of {EXPECTED} records")
