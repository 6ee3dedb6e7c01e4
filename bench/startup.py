#!/usr/bin/env python3
"""Startup time and idle memory of `stratus up`.

Startup: from exec to the first 200 from /_stratus/health, polled every 0.5 ms over raw sockets,
for a fresh data directory, for a data directory that already holds a store, and for --ephemeral.
Idle RSS: VmRSS 2 s after one STS GetCallerIdentity call.

    python3 bench/startup.py [path/to/stratus] [runs]
"""
import os
import pathlib
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time

REPO = pathlib.Path(__file__).resolve().parent.parent
target = pathlib.Path(os.environ.get("CARGO_TARGET_DIR") or REPO / "target")
binary = sys.argv[1] if len(sys.argv) > 1 else str(target / "release" / "stratus")
runs = int(sys.argv[2]) if len(sys.argv) > 2 else 20


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def get(port, path, timeout=1.0):
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(f"GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n".encode())
        return s.recv(65536)


def start(args):
    port = free_port()
    began = time.perf_counter()
    process = subprocess.Popen([binary, "up", "--port", str(port), *args], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    while True:
        try:
            if get(port, "/_stratus/health").startswith(b"HTTP/1.1 200"):
                return process, port, (time.perf_counter() - began) * 1000
        except OSError:
            pass
        if time.perf_counter() - began > 5:
            process.kill()
            raise SystemExit("stratus did not answer within 5 s")
        time.sleep(0.0005)


def stop(process):
    process.send_signal(signal.SIGTERM)
    process.wait(timeout=30)


def rss_mib(pid):
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024


def summary(values, unit):
    values = sorted(values)
    return (f"median {statistics.median(values):6.2f} {unit}   p90 {values[int(len(values) * 0.9) - 1]:6.2f}   "
            f"min {values[0]:6.2f}   max {values[-1]:6.2f}   ({len(values)} runs)")


def main():
    scratch = pathlib.Path(tempfile.mkdtemp(prefix="stratus-startup-"))
    try:
        fresh, existing, ephemeral = [], [], []
        kept = scratch / "kept"
        for i in range(runs):
            process, _, ms = start(["--data-dir", str(scratch / f"fresh-{i}")])
            fresh.append(ms)
            stop(process)
            process, _, ms = start(["--data-dir", str(kept)])
            existing.append(ms)
            stop(process)
            process, _, ms = start(["--ephemeral"])
            ephemeral.append(ms)
            stop(process)
        print(f"binary: {binary}")
        print(f"startup to first health 200, new data dir:      {summary(fresh, 'ms')}")
        print(f"startup to first health 200, existing data dir: {summary(existing, 'ms')}")
        print(f"startup to first health 200, --ephemeral:       {summary(ephemeral, 'ms')}")

        idle = []
        for args in (["--data-dir", str(kept)], ["--ephemeral"]):
            process, port, _ = start(args)
            body = b"Action=GetCallerIdentity&Version=2011-06-15"
            with socket.create_connection(("127.0.0.1", port)) as s:
                s.sendall(b"POST / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n"
                          b"Content-Type: application/x-www-form-urlencoded\r\n"
                          + f"Content-Length: {len(body)}\r\n\r\n".encode() + body)
                assert s.recv(65536).startswith(b"HTTP/1.1 200")
            time.sleep(2)
            idle.append((args[0], rss_mib(process.pid)))
            stop(process)
        for mode, mib in idle:
            print(f"idle RSS after one request ({mode}): {mib:.1f} MiB")
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


main()
