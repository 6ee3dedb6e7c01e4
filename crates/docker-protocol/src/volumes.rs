//! Docker's volume JSON, and the three ways a create request asks for mounts: `Binds`
//! (`-v src:dst[:mode]`), `Mounts` (`--mount type=...`) and `Tmpfs` (`--tmpfs dst:options`).

use std::collections::BTreeMap;
use std::path::PathBuf;

use containers::volume::{Mount, MountKind, Volume};
use containers::{Container, Engine, Error};
use serde::Deserialize;
use serde_json::{Value, json};

/// One entry of `HostConfig.Mounts`.
#[derive(Deserialize, Default)]
#[serde(rename_all = "PascalCase", default)]
pub struct MountBody {
    #[serde(rename = "Type")]
    kind: String,
    source: String,
    target: String,
    read_only: bool,
    volume_options: Option<VolumeOptionsBody>,
    tmpfs_options: Option<TmpfsOptionsBody>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "PascalCase", default)]
struct VolumeOptionsBody {
    no_copy: bool,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "PascalCase", default)]
struct TmpfsOptionsBody {
    size_bytes: i64,
    mode: u32,
}

fn invalid_spec(raw: &str) -> Error {
    Error::InvalidParameter(format!("invalid volume specification: '{raw}'"))
}

/// `-v`'s `source:destination[:mode]`: a source that is an absolute path is a bind mount (made
/// if missing), any other a named volume.
pub fn parse_bind(raw: &str) -> Result<Mount, Error> {
    let parts: Vec<&str> = raw.split(':').collect();
    let (source, destination, mode) = match parts.as_slice() {
        [source, destination] if !valid_mode(destination) => (*source, *destination, ""),
        [source, destination, mode] => (*source, *destination, *mode),
        _ => return Err(invalid_spec(raw)),
    };
    if source.is_empty() || destination.is_empty() {
        return Err(invalid_spec(raw));
    }
    if !valid_mode(mode) {
        return Err(Error::InvalidParameter(format!("invalid mode: {mode}")));
    }
    let options: Vec<&str> = mode.split(',').collect();
    let kind = if source.starts_with('/') {
        MountKind::Bind { source: PathBuf::from(source), create_missing: true }
    } else {
        MountKind::Volume { name: source.to_string(), no_copy: options.contains(&"nocopy") }
    };
    Ok(Mount { kind, destination: destination.to_string(), read_only: options.contains(&"ro") })
}

/// Docker's bind modes: `ro`/`rw`, SELinux labels, `nocopy`, propagation, consistency; each at
/// most once per group.
fn valid_mode(mode: &str) -> bool {
    const GROUPS: [&[&str]; 5] = [
        &["ro", "rw"],
        &["z", "Z"],
        &["nocopy"],
        &["private", "rprivate", "shared", "rshared", "slave", "rslave"],
        &["consistent", "cached", "delegated"],
    ];
    if mode.is_empty() {
        return true;
    }
    let options: Vec<&str> = mode.split(',').collect();
    options.iter().all(|o| GROUPS.iter().any(|g| g.contains(o)))
        && GROUPS.iter().all(|g| options.iter().filter(|o| g.contains(o)).count() <= 1)
}

/// One `--mount`.
pub fn parse_mount(body: &MountBody) -> Result<Mount, Error> {
    let invalid =
        |what: &str| Error::InvalidParameter(format!("invalid mount config for type \"{}\": {what}", body.kind));
    if body.target.is_empty() {
        return Err(invalid("field Target must not be empty"));
    }
    let kind = match body.kind.as_str() {
        "bind" if body.source.is_empty() => return Err(invalid("field Source must not be empty")),
        "bind" => MountKind::Bind { source: PathBuf::from(&body.source), create_missing: false },
        "volume" => MountKind::Volume {
            name: body.source.clone(),
            no_copy: body.volume_options.as_ref().is_some_and(|o| o.no_copy),
        },
        "tmpfs" if !body.source.is_empty() => return Err(invalid("field Source must not be specified")),
        "tmpfs" => {
            let mut options = Vec::new();
            if let Some(tmpfs) = &body.tmpfs_options {
                if tmpfs.size_bytes > 0 {
                    options.push(format!("size={}", tmpfs.size_bytes));
                }
                if tmpfs.mode != 0 {
                    options.push(format!("mode={:o}", tmpfs.mode));
                }
            }
            MountKind::Tmpfs { options: options.join(",") }
        }
        other => return Err(Error::InvalidParameter(format!("mount type unknown: \"{other}\""))),
    };
    Ok(Mount { kind, destination: body.target.clone(), read_only: body.read_only })
}

/// One `--tmpfs destination:options` (the options as the kernel takes them, `size=64m`).
pub fn parse_tmpfs(destination: &str, options: &str) -> Result<Mount, Error> {
    const KNOWN: [&str; 14] = [
        "size",
        "mode",
        "uid",
        "gid",
        "nr_inodes",
        "nr_blocks",
        "exec",
        "noexec",
        "suid",
        "nosuid",
        "dev",
        "nodev",
        "ro",
        "rw",
    ];
    let mut kept = Vec::new();
    let mut read_only = false;
    for option in options.split(',').filter(|o| !o.is_empty()) {
        let key = option.split('=').next().unwrap_or_default();
        if !KNOWN.contains(&key) {
            return Err(Error::InvalidParameter(format!("invalid tmpfs option [\"{option}\"]")));
        }
        match option {
            "ro" => read_only = true,
            "rw" => read_only = false,
            _ => kept.push(option),
        }
    }
    Ok(Mount { kind: MountKind::Tmpfs { options: kept.join(",") }, destination: destination.to_string(), read_only })
}

pub fn volume_json(volume: &Volume, engine: &Engine) -> Value {
    json!({
        "Name": volume.name,
        "Driver": "local",
        "Mountpoint": engine.volumes().path(&volume.name).display().to_string(),
        "CreatedAt": humantime::format_rfc3339_seconds(volume.created).to_string(),
        "Labels": volume.labels,
        "Scope": "local",
        "Options": null,
    })
}

/// `POST /volumes/create`'s body.
#[derive(Deserialize, Default)]
#[serde(rename_all = "PascalCase", default)]
pub struct VolumeCreateBody {
    pub name: Option<String>,
    pub driver: Option<String>,
    pub driver_opts: Option<BTreeMap<String, String>>,
    pub labels: Option<BTreeMap<String, String>>,
}

impl VolumeCreateBody {
    pub fn parse(body: &[u8]) -> Result<VolumeCreateBody, Error> {
        let body: VolumeCreateBody = if body.is_empty() {
            VolumeCreateBody::default()
        } else {
            serde_json::from_slice(body).map_err(|e| Error::InvalidParameter(format!("invalid volume config: {e}")))?
        };
        let driver = body.driver.as_deref().unwrap_or_default();
        if !matches!(driver, "" | "local") {
            return Err(Error::NotFound(format!(
                "error looking up volume plugin {driver}: plugin \"{driver}\" not found"
            )));
        }
        if body.driver_opts.as_ref().is_some_and(|o| !o.is_empty()) {
            return Err(Error::Unsupported("options of the local volume driver (type, device, o)"));
        }
        Ok(body)
    }
}

/// The `filters` of `GET /volumes` and `POST /volumes/prune`: name, label, dangling (and, for
/// prune, `all`).
pub struct VolumeFilters(BTreeMap<String, Vec<String>>);

impl VolumeFilters {
    pub fn parse(text: Option<&str>, allowed: &[&str]) -> Result<VolumeFilters, Error> {
        let filters = crate::json::parse_filters(text, allowed)?;
        Ok(VolumeFilters(filters))
    }

    fn values(&self, key: &str) -> &[String] {
        self.0.get(key).map_or(&[], Vec::as_slice)
    }

    /// `all=true` (prune): named volumes too, not only anonymous ones.
    pub fn all(&self) -> bool {
        self.values("all").iter().any(|v| matches!(v.as_str(), "1" | "true"))
    }

    pub fn matches(&self, volume: &Volume, in_use: bool) -> bool {
        let labels_match = self.values("label").iter().all(|wanted| match wanted.split_once('=') {
            Some((k, v)) => volume.labels.get(k).is_some_and(|have| have == v),
            None => volume.labels.contains_key(wanted),
        });
        let names = self.values("name");
        let dangling = self.values("dangling");
        labels_match
            && (names.is_empty() || names.iter().any(|n| volume.name.contains(n.as_str())))
            && (dangling.is_empty() || dangling.iter().any(|d| matches!(d.as_str(), "1" | "true") != in_use))
    }
}

pub async fn create(engine: &Engine, body: &[u8]) -> Result<Value, Error> {
    let body = VolumeCreateBody::parse(body)?;
    let volume = engine.volumes().create(body.name.as_deref(), body.labels.unwrap_or_default()).await?;
    Ok(volume_json(&volume, engine))
}

pub async fn list(engine: &Engine, filters: Option<&str>) -> Result<Value, Error> {
    let filters = VolumeFilters::parse(filters, &["name", "label", "dangling", "driver"])?;
    let volumes: Vec<Value> = engine
        .volumes()
        .list()
        .await?
        .iter()
        .filter(|v| filters.matches(v, !engine.volume_users(&v.name).is_empty()))
        .map(|v| volume_json(v, engine))
        .collect();
    Ok(json!({"Volumes": volumes, "Warnings": []}))
}

/// Anonymous volumes no container uses; with the `all` filter, named ones too (Docker 23+).
pub async fn prune(engine: &Engine, filters: Option<&str>) -> Result<Value, Error> {
    let filters = VolumeFilters::parse(filters, &["label", "all"])?;
    let all = filters.all();
    let (deleted, reclaimed) = engine.prune_volumes(|v| (all || v.anonymous()) && filters.matches(v, false)).await?;
    Ok(json!({"VolumesDeleted": deleted, "SpaceReclaimed": reclaimed}))
}

/// `Mounts` of `docker inspect`.
pub fn container_mounts(container: &Container, engine: &Engine) -> Value {
    let mounts = container.mounts.iter().map(|mount| {
        let (name, source, propagation) = match &mount.kind {
            MountKind::Volume { name, .. } => {
                (Some(name.as_str()), engine.volumes().path(name).display().to_string(), "")
            }
            MountKind::Bind { source, .. } => (None, source.display().to_string(), "rprivate"),
            MountKind::Tmpfs { .. } => (None, String::new(), ""),
        };
        let mut value = json!({
            "Type": mount.type_name(),
            "Source": source,
            "Destination": mount.destination,
            "Mode": if name.is_some() { "z" } else { "" },
            "RW": !mount.read_only,
            "Propagation": propagation,
        });
        if let Some(name) = name {
            value["Name"] = json!(name);
            value["Driver"] = json!("local");
        }
        value
    });
    Value::Array(mounts.collect())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn bind(raw: &str) -> String {
        match parse_bind(raw) {
            Ok(m) => format!("{:?} {} ro={}", m.kind, m.destination, m.read_only),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn binds_parse_like_dockers() {
        assert_eq!(bind("data:/srv"), r#"Volume { name: "data", no_copy: false } /srv ro=false"#);
        assert_eq!(bind("/host:/srv:ro"), r#"Bind { source: "/host", create_missing: true } /srv ro=true"#);
        assert_eq!(bind("data:/srv:ro,nocopy"), r#"Volume { name: "data", no_copy: true } /srv ro=true"#);
        assert_eq!(bind("/srv:ro"), "invalid volume specification: '/srv:ro'");
        assert_eq!(bind("a:b:c:d"), "invalid volume specification: 'a:b:c:d'");
        assert_eq!(bind(":/srv"), "invalid volume specification: ':/srv'");
        assert_eq!(bind("/a:/b:rw,ro"), "invalid mode: rw,ro");
        assert_eq!(bind("/a:/b:bogus"), "invalid mode: bogus");
    }

    #[test]
    fn mounts_and_tmpfs_parse() {
        let body = |json: &str| serde_json::from_str::<MountBody>(json).unwrap();
        let m =
            parse_mount(&body(r#"{"Type":"tmpfs","Target":"/t","TmpfsOptions":{"SizeBytes":1048576,"Mode":1023}}"#));
        assert_eq!(m.unwrap().kind, MountKind::Tmpfs { options: "size=1048576,mode=1777".into() });
        let m = parse_mount(&body(r#"{"Type":"bind","Source":"/h","Target":"/c","ReadOnly":true}"#)).unwrap();
        assert!(m.read_only && matches!(m.kind, MountKind::Bind { create_missing: false, .. }));
        let error = parse_mount(&body(r#"{"Type":"bind","Target":"/c"}"#)).unwrap_err().to_string();
        assert_eq!(error, "invalid mount config for type \"bind\": field Source must not be empty");
        assert!(parse_mount(&body(r#"{"Type":"npipe","Source":"x","Target":"/c"}"#)).is_err());
        let t = parse_tmpfs("/run", "size=64m,ro").unwrap();
        assert_eq!((t.kind, t.read_only), (MountKind::Tmpfs { options: "size=64m".into() }, true));
        assert!(parse_tmpfs("/run", "sizes=1").is_err());
    }
}
