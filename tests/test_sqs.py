"""SQS through boto3 (in both of SQS's protocols), awscli and raw HTTP."""

import base64
import hashlib
import json
import threading
import time
import urllib.parse
import urllib.request
import uuid

import boto3
import botocore.exceptions
import pytest

from stratus_harness import legacy_sqs_session


@pytest.fixture(params=["durable", "ephemeral"])
def stratus(start_stratus, request):
    """Every test twice: the stores commit differently (the memory engine in the caller's thread,
    which lets a send settle its messages under the lock it submitted under)."""
    return start_stratus(args=("--ephemeral",)) if request.param == "ephemeral" else start_stratus()


@pytest.fixture(params=["json", "query"])
def sqs(stratus, request):
    """boto3 as it is (the JSON protocol), and as the SDKs of before 2024 (the query protocol):
    SQS answers both alike."""
    return stratus.client("sqs", session=legacy_sqs_session() if request.param == "query" else boto3)


def system_names(sqs, *names):
    """ReceiveMessage's choice of system attributes, under the name the client's model has:
    `MessageSystemAttributeNames` since 2024, `AttributeNames` (still accepted) before."""
    members = sqs.meta.service_model.operation_model("ReceiveMessage").input_shape.members
    return {"MessageSystemAttributeNames" if "MessageSystemAttributeNames" in members else "AttributeNames": list(names)}


def error_code(call):
    with pytest.raises(botocore.exceptions.ClientError) as raised:
        call()
    return raised.value.response["Error"]["Code"]


def test_create_list_get_delete(stratus, sqs):
    url = sqs.create_queue(QueueName="orders")["QueueUrl"]
    assert url == f"{stratus.url}/000000000000/orders"
    assert sqs.create_queue(QueueName="orders")["QueueUrl"] == url, "idempotent with the same attributes"
    for name in ["orders-dlq", "payments", "orders-2"]:
        sqs.create_queue(QueueName=name)
    assert sqs.get_queue_url(QueueName="payments")["QueueUrl"].endswith("/000000000000/payments")
    assert sqs.list_queues(QueueNamePrefix="orders")["QueueUrls"] == [url, url + "-2", url + "-dlq"]
    first = sqs.list_queues(MaxResults=2)
    second = sqs.list_queues(MaxResults=2, NextToken=first["NextToken"])
    assert len(first["QueueUrls"]) == 2 and len(second["QueueUrls"]) == 2 and "NextToken" not in second
    sqs.delete_queue(QueueUrl=url)
    assert error_code(lambda: sqs.get_queue_url(QueueName="orders")) == "AWS.SimpleQueueService.NonExistentQueue"
    assert error_code(lambda: sqs.create_queue(QueueName="orders")) == "AWS.SimpleQueueService.QueueDeletedRecently"
    with pytest.raises(sqs.exceptions.QueueDoesNotExist):
        sqs.send_message(QueueUrl=url, MessageBody="x")


def test_queue_urls_follow_the_host_the_client_used(stratus):
    host, port = stratus.address
    for endpoint in [f"http://localhost:{port}", f"http://127.0.0.1:{port}"]:
        client = stratus.client("sqs", endpoint_url=endpoint)
        assert client.create_queue(QueueName="hosty")["QueueUrl"] == f"{endpoint}/000000000000/hosty"
    client = stratus.client("sqs")
    # LocalStack's host names (which resolve to 127.0.0.1 through public DNS): URLs follow them,
    # and a queue URL with any host names the queue by its path.
    localstack = f"sqs.us-east-1.localhost.localstack.cloud:{port}"
    status, body, _ = json_call(stratus, "GetQueueUrl", {"QueueName": "hosty"}, headers={"Host": localstack})
    assert status == 200 and body["QueueUrl"] == f"http://{localstack}/000000000000/hosty"
    client.send_message(QueueUrl=body["QueueUrl"], MessageBody="by any host")
    assert client.receive_message(QueueUrl=body["QueueUrl"])["Messages"][0]["Body"] == "by any host"


def test_a_bare_queue_name_stands_for_its_url(sqs):
    """SQS takes the name of one of the caller's queues where a QueueUrl belongs (recorded)."""
    url = sqs.create_queue(QueueName="by-name")["QueueUrl"]
    sqs.send_message(QueueUrl="by-name", MessageBody="m")
    assert sqs.receive_message(QueueUrl=url)["Messages"][0]["Body"] == "m"
    assert error_code(lambda: sqs.send_message(QueueUrl="no-such-queue", MessageBody="m")) == "AWS.SimpleQueueService.NonExistentQueue"


def test_accounts_and_regions_are_isolated(stratus):
    a = stratus.client("sqs", aws_access_key_id="111111111111")
    b = stratus.client("sqs", aws_access_key_id="222222222222")
    west = stratus.client("sqs", aws_access_key_id="111111111111", region_name="eu-west-1")
    a.create_queue(QueueName="mine")
    assert "QueueUrls" not in b.list_queues()
    assert "QueueUrls" not in west.list_queues()
    arn = a.get_queue_attributes(QueueUrl=a.get_queue_url(QueueName="mine")["QueueUrl"], AttributeNames=["QueueArn"])
    assert arn["Attributes"]["QueueArn"] == "arn:aws:sqs:us-east-1:111111111111:mine"


def test_create_with_different_attributes_conflicts(sqs):
    sqs.create_queue(QueueName="q", Attributes={"VisibilityTimeout": "10"})
    with pytest.raises(botocore.exceptions.ClientError) as raised:
        sqs.create_queue(QueueName="q", Attributes={"VisibilityTimeout": "20"})
    error = raised.value.response["Error"]
    assert (error["Code"], error["Message"]) == ("QueueAlreadyExists", "A queue already exists with the same name and a different value for attribute VisibilityTimeout")


def test_attributes(sqs):
    url = sqs.create_queue(QueueName="attrs", Attributes={"DelaySeconds": "3", "MaximumMessageSize": "2048"}, tags={"team": "a"})["QueueUrl"]
    attributes = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["All"])["Attributes"]
    assert attributes["DelaySeconds"] == "3" and attributes["MaximumMessageSize"] == "2048"
    assert attributes["VisibilityTimeout"] == "30" and attributes["MessageRetentionPeriod"] == "345600"
    assert attributes["QueueArn"] == "arn:aws:sqs:us-east-1:000000000000:attrs"
    sqs.set_queue_attributes(QueueUrl=url, Attributes={"VisibilityTimeout": "45"})
    only = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["VisibilityTimeout"])["Attributes"]
    assert only == {"VisibilityTimeout": "45"}
    assert error_code(lambda: sqs.set_queue_attributes(QueueUrl=url, Attributes={"VisibilityTimeout": "99999"})) == "InvalidAttributeValue"
    assert error_code(lambda: sqs.set_queue_attributes(QueueUrl=url, Attributes={"Colour": "red"})) == "InvalidAttributeName"
    assert error_code(lambda: sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["Colour"])) == "InvalidAttributeName"
    too_big = "x" * 2049
    assert error_code(lambda: sqs.send_message(QueueUrl=url, MessageBody=too_big)) == "InvalidParameterValue"


def test_send_receive_delete_with_attributes_and_digests(sqs):
    url = sqs.create_queue(QueueName="work")["QueueUrl"]
    attributes = {
        "text": {"DataType": "String", "StringValue": "héllo"},
        "count": {"DataType": "Number", "StringValue": "42"},
        "blob": {"DataType": "Binary", "BinaryValue": b"\x00\xff"},
        "custom": {"DataType": "String.custom", "StringValue": "c"},
    }
    sent = sqs.send_message(QueueUrl=url, MessageBody="body ✓", MessageAttributes=attributes)
    # boto3 checks MD5OfMessageBody and MD5OfMessageAttributes itself and raises on a mismatch.
    assert sent["MD5OfMessageBody"] == hashlib.md5("body ✓".encode()).hexdigest()
    received = sqs.receive_message(QueueUrl=url, MessageAttributeNames=["All"], **system_names(sqs, "All"))
    message = received["Messages"][0]
    assert message["Body"] == "body ✓" and message["MessageId"] == sent["MessageId"]
    assert message["MessageAttributes"]["blob"]["BinaryValue"] == b"\x00\xff"
    assert message["MessageAttributes"]["count"] == {"DataType": "Number", "StringValue": "42"}
    system = message["Attributes"]
    assert system["ApproximateReceiveCount"] == "1" and system["SenderId"] == "000000000000"
    assert abs(int(system["SentTimestamp"]) - time.time() * 1000) < 60_000
    only_text = sqs.send_message(QueueUrl=url, MessageBody="second", MessageAttributes=attributes)
    selected = sqs.receive_message(QueueUrl=url, MessageAttributeNames=["te.*"])["Messages"][0]
    assert list(selected["MessageAttributes"]) == ["text"] and selected["MessageId"] == only_text["MessageId"]
    sqs.change_message_visibility(QueueUrl=url, ReceiptHandle=selected["ReceiptHandle"], VisibilityTimeout=0)
    everything = sqs.receive_message(QueueUrl=url, MessageAttributeNames=["*"])["Messages"][0]
    assert set(everything["MessageAttributes"]) == set(attributes), "* is every attribute, as SQS answers it"
    sqs.delete_message(QueueUrl=url, ReceiptHandle=message["ReceiptHandle"])
    counts = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["All"])["Attributes"]
    assert counts["ApproximateNumberOfMessages"] == "0" and counts["ApproximateNumberOfMessagesNotVisible"] == "1"


def test_visibility_timeout_redelivers_with_a_new_receipt(sqs):
    url = sqs.create_queue(QueueName="vis", Attributes={"VisibilityTimeout": "1"})["QueueUrl"]
    sqs.send_message(QueueUrl=url, MessageBody="m")
    first = sqs.receive_message(QueueUrl=url)["Messages"][0]
    assert "Messages" not in sqs.receive_message(QueueUrl=url)
    time.sleep(1.1)
    second = sqs.receive_message(QueueUrl=url, AttributeNames=["All"])["Messages"][0]
    assert second["ReceiptHandle"] != first["ReceiptHandle"]
    assert second["Attributes"]["ApproximateReceiveCount"] == "2"
    # The stale handle succeeds but deletes nothing; the fresh one deletes.
    sqs.delete_message(QueueUrl=url, ReceiptHandle=first["ReceiptHandle"])
    assert sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["ApproximateNumberOfMessagesNotVisible"])["Attributes"]["ApproximateNumberOfMessagesNotVisible"] == "1"
    sqs.delete_message(QueueUrl=url, ReceiptHandle=second["ReceiptHandle"])
    assert sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["ApproximateNumberOfMessagesNotVisible"])["Attributes"]["ApproximateNumberOfMessagesNotVisible"] == "0"


def test_change_visibility(sqs):
    url = sqs.create_queue(QueueName="cv")["QueueUrl"]
    sqs.send_message(QueueUrl=url, MessageBody="m")
    handle = sqs.receive_message(QueueUrl=url)["Messages"][0]["ReceiptHandle"]
    sqs.change_message_visibility(QueueUrl=url, ReceiptHandle=handle, VisibilityTimeout=0)
    again = sqs.receive_message(QueueUrl=url)["Messages"][0]
    # An earlier receive's handle no longer names the message, nor does one of a deleted message.
    code, status, message = failure(lambda: sqs.change_message_visibility(QueueUrl=url, ReceiptHandle=handle, VisibilityTimeout=5))
    assert (code, status) == ("InvalidParameterValue", 400)
    assert message == f"Value {handle} for parameter ReceiptHandle is invalid. Reason: Message does not exist or is not available for visibility timeout change."
    assert error_code(lambda: sqs.change_message_visibility(QueueUrl=url, ReceiptHandle="garbage", VisibilityTimeout=5)) == "ReceiptHandleIsInvalid"
    assert error_code(lambda: sqs.delete_message(QueueUrl=url, ReceiptHandle="garbage")) == "ReceiptHandleIsInvalid"
    result = sqs.change_message_visibility_batch(QueueUrl=url, Entries=[
        {"Id": "ok", "ReceiptHandle": again["ReceiptHandle"], "VisibilityTimeout": 100},
        {"Id": "bad", "ReceiptHandle": "garbage", "VisibilityTimeout": 100},
    ])
    assert [e["Id"] for e in result["Successful"]] == ["ok"]
    assert result["Failed"][0]["Id"] == "bad" and result["Failed"][0]["Code"] == "ReceiptHandleIsInvalid"
    sqs.delete_message(QueueUrl=url, ReceiptHandle=again["ReceiptHandle"])
    assert failure(lambda: sqs.change_message_visibility(QueueUrl=url, ReceiptHandle=again["ReceiptHandle"], VisibilityTimeout=5))[0] == "InvalidParameterValue"
    # A handle of another queue's is not one of this queue's.
    other = sqs.create_queue(QueueName="cv-other")["QueueUrl"]
    sqs.send_message(QueueUrl=other, MessageBody="o")
    foreign = sqs.receive_message(QueueUrl=other)["Messages"][0]["ReceiptHandle"]
    code, status, message = failure(lambda: sqs.delete_message(QueueUrl=url, ReceiptHandle=foreign))
    assert (code, status, message) == ("ReceiptHandleIsInvalid", 404, f'The receipt handle "{foreign}" is not valid for this queue.')
    code, status, message = failure(lambda: sqs.delete_message(QueueUrl=url, ReceiptHandle="garbage"))
    assert (code, status, message) == ("ReceiptHandleIsInvalid", 404, 'The input receipt handle "garbage" is not a valid receipt handle.')


def test_delays(sqs):
    url = sqs.create_queue(QueueName="delayed")["QueueUrl"]
    sqs.send_message(QueueUrl=url, MessageBody="later", DelaySeconds=1)
    attributes = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["All"])["Attributes"]
    assert attributes["ApproximateNumberOfMessagesDelayed"] == "1"
    assert "Messages" not in sqs.receive_message(QueueUrl=url)
    started = time.monotonic()
    message = sqs.receive_message(QueueUrl=url, WaitTimeSeconds=5)["Messages"][0]
    assert message["Body"] == "later" and time.monotonic() - started < 1.5


def test_long_polling_wakes_on_send_and_times_out_on_time(stratus, sqs):
    url = sqs.create_queue(QueueName="poll")["QueueUrl"]
    started = time.monotonic()
    assert "Messages" not in sqs.receive_message(QueueUrl=url, WaitTimeSeconds=2)
    elapsed = time.monotonic() - started
    assert 1.95 <= elapsed < 2.5, elapsed

    sender = stratus.client("sqs")
    sent_at = []
    def send_later():
        time.sleep(0.5)
        sent_at.append(time.monotonic())
        sender.send_message(QueueUrl=url, MessageBody="wake")
    thread = threading.Thread(target=send_later)
    thread.start()
    message = sqs.receive_message(QueueUrl=url, WaitTimeSeconds=10)["Messages"][0]
    woke = time.monotonic()
    thread.join()
    assert message["Body"] == "wake"
    assert woke - sent_at[0] < 0.2, f"woke {woke - sent_at[0]:.3f}s after the send began"


def test_batches(sqs):
    url = sqs.create_queue(QueueName="batch")["QueueUrl"]
    entries = [{"Id": f"m{i}", "MessageBody": f"body {i}"} for i in range(10)]
    result = sqs.send_message_batch(QueueUrl=url, Entries=entries)
    assert sorted(e["Id"] for e in result["Successful"]) == sorted(e["Id"] for e in entries)
    assert "Failed" not in result, "SQS leaves out an empty list (recorded)"
    assert error_code(lambda: sqs.send_message_batch(QueueUrl=url, Entries=entries + [{"Id": "x", "MessageBody": "y"}])) == "AWS.SimpleQueueService.TooManyEntriesInBatchRequest"
    assert error_code(lambda: sqs.send_message_batch(QueueUrl=url, Entries=[{"Id": "a", "MessageBody": "1"}, {"Id": "a", "MessageBody": "2"}])) == "AWS.SimpleQueueService.BatchEntryIdsNotDistinct"
    assert error_code(lambda: sqs.send_message_batch(QueueUrl=url, Entries=[])) == "AWS.SimpleQueueService.EmptyBatchRequest"
    assert error_code(lambda: sqs.send_message_batch(QueueUrl=url, Entries=[{"Id": "a b", "MessageBody": "1"}])) == "AWS.SimpleQueueService.InvalidBatchEntryId"
    big = "x" * 600_000  # two of them pass the 1 MiB a batch may hold
    assert error_code(lambda: sqs.send_message_batch(QueueUrl=url, Entries=[{"Id": "a", "MessageBody": big}, {"Id": "b", "MessageBody": big}])) == "AWS.SimpleQueueService.BatchRequestTooLong"
    partial = sqs.send_message_batch(QueueUrl=url, Entries=[{"Id": "good", "MessageBody": "ok"}, {"Id": "bad", "MessageBody": "ok", "DelaySeconds": 901}])
    assert [e["Id"] for e in partial["Successful"]] == ["good"] and partial["Failed"][0]["Code"] == "InvalidParameterValue"

    received = []
    while len(received) < 11:
        received += sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10).get("Messages", [])
    deleted = sqs.delete_message_batch(QueueUrl=url, Entries=[{"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(received[:10])])
    assert len(deleted["Successful"]) == 10
    assert error_code(lambda: sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=11)) == "InvalidParameterValue"


def test_numbers_out_of_range_are_told_their_range(sqs):
    """Below the range as above it: SQS names the range, not that the value is no integer."""
    url = sqs.create_queue(QueueName="ranges")["QueueUrl"]
    sqs.send_message(QueueUrl=url, MessageBody="m")
    handle = sqs.receive_message(QueueUrl=url, VisibilityTimeout=60)["Messages"][0]["ReceiptHandle"]
    calls = {
        "Must be between 1 and 10, if provided.": [lambda v: sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=v)],
        "Must be between 0 and 43200, if provided.": [
            lambda v: sqs.receive_message(QueueUrl=url, VisibilityTimeout=v),
            lambda v: sqs.change_message_visibility(QueueUrl=url, ReceiptHandle=handle, VisibilityTimeout=v)],
        "Must be >= 0 and <= 20, if provided.": [lambda v: sqs.receive_message(QueueUrl=url, WaitTimeSeconds=v)],
        "DelaySeconds must be >= 0 and <= 900.": [lambda v: sqs.send_message(QueueUrl=url, MessageBody="m", DelaySeconds=v)],
        "MaxResults must be an integer between 1 and 1000.": [lambda v: sqs.list_queues(MaxResults=v)],
    }
    for reason, tries in calls.items():
        for call in tries:
            for value in (-1, 100_000):
                with pytest.raises(botocore.exceptions.ClientError) as raised:
                    call(value)
                error = raised.value.response["Error"]
                assert error["Code"] == "InvalidParameterValue" and error["Message"].endswith(reason), (value, error)

def test_purge(sqs):
    url = sqs.create_queue(QueueName="purge")["QueueUrl"]
    for i in range(5):
        sqs.send_message(QueueUrl=url, MessageBody=str(i))
    sqs.purge_queue(QueueUrl=url)
    assert "Messages" not in sqs.receive_message(QueueUrl=url)
    assert error_code(lambda: sqs.purge_queue(QueueUrl=url)) == "AWS.SimpleQueueService.PurgeQueueInProgress"
    sqs.send_message(QueueUrl=url, MessageBody="after")
    assert sqs.receive_message(QueueUrl=url)["Messages"][0]["Body"] == "after"


def test_tags(sqs):
    url = sqs.create_queue(QueueName="tagged", tags={"env": "test"})["QueueUrl"]
    sqs.tag_queue(QueueUrl=url, Tags={"team": "core", "cost": "1"})
    sqs.untag_queue(QueueUrl=url, TagKeys=["cost"])
    assert sqs.list_queue_tags(QueueUrl=url)["Tags"] == {"env": "test", "team": "core"}
    # The developer guide's limits: keys of 1 to 128 characters, values of up to 256, 50 tags.
    keys, values = "Tag keys must be between 1 and 128 characters in length.", "Tag values must be between 0 and 256 characters in length."
    refused = [(sqs.tag_queue, {"Tags": {"k" * 129: "v"}}, keys), (sqs.tag_queue, {"Tags": {"": "v"}}, keys),
               (sqs.tag_queue, {"Tags": {"env": "v" * 257}}, values), (sqs.untag_queue, {"TagKeys": ["k" * 129]}, keys)]
    for call, change, message in refused:
        with pytest.raises(botocore.exceptions.ClientError) as raised:
            call(QueueUrl=url, **change)
        assert raised.value.response["Error"] == {**raised.value.response["Error"], "Code": "InvalidParameterValue", "Message": message}
    assert sqs.list_queue_tags(QueueUrl=url)["Tags"] == {"env": "test", "team": "core"}, "a refused change changes nothing"
    sqs.tag_queue(QueueUrl=url, Tags={f"k{i}": "v" * 256 for i in range(47)} | {"é" * 128: ""})
    assert len(sqs.list_queue_tags(QueueUrl=url)["Tags"]) == 50
    assert error_code(lambda: sqs.tag_queue(QueueUrl=url, Tags={"one-too-many": "v"})) == "InvalidParameterValue"
    assert error_code(lambda: sqs.tag_queue(QueueUrl=url, Tags={})) == "MissingParameter"
    many = {f"k{i}": "v" for i in range(51)}
    assert error_code(lambda: sqs.create_queue(QueueName="overtagged", tags=many)) == "InvalidParameterValue"


def test_dead_letter_queue(sqs):
    dlq = sqs.create_queue(QueueName="dead")["QueueUrl"]
    dlq_arn = sqs.get_queue_attributes(QueueUrl=dlq, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    policy = json.dumps({"deadLetterTargetArn": dlq_arn, "maxReceiveCount": "2"})
    url = sqs.create_queue(QueueName="live", Attributes={"RedrivePolicy": policy, "VisibilityTimeout": "0"})["QueueUrl"]
    sqs.send_message(QueueUrl=url, MessageBody="poison")
    for _ in range(2):
        assert sqs.receive_message(QueueUrl=url)["Messages"][0]["Body"] == "poison"
    assert "Messages" not in sqs.receive_message(QueueUrl=url), "a third receive moves it instead"
    moved = sqs.receive_message(QueueUrl=dlq, AttributeNames=["All"])["Messages"][0]
    assert moved["Body"] == "poison"
    assert moved["Attributes"]["ApproximateReceiveCount"] == "3", "the count goes on in the dead-letter queue"
    assert moved["Attributes"]["DeadLetterQueueSourceArn"] == "arn:aws:sqs:us-east-1:000000000000:live"
    assert sqs.list_dead_letter_source_queues(QueueUrl=dlq)["queueUrls"] == [url]
    bad = json.dumps({"deadLetterTargetArn": dlq_arn, "maxReceiveCount": 0})
    assert error_code(lambda: sqs.set_queue_attributes(QueueUrl=url, Attributes={"RedrivePolicy": bad})) == "InvalidParameterValue"


def test_fifo_order_groups_and_deduplication(sqs):
    url = sqs.create_queue(QueueName="jobs.fifo", Attributes={"FifoQueue": "true", "ContentBasedDeduplication": "true", "VisibilityTimeout": "30"})["QueueUrl"]
    sequence = []
    for i in range(6):
        sent = sqs.send_message(QueueUrl=url, MessageBody=f"{'ab'[i % 2]}{i}", MessageGroupId="ab"[i % 2])
        sequence.append(int(sent["SequenceNumber"]))
    assert sequence == sorted(sequence)
    duplicate = sqs.send_message(QueueUrl=url, MessageBody="a0", MessageGroupId="a")
    assert int(duplicate["SequenceNumber"]) == sequence[0], "deduplicated by content"
    explicit = sqs.send_message(QueueUrl=url, MessageBody="a0", MessageGroupId="a", MessageDeduplicationId="other")
    assert int(explicit["SequenceNumber"]) > sequence[-1]

    first = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=2, AttributeNames=["All"])["Messages"]
    assert [m["Body"] for m in first] == ["a0", "a2"], "group a first, in order"
    assert first[0]["Attributes"]["MessageGroupId"] == "a"
    rest = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10)["Messages"]
    assert [m["Body"] for m in rest] == ["b1", "b3", "b5"], "group a is blocked while it has messages in flight"
    assert "Messages" not in sqs.receive_message(QueueUrl=url)
    sqs.delete_message_batch(QueueUrl=url, Entries=[{"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(first)])
    assert [m["Body"] for m in sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10)["Messages"]] == ["a4", "a0"]

    assert error_code(lambda: sqs.send_message(QueueUrl=url, MessageBody="x")) == "MissingParameter"
    assert error_code(lambda: sqs.send_message(QueueUrl=url, MessageBody="x", MessageGroupId="g", DelaySeconds=1)) == "InvalidParameterValue"
    plain = sqs.create_queue(QueueName="plain.fifo", Attributes={"FifoQueue": "true"})["QueueUrl"]
    assert error_code(lambda: sqs.send_message(QueueUrl=plain, MessageBody="x", MessageGroupId="g")) == "InvalidParameterValue"
    assert error_code(lambda: sqs.create_queue(QueueName="nofifo", Attributes={"FifoQueue": "true"})) == "InvalidParameterValue"
    assert error_code(lambda: sqs.create_queue(QueueName="noattr.fifo")) == "InvalidParameterValue"


def test_fifo_high_throughput_deduplicates_per_group(sqs):
    attributes = {"FifoQueue": "true", "DeduplicationScope": "messageGroup", "FifoThroughputLimit": "perMessageGroupId"}
    url = sqs.create_queue(QueueName="fast.fifo", Attributes=attributes)["QueueUrl"]
    assert sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["All"])["Attributes"].items() >= attributes.items()
    a = sqs.send_message(QueueUrl=url, MessageBody="in a", MessageGroupId="a", MessageDeduplicationId="d")
    b = sqs.send_message(QueueUrl=url, MessageBody="in b", MessageGroupId="b", MessageDeduplicationId="d")
    assert a["MessageId"] != b["MessageId"], "the same id in another group is another message"
    again = sqs.send_message(QueueUrl=url, MessageBody="in a again", MessageGroupId="a", MessageDeduplicationId="d")
    assert again["MessageId"] == a["MessageId"], "within its group it is a duplicate"
    bodies = [m["Body"] for m in sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10)["Messages"]]
    assert sorted(bodies) == ["in a", "in b"]
    # A queue-wide scope: the same id is a duplicate across groups.
    narrow = sqs.create_queue(QueueName="narrow.fifo", Attributes={"FifoQueue": "true"})["QueueUrl"]
    first = sqs.send_message(QueueUrl=narrow, MessageBody="x", MessageGroupId="a", MessageDeduplicationId="d")
    assert sqs.send_message(QueueUrl=narrow, MessageBody="y", MessageGroupId="b", MessageDeduplicationId="d")["MessageId"] == first["MessageId"]

def test_awscli_every_operation(start_stratus):
    """Each of SQS's operations as awscli users type them: shorthand and JSON arguments, its output."""
    stratus = start_stratus()

    def aws(*args):
        out = stratus.aws("sqs", *args).stdout
        return json.loads(out) if out.strip() else {}

    dlq = aws("create-queue", "--queue-name", "cli-dlq")["QueueUrl"]
    dlq_arn = aws("get-queue-attributes", "--queue-url", dlq, "--attribute-names", "QueueArn")["Attributes"]["QueueArn"]
    url = aws("create-queue", "--queue-name", "cli-src", "--attributes", "VisibilityTimeout=20", "--tags", "team=core")["QueueUrl"]
    assert aws("get-queue-url", "--queue-name", "cli-src")["QueueUrl"] == url
    assert aws("list-queues", "--queue-name-prefix", "cli-s")["QueueUrls"] == [url]
    policy = json.dumps({"deadLetterTargetArn": dlq_arn, "maxReceiveCount": 5})
    aws("set-queue-attributes", "--queue-url", url, "--attributes", json.dumps({"RedrivePolicy": policy}))
    attributes = aws("get-queue-attributes", "--queue-url", url, "--attribute-names", "All")["Attributes"]
    assert attributes["VisibilityTimeout"] == "20" and attributes["RedrivePolicy"] == policy.replace(" ", "")
    assert aws("list-dead-letter-source-queues", "--queue-url", dlq)["queueUrls"] == [url]

    sent = aws("send-message", "--queue-url", url, "--message-body", "one",
               "--message-attributes", json.dumps({"kind": {"DataType": "String", "StringValue": "cli"}}))
    assert sent["MD5OfMessageBody"] == hashlib.md5(b"one").hexdigest() and "MD5OfMessageAttributes" in sent
    batch = aws("send-message-batch", "--queue-url", url, "--entries", "Id=a,MessageBody=two", "Id=b,MessageBody=three")
    assert sorted(e["Id"] for e in batch["Successful"]) == ["a", "b"]
    messages = []
    while len(messages) < 3:
        messages += aws("receive-message", "--queue-url", url, "--max-number-of-messages", "10", "--wait-time-seconds", "1",
                        "--attribute-names", "All", "--message-attribute-names", "All").get("Messages", [])
    by_body = {m["Body"]: m for m in messages}
    assert set(by_body) == {"one", "two", "three"}
    assert by_body["one"]["MessageAttributes"]["kind"]["StringValue"] == "cli"
    assert by_body["one"]["Attributes"]["ApproximateReceiveCount"] == "1"

    aws("change-message-visibility", "--queue-url", url, "--receipt-handle", by_body["one"]["ReceiptHandle"], "--visibility-timeout", "0")
    changed = aws("change-message-visibility-batch", "--queue-url", url, "--entries", json.dumps(
        [{"Id": "t", "ReceiptHandle": by_body["two"]["ReceiptHandle"], "VisibilityTimeout": 0}]))
    assert [e["Id"] for e in changed["Successful"]] == ["t"]
    again = aws("receive-message", "--queue-url", url, "--max-number-of-messages", "10")["Messages"]
    assert sorted(m["Body"] for m in again) == ["one", "two"], "both were made visible again"
    aws("delete-message", "--queue-url", url, "--receipt-handle", again[0]["ReceiptHandle"])
    deleted = aws("delete-message-batch", "--queue-url", url, "--entries", json.dumps(
        [{"Id": "x", "ReceiptHandle": again[1]["ReceiptHandle"]}, {"Id": "y", "ReceiptHandle": by_body["three"]["ReceiptHandle"]}]))
    assert sorted(e["Id"] for e in deleted["Successful"]) == ["x", "y"]
    assert aws("get-queue-attributes", "--queue-url", url, "--attribute-names", "ApproximateNumberOfMessages",
               "ApproximateNumberOfMessagesNotVisible")["Attributes"] == {"ApproximateNumberOfMessages": "0", "ApproximateNumberOfMessagesNotVisible": "0"}

    aws("tag-queue", "--queue-url", url, "--tags", "cost=1,env=test")
    aws("untag-queue", "--queue-url", url, "--tag-keys", "cost")
    assert aws("list-queue-tags", "--queue-url", url)["Tags"] == {"team": "core", "env": "test"}
    aws("add-permission", "--queue-url", url, "--label", "partners", "--aws-account-ids", "111122223333", "--actions", "SendMessage")
    policy = json.loads(aws("get-queue-attributes", "--queue-url", url, "--attribute-names", "Policy")["Attributes"]["Policy"])
    assert [s["Sid"] for s in policy["Statement"]] == ["partners"]
    aws("remove-permission", "--queue-url", url, "--label", "partners")

    # A move task at one message a second over 30 dead letters is still running when it is cancelled.
    sqs = stratus.client("sqs")
    for i in range(30):
        sqs.send_message(QueueUrl=dlq, MessageBody=f"dead {i}")
    handle = aws("start-message-move-task", "--source-arn", dlq_arn, "--destination-arn", attributes["QueueArn"],
                 "--max-number-of-messages-per-second", "1")["TaskHandle"]
    [task] = aws("list-message-move-tasks", "--source-arn", dlq_arn)["Results"]
    assert task["Status"] == "RUNNING" and task["TaskHandle"] == handle
    assert aws("cancel-message-move-task", "--task-handle", handle)["ApproximateNumberOfMessagesMoved"] < 30
    assert aws("list-message-move-tasks", "--source-arn", dlq_arn)["Results"][0]["Status"] in ("CANCELLING", "CANCELLED")

    aws("purge-queue", "--queue-url", dlq)
    aws("delete-queue", "--queue-url", url)
    assert aws("list-queues", "--queue-name-prefix", "cli-")["QueueUrls"] == [dlq]
    missing = stratus.aws("sqs", "get-queue-url", "--queue-name", "cli-src", check=False)
    assert missing.returncode != 0 and "AWS.SimpleQueueService.NonExistentQueue" in missing.stderr


def query(stratus, params, path="/"):
    body = urllib.parse.urlencode(params).encode()
    headers = {"Content-Type": "application/x-www-form-urlencoded",
               "Authorization": "AWS4-HMAC-SHA256 Credential=test/20240101/us-east-1/sqs/aws4_request, SignedHeaders=host, Signature=0"}
    request = urllib.request.Request(stratus.url + path, data=body, headers=headers, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()


def test_query_protocol(stratus):
    status, body = query(stratus, {"Action": "CreateQueue", "QueueName": "xml", "Attribute.1.Name": "DelaySeconds", "Attribute.1.Value": "0", "Version": "2012-11-05"})
    assert status == 200 and f"<QueueUrl>{stratus.url}/000000000000/xml</QueueUrl>" in body
    status, body = query(stratus, {"Action": "SendMessage", "QueueUrl": f"{stratus.url}/000000000000/xml", "MessageBody": "<hi & bye>",
                                   "MessageAttribute.1.Name": "k", "MessageAttribute.1.Value.DataType": "String", "MessageAttribute.1.Value.StringValue": "v"})
    assert status == 200 and "<MD5OfMessageBody>" in body and "<MD5OfMessageAttributes>" in body
    # Older SDKs post to the queue URL itself.
    status, body = query(stratus, {"Action": "ReceiveMessage", "MessageAttributeName.1": "All", "AttributeName.1": "All"}, path="/000000000000/xml")
    assert status == 200, body
    assert "<Body>&lt;hi &amp; bye&gt;</Body>" in body
    assert "<MessageAttribute><Name>k</Name><Value><DataType>String</DataType><StringValue>v</StringValue></Value></MessageAttribute>" in body
    status, body = query(stratus, {"Action": "GetQueueUrl", "QueueName": "missing"})
    assert status == 400 and "<Code>AWS.SimpleQueueService.NonExistentQueue</Code>" in body and "<Type>Sender</Type>" in body
    assert "<Message>The specified queue does not exist for this wsdl version.</Message><Detail></Detail>" in body
    assert '<ErrorResponse xmlns="http://queue.amazonaws.com/doc/2012-11-05/">' in body
    # An action without output answers with no Result element, as SQS does.
    status, body = query(stratus, {"Action": "DeleteQueue", "QueueUrl": f"{stratus.url}/000000000000/xml"})
    assert status == 200 and "<DeleteQueueResponse" in body and "Result" not in body and "<RequestId>" in body
    status, body = query(stratus, {"Action": "Frobnicate"})
    assert status == 400 and "<Code>InvalidAction</Code>" in body


def json_call(stratus, operation, body, query_mode=True, headers=()):
    """A raw JSON-protocol request as current SDKs send it (saying they read the query error code,
    unless `query_mode` is false), with `headers` added: status, body, query error."""
    headers = {"Content-Type": "application/x-amz-json-1.0", "X-Amz-Target": f"AmazonSQS.{operation}",
               "Authorization": "AWS4-HMAC-SHA256 Credential=test/20240101/us-east-1/sqs/aws4_request, SignedHeaders=host, Signature=0",
               **dict(headers)}
    if query_mode:
        headers["x-amzn-query-mode"] = "true"
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    request = urllib.request.Request(stratus.url + "/", data=data, headers=headers, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read()), None
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read()), error.headers.get("x-amzn-query-error")


def test_json_protocol_errors_as_sqs_sends_them(stratus, sqs):
    url = sqs.create_queue(QueueName="typed")["QueueUrl"]
    # `__type` names the error's shape, SQS's own or the request framework's; the query code rides in a header.
    status, body, query_error = json_call(stratus, "GetQueueUrl", {"QueueName": "missing"})
    assert (status, body["__type"], query_error) == (400, "com.amazonaws.sqs#QueueDoesNotExist", "AWS.SimpleQueueService.NonExistentQueue;Sender")
    status, body, query_error = json_call(stratus, "SendMessage", {"QueueUrl": url, "MessageBody": "m", "DelaySeconds": 901})
    assert (status, body["__type"], query_error) == (400, "com.amazon.coral.service#InvalidParameterValueException", "InvalidParameterValue;Sender")
    status, body, query_error = json_call(stratus, "DeleteMessage", {"QueueUrl": url, "ReceiptHandle": "garbage"})
    assert (status, body["__type"], query_error) == (404, "com.amazonaws.sqs#ReceiptHandleIsInvalid", "ReceiptHandleIsInvalid;Sender")
    status, body, query_error = json_call(stratus, "Frobnicate", {})
    assert (status, body["__type"], query_error) == (400, "com.amazon.coral.service#UnknownOperationException", "InvalidAction;Sender")
    # The query code is sent to clients that do not say they read it too (SDKs of 2023-24).
    query_error = json_call(stratus, "GetQueueUrl", {"QueueName": "missing"}, query_mode=False)[2]
    assert query_error == "AWS.SimpleQueueService.NonExistentQueue;Sender"
    # A request naming no queue names a queue that does not exist.
    assert json_call(stratus, "SendMessage", {"MessageBody": "m"})[1]["__type"] == "com.amazonaws.sqs#QueueDoesNotExist"
    # Members of the wrong JSON type are refused by the deserializer, before SQS sees them.
    for operation, request, message in [
        ("ReceiveMessage", {"QueueUrl": url, "MaxNumberOfMessages": "10"}, "STRING_VALUE can not be converted to an Integer"),
        ("SendMessage", {"QueueUrl": url, "MessageBody": 5}, "NUMBER_VALUE can not be converted to a String"),
        ("SendMessage", {"QueueUrl": url, "MessageBody": "m", "DelaySeconds": False}, "FALSE_VALUE can not be converted to an Integer"),
        ("GetQueueAttributes", {"QueueUrl": url, "AttributeNames": "All"}, "Expected list or null"),
        ("GetQueueAttributes", {"QueueUrl": [url]}, "Start of list found where not expected"),
        ("SendMessageBatch", {"QueueUrl": url, "Entries": [{"Id": "a", "MessageBody": {"x": 1}}]}, "Start of structure or map found where not expected."),
        ("SendMessage", {"QueueUrl": url, "MessageBody": "m", "MessageAttributes": {"a": {"DataType": "String", "StringValue": 1}}},
         "NUMBER_VALUE can not be converted to a String"),
    ]:
        status, body, query_error = json_call(stratus, operation, request)
        assert (status, body["__type"], body["message"], query_error) == \
            (400, "com.amazon.coral.service#SerializationException", message, "MalformedInput;Sender"), request
    status, body, _ = json_call(stratus, "ListQueues", b"[1, 2]")
    assert (status, body["__type"]) == (400, "com.amazon.coral.service#SerializationException")
    # null is as good as absent, and boto3 reads every one of these as the code it knows.
    assert json_call(stratus, "ReceiveMessage", {"QueueUrl": url, "MaxNumberOfMessages": None})[0] == 200
    assert error_code(lambda: sqs.delete_message(QueueUrl=url, ReceiptHandle="garbage")) == "ReceiptHandleIsInvalid"


def test_state_reports_queues_and_reset_clears_them(stratus, sqs):
    url = sqs.create_queue(QueueName="counted")["QueueUrl"]
    sqs.send_message(QueueUrl=url, MessageBody="1")
    state = json.loads(urllib.request.urlopen(stratus.url + "/_stratus/state", timeout=10).read())
    assert state["services"]["sqs"] == {"queues": 1, "messages": 1}
    sqs.delete_queue(QueueUrl=url)
    urllib.request.urlopen(urllib.request.Request(stratus.url + "/_stratus/reset", method="POST"), timeout=10).read()
    assert "QueueUrls" not in sqs.list_queues()
    assert sqs.create_queue(QueueName="counted")["QueueUrl"] == url, "a reset also forgets recent deletions"
    sqs.delete_queue(QueueUrl=url)
    assert json.loads(urllib.request.urlopen(stratus.url + "/_stratus/state", timeout=10).read())["store"]["keys"] == 0


def test_permissions_are_stored_in_the_policy(sqs):
    url = sqs.create_queue(QueueName="shared")["QueueUrl"]
    sqs.add_permission(QueueUrl=url, Label="partners", AWSAccountIds=["111122223333"], Actions=["SendMessage"])
    policy = json.loads(sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["Policy"])["Attributes"]["Policy"])
    # As SQS writes it (recorded): its 2008 version, one principal or action as a string, several as a list.
    assert policy["Version"] == "2008-10-17"
    statement = policy["Statement"][0]
    assert statement["Sid"] == "partners" and statement["Action"] == "SQS:SendMessage"
    assert statement["Principal"] == {"AWS": "arn:aws:iam::111122223333:root"}
    sqs.add_permission(QueueUrl=url, Label="more", AWSAccountIds=["111122223333", "444455556666"], Actions=["SendMessage", "DeleteMessage"])
    policy = json.loads(sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["Policy"])["Attributes"]["Policy"])
    assert policy["Statement"][1]["Action"] == ["SQS:SendMessage", "SQS:DeleteMessage"]
    assert policy["Statement"][1]["Principal"]["AWS"] == ["arn:aws:iam::111122223333:root", "arn:aws:iam::444455556666:root"]
    sqs.remove_permission(QueueUrl=url, Label="more")
    assert error_code(lambda: sqs.add_permission(QueueUrl=url, Label="partners", AWSAccountIds=["1"], Actions=["*"])) == "InvalidParameterValue"
    sqs.remove_permission(QueueUrl=url, Label="partners")
    assert "Policy" not in sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["All"])["Attributes"]
    with pytest.raises(botocore.exceptions.ClientError) as raised:
        sqs.remove_permission(QueueUrl=url, Label="partners")
    assert raised.value.response["Error"]["Message"] == "Value partners for parameter Label is invalid. Reason: can't find label."


def test_message_move_task_redrives_the_dead_letter_queue(sqs):
    dlq = sqs.create_queue(QueueName="redrive-dlq")["QueueUrl"]
    dlq_arn = sqs.get_queue_attributes(QueueUrl=dlq, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    policy = json.dumps({"deadLetterTargetArn": dlq_arn, "maxReceiveCount": 1})
    url = sqs.create_queue(QueueName="redrive-src", Attributes={"RedrivePolicy": policy, "VisibilityTimeout": "0"})["QueueUrl"]
    for i in range(25):
        sqs.send_message(QueueUrl=url, MessageBody=f"m{i}")
    def in_dlq():
        return sqs.get_queue_attributes(QueueUrl=dlq, AttributeNames=["ApproximateNumberOfMessages"])["Attributes"]["ApproximateNumberOfMessages"]
    for _ in range(20):  # each message is received once, then dead-lettered by a later receive
        if in_dlq() == "25":
            break
        sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10)
    assert in_dlq() == "25"

    handle = sqs.start_message_move_task(SourceArn=dlq_arn)["TaskHandle"]
    deadline = time.monotonic() + 10
    while True:
        task = sqs.list_message_move_tasks(SourceArn=dlq_arn)["Results"][0]
        if task["Status"] != "RUNNING" or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert task["Status"] == "COMPLETED" and "TaskHandle" not in task, task  # a handle only while it runs
    assert task["ApproximateNumberOfMessagesMoved"] == 25 and task["ApproximateNumberOfMessagesToMove"] == 25
    assert sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["ApproximateNumberOfMessages"])["Attributes"]["ApproximateNumberOfMessages"] == "25"
    assert error_code(lambda: sqs.start_message_move_task(SourceArn=url.replace("redrive-src", "nope"))) == "ResourceNotFoundException"
    src_arn = dlq_arn.replace("redrive-dlq", "redrive-src")
    assert error_code(lambda: sqs.start_message_move_task(SourceArn=src_arn)) == "InvalidParameterValue"
    assert error_code(lambda: sqs.cancel_message_move_task(TaskHandle=handle)) == "InvalidParameterValue"
    assert error_code(lambda: sqs.cancel_message_move_task(TaskHandle="garbage")) == "InvalidParameterValue"
    assert error_code(lambda: sqs.cancel_message_move_task(TaskHandle=str(uuid.uuid4()))) == "InvalidParameterValue"
    # A handle is SQS's: base64 of the task's id and source ARN, so an unknown queue and an unknown
    # task are told apart (recorded).
    assert json.loads(base64.b64decode(handle))["sourceArn"] == dlq_arn
    def handle_for(task_id, source_arn):
        return base64.b64encode(json.dumps({"taskId": task_id, "sourceArn": source_arn}).encode()).decode()
    for unknown, message in [(handle_for(str(uuid.uuid4()), dlq_arn), "Task does not exist."),
                             (handle_for(str(uuid.uuid4()), dlq_arn + "-gone"), "The resource that you specified for the SourceArn parameter doesn't exist.")]:
        with pytest.raises(botocore.exceptions.ClientError) as raised:
            sqs.cancel_message_move_task(TaskHandle=unknown)
        error = raised.value.response
        assert (error["ResponseMetadata"]["HTTPStatusCode"], error["Error"]["Code"], error["Error"]["Message"]) == (404, "ResourceNotFoundException", message)

    # A task whose destination is deleted under it fails, naming the error (recorded).
    elsewhere = sqs.create_queue(QueueName="redrive-elsewhere")["QueueUrl"]
    elsewhere_arn = dlq_arn.replace("redrive-dlq", "redrive-elsewhere")
    for i in range(5):
        sqs.send_message(QueueUrl=dlq, MessageBody=f"again {i}")
    sqs.start_message_move_task(SourceArn=dlq_arn, DestinationArn=elsewhere_arn, MaxNumberOfMessagesPerSecond=1)
    sqs.delete_queue(QueueUrl=elsewhere)
    deadline = time.monotonic() + 10
    while (task := sqs.list_message_move_tasks(SourceArn=dlq_arn)["Results"][0])["Status"] == "RUNNING" and time.monotonic() < deadline:
        time.sleep(0.1)
    assert (task["Status"], task["FailureReason"]) == ("FAILED", "AWS.SimpleQueueService.NonExistentQueue"), task


def test_fifo_receive_attempt_id_repeats_the_same_batch(sqs):
    url = sqs.create_queue(QueueName="retry.fifo", Attributes={"FifoQueue": "true", "ContentBasedDeduplication": "true"})["QueueUrl"]
    for body in ["one", "two"]:
        sqs.send_message(QueueUrl=url, MessageBody=body, MessageGroupId="g")
    first = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, ReceiveRequestAttemptId="attempt-1")["Messages"]
    again = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, ReceiveRequestAttemptId="attempt-1")["Messages"]
    assert [m["MessageId"] for m in again] == [m["MessageId"] for m in first]
    assert [m["ReceiptHandle"] for m in again] == [m["ReceiptHandle"] for m in first]
    assert "Messages" not in sqs.receive_message(QueueUrl=url, ReceiveRequestAttemptId="attempt-2")


def test_fifo_groups_hold_back_only_what_follows_a_hidden_message(sqs):
    fifo = {"FifoQueue": "true", "ContentBasedDeduplication": "true"}
    url = sqs.create_queue(QueueName="held.fifo", Attributes=fifo | {"VisibilityTimeout": "1"})["QueueUrl"]
    for body in ["foo", "bar", "baz"]:
        sqs.send_message(QueueUrl=url, MessageBody=body, MessageGroupId="1")
    received = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=5)["Messages"]
    sqs.change_message_visibility(QueueUrl=url, ReceiptHandle=received[1]["ReceiptHandle"], VisibilityTimeout=5)
    time.sleep(1.2)
    again = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=5)["Messages"]
    assert [m["Body"] for m in again] == ["foo"], "as SQS was recorded answering: bar holds back baz, not foo"

    # A delayed message holds back those sent after it, not those before it.
    delayed = sqs.create_queue(QueueName="delayed.fifo", Attributes=fifo | {"DelaySeconds": "1"})["QueueUrl"]
    sqs.send_message(QueueUrl=delayed, MessageBody="first", MessageGroupId="g")
    time.sleep(1.1)
    sqs.send_message(QueueUrl=delayed, MessageBody="second", MessageGroupId="g")
    assert [m["Body"] for m in sqs.receive_message(QueueUrl=delayed, MaxNumberOfMessages=10)["Messages"]] == ["first"]


def test_a_fifo_dead_letter_takes_its_place_in_the_dead_letter_queue(sqs):
    fifo = {"FifoQueue": "true", "ContentBasedDeduplication": "true"}
    dlq = sqs.create_queue(QueueName="dead.fifo", Attributes=fifo)["QueueUrl"]
    sqs.send_message(QueueUrl=dlq, MessageBody="already there", MessageGroupId="other")
    dlq_arn = sqs.get_queue_attributes(QueueUrl=dlq, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    policy = json.dumps({"deadLetterTargetArn": dlq_arn, "maxReceiveCount": 1})
    url = sqs.create_queue(QueueName="live.fifo", Attributes=fifo | {"RedrivePolicy": policy, "VisibilityTimeout": "0"})["QueueUrl"]
    sent = sqs.send_message(QueueUrl=url, MessageBody="poison", MessageGroupId="g")
    sqs.receive_message(QueueUrl=url)
    assert "Messages" not in sqs.receive_message(QueueUrl=url), "the second receive moves it"
    moved = {m["Body"]: m for m in sqs.receive_message(QueueUrl=dlq, MaxNumberOfMessages=10, AttributeNames=["All"])["Messages"]}
    assert moved["poison"]["MessageId"] == sent["MessageId"]
    assert moved["poison"]["Attributes"]["ApproximateReceiveCount"] == "2"
    # A sequence number of the dead-letter queue's, after those sent to it before.
    assert int(moved["poison"]["Attributes"]["SequenceNumber"]) > int(moved["already there"]["Attributes"]["SequenceNumber"])
    assert moved["poison"]["Attributes"]["SequenceNumber"] != sent["SequenceNumber"]


def test_a_fifo_batch_without_a_group_or_deduplication_id_fails_whole(sqs):
    """Where other invalid entries fail alone, these fail the whole batch (recorded), and nothing is sent."""
    url = sqs.create_queue(QueueName="strict.fifo", Attributes={"FifoQueue": "true"})["QueueUrl"]
    good = {"Id": "1", "MessageBody": "ok", "MessageGroupId": "g", "MessageDeduplicationId": "d1"}
    for bad, message in [({"Id": "2", "MessageBody": "x", "MessageGroupId": "g"},
                          "The queue should either have ContentBasedDeduplication enabled or MessageDeduplicationId provided explicitly"),
                         ({"Id": "2", "MessageBody": "x", "MessageDeduplicationId": "d2"}, "The request must contain the parameter MessageGroupId.")]:
        with pytest.raises(botocore.exceptions.ClientError) as raised:
            sqs.send_message_batch(QueueUrl=url, Entries=[good, bad])
        error = raised.value.response["Error"]
        assert (error["Code"], error["Message"]) == ("InvalidParameterValue", message)
    assert "Messages" not in sqs.receive_message(QueueUrl=url)


def test_a_fifo_queue_delay_applies_to_messages_already_queued(sqs):
    """For FIFO queues SQS documents the queue's delay as retroactive (standard queues: not)."""
    fifo = {"FifoQueue": "true", "ContentBasedDeduplication": "true"}
    url = sqs.create_queue(QueueName="retro.fifo", Attributes=fifo | {"DelaySeconds": "60"})["QueueUrl"]
    sqs.send_message(QueueUrl=url, MessageBody="a", MessageGroupId="g")
    assert "Messages" not in sqs.receive_message(QueueUrl=url)
    sqs.set_queue_attributes(QueueUrl=url, Attributes={"DelaySeconds": "0"})
    message = sqs.receive_message(QueueUrl=url)["Messages"][0]
    sqs.delete_message(QueueUrl=url, ReceiptHandle=message["ReceiptHandle"])
    sqs.send_message(QueueUrl=url, MessageBody="b", MessageGroupId="g")
    sqs.set_queue_attributes(QueueUrl=url, Attributes={"DelaySeconds": "60"})
    counts = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesDelayed"])
    assert counts["Attributes"] == {"ApproximateNumberOfMessages": "0", "ApproximateNumberOfMessagesDelayed": "1"}
    standard = sqs.create_queue(QueueName="not-retro", Attributes={"DelaySeconds": "60"})["QueueUrl"]
    sqs.send_message(QueueUrl=standard, MessageBody="c")
    sqs.set_queue_attributes(QueueUrl=standard, Attributes={"DelaySeconds": "0"})
    assert "Messages" not in sqs.receive_message(QueueUrl=standard)


def test_fifo_retry_and_long_poll_follow_the_group(stratus, sqs):
    url = sqs.create_queue(QueueName="waits.fifo", Attributes={"FifoQueue": "true", "ContentBasedDeduplication": "true", "VisibilityTimeout": "2"})["QueueUrl"]
    for body in ["one", "two"]:
        sqs.send_message(QueueUrl=url, MessageBody=body, MessageGroupId="g")
    # A retry with the same ReceiveRequestAttemptId starts the visibility timeout again.
    first = sqs.receive_message(QueueUrl=url, ReceiveRequestAttemptId="try")["Messages"][0]
    time.sleep(1.2)
    assert sqs.receive_message(QueueUrl=url, ReceiveRequestAttemptId="try")["Messages"][0]["MessageId"] == first["MessageId"]
    time.sleep(1.2)
    assert "Messages" not in sqs.receive_message(QueueUrl=url), "hidden until 2 s after the retry"
    # Deleting the first of the group frees the second for a waiting receive, at once (long before
    # the first's timeout, which would free it too).
    sqs.change_message_visibility(QueueUrl=url, ReceiptHandle=first["ReceiptHandle"], VisibilityTimeout=30)
    deleted_at = []
    def delete_later():
        time.sleep(0.5)
        deleted_at.append(time.monotonic())
        stratus.client("sqs").delete_message(QueueUrl=url, ReceiptHandle=first["ReceiptHandle"])
    thread = threading.Thread(target=delete_later)
    thread.start()
    second = sqs.receive_message(QueueUrl=url, WaitTimeSeconds=10)["Messages"][0]
    woke = time.monotonic()
    thread.join()
    assert second["Body"] == "two" and woke - deleted_at[0] < 0.5, woke - deleted_at[0]


def test_inspection_shows_counts_and_message_paths(stratus, sqs):
    dlq = sqs.create_queue(QueueName="seen-dlq")["QueueUrl"]
    dlq_arn = sqs.get_queue_attributes(QueueUrl=dlq, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    url = sqs.create_queue(QueueName="seen", Attributes={"VisibilityTimeout": "0",
                                                         "RedrivePolicy": json.dumps({"deadLetterTargetArn": dlq_arn, "maxReceiveCount": 1})})["QueueUrl"]
    message_id = sqs.send_message(QueueUrl=url, MessageBody="traced")["MessageId"]
    sqs.receive_message(QueueUrl=url)
    sqs.receive_message(QueueUrl=url)
    view = json.loads(urllib.request.urlopen(stratus.url + "/_stratus/sqs", timeout=10).read())
    queues = {q["name"]: q for q in view["queues"]}
    assert [(e["event"], e["queue"]) for e in queues["seen"]["recent"] if e["message_id"] == message_id] == [
        ("sent", None), ("received", None), ("dead-lettered", "seen-dlq")]
    assert [e["event"] for e in queues["seen-dlq"]["recent"]] == ["arrived"]
    assert queues["seen-dlq"]["visible"] == 1 and queues["seen"]["visible"] == 0


def test_redrive_policies_are_checked_against_their_target(sqs):
    def policy(arn):
        return {"RedrivePolicy": json.dumps({"deadLetterTargetArn": arn, "maxReceiveCount": 3})}
    arn = "arn:aws:sqs:us-east-1:000000000000:{}"
    assert error_code(lambda: sqs.create_queue(QueueName="src1", Attributes=policy(arn.format("missing")))) == "InvalidParameterValue"
    sqs.create_queue(QueueName="plain-dlq")
    assert error_code(lambda: sqs.create_queue(QueueName="src.fifo", Attributes={"FifoQueue": "true", **policy(arn.format("plain-dlq"))})) == "InvalidParameterValue"
    allow = json.dumps({"redrivePermission": "byQueue", "sourceQueueArns": [arn.format("chosen")]})
    sqs.create_queue(QueueName="picky-dlq", Attributes={"RedriveAllowPolicy": allow})
    assert sqs.create_queue(QueueName="chosen", Attributes=policy(arn.format("picky-dlq")))["QueueUrl"]
    assert error_code(lambda: sqs.create_queue(QueueName="other", Attributes=policy(arn.format("picky-dlq")))) == "InvalidParameterValue"
    closed = sqs.create_queue(QueueName="closed-dlq", Attributes={"RedriveAllowPolicy": json.dumps({"redrivePermission": "denyAll"})})["QueueUrl"]
    url = sqs.create_queue(QueueName="src2")["QueueUrl"]
    assert error_code(lambda: sqs.set_queue_attributes(QueueUrl=url, Attributes=policy(arn.format("closed-dlq")))) == "InvalidParameterValue"
    bad_allow = {"RedriveAllowPolicy": json.dumps({"redrivePermission": "byQueue"})}
    assert error_code(lambda: sqs.set_queue_attributes(QueueUrl=closed, Attributes=bad_allow)) == "InvalidParameterValue"


def test_system_attributes_travel_and_are_digested(sqs):
    url = sqs.create_queue(QueueName="traced-header")["QueueUrl"]
    trace = "Root=1-5759e988-bd862e3fe1be46a994272793;Parent=53995c3f42cd8ad8;Sampled=1"
    sent = sqs.send_message(QueueUrl=url, MessageBody="x",
                            MessageSystemAttributes={"AWSTraceHeader": {"DataType": "String", "StringValue": trace}})
    # The documented digest: name, type, transport byte 1, value; lengths as 4-byte big-endian.
    expected = hashlib.md5()
    for part in [b"AWSTraceHeader", b"String"]:
        expected.update(len(part).to_bytes(4, "big") + part)
    expected.update(b"\x01" + len(trace).to_bytes(4, "big") + trace.encode())
    assert sent["MD5OfMessageSystemAttributes"] == expected.hexdigest()
    received = sqs.receive_message(QueueUrl=url, **system_names(sqs, "AWSTraceHeader"))["Messages"][0]
    assert received["Attributes"] == {"AWSTraceHeader": trace}


def test_messages_past_their_retention_period_are_swept_away(start_stratus):
    """The 10 s sweep passes over the queue until its oldest message can have expired, then drops
    that one and keeps the younger (durable only: the minimum period is 60 s)."""
    server = start_stratus()
    sqs = server.client("sqs")
    url = sqs.create_queue(QueueName="short-lived", Attributes={"MessageRetentionPeriod": "60"})["QueueUrl"]
    sent = time.monotonic()
    old = sqs.send_message(QueueUrl=url, MessageBody="old")["MessageId"]
    time.sleep(30)
    sqs.send_message(QueueUrl=url, MessageBody="young")

    def visible():
        attributes = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["ApproximateNumberOfMessages"])
        return int(attributes["Attributes"]["ApproximateNumberOfMessages"])
    while visible() == 2 and time.monotonic() - sent < 90:
        time.sleep(1)
    assert time.monotonic() - sent >= 59, "nothing expires before its retention period"
    assert visible() == 1, "the sweep dropped the expired message within a sweep of its expiry"
    bodies = [m["Body"] for m in sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10).get("Messages", [])]
    assert bodies == ["young"]
    view = json.loads(urllib.request.urlopen(server.url + "/_stratus/sqs", timeout=10).read())
    recent = {q["name"]: q for q in view["queues"]}["short-lived"]["recent"]
    assert ("expired", old) in [(e["event"], e["message_id"]) for e in recent]


def failure(call):
    with pytest.raises(botocore.exceptions.ClientError) as raised:
        call()
    response = raised.value.response
    return response["Error"]["Code"], response["ResponseMetadata"]["HTTPStatusCode"], response["Error"]["Message"]


def test_sizes_and_identifiers_as_sqs_limits_them(sqs):
    url = sqs.create_queue(QueueName="limits")["QueueUrl"]
    assert sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["MaximumMessageSize"])["Attributes"] == {"MaximumMessageSize": "1048576"}
    sqs.send_message(QueueUrl=url, MessageBody="x" * 1_048_576)
    code, status, message = failure(lambda: sqs.send_message(QueueUrl=url, MessageBody="x" * 1_048_577))
    assert (code, status) == ("InvalidParameterValue", 400) and "1048576 bytes" in message
    assert failure(lambda: sqs.set_queue_attributes(QueueUrl=url, Attributes={"MaximumMessageSize": "1048577"}))[0] == "InvalidAttributeValue"
    # No attribute names asks for nothing.
    assert "Attributes" not in sqs.get_queue_attributes(QueueUrl=url)
    empty = {"Note": {"DataType": "String", "StringValue": ""}}
    code, _, message = failure(lambda: sqs.send_message(QueueUrl=url, MessageBody="b", MessageAttributes=empty))
    assert code == "InvalidParameterValue" and message == "Message (user) attribute 'Note' must contain a non-empty value of type 'String'."
    code, _, message = failure(lambda: sqs.send_message(QueueUrl=url, MessageBody="b", MessageAttributes={
        "Age": {"DataType": "Number", "StringValue": "Hello"}}))
    assert code == "InvalidParameterValue" and message == "Can't cast the value of message (user) attribute 'Age' to a number."
    # Attribute names: the developer guide's characters, no reserved prefixes, no stray periods.
    characters = "Message (user) attributes name can only contain upper and lower score characters, digits, periods, hyphens and underscores. "
    reserved = "You can't use message attribute names beginning with 'AWS.' or 'Amazon.'. These strings are reserved for internal use. Additionally, they cannot start or end with '.'."
    for name, expected in [("a b", characters), ("ключ", characters), ("a×b", characters), ("AWS.x", reserved), ("amazon.x", reserved),
                           (".x", reserved), ("x.", reserved), ("a..b", "Message (user) attribute name must not have successive '.' characters."),
                           ("n" * 256, "Message (user) attribute names must be shorter than 256 Bytes")]:
        attributes = {name: {"DataType": "String", "StringValue": "v"}}
        code, _, message = failure(lambda: sqs.send_message(QueueUrl=url, MessageBody="b", MessageAttributes=attributes))
        assert (code, message) == ("InvalidParameterValue", expected), name
    batch = [{"Id": "ok", "MessageBody": "b"}, {"Id": "bad", "MessageBody": "b", "MessageAttributes": {"AWS.x": {"DataType": "String", "StringValue": "v"}}}]
    answer = sqs.send_message_batch(QueueUrl=url, Entries=batch)
    assert [e["Id"] for e in answer["Successful"]] == ["ok"] and [(f["Id"], f["Code"]) for f in answer["Failed"]] == [("bad", "InvalidParameterValue")]
    fine = {"a.b-c_D9": {"DataType": "String", "StringValue": "v"}, "n" * 255: {"DataType": "String", "StringValue": "v"}, "Größe": {"DataType": "Number", "StringValue": "1"}}
    sqs.send_message(QueueUrl=url, MessageBody="named", MessageAttributes=fine)
    for group in ["", "g" * 129, "a b", "é"]:
        code, _, message = failure(lambda: sqs.send_message(QueueUrl=url, MessageBody="b", MessageGroupId=group))
        assert code == "InvalidParameterValue" and "MessageGroupId can only include alphanumeric and punctuation" in message, group
    sqs.send_message(QueueUrl=url, MessageBody="b", MessageGroupId="g-1:{x}!" + "y" * 119)

    fifo = sqs.create_queue(QueueName="limits.fifo", Attributes={"FifoQueue": "true", "DelaySeconds": "1"})["QueueUrl"]
    code, _, message = failure(lambda: sqs.send_message(QueueUrl=fifo, MessageBody="b", MessageGroupId="g", MessageDeduplicationId="a b"))
    assert code == "InvalidParameterValue" and "MessageDeduplicationId can only include" in message
    # DelaySeconds=0 asks for no delay of the message's own: the queue's applies.
    sqs.send_message(QueueUrl=fifo, MessageBody="zero", MessageGroupId="g", MessageDeduplicationId="d0", DelaySeconds=0)
    assert "Messages" not in sqs.receive_message(QueueUrl=fifo)
    assert sqs.receive_message(QueueUrl=fifo, WaitTimeSeconds=3)["Messages"][0]["Body"] == "zero"
    code, _, message = failure(lambda: sqs.send_message(QueueUrl=fifo, MessageBody="b", MessageGroupId="g", MessageDeduplicationId="d2", DelaySeconds=2))
    assert code == "InvalidParameterValue" and message.startswith("Value 2 for parameter DelaySeconds is invalid.")


def test_rules_as_sqs_recordings_show_them(stratus, sqs):
    from botocore.config import Config
    unchecked = stratus.client("sqs", config=Config(parameter_validation=False))
    # A missing queue name is an invalid value, not a missing parameter.
    assert failure(lambda: unchecked.get_queue_url())[0] == "InvalidParameterValue"
    assert failure(lambda: unchecked.create_queue())[0] == "InvalidParameterValue"
    url = sqs.create_queue(QueueName="recorded")["QueueUrl"]
    # List attribute values are not supported, over either protocol.
    listed = {"a": {"DataType": "String", "StringListValues": ["x"]}}
    code, _, message = failure(lambda: sqs.send_message(QueueUrl=url, MessageBody="m", MessageAttributes=listed))
    assert (code, message) == ("AWS.SimpleQueueService.UnsupportedOperation", "Message attribute list values in SendMessage operation are not supported.")
    status, body = query(stratus, {"Action": "SendMessage", "QueueUrl": url, "MessageBody": "m", "MessageAttribute.1.Name": "a",
                                   "MessageAttribute.1.Value.DataType": "String", "MessageAttribute.1.Value.StringListValue.1": "x"})
    assert status == 400 and "<Code>AWS.SimpleQueueService.UnsupportedOperation</Code>" in body
    # In a batch, an entry whose attributes cannot be read fails alone.
    answer = sqs.send_message_batch(QueueUrl=url, Entries=[
        {"Id": "listed", "MessageBody": "m", "MessageAttributes": listed},
        {"Id": "fine", "MessageBody": "m"},
        {"Id": "valueless", "MessageBody": "m", "MessageAttributes": {"a": {"DataType": "String"}}},
    ])
    assert [e["Id"] for e in answer["Successful"]] == ["fine"]
    assert [(f["Id"], f["Code"], f["SenderFault"]) for f in answer["Failed"]] == [
        ("listed", "AWS.SimpleQueueService.UnsupportedOperation", True), ("valueless", "InvalidParameterValue", True)]
    sqs.purge_queue(QueueUrl=url)
    # A standard queue takes a group id (fair queues) and gives it back, but no deduplication id.
    code, _, message = failure(lambda: sqs.send_message(QueueUrl=url, MessageBody="m", MessageDeduplicationId="d"))
    assert code == "InvalidParameterValue" and "MessageDeduplicationId" in message
    sqs.send_message(QueueUrl=url, MessageBody="fair", MessageGroupId="tenant-1")
    received = sqs.receive_message(QueueUrl=url, **system_names(sqs, "MessageGroupId"))["Messages"][0]
    assert received["Attributes"] == {"MessageGroupId": "tenant-1"}
    # sourceQueueArns belongs to byQueue alone.
    allow = json.dumps({"redrivePermission": "allowAll", "sourceQueueArns": ["arn:aws:sqs:us-east-1:000000000000:recorded"]})
    assert failure(lambda: sqs.set_queue_attributes(QueueUrl=url, Attributes={"RedriveAllowPolicy": allow}))[0] == "InvalidParameterValue"
    # A redrive policy is kept in one form, whatever was sent.
    dlq = sqs.create_queue(QueueName="recorded-dlq")["QueueUrl"]
    arn = "arn:aws:sqs:us-east-1:000000000000:recorded-dlq"
    sent = '{ "maxReceiveCount" : "3", "deadLetterTargetArn" : "%s", "note": 1 }' % arn
    canonical = '{"deadLetterTargetArn":"%s","maxReceiveCount":3}' % arn
    sqs.set_queue_attributes(QueueUrl=url, Attributes={"RedrivePolicy": sent})
    created = sqs.create_queue(QueueName="recorded-2", Attributes={"RedrivePolicy": sent})["QueueUrl"]
    assert sqs.create_queue(QueueName="recorded-2", Attributes={"RedrivePolicy": canonical})["QueueUrl"] == created, "the same policy"
    for queue in [url, created]:
        assert sqs.get_queue_attributes(QueueUrl=queue, AttributeNames=["RedrivePolicy"])["Attributes"] == {"RedrivePolicy": canonical}
    assert sorted(sqs.list_dead_letter_source_queues(QueueUrl=dlq)["queueUrls"]) == [url, created]
    # A queue may be its own dead-letter queue, as SQS allows; its messages stay and are delivered.
    selfish = sqs.create_queue(QueueName="recorded-self")["QueueUrl"]
    own = json.dumps({"deadLetterTargetArn": "arn:aws:sqs:us-east-1:000000000000:recorded-self", "maxReceiveCount": 1})
    sqs.set_queue_attributes(QueueUrl=selfish, Attributes={"RedrivePolicy": own})
    sqs.send_message(QueueUrl=selfish, MessageBody="mine")
    for count in ["1", "2"]:
        [message] = sqs.receive_message(QueueUrl=selfish, VisibilityTimeout=0, AttributeNames=["ApproximateReceiveCount"])["Messages"]
        assert message["Attributes"]["ApproximateReceiveCount"] == count
    assert sqs.list_dead_letter_source_queues(QueueUrl=selfish)["queueUrls"] == [selfish]
    # A policy document must be JSON (awscli users who pass a file path instead get this).
    code, _, message = failure(lambda: sqs.set_queue_attributes(QueueUrl=url, Attributes={"Policy": "file://policy.json"}))
    assert (code, message) == ("InvalidAttributeValue", "Invalid value for the parameter Policy.")
    sqs.set_queue_attributes(QueueUrl=url, Attributes={"Policy": json.dumps({"Version": "2012-10-17", "Statement": []})})
    # A queue without dead-letter sources answers nothing at all.
    answer = sqs.list_dead_letter_source_queues(QueueUrl=sqs.create_queue(QueueName="recorded-lone")["QueueUrl"])
    answer.pop("ResponseMetadata")
    assert answer == {}


def test_permission_rules(sqs):
    url = sqs.create_queue(QueueName="granted")["QueueUrl"]
    grant = lambda label="l", accounts=("111111111111",), actions=("SendMessage",): sqs.add_permission(  # noqa: E731
        QueueUrl=url, Label=label, AWSAccountIds=list(accounts), Actions=list(actions))
    grant(actions=["SendMessage", "ReceiveMessage", "*"])
    assert failure(lambda: grant())[2] == "Value l for parameter Label is invalid. Reason: Already exists."
    assert failure(lambda: grant(label="a b"))[0] == "InvalidParameterValue"
    assert failure(lambda: grant(label="m", actions=[]))[:2] == ("MissingParameter", 400)
    assert failure(lambda: grant(label="m", accounts=[]))[2] == "Value [] for parameter PrincipalId is invalid. Reason: Unable to verify."
    assert failure(lambda: grant(label="m", actions=["SendMessage"] * 8)) == ("OverLimit", 403, "8 Actions were found, maximum allowed is 7.")
    code, _, message = failure(lambda: grant(label="m", actions=["DeleteQueue"]))
    assert (code, message) == ("InvalidParameterValue", "Value SQS:DeleteQueue for parameter ActionName is invalid. Reason: Only the queue owner is allowed to invoke this action.")
    code, _, message = failure(lambda: grant(label="m", actions=["Fly"]))
    assert (code, message) == ("InvalidParameterValue", "Value SQS:Fly for parameter ActionName is invalid. Reason: Please refer to the appropriate WSDL for a list of valid actions.")
    statements = json.loads(sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["Policy"])["Attributes"]["Policy"])["Statement"]
    assert [s["Sid"] for s in statements] == ["l"], "refused grants leave the policy as it was"
    assert failure(lambda: sqs.create_queue(QueueName=".fifo", Attributes={"FifoQueue": "true"}))[0] == "InvalidParameterValue"


def test_queue_attribute_rules(sqs):
    assert failure(lambda: sqs.create_queue(QueueName="plain", Attributes={"FifoQueue": "false"}))[0] == "InvalidAttributeName"
    plain = sqs.create_queue(QueueName="plain")["QueueUrl"]
    code, _, message = failure(lambda: sqs.set_queue_attributes(QueueUrl=plain, Attributes={"DeduplicationScope": "queue"}))
    assert (code, message) == ("InvalidAttributeName", "You can specify the DeduplicationScope only when FifoQueue is set to true.")
    fifo = sqs.create_queue(QueueName="kind.fifo", Attributes={"FifoQueue": "true"})["QueueUrl"]
    sqs.set_queue_attributes(QueueUrl=fifo, Attributes={"FifoQueue": "true"})
    code, _, message = failure(lambda: sqs.set_queue_attributes(QueueUrl=fifo, Attributes={"FifoQueue": "false"}))
    assert code == "InvalidAttributeValue" and "Modifying queue type is not supported." in message
    # Booleans come back in lower case, however they were sent (recorded).
    cased = sqs.create_queue(QueueName="cased.fifo", Attributes={"FifoQueue": "True", "ContentBasedDeduplication": "False"})["QueueUrl"]
    attributes = sqs.get_queue_attributes(QueueUrl=cased, AttributeNames=["All"])["Attributes"]
    assert (attributes["FifoQueue"], attributes["ContentBasedDeduplication"], attributes["SqsManagedSseEnabled"]) == ("true", "false", "true")
    sqs.set_queue_attributes(QueueUrl=cased, Attributes={"SqsManagedSseEnabled": "FALSE"})
    assert sqs.get_queue_attributes(QueueUrl=cased, AttributeNames=["SqsManagedSseEnabled"])["Attributes"] == {"SqsManagedSseEnabled": "false"}

    # An empty redrive policy removes it, when set and when created with one.
    dlq = sqs.create_queue(QueueName="rules-dlq")["QueueUrl"]
    dlq_arn = sqs.get_queue_attributes(QueueUrl=dlq, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    policy = json.dumps({"deadLetterTargetArn": dlq_arn, "maxReceiveCount": 3})
    sources = [sqs.create_queue(QueueName=f"rules-src-{i}", Attributes={"RedrivePolicy": policy})["QueueUrl"] for i in range(3)]
    sqs.set_queue_attributes(QueueUrl=sources[2], Attributes={"RedrivePolicy": ""})
    assert "Attributes" not in sqs.get_queue_attributes(QueueUrl=sources[2], AttributeNames=["RedrivePolicy"])
    sqs.create_queue(QueueName="rules-none", Attributes={"RedrivePolicy": "", "RedriveAllowPolicy": ""})
    # Dead-letter sources a page at a time.
    first = sqs.list_dead_letter_source_queues(QueueUrl=dlq, MaxResults=1)
    assert first["queueUrls"] == sources[:1] and "NextToken" in first
    second = sqs.list_dead_letter_source_queues(QueueUrl=dlq, MaxResults=1, NextToken=first["NextToken"])
    assert second["queueUrls"] == sources[1:2] and "NextToken" not in second
    assert sqs.list_dead_letter_source_queues(QueueUrl=dlq)["queueUrls"] == sources[:2]
    assert failure(lambda: sqs.list_dead_letter_source_queues(QueueUrl=dlq, MaxResults=0))[0] == "InvalidParameterValue"

    # Tags: overwriting one of 50 adds none; more than 50 at creation is refused.
    tags = {f"k{i}": "v" for i in range(50)}
    sqs.tag_queue(QueueUrl=plain, Tags=tags)
    sqs.tag_queue(QueueUrl=plain, Tags={"k1": "new"})
    assert sqs.list_queue_tags(QueueUrl=plain)["Tags"]["k1"] == "new"
    assert failure(lambda: sqs.tag_queue(QueueUrl=plain, Tags={"k50": "v"}))[0] == "InvalidParameterValue"
    assert failure(lambda: sqs.create_queue(QueueName="tagged", tags={**tags, "k50": "v"}))[0] == "InvalidParameterValue"

    # Encryption by SQS-managed keys or by a KMS key, not both.
    encrypted = sqs.get_queue_attributes(QueueUrl=plain, AttributeNames=["All"])["Attributes"]
    assert encrypted["SqsManagedSseEnabled"] == "true" and "KmsDataKeyReusePeriodSeconds" not in encrypted
    sqs.set_queue_attributes(QueueUrl=plain, Attributes={"KmsMasterKeyId": "alias/mine"})
    encrypted = sqs.get_queue_attributes(QueueUrl=plain, AttributeNames=["All"])["Attributes"]
    assert (encrypted["SqsManagedSseEnabled"], encrypted["KmsDataKeyReusePeriodSeconds"]) == ("false", "300")
    sqs.set_queue_attributes(QueueUrl=plain, Attributes={"KmsMasterKeyId": ""})
    assert "KmsMasterKeyId" not in sqs.get_queue_attributes(QueueUrl=plain, AttributeNames=["All"])["Attributes"]
    # Creating again with the same attributes succeeds, however they were settled when stored.
    for same in [{"KmsMasterKeyId": "alias/k", "SqsManagedSseEnabled": "False"}, {"KmsDataKeyReusePeriodSeconds": "300"},
                 {"RedrivePolicy": "", "Policy": ""}]:
        name = f"again-{len(same)}-{sorted(same)[0]}"
        assert sqs.create_queue(QueueName=name, Attributes=same)["QueueUrl"] == sqs.create_queue(QueueName=name, Attributes=same)["QueueUrl"]
    both = {"KmsMasterKeyId": "alias/mine", "SqsManagedSseEnabled": "true"}
    assert failure(lambda: sqs.create_queue(QueueName="both", Attributes=both))[0] == "InvalidAttributeName"

    # A purge within a minute of the last is refused with 403.
    sqs.purge_queue(QueueUrl=plain)
    assert failure(lambda: sqs.purge_queue(QueueUrl=plain))[:2] == ("AWS.SimpleQueueService.PurgeQueueInProgress", 403)


def test_receipt_handles_once_the_visibility_timeout_passes(sqs):
    url = sqs.create_queue(QueueName="expiring")["QueueUrl"]
    sqs.send_message(QueueUrl=url, MessageBody="b")
    handle = sqs.receive_message(QueueUrl=url, VisibilityTimeout=1)["Messages"][0]["ReceiptHandle"]
    time.sleep(1.2)
    # A handle keeps its message hidden for at most 12 hours from its receive.
    code, _, message = failure(lambda: sqs.change_message_visibility(QueueUrl=url, ReceiptHandle=handle, VisibilityTimeout=43200))
    assert code == "InvalidParameterValue" and "Total VisibilityTimeout for the message is beyond the limit [43200 seconds]" in message
    # Still the latest receive's handle: it hides the message again.
    sqs.change_message_visibility(QueueUrl=url, ReceiptHandle=handle, VisibilityTimeout=30)
    assert "Messages" not in sqs.receive_message(QueueUrl=url)
    sqs.delete_message(QueueUrl=url, ReceiptHandle=handle)

    fifo = sqs.create_queue(QueueName="expiring.fifo", Attributes={"FifoQueue": "true", "ContentBasedDeduplication": "true"})["QueueUrl"]
    sqs.send_message(QueueUrl=fifo, MessageBody="b", MessageGroupId="g")
    handle = sqs.receive_message(QueueUrl=fifo, VisibilityTimeout=1)["Messages"][0]["ReceiptHandle"]
    time.sleep(1.2)
    code, _, message = failure(lambda: sqs.delete_message(QueueUrl=fifo, ReceiptHandle=handle))
    assert code == "InvalidParameterValue" and message.endswith("Reason: The receipt handle has expired.")
    code, _, message = failure(lambda: sqs.change_message_visibility(QueueUrl=fifo, ReceiptHandle=handle, VisibilityTimeout=30))
    assert code == "InvalidParameterValue" and message.endswith("Reason: The receipt handle has expired.")
    assert sqs.receive_message(QueueUrl=fifo)["Messages"][0]["Body"] == "b"


def test_x_ray_trace_header_travels_with_the_messages_sent(sqs):
    url = sqs.create_queue(QueueName="traced")["QueueUrl"]
    trace = "Root=1-5759e988-bd862e3fe1be46a994272793;Parent=53995c3f42cd8ad8;Sampled=1"

    def add_header(request, **_):
        request.headers["X-Amzn-Trace-Id"] = trace

    sqs.meta.events.register("before-sign.sqs.SendMessage", add_header)
    sqs.meta.events.register("before-sign.sqs.SendMessageBatch", add_header)
    try:
        sqs.send_message(QueueUrl=url, MessageBody="header")
        sqs.send_message_batch(QueueUrl=url, Entries=[{"Id": "a", "MessageBody": "batched"}])
        own = {"AWSTraceHeader": {"DataType": "String", "StringValue": "Root=own"}}
        sqs.send_message(QueueUrl=url, MessageBody="own", MessageSystemAttributes=own)
    finally:
        sqs.meta.events.unregister("before-sign.sqs.SendMessage", add_header)
        sqs.meta.events.unregister("before-sign.sqs.SendMessageBatch", add_header)
    sqs.send_message(QueueUrl=url, MessageBody="untraced")
    seen = {}
    while len(seen) < 4:
        for m in sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, **system_names(sqs, "AWSTraceHeader")).get("Messages", []):
            seen[m["Body"]] = m.get("Attributes", {}).get("AWSTraceHeader")
    # The message's own system attribute wins over the header, as X-Ray documents.
    assert seen == {"header": trace, "batched": trace, "own": "Root=own", "untraced": None}
