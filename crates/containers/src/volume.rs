//! Volumes: directories Stratus keeps for containers, `<dir>/volumes/<name>/_data` (driver
//! `local`), that outlive the containers using them and Stratus restarts. Their records are in the
//! store, `containers/volume/<name>` (postcard); the directory is made before the record is
//! committed and removed after its record is deleted, so a record always has its directory.
//!
//! Also the mounts a container asks for (volumes, bind mounts, tmpfs), how they become OCI
//! mounts, and the copy that seeds an empty volume from the image's content at its path.

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;

use serde::{Deserialize, Serialize};
use store::{Compare, Keyspace, Op, Store, Txn};

use crate::error::{Error, Result};
use crate::events::{Event, Events};

/// The label Docker puts on volumes made for one container (`-v /path`, an image's VOLUME):
/// `docker rm -v` and `docker volume prune` without `--all` remove only these.
pub const ANONYMOUS_LABEL: &str = "com.docker.volume.anonymous";

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Volume {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub created: SystemTime,
}

impl Volume {
    pub fn anonymous(&self) -> bool {
        self.labels.contains_key(ANONYMOUS_LABEL)
    }
}

/// What a container mounts, and where.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Mount {
    pub kind: MountKind,
    /// An absolute path inside the container.
    pub destination: String,
    pub read_only: bool,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum MountKind {
    /// A volume by name; an empty name in a request means a new anonymous volume. Unless
    /// `no_copy`, an empty volume is first filled with what the image has at the destination.
    Volume { name: String, no_copy: bool },
    /// A host path; `create_missing` for `-v` (Docker makes a missing directory), not `--mount`.
    Bind { source: PathBuf, create_missing: bool },
    /// A fresh tmpfs; `options` are the mount options such as `size=64m,mode=1777`.
    Tmpfs { options: String },
}

impl Mount {
    /// Docker's word for the kind.
    pub fn type_name(&self) -> &'static str {
        match self.kind {
            MountKind::Volume { .. } => "volume",
            MountKind::Bind { .. } => "bind",
            MountKind::Tmpfs { .. } => "tmpfs",
        }
    }
}

pub struct Volumes {
    store: Arc<dyn Store>,
    keys: Keyspace,
    dir: PathBuf,
    events: Arc<Events>,
}

impl Volumes {
    /// `dir` is `<data-dir>/containers`.
    pub fn open(store: Arc<dyn Store>, dir: &Path, events: Arc<Events>) -> Result<Volumes> {
        let dir = dir.join("volumes");
        fs::create_dir_all(&dir).map_err(Error::io("cannot create", &dir))?;
        Ok(Volumes { store, keys: Keyspace::new("containers"), dir, events })
    }

    fn event(&self, name: &str, action: &str) {
        let attributes = [("driver".to_string(), "local".to_string())].into();
        let (id, action) = (name.to_string(), action.to_string());
        self.events.publish(Event { time: SystemTime::now(), kind: "volume", action, id, attributes });
    }

    /// Where the volume's content is (what containers see).
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name).join("_data")
    }

    fn key(&self, name: &str) -> Vec<u8> {
        self.keys.key(format!("volume/{name}").as_bytes())
    }

    /// Creates the volume, or returns it if it exists (as Docker does). No name makes an
    /// anonymous volume with a random one.
    pub async fn create(&self, name: Option<&str>, labels: BTreeMap<String, String>) -> Result<Volume> {
        let name = match name.filter(|n| !n.is_empty()) {
            Some(name) => {
                check_name(name)?;
                name.to_string()
            }
            None => crate::engine::new_id(),
        };
        if let Some(existing) = self.find(&name).await? {
            return Ok(existing);
        }
        let volume = Volume { name: name.clone(), labels, created: SystemTime::now() };
        let path = self.path(&name);
        fs::create_dir_all(&path).map_err(Error::io("cannot create the volume", &path))?;
        let bytes = crate::record::encode(&volume).map_err(|e| Error::Record(name.clone(), e))?;
        let key = self.key(&name);
        let txn =
            Txn { compares: vec![Compare::absent(key.clone())], success: vec![Op::put(key, bytes)], failure: vec![] };
        if !self.store.txn(txn).await?.succeeded {
            // Created by a concurrent request: that one made the directory too.
            return self.get(&name).await;
        }
        self.event(&name, "create");
        tracing::info!(volume = %name, "volume created");
        Ok(volume)
    }

    async fn find(&self, name: &str) -> Result<Option<Volume>> {
        match self.store.get(&self.key(name)).await? {
            Some(kv) => Ok(Some(crate::record::decode(&kv.value).map_err(|e| Error::Record(name.to_string(), e))?)),
            None => Ok(None),
        }
    }

    pub async fn get(&self, name: &str) -> Result<Volume> {
        self.find(name).await?.ok_or_else(|| Error::NoSuchVolume(name.to_string()))
    }

    /// By name.
    pub async fn list(&self) -> Result<Vec<Volume>> {
        let prefix = self.keys.key(b"volume/");
        let records = self.store.range(&prefix, &store::prefix_end(&prefix), None).await?;
        records
            .iter()
            .map(|kv| {
                crate::record::decode(&kv.value)
                    .map_err(|e| Error::Record(String::from_utf8_lossy(&kv.key).into_owned(), e))
            })
            .collect()
    }

    /// Deletes the record, then the content. Whether a container uses it is the engine's check.
    pub(crate) async fn delete(&self, name: &str) -> Result<u64> {
        self.get(name).await?;
        self.store.txn(Txn::ops(vec![Op::delete(self.key(name))])).await?;
        let dir = self.dir.join(name);
        let size = disk_usage(&dir);
        if let Err(error) = fs::remove_dir_all(&dir)
            && error.kind() != std::io::ErrorKind::NotFound
        {
            tracing::warn!(volume = %name, %error, "cannot remove its files");
        }
        self.event(name, "destroy");
        tracing::info!(volume = %name, "volume removed");
        Ok(size)
    }
}

/// The request's mounts, checked as Docker does (absolute destinations other than `/`, each
/// once, bind sources given to `--mount` present), and an anonymous volume for each of the
/// image's VOLUMEs nothing is mounted on.
pub(crate) fn with_image_volumes(requested: &[Mount], image: &crate::image::Image) -> Result<Vec<Mount>> {
    let mut mounts: Vec<Mount> = Vec::with_capacity(requested.len() + image.config.volumes.len());
    for mount in requested {
        let destination = clean_destination(&mount.destination);
        if !destination.starts_with('/') {
            return Err(Error::InvalidParameter(format!(
                "invalid mount config for type \"{}\": invalid mount path: '{}' mount path must be absolute",
                mount.type_name(),
                mount.destination
            )));
        }
        if destination == "/" {
            return Err(Error::InvalidParameter("invalid specification: destination can't be '/'".into()));
        }
        if mounts.iter().any(|m| m.destination == destination) {
            return Err(Error::InvalidParameter(format!("Duplicate mount point: {destination}")));
        }
        if let MountKind::Bind { source, create_missing: false } = &mount.kind
            && !source.exists()
        {
            return Err(Error::InvalidParameter(format!(
                "invalid mount config for type \"bind\": bind source path does not exist: {}",
                source.display()
            )));
        }
        mounts.push(Mount { destination, ..mount.clone() });
    }
    for path in &image.config.volumes {
        let destination = clean_destination(path);
        if destination.starts_with('/') && !mounts.iter().any(|m| m.destination == destination) {
            let kind = MountKind::Volume { name: String::new(), no_copy: false };
            mounts.push(Mount { kind, destination, read_only: false });
        }
    }
    Ok(mounts)
}

/// `/data/` and `/data` are one mount point.
fn clean_destination(path: &str) -> String {
    let trimmed = path.trim_end_matches('/');
    if trimmed.is_empty() && path.starts_with('/') { "/".into() } else { trimmed.to_string() }
}

/// The OCI mount for `mount`, whose host side is `source` (none for tmpfs).
pub(crate) fn oci_mount(mount: &Mount, source: Option<&Path>) -> Result<oci_spec::runtime::Mount> {
    let mut options: Vec<String> = match &mount.kind {
        MountKind::Tmpfs { options } => ["nosuid", "nodev", "noexec"]
            .into_iter()
            .map(str::to_string)
            .chain(options.split(',').filter(|o| !o.is_empty()).map(str::to_string))
            .collect(),
        _ => vec!["rbind".into(), "rprivate".into()],
    };
    if mount.read_only {
        options.push("ro".into());
    }
    let (typ, source) = match source {
        Some(source) => ("bind", source.to_path_buf()),
        None => ("tmpfs", PathBuf::from("tmpfs")),
    };
    oci_spec::runtime::MountBuilder::default()
        .destination(&mount.destination)
        .typ(typ)
        .source(source)
        .options(options)
        .build()
        .map_err(|e| Error::InvalidParameter(format!("invalid mount {}: {e}", mount.destination)))
}

/// A read-only bind mount of a host file (the init binary).
pub(crate) fn bind_read_only(source: &Path, destination: &str) -> Result<oci_spec::runtime::Mount> {
    let kind = MountKind::Bind { source: source.to_path_buf(), create_missing: false };
    oci_mount(&Mount { kind, destination: destination.into(), read_only: true }, Some(source))
}

/// Adds the container's mounts after the spec's own (`/proc`, `/dev`, ...), shallow before
/// deep so that `/a` does not hide `/a/b`.
pub(crate) fn add_to_spec(spec: &mut oci_spec::runtime::Spec, mut mounts: Vec<oci_spec::runtime::Mount>) {
    mounts.sort_by_key(|m| m.destination().components().count());
    let mut all = spec.mounts().clone().unwrap_or_default();
    // A user's mount over one of the defaults (a tmpfs on /dev/shm) replaces it.
    all.retain(|m| !mounts.iter().any(|mine| mine.destination() == m.destination()));
    all.extend(mounts);
    spec.set_mounts(Some(all));
}

/// Docker's rule for local volume names.
fn check_name(name: &str) -> Result<()> {
    let mut chars = name.chars();
    let valid = name.len() >= 2
        && chars.next().is_some_and(|c| c.is_ascii_alphanumeric())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
    if valid {
        Ok(())
    } else {
        Err(Error::InvalidParameter(format!(
            "create {name}: \"{name}\" includes invalid characters for a local volume name, only \"[a-zA-Z0-9][a-zA-Z0-9_.-]\" are allowed. If you intended to pass a host directory, use absolute path"
        )))
    }
}

/// Bytes held by the files under `path` (what prune reports as reclaimed).
pub(crate) fn disk_usage(path: &Path) -> u64 {
    let Ok(metadata) = fs::symlink_metadata(path) else { return 0 };
    if !metadata.is_dir() {
        return metadata.len();
    }
    let children = fs::read_dir(path).into_iter().flatten().flatten();
    children.map(|child| disk_usage(&child.path())).sum()
}

/// Fills an empty volume with the image's content at its mount point, as Docker does on first
/// use: files, directories, symlinks, with their modes and owners. Written by hand because the
/// copy crates (fs_extra and the like) keep neither owners nor symlinks.
pub(crate) fn seed(from: &Path, volume: &Path) -> Result<()> {
    let Ok(source) = fs::metadata(from) else { return Ok(()) };
    let empty = fs::read_dir(volume).map_err(Error::io("cannot read", volume))?.next().is_none();
    if !source.is_dir() || !empty {
        return Ok(());
    }
    copy_attributes(&source, volume)?;
    copy_tree(from, volume)
}

fn copy_tree(from: &Path, to: &Path) -> Result<()> {
    for child in fs::read_dir(from).map_err(Error::io("cannot read", from))? {
        let child = child.map_err(Error::io("cannot read", from))?;
        let (source, target) = (child.path(), to.join(child.file_name()));
        let metadata = fs::symlink_metadata(&source).map_err(Error::io("cannot read", &source))?;
        if metadata.is_symlink() {
            let link = fs::read_link(&source).map_err(Error::io("cannot read", &source))?;
            std::os::unix::fs::symlink(link, &target).map_err(Error::io("cannot create", &target))?;
            std::os::unix::fs::lchown(&target, Some(metadata.uid()), Some(metadata.gid()))
                .map_err(Error::io("cannot chown", &target))?;
            continue;
        }
        if metadata.is_dir() {
            fs::create_dir(&target).map_err(Error::io("cannot create", &target))?;
            copy_tree(&source, &target)?;
        } else if metadata.is_file() {
            fs::copy(&source, &target).map_err(Error::io("cannot copy to", &target))?;
        } else {
            continue; // devices, fifos and sockets are not volume content
        }
        copy_attributes(&metadata, &target)?;
    }
    Ok(())
}

fn copy_attributes(metadata: &fs::Metadata, target: &Path) -> Result<()> {
    std::os::unix::fs::chown(target, Some(metadata.uid()), Some(metadata.gid()))
        .map_err(Error::io("cannot chown", target))?;
    fs::set_permissions(target, fs::Permissions::from_mode(metadata.mode() & 0o7777))
        .map_err(Error::io("cannot chmod", target))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn names_follow_dockers_rule() {
        assert!(check_name("data_1.v-2").is_ok());
        assert!(check_name("a").is_err() && check_name("_x").is_err() && check_name("a/b").is_err());
        assert!(check_name("x!").unwrap_err().to_string().contains("includes invalid characters"));
    }

    #[test]
    fn seeding_copies_into_an_empty_volume_only() {
        let image = tempfile::tempdir().unwrap();
        let volume = tempfile::tempdir().unwrap();
        fs::create_dir(image.path().join("sub")).unwrap();
        fs::write(image.path().join("sub/file"), "seed").unwrap();
        fs::set_permissions(image.path().join("sub/file"), fs::Permissions::from_mode(0o640)).unwrap();
        std::os::unix::fs::symlink("sub/file", image.path().join("link")).unwrap();
        seed(image.path(), volume.path()).unwrap();
        assert_eq!(fs::read_to_string(volume.path().join("sub/file")).unwrap(), "seed");
        assert_eq!(fs::metadata(volume.path().join("sub/file")).unwrap().mode() & 0o777, 0o640);
        assert_eq!(fs::read_link(volume.path().join("link")).unwrap(), Path::new("sub/file"));
        assert_eq!(disk_usage(volume.path()), 4 + "sub/file".len() as u64);

        fs::write(image.path().join("sub/file"), "changed").unwrap();
        seed(image.path(), volume.path()).unwrap();
        assert_eq!(fs::read_to_string(volume.path().join("sub/file")).unwrap(), "seed", "not empty: kept");
        seed(&image.path().join("missing"), volume.path()).unwrap();
    }
}
