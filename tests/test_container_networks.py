"""Container networks through the real docker CLI: the default bridge and user-defined networks
(veths, addresses, NAT, DNS by name and alias), published TCP and UDP ports reached from the
host, host and none modes, the networks API and its errors, and cleanup of links and rules.
Containers need root."""

import ipaddress
import json
import os
import shutil
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request

import pytest

from stratus_harness import host_routes
from test_containers import bootstrap, docker, inspect  # noqa: F401 (docker is a fixture)

pytestmark = [
    pytest.mark.skipif(os.geteuid() != 0, reason="containers need root (namespaces, veths, nftables)"),
    pytest.mark.skipif(shutil.which("docker") is None, reason="the docker CLI is not installed"),
]

# busybox httpd serving one page, in the foreground.
HTTPD = "mkdir -p /www && echo hello from $(hostname) > /www/index.html && exec httpd -f -p 80 -h /www"


def links():
    return subprocess.run(["ip", "-o", "link"], capture_output=True, text=True, check=True).stdout


def veths_on(bridge):
    """The names of the host ends of the veths on `bridge`."""
    out = subprocess.run(["ip", "-o", "link", "show", "master", bridge], capture_output=True, text=True).stdout
    return [line.split(": ")[1].split("@")[0] for line in out.splitlines()]


def gone_soon(name, seconds=5):
    """A container's veth goes with its network namespace, which the kernel removes just after
    its last process has exited."""
    deadline = time.monotonic() + seconds
    while f" {name}@" in links():
        assert time.monotonic() < deadline, f"{name} is still there"
        time.sleep(0.05)


def free_port(kind=socket.SOCK_STREAM):
    with socket.socket(socket.AF_INET, kind) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def get(url, timeout=10):
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                return response.read().decode()
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def api(server, method, path, body=None):
    """One raw request on the Docker socket: (status, parsed JSON body or None)."""
    sock = socket.socket(socket.AF_UNIX)
    sock.connect(server.env["STRATUS_DOCKER_SOCKET"])
    payload = json.dumps(body).encode() if body is not None else b""
    sock.sendall(f"{method} /v1.47{path} HTTP/1.1\r\nHost: docker\r\nContent-Type: application/json\r\n"
                 f"Content-Length: {len(payload)}\r\nConnection: close\r\n\r\n".encode() + payload)
    data = b""
    while chunk := sock.recv(65536):
        data += chunk
    sock.close()
    head, _, rest = data.partition(b"\r\n\r\n")
    status = int(head.split()[1])
    if b"chunked" in head.lower():
        body_bytes, rest = b"", rest
        while rest:
            size_line, _, rest = rest.partition(b"\r\n")
            size = int(size_line, 16)
            if size == 0:
                break
            body_bytes, rest = body_bytes + rest[:size], rest[size + 2:]
        rest = body_bytes
    return status, (json.loads(rest) if rest.strip() else None)


def test_containers_on_a_user_network_reach_each_other_by_name_and_alias(docker):
    docker.docker("network", "create", "appnet")
    docker.docker("run", "-d", "--name", "web", "--network", "appnet", "--network-alias", "frontend",
                  "busybox", "sh", "-c", HTTPD)
    web = inspect(docker, "web")["NetworkSettings"]["Networks"]["appnet"]
    assert web["Aliases"] == ["frontend"] and web["IPAddress"], web
    script = ("cat /etc/resolv.conf; nslookup web; ping -c1 -W3 web; "
              "wget -qO- http://frontend/; wget -qO- http://web/")
    out = docker.docker("run", "--rm", "--network", "appnet", "busybox", "sh", "-c", script).stdout
    assert "nameserver 127.0.0.11" in out, out
    assert f"Address: {web['IPAddress']}" in out or f"Address 1: {web['IPAddress']}" in out, out
    assert "1 packets received" in out, out
    assert out.count("hello from") == 2, out
    # Outside names go to the host's resolvers; an unknown one fails rather than hangs.
    missing = docker.docker("run", "--rm", "--network", "appnet", "busybox", "nslookup", "no-such-name.invalid",
                            check=False, timeout=30)
    assert missing.returncode != 0
    # The default bridge has no embedded DNS, as in Docker.
    default = docker.docker("run", "--rm", "busybox", "sh", "-c", "cat /etc/resolv.conf; ping -c1 -W2 web",
                            check=False)
    assert "127.0.0.11" not in default.stdout and default.returncode != 0


def test_published_tcp_and_udp_ports_answer_from_the_host(docker):
    port, udp_port = free_port(), free_port(socket.SOCK_DGRAM)
    docker.docker("run", "-d", "--name", "site", "-p", f"127.0.0.1:{port}:80",
                  "-p", f"127.0.0.1:{udp_port}:9999/udp", "busybox", "sh", "-c", HTTPD)
    assert get(f"http://127.0.0.1:{port}/").startswith("hello from")
    assert docker.docker("port", "site", "80").stdout.strip() == f"127.0.0.1:{port}"
    ps = docker.docker("ps", "--format", "{{.Ports}}").stdout
    assert f"127.0.0.1:{port}->80/tcp" in ps and f"127.0.0.1:{udp_port}->9999/udp" in ps, ps
    ports = inspect(docker, "site")["NetworkSettings"]["Ports"]
    assert ports["80/tcp"] == [{"HostIp": "127.0.0.1", "HostPort": str(port)}], ports

    # busybox has no UDP server to answer through the relay (the relay itself is tested in
    # containers' proxy tests); the host port is held for the container.
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        with pytest.raises(OSError):
            probe.bind(("127.0.0.1", udp_port))

    taken = docker.docker("run", "-d", "-p", f"127.0.0.1:{port}:80", "busybox", "sleep", "5", check=False)
    assert taken.returncode != 0 and "port is already allocated" in taken.stderr, taken.stderr

    # -P publishes what is exposed on ports the kernel picks.
    docker.docker("run", "-d", "--name", "any", "--expose", "80", "-P", "busybox", "sh", "-c", HTTPD)
    bound = docker.docker("port", "any", "80").stdout.split()[0]
    assert bound.startswith("0.0.0.0:"), bound
    assert get(f"http://127.0.0.1:{bound.split(':')[1]}/").startswith("hello from")

    docker.docker("rm", "-f", "site")
    with pytest.raises(OSError):
        urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=2)


def outside_namespace():
    """A network namespace reachable from the host over a veth, with no route back to any
    container subnet: only masqueraded traffic can get answers from it."""
    taken = host_routes()
    for third in range(0, 256):
        subnet = ipaddress.IPv4Network(f"10.{150 + os.getpid() % 10}.{third}.0/30")
        if not any(subnet.overlaps(route) for route in taken):
            break
    host_ip, outside_ip = list(subnet.hosts())
    name = f"out{os.getpid() % 100000}"
    commands = [
        ["ip", "netns", "add", name],
        ["ip", "link", "add", f"{name}h", "type", "veth", "peer", "name", f"{name}o"],
        ["ip", "link", "set", f"{name}o", "netns", name],
        ["ip", "addr", "add", f"{host_ip}/30", "dev", f"{name}h"],
        ["ip", "link", "set", f"{name}h", "up"],
        ["ip", "-n", name, "addr", "add", f"{outside_ip}/30", "dev", f"{name}o"],
        ["ip", "-n", name, "link", "set", f"{name}o", "up"],
    ]
    for command in commands:
        subprocess.run(command, check=True)
    return name, str(outside_ip)


def test_outbound_traffic_is_masqueraded(docker):
    name, outside_ip = outside_namespace()
    try:
        out = docker.docker("run", "--rm", "busybox", "ping", "-c1", "-W3", outside_ip).stdout
        assert "1 packets received" in out, out
        docker.docker("network", "create", "--internal", "sealed")
        sealed = docker.docker("run", "--rm", "--network", "sealed", "busybox", "ping", "-c1", "-W2", outside_ip,
                               check=False)
        assert sealed.returncode != 0, "an internal network reaches nothing outside"
    finally:
        subprocess.run(["ip", "link", "del", f"{name}h"], check=False)
        subprocess.run(["ip", "netns", "del", name], check=False)


def test_host_and_none_modes(docker):
    none = docker.docker("run", "--rm", "--network", "none", "busybox", "ip", "-o", "link").stdout
    assert [line.split(":")[1].strip() for line in none.splitlines()] == ["lo"], none
    assert "UP" in none
    host = docker.docker("run", "--rm", "--network", "host", "busybox", "cat", "/proc/net/dev").stdout
    host_names = {line.split(":")[0].strip() for line in host.splitlines()[2:]}
    with open("/proc/net/dev") as ours:
        assert host_names == {line.split(":")[0].strip() for line in list(ours)[2:]}
    # The CLI refuses aliases on the default bridge itself; so does the API.
    status, refused = api(docker, "POST", "/containers/create", {
        "Image": "busybox", "NetworkingConfig": {"EndpointsConfig": {"bridge": {"Aliases": ["x"]}}}})
    assert status == 400 and "user defined networks" in refused["message"], refused


def test_default_bridge_settings_hosts_and_hostname(docker):
    docker.docker("run", "-d", "--name", "box", "--hostname", "boxhost", "busybox", "sleep", "60")
    settings = inspect(docker, "box")["NetworkSettings"]
    bridge = inspect(docker, "bridge")
    subnet = ipaddress.IPv4Network(bridge["IPAM"]["Config"][0]["Subnet"])
    assert ipaddress.IPv4Address(settings["IPAddress"]) in subnet
    assert settings["Gateway"] == bridge["IPAM"]["Config"][0]["Gateway"]
    assert settings["MacAddress"].startswith("02:42:") and settings["Networks"]["bridge"]["IPAddress"]
    assert docker.env["STRATUS_DOCKER_BRIDGE"] == bridge["Options"]["com.docker.network.bridge.name"]
    hosts = docker.docker("exec", "box", "cat", "/etc/hosts", check=False)
    if hosts.returncode == 0:  # exec arrives with another slice of the work
        assert f"{settings['IPAddress']}\tboxhost" in hosts.stdout
    out = docker.docker("run", "--rm", "--hostname", "h1", "busybox", "sh", "-c",
                        "cat /etc/hosts /etc/hostname; ip -o -4 addr show eth0; ip route").stdout
    assert "\th1\n" in out and "h1\n" in out and "default via " + settings["Gateway"] in out, out
    container = bridge["Containers"]
    assert [c["Name"] for c in container.values()] == ["box"], container


def test_network_api_shapes_and_errors(docker):
    status, created = api(docker, "POST", "/networks/create", {"Name": "n1", "Driver": "bridge",
                                                                 "IPAM": {"Config": [{"Subnet": "10.77.5.0/24"}]}})
    assert status == 201 and len(created["Id"]) == 64
    assert api(docker, "POST", "/networks/create", {"Name": "n1"})[0] == 409
    assert api(docker, "POST", "/networks/create", {"Name": "n2", "IPAM": {"Config": [{"Subnet": "10.77.5.128/25"}]}})[0] == 403
    assert api(docker, "POST", "/networks/create", {"Name": "n3", "Driver": "overlay"})[0] == 404
    assert api(docker, "POST", "/networks/create", {"Name": "n4", "IPAM": {"Config": [{"Subnet": "nope"}]}})[0] == 400
    status, missing = api(docker, "GET", "/networks/nosuch")
    assert (status, missing) == (404, {"message": "network nosuch not found"})
    assert api(docker, "DELETE", "/networks/nosuch")[0] == 404
    status, removed = api(docker, "DELETE", "/networks/bridge")
    assert status == 403 and "pre-defined" in removed["message"]

    status, n1 = api(docker, "GET", "/networks/n1")
    assert status == 200 and n1["IPAM"]["Config"] == [{"Subnet": "10.77.5.0/24", "Gateway": "10.77.5.1"}]
    names = docker.docker("network", "ls", "--format", "{{.Name}} {{.Driver}}").stdout.splitlines()
    assert {"bridge bridge", "host host", "none null", "n1 bridge"} <= set(names), names
    dup = docker.docker("network", "create", "n1", check=False)
    assert dup.returncode != 0 and "network with name n1 already exists" in dup.stderr

    docker.docker("run", "-d", "--name", "c1", "--network", "n1", "busybox", "sleep", "60")
    busy = docker.docker("network", "rm", "n1", check=False)
    assert busy.returncode != 0 and "has active endpoints" in busy.stderr, busy.stderr
    assert api(docker, "DELETE", "/networks/n1")[0] == 403

    # connect and disconnect a running container, with an alias, as compose does.
    docker.docker("network", "create", "n5")
    status, _ = api(docker, "POST", "/networks/n5/connect", {"Container": "c1", "EndpointConfig": {"Aliases": ["db"]}})
    assert status == 200
    addresses = docker.docker("exec", "c1", "ip", "-o", "-4", "addr", check=False)
    networks = inspect(docker, "c1")["NetworkSettings"]["Networks"]
    assert set(networks) == {"n1", "n5"} and networks["n5"]["Aliases"] == ["db"]
    if addresses.returncode == 0:
        assert "eth1" in addresses.stdout, addresses.stdout
    resolved = docker.docker("run", "--rm", "--network", "n5", "busybox", "nslookup", "db").stdout
    assert networks["n5"]["IPAddress"] in resolved, resolved
    again = api(docker, "POST", "/networks/n5/connect", {"Container": "c1"})
    assert again[0] == 403 and "already exists" in again[1]["message"]
    docker.docker("network", "disconnect", "n5", "c1")
    assert set(inspect(docker, "c1")["NetworkSettings"]["Networks"]) == {"n1"}
    assert api(docker, "POST", "/networks/n5/connect", {"Container": "nosuch"})[0] == 404

    docker.docker("rm", "-f", "c1")
    docker.docker("network", "create", "unused")
    pruned = docker.docker("network", "prune", "-f").stdout
    assert "unused" in pruned and "n1" in pruned and "bridge" not in pruned, pruned
    assert docker.docker("network", "ls", "-q", "--filter", "type=custom").stdout == ""


def nft_table(bridge):
    """The nftables table an instance with this default bridge owns."""
    return "stratus_" + bridge.replace("-", "_").replace(".", "_")


def test_nothing_is_left_behind(start_stratus):
    server = start_stratus()
    bootstrap(server)
    bridge = server.env["STRATUS_DOCKER_BRIDGE"]
    table = nft_table(bridge)
    server.docker("network", "create", "gone")
    gone_bridge = inspect(server, "gone")["Options"]["com.docker.network.bridge.name"]
    cid = server.docker("run", "-d", "--network", "gone", "busybox", "sleep", "60").stdout.strip()
    [veth] = veths_on(gone_bridge)
    assert table in subprocess.run(["nft", "list", "tables"], capture_output=True, text=True).stdout
    server.docker("rm", "-f", cid)
    gone_soon(veth)
    server.docker("network", "rm", "gone")
    assert gone_bridge not in links()

    server.docker("run", "-d", "-p", "127.0.0.1::80", "busybox", "sleep", "60")
    # The container's veth, and soon the one of the namespace made ahead for the next container.
    veths = veths_on(bridge)
    assert 1 <= len(veths) <= 2, veths
    server.stop()
    assert bridge not in links()
    for veth in veths:
        gone_soon(veth)
    tables = subprocess.run(["nft", "list", "tables"], capture_output=True, text=True).stdout
    assert table not in tables, tables


def test_containers_on_the_default_bridge_take_a_namespace_made_ahead(docker):
    """After a container has used the default bridge, a network namespace with its veth and address
    waits for the next one, which joins it instead of making its own."""
    first = docker.docker("run", "-d", "busybox", "sleep", "60").stdout.strip()
    bridge = docker.env["STRATUS_DOCKER_BRIDGE"]
    deadline = time.monotonic() + 5
    while len(veths_on(bridge)) < 2:
        assert time.monotonic() < deadline, veths_on(bridge)
        time.sleep(0.05)
    spare = set(veths_on(bridge)) - {veth_of(docker, first)}
    second = docker.docker("run", "-d", "busybox", "sleep", "60").stdout.strip()
    assert veth_of(docker, second) in spare
    settings = inspect(docker, second)["NetworkSettings"]
    route = docker.docker("exec", second, "ip", "route").stdout
    assert f"default via {settings['Gateway']} dev eth0" in route, route
    address = docker.docker("exec", second, "ip", "-o", "-4", "addr", "show", "eth0").stdout
    assert f"inet {settings['IPAddress']}/" in address, address
    ping = docker.docker("exec", second, "ping", "-c", "1", "-W", "2", inspect(docker, first)["NetworkSettings"]["IPAddress"])
    assert ping.returncode == 0, ping.stdout
    # A container of its own user-defined network makes its own namespace.
    docker.docker("network", "create", "own")
    assert docker.docker("run", "--rm", "--network", "own", "busybox", "ip", "-o", "link").stdout.count("eth0") == 1
    assert set(veths_on(bridge)) & spare == {veth_of(docker, second)}


def veth_of(docker, container):
    """The host end of a running container's veth, from its isolation view."""
    return json.loads(get(f"{docker.url}/_stratus/containers/{container[:12]}/isolation"))["network"][0]["host_veth"]


def test_isolation_view_shows_namespaces_cgroups_mounts_and_network(docker):
    cid = docker.docker("run", "-d", "-m", "32m", "--pids-limit", "50", "busybox", "sleep", "60").stdout.strip()
    view = json.loads(get(f"{docker.url}/_stratus/containers/{cid[:12]}/isolation"))
    assert view["id"] == cid and view["pid"] == inspect(docker, cid)["State"]["Pid"]
    namespaces = {n["type"]: n for n in view["namespaces"]}
    for kind in ("pid", "mnt", "net", "uts", "ipc"):
        assert namespaces[kind]["container"] != namespaces[kind]["host"], namespaces[kind]
        assert not namespaces[kind]["shared_with_host"]
    assert namespaces["net"]["container"] == os.stat(f"/proc/{view['pid']}/ns/net").st_ino
    files = {name: value for group in view["cgroups"] for name, value in group["files"].items()}
    assert files.get("memory.limit_in_bytes", files.get("memory.max")) == str(32 * 1024 * 1024), files
    assert files["pids.max"] == "50" and int(files["pids.current"]) >= 1, files
    assert any(c["path"].endswith(cid) for c in view["cgroups"])
    targets = {m["target"]: m for m in view["mounts"]}
    assert targets["/"]["type"] == "overlay" and "/etc/hosts" in targets and "/proc" in targets
    network = view["network"][0]
    settings = inspect(docker, cid)["NetworkSettings"]
    assert network["interface"] == "eth0" and network["address"].startswith(settings["IPAddress"] + "/")
    assert network["host_veth"] in links() and network["bridge"] == docker.env["STRATUS_DOCKER_BRIDGE"]
    docker.docker("stop", "-t", "0", cid)
    with pytest.raises(urllib.error.HTTPError) as stopped:
        urllib.request.urlopen(f"{docker.url}/_stratus/containers/{cid}/isolation", timeout=5)
    assert stopped.value.code == 409
    with pytest.raises(urllib.error.HTTPError) as missing:
        urllib.request.urlopen(f"{docker.url}/_stratus/containers/nosuch/isolation", timeout=5)
    assert missing.value.code == 404


def test_a_killed_stratus_leaves_no_bridge_or_rules_behind(start_stratus):
    server = start_stratus()
    bootstrap(server)
    bridge = server.env["STRATUS_DOCKER_BRIDGE"]
    table = nft_table(bridge)
    server.docker("network", "create", "left")
    left = inspect(server, "left")["Options"]["com.docker.network.bridge.name"]
    server.docker("run", "-d", "busybox", "sleep", "60")
    assert bridge in links() and left in links()
    server.stop(sig=signal.SIGKILL)

    def leftovers():
        tables = subprocess.run(["nft", "list", "tables"], capture_output=True, text=True).stdout
        return [name for name in (bridge, left) if name in links()] + ([table] if table in tables else [])

    # The janitor sees Stratus's pipe close and deletes what it was told about.
    deadline = time.monotonic() + 10
    while leftovers():
        assert time.monotonic() < deadline, f"left behind: {leftovers()}"
        time.sleep(0.1)
