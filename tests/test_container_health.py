"""Health checks through the docker CLI and docker-compose: HEALTHCHECK, SHELL and ONBUILD kept
in image configs (build, commit --change, save/load, inspect), checks run as execs in the
container (starting -> healthy, unhealthy after retries, timeouts), `--health-*` and
`--no-healthcheck`, `docker ps` status and `health=` filter, `health_status` events, compose's
`condition: service_healthy`, and ONBUILD triggers running in a child build."""

import datetime
import http.client
import json
import os
import re
import socket
import shutil
import subprocess
import time

import pytest

from test_build import build, context
from test_containers import bootstrap, docker, inspect  # noqa: F401 (docker is a fixture)

pytestmark = [
    pytest.mark.skipif(os.geteuid() != 0, reason="containers need root (namespaces, overlayfs, cgroups)"),
    pytest.mark.skipif(shutil.which("docker") is None, reason="the docker CLI is not installed"),
]

SECOND = 1_000_000_000

HEALTHY_IMAGE = """\
FROM busybox
SHELL ["/bin/sh", "-ec"]
HEALTHCHECK --interval=1s --timeout=2s --start-period=30s --start-interval=300ms --retries=2 \\
    CMD test -e /tmp/ready && echo ready
ONBUILD RUN echo triggered > /onbuild.txt
CMD ["sleep", "600"]
"""


def wait_for(predicate, timeout=15, what="the condition"):
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def parse_time(text):
    """An RFC 3339 time with up to nanoseconds, as Python reads them (microseconds)."""
    return datetime.datetime.fromisoformat(re.sub(r"(\.\d{6})\d*", r"\1", text).replace("Z", "+00:00"))


def create(server, body):
    """POST /containers/create over the Docker socket; returns (status, body text)."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.connect(server.env["STRATUS_DOCKER_SOCKET"])
    connection = http.client.HTTPConnection("localhost")
    connection.sock = sock
    connection.request("POST", "/v1.47/containers/create", body=json.dumps(body),
                       headers={"Content-Type": "application/json"})
    response = connection.getresponse()
    return response.status, response.read().decode()


def health(server, name):
    return inspect(server, name)["State"].get("Health")


def test_build_keeps_healthcheck_shell_and_onbuild_through_save_and_load(docker, tmp_path):
    build(docker, context(tmp_path, HEALTHY_IMAGE), "-t", "checked")
    config = inspect(docker, "checked")["Config"]
    assert config["Healthcheck"] == {
        "Test": ["CMD-SHELL", "test -e /tmp/ready && echo ready"],
        "Interval": SECOND, "Timeout": 2 * SECOND, "StartPeriod": 30 * SECOND,
        "StartInterval": 300_000_000, "Retries": 2,
    }
    assert config["Shell"] == ["/bin/sh", "-ec"]
    assert config["OnBuild"] == ["RUN echo triggered > /onbuild.txt"]
    image_id = inspect(docker, "checked")["Id"]
    history = docker.docker("history", "--no-trunc", "--format", "{{.CreatedBy}}", "checked").stdout
    assert "HEALTHCHECK &{[\"CMD-SHELL\" \"test -e /tmp/ready && echo ready\"] \"1s\" \"2s\"" in history

    archive = tmp_path / "checked.tar"
    docker.docker("save", "-o", str(archive), "checked")
    docker.docker("rmi", "checked")
    docker.docker("load", "-i", str(archive))
    reloaded = inspect(docker, "checked")
    assert reloaded["Id"] == image_id and reloaded["Config"]["Healthcheck"] == config["Healthcheck"]

    # HEALTHCHECK NONE disables an inherited check; the config says so as Docker does.
    build(docker, context(tmp_path, "FROM checked\nHEALTHCHECK NONE\n"), "-t", "unchecked")
    assert inspect(docker, "unchecked")["Config"]["Healthcheck"] == {"Test": ["NONE"]}
    bad = build(docker, context(tmp_path, "FROM busybox\nHEALTHCHECK --retries=-1 CMD true\n"), check=False)
    assert bad.returncode != 0 and "--retries cannot be negative (-1)" in bad.stderr, bad.stderr


def test_commit_changes_set_healthcheck_and_onbuild(docker):
    docker.docker("create", "--name", "base", "--health-cmd", "true", "--health-retries", "5", "busybox")
    docker.docker("commit", "--change", "ONBUILD RUN true", "base", "committed")
    config = inspect(docker, "committed")["Config"]
    assert config["Healthcheck"] == {"Test": ["CMD-SHELL", "true"], "Retries": 5}
    assert config["OnBuild"] == ["RUN true"]
    docker.docker("commit", "--change", 'HEALTHCHECK --interval=3s CMD ["true"]', "base", "committed2")
    assert inspect(docker, "committed2")["Config"]["Healthcheck"] == {"Test": ["CMD", "true"], "Interval": 3 * SECOND}
    docker.docker("rm", "base")


def test_a_container_goes_from_starting_to_healthy_with_events(docker, tmp_path):
    build(docker, context(tmp_path, HEALTHY_IMAGE), "-t", "checked")
    since = f"{time.time() - 1:.3f}"
    docker.docker("run", "-d", "--name", "svc", "checked")
    assert health(docker, "svc")["Status"] == "starting"
    assert "(health: starting)" in docker.docker("ps", "--format", "{{.Status}}").stdout
    # Failures within the start period do not count: it stays starting, probed every 300 ms.
    wait_for(lambda: len(health(docker, "svc")["Log"]) >= 2, what="two probes")
    state = health(docker, "svc")
    assert state["Status"] == "starting" and state["FailingStreak"] == 0
    assert state["Log"][0]["ExitCode"] == 1

    docker.docker("exec", "svc", "touch", "/tmp/ready")
    wait_for(lambda: health(docker, "svc")["Status"] == "healthy", what="healthy")
    last = health(docker, "svc")["Log"][-1]
    assert last["ExitCode"] == 0 and last["Output"] == "ready\n" and last["Start"] <= last["End"]
    status = docker.docker("ps", "--format", "{{.Status}}").stdout.strip()
    assert status.startswith("Up ") and status.endswith("(healthy)"), status
    assert docker.docker("ps", "-q", "--filter", "health=healthy").stdout.split() == [inspect(docker, "svc")["Id"][:12]]
    assert docker.docker("ps", "-q", "--filter", "health=starting").stdout == ""

    until = f"{time.time():.3f}"
    events = docker.docker("events", "--since", since, "--until", until, "--filter", "container=svc",
                           "--format", "{{.Action}}").stdout.splitlines()
    assert "health_status: healthy" in events, events
    # The checks end with the container.
    docker.docker("stop", "-t", "1", "svc")
    probes = len(health(docker, "svc")["Log"])
    time.sleep(1.5)
    assert len(health(docker, "svc")["Log"]) == probes
    docker.docker("rm", "svc")


def test_run_flags_make_a_container_unhealthy_after_its_retries(docker):
    docker.docker("run", "-d", "--name", "sick", "--health-cmd", "echo failing; exit 1",
                  "--health-interval", "200ms", "--health-retries", "3", "busybox", "sleep", "600")
    wait_for(lambda: health(docker, "sick")["Status"] == "unhealthy", what="unhealthy")
    state = health(docker, "sick")
    assert state["FailingStreak"] == 3 and [p["ExitCode"] for p in state["Log"]] == [1, 1, 1]
    assert state["Log"][-1]["Output"] == "failing\n"
    assert docker.docker("ps", "--format", "{{.Status}}").stdout.strip().endswith("(unhealthy)")
    assert docker.docker("ps", "-q", "--filter", "health=unhealthy").stdout.strip() != ""
    # The log keeps the last five probes.
    wait_for(lambda: health(docker, "sick")["FailingStreak"] >= 7, what="more probes")
    assert len(health(docker, "sick")["Log"]) == 5
    docker.docker("rm", "-f", "sick")


def test_a_probe_that_outlives_its_timeout_is_killed(docker):
    docker.docker("run", "-d", "--name", "slow", "--health-cmd", "sleep 5", "--health-interval", "300ms",
                  "--health-timeout", "200ms", "--health-retries", "1", "busybox", "sleep", "600")
    wait_for(lambda: health(docker, "slow")["Status"] == "unhealthy", what="unhealthy")
    probe = health(docker, "slow")["Log"][0]
    assert probe["ExitCode"] == -1 and probe["Output"] == "Health check exceeded timeout (200ms)"
    # Killed probes do not pile up: at most the one under way is left.
    top = docker.docker("top", "slow").stdout
    assert top.count("sleep 5") <= 1, top
    docker.docker("rm", "-f", "slow")


def test_a_probe_counts_by_its_exit_even_if_a_child_keeps_its_output_open(docker):
    docker.docker("run", "-d", "--name", "forks", "--health-cmd", "sleep 60 & echo forked", "--health-interval",
                  "200ms", "--health-timeout", "300ms", "busybox", "sleep", "600")
    wait_for(lambda: health(docker, "forks")["Status"] == "healthy", what="healthy")
    probe = health(docker, "forks")["Log"][0]
    assert probe["ExitCode"] == 0 and probe["Output"] == "forked\n", probe
    docker.docker("rm", "-f", "forks")


def test_no_healthcheck_disables_the_image_check(docker, tmp_path):
    build(docker, context(tmp_path, HEALTHY_IMAGE), "-t", "checked")
    docker.docker("run", "-d", "--name", "quiet", "--no-healthcheck", "checked")
    container = inspect(docker, "quiet")
    assert container["Config"]["Healthcheck"]["Test"] == ["NONE"]
    assert container["State"].get("Health") is None
    assert docker.docker("ps", "--format", "{{.Status}}").stdout.strip().startswith("Up")
    assert "health" not in docker.docker("ps", "--format", "{{.Status}}").stdout
    assert docker.docker("ps", "-q", "--filter", "health=none").stdout.strip() != ""
    # The CLI checks its flags itself; the daemon refuses what other clients send, creating nothing.
    for check, message in [({"Test": ["CMD", "true"], "Retries": -1}, "Retries in Healthcheck cannot be negative"),
                           ({"Test": ["CMD", "true"], "Interval": 5}, "Interval in Healthcheck cannot be less than 1ms")]:
        status, body = create(docker, {"Image": "busybox", "Healthcheck": check})
        assert (status, json.loads(body)) == (400, {"message": message})
    assert docker.docker("ps", "-aq").stdout.split() == [container["Id"][:12]]
    docker.docker("rm", "-f", "quiet")


def test_onbuild_triggers_run_in_the_child_build(docker, tmp_path):
    build(docker, context(tmp_path, HEALTHY_IMAGE), "-t", "checked")
    out = build(docker, context(tmp_path, "FROM checked\nRUN cat /onbuild.txt\n"), "-t", "child").stdout
    assert "Executing 1 build trigger" in out and "triggered" in out, out
    child = inspect(docker, "child")["Config"]
    assert child.get("OnBuild") is None, "triggers are not inherited by grandchildren"
    assert child["Healthcheck"]["Retries"] == 2 and child["Shell"] == ["/bin/sh", "-ec"]


COMPOSE = """\
version: "2.4"
services:
  db:
    image: busybox
    command: ["sh", "-c", "sleep 1; touch /tmp/up; sleep 600"]
    stop_signal: SIGKILL
    healthcheck:
      test: ["CMD", "test", "-e", "/tmp/up"]
      interval: 300ms
      retries: 20
  app:
    image: busybox
    command: ["sleep", "600"]
    stop_signal: SIGKILL
    depends_on:
      db:
        condition: service_healthy
"""


@pytest.mark.skipif(shutil.which("docker-compose") is None, reason="docker-compose is not installed")
def test_compose_waits_for_a_healthy_dependency(stratus, tmp_path):
    bootstrap(stratus)
    (tmp_path / "docker-compose.yml").write_text(COMPOSE)
    env = {**os.environ, "DOCKER_HOST": f"unix://{stratus.env['STRATUS_DOCKER_SOCKET']}"}

    def compose(*args):
        return subprocess.run(["docker-compose", "-p", "hc", *args], cwd=tmp_path, env=env,
                              capture_output=True, text=True, timeout=120)

    try:
        up = compose("up", "-d")
        assert up.returncode == 0, up.stderr
        db = inspect(stratus, "hc_db_1")
        app = inspect(stratus, "hc_app_1")
        assert db["State"]["Health"]["Status"] == "healthy" and app["State"]["Running"]
        healthy_at = next(p["End"] for p in db["State"]["Health"]["Log"] if p["ExitCode"] == 0)
        assert parse_time(app["State"]["StartedAt"]) >= parse_time(healthy_at), "app started before db was healthy"
    finally:
        compose("down")
