"""Container create+start+wait+remove of /bin/true from busybox: Stratus's Docker Engine API beside
runc and crun given two bundles on the same layer (`runc spec`'s, and the spec Stratus ran the same
container with, seccomp profile and all), the docker CLI end to end, idle memory per container, and
a cached rebuild of a 10-step Dockerfile through `docker build`.

    sudo python3 bench/containers.py     # as root; --runs 50 --parallel 8 --per-thread 10 --cli-runs 20 --fsync always --rounds 1

Needs runc and crun (`apt-get install -y runc crun`) and the docker CLI for the end-to-end row.
Stratus is the release build of bench/common.py (or STRATUS_BIN).
"""
import argparse
import http.client
import json
import os
import pathlib
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
import common  # noqa: E402


class UnixConnection(http.client.HTTPConnection):
    def __init__(self, path, timeout=60):
        super().__init__("localhost", timeout=timeout)
        self.path = path

    def connect(self):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(self.timeout)
        self.sock.connect(self.path)


class Api:
    def __init__(self, path):
        self.path = path
        self.connection = UnixConnection(path)

    def call(self, method, url, body=None, expect=(200, 201, 204)):
        data = json.dumps(body).encode() if body is not None else None
        headers = {"Content-Type": "application/json"} if data is not None else {}
        for attempt in range(2):
            try:
                self.connection.request(method, url, body=data, headers=headers)
                response = self.connection.getresponse()
                payload = response.read()
                break
            except (http.client.HTTPException, OSError):
                self.connection.close()
                self.connection = UnixConnection(self.path)
                if attempt:
                    raise
        if response.status not in expect:
            raise RuntimeError(f"{method} {url}: {response.status} {payload[:300]!r}")
        return json.loads(payload) if payload and "json" in (response.getheader("Content-Type") or "") else payload

    def cycle(self, cmd=("/bin/true",)):
        """create+start+wait+remove; returns the exit code."""
        created = self.call("POST", "/containers/create", {"Image": "busybox", "Cmd": list(cmd)})
        cid = created["Id"]
        self.call("POST", f"/containers/{cid}/start")
        status = self.call("POST", f"/containers/{cid}/wait")["StatusCode"]
        self.call("DELETE", f"/containers/{cid}")
        return status


def percentile(samples, p):
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


def timed(one, runs):
    """Runs `one(i)` `runs` times; latencies in ms."""
    times = []
    for i in range(runs):
        started = time.perf_counter()
        one(i)
        times.append((time.perf_counter() - started) * 1000)
    return times


def settle(seconds=3):
    """Lets the kernel finish tearing down what the runs before made (network namespaces go in a
    worker thread, seconds after their last process) before the next sequential runs are timed."""
    time.sleep(seconds)


def parallel(make_one, threads, per_thread):
    """`threads` threads each timing `per_thread` runs of their own `make_one(t)`; returns
    (latencies, containers per second)."""
    results, errors = [], []

    def worker(t):
        try:
            results.extend(timed(make_one(t), per_thread))
        except Exception as failure:  # noqa: BLE001
            errors.append(failure)

    pool = [threading.Thread(target=worker, args=(t,)) for t in range(threads)]
    started = time.perf_counter()
    for thread in pool:
        thread.start()
    for thread in pool:
        thread.join()
    elapsed = time.perf_counter() - started
    if errors:
        raise errors[0]
    return results, len(results) / elapsed


def summary(times, rate=None):
    out = {"p50_ms": percentile(times, 50), "p99_ms": percentile(times, 99), "n": len(times)}
    if rate is not None:
        out["per_s"] = rate
    return out


# --- runc and crun -----------------------------------------------------------------------------

def make_bundle(layer, where):
    """An OCI bundle: rootfs = the busybox image's layer, config.json from `runc spec`."""
    bundle = where / "bundle"
    bundle.mkdir()
    shutil.copytree(layer, bundle / "rootfs", symlinks=True)
    subprocess.run(["runc", "spec"], cwd=bundle, check=True)
    config = json.loads((bundle / "config.json").read_text())
    config["process"]["args"] = ["/bin/true"]
    config["process"]["terminal"] = False
    (bundle / "config.json").write_text(json.dumps(config))
    return bundle


def make_stratus_bundle(layer, where, captured):
    """The bundle Stratus itself ran a `/bin/true` container from (its config.json: Docker's
    capabilities, seccomp profile, masked paths, device rules, /etc/hosts and resolv.conf binds),
    on a copy of the same layer. What ties it to that container goes: its root and file paths point
    into this bundle, the network namespace it joined becomes a new one (runc and crun plug in no
    veth), and the cgroup is left to each runtime's default (one per container)."""
    bundle = where / "stratus-bundle"
    bundle.mkdir()
    shutil.copytree(layer, bundle / "rootfs", symlinks=True)
    config = json.loads((captured / "config.json").read_text())
    config["root"]["path"] = "rootfs"
    config["process"]["args"] = ["/bin/true"]
    config["process"]["terminal"] = False
    for namespace in config["linux"]["namespaces"]:
        namespace.pop("path", None)
    config["linux"].pop("cgroupsPath", None)
    for mount in config["mounts"]:
        source = pathlib.Path(mount.get("source", ""))
        if (captured / source.name).exists() and source.name in ("hosts", "resolv.conf"):
            shutil.copy(captured / source.name, bundle / source.name)
            mount["source"] = str(bundle / source.name)
    (bundle / "config.json").write_text(json.dumps(config))
    return bundle


def oci_cycle(engine, bundle, name):
    # `run` (without --detach) is create+start+wait and deletes the container when it exits, as
    # both CLIs do: a later `delete` only answers "does not exist", so it is not called.
    result = subprocess.run([engine, "run", "--bundle", str(bundle), name], stdin=subprocess.DEVNULL, capture_output=True)
    if result.returncode != 0:
        raise RuntimeError(f"{engine} run: {result.returncode} {result.stderr[-300:]!r}")


# The two bundles each runtime is timed with: `runc spec`'s, and the one Stratus ran.
BUNDLES = (("", "bundle"), (" (Stratus's spec)", "stratus-bundle"))


def oci_worker(scratch, args):
    """Runs inside the mount namespace set up by run_oci; prints JSON."""
    out = {}
    for engine in ("runc", "crun"):
        if not shutil.which(engine):
            continue
        for suffix, directory in BUNDLES:
            bundle = scratch / directory
            oci_cycle(engine, bundle, f"warm-{engine}")
            settle()
            seq = timed(lambda i, e=engine: oci_cycle(e, bundle, f"s{i}-{e}-{os.getpid()}"), args.runs)
            par, rate = parallel(lambda t, e=engine: (lambda i: oci_cycle(e, bundle, f"p{t}-{i}-{e}-{os.getpid()}")), args.parallel, args.per_thread)
            out[engine + suffix] = {"sequential": summary(seq), "parallel": summary(par, rate)}
    print(json.dumps(out))


def run_oci(scratch, args):
    """crun 1.8 refuses a hybrid cgroup host whose cgroup2 mount still holds a controller (here
    hugetlb): "cgroups in hybrid mode not supported, drop all controllers from cgroupv2". So runc and
    crun both run in a private mount namespace without /sys/fs/cgroup/unified (the v1 hierarchies
    they use are untouched). The namespace is made once, not per run."""
    unified = pathlib.Path("/sys/fs/cgroup/unified/cgroup.controllers")
    script = [sys.executable, __file__, "--oci-worker", str(scratch), "--runs", str(args.runs), "--parallel", str(args.parallel), "--per-thread", str(args.per_thread)]
    if unified.exists() and unified.read_text().strip():
        command = ["unshare", "--mount", "--propagation", "private", "sh", "-c", 'umount /sys/fs/cgroup/unified && exec "$@"', "sh", *script]
    else:
        command = script
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"oci worker failed: {result.stderr[-1000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


# --- Stratus -------------------------------------------------------------------------------------

def children(pid):
    found = []
    for entry in pathlib.Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1]) == pid:
                    found.append(int(entry.name))
            except (OSError, IndexError, ValueError):
                pass
    return found


def idle_memory(api, process, layer, count=10):
    """Starts `count` `sleep 1000` containers; per container: (growth of the runtime processes'
    RSS + the containers' processes' RSS - the same sleep's RSS run on the host) / count."""
    runtimes = [p for p in children(process.pid) if b"runtime" in pathlib.Path(f"/proc/{p}/cmdline").read_bytes()]
    if not runtimes:
        raise RuntimeError(f"no runtime process among {children(process.pid)}")
    # The workload's own RSS: the image's busybox sleep, run directly on the host.
    alone = subprocess.Popen([str(layer / "bin" / "sleep"), "1000"])
    time.sleep(0.3)
    sleep_rss = common.rss_mib(alone.pid)
    alone.kill()
    alone.wait()
    before = {"runtime": sum(map(common.rss_mib, runtimes)), "stratus": common.rss_mib(process.pid)}
    ids = []
    try:
        for _ in range(count):
            cid = api.call("POST", "/containers/create", {"Image": "busybox", "Cmd": ["sleep", "1000"]})["Id"]
            ids.append(cid)
            api.call("POST", f"/containers/{cid}/start")
        time.sleep(1)
        pids = [api.call("GET", f"/containers/{cid}/json")["State"]["Pid"] for cid in ids]
        # Every process of each container (its init and anything under it).
        procs, frontier = set(), list(pids)
        while frontier:
            pid = frontier.pop()
            if pid not in procs:
                procs.add(pid)
                frontier.extend(children(pid))
        container_rss = sum(common.rss_mib(p) for p in procs)
        after = {"runtime": sum(map(common.rss_mib, runtimes)), "stratus": common.rss_mib(process.pid)}
        cgroup_mem = 0
        for cid in ids:
            path = pathlib.Path(f"/sys/fs/cgroup/memory/stratus/{cid}/memory.usage_in_bytes")
            if path.exists():
                cgroup_mem += int(path.read_text()) / 1048576
        runtime_growth = after["runtime"] - before["runtime"]
        return {
            "containers": count, "processes": len(procs), "sleep_rss_mib": sleep_rss, "container_rss_mib": container_rss,
            "runtime_rss_before_mib": before["runtime"], "runtime_rss_after_mib": after["runtime"],
            "stratus_rss_before_mib": before["stratus"], "stratus_rss_after_mib": after["stratus"],
            "per_container_mib": (runtime_growth + container_rss - count * sleep_rss) / count,
            "per_container_with_engine_mib": (runtime_growth + after["stratus"] - before["stratus"] + container_rss - count * sleep_rss) / count,
            "cgroup_usage_per_container_mib": cgroup_mem / count if cgroup_mem else None,
        }
    finally:
        for cid in ids:
            api.call("DELETE", f"/containers/{cid}?force=true", expect=(200, 204, 404))


def docker_cli(sock, runs, *command):
    """Times `docker <command>` through the CLI."""
    env = {**os.environ, "DOCKER_HOST": f"unix://{sock}"}
    docker = shutil.which("docker")

    def one(_):
        result = subprocess.run([docker, *command], env=env, capture_output=True, stdin=subprocess.DEVNULL)
        if result.returncode != 0:
            raise RuntimeError(f"docker {command[0]}: {result.returncode} {result.stderr[-300:]!r}")

    one(0)
    return summary(timed(one, runs))


# Ten steps, two of them RUNs and one a COPY, as the cached-rebuild goal asks.
TEN_STEPS = """\
FROM busybox
ENV APP=/app
WORKDIR /app
COPY hello.txt .
RUN echo one > /one.txt
RUN mkdir -p /var/x && echo two > /var/x/two
ARG VERSION=1
LABEL version=$VERSION
EXPOSE 80
CMD ["cat", "/app/hello.txt"]
"""


def cached_rebuild(sock, scratch, runs):
    """`docker build` of TEN_STEPS once, then `runs` rebuilds in which every step is cached."""
    context = scratch / "build-context"
    context.mkdir()
    (context / "Dockerfile").write_text(TEN_STEPS)
    (context / "hello.txt").write_text("hello\n")
    env = {**os.environ, "DOCKER_HOST": f"unix://{sock}"}
    command = [shutil.which("docker"), "build", "-t", "bench-build", str(context)]

    def build(_):
        result = subprocess.run(command, env=env, capture_output=True, text=True, stdin=subprocess.DEVNULL)
        if result.returncode != 0:
            raise RuntimeError(f"docker build: {result.returncode} {result.stderr[-300:]!r}")
        return result.stdout

    first = timed(build, 1)[0]
    cached = build(0).count(" ---> Using cache")
    if cached != 9:
        raise RuntimeError(f"the rebuild used the cache for {cached} of 9 steps")
    return {"first_ms": first, **summary(timed(build, runs))}


def run_stratus(scratch, args):
    binary = os.environ.get("STRATUS_BIN") or str(common.TARGET / "release" / "stratus")
    data = scratch / "stratus"
    sock = scratch / "docker.sock"
    subprocess.run([binary, "image", "bootstrap", "busybox", "--data-dir", str(data)], check=True, capture_output=True)
    spec = (lambda p: [binary, "up", "--port", str(p), "--data-dir", str(data), "--docker-socket", str(sock), "--fsync", args.fsync],
            "/_stratus/health", {}, True)
    process = common.start("stratus-containers", spec, common.free_port())
    try:
        deadline = time.monotonic() + 30
        while not sock.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        api = Api(str(sock))
        api.call("GET", "/_ping")
        if api.cycle() != 0:
            raise RuntimeError("warm-up container did not exit 0")
        # The spec Stratus runs /bin/true with, for runc and crun to run too.
        captured = scratch / "stratus-spec"
        captured.mkdir()
        box = api.call("POST", "/containers/create", {"Image": "busybox", "Cmd": ["/bin/true"]})["Id"]
        api.call("POST", f"/containers/{box}/start")
        api.call("POST", f"/containers/{box}/wait")
        for name in ("config.json", "hosts", "resolv.conf"):
            shutil.copy(data / "containers" / "run" / box / name, captured / name)
        api.call("DELETE", f"/containers/{box}")
        settle()
        out = {"sequential": summary(timed(lambda i: api.cycle(), args.runs))}
        par, rate = parallel(lambda t: (lambda apis: (lambda i: apis.cycle()))(Api(str(sock))), args.parallel, args.per_thread)
        out["parallel"] = summary(par, rate)
        layer = next((data / "containers" / "layers").iterdir())
        out["memory"] = idle_memory(api, process, layer)
        if shutil.which("docker"):
            out["cli"] = docker_cli(sock, args.cli_runs, "run", "--rm", "busybox", "true")
            box = api.call("POST", "/containers/create", {"Image": "busybox", "Cmd": ["sleep", "1000"]})["Id"]
            api.call("POST", f"/containers/{box}/start")
            out["exec"] = docker_cli(sock, args.cli_runs, "exec", box, "true")
            api.call("DELETE", f"/containers/{box}?force=1")
            out["build"] = cached_rebuild(sock, scratch, args.cli_runs)
        return out, layer, captured
    finally:
        common.stop(process)


def cell(result, key):
    if not result:
        return "-"
    r = result[key]
    text = f"{r['p50_ms']:.1f} / {r['p99_ms']:.1f} ms"
    if "per_s" in r:
        text += f" ({r['per_s']:.0f}/s)"
    return text


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=50)
    parser.add_argument("--parallel", type=int, default=8)
    parser.add_argument("--per-thread", type=int, default=10)
    parser.add_argument("--cli-runs", type=int, default=20)
    parser.add_argument("--fsync", default="always", help="Stratus's --fsync: always, or an interval such as 100ms")
    parser.add_argument("--rounds", type=int, default=1,
                        help="run it all this many times and summarise the ratio to crun given the same bundle (this machine is noisy)")
    parser.add_argument("--oci-worker")
    args = parser.parse_args()
    if args.oci_worker:
        return oci_worker(pathlib.Path(args.oci_worker), args)
    if os.geteuid() != 0:
        sys.exit("run as root: Stratus, runc and crun make namespaces and cgroups")
    for engine in ("runc", "crun"):
        if not shutil.which(engine):
            print(f"{engine} not found: apt-get install -y {engine} (its column is left out)")
    ratios = [one_round(args) for _ in range(args.rounds)]
    ratios = [r for r in ratios if r]
    if len(ratios) > 1:
        print(f"\ncrun given the same bundle / Stratus, sequential p50, {len(ratios)} rounds: min {min(ratios):.2f}x, "
              f"median {statistics.median(ratios):.2f}x, max {max(ratios):.2f}x; 2x in {sum(r >= 2 for r in ratios)} of them")


def one_round(args):
    """Runs and prints everything once; returns crun's sequential p50 on Stratus's bundle over
    Stratus's, if crun ran."""
    scratch = pathlib.Path(tempfile.mkdtemp(prefix="containers-bench-"))
    try:
        print("running stratus ...", flush=True)
        stratus, layer, captured = run_stratus(scratch, args)
        print("running runc and crun ...", flush=True)
        make_bundle(layer, scratch)
        make_stratus_bundle(layer, scratch, captured)
        oci = run_oci(scratch, args)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    results = {"stratus": stratus, **oci}
    pathlib.Path("/tmp/containers-bench-results.json").write_text(json.dumps(results, indent=1))

    names = ["stratus"] + [e + suffix for e in ("runc", "crun") for suffix, _ in BUNDLES if e + suffix in oci]
    print()
    print("| create+start+wait+remove of /bin/true, p50 / p99 | " + " | ".join(names) + " |")
    print("|" + "---|" * (len(names) + 1))
    for key, label in (("sequential", f"sequential, {args.runs} runs"), ("parallel", f"{args.parallel} threads x {args.per_thread} runs (containers/s)")):
        print(f"| {label} | " + " | ".join(cell(results[n], key) for n in names) + " |")
    for engine in names[1:]:
        for key in ("sequential", "parallel"):
            print(f"{key}: {engine} / Stratus = p50 {results[engine][key]['p50_ms'] / stratus[key]['p50_ms']:.2f}x, "
                  f"p99 {results[engine][key]['p99_ms'] / stratus[key]['p99_ms']:.2f}x (above 1: Stratus is faster)")
    if "cli" in stratus:
        print(f"docker run --rm busybox true through the CLI, {args.cli_runs} runs: p50 {stratus['cli']['p50_ms']:.1f} / p99 {stratus['cli']['p99_ms']:.1f} ms")
        print(f"docker exec <running busybox> true through the CLI, {args.cli_runs} runs: p50 {stratus['exec']['p50_ms']:.1f} / p99 {stratus['exec']['p99_ms']:.1f} ms")
    if "build" in stratus:
        b = stratus["build"]
        print(f"docker build of a 10-step Dockerfile: first {b['first_ms']:.0f} ms; cached rebuild, {args.cli_runs} runs: "
              f"p50 {b['p50_ms']:.1f} / p99 {b['p99_ms']:.1f} ms (goal under 200 ms: {'met' if b['p50_ms'] < 200 else 'NOT met'})")
    m = stratus["memory"]
    print(f"idle memory, {m['containers']} sleep containers: runtime RSS {m['runtime_rss_before_mib']:.2f} -> {m['runtime_rss_after_mib']:.2f} MiB, "
          f"containers' {m['processes']} processes {m['container_rss_mib']:.2f} MiB, sleep alone {m['sleep_rss_mib']:.2f} MiB: "
          f"{m['per_container_mib'] * 1024:.0f} KiB per container beyond the workload "
          f"({m['per_container_with_engine_mib'] * 1024:.0f} KiB counting the stratus process's growth too"
          + (f"; cgroup memory.usage_in_bytes {m['cgroup_usage_per_container_mib'] * 1024:.0f} KiB each" if m["cgroup_usage_per_container_mib"] else "") + ")")
    sp = stratus["sequential"]["p50_ms"]
    crun = oci.get("crun (Stratus's spec)", {}).get("sequential", {}).get("p50_ms")
    plain = oci.get("crun", {}).get("sequential", {}).get("p50_ms")
    print(f"goals: API p50 under 20 ms: {'met' if sp < 20 else 'NOT met'} ({sp:.1f} ms); "
          + (f"2x crun given the same bundle: {'met' if crun / sp >= 2 else 'NOT met'} ({crun / sp:.2f}x; "
             f"{plain / sp:.2f}x against crun with runc spec's smaller one); " if crun and plain else "")
          + f"under 1 MiB per idle container: {'met' if m['per_container_mib'] < 1 else 'NOT met'}")
    return crun / sp if crun else None


if __name__ == "__main__":
    main()
