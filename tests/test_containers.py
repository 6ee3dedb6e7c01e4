"""The container engine through the real docker CLI: images, run, logs, stop, rm, inspect,
isolation (PID and UTS namespaces) and cgroup limits (OOM kill, pids). Containers need root."""

import json
import os
import shutil
import signal
import socket
import subprocess
import time

import pytest

from stratus_harness import BINARY

pytestmark = [
    pytest.mark.skipif(os.geteuid() != 0, reason="containers need root (namespaces, overlayfs, cgroups)"),
    pytest.mark.skipif(shutil.which("docker") is None, reason="the docker CLI is not installed"),
]


def bootstrap(server):
    result = subprocess.run([BINARY, "image", "bootstrap", "busybox", "--data-dir", str(server.data_dir)],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    return result.stdout


@pytest.fixture
def docker(stratus):
    bootstrap(stratus)
    return stratus


def inspect(server, name):
    return json.loads(server.docker("inspect", name).stdout)[0]


def test_bootstrap_shows_progress_and_stores_a_layer_once(stratus):
    first = bootstrap(stratus)
    assert "Reading /bin/busybox" in first and ": stored" in first and "tagged busybox:latest" in first
    second = bootstrap(stratus)
    assert "already stored" in second
    assert first.splitlines()[-1] == second.splitlines()[-1], "the same binary makes the same image"
    blobs = list((stratus.data_dir / "containers/images/blobs/sha256").iterdir())
    assert len(blobs) == 3, "one layer, one config, one manifest"


def test_version_images_inspect_tag_and_rmi(docker):
    version = docker.docker("version").stdout
    assert "Server: Stratus" in version and "API version:      1.47" in version
    images = docker.docker("images", "--format", "{{.Repository}}:{{.Tag}}").stdout.split()
    assert images == ["busybox:latest"]
    image = inspect(docker, "busybox")
    assert image["Config"]["Cmd"] == ["sh"] and image["RootFS"]["Type"] == "layers"
    assert image["Id"].startswith("sha256:") and image["Os"] == "linux"
    docker.docker("tag", "busybox", "mybox:v1")
    assert inspect(docker, "mybox:v1")["Id"] == image["Id"]
    removed = docker.docker("rmi", "mybox:v1").stdout
    assert "Untagged: mybox:v1" in removed
    missing = docker.docker("inspect", "nosuch:1", check=False)
    assert missing.returncode != 0 and "No such object: nosuch:1" in missing.stderr


def test_run_prints_output_and_returns_the_exit_code(docker):
    assert docker.docker("run", "--rm", "busybox", "echo", "hi").stdout == "hi\n"
    result = docker.docker("run", "--rm", "busybox", "sh", "-c", "echo out; echo err >&2; exit 3", check=False)
    assert (result.returncode, result.stdout, result.stderr) == (3, "out\n", "err\n")
    assert docker.docker("ps", "-aq").stdout == "", "--rm removed both containers"


def test_detached_container_lifecycle(docker):
    cid = docker.docker("run", "-d", "--name", "web", "-e", "GREETING=hello", "busybox",
                        "sh", "-c", "echo $GREETING; echo oops >&2; sleep 30").stdout.strip()
    assert len(cid) == 64
    ps = docker.docker("ps", "--format", "{{.ID}} {{.Names}} {{.Status}}").stdout
    assert ps.startswith(f"{cid[:12]} web Up"), ps
    state = inspect(docker, "web")["State"]
    assert state["Running"] and state["Pid"] > 0 and state["Status"] == "running"
    logs = docker.docker("logs", "web")
    assert (logs.stdout, logs.stderr) == ("hello\n", "oops\n")

    docker.docker("stop", "-t", "1", "web")
    state = inspect(docker, "web")["State"]
    # busybox sh as PID 1 ignores SIGTERM, so stop ends it with SIGKILL.
    assert (state["Status"], state["ExitCode"], state["OOMKilled"]) == ("exited", 137, False)
    assert "Exited (137)" in docker.docker("ps", "-a", "--format", "{{.Status}}").stdout
    assert docker.docker("ps", "-q").stdout == ""
    docker.docker("rm", "web")
    gone = docker.docker("logs", "web", check=False)
    assert gone.returncode != 0 and "No such container: web" in gone.stderr
    assert not (docker.data_dir / "containers/run" / cid).exists()
    # Its files were moved aside and are deleted in the background.
    deadline = time.monotonic() + 10
    while (docker.data_dir / "containers/removed" / cid).exists():
        assert time.monotonic() < deadline, "a removed container's files stayed"
        time.sleep(0.05)


def test_logs_follow_until_the_container_exits(docker):
    docker.docker("run", "-d", "--name", "tick", "busybox",
                  "sh", "-c", "for i in 1 2 3; do echo tick $i; sleep 0.3; done")
    started = time.monotonic()
    followed = docker.docker("logs", "-f", "tick", timeout=20).stdout
    assert followed == "tick 1\ntick 2\ntick 3\n" and time.monotonic() - started < 10
    assert docker.docker("logs", "--tail", "1", "tick").stdout == "tick 3\n"
    stamped = docker.docker("logs", "-t", "tick").stdout.splitlines()
    assert stamped[0].endswith("Z tick 1") and stamped[0].startswith("20"), stamped


def test_a_container_sees_only_its_own_processes_hostname_and_network(docker):
    ps = docker.docker("run", "--rm", "busybox", "sh", "-c", "ps -o pid,args; true").stdout.splitlines()
    pids = {line.split()[0]: line for line in ps[1:]}
    assert len(pids) == 2, ps  # sh and ps, nothing of the host's
    assert "sh -c ps -o pid,args; true" in pids["1"], "PID 1 is the entrypoint"

    cid = docker.docker("run", "--name", "iso", "busybox", "hostname").stdout
    assert cid.strip() == inspect(docker, "iso")["Id"][:12] != socket.gethostname()
    assert docker.docker("run", "--rm", "--hostname", "box", "busybox", "hostname").stdout == "box\n"

    interfaces = docker.docker("run", "--rm", "busybox", "cat", "/proc/net/dev").stdout
    names = [line.split(":")[0].strip() for line in interfaces.splitlines()[2:]]
    assert sorted(names) == ["eth0", "lo"], names

    # Its own mount table: its root is the overlay, and none of the host's other mount points (the
    # ones every container has too aside: /proc, /sys, /dev..., its own cgroups) is there.
    table = docker.docker("run", "--rm", "busybox", "cat", "/proc/mounts").stdout.splitlines()
    assert table[0].split()[:3] == ["overlay", "/", "overlay"], table
    standard = ("/proc", "/sys", "/dev", "/etc/hosts", "/etc/resolv.conf", "/etc/hostname")
    host = {line.split()[1] for line in open("/proc/mounts")}
    shared = {m for m in host & {line.split()[1] for line in table} if m != "/" and not m.startswith(standard)}
    assert not shared, shared


def test_memory_limit_oom_kills_and_reports_it(docker):
    hog = docker.docker("run", "--name", "hog", "-m", "16m", "busybox",
                        "sh", "-c", "x=a; while true; do x=$x$x; done", check=False)
    assert hog.returncode == 137, hog.stderr
    container = inspect(docker, "hog")
    assert container["State"]["OOMKilled"] is True
    assert container["HostConfig"]["Memory"] == 16 * 1024 * 1024


def test_pids_limit_stops_forks(docker):
    result = docker.docker("run", "--rm", "--pids-limit", "4", "busybox",
                           "sh", "-c", "for i in 1 2 3 4 5 6; do sleep 2 & done; wait", check=False)
    assert "can't fork" in result.stderr, result.stderr


def test_cpus_holds_a_busy_loop_near_half_a_core(docker):
    cid = docker.docker("run", "-d", "--cpus", "0.5", "busybox", "sh", "-c", "while :; do :; done").stdout.strip()
    try:
        usage = f"/sys/fs/cgroup/cpuacct/stratus/{cid}/cpuacct.usage"
        assert open(f"/sys/fs/cgroup/cpu/stratus/{cid}/cpu.cfs_quota_us").read().strip() == "50000"
        time.sleep(0.5)
        start, started = int(open(usage).read()), time.monotonic()
        time.sleep(3)
        share = (int(open(usage).read()) - start) / 1e9 / (time.monotonic() - started)
        # At most half a core (CFS enforces it per 100 ms period); at least some of it, or the loop never ran.
        assert 0.2 < share < 0.6, share
    finally:
        docker.docker("rm", "-f", cid)


def test_cpuset_pins_cpus_and_block_io_limits_apply_or_are_discarded_with_dockers_warning(docker, tmp_path):
    cpus = open("/sys/fs/cgroup/cpuset/cpuset.cpus").read().strip()
    last = cpus.replace("-", ",").split(",")[-1]
    pinned = docker.docker("run", "--rm", "--cpuset-cpus", last, "busybox", "grep", "Cpus_allowed_list", "/proc/self/status")
    assert pinned.stdout.split() == ["Cpus_allowed_list:", last], pinned.stdout
    missing = docker.docker("run", "--rm", "--cpuset-cpus", "0-63", "busybox", "true", check=False)
    assert missing.returncode == 125, missing.stderr
    assert f"Requested CPUs are not available - requested 0-63, available: {cpus}" in missing.stderr
    bad = docker.docker("run", "--rm", "--cpuset-mems", "x", "busybox", "true", check=False)
    assert bad.returncode == 125 and "Invalid value x for cpuset mems" in bad.stderr, bad.stderr

    # A write throttle on the disk under the test's directory: 3 MiB of direct writes at 1 MiB/s.
    device = os.stat(tmp_path).st_dev
    disk = os.path.realpath(f"/sys/dev/block/{os.major(device)}:{os.minor(device)}")
    if os.path.exists(os.path.join(disk, "partition")):
        disk = os.path.dirname(disk)
    disk = "/dev/" + os.path.basename(disk)
    blkio = "/sys/fs/cgroup/blkio"
    started = time.monotonic()
    written = docker.docker("run", "--name", "slow", "--device-write-bps", f"{disk}:1mb", "-v", f"{tmp_path}:/out",
                            "busybox", "dd", "if=/dev/zero", "of=/out/f", "bs=1M", "count=3", "oflag=direct")
    assert time.monotonic() - started > 1.5, written.stderr
    host = inspect(docker, "slow")["HostConfig"]
    assert host["BlkioDeviceWriteBps"] == [{"Path": disk, "Rate": 1 << 20}] and host["CpusetCpus"] == ""
    docker.docker("rm", "slow")

    weighted = docker.docker("create", "--blkio-weight", "300", "busybox", check=False)
    if os.path.exists(f"{blkio}/blkio.weight") or os.path.exists(f"{blkio}/blkio.bfq.weight"):
        assert inspect(docker, weighted.stdout.strip())["HostConfig"]["BlkioWeight"] == 300
        out_of_range = docker.docker("run", "--rm", "--blkio-weight", "5", "busybox", "true", check=False)
        assert "Range of blkio weight is from 10 to 1000" in out_of_range.stderr, out_of_range.stderr
    else:  # as dockerd on a host without the file (which discards before checking the range)
        assert "Your kernel does not support Block I/O weight or the cgroup is not mounted. Weight discarded." \
            in weighted.stderr, weighted.stderr
        assert inspect(docker, weighted.stdout.strip())["HostConfig"]["BlkioWeight"] == 0
    docker.docker("rm", weighted.stdout.strip())


def test_errors_come_back_in_dockers_words(docker):
    docker.docker("run", "-d", "--name", "dup", "busybox", "sleep", "30")
    clash = docker.docker("run", "--name", "dup", "busybox", "true", check=False)
    assert clash.returncode == 125 and 'The container name "/dup" is already in use' in clash.stderr
    running = docker.docker("rm", "dup", check=False)
    assert running.returncode != 0 and "container is running" in running.stderr
    docker.docker("rm", "-f", "dup")
    missing = docker.docker("run", "--rm", "nosuch", check=False)
    assert missing.returncode == 125 and "cannot pull images" in missing.stderr
    bad_memory = docker.docker("run", "--rm", "-m", "1m", "busybox", "true", check=False)
    assert "Minimum memory limit allowed is 6MB" in bad_memory.stderr
    unsupported = docker.docker("run", "--rm", "--network", "container:dup", "busybox", "true", check=False)
    assert unsupported.returncode == 125 and "network namespace is not supported" in unsupported.stderr
    assert docker.docker("ps", "-aq").stdout == "", "nothing was left half-created"


def test_containers_survive_a_restart(start_stratus):
    first = start_stratus("node")
    bootstrap(first)
    first.docker("run", "--name", "done", "busybox", "sh", "-c", "echo bye; exit 7", check=False)
    first.docker("run", "-d", "--name", "busy", "busybox", "sleep", "60")
    first.stop()
    with open("/proc/mounts") as mounts:
        assert str(first.data_dir) not in mounts.read(), "stopping Stratus unmounts container roots"
    # What a crash left aside between a removal and its background deletion.
    aside = first.data_dir / "containers/removed/left-by-a-crash"
    (aside / "rootfs").mkdir(parents=True)

    second = start_stratus("node")
    assert not aside.exists(), "the next start deletes what was left aside"
    done = inspect(second, "done")["State"]
    busy = inspect(second, "busy")["State"]
    assert (done["Status"], done["ExitCode"]) == ("exited", 7)
    assert (busy["Status"], busy["ExitCode"]) == ("exited", 137), "stopped (SIGKILL after the grace) at shutdown"
    assert second.docker("logs", "done").stdout == "bye\n"
    assert second.docker("start", "busy").returncode == 0
    assert inspect(second, "busy")["State"]["Running"]
    second.docker("rm", "-f", "busy", "done")


def test_sigkill_of_stratus_leaves_no_container_behind(start_stratus):
    server = start_stratus()
    bootstrap(server)
    server.docker("run", "-d", "busybox", "sleep", "4321")
    assert subprocess.run(["pgrep", "-f", "sleep 4321"], capture_output=True).returncode == 0
    server.stop(sig=signal.SIGKILL)

    def leftovers():
        with open("/proc/mounts") as mounts:
            mounted = str(server.data_dir) in mounts.read()
        running = subprocess.run(["pgrep", "-f", "sleep 4321"], capture_output=True).returncode == 0
        return running, mounted

    # The runtime process sees its socket close, kills its containers and unmounts their roots.
    deadline = time.monotonic() + 10
    while leftovers() != (False, False):
        assert time.monotonic() < deadline, f"(process running, root mounted) = {leftovers()}"
        time.sleep(0.05)
