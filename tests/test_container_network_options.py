"""Container networking beyond the basics, through the real docker CLI: the embedded DNS server
over TCP (with glibc's own resolver forced onto TCP), a renamed container's DNS name, static
addresses (`--ip`, `--ip-range`) and published port ranges. Containers need root."""

import os
import shutil
import socket
import struct
import subprocess

import pytest

from test_container_networks import api, get
from test_containers import docker, inspect  # noqa: F401 (docker is a fixture)

pytestmark = [
    pytest.mark.skipif(os.geteuid() != 0, reason="containers need root (namespaces, veths, nftables)"),
    pytest.mark.skipif(shutil.which("docker") is None, reason="the docker CLI is not installed"),
]

# Asks the resolv.conf's server for argv[1]'s A records through glibc's stub resolver, over TCP
# only (RES_USEVC); prints the answer's rcode, then its addresses.
TCP_PROBE = r"""
#include <arpa/inet.h>
#include <arpa/nameser.h>
#include <netinet/in.h>
#include <resolv.h>
#include <stdio.h>

int main(int argc, char **argv) {
    unsigned char query[512], answer[4096];
    if (argc != 2 || res_init() != 0) return 2;
    _res.options |= RES_USEVC;
    _res.retry = 1;
    int length = res_mkquery(QUERY, argv[1], C_IN, T_A, NULL, 0, NULL, query, sizeof query);
    if (length < 0) return 2;
    length = res_send(query, length, answer, sizeof answer);
    if (length < 0) { perror("res_send"); return 1; }
    ns_msg message;
    if (ns_initparse(answer, length, &message) != 0) return 1;
    printf("rcode %d\n", ns_msg_getflag(message, ns_f_rcode));
    for (int i = 0; i < ns_msg_count(message, ns_s_an); i++) {
        ns_rr record;
        char text[INET_ADDRSTRLEN];
        if (ns_parserr(&message, ns_s_an, i, &record) == 0 && ns_rr_type(record) == ns_t_a)
            printf("%s\n", inet_ntop(AF_INET, ns_rr_rdata(record), text, sizeof text));
    }
    return 0;
}
"""


@pytest.fixture(scope="module")
def tcp_probe(tmp_path_factory):
    where = tmp_path_factory.mktemp("probe")
    (where / "probe.c").write_text(TCP_PROBE)
    subprocess.run(["cc", "-static", "-O2", "-o", str(where / "probe"), str(where / "probe.c"), "-lresolv"],
                   check=True)
    return where / "probe"


def host_rcode(name):
    """The rcode the host's first resolver gives `name` over UDP (None when it does not answer)."""
    with open("/etc/resolv.conf") as conf:
        server = next(line.split()[1] for line in conf if line.startswith("nameserver"))
    labels = b"".join(bytes([len(part)]) + part.encode() for part in name.split(".")) + b"\0"
    query = struct.pack(">HHHHHH", 0x5151, 0x0100, 1, 0, 0, 0) + labels + struct.pack(">HH", 1, 1)
    family = socket.AF_INET6 if ":" in server else socket.AF_INET
    with socket.socket(family, socket.SOCK_DGRAM) as ask:
        ask.settimeout(5)
        ask.sendto(query, (server, 53))
        try:
            return ask.recv(4096)[3] & 0x0F
        except socket.timeout:
            return None


def test_the_embedded_dns_server_answers_over_tcp(docker, tcp_probe):
    docker.docker("network", "create", "tcpnet")
    docker.docker("run", "-d", "--name", "web", "--network", "tcpnet", "--network-alias", "front",
                  "busybox", "sleep", "60")
    address = inspect(docker, "web")["NetworkSettings"]["Networks"]["tcpnet"]["IPAddress"]
    probe = ["run", "--rm", "--network", "tcpnet", "-v", f"{tcp_probe}:/probe:ro", "busybox", "/probe"]
    assert docker.docker(*probe, "web").stdout == f"rcode 0\n{address}\n"
    assert docker.docker(*probe, "FRONT").stdout == f"rcode 0\n{address}\n"
    # Other names are relayed to the host's resolvers: the answer is theirs (NXDOMAIN here), not
    # the server failure of a relay that got nothing.
    name = "no-such-name.invalid"
    expected = host_rcode(name)
    relayed = docker.docker(*probe, name, check=False, timeout=30)
    if expected is None:
        assert relayed.stdout == "rcode 2\n", relayed
    else:
        assert relayed.stdout == f"rcode {expected}\n", relayed


def test_a_renamed_container_answers_to_its_new_name_at_once(docker):
    docker.docker("network", "create", "renet")
    docker.docker("run", "-d", "--name", "before", "--network", "renet", "--network-alias", "kept",
                  "busybox", "sleep", "60")
    address = inspect(docker, "before")["NetworkSettings"]["Networks"]["renet"]["IPAddress"]
    docker.docker("rename", "before", "after")
    script = "nslookup after; nslookup kept; nslookup before"
    out = docker.docker("run", "--rm", "--network", "renet", "busybox", "sh", "-c", script, check=False).stdout
    answers = out.split("Server:")[1:]
    assert len(answers) == 3 and address in answers[0] and address in answers[1], out
    assert address not in answers[2], "the old name is gone"
    endpoint = inspect(docker, "after")["NetworkSettings"]["Networks"]["renet"]
    assert endpoint["DNSNames"][:2] == ["after", "kept"], endpoint
    network = inspect(docker, "renet")["Containers"]
    assert [c["Name"] for c in network.values()] == ["after"], network


def test_static_addresses_and_ip_ranges(docker):
    docker.docker("network", "create", "--subnet", "10.201.0.0/24", "--ip-range", "10.201.0.128/25", "fixed")
    config = inspect(docker, "fixed")["IPAM"]["Config"]
    assert config == [{"Subnet": "10.201.0.0/24", "IPRange": "10.201.0.128/25", "Gateway": "10.201.0.1"}], config
    docker.docker("run", "-d", "--name", "pinned", "--network", "fixed", "--ip", "10.201.0.10", "busybox", "sleep", "60")
    docker.docker("run", "-d", "--name", "ranged", "--network", "fixed", "busybox", "sleep", "60")
    pinned = inspect(docker, "pinned")["NetworkSettings"]["Networks"]["fixed"]
    assert pinned["IPAddress"] == "10.201.0.10" and pinned["IPAMConfig"] == {"IPv4Address": "10.201.0.10"}
    ranged = inspect(docker, "ranged")["NetworkSettings"]["Networks"]["fixed"]
    assert ranged["IPAddress"] == "10.201.0.128" and ranged["IPAMConfig"] is None, ranged
    inside = docker.docker("exec", "pinned", "ip", "-o", "-4", "addr", "show", "eth0").stdout
    assert "10.201.0.10/24" in inside, inside
    # The address is kept across a restart, and reachable by its neighbour.
    docker.docker("restart", "-t", "0", "pinned")
    assert inspect(docker, "pinned")["NetworkSettings"]["Networks"]["fixed"]["IPAddress"] == "10.201.0.10"
    assert "1 packets received" in docker.docker("exec", "ranged", "ping", "-c1", "-W3", "10.201.0.10").stdout

    def refused(*args):
        result = docker.docker(*args, check=False)
        assert result.returncode != 0, result
        return result.stderr

    assert "Address already in use" in refused("run", "--rm", "--network", "fixed", "--ip", "10.201.0.10",
                                               "busybox", "true")
    assert "Address already in use" in refused("run", "--rm", "--network", "fixed", "--ip", "10.201.0.1",
                                               "busybox", "true")
    outside = refused("create", "--network", "fixed", "--ip", "10.9.9.9", "busybox")
    assert "invalid config for network fixed: invalid endpoint settings:\nno configured subnet or ip-range " \
           "contain the IP address 10.9.9.9" in outside, outside
    assert "user specified IP address is supported on user defined networks only" in refused(
        "run", "--rm", "--ip", "172.17.0.99", "busybox", "true")
    docker.docker("network", "create", "auto")
    assert "only when connecting to networks with user configured subnets" in refused(
        "create", "--network", "auto", "--ip", "172.30.0.5", "busybox")
    assert docker.docker("ps", "-aq", "--filter", "status=created").stdout == "", "nothing half-made"

    # network connect --ip, to a running container and to a stopped one.
    docker.docker("network", "create", "--subnet", "10.202.0.0/24", "second")
    docker.docker("network", "connect", "--ip", "10.202.0.50", "second", "ranged")
    assert "10.202.0.50/24" in docker.docker("exec", "ranged", "ip", "-o", "-4", "addr").stdout
    docker.docker("create", "--name", "later", "busybox", "sleep", "60")
    docker.docker("network", "connect", "--ip", "10.202.0.51", "second", "later")
    docker.docker("start", "later")
    assert inspect(docker, "later")["NetworkSettings"]["Networks"]["second"]["IPAddress"] == "10.202.0.51"
    assert "Address already in use" in refused("network", "connect", "--ip", "10.202.0.50", "second", "pinned")
    assert "supported on user defined networks only" in refused("network", "connect", "--ip", "172.17.0.99",
                                                                "bridge", "pinned")
    # The CLI checks that a range lies in its subnet itself; the API answers as dockerd does.
    status, bad_range = api(docker, "POST", "/networks/create", {
        "Name": "bad", "IPAM": {"Config": [{"Subnet": "10.203.0.0/24", "IPRange": "10.204.0.0/25"}]}})
    assert (status, bad_range["message"]) == (400, "invalid network config:\ninvalid ip-range 10.204.0.0/25: "
                                                    "parent subnet 10.203.0.0/24 doesn't contain ip-range")


def free_ports(count, kind=socket.SOCK_STREAM):
    """The first of `count` consecutive ports free on 127.0.0.1."""
    for base in range(20000 + os.getpid() % 20000, 65000, 7):
        probes = []
        try:
            for port in range(base, base + count):
                probe = socket.socket(socket.AF_INET, kind)
                probes.append(probe)
                probe.bind(("127.0.0.1", port))
            return base
        except OSError:
            continue
        finally:
            for probe in probes:
                probe.close()
    raise RuntimeError("no free ports")


def test_published_port_ranges(docker):
    tcp, udp = free_ports(2), free_ports(2, socket.SOCK_DGRAM)
    serve = "for p in 80 81; do mkdir -p /w$p && echo port $p > /w$p/index.html && httpd -p $p -h /w$p; done; " \
            "exec sleep 60"
    docker.docker("run", "-d", "--name", "ranges", "-p", f"127.0.0.1:{tcp}-{tcp + 1}:80-81",
                  "-p", f"127.0.0.1:{udp}-{udp + 1}:80-81/udp", "busybox", "sh", "-c", serve)
    assert get(f"http://127.0.0.1:{tcp}/") == "port 80\n"
    assert get(f"http://127.0.0.1:{tcp + 1}/") == "port 81\n"
    listed = docker.docker("port", "ranges").stdout.splitlines()
    assert sorted(listed) == sorted([f"80/tcp -> 127.0.0.1:{tcp}", f"81/tcp -> 127.0.0.1:{tcp + 1}",
                                     f"80/udp -> 127.0.0.1:{udp}", f"81/udp -> 127.0.0.1:{udp + 1}"]), listed
    # The CLI groups a range in `ps` only where host and container ports are equal.
    ps = docker.docker("ps", "--filter", "name=ranges", "--format", "{{.Ports}}").stdout.strip().split(", ")
    assert sorted(ps) == sorted([f"127.0.0.1:{tcp}->80/tcp", f"127.0.0.1:{tcp + 1}->81/tcp",
                                 f"127.0.0.1:{udp}->80/udp", f"127.0.0.1:{udp + 1}->81/udp"]), ps
    ports = inspect(docker, "ranges")["NetworkSettings"]["Ports"]
    assert ports["81/udp"] == [{"HostIp": "127.0.0.1", "HostPort": str(udp + 1)}], ports
    for port in (udp, udp + 1):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe, pytest.raises(OSError):
            probe.bind(("127.0.0.1", port))

    # A host range for one container port takes the first free port of the range.
    base = free_ports(3)
    with socket.socket() as held:
        held.bind(("127.0.0.1", base))
        held.listen()
        docker.docker("run", "-d", "--name", "first-free", "-p", f"127.0.0.1:{base}-{base + 2}:80",
                      "busybox", "sh", "-c", "echo hi > /i && exec httpd -f -p 80 -h /")
        assert docker.docker("port", "first-free", "80").stdout.strip() == f"127.0.0.1:{base + 1}"
        assert get(f"http://127.0.0.1:{base + 1}/i") == "hi\n"
        bindings = inspect(docker, "first-free")["HostConfig"]["PortBindings"]
        assert bindings == {"80/tcp": [{"HostIp": "127.0.0.1", "HostPort": f"{base}-{base + 2}"}]}, bindings
    # The CLI refuses a reversed range itself; the API answers as dockerd does.
    status, bad = api(docker, "POST", "/containers/create", {
        "Image": "busybox", "HostConfig": {"PortBindings": {"80/tcp": [{"HostPort": f"{base + 2}-{base}"}]}}})
    assert (status, bad["message"]) == (400, f'invalid port specification: "{base + 2}-{base}"'), bad
