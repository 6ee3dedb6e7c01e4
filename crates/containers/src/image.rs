//! The image store: an OCI image layout (`oci-layout`, `index.json`, `blobs/sha256/<hex>`) under
//! `<containers>/images`, so that other OCI tools can read it as it is. Blobs are named by their
//! sha256, so a layer shared by several images is stored once. Tags are the
//! `org.opencontainers.image.ref.name` annotations of `index.json`, which is replaced atomically
//! (write, fsync, rename) on every change; an entry without that annotation keeps an untagged
//! (dangling) image. Layer blobs are uncompressed tars, so a layer's digest is its diff id.
//!
//! Everything that makes an image goes through two primitives: [`ImageStore::store_layer`] (a
//! tar stream in; the blob written once and unpacked once, with whiteouts applied, into
//! `<containers>/layers/<diff id hex>`, the read-only lower directories of container root
//! filesystems) and [`ImageStore::store_image`] (a config over stored layers; manifest and tags).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::fs;
use std::io::{self, BufRead, Read, Write};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use oci_spec::image::{
    ANNOTATION_REF_NAME, Arch, ConfigBuilder, Descriptor, Digest, HistoryBuilder, ImageConfiguration,
    ImageConfigurationBuilder, ImageIndex, ImageIndexBuilder, ImageManifest, ImageManifestBuilder, MediaType, Os,
    RootFsBuilder,
};
use sha2::Digest as _;

use crate::error::{Error, Result};
use crate::health::HealthConfig;
use crate::layer;

/// The name prefix of files and directories being stored, which `collect_garbage` removes.
const INCOMING: &str = ".incoming";

/// The PATH Docker puts in images that set none.
pub const DEFAULT_PATH: &str = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// A normalized image reference: `busybox` and `docker.io/library/busybox:latest` are both
/// `busybox:latest`, as Docker shows them.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Reference {
    pub repository: String,
    pub tag: String,
}

impl Reference {
    pub fn parse(text: &str) -> Result<Reference> {
        let invalid = || Error::InvalidReference(format!("\"{text}\""));
        if text.contains('@') {
            return Err(Error::Unsupported("referring to an image by digest"));
        }
        let (name, tag) = match text.rfind(':') {
            Some(colon) if !text[colon..].contains('/') => (&text[..colon], &text[colon + 1..]),
            _ => (text, "latest"),
        };
        let valid_tag = tag.len() <= 128
            && tag.chars().next().is_some_and(|c| c.is_ascii_alphanumeric() || c == '_')
            && tag.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
        if !valid_tag || name.is_empty() {
            return Err(invalid());
        }
        let mut name = name.strip_prefix("docker.io/").unwrap_or(name);
        name = name.strip_prefix("library/").unwrap_or(name);
        let mut components = name.split('/').peekable();
        let mut first = true;
        while let Some(component) = components.next() {
            // A first component with a dot, a port or `localhost` names a registry host.
            let is_host = first
                && components.peek().is_some()
                && (component.contains('.') || component.contains(':') || component == "localhost");
            first = false;
            if is_host {
                continue;
            }
            let separators_ok = !component.starts_with(['.', '_', '-']) && !component.ends_with(['.', '_', '-']);
            let chars_ok = component.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "._-".contains(c));
            if component.is_empty() || !separators_ok || !chars_ok {
                return Err(invalid());
            }
        }
        Ok(Reference { repository: name.to_string(), tag: tag.to_string() })
    }
}

impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.repository, self.tag)
    }
}

/// What an image asks of the containers made from it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ImageConfig {
    pub env: Vec<String>,
    pub entrypoint: Option<Vec<String>>,
    pub cmd: Option<Vec<String>>,
    pub working_dir: String,
    pub user: String,
    pub labels: BTreeMap<String, String>,
    pub stop_signal: Option<String>,
    /// Paths (`VOLUME`) where each container gets an anonymous volume.
    pub volumes: Vec<String>,
    /// `EXPOSE`d ports (`80/tcp`), what `docker run -P` publishes.
    pub exposed_ports: Vec<String>,
    pub docker: DockerFields,
}

/// Docker's fields of an image's `config` that oci-spec's `Config` has no place for.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DockerFields {
    pub healthcheck: Option<HealthConfig>,
    /// `SHELL`: what shell forms run in; empty means `/bin/sh -c`.
    pub shell: Vec<String>,
    /// `ONBUILD` triggers, run by a build whose FROM is this image.
    pub on_build: Vec<String>,
}

/// The shell shell forms run in: `shell` (an image's SHELL), or `/bin/sh -c` when it is empty.
pub fn shell_or_default(shell: &[String]) -> Vec<String> {
    if shell.is_empty() { vec!["/bin/sh".into(), "-c".into()] } else { shell.to_vec() }
}

/// Reads and writes [`DockerFields`] in an image config's JSON. The domain has no JSON
/// (ARCHITECTURE.md), so the Docker adapter implements this and the engine is given it.
pub trait ConfigJson: Send + Sync {
    fn read(&self, config_json: &[u8]) -> std::result::Result<DockerFields, String>;
    /// `oci_json` (oci-spec's serialization of a config) with `fields` added to its `config`.
    fn write(&self, oci_json: &str, fields: &DockerFields) -> std::result::Result<Vec<u8>, String>;
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Layer {
    /// The blob's digest (`sha256:...`).
    pub digest: String,
    /// The digest of the uncompressed tar, from the config's `rootfs.diff_ids`.
    pub diff_id: String,
    pub size: u64,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HistoryEntry {
    pub created: Option<String>,
    pub created_by: String,
    pub comment: String,
    pub empty_layer: bool,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Image {
    /// Docker's image id: the digest of the config blob.
    pub id: String,
    pub manifest_digest: String,
    /// Normalized references (`busybox:latest`), sorted.
    pub tags: Vec<String>,
    /// RFC 3339, as written in the config.
    pub created: Option<String>,
    pub architecture: String,
    pub os: String,
    pub config: ImageConfig,
    /// Bottom layer first.
    pub layers: Vec<Layer>,
    pub history: Vec<HistoryEntry>,
}

impl Image {
    /// The bytes of its layers, as `docker images` reports SIZE.
    pub fn size(&self) -> u64 {
        self.layers.iter().map(|layer| layer.size).sum()
    }
}

/// What removing a reference did, in Docker's terms.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Removed {
    Untagged(String),
    Deleted(String),
}

pub struct ImageStore {
    layout: PathBuf,
    layers: PathBuf,
    /// Serializes changes to `index.json` and the garbage collection of blobs.
    changes: Mutex<()>,
    /// Without it, configs are read without Docker's fields and cannot be written with them.
    config_json: Option<Arc<dyn ConfigJson>>,
}

impl ImageStore {
    /// Opens (creating if needed) the layout in `dir/images` and the layer cache in `dir/layers`.
    pub fn open(dir: &Path) -> Result<ImageStore> {
        let store = ImageStore {
            layout: dir.join("images"),
            layers: dir.join("layers"),
            changes: Mutex::new(()),
            config_json: None,
        };
        let blobs = store.layout.join("blobs/sha256");
        fs::create_dir_all(&blobs).map_err(Error::io("cannot create the image store", &blobs))?;
        fs::create_dir_all(&store.layers).map_err(Error::io("cannot create the layer cache", &store.layers))?;
        let marker = store.layout.join("oci-layout");
        if !marker.exists() {
            write_atomically(&marker, br#"{"imageLayoutVersion":"1.0.0"}"#)?;
        }
        if !store.index_path().exists() {
            store.write_index(Vec::new())?;
        }
        Ok(store)
    }

    /// Reads and writes Docker's fields of configs with `config_json`.
    pub fn with_config_json(self, config_json: Arc<dyn ConfigJson>) -> ImageStore {
        ImageStore { config_json: Some(config_json), ..self }
    }

    fn docker_fields(&self, config_json: &[u8]) -> Result<DockerFields> {
        match &self.config_json {
            Some(codec) => codec
                .read(config_json)
                .map_err(|message| Error::InvalidParameter(format!("invalid image config: {message}"))),
            None => Ok(DockerFields::default()),
        }
    }

    /// The OCI layout's directory.
    pub(crate) fn layout_dir(&self) -> &Path {
        &self.layout
    }

    fn index_path(&self) -> PathBuf {
        self.layout.join("index.json")
    }

    fn blob_path(&self, digest: &str) -> Result<PathBuf> {
        match digest.strip_prefix("sha256:") {
            Some(hex) if hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit()) => {
                Ok(self.layout.join("blobs/sha256").join(hex))
            }
            _ => Err(Error::InvalidParameter(format!("not a sha256 digest: {digest}"))),
        }
    }

    fn read_index(&self) -> Result<Vec<Descriptor>> {
        let path = self.index_path();
        let index = ImageIndex::from_file(&path).map_err(Error::oci(&path))?;
        Ok(index.manifests().clone())
    }

    fn write_index(&self, manifests: Vec<Descriptor>) -> Result<()> {
        let path = self.index_path();
        let index = ImageIndexBuilder::default()
            .schema_version(2u32)
            .media_type(MediaType::ImageIndex)
            .manifests(manifests)
            .build()
            .map_err(Error::oci(&path))?;
        let text = index.to_string().map_err(Error::oci(&path))?;
        write_atomically(&path, text.as_bytes())
    }

    /// Stores `bytes` under their digest unless a blob with that digest is already there.
    /// Returns the descriptor and whether it was new.
    fn write_blob(&self, media_type: MediaType, bytes: &[u8]) -> Result<(Descriptor, bool)> {
        let digest = sha256(bytes);
        let path = self.blob_path(&digest)?;
        let new = !path.exists();
        if new {
            write_atomically(&path, bytes)?;
        }
        let descriptor = Descriptor::new(media_type, bytes.len() as u64, parse_digest(&digest)?);
        Ok((descriptor, new))
    }

    /// Every tagged image, newest first.
    pub fn list(&self) -> Result<Vec<Image>> {
        let mut by_manifest: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for descriptor in self.read_index()? {
            let tag = descriptor.annotations().as_ref().and_then(|a| a.get(ANNOTATION_REF_NAME)).cloned();
            by_manifest.entry(descriptor.digest().to_string()).or_default().extend(tag);
        }
        let mut images = Vec::new();
        for (manifest_digest, mut tags) in by_manifest {
            tags.sort();
            images.push(self.load(&manifest_digest, tags)?);
        }
        images.sort_by(|a, b| b.created.cmp(&a.created).then_with(|| a.id.cmp(&b.id)));
        Ok(images)
    }

    fn load(&self, manifest_digest: &str, tags: Vec<String>) -> Result<Image> {
        let manifest_path = self.blob_path(manifest_digest)?;
        let manifest = ImageManifest::from_file(&manifest_path).map_err(Error::oci(&manifest_path))?;
        let config_digest = manifest.config().digest().to_string();
        let config_path = self.blob_path(&config_digest)?;
        let config_json = fs::read(&config_path).map_err(Error::io("cannot read", &config_path))?;
        let config = ImageConfiguration::from_reader(config_json.as_slice()).map_err(Error::oci(&config_path))?;
        let docker = self.docker_fields(&config_json)?;
        let diff_ids = config.rootfs().diff_ids();
        if diff_ids.len() != manifest.layers().len() {
            return Err(Error::InvalidParameter(format!(
                "image {config_digest} has {} layers but {} diff ids",
                manifest.layers().len(),
                diff_ids.len()
            )));
        }
        let layers = manifest
            .layers()
            .iter()
            .zip(diff_ids)
            .map(|(layer, diff_id)| Layer {
                digest: layer.digest().to_string(),
                diff_id: diff_id.clone(),
                size: layer.size(),
            })
            .collect();
        let run = config.config().clone().unwrap_or_default();
        Ok(Image {
            id: config_digest,
            manifest_digest: manifest_digest.to_string(),
            tags,
            created: config.created().clone(),
            architecture: config.architecture().to_string(),
            os: config.os().to_string(),
            config: ImageConfig {
                env: run.env().clone().unwrap_or_default(),
                entrypoint: run.entrypoint().clone(),
                cmd: run.cmd().clone(),
                working_dir: run.working_dir().clone().unwrap_or_default(),
                user: run.user().clone().unwrap_or_default(),
                labels: run.labels().clone().unwrap_or_default().into_iter().collect(),
                stop_signal: run.stop_signal().clone(),
                volumes: run.volumes().clone().unwrap_or_default(),
                exposed_ports: run.exposed_ports().clone().unwrap_or_default(),
                docker,
            },
            layers,
            history: config
                .history()
                .iter()
                .flatten()
                .map(|h| HistoryEntry {
                    created: h.created().clone(),
                    created_by: h.created_by().clone().unwrap_or_default(),
                    comment: h.comment().clone().unwrap_or_default(),
                    empty_layer: h.empty_layer().unwrap_or(false),
                })
                .collect(),
        })
    }

    /// Finds an image the way Docker does: by reference (`busybox`, `busybox:1.36`), by full id
    /// (`sha256:...`), or by a unique prefix of its id's hex.
    pub fn find(&self, name: &str) -> Result<Image> {
        let images = self.list()?;
        if let Ok(reference) = Reference::parse(name) {
            let tag = reference.to_string();
            if let Some(image) = images.iter().find(|image| image.tags.contains(&tag)) {
                return Ok(image.clone());
            }
        }
        let hex = name.strip_prefix("sha256:").unwrap_or(name);
        if !hex.is_empty() && hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            let mut matches = images.iter().filter(|image| image.id["sha256:".len()..].starts_with(hex));
            if let (Some(image), None) = (matches.next(), matches.next()) {
                return Ok(image.clone());
            }
        }
        Err(Error::NoSuchImage(name.to_string()))
    }

    /// Points `target` at the image `source` names (moving the tag if it pointed elsewhere: an
    /// image left without tags stays, dangling, as in Docker).
    pub fn tag(&self, source: &str, target: &str) -> Result<()> {
        let target = Reference::parse(target)?.to_string();
        let _changes = self.changes.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let image = self.find(source)?;
        self.set_tags(&image.manifest_digest, &[target])
    }

    /// Points each of `tags` at the manifest, keeping an untagged entry in `index.json` for the
    /// manifest if `tags` is empty and for any image the tags leave without one.
    fn set_tags(&self, manifest_digest: &str, tags: &[String]) -> Result<()> {
        let mut manifests = self.read_index()?;
        let moved: BTreeSet<String> = manifests
            .iter()
            .filter(|d| ref_name(d).is_some_and(|t| tags.iter().any(|tag| tag == t)))
            .map(|d| d.digest().to_string())
            .collect();
        manifests.retain(|d| {
            let digest = d.digest().to_string();
            match ref_name(d) {
                Some(tag) => !tags.iter().any(|t| t == tag),
                None => digest != manifest_digest,
            }
        });
        for tag in tags {
            manifests.push(self.manifest_descriptor(manifest_digest, Some(tag))?);
        }
        let mut untagged: Vec<&str> = moved.iter().map(String::as_str).filter(|m| *m != manifest_digest).collect();
        if tags.is_empty() && !manifests.iter().any(|d| d.digest().to_string() == manifest_digest) {
            untagged.push(manifest_digest);
        }
        for digest in untagged {
            if !manifests.iter().any(|d| d.digest().to_string() == digest) {
                manifests.push(self.manifest_descriptor(digest, None)?);
            }
        }
        self.write_index(manifests)
    }

    fn manifest_descriptor(&self, manifest_digest: &str, tag: Option<&str>) -> Result<Descriptor> {
        let manifest_path = self.blob_path(manifest_digest)?;
        let size = fs::metadata(&manifest_path).map_err(Error::io("cannot read", &manifest_path))?.len();
        let mut descriptor = Descriptor::new(MediaType::ImageManifest, size, parse_digest(manifest_digest)?);
        if let Some(tag) = tag {
            descriptor.set_annotations(Some([(ANNOTATION_REF_NAME.to_string(), tag.to_string())].into()));
        }
        Ok(descriptor)
    }

    /// `docker rmi`: untags `name` (or all tags, for an id), and deletes the image once no tag
    /// is left. `used_by` names a container using an image id, which blocks deletion.
    pub fn remove(&self, name: &str, force: bool, used_by: &dyn Fn(&str) -> Option<String>) -> Result<Vec<Removed>> {
        let _changes = self.changes.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let image = self.find(name)?;
        let by_tag = Reference::parse(name).map(|r| r.to_string()).ok().filter(|tag| image.tags.contains(tag));
        let untag: Vec<String> = match &by_tag {
            Some(tag) => vec![tag.clone()],
            None if image.tags.len() > 1 && !force => {
                return Err(Error::Conflict(format!(
                    "conflict: unable to delete {} (must be forced) - image is referenced in multiple repositories",
                    short_id(&image.id)
                )));
            }
            None => image.tags.clone(),
        };
        let deletes_image = untag.len() == image.tags.len();
        if deletes_image && let Some(container) = used_by(&image.id) {
            return Err(Error::Conflict(match &by_tag {
                Some(tag) => format!(
                    "conflict: unable to remove repository reference \"{tag}\" (must force) - container {} is using its referenced image {}",
                    short_id(&container),
                    short_id(&image.id)
                ),
                None => format!(
                    "conflict: unable to delete {} (cannot be forced) - image is being used by container {}",
                    short_id(&image.id),
                    short_id(&container)
                ),
            }));
        }
        let manifests = self
            .read_index()?
            .into_iter()
            .filter(|d| match ref_name(d) {
                Some(tag) => !untag.iter().any(|u| u == tag),
                None => !deletes_image || d.digest().to_string() != image.manifest_digest,
            })
            .collect();
        self.write_index(manifests)?;
        let mut removed: Vec<Removed> = untag.into_iter().map(Removed::Untagged).collect();
        if deletes_image {
            self.delete_unused(&image)?;
            removed.push(Removed::Deleted(image.id));
        }
        Ok(removed)
    }

    /// Deletes the blobs and unpacked layers of a deleted image that no image left refers to.
    /// Only the deleted image's files are candidates: a layer being stored for an image not yet
    /// written must not be collected under it.
    fn delete_unused(&self, deleted: &Image) -> Result<()> {
        let blobs = [deleted.manifest_digest.as_str(), deleted.id.as_str()];
        self.delete_unreferenced(&blobs, &deleted.layers)
    }

    /// Deletes stored layers that no image refers to: what an import or load that failed part
    /// way had stored.
    pub fn discard(&self, layers: &[Layer]) -> Result<()> {
        let _changes = self.changes.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        self.delete_unreferenced(&[], layers)
    }

    fn delete_unreferenced(&self, blobs: &[&str], layers: &[Layer]) -> Result<()> {
        let mut blobs: BTreeSet<&str> = blobs.iter().copied().collect();
        blobs.extend(layers.iter().map(|layer| layer.digest.as_str()));
        let mut diff_ids: BTreeSet<&str> = layers.iter().map(|layer| layer.diff_id.as_str()).collect();
        for image in self.list()? {
            blobs.remove(image.manifest_digest.as_str());
            blobs.remove(image.id.as_str());
            for layer in &image.layers {
                blobs.remove(layer.digest.as_str());
                diff_ids.remove(layer.diff_id.as_str());
            }
        }
        for digest in blobs {
            remove_path(&self.blob_path(digest)?)?;
        }
        for diff_id in diff_ids {
            remove_path(&self.layer_dir(diff_id)?)?;
        }
        Ok(())
    }

    /// `docker image prune`: deletes the images no container uses that have no tag (or, with
    /// `all`, every image no container uses). Returns what went and the bytes of the layers
    /// freed.
    pub fn prune(&self, all: bool, used_by: &dyn Fn(&str) -> Option<String>) -> Result<(Vec<Removed>, u64)> {
        let mut removed = Vec::new();
        let mut reclaimed = 0;
        for image in self.list()? {
            if (!all && !image.tags.is_empty()) || used_by(&image.id).is_some() {
                continue;
            }
            removed.extend(self.remove(&image.id, true, used_by)?);
            for layer in &image.layers {
                if !self.blob_path(&layer.digest)?.exists() {
                    reclaimed += layer.size;
                }
            }
        }
        Ok((removed, reclaimed))
    }

    /// A stored blob (a layer tar, a config, a manifest), to copy out (`docker save`).
    pub fn blob(&self, digest: &str) -> Result<fs::File> {
        let path = self.blob_path(digest)?;
        fs::File::open(&path).map_err(Error::io("cannot open", &path))
    }

    /// Deletes whatever no image refers to: what a crash left between storing a layer and
    /// writing its image, or half-written files. Only the engine calls it, as it starts: a
    /// `stratus image` command beside a running engine must not collect the layers that engine
    /// is storing.
    pub fn collect_garbage(&self) -> Result<()> {
        let images = self.list()?;
        let mut keep: BTreeSet<String> = BTreeSet::new();
        for image in &images {
            keep.insert(image.manifest_digest.clone());
            keep.insert(image.id.clone());
            for layer in &image.layers {
                keep.insert(layer.digest.clone());
                keep.insert(layer.diff_id.clone());
            }
        }
        let blob_dir = self.layout.join("blobs/sha256");
        for dir in [&blob_dir, &self.layers] {
            for entry in fs::read_dir(dir).map_err(Error::io("cannot list", dir))? {
                let entry = entry.map_err(Error::io("cannot list", dir))?;
                let name = entry.file_name().to_string_lossy().into_owned();
                if !keep.contains(&format!("sha256:{name}")) {
                    remove_path(&entry.path())?;
                }
            }
        }
        Ok(())
    }

    /// The unpacked directories of the image's layers, bottom first, unpacking any missing.
    pub fn layer_dirs(&self, image: &Image) -> Result<Vec<PathBuf>> {
        image.layers.iter().map(|layer| self.unpacked(layer)).collect()
    }

    fn unpacked(&self, layer: &Layer) -> Result<PathBuf> {
        let dir = self.layer_dir(&layer.diff_id)?;
        if !dir.exists() {
            let blob = self.blob_path(&layer.digest)?;
            let file = fs::File::open(&blob).map_err(Error::io("cannot open layer", &blob))?;
            self.store_layer(io::BufReader::new(file))?;
        }
        Ok(dir)
    }

    fn layer_dir(&self, diff_id: &str) -> Result<PathBuf> {
        match diff_id.strip_prefix("sha256:") {
            Some(hex) if hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit()) => Ok(self.layers.join(hex)),
            _ => Err(Error::InvalidParameter(format!("not a sha256 diff id: {diff_id}"))),
        }
    }

    /// Stores a layer from a tar stream, gzip-compressed or not. The blob is the uncompressed
    /// tar, so its digest is the layer's diff id (and `docker save` writes it as it is); it is
    /// written once, and unpacked once into `layers/<diff id>` with its whiteouts made overlayfs
    /// whiteouts. Returns the layer and whether it was new. A stream that is not a whole, valid
    /// tar, or that writes outside the layer, fails and leaves nothing behind.
    pub fn store_layer(&self, stream: impl Read) -> Result<(Layer, bool)> {
        let blobs = self.layout.join("blobs/sha256");
        let blob = tempfile::Builder::new()
            .prefix(INCOMING)
            .tempfile_in(&blobs)
            .map_err(Error::io("cannot create a file in", &blobs))?;
        let unpacked = tempfile::Builder::new()
            .prefix(INCOMING)
            .tempdir_in(&self.layers)
            .map_err(Error::io("cannot create a directory in", &self.layers))?;
        let invalid = |error: io::Error| Error::InvalidParameter(format!("invalid layer: {}", with_causes(&error)));
        let mut buffered = io::BufReader::new(stream);
        let gzip = buffered.fill_buf().map_err(invalid)?.starts_with(&[0x1f, 0x8b]);
        let tar: Box<dyn Read> =
            if gzip { Box::new(flate2::bufread::MultiGzDecoder::new(buffered)) } else { Box::new(buffered) };
        let (diff_id, size) = {
            let copy = io::BufWriter::new(blob.as_file());
            let mut tee = Tee { inner: tar, copy, hasher: sha2::Sha256::new(), size: 0 };
            layer::unpack(&mut tee, unpacked.path()).map_err(invalid)?;
            // The padding after the end-of-archive blocks is part of the blob too.
            io::copy(&mut tee, &mut io::sink()).map_err(invalid)?;
            tee.copy.flush().map_err(Error::io("cannot write", blob.path()))?;
            (hex_digest(&tee.hasher.finalize()), tee.size)
        };
        blob.as_file().sync_all().map_err(Error::io("cannot write", blob.path()))?;

        let _changes = self.changes.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let blob_path = self.blob_path(&diff_id)?;
        let new = !blob_path.exists();
        if new {
            blob.persist(&blob_path).map_err(|e| Error::io("cannot store", &blob_path)(e.error))?;
            sync_dir(&blobs)?;
        }
        let dir = self.layer_dir(&diff_id)?;
        if !dir.exists() {
            fs::rename(unpacked.keep(), &dir).map_err(Error::io("cannot store the layer in", &dir))?;
        }
        Ok((Layer { digest: diff_id.clone(), diff_id, size }, new))
    }

    /// The stored config of an image, to build another image on it.
    pub fn configuration(&self, image: &Image) -> Result<ImageConfiguration> {
        let path = self.blob_path(&image.id)?;
        ImageConfiguration::from_file(&path).map_err(Error::oci(&path))
    }

    /// Stores an image whose layers `store_layer` stored, bottom first: its config (with
    /// Docker's fields `docker`), a manifest, and `tags` (moved from any image that had them). An
    /// image with no tags is kept untagged.
    pub fn store_image(
        &self,
        config: &ImageConfiguration,
        docker: &DockerFields,
        layers: &[Layer],
        tags: &[Reference],
    ) -> Result<Image> {
        let json = config.to_string().map_err(Error::oci(&self.layout))?;
        if *docker == DockerFields::default() {
            return self.store_image_json(json.as_bytes(), layers, tags);
        }
        let codec = self.config_json.as_ref().ok_or(Error::Unsupported("Docker's image config fields here"))?;
        let json = codec
            .write(&json, docker)
            .map_err(|message| Error::Runtime(format!("cannot write an image config: {message}")))?;
        self.store_image_json(&json, layers, tags)
    }

    /// `store_image` with the config as bytes, kept exactly (the image id is their digest), as
    /// `docker load` needs to keep ids.
    pub fn store_image_json(&self, config_json: &[u8], layers: &[Layer], tags: &[Reference]) -> Result<Image> {
        let config = ImageConfiguration::from_reader(config_json).map_err(Error::oci(&self.layout))?;
        self.docker_fields(config_json)?;
        let layer_ids: Vec<&String> = layers.iter().map(|layer| &layer.diff_id).collect();
        if config.rootfs().diff_ids().iter().collect::<Vec<_>>() != layer_ids {
            return Err(Error::InvalidParameter(format!(
                "the image config lists the diff ids {:?} but its layers are {layer_ids:?}",
                config.rootfs().diff_ids()
            )));
        }
        let _changes = self.changes.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        for layer in layers {
            let blob = self.blob_path(&layer.digest)?;
            if !blob.exists() {
                return Err(Error::InvalidParameter(format!("layer {} is not stored", layer.digest)));
            }
        }
        let (config_descriptor, _) = self.write_blob(MediaType::ImageConfig, config_json)?;
        let layer_descriptors = layers
            .iter()
            .map(|layer| Ok(Descriptor::new(MediaType::ImageLayer, layer.size, parse_digest(&layer.digest)?)))
            .collect::<Result<Vec<_>>>()?;
        let oci = |e| Error::oci(&self.layout)(e);
        let manifest = ImageManifestBuilder::default()
            .schema_version(2u32)
            .media_type(MediaType::ImageManifest)
            .config(config_descriptor)
            .layers(layer_descriptors)
            .build()
            .map_err(oci)?;
        let manifest_json = manifest.to_string().map_err(oci)?;
        let (manifest_descriptor, _) = self.write_blob(MediaType::ImageManifest, manifest_json.as_bytes())?;
        let manifest_digest = manifest_descriptor.digest().to_string();
        let tags: Vec<String> = tags.iter().map(Reference::to_string).collect();
        self.set_tags(&manifest_digest, &tags)?;
        let image = self.load(&manifest_digest, Vec::new())?;
        self.find(&image.id)
    }

    /// `stratus image bootstrap busybox`: a one-layer image of the host's static busybox with a
    /// symlink per applet in /bin, tagged `busybox:latest`. The layer is deterministic (owner
    /// root, the binary's mtime), so bootstrapping again from the same binary stores nothing new.
    pub fn bootstrap_busybox(&self, busybox: &Path, progress: &mut dyn FnMut(&str)) -> Result<Image> {
        let binary = fs::read(busybox).map_err(Error::io("cannot read busybox", busybox))?;
        // A dynamically linked busybox names its loader; it would not run in an empty root.
        if binary.windows(7).any(|w| w == b"ld-linux") || !binary.starts_with(b"\x7fELF") {
            return Err(Error::InvalidParameter(format!(
                "{} is not a static busybox (install busybox-static)",
                busybox.display()
            )));
        }
        let listed = std::process::Command::new(busybox)
            .arg("--list")
            .output()
            .map_err(Error::io("cannot run busybox --list", busybox))?;
        let applets: Vec<String> = String::from_utf8_lossy(&listed.stdout)
            .lines()
            .map(str::trim)
            .filter(|a| !a.is_empty() && *a != "busybox" && !a.contains('/'))
            .map(str::to_string)
            .collect();
        let modified =
            fs::metadata(busybox).and_then(|m| m.modified()).map_err(Error::io("cannot read the mtime of", busybox))?;
        let mtime = modified.duration_since(SystemTime::UNIX_EPOCH).unwrap_or(Duration::ZERO).as_secs();
        progress(&format!(
            "Reading {} ({:.1} MB, {} applets)",
            busybox.display(),
            binary.len() as f64 / 1e6,
            applets.len()
        ));

        let tar = busybox_layer(&binary, &applets, mtime).map_err(Error::io("cannot build the layer", busybox))?;
        let (layer, new) = self.store_layer(tar.as_slice())?;
        progress(&format!(
            "Layer {} ({:.1} MB): {}",
            short_digest(&layer.diff_id),
            layer.size as f64 / 1e6,
            if new { "stored" } else { "already stored" }
        ));

        let created =
            humantime::format_rfc3339_seconds(SystemTime::UNIX_EPOCH + Duration::from_secs(mtime)).to_string();
        let created_by = format!("stratus image bootstrap busybox (from {})", busybox.display());
        let config = base_config(&created, "sh", &created_by, &layer)?;
        let tag = Reference::parse("busybox")?;
        let image = self.store_image(&config, &DockerFields::default(), &[layer], std::slice::from_ref(&tag))?;
        progress(&format!("Image {} tagged {tag}", short_id(&image.id)));
        Ok(image)
    }
}

/// The config of a one-layer base image made here: the default PATH, `cmd`, one history entry.
pub(crate) fn base_config(created: &str, cmd: &str, created_by: &str, layer: &Layer) -> Result<ImageConfiguration> {
    let oci = |e| Error::oci("image config")(e);
    ImageConfigurationBuilder::default()
        .created(created.to_string())
        .architecture(Arch::from(go_arch()))
        .os(Os::Linux)
        .config(
            ConfigBuilder::default()
                .env(vec![DEFAULT_PATH.to_string()])
                .cmd(vec![cmd.to_string()])
                .build()
                .map_err(oci)?,
        )
        .rootfs(RootFsBuilder::default().typ("layers").diff_ids(vec![layer.diff_id.clone()]).build().map_err(oci)?)
        .history(vec![
            HistoryBuilder::default()
                .created(created.to_string())
                .created_by(created_by.to_string())
                .build()
                .map_err(oci)?,
        ])
        .build()
        .map_err(oci)
}

/// Copies what it reads to `copy`, hashing and counting it.
struct Tee<R, W> {
    inner: R,
    copy: W,
    hasher: sha2::Sha256,
    size: u64,
}

impl<R: Read, W: Write> Read for Tee<R, W> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        self.copy.write_all(&buf[..n])?;
        self.size += n as u64;
        Ok(n)
    }
}

fn ref_name(descriptor: &Descriptor) -> Option<&str> {
    descriptor.annotations().as_ref().and_then(|a| a.get(ANNOTATION_REF_NAME)).map(String::as_str)
}

fn parse_digest(digest: &str) -> Result<Digest> {
    Digest::from_str(digest).map_err(|_| Error::InvalidParameter(format!("not a digest: {digest}")))
}

pub(crate) fn sha256(bytes: &[u8]) -> String {
    hex_digest(&sha2::Sha256::digest(bytes))
}

fn hex_digest(hash: &[u8]) -> String {
    let mut text = String::with_capacity(71);
    text.push_str("sha256:");
    for byte in hash {
        text.push_str(&format!("{byte:02x}"));
    }
    text
}

/// The 12 hex digits Docker shows for an id.
pub fn short_id(id: &str) -> &str {
    let hex = id.strip_prefix("sha256:").unwrap_or(id);
    hex.get(..12).unwrap_or(hex)
}

fn short_digest(digest: &str) -> String {
    format!("sha256:{}", short_id(digest))
}

/// Go's name for this architecture, which OCI configs use.
pub(crate) fn go_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    }
}

fn write_atomically(path: &Path, bytes: &[u8]) -> Result<()> {
    let partial = path.with_extension("partial");
    let mut file = fs::File::create(&partial).map_err(Error::io("cannot create", &partial))?;
    file.write_all(bytes).and_then(|()| file.sync_all()).map_err(Error::io("cannot write", &partial))?;
    fs::rename(&partial, path).map_err(Error::io("cannot rename", &partial))?;
    path.parent().map_or(Ok(()), sync_dir)
}

/// An error and its causes, as `a: b: c` (tar's errors name the entry, their cause what failed).
fn with_causes(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut cause = error.source();
    while let Some(next) = cause {
        text.push_str(": ");
        text.push_str(&next.to_string());
        cause = next.source();
    }
    text
}

fn sync_dir(dir: &Path) -> Result<()> {
    fs::File::open(dir).and_then(|d| d.sync_all()).map_err(Error::io("cannot sync", dir))
}

fn remove_path(path: &Path) -> Result<()> {
    let removed = match fs::symlink_metadata(path) {
        Ok(meta) if meta.is_dir() => fs::remove_dir_all(path),
        Ok(_) => fs::remove_file(path),
        Err(error) if error.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(error) => Err(error),
    };
    removed.map_err(Error::io("cannot remove", path))
}

fn busybox_layer(binary: &[u8], applets: &[String], mtime: u64) -> std::io::Result<Vec<u8>> {
    let mut tar = tar::Builder::new(Vec::new());
    let header = |kind: tar::EntryType, mode: u32, size: u64| {
        let mut header = tar::Header::new_ustar();
        header.set_entry_type(kind);
        header.set_mode(mode);
        header.set_uid(0);
        header.set_gid(0);
        header.set_mtime(mtime);
        header.set_size(size);
        header
    };
    for (dir, mode) in [
        ("bin", 0o755),
        ("dev", 0o755),
        ("etc", 0o755),
        ("home", 0o755),
        ("proc", 0o555),
        ("root", 0o700),
        ("sys", 0o555),
        ("tmp", 0o1777),
        ("usr", 0o755),
        ("usr/bin", 0o755),
        ("usr/sbin", 0o755),
        ("var", 0o755),
    ] {
        tar.append_data(&mut header(tar::EntryType::Directory, mode, 0), format!("{dir}/"), std::io::empty())?;
    }
    let files: [(&str, u32, &[u8]); 4] = [
        ("bin/busybox", 0o755, binary),
        ("etc/passwd", 0o644, b"root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/home:/bin/false\n"),
        ("etc/group", 0o644, b"root:x:0:\nnobody:x:65534:\n"),
        ("etc/hostname", 0o644, b"busybox\n"),
    ];
    for (path, mode, data) in files {
        tar.append_data(&mut header(tar::EntryType::Regular, mode, data.len() as u64), path, data)?;
    }
    for applet in applets {
        tar.append_link(&mut header(tar::EntryType::Symlink, 0o777, 0), format!("bin/{applet}"), "busybox")?;
    }
    tar.into_inner()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn check(text: &str, expected: &str) {
        let got = match Reference::parse(text) {
            Ok(reference) => reference.to_string(),
            Err(error) => format!("error: {error}"),
        };
        assert_eq!(got, expected, "{text}");
    }

    #[test]
    fn references_normalize_like_docker() {
        check("busybox", "busybox:latest");
        check("busybox:1.36", "busybox:1.36");
        check("docker.io/library/busybox:latest", "busybox:latest");
        check("library/busybox", "busybox:latest");
        check("localhost:5000/team/app:v1", "localhost:5000/team/app:v1");
        check("Busybox", "error: invalid reference format: \"Busybox\"");
        check("busybox:", "error: invalid reference format: \"busybox:\"");
        check("-x", "error: invalid reference format: \"-x\"");
        check("busybox@sha256:00", "error: referring to an image by digest is not supported by Stratus yet");
    }

    #[test]
    fn layers_are_deterministic_and_stored_once() {
        let a = busybox_layer(b"\x7fELF binary", &["sh".into(), "ls".into()], 1000).unwrap();
        let b = busybox_layer(b"\x7fELF binary", &["sh".into(), "ls".into()], 1000).unwrap();
        assert_eq!(sha256(&a), sha256(&b));
        let dir = tempfile::tempdir().unwrap();
        let store = ImageStore::open(dir.path()).unwrap();
        let (first, new) = store.write_blob(MediaType::ImageLayer, &a).unwrap();
        assert!(new);
        let (second, new) = store.write_blob(MediaType::ImageLayer, &b).unwrap();
        assert!(!new);
        assert_eq!(first.digest(), second.digest());
        let entries: Vec<String> = tar::Archive::new(a.as_slice())
            .entries()
            .unwrap()
            .map(|e| e.unwrap().path().unwrap().display().to_string())
            .collect();
        assert!(entries.contains(&"bin/sh".to_string()) && entries.contains(&"tmp/".to_string()), "{entries:?}");
    }

    /// The host's busybox-static; `.ci/run` installs it.
    const BUSYBOX: &str = "/bin/busybox";

    #[test]
    fn bootstrap_refuses_what_is_not_a_static_binary() {
        let dir = tempfile::tempdir().unwrap();
        let store = ImageStore::open(dir.path()).unwrap();
        let script = dir.path().join("busybox");
        fs::write(&script, b"#!/bin/sh\necho sh\n").unwrap();
        assert!(matches!(store.bootstrap_busybox(&script, &mut |_| {}), Err(Error::InvalidParameter(_))));
        assert!(store.list().unwrap().is_empty());
    }

    #[test]
    fn bootstrap_tag_find_and_remove() {
        let dir = tempfile::tempdir().unwrap();
        let store = ImageStore::open(dir.path()).unwrap();
        let mut lines = Vec::new();
        let image = store.bootstrap_busybox(Path::new(BUSYBOX), &mut |line| lines.push(line.to_string())).unwrap();
        assert_eq!(image.tags, vec!["busybox:latest".to_string()]);
        assert_eq!(image.config.cmd, Some(vec!["sh".to_string()]));
        assert_eq!(image.layers.len(), 1);
        assert_eq!(store.find("busybox").unwrap().id, image.id);
        assert_eq!(store.find(short_id(&image.id)).unwrap().id, image.id);
        assert_eq!(store.find(&image.id).unwrap().id, image.id);
        assert!(matches!(store.find("alpine"), Err(Error::NoSuchImage(_))));
        let unpacked = store.layer_dirs(&image).unwrap();
        assert!(unpacked[0].join("bin/busybox").exists() && unpacked[0].join("bin/sh").is_symlink());

        // Bootstrapping again from the same binary stores nothing new.
        let again = store.bootstrap_busybox(Path::new(BUSYBOX), &mut |line| lines.push(line.to_string())).unwrap();
        assert_eq!(again.id, image.id);
        assert!(lines.iter().any(|l| l.ends_with("already stored")), "{lines:?}");

        store.tag("busybox", "mine:v1").unwrap();
        assert_eq!(store.find("mine:v1").unwrap().tags, vec!["busybox:latest".to_string(), "mine:v1".to_string()]);
        assert!(matches!(store.remove(&image.id, false, &|_| None), Err(Error::Conflict(_))));
        assert_eq!(store.remove("mine:v1", false, &|_| None).unwrap(), vec![Removed::Untagged("mine:v1".into())]);
        let used = |_: &str| Some("c0ffee".to_string());
        assert!(matches!(store.remove("busybox", false, &used), Err(Error::Conflict(_))));
        let removed = store.remove("busybox", false, &|_| None).unwrap();
        assert_eq!(removed, vec![Removed::Untagged("busybox:latest".into()), Removed::Deleted(image.id.clone())]);
        assert!(store.list().unwrap().is_empty());
        let blobs = fs::read_dir(dir.path().join("images/blobs/sha256")).unwrap().count();
        let layers = fs::read_dir(dir.path().join("layers")).unwrap().count();
        assert_eq!((blobs, layers), (0, 0), "garbage collection leaves nothing");
    }

    fn files_in(dir: &Path) -> usize {
        fs::read_dir(dir).unwrap().count()
    }

    #[test]
    fn layers_store_once_from_plain_or_gzip_and_cut_streams_leave_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let store = ImageStore::open(dir.path()).unwrap();
        let tar = busybox_layer(b"\x7fELF binary", &["sh".into()], 1000).unwrap();
        let (layer, new) = store.store_layer(tar.as_slice()).unwrap();
        assert!(new);
        assert_eq!((layer.diff_id.clone(), layer.size), (sha256(&tar), tar.len() as u64));
        let mut gzip = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gzip.write_all(&tar).unwrap();
        let (again, new) = store.store_layer(gzip.finish().unwrap().as_slice()).unwrap();
        assert_eq!((again, new), (layer.clone(), false));
        assert!(store.layer_dir(&layer.diff_id).unwrap().join("bin/busybox").exists());

        let cut = &tar[..tar.len() / 2 + 100];
        assert!(matches!(store.store_layer(cut), Err(Error::InvalidParameter(_))));
        assert_eq!(files_in(&dir.path().join("images/blobs/sha256")), 1);
        assert_eq!(files_in(&dir.path().join("layers")), 1);

        // A layer no image refers to is collected when the engine next starts.
        store.collect_garbage().unwrap();
        assert_eq!(files_in(&dir.path().join("layers")), 0);
    }

    #[test]
    fn images_keep_their_config_and_a_moved_tag_leaves_them_dangling() {
        let dir = tempfile::tempdir().unwrap();
        let store = ImageStore::open(dir.path()).unwrap();
        let tar = busybox_layer(b"\x7fELF binary", &["sh".into()], 1000).unwrap();
        let (layer, _) = store.store_layer(tar.as_slice()).unwrap();
        let config = format!(
            r#"{{"architecture":"amd64","os":"linux","config":{{"Cmd":["sh"]}},"rootfs":{{"type":"layers","diff_ids":["{}"]}}}}"#,
            layer.diff_id
        );
        let first = store.store_image_json(config.as_bytes(), std::slice::from_ref(&layer), &[]).unwrap();
        assert_eq!(first.id, sha256(config.as_bytes()));
        assert!(first.tags.is_empty());
        assert_eq!(store.list().unwrap().len(), 1);
        let tagged = store
            .store_image_json(config.as_bytes(), std::slice::from_ref(&layer), &[Reference::parse("a").unwrap()])
            .unwrap();
        assert_eq!((tagged.id.clone(), tagged.tags.clone()), (first.id.clone(), vec!["a:latest".to_string()]));

        let mut other = store.configuration(&first).unwrap();
        other.set_created(Some("2024-01-01T00:00:00Z".into()));
        let second = store
            .store_image(
                &other,
                &DockerFields::default(),
                std::slice::from_ref(&layer),
                &[Reference::parse("a").unwrap()],
            )
            .unwrap();
        assert_ne!(second.id, first.id);
        let images = store.list().unwrap();
        assert_eq!(images.len(), 2);
        assert!(store.find(&first.id).unwrap().tags.is_empty(), "the old image is dangling");

        let wrong =
            store.store_image_json(config.replace(&layer.diff_id[7..], &"0".repeat(64)).as_bytes(), &[layer], &[]);
        assert!(matches!(wrong, Err(Error::InvalidParameter(_))));
        store.remove(&first.id, false, &|_| None).unwrap();
        assert_eq!(store.list().unwrap().len(), 1);
        assert_eq!(files_in(&dir.path().join("layers")), 1, "the layer is still used");
    }
}
