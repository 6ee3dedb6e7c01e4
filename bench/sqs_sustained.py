#!/usr/bin/env python3
"""Sustained durable sends against Stratus builds, one at a time: wrk's batched sends (10 messages
per call) at 16 connections for SECONDS, then `kill -9` and a timed restart. Shows whether
checkpoints keep up with a long write load: the log files' sizes (each holds one epoch not yet
checkpointed, or the one being checkpointed), the memory held, and how long the restart's replay
takes. The p99 is wrk's, which weighs a stall by its length (bench/wrk_latency_check.py): it shows
that writes stalled, not how many requests waited.

    python3 bench/sqs_sustained.py SECONDS NAME:BINARY[:FLAG...] ...
"""
import pathlib
import sys
import tempfile
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
import common  # noqa: E402
import sqs  # noqa: E402


def run(name, binary, flags, seconds, scratch):
    data = scratch / name
    port = common.free_port()

    def command(port):
        return [binary, "up", "--port", str(port), "--data-dir", str(data), *flags,
                "--docker-socket", str(scratch / f"docker-{name}.sock")]
    spec = (command, "/_stratus/health", {}, True)
    process = common.start(name, spec, port)
    try:
        url = sqs.Client(port).queue("sustained")
        result = common.wrk("sqs_send_batch.lua", port, {"QUEUE_URL": url}, 16, seconds, timeout_s=30)
        rss = common.rss_mib(process.pid)
        logs = sorted(path.stat().st_size >> 20 for path in data.glob("*.wal"))
    finally:
        process.kill()
        process.wait()
    started = time.monotonic()
    process = common.start(name, spec, port)
    restart = time.monotonic() - started
    common.stop(process)
    print(f"{name}: {result['rps'] * 10:,.0f} msg/s, p99 {result['p99_ms']} ms, RSS {rss:,.0f} MiB, "
          f"log files {logs} MiB, restart after kill -9 {restart:.1f} s, wrk errors {result['socket_errors']}", flush=True)


def main():
    seconds = int(sys.argv[1])
    with tempfile.TemporaryDirectory(prefix="sqs-sustained-") as scratch:
        for spec in sys.argv[2:]:
            name, binary, *flags = spec.split(":")
            run(name, binary, flags, seconds, pathlib.Path(scratch))


if __name__ == "__main__":
    main()
