#!/usr/bin/env python3
"""DynamoDB benchmark: Stratus (durable, and --ephemeral) beside its peers, in one run, under one
load generator (wrk with the ddb_*.lua scripts in bench/wrk).

    python3 bench/dynamodb.py [--seconds 5] [--peers stratus,stratus-ephemeral,fakecloud,moto]

Peers are found as bench/sqs.py says. LocalStack is not run by default: its DynamoDB needs
downloads, so offline every CreateTable fails after minutes (../shared/reference/peers.md).

Every table has pk (S) hash and sk (S) range keys, PAY_PER_REQUEST; items are about 170 bytes.
Each wrk run that writes new items starts on an empty table of its own, and every table is
dropped once its scenarios are done; before each wrk run the server is let finish the previous
run's backlog (see settle). Scenarios, each at 1 and 16 connections:
  - PutItem of a new item (random pk of 100, new sk);
  - GetItem of a random item of a table preloaded with pk0..pk99 x sk0..sk99 (10,000 items);
  - Query of a random partition of that table (100 items each);
  - BatchWriteItem of 25 new items;
  - 80% GetItem / 20% PutItem (overwriting) on random items of a preloaded table;
then Query latency (1 connection) on a table of 1,000 items (10 partitions) and one of 100,000
(1,000 partitions), 100 items per partition either way, to show that a Query's cost does not
grow with the table. Tables are loaded with BatchWriteItem from 4 threads, for at most 30 s: the
10k table for the read scenarios must load whole or its rows are left out; a scale table cut short
is queried at the size it reached, and that is shown (with no ratio).

A row with any non-2xx response or socket error is shown as invalid, with no ratio.
"""
import concurrent.futures
import http.client
import json
import threading
import time

from common import Connection, main, print_table, wrk

AUTH = "AWS4-HMAC-SHA256 Credential=test/20260101/us-east-1/dynamodb/aws4_request, SignedHeaders=host, Signature=0"
PAYLOAD = "a value of about a hundred bytes, which is what a small item's attributes look like in practice."
LOAD_BUDGET_S = 30
# wrk's own 2 s would time out moto's Query at 16 connections (each takes ~100 ms, one at a time).
TIMEOUT_S = 30


class Client:
    """DynamoDB JSON 1.0 protocol calls over one keep-alive connection."""

    def __init__(self, port):
        self.port = port
        self.connection = Connection(port)

    def call(self, operation, payload):
        headers = {"Content-Type": "application/x-amz-json-1.0", "X-Amz-Target": f"DynamoDB_20120810.{operation}",
                   "Authorization": AUTH}
        body = json.dumps(payload)
        for attempt in (1, 2):  # the server may close a keep-alive connection (moto does)
            try:
                self.connection.request("POST", "/", body=body, headers=headers)
                response = self.connection.getresponse()
                data = response.read()
                break
            except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError):
                self.connection.close()
                if attempt == 2:
                    raise
        if response.status != 200:
            raise RuntimeError(f"{operation}: {response.status} {data[:300]!r}")
        return json.loads(data or b"{}")

    def table(self, name):
        self.call("CreateTable", {
            "TableName": name, "BillingMode": "PAY_PER_REQUEST",
            "AttributeDefinitions": [{"AttributeName": "pk", "AttributeType": "S"}, {"AttributeName": "sk", "AttributeType": "S"}],
            "KeySchema": [{"AttributeName": "pk", "KeyType": "HASH"}, {"AttributeName": "sk", "KeyType": "RANGE"}]})
        deadline = time.monotonic() + 30
        while self.call("DescribeTable", {"TableName": name})["Table"]["TableStatus"] != "ACTIVE":
            if time.monotonic() > deadline:
                raise RuntimeError(f"table {name} not ACTIVE after 30 s")
            time.sleep(0.05)
        return name


def item(pk, sk):
    return {"pk": {"S": pk}, "sk": {"S": sk}, "data": {"S": PAYLOAD}, "n": {"N": "1"}}


def load(port, table, partitions, per_partition=100, threads=4):
    """Writes pk0..pk{partitions-1} x sk0..sk{per_partition-1} in BatchWriteItems of 25 from a few
    threads (a connection each), partition by partition, and stops at LOAD_BUDGET_S. Returns the
    seconds it took and how many whole partitions were written."""
    keys = [(f"pk{p}", f"sk{s}") for p in range(partitions) for s in range(per_partition)]
    batches = [keys[i:i + 25] for i in range(0, len(keys), 25)]
    local = threading.local()
    began = time.monotonic()

    def write(batch):
        if time.monotonic() - began > LOAD_BUDGET_S:
            return False
        if not hasattr(local, "client"):
            local.client = Client(port)
        requests = [{"PutRequest": {"Item": item(pk, sk)}} for pk, sk in batch]
        while requests:
            unprocessed = local.client.call("BatchWriteItem", {"RequestItems": {table: requests}}).get("UnprocessedItems", {})
            requests = unprocessed.get(table, [])
        return True

    with concurrent.futures.ThreadPoolExecutor(threads) as pool:
        written = list(pool.map(write, batches))
    prefix = written.index(False) if False in written else len(written)
    return {"seconds": time.monotonic() - began, "partitions": prefix * 25 // per_partition, "wanted": partitions}


def check(client, table, partitions, per_partition=100):
    """The loaded table answers as it should, so a 200 from wrk means a real read."""
    last = {"pk": {"S": f"pk{partitions - 1}"}, "sk": {"S": f"sk{per_partition - 1}"}}
    got = client.call("GetItem", {"TableName": table, "Key": last})
    assert got.get("Item", {}).get("data") == {"S": PAYLOAD}, f"GetItem on {table}: {got!r}"
    got = client.call("Query", {"TableName": table, "KeyConditionExpression": "pk = :pk",
                                "ExpressionAttributeValues": {":pk": {"S": "pk0"}}})
    count = got["Count"]
    assert count == per_partition and len(got["Items"]) == count and "LastEvaluatedKey" not in got, f"Query on {table}: Count {count}"


def settle(client, idle_ms):
    """Waits (up to 30 s) until ListTables is about as fast as when the server was idle: a server
    that queues requests still has the last run's backlog when wrk stops (16 of moto's ~100 ms
    Queries), and that would land on the next run's first requests."""
    deadline = time.monotonic() + 30
    fast = 0
    while fast < 3 and time.monotonic() < deadline:
        began = time.perf_counter()
        client.call("ListTables", {})
        fast = fast + 1 if (time.perf_counter() - began) * 1000 < max(3 * idle_ms, idle_ms + 2) else 0


def scenarios(port, seconds):
    """Every scenario against one running peer, a step at a time (see common.run_peers): a result
    for each. Each run gets its own table, and drops it after, so what one scenario wrote does not
    weigh on the next."""
    client = Client(port)
    idle_ms = min(timed(client.call, "ListTables", {}) for _ in range(5))

    def run(script, table, connections, **env):
        settle(client, idle_ms)
        return wrk(script, port, {"TABLE": table, **env}, connections, seconds, TIMEOUT_S)

    r = {}
    # The setting of ../shared/reference/peers.md: GetItem over 100 items, wrk -t2 -c8.
    small = client.table("small")
    r["load 100"] = load(port, small, 100, per_partition=1)
    yield
    if r["load 100"]["partitions"] == 100:
        check(client, small, 100, per_partition=1)
        r["get small c8"] = run("ddb_get.lua", small, 8, SKS="1")
        yield
    client.call("DeleteTable", {"TableName": small})
    for connections in (1, 16):
        table = client.table(f"put-c{connections}")
        r[f"put c{connections}"] = run("ddb_put.lua", table, connections)
        yield
        client.call("DeleteTable", {"TableName": table})
    items = client.table("items")
    r["load 10k"] = load(port, items, 100)
    yield
    if r["load 10k"]["partitions"] == 100:
        check(client, items, 100)
        for connections in (1, 16):
            r[f"get c{connections}"] = run("ddb_get.lua", items, connections)
            yield
        for connections in (1, 16):
            r[f"query c{connections}"] = run("ddb_query.lua", items, connections, PKS="100")
            yield
        # Overwrites items with items of the same keys and size, so the table stays as the reads above saw it.
        for connections in (1, 16):
            r[f"mixed c{connections}"] = run("ddb_mixed.lua", items, connections)
            yield
    client.call("DeleteTable", {"TableName": items})
    for connections in (1, 16):
        table = client.table(f"batch-c{connections}")
        r[f"batch c{connections}"] = run("ddb_batch_write.lua", table, connections)
        yield
        client.call("DeleteTable", {"TableName": table})
    # Query cost against table size. A load cut short by the budget is queried at the size it reached.
    for label, partitions in (("1k", 10), ("100k", 1000)):
        settle(client, idle_ms)
        table = client.table(f"scale{label}")
        loaded = r[f"load {label}"] = load(port, table, partitions)
        yield
        if loaded["partitions"]:
            check(client, table, loaded["partitions"])
            r[f"query {label}"] = run("ddb_query.lua", table, 1, PKS=str(loaded["partitions"]))
            yield
        client.call("DeleteTable", {"TableName": table})
    return r


def timed(function, *args):
    began = time.perf_counter()
    function(*args)
    return (time.perf_counter() - began) * 1000


def load_cell(m, multiplier=1):
    """(ops/s, text), or no value when the run had errors: its rate would not be comparable."""
    ops = m["rps"] * multiplier
    text = f"{ops:,.0f}" if ops >= 10 else f"{ops:.1f}"  # moto's Query on 100k items: well under 1/s
    text += f" (p50 {m['p50_ms']:.2f} / p99 {m['p99_ms']:.2f} ms)"
    if m["errors"] or m["socket_errors"]:
        return None, f"invalid: {m['errors']} non-2xx, {m['socket_errors']} socket errors of {m['requests']:,}; {text}"
    return ops, text


def report(results):
    names = list(results)
    if not names:
        print("no peer ran")
        return
    rows = []
    for key, label, multiplier in [
            ("put", "PutItem req/s", 1), ("get", "GetItem req/s", 1), ("query", "Query (100 items) req/s", 1),
            ("batch", "BatchWriteItem(25) items/s", 25), ("mixed", "80% GetItem / 20% PutItem req/s", 1)]:
        for connections in (1, 16):
            cells = []
            for name in names:
                m = results[name].get(f"{key} c{connections}")
                cells.append((None, f"not run: table not loaded in {LOAD_BUDGET_S} s") if m is None else load_cell(m, multiplier))
            rows.append((f"{label}, c{connections}", cells))
    cells = []
    for name in names:
        m = results[name].get("get small c8")
        cells.append((None, "not run: table not loaded") if m is None else load_cell(m))
    rows.append(("GetItem req/s on a 100-item table, c8", cells))
    for label in ("1k", "100k"):
        cells = []
        for name in names:
            loaded, m = results[name].get(f"load {label}"), results[name].get(f"query {label}")
            if m is None:
                cells.append((None, "not run: nothing loaded"))
                continue
            value, text = load_cell(m)
            if loaded["partitions"] < loaded["wanted"]:  # not the table size asked for: no ratio
                value, text = None, f"on only {loaded['partitions'] * 100:,} items: {text}"
            cells.append((value, text))
        rows.append((f"Query (100 items) on {label} items, c1", cells))
    cells = []
    for name in names:
        small, big = results[name].get("query 1k"), results[name].get("query 100k")
        items = results[name].get("load 100k", {}).get("partitions", 0) * 100
        cells.append((None, "-" if not (small and big) else
                       f"p50 {big['p50_ms'] / small['p50_ms']:.2f}x, p99 {big['p99_ms'] / small['p99_ms']:.2f}x" + (f" ({items:,} / 1k)" if items != 100_000 else "")))
    rows.append(("  Query latency, 100k / 1k items", cells))
    for label in ("10k", "1k", "100k"):
        cells = []
        for name in names:
            loaded = results[name].get(f"load {label}")
            if loaded is None:
                cells.append((None, "-"))
                continue
            items = loaded["partitions"] * 100
            text = f"{loaded['seconds']:.2f} s ({items / loaded['seconds']:,.0f} items/s)"
            cells.append((None, text if loaded["partitions"] == loaded["wanted"] else f"only {items:,} in {text}"))
        rows.append((f"load {label} items (BatchWriteItem, 4 threads)", cells))
    rows.append(("RSS at the end, MiB", [(None, f"{results[n]['rss_mib']:.0f}") for n in names]))
    print_table(names, rows)


if __name__ == "__main__":
    main("dynamodb", "dynamodb", scenarios, report, default_peers="stratus,stratus-ephemeral,fakecloud,moto")
