"""Debian's docker-compose 1.29 against Stratus's Docker API: a web service and a key-value
service on the project's network, talking by service name, with a named volume that outlives
`down`. Both services are busybox httpd with shell CGI scripts, so everything they do is real
HTTP between two containers."""

import os
import shutil
import subprocess
import textwrap

import pytest

from test_container_networks import free_port, get
from test_containers import bootstrap

pytestmark = [
    pytest.mark.skipif(os.geteuid() != 0, reason="containers need root (namespaces, overlayfs, cgroups)"),
    pytest.mark.skipif(shutil.which("docker-compose") is None, reason="docker-compose is not installed"),
]

COMPOSE = """\
version: "3.8"
services:
  kv:
    image: busybox
    command: ["httpd", "-f", "-p", "80", "-h", "/srv"]
    volumes:
      - ./kv:/srv:ro
      - kvdata:/data
  web:
    image: busybox
    command: ["httpd", "-f", "-p", "80", "-h", "/srv"]
    volumes:
      - ./web:/srv:ro
    ports:
      - "127.0.0.1:{port}:80"
    depends_on: [kv]
volumes:
  kvdata:
"""

# The key-value service: GET /cgi-bin/kv?KEY reads, POST stores the body.
KV = """\
#!/bin/sh
echo "Content-Type: text/plain"
echo
key=$(echo "$QUERY_STRING" | tr -cd 'a-z0-9')
if [ "$REQUEST_METHOD" = POST ]; then
    head -c "$CONTENT_LENGTH" > "/data/$key" && echo stored
else
    cat "/data/$key" 2>/dev/null || echo missing
fi
"""

# The web service: /cgi-bin/set?KEY=VALUE and /cgi-bin/get?KEY call the kv service by name.
SET = """\
#!/bin/sh
echo "Content-Type: text/plain"
echo
wget -qO- --post-data "${QUERY_STRING#*=}" "http://kv/cgi-bin/kv?${QUERY_STRING%%=*}"
"""
GET = """\
#!/bin/sh
echo "Content-Type: text/plain"
echo
echo "kv says: $(wget -qO- "http://kv/cgi-bin/kv?$QUERY_STRING")"
"""


def write_script(path, text):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text))
    path.chmod(0o755)


@pytest.fixture
def project(stratus, tmp_path):
    bootstrap(stratus)
    port = free_port()
    directory = tmp_path / "shop"
    write_script(directory / "kv/cgi-bin/kv", KV)
    write_script(directory / "web/cgi-bin/set", SET)
    write_script(directory / "web/cgi-bin/get", GET)
    (directory / "docker-compose.yml").write_text(COMPOSE.format(port=port))

    def compose(*args, check=True):
        env = {**os.environ, "DOCKER_HOST": f"unix://{stratus.env['STRATUS_DOCKER_SOCKET']}"}
        result = subprocess.run(["docker-compose", *args], cwd=directory, env=env,
                                capture_output=True, text=True, timeout=120)
        if check and result.returncode != 0:
            raise AssertionError(f"docker-compose {' '.join(args)} failed ({result.returncode}): {result.stderr}")
        return result

    compose.url = f"http://127.0.0.1:{port}"
    compose.server = stratus
    yield compose
    compose("down", "-v", check=False)


def test_web_and_kv_services_talk_by_name_and_keep_their_volume(project):
    up = project("up", "-d")
    assert "Creating shop_kv_1" in up.stderr and "Creating shop_web_1" in up.stderr, up.stderr
    ps = project("ps").stdout
    assert "shop_kv_1" in ps and "shop_web_1" in ps and ps.count("Up") == 2, ps

    assert get(project.url + "/cgi-bin/set?colour=teal").strip() == "stored"
    assert get(project.url + "/cgi-bin/get?colour").strip() == "kv says: teal"

    # down removes the containers and the network but keeps the named volume.
    project("down")
    server = project.server
    assert server.docker("ps", "-aq").stdout == ""
    assert "shop_default" not in server.docker("network", "ls", "--format", "{{.Name}}").stdout
    assert "shop_kvdata" in server.docker("volume", "ls", "--format", "{{.Name}}").stdout

    project("up", "-d")
    assert get(project.url + "/cgi-bin/get?colour").strip() == "kv says: teal"

    project("down", "-v")
    assert "shop_kvdata" not in server.docker("volume", "ls", "--format", "{{.Name}}").stdout


def test_logs_and_stop_start(project):
    project("up", "-d")
    get(project.url + "/cgi-bin/get?nothing")
    project("stop")
    assert "Exit" in project("ps").stdout
    project("start")
    assert get(project.url + "/cgi-bin/get?nothing").strip() == "kv says: missing"
    logs = project("logs", "--no-color", "web")
    assert logs.returncode == 0
