"""Images through the real docker CLI: save/load round trips, import with --change, layers with
whiteouts, commit, history, prune and filters, and bad archives refused without leaving anything
behind. Containers need root."""

import gzip
import hashlib
import io
import json
import os
import shutil
import subprocess
import tarfile

import pytest

from stratus_harness import BINARY
from test_containers import bootstrap, docker, inspect  # noqa: F401 (docker is a fixture)

pytestmark = [
    pytest.mark.skipif(os.geteuid() != 0, reason="containers need root (namespaces, overlayfs, cgroups)"),
    pytest.mark.skipif(shutil.which("docker") is None, reason="the docker CLI is not installed"),
]


def stored(server):
    """What the image store holds on disk: blob and unpacked layer names."""
    root = server.data_dir / "containers"
    return sorted(p.name for p in (root / "images/blobs/sha256").iterdir()), sorted(
        p.name for p in (root / "layers").iterdir())


def ids(server, *args):
    return server.docker("images", "-q", "--no-trunc", *args).stdout.split()


def busybox_layer(server, tmp_path):
    """The busybox image's only layer tar, taken from `docker save`."""
    archive = tmp_path / "busybox-for-layer.tar"
    server.docker("save", "-o", str(archive), "busybox")
    with tarfile.open(archive) as tar:
        manifest = json.load(tar.extractfile("manifest.json"))
        return tar.extractfile(manifest[0]["Layers"][0]).read()


def tar_bytes(entries):
    """A tar of (name, data or None for a directory, type) entries."""
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, data, kind in entries:
            info = tarfile.TarInfo(name)
            info.mode = 0o755 if data is None else 0o644
            if kind == "dir":
                info.type = tarfile.DIRTYPE
            elif kind == "symlink":
                info.type, info.linkname = tarfile.SYMTYPE, data
                data = None
            else:
                info.size = len(data)
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return out.getvalue()


def docker_archive(path, layers, tag, cmd):
    """A docker-archive in the old layout (`<id>/layer.tar`, `<id>.json`) with these layers."""
    diff_ids = ["sha256:" + hashlib.sha256(layer).hexdigest() for layer in layers]
    config = json.dumps({
        "architecture": "amd64", "os": "linux", "created": "2024-01-02T03:04:05Z",
        "config": {"Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"], "Cmd": cmd},
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
        "history": [{"created": "2024-01-02T03:04:05Z", "created_by": f"layer {i}"} for i in range(len(layers))],
    }).encode()
    config_name = hashlib.sha256(config).hexdigest() + ".json"
    files = [(config_name, config)]
    names = []
    for layer in layers:
        name = hashlib.sha256(layer).hexdigest() + "/layer.tar"
        names.append(name)
        files.append((name, layer))
    files.append(("manifest.json", json.dumps([{"Config": config_name, "RepoTags": [tag], "Layers": names}]).encode()))
    path.write_bytes(tar_bytes([(name, data, "file") for name, data in files]))
    return "sha256:" + hashlib.sha256(config).hexdigest()


def test_save_rmi_load_round_trip_keeps_the_id(docker, tmp_path):
    image_id = inspect(docker, "busybox")["Id"]
    archive = tmp_path / "busybox.tar"
    docker.docker("save", "-o", str(archive), "busybox")
    with tarfile.open(archive) as tar:
        names = set(tar.getnames())
        assert {"manifest.json", "index.json", "oci-layout", "repositories"} <= names
        manifest = json.load(tar.extractfile("manifest.json"))
        index = json.load(tar.extractfile("index.json"))
    assert manifest[0]["RepoTags"] == ["busybox:latest"]
    assert manifest[0]["Config"] == "blobs/sha256/" + image_id.removeprefix("sha256:")
    assert index["manifests"][0]["annotations"]["io.containerd.image.name"] == "docker.io/library/busybox:latest"

    docker.docker("rmi", "busybox")
    assert ids(docker) == []
    assert stored(docker) == ([], [])
    loaded = docker.docker("load", "-i", str(archive)).stdout
    assert "Loaded image: busybox:latest" in loaded
    assert inspect(docker, "busybox")["Id"] == image_id
    assert docker.docker("run", "--rm", "busybox", "echo", "ok").stdout == "ok\n"

    # gzip-compressed, and as an OCI archive (index.json only): the same image again.
    docker.docker("rmi", "busybox")
    compressed = tmp_path / "busybox.tar.gz"
    compressed.write_bytes(gzip.compress(archive.read_bytes()))
    assert "Loaded image: busybox:latest" in docker.docker("load", "-i", str(compressed)).stdout
    assert inspect(docker, "busybox")["Id"] == image_id
    docker.docker("rmi", "busybox")
    oci = tmp_path / "oci.tar"
    with tarfile.open(archive) as source, tarfile.open(oci, "w") as target:
        for member in source.getmembers():
            if member.name not in ("manifest.json", "repositories"):
                target.addfile(member, source.extractfile(member) if member.isfile() else None)
    assert "Loaded image: busybox:latest" in docker.docker("load", "-i", str(oci)).stdout
    assert inspect(docker, "busybox")["Id"] == image_id


def test_import_with_changes_and_history(docker, tmp_path):
    rootfs = tmp_path / "rootfs.tar"
    rootfs.write_bytes(busybox_layer(docker, tmp_path))
    out = docker.docker("import", "--change", 'CMD ["/bin/sh", "-c", "echo $GREETING from $PWD"]',
                        "--change", "ENV GREETING=hello", "--change", "WORKDIR /tmp",
                        "--change", "LABEL team=images", str(rootfs), "imported:v1").stdout
    image = inspect(docker, "imported:v1")
    assert out.strip() == image["Id"]
    assert "GREETING=hello" in image["Config"]["Env"] and image["Config"]["WorkingDir"] == "/tmp"
    assert image["Comment"] == "Imported from -"
    assert docker.docker("run", "--rm", "imported:v1").stdout == "hello from /tmp\n"
    history = docker.docker("history", "--no-trunc", "--format", "{{.Comment}}|{{.Size}}", "imported:v1").stdout
    assert history.startswith("Imported from -|"), history
    assert docker.docker("images", "--filter", "label=team=images", "-q").stdout.split() == [image["Id"][7:19]]
    assert docker.docker("images", "--filter", "reference=imp*", "--format", "{{.Repository}}").stdout == "imported\n"

    bad = docker.docker("import", "--change", "RUN rm -rf /", str(rootfs), "bad", check=False)
    assert bad.returncode != 0 and "RUN is not a valid change command" in bad.stderr


def test_whiteouts_delete_and_hide_files_of_lower_layers(docker, tmp_path):
    base = busybox_layer(docker, tmp_path)
    middle = tar_bytes([("srv", None, "dir"), ("srv/gone", b"old", "file"), ("srv/kept", b"kept", "file"),
                        ("data", None, "dir"), ("data/old", b"old", "file")])
    top = tar_bytes([("srv", None, "dir"), ("srv/.wh.gone", b"", "file"),
                     ("data", None, "dir"), ("data/.wh..wh..opq", b"", "file"), ("data/new", b"new", "file")])
    archive = tmp_path / "layered.tar"
    image_id = docker_archive(archive, [base, middle, top], "layered:v1", ["sh"])
    assert "Loaded image: layered:v1" in docker.docker("load", "-i", str(archive)).stdout
    assert inspect(docker, "layered:v1")["Id"] == image_id
    out = docker.docker("run", "--rm", "layered:v1", "sh", "-c", "ls /srv; ls /data; cat /data/new").stdout
    assert out == "kept\nnew\nnew", out
    history = docker.docker("history", "--format", "{{.CreatedBy}}", "layered:v1").stdout.split("\n")
    assert history[:3] == ["layer 2", "layer 1", "layer 0"], history


def test_commit_makes_a_layer_of_what_the_container_changed(docker, tmp_path):
    docker.docker("run", "--name", "changer", "busybox", "sh", "-c",
                  "rm /etc/group; echo changed > /etc/motd; mkdir -p /work; echo x > /work/f")
    out = docker.docker("commit", "-m", "my change", "-a", "me", "--change", 'CMD ["cat", "/etc/motd"]',
                        "changer", "committed:v1").stdout.strip()
    image = inspect(docker, "committed:v1")
    assert out == image["Id"] and len(image["RootFS"]["Layers"]) == 2
    assert image["Comment"] == "my change"
    assert docker.docker("run", "--rm", "committed:v1").stdout == "changed\n"
    assert docker.docker("run", "--rm", "committed:v1", "cat", "/work/f").stdout == "x\n"
    gone = docker.docker("run", "--rm", "committed:v1", "test", "-e", "/etc/group", check=False)
    assert gone.returncode == 1, "the deletion is in the new layer"
    history = docker.docker("history", "--format", "{{.CreatedBy}}|{{.Comment}}", "committed:v1").stdout
    assert history.splitlines()[0].endswith("|my change"), history

    # The saved layer carries the deletion as a `.wh.` file.
    archive = tmp_path / "committed.tar"
    docker.docker("save", "-o", str(archive), "committed:v1")
    with tarfile.open(archive) as tar:
        manifest = json.load(tar.extractfile("manifest.json"))
        layer = tarfile.open(fileobj=tar.extractfile(manifest[0]["Layers"][-1]))
        assert "etc/.wh.group" in layer.getnames()

    # The image is in use by a container: removing it is Docker's 409 conflict.
    docker.docker("create", "--name", "user", "committed:v1")
    refused = docker.docker("rmi", "committed:v1", check=False)
    assert refused.returncode != 0 and "conflict: unable to remove repository reference" in refused.stderr


def test_archives_cut_short_or_escaping_are_refused_and_leave_nothing(docker, tmp_path):
    archive = tmp_path / "busybox.tar"
    docker.docker("save", "-o", str(archive), "busybox")
    docker.docker("rmi", "busybox")
    before = stored(docker)
    cut = tmp_path / "cut.tar"
    cut.write_bytes(archive.read_bytes()[: archive.stat().st_size // 2])
    failed = docker.docker("load", "-i", str(cut), check=False)
    assert failed.returncode != 0 and "Error response from daemon" in failed.stderr, failed.stderr
    assert stored(docker) == before and ids(docker) == []
    failed = docker.docker("import", str(cut), "cut:v1", check=False)
    assert failed.returncode != 0 and stored(docker) == before

    escaping = tmp_path / "escaping.tar"
    outside = tmp_path / "outside"
    outside.mkdir()
    escaping.write_bytes(tar_bytes([("up", str(outside), "symlink"), ("up/escaped", b"x", "file")]))
    failed = docker.docker("import", str(escaping), "escaping:v1", check=False)
    assert failed.returncode != 0 and "outside" in failed.stderr, failed.stderr
    assert list(outside.iterdir()) == [] and stored(docker) == before
    dotdot = io.BytesIO()
    with tarfile.open(fileobj=dotdot, mode="w") as tar:
        info = tarfile.TarInfo("a/../../escaped")
        info.size = 1
        tar.addfile(info, io.BytesIO(b"x"))
    (tmp_path / "dotdot.tar").write_bytes(dotdot.getvalue())
    failed = docker.docker("import", str(tmp_path / "dotdot.tar"), "dotdot:v1", check=False)
    assert failed.returncode != 0 and "leaves the layer" in failed.stderr, failed.stderr
    assert stored(docker) == before


def test_dangling_images_are_listed_and_pruned(docker, tmp_path):
    rootfs = tmp_path / "rootfs.tar"
    rootfs.write_bytes(busybox_layer(docker, tmp_path))
    first = docker.docker("import", "--change", "CMD sh", str(rootfs), "app:v1").stdout.strip()
    second = docker.docker("import", "--change", "CMD top", str(rootfs), "app:v1").stdout.strip()
    assert first != second
    assert ids(docker, "--filter", "dangling=true") == [first]
    assert first not in ids(docker, "--filter", "dangling=false")
    pruned = docker.docker("image", "prune", "-f").stdout
    assert f"deleted: {first}" in pruned, pruned
    assert ids(docker, "--filter", "dangling=true") == []
    assert inspect(docker, "app:v1")["Id"] == second


@pytest.mark.skipif(os.environ.get("STRATUS_TEST_DEBOOTSTRAP") != "1" or shutil.which("debootstrap") is None,
                    reason="downloads ~40 MB from Debian's mirror and takes minutes: set STRATUS_TEST_DEBOOTSTRAP=1")
@pytest.mark.timeout(900)
def test_bootstrap_debian_with_debootstrap(stratus):
    result = subprocess.run([BINARY, "image", "bootstrap", "debian", "--data-dir", str(stratus.data_dir)],
                            capture_output=True, text=True, timeout=1200)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr
    assert "I: Base system installed successfully." in result.stdout, "debootstrap's progress is shown"
    assert "tagged debian:bookworm" in result.stdout
    out = stratus.docker("run", "--rm", "debian:bookworm", "sh", "-c",
                         "cat /etc/debian_version; dpkg -s bash | grep Status; ls /var/lib/apt/lists").stdout
    lines = out.splitlines()
    assert lines[0].startswith("12.") and lines[1] == "Status: install ok installed", out
    history = stratus.docker("history", "--no-trunc", "--format", "{{.CreatedBy}}", "debian:bookworm").stdout
    assert "debootstrap --variant=minbase bookworm" in history
