"""Volumes and mounts through the real docker CLI: named and anonymous volumes, bind mounts,
read-only mounts, tmpfs, an image's VOLUMEs seeded from its content, `rm -v`, the volumes API and
its errors. Containers need root."""

import hashlib
import json
import os

from test_containers import bootstrap, inspect
# The same root and docker CLI requirements, and the `docker` fixture (Stratus with busybox).
from test_containers import docker, pytestmark  # noqa: F401


def sh(server, *args, script, check=True):
    return server.docker("run", "--rm", *args, "busybox", "sh", "-c", script, check=check)


def test_a_named_volume_outlives_its_container_and_is_shared(docker):
    created = docker.docker("volume", "create", "--label", "team=db", "data").stdout
    assert created == "data\n"
    sh(docker, "-v", "data:/data", script="echo kept > /data/file")
    assert sh(docker, "-v", "data:/srv", script="cat /srv/file").stdout == "kept\n"

    docker.docker("run", "-d", "--name", "writer", "-v", "data:/data", "busybox", "sh", "-c",
                  "while true; do date > /data/now; sleep 0.1; done")
    assert sh(docker, "--mount", "source=data,target=/d,readonly", script="sleep 0.3; cat /d/now").stdout

    volume = json.loads(docker.docker("volume", "inspect", "data").stdout)[0]
    assert (volume["Driver"], volume["Labels"], volume["Scope"]) == ("local", {"team": "db"}, "local")
    assert volume["Mountpoint"] == str(docker.data_dir / "containers/volumes/data/_data")
    assert open(os.path.join(volume["Mountpoint"], "file")).read() == "kept\n"
    mounts = inspect(docker, "writer")["Mounts"]
    assert mounts == [{"Type": "volume", "Name": "data", "Source": volume["Mountpoint"], "Destination": "/data",
                       "Driver": "local", "Mode": "z", "RW": True, "Propagation": ""}]

    in_use = docker.docker("volume", "rm", "data", check=False)
    assert in_use.returncode == 1 and "volume is in use" in in_use.stderr
    docker.docker("rm", "-f", "writer")
    assert docker.docker("volume", "ls", "-q", "--filter", "label=team=db").stdout == "data\n"
    assert docker.docker("volume", "rm", "data").stdout == "data\n"
    assert docker.docker("volume", "ls", "-q").stdout == ""


def test_volumes_survive_a_restart_of_stratus(start_stratus):
    first = start_stratus("node")
    bootstrap(first)
    sh(first, "-v", "keep:/k", script="echo still here > /k/f")
    first.stop()
    second = start_stratus("node")
    assert second.docker("volume", "ls", "--format", "{{.Name}} {{.Driver}}").stdout == "keep local\n"
    assert sh(second, "-v", "keep:/k", script="cat /k/f").stdout == "still here\n"


def test_bind_mounts_both_ways_and_read_only(docker, tmp_path):
    host = tmp_path / "shared"
    host.mkdir()
    (host / "from-host").write_text("hello from the host\n")
    out = sh(docker, "-v", f"{host}:/mnt", script="cat /mnt/from-host; echo back > /mnt/from-container").stdout
    assert out == "hello from the host\n"
    assert (host / "from-container").read_text() == "back\n"

    refused = sh(docker, "--mount", f"type=bind,source={host},target=/mnt,readonly",
                 script="cat /mnt/from-host && touch /mnt/x", check=False)
    assert refused.returncode == 1 and "Read-only file system" in refused.stderr, refused.stderr
    assert not (host / "x").exists()
    assert sh(docker, "-v", f"{host}/from-host:/etc/motd:ro", script="cat /etc/motd").stdout == "hello from the host\n"

    made = tmp_path / "made" / "by-docker"
    sh(docker, "-v", f"{made}:/m", script="true")
    assert made.is_dir(), "-v makes a missing host directory, as Docker does"
    missing = sh(docker, "--mount", f"type=bind,source={tmp_path}/nope,target=/m", script="true", check=False)
    assert missing.returncode == 125 and "bind source path does not exist" in missing.stderr


def test_tmpfs_mounts(docker):
    out = sh(docker, "--tmpfs", "/scratch:size=1m", script="grep ' /scratch ' /proc/mounts; "
             "dd if=/dev/zero of=/scratch/f bs=1k count=2048 2>&1; true").stdout
    line = out.splitlines()[0].split()
    assert line[2] == "tmpfs" and "size=1024k" in line[3], out
    assert "No space left on device" in out
    out = sh(docker, "--mount", "type=tmpfs,target=/t,tmpfs-size=65536", script="grep ' /t ' /proc/mounts").stdout
    assert out.split()[2] == "tmpfs" and "size=64k" in out, out


def image_with_volume(server, name, path):
    """Tags a copy of busybox whose config declares `VOLUME path` (written straight into the OCI
    layout, as an image built with VOLUME would be)."""
    layout = server.data_dir / "containers/images"
    index = json.loads((layout / "index.json").read_text())
    blob = lambda digest: layout / "blobs/sha256" / digest.removeprefix("sha256:")  # noqa: E731

    def store(document, media_type):
        data = json.dumps(document).encode()
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        blob(digest).write_bytes(data)
        return {"mediaType": media_type, "digest": digest, "size": len(data)}

    base = next(m for m in index["manifests"]
                if m.get("annotations", {}).get("org.opencontainers.image.ref.name", "").startswith("busybox"))
    manifest = json.loads(blob(base["digest"]).read_text())
    config = json.loads(blob(manifest["config"]["digest"]).read_text())
    config["config"]["Volumes"] = {path: {}}
    manifest["config"] = store(config, manifest["config"]["mediaType"])
    descriptor = store(manifest, base["mediaType"])
    descriptor["annotations"] = {"org.opencontainers.image.ref.name": name}
    index["manifests"].append(descriptor)
    (layout / "index.json").write_text(json.dumps(index))


def test_image_volumes_are_seeded_and_removed_with_rm_v(docker):
    image_with_volume(docker, "withvol:latest", "/etc")
    docker.docker("run", "--name", "seeded", "withvol", "sh", "-c", "echo mine >> /etc/hostname.orig")
    mounts = inspect(docker, "seeded")["Mounts"]
    assert len(mounts) == 1 and mounts[0]["Type"] == "volume" and mounts[0]["Destination"] == "/etc"
    anonymous = mounts[0]["Name"]
    assert len(anonymous) == 64
    source = mounts[0]["Source"]
    assert os.path.exists(os.path.join(source, "passwd")), "the image's /etc was copied into the volume"
    assert open(os.path.join(source, "hostname.orig")).read() == "mine\n"
    volume = json.loads(docker.docker("volume", "inspect", anonymous).stdout)[0]
    assert "com.docker.volume.anonymous" in volume["Labels"]

    docker.docker("run", "--name", "named", "-v", "mine:/etc", "withvol", "true")
    assert os.path.exists(docker.data_dir / "containers/volumes/mine/_data/passwd"), "named volumes are seeded too"
    docker.docker("run", "--name", "anon", "-v", "/cache", "busybox", "true")
    cache = inspect(docker, "anon")["Mounts"][0]["Name"]

    docker.docker("rm", "-v", "seeded", "named")
    docker.docker("rm", "anon")
    names = docker.docker("volume", "ls", "-q").stdout.split()
    assert anonymous not in names and "mine" in names and cache in names, "rm -v removes only anonymous volumes"
    pruned = docker.docker("volume", "prune", "-f").stdout
    assert cache in pruned and "mine" not in pruned
    docker.docker("volume", "prune", "-af")
    assert docker.docker("volume", "ls", "-q").stdout == ""


def test_volume_errors_come_back_in_dockers_words(docker):
    missing = docker.docker("volume", "inspect", "nope", check=False)
    assert missing.returncode == 1 and "get nope: no such volume" in missing.stderr
    assert docker.docker("volume", "rm", "nope", check=False).returncode == 1
    bad_name = docker.docker("volume", "create", "x!", check=False)
    assert "includes invalid characters for a local volume name" in bad_name.stderr
    bad_spec = sh(docker, "-v", "/a:/b:bogus", script="true", check=False)
    assert bad_spec.returncode == 125 and "invalid mode: bogus" in bad_spec.stderr
    relative = sh(docker, "--mount", "type=volume,source=v,target=rel", script="true", check=False)
    assert relative.returncode == 125 and "mount path must be absolute" in relative.stderr, relative.stderr
    duplicate = sh(docker, "-v", "a1:/x", "-v", "a2:/x", script="true", check=False)
    assert duplicate.returncode == 125 and "Duplicate mount point: /x" in duplicate.stderr, duplicate.stderr
    assert docker.docker("ps", "-aq").stdout == ""
