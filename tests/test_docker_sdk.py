"""The Python `docker` SDK (docker-py) against Stratus's Docker API: the calls a test suite or a
script makes with it."""

import os
import time

import docker
import pytest

from test_containers import bootstrap

pytestmark = [
    pytest.mark.skipif(os.geteuid() != 0, reason="containers need root (namespaces, overlayfs, cgroups)"),
]


@pytest.fixture
def client(stratus):
    bootstrap(stratus)
    client = docker.DockerClient(base_url=f"unix://{stratus.env['STRATUS_DOCKER_SOCKET']}", version="auto")
    yield client
    client.close()


def test_ping_version_and_images(client):
    assert client.ping()
    assert client.version()["ApiVersion"]
    tags = [tag for image in client.images.list() for tag in image.tags]
    assert tags == ["busybox:latest"]
    image = client.images.get("busybox")
    assert image.attrs["Config"]["Cmd"] == ["sh"]
    with pytest.raises(docker.errors.ImageNotFound):
        client.images.get("nosuch:1")


def test_run_returns_output_and_raises_on_failure(client):
    assert client.containers.run("busybox", ["echo", "hi"], remove=True) == b"hi\n"
    with pytest.raises(docker.errors.ContainerError) as failure:
        client.containers.run("busybox", ["sh", "-c", "exit 3"], remove=True)
    assert failure.value.exit_status == 3
    assert client.containers.list(all=True) == []


def test_detached_container_logs_labels_and_wait(client):
    container = client.containers.run("busybox", ["sh", "-c", "echo ready; sleep 30"], detach=True,
                                      name="sdk", labels={"team": "core"}, environment={"A": "1"})
    try:
        assert [c.name for c in client.containers.list(filters={"label": "team=core"})] == ["sdk"]
        container.reload()
        assert container.status == "running"
        assert container.attrs["Config"]["Labels"]["team"] == "core"
        for _ in range(50):
            if container.logs() == b"ready\n":
                break
            time.sleep(0.1)
        assert container.logs() == b"ready\n"
        container.stop(timeout=1)
        assert container.wait()["StatusCode"] in (137, 143)
    finally:
        container.remove(force=True)
    with pytest.raises(docker.errors.NotFound):
        client.containers.get("sdk")
