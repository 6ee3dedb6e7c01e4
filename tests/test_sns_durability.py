"""SNS state across a clean restart, and the outbox across kill -9: a message acknowledged by
Publish is delivered even if Stratus dies before delivering it."""

import json
import signal
import time
from collections import Counter

from test_sns import Subscriber, queue, receive_all, verify_signature


def test_restart_keeps_topics_subscriptions_and_the_signing_key(start_stratus):
    first = start_stratus("first")
    sns, sqs = first.client("sns"), first.client("sqs")
    topic = sns.create_topic(Name="kept", Attributes={"DisplayName": "Kept"}, Tags=[{"Key": "k", "Value": "v"}])["TopicArn"]
    fifo = sns.create_topic(Name="kept.fifo", Attributes={"FifoTopic": "true", "ContentBasedDeduplication": "true"})["TopicArn"]
    url, arn = queue(sqs, "kept-q")
    sub = sns.subscribe(TopicArn=topic, Protocol="sqs", Endpoint=arn,
                        Attributes={"FilterPolicy": json.dumps({"keep": ["yes"]})})["SubscriptionArn"]
    sns.publish(TopicArn=topic, Message="before", MessageAttributes={"keep": {"DataType": "String", "StringValue": "yes"}})
    before = json.loads(receive_all(sqs, url, 1)[0]["Body"])
    first_sequence = int(sns.publish(TopicArn=fifo, Message="m", MessageGroupId="g")["SequenceNumber"])
    assert first.stop() == 0

    second = start_stratus("second", args=("--data-dir", str(first.data_dir)))
    sns, sqs = second.client("sns"), second.client("sqs")
    assert sns.get_topic_attributes(TopicArn=topic)["Attributes"]["DisplayName"] == "Kept"
    assert sns.list_tags_for_resource(ResourceArn=topic)["Tags"] == [{"Key": "k", "Value": "v"}]
    assert sns.get_subscription_attributes(SubscriptionArn=sub)["Attributes"]["FilterPolicy"] == json.dumps({"keep": ["yes"]})
    sns.publish(TopicArn=topic, Message="filtered", MessageAttributes={"keep": {"DataType": "String", "StringValue": "no"}})
    sns.publish(TopicArn=topic, Message="after", MessageAttributes={"keep": {"DataType": "String", "StringValue": "yes"}})
    [after] = [json.loads(m["Body"]) for m in receive_all(sqs, url, 2, timeout=3)]
    assert after["Message"] == "after"
    verify_signature(after)
    # The same key signs after the restart: the certificate served now verifies the old message too.
    verify_signature({**before, "SigningCertURL": after["SigningCertURL"]})
    again = sns.publish(TopicArn=fifo, Message="m", MessageGroupId="g")
    assert int(again["SequenceNumber"]) == first_sequence, "the deduplication window survives the restart"
    assert int(sns.publish(TopicArn=fifo, Message="m2", MessageGroupId="g")["SequenceNumber"]) > first_sequence


def test_kill_9_before_http_delivery_then_delivery_completes(start_stratus):
    subscriber = Subscriber()
    port = subscriber.server.server_address[1]
    first = start_stratus("first")
    sns = first.client("sns")
    topic = sns.create_topic(Name="durable")["TopicArn"]
    policy = {"healthyRetryPolicy": {"numRetries": 50, "minDelayTarget": 1, "maxDelayTarget": 1}}
    sns.subscribe(TopicArn=topic, Protocol="http", Endpoint=subscriber.url, Attributes={"DeliveryPolicy": json.dumps(policy)})
    token = json.loads(subscriber.wait(1)[0][1])["Token"]
    sns.confirm_subscription(TopicArn=topic, Token=token)
    subscriber.close()  # the endpoint is down: deliveries fail and wait for their retry
    published = {sns.publish(TopicArn=topic, Message=f"m{i}")["MessageId"] for i in range(5)}
    time.sleep(0.3)
    first.stop(sig=signal.SIGKILL)

    subscriber = Subscriber(port=port)
    try:
        start_stratus("second", args=("--data-dir", str(first.data_dir)))
        requests = subscriber.wait(5, timeout=15)
        delivered = {json.loads(body)["MessageId"] for _, body in requests}
        assert delivered == published
    finally:
        subscriber.close()


def publish_then_kill_9(server, topic):
    """Publishes from four threads until `server` is killed with SIGKILL; the acknowledged bodies."""
    def worker(n):
        client = server.client("sns")

        def publish(i):
            client.publish(TopicArn=topic, Message=f"{n}-{i}")
            return f"{n}-{i}"

        return publish

    acked = set(server.kill_9_under_load(worker, threads=4, calls=1000, after=1500))
    assert len(acked) >= 500, f"only {len(acked)} publishes were acknowledged before the kill"
    return acked


def test_kill_9_during_fan_out_loses_no_acknowledged_message(start_stratus):
    first = start_stratus("first")
    sns, sqs = first.client("sns"), first.client("sqs")
    topic = sns.create_topic(Name="crash")["TopicArn"]
    queues = []
    for name in ["crash-a", "crash-b"]:
        url, arn = queue(sqs, name)
        sns.subscribe(TopicArn=topic, Protocol="sqs", Endpoint=arn, Attributes={"RawMessageDelivery": "true"})
        queues.append(url)
    acked = publish_then_kill_9(first, topic)

    second = start_stratus("second", args=("--data-dir", str(first.data_dir)))
    sqs = second.client("sqs")
    for url in queues:
        bodies = set()
        deadline = time.monotonic() + 30
        while not acked <= bodies and time.monotonic() < deadline:
            got = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=1).get("Messages", [])
            bodies.update(m["Body"] for m in got)
            if got:
                sqs.delete_message_batch(QueueUrl=url, Entries=[
                    {"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(got)])
        missing = acked - bodies
        assert not missing, f"{len(missing)} of {len(acked)} acknowledged messages never reached {url}"


def test_kill_9_during_delivery_to_a_single_queue_delivers_each_message_once(start_stratus):
    """A message whose only subscription is a queue leaves the outbox in the same transaction
    that puts it in the queue, so a crash can neither lose it nor deliver it twice."""
    first = start_stratus("first")
    sns, sqs = first.client("sns"), first.client("sqs")
    topic = sns.create_topic(Name="once")["TopicArn"]
    url, arn = queue(sqs, "once-q")
    sns.subscribe(TopicArn=topic, Protocol="sqs", Endpoint=arn, Attributes={"RawMessageDelivery": "true"})

    acked = publish_then_kill_9(first, topic)

    second = start_stratus("second", args=("--data-dir", str(first.data_dir)))
    sqs = second.client("sqs")
    bodies = []
    deadline = time.monotonic() + 30
    last_arrival = time.monotonic()
    # Until every acknowledged message is in and nothing more arrives for a second.
    while time.monotonic() < deadline:
        got = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10).get("Messages", [])
        if got:
            bodies.extend(m["Body"] for m in got)
            last_arrival = time.monotonic()
            sqs.delete_message_batch(QueueUrl=url, Entries=[
                {"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(got)])
        elif acked <= set(bodies) and time.monotonic() - last_arrival > 1:
            break
        else:
            time.sleep(0.05)
    missing = acked - set(bodies)
    assert not missing, f"{len(missing)} of {len(acked)} acknowledged messages never arrived"
    twice = [body for body, count in Counter(bodies).items() if count > 1]
    assert not twice, f"{len(twice)} messages were delivered twice, e.g. {twice[:3]}"
