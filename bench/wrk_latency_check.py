#!/usr/bin/env python3
"""Checks what wrk's latency percentiles mean, against a server whose latencies are known: it
answers at once, except that every 2 s it holds every answer for 0.5 s (so per 2 s, only the 16
requests in flight wait long). Prints the percentiles wrk reports, then those of every request
measured one by one by a client of its own with the same 16 connections.

    python3 bench/wrk_latency_check.py
"""
import asyncio
import re
import subprocess
import threading
import time

PORT, SECONDS, CONNECTIONS = 4597, 10, 16
START = time.monotonic()


async def serve(reader, writer):
    try:
        while True:
            await reader.readuntil(b"\r\n\r\n")
            phase = (time.monotonic() - START) % 2.0
            if phase < 0.5:
                await asyncio.sleep(0.5 - phase)
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
            await writer.drain()
    except (asyncio.IncompleteReadError, ConnectionError):
        writer.close()


async def one_connection(latencies, end):
    reader, writer = await asyncio.open_connection("127.0.0.1", PORT)
    while time.monotonic() < end:
        started = time.perf_counter()
        writer.write(b"GET / HTTP/1.1\r\nHost: check\r\n\r\n")
        await reader.readuntil(b"\r\n\r\n")
        await reader.readexactly(2)
        latencies.append(time.perf_counter() - started)
    writer.close()


def percentile(sorted_values, q):
    return sorted_values[min(int(len(sorted_values) * q), len(sorted_values) - 1)] * 1000


def main():
    loop = asyncio.new_event_loop()
    loop.run_until_complete(asyncio.start_server(serve, "127.0.0.1", PORT))
    threading.Thread(target=loop.run_forever, daemon=True).start()
    out = subprocess.run(["wrk", "-t2", f"-c{CONNECTIONS}", f"-d{SECONDS}s", "--latency", f"http://127.0.0.1:{PORT}/"],
                         capture_output=True, text=True).stdout
    reported = dict(re.findall(r"^\s+(50|90|99)%\s+(\S+)", out, re.M))
    requests = re.search(r"(\d+) requests in", out).group(1)
    print(f"wrk: {requests} requests, p50 {reported['50']}, p90 {reported['90']}, p99 {reported['99']}")
    latencies = []
    end = time.monotonic() + SECONDS
    async def clients():
        await asyncio.gather(*(one_connection(latencies, end) for _ in range(CONNECTIONS)))
    asyncio.run_coroutine_threadsafe(clients(), loop).result()
    latencies.sort()
    slow = sum(1 for latency in latencies if latency > 0.25)
    print(f"each request: {len(latencies)} requests, p50 {percentile(latencies, 0.5):.2f}ms, "
          f"p90 {percentile(latencies, 0.9):.2f}ms, p99 {percentile(latencies, 0.99):.2f}ms, {slow} over 250 ms")


if __name__ == "__main__":
    main()
