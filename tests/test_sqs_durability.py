"""SQS state across a clean restart and across kill -9."""
import signal

import pytest


def test_restart_keeps_queues_messages_and_their_state(start_stratus):
    first = start_stratus("first")
    sqs = first.client("sqs")
    url = sqs.create_queue(QueueName="kept", Attributes={"VisibilityTimeout": "600"}, tags={"k": "v"})["QueueUrl"]
    fifo = sqs.create_queue(QueueName="kept.fifo", Attributes={"FifoQueue": "true", "ContentBasedDeduplication": "true"})["QueueUrl"]
    for body in ["visible", "in-flight"]:
        sqs.send_message(QueueUrl=url, MessageBody=body)
    sqs.send_message(QueueUrl=url, MessageBody="delayed", DelaySeconds=900)
    in_flight = sqs.receive_message(QueueUrl=url)["Messages"][0]
    fifo_sent = sqs.send_message(QueueUrl=fifo, MessageBody="once", MessageGroupId="g")
    gone = sqs.send_message(QueueUrl=fifo, MessageBody="gone", MessageGroupId="h")
    [received] = sqs.receive_message(QueueUrl=fifo, MaxNumberOfMessages=10)["Messages"][1:]
    assert received["Body"] == "gone"
    sqs.delete_message(QueueUrl=fifo, ReceiptHandle=received["ReceiptHandle"])
    assert first.stop() == 0

    second = start_stratus("second", args=("--data-dir", str(first.data_dir)))
    sqs = second.client("sqs")
    url = sqs.get_queue_url(QueueName="kept")["QueueUrl"]
    attributes = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["All"])["Attributes"]
    assert attributes["VisibilityTimeout"] == "600"
    assert (attributes["ApproximateNumberOfMessages"], attributes["ApproximateNumberOfMessagesNotVisible"],
            attributes["ApproximateNumberOfMessagesDelayed"]) == ("1", "1", "1")
    assert sqs.list_queue_tags(QueueUrl=url)["Tags"] == {"k": "v"}
    visible = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, AttributeNames=["All"])["Messages"]
    assert [m["Body"] for m in visible] == list({"visible", "in-flight"} - {in_flight["Body"]})
    # A receipt handle from before the restart still deletes its message.
    sqs.delete_message(QueueUrl=url, ReceiptHandle=in_flight["ReceiptHandle"])
    assert sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["ApproximateNumberOfMessagesNotVisible"])["Attributes"]["ApproximateNumberOfMessagesNotVisible"] == "1"
    fifo = sqs.get_queue_url(QueueName="kept.fifo")["QueueUrl"]
    again = sqs.send_message(QueueUrl=fifo, MessageBody="once", MessageGroupId="g")
    assert again["MessageId"] == fifo_sent["MessageId"], "the deduplication window survives the restart"
    resent = sqs.send_message(QueueUrl=fifo, MessageBody="gone", MessageGroupId="h")
    assert resent["MessageId"] == gone["MessageId"], "also for a message deleted before the restart"


def test_a_fifo_queue_delay_changed_after_sending_holds_across_a_restart(start_stratus):
    """A FIFO queue's delay applies to its queued messages (SQS makes it retroactive): the
    message, stored as delayed by 900 s, is visible after the delay is removed, restart or not."""
    first = start_stratus("first")
    sqs = first.client("sqs")
    url = sqs.create_queue(QueueName="later.fifo", Attributes={"FifoQueue": "true", "ContentBasedDeduplication": "true", "DelaySeconds": "900"})["QueueUrl"]
    sqs.send_message(QueueUrl=url, MessageBody="waiting", MessageGroupId="g")
    sqs.set_queue_attributes(QueueUrl=url, Attributes={"DelaySeconds": "0"})
    assert first.stop() == 0
    second = start_stratus("second", args=("--data-dir", str(first.data_dir)))
    sqs = second.client("sqs")
    assert sqs.receive_message(QueueUrl=url)["Messages"][0]["Body"] == "waiting"


# "1h": acknowledged once written to the store's log, and no background sync comes before the kill.
@pytest.mark.parametrize("fsync", ["always", "1h"])
def test_kill_9_loses_no_acknowledged_message(start_stratus, fsync):
    first = start_stratus("first", args=("--data-dir", None, "--fsync", fsync))
    url = first.client("sqs").create_queue(QueueName="crash")["QueueUrl"]
    def worker(n):
        client = first.client("sqs")

        def send(i):
            body = f"{n}-{i}"
            return client.send_message(QueueUrl=url, MessageBody=body)["MessageId"], body

        return send

    acked = dict(first.kill_9_under_load(worker, threads=8, calls=1250, after=5000))
    assert len(acked) >= 1000, f"only {len(acked)} sends were acknowledged before the kill"

    second = start_stratus("second", args=("--data-dir", str(first.data_dir)))
    sqs = second.client("sqs")
    received = {}
    while True:
        batch = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10).get("Messages", [])
        if not batch:
            break
        for message in batch:
            assert message["MessageId"] not in received, "delivered twice"
            received[message["MessageId"]] = message["Body"]
        sqs.delete_message_batch(QueueUrl=url, Entries=[{"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(batch)])
    missing = [m for m in acked if m not in received]
    assert not missing, f"{len(missing)} of {len(acked)} acknowledged messages were lost"
    assert all(received[m] == body for m, body in acked.items())


# A receive is acknowledged once its records are written to the store's log, before they are
# synced: a kill right after it must still find its messages in flight, with their receive counts.
@pytest.mark.parametrize("fsync", ["always", "1h"])
def test_kill_9_keeps_what_a_receive_took_in_flight(start_stratus, fsync):
    first = start_stratus("first", args=("--data-dir", None, "--fsync", fsync))
    sqs = first.client("sqs")
    url = sqs.create_queue(QueueName="taken", Attributes={"VisibilityTimeout": "600"})["QueueUrl"]
    sqs.send_message_batch(QueueUrl=url, Entries=[{"Id": str(i), "MessageBody": f"m{i}"} for i in range(10)])
    taken = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=4)["Messages"]
    assert len(taken) == 4
    first.stop(sig=signal.SIGKILL)

    second = start_stratus("second", args=("--data-dir", str(first.data_dir)))
    sqs = second.client("sqs")
    counts = sqs.get_queue_attributes(
        QueueUrl=url, AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"]
    )["Attributes"]
    assert (counts["ApproximateNumberOfMessages"], counts["ApproximateNumberOfMessagesNotVisible"]) == ("6", "4")
    rest = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, AttributeNames=["ApproximateReceiveCount"])
    assert {m["Body"] for m in rest["Messages"]} == {f"m{i}" for i in range(10)} - {m["Body"] for m in taken}
    assert {m["Attributes"]["ApproximateReceiveCount"] for m in rest["Messages"]} == {"1"}
    # The receipt handles given out before the kill still delete their messages.
    deleted = sqs.delete_message_batch(
        QueueUrl=url, Entries=[{"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(taken)]
    )
    assert len(deleted["Successful"]) == 4 and not deleted.get("Failed")
