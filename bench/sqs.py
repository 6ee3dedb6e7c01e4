#!/usr/bin/env python3
"""SQS benchmark: Stratus (durable; durable with the disk synced every 100 ms; --ephemeral) beside its peers, in one run, under the same load
generators (bench/latency.c, which times each request on its own, for sends and receive latency;
wrk with bench/wrk/sqs_receive_delete.lua for receive+delete, whose requests depend on the answers
before them), plus what a boto3 user sees.

    python3 bench/sqs.py [--seconds 5] [--rounds 1] [--peers stratus,stratus-fsync-100ms,stratus-ephemeral,fakecloud,moto,localstack]

Peers are found as follows, and skipped (with a note) when absent:
  fakecloud   FAKECLOUD_BIN, default /tmp/peers/fc-target/release/fakecloud (build it as
              ../shared/reference/peers.md says, outside this repository; AGPL: run it, never read it)
  moto        MOTO_SERVER, default `moto_server` on PATH
  localstack  LOCALSTACK_PYTHON: a Python with localstack-core installed (see peers.md)

Scenarios: SendMessage, SendMessageBatch of 10, ReceiveMessage(10)+DeleteMessageBatch, each at 1
and 16 connections (two client threads at 16, as `wrk -t2`); then ReceiveMessage latency (10 messages, VisibilityTimeout 0, so the depth
stays put; one connection, each request timed on its own by bench/latency.c) at queue depths of 100, 5,000 and 250,000; then 300 sequential
boto3 SendMessage calls.
"""
import json
import time

from common import Connection, latency, main, print_table, wrk
AUTH = "AWS4-HMAC-SHA256 Credential=test/20260101/us-east-1/sqs/aws4_request, SignedHeaders=host, Signature=0"
BODY = "hello from wrk, a message of about a hundred bytes, which is what small events look like."


def headers(operation):
    """A JSON-protocol request's headers, as boto3 sends them."""
    return {"Content-Type": "application/x-amz-json-1.0", "X-Amz-Target": f"AmazonSQS.{operation}",
            "x-amzn-query-mode": "true", "Authorization": AUTH}


class Client:
    """SQS JSON-protocol calls over one keep-alive connection."""

    def __init__(self, port):
        self.port = port
        self.connection = Connection(port)

    def call(self, operation, payload):
        self.connection.request("POST", "/", body=json.dumps(payload), headers=headers(operation))
        response = self.connection.getresponse()
        body = response.read()
        if response.status != 200:
            raise RuntimeError(f"{operation}: {response.status} {body[:200]!r}")
        return json.loads(body or b"{}")

    def queue(self, name):
        return self.call("CreateQueue", {"QueueName": name})["QueueUrl"]


def fill(client, url, count, budget_s):
    """Sends `count` messages in batches of 10; gives up (returns False) past the time budget."""
    started = time.monotonic()
    entries = [{"Id": f"m{i}", "MessageBody": BODY} for i in range(10)]
    for sent in range(0, count, 10):
        client.call("SendMessageBatch", {"QueueUrl": url, "Entries": entries[: min(10, count - sent)]})
        if time.monotonic() - started > budget_s:
            return False
    return True


def request(port, operation, payload):
    """A pre-built JSON-protocol request, for bench/latency.c."""
    body = json.dumps(payload)
    lines = "".join(f"{name}: {value}\r\n" for name, value in headers(operation).items())
    return (f"POST / HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n{lines}"
            f"Content-Length: {len(body)}\r\n\r\n{body}").encode()


def sends(port, url, connections, seconds, batch=False):
    """SendMessage (or SendMessageBatch of 10) at `connections` connections, each request timed on
    its own (common.latency)."""
    if batch:
        entries = [{"Id": f"m{i}", "MessageBody": BODY} for i in range(10)]
        m = latency(port, request(port, "SendMessageBatch", {"QueueUrl": url, "Entries": entries}), seconds,
                    needle='"MD5OfMessageBody"', count=10, connections=connections)
    else:
        m = latency(port, request(port, "SendMessage", {"QueueUrl": url, "MessageBody": BODY}), seconds,
                    connections=connections)
    assert m["short"] == 0, f"a batch was only partly sent: {m}"
    return m


def receive_latency(port, url, seconds):
    """ReceiveMessage of 10 at one connection for `seconds`, each request timed on its own
    (common.latency): wrk's percentiles weigh a stall by its length, and a Python client's own
    pauses (a few over 1.6 ms in 5,000 calls, while the server's histogram had them all under
    0.4 ms) would be the p99 measured."""
    payload = {"QueueUrl": url, "MaxNumberOfMessages": 10, "VisibilityTimeout": 0}
    m = latency(port, request(port, "ReceiveMessage", payload), seconds, needle='"ReceiptHandle"', count=10)
    assert m["short"] == 0 and not m["errors"], f"the queue ran dry or failed: {m}"
    return m["p50_ms"], m["p99_ms"], m["requests"], m["p999_ms"]


def boto3_sends(port, calls=300):
    import boto3
    client = boto3.client("sqs", endpoint_url=f"http://127.0.0.1:{port}", region_name="us-east-1",
                          aws_access_key_id="test", aws_secret_access_key="test")
    url = client.create_queue(QueueName="boto3")["QueueUrl"]
    began = time.perf_counter()
    for _ in range(calls):
        client.send_message(QueueUrl=url, MessageBody=BODY)
    return calls / (time.perf_counter() - began)


def scenarios(port, seconds):
    """Every scenario against one running peer, a step at a time (see common.run_peers): a result
    for each."""
    client = Client(port)
    r = {}
    send = client.queue("send")
    batch = client.queue("batch")
    r["send c1"] = sends(port, send, 1, seconds)
    yield
    r["send c16"] = sends(port, send, 16, seconds)
    yield
    r["batch c1"] = sends(port, batch, 1, seconds, batch=True)
    yield
    r["batch c16"] = sends(port, batch, 16, seconds, batch=True)
    yield
    # The batch queue now holds what the batch runs sent: receive and delete from it.
    r["recv+del c1"] = wrk("sqs_receive_delete.lua", port, {"QUEUE_URL": batch}, 1, seconds)
    yield
    r["recv+del c16"] = wrk("sqs_receive_delete.lua", port, {"QUEUE_URL": batch}, 16, seconds)
    yield
    depth = client.queue("depth")
    filled = 0
    for target in (100, 5000, 250_000):
        if fill(client, depth, target - filled, budget_s=60):
            filled = target
            yield
            r[f"depth {target}"] = receive_latency(port, depth, seconds)
            yield
        else:
            r[f"depth {target}"] = None
            break
    r["boto3 send/s"] = boto3_sends(port)
    return r


def report(results):
    names = list(results)
    rows = []
    for key, unit in [("send c1", "req/s"), ("send c16", "req/s"), ("batch c1", "msg/s"), ("batch c16", "msg/s"),
                      ("recv+del c1", "msg/s"), ("recv+del c16", "msg/s")]:
        cells = []
        for name in names:
            m = results[name][key]
            value = m["deleted_per_s"] if key.startswith("recv") else m["rps"] * (10 if key.startswith("batch") else 1)
            cells.append((value, f"{value:,.0f} (p99 {m['p99_ms']:.1f} ms{', ' + str(m['errors']) + ' errors' if m['errors'] else ''})"))
        rows.append((f"{key} {unit}", cells))
    for depth in (100, 5000, 250_000):
        cells = []
        for name in names:
            m = results[name].get(f"depth {depth}")
            cells.append((None, "not filled in 60 s" if m is None else f"p50 {m[0]:.2f} / p99 {m[1]:.2f} / p999 {m[3]:.2f} ms ({m[2]:,} calls)"))
        rows.append((f"receive at depth {depth:,}", cells))
    rows.append(("boto3 SendMessage/s (1 thread)", [(results[n]["boto3 send/s"], f"{results[n]['boto3 send/s']:,.0f}") for n in names]))
    rows.append(("RSS at the end, MiB", [(None, f"{results[n]['rss_mib']:.0f}") for n in names]))
    print_table(names, rows)


if __name__ == "__main__":
    main("sqs", "sqs", scenarios, report)
