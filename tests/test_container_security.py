"""Container security through the real docker CLI: the default seccomp profile and
`--security-opt seccomp=unconfined|<file>`, `--cap-add`/`--cap-drop`, `--privileged`,
`--read-only` and `--security-opt no-new-privileges`. Containers need root."""

import json
import os
import pathlib
import shutil
import subprocess
import tempfile

import pytest

from stratus_harness import BINARY

from test_containers import bootstrap, docker, pytestmark  # noqa: F401 (a fixture and the skip marks)


def status(server, *run_args):
    """The container's /proc/self/status as a dict."""
    out = server.docker("run", "--rm", *run_args, "busybox", "cat", "/proc/self/status").stdout
    return dict(line.split(":\t", 1) for line in out.splitlines() if ":\t" in line)


def test_the_default_seccomp_profile_blocks_what_docker_blocks(docker):
    assert status(docker)["Seccomp"].strip() == "2", "a filter is loaded"
    # Making a user namespace needs no capability, only the syscall: the profile refuses unshare.
    blocked = docker.docker("run", "--rm", "busybox", "unshare", "-U", "true", check=False)
    assert blocked.returncode != 0 and "Operation not permitted" in blocked.stderr, blocked.stderr
    unconfined = docker.docker("run", "--rm", "--security-opt", "seccomp=unconfined", "busybox",
                               "unshare", "-U", "true", check=False)
    assert unconfined.returncode == 0, unconfined.stderr
    assert status(docker, "--security-opt", "seccomp=unconfined")["Seccomp"].strip() == "0"
    info = docker.docker("info", "--format", "{{json .SecurityOptions}}").stdout
    assert "name=seccomp,profile=builtin" in json.loads(info)


CLONE_PROBE = r"""
#define _GNU_SOURCE
#include <errno.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

static void probe(const char *name, long flags) {
    long pid = syscall(SYS_clone, flags | SIGCHLD, 0, 0, 0, 0);
    if (pid == 0) _exit(0);
    if (pid > 0) waitpid(pid, 0, 0);
    printf("%s: %s\n", name, pid > 0 ? "ok" : strerror(errno));
}

int main(void) {
    probe("newuser", CLONE_NEWUSER);
    probe("plain", 0);
    return 0;
}
"""


@pytest.fixture(scope="module")
def clone_probe(tmp_path_factory):
    """A static binary that calls clone(2) with and without CLONE_NEWUSER, which needs no
    capability: only the seccomp filter's rule on clone's flags can refuse it."""
    where = tmp_path_factory.mktemp("probe")
    (where / "probe.c").write_text(CLONE_PROBE)
    subprocess.run(["cc", "-static", "-O2", "-o", str(where / "probe"), str(where / "probe.c")], check=True)
    return where / "probe"


def test_the_filter_holds_clones_flags_and_leaves_docker_capabilities_in_init_and_exec(docker, clone_probe):
    probe = ["-v", f"{clone_probe}:/probe:ro", "busybox", "/probe"]
    assert docker.docker("run", "--rm", *probe).stdout == "newuser: Operation not permitted\nplain: ok\n"
    unconfined = docker.docker("run", "--rm", "--security-opt", "seccomp=unconfined", *probe).stdout
    assert unconfined == "newuser: ok\nplain: ok\n"
    with_admin = docker.docker("run", "--rm", "--cap-add", "SYS_ADMIN", *probe).stdout
    assert with_admin == "newuser: ok\nplain: ok\n"

    # Loading the filter needs capabilities the container does not get; none of them remain.
    docker_caps = "00000000a80425fb"
    init = status(docker)
    assert [init[k].strip() for k in ("CapEff", "CapPrm", "CapBnd", "CapInh", "CapAmb")] == [docker_caps] * 3 + ["0" * 16] * 2
    user = status(docker, "--user", "1000")
    assert [user[k].strip() for k in ("CapEff", "CapPrm", "CapBnd")] == ["0" * 16, "0" * 16, docker_caps]
    cid = docker.docker("run", "-d", *probe[:-1], "sleep", "60").stdout.strip()
    try:
        assert docker.docker("exec", cid, "/probe").stdout == "newuser: Operation not permitted\nplain: ok\n"
        out = docker.docker("exec", cid, "cat", "/proc/self/status").stdout
        exec_status = dict(line.split(":\t", 1) for line in out.splitlines() if ":\t" in line)
        assert exec_status["Seccomp"].strip() == "2"
        assert [exec_status[k].strip() for k in ("CapEff", "CapPrm", "CapBnd")] == [docker_caps] * 3
    finally:
        docker.docker("rm", "-f", cid)


def test_a_seccomp_profile_file_is_applied(docker, tmp_path):
    profile = tmp_path / "profile.json"
    profile.write_text(json.dumps({
        "defaultAction": "SCMP_ACT_ALLOW",
        "syscalls": [{"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO", "errnoRet": 13}],
    }))
    denied = docker.docker("run", "--rm", "--security-opt", f"seccomp={profile}", "busybox",
                           "mkdir", "/tmp/d", check=False)
    assert denied.returncode != 0 and "Permission denied" in denied.stderr, denied.stderr
    assert docker.docker("run", "--rm", "busybox", "mkdir", "/tmp/d").returncode == 0

    profile.write_text('{"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{"names": ["read"], "action": "NOPE"}]}')
    bad = docker.docker("run", "--rm", "--security-opt", f"seccomp={profile}", "busybox", "true", check=False)
    assert bad.returncode == 125 and 'unknown action "NOPE"' in bad.stderr, bad.stderr
    bad = docker.docker("create", "--security-opt", "foo=bar", "busybox", check=False)
    assert bad.returncode != 0 and 'invalid --security-opt 2: "foo=bar"' in bad.stderr, bad.stderr
    assert docker.docker("ps", "-aq").stdout == "", "nothing was left half-created"


def test_capabilities_can_be_added_and_dropped(docker):
    default = int(status(docker)["CapEff"], 16)
    assert default == 0xa80425fb, hex(default)  # Docker's 14 default capabilities
    mount = ["busybox", "mount", "-t", "tmpfs", "none", "/tmp"]
    refused = docker.docker("run", "--rm", *mount, check=False)
    assert refused.returncode != 0 and "permission denied" in refused.stderr, refused.stderr
    # CAP_SYS_ADMIN also lifts the profile's rule on mount, as in Docker.
    assert docker.docker("run", "--rm", "--cap-add", "SYS_ADMIN", *mount).returncode == 0

    dropped = docker.docker("run", "--rm", "--cap-drop", "CHOWN", "busybox", "chown", "1", "/tmp", check=False)
    assert dropped.returncode != 0 and "Operation not permitted" in dropped.stderr
    only = int(status(docker, "--cap-drop", "ALL", "--cap-add", "NET_RAW")["CapEff"], 16)
    assert only == 1 << 13, hex(only)
    container = docker.docker("create", "--cap-add", "NET_ADMIN", "--cap-drop", "MKNOD", "busybox").stdout.strip()
    host_config = json.loads(docker.docker("inspect", container).stdout)[0]["HostConfig"]
    assert (host_config["CapAdd"], host_config["CapDrop"]) == (["CAP_NET_ADMIN"], ["CAP_MKNOD"])
    bad = docker.docker("run", "--rm", "--cap-add", "BOGUS", "busybox", "true", check=False)
    assert bad.returncode == 125 and "unknown capability" in bad.stderr, bad.stderr


def test_privileged_gets_every_capability_no_filter_and_the_host_devices(docker):
    privileged = status(docker, "--privileged")
    host_bounding = next(line for line in open("/proc/self/status") if line.startswith("CapBnd:")).split()[1]
    assert privileged["CapEff"].strip() == host_bounding
    assert privileged["Seccomp"].strip() == "0"
    host_devices = set(os.listdir("/dev"))
    inside = set(docker.docker("run", "--rm", "--privileged", "busybox", "ls", "/dev").stdout.split())
    assert "loop-control" in host_devices & inside
    assert "loop-control" not in docker.docker("run", "--rm", "busybox", "ls", "/dev").stdout.split()
    assert docker.docker("run", "--rm", "--privileged", "busybox", "mount", "-t", "tmpfs", "none", "/tmp").returncode == 0
    assert json.loads(docker.docker("inspect", "--format", "{{json .HostConfig.Privileged}}",
                                    docker.docker("create", "--privileged", "busybox").stdout.strip()).stdout)


def test_read_only_root_and_no_new_privileges(docker):
    written = docker.docker("run", "--rm", "--read-only", "busybox", "touch", "/x", check=False)
    assert written.returncode != 0 and "Read-only file system" in written.stderr, written.stderr
    assert docker.docker("run", "--rm", "busybox", "touch", "/x").returncode == 0
    assert status(docker)["NoNewPrivs"].strip() == "0"
    assert status(docker, "--security-opt", "no-new-privileges")["NoNewPrivs"].strip() == "1"


@pytest.fixture
def reachable_dir():
    """A data directory the remapped root can reach (pytest's own are private to root)."""
    path = tempfile.mkdtemp(prefix="stratus-userns-")
    os.chmod(path, 0o711)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def test_userns_remap_refuses_a_data_dir_the_remapped_root_cannot_reach(tmp_path):
    env = {**os.environ, "STRATUS_DOCKER_SOCKET": str(tmp_path / "d.sock")}
    started = subprocess.run([BINARY, "up", "--port", "0", "--data-dir", str(tmp_path / "data"), "--userns-remap", "default"],
                             capture_output=True, text=True, timeout=30, env=env)
    assert started.returncode != 0 and "searchable by others (chmod o+x)" in started.stderr, started.stderr


def test_userns_remap_makes_container_root_an_unprivileged_host_user(reachable_dir, start_stratus):
    server = start_stratus(args=("--data-dir", reachable_dir, "--userns-remap", "default"))
    server.data_dir = pathlib.Path(reachable_dir)
    bootstrap(server)
    info = json.loads(server.docker("info", "--format", "{{json .SecurityOptions}}").stdout)
    assert "name=userns" in info
    assert server.docker("run", "--rm", "busybox", "cat", "/proc/self/uid_map").stdout.split() == ["0", "100000", "65536"]
    # The image's files are root's inside (the layers are mounted idmapped) ...
    assert server.docker("run", "--rm", "busybox", "stat", "-c", "%u:%g", "/bin/busybox").stdout == "0:0\n"
    # ... and what root writes there is the mapped user's on the host.
    server.docker("run", "--name", "writer", "busybox", "sh", "-c", "id -u; touch /made-here")
    container = json.loads(server.docker("inspect", "writer").stdout)[0]
    made = os.stat(os.path.join(container["GraphDriver"]["Data"]["UpperDir"], "made-here"))
    assert (made.st_uid, made.st_gid) == (100000, 100000)
    assert server.docker("logs", "writer").stdout == "0\n", "root inside"

    server.docker("run", "-d", "--name", "sleeper", "busybox", "sleep", "30")
    pid = json.loads(server.docker("inspect", "sleeper").stdout)[0]["State"]["Pid"]
    with open(f"/proc/{pid}/status") as status:
        uids = next(line for line in status if line.startswith("Uid:")).split()[1:]
    assert uids == ["100000"] * 4, "not root on the host"
    server.docker("rm", "-f", "sleeper")

    refused = server.docker("run", "--rm", "--privileged", "busybox", "true", check=False)
    assert refused.returncode == 125 and "privileged mode is incompatible with user namespaces" in refused.stderr
    host = server.docker("run", "--rm", "--userns", "host", "busybox", "cat", "/proc/self/uid_map").stdout.split()
    assert host == ["0", "0", "4294967295"]
