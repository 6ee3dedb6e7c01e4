"""Starts the built `stratus` binary on a free port with its own data directory, and hands out
clients pointed at it. Logs of a failed test are printed with its report."""

import os
import pathlib
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

import ipaddress
import itertools
import random

import boto3
import botocore.exceptions
import botocore.session
from botocore.config import Config

REPO = pathlib.Path(__file__).resolve().parent.parent
TARGET = pathlib.Path(os.environ.get("CARGO_TARGET_DIR") or REPO / "target")
BINARY = os.environ.get("STRATUS_BIN") or str(TARGET / "release" / "stratus")
CREDENTIALS = {"aws_access_key_id": "test", "aws_secret_access_key": "test", "region_name": "us-east-1"}
# SQS's model as botocore shipped it before SQS spoke JSON (botocore 1.31.0, with every operation
# of today's): a client made from it speaks the query protocol, as the SDKs of before 2024 do.
# test.sh puts it there.
LEGACY_SQS_MODEL = os.environ.get("STRATUS_LEGACY_SQS_MODEL") or os.path.expanduser("~/.cache/stratus/botocore-1.31.0-sqs")


def legacy_sqs_session():
    """A boto3 session whose SQS client speaks the query protocol (`LEGACY_SQS_MODEL`)."""
    if not os.path.exists(os.path.join(LEGACY_SQS_MODEL, "sqs", "2012-11-05", "service-2.json")):
        raise RuntimeError(f"no legacy SQS model in {LEGACY_SQS_MODEL}: run ./test.sh once")
    session = botocore.session.Session()
    session.get_component("data_loader").search_paths.insert(0, LEGACY_SQS_MODEL)
    return boto3.Session(botocore_session=session)


_INSTANCES = itertools.count()


def host_routes():
    """The IPv4 networks the host already routes (from /proc/net/route), default route excluded."""
    routes = []
    with open("/proc/net/route") as table:
        for line in list(table)[1:]:
            fields = line.split()
            destination, mask = int(fields[1], 16), int(fields[7], 16)
            if mask:
                address = ipaddress.IPv4Address(destination.to_bytes(4, "little"))
                prefix = bin(mask).count("1")
                routes.append(ipaddress.IPv4Network(f"{address}/{prefix}", strict=False))
    return routes


def bridge_for_instance():
    """A default-bridge name and subnet of this Stratus's own: several Stratus instances (other
    test runs on this host) may run at once, and each would otherwise take the same ones."""
    name = f"st{os.getpid() % 100000}x{next(_INSTANCES)}"[:15]
    taken = host_routes()
    rng = random.Random()
    while True:
        subnet = ipaddress.IPv4Network(f"10.{rng.randrange(160, 256)}.{rng.randrange(0, 256)}.0/24")
        if not any(subnet.overlaps(route) for route in taken):
            return name, str(subnet)


class Stratus:
    def __init__(self, workdir, args=("--data-dir", None), env=None):
        self.workdir = pathlib.Path(workdir)
        self.data_dir = self.workdir / "data"
        self.args = [str(self.data_dir) if a is None else a for a in args]
        self.env = {**os.environ, **(env or {})}
        # Each Stratus gets its own Docker socket, in a short path (unix socket paths are limited
        # to 107 bytes, which pytest's tmp_path can exceed).
        self.docker_socket = pathlib.Path(tempfile.mkdtemp(prefix="stratus-")) / "docker.sock"
        self.env.setdefault("STRATUS_DOCKER_SOCKET", str(self.docker_socket))
        bridge, subnet = bridge_for_instance()
        self.env.setdefault("STRATUS_DOCKER_BRIDGE", bridge)
        self.env.setdefault("STRATUS_DOCKER_BRIDGE_SUBNET", subnet)
        self.log_path = self.workdir / "stratus.log"
        self.process = None
        self.url = None
        self.banner = ""

    def start(self, timeout=10):
        log = open(self.log_path, "ab")
        self.process = subprocess.Popen(
            [BINARY, "up", "--port", "0", *self.args],
            stdout=subprocess.PIPE, stderr=log, env=self.env, text=True,
        )
        deadline = time.monotonic() + timeout
        lines = []
        while time.monotonic() < deadline:
            line = self.process.stdout.readline()
            if not line:
                break
            lines.append(line)
            match = re.search(r"AWS endpoint\s+(http://\S+)", line)
            if match:
                self.url = match.group(1)
            if line.startswith("Try:"):  # the banner's last line
                break
        self.banner = "".join(lines)
        if not self.url:
            raise RuntimeError(f"stratus did not start: {self.banner}\n{self.log()}")
        return self

    @property
    def address(self):
        host, port = self.url.removeprefix("http://").rsplit(":", 1)
        return host, int(port)

    def client(self, service, config=None, session=boto3, **overrides):
        """A boto3 client for this Stratus, from `session` (see `legacy_sqs_session`); `config` is
        merged over the harness's own."""
        base = Config(retries={"max_attempts": 1}, connect_timeout=5, read_timeout=30)
        config = base.merge(config) if config else base
        return session.client(service, config=config, **{"endpoint_url": self.url, **CREDENTIALS, **overrides})

    def aws(self, *args, access_key="test", check=True):
        """Runs the real awscli against this Stratus; returns the CompletedProcess."""
        env = {**os.environ, "AWS_ACCESS_KEY_ID": access_key, "AWS_SECRET_ACCESS_KEY": "test",
               "AWS_DEFAULT_REGION": "us-east-1", "AWS_ENDPOINT_URL": self.url}
        # --endpoint-url as well as the variable: awscli v1 pins SQS to its legacy endpoint otherwise.
        result = subprocess.run([sys.executable, "-m", "awscli", "--endpoint-url", self.url, *args], env=env, capture_output=True, text=True, timeout=60)
        if check and result.returncode != 0:
            raise AssertionError(f"aws {' '.join(args)} failed ({result.returncode}): {result.stderr}")
        return result

    def docker(self, *args, check=True, timeout=60):
        """Runs the real docker CLI against this Stratus's Docker socket; returns the CompletedProcess."""
        env = {**os.environ, "DOCKER_HOST": f"unix://{self.env['STRATUS_DOCKER_SOCKET']}"}
        result = subprocess.run(["docker", *args], env=env, capture_output=True, text=True, timeout=timeout)
        if check and result.returncode != 0:
            raise AssertionError(f"docker {' '.join(args)} failed ({result.returncode}): {result.stderr}")
        return result

    def connect(self, timeout=10):
        sock = socket.create_connection(self.address, timeout=timeout)
        sock.settimeout(timeout)
        return sock

    def kill_9_under_load(self, worker, threads, calls, after):
        """Runs `threads` threads, each calling `worker(thread)(i)` for i in range(calls), and kills
        this Stratus with SIGKILL once `after` calls have been answered. Returns what the answered
        (acknowledged) calls returned; a call the dying server did not answer stops its thread."""
        acked, lock, stop = [], threading.Lock(), threading.Event()

        def run(n):
            call = worker(n)
            for i in range(calls):
                if stop.is_set():
                    return
                try:
                    result = call(i)
                except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError):
                    return  # the server died under us: this call was never acknowledged
                with lock:
                    acked.append(result)

        running = [threading.Thread(target=run, args=(n,)) for n in range(threads)]
        for thread in running:
            thread.start()
        deadline = time.monotonic() + 120
        while len(acked) < after and time.monotonic() < deadline and any(t.is_alive() for t in running):
            time.sleep(0.01)
        self.stop(sig=signal.SIGKILL)
        stop.set()
        for thread in running:
            thread.join()
        return acked

    def stop(self, sig=signal.SIGTERM, timeout=40):
        if self.process and self.process.poll() is None:
            self.process.send_signal(sig)
            self.process.wait(timeout=timeout)
        shutil.rmtree(self.docker_socket.parent, ignore_errors=True)
        return self.process.returncode

    def log(self):
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
