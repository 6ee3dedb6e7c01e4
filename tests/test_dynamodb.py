"""DynamoDB and DynamoDB Streams through boto3's client and resource APIs and through awscli.

The expectations are the real service's: its error codes and messages, its limits, its ordering and
its capacity arithmetic (4 KB read units halved for eventually consistent reads, 1 KB write units,
both doubled in transactions). Stratus-only checks (the partitions view, the TTL sweeper and split
threshold flags, kill -9) are at the end."""

import concurrent.futures
import json
import re
import threading
import time
import urllib.error
import urllib.request
import uuid
from decimal import Decimal

import boto3
import botocore.exceptions
import pytest
from boto3.dynamodb.conditions import Attr, Key
from boto3.dynamodb.types import Binary, TypeDeserializer, TypeSerializer
from botocore.config import Config

from stratus_harness import CREDENTIALS

TABLE_ARN = r"arn:aws:dynamodb:us-east-1:\d{12}:table/"
INVALID = "One or more parameter values were invalid: "


# ---------------------------------------------------------------------------------------------
# helpers


_serializer, _deserializer = TypeSerializer(), TypeDeserializer()


def typed(value):
    """A plain dict as a DynamoDB item (wire form): {"a": 1} -> {"a": {"N": "1"}}."""
    return {k: _serializer.serialize(v) for k, v in value.items()}


def plain(item):
    return {k: _deserializer.deserialize(v) for k, v in item.items()}


def unique(prefix="t"):
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


def eventually(check, timeout=15, interval=0.05, what="a condition"):
    """Polls `check` until it returns something truthy, for at most `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


def failure(call):
    """The parsed error response of a call that must fail."""
    with pytest.raises(botocore.exceptions.ClientError) as raised:
        call()
    return raised.value.response


def error(call):
    """(code, message) of a call that must fail."""
    response = failure(call)["Error"]
    return response["Code"], response.get("Message", "")


def wait_active(ddb, name, timeout=60):
    """Waits until the table and all its global secondary indexes are ACTIVE; returns its description."""
    def ready():
        table = ddb.describe_table(TableName=name)["Table"]
        indexes = table.get("GlobalSecondaryIndexes", [])
        if table["TableStatus"] == "ACTIVE" and all(i["IndexStatus"] == "ACTIVE" for i in indexes):
            return table
        return None
    return eventually(ready, timeout=timeout, interval=0.1, what=f"table {name} to be ACTIVE")


def wait_gone(ddb, name, timeout=60):
    def gone():
        try:
            ddb.describe_table(TableName=name)
            return False
        except ddb.exceptions.ResourceNotFoundException:
            return True
    eventually(gone, timeout=timeout, interval=0.1, what=f"table {name} to be deleted")


def create_table(ddb, name=None, hash_key=("pk", "S"), sort_key=("sk", "S"), extra=(), **kwargs):
    """Creates a table (on demand unless ProvisionedThroughput is given) and waits until it is ACTIVE."""
    name = name or unique()
    keys = [hash_key] + ([sort_key] if sort_key else [])
    schema = [{"AttributeName": hash_key[0], "KeyType": "HASH"}]
    if sort_key:
        schema.append({"AttributeName": sort_key[0], "KeyType": "RANGE"})
    definitions = [{"AttributeName": n, "AttributeType": t} for n, t in keys + list(extra)]
    if "ProvisionedThroughput" not in kwargs:
        kwargs.setdefault("BillingMode", "PAY_PER_REQUEST")
    ddb.create_table(TableName=name, KeySchema=schema, AttributeDefinitions=definitions, **kwargs)
    wait_active(ddb, name)
    return name


def gsi(name, hash_key, sort_key=None, projection="ALL", non_key=None, throughput=None):
    schema = [{"AttributeName": hash_key, "KeyType": "HASH"}]
    if sort_key:
        schema.append({"AttributeName": sort_key, "KeyType": "RANGE"})
    index = {"IndexName": name, "KeySchema": schema, "Projection": {"ProjectionType": projection}}
    if non_key:
        index["Projection"]["NonKeyAttributes"] = non_key
    if throughput:
        index["ProvisionedThroughput"] = {"ReadCapacityUnits": throughput[0], "WriteCapacityUnits": throughput[1]}
    return index


def lsi(name, sort_key, projection="ALL", non_key=None, hash_key="pk"):
    index = gsi(name, hash_key, sort_key, projection, non_key)
    return index


def put_all(ddb, table, items):
    """Writes plain-dict items with BatchWriteItem, 25 at a time, resending anything unprocessed."""
    for start in range(0, len(items), 25):
        requests = {table: [{"PutRequest": {"Item": typed(i)}} for i in items[start:start + 25]]}
        for _ in range(50):
            requests = ddb.batch_write_item(RequestItems=requests).get("UnprocessedItems") or {}
            if not requests:
                break
        assert not requests, "BatchWriteItem kept items unprocessed"


def pages(call, token_in="ExclusiveStartKey", token_out="LastEvaluatedKey", **kwargs):
    """Every page of a Query or Scan (or anything paged the same way)."""
    result = []
    while True:
        page = call(**kwargs)
        result.append(page)
        if token_out not in page:
            return result
        kwargs[token_in] = page[token_out]


def all_items(call, **kwargs):
    return [item for page in pages(call, **kwargs) for item in page.get("Items", [])]


def keys_of(items, *names):
    names = names or ("pk", "sk")
    return [tuple(plain(i)[n] for n in names) for i in items]


def string_item_size(item):
    """DynamoDB's size of an item made only of string attributes: UTF-8 bytes of names and values."""
    return sum(len(k.encode()) + len(v.encode()) for k, v in item.items())


def holds(ddb, table, key, condition, values=None, names=None):
    """Whether a ConditionExpression holds for the item at `key` (the write it guards is a no-op REMOVE)."""
    kwargs = {"ConditionExpression": condition}
    if values:
        kwargs["ExpressionAttributeValues"] = typed(values)
    if names:
        kwargs["ExpressionAttributeNames"] = names
    try:
        ddb.update_item(TableName=table, Key=typed(key), UpdateExpression="REMOVE unused_attribute", **kwargs)
        return True
    except ddb.exceptions.ConditionalCheckFailedException:
        return False


def stream_arn(ddb, table):
    return ddb.describe_table(TableName=table)["Table"]["LatestStreamArn"]


def all_shards(streams, arn):
    shards, start = [], None
    while True:
        description = streams.describe_stream(StreamArn=arn, **({"ExclusiveStartShardId": start} if start else {}))["StreamDescription"]
        shards += description["Shards"]
        start = description.get("LastEvaluatedShardId")
        if not start:
            return shards


def read_stream(streams, arn, count, timeout=10):
    """Every record of every shard from TRIM_HORIZON, polling until `count` have arrived (and then one
    more pass, so that extra records are seen too). Sorted by sequence number."""
    iterators = {shard["ShardId"]: streams.get_shard_iterator(StreamArn=arn, ShardId=shard["ShardId"], ShardIteratorType="TRIM_HORIZON")["ShardIterator"]
                 for shard in all_shards(streams, arn)}
    records, deadline, final_pass = [], time.monotonic() + timeout, False
    while True:
        for shard_id, iterator in list(iterators.items()):
            if iterator:
                page = streams.get_records(ShardIterator=iterator)
                records += page["Records"]
                iterators[shard_id] = page.get("NextShardIterator")
        if len(records) >= count:
            if final_pass:
                break
            final_pass = True
        elif time.monotonic() > deadline:
            break
        else:
            time.sleep(0.05)
    return sorted(records, key=lambda r: int(r["dynamodb"]["SequenceNumber"]))


def shard_holding(streams, arn, sequence_number):
    for shard in all_shards(streams, arn):
        iterator = streams.get_shard_iterator(StreamArn=arn, ShardId=shard["ShardId"], ShardIteratorType="TRIM_HORIZON")["ShardIterator"]
        for _ in range(20):
            page = streams.get_records(ShardIterator=iterator)
            if any(r["dynamodb"]["SequenceNumber"] == sequence_number for r in page["Records"]):
                return shard["ShardId"]
            iterator = page.get("NextShardIterator")
            if not iterator or not page["Records"]:
                break
    raise AssertionError(f"no shard holds {sequence_number}")


def records_from(streams, iterator, count, timeout=10):
    """Follows one shard iterator until `count` records have arrived (bounded)."""
    records, deadline = [], time.monotonic() + timeout
    while iterator and len(records) < count and time.monotonic() < deadline:
        page = streams.get_records(ShardIterator=iterator)
        records += page["Records"]
        iterator = page.get("NextShardIterator")
        if not page["Records"]:
            time.sleep(0.05)
    return records


def partitions(server, table):
    with urllib.request.urlopen(f"{server.url}/_stratus/dynamodb/tables/{table}/partitions", timeout=10) as response:
        return json.loads(response.read())


# ---------------------------------------------------------------------------------------------
# fixtures


@pytest.fixture
def ddb(stratus):
    return stratus.client("dynamodb")


@pytest.fixture
def streams(stratus):
    return stratus.client("dynamodbstreams")


@pytest.fixture
def resource(stratus):
    return boto3.resource("dynamodb", endpoint_url=stratus.url, config=Config(retries={"max_attempts": 1}), **CREDENTIALS)


@pytest.fixture
def table(ddb):
    """A fresh table for the test: pk (S) HASH, sk (S) RANGE, on demand, with a unique name."""
    return create_table(ddb)


# ---------------------------------------------------------------------------------------------
# tables


def test_create_table_with_a_simple_key(ddb):
    name = unique()
    created = ddb.create_table(TableName=name, KeySchema=[{"AttributeName": "id", "KeyType": "HASH"}],
                               AttributeDefinitions=[{"AttributeName": "id", "AttributeType": "S"}],
                               BillingMode="PAY_PER_REQUEST")["TableDescription"]
    assert created["TableName"] == name and created["TableStatus"] in ("CREATING", "ACTIVE")
    assert re.fullmatch(TABLE_ARN + re.escape(name), created["TableArn"])
    table = wait_active(ddb, name)
    assert table["KeySchema"] == [{"AttributeName": "id", "KeyType": "HASH"}]
    assert table["AttributeDefinitions"] == [{"AttributeName": "id", "AttributeType": "S"}]
    assert table["BillingModeSummary"]["BillingMode"] == "PAY_PER_REQUEST"
    assert (table["ProvisionedThroughput"]["ReadCapacityUnits"], table["ProvisionedThroughput"]["WriteCapacityUnits"]) == (0, 0)
    assert table["ItemCount"] == 0 and table["TableSizeBytes"] == 0
    assert re.fullmatch(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", table["TableId"])
    assert abs(table["CreationDateTime"].timestamp() - time.time()) < 120
    assert table["DeletionProtectionEnabled"] is False
    for absent in ["StreamSpecification", "LatestStreamArn", "GlobalSecondaryIndexes", "LocalSecondaryIndexes"]:
        assert absent not in table


def test_create_table_with_a_composite_key_and_provisioned_throughput(ddb):
    name = create_table(ddb, sort_key=("ts", "N"), ProvisionedThroughput={"ReadCapacityUnits": 5, "WriteCapacityUnits": 7})
    table = ddb.describe_table(TableName=name)["Table"]
    assert table["KeySchema"] == [{"AttributeName": "pk", "KeyType": "HASH"}, {"AttributeName": "ts", "KeyType": "RANGE"}]
    assert sorted(table["AttributeDefinitions"], key=lambda d: d["AttributeName"]) == [
        {"AttributeName": "pk", "AttributeType": "S"}, {"AttributeName": "ts", "AttributeType": "N"}]
    throughput = table["ProvisionedThroughput"]
    assert (throughput["ReadCapacityUnits"], throughput["WriteCapacityUnits"], throughput["NumberOfDecreasesToday"]) == (5, 7, 0)
    assert table.get("BillingModeSummary", {"BillingMode": "PROVISIONED"})["BillingMode"] == "PROVISIONED"


def test_create_table_twice_is_resource_in_use(ddb, table):
    code, message = error(lambda: create_table(ddb, name=table))
    assert code == "ResourceInUseException"
    assert "Table already exists" in message and table in message


def test_attribute_definitions_must_match_the_key_schema(ddb):
    schema = [{"AttributeName": "pk", "KeyType": "HASH"}]
    extra = [{"AttributeName": "pk", "AttributeType": "S"}, {"AttributeName": "other", "AttributeType": "S"}]
    code, message = error(lambda: ddb.create_table(TableName="extra-def", KeySchema=schema, AttributeDefinitions=extra, BillingMode="PAY_PER_REQUEST"))
    # The service has answered both ways over the years.
    assert code == "ValidationException" and message in (
        INVALID + "Number of attributes in KeySchema does not exactly match number of attributes defined in AttributeDefinitions",
        INVALID + "Some AttributeDefinitions are not used. AttributeDefinitions: [other, pk], keys used: [pk]")
    missing = [{"AttributeName": "other", "AttributeType": "S"}]
    assert error(lambda: ddb.create_table(TableName="missing-def", KeySchema=schema, AttributeDefinitions=missing, BillingMode="PAY_PER_REQUEST")) == (
        "ValidationException", INVALID + "Some index key attributes are not defined in AttributeDefinitions. Keys: [pk], AttributeDefinitions: [other]")
    bad_type = [{"AttributeName": "pk", "AttributeType": "BOOL"}]
    assert error(lambda: ddb.create_table(TableName="bad-type", KeySchema=schema, AttributeDefinitions=bad_type, BillingMode="PAY_PER_REQUEST"))[0] == "ValidationException"
    assert ddb.list_tables()["TableNames"] == []


def test_billing_mode_must_agree_with_provisioned_throughput(ddb):
    common = {"KeySchema": [{"AttributeName": "pk", "KeyType": "HASH"}], "AttributeDefinitions": [{"AttributeName": "pk", "AttributeType": "S"}]}
    assert error(lambda: ddb.create_table(TableName="both", BillingMode="PAY_PER_REQUEST",
                                          ProvisionedThroughput={"ReadCapacityUnits": 1, "WriteCapacityUnits": 1}, **common)) == (
        "ValidationException", INVALID + "Neither ReadCapacityUnits nor WriteCapacityUnits can be specified when BillingMode is PAY_PER_REQUEST")
    assert error(lambda: ddb.create_table(TableName="neither", BillingMode="PROVISIONED", **common)) == (
        "ValidationException", INVALID + "ReadCapacityUnits and WriteCapacityUnits must both be specified when BillingMode is PROVISIONED")
    assert ddb.list_tables()["TableNames"] == []


def test_table_names_are_validated(ddb):
    common = {"KeySchema": [{"AttributeName": "pk", "KeyType": "HASH"}], "AttributeDefinitions": [{"AttributeName": "pk", "AttributeType": "S"}],
              "BillingMode": "PAY_PER_REQUEST"}
    code, message = error(lambda: ddb.create_table(TableName="has space!", **common))
    assert code == "ValidationException" and "Member must satisfy regular expression pattern: [a-zA-Z0-9_.-]+" in message
    assert error(lambda: ddb.create_table(TableName="x" * 256, **common))[0] == "ValidationException"
    ok = "Valid_name.with-0123"
    create_table(ddb, name=ok)
    assert ddb.list_tables()["TableNames"] == [ok]


def test_create_table_with_secondary_indexes_and_projections(ddb):
    name = create_table(ddb, extra=[("lsk", "S"), ("g1", "S"), ("g2", "N")],
                        LocalSecondaryIndexes=[lsi("by-lsk", "lsk", "KEYS_ONLY")],
                        GlobalSecondaryIndexes=[gsi("g-include", "g1", "g2", "INCLUDE", ["a", "b"]), gsi("g-all", "g2")])
    table = ddb.describe_table(TableName=name)["Table"]
    globals_ = {i["IndexName"]: i for i in table["GlobalSecondaryIndexes"]}
    assert set(globals_) == {"g-include", "g-all"}
    assert globals_["g-include"]["Projection"] == {"ProjectionType": "INCLUDE", "NonKeyAttributes": ["a", "b"]}
    assert globals_["g-include"]["KeySchema"] == [{"AttributeName": "g1", "KeyType": "HASH"}, {"AttributeName": "g2", "KeyType": "RANGE"}]
    assert globals_["g-all"]["Projection"] == {"ProjectionType": "ALL"}
    for index_name, index in globals_.items():
        assert index["IndexStatus"] == "ACTIVE"
        assert index["IndexArn"] == f"{table['TableArn']}/index/{index_name}"
        assert index["ItemCount"] == 0 and index["IndexSizeBytes"] == 0
    [local] = table["LocalSecondaryIndexes"]
    assert local["IndexName"] == "by-lsk" and local["Projection"] == {"ProjectionType": "KEYS_ONLY"}
    assert local["KeySchema"] == [{"AttributeName": "pk", "KeyType": "HASH"}, {"AttributeName": "lsk", "KeyType": "RANGE"}]
    assert local["IndexArn"] == f"{table['TableArn']}/index/by-lsk"
    assert "IndexStatus" not in local


def test_invalid_secondary_indexes_are_rejected(ddb):
    def create(**kwargs):
        return lambda: ddb.create_table(TableName="bad-index", KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}, {"AttributeName": "sk", "KeyType": "RANGE"}],
                                        AttributeDefinitions=[{"AttributeName": n, "AttributeType": "S"} for n in ["pk", "sk", "x"]],
                                        BillingMode="PAY_PER_REQUEST", **kwargs)
    assert error(create(LocalSecondaryIndexes=[lsi("by-x", "sk", hash_key="x")])) == (
        "ValidationException", INVALID + "Index KeySchema does not have the same leading hash key as table KeySchema for index: by-x. index hash key: x, table hash key: pk")
    assert error(create(GlobalSecondaryIndexes=[gsi("by-x", "x", projection="KEYS_ONLY", non_key=["a"])])) == (
        "ValidationException", INVALID + "ProjectionType is KEYS_ONLY, but NonKeyAttributes is specified")
    assert error(create(GlobalSecondaryIndexes=[gsi("twice", "x"), gsi("twice", "sk")])) == ("ValidationException", INVALID + "Duplicate index name: twice")
    assert ddb.list_tables()["TableNames"] == []


def test_create_table_with_a_stream_and_tags(ddb):
    name = create_table(ddb, StreamSpecification={"StreamEnabled": True, "StreamViewType": "NEW_AND_OLD_IMAGES"},
                        Tags=[{"Key": "team", "Value": "storage"}, {"Key": "env", "Value": "test"}])
    table = ddb.describe_table(TableName=name)["Table"]
    assert table["StreamSpecification"] == {"StreamEnabled": True, "StreamViewType": "NEW_AND_OLD_IMAGES"}
    assert table["LatestStreamArn"] == f"{table['TableArn']}/stream/{table['LatestStreamLabel']}"
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}", table["LatestStreamLabel"])
    tags = ddb.list_tags_of_resource(ResourceArn=table["TableArn"])["Tags"]
    assert sorted(tags, key=lambda t: t["Key"]) == [{"Key": "env", "Value": "test"}, {"Key": "team", "Value": "storage"}]


def test_describe_table_counts_items_and_bytes(ddb):
    name = create_table(ddb, extra=[("g", "S")], GlobalSecondaryIndexes=[gsi("by-g", "g")])
    items = [{"pk": "a", "sk": "1", "g": "x", "text": "hello"}, {"pk": "a", "sk": "2", "text": "héllo wörld"}, {"pk": "b", "sk": "1", "g": "y"}]
    put_all(ddb, name, items)
    # The real service refreshes these figures about every six hours; Stratus keeps them current.
    table = ddb.describe_table(TableName=name)["Table"]
    assert table["ItemCount"] == 3
    assert table["TableSizeBytes"] == sum(string_item_size(i) for i in items)
    [index] = table["GlobalSecondaryIndexes"]
    assert index["ItemCount"] == 2, "only items with the index key are in a sparse index"


def test_describe_a_missing_table(ddb):
    assert error(lambda: ddb.describe_table(TableName="nope")) == ("ResourceNotFoundException", "Requested resource not found: Table: nope not found")
    assert error(lambda: ddb.get_item(TableName="nope", Key=typed({"pk": "a"}))) == ("ResourceNotFoundException", "Requested resource not found")
    assert error(lambda: ddb.delete_table(TableName="nope"))[0] == "ResourceNotFoundException"
    with pytest.raises(ddb.exceptions.ResourceNotFoundException):
        ddb.put_item(TableName="nope", Item=typed({"pk": "a"}))


def test_list_tables_pages_in_name_order(ddb):
    names = ["delta", "alpha", "echo", "charlie", "bravo"]
    for name in names:
        ddb.create_table(TableName=name, KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}],
                         AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}], BillingMode="PAY_PER_REQUEST")
    assert ddb.list_tables()["TableNames"] == sorted(names)
    first = ddb.list_tables(Limit=2)
    assert first["TableNames"] == ["alpha", "bravo"] and first["LastEvaluatedTableName"] == "bravo"
    second = ddb.list_tables(Limit=2, ExclusiveStartTableName=first["LastEvaluatedTableName"])
    assert second["TableNames"] == ["charlie", "delta"] and second["LastEvaluatedTableName"] == "delta"
    third = ddb.list_tables(Limit=2, ExclusiveStartTableName="delta")
    assert third["TableNames"] == ["echo"] and "LastEvaluatedTableName" not in third
    assert ddb.list_tables(ExclusiveStartTableName="bzz")["TableNames"] == ["charlie", "delta", "echo"]
    paged = [n for page in ddb.get_paginator("list_tables").paginate(PaginationConfig={"PageSize": 2}) for n in page["TableNames"]]
    assert paged == sorted(names)


def test_update_table_throughput_and_billing_mode(ddb):
    name = create_table(ddb, ProvisionedThroughput={"ReadCapacityUnits": 5, "WriteCapacityUnits": 5})
    ddb.update_table(TableName=name, ProvisionedThroughput={"ReadCapacityUnits": 10, "WriteCapacityUnits": 20})
    throughput = wait_active(ddb, name)["ProvisionedThroughput"]
    assert (throughput["ReadCapacityUnits"], throughput["WriteCapacityUnits"]) == (10, 20)
    assert error(lambda: ddb.update_table(TableName=name, ProvisionedThroughput={"ReadCapacityUnits": 10, "WriteCapacityUnits": 20})) == (
        "ValidationException", "The provisioned throughput for the table will not change. The requested value equals the current value. "
        "Current ReadCapacityUnits provisioned for the table: 10. Requested ReadCapacityUnits: 10. Current WriteCapacityUnits provisioned for the table: 20. "
        "Requested WriteCapacityUnits: 20. Refer to the Amazon DynamoDB Developer Guide for current limits and how to request higher limits.")
    ddb.update_table(TableName=name, BillingMode="PAY_PER_REQUEST")
    assert wait_active(ddb, name)["BillingModeSummary"]["BillingMode"] == "PAY_PER_REQUEST"
    assert error(lambda: ddb.update_table(TableName="nope", BillingMode="PAY_PER_REQUEST"))[0] == "ResourceNotFoundException"


def test_update_table_creates_a_global_index_that_backfills(ddb, table):
    put_all(ddb, table, [{"pk": f"p{i}", "sk": "0", "colour": "red" if i % 2 else "blue"} for i in range(10)] + [{"pk": "plain", "sk": "0"}])
    ddb.update_table(TableName=table, AttributeDefinitions=[{"AttributeName": "colour", "AttributeType": "S"}],
                     GlobalSecondaryIndexUpdates=[{"Create": gsi("by-colour", "colour", projection="KEYS_ONLY")}])
    description = wait_active(ddb, table)
    [index] = description["GlobalSecondaryIndexes"]
    assert index["IndexName"] == "by-colour" and index["Projection"] == {"ProjectionType": "KEYS_ONLY"}
    red = all_items(ddb.query, TableName=table, IndexName="by-colour", KeyConditionExpression="colour = :c", ExpressionAttributeValues=typed({":c": "red"}))
    assert sorted(plain(i)["pk"] for i in red) == ["p1", "p3", "p5", "p7", "p9"]
    assert all(set(i) == {"pk", "sk", "colour"} for i in red), "KEYS_ONLY projects the table and index keys"
    # The new index is maintained from now on.
    ddb.put_item(TableName=table, Item=typed({"pk": "late", "sk": "0", "colour": "red"}))
    count = ddb.query(TableName=table, IndexName="by-colour", KeyConditionExpression="colour = :c", ExpressionAttributeValues=typed({":c": "red"}), Select="COUNT")["Count"]
    assert count == 6


def test_update_table_deletes_a_global_index(ddb):
    name = create_table(ddb, extra=[("g", "S")], GlobalSecondaryIndexes=[gsi("by-g", "g")])
    ddb.put_item(TableName=name, Item=typed({"pk": "a", "sk": "1", "g": "x"}))
    ddb.update_table(TableName=name, GlobalSecondaryIndexUpdates=[{"Delete": {"IndexName": "by-g"}}])
    eventually(lambda: not ddb.describe_table(TableName=name)["Table"].get("GlobalSecondaryIndexes"), what="the index to be deleted")
    wait_active(ddb, name)
    assert error(lambda: ddb.query(TableName=name, IndexName="by-g", KeyConditionExpression="g = :g", ExpressionAttributeValues=typed({":g": "x"}))) == (
        "ValidationException", "The table does not have the specified index: by-g")
    assert plain(ddb.get_item(TableName=name, Key=typed({"pk": "a", "sk": "1"}))["Item"])["g"] == "x", "the table keeps the attribute"


def test_update_table_enables_and_disables_the_stream(ddb, streams, table):
    assert "LatestStreamArn" not in ddb.describe_table(TableName=table)["Table"]
    ddb.update_table(TableName=table, StreamSpecification={"StreamEnabled": True, "StreamViewType": "KEYS_ONLY"})
    described = wait_active(ddb, table)
    assert described["StreamSpecification"] == {"StreamEnabled": True, "StreamViewType": "KEYS_ONLY"}
    arn = described["LatestStreamArn"]
    assert error(lambda: ddb.update_table(TableName=table, StreamSpecification={"StreamEnabled": True, "StreamViewType": "KEYS_ONLY"})) == (
        "ValidationException", f"Table already has an enabled stream: TableName: {table}")
    ddb.update_table(TableName=table, StreamSpecification={"StreamEnabled": False})
    described = wait_active(ddb, table)
    assert "StreamSpecification" not in described and described["LatestStreamArn"] == arn
    eventually(lambda: streams.describe_stream(StreamArn=arn)["StreamDescription"]["StreamStatus"] == "DISABLED", what="the stream to be DISABLED")
    assert [s["StreamArn"] for s in streams.list_streams(TableName=table)["Streams"]] == [arn]
    assert error(lambda: ddb.update_table(TableName=table, StreamSpecification={"StreamEnabled": False})) == (
        "ValidationException", f"Table has no stream to disable: TableName: {table}")
    ddb.update_table(TableName=table, StreamSpecification={"StreamEnabled": True, "StreamViewType": "NEW_IMAGE"})
    assert wait_active(ddb, table)["LatestStreamArn"] != arn, "each enabling makes a new stream"


def test_delete_table(ddb, table):
    ddb.put_item(TableName=table, Item=typed({"pk": "a", "sk": "1"}))
    deleted = ddb.delete_table(TableName=table)["TableDescription"]
    assert deleted["TableName"] == table and deleted["TableStatus"] == "DELETING"
    wait_gone(ddb, table)
    assert table not in ddb.list_tables()["TableNames"]
    assert error(lambda: ddb.delete_table(TableName=table)) == ("ResourceNotFoundException", f"Requested resource not found: Table: {table} not found")
    assert error(lambda: ddb.get_item(TableName=table, Key=typed({"pk": "a", "sk": "1"})))[0] == "ResourceNotFoundException"
    create_table(ddb, name=table)
    assert "Item" not in ddb.get_item(TableName=table, Key=typed({"pk": "a", "sk": "1"})), "a new table of the same name starts empty"


def test_deletion_protection(ddb):
    name = create_table(ddb, DeletionProtectionEnabled=True)
    assert ddb.describe_table(TableName=name)["Table"]["DeletionProtectionEnabled"] is True
    assert error(lambda: ddb.delete_table(TableName=name)) == (
        "ValidationException", "Resource cannot be deleted as it is currently protected against deletion. Disable deletion protection first.")
    ddb.update_table(TableName=name, DeletionProtectionEnabled=False)
    wait_active(ddb, name)
    ddb.delete_table(TableName=name)
    wait_gone(ddb, name)


def test_waiters(ddb):
    name = unique()
    ddb.create_table(TableName=name, KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}],
                     AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}], BillingMode="PAY_PER_REQUEST")
    ddb.get_waiter("table_exists").wait(TableName=name, WaiterConfig={"Delay": 1, "MaxAttempts": 60})
    ddb.delete_table(TableName=name)
    ddb.get_waiter("table_not_exists").wait(TableName=name, WaiterConfig={"Delay": 1, "MaxAttempts": 60})


# ---------------------------------------------------------------------------------------------
# items: types, numbers, keys and limits


def normalized(item):
    """Sets come back in no particular order: compare them sorted."""
    def norm(value):
        (kind, inner), = value.items()
        if kind in ("SS", "NS", "BS"):
            return {kind: sorted(inner)}
        if kind == "M":
            return {"M": {k: norm(v) for k, v in inner.items()}}
        if kind == "L":
            return {"L": [norm(v) for v in inner]}
        return value
    return {k: norm(v) for k, v in item.items()}


def test_every_type_round_trips_exactly(ddb, table):
    item = {
        "pk": {"S": "types"}, "sk": {"S": "ü ✓ 𝄞"},
        "s": {"S": "héllo\n\t\"quoted\" ✓ 𝄞"}, "empty_s": {"S": ""},
        "n": {"N": "-12.5"}, "zero": {"N": "0"}, "int": {"N": "123456789012345678901234567890"},
        "b": {"B": bytes(range(256))}, "empty_b": {"B": b""},
        "yes": {"BOOL": True}, "no": {"BOOL": False}, "nothing": {"NULL": True},
        "m": {"M": {"inner": {"L": [{"N": "1"}, {"S": "x"}, {"M": {}}]}, "empty": {"M": {}}, "deep": {"M": {"deeper": {"M": {"deepest": {"BOOL": True}}}}}}},
        "l": {"L": [{"S": "a"}, {"N": "2"}, {"BOOL": False}, {"NULL": True}, {"L": []}, {"SS": ["z"]}, {"B": b"\x00"}]},
        "empty_l": {"L": []},
        "ss": {"SS": ["b", "a", "c", ""]}, "ns": {"NS": ["3", "1", "2.5", "-7"]}, "bs": {"BS": [b"\x00", b"\xff", b"\x01\x02"]},
    }
    ddb.put_item(TableName=table, Item=item)
    key = {"pk": item["pk"], "sk": item["sk"]}
    for consistent in (True, False):
        got = ddb.get_item(TableName=table, Key=key, ConsistentRead=consistent)["Item"]
        assert normalized(got) == normalized(item)
    assert normalized(ddb.scan(TableName=table)["Items"][0]) == normalized(item)


def test_resource_api_round_trips_python_types(resource, table):
    tbl = resource.Table(table)
    item = {"pk": "py", "sk": "1", "text": "ü", "count": 42, "price": Decimal("19.99"), "flag": True, "none": None,
            "blob": Binary(b"\x00\x01"), "tags": {"a", "b"}, "scores": {1, 2, 3}, "blobs": {Binary(b"x"), Binary(b"y")},
            "nested": {"list": [1, "two", {"three": [Decimal("3.5")]}], "map": {}}}
    tbl.put_item(Item=item)
    got = tbl.get_item(Key={"pk": "py", "sk": "1"}, ConsistentRead=True)["Item"]
    assert got == item
    assert isinstance(got["count"], Decimal) and isinstance(got["tags"], set) and isinstance(got["blob"], Binary)


def test_numbers_keep_38_significant_digits(ddb, resource, table):
    exact = [
        "1.2345678901234567890123456789012345678",
        "12345678901234567890123456789012345678",
        "-0.00000000000000000012345678901234567890123456789012345678",
        "9.9999999999999999999999999999999999999E+125",
        "-9.9999999999999999999999999999999999999E+125",
        "1E-130", "-1E-130",
        "1" + "0" * 60,  # one significant digit however many zeros follow
    ]
    for i, number in enumerate(exact):
        ddb.put_item(TableName=table, Item={"pk": {"S": "n"}, "sk": {"S": str(i)}, "v": {"N": number}})
        got = ddb.get_item(TableName=table, Key={"pk": {"S": "n"}, "sk": {"S": str(i)}})["Item"]["v"]["N"]
        assert Decimal(got) == Decimal(number), number
    big = Decimal("1.2345678901234567890123456789012345678")
    resource.Table(table).put_item(Item={"pk": "n", "sk": "decimal", "v": big})
    assert resource.Table(table).get_item(Key={"pk": "n", "sk": "decimal"})["Item"]["v"] == big


@pytest.mark.parametrize("number, message", [
    ("123456789012345678901234567890123456789", "Attempting to store more than 38 significant digits in a Number"),
    ("-1.23456789012345678901234567890123456789", "Attempting to store more than 38 significant digits in a Number"),
    ("1E126", "Number overflow. Attempting to store a number with magnitude larger than supported range"),
    ("-1E126", "Number overflow. Attempting to store a number with magnitude larger than supported range"),
    ("1E-131", "Number underflow. Attempting to store a number with magnitude smaller than supported range"),
    ("twelve", "The parameter cannot be converted to a numeric value"),
])


def test_numbers_out_of_range_or_precision_are_rejected(ddb, table, number, message):
    code, got = error(lambda: ddb.put_item(TableName=table, Item={"pk": {"S": "n"}, "sk": {"S": "1"}, "v": {"N": number}}))
    assert code == "ValidationException" and message in got, got
    code, got = error(lambda: ddb.update_item(TableName=table, Key={"pk": {"S": "n"}, "sk": {"S": "1"}}, UpdateExpression="SET v = :v",
                                              ExpressionAttributeValues={":v": {"N": number}}))
    assert code == "ValidationException" and message in got, got
    assert ddb.scan(TableName=table)["Count"] == 0


@pytest.mark.parametrize("sent, returned", [("1.50", "1.5"), ("00042", "42"), ("-0", "0"), ("1.5E2", "150"), ("0.00100", "0.001"), ("1.0", "1"), ("-000.250", "-0.25")])
def test_numbers_come_back_in_canonical_form(ddb, table, sent, returned):
    ddb.put_item(TableName=table, Item={"pk": {"S": "canon"}, "sk": {"S": "1"}, "v": {"N": sent}, "set": {"NS": [sent, "7"]}})
    got = ddb.get_item(TableName=table, Key={"pk": {"S": "canon"}, "sk": {"S": "1"}})["Item"]
    assert got["v"] == {"N": returned}
    assert sorted(got["set"]["NS"]) == sorted([returned, "7"])


def test_add_on_big_decimals_is_exact(ddb, table):
    key = typed({"pk": "sum", "sk": "1"})
    ddb.put_item(TableName=table, Item={**key, "v": {"N": "12345678901234567890123456789012345678"}})
    result = ddb.update_item(TableName=table, Key=key, UpdateExpression="ADD v :one", ExpressionAttributeValues={":one": {"N": "1"}}, ReturnValues="UPDATED_NEW")
    assert result["Attributes"]["v"] == {"N": "12345678901234567890123456789012345679"}
    ddb.put_item(TableName=table, Item={**key, "v": {"N": "0.1"}})
    for _ in range(10):
        ddb.update_item(TableName=table, Key=key, UpdateExpression="SET v = v + :x", ExpressionAttributeValues={":x": {"N": "0.1"}})
    assert ddb.get_item(TableName=table, Key=key)["Item"]["v"] == {"N": "1.1"}, "decimal, not binary floating point"
    ddb.put_item(TableName=table, Item={**key, "v": {"N": "1.2345678901234567890123456789012345678"}})
    result = ddb.update_item(TableName=table, Key=key, UpdateExpression="SET v = v - :x", ExpressionAttributeValues={":x": {"N": "0.0000000000000000000000000000000000008"}}, ReturnValues="ALL_NEW")
    assert result["Attributes"]["v"] == {"N": "1.234567890123456789012345678901234567"}


def test_sets_must_not_be_empty(ddb, table):
    key = {"pk": {"S": "set"}, "sk": {"S": "1"}}
    assert error(lambda: ddb.put_item(TableName=table, Item={**key, "v": {"SS": []}})) == ("ValidationException", INVALID + "An string set  may not be empty")
    assert error(lambda: ddb.put_item(TableName=table, Item={**key, "v": {"NS": []}})) == ("ValidationException", INVALID + "An number set  may not be empty")
    assert error(lambda: ddb.put_item(TableName=table, Item={**key, "v": {"BS": []}}))[0] == "ValidationException"
    code, message = error(lambda: ddb.update_item(TableName=table, Key=key, UpdateExpression="SET v = :v", ExpressionAttributeValues={":v": {"SS": []}}))
    assert code == "ValidationException" and "may not be empty" in message
    assert "Item" not in ddb.get_item(TableName=table, Key=key)


@pytest.mark.parametrize("value", [{"SS": ["a", "a"]}, {"NS": ["1", "1.0"]}, {"BS": [b"x", b"x"]}], ids=["SS", "NS", "BS"])
def test_sets_must_not_hold_duplicates(ddb, table, value):
    key = {"pk": {"S": "set"}, "sk": {"S": "1"}}
    code, message = error(lambda: ddb.put_item(TableName=table, Item={**key, "v": value}))
    assert code == "ValidationException" and "contains duplicates" in message
    assert "Item" not in ddb.get_item(TableName=table, Key=key)


def test_put_item_requires_well_formed_key_attributes(ddb, table):
    assert error(lambda: ddb.put_item(TableName=table, Item={"pk": {"S": "a"}, "other_attr": {"S": "x"}})) == (
        "ValidationException", INVALID + "Missing the key sk in the item")
    assert error(lambda: ddb.put_item(TableName=table, Item={"pk": {"N": "1"}, "sk": {"S": "x"}})) == (
        "ValidationException", INVALID + "Type mismatch for key pk expected: S actual: N")
    assert error(lambda: ddb.put_item(TableName=table, Item={"pk": {"S": ""}, "sk": {"S": "x"}})) == (
        "ValidationException", "One or more parameter values are not valid. The AttributeValue for a key attribute cannot contain an empty string value. Key: pk")
    assert ddb.scan(TableName=table)["Count"] == 0


@pytest.mark.parametrize("key", [
    {"pk": {"S": "a"}}, {"pk": {"S": "a"}, "sk": {"S": "b"}, "extra": {"S": "c"}}, {"pk": {"S": "a"}, "sk": {"N": "1"}}, {"pk": {"S": "a"}, "other_attr": {"S": "b"}},
], ids=["missing-sort-key", "extra-attribute", "wrong-type", "wrong-name"])


def test_keys_must_match_the_schema(ddb, table, key):
    mismatch = ("ValidationException", "The provided key element does not match the schema")
    assert error(lambda: ddb.get_item(TableName=table, Key=key)) == mismatch
    assert error(lambda: ddb.delete_item(TableName=table, Key=key)) == mismatch
    assert error(lambda: ddb.update_item(TableName=table, Key=key, UpdateExpression="SET x = :x", ExpressionAttributeValues={":x": {"S": "1"}})) == mismatch
    assert ddb.scan(TableName=table)["Count"] == 0


def test_key_size_limits(ddb, table):
    ddb.put_item(TableName=table, Item={"pk": {"S": "h" * 2048}, "sk": {"S": "r" * 1024}})
    assert ddb.get_item(TableName=table, Key={"pk": {"S": "h" * 2048}, "sk": {"S": "r" * 1024}})["Item"]["pk"]["S"] == "h" * 2048
    code, message = error(lambda: ddb.put_item(TableName=table, Item={"pk": {"S": "h" * 2049}, "sk": {"S": "r"}}))
    assert code == "ValidationException" and "Size of hashkey has exceeded the maximum size limit of2048 bytes" in message
    code, message = error(lambda: ddb.put_item(TableName=table, Item={"pk": {"S": "h"}, "sk": {"S": "r" * 1025}}))
    assert code == "ValidationException" and "Aggregated size of all range keys has exceeded the size limit of 1024 bytes" in message
    assert error(lambda: ddb.put_item(TableName=table, Item={"pk": {"S": "é" * 1025}, "sk": {"S": "r"}}))[0] == "ValidationException", "limits count UTF-8 bytes"


def test_item_size_limit_is_400_kb(ddb, table):
    # Size = UTF-8 bytes of each attribute name plus its value: here 2+1 + 2+1 + 1 + len(d).
    limit = 400 * 1024
    at_limit = {"pk": {"S": "a"}, "sk": {"S": "b"}, "d": {"S": "x" * (limit - 7)}}
    ddb.put_item(TableName=table, Item=at_limit)
    assert len(ddb.get_item(TableName=table, Key={"pk": {"S": "a"}, "sk": {"S": "b"}})["Item"]["d"]["S"]) == limit - 7
    over = {"pk": {"S": "a"}, "sk": {"S": "c"}, "d": {"S": "x" * (limit - 6)}}
    assert error(lambda: ddb.put_item(TableName=table, Item=over)) == ("ValidationException", "Item size has exceeded the maximum allowed size")
    over_in_name = {"pk": {"S": "a"}, "sk": {"S": "c"}, "dd": {"S": "x" * (limit - 7)}}
    assert error(lambda: ddb.put_item(TableName=table, Item=over_in_name))[1] == "Item size has exceeded the maximum allowed size", "names count too"
    multibyte = {"pk": {"S": "a"}, "sk": {"S": "c"}, "d": {"S": "é" * (limit // 2)}}
    assert error(lambda: ddb.put_item(TableName=table, Item=multibyte))[0] == "ValidationException", "UTF-8 bytes, not characters"
    assert "Item" not in ddb.get_item(TableName=table, Key={"pk": {"S": "a"}, "sk": {"S": "c"}})


def test_update_cannot_grow_an_item_past_400_kb(ddb, table):
    key = {"pk": {"S": "a"}, "sk": {"S": "b"}}
    ddb.put_item(TableName=table, Item={**key, "d": {"S": "x" * (400 * 1024 - 100)}})
    ddb.update_item(TableName=table, Key=key, UpdateExpression="SET e = :e", ExpressionAttributeValues={":e": {"S": "y" * 50}})
    code, message = error(lambda: ddb.update_item(TableName=table, Key=key, UpdateExpression="SET f = :f", ExpressionAttributeValues={":f": {"S": "z" * 50}}))
    assert (code, message) == ("ValidationException", "Item size to update has exceeded the maximum allowed size")
    assert "f" not in ddb.get_item(TableName=table, Key=key)["Item"]


def test_get_item_with_projection_and_consistent_read(ddb, table):
    ddb.put_item(TableName=table, Item=typed({"pk": "a", "sk": "1", "x": 1, "y": {"z": [10, 20, 30], "w": "keep"}, "name": "n"}))
    key = typed({"pk": "a", "sk": "1"})
    got = ddb.get_item(TableName=table, Key=key, ConsistentRead=True, ProjectionExpression="x, y.z[1], #n", ExpressionAttributeNames={"#n": "name"})["Item"]
    assert plain(got) == {"x": 1, "y": {"z": [20]}, "name": "n"}
    assert "Item" not in ddb.get_item(TableName=table, Key=typed({"pk": "a", "sk": "2"}), ConsistentRead=True)
    code, message = error(lambda: ddb.get_item(TableName=table, Key=key, ProjectionExpression="y, y.z"))
    assert (code, message) == ("ValidationException", "Invalid ProjectionExpression: Two document paths overlap with each other; must remove or rewrite one of these paths; path one: [y], path two: [y, z]")


def test_put_item_replaces_the_whole_item(ddb, table):
    ddb.put_item(TableName=table, Item=typed({"pk": "a", "sk": "1", "old": "x", "both": 1}))
    ddb.put_item(TableName=table, Item=typed({"pk": "a", "sk": "1", "new": "y", "both": 2}))
    assert plain(ddb.get_item(TableName=table, Key=typed({"pk": "a", "sk": "1"}))["Item"]) == {"pk": "a", "sk": "1", "new": "y", "both": 2}


def test_put_item_conditions_and_return_values(ddb, table):
    item = typed({"pk": "a", "sk": "1", "v": 1})
    assert "Attributes" not in ddb.put_item(TableName=table, Item=item, ConditionExpression="attribute_not_exists(pk)", ReturnValues="ALL_OLD")
    response = failure(lambda: ddb.put_item(TableName=table, Item=item, ConditionExpression="attribute_not_exists(pk)"))
    assert response["Error"] == {"Code": "ConditionalCheckFailedException", "Message": "The conditional request failed"}
    assert "Item" not in response, "the old item is only returned when asked for"
    old = ddb.put_item(TableName=table, Item=typed({"pk": "a", "sk": "1", "v": 2}), ConditionExpression="v = :one",
                       ExpressionAttributeValues=typed({":one": 1}), ReturnValues="ALL_OLD")["Attributes"]
    assert plain(old) == {"pk": "a", "sk": "1", "v": 1}
    for bad in ["ALL_NEW", "UPDATED_OLD", "UPDATED_NEW"]:
        assert error(lambda: ddb.put_item(TableName=table, Item=item, ReturnValues=bad)) == ("ValidationException", "ReturnValues can only be ALL_OLD or NONE")
    assert plain(ddb.get_item(TableName=table, Key=typed({"pk": "a", "sk": "1"}))["Item"])["v"] == 2


def test_condition_failure_can_return_the_item(ddb, table):
    key = typed({"pk": "a", "sk": "1"})
    ddb.put_item(TableName=table, Item={**key, **typed({"v": 1, "tag": "x"})})
    expected = plain({**key, **typed({"v": 1, "tag": "x"})})
    calls = [
        lambda **kw: ddb.put_item(TableName=table, Item=key, ConditionExpression="v = :two", **kw),
        lambda **kw: ddb.update_item(TableName=table, Key=key, UpdateExpression="SET v = :two", ConditionExpression="v = :two", **kw),
        lambda **kw: ddb.delete_item(TableName=table, Key=key, ConditionExpression="v = :two", **kw),
    ]
    for call in calls:
        response = failure(lambda: call(ExpressionAttributeValues=typed({":two": 2}), ReturnValuesOnConditionCheckFailure="ALL_OLD"))
        assert response["Error"]["Code"] == "ConditionalCheckFailedException"
        assert plain(response["Item"]) == expected
        response = failure(lambda: call(ExpressionAttributeValues=typed({":two": 2}), ReturnValuesOnConditionCheckFailure="NONE"))
        assert "Item" not in response
    response = failure(lambda: ddb.put_item(TableName=table, Item=typed({"pk": "b", "sk": "1"}), ConditionExpression="attribute_exists(pk)",
                                            ReturnValuesOnConditionCheckFailure="ALL_OLD"))
    assert response["Error"]["Code"] == "ConditionalCheckFailedException" and "Item" not in response, "no item, nothing to return"
    assert plain(ddb.get_item(TableName=table, Key=key)["Item"]) == expected


def test_delete_item_conditions_and_return_values(ddb, table):
    key = typed({"pk": "a", "sk": "1"})
    assert "Attributes" not in ddb.delete_item(TableName=table, Key=key, ReturnValues="ALL_OLD"), "deleting nothing succeeds"
    ddb.put_item(TableName=table, Item={**key, "v": {"N": "1"}})
    assert error(lambda: ddb.delete_item(TableName=table, Key=key, ConditionExpression="v > :v", ExpressionAttributeValues=typed({":v": 1})))[0] == "ConditionalCheckFailedException"
    old = ddb.delete_item(TableName=table, Key=key, ConditionExpression="attribute_exists(v)", ReturnValues="ALL_OLD")["Attributes"]
    assert plain(old) == {"pk": "a", "sk": "1", "v": 1}
    assert "Item" not in ddb.get_item(TableName=table, Key=key)
    assert error(lambda: ddb.delete_item(TableName=table, Key=key, ConditionExpression="attribute_exists(pk)"))[0] == "ConditionalCheckFailedException"
    assert error(lambda: ddb.delete_item(TableName=table, Key=key, ReturnValues="ALL_NEW"))[0] == "ValidationException"


# ---------------------------------------------------------------------------------------------
# UpdateItem and update expressions


def update(ddb, table, key, expression, values=None, names=None, **kwargs):
    if values is not None:
        kwargs["ExpressionAttributeValues"] = typed(values)
    if names is not None:
        kwargs["ExpressionAttributeNames"] = names
    return ddb.update_item(TableName=table, Key=typed(key), UpdateExpression=expression, **kwargs)


def fetch(ddb, table, key):
    return plain(ddb.get_item(TableName=table, Key=typed(key), ConsistentRead=True).get("Item", {}))


def test_update_item_creates_a_missing_item(ddb, table):
    key = {"pk": "new", "sk": "1"}
    assert "Attributes" not in update(ddb, table, key, "SET v = :v", {":v": 1}, ReturnValues="ALL_OLD")
    assert fetch(ddb, table, key) == {"pk": "new", "sk": "1", "v": 1}
    ddb.update_item(TableName=table, Key=typed({"pk": "bare", "sk": "1"}))
    assert fetch(ddb, table, {"pk": "bare", "sk": "1"}) == {"pk": "bare", "sk": "1"}, "no update expression: just the key"
    update(ddb, table, {"pk": "removed", "sk": "1"}, "REMOVE nothing")
    assert fetch(ddb, table, {"pk": "removed", "sk": "1"}) == {"pk": "removed", "sk": "1"}
    assert error(lambda: update(ddb, table, {"pk": "guarded", "sk": "1"}, "SET v = :v", {":v": 1}, ConditionExpression="attribute_exists(pk)"))[0] == "ConditionalCheckFailedException"
    assert fetch(ddb, table, {"pk": "guarded", "sk": "1"}) == {}


def test_update_return_values(ddb, table):
    key = {"pk": "rv", "sk": "1"}
    ddb.put_item(TableName=table, Item=typed({**key, "a": 1, "b": "x", "c": [1, 2]}))
    result = update(ddb, table, key, "SET a = a + :one, d = :d REMOVE b", {":one": 1, ":d": "new"}, ReturnValues="UPDATED_OLD")
    assert plain(result["Attributes"]) == {"a": 1, "b": "x"}, "only attributes that existed and were touched"
    result = update(ddb, table, key, "SET a = a + :one, d = :d", {":one": 1, ":d": "newer"}, ReturnValues="UPDATED_NEW")
    assert plain(result["Attributes"]) == {"a": 3, "d": "newer"}
    result = update(ddb, table, key, "SET e = :e", {":e": True}, ReturnValues="ALL_NEW")
    assert plain(result["Attributes"]) == {**key, "a": 3, "c": [1, 2], "d": "newer", "e": True}
    result = update(ddb, table, key, "REMOVE e", ReturnValues="ALL_OLD")
    assert plain(result["Attributes"]) == {**key, "a": 3, "c": [1, 2], "d": "newer", "e": True}
    assert "Attributes" not in update(ddb, table, key, "SET f = :f", {":f": 1}, ReturnValues="NONE")
    assert "Attributes" not in update(ddb, table, key, "REMOVE never_there", ReturnValues="UPDATED_OLD")


def test_update_return_values_for_nested_paths(ddb, table):
    key = {"pk": "nested", "sk": "1"}
    ddb.put_item(TableName=table, Item=typed({**key, "m": {"a": 1, "b": 2, "l": [10, 20, 30]}, "other": 5}))
    result = update(ddb, table, key, "SET m.a = :v, m.l[1] = :w", {":v": 100, ":w": 200}, ReturnValues="UPDATED_NEW")
    assert plain(result["Attributes"]) == {"m": {"a": 100, "l": [200]}}
    result = update(ddb, table, key, "SET m.b = :v", {":v": 3}, ReturnValues="UPDATED_OLD")
    assert plain(result["Attributes"]) == {"m": {"b": 2}}


def test_update_set_arithmetic(ddb, table):
    key = {"pk": "math", "sk": "1"}
    ddb.put_item(TableName=table, Item=typed({**key, "a": 10, "b": 10, "m": {"x": 1}}))
    result = update(ddb, table, key, "SET a = a + :n, b = b - :n, c = :x + :y, d = m.x + a, e = :x - b",
                    {":n": Decimal("2.5"), ":x": 7, ":y": -3}, ReturnValues="ALL_NEW")
    got = plain(result["Attributes"])
    # Every operand is read from the item as it was before the update.
    assert (got["a"], got["b"], got["c"], got["d"], got["e"]) == (Decimal("12.5"), Decimal("7.5"), 4, 11, -3)


def test_update_if_not_exists(ddb, table):
    key = {"pk": "counter", "sk": "1"}
    for expected in (1, 2, 3):
        got = update(ddb, table, key, "SET hits = if_not_exists(hits, :zero) + :one, born = if_not_exists(born, :now)",
                     {":zero": 0, ":one": 1, ":now": f"t{expected}"}, ReturnValues="ALL_NEW")["Attributes"]
        assert plain(got)["hits"] == expected and plain(got)["born"] == "t1"


def test_update_list_append(ddb, table):
    key = {"pk": "list", "sk": "1"}
    ddb.put_item(TableName=table, Item=typed({**key, "l": [2, 3]}))
    update(ddb, table, key, "SET l = list_append(l, :tail)", {":tail": [4, 5]})
    update(ddb, table, key, "SET l = list_append(:head, l)", {":head": [0, 1]})
    update(ddb, table, key, "SET fresh = list_append(if_not_exists(fresh, :empty), :one)", {":empty": [], ":one": ["x"]})
    got = fetch(ddb, table, key)
    assert got["l"] == [0, 1, 2, 3, 4, 5] and got["fresh"] == ["x"]
    code, message = error(lambda: update(ddb, table, key, "SET l = list_append(l, :s)", {":s": "nope"}))
    assert (code, message) == ("ValidationException", "Invalid UpdateExpression: Incorrect operand type for operator or function; operator or function: list_append, operand type: S")


def test_update_remove_attributes_and_list_elements(ddb, table):
    key = {"pk": "remove", "sk": "1"}
    ddb.put_item(TableName=table, Item=typed({**key, "a": 1, "b": 2, "l": ["a", "b", "c", "d", "e"], "m": {"x": 1, "y": 2}}))
    update(ddb, table, key, "REMOVE a, l[1], l[3], m.y, not_there, l[10]")
    got = fetch(ddb, table, key)
    assert got == {**key, "b": 2, "l": ["a", "c", "e"], "m": {"x": 1}}, "indexes refer to the list before the update"


def test_update_set_list_elements(ddb, table):
    key = {"pk": "setlist", "sk": "1"}
    ddb.put_item(TableName=table, Item=typed({**key, "l": ["a", "b", "c"]}))
    update(ddb, table, key, "SET l[1] = :x, l[10] = :y", {":x": "B", ":y": "appended"})
    assert fetch(ddb, table, key)["l"] == ["a", "B", "c", "appended"], "past the end appends"


def test_update_nested_document_paths(ddb, table):
    key = {"pk": "doc", "sk": "1"}
    ddb.put_item(TableName=table, Item=typed({**key, "a": {"b": [{"c": 0}, {"c": 1}, {"c": 2, "keep": True}]}, "dotted.name": 1}))
    update(ddb, table, key, "SET a.b[2].c = :v, a.b[0].added = :w, #dot = #dot + :one, a.#sp = :w",
           {":v": 42, ":w": "w", ":one": 1}, {"#dot": "dotted.name", "#sp": "with space"})
    got = fetch(ddb, table, key)
    assert got["a"]["b"] == [{"c": 0, "added": "w"}, {"c": 1}, {"c": 42, "keep": True}]
    assert got["a"]["with space"] == "w" and got["dotted.name"] == 2
    assert "dotted" not in got


def test_update_add_numbers_and_sets(ddb, table):
    key = {"pk": "add", "sk": "1"}
    update(ddb, table, key, "ADD n :five, tags :ab, nums :ns", {":five": 5, ":ab": {"a", "b"}, ":ns": {1, 2}})
    update(ddb, table, key, "ADD n :minus, tags :bc, nums :ns", {":minus": Decimal("-1.5"), ":bc": {"b", "c"}, ":ns": {2, 3}})
    got = fetch(ddb, table, key)
    assert got["n"] == Decimal("3.5") and got["tags"] == {"a", "b", "c"} and got["nums"] == {1, 2, 3}
    ddb.put_item(TableName=table, Item={**typed(key), "bin": {"BS": [b"\x01"]}})
    ddb.update_item(TableName=table, Key=typed(key), UpdateExpression="ADD bin :b", ExpressionAttributeValues={":b": {"BS": [b"\x02", b"\x01"]}})
    assert sorted(ddb.get_item(TableName=table, Key=typed(key))["Item"]["bin"]["BS"]) == [b"\x01", b"\x02"]
    code, message = error(lambda: update(ddb, table, key, "ADD l :l", {":l": [1]}))
    assert (code, message) == ("ValidationException", "Invalid UpdateExpression: Incorrect operand type for operator or function; operator: ADD, operand type: LIST, "
                                                      "typeSet: ALLOWED_FOR_ADD_OPERAND")
    code, message = error(lambda: update(ddb, table, key, "ADD s :s", {":s": "text"}))
    assert (code, message) == ("ValidationException", "Invalid UpdateExpression: Incorrect operand type for operator or function; operator: ADD, operand type: STRING, "
                                                      "typeSet: ALLOWED_FOR_ADD_OPERAND")
    ddb.put_item(TableName=table, Item=typed({**key, "s": "text"}))
    code, message = error(lambda: update(ddb, table, key, "ADD s :n", {":n": 1}))
    assert (code, message) == ("ValidationException", "An operand in the update expression has an incorrect data type")


def test_update_delete_from_sets(ddb, table):
    key = {"pk": "del", "sk": "1"}
    ddb.put_item(TableName=table, Item=typed({**key, "tags": {"a", "b", "c"}, "nums": {1, 2}}))
    update(ddb, table, key, "DELETE tags :ab, nums :missing", {":ab": {"a", "b", "z"}, ":missing": {9}})
    assert fetch(ddb, table, key) == {**key, "tags": {"c"}, "nums": {1, 2}}
    update(ddb, table, key, "DELETE tags :c", {":c": {"c"}})
    assert "tags" not in fetch(ddb, table, key), "a set that becomes empty is removed"
    update(ddb, table, key, "DELETE never :x", {":x": {"x"}})
    assert "never" not in fetch(ddb, table, key)
    code, message = error(lambda: update(ddb, table, key, "DELETE nums :n", {":n": 1}))
    assert code == "ValidationException"
    assert message.startswith("Invalid UpdateExpression: Incorrect operand type for operator or function; operator: DELETE, operand type: NUMBER")
    code, message = error(lambda: update(ddb, table, key, "DELETE nums :s", {":s": {"1"}}))
    assert (code, message) == ("ValidationException", "An operand in the update expression has an incorrect data type")


def test_update_arithmetic_needs_numbers_and_existing_operands(ddb, table):
    key = {"pk": "types", "sk": "1"}
    ddb.put_item(TableName=table, Item=typed({**key, "s": "text", "n": 1}))
    assert error(lambda: update(ddb, table, key, "SET n = n + :s", {":s": "x"})) == (
        "ValidationException", "Invalid UpdateExpression: Incorrect operand type for operator or function; operator or function: +, operand type: S")
    assert error(lambda: update(ddb, table, key, "SET n = s + :one", {":one": 1})) == (
        "ValidationException", "An operand in the update expression has an incorrect data type")
    assert error(lambda: update(ddb, table, key, "SET n = absent + :one", {":one": 1})) == (
        "ValidationException", "The provided expression refers to an attribute that does not exist in the item")
    assert error(lambda: update(ddb, table, key, "SET dup = absent")) == (
        "ValidationException", "The provided expression refers to an attribute that does not exist in the item")
    assert fetch(ddb, table, key) == {**key, "s": "text", "n": 1}


def test_update_paths_must_exist_to_be_nested_into(ddb, table):
    key = {"pk": "paths", "sk": "1"}
    ddb.put_item(TableName=table, Item=typed({**key, "m": {"x": 1}, "l": [1], "s": "text"}))
    for expression in ["SET nope.a = :v", "SET nope[0] = :v", "SET m.deep.er = :v", "SET s.a = :v", "SET m[0] = :v", "SET l.a = :v"]:
        assert error(lambda: update(ddb, table, key, expression, {":v": 1})) == (
            "ValidationException", "The document path provided in the update expression is invalid for update"), expression
    assert error(lambda: update(ddb, table, {"pk": "nowhere", "sk": "1"}, "SET a.b = :v", {":v": 1})) == (
        "ValidationException", "The document path provided in the update expression is invalid for update"), "nor into a missing item"
    assert fetch(ddb, table, {"pk": "nowhere", "sk": "1"}) == {}


def test_update_key_attributes_cannot_change(ddb, table):
    key = {"pk": "k", "sk": "1"}
    ddb.put_item(TableName=table, Item=typed(key))
    assert error(lambda: update(ddb, table, key, "SET sk = :v", {":v": "2"})) == (
        "ValidationException", INVALID + "Cannot update attribute sk. This attribute is part of the key")
    assert error(lambda: update(ddb, table, key, "REMOVE pk")) == (
        "ValidationException", INVALID + "Cannot update attribute pk. This attribute is part of the key")


@pytest.mark.parametrize("expression, one, two", [
    ("SET a = :v, a.b = :v", "[a]", "[a, b]"),
    ("SET a.b = :v, a = :v", "[a, b]", "[a]"),
    ("SET a = :v REMOVE a", "[a]", "[a]"),
    ("SET a = :v, a = :v", "[a]", "[a]"),
    ("SET a.b = :v REMOVE a.b[1]", "[a, b]", "[a, b, [1]]"),
    ("SET n = :v ADD n :v", "[n]", "[n]"),
])


def test_update_overlapping_paths_are_rejected(ddb, table, expression, one, two):
    key = {"pk": "overlap", "sk": "1"}
    message = f"Invalid UpdateExpression: Two document paths overlap with each other; must remove or rewrite one of these paths; path one: {one}, path two: {two}"
    assert error(lambda: update(ddb, table, key, expression, {":v": 1})) == ("ValidationException", message)
    assert fetch(ddb, table, key) == {}


def test_update_conflicting_paths_are_rejected(ddb, table):
    key = {"pk": "conflict", "sk": "1"}
    assert error(lambda: update(ddb, table, key, "SET a.b = :v, a[1] = :v", {":v": 1})) == (
        "ValidationException", "Invalid UpdateExpression: Two document paths conflict with each other; must remove or rewrite one of these paths; path one: [a, b], path two: [a, [1]]")
    assert fetch(ddb, table, key) == {}


def test_update_expression_syntax_and_reserved_words(ddb, table):
    key = {"pk": "syntax", "sk": "1"}
    code, message = error(lambda: update(ddb, table, key, "SET status = :v", {":v": 1}))
    assert (code, message) == ("ValidationException", "Invalid UpdateExpression: Attribute name is a reserved keyword; reserved keyword: status")
    update(ddb, table, key, "SET #s = :v", {":v": 1}, {"#s": "status"})
    assert fetch(ddb, table, key)["status"] == 1
    assert error(lambda: update(ddb, table, key, "SET a = :v SET b = :v", {":v": 1})) == (
        "ValidationException", 'Invalid UpdateExpression: The "SET" section can only be used once in an update expression;')
    for bad in ["SET", "SET a =", "SET a = :v,", "PUT a = :v", "REMOVE :v"]:
        code, message = error(lambda: update(ddb, table, key, bad, {":v": 1}))
        assert code == "ValidationException" and message.startswith("Invalid UpdateExpression: "), bad
    code, message = error(lambda: update(ddb, table, key, "SET a = :v", {":v": 1}, ConditionExpression="v >"))
    assert code == "ValidationException" and message.startswith("Invalid ConditionExpression: Syntax error; token: ")
    code, message = error(lambda: update(ddb, table, key, "SET a = nope(b)"))
    assert (code, message) == ("ValidationException", "Invalid UpdateExpression: Invalid function name; function: nope")


# ---------------------------------------------------------------------------------------------
# condition expressions: functions, comparators, logic


@pytest.fixture
def sample(ddb, table):
    """One richly typed item, and a predicate that says whether a condition holds for it."""
    key = {"pk": "sample", "sk": "1"}
    ddb.put_item(TableName=table, Item=typed({
        **key, "n": 5, "s": "hello world", "b": Binary(b"\x01\x02\x03"), "t": True, "nul": None,
        "ss": {"red", "green"}, "ns": {1, 2, 3}, "bs": {Binary(b"x")}, "l": ["a", 2, ["nested"], {"k": "v"}],
        "m": {"a": {"b": [0, 1, {"c": "deep"}]}, "n": 10}, "blank": "", "mixed": "5",
    }))

    def check(condition, values=None, names=None):
        return holds(ddb, table, key, condition, values, names)
    return check


def test_comparators(sample):
    assert sample("n = :five", {":five": 5}) and not sample("n = :six", {":six": 6})
    assert sample("n <> :six", {":six": 6}) and not sample("n <> :five", {":five": 5})
    assert sample("n < :six", {":six": 6}) and not sample("n < :five", {":five": 5})
    assert sample("n <= :five", {":five": 5}) and not sample("n <= :four", {":four": 4})
    assert sample("n > :four", {":four": 4}) and not sample("n > :five", {":five": 5})
    assert sample("n >= :five", {":five": 5}) and not sample("n >= :six", {":six": 6})
    assert sample("s < :s", {":s": "hello xorld"}) and sample("s > :s", {":s": "Hello"}), "strings compare by UTF-8 bytes"
    assert sample("b < :b", {":b": Binary(b"\x01\x02\x04")}) and sample("b > :b", {":b": Binary(b"\x01\x02")})
    assert sample("m.n > n") and sample("n < m.n"), "both operands may be paths"
    code, message = error(lambda: sample("n = m.n - :five", {":five": 5}))
    assert code == "ValidationException" and message.startswith("Invalid ConditionExpression: Syntax error; token: "), "no arithmetic in conditions"
    assert sample("t = :t", {":t": True}) and sample("nul = :nul", {":nul": None}) and sample("blank = :e", {":e": ""})
    assert sample("l = :l", {":l": ["a", 2, ["nested"], {"k": "v"}]}) and sample("ss = :ss", {":ss": {"green", "red"}})


def test_comparisons_between_different_types_are_false(sample):
    assert not sample("mixed = :five", {":five": 5}), "the string '5' is not the number 5"
    assert not sample("n < :s", {":s": "9"}) and not sample("n > :s", {":s": "0"}) and not sample("n >= :s", {":s": "0"})
    assert sample("n <> :s", {":s": "5"})
    assert not sample("absent = :five", {":five": 5}) and not sample("absent < :five", {":five": 5})
    assert not sample("absent > :five", {":five": 5}) and not sample("absent BETWEEN :a AND :b", {":a": 0, ":b": 9})
    assert sample("absent <> :five", {":five": 5}), "a missing attribute differs from any value"


def test_between_and_in(sample):
    assert sample("n BETWEEN :a AND :b", {":a": 5, ":b": 5}) and sample("n BETWEEN :a AND :b", {":a": 1, ":b": 9})
    assert not sample("n BETWEEN :a AND :b", {":a": 6, ":b": 9})
    assert sample("s BETWEEN :a AND :b", {":a": "hello", ":b": "help"})
    assert sample("n IN (:a, :b, :c)", {":a": 1, ":b": 5, ":c": "5"}) and not sample("n IN (:a, :b)", {":a": 1, ":b": "5"})
    assert sample("s IN (:a)", {":a": "hello world"})
    values = {f":v{i}": i + 100 for i in range(100)}
    assert not sample(f"n IN ({', '.join(values)})", values), "up to 100 operands"
    assert error(lambda: sample("n BETWEEN :b AND :a", {":a": 1, ":b": 9})) == (
        "ValidationException", "Invalid ConditionExpression: The BETWEEN operator requires upper bound to be greater than or equal to lower bound; "
        "lower bound operand: AttributeValue: {N:9}, upper bound operand: AttributeValue: {N:1}")
    assert error(lambda: sample("n BETWEEN :a AND :b", {":a": 1, ":b": "9"})) == (
        "ValidationException", "Invalid ConditionExpression: The BETWEEN operator requires same data type for lower and upper bounds; "
        "lower bound operand: AttributeValue: {N:1}, upper bound operand: AttributeValue: {S:9}")


def test_logical_operators_and_precedence(sample):
    one, two, five = {":one": 1}, {":two": 2}, {":five": 5}
    values = {**one, **two, **five}
    # NOT binds tighter than AND, which binds tighter than OR.
    assert sample("n = :five OR n = :one AND n = :two", values)
    assert not sample("(n = :five OR n = :one) AND n = :two", values)
    assert sample("NOT n = :one AND n = :five", {**one, **five})
    assert not sample("NOT (n = :one OR n = :five)", {**one, **five})
    assert sample("NOT n = :one", one) and not sample("NOT n = :five", five)
    assert sample("n = :one OR NOT n = :two AND NOT n = :one", {**one, **two})
    assert sample("(n = :five) AND ((s = :s) OR (t = :f))", {":five": 5, ":s": "hello world", ":f": False})
    assert not sample("n = :five AND NOT attribute_exists(s)", five)


def test_existence_and_type_functions(sample):
    assert sample("attribute_exists(n) AND attribute_exists(m.a.b[2].c) AND attribute_exists(nul)")
    assert not sample("attribute_exists(absent)") and not sample("attribute_exists(m.a.b[9])") and not sample("attribute_exists(l[0].x)")
    assert sample("attribute_not_exists(absent) AND attribute_not_exists(m.zz)") and not sample("attribute_not_exists(s)")
    types = {"n": "N", "s": "S", "b": "B", "t": "BOOL", "nul": "NULL", "ss": "SS", "ns": "NS", "bs": "BS", "l": "L", "m": "M", "m.a.b": "L", "l[1]": "N"}
    for path, kind in types.items():
        assert sample(f"attribute_type({path}, :t)", {":t": kind}), path
        assert not sample(f"attribute_type({path}, :t)", {":t": "S" if kind != "S" else "N"}), path
    assert not sample("attribute_type(absent, :t)", {":t": "S"})
    code, message = error(lambda: sample("attribute_type(n, :t)", {":t": "STRING"}))
    assert code == "ValidationException" and message.startswith("Invalid ConditionExpression: Invalid attribute type name found; type: STRING, valid types: ")


def test_begins_with_and_contains(sample):
    assert sample("begins_with(s, :p)", {":p": "hello"}) and sample("begins_with(s, :p)", {":p": ""}) and not sample("begins_with(s, :p)", {":p": "world"})
    assert sample("begins_with(b, :p)", {":p": Binary(b"\x01\x02")}) and not sample("begins_with(b, :p)", {":p": Binary(b"\x02")})
    assert not sample("begins_with(n, :p)", {":p": "5"}) and not sample("begins_with(absent, :p)", {":p": "a"})
    assert sample("contains(s, :x)", {":x": "lo wo"}) and not sample("contains(s, :x)", {":x": "xyz"})
    assert sample("contains(ss, :x)", {":x": "red"}) and not sample("contains(ss, :x)", {":x": "re"}), "set membership, not substring"
    assert sample("contains(ns, :x)", {":x": 2}) and not sample("contains(ns, :x)", {":x": "2"})
    assert sample("contains(bs, :x)", {":x": Binary(b"x")})
    assert sample("contains(l, :x)", {":x": "a"}) and sample("contains(l, :x)", {":x": 2}) and sample("contains(l, :x)", {":x": ["nested"]})
    assert not sample("contains(l, :x)", {":x": "nested"}), "list membership is not recursive"
    assert not sample("contains(n, :x)", {":x": 5}) and not sample("contains(absent, :x)", {":x": "a"})
    assert sample("contains(s, mixed) OR contains(l, m.n) OR contains(m.a.b[2].c, :e)", {":e": "ee"})


def test_size_function(sample):
    sizes = {"s": 11, "b": 3, "ss": 2, "ns": 3, "bs": 1, "l": 4, "m": 2, "m.a.b": 3, "blank": 0, "l[2]": 1}
    for path, size in sizes.items():
        assert sample(f"size({path}) = :n", {":n": size}), path
    assert sample("size(s) > size(l)") and sample("size(m.a.b[2].c) BETWEEN :a AND :b", {":a": 4, ":b": 4})
    assert not sample("size(n) = :one", {":one": 1}) and not sample("size(absent) >= :zero", {":zero": 0})
    assert not sample("size(t) >= :zero", {":zero": 0}), "size of a number or boolean is not defined: false"


def test_nested_paths_and_attribute_names(sample):
    assert sample("m.a.b[2].c = :d", {":d": "deep"}) and sample("l[3].k = :v", {":v": "v"}) and sample("l[2][0] = :n", {":n": "nested"})
    assert sample("#m.#a.#b[1] = :one", {":one": 1}, {"#m": "m", "#a": "a", "#b": "b"})
    assert not sample("#dotted = :d", {":d": "deep"}, {"#dotted": "m.a.b[2].c"}), "a name placeholder is one attribute name, dots and all"
    code, message = error(lambda: sample("name = :v", {":v": 1}))
    assert (code, message) == ("ValidationException", "Invalid ConditionExpression: Attribute name is a reserved keyword; reserved keyword: name")


# ---------------------------------------------------------------------------------------------
# expression attribute names and values


def test_unused_expression_attribute_values_and_names(ddb, table):
    key = typed({"pk": "p", "sk": "1"})
    assert error(lambda: ddb.put_item(TableName=table, Item=key, ConditionExpression="attribute_not_exists(pk)",
                                      ExpressionAttributeValues=typed({":x": 1}))) == (
        "ValidationException", "Value provided in ExpressionAttributeValues unused in expressions: keys: {:x}")
    assert error(lambda: ddb.put_item(TableName=table, Item=key, ConditionExpression="attribute_not_exists(#p)",
                                      ExpressionAttributeNames={"#p": "pk", "#x": "x"})) == (
        "ValidationException", "Value provided in ExpressionAttributeNames unused in expressions: keys: {#x}")
    assert error(lambda: ddb.query(TableName=table, KeyConditionExpression="pk = :p", ExpressionAttributeValues=typed({":p": "p", ":q": "q"}))) == (
        "ValidationException", "Value provided in ExpressionAttributeValues unused in expressions: keys: {:q}")
    assert error(lambda: ddb.update_item(TableName=table, Key=key, UpdateExpression="SET a = :a", ExpressionAttributeValues=typed({":a": 1, ":b": 2, ":c": 3}))) == (
        "ValidationException", "Value provided in ExpressionAttributeValues unused in expressions: keys: {:b, :c}")
    assert ddb.scan(TableName=table)["Count"] == 0


@pytest.mark.parametrize("kind", ["ConditionExpression", "UpdateExpression", "FilterExpression", "KeyConditionExpression"])
def test_undefined_expression_attribute_value(ddb, table, kind):
    key = typed({"pk": "p", "sk": "1"})
    calls = {
        "ConditionExpression": lambda: ddb.put_item(TableName=table, Item=key, ConditionExpression="v = :x"),
        "UpdateExpression": lambda: ddb.update_item(TableName=table, Key=key, UpdateExpression="SET v = :x"),
        "FilterExpression": lambda: ddb.query(TableName=table, KeyConditionExpression="pk = :p", FilterExpression="v = :x", ExpressionAttributeValues=typed({":p": "p"})),
        "KeyConditionExpression": lambda: ddb.query(TableName=table, KeyConditionExpression="pk = :x"),
    }
    assert error(calls[kind]) == ("ValidationException", f"Invalid {kind}: An expression attribute value used in expression is not defined; attribute value: :x")
    assert ddb.scan(TableName=table)["Count"] == 0


@pytest.mark.parametrize("kind", ["ConditionExpression", "UpdateExpression", "ProjectionExpression", "FilterExpression"])
def test_undefined_expression_attribute_name(ddb, table, kind):
    key = typed({"pk": "p", "sk": "1"})
    calls = {
        "ConditionExpression": lambda: ddb.put_item(TableName=table, Item=key, ConditionExpression="attribute_exists(#x)"),
        "UpdateExpression": lambda: ddb.update_item(TableName=table, Key=key, UpdateExpression="REMOVE #x"),
        "ProjectionExpression": lambda: ddb.get_item(TableName=table, Key=key, ProjectionExpression="#x"),
        "FilterExpression": lambda: ddb.scan(TableName=table, FilterExpression="attribute_exists(#x)"),
    }
    assert error(calls[kind]) == ("ValidationException", f"Invalid {kind}: An expression attribute name used in the document path is not defined; attribute name: #x")
    assert ddb.scan(TableName=table)["Count"] == 0


def test_placeholders_need_expressions_and_must_not_be_empty(ddb, table):
    key = typed({"pk": "p", "sk": "1"})
    code, message = error(lambda: ddb.get_item(TableName=table, Key=key, ExpressionAttributeNames={"#a": "a"}))
    assert code == "ValidationException" and message.startswith("ExpressionAttributeNames can only be specified when using expressions")
    code, message = error(lambda: ddb.put_item(TableName=table, Item=key, ExpressionAttributeValues=typed({":a": 1})))
    assert (code, message) == ("ValidationException", "ExpressionAttributeValues can only be specified when using expressions: ConditionExpression is null")
    code, message = error(lambda: ddb.put_item(TableName=table, Item=key, ConditionExpression="attribute_not_exists(pk)", ExpressionAttributeValues={}))
    assert (code, message) == ("ValidationException", "ExpressionAttributeValues must not be empty")
    code, message = error(lambda: ddb.put_item(TableName=table, Item=key, ConditionExpression="attribute_not_exists(pk)", ExpressionAttributeNames={}))
    assert (code, message) == ("ValidationException", "ExpressionAttributeNames must not be empty")
    code, message = error(lambda: ddb.put_item(TableName=table, Item=key, ConditionExpression="attribute_not_exists(pk)", ExpressionAttributeValues=typed({"a": 1})))
    assert (code, message) == ("ValidationException", 'ExpressionAttributeValues contains invalid key: Syntax error; key: "a"')
    code, message = error(lambda: ddb.put_item(TableName=table, Item=key, ConditionExpression=""))
    assert (code, message) == ("ValidationException", "Invalid ConditionExpression: The expression can not be empty;")
    assert ddb.scan(TableName=table)["Count"] == 0


# ---------------------------------------------------------------------------------------------
# Query


def query(ddb, table, condition, values, **kwargs):
    return ddb.query(TableName=table, KeyConditionExpression=condition, ExpressionAttributeValues=typed(values), **kwargs)


def test_query_key_condition_operators(ddb, table):
    put_all(ddb, table, [{"pk": "q", "sk": sk} for sk in ["d", "b", "a", "bb", "c", "ba"]] + [{"pk": "other", "sk": "b"}])
    cases = {
        "sk = :b": ["b"], "sk < :b": ["a"], "sk <= :b": ["a", "b"], "sk > :b": ["ba", "bb", "c", "d"], "sk >= :b": ["b", "ba", "bb", "c", "d"],
        "sk BETWEEN :b AND :c": ["b", "ba", "bb", "c"], "begins_with(sk, :b)": ["b", "ba", "bb"],
    }
    for condition, expected in cases.items():
        values = {":p": "q", ":b": "b"} if ":c" not in condition else {":p": "q", ":b": "b", ":c": "c"}
        result = query(ddb, table, f"pk = :p AND {condition}", values)
        assert [plain(i)["sk"] for i in result["Items"]] == expected, condition
        assert result["Count"] == result["ScannedCount"] == len(expected)
    everything = query(ddb, table, "pk = :p", {":p": "q"})["Items"]
    assert [plain(i)["sk"] for i in everything] == ["a", "b", "ba", "bb", "c", "d"]
    assert query(ddb, table, "sk >= :b AND pk = :p", {":p": "q", ":b": "c"})["Count"] == 2, "the key conditions in either order"
    assert query(ddb, table, "pk = :p", {":p": "nobody"})["Items"] == []


def test_query_orders_strings_by_utf8_bytes(ddb, table):
    keys = ["a", "B", "é", "z", "Z", "aa", "~", "𝄞", "ｚ", "A1", "A10", "A2"]
    put_all(ddb, table, [{"pk": "strings", "sk": k} for k in keys])
    got = [plain(i)["sk"] for i in query(ddb, table, "pk = :p", {":p": "strings"})["Items"]]
    assert got == sorted(keys, key=lambda k: k.encode()), "UTF-8 byte order (so 𝄞 sorts after ｚ)"
    got = [plain(i)["sk"] for i in query(ddb, table, "pk = :p", {":p": "strings"}, ScanIndexForward=False)["Items"]]
    assert got == sorted(keys, key=lambda k: k.encode(), reverse=True)


def test_query_orders_numbers_numerically(ddb):
    name = create_table(ddb, sort_key=("n", "N"))
    numbers = ["0", "99.1", "10.9", "10.1", "9.1", "9", "1.9", "1.1", "1", "0.9", "0.1", "0.09", "0.01", "-0.01", "-0.09",
               "-0.1", "-0.9", "-1", "-1.01", "-9", "-9.9", "-10.1", "-99.1", "1E+20", "-1E-20", "12345678901234567890123456789012345678"]
    for n in numbers:
        ddb.put_item(TableName=name, Item={"pk": {"S": "n"}, "n": {"N": n}})
    got = [Decimal(i["n"]["N"]) for i in all_items(ddb.query, TableName=name, KeyConditionExpression="pk = :p", ExpressionAttributeValues=typed({":p": "n"}))]
    assert got == sorted(Decimal(n) for n in numbers)
    between = query(ddb, name, "pk = :p AND n BETWEEN :lo AND :hi", {":p": "n", ":lo": Decimal("-1"), ":hi": Decimal("1")})["Items"]
    assert [Decimal(i["n"]["N"]) for i in between] == sorted(Decimal(n) for n in numbers if -1 <= Decimal(n) <= 1)


def test_query_orders_binary_as_unsigned_bytes(ddb):
    name = create_table(ddb, sort_key=("b", "B"))
    values = [b"\x00", b"\x01", b"\x7f", b"\x80", b"\xff", b"\x00\x00", b"\x01\xff", b"\xfe\x01", b"A", b"a"]
    for v in values:
        ddb.put_item(TableName=name, Item={"pk": {"S": "b"}, "b": {"B": v}})
    got = [i["b"]["B"] for i in query(ddb, name, "pk = :p", {":p": "b"})["Items"]]
    assert got == sorted(values)
    prefixed = query(ddb, name, "pk = :p AND begins_with(b, :x)", {":p": "b", ":x": Binary(b"\x01")})["Items"]
    assert [i["b"]["B"] for i in prefixed] == [b"\x01", b"\x01\xff"]


def test_query_pagination_with_limit(ddb, table):
    put_all(ddb, table, [{"pk": "page", "sk": f"{i:02}"} for i in range(10)])
    seen = []
    for size in (3, 4, 10, 1):
        result = pages(ddb.query, TableName=table, KeyConditionExpression="pk = :p", ExpressionAttributeValues=typed({":p": "page"}), Limit=size)
        keys = [plain(i)["sk"] for page in result for i in page.get("Items", [])]
        assert keys == [f"{i:02}" for i in range(10)], size
        for page in result[:-1]:
            assert page["Count"] == size and page["LastEvaluatedKey"] == page["Items"][-1]
        seen.append([p["Count"] for p in result])
    # A page that stops because it reached Limit has a LastEvaluatedKey even if nothing follows.
    assert seen[0] == [3, 3, 3, 1] and seen[2] == [10, 0]
    backwards = pages(ddb.query, TableName=table, KeyConditionExpression="pk = :p", ExpressionAttributeValues=typed({":p": "page"}), Limit=4, ScanIndexForward=False)
    assert [plain(i)["sk"] for page in backwards for i in page["Items"]] == [f"{i:02}" for i in reversed(range(10))]
    start = query(ddb, table, "pk = :p", {":p": "page"}, ExclusiveStartKey=typed({"pk": "page", "sk": "04"}))
    assert [plain(i)["sk"] for i in start["Items"]] == ["05", "06", "07", "08", "09"]


def test_query_filter_applies_after_limit(ddb, table):
    put_all(ddb, table, [{"pk": "f", "sk": f"{i:02}", "n": i} for i in range(10)])
    first = query(ddb, table, "pk = :p", {":p": "f", ":five": 5}, FilterExpression="n >= :five", Limit=4)
    assert (first["Count"], first["ScannedCount"], first["Items"]) == (0, 4, []) and "LastEvaluatedKey" in first
    matched = all_items(ddb.query, TableName=table, KeyConditionExpression="pk = :p", FilterExpression="n >= :five",
                        ExpressionAttributeValues=typed({":p": "f", ":five": 5}), Limit=4)
    assert [plain(i)["n"] for i in matched] == [5, 6, 7, 8, 9]
    result = query(ddb, table, "pk = :p", {":p": "f", ":one": 1, ":three": 3}, FilterExpression="n = :one OR n = :three")
    assert (result["Count"], result["ScannedCount"]) == (2, 10)
    assert error(lambda: query(ddb, table, "pk = :p", {":p": "f", ":s": "01"}, FilterExpression="sk = :s")) == (
        "ValidationException", "Filter Expression can only contain non-primary key attributes: Primary key attribute: sk")


def test_query_projection_and_select(ddb, table):
    put_all(ddb, table, [{"pk": "sel", "sk": f"{i}", "a": i, "m": {"x": i, "y": "drop"}, "l": ["first", "second"]} for i in range(3)])
    projected = query(ddb, table, "pk = :p", {":p": "sel"}, ProjectionExpression="sk, m.x, l[1]")["Items"]
    assert [plain(i) for i in projected] == [{"sk": str(i), "m": {"x": i}, "l": ["second"]} for i in range(3)]
    specific = query(ddb, table, "pk = :p", {":p": "sel"}, Select="SPECIFIC_ATTRIBUTES", ProjectionExpression="a")["Items"]
    assert [plain(i) for i in specific] == [{"a": i} for i in range(3)]
    counted = query(ddb, table, "pk = :p", {":p": "sel"}, Select="COUNT")
    assert counted["Count"] == 3 and counted["ScannedCount"] == 3 and "Items" not in counted
    everything = query(ddb, table, "pk = :p", {":p": "sel"}, Select="ALL_ATTRIBUTES")["Items"]
    assert all(set(i) == {"pk", "sk", "a", "m", "l"} for i in everything)


@pytest.mark.parametrize("select, projection, message", [
    ("ALL_PROJECTED_ATTRIBUTES", None, "ALL_PROJECTED_ATTRIBUTES can be used only when Querying using an IndexName"),
    ("COUNT", "a", "Cannot specify the ProjectionExpression when choosing to get only the Count"),
    ("ALL_ATTRIBUTES", "a", "Cannot specify the ProjectionExpression when choosing to get ALL_ATTRIBUTES"),
])


def test_query_select_must_agree_with_the_projection(ddb, table, select, projection, message):
    kwargs = {"Select": select, **({"ProjectionExpression": projection} if projection else {})}
    code, got = error(lambda: query(ddb, table, "pk = :p", {":p": "sel"}, **kwargs))
    assert code == "ValidationException" and message in got


def test_query_key_condition_errors(ddb, table):
    assert error(lambda: query(ddb, table, "sk = :s", {":s": "1"})) == ("ValidationException", "Query condition missed key schema element: pk")
    assert error(lambda: query(ddb, table, "pk > :p", {":p": "1"})) == ("ValidationException", "Query key condition not supported")
    assert error(lambda: query(ddb, table, "pk = :p AND colour = :o", {":p": "1", ":o": "2"})) == ("ValidationException", "Query condition missed key schema element: sk")
    code, message = error(lambda: query(ddb, table, "pk = :p OR sk = :s", {":p": "1", ":s": "2"}))
    assert code == "ValidationException" and message.startswith("Invalid operator used in KeyConditionExpression: OR")
    code, message = error(lambda: query(ddb, table, "pk = :p AND contains(sk, :s)", {":p": "1", ":s": "2"}))
    assert code == "ValidationException" and "KeyConditionExpression" in message
    assert error(lambda: query(ddb, table, "pk = :p", {":p": 1}))[0] == "ValidationException", "the key's type must match"
    assert error(lambda: query(ddb, "nope", "pk = :p", {":p": "1"}))[0] == "ResourceNotFoundException"
    assert error(lambda: query(ddb, table, "pk = :p", {":p": "1"}, IndexName="nope")) == ("ValidationException", "The table does not have the specified index: nope")
    assert error(lambda: query(ddb, table, "pk = :p", {":p": "1"}, ExclusiveStartKey=typed({"pk": "1"})))[0] == "ValidationException"


def test_query_pages_stop_at_one_megabyte(ddb, table):
    blob = "x" * (100 * 1024)
    put_all(ddb, table, [{"pk": "big", "sk": f"{i:02}", "blob": blob} for i in range(12)])
    first = query(ddb, table, "pk = :p", {":p": "big"})
    # The page ends with the item that takes the data read past 1 MB.
    assert first["Count"] == 11 and first["LastEvaluatedKey"] == typed({"pk": "big", "sk": "10"})
    second = query(ddb, table, "pk = :p", {":p": "big"}, ExclusiveStartKey=first["LastEvaluatedKey"])
    assert second["Count"] == 1 and "LastEvaluatedKey" not in second
    counted = query(ddb, table, "pk = :p", {":p": "big"}, Select="COUNT")
    assert counted["Count"] == 11 and "LastEvaluatedKey" in counted, "COUNT reads the same megabyte"


def test_query_a_global_index(ddb):
    name = create_table(ddb, extra=[("team", "S"), ("score", "N")],
                        GlobalSecondaryIndexes=[gsi("by-team", "team", "score", "INCLUDE", ["nick"]), gsi("by-team-keys", "team", projection="KEYS_ONLY")])
    players = [{"pk": f"p{i}", "sk": "profile", "team": "red" if i < 6 else "blue", "score": i % 3, "nick": f"n{i}", "secret": "s"} for i in range(9)]
    put_all(ddb, name, players + [{"pk": "loner", "sk": "profile", "nick": "x"}, {"pk": "half", "sk": "profile", "score": 1}])
    red = all_items(ddb.query, TableName=name, IndexName="by-team", KeyConditionExpression="team = :t", ExpressionAttributeValues=typed({":t": "red"}))
    assert [plain(i)["score"] for i in red] == [0, 0, 1, 1, 2, 2]
    assert sorted(plain(i)["pk"] for i in red) == [f"p{i}" for i in range(6)]
    assert all(set(i) == {"pk", "sk", "team", "score", "nick"} for i in red), "INCLUDE projects the keys and the named attributes"
    high = query(ddb, name, "team = :t AND score >= :two", {":t": "red", ":two": 2}, IndexName="by-team")["Items"]
    assert sorted(plain(i)["pk"] for i in high) == ["p2", "p5"]
    first = query(ddb, name, "team = :t", {":t": "red"}, IndexName="by-team", Limit=3)
    assert set(first["LastEvaluatedKey"]) == {"pk", "sk", "team", "score"}
    rest = query(ddb, name, "team = :t", {":t": "red"}, IndexName="by-team", ExclusiveStartKey=first["LastEvaluatedKey"])
    assert sorted(plain(i)["pk"] for i in first["Items"] + rest["Items"]) == [f"p{i}" for i in range(6)], "no item lost or repeated across pages"
    blue = query(ddb, name, "team = :t", {":t": "blue"}, IndexName="by-team-keys")["Items"]
    assert sorted(plain(i)["pk"] for i in blue) == ["p6", "p7", "p8"] and all(set(i) == {"pk", "sk", "team"} for i in blue)
    assert query(ddb, name, "team = :t", {":t": "red"}, IndexName="by-team", Select="ALL_PROJECTED_ATTRIBUTES")["Count"] == 6
    assert error(lambda: query(ddb, name, "team = :t", {":t": "red"}, IndexName="by-team", ConsistentRead=True)) == (
        "ValidationException", "Consistent reads are not supported on global secondary indexes")
    assert error(lambda: query(ddb, name, "team = :t", {":t": "red"}, IndexName="by-team", Select="ALL_ATTRIBUTES")) == (
        "ValidationException", INVALID + "Select type ALL_ATTRIBUTES is not supported for global secondary index by-team because its projection type is not ALL")
    scanned = all_items(ddb.scan, TableName=name, IndexName="by-team")
    assert len(scanned) == 9, "items without both index keys are not in the index"


def test_query_a_local_index(ddb):
    name = create_table(ddb, extra=[("place", "N")], LocalSecondaryIndexes=[lsi("by-place", "place", "KEYS_ONLY")])
    put_all(ddb, name, [{"pk": "u", "sk": f"s{i}", "place": 4 - i, "payload": f"data{i}"} for i in range(5)] + [{"pk": "u", "sk": "unplaced"}])
    items = query(ddb, name, "pk = :p", {":p": "u"}, IndexName="by-place", ConsistentRead=True)["Items"]
    assert [plain(i)["sk"] for i in items] == ["s4", "s3", "s2", "s1", "s0"], "ordered by the index's sort key"
    assert all(set(i) == {"pk", "sk", "place"} for i in items)
    high = query(ddb, name, "pk = :p AND place > :two", {":p": "u", ":two": 2}, IndexName="by-place", ScanIndexForward=False)["Items"]
    assert [plain(i)["sk"] for i in high] == ["s0", "s1"]
    full = query(ddb, name, "pk = :p", {":p": "u"}, IndexName="by-place", Select="ALL_ATTRIBUTES")["Items"]
    assert [plain(i).get("payload") for i in full] == ["data4", "data3", "data2", "data1", "data0"], "a local index fetches the rest from the table"
    first = query(ddb, name, "pk = :p", {":p": "u"}, IndexName="by-place", Limit=2)
    assert set(first["LastEvaluatedKey"]) == {"pk", "sk", "place"}


def test_query_through_the_resource_api(resource, table):
    tbl = resource.Table(table)
    with tbl.batch_writer() as batch:
        for i in range(20):
            batch.put_item(Item={"pk": "user#1" if i < 15 else "user#2", "sk": f"order#{i:03}", "total_cents": i * 100, "state": "open" if i % 2 else "closed"})
    got = tbl.query(KeyConditionExpression=Key("pk").eq("user#1") & Key("sk").begins_with("order#00"))["Items"]
    assert [i["sk"] for i in got] == [f"order#{i:03}" for i in range(10)]
    got = tbl.query(KeyConditionExpression=Key("pk").eq("user#1") & Key("sk").between("order#003", "order#005"), ScanIndexForward=False)["Items"]
    assert [i["sk"] for i in got] == ["order#005", "order#004", "order#003"]
    got = tbl.query(KeyConditionExpression=Key("pk").eq("user#1") & Key("sk").gt("order#010"),
                    FilterExpression=Attr("state").eq("open") & Attr("total_cents").gte(1300))["Items"]
    assert [(i["sk"], i["total_cents"]) for i in got] == [("order#013", Decimal(1300))]
    got = tbl.query(KeyConditionExpression=Key("pk").eq("user#2") & Key("sk").lte("order#016"))["Items"]
    assert [i["sk"] for i in got] == ["order#015", "order#016"]


# ---------------------------------------------------------------------------------------------
# Scan


def test_scan_with_filter_and_pagination(ddb, table):
    items = [{"pk": f"p{i % 7}", "sk": f"{i:03}", "n": i} for i in range(50)]
    put_all(ddb, table, items)
    everything = all_items(ddb.scan, TableName=table)
    assert sorted(keys_of(everything)) == sorted((i["pk"], i["sk"]) for i in items)
    result = pages(ddb.scan, TableName=table, Limit=7)
    assert all(p["ScannedCount"] == 7 for p in result[:-1])
    keys = [k for page in result for k in keys_of(page.get("Items", []))]
    assert len(keys) == 50 and len(set(keys)) == 50
    filtered = pages(ddb.scan, TableName=table, FilterExpression="n < :ten", ExpressionAttributeValues=typed({":ten": 10}), Limit=10)
    assert sum(p["Count"] for p in filtered) == 10 and sum(p["ScannedCount"] for p in filtered) == 50
    counted = ddb.scan(TableName=table, Select="COUNT", FilterExpression="n >= :ten", ExpressionAttributeValues=typed({":ten": 10}))
    assert (counted["Count"], counted["ScannedCount"]) == (40, 50) and "Items" not in counted
    projected = ddb.scan(TableName=table, ProjectionExpression="n", Limit=1)["Items"]
    assert set(projected[0]) == {"n"}
    # A filter on a key attribute is fine in a scan.
    assert ddb.scan(TableName=table, FilterExpression="pk = :p", ExpressionAttributeValues=typed({":p": "p0"}))["Count"] == 8


def test_parallel_scan_covers_every_item_exactly_once(ddb, table):
    items = [{"pk": f"item-{i}", "sk": "0"} for i in range(200)]
    put_all(ddb, table, items)
    for total in (1, 2, 4, 7):
        seen = []
        for segment in range(total):
            seen += keys_of(all_items(ddb.scan, TableName=table, Segment=segment, TotalSegments=total, Limit=13), "pk")
        assert sorted(seen) == sorted((i["pk"],) for i in items), total

    def segment_keys(segment):
        client = boto3.client("dynamodb", endpoint_url=ddb.meta.endpoint_url, config=Config(retries={"max_attempts": 1}), **CREDENTIALS)
        return keys_of(all_items(client.scan, TableName=table, Segment=segment, TotalSegments=4), "pk")
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        parts = list(pool.map(segment_keys, range(4)))
    assert sorted(k for part in parts for k in part) == sorted((i["pk"],) for i in items)
    assert sum(1 for part in parts if part) >= 2, "the segments share the work"


def test_parallel_scan_parameters_are_validated(ddb, table):
    assert error(lambda: ddb.scan(TableName=table, Segment=0)) == (
        "ValidationException", "The TotalSegments parameter is required but was not present in the request when Segment parameter is present")
    assert error(lambda: ddb.scan(TableName=table, TotalSegments=2)) == (
        "ValidationException", "The Segment parameter is required but was not present in the request when parameter TotalSegments is present")
    assert error(lambda: ddb.scan(TableName=table, Segment=4, TotalSegments=4)) == (
        "ValidationException", "The Segment parameter is zero-based and must be less than parameter TotalSegments: Segment: 4 is not less than TotalSegments: 4")


def test_scan_through_the_resource_api(resource, table):
    tbl = resource.Table(table)
    with tbl.batch_writer() as batch:
        for i in range(30):
            batch.put_item(Item={"pk": f"p{i}", "sk": "x", "n": i, "tags": {"even"} if i % 2 == 0 else {"odd"}, "name": f"item {i}"})
    got = tbl.scan(FilterExpression=Attr("n").between(10, 14) & Attr("tags").contains("even"))["Items"]
    assert sorted(i["n"] for i in got) == [10, 12, 14]
    got = tbl.scan(FilterExpression=Attr("name").begins_with("item 2") | Attr("n").is_in([1, 3]))["Items"]
    assert sorted(i["n"] for i in got) == [1, 2, 3] + list(range(20, 30))
    got = tbl.scan(FilterExpression=Attr("missing_attr").not_exists() & Attr("n").lt(3) & ~Attr("n").eq(1))["Items"]
    assert sorted(i["n"] for i in got) == [0, 2]
    got = tbl.scan(FilterExpression=Attr("tags").size().eq(1) & Attr("n").attribute_type("N") & Attr("n").ne(0) & Attr("n").lte(2))["Items"]
    assert sorted(i["n"] for i in got) == [1, 2]


# ---------------------------------------------------------------------------------------------
# BatchWriteItem and BatchGetItem


def test_batch_write_puts_and_deletes_across_tables(ddb, table):
    other = create_table(ddb, sort_key=None)
    put_all(ddb, table, [{"pk": "gone", "sk": str(i)} for i in range(5)])
    result = ddb.batch_write_item(RequestItems={
        table: [{"PutRequest": {"Item": typed({"pk": "new", "sk": str(i), "v": i})}} for i in range(15)]
        + [{"DeleteRequest": {"Key": typed({"pk": "gone", "sk": str(i)})}} for i in range(5)],
        other: [{"PutRequest": {"Item": typed({"pk": f"o{i}"})}} for i in range(4)] + [{"DeleteRequest": {"Key": typed({"pk": "never-there"})}}],
    })
    assert result["UnprocessedItems"] == {}
    assert sorted(keys_of(all_items(ddb.scan, TableName=table))) == sorted(("new", str(i)) for i in range(15))
    assert ddb.scan(TableName=other)["Count"] == 4


def test_batch_write_limits_and_duplicates(ddb, table):
    too_many = [{"PutRequest": {"Item": typed({"pk": "p", "sk": str(i)})}} for i in range(26)]
    code, message = error(lambda: ddb.batch_write_item(RequestItems={table: too_many}))
    assert code == "ValidationException" and ("Member must have length less than or equal to 25" in message
                                              or "Too many items requested for the BatchWriteItem call" in message)
    other = create_table(ddb)
    split = {table: too_many[:13], other: too_many[13:]}
    code, message = error(lambda: ddb.batch_write_item(RequestItems=split))
    assert code == "ValidationException" and "Too many items requested for the BatchWriteItem call" in message
    duplicate = [{"PutRequest": {"Item": typed({"pk": "p", "sk": "1", "v": 1})}}, {"PutRequest": {"Item": typed({"pk": "p", "sk": "1", "v": 2})}}]
    assert error(lambda: ddb.batch_write_item(RequestItems={table: duplicate})) == ("ValidationException", "Provided list of item keys contains duplicates")
    put_and_delete = [{"PutRequest": {"Item": typed({"pk": "p", "sk": "1"})}}, {"DeleteRequest": {"Key": typed({"pk": "p", "sk": "1"})}}]
    assert error(lambda: ddb.batch_write_item(RequestItems={table: put_and_delete})) == ("ValidationException", "Provided list of item keys contains duplicates")
    invalid = [{"PutRequest": {"Item": typed({"pk": "p", "sk": "ok"})}}, {"PutRequest": {"Item": typed({"pk": "p"})}}]
    assert error(lambda: ddb.batch_write_item(RequestItems={table: invalid}))[0] == "ValidationException"
    assert error(lambda: ddb.batch_write_item(RequestItems={"nope": too_many[:1]}))[0] == "ResourceNotFoundException"
    assert ddb.scan(TableName=table)["Count"] == 0, "a rejected batch writes nothing"


def test_batch_get_items_across_tables(ddb, table):
    other = create_table(ddb, sort_key=None)
    put_all(ddb, table, [{"pk": "p", "sk": str(i), "v": i, "extra": "x"} for i in range(60)])
    put_all(ddb, other, [{"pk": f"o{i}", "v": i} for i in range(40)])
    result = ddb.batch_get_item(RequestItems={
        table: {"Keys": [typed({"pk": "p", "sk": str(i)}) for i in range(60)], "ProjectionExpression": "sk, v", "ConsistentRead": True},
        other: {"Keys": [typed({"pk": f"o{i}"}) for i in range(35)] + [typed({"pk": f"missing{i}"}) for i in range(5)]},
    })
    assert result["UnprocessedKeys"] == {}
    assert sorted(plain(i)["v"] for i in result["Responses"][table]) == list(range(60))
    assert all(set(i) == {"sk", "v"} for i in result["Responses"][table])
    assert sorted(plain(i)["v"] for i in result["Responses"][other]) == list(range(35)), "missing keys are simply absent"
    resource_table_items = ddb.batch_get_item(RequestItems={other: {"Keys": [typed({"pk": "missing"})]}})["Responses"]
    assert resource_table_items == {other: []}


def test_batch_get_limits_and_duplicates(ddb, table):
    other = create_table(ddb, sort_key=None)
    keys = {table: {"Keys": [typed({"pk": "p", "sk": str(i)}) for i in range(60)]}, other: {"Keys": [typed({"pk": str(i)}) for i in range(41)]}}
    assert error(lambda: ddb.batch_get_item(RequestItems=keys)) == ("ValidationException", "Too many items requested for the BatchGetItem call")
    code, message = error(lambda: ddb.batch_get_item(RequestItems={table: {"Keys": [typed({"pk": "p", "sk": str(i)}) for i in range(101)]}}))
    assert code == "ValidationException" and "100" in message
    duplicate = {table: {"Keys": [typed({"pk": "p", "sk": "1"}), typed({"pk": "p", "sk": "1"})]}}
    assert error(lambda: ddb.batch_get_item(RequestItems=duplicate)) == ("ValidationException", "Provided list of item keys contains duplicates")
    assert error(lambda: ddb.batch_get_item(RequestItems={table: {"Keys": [typed({"pk": "p"})]}})) == ("ValidationException", "The provided key element does not match the schema")
    assert error(lambda: ddb.batch_get_item(RequestItems={"nope": {"Keys": [typed({"pk": "p"})]}}))[0] == "ResourceNotFoundException"


def test_batch_writer_of_the_resource_api(resource, table):
    tbl = resource.Table(table)
    with tbl.batch_writer(overwrite_by_pkeys=["pk", "sk"]) as batch:
        for i in range(120):
            batch.put_item(Item={"pk": f"bw{i % 10}", "sk": str(i % 60), "i": i})
        batch.delete_item(Key={"pk": "bw0", "sk": "0"})
    items = tbl.scan(ConsistentRead=True)["Items"]
    assert len(items) == 59
    assert {(i["pk"], i["sk"]): i["i"] for i in items}[("bw1", "1")] == 61, "the later write wins"


# ---------------------------------------------------------------------------------------------
# transactions


def test_transact_write_items_applies_every_action(ddb, table):
    put_all(ddb, table, [{"pk": "acct", "sk": "a", "balance": 100}, {"pk": "acct", "sk": "b", "balance": 0}, {"pk": "old", "sk": "1"}, {"pk": "guard", "sk": "1", "open": True}])
    ddb.transact_write_items(TransactItems=[
        {"Update": {"TableName": table, "Key": typed({"pk": "acct", "sk": "a"}), "UpdateExpression": "SET balance = balance - :x",
                    "ConditionExpression": "balance >= :x", "ExpressionAttributeValues": typed({":x": 30})}},
        {"Update": {"TableName": table, "Key": typed({"pk": "acct", "sk": "b"}), "UpdateExpression": "ADD balance :x", "ExpressionAttributeValues": typed({":x": 30})}},
        {"Put": {"TableName": table, "Item": typed({"pk": "log", "sk": "1", "amount": 30}), "ConditionExpression": "attribute_not_exists(pk)"}},
        {"Delete": {"TableName": table, "Key": typed({"pk": "old", "sk": "1"})}},
        {"ConditionCheck": {"TableName": table, "Key": typed({"pk": "guard", "sk": "1"}), "ConditionExpression": "#o = :t",
                            "ExpressionAttributeNames": {"#o": "open"}, "ExpressionAttributeValues": typed({":t": True})}},
    ])
    assert fetch(ddb, table, {"pk": "acct", "sk": "a"})["balance"] == 70 and fetch(ddb, table, {"pk": "acct", "sk": "b"})["balance"] == 30
    assert fetch(ddb, table, {"pk": "log", "sk": "1"})["amount"] == 30 and fetch(ddb, table, {"pk": "old", "sk": "1"}) == {}
    assert fetch(ddb, table, {"pk": "guard", "sk": "1"}) == {"pk": "guard", "sk": "1", "open": True}


def test_transaction_is_all_or_nothing(ddb, table):
    put_all(ddb, table, [{"pk": "t", "sk": "existing", "v": 1}, {"pk": "t", "sk": "victim", "v": 1}])
    actions = [
        {"Put": {"TableName": table, "Item": typed({"pk": "t", "sk": "new"})}},
        {"Update": {"TableName": table, "Key": typed({"pk": "t", "sk": "existing"}), "UpdateExpression": "SET v = :two",
                    "ConditionExpression": "v = :two", "ExpressionAttributeValues": typed({":two": 2}), "ReturnValuesOnConditionCheckFailure": "ALL_OLD"}},
        {"Delete": {"TableName": table, "Key": typed({"pk": "t", "sk": "victim"})}},
        {"ConditionCheck": {"TableName": table, "Key": typed({"pk": "t", "sk": "absent"}), "ConditionExpression": "attribute_exists(pk)"}},
    ]
    response = failure(lambda: ddb.transact_write_items(TransactItems=actions))
    assert response["Error"]["Code"] == "TransactionCanceledException"
    assert response["Error"]["Message"] == ("Transaction cancelled, please refer cancellation reasons for specific reasons "
                                            "[None, ConditionalCheckFailed, None, ConditionalCheckFailed]")
    reasons = response["CancellationReasons"]
    assert [r["Code"] for r in reasons] == ["None", "ConditionalCheckFailed", "None", "ConditionalCheckFailed"]
    assert reasons[1]["Message"] == "The conditional request failed" and plain(reasons[1]["Item"]) == {"pk": "t", "sk": "existing", "v": 1}
    assert "Item" not in reasons[3], "only where ALL_OLD was asked for"
    assert sorted(keys_of(all_items(ddb.scan, TableName=table))) == [("t", "existing"), ("t", "victim")], "nothing was applied"
    assert fetch(ddb, table, {"pk": "t", "sk": "existing"})["v"] == 1


def test_transaction_client_request_token_is_idempotent(ddb, table):
    actions = [{"Update": {"TableName": table, "Key": typed({"pk": "idem", "sk": "1"}), "UpdateExpression": "ADD n :one", "ExpressionAttributeValues": typed({":one": 1})}}]
    token = str(uuid.uuid4())
    ddb.transact_write_items(TransactItems=actions, ClientRequestToken=token)
    ddb.transact_write_items(TransactItems=actions, ClientRequestToken=token)
    assert fetch(ddb, table, {"pk": "idem", "sk": "1"})["n"] == 1, "the retry was not applied again"
    different = [{"Update": {**actions[0]["Update"], "ExpressionAttributeValues": typed({":one": 5})}}]
    assert error(lambda: ddb.transact_write_items(TransactItems=different, ClientRequestToken=token))[0] == "IdempotentParameterMismatchException"
    ddb.transact_write_items(TransactItems=actions, ClientRequestToken=str(uuid.uuid4()))
    assert fetch(ddb, table, {"pk": "idem", "sk": "1"})["n"] == 2


def test_transaction_validation(ddb, table):
    key = typed({"pk": "v", "sk": "1"})
    twice = [{"Put": {"TableName": table, "Item": key}}, {"Update": {"TableName": table, "Key": key, "UpdateExpression": "SET a = :a", "ExpressionAttributeValues": typed({":a": 1})}}]
    assert error(lambda: ddb.transact_write_items(TransactItems=twice)) == ("ValidationException", "Transaction request cannot include multiple operations on one item")
    many = [{"Put": {"TableName": table, "Item": typed({"pk": "v", "sk": str(i)})}} for i in range(101)]
    assert error(lambda: ddb.transact_write_items(TransactItems=many))[0] == "ValidationException"
    ddb.transact_write_items(TransactItems=many[:100])
    assert ddb.scan(TableName=table, Select="COUNT")["Count"] == 100, "up to 100 actions"
    assert error(lambda: ddb.transact_write_items(TransactItems=[{"Put": {"TableName": "nope", "Item": key}}]))[0] == "ResourceNotFoundException"
    bad_key = [{"Put": {"TableName": table, "Item": typed({"pk": "v"})}}]
    response = failure(lambda: ddb.transact_write_items(TransactItems=bad_key))
    # Reported either up front or as the action's cancellation reason.
    assert response["Error"]["Code"] == "ValidationException" or [r["Code"] for r in response["CancellationReasons"]] == ["ValidationError"]


def test_transact_get_items(ddb, table):
    other = create_table(ddb, sort_key=None)
    put_all(ddb, table, [{"pk": "g", "sk": "1", "a": 1, "b": 2}])
    put_all(ddb, other, [{"pk": "o", "c": 3}])
    result = ddb.transact_get_items(TransactItems=[
        {"Get": {"TableName": other, "Key": typed({"pk": "o"})}},
        {"Get": {"TableName": table, "Key": typed({"pk": "g", "sk": "missing"})}},
        {"Get": {"TableName": table, "Key": typed({"pk": "g", "sk": "1"}), "ProjectionExpression": "#a", "ExpressionAttributeNames": {"#a": "a"}}},
    ])["Responses"]
    assert [plain(r.get("Item", {})) for r in result] == [{"pk": "o", "c": 3}, {}, {"a": 1}]
    key = typed({"pk": "g", "sk": "1"})
    assert error(lambda: ddb.transact_get_items(TransactItems=[{"Get": {"TableName": table, "Key": key}}] * 2))[0] == "ValidationException"
    assert error(lambda: ddb.transact_get_items(TransactItems=[{"Get": {"TableName": "nope", "Key": key}}]))[0] == "ResourceNotFoundException"


def test_concurrent_transactions_never_interleave(stratus, ddb, table):
    put_all(ddb, table, [{"pk": "pair", "sk": "a", "n": 0}, {"pk": "pair", "sk": "b", "n": 0}])
    committed, seen, problems = [0], [], []
    lock = threading.Lock()

    def writer():
        client = stratus.client("dynamodb")
        mine = 0
        while mine < 15:
            try:
                client.transact_write_items(TransactItems=[
                    {"Update": {"TableName": table, "Key": typed({"pk": "pair", "sk": side}), "UpdateExpression": "ADD n :one",
                                "ExpressionAttributeValues": typed({":one": 1})}} for side in ("a", "b")])
                mine += 1
            except client.exceptions.TransactionCanceledException as e:
                codes = {r["Code"] for r in e.response["CancellationReasons"]}
                if not codes <= {"TransactionConflict", "None"}:
                    with lock:
                        problems.append(codes)
                    return
            except client.exceptions.TransactionInProgressException:
                pass
        with lock:
            committed[0] += mine

    def reader():
        client = stratus.client("dynamodb")
        for _ in range(40):
            try:
                got = client.transact_get_items(TransactItems=[{"Get": {"TableName": table, "Key": typed({"pk": "pair", "sk": s})}} for s in ("a", "b")])
            except client.exceptions.TransactionCanceledException:
                continue  # a read may lose to a concurrent write: TransactionConflict
            a, b = (plain(r["Item"])["n"] for r in got["Responses"])
            seen.append((a, b))

    threads = [threading.Thread(target=writer) for _ in range(6)] + [threading.Thread(target=reader) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not problems, problems
    assert committed[0] == 90
    assert fetch(ddb, table, {"pk": "pair", "sk": "a"})["n"] == fetch(ddb, table, {"pk": "pair", "sk": "b"})["n"] == 90
    assert seen and all(a == b for a, b in seen), "a transactional read never sees half a transaction"


# ---------------------------------------------------------------------------------------------
# consumed capacity: 4 KB read units (halved when eventually consistent), 1 KB write units,
# doubled in transactions. Item sizes below are UTF-8 bytes of names and values.


def sized(pk, sk, size):
    """A string-only item of exactly `size` bytes."""
    item = {"pk": pk, "sk": sk, "payload": ""}
    item["payload"] = "x" * (size - string_item_size(item))
    assert string_item_size(item) == size
    return item


def units(response):
    consumed = response["ConsumedCapacity"]
    return consumed["CapacityUnits"]


def test_read_capacity_units(ddb, table):
    small, large = sized("small", "1", 3000), sized("large", "1", 9000)
    put_all(ddb, table, [small, large])

    def get(item, consistent, mode="TOTAL"):
        return ddb.get_item(TableName=table, Key=typed({"pk": item["pk"], "sk": item["sk"]}), ConsistentRead=consistent, ReturnConsumedCapacity=mode)

    assert get(small, True)["ConsumedCapacity"]["TableName"] == table
    assert (units(get(small, True)), units(get(small, False))) == (1.0, 0.5)
    assert (units(get(large, True)), units(get(large, False))) == (3.0, 1.5)
    missing = {"pk": "missing", "sk": "1"}
    assert (units(get(missing, True)), units(get(missing, False))) == (1.0, 0.5), "reading nothing still costs the minimum"
    detailed = get(large, True, "INDEXES")["ConsumedCapacity"]
    assert detailed["CapacityUnits"] == 3.0 and detailed["Table"]["CapacityUnits"] == 3.0
    assert "ConsumedCapacity" not in get(small, True, "NONE")
    assert "ConsumedCapacity" not in ddb.get_item(TableName=table, Key=typed({"pk": "small", "sk": "1"}))


def test_write_capacity_units(ddb, table):
    def put(item):
        return units(ddb.put_item(TableName=table, Item=typed(item), ReturnConsumedCapacity="TOTAL"))
    assert put(sized("w", "1", 1000)) == 1.0
    assert put(sized("w", "2", 1024)) == 1.0
    assert put(sized("w", "3", 1025)) == 2.0
    assert put(sized("w", "4", 3010)) == 3.0
    assert put(sized("w", "4", 100)) == 3.0, "replacing an item costs the larger of the old and new sizes"
    grown = ddb.update_item(TableName=table, Key=typed({"pk": "w", "sk": "1"}), UpdateExpression="SET payload = :b",
                            ExpressionAttributeValues=typed({":b": "y" * 2500}), ReturnConsumedCapacity="TOTAL")
    assert units(grown) == 3.0
    assert units(ddb.delete_item(TableName=table, Key=typed({"pk": "w", "sk": "1"}), ReturnConsumedCapacity="TOTAL")) == 3.0
    assert units(ddb.delete_item(TableName=table, Key=typed({"pk": "w", "sk": "nothing"}), ReturnConsumedCapacity="TOTAL")) == 1.0
    batch = ddb.batch_write_item(RequestItems={table: [{"PutRequest": {"Item": typed(sized("b", "1", 1000))}}, {"PutRequest": {"Item": typed(sized("b", "2", 3010))}}]},
                                 ReturnConsumedCapacity="TOTAL")
    assert [(c["TableName"], c["CapacityUnits"]) for c in batch["ConsumedCapacity"]] == [(table, 4.0)], "each item rounds up on its own"


def test_query_and_scan_capacity_round_the_total(ddb, table):
    put_all(ddb, table, [sized("q", f"{i}", 1000) for i in range(10)])  # 10,000 bytes: three 4 KB units
    q = {"TableName": table, "KeyConditionExpression": "pk = :p", "ExpressionAttributeValues": typed({":p": "q"}), "ReturnConsumedCapacity": "TOTAL"}
    assert units(ddb.query(**q)) == 1.5
    assert units(ddb.query(**q, ConsistentRead=True)) == 3.0
    assert units(ddb.query(**q, Select="COUNT")) == 1.5
    assert units(ddb.query(**{**q, "ExpressionAttributeValues": typed({":p": "q", ":no": "no"})}, FilterExpression="payload = :no")) == 1.5, "a filter does not reduce what is read"
    assert units(ddb.query(**q, Limit=4)) == 0.5
    assert units(ddb.scan(TableName=table, ReturnConsumedCapacity="TOTAL")) == 1.5
    assert units(ddb.scan(TableName=table, ReturnConsumedCapacity="TOTAL", ConsistentRead=True)) == 3.0
    keys = [typed({"pk": "q", "sk": str(i)}) for i in range(3)]
    eventual = ddb.batch_get_item(RequestItems={table: {"Keys": keys}}, ReturnConsumedCapacity="TOTAL")["ConsumedCapacity"]
    strong = ddb.batch_get_item(RequestItems={table: {"Keys": keys, "ConsistentRead": True}}, ReturnConsumedCapacity="TOTAL")["ConsumedCapacity"]
    assert [(c["TableName"], c["CapacityUnits"]) for c in eventual] == [(table, 1.5)] and [c["CapacityUnits"] for c in strong] == [3.0], \
        "a batch get rounds each item up on its own"


def test_transactions_cost_double(ddb, table):
    written = ddb.transact_write_items(TransactItems=[{"Put": {"TableName": table, "Item": typed(sized("t", "1", 1000))}},
                                                     {"Put": {"TableName": table, "Item": typed(sized("t", "2", 3010))}}],
                                       ReturnConsumedCapacity="TOTAL")["ConsumedCapacity"]
    assert [(c["TableName"], c["CapacityUnits"]) for c in written] == [(table, 8.0)]
    read = ddb.transact_get_items(TransactItems=[{"Get": {"TableName": table, "Key": typed({"pk": "t", "sk": s})}} for s in ("1", "2")],
                                  ReturnConsumedCapacity="TOTAL")["ConsumedCapacity"]
    assert [(c["TableName"], c["CapacityUnits"]) for c in read] == [(table, 4.0)]


def test_index_writes_and_reads_are_counted_per_index(ddb):
    name = create_table(ddb, extra=[("g", "S")], GlobalSecondaryIndexes=[gsi("by-g", "g")])
    key = typed({"pk": "i", "sk": "1"})

    def breakdown(response):
        consumed = response["ConsumedCapacity"]
        return consumed["CapacityUnits"], consumed["Table"]["CapacityUnits"], consumed.get("GlobalSecondaryIndexes", {}).get("by-g", {}).get("CapacityUnits", 0)

    assert breakdown(ddb.put_item(TableName=name, Item={**key, **typed({"g": "a"})}, ReturnConsumedCapacity="INDEXES")) == (2.0, 1.0, 1.0)
    moved = ddb.update_item(TableName=name, Key=key, UpdateExpression="SET g = :g", ExpressionAttributeValues=typed({":g": "b"}), ReturnConsumedCapacity="INDEXES")
    assert breakdown(moved) == (3.0, 1.0, 2.0), "changing an index key deletes the old index entry and writes the new one"
    touched = ddb.update_item(TableName=name, Key=key, UpdateExpression="SET note = :o", ExpressionAttributeValues=typed({":o": 1}), ReturnConsumedCapacity="INDEXES")
    assert breakdown(touched) == (2.0, 1.0, 1.0)
    read = ddb.query(TableName=name, IndexName="by-g", KeyConditionExpression="g = :g", ExpressionAttributeValues=typed({":g": "b"}), ReturnConsumedCapacity="INDEXES")
    assert read["ConsumedCapacity"]["CapacityUnits"] == 0.5
    assert read["ConsumedCapacity"]["GlobalSecondaryIndexes"]["by-g"]["CapacityUnits"] == 0.5
    assert read["ConsumedCapacity"].get("Table", {}).get("CapacityUnits", 0) == 0
    assert breakdown(ddb.delete_item(TableName=name, Key=key, ReturnConsumedCapacity="INDEXES")) == (2.0, 1.0, 1.0)


# ---------------------------------------------------------------------------------------------
# time to live


def test_time_to_live_settings(ddb, table):
    assert ddb.describe_time_to_live(TableName=table)["TimeToLiveDescription"] == {"TimeToLiveStatus": "DISABLED"}
    spec = ddb.update_time_to_live(TableName=table, TimeToLiveSpecification={"Enabled": True, "AttributeName": "expires"})["TimeToLiveSpecification"]
    assert spec == {"Enabled": True, "AttributeName": "expires"}
    eventually(lambda: ddb.describe_time_to_live(TableName=table)["TimeToLiveDescription"] == {"TimeToLiveStatus": "ENABLED", "AttributeName": "expires"},
               what="TTL to be ENABLED")
    assert error(lambda: ddb.update_time_to_live(TableName=table, TimeToLiveSpecification={"Enabled": True, "AttributeName": "expires"})) == (
        "ValidationException", "TimeToLive is already enabled")
    assert error(lambda: ddb.update_time_to_live(TableName=table, TimeToLiveSpecification={"Enabled": True, "AttributeName": "other"})) == (
        "ValidationException", "TimeToLive is active on a different AttributeName: current AttributeName is expires")
    assert error(lambda: ddb.describe_time_to_live(TableName="nope"))[0] == "ResourceNotFoundException"
    assert error(lambda: ddb.update_time_to_live(TableName="nope", TimeToLiveSpecification={"Enabled": True, "AttributeName": "x"}))[0] == "ResourceNotFoundException"


def test_time_to_live_cannot_change_again_right_away(ddb, table):
    other = create_table(ddb)
    assert error(lambda: ddb.update_time_to_live(TableName=other, TimeToLiveSpecification={"Enabled": False, "AttributeName": "expires"})) == (
        "ValidationException", "TimeToLive is already disabled")
    ddb.update_time_to_live(TableName=table, TimeToLiveSpecification={"Enabled": True, "AttributeName": "expires"})
    # The real service refuses a second change of the setting within its processing window (up to an hour).
    assert error(lambda: ddb.update_time_to_live(TableName=table, TimeToLiveSpecification={"Enabled": False, "AttributeName": "expires"})) == (
        "ValidationException", "Time to live has been modified multiple times within a fixed interval")
    assert ddb.describe_time_to_live(TableName=table)["TimeToLiveDescription"]["AttributeName"] == "expires"


def test_expired_items_are_deleted(start_stratus):
    server = start_stratus(args=("--data-dir", None, "--dynamodb-ttl-interval", "1s"))
    ddb, streams = server.client("dynamodb"), server.client("dynamodbstreams")
    name = create_table(ddb, extra=[("g", "S")], GlobalSecondaryIndexes=[gsi("by-g", "g")],
                        StreamSpecification={"StreamEnabled": True, "StreamViewType": "NEW_AND_OLD_IMAGES"})
    ddb.update_time_to_live(TableName=name, TimeToLiveSpecification={"Enabled": True, "AttributeName": "expires"})
    now = int(time.time())
    items = {
        "expired": {"expires": now - 60, "g": "x"},
        "soon": {"expires": now + 3},
        "future": {"expires": now + 3600, "g": "x"},
        "string": {"expires": str(now - 60)},  # not a number: ignored
        "no-attribute": {},
        "ancient": {"expires": now - 6 * 365 * 24 * 3600},  # more than five years in the past: ignored
        "nested": {"meta": {"expires": now - 60}},  # not top level: ignored
        "milliseconds": {"expires": (now - 60) * 1000},  # read as seconds, far in the future
    }
    put_all(ddb, name, [{"pk": pk, "sk": "0", **rest} for pk, rest in items.items()])
    kept = {"future", "string", "no-attribute", "ancient", "nested", "milliseconds"}
    eventually(lambda: {plain(i)["pk"] for i in all_items(ddb.scan, TableName=name, ConsistentRead=True)} == kept,
               timeout=15, interval=0.25, what="expired items to be deleted")
    in_index = query(ddb, name, "g = :x", {":x": "x"}, IndexName="by-g")["Items"]
    assert [plain(i)["pk"] for i in in_index] == ["future"], "deleted from the indexes too"
    records = read_stream(streams, stream_arn(ddb, name), len(items) + 2)
    removes = [r for r in records if r["eventName"] == "REMOVE"]
    assert sorted(plain(r["dynamodb"]["Keys"])["pk"] for r in removes) == ["expired", "soon"]
    for record in removes:
        assert record["userIdentity"] == {"Type": "Service", "PrincipalId": "dynamodb.amazonaws.com"}, "a service deletion, not a user's"
        assert plain(record["dynamodb"]["OldImage"])["expires"] == items[plain(record["dynamodb"]["Keys"])["pk"]]["expires"]
    assert all("userIdentity" not in r for r in records if r["eventName"] == "INSERT")


# ---------------------------------------------------------------------------------------------
# DynamoDB Streams


def test_list_and_describe_streams(ddb, streams):
    a = create_table(ddb, StreamSpecification={"StreamEnabled": True, "StreamViewType": "NEW_AND_OLD_IMAGES"})
    b = create_table(ddb, sort_key=None, StreamSpecification={"StreamEnabled": True, "StreamViewType": "KEYS_ONLY"})
    create_table(ddb)
    arns = {a: stream_arn(ddb, a), b: stream_arn(ddb, b)}
    listed = streams.list_streams()["Streams"]
    assert sorted((s["TableName"], s["StreamArn"]) for s in listed) == sorted(arns.items())
    assert all(s["StreamLabel"] == s["StreamArn"].rsplit("/", 1)[1] for s in listed)
    assert [s["StreamArn"] for s in streams.list_streams(TableName=a)["Streams"]] == [arns[a]]
    first = streams.list_streams(Limit=1)
    second = streams.list_streams(Limit=1, ExclusiveStartStreamArn=first["LastEvaluatedStreamArn"])
    assert sorted(s["StreamArn"] for s in first["Streams"] + second["Streams"]) == sorted(arns.values())
    description = streams.describe_stream(StreamArn=arns[a])["StreamDescription"]
    assert (description["StreamArn"], description["TableName"], description["StreamStatus"], description["StreamViewType"]) == (
        arns[a], a, "ENABLED", "NEW_AND_OLD_IMAGES")
    assert description["KeySchema"] == ddb.describe_table(TableName=a)["Table"]["KeySchema"]
    assert description["StreamLabel"] == arns[a].rsplit("/", 1)[1]
    assert abs(description["CreationRequestDateTime"].timestamp() - time.time()) < 120
    assert description["Shards"] and all(re.fullmatch(r"shardId-\d{20}-[0-9a-f]{8}", s["ShardId"]) for s in description["Shards"])
    assert streams.describe_stream(StreamArn=arns[b])["StreamDescription"]["KeySchema"] == [{"AttributeName": "pk", "KeyType": "HASH"}]
    assert error(lambda: streams.describe_stream(StreamArn=f"{arns[a].rsplit('/', 1)[0]}/2000-01-01T00:00:00.000"))[0] == "ResourceNotFoundException"


@pytest.mark.parametrize("view", ["KEYS_ONLY", "NEW_IMAGE", "OLD_IMAGE", "NEW_AND_OLD_IMAGES"])
def test_stream_records_follow_the_view_type(ddb, streams, view):
    name = create_table(ddb, StreamSpecification={"StreamEnabled": True, "StreamViewType": view})
    key = typed({"pk": "a", "sk": "1"})
    v1, v2 = {**key, "v": {"N": "1"}}, {**key, "v": {"N": "2"}, "w": {"S": "x"}}
    ddb.put_item(TableName=name, Item=v1)
    ddb.update_item(TableName=name, Key=key, UpdateExpression="SET v = :two, w = :x", ExpressionAttributeValues=typed({":two": 2, ":x": "x"}))
    ddb.delete_item(TableName=name, Key=key)
    records = read_stream(streams, stream_arn(ddb, name), 3)
    assert [r["eventName"] for r in records] == ["INSERT", "MODIFY", "REMOVE"]
    news, olds = [v1, v2, None], [None, v1, v2]
    for record, new, old in zip(records, news, olds):
        data = record["dynamodb"]
        assert data["Keys"] == key and data["StreamViewType"] == view
        assert data.get("NewImage") == (new if view in ("NEW_IMAGE", "NEW_AND_OLD_IMAGES") else None)
        assert data.get("OldImage") == (old if view in ("OLD_IMAGE", "NEW_AND_OLD_IMAGES") else None)
        assert (record["eventSource"], record["awsRegion"]) == ("aws:dynamodb", "us-east-1")
        assert re.fullmatch(r"\d+\.\d+", record["eventVersion"]), "a format version that clients must not pin"
        assert data["SizeBytes"] > 0 and re.fullmatch(r"\d{21,40}", data["SequenceNumber"])
        assert abs(data["ApproximateCreationDateTime"].timestamp() - time.time()) < 120
    assert len({r["eventID"] for r in records}) == 3
    assert [int(r["dynamodb"]["SequenceNumber"]) for r in records] == sorted(int(r["dynamodb"]["SequenceNumber"]) for r in records)


def test_stream_records_come_from_every_kind_of_write(ddb, streams):
    name = create_table(ddb, StreamSpecification={"StreamEnabled": True, "StreamViewType": "NEW_AND_OLD_IMAGES"})
    ddb.put_item(TableName=name, Item=typed({"pk": "p", "sk": "1", "v": 1}))
    ddb.put_item(TableName=name, Item=typed({"pk": "p", "sk": "1", "v": 1}))  # unchanged: no record
    ddb.update_item(TableName=name, Key=typed({"pk": "p", "sk": "1"}), UpdateExpression="SET v = :v", ExpressionAttributeValues=typed({":v": 1}))  # unchanged
    ddb.delete_item(TableName=name, Key=typed({"pk": "nothing", "sk": "1"}))  # deletes nothing: no record
    ddb.update_item(TableName=name, Key=typed({"pk": "u", "sk": "1"}), UpdateExpression="SET v = :v", ExpressionAttributeValues=typed({":v": 1}))
    ddb.batch_write_item(RequestItems={name: [{"PutRequest": {"Item": typed({"pk": "b", "sk": "1"})}}, {"DeleteRequest": {"Key": typed({"pk": "p", "sk": "1"})}}]})
    ddb.transact_write_items(TransactItems=[{"Put": {"TableName": name, "Item": typed({"pk": "t", "sk": "1"})}},
                                            {"Update": {"TableName": name, "Key": typed({"pk": "u", "sk": "1"}), "UpdateExpression": "ADD v :one",
                                                        "ExpressionAttributeValues": typed({":one": 1})}}])
    ddb.execute_statement(Statement=f"INSERT INTO \"{name}\" VALUE {{'pk': 'q', 'sk': '1'}}")
    failed = error(lambda: ddb.put_item(TableName=name, Item=typed({"pk": "q", "sk": "1", "x": 1}), ConditionExpression="attribute_not_exists(pk)"))
    assert failed[0] == "ConditionalCheckFailedException"
    records = read_stream(streams, stream_arn(ddb, name), 7)
    summary = sorted((r["eventName"], plain(r["dynamodb"]["Keys"])["pk"]) for r in records)
    assert summary == sorted([("INSERT", "p"), ("INSERT", "u"), ("INSERT", "b"), ("REMOVE", "p"), ("INSERT", "t"), ("MODIFY", "u"), ("INSERT", "q")])
    modify = next(r for r in records if r["eventName"] == "MODIFY")
    assert plain(modify["dynamodb"]["OldImage"])["v"] == 1 and plain(modify["dynamodb"]["NewImage"])["v"] == 2


def test_shard_iterator_types(ddb, streams):
    name = create_table(ddb, StreamSpecification={"StreamEnabled": True, "StreamViewType": "KEYS_ONLY"})
    for i in range(3):
        ddb.put_item(TableName=name, Item=typed({"pk": "same", "sk": str(i)}))
    arn = stream_arn(ddb, name)
    records = read_stream(streams, arn, 3)
    sequence = [r["dynamodb"]["SequenceNumber"] for r in records]
    shard = shard_holding(streams, arn, sequence[0])

    def iterator(kind, number=None):
        kwargs = {"SequenceNumber": number} if number else {}
        return streams.get_shard_iterator(StreamArn=arn, ShardId=shard, ShardIteratorType=kind, **kwargs)["ShardIterator"]

    assert [r["dynamodb"]["SequenceNumber"] for r in records_from(streams, iterator("TRIM_HORIZON"), 3)] == sequence
    assert [r["dynamodb"]["SequenceNumber"] for r in records_from(streams, iterator("AT_SEQUENCE_NUMBER", sequence[1]), 2)] == sequence[1:]
    assert [r["dynamodb"]["SequenceNumber"] for r in records_from(streams, iterator("AFTER_SEQUENCE_NUMBER", sequence[1]), 1)] == sequence[2:]
    latest = iterator("LATEST")
    assert streams.get_records(ShardIterator=latest)["Records"] == []
    ddb.put_item(TableName=name, Item=typed({"pk": "same", "sk": "3"}))
    fresh = records_from(streams, latest, 1)
    assert [plain(r["dynamodb"]["Keys"])["sk"] for r in fresh] == ["3"] and int(fresh[0]["dynamodb"]["SequenceNumber"]) > int(sequence[-1])
    limited = streams.get_records(ShardIterator=iterator("TRIM_HORIZON"), Limit=2)
    assert len(limited["Records"]) == 2 and limited["NextShardIterator"]
    rest = records_from(streams, limited["NextShardIterator"], 2)
    assert [r["dynamodb"]["SequenceNumber"] for r in limited["Records"] + rest] == sequence + [fresh[0]["dynamodb"]["SequenceNumber"]]
    assert error(lambda: streams.get_shard_iterator(StreamArn=arn, ShardId="shardId-00000000000000000000-00000000", ShardIteratorType="TRIM_HORIZON"))[0] == "ResourceNotFoundException"
    assert error(lambda: streams.get_shard_iterator(StreamArn=arn, ShardId=shard, ShardIteratorType="AT_SEQUENCE_NUMBER"))[0] == "ValidationException"


# ---------------------------------------------------------------------------------------------
# PartiQL


def test_partiql_insert_select_update_delete(ddb, table):
    q = f'"{table}"'
    ddb.execute_statement(Statement=f"INSERT INTO {q} VALUE {{'pk': 'a', 'sk': '1', 'n': 1, 'tags': <<'x', 'y'>>, 'm': {{'k': [1, 2]}}}}")
    ddb.execute_statement(Statement=f"INSERT INTO {q} VALUE {{'pk': ?, 'sk': ?, 'n': ?}}", Parameters=[{"S": "a"}, {"S": "2"}, {"N": "2"}])
    got = ddb.execute_statement(Statement=f"SELECT * FROM {q} WHERE pk = 'a' AND sk = '1'")["Items"]
    assert [plain(i) for i in got] == [{"pk": "a", "sk": "1", "n": 1, "tags": {"x", "y"}, "m": {"k": [1, 2]}}]
    ddb.execute_statement(Statement=f"UPDATE {q} SET n = n + 10 SET extra = 'e' WHERE pk = 'a' AND sk = '1'")
    ddb.execute_statement(Statement=f"UPDATE {q} REMOVE tags WHERE pk = ? AND sk = ?", Parameters=[{"S": "a"}, {"S": "1"}])
    assert fetch(ddb, table, {"pk": "a", "sk": "1"}) == {"pk": "a", "sk": "1", "n": 11, "extra": "e", "m": {"k": [1, 2]}}
    ddb.execute_statement(Statement=f"DELETE FROM {q} WHERE pk = 'a' AND sk = '2'")
    assert fetch(ddb, table, {"pk": "a", "sk": "2"}) == {}
    code, message = error(lambda: ddb.execute_statement(Statement=f"INSERT INTO {q} VALUE {{'pk': 'a', 'sk': '1'}}"))
    assert (code, message) == ("DuplicateItemException", "Duplicate primary key exists in table")
    assert error(lambda: ddb.execute_statement(Statement=f"UPDATE {q} SET n = 1 WHERE pk = 'a' AND sk = 'missing'"))[0] == "ConditionalCheckFailedException"
    assert error(lambda: ddb.execute_statement(Statement=f"UPDATE {q} SET n = 0 WHERE pk = 'a' AND sk = '1' AND n = 99"))[0] == "ConditionalCheckFailedException"
    assert fetch(ddb, table, {"pk": "a", "sk": "1"})["n"] == 11
    assert error(lambda: ddb.execute_statement(Statement='SELECT * FROM "nope"'))[0] == "ResourceNotFoundException"
    assert error(lambda: ddb.execute_statement(Statement=f"SELEKT * FROM {q}"))[0] == "ValidationException"


def test_partiql_select_with_where_and_projection(ddb, table):
    put_all(ddb, table, [{"pk": f"p{i % 3}", "sk": f"{i:02}", "n": i, "colour": "red" if i % 2 else "blue"} for i in range(12)])
    q = f'"{table}"'
    by_key = ddb.execute_statement(Statement=f"SELECT sk, n FROM {q} WHERE pk = ? AND sk > ?", Parameters=[{"S": "p0"}, {"S": "03"}])["Items"]
    assert [plain(i) for i in by_key] == [{"sk": "06", "n": 6}, {"sk": "09", "n": 9}], "a key-condition SELECT is a Query, in sort order"
    filtered = ddb.execute_statement(Statement=f"SELECT pk, n FROM {q} WHERE colour = 'red' AND n >= 7")["Items"]
    assert sorted(plain(i)["n"] for i in filtered) == [7, 9, 11]
    in_list = ddb.execute_statement(Statement=f"SELECT * FROM {q} WHERE pk IN ['p1', 'p2'] AND n < 3")["Items"]
    assert sorted(plain(i)["n"] for i in in_list) == [1, 2]
    begins = ddb.execute_statement(Statement=f"SELECT n FROM {q} WHERE pk = 'p1' AND begins_with(sk, '1')")["Items"]
    assert sorted(plain(i)["n"] for i in begins) == [10]
    collected, token = [], None
    while True:
        page = ddb.execute_statement(Statement=f"SELECT * FROM {q}", Limit=5, **({"NextToken": token} if token else {}))
        collected += page["Items"]
        token = page.get("NextToken")
        if not token:
            break
    assert sorted(plain(i)["n"] for i in collected) == list(range(12))


def test_batch_execute_statement(ddb, table):
    q = f'"{table}"'
    ddb.execute_statement(Statement=f"INSERT INTO {q} VALUE {{'pk': 'a', 'sk': '1', 'v': 1}}")
    writes = ddb.batch_execute_statement(Statements=[
        {"Statement": f"INSERT INTO {q} VALUE {{'pk': 'b', 'sk': '1'}}"},
        {"Statement": f"INSERT INTO {q} VALUE {{'pk': 'a', 'sk': '1'}}"},
        {"Statement": f"UPDATE {q} SET v = ? WHERE pk = 'a' AND sk = '1'", "Parameters": [{"N": "2"}]},
        {"Statement": f"DELETE FROM {q} WHERE pk = 'zz' AND sk = '1'"},
    ])["Responses"]
    assert [r.get("Error", {}).get("Code") for r in writes] == [None, "DuplicateItem", None, None]
    assert writes[1]["Error"]["Message"] == "Duplicate primary key exists in table"
    assert fetch(ddb, table, {"pk": "a", "sk": "1"})["v"] == 2 and fetch(ddb, table, {"pk": "b", "sk": "1"}) == {"pk": "b", "sk": "1"}
    reads = ddb.batch_execute_statement(Statements=[
        {"Statement": f"SELECT * FROM {q} WHERE pk = 'a' AND sk = '1'"},
        {"Statement": f"SELECT * FROM {q} WHERE pk = ? AND sk = ?", "Parameters": [{"S": "missing"}, {"S": "1"}]},
    ])["Responses"]
    assert plain(reads[0]["Item"]) == {"pk": "a", "sk": "1", "v": 2} and "Item" not in reads[1] and "Error" not in reads[1]
    mixed = [{"Statement": f"SELECT * FROM {q} WHERE pk = 'a' AND sk = '1'"}, {"Statement": f"DELETE FROM {q} WHERE pk = 'a' AND sk = '1'"}]
    assert error(lambda: ddb.batch_execute_statement(Statements=mixed))[0] == "ValidationException", "reads and writes do not mix"
    too_many = [{"Statement": f"INSERT INTO {q} VALUE {{'pk': 'many', 'sk': '{i}'}}"} for i in range(26)]
    assert error(lambda: ddb.batch_execute_statement(Statements=too_many))[0] == "ValidationException", "at most 25 statements"
    assert fetch(ddb, table, {"pk": "many", "sk": "0"}) == {}
    assert fetch(ddb, table, {"pk": "a", "sk": "1"}) != {}


def test_execute_transaction(ddb, table):
    q = f'"{table}"'
    ddb.execute_statement(Statement=f"INSERT INTO {q} VALUE {{'pk': 'acct', 'sk': '1', 'n': 10}}")
    ddb.execute_transaction(TransactStatements=[
        {"Statement": f"INSERT INTO {q} VALUE {{'pk': 'tx', 'sk': '1'}}"},
        {"Statement": f"UPDATE {q} SET n = n - 3 WHERE pk = 'acct' AND sk = '1' AND n >= 3"},
    ])
    assert fetch(ddb, table, {"pk": "acct", "sk": "1"})["n"] == 7 and fetch(ddb, table, {"pk": "tx", "sk": "1"}) != {}
    response = failure(lambda: ddb.execute_transaction(TransactStatements=[
        {"Statement": f"INSERT INTO {q} VALUE {{'pk': 'tx', 'sk': '2'}}"},
        {"Statement": f"UPDATE {q} SET n = n - 30 WHERE pk = 'acct' AND sk = '1' AND n >= 30"},
    ]))
    assert response["Error"]["Code"] == "TransactionCanceledException"
    assert [r["Code"] for r in response["CancellationReasons"]] == ["None", "ConditionalCheckFailed"]
    assert fetch(ddb, table, {"pk": "tx", "sk": "2"}) == {} and fetch(ddb, table, {"pk": "acct", "sk": "1"})["n"] == 7
    read = ddb.execute_transaction(TransactStatements=[
        {"Statement": f"SELECT * FROM {q} WHERE pk = 'acct' AND sk = '1'"},
        {"Statement": f"SELECT * FROM {q} WHERE pk = 'tx' AND sk = '1'"},
    ])["Responses"]
    assert [plain(r["Item"])["pk"] for r in read] == ["acct", "tx"]


# ---------------------------------------------------------------------------------------------
# tags, limits, endpoints


def test_tag_untag_and_list(ddb, table):
    arn = ddb.describe_table(TableName=table)["Table"]["TableArn"]
    assert ddb.list_tags_of_resource(ResourceArn=arn).get("Tags", []) == []
    ddb.tag_resource(ResourceArn=arn, Tags=[{"Key": "a", "Value": "1"}, {"Key": "b", "Value": "2"}])
    ddb.tag_resource(ResourceArn=arn, Tags=[{"Key": "a", "Value": "3"}, {"Key": "c", "Value": ""}])
    assert sorted(ddb.list_tags_of_resource(ResourceArn=arn)["Tags"], key=lambda t: t["Key"]) == [
        {"Key": "a", "Value": "3"}, {"Key": "b", "Value": "2"}, {"Key": "c", "Value": ""}]
    ddb.untag_resource(ResourceArn=arn, TagKeys=["b", "never-set"])
    assert sorted(t["Key"] for t in ddb.list_tags_of_resource(ResourceArn=arn)["Tags"]) == ["a", "c"]
    missing = arn.rsplit("/", 1)[0] + "/nope"
    assert error(lambda: ddb.list_tags_of_resource(ResourceArn=missing))[0] == "ResourceNotFoundException"
    assert error(lambda: ddb.tag_resource(ResourceArn=missing, Tags=[{"Key": "a", "Value": "b"}]))[0] == "ResourceNotFoundException"
    code, message = error(lambda: ddb.tag_resource(ResourceArn=arn, Tags=[{"Key": "aws:reserved", "Value": "x"}]))
    assert code == "ValidationException" and "aws:" in message
    resource_tags = ddb.list_tags_of_resource(ResourceArn=arn)["Tags"]
    assert all(t["Key"] != "aws:reserved" for t in resource_tags)


def test_describe_limits(ddb):
    limits = ddb.describe_limits()
    assert {k: limits[k] for k in ["AccountMaxReadCapacityUnits", "AccountMaxWriteCapacityUnits", "TableMaxReadCapacityUnits", "TableMaxWriteCapacityUnits"]} == {
        "AccountMaxReadCapacityUnits": 80000, "AccountMaxWriteCapacityUnits": 80000, "TableMaxReadCapacityUnits": 40000, "TableMaxWriteCapacityUnits": 40000}


def test_describe_endpoints(ddb):
    [endpoint] = ddb.describe_endpoints()["Endpoints"]
    assert endpoint["Address"] and endpoint["CachePeriodInMinutes"] == 1440


# ---------------------------------------------------------------------------------------------
# awscli


def test_awscli_round_trip(stratus):
    name = unique("cli")

    def aws(*args, check=True):
        result = stratus.aws("dynamodb", *args, check=check)
        return json.loads(result.stdout) if check and result.stdout.strip() else result

    aws("create-table", "--table-name", name, "--attribute-definitions", "AttributeName=pk,AttributeType=S", "AttributeName=sk,AttributeType=N",
        "--key-schema", "AttributeName=pk,KeyType=HASH", "AttributeName=sk,KeyType=RANGE", "--billing-mode", "PAY_PER_REQUEST",
        "--stream-specification", "StreamEnabled=true,StreamViewType=NEW_IMAGE")
    aws("wait", "table-exists", "--table-name", name)
    for i in range(5):
        aws("put-item", "--table-name", name, "--item", json.dumps({"pk": {"S": "cli"}, "sk": {"N": str(i)}, "msg": {"S": f"hello {i}"}}))
    got = aws("get-item", "--table-name", name, "--key", json.dumps({"pk": {"S": "cli"}, "sk": {"N": "3"}}), "--consistent-read")
    assert got["Item"]["msg"] == {"S": "hello 3"}
    queried = aws("query", "--table-name", name, "--key-condition-expression", "pk = :p AND sk >= :s",
                  "--expression-attribute-values", json.dumps({":p": {"S": "cli"}, ":s": {"N": "2"}}))
    assert [i["sk"]["N"] for i in queried["Items"]] == ["2", "3", "4"] and queried["Count"] == 3
    scanned = aws("scan", "--table-name", name, "--page-size", "2")
    assert scanned["Count"] == 5 and len(scanned["Items"]) == 5, "awscli follows LastEvaluatedKey"
    first = aws("scan", "--table-name", name, "--max-items", "2")
    assert len(first["Items"]) == 2 and first["NextToken"]
    updated = aws("update-item", "--table-name", name, "--key", json.dumps({"pk": {"S": "cli"}, "sk": {"N": "0"}}),
                  "--update-expression", "SET msg = :m", "--expression-attribute-values", json.dumps({":m": {"S": "bye"}}), "--return-values", "UPDATED_NEW")
    assert updated["Attributes"] == {"msg": {"S": "bye"}}
    assert name in aws("list-tables")["TableNames"]
    streams = json.loads(stratus.aws("dynamodbstreams", "list-streams", "--table-name", name).stdout)["Streams"]
    assert [s["TableName"] for s in streams] == [name]
    aws("delete-table", "--table-name", name)
    eventually(lambda: stratus.aws("dynamodb", "describe-table", "--table-name", name, check=False).returncode != 0, timeout=30, interval=0.5,
               what="the table to be deleted")


def test_awscli_reports_errors(stratus):
    missing = stratus.aws("dynamodb", "describe-table", "--table-name", "nope", check=False)
    assert missing.returncode != 0
    assert "ResourceNotFoundException" in missing.stderr and "Requested resource not found: Table: nope not found" in missing.stderr
    name = create_table(stratus.client("dynamodb"))
    conditional = stratus.aws("dynamodb", "put-item", "--table-name", name, "--item", json.dumps({"pk": {"S": "a"}, "sk": {"S": "b"}}),
                              "--condition-expression", "attribute_exists(pk)", check=False)
    assert conditional.returncode != 0 and "ConditionalCheckFailedException" in conditional.stderr
    invalid = stratus.aws("dynamodb", "put-item", "--table-name", name, "--item", json.dumps({"pk": {"S": "a"}}), check=False)
    assert invalid.returncode != 0 and "Missing the key sk in the item" in invalid.stderr


def test_resource_api_conditional_writes(resource, table):
    tbl = resource.Table(table)
    tbl.put_item(Item={"pk": "r", "sk": "1", "stock": 3, "tags": {"new"}}, ConditionExpression=Attr("pk").not_exists())
    with pytest.raises(tbl.meta.client.exceptions.ConditionalCheckFailedException):
        tbl.put_item(Item={"pk": "r", "sk": "1"}, ConditionExpression=Attr("pk").not_exists())
    result = tbl.update_item(Key={"pk": "r", "sk": "1"}, UpdateExpression="SET stock = stock - :one ADD tags :t",
                             ConditionExpression=Attr("stock").gt(0) & Attr("tags").contains("new"),
                             ExpressionAttributeValues={":one": 1, ":t": {"sale"}}, ReturnValues="ALL_NEW")
    assert result["Attributes"] == {"pk": "r", "sk": "1", "stock": 2, "tags": {"new", "sale"}}
    with pytest.raises(tbl.meta.client.exceptions.ConditionalCheckFailedException):
        tbl.delete_item(Key={"pk": "r", "sk": "1"}, ConditionExpression=Attr("stock").eq(0) | Attr("tags").size().gt(5))
    old = tbl.delete_item(Key={"pk": "r", "sk": "1"}, ConditionExpression=Attr("stock").lt(3) & ~Attr("gone").exists(), ReturnValues="ALL_OLD")
    assert old["Attributes"]["stock"] == 2
    assert "Item" not in tbl.get_item(Key={"pk": "r", "sk": "1"}, ConsistentRead=True)


# ---------------------------------------------------------------------------------------------
# Stratus: the partitions view (GET /_stratus/dynamodb/tables/<name>/partitions)


def assert_covers_the_hash_space(parts):
    """Contiguous, non-overlapping ranges from 0000000000000000 to ffffffffffffffff (hashEnd inclusive)."""
    assert parts, "at least one partition"
    for part in parts:
        assert re.fullmatch(r"[0-9a-f]{16}", part["hashStart"]) and re.fullmatch(r"[0-9a-f]{16}", part["hashEnd"]), part
        assert int(part["hashStart"], 16) <= int(part["hashEnd"], 16), part
        assert part["itemCount"] >= 0 and part["bytes"] >= 0 and part["readUnitsLastMinute"] >= 0 and part["writeUnitsLastMinute"] >= 0
    ordered = sorted(parts, key=lambda p: int(p["hashStart"], 16))
    assert ordered[0]["hashStart"] == "0" * 16 and ordered[-1]["hashEnd"] == "f" * 16
    for before, after in zip(ordered, ordered[1:]):
        assert int(after["hashStart"], 16) == int(before["hashEnd"], 16) + 1, (before, after)
    assert len({p["id"] for p in parts}) == len(parts), "partition ids are distinct"


def test_partitions_count_every_item_once_and_show_a_hot_key(stratus, ddb):
    name = create_table(ddb, extra=[("g", "S")], GlobalSecondaryIndexes=[gsi("by-g", "g")])
    cold = [{"pk": f"cold-{i}", "sk": "0", "g": f"g{i % 3}"} for i in range(30)]
    hot = [{"pk": "hot", "sk": f"{i:03}"} for i in range(120)]
    put_all(ddb, name, cold + hot)
    view = partitions(stratus, name)
    assert view["table"] == name
    parts = view["partitions"]
    assert_covers_the_hash_space(parts)
    assert sum(p["itemCount"] for p in parts) == 150
    assert sum(p["bytes"] for p in parts) >= sum(string_item_size(i) for i in cold + hot)
    holding = [p for p in parts if p["itemCount"] >= len(hot)]
    assert len(holding) == 1, "all items of one partition key live in one partition"
    hottest = max(parts, key=lambda p: p["writeUnitsLastMinute"])
    assert hottest["id"] == holding[0]["id"] and hottest["writeUnitsLastMinute"] >= len(hot)
    for _ in range(20):
        ddb.query(TableName=name, KeyConditionExpression="pk = :p", ExpressionAttributeValues=typed({":p": "hot"}), ConsistentRead=True)
    parts = partitions(stratus, name)["partitions"]
    assert max(parts, key=lambda p: p["readUnitsLastMinute"])["id"] == holding[0]["id"]
    assert next(p for p in parts if p["id"] == holding[0]["id"])["readUnitsLastMinute"] >= 20
    index = view["indexes"]["by-g"]
    assert_covers_the_hash_space(index)
    assert sum(p["itemCount"] for p in index) == len(cold), "a sparse index holds only items with its key"
    with pytest.raises(urllib.error.HTTPError) as missing:
        partitions(stratus, "no-such-table")
    assert missing.value.code == 404


def test_small_partitions_split_into_contiguous_ranges(start_stratus):
    server = start_stratus(args=("--data-dir", None, "--dynamodb-partition-bytes", "4096"))
    ddb = server.client("dynamodb")
    name = create_table(ddb)
    items = [{"pk": f"user-{i:04}", "sk": "profile", "data_": "x" * 80} for i in range(200)]  # about 100 bytes each
    put_all(ddb, name, items)
    view = eventually(lambda: (lambda v: v if len(v["partitions"]) >= 3 else None)(partitions(server, name)), timeout=15, interval=0.1,
                      what="the table to split into several partitions")
    parts = view["partitions"]
    assert_covers_the_hash_space(parts)
    assert sum(p["itemCount"] for p in parts) == 200 and all(p["itemCount"] > 0 for p in parts)
    assert len(all_items(ddb.scan, TableName=name, ConsistentRead=True)) == 200
    for start in range(0, 200, 100):
        got = ddb.batch_get_item(RequestItems={name: {"Keys": [typed({"pk": i["pk"], "sk": "profile"}) for i in items[start:start + 100]], "ConsistentRead": True}})
        assert len(got["Responses"][name]) == 100
    segments = [keys_of(all_items(ddb.scan, TableName=name, Segment=s, TotalSegments=3), "pk") for s in range(3)]
    assert sorted(k for part in segments for k in part) == sorted((i["pk"],) for i in items)
    hot = [{"pk": "hot", "sk": f"{i:03}", "data_": "y" * 80} for i in range(100)]
    put_all(ddb, name, hot)
    parts = partitions(server, name)["partitions"]
    assert_covers_the_hash_space(parts)
    assert sum(p["itemCount"] for p in parts) == 300
    assert len([p for p in parts if p["itemCount"] >= 100]) == 1, "one partition key is never split across partitions"
    assert query(ddb, name, "pk = :p", {":p": "hot"}, Select="COUNT", ConsistentRead=True)["Count"] == 100


# ---------------------------------------------------------------------------------------------
# Stratus: durability


def test_restart_keeps_tables_items_indexes_ttl_and_stream_records(start_stratus):
    first = start_stratus("first")
    ddb, streams = first.client("dynamodb"), first.client("dynamodbstreams")
    name = create_table(ddb, extra=[("g", "S"), ("l", "S")], LocalSecondaryIndexes=[lsi("by-l", "l")],
                        GlobalSecondaryIndexes=[gsi("by-g", "g", projection="KEYS_ONLY")],
                        StreamSpecification={"StreamEnabled": True, "StreamViewType": "NEW_AND_OLD_IMAGES"}, Tags=[{"Key": "k", "Value": "v"}])
    ddb.update_time_to_live(TableName=name, TimeToLiveSpecification={"Enabled": True, "AttributeName": "expires"})
    items = [{"pk": f"p{i}", "sk": "0", "g": "even" if i % 2 == 0 else "odd", "l": f"l{i}", "n": i, "expires": int(time.time()) + 86400} for i in range(6)]
    put_all(ddb, name, items)
    ddb.update_item(TableName=name, Key=typed({"pk": "p0", "sk": "0"}), UpdateExpression="SET n = :n", ExpressionAttributeValues=typed({":n": 100}))
    ddb.delete_item(TableName=name, Key=typed({"pk": "p5", "sk": "0"}))
    before_table = ddb.describe_table(TableName=name)["Table"]
    before_records = read_stream(streams, before_table["LatestStreamArn"], 8)
    assert len(before_records) == 8
    assert first.stop() == 0

    second = start_stratus("second", args=("--data-dir", str(first.data_dir)))
    ddb, streams = second.client("dynamodb"), second.client("dynamodbstreams")
    table = ddb.describe_table(TableName=name)["Table"]
    for field in ["TableArn", "TableId", "CreationDateTime", "KeySchema", "LatestStreamArn", "StreamSpecification", "TableStatus"]:
        assert table[field] == before_table[field], field
    assert [(i["IndexName"], i["IndexStatus"], i["Projection"]) for i in table["GlobalSecondaryIndexes"]] == [("by-g", "ACTIVE", {"ProjectionType": "KEYS_ONLY"})]
    assert [i["IndexName"] for i in table["LocalSecondaryIndexes"]] == ["by-l"]
    assert table["ItemCount"] == 5
    got = sorted((plain(i) for i in all_items(ddb.scan, TableName=name, ConsistentRead=True)), key=lambda i: i["pk"])
    assert [i["pk"] for i in got] == ["p0", "p1", "p2", "p3", "p4"] and got[0]["n"] == 100
    even = query(ddb, name, "g = :g", {":g": "even"}, IndexName="by-g")["Items"]
    assert sorted(plain(i)["pk"] for i in even) == ["p0", "p2", "p4"]
    assert [plain(i)["pk"] for i in query(ddb, name, "pk = :p AND l = :l", {":p": "p3", ":l": "l3"}, IndexName="by-l")["Items"]] == ["p3"]
    assert ddb.describe_time_to_live(TableName=name)["TimeToLiveDescription"] == {"TimeToLiveStatus": "ENABLED", "AttributeName": "expires"}
    assert ddb.list_tags_of_resource(ResourceArn=table["TableArn"])["Tags"] == [{"Key": "k", "Value": "v"}]
    after_records = read_stream(streams, table["LatestStreamArn"], 8)
    assert [(r["eventID"], r["dynamodb"]["SequenceNumber"]) for r in after_records] == [(r["eventID"], r["dynamodb"]["SequenceNumber"]) for r in before_records]
    ddb.put_item(TableName=name, Item=typed({"pk": "p9", "sk": "0", "g": "odd", "l": "l9"}))
    newest = read_stream(streams, table["LatestStreamArn"], 9)[-1]
    assert plain(newest["dynamodb"]["Keys"])["pk"] == "p9"
    assert int(newest["dynamodb"]["SequenceNumber"]) > max(int(r["dynamodb"]["SequenceNumber"]) for r in before_records)


def test_kill_9_loses_no_acknowledged_write_and_leaves_no_partial_transaction(start_stratus):
    first = start_stratus("first")
    name = create_table(first.client("dynamodb"))

    def worker(n):
        client = first.client("dynamodb")

        def write(i):
            client.put_item(TableName=name, Item=typed({"pk": f"put-{n}-{i}", "sk": "0", "n": n, "i": i}))
            client.transact_write_items(TransactItems=[
                {"Put": {"TableName": name, "Item": typed({"pk": f"tx-{n}-{i}", "sk": side, "n": n, "i": i})}} for side in ("a", "b")])
            return n, i

        return write

    acked = first.kill_9_under_load(worker, threads=8, calls=1000, after=2000)
    assert len(acked) >= 500, f"only {len(acked)} iterations were acknowledged before the kill"

    second = start_stratus("second", args=("--data-dir", str(first.data_dir)))
    ddb = second.client("dynamodb")
    present = {(plain(i)["pk"], plain(i)["sk"]) for i in all_items(ddb.scan, TableName=name, ConsistentRead=True)}
    missing = [(n, i) for n, i in acked if not {(f"put-{n}-{i}", "0"), (f"tx-{n}-{i}", "a"), (f"tx-{n}-{i}", "b")} <= present]
    assert not missing, f"{len(missing)} of {len(acked)} acknowledged iterations lost writes, e.g. {missing[:5]}"
    transactions = {pk for pk, _ in present if pk.startswith("tx-")}
    partial = [pk for pk in transactions if not {(pk, "a"), (pk, "b")} <= present]
    assert not partial, f"transactions applied in part: {partial[:5]}"
    # The table still takes writes after recovery.
    ddb.put_item(TableName=name, Item=typed({"pk": "after", "sk": "0"}))
    assert fetch(ddb, name, {"pk": "after", "sk": "0"}) == {"pk": "after", "sk": "0"}


def test_enforced_capacity_throttles_a_hot_partition_and_refills(start_stratus):
    server = start_stratus(args=("--data-dir", None, "--enforce-capacity"))
    ddb = server.client("dynamodb")  # the harness's clients do not retry: a throttle surfaces
    name = create_table(ddb, ProvisionedThroughput={"ReadCapacityUnits": 2, "WriteCapacityUnits": 2})
    throttled = 0
    for i in range(30):
        try:
            ddb.put_item(TableName=name, Item=typed({"pk": "hot", "sk": str(i)}))
        except botocore.exceptions.ClientError as e:
            assert e.response["Error"]["Code"] == "ProvisionedThroughputExceededException"
            throttled += 1
    assert throttled >= 20, f"2 write units a second let {30 - throttled} of 30 back-to-back writes through"
    codes = []
    for _ in range(20):
        try:
            ddb.get_item(TableName=name, Key=typed({"pk": "hot", "sk": "0"}), ConsistentRead=True)
            codes.append("ok")
        except botocore.exceptions.ClientError as e:
            codes.append(e.response["Error"]["Code"])
    assert "ok" in codes and "ProvisionedThroughputExceededException" in codes, f"reads have a bucket of their own: {codes}"
    time.sleep(1.5)  # the buckets refill at the provisioned rate
    ddb.put_item(TableName=name, Item=typed({"pk": "hot", "sk": "after"}))
    # A batch to the hot partition gets what capacity allows; the rest comes back to retry.
    time.sleep(1.5)
    requests = [{"PutRequest": {"Item": typed({"pk": "hot", "sk": f"batch-{i}"})}} for i in range(10)]
    left = ddb.batch_write_item(RequestItems={name: requests})["UnprocessedItems"].get(name, [])
    assert 0 < len(left) < 10, f"{len(left)} of 10 writes left unprocessed"
    written = {plain(i)["sk"] for i in all_items(ddb.scan, TableName=name) if plain(i)["sk"].startswith("batch-")}
    assert written | {plain(r["PutRequest"]["Item"])["sk"] for r in left} == {f"batch-{i}" for i in range(10)}
    assert not written & {plain(r["PutRequest"]["Item"])["sk"] for r in left}


def test_capacity_is_not_enforced_by_default(ddb, table):
    for i in range(50):
        ddb.put_item(TableName=table, Item=typed({"pk": "hot", "sk": str(i)}))


def test_item_collection_metrics_for_tables_with_local_indexes(ddb, table):
    name = create_table(ddb, extra=[("lsk", "S")], LocalSecondaryIndexes=[lsi("by-lsk", "lsk", "KEYS_ONLY")])
    put = ddb.put_item(TableName=name, Item=typed({"pk": "a", "sk": "1", "lsk": "x"}), ReturnItemCollectionMetrics="SIZE")
    assert put["ItemCollectionMetrics"]["ItemCollectionKey"] == typed({"pk": "a"})
    assert [float(x) for x in put["ItemCollectionMetrics"]["SizeEstimateRangeGB"]] == [0.0, 1.0]
    updated = ddb.update_item(TableName=name, Key=typed({"pk": "a", "sk": "1"}), UpdateExpression="SET v = :v",
                              ExpressionAttributeValues=typed({":v": 1}), ReturnItemCollectionMetrics="SIZE")
    assert updated["ItemCollectionMetrics"]["ItemCollectionKey"] == typed({"pk": "a"})
    deleted = ddb.delete_item(TableName=name, Key=typed({"pk": "a", "sk": "1"}), ReturnItemCollectionMetrics="SIZE")
    assert deleted["ItemCollectionMetrics"]["ItemCollectionKey"] == typed({"pk": "a"})
    assert "ItemCollectionMetrics" not in ddb.put_item(TableName=name, Item=typed({"pk": "a", "sk": "2"}))
    # Tables without local indexes have no item collection metrics.
    plain_put = ddb.put_item(TableName=table, Item=typed({"pk": "a", "sk": "1"}), ReturnItemCollectionMetrics="SIZE")
    assert "ItemCollectionMetrics" not in plain_put


def test_client_request_token_holds_across_a_restart(start_stratus):
    first = start_stratus("first")
    ddb = first.client("dynamodb")
    name = create_table(ddb)
    request = {"TransactItems": [{"Update": {"TableName": name, "Key": typed({"pk": "t", "sk": "0"}),
                                             "UpdateExpression": "ADD n :one", "ExpressionAttributeValues": typed({":one": 1})}}],
               "ClientRequestToken": "token-across-restart"}
    ddb.transact_write_items(**request)
    first.stop()
    second = start_stratus("second", args=("--data-dir", str(first.data_dir)))
    ddb = second.client("dynamodb")
    ddb.transact_write_items(**request)  # a retry within 10 minutes: not applied again
    assert fetch(ddb, name, {"pk": "t", "sk": "0"})["n"] == 1
    changed = {**request, "TransactItems": [{**request["TransactItems"][0]}]}
    changed["TransactItems"][0]["Update"] = {**request["TransactItems"][0]["Update"], "UpdateExpression": "ADD m :one"}
    assert error(lambda: ddb.transact_write_items(**changed))[0] == "IdempotentParameterMismatchException"
