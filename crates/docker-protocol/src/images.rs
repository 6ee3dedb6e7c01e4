//! The image routes that move whole images in and out: `docker load` and `docker save`
//! (docker-archive with the OCI layout beside it, as Docker 25+ writes), `docker import`,
//! `docker commit`, `docker image prune` and `docker images --filter`. Archives are read and
//! written on blocking threads as they stream; layers go through `ImageStore::store_layer`.

use std::collections::{BTreeMap, HashMap};
use std::io::{self, BufRead, Read, Write};
use std::sync::Arc;

use bytes::Bytes;
use containers::image::{Image, ImageStore, Layer, Reference, Removed};
use containers::{ContainerConfig, Engine, Error, NewImage, clean_path};
use http::Request;
use http_body_util::BodyExt;
use hyper::body::Incoming;
use serde_json::{Value, json};
use tokio::sync::mpsc;

/// JSON documents of an archive (manifests, configs, indexes) are read whole; nothing else in
/// an archive is this large without being a layer.
const MAX_DOCUMENT: u64 = 16 << 20;

/// Reads a request body on a blocking thread, as the tar readers need. (tokio-util's
/// `SyncIoBridge` does this, but it is not a dependency; this is all it takes here.)
pub struct BodyReader {
    chunks: mpsc::Receiver<io::Result<Bytes>>,
    chunk: Bytes,
}

impl BodyReader {
    pub fn new(request: Request<Incoming>) -> BodyReader {
        let (tx, chunks) = mpsc::channel(16);
        let mut body = request.into_body();
        tokio::spawn(async move {
            while let Some(frame) = body.frame().await {
                let chunk = match frame {
                    Ok(frame) => match frame.into_data() {
                        Ok(data) => Ok(data),
                        Err(_) => continue,
                    },
                    // A body cut short (the client went away before Content-Length) ends here.
                    Err(error) => Err(io::Error::new(io::ErrorKind::UnexpectedEof, error.to_string())),
                };
                let failed = chunk.is_err();
                // When the reader has stopped (the request failed), the rest of the body is
                // still read and dropped, so that the client gets the error rather than a
                // broken pipe.
                if !tx.is_closed() {
                    let _ = tx.send(chunk).await;
                }
                if failed {
                    break;
                }
            }
        });
        BodyReader { chunks, chunk: Bytes::new() }
    }
}

impl Read for BodyReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.chunk.is_empty() {
            match self.chunks.blocking_recv() {
                Some(chunk) => self.chunk = chunk?,
                None => return Ok(0),
            }
        }
        let n = buf.len().min(self.chunk.len());
        buf[..n].copy_from_slice(&self.chunk.split_to(n));
        Ok(n)
    }
}

/// Writes a response body from a blocking thread; fails once the client has gone.
struct BodyWriter(mpsc::Sender<Bytes>);

impl Write for BodyWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0
            .blocking_send(Bytes::copy_from_slice(buf))
            .map_err(|_| io::Error::new(io::ErrorKind::BrokenPipe, "the client went away"))?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Runs blocking image work off the async threads.
pub async fn blocking<T: Send + 'static>(work: impl FnOnce() -> Result<T, Error> + Send + 'static) -> Result<T, Error> {
    tokio::task::spawn_blocking(work).await.map_err(|e| Error::Runtime(format!("image task failed: {e}")))?
}

/// An archive or layer stream, gunzipped if it is gzip-compressed.
fn decompressed(reader: impl Read + 'static) -> io::Result<Box<dyn Read>> {
    let mut buffered = io::BufReader::with_capacity(1 << 16, reader);
    Ok(if buffered.fill_buf()?.starts_with(&[0x1f, 0x8b]) {
        Box::new(flate2::bufread::MultiGzDecoder::new(buffered))
    } else {
        Box::new(buffered)
    })
}

fn invalid(error: io::Error) -> Error {
    Error::InvalidParameter(error.to_string())
}

/// What a `docker load` archive held: its layers by path, its small documents by path.
#[derive(Default)]
struct Archive {
    layers: HashMap<String, Layer>,
    documents: HashMap<String, Vec<u8>>,
    links: HashMap<String, String>,
    stored: Vec<Layer>,
}

impl Archive {
    fn resolve<'a>(&'a self, path: &'a str) -> &'a str {
        let mut path = path.trim_start_matches("./");
        for _ in 0..8 {
            match self.links.get(path) {
                Some(target) => path = target,
                None => break,
            }
        }
        path
    }

    fn document(&self, path: &str) -> Result<&[u8], Error> {
        let path = self.resolve(path);
        self.documents
            .get(path)
            .map(Vec::as_slice)
            .ok_or_else(|| Error::InvalidParameter(format!("invalid archive: {path} is missing")))
    }

    fn json(&self, path: &str) -> Result<Value, Error> {
        serde_json::from_slice(self.document(path)?)
            .map_err(|e| Error::InvalidParameter(format!("invalid archive: {path}: {e}")))
    }

    fn layer(&self, path: &str) -> Result<Layer, Error> {
        let path = self.resolve(path);
        self.layers
            .get(path)
            .cloned()
            .ok_or_else(|| Error::InvalidParameter(format!("invalid archive: layer {path} is missing")))
    }
}

/// `docker load`: a docker-archive (`manifest.json`) or an OCI archive (`index.json`),
/// gzip-compressed or not. Returns the progress and "Loaded image" messages. If anything
/// fails, the layers this archive added are removed again.
pub fn load(store: &ImageStore, body: impl Read + 'static, quiet: bool) -> Result<Vec<Value>, Error> {
    let mut archive = Archive::default();
    let mut messages = Vec::new();
    let loaded = read_archive(store, body, &mut archive, &mut messages, quiet)
        .and_then(|()| store_images(store, &archive, &mut messages));
    if loaded.is_err() {
        store.discard(&archive.stored)?;
    }
    loaded.map(|()| messages)
}

fn read_archive(
    store: &ImageStore,
    body: impl Read + 'static,
    archive: &mut Archive,
    messages: &mut Vec<Value>,
    quiet: bool,
) -> Result<(), Error> {
    let mut tar = tar::Archive::new(decompressed(body).map_err(invalid)?);
    for entry in tar.entries().map_err(invalid)? {
        let mut entry = entry.map_err(invalid)?;
        let path = entry.path().map_err(invalid)?.to_string_lossy().trim_start_matches("./").to_string();
        let kind = entry.header().entry_type();
        if kind.is_symlink() || kind.is_hard_link() {
            if let Some(target) = entry.link_name().map_err(invalid)? {
                let target = target.to_string_lossy().to_string();
                let resolved = if kind.is_symlink() {
                    let parent = path.rsplit_once('/').map_or("", |(parent, _)| parent);
                    clean_path(&format!("{parent}/{target}"))
                } else {
                    clean_path(&target)
                };
                archive.links.insert(path, resolved);
            }
            continue;
        }
        if !kind.is_file() {
            continue;
        }
        let mut head = Vec::with_capacity(512);
        (&mut entry).take(512).read_to_end(&mut head).map_err(invalid)?;
        // A tar's first header says `ustar`; an empty layer is only the end-of-archive zeros.
        let is_tar =
            (head.len() >= 262 && &head[257..262] == b"ustar") || (head.len() == 512 && head.iter().all(|b| *b == 0));
        if is_tar || head.starts_with(&[0x1f, 0x8b]) {
            let (layer, new) = store.store_layer(head.as_slice().chain(&mut entry))?;
            if !quiet {
                let short = &layer.diff_id["sha256:".len()..][..12];
                messages.push(json!({"status": "Loading layer", "progressDetail": {"current": layer.size, "total": layer.size}, "id": short}));
            }
            if new {
                archive.stored.push(layer.clone());
            }
            archive.layers.insert(path, layer);
        } else if entry.size() <= MAX_DOCUMENT {
            entry.read_to_end(&mut head).map_err(invalid)?;
            archive.documents.insert(path, head);
        } else {
            io::copy(&mut entry, &mut io::sink()).map_err(invalid)?;
        }
    }
    Ok(())
}

fn store_images(store: &ImageStore, archive: &Archive, messages: &mut Vec<Value>) -> Result<(), Error> {
    let mut images = Vec::new();
    if archive.documents.contains_key("manifest.json") {
        let Value::Array(entries) = archive.json("manifest.json")? else {
            return Err(Error::InvalidParameter("invalid archive: manifest.json is not a list".into()));
        };
        for entry in entries {
            let config = entry["Config"].as_str().unwrap_or_default();
            let layers = strings(&entry["Layers"]).iter().map(|p| archive.layer(p)).collect::<Result<Vec<_>, _>>()?;
            let tags =
                strings(&entry["RepoTags"]).iter().map(|t| Reference::parse(t)).collect::<Result<Vec<_>, _>>()?;
            images.push((archive.document(config)?.to_vec(), layers, tags));
        }
    } else if archive.documents.contains_key("index.json") {
        for descriptor in oci_manifests(archive, &archive.json("index.json")?)? {
            let manifest = archive.json(&blob_path(&descriptor["digest"])?)?;
            let config = archive.document(&blob_path(&manifest["config"]["digest"])?)?.to_vec();
            let layers = manifest["layers"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|layer| archive.layer(&blob_path(&layer["digest"])?))
                .collect::<Result<Vec<_>, _>>()?;
            let annotations = &descriptor["annotations"];
            let name = annotations["io.containerd.image.name"]
                .as_str()
                .or_else(|| annotations["org.opencontainers.image.ref.name"].as_str().filter(|n| n.contains(':')));
            let tags = name.and_then(|n| Reference::parse(n).ok()).into_iter().collect();
            images.push((config, layers, tags));
        }
    } else {
        return Err(Error::InvalidParameter("invalid archive: neither manifest.json nor index.json was found".into()));
    }
    for (config, layers, tags) in images {
        let image = store.store_image_json(&config, &layers, &tags)?;
        if tags.is_empty() {
            messages.push(json!({"stream": format!("Loaded image ID: {}\n", image.id)}));
        }
        for tag in tags {
            messages.push(json!({"stream": format!("Loaded image: {tag}\n")}));
        }
    }
    Ok(())
}

/// The image manifests an OCI index lists, looking one level into nested indexes (a
/// multi-platform image: this host's platform, or the first).
fn oci_manifests(archive: &Archive, index: &Value) -> Result<Vec<Value>, Error> {
    let mut manifests = Vec::new();
    for descriptor in index["manifests"].as_array().into_iter().flatten() {
        if descriptor["mediaType"].as_str().is_some_and(|m| m.contains("index")) {
            let nested = archive.json(&blob_path(&descriptor["digest"])?)?;
            let candidates = nested["manifests"].as_array().cloned().unwrap_or_default();
            let ours = candidates.iter().find(|m| m["platform"]["architecture"] == crate::json::go_arch());
            if let Some(mut chosen) = ours.or(candidates.first()).cloned() {
                chosen["annotations"] = descriptor["annotations"].clone();
                manifests.push(chosen);
            }
        } else {
            manifests.push(descriptor.clone());
        }
    }
    Ok(manifests)
}

fn blob_path(digest: &Value) -> Result<String, Error> {
    match digest.as_str().and_then(|d| d.split_once(':')) {
        Some((algorithm, hex)) if !hex.contains('/') => Ok(format!("blobs/{algorithm}/{hex}")),
        _ => Err(Error::InvalidParameter(format!("invalid archive: bad digest {digest}"))),
    }
}

fn strings(value: &Value) -> Vec<String> {
    value.as_array().into_iter().flatten().filter_map(|v| v.as_str().map(str::to_string)).collect()
}

/// `docker save`: the images `names` name, with the tags named (an image named by id is saved
/// untagged), as a docker-archive whose blobs and `index.json` are also an OCI layout. Streams
/// into the returned channel.
pub fn save(engine: &Arc<Engine>, names: &[String]) -> Result<mpsc::Receiver<Bytes>, Error> {
    let mut images: Vec<(Image, Vec<String>)> = Vec::new();
    for name in names {
        let image = engine.images().find(name)?;
        let tag = Reference::parse(name).ok().map(|r| r.to_string()).filter(|t| image.tags.contains(t));
        match images.iter_mut().find(|(i, _)| i.id == image.id) {
            Some((_, tags)) => tags.extend(tag),
            None => images.push((image, tag.into_iter().collect())),
        }
    }
    let (tx, rx) = mpsc::channel(8);
    let engine = engine.clone();
    tokio::task::spawn_blocking(move || {
        let out = io::BufWriter::with_capacity(1 << 18, BodyWriter(tx));
        if let Err(error) = write_archive(engine.images(), &images, out) {
            // The head went out; the client sees the archive end early.
            tracing::warn!(%error, "docker save ended early");
        }
    });
    Ok(rx)
}

fn write_archive(store: &ImageStore, images: &[(Image, Vec<String>)], out: impl Write) -> io::Result<()> {
    let mut tar = tar::Builder::new(out);
    let header = |kind: tar::EntryType, size: u64| {
        let mut header = tar::Header::new_ustar();
        header.set_entry_type(kind);
        header.set_mode(if kind.is_dir() { 0o755 } else { 0o644 });
        header.set_size(size);
        header
    };
    for dir in ["blobs/", "blobs/sha256/"] {
        tar.append_data(&mut header(tar::EntryType::Directory, 0), dir, io::empty())?;
    }
    let mut written = std::collections::BTreeSet::new();
    let mut manifest_json = Vec::new();
    let mut index = Vec::new();
    let mut repositories: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
    for (image, tags) in images {
        let layers: Vec<&str> = image.layers.iter().map(|l| l.digest.as_str()).collect();
        for digest in [image.id.as_str(), image.manifest_digest.as_str()].into_iter().chain(layers.iter().copied()) {
            if written.insert(digest.to_string()) {
                let file = store.blob(digest).map_err(io::Error::other)?;
                let size = file.metadata()?.len();
                tar.append_data(&mut header(tar::EntryType::Regular, size), path_of(digest), file)?;
            }
        }
        let manifest_size = store.blob(&image.manifest_digest).map_err(io::Error::other)?.metadata()?.len();
        let descriptor = |annotations: Value| {
            json!({
                "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "digest": image.manifest_digest,
                "size": manifest_size,
                "annotations": annotations,
            })
        };
        if tags.is_empty() {
            index.push(descriptor(json!({})));
        }
        for tag in tags {
            let (repository, version) = tag.rsplit_once(':').unwrap_or((tag, "latest"));
            index.push(descriptor(json!({
                "io.containerd.image.name": full_name(tag),
                "org.opencontainers.image.ref.name": version,
            })));
            let top = layers.last().map_or("", |d| d.trim_start_matches("sha256:"));
            repositories.entry(repository.to_string()).or_default().insert(version.to_string(), top.to_string());
        }
        manifest_json.push(json!({
            "Config": path_of(&image.id),
            "RepoTags": if tags.is_empty() { Value::Null } else { json!(tags) },
            "Layers": layers.iter().map(|d| path_of(d)).collect::<Vec<_>>(),
        }));
    }
    let index = json!({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json", "manifests": index});
    let documents = [
        ("index.json", index.to_string()),
        ("manifest.json", Value::Array(manifest_json).to_string()),
        ("oci-layout", json!({"imageLayoutVersion": "1.0.0"}).to_string()),
        ("repositories", json!(repositories).to_string()),
    ];
    for (name, text) in documents {
        tar.append_data(&mut header(tar::EntryType::Regular, text.len() as u64), name, text.as_bytes())?;
    }
    tar.into_inner()?.flush()
}

fn path_of(digest: &str) -> String {
    format!("blobs/sha256/{}", digest.trim_start_matches("sha256:"))
}

/// `busybox:latest` as containerd names it: `docker.io/library/busybox:latest`.
fn full_name(tag: &str) -> String {
    let first = tag.split('/').next().unwrap_or_default();
    if !tag.contains('/') {
        format!("docker.io/library/{tag}")
    } else if first.contains('.') || first.contains(':') || first == "localhost" {
        tag.to_string()
    } else {
        format!("docker.io/{tag}")
    }
}

/// `repo` and `tag` query parameters as one reference; `None` when no repository is given.
pub fn reference(repo: Option<&str>, tag: Option<&str>) -> Result<Option<Reference>, Error> {
    match (repo.filter(|r| !r.is_empty()), tag.filter(|t| !t.is_empty())) {
        (None, _) => Ok(None),
        (Some(repo), Some(tag)) => Reference::parse(&format!("{repo}:{tag}")).map(Some),
        (Some(repo), None) => Reference::parse(repo).map(Some),
    }
}

/// `docker commit`.
pub fn commit(engine: &Engine, container: &str, new: &NewImage) -> Result<Image, Error> {
    let container = engine.inspect(container)?;
    let image = engine.images().find(&container.image_id)?;
    let ran = ContainerConfig {
        entrypoint: container.entrypoint.clone(),
        cmd: container.cmd.clone(),
        env: container.process.env.clone(),
        working_dir: container.process.cwd.clone(),
        user: container.process.user.clone(),
        healthcheck: container.healthcheck.clone(),
    };
    engine.images().commit(&image, &engine.upper_dir(&container.id), &ran, new)
}

/// `docker image prune`: dangling images, or with `dangling=false` every unused one.
pub fn prune(engine: &Engine, filters: Option<&str>) -> Result<Value, Error> {
    let filters = ImageFilters::parse(filters)?;
    let all = filters.0.get("dangling").is_some_and(|v| v.iter().any(|d| d == "false" || d == "0"));
    let (removed, reclaimed) = engine.images().prune(all, &|id| engine.container_using(id))?;
    let deleted: Vec<Value> = removed
        .iter()
        .map(|r| match r {
            Removed::Untagged(tag) => json!({"Untagged": tag}),
            Removed::Deleted(id) => json!({"Deleted": id}),
        })
        .collect();
    Ok(json!({"ImagesDeleted": deleted, "SpaceReclaimed": reclaimed}))
}

/// `docker images --filter`: dangling, reference (a glob on the name, or name and tag) and label.
#[derive(Default)]
pub struct ImageFilters(BTreeMap<String, Vec<String>>);

impl ImageFilters {
    pub fn parse(text: Option<&str>) -> Result<ImageFilters, Error> {
        let filters = crate::json::parse_filters(text, &["dangling", "reference", "label"])?;
        Ok(ImageFilters(filters))
    }

    pub fn matches(&self, image: &Image) -> bool {
        self.0.iter().all(|(key, values)| match key.as_str() {
            "dangling" => values.iter().all(|v| (v == "true" || v == "1") == image.tags.is_empty()),
            "reference" => values.iter().any(|pattern| {
                image.tags.iter().any(|tag| {
                    let repository = tag.rsplit_once(':').map_or(tag.as_str(), |(r, _)| r);
                    glob(pattern, if pattern.contains(':') { tag } else { repository })
                })
            }),
            "label" => values.iter().all(|wanted| match wanted.split_once('=') {
                Some((k, v)) => image.config.labels.get(k).is_some_and(|have| have == v),
                None => image.config.labels.contains_key(wanted),
            }),
            _ => false,
        })
    }
}

/// Go's `path.Match` for `*` and `?` (what Docker's reference filter uses; no glob crate is a
/// dependency, and these two wildcards are a few lines): neither matches `/`.
fn glob(pattern: &str, text: &str) -> bool {
    match pattern.chars().next() {
        None => text.is_empty(),
        Some('*') => {
            let rest = &pattern[1..];
            let mut candidate = text;
            loop {
                if glob(rest, candidate) {
                    return true;
                }
                match candidate.chars().next() {
                    Some(c) if c != '/' => candidate = &candidate[c.len_utf8()..],
                    _ => return false,
                }
            }
        }
        Some(p) => match text.chars().next() {
            Some(c) if (p == '?' && c != '/') || p == c => glob(&pattern[p.len_utf8()..], &text[c.len_utf8()..]),
            _ => false,
        },
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn reference_globs_stop_at_slashes() {
        assert!(glob("busy*", "busybox"));
        assert!(glob("busybox:*", "busybox:latest"));
        assert!(glob("b?sybox", "busybox"));
        assert!(!glob("*", "team/app"));
        assert!(glob("*/app", "team/app"));
        assert!(!glob("busy", "busybox"));
    }

    #[test]
    fn archive_paths_and_names() {
        assert_eq!(full_name("busybox:latest"), "docker.io/library/busybox:latest");
        assert_eq!(full_name("team/app:v1"), "docker.io/team/app:v1");
        assert_eq!(full_name("localhost:5000/app:v1"), "localhost:5000/app:v1");
        assert!(blob_path(&json!("sha256:../../etc")).is_err());
    }
}
