#!/usr/bin/env python3
"""SNS benchmark: Stratus (durable; durable with the disk synced every 100 ms; --ephemeral) beside its peers, in one run, under one load
generator (bench/latency.c, a query-protocol Publish as boto3 sends it, each request timed on its own).

    python3 bench/sns.py [--seconds 5] [--rounds 1] [--peers stratus,stratus-fsync-100ms,stratus-ephemeral,fakecloud,moto,localstack]

Peers are found as bench/sqs.py says. For 1 and 10 SQS subscriptions (enveloped, so signed, delivery):
  - Publish throughput at 1 and 16 connections;
  - publish-to-visible latency: a long-polling receiver on each subscribed queue (a connection
    each, in one asyncio loop); the time from sending a Publish until the last receiver has it
    (200 samples);
and Publish throughput with one subscription that takes raw delivery (nothing to sign).
"""
import asyncio
import json
import os
import re
import statistics
import tempfile
import time
import urllib.parse

from common import Connection, latency, main, print_table

SCOPE = "AWS4-HMAC-SHA256 Credential=test/20260101/us-east-1/{}/aws4_request, SignedHeaders=host, Signature=0"
MESSAGE = "hello from wrk, a message of about a hundred bytes, which is what small events look like."


class Client:
    """SNS (query protocol) and SQS (JSON protocol) calls over one keep-alive connection."""

    def __init__(self, port):
        self.connection = Connection(port)

    def _send(self, body, headers):
        self.connection.request("POST", "/", body=body, headers=headers)
        response = self.connection.getresponse()
        data = response.read()
        if response.status != 200:
            raise RuntimeError(f"{response.status} {data[:300]!r}")
        return data

    def sns(self, action, **params):
        body = urllib.parse.urlencode({"Action": action, "Version": "2010-03-31", **params})
        return self._send(body, {"Content-Type": "application/x-www-form-urlencoded", "Authorization": SCOPE.format("sns")}).decode()

    def sqs(self, operation, payload):
        headers = {"Content-Type": "application/x-amz-json-1.0", "X-Amz-Target": f"AmazonSQS.{operation}",
                   "x-amzn-query-mode": "true", "Authorization": SCOPE.format("sqs")}
        return json.loads(self._send(json.dumps(payload), headers) or b"{}")

    def topic_with_queues(self, name, subscriptions, raw=False):
        topic = self.sns("CreateTopic", Name=name).split("<TopicArn>")[1].split("</TopicArn>")[0]
        urls = []
        for i in range(subscriptions):
            url = self.sqs("CreateQueue", {"QueueName": f"{name}-{i}"})["QueueUrl"]
            arn = self.sqs("GetQueueAttributes", {"QueueUrl": url, "AttributeNames": ["QueueArn"]})["Attributes"]["QueueArn"]
            attributes = {"Attributes.entry.1.key": "RawMessageDelivery", "Attributes.entry.1.value": "true"} if raw else {}
            self.sns("Subscribe", TopicArn=topic, Protocol="sqs", Endpoint=arn, **attributes)
            urls.append(url)
        return topic, urls


def depth(client, urls):
    total = 0
    for url in urls:
        attributes = client.sqs("GetQueueAttributes", {"QueueUrl": url, "AttributeNames": ["ApproximateNumberOfMessages"]})
        total += int(attributes["Attributes"]["ApproximateNumberOfMessages"])
    return total


def publish_load(client, port, topic, urls, connections, seconds):
    """The Publish rate (common.latency: every request timed on its own), and the end-to-end
    rate: publishes divided by the time until every one of them is in every subscribed queue (a
    deliverer that falls behind shows here)."""
    body = urllib.parse.urlencode({"Action": "Publish", "Version": "2010-03-31", "TopicArn": topic, "Message": MESSAGE})
    request = (f"POST / HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
               f"Content-Type: application/x-www-form-urlencoded; charset=utf-8\r\n"
               f"Authorization: {SCOPE.format('sns')}\r\nContent-Length: {len(body)}\r\n\r\n{body}").encode()
    began = time.monotonic()
    result = latency(port, request, seconds, connections=connections)
    expected = (result["requests"] - result["errors"]) * len(urls)
    deadline = time.monotonic() + 300
    while depth(client, urls) < expected and time.monotonic() < deadline:
        time.sleep(0.05)
    result["delivered_rps"] = (result["requests"] - result["errors"]) / (time.monotonic() - began)
    result["drained"] = time.monotonic() < deadline
    return result


def visible_latency(port, topic, urls, samples=200):
    """A long-polling receiver per queue, each on its own connection, all in one asyncio loop
    (threads would add the GIL's hand-offs to every sample); the time from sending a Publish
    until the last receiver has it. Bodies are searched, not parsed, to keep the client cheap."""
    return asyncio.run(_visible_latency(port, topic, urls, samples))


class AsyncConnection:
    """HTTP/1.1 POSTs over one connection, reopened when the server closes it (moto does)."""

    def __init__(self, port):
        self.port = port
        self.streams = None

    async def call(self, body, headers):
        return await asyncio.wait_for(self._call(body, headers), timeout=30)

    async def _call(self, body, headers):
        if self.streams is None:
            self.streams = await asyncio.open_connection("127.0.0.1", self.port)
        reader, writer = self.streams
        head = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
        writer.write(f"POST / HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: {len(body)}\r\n{head}\r\n".encode() + body)
        status_and_headers = await reader.readuntil(b"\r\n\r\n")
        length = int(re.search(rb"(?i)content-length: *(\d+)", status_and_headers).group(1))
        response = await reader.readexactly(length)
        if re.search(rb"(?i)connection: *close", status_and_headers):
            writer.close()
            self.streams = None
        return response

    def close(self):
        if self.streams:
            self.streams[1].close()


async def _visible_latency(port, topic, urls, samples):
    sqs_headers = {"Content-Type": "application/x-amz-json-1.0", "X-Amz-Target": "AmazonSQS.ReceiveMessage",
                   "x-amzn-query-mode": "true", "Authorization": SCOPE.format("sqs")}
    delete_headers = {**sqs_headers, "X-Amz-Target": "AmazonSQS.DeleteMessageBatch"}
    arrived = {}
    changed = asyncio.Event()
    done = False

    async def receiver(url):
        connection = AsyncConnection(port)
        request = json.dumps({"QueueUrl": url, "WaitTimeSeconds": 1, "MaxNumberOfMessages": 10}).encode()
        while not done:
            body = await connection.call(request, sqs_headers)
            now = time.perf_counter()
            for marker in re.findall(rb"latency-\d+", body):
                arrived.setdefault(marker.decode(), []).append(now)
                changed.set()
            handles = re.findall(rb'"ReceiptHandle":"([^"]+)"', body)
            if handles:
                entries = [{"Id": str(i), "ReceiptHandle": h.decode()} for i, h in enumerate(handles)]
                await connection.call(json.dumps({"QueueUrl": url, "Entries": entries}).encode(), delete_headers)
        connection.close()

    receivers = [asyncio.create_task(receiver(url)) for url in urls]
    publisher = AsyncConnection(port)
    publish_headers = {"Content-Type": "application/x-www-form-urlencoded", "Authorization": SCOPE.format("sns")}
    await asyncio.sleep(0.2)  # every receiver is polling
    times = []
    for i in range(samples):
        marker = f"latency-{i}"
        body = urllib.parse.urlencode({"Action": "Publish", "Version": "2010-03-31", "TopicArn": topic, "Message": marker})
        began = time.perf_counter()
        await publisher.call(body.encode(), publish_headers)
        deadline = began + 30
        while len(arrived.get(marker, [])) < len(urls):
            changed.clear()
            if time.perf_counter() > deadline:
                raise RuntimeError(f"{marker} did not reach every queue")
            try:
                await asyncio.wait_for(changed.wait(), timeout=1)
            except asyncio.TimeoutError:
                pass
        times.append((max(arrived[marker]) - began) * 1000)
        await asyncio.sleep(0.005)  # the receivers delete and poll again
    done = True
    await asyncio.gather(*receivers)
    publisher.close()
    times.sort()
    return statistics.median(times), times[int(len(times) * 0.99) - 1]


def fdatasync_ms(samples=200):
    """The median fdatasync of a 4 KiB rewrite in the temporary directory (where the durable
    peer keeps its data): a durable Publish waits for one, and on this shared machine it moves
    between ~0.1 and ~4 ms with the other work on the disk."""
    with tempfile.NamedTemporaryFile() as file:
        file.write(b"\0" * (1 << 20))
        os.fsync(file.fileno())
        times = []
        for i in range(samples):
            os.pwrite(file.fileno(), b"x" * 4096, (i % 256) * 4096)
            began = time.perf_counter()
            os.fdatasync(file.fileno())
            times.append((time.perf_counter() - began) * 1000)
    return statistics.median(times)


def scenarios(port, seconds):
    """Every scenario against one running peer, a step at a time (see common.run_peers): a result
    for each."""
    client = Client(port)
    r = {"fdatasync_before_ms": fdatasync_ms()}
    for subscriptions in (1, 10):
        for connections in (1, 16):
            topic, urls = client.topic_with_queues(f"load{subscriptions}c{connections}", subscriptions)
            r[f"publish {subscriptions} sub c{connections}"] = publish_load(client, port, topic, urls, connections, seconds)
            yield
        topic, urls = client.topic_with_queues(f"latency{subscriptions}", subscriptions)
        r[f"visible {subscriptions} sub"] = visible_latency(port, topic, urls)
        yield
    # Raw delivery: no envelope, so no RSA signature per message.
    topic, urls = client.topic_with_queues("raw", 1, raw=True)
    r["publish raw c16"] = publish_load(client, port, topic, urls, 16, seconds)
    yield
    r["fdatasync_after_ms"] = fdatasync_ms()
    return r


def publish_cell(m):
    errors = f", {m['errors']} errors" if m["errors"] else ""
    return m["rps"], f"{m['rps']:,.0f} (p99 {m['p99_ms']:.1f} ms{errors})"


def delivered_cell(m):
    return m["delivered_rps"], f"{m['delivered_rps']:,.0f}" + ("" if m["drained"] else " (not drained in 300 s)")


def report(results):
    names = list(results)
    rows = []
    for subscriptions in (1, 10):
        for connections in (1, 16):
            key = f"publish {subscriptions} sub c{connections}"
            rows.append((f"Publish/s, {subscriptions} SQS sub, c{connections}", [publish_cell(results[n][key]) for n in names]))
            rows.append(("  end to end (all delivered)/s", [delivered_cell(results[n][key]) for n in names]))
        cells = []
        for name in names:
            p50, p99 = results[name][f"visible {subscriptions} sub"]
            cells.append((None, f"p50 {p50:.2f} / p99 {p99:.2f} ms"))
        rows.append((f"publish to visible in all {subscriptions}", cells))
    rows.append(("Publish/s, 1 SQS sub, raw delivery, c16", [publish_cell(results[n]["publish raw c16"]) for n in names]))
    rows.append(("  end to end (all delivered)/s", [delivered_cell(results[n]["publish raw c16"]) for n in names]))
    rows.append(("RSS at the end, MiB", [(None, f"{results[n]['rss_mib']:.0f}") for n in names]))
    rows.append(("disk fdatasync p50 before / after, ms", [
        (None, f"{results[n]['fdatasync_before_ms']:.2f} / {results[n]['fdatasync_after_ms']:.2f}") for n in names]))
    print_table(names, rows)


if __name__ == "__main__":
    main("sns", "sqs,sns", scenarios, report)
