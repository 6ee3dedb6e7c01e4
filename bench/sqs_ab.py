#!/usr/bin/env python3
"""SQS sends only, for comparing Stratus builds side by side: bench/sqs.py's `send c1`, `send c16`
and `batch c16` wrk runs against every peer given, in lockstep (each run against each peer in
turn, seconds apart; see common.run_peers). Names must differ.

    python3 bench/sqs_ab.py NAME:BINARY[:FLAG...] ... [fakecloud:]

e.g. `python3 bench/sqs_ab.py old:/tmp/stratus-old:--fsync:100ms new:/tmp/stratus-new:--fsync:100ms fakecloud:`.
A peer without `--ephemeral` gets a fresh data directory. Prints messages/s and p99 ms per
scenario, and the process's growth in memory per message queued at the end.
"""
import pathlib
import sys
import tempfile

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
import common  # noqa: E402
import sqs  # noqa: E402


def scenarios(port, seconds):
    client = sqs.Client(port)
    send, batch = client.queue("send"), client.queue("batch")
    results = {"send c1": common.wrk("sqs_send.lua", port, {"QUEUE_URL": send}, 1, seconds)}
    yield
    results["send c16"] = common.wrk("sqs_send.lua", port, {"QUEUE_URL": send}, 16, seconds)
    yield
    results["batch c16"] = common.wrk("sqs_send_batch.lua", port, {"QUEUE_URL": batch}, 16, seconds)
    results["queued"] = sum(
        int(client.call("GetQueueAttributes", {"QueueUrl": url, "AttributeNames": ["ApproximateNumberOfMessages"]})
            ["Attributes"]["ApproximateNumberOfMessages"]) for url in (send, batch))
    return results


def main():
    specs = {}
    # Each peer's own directory, removed after the run: a durable run leaves hundreds of MiB.
    scratch = pathlib.Path(tempfile.mkdtemp(prefix="sqs-ab-"))
    for spec in sys.argv[1:]:
        name, binary, *flags = spec.split(":")
        if name == "fakecloud":
            specs[name] = common.peers(scratch, "sqs")["fakecloud"]
            continue

        def command(port, binary=binary, flags=flags):
            store = flags if "--ephemeral" in flags else ["--data-dir", str(scratch / f"data-{port}"), *flags]
            return [binary, "up", "--port", str(port), *store, "--docker-socket", str(scratch / f"docker-{port}.sock")]
        specs[name] = (command, "/_stratus/health", {}, True)
    try:
        results = common.run_peers(specs, 5, scenarios)
    finally:
        common.shutil.rmtree(scratch, ignore_errors=True)
    for name, result in results.items():
        runs = {k: v for k, v in result.items() if isinstance(v, dict)}
        rates = {k: round(v["rps"] * (10 if k.startswith("batch") else 1)) for k, v in runs.items()}
        p99s = {k: v["p99_ms"] for k, v in runs.items()}
        # What the process grew by over the run, per message still queued at its end.
        per_message = (result["rss_mib"] - result["rss_start_mib"]) * (1 << 20) / max(result["queued"], 1)
        print(name, rates, "p99 ms", p99s, f"bytes per queued message {per_message:.0f}", flush=True)


if __name__ == "__main__":
    main()
