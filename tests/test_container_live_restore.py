"""`stratus up --live-restore`, as dockerd's flag: containers keep running while Stratus is
stopped or killed, and the next Stratus on the same data directory adopts them (their output,
exits, published ports, DNS and terminals), through the real docker CLI. Containers need root."""

import json
import os
import re
import signal
import time
import urllib.request

from test_containers import bootstrap, inspect
from test_containers import pytestmark  # noqa: F401


def alive(pid):
    try:
        os.kill(pid, 0)
        return True
    except ProcessLookupError:
        return False


def runtimes_of(server):
    """Pids of the runtime processes serving `server`'s data directory."""
    found = []
    for entry in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                args = f.read().split(b"\0")
        except (FileNotFoundError, ProcessLookupError):
            continue
        if b"runtime" in args and any(str(server.data_dir).encode() in a for a in args):
            found.append(int(entry))
    return found


def ticks(server):
    return [int(n) for n in re.findall(r"tick (\d+)", server.docker("logs", "ticker").stdout)]


def test_containers_outlive_stratus_and_the_next_adopts_them(start_stratus):
    first = start_stratus("node", args=("--data-dir", None, "--live-restore"))
    # The next instances use the same bridge, which the containers are plugged into.
    same = {k: first.env[k] for k in ("STRATUS_DOCKER_BRIDGE", "STRATUS_DOCKER_BRIDGE_SUBNET")}
    try:
        adopted_across_restarts(start_stratus, first, same)
    finally:
        # Whatever failed, a Stratus without the flag adopts what is left and stops it.
        start_stratus("node", env=same).stop()


def adopted_across_restarts(start_stratus, first, same):
    bootstrap(first)
    assert json.loads(first.docker("info", "--format", "{{json .}}").stdout)["LiveRestoreEnabled"] is True
    first.docker("network", "create", "net")
    first.docker("run", "-d", "--name", "web", "--network", "net", "-p", "127.0.0.1:0:80", "busybox",
                 "httpd", "-f", "-p", "80", "-h", "/etc")
    first.docker("run", "-d", "--name", "ticker", "--network", "net", "busybox", "sh", "-c",
                 "i=0; while true; do echo tick $i; i=$((i+1)); sleep 0.05; done")
    first.docker("run", "-d", "--name", "brief", "busybox", "sh", "-c", "sleep 1.5; exit 3")
    first.docker("run", "-dit", "--name", "term", "busybox", "sh")
    port = first.docker("port", "web", "80").stdout.split(":")[-1].strip()
    pids = {name: inspect(first, name)["State"]["Pid"] for name in ("web", "ticker", "brief", "term")}
    before = len(ticks(first))
    first.stop()

    assert all(alive(pid) for name, pid in pids.items() if name != "brief"), "containers outlive Stratus"
    time.sleep(2.5)  # brief exits with no Stratus to see it; ticker writes into its pipe meanwhile

    second = start_stratus("node", args=("--data-dir", None, "--live-restore"), env=same)
    running = set(second.docker("ps", "--format", "{{.Names}}").stdout.split())
    assert running == {"web", "ticker", "term"}
    assert inspect(second, "ticker")["State"]["Pid"] == pids["ticker"]
    brief = inspect(second, "brief")["State"]
    assert (brief["Status"], brief["ExitCode"]) == ("exited", 3), "an exit while Stratus was away is recorded"
    seen = ticks(second)
    assert seen == list(range(len(seen))), "no output lost or repeated across the restart"
    assert len(seen) > before + 20, "what the container wrote while Stratus was away waited in its pipe"
    # Its published port on the same host port, the embedded DNS, exec and the terminal work again.
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/hostname", timeout=5) as response:
        assert response.status == 200
    assert second.docker("exec", "ticker", "nslookup", "web", "127.0.0.11").returncode == 0
    assert second.docker("exec", "term", "echo", "hi").stdout == "hi\n"

    # Killed outright, Stratus leaves them running too.
    second.stop(sig=signal.SIGKILL)
    assert alive(pids["ticker"]) and alive(pids["web"])
    third = start_stratus("node", args=("--data-dir", None, "--live-restore"), env=same)
    assert set(third.docker("ps", "--format", "{{.Names}}").stdout.split()) == {"web", "ticker", "term"}
    third.docker("stop", "-t", "1", "ticker")
    assert inspect(third, "ticker")["State"]["ExitCode"] == 137
    assert not alive(pids["ticker"])
    third.stop()

    # Without the flag, Stratus still adopts what it finds running, and stops it all when it stops.
    fourth = start_stratus("node", env=same)
    assert set(fourth.docker("ps", "--format", "{{.Names}}").stdout.split()) == {"web", "term"}
    assert runtimes_of(fourth)
    fourth.stop()
    assert not alive(pids["web"]) and not alive(pids["term"])
    deadline = time.monotonic() + 5
    while runtimes_of(fourth) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not runtimes_of(fourth), "the runtime processes end with a Stratus without --live-restore"
