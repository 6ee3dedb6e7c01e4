"""`stratus up`: flags, help, the data directory, ephemeral mode, startup errors, graceful drain."""

import os
import signal
import socket
import subprocess
import time

import pytest

from stratus_harness import BINARY


def run(*args, env=None, timeout=10):
    return subprocess.run([BINARY, *args], capture_output=True, text=True, timeout=timeout, env={**os.environ, **(env or {})})


def test_help_explains_every_flag():
    top = run("--help")
    assert top.returncode == 0 and "up" in top.stdout
    up = run("up", "--help").stdout
    for flag, env in [("--data-dir", "STRATUS_DATA_DIR"), ("--ephemeral", "STRATUS_EPHEMERAL"), ("--port", "STRATUS_PORT"),
                      ("--host", "STRATUS_HOST"), ("--default-account", "STRATUS_DEFAULT_ACCOUNT"),
                      ("--idle-timeout", "STRATUS_IDLE_TIMEOUT")]:
        assert flag in up and env in up, flag
    assert "4566" in up and "127.0.0.1" in up and "SIGTERM" in up


def test_banner_names_the_endpoints(stratus):
    assert f"AWS endpoint  {stratus.url}" in stratus.banner
    assert f"{stratus.url}/_stratus/health" in stratus.banner


def test_default_data_dir_is_per_user(start_stratus, tmp_path):
    xdg = tmp_path / "xdg"
    server = start_stratus("default-dir", args=(), env={"XDG_DATA_HOME": str(xdg)})
    assert server.client("sts").get_caller_identity()
    assert (xdg / "stratus" / "stratus.redb").exists()
    assert str(xdg / "stratus") in server.banner


def test_data_dir_from_env(start_stratus, tmp_path):
    server = start_stratus("env-dir", args=(), env={"STRATUS_DATA_DIR": str(tmp_path / "by-env")})
    assert (tmp_path / "by-env" / "stratus.redb").exists()
    server.stop()


def test_ephemeral_writes_nothing(start_stratus, tmp_path):
    xdg = tmp_path / "xdg"
    server = start_stratus("ephemeral", args=("--ephemeral",), env={"XDG_DATA_HOME": str(xdg)})
    assert server.client("sts").get_caller_identity()
    assert "in memory" in server.banner
    assert server.stop() == 0
    assert not xdg.exists()


def test_invalid_flags_fail_with_a_message(tmp_path):
    bad = run("up", "--ephemeral", "--default-account", "1234")
    assert bad.returncode != 0 and "12 digits" in bad.stderr
    both = run("up", "--ephemeral", "--data-dir", str(tmp_path))
    assert both.returncode != 0 and "cannot be used with" in both.stderr


def test_port_in_use_is_reported(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = run("up", "--ephemeral", "--port", str(port))
        assert result.returncode != 0 and f"cannot listen on 127.0.0.1:{port}" in result.stderr


def test_second_instance_on_one_data_dir_is_refused(stratus):
    result = run("up", "--port", "0", "--data-dir", str(stratus.data_dir))
    assert result.returncode != 0 and "cannot open the store" in result.stderr


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_shutdown_drains_requests_in_flight(stratus, sig):
    body = b"Action=GetCallerIdentity&Version=2011-06-15"
    head = (f"POST / HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/x-www-form-urlencoded\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n").encode()
    with stratus.connect() as sock:
        sock.sendall(head + body[:10])  # a request in flight: its body is still arriving
        time.sleep(0.2)
        stratus.process.send_signal(sig)
        time.sleep(0.3)
        assert stratus.process.poll() is None, "exited with a request in flight"
        with pytest.raises(OSError):
            socket.create_connection(stratus.address, timeout=2).close()  # no longer accepting
        sock.sendall(body[10:])
        response = b""
        while chunk := sock.recv(65536):
            response += chunk
    assert response.startswith(b"HTTP/1.1 200") and b"<Account>000000000000</Account>" in response
    assert stratus.process.wait(timeout=10) == 0
    assert "stopped cleanly" in stratus.log()
