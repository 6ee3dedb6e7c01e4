"""`docker build` (the classic builder, which this docker CLI uses for lack of buildx) against
Stratus: multi-stage builds, the build cache, build args, .dockerignore, and bad input (a
malformed Dockerfile, a failing RUN, a context tar cut short)."""

import http.client
import io
import json
import os
import shutil
import socket
import tarfile
import time

import pytest

from test_containers import docker, inspect  # noqa: F401 (docker is a fixture)

pytestmark = [
    pytest.mark.skipif(os.geteuid() != 0, reason="builds run containers, which need root"),
    pytest.mark.skipif(shutil.which("docker") is None, reason="the docker CLI is not installed"),
]

MULTISTAGE = """\
# syntax=docker/dockerfile:1
ARG BASE=busybox
FROM $BASE AS build
WORKDIR /src
COPY greeting.txt .
RUN echo "built from $(cat greeting.txt)" > /out.txt && echo step-output
FROM busybox
ARG WHO=world
ENV WHO=$WHO PATH=/usr/local/bin:/bin
COPY --from=build /out.txt /app/out.txt
EXPOSE 8080
LABEL stage=final
CMD ["cat", "/app/out.txt"]
"""


def context(tmp_path, dockerfile, **files):
    directory = tmp_path / "ctx"
    directory.mkdir(exist_ok=True)
    (directory / "Dockerfile").write_text(dockerfile)
    for name, text in files.items():
        path = directory / name.replace("__", "/")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return directory


def assert_no_image(server, name):
    assert server.docker("image", "inspect", name, check=False).returncode != 0, f"{name} was tagged"


def build(server, directory, *args, check=True):
    return server.docker("build", *args, str(directory), check=check, timeout=120)


def test_multistage_build_then_a_cached_rebuild(docker, tmp_path):
    ctx = context(tmp_path, MULTISTAGE, **{"greeting.txt": "hello"})
    first = build(docker, ctx, "-t", "app:v1")
    out = first.stdout
    assert "Step 1/11 : FROM $BASE AS build" in out and "Step 11/11 : CMD" in out, out
    assert "\nstep-output\n" in out and " ---> Running in " in out
    assert "Successfully tagged app:v1" in out
    assert docker.docker("run", "--rm", "app:v1").stdout == "built from hello\n"
    image = inspect(docker, "app:v1")
    config = image["Config"]
    assert config["Cmd"] == ["cat", "/app/out.txt"] and config["Labels"] == {"stage": "final"}
    assert "WHO=world" in config["Env"]
    assert len(image["RootFS"]["Layers"]) == 2, "busybox's layer and the COPY's"
    assert docker.docker("ps", "-aq").stdout == "", "no build container is left"

    started = time.monotonic()
    again = build(docker, ctx, "-t", "app:v1")
    elapsed = time.monotonic() - started
    assert again.stdout.count(" ---> Using cache") == 9, again.stdout
    assert " ---> Running in" not in again.stdout and "\nstep-output\n" not in again.stdout
    assert inspect(docker, "app:v1")["Id"] == image["Id"]
    assert elapsed < 5, f"a cached rebuild took {elapsed:.2f} s"

    # A changed file re-runs its COPY and what follows, nothing before it.
    (ctx / "greeting.txt").write_text("bonjour")
    changed = build(docker, ctx, "-t", "app:v2").stdout
    assert changed.count(" ---> Using cache") == 3, changed  # WORKDIR, then ARG and ENV of the final stage
    assert "\nstep-output\n" in changed
    assert docker.docker("run", "--rm", "app:v2").stdout == "built from bonjour\n"

    # --target stops at the named stage.
    target = build(docker, ctx, "--target", "build", "-t", "app:build").stdout
    assert "Step 4/4" in target and "Step 5/" not in target, target
    assert docker.docker("run", "--rm", "app:build", "cat", "/out.txt").stdout == "built from bonjour\n"

    # The cache survives a restart (it is in the store).
    docker.stop()
    docker.start()
    after_restart = build(docker, ctx, "-t", "app:v2").stdout
    assert after_restart.count(" ---> Using cache") == 9, after_restart


def test_build_args_no_cache_and_labels(docker, tmp_path):
    ctx = context(tmp_path, MULTISTAGE, **{"greeting.txt": "hi"})
    out = build(docker, ctx, "--build-arg", "WHO=stratus", "--build-arg", "UNUSED=1",
                "--label", "team=build", "-t", "args").stdout
    assert "[Warning] One or more build-args [UNUSED] were not consumed" in out
    config = inspect(docker, "args")["Config"]
    assert "WHO=stratus" in config["Env"] and config["Labels"] == {"stage": "final", "team": "build"}
    rebuilt = build(docker, ctx, "--no-cache", "--build-arg", "WHO=stratus", "-t", "args").stdout
    assert "Using cache" not in rebuilt and "\nstep-output\n" in rebuilt


def test_run_sees_args_env_workdir_and_user_and_deletes_files(docker, tmp_path):
    dockerfile = """\
ARG PLACE=here
FROM busybox
ARG GREETING=hey
ARG PLACE
ENV PLACE=$PLACE
WORKDIR /work
RUN echo "$GREETING $PLACE $(pwd) $(id -u)" > said && rm /etc/hostname
RUN ["sh", "-c", "cat /work/said"]
USER nobody
RUN id -un > /tmp/who
"""
    ctx = context(tmp_path, dockerfile)
    out = build(docker, ctx, "-t", "runs").stdout
    assert "hey here /work 0" in out, out
    assert docker.docker("run", "--rm", "runs", "cat", "/work/said").stdout == "hey here /work 0\n"
    assert docker.docker("run", "--rm", "runs", "cat", "/tmp/who").stdout == "nobody\n"
    gone = docker.docker("run", "--rm", "runs", "ls", "/etc/hostname", check=False)
    assert gone.returncode != 0, "the RUN's deletion is a whiteout in its layer"
    history = json.loads(docker.docker("history", "--no-trunc", "--format", "{{json .}}", "runs").stdout.splitlines()[0])
    assert "id -un" in history["CreatedBy"]


def test_add_extracts_archives_and_copy_takes_globs_and_chown(docker, tmp_path):
    dockerfile = """\
FROM busybox
ADD files.tar.gz /opt/
ADD plain.txt /opt/plain.txt
COPY --chown=nobody:nobody *.txt /data/
"""
    ctx = context(tmp_path, dockerfile, **{"a.txt": "a", "plain.txt": "p", "c.md": "c"})
    with tarfile.open(ctx / "files.tar.gz", "w:gz") as tar:
        data = b"inside\n"
        info = tarfile.TarInfo("pkg/readme")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    build(docker, ctx, "-t", "adds")
    run = lambda *command: docker.docker("run", "--rm", "adds", *command).stdout
    assert run("cat", "/opt/pkg/readme") == "inside\n"
    assert run("cat", "/opt/plain.txt") == "p"
    assert run("stat", "-c", "%n %u:%g", "/data/a.txt", "/data/plain.txt").split("\n")[:2] == [
        "/data/a.txt 65534:65534", "/data/plain.txt 65534:65534"]
    assert docker.docker("run", "--rm", "adds", "ls", "/data/c.md", check=False).returncode != 0


def test_dockerignore_keeps_files_out(docker, tmp_path):
    dockerfile = "FROM busybox\nCOPY . /ctx/\nRUN ls -a /ctx\n"
    ctx = context(tmp_path, dockerfile, **{".dockerignore": "secret.txt\n*.log\n!keep.log\n",
                                           "secret.txt": "s", "debug.log": "d", "keep.log": "k", "app.txt": "a"})
    out = build(docker, ctx, "-t", "ignored").stdout
    listing = docker.docker("run", "--rm", "ignored", "ls", "/ctx").stdout.split()
    assert "app.txt" in listing and "keep.log" in listing, out
    assert "secret.txt" not in listing and "debug.log" not in listing
    (ctx / "Dockerfile").write_text("FROM busybox\nCOPY secret.txt /\n")
    failed = build(docker, ctx, check=False)
    assert failed.returncode == 1
    assert "file not found in build context or excluded by .dockerignore: stat secret.txt" in failed.stderr


def test_a_malformed_dockerfile_names_its_line(docker, tmp_path):
    ctx = context(tmp_path, "FROM busybox\n\n# fine\nRUNN echo hi\n")
    result = build(docker, ctx, "-t", "bad", check=False)
    assert result.returncode == 1
    assert "dockerfile parse error on line 4: unknown instruction: RUNN" in result.stderr, result.stderr
    assert "Step" not in result.stdout
    assert_no_image(docker, "bad")


def test_a_failing_run_reports_its_code_and_leaves_nothing(docker, tmp_path):
    ctx = context(tmp_path, "FROM busybox\nRUN echo before\nRUN echo failing; exit 3\nRUN echo never\n")
    result = build(docker, ctx, "-t", "failing", check=False)
    assert result.returncode == 3, "the CLI exits with the RUN's code, as with dockerd"
    assert "failing" in result.stdout and "never" not in result.stdout
    assert "The command '/bin/sh -c echo failing; exit 3' returned a non-zero code: 3" in result.stderr, result.stderr
    assert_no_image(docker, "failing")
    assert docker.docker("ps", "-aq").stdout == "", "the failed RUN's container was removed"
    missing = build(docker, context(tmp_path, "FROM nosuch:1\n"), check=False)
    assert missing.returncode == 1 and "No such image: nosuch:1" in missing.stderr


def post_build(server, body, query="t=cut"):
    """POST /build with a raw body over the Docker socket; returns (status, body text)."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.connect(server.env["STRATUS_DOCKER_SOCKET"])
    connection = http.client.HTTPConnection("localhost")
    connection.sock = sock
    connection.request("POST", f"/v1.47/build?{query}", body=body, headers={"Content-Type": "application/x-tar"})
    response = connection.getresponse()
    return response.status, response.read().decode()


def test_a_context_cut_short_is_refused(docker):
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for name, data in [("Dockerfile", b"FROM busybox\nCOPY big /big\n"), ("big", b"x" * 100_000)]:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    whole = buffer.getvalue()
    status, text = post_build(docker, whole[:60_000])
    assert status == 400, text
    assert "cannot read the build context" in json.loads(text)["message"]
    assert_no_image(docker, "cut")
    status, text = post_build(docker, whole)
    lines = [json.loads(line) for line in text.splitlines() if line.strip()]
    assert status == 200 and any("aux" in line for line in lines), text
    assert lines[-1] == {"stream": "Successfully tagged cut:latest\n"}
