"""What the benchmarks share: starting Stratus and its peers, running wrk, and the report."""
import argparse
import http.client
import json
import os
import pathlib
import re
import shutil
import signal
import socket
import statistics
import subprocess
import tempfile
import time

REPO = pathlib.Path(__file__).resolve().parent.parent
# Where test.sh builds (outside the clone, shared by every clone).
TARGET = pathlib.Path(os.environ.get("CARGO_TARGET_DIR") or pathlib.Path.home() / ".cache/stratus/target")
# (row number, row label, peer) -> its ratio to fakecloud in each round, for the summary of a
# multi-round run.
RATIOS = {}


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def peers(scratch, services):
    stratus = os.environ.get("STRATUS_BIN") or str(TARGET / "release" / "stratus")
    fakecloud = os.environ.get("FAKECLOUD_BIN") or "/tmp/peers/fc-target/release/fakecloud"
    moto = os.environ.get("MOTO_SERVER") or shutil.which("moto_server")
    localstack = os.environ.get("LOCALSTACK_PYTHON")

    def durable(*flags):
        # Each its own Docker socket: the default one may belong to another Stratus on the machine.
        return (lambda p: [stratus, "up", "--port", str(p), "--data-dir", str(scratch / f"stratus-{p}"), *flags,
                           "--docker-socket", str(scratch / f"docker-{p}.sock")], "/_stratus/health", {}, os.path.exists(stratus))

    return {
        "stratus": durable(),
        # Acknowledges once a write is in the log (safe from kill -9), syncs the disk every 100 ms.
        "stratus-fsync-100ms": durable("--fsync", "100ms"),
        "stratus-ephemeral": (lambda p: [stratus, "up", "--port", str(p), "--ephemeral",
                                         "--docker-socket", str(scratch / f"docker-{p}.sock")], "/_stratus/health", {}, os.path.exists(stratus)),
        "fakecloud": (lambda p: [fakecloud, "--addr", f"127.0.0.1:{p}"], "/_fakecloud/health", {}, os.path.exists(fakecloud)),
        "moto": (lambda p: [moto, "-H", "127.0.0.1", "-p", str(p)], "/moto-api/", {}, bool(moto)),
        "localstack": (lambda p: [localstack, "-m", "localstack.runtime.main"], "/_localstack/health",
                       lambda p: {"OVERRIDE_IN_DOCKER": "0", "FILESYSTEM_ROOT": str(scratch / f"ls-{p}"), "GATEWAY_LISTEN": f"127.0.0.1:{p}",
                                  "SERVICES": services, "DNS_ADDRESS": "0", "DISABLE_EVENTS": "1"}, bool(localstack)),
    }


class Connection(http.client.HTTPConnection):
    """A keep-alive connection to a peer that opens afresh after a pause: in a lockstep run the other
    peers' measurements come between two calls, for longer than a server keeps an idle connection
    open (Stratus: 60 s)."""

    def __init__(self, port):
        super().__init__("127.0.0.1", port, timeout=300)
        self.used = time.monotonic()

    def request(self, *args, **kwargs):
        if time.monotonic() - self.used > 20:
            self.close()
        super().request(*args, **kwargs)
        self.used = time.monotonic()


def start(name, spec, port):
    command, health, env, _ = spec
    env = env(port) if callable(env) else env
    log = open(f"/tmp/bench-{name}.log", "wb")
    process = subprocess.Popen(command(port), stdout=log, stderr=log, env={**os.environ, **env})
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            connection.request("GET", health)
            if connection.getresponse().status == 200:
                return process
        except OSError:
            pass
        time.sleep(0.05)
    process.kill()
    raise RuntimeError(f"{name} did not start; see /tmp/bench-{name}.log")


def wrk(script, port, env, connections, seconds, timeout_s=None):
    """Runs a bench/wrk script; `env` passes it its target (QUEUE_URL, TOPIC_ARN). `timeout_s`
    replaces wrk's 2 s request timeout (a timed-out request counts as a socket error)."""
    threads = 1 if connections == 1 else 2
    timeout = ["--timeout", f"{timeout_s}s"] if timeout_s else []
    result = subprocess.run(["wrk", f"-t{threads}", f"-c{connections}", f"-d{seconds}s", "--latency", *timeout, "-s", f"bench/wrk/{script}",
                             f"http://127.0.0.1:{port}"], capture_output=True, text=True, cwd=REPO, env={**os.environ, **env})
    out = result.stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    p50 = parse_latency(re.search(r"^\s+50%\s+(\S+)", out, re.M).group(1))
    p99 = parse_latency(re.search(r"^\s+99%\s+(\S+)", out, re.M).group(1))
    socket_errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    non2xx = int(re.search(r"non-2xx (\d+)", out).group(1))
    requests = int(re.search(r"(\d+) requests in", out).group(1))
    deleted = re.search(r"deleted (\d+)", out)
    short = re.search(r"short (\d+)", out)
    return {"rps": rps, "p50_ms": p50, "p99_ms": p99, "errors": non2xx, "requests": requests, "deleted_per_s": int(deleted.group(1)) / seconds if deleted else None,
            "short": int(short.group(1)) if short else None,
            "socket_errors": sum(map(int, socket_errors.groups())) if socket_errors else 0}


def latency(port, request, seconds, needle=None, count=0, connections=1):
    """Each request's own latency (bench/latency.c, built here with gcc): `connections` connections
    send the HTTP/1.1 `request` (bytes) over and over for `seconds`. With `needle`, a response holding
    it fewer than `count` times counts as short. Returns requests, rps, errors, short and
    p50/p99/p999/max in ms."""
    source = REPO / "bench/latency.c"
    binary = pathlib.Path(tempfile.gettempdir()) / f"stratus-bench-latency-{source.stat().st_mtime_ns}"
    if not binary.exists():
        subprocess.run(["gcc", "-O2", "-pthread", "-o", str(binary), str(source)], check=True)
    with tempfile.NamedTemporaryFile() as file:
        file.write(request)
        file.flush()
        extra = [needle, str(count)] if needle else []
        out = subprocess.run([str(binary), str(port), str(seconds), str(connections), file.name, *extra],
                             capture_output=True, text=True, check=True).stdout
    fields = dict(zip(out.split()[::2], map(float, out.split()[1::2])))
    return {"requests": int(fields["requests"]), "rps": fields["requests"] / fields["seconds"],
            "errors": int(fields["errors"]), "short": int(fields["short"]),
            **{f"{k}_ms": fields[f"{k}_us"] / 1000 for k in ("p50", "p99", "p999", "max")}}


def parse_latency(text):
    value, unit = re.match(r"([\d.]+)(\w+)", text).groups()
    return float(value) * {"us": 0.001, "ms": 1, "s": 1000, "m": 60000}[unit]


def stop(process):
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        process.kill()


def rss_mib(pid):
    return int(open(f"/proc/{pid}/status").read().split("VmRSS:")[1].split()[0]) / 1024


def run_peers(specs, seconds, scenarios):
    """Starts every peer, then runs `scenarios(port, seconds)` against all of them in lockstep:
    `scenarios` is a generator that yields after each measurement and returns its results, and
    each peer takes its next step in turn. So the peers' runs of one measurement are seconds apart,
    not the minutes a whole pass takes, and a ratio does not take in the machine's drift (the same
    build moves by up to 45% here over minutes). Adds each peer's memory at start and at its end."""
    started, running, results = [], {}, {}
    try:
        for name, spec in specs.items():
            port = free_port()
            try:
                process = start(name, spec, port)
            except Exception as failure:  # noqa: BLE001 - one peer failing must not lose the others' results
                print(f"{name} failed: {failure!r}")
                continue
            started.append(process)
            running[name] = (process, rss_mib(process.pid), scenarios(port, seconds))
        while running:
            for name, (process, before, steps) in list(running.items()):
                try:
                    next(steps)
                except StopIteration as done:
                    results[name] = {**done.value, "rss_mib": rss_mib(process.pid), "rss_start_mib": before}
                    del running[name]
                except Exception as failure:  # noqa: BLE001
                    print(f"{name} failed: {failure!r}")
                    del running[name]
        return {name: results[name] for name in specs if name in results}
    finally:
        for process in started:
            stop(process)


def main(name, services, scenarios, report, default_peers="stratus,stratus-fsync-100ms,stratus-ephemeral,fakecloud,moto,localstack"):
    """Runs `scenarios(port, seconds)` against each peer asked for, then `report(results)`."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=int, default=5)
    parser.add_argument("--peers", default=default_peers)
    parser.add_argument("--rounds", type=int, default=1,
                        help="run every peer this many times, in turn, and summarise the ratios (this machine is noisy)")
    args = parser.parse_args()
    for round_ in range(1, args.rounds + 1):
        scratch = pathlib.Path(tempfile.mkdtemp(prefix=f"{name}-bench-"))
        specs = peers(scratch, services)
        chosen = {}
        for peer in args.peers.split(","):
            if specs[peer][3]:
                chosen[peer] = specs[peer]
            else:
                print(f"skipping {peer}: not installed (see bench/{name}.py)")
        print(f"round {round_}: running {', '.join(chosen)} side by side ...", flush=True)
        results = run_peers(chosen, args.seconds, scenarios)
        pathlib.Path(f"/tmp/{name}-bench-results-{round_}.json").write_text(json.dumps(results))
        shutil.rmtree(scratch, ignore_errors=True)
        report(results)
    if args.rounds > 1 and RATIOS:
        print(f"\nRatios against fakecloud over {args.rounds} rounds: min / median / max")
        print("\n| scenario | peer | min | median | max |\n|---|---|---|---|---|")
        for (_, label, peer), ratios in RATIOS.items():
            print(f"| {label} | {peer} | {min(ratios):.2f}x | {statistics.median(ratios):.2f}x | {max(ratios):.2f}x |")


def print_table(names, rows):
    """A markdown table: rows of (label, [(value or None, text) per peer]), each value also as a
    ratio to fakecloud's when both are known."""
    print()
    print("| scenario | " + " | ".join(names) + " |")
    print("|" + "---|" * (len(names) + 1))
    base = names.index("fakecloud") if "fakecloud" in names else None
    for row, (label, cells) in enumerate(rows):
        shown = []
        for i, (value, text) in enumerate(cells):
            if base is not None and i != base and value and cells[base][0]:
                text += f" **{value / cells[base][0]:.2f}x**"
                RATIOS.setdefault((row, label, names[i]), []).append(value / cells[base][0])
            shown.append(text)
        print(f"| {label} | " + " | ".join(shown) + " |")
    if base is not None:
        print("\nRatios are against fakecloud in the same run.")
