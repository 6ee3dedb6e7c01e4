"""Container lifecycle through the real docker CLI: restart policies (also across a restart of
Stratus), --init reaping zombies, stop signals and timeouts, rename, top, stats, prune and
events. Containers need root."""

import json
import os
import random
import subprocess
import time

from test_containers import bootstrap, inspect
# The same root and docker CLI requirements, and the `docker` fixture (Stratus with busybox).
from test_containers import docker, pytestmark  # noqa: F401


def wait_for(predicate, timeout=15):
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def test_on_failure_restarts_exactly_n_times(docker):
    docker.docker("run", "-d", "--name", "flaky", "--restart", "on-failure:2", "busybox",
                  "sh", "-c", "echo run; exit 3")
    wait_for(lambda: inspect(docker, "flaky")["State"]["Status"] == "exited" and
             inspect(docker, "flaky")["RestartCount"] == 2)
    time.sleep(1.0)  # a third restart would have come after 400 ms
    container = inspect(docker, "flaky")
    assert (container["RestartCount"], container["State"]["ExitCode"]) == (2, 3)
    assert container["HostConfig"]["RestartPolicy"] == {"Name": "on-failure", "MaximumRetryCount": 2}
    assert docker.docker("logs", "flaky").stdout == "run\nrun\nrun\n"

    docker.docker("run", "-d", "--name", "fine", "--restart", "on-failure", "busybox", "true")
    wait_for(lambda: inspect(docker, "fine")["State"]["Status"] == "exited")
    time.sleep(0.5)
    assert inspect(docker, "fine")["RestartCount"] == 0, "a clean exit is not a failure"


def test_always_restarts_until_stopped(docker):
    docker.docker("run", "-d", "--name", "loop", "--restart", "always", "busybox", "sh", "-c", "sleep 0.2")
    wait_for(lambda: inspect(docker, "loop")["RestartCount"] >= 3)
    docker.docker("stop", "-t", "1", "loop")
    stopped = inspect(docker, "loop")
    assert stopped["State"]["Status"] == "exited"
    time.sleep(1.0)
    assert inspect(docker, "loop")["State"]["Status"] == "exited", "docker stop keeps it stopped"
    assert inspect(docker, "loop")["RestartCount"] == stopped["RestartCount"]
    rm = docker.docker("run", "--rm", "--restart", "always", "busybox", "true", check=False)
    assert rm.returncode == 125 and "restart" in rm.stderr


def test_restart_policies_across_a_restart_of_stratus(start_stratus):
    first = start_stratus("node")
    bootstrap(first)
    first.docker("run", "-d", "--name", "always", "--restart", "always", "busybox", "sleep", "600")
    first.docker("run", "-d", "--name", "unless", "--restart", "unless-stopped", "busybox", "sleep", "600")
    first.docker("run", "-d", "--name", "stopped", "--restart", "unless-stopped", "busybox", "sleep", "600")
    first.docker("run", "-d", "--name", "plain", "busybox", "sleep", "600")
    first.docker("stop", "-t", "0", "stopped")
    first.stop()

    second = start_stratus("node")
    state = lambda name: inspect(second, name)["State"]["Status"]  # noqa: E731
    assert (state("always"), state("unless")) == ("running", "running")
    assert (state("stopped"), state("plain")) == ("exited", "exited"), "a container a user stopped stays stopped"
    second.docker("rm", "-f", "always", "unless", "stopped", "plain")


def zombies_under(pid):
    """Zombie processes anywhere under `pid` on the host."""
    found, children = [], {}
    for entry in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{entry}/stat") as f:
                stat = f.read()
        except (FileNotFoundError, ProcessLookupError):
            continue
        fields = stat.rsplit(")", 1)[1].split()
        children.setdefault(int(fields[1]), []).append((int(entry), fields[0]))
    todo = [pid]
    while todo:
        for child, state in children.get(todo.pop(), []):
            todo.append(child)
            if state == "Z":
                found.append(child)
    return found


def test_init_reaps_orphaned_zombies(docker):
    # The subshell's sleep is orphaned and re-parented to PID 1, which then is `sleep 30`
    # (never reaps) without --init, and tini with it.
    script = "(sleep 0.1 &); exec sleep 30"
    docker.docker("run", "-d", "--name", "bare", "busybox", "sh", "-c", script)
    docker.docker("run", "-d", "--name", "tini", "--init", "busybox", "sh", "-c", script)
    time.sleep(1.0)
    assert len(zombies_under(inspect(docker, "bare")["State"]["Pid"])) == 1, "the control: a zombie stays"
    container = inspect(docker, "tini")
    assert zombies_under(container["State"]["Pid"]) == []
    assert container["HostConfig"]["Init"] is True and container["Path"] == "sh"
    with open(f"/proc/{container['State']['Pid']}/cmdline") as f:
        assert f.read().split("\0")[:2] == ["/sbin/docker-init", "--"]
    docker.docker("rm", "-f", "bare", "tini")


def test_stop_signal_and_timeout(docker):
    trap = "trap 'echo got USR1; exit 0' USR1; while true; do sleep 0.1; done"
    docker.docker("run", "-d", "--name", "polite", "--stop-signal", "USR1", "busybox", "sh", "-c", trap)
    time.sleep(0.3)
    started = time.monotonic()
    docker.docker("stop", "polite")
    assert time.monotonic() - started < 5
    assert inspect(docker, "polite")["State"]["ExitCode"] == 0
    assert docker.docker("logs", "polite").stdout == "got USR1\n"
    assert inspect(docker, "polite")["Config"]["StopSignal"] == "USR1"

    docker.docker("run", "-d", "--name", "stubborn", "--stop-timeout", "1", "busybox", "sleep", "600")
    started = time.monotonic()
    docker.docker("stop", "stubborn")
    elapsed = time.monotonic() - started
    assert 0.9 < elapsed < 5, elapsed
    assert inspect(docker, "stubborn")["State"]["ExitCode"] == 137
    bad = docker.docker("run", "--rm", "--stop-signal", "SIGNOPE", "busybox", "true", check=False)
    assert bad.returncode == 125 and "Invalid signal: SIGNOPE" in bad.stderr


def test_rename_top_stats_and_prune(docker):
    docker.docker("run", "-d", "--name", "old", "-m", "32m", "--pids-limit", "50", "busybox", "sh", "-c",
                  "sleep 600 & sleep 700")
    docker.docker("rename", "old", "new")
    assert inspect(docker, "new")["Name"] == "/new"
    assert docker.docker("inspect", "old", check=False).returncode == 1
    docker.docker("run", "-d", "--name", "other", "busybox", "sleep", "600")
    taken = docker.docker("rename", "new", "other", check=False)
    assert taken.returncode == 1 and 'The container name "/other" is already in use' in taken.stderr
    docker.docker("run", "--name", "old", "busybox", "true")  # the old name is free again

    top = docker.docker("top", "new").stdout.splitlines()
    assert top[0].split()[:3] == ["UID", "PID", "PPID"], top
    commands = sorted(line.split(None, 7)[7] for line in top[1:])
    # busybox sh execs its last command, so PID 1 is `sleep 700`.
    assert commands == ["sleep 600", "sleep 700"], top
    assert "PID" in docker.docker("top", "new", "-o", "pid,comm").stdout

    stats = docker.docker("stats", "--no-stream", "--format", "{{.Name}} {{.MemUsage}} {{.PIDs}} {{.CPUPerc}}",
                          "new").stdout.split()
    assert stats[0] == "new" and stats[-3] == "32MiB" and stats[-2] == "2", stats
    assert stats[-1].endswith("%")
    stopped = docker.docker("top", "old", check=False)
    assert stopped.returncode == 1 and "is not running" in stopped.stderr

    pruned = docker.docker("container", "prune", "-f").stdout
    assert inspect(docker, "new")["State"]["Running"] and "Total reclaimed space" in pruned
    assert docker.docker("ps", "-a", "--format", "{{.Names}}").stdout.split() == ["other", "new"]
    docker.docker("rm", "-f", "new", "other")


def test_stats_count_network_and_block_io(docker, tmp_path):
    gateway = docker.docker("network", "inspect", "bridge", "--format", "{{(index .IPAM.Config 0).Gateway}}").stdout
    docker.docker("run", "-d", "--name", "io", "-v", f"{tmp_path}:/out", "busybox", "sh", "-c",
                  f"ping -c 3 -i 0.2 {gateway.strip()}; dd if=/dev/zero of=/out/f bs=1M count=2 oflag=direct; sleep 600")
    deadline = time.monotonic() + 15
    while not (tmp_path / "f").exists() or (tmp_path / "f").stat().st_size < 2 << 20:
        assert time.monotonic() < deadline
        time.sleep(0.2)
    raw = json.loads(docker.docker("stats", "--no-stream", "--format", "{{json .}}", "io").stdout)
    received, sent = (part.strip() for part in raw["NetIO"].split("/"))
    assert received != "0B" and sent != "0B", raw  # three pings there and back
    written = raw["BlockIO"].split("/")[1].strip()
    assert written.endswith("MB") and float(written[:-2]) >= 2.0, raw  # 2 MiB written directly
    docker.docker("rm", "-f", "io")


def test_stats_count_block_io_to_a_bind_mount_on_another_disk(docker, tmp_path):
    # A disk of its own, new to the kernel (a loop device with an unused number, which losetup
    # makes): the kernel counts a disk's bytes per cgroup only once some cgroup throttles that disk,
    # which Stratus starts (with no limit) when a container binds from it.
    image, mount = tmp_path / "disk.img", tmp_path / "disk"
    subprocess.run(["truncate", "-s", "64M", str(image)], check=True)
    subprocess.run(["mkfs.ext4", "-q", str(image)], check=True)
    device = next(f"/dev/loop{n}" for n in iter(lambda: random.randrange(1000, 60000), None)
                  if not os.path.exists(f"/dev/loop{n}"))
    subprocess.run(["losetup", device, str(image)], check=True)
    try:
        mount.mkdir()
        subprocess.run(["mount", device, str(mount)], check=True)
        docker.docker("run", "-d", "--name", "bindio", "-v", f"{mount}:/out", "busybox", "sh", "-c",
                      "dd if=/dev/zero of=/out/f bs=1M count=2 oflag=direct; sleep 600")
        deadline = time.monotonic() + 15
        while not (mount / "f").exists() or (mount / "f").stat().st_size < 2 << 20:
            assert time.monotonic() < deadline
            time.sleep(0.2)
        raw = json.loads(docker.docker("stats", "--no-stream", "--format", "{{json .}}", "bindio").stdout)
        written = raw["BlockIO"].split("/")[1].strip()
        assert written.endswith("MB") and float(written[:-2]) >= 2.0, raw
    finally:
        docker.docker("rm", "-f", "bindio", check=False)
        subprocess.run(["umount", str(mount)], check=False)
        subprocess.run(["losetup", "-d", device], check=False)


def test_events_replay_and_filter(docker):
    since = f"{time.time() - 1:.3f}"
    docker.docker("volume", "create", "evvol")
    docker.docker("run", "--name", "ev", "--label", "app=demo", "busybox", "sh", "-c", "exit 4", check=False)
    docker.docker("rename", "ev", "ev2")
    docker.docker("rm", "ev2")
    until = f"{time.time():.3f}"
    out = docker.docker("events", "--since", since, "--until", until, "--format",
                        "{{.Type}} {{.Action}} {{.Actor.Attributes.name}} {{.Actor.Attributes.exitCode}}").stdout
    lines = [" ".join(line.replace("<no value>", "").split()) for line in out.splitlines()]
    assert lines == ["volume create", "container create ev", "container start ev", "container die ev 4",
                     "container rename ev2", "container destroy ev2"], lines
    filtered = docker.docker("events", "--since", since, "--until", until, "--filter", "event=die",
                             "--filter", "label=app=demo", "--format", "{{.Actor.ID}}").stdout.split()
    assert len(filtered) == 1 and len(filtered[0]) == 64

    # A follower sees what happens after it started.
    follower = subprocess.Popen(["docker", "events", "--filter", "type=container", "--format", "{{.Action}}"],
                                env={**os.environ, "DOCKER_HOST": f"unix://{docker.env['STRATUS_DOCKER_SOCKET']}"},
                                stdout=subprocess.PIPE, text=True)
    try:
        time.sleep(0.5)
        docker.docker("run", "--rm", "busybox", "true")
        seen = [follower.stdout.readline().strip() for _ in range(4)]
        assert seen == ["create", "start", "die", "destroy"], seen
    finally:
        follower.kill()
        follower.wait()
    bad = docker.docker("events", "--filter", "colour=red", "--until", until, check=False)
    assert bad.returncode == 1 and "invalid filter 'colour'" in bad.stderr


def test_update_changes_limits_and_the_restart_policy(docker):
    docker.docker("run", "-d", "--name", "grow", "-m", "32m", "busybox", "sleep", "600")
    docker.docker("update", "-m", "64m", "--pids-limit", "20", "--cpuset-cpus", "0", "--restart", "on-failure:3",
                  "grow")
    container = inspect(docker, "grow")
    host = container["HostConfig"]
    assert (host["Memory"], host["PidsLimit"], host["CpusetCpus"]) == (64 << 20, 20, "0")
    assert host["RestartPolicy"] == {"Name": "on-failure", "MaximumRetryCount": 3}
    cgroup = f"stratus/{container['Id']}"
    for path, expected in [(f"/sys/fs/cgroup/memory/{cgroup}/memory.limit_in_bytes", str(64 << 20)),
                           (f"/sys/fs/cgroup/{cgroup}/memory.max", str(64 << 20)),
                           (f"/sys/fs/cgroup/pids/{cgroup}/pids.max", "20"),
                           (f"/sys/fs/cgroup/cpuset/{cgroup}/cpuset.cpus", "0")]:
        if os.path.exists(path):
            assert open(path).read().strip() == expected, path
    mem = docker.docker("stats", "--no-stream", "--format", "{{.MemUsage}}", "grow").stdout
    assert mem.strip().endswith("/ 64MiB"), mem
    bad = docker.docker("update", "--restart", "sometimes", "grow", check=False)
    assert bad.returncode != 0 and "restart policy" in bad.stderr, bad.stderr
    missing = docker.docker("update", "-m", "64m", "nope", check=False)
    assert missing.returncode == 1 and "No such container: nope" in missing.stderr
    docker.docker("rm", "-f", "grow")
