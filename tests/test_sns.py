"""SNS through boto3, awscli and raw query-protocol HTTP: every served operation, fan-out to SQS
with signed envelopes, HTTP subscribers, FIFO order, dead-letter queues and the outbox."""

import base64
import http.server
import json
import threading
import time
import urllib.parse
import urllib.request

import botocore.exceptions
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding


@pytest.fixture
def sns(stratus):
    return stratus.client("sns")


@pytest.fixture
def sqs(stratus):
    return stratus.client("sqs")


def error(call):
    with pytest.raises(botocore.exceptions.ClientError) as raised:
        call()
    return raised.value.response["Error"]["Code"], raised.value.response["Error"]["Message"]


def queue(sqs, name, **attributes):
    url = sqs.create_queue(QueueName=name, Attributes=attributes)["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    return url, arn


def receive_all(sqs, url, count, timeout=10):
    messages = []
    deadline = time.monotonic() + timeout
    while len(messages) < count and time.monotonic() < deadline:
        got = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=1,
                                  MessageAttributeNames=["All"]).get("Messages", [])
        for m in got:
            sqs.delete_message(QueueUrl=url, ReceiptHandle=m["ReceiptHandle"])
        messages.extend(got)
    return messages


def get_json(url):
    with urllib.request.urlopen(url, timeout=10) as response:
        return json.loads(response.read())


def outbox(server, count, query="", timeout=5):
    """The outbox's messages (filtered by `query`), once there are `count` of them."""
    deadline = time.monotonic() + timeout
    while True:
        messages = get_json(f"{server.url}/_stratus/sns/outbox?{query}")["messages"]
        if len(messages) >= count or time.monotonic() > deadline:
            return messages
        time.sleep(0.02)


def canonical(envelope):
    """The string SNS signs, built the way AWS's verification guide says."""
    if envelope["Type"] == "Notification":
        fields = ["Message", "MessageId", "Subject", "Timestamp", "TopicArn", "Type"]
    else:
        fields = ["Message", "MessageId", "SubscribeURL", "Timestamp", "Token", "TopicArn", "Type"]
    return "".join(f"{f}\n{envelope[f]}\n" for f in fields if f in envelope).encode()


def verify_signature(envelope):
    with urllib.request.urlopen(envelope["SigningCertURL"], timeout=10) as response:
        certificate = x509.load_pem_x509_certificate(response.read())
    algorithm = hashes.SHA256() if envelope["SignatureVersion"] == "2" else hashes.SHA1()
    certificate.public_key().verify(base64.b64decode(envelope["Signature"]), canonical(envelope),
                                    padding.PKCS1v15(), algorithm)


def test_topic_lifecycle(stratus, sns):
    arn = sns.create_topic(Name="orders", Attributes={"DisplayName": "Orders"})["TopicArn"]
    assert arn == "arn:aws:sns:us-east-1:000000000000:orders"
    assert sns.create_topic(Name="orders", Attributes={"DisplayName": "Orders"})["TopicArn"] == arn
    code, message = error(lambda: sns.create_topic(Name="orders", Attributes={"DisplayName": "Other"}))
    assert code == "InvalidParameter" and "already exists with different attributes" in message
    assert error(lambda: sns.create_topic(Name="bad name"))[0] == "InvalidParameter"
    attributes = sns.get_topic_attributes(TopicArn=arn)["Attributes"]
    assert attributes["DisplayName"] == "Orders" and attributes["Owner"] == "000000000000"
    assert json.loads(attributes["Policy"])["Statement"][0]["Condition"]["StringEquals"]["AWS:SourceOwner"] == "000000000000"
    assert attributes["SubscriptionsConfirmed"] == "0" and "EffectiveDeliveryPolicy" in attributes
    sns.set_topic_attributes(TopicArn=arn, AttributeName="DisplayName", AttributeValue="Renamed")
    assert sns.get_topic_attributes(TopicArn=arn)["Attributes"]["DisplayName"] == "Renamed"
    code, message = error(lambda: sns.set_topic_attributes(TopicArn=arn, AttributeName="Bogus", AttributeValue="x"))
    assert code == "InvalidParameter"
    for i in range(101):
        sns.create_topic(Name=f"many-{i:03}")
    first = sns.list_topics()
    second = sns.list_topics(NextToken=first["NextToken"])
    assert len(first["Topics"]) == 100 and len(second["Topics"]) == 2 and "NextToken" not in second
    sns.delete_topic(TopicArn=arn)
    sns.delete_topic(TopicArn=arn)  # deleting a missing topic succeeds, as in AWS
    assert error(lambda: sns.get_topic_attributes(TopicArn=arn)) == ("NotFound", "Topic does not exist")
    assert error(lambda: sns.get_topic_attributes(TopicArn="not-an-arn"))[0] == "InvalidParameter"
    # Regions and accounts are separate.
    other = stratus.client("sns", region_name="eu-west-1")
    assert other.list_topics()["Topics"] == []
    assert stratus.client("sns", aws_access_key_id="111111111111").list_topics()["Topics"] == []


def test_subscriptions(sns, sqs):
    topic = sns.create_topic(Name="events")["TopicArn"]
    _, queue_arn = queue(sqs, "events-q")
    sub = sns.subscribe(TopicArn=topic, Protocol="sqs", Endpoint=queue_arn,
                        Attributes={"RawMessageDelivery": "true"})["SubscriptionArn"]
    assert sub.startswith(topic + ":")
    assert sns.subscribe(TopicArn=topic, Protocol="sqs", Endpoint=queue_arn,
                         Attributes={"RawMessageDelivery": "true"})["SubscriptionArn"] == sub, "idempotent"
    email = sns.subscribe(TopicArn=topic, Protocol="email", Endpoint="dev@example.com")
    assert email["SubscriptionArn"] == "pending confirmation"
    email_arn = sns.subscribe(TopicArn=topic, Protocol="email", Endpoint="dev@example.com",
                              ReturnSubscriptionArn=True)["SubscriptionArn"]
    attributes = sns.get_subscription_attributes(SubscriptionArn=sub)["Attributes"]
    assert attributes["RawMessageDelivery"] == "true" and attributes["PendingConfirmation"] == "false"
    assert attributes["Endpoint"] == queue_arn and attributes["TopicArn"] == topic
    assert sns.get_subscription_attributes(SubscriptionArn=email_arn)["Attributes"]["PendingConfirmation"] == "true"
    sns.set_subscription_attributes(SubscriptionArn=sub, AttributeName="FilterPolicy",
                                    AttributeValue=json.dumps({"kind": ["a"]}))
    assert json.loads(sns.get_subscription_attributes(SubscriptionArn=sub)["Attributes"]["FilterPolicy"]) == {"kind": ["a"]}
    code, message = error(lambda: sns.set_subscription_attributes(
        SubscriptionArn=sub, AttributeName="FilterPolicy", AttributeValue=json.dumps({"n": [{"numeric": [">", 5, "<", 1]}]})))
    assert code == "InvalidParameter" and message.startswith("Invalid parameter: FilterPolicy:")
    code, message = error(lambda: sns.set_subscription_attributes(
        SubscriptionArn=email_arn, AttributeName="RawMessageDelivery", AttributeValue="true"))
    assert code == "InvalidParameter" and "raw message delivery" in message
    listed = sns.list_subscriptions_by_topic(TopicArn=topic)["Subscriptions"]
    assert {s["Protocol"] for s in listed} == {"sqs", "email"}
    assert {s["SubscriptionArn"] for s in listed} == {sub, "PendingConfirmation"}
    assert len(sns.list_subscriptions()["Subscriptions"]) == 2
    assert error(lambda: sns.subscribe(TopicArn=topic, Protocol="carrier-pigeon", Endpoint="x"))[0] == "InvalidParameter"
    assert error(lambda: sns.subscribe(TopicArn=topic, Protocol="http", Endpoint="ftp://x"))[0] == "InvalidParameter"
    assert error(lambda: sns.subscribe(TopicArn=topic + "-missing", Protocol="sqs", Endpoint=queue_arn))[0] == "NotFound"
    _, fifo_arn = queue(sqs, "q.fifo", FifoQueue="true")
    code, message = error(lambda: sns.subscribe(TopicArn=topic, Protocol="sqs", Endpoint=fifo_arn))
    assert code == "InvalidParameter" and "FIFO" in message
    sns.unsubscribe(SubscriptionArn=sub)
    assert error(lambda: sns.get_subscription_attributes(SubscriptionArn=sub))[0] == "NotFound"
    assert sns.get_topic_attributes(TopicArn=topic)["Attributes"]["SubscriptionsDeleted"] == "1"
    sns.delete_topic(TopicArn=topic)
    assert sns.list_subscriptions()["Subscriptions"] == []


def test_fan_out_to_ten_queues_raw_and_enveloped_with_verified_signatures(sns, sqs):
    topic = sns.create_topic(Name="fanout")["TopicArn"]
    queues = []
    for i in range(10):
        url, arn = queue(sqs, f"fan-{i}")
        raw = i % 2 == 0
        sub = sns.subscribe(TopicArn=topic, Protocol="sqs", Endpoint=arn,
                            Attributes={"RawMessageDelivery": str(raw).lower()})["SubscriptionArn"]
        queues.append((url, raw, sub))
    attributes = {"color": {"DataType": "String", "StringValue": "blue"},
                  "size": {"DataType": "Number", "StringValue": "42"},
                  "blob": {"DataType": "Binary", "BinaryValue": b"\x00\x01"},
                  # SNS's own (for SMS): allowed, though a queue would refuse the name, so raw delivery leaves it out.
                  "AWS.SNS.SMS.SenderID": {"DataType": "String", "StringValue": "Stratus"}}
    published = sns.publish(TopicArn=topic, Message="hello fan-out", Subject="greeting", MessageAttributes=attributes)
    for url, raw, sub in queues:
        [message] = receive_all(sqs, url, 1)
        if raw:
            assert message["Body"] == "hello fan-out"
            assert message["MessageAttributes"]["color"] == {"StringValue": "blue", "DataType": "String"}
            assert message["MessageAttributes"]["blob"]["BinaryValue"] == b"\x00\x01"
            assert sorted(message["MessageAttributes"]) == ["blob", "color", "size"]
            continue
        envelope = json.loads(message["Body"])
        assert envelope["Type"] == "Notification" and envelope["MessageId"] == published["MessageId"]
        assert envelope["TopicArn"] == topic and envelope["Subject"] == "greeting"
        assert envelope["Message"] == "hello fan-out" and envelope["SignatureVersion"] == "1"
        assert envelope["Timestamp"].endswith("Z") and "T" in envelope["Timestamp"]
        assert envelope["MessageAttributes"]["color"] == {"Type": "String", "Value": "blue"}
        assert envelope["MessageAttributes"]["size"] == {"Type": "Number", "Value": "42"}
        assert envelope["MessageAttributes"]["blob"] == {"Type": "Binary", "Value": "AAE="}
        assert urllib.parse.quote(sub, safe="") in envelope["UnsubscribeURL"]
        verify_signature(envelope)
    # Version 2 signs with SHA-256.
    sns.set_topic_attributes(TopicArn=topic, AttributeName="SignatureVersion", AttributeValue="2")
    sns.publish(TopicArn=topic, Message="second")
    envelope = json.loads(receive_all(sqs, queues[1][0], 1)[0]["Body"])
    assert envelope["SignatureVersion"] == "2" and "Subject" not in envelope
    verify_signature(envelope)
    # UnsubscribeURL works when followed.
    urllib.request.urlopen(envelope["UnsubscribeURL"], timeout=10).read()
    assert len(sns.list_subscriptions_by_topic(TopicArn=topic)["Subscriptions"]) == 9


def test_message_structure_json(sns, sqs):
    topic = sns.create_topic(Name="structured")["TopicArn"]
    url, arn = queue(sqs, "structured-q")
    sns.subscribe(TopicArn=topic, Protocol="sqs", Endpoint=arn, Attributes={"RawMessageDelivery": "true"})
    sns.publish(TopicArn=topic, MessageStructure="json",
                Message=json.dumps({"default": "for everyone", "sqs": "for queues", "email": "for mail"}))
    assert receive_all(sqs, url, 1)[0]["Body"] == "for queues"
    code, message = error(lambda: sns.publish(TopicArn=topic, MessageStructure="json", Message=json.dumps({"sqs": "x"})))
    assert code == "InvalidParameter" and "No default entry" in message
    assert error(lambda: sns.publish(TopicArn=topic, MessageStructure="json", Message="{not json"))[0] == "InvalidParameter"


def test_publish_errors(stratus, sns):
    topic = sns.create_topic(Name="errs")["TopicArn"]
    assert error(lambda: sns.publish(TopicArn=topic + "x", Message="m")) == ("NotFound", "Topic does not exist")
    assert error(lambda: sns.publish(TopicArn=topic, Message="")) == ("InvalidParameter", "Invalid parameter: Empty message")
    code, message = error(lambda: sns.publish(TopicArn=topic, Message="x" * 262_145))
    assert (code, message) == ("InvalidParameter", "Invalid parameter: Message too long")
    assert error(lambda: sns.publish(TopicArn=topic, Message="m", Subject="a\nb"))[0] == "InvalidParameter"
    code, message = error(lambda: sns.publish(TopicArn=topic, Message="m", MessageAttributes={
        "n": {"DataType": "Number", "StringValue": "abc"}}))
    assert code == "ParameterValueInvalid" and "'n'" in message
    assert error(lambda: sns.publish(TopicArn=topic, Message="m", MessageAttributes={
        "t": {"DataType": "Banana", "StringValue": "x"}}))[0] == "ParameterValueInvalid"
    # Names a subscribed queue would refuse (the two services document the same rules).
    code, message = error(lambda: sns.publish(TopicArn=topic, Message="m", MessageAttributes={
        "AWS.reserved": {"DataType": "String", "StringValue": "x"}}))
    assert code == "ParameterValueInvalid" and "'AWS.'" in message
    assert error(lambda: sns.publish(TopicArn=topic, Message="m", MessageDeduplicationId="d"))[0] == "InvalidParameter"
    # Batches: the whole-request errors, then one entry's own.
    entry = lambda i: {"Id": str(i), "Message": "m"}  # noqa: E731
    assert error(lambda: sns.publish_batch(TopicArn=topic, PublishBatchRequestEntries=[entry(i) for i in range(11)]))[0] \
        == "TooManyEntriesInBatchRequest"
    assert error(lambda: sns.publish_batch(TopicArn=topic, PublishBatchRequestEntries=[entry(1), entry(1)]))[0] \
        == "BatchEntryIdsNotDistinct"
    assert error(lambda: sns.publish_batch(TopicArn=topic, PublishBatchRequestEntries=[{"Id": "bad id!", "Message": "m"}]))[0] \
        == "InvalidBatchEntryId"
    big = [{"Id": str(i), "Message": "x" * 100_000} for i in range(3)]
    assert error(lambda: sns.publish_batch(TopicArn=topic, PublishBatchRequestEntries=big))[0] == "BatchRequestTooLong"
    result = sns.publish_batch(TopicArn=topic, PublishBatchRequestEntries=[entry(1), {"Id": "2", "Message": ""}])
    assert [s["Id"] for s in result["Successful"]] == ["1"]
    assert result["Failed"] == [{"Id": "2", "Code": "InvalidParameter", "Message": "Invalid parameter: Empty message",
                                 "SenderFault": True}]
    # Raw query protocol: missing parameters, unknown actions.
    def raw(params):
        body = urllib.parse.urlencode({**params, "Version": "2010-03-31"}).encode()
        request = urllib.request.Request(stratus.url + "/", data=body, method="POST",
                                         headers={"Content-Type": "application/x-www-form-urlencoded"})
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                return response.status, response.read().decode()
        except urllib.error.HTTPError as failure:
            return failure.code, failure.read().decode()
    status, body = raw({"Action": "Publish", "Message": "m"})
    assert status == 400 and "<Code>InvalidParameter</Code>" in body
    status, body = raw({"Action": "Publish", "TopicArn": topic})
    assert status == 400 and "<Code>ValidationError</Code>" in body
    status, body = raw({"Action": "Frobnicate"})
    assert status == 400 and "<Code>InvalidAction</Code>" in body
    status, body = raw({"Action": "Publish", "TopicArn": topic, "Message": "m",
                        "MessageAttributes.entry.1.Name": "b", "MessageAttributes.entry.1.Value.DataType": "Binary",
                        "MessageAttributes.entry.1.Value.BinaryValue": "!!not base64!!"})
    assert status == 400 and "<Code>ParameterValueInvalid</Code>" in body


def test_fifo_topic_keeps_group_order_and_deduplicates(sns, sqs):
    assert error(lambda: sns.create_topic(Name="plain", Attributes={"FifoTopic": "true"}))[0] == "InvalidParameter"
    assert error(lambda: sns.create_topic(Name="x.fifo"))[0] == "InvalidParameter"
    topic = sns.create_topic(Name="orders.fifo", Attributes={"FifoTopic": "true"})["TopicArn"]
    attributes = sns.get_topic_attributes(TopicArn=topic)["Attributes"]
    assert attributes["FifoTopic"] == "true" and attributes["ContentBasedDeduplication"] == "false"
    urls = []
    for name in ["a.fifo", "b.fifo"]:
        url, arn = queue(sqs, name, FifoQueue="true")
        sns.subscribe(TopicArn=topic, Protocol="sqs", Endpoint=arn, Attributes={"RawMessageDelivery": "true"})
        urls.append(url)
    code, message = error(lambda: sns.publish(TopicArn=topic, Message="m", MessageDeduplicationId="d"))
    assert code == "InvalidParameter" and "MessageGroupId" in message
    assert "ContentBasedDeduplication" in error(lambda: sns.publish(TopicArn=topic, Message="m", MessageGroupId="g"))[1]
    # Ids a subscribed queue would refuse are refused at Publish, not dead-lettered on delivery.
    code, message = error(lambda: sns.publish(TopicArn=topic, Message="m", MessageGroupId="group 1", MessageDeduplicationId="d"))
    assert code == "InvalidParameter" and "MessageGroupId" in message
    sequence = []
    for i in range(30):
        sent = sns.publish(TopicArn=topic, Message=f"{i % 2}-{i}", MessageGroupId=f"g{i % 2}",
                           MessageDeduplicationId=f"d{i}")
        sequence.append(int(sent["SequenceNumber"]))
    assert sequence == sorted(sequence) and len(set(sequence)) == 30
    again = sns.publish(TopicArn=topic, Message="dup", MessageGroupId="g0", MessageDeduplicationId="d0")
    assert int(again["SequenceNumber"]) == sequence[0], "a duplicate answers with the original"
    batch = sns.publish_batch(TopicArn=topic, PublishBatchRequestEntries=[
        {"Id": str(i), "Message": f"{i % 2}-{30 + i}", "MessageGroupId": f"g{i % 2}", "MessageDeduplicationId": f"d{30 + i}"}
        for i in range(10)])
    assert len(batch["Successful"]) == 10
    for url in urls:
        bodies = []
        deadline = time.monotonic() + 15
        while len(bodies) < 40 and time.monotonic() < deadline:
            got = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=1).get("Messages", [])
            bodies.extend(m["Body"] for m in got)
            if got:
                sqs.delete_message_batch(QueueUrl=url, Entries=[
                    {"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(got)])
        assert len(bodies) == 40, "every message once, the duplicate not at all"
        for group in ["0", "1"]:
            numbers = [int(b.split("-")[1]) for b in bodies if b.startswith(group + "-")]
            assert numbers == sorted(numbers) and len(numbers) == 20
    sns.set_topic_attributes(TopicArn=topic, AttributeName="ContentBasedDeduplication", AttributeValue="true")
    first = sns.publish(TopicArn=topic, Message="same body", MessageGroupId="g")
    assert sns.publish(TopicArn=topic, Message="same body", MessageGroupId="g")["MessageId"] == first["MessageId"]


# The examples of AWS's filter policy documentation, on its example message: (policy, matches).
ATTRIBUTES = {
    "customer_interests": {"DataType": "String.Array", "StringValue": json.dumps(["soccer", "rugby", "hockey"])},
    "store": {"DataType": "String", "StringValue": "example_corp"},
    "event": {"DataType": "String", "StringValue": "order_placed"},
    "price_usd": {"DataType": "Number", "StringValue": "210.75"},
    "source_ip": {"DataType": "String", "StringValue": "10.0.0.255"},
}
ATTRIBUTE_EXAMPLES = [
    ({"store": ["example_corp"], "event": [{"anything-but": "order_cancelled"}],
      "customer_interests": ["rugby", "football", "baseball"], "price_usd": [{"numeric": [">=", 100]}]}, True),
    ({"store": ["example_corp"]}, True),
    ({"event": ["order_cancelled"]}, False),
    ({"customer_interests": ["rugby"]}, True),
    ({"customer_interests": ["basketball", "baseball"]}, False),
    ({"price_usd": [210.75]}, True),
    ({"price_usd": [{"numeric": ["=", 210.75]}]}, True),
    ({"price_usd": [{"numeric": [">", 0, "<=", 150]}]}, False),
    ({"price_usd": [{"numeric": [">", 200, "<=", 300]}]}, True),
    ({"price_usd": [{"numeric": ["<", 100]}]}, False),
    ({"event": [{"anything-but": ["order_cancelled", "order_refunded"]}]}, True),
    ({"event": [{"anything-but": ["order_cancelled", "order_placed"]}]}, False),
    ({"price_usd": [{"anything-but": [100, 500]}]}, True),
    ({"event": [{"anything-but": {"prefix": "order-"}}]}, True),
    ({"event": [{"anything-but": {"prefix": "order_"}}]}, False),
    ({"store": [{"prefix": "example"}]}, True),
    ({"store": [{"suffix": "_corp"}]}, True),
    ({"store": [{"suffix": "-inc"}]}, False),
    ({"event": [{"equals-ignore-case": "ORDER_PLACED"}]}, True),
    ({"store": [{"exists": True}]}, True),
    ({"encrypted": [{"exists": False}]}, True),
    ({"store": [{"exists": False}]}, False),
    ({"source_ip": [{"cidr": "10.0.0.0/24"}]}, True),
    ({"source_ip": [{"cidr": "10.0.1.0/24"}]}, False),
    ({"store": ["example_corp"], "$or": [{"event": ["order_cancelled"]}, {"price_usd": [{"numeric": [">", 200]}]}]}, True),
    ({"store": ["other_corp"], "$or": [{"event": ["order_placed"]}, {"price_usd": [{"numeric": [">", 200]}]}]}, False),
]
BODY = {"store": "example_corp", "event": "order_placed", "price_usd": 210.75,
        "customer": {"interests": ["soccer", "rugby"], "address": {"city": "Seattle"}}}
BODY_EXAMPLES = [
    ({"store": ["example_corp"]}, True),
    ({"customer": {"interests": ["rugby"]}}, True),
    ({"customer": {"interests": ["golf"]}}, False),
    ({"customer": {"address": {"city": [{"prefix": "Sea"}]}}}, True),
    ({"price_usd": [{"numeric": [">", 100]}], "event": [{"anything-but": "order_cancelled"}]}, True),
    ({"$or": [{"store": ["nope"]}, {"customer": {"interests": ["soccer"]}}]}, True),
]


@pytest.fixture(scope="module")
def filter_rig(tmp_path_factory):
    """One Stratus for the filter examples: each example subscribes a queue of its own."""
    from stratus_harness import Stratus
    server = Stratus(tmp_path_factory.mktemp("filters")).start()
    yield server
    server.stop()


def check_filter(server, name, policy, scope, publish, expected):
    sns, sqs = server.client("sns"), server.client("sqs")
    topic = sns.create_topic(Name=name)["TopicArn"]
    url, arn = queue(sqs, name)
    sns.subscribe(TopicArn=topic, Protocol="sqs", Endpoint=arn, Attributes={
        "FilterPolicy": json.dumps(policy), "FilterPolicyScope": scope, "RawMessageDelivery": "true"})
    message_id = sns.publish(TopicArn=topic, **publish)["MessageId"]
    [trace] = [m for m in get_json(f"{server.url}/_stratus/sns?topic={topic}")["messages"] if m["messageId"] == message_id]
    assert (trace["deliveries"][0]["status"] != "filtered out") == expected
    delivered = receive_all(sqs, url, 1, timeout=5 if expected else 1)
    assert len(delivered) == (1 if expected else 0), f"{policy} should {'' if expected else 'not '}match"


@pytest.mark.parametrize("index", range(len(ATTRIBUTE_EXAMPLES)))
def test_filter_policy_on_attributes(filter_rig, index):
    policy, expected = ATTRIBUTE_EXAMPLES[index]
    check_filter(filter_rig, f"attr-{index}", policy, "MessageAttributes",
                 {"Message": "order", "MessageAttributes": ATTRIBUTES}, expected)


@pytest.mark.parametrize("index", range(len(BODY_EXAMPLES)))
def test_filter_policy_on_body(filter_rig, index):
    policy, expected = BODY_EXAMPLES[index]
    check_filter(filter_rig, f"body-{index}", policy, "MessageBody", {"Message": json.dumps(BODY)}, expected)


def test_invalid_filter_policies_are_rejected(sns, sqs):
    topic = sns.create_topic(Name="filters")["TopicArn"]
    _, arn = queue(sqs, "filters-q")
    for policy in [{"a": []}, {"a": [{"numeric": [">", "x"]}]}, {"a": [{"bogus": 1}]},
                   {"a": ["1"], "b": ["1"], "c": ["1"], "d": ["1"], "e": ["1"], "f": ["1"]}]:
        code, message = error(lambda: sns.subscribe(TopicArn=topic, Protocol="sqs", Endpoint=arn,
                                                    Attributes={"FilterPolicy": json.dumps(policy)}))
        assert code == "InvalidParameter" and "FilterPolicy" in message, (policy, message)
    code, message = error(lambda: sns.subscribe(TopicArn=topic, Protocol="sqs", Endpoint=arn, Attributes={
        "FilterPolicy": json.dumps({"a": {"b": ["c"]}})}))
    assert message == "Invalid parameter: Attributes Reason: Filter policy scope MessageAttributes does not support nested filter policy"


class Subscriber:
    """An HTTP endpoint run by the test: records every POST, answers with `status`."""

    def __init__(self, status=200, port=0):
        self.status = status
        self.requests = []
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers["Content-Length"])).decode()
                outer.requests.append(({k.lower(): v for k, v in self.headers.items()}, body))
                self.send_response(outer.status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", port), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"

    def wait(self, count, timeout=10):
        deadline = time.monotonic() + timeout
        while len(self.requests) < count and time.monotonic() < deadline:
            time.sleep(0.02)
        assert len(self.requests) >= count, f"got {len(self.requests)} requests, wanted {count}"
        return self.requests

    def close(self):
        self.server.shutdown()
        self.server.server_close()


def test_http_subscriber_confirms_and_receives(sns):
    subscriber = Subscriber()
    try:
        topic = sns.create_topic(Name="webhooks")["TopicArn"]
        sub = sns.subscribe(TopicArn=topic, Protocol="http", Endpoint=subscriber.url,
                            ReturnSubscriptionArn=True)["SubscriptionArn"]
        [(headers, body)] = subscriber.wait(1)
        confirmation = json.loads(body)
        assert headers["x-amz-sns-message-type"] == "SubscriptionConfirmation"
        assert headers["x-amz-sns-topic-arn"] == topic
        assert confirmation["Type"] == "SubscriptionConfirmation" and confirmation["Token"]
        verify_signature(confirmation)
        assert sns.publish(TopicArn=topic, Message="before confirming")
        time.sleep(0.3)
        assert len(subscriber.requests) == 1, "nothing is delivered to an unconfirmed endpoint"
        urllib.request.urlopen(confirmation["SubscribeURL"], timeout=10).read()
        assert sns.get_subscription_attributes(SubscriptionArn=sub)["Attributes"]["PendingConfirmation"] == "false"
        published = sns.publish(TopicArn=topic, Message="after confirming", Subject="hi")
        headers, body = subscriber.wait(2)[1]
        notification = json.loads(body)
        assert headers["x-amz-sns-message-type"] == "Notification"
        assert headers["x-amz-sns-message-id"] == published["MessageId"]
        assert headers["x-amz-sns-subscription-arn"] == sub
        assert headers["content-type"].startswith("text/plain")
        assert notification["Message"] == "after confirming" and notification["Subject"] == "hi"
        verify_signature(notification)
        sns.set_subscription_attributes(SubscriptionArn=sub, AttributeName="RawMessageDelivery", AttributeValue="true")
        sns.publish(TopicArn=topic, Message="raw body")
        headers, body = subscriber.wait(3)[2]
        assert body == "raw body" and headers["x-amz-sns-rawdelivery"] == "true"
        # ConfirmSubscription with a wrong token.
        assert error(lambda: sns.confirm_subscription(TopicArn=topic, Token="nope"))[0] == "InvalidParameter"
        # Unsubscribing tells the endpoint, signed.
        sns.unsubscribe(SubscriptionArn=sub)
        headers, body = subscriber.wait(4)[3]
        farewell = json.loads(body)
        assert headers["x-amz-sns-message-type"] == "UnsubscribeConfirmation"
        assert farewell["Type"] == "UnsubscribeConfirmation" and sub in farewell["Message"]
        verify_signature(farewell)
        assert sub not in [s["SubscriptionArn"] for s in sns.list_subscriptions_by_topic(TopicArn=topic)["Subscriptions"]]
        # Its SubscribeURL restores the subscription, confirmed, with its attributes.
        urllib.request.urlopen(farewell["SubscribeURL"], timeout=10).read()
        restored = sns.get_subscription_attributes(SubscriptionArn=sub)["Attributes"]
        assert restored["PendingConfirmation"] == "false" and restored["RawMessageDelivery"] == "true"
        sns.publish(TopicArn=topic, Message="back again")
        headers, body = subscriber.wait(5)[4]
        assert body == "back again"
        # Confirming with the token again changes nothing.
        assert sns.confirm_subscription(TopicArn=topic, Token=farewell["Token"])["SubscriptionArn"] == sub
    finally:
        subscriber.close()


def test_failing_http_subscriber_goes_to_the_dead_letter_queue(stratus, sns, sqs):
    subscriber = Subscriber(status=500)
    try:
        topic = sns.create_topic(Name="flaky")["TopicArn"]
        dlq_url, dlq_arn = queue(sqs, "flaky-dlq")
        policy = {"healthyRetryPolicy": {"numRetries": 2, "minDelayTarget": 1, "maxDelayTarget": 1,
                                         "numNoDelayRetries": 0, "backoffFunction": "linear"}}
        sub = sns.subscribe(TopicArn=topic, Protocol="http", Endpoint=subscriber.url, ReturnSubscriptionArn=True,
                            Attributes={"DeliveryPolicy": json.dumps(policy),
                                        "RedrivePolicy": json.dumps({"deadLetterTargetArn": dlq_arn})})["SubscriptionArn"]
        token = json.loads(subscriber.wait(1)[0][1])["Token"]
        sns.confirm_subscription(TopicArn=topic, Token=token)
        effective = json.loads(sns.get_subscription_attributes(SubscriptionArn=sub)["Attributes"]["EffectiveDeliveryPolicy"])
        assert effective["healthyRetryPolicy"]["numRetries"] == 2
        started = time.monotonic()
        published = sns.publish(TopicArn=topic, Message="doomed")
        [dead] = receive_all(sqs, dlq_url, 1, timeout=15)
        assert time.monotonic() - started >= 1.9, "two retries a second apart come first"
        notifications = [h for h, _ in subscriber.requests if h["x-amz-sns-message-type"] == "Notification"]
        assert len(notifications) == 3, "the first attempt and two retries"
        envelope = json.loads(dead["Body"])
        assert envelope["Message"] == "doomed" and envelope["MessageId"] == published["MessageId"]
        assert dead["MessageAttributes"]["ErrorMessage"]["StringValue"] == "HTTP 500"
        [trace] = [m for m in get_json(f"{stratus.url}/_stratus/sns?topic={topic}")["messages"]
                   if m["messageId"] == published["MessageId"]]
        delivery = trace["deliveries"][0]
        assert delivery["status"] == "dead-lettered" and len(delivery["attempts"]) == 3
    finally:
        subscriber.close()


@pytest.mark.parametrize("raw", [False, True])
def test_missing_queue_goes_to_the_dead_letter_queue(sns, sqs, raw):
    # A raw notification for one queue is delivered by Publish itself; when that fails it goes
    # the outbox's way, to the dead-letter queue, as an enveloped one does.
    topic = sns.create_topic(Name=f"orphan-{raw}")["TopicArn"]
    url, arn = queue(sqs, f"soon-gone-{raw}")
    dlq_url, dlq_arn = queue(sqs, f"orphan-dlq-{raw}")
    sns.subscribe(TopicArn=topic, Protocol="sqs", Endpoint=arn, Attributes={
        "RedrivePolicy": json.dumps({"deadLetterTargetArn": dlq_arn}), "RawMessageDelivery": str(raw).lower()})
    sqs.delete_queue(QueueUrl=url)
    sns.publish(TopicArn=topic, Message="nowhere to go")
    [dead] = receive_all(sqs, dlq_url, 1)
    assert (dead["Body"] if raw else json.loads(dead["Body"])["Message"]) == "nowhere to go"


def test_queue_policy_is_respected(sns, sqs):
    topic = sns.create_topic(Name="guarded")["TopicArn"]
    url, arn = queue(sqs, "guarded-q")
    other_topic = sns.create_topic(Name="other")["TopicArn"]
    policy = {"Version": "2012-10-17", "Statement": [{
        "Effect": "Allow", "Principal": {"Service": "sns.amazonaws.com"}, "Action": "sqs:SendMessage",
        "Resource": arn, "Condition": {"ArnEquals": {"aws:SourceArn": topic}}}]}
    sqs.set_queue_attributes(QueueUrl=url, Attributes={"Policy": json.dumps(policy)})
    for t in [topic, other_topic]:
        sns.subscribe(TopicArn=t, Protocol="sqs", Endpoint=arn, Attributes={"RawMessageDelivery": "true"})
    sns.publish(TopicArn=other_topic, Message="denied")
    sns.publish(TopicArn=topic, Message="allowed")
    bodies = [m["Body"] for m in receive_all(sqs, url, 2, timeout=3)]
    assert bodies == ["allowed"]


def test_outbox_for_email_sms_and_lambda(stratus, sns):
    topic = sns.create_topic(Name="notify")["TopicArn"]
    requests_before = get_json(f"{stratus.url}/_stratus/sns/outbox")["messages"]
    assert requests_before == []
    sns.subscribe(TopicArn=topic, Protocol="email", Endpoint="dev@example.com")
    sns.subscribe(TopicArn=topic, Protocol="sms", Endpoint="+15555550100")
    sns.subscribe(TopicArn=topic, Protocol="lambda", Endpoint="arn:aws:lambda:us-east-1:000000000000:function:f")
    [confirmation] = outbox(stratus, 1, "protocol=email")
    assert confirmation["source"] == "SubscriptionConfirmation" and confirmation["endpoint"] == "dev@example.com"
    subscribe_url = confirmation["body"].split()[-1]
    urllib.request.urlopen(subscribe_url, timeout=10).read()
    sns.publish(TopicArn=topic, Message="your order shipped", Subject="Shipping")
    mails = outbox(stratus, 4, f"topic={urllib.parse.quote(topic)}")
    by_protocol = {m["protocol"]: m for m in mails if m["source"] == "Notification"}
    assert by_protocol["email"]["body"] == "your order shipped" and by_protocol["email"]["subject"] == "Shipping"
    assert by_protocol["sms"]["body"] == "your order shipped"
    event = json.loads(by_protocol["lambda"]["body"])
    assert event["Records"][0]["EventSource"] == "aws:sns"
    assert event["Records"][0]["Sns"]["Message"] == "your order shipped"
    # A direct SMS.
    sns.publish(PhoneNumber="+15555550123", Message="code 1234")
    direct = outbox(stratus, 1, "endpoint=%2B15555550123")
    assert [m["body"] for m in direct] == ["code 1234"]
    urllib.request.urlopen(urllib.request.Request(f"{stratus.url}/_stratus/sns/outbox", method="DELETE")).read()
    assert get_json(f"{stratus.url}/_stratus/sns/outbox")["messages"] == []


def test_sms_sandbox(stratus, sns):
    assert sns.get_sms_sandbox_account_status()["IsInSandbox"] is True
    sns.create_sms_sandbox_phone_number(PhoneNumber="+15555550199")
    assert sns.list_sms_sandbox_phone_numbers()["PhoneNumbers"] == [{"PhoneNumber": "+15555550199", "Status": "Pending"}]
    [otp_message] = outbox(stratus, 1, "protocol=sms")
    password = otp_message["body"].split()[-1]
    assert error(lambda: sns.verify_sms_sandbox_phone_number(PhoneNumber="+15555550199", OneTimePassword="000000x"))[0] \
        == "VerificationException"
    sns.verify_sms_sandbox_phone_number(PhoneNumber="+15555550199", OneTimePassword=password)
    assert sns.list_sms_sandbox_phone_numbers()["PhoneNumbers"][0]["Status"] == "Verified"
    sns.delete_sms_sandbox_phone_number(PhoneNumber="+15555550199")
    assert sns.list_sms_sandbox_phone_numbers()["PhoneNumbers"] == []
    assert error(lambda: sns.delete_sms_sandbox_phone_number(PhoneNumber="+15555550199"))[0] == "ResourceNotFound"
    sns.set_sms_attributes(attributes={"DefaultSMSType": "Transactional"})
    assert sns.get_sms_attributes()["attributes"] == {"DefaultSMSType": "Transactional"}
    assert error(lambda: sns.set_sms_attributes(attributes={"Bogus": "x"}))[0] == "InvalidParameter"


def test_tags_permissions_and_data_protection(stratus, sns):
    topic = sns.create_topic(Name="shared", Tags=[{"Key": "team", "Value": "core"}])["TopicArn"]
    sns.tag_resource(ResourceArn=topic, Tags=[{"Key": "env", "Value": "dev"}])
    assert sorted((t["Key"], t["Value"]) for t in sns.list_tags_for_resource(ResourceArn=topic)["Tags"]) == [
        ("env", "dev"), ("team", "core")]
    sns.untag_resource(ResourceArn=topic, TagKeys=["team"])
    assert sns.list_tags_for_resource(ResourceArn=topic)["Tags"] == [{"Key": "env", "Value": "dev"}]
    assert error(lambda: sns.list_tags_for_resource(ResourceArn=topic + "x"))[0] == "ResourceNotFound"
    too_many = [{"Key": f"k{i}", "Value": "v"} for i in range(51)]
    assert error(lambda: sns.tag_resource(ResourceArn=topic, Tags=too_many))[0] == "TagLimitExceeded"
    stranger = stratus.client("sns", aws_access_key_id="111111111111")
    code, message = error(lambda: stranger.publish(TopicArn=topic, Message="hi"))
    assert code == "AuthorizationError" and "111111111111" in message
    sns.add_permission(TopicArn=topic, Label="let-them-publish", AWSAccountId=["111111111111"], ActionName=["Publish"])
    assert stranger.publish(TopicArn=topic, Message="hi")["MessageId"]
    assert error(lambda: stranger.delete_topic(TopicArn=topic))[0] == "AuthorizationError"
    assert error(lambda: sns.add_permission(TopicArn=topic, Label="let-them-publish", AWSAccountId=["1"],
                                            ActionName=["Publish"]))[0] == "InvalidParameter"
    sns.remove_permission(TopicArn=topic, Label="let-them-publish")
    assert error(lambda: stranger.publish(TopicArn=topic, Message="hi"))[0] == "AuthorizationError"
    policy = {"Name": "p", "Version": "2021-06-01", "Statement": [{"Sid": "audit", "DataDirection": "Inbound",
              "Principal": ["*"], "DataIdentifier": ["arn:aws:dataprotection::aws:data-identifier/EmailAddress"],
              "Operation": {"Audit": {"SampleRate": "99", "FindingsDestination": {}}}}]}
    sns.put_data_protection_policy(ResourceArn=topic, DataProtectionPolicy=json.dumps(policy))
    assert json.loads(sns.get_data_protection_policy(ResourceArn=topic)["DataProtectionPolicy"]) == policy
    assert error(lambda: sns.put_data_protection_policy(ResourceArn=topic, DataProtectionPolicy="{}"))[0] == "InvalidParameter"


def test_awscli(stratus):
    arn = json.loads(stratus.aws("sns", "create-topic", "--name", "cli-topic").stdout)["TopicArn"]
    assert arn.endswith(":cli-topic")
    listed = json.loads(stratus.aws("sns", "list-topics").stdout)["Topics"]
    assert {"TopicArn": arn} in listed
    out = json.loads(stratus.aws("sns", "publish", "--topic-arn", arn, "--message", "from the cli").stdout)
    assert out["MessageId"]
    result = stratus.aws("sns", "get-topic-attributes", "--topic-arn", arn + "-nope", check=False)
    assert result.returncode != 0 and "NotFound" in result.stderr


def test_https_endpoint_needs_a_trusted_certificate(stratus, sns, tmp_path):
    """Delivery to https endpoints goes through TLS and, as in AWS, refuses an untrusted
    (here self-signed) certificate: the attempt is recorded with the TLS failure."""
    import datetime
    import ssl

    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.timezone.utc)
    certificate = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
                   .serial_number(1).not_valid_before(now).not_valid_after(now + datetime.timedelta(days=1))
                   .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False)
                   .sign(key, hashes.SHA256()))
    (tmp_path / "cert.pem").write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    (tmp_path / "key.pem").write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                         serialization.NoEncryption()))
    subscriber = Subscriber()
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(tmp_path / "cert.pem", tmp_path / "key.pem")
    subscriber.server.socket = context.wrap_socket(subscriber.server.socket, server_side=True)
    try:
        topic = sns.create_topic(Name="secure")["TopicArn"]
        endpoint = subscriber.url.replace("http://127.0.0.1", "https://localhost")
        sns.subscribe(TopicArn=topic, Protocol="https", Endpoint=endpoint)
        deadline = time.monotonic() + 10
        attempts = []
        while not attempts and time.monotonic() < deadline:
            [trace] = get_json(f"{stratus.url}/_stratus/sns?topic={topic}")["messages"]
            attempts = trace["deliveries"][0]["attempts"]
            time.sleep(0.02)
        assert trace["type"] == "SubscriptionConfirmation"
        assert "certificate" in attempts[0]["outcome"], attempts
        assert subscriber.requests == []
    finally:
        subscriber.close()


def test_queue_of_another_account_confirms_through_the_queue(stratus, sns):
    """A queue owned by another account must confirm: the SubscriptionConfirmation arrives in the
    queue (its policy lets the topic send), and ConfirmSubscription with its token starts delivery."""
    topic = sns.create_topic(Name="shared-out")["TopicArn"]
    other_sqs = stratus.client("sqs", aws_access_key_id="111111111111")
    url, arn = queue(other_sqs, "inbox")
    policy = {"Statement": [{"Effect": "Allow", "Principal": {"Service": "sns.amazonaws.com"},
                             "Action": "sqs:SendMessage", "Resource": arn,
                             "Condition": {"ArnEquals": {"aws:SourceArn": topic}}}]}
    other_sqs.set_queue_attributes(QueueUrl=url, Attributes={"Policy": json.dumps(policy)})
    sub = sns.subscribe(TopicArn=topic, Protocol="sqs", Endpoint=arn, ReturnSubscriptionArn=True)["SubscriptionArn"]
    assert sns.get_subscription_attributes(SubscriptionArn=sub)["Attributes"]["PendingConfirmation"] == "true"
    [confirmation] = [json.loads(m["Body"]) for m in receive_all(other_sqs, url, 1)]
    assert confirmation["Type"] == "SubscriptionConfirmation"
    verify_signature(confirmation)
    sns.publish(TopicArn=topic, Message="not yet")
    sns.confirm_subscription(TopicArn=topic, Token=confirmation["Token"])
    sns.publish(TopicArn=topic, Message="now")
    assert [json.loads(m["Body"])["Message"] for m in receive_all(other_sqs, url, 2, timeout=3)] == ["now"]
