"""docker exec, docker run -i/-it and docker attach through the real docker CLI, with a real
terminal (a pty from Python's pty module) where the CLI needs one. Containers need root."""

import fcntl
import os
import pty
import select
import shutil
import struct
import subprocess
import termios
import time

import pytest

from test_containers import docker, inspect  # noqa: F401 (docker is a fixture)

pytestmark = [
    pytest.mark.skipif(os.geteuid() != 0, reason="containers need root (namespaces, overlayfs, cgroups)"),
    pytest.mark.skipif(shutil.which("docker") is None, reason="the docker CLI is not installed"),
]


class Terminal:
    """The docker CLI on a terminal of its own, driven like a person at a keyboard."""

    def __init__(self, server, *args, rows=24, columns=80):
        env = {**os.environ, "DOCKER_HOST": f"unix://{server.env['STRATUS_DOCKER_SOCKET']}", "TERM": "xterm"}
        self.pid, self.fd = pty.fork()
        if self.pid == 0:
            fcntl.ioctl(0, termios.TIOCSWINSZ, struct.pack("HHHH", rows, columns, 0, 0))
            os.execvpe("docker", ["docker", *args], env)
        self.output = b""

    def expect(self, text, timeout=15):
        """Reads until `text` shows up after what earlier calls consumed; returns what came before it."""
        deadline = time.monotonic() + timeout
        while text.encode() not in self.output:
            remaining = deadline - time.monotonic()
            assert remaining > 0, f"{text!r} never came; got {self.output!r}"
            if select.select([self.fd], [], [], remaining)[0]:
                try:
                    chunk = os.read(self.fd, 4096)
                except OSError:
                    chunk = b""
                assert chunk, f"the terminal closed before {text!r}; got {self.output!r}"
                self.output += chunk
        before, _, self.output = self.output.partition(text.encode())
        return before.decode(errors="replace")

    def send(self, text):
        os.write(self.fd, text.encode())

    def resize(self, rows, columns):
        # The kernel tells the CLI with SIGWINCH; the CLI tells Stratus.
        fcntl.ioctl(self.fd, termios.TIOCSWINSZ, struct.pack("HHHH", rows, columns, 0, 0))

    def wait(self, timeout=15):
        """Reads to the end; returns the CLI's exit code."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if select.select([self.fd], [], [], 0.2)[0]:
                try:
                    if os.read(self.fd, 4096):
                        continue
                except OSError:
                    pass
            pid, status = os.waitpid(self.pid, os.WNOHANG)
            if pid:
                os.close(self.fd)
                return os.waitstatus_to_exitcode(status)
        os.kill(self.pid, 9)
        raise AssertionError("the docker CLI did not exit")


def run_line(terminal, command):
    """Types `command` into the shell on `terminal` and returns what it printed. The line's echo is
    not matched: the shell's line editor redraws the line when a resize (SIGWINCH) lands while it is
    being typed, as the docker CLI's own resize after attaching can. The output starts after `42x`,
    which only the shell's arithmetic prints."""
    terminal.send(f"echo $((6*7))x; {command}\r")
    terminal.expect("42x\r\n")
    return terminal.expect("prompt> ")


def check_terminal_and_resize(terminal, rows, columns):
    """The shell on `terminal` (prompt `prompt> `) is on /dev/pts/0 at 24x80 and follows a resize."""
    terminal.expect("prompt> ")
    assert run_line(terminal, "tty; stty size").split() == ["/dev/pts/0", "24", "80"]
    terminal.resize(rows, columns)
    time.sleep(0.5)
    assert run_line(terminal, "stty size").split() == [str(rows), str(columns)]


def test_exec_joins_the_containers_namespaces_and_cgroup(docker):
    docker.docker("run", "-d", "--name", "box", "-e", "GREETING=hello", "busybox", "sleep", "300")
    ps = docker.docker("exec", "box", "ps", "-o", "pid,args").stdout.splitlines()
    assert [line.split(None, 1) for line in ps[1:]] == [["1", "sleep 300"], [ps[2].split()[0], "ps -o pid,args"]], ps
    same = docker.docker("exec", "box", "sh", "-c", 'for n in pid net mnt uts ipc cgroup; do '
                         '[ "$(readlink /proc/self/ns/$n)" = "$(readlink /proc/1/ns/$n)" ] || echo $n differs; done; '
                         'cmp /proc/self/cgroup /proc/1/cgroup && echo same').stdout
    assert same == "same\n"
    assert docker.docker("exec", "box", "hostname").stdout.strip() == inspect(docker, "box")["Id"][:12]
    assert docker.docker("exec", "box", "sh", "-c", "echo $GREETING").stdout == "hello\n", "the container's env"


def test_exec_user_env_workdir_exit_codes_and_streams(docker):
    docker.docker("run", "-d", "--name", "box", "busybox", "sleep", "300")
    assert docker.docker("exec", "-u", "nobody", "box", "id", "-u").stdout == "65534\n"
    assert docker.docker("exec", "--user", "1000:1000", "box", "id").stdout.startswith("uid=1000 gid=1000")
    assert docker.docker("exec", "-e", "A=1", "-e", "B=two", "box", "sh", "-c", "echo $A $B").stdout == "1 two\n"
    assert docker.docker("exec", "-w", "/tmp", "box", "pwd").stdout == "/tmp\n"
    result = docker.docker("exec", "box", "sh", "-c", "echo out; echo err >&2; exit 5", check=False)
    assert (result.returncode, result.stdout, result.stderr) == (5, "out\n", "err\n")
    piped = subprocess.run(["docker", "exec", "-i", "box", "sh", "-c", "cat; echo done"], input="hi\nthere\n",
                           capture_output=True, text=True, timeout=30,
                           env={**os.environ, "DOCKER_HOST": f"unix://{docker.env['STRATUS_DOCKER_SOCKET']}"})
    assert (piped.returncode, piped.stdout) == (0, "hi\nthere\ndone\n"), piped.stderr
    assert inspect(docker, "box")["ExecIDs"] is None
    docker.docker("exec", "-d", "box", "sh", "-c", "sleep 0.5; echo made > /tmp/marker")
    assert len(inspect(docker, "box")["ExecIDs"]) == 1, "the detached exec runs"
    deadline = time.monotonic() + 10
    while docker.docker("exec", "box", "cat", "/tmp/marker", check=False).stdout != "made\n":
        assert time.monotonic() < deadline, "the detached exec never ran"
        time.sleep(0.1)


def test_exec_publishes_dockers_events(docker):
    docker.docker("run", "-d", "--name", "evx", "busybox", "sleep", "600")
    since = f"{time.time():.3f}"
    docker.docker("exec", "evx", "sh", "-c", "exit 3", check=False)
    until = f"{time.time():.3f}"
    out = docker.docker("events", "--since", since, "--until", until, "--filter", "container=evx", "--format",
                        "{{.Action}}|{{.Actor.Attributes.execID}}|{{.Actor.Attributes.exitCode}}").stdout
    rows = [line.split("|") for line in out.splitlines()]
    assert [r[0] for r in rows] == ["exec_create: sh -c exit 3", "exec_start: sh -c exit 3", "exec_die"], rows
    assert len({r[1] for r in rows}) == 1 and len(rows[0][1]) == 64, "one exec id throughout"
    assert rows[2][2] == "3"
    # As dockerd, `event=exec_create` matches whatever the command.
    filtered = docker.docker("events", "--since", since, "--until", until, "--filter", "event=exec_create",
                             "--format", "{{.Action}}").stdout.splitlines()
    assert filtered == ["exec_create: sh -c exit 3"]
    docker.docker("rm", "-f", "evx")


def test_exec_errors_come_back_in_dockers_words(docker):
    docker.docker("run", "-d", "--name", "box", "busybox", "sleep", "300")
    missing = docker.docker("exec", "box", "nosuch", check=False)
    assert missing.returncode == 127
    assert 'exec: "nosuch": executable file not found in $PATH' in missing.stdout + missing.stderr
    not_executable = docker.docker("exec", "box", "/etc/passwd", check=False)
    assert not_executable.returncode == 126
    assert "permission denied" in not_executable.stdout + not_executable.stderr
    assert inspect(docker, "box")["State"]["Running"], "a failed exec leaves the container running"
    assert docker.docker("exec", "box", "true").returncode == 0
    unknown_user = docker.docker("exec", "-u", "alice", "box", "true", check=False)
    assert unknown_user.returncode != 0 and "unable to find user alice" in unknown_user.stdout + unknown_user.stderr

    docker.docker("create", "--name", "idle", "busybox", "true")
    stopped = docker.docker("exec", "idle", "true", check=False)
    assert stopped.returncode != 0 and "is not running" in stopped.stderr, stopped.stderr
    gone = docker.docker("exec", "nosuch", "true", check=False)
    assert gone.returncode != 0 and "No such container: nosuch" in gone.stderr


def test_exec_it_gives_a_terminal_that_resizes(docker):
    docker.docker("run", "-d", "--name", "box", "busybox", "sleep", "300")
    terminal = Terminal(docker, "exec", "-it", "-e", "PS1=prompt> ", "box", "sh")
    check_terminal_and_resize(terminal, 30, 100)
    terminal.send("sleep 30\r")
    time.sleep(0.5)
    started = time.monotonic()
    terminal.send("\x03")  # ^C reaches the foreground job: the terminal is its controlling terminal
    terminal.expect("prompt> ")
    assert time.monotonic() - started < 5
    terminal.send("exit 3\r")
    assert terminal.wait() == 3
    assert inspect(docker, "box")["State"]["Running"]


def test_run_it_gives_the_container_a_terminal_and_logs_keep_its_raw_output(docker):
    terminal = Terminal(docker, "run", "-it", "--name", "term", "-e", "PS1=prompt> ", "busybox", "sh")
    check_terminal_and_resize(terminal, 33, 111)
    terminal.send("exit 4\r")
    assert terminal.wait() == 4
    container = inspect(docker, "term")
    assert container["Config"]["Tty"] and container["Config"]["OpenStdin"]
    assert container["State"]["ExitCode"] == 4
    logs = docker.docker("logs", "term").stdout
    assert "42x\n/dev/pts/0\n24 80\nprompt> " in logs, repr(logs)  # as the terminal showed it, prompt and all


def test_run_i_attach_and_start_a_i_carry_stdin(docker):
    env = {**os.environ, "DOCKER_HOST": f"unix://{docker.env['STRATUS_DOCKER_SOCKET']}"}
    piped = subprocess.run(["docker", "run", "-i", "--rm", "busybox", "sh", "-c", "tr a-z A-Z; echo end >&2"],
                           input="hello\nworld\n", capture_output=True, text=True, timeout=30, env=env)
    assert (piped.returncode, piped.stdout, piped.stderr) == (0, "HELLO\nWORLD\n", "end\n"), piped.stderr

    docker.docker("create", "-i", "--name", "again", "busybox", "sh", "-c", "read line; echo got $line; exit 2")
    started = subprocess.run(["docker", "start", "-a", "-i", "again"], input="one\n", capture_output=True,
                             text=True, timeout=30, env=env)
    assert (started.returncode, started.stdout) == (2, "got one\n"), started.stderr
    # Again once it has exited: dockerd lets `start -a` attach to a stopped container.
    again = subprocess.run(["docker", "start", "-a", "-i", "again"], input="two\n", capture_output=True,
                           text=True, timeout=30, env=env)
    assert (again.returncode, again.stdout) == (2, "got two\n"), again.stderr

    docker.docker("run", "-d", "-i", "--name", "echoer", "busybox", "sh", "-c", "while read l; do echo seen $l; done")
    attached = subprocess.Popen(["docker", "attach", "echoer"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                text=True, env=env)
    time.sleep(0.5)
    attached.stdin.write("ping\n")
    attached.stdin.flush()
    assert attached.stdout.readline() == "seen ping\n"
    attached.kill()  # a client leaving does not end the container
    attached.wait(timeout=15)
    time.sleep(0.3)
    assert inspect(docker, "echoer")["State"]["Running"]
    assert docker.docker("logs", "echoer").stdout == "seen ping\n"
    docker.docker("rm", "-f", "echoer")


def test_detach_keys_leave_the_container_running_and_attach_comes_back(docker):
    terminal = Terminal(docker, "run", "-it", "--name", "term", "-e", "PS1=prompt> ", "busybox", "sh")
    terminal.expect("prompt> ")
    terminal.send("\x10\x11")  # ctrl-p ctrl-q
    assert terminal.wait() == 0
    assert inspect(docker, "term")["State"]["Running"]
    again = Terminal(docker, "attach", "term")
    time.sleep(0.5)
    again.send("echo $((6 * 7))\r")
    again.expect("42\r\n")  # the shell's answer, not an echo of the line
    again.send("exit 6\r")
    assert again.wait() == 6
