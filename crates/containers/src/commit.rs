//! Images made from a tar (`docker import`) or from a container's writable layer
//! (`docker commit`), with Dockerfile-style changes (`--change`) applied to their config.

use std::collections::{BTreeMap, HashMap};
use std::io::{self, Read, Seek};
use std::path::Path;
use std::time::SystemTime;

use oci_spec::image::{Arch, Config, History, HistoryBuilder, ImageConfiguration, ImageConfigurationBuilder, Os};

use crate::dockerfile::{self, Command};
use crate::error::{Error, Result};
use crate::health::HealthConfig;
use crate::image::{DEFAULT_PATH, DockerFields, Image, ImageStore, Reference, go_arch};
use crate::layer;

/// One `--change` instruction, already parsed (the wire's JSON forms are the adapter's job).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Change {
    Cmd(Vec<String>),
    Entrypoint(Vec<String>),
    Env(String, String),
    WorkingDir(String),
    User(String),
    Label(String, String),
    Expose(String),
    Volume(String),
    StopSignal(String),
    Healthcheck(HealthConfig),
    OnBuild(String),
}

impl Change {
    /// `--change` lines: Dockerfile instructions, of which only those that change the config are
    /// allowed (as in Docker).
    pub fn parse(lines: &[&str]) -> Result<Vec<Change>> {
        let shell = ["/bin/sh".to_string(), "-c".to_string()];
        // Words keep their quotes until expanded; there are no build variables here.
        let word = |w: String| dockerfile::expand(&w, &BTreeMap::new(), '\\').map_err(Error::InvalidParameter);
        let pair = |(k, v): (String, String)| Ok::<_, Error>((word(k)?, word(v)?));
        let mut changes = Vec::new();
        let instructions = dockerfile::parse_instructions(lines).map_err(|e| Error::InvalidParameter(e.message))?;
        for instruction in instructions {
            match instruction.command {
                Command::Cmd(command) => changes.push(Change::Cmd(command.argv(&shell))),
                Command::Entrypoint(command) => changes.push(Change::Entrypoint(command.argv(&shell))),
                Command::Env(pairs) => {
                    for (k, v) in pairs.into_iter().map(pair).collect::<Result<Vec<_>>>()? {
                        changes.push(Change::Env(k, v));
                    }
                }
                Command::Label(pairs) => {
                    for (k, v) in pairs.into_iter().map(pair).collect::<Result<Vec<_>>>()? {
                        changes.push(Change::Label(k, v));
                    }
                }
                Command::Workdir(dir) => changes.push(Change::WorkingDir(word(dir)?)),
                Command::User(user) => changes.push(Change::User(word(user)?)),
                Command::StopSignal(signal) => changes.push(Change::StopSignal(word(signal)?)),
                Command::Expose(ports) => {
                    for port in ports {
                        changes.push(Change::Expose(word(port)?));
                    }
                }
                Command::Volume(paths) => {
                    for path in paths {
                        changes.push(Change::Volume(word(path)?));
                    }
                }
                Command::Healthcheck(check) => changes.push(Change::Healthcheck(check)),
                Command::Onbuild(trigger) => changes.push(Change::OnBuild(trigger)),
                _ => {
                    let keyword = instruction.original.split_whitespace().next().unwrap_or_default().to_uppercase();
                    return Err(Error::InvalidParameter(format!("{keyword} is not a valid change command")));
                }
            }
        }
        Ok(changes)
    }
}

/// What `docker import` and `docker commit` share.
#[derive(Clone, Debug, Default)]
pub struct NewImage {
    pub tag: Option<Reference>,
    pub changes: Vec<Change>,
    /// The history entry's comment (`-m`, or "Imported from -").
    pub comment: String,
    pub author: String,
}

/// How a committed container ran, which becomes the new image's config, as in Docker.
#[derive(Clone, Debug, Default)]
pub struct ContainerConfig {
    pub entrypoint: Vec<String>,
    pub cmd: Vec<String>,
    pub env: Vec<String>,
    pub working_dir: String,
    pub user: String,
    /// Its health check, the image's merged with its own.
    pub healthcheck: Option<HealthConfig>,
}

impl ImageStore {
    /// `docker import`: a one-layer image of a root filesystem tar (compressed or not).
    pub fn import(&self, tar: impl Read, new: &NewImage) -> Result<Image> {
        let (layer, _) = self.store_layer(tar)?;
        let now = now();
        let mut run = Config::default();
        let mut docker = DockerFields::default();
        apply(&mut run, &mut docker, &new.changes);
        let config = ImageConfigurationBuilder::default()
            .created(now.clone())
            .architecture(Arch::from(go_arch()))
            .os(Os::Linux)
            .config(run)
            .rootfs(oci_spec::image::RootFs::default())
            .history(vec![history(&now, "", &new.comment)?])
            .build()
            .map_err(Error::oci("image config"))?;
        self.finish(config, &docker, Vec::new(), layer, new)
    }

    /// `docker commit`: the container's overlayfs upper directory, its whiteouts turned back
    /// into `.wh.` files, as a new layer on the container's image.
    pub fn commit(&self, base: &Image, upper: &Path, ran: &ContainerConfig, new: &NewImage) -> Result<Image> {
        let mut tar = tempfile::tempfile().map_err(Error::io("cannot create a temporary file for", upper))?;
        layer::pack(upper, &mut tar).map_err(Error::io("cannot read the container's changes in", upper))?;
        tar.rewind().map_err(Error::io("cannot read the container's changes in", upper))?;
        let (layer, _) = self.store_layer(io::BufReader::new(tar))?;
        let mut config = self.configuration(base)?;
        let mut run = config.config().clone().unwrap_or_default();
        run.set_entrypoint(Some(ran.entrypoint.clone()).filter(|e| !e.is_empty()));
        run.set_cmd(Some(ran.cmd.clone()).filter(|c| !c.is_empty()));
        let env: Vec<String> = ran.env.iter().filter(|e| !e.starts_with("HOSTNAME=")).cloned().collect();
        run.set_env(Some(env));
        run.set_working_dir(Some(ran.working_dir.clone()).filter(|w| !w.is_empty()));
        run.set_user(Some(ran.user.clone()).filter(|u| !u.is_empty()));
        let mut docker = DockerFields { healthcheck: ran.healthcheck.clone(), ..base.config.docker.clone() };
        apply(&mut run, &mut docker, &new.changes);
        let now = now();
        let created_by = [ran.entrypoint.clone(), ran.cmd.clone()].concat().join(" ");
        let mut steps = config.history().clone().unwrap_or_default();
        steps.push(history(&now, &created_by, &new.comment)?);
        config.set_config(Some(run));
        config.set_created(Some(now));
        config.set_history(Some(steps));
        config.set_author(Some(new.author.clone()).filter(|a| !a.is_empty()));
        self.finish(config, &docker, base.layers.clone(), layer, new)
    }

    fn finish(
        &self,
        mut config: ImageConfiguration,
        docker: &DockerFields,
        mut layers: Vec<crate::image::Layer>,
        layer: crate::image::Layer,
        new: &NewImage,
    ) -> Result<Image> {
        layers.push(layer);
        let mut rootfs = config.rootfs().clone();
        rootfs.set_typ("layers".to_string());
        rootfs.set_diff_ids(layers.iter().map(|l| l.diff_id.clone()).collect());
        config.set_rootfs(rootfs);
        let stored = self.store_image(&config, docker, &layers, new.tag.as_slice());
        if stored.is_err() {
            self.discard(&layers)?;
        }
        stored
    }
}

fn now() -> String {
    humantime::format_rfc3339_nanos(SystemTime::now()).to_string()
}

fn history(created: &str, created_by: &str, comment: &str) -> Result<History> {
    HistoryBuilder::default()
        .created(created.to_string())
        .created_by(created_by.to_string())
        .comment(comment.to_string())
        .build()
        .map_err(Error::oci("image config"))
}

/// Applies changes in order, as Dockerfile instructions would be.
pub fn apply(run: &mut Config, docker: &mut DockerFields, changes: &[Change]) {
    for change in changes {
        match change {
            Change::Cmd(cmd) => {
                run.set_cmd(Some(cmd.clone()));
            }
            Change::Entrypoint(entrypoint) => {
                run.set_entrypoint(Some(entrypoint.clone()));
                // As in a Dockerfile, a new entrypoint drops the command inherited before it.
                run.set_cmd(None);
            }
            Change::Env(key, value) => {
                let mut env = run.env().clone().unwrap_or_else(|| vec![DEFAULT_PATH.to_string()]);
                env.retain(|e| e.split_once('=').map_or(e.as_str(), |(k, _)| k) != key);
                env.push(format!("{key}={value}"));
                run.set_env(Some(env));
            }
            Change::WorkingDir(dir) => {
                run.set_working_dir(Some(dir.clone()));
            }
            Change::User(user) => {
                run.set_user(Some(user.clone()));
            }
            Change::Label(key, value) => {
                let mut labels: HashMap<String, String> = run.labels().clone().unwrap_or_default();
                labels.insert(key.clone(), value.clone());
                run.set_labels(Some(labels));
            }
            Change::Expose(port) => {
                let port = if port.contains('/') { port.clone() } else { format!("{port}/tcp") };
                let mut ports = run.exposed_ports().clone().unwrap_or_default();
                if !ports.contains(&port) {
                    ports.push(port);
                }
                run.set_exposed_ports(Some(ports));
            }
            Change::Volume(path) => {
                let mut volumes = run.volumes().clone().unwrap_or_default();
                if !volumes.contains(path) {
                    volumes.push(path.clone());
                }
                run.set_volumes(Some(volumes));
            }
            Change::StopSignal(signal) => {
                run.set_stop_signal(Some(signal.clone()));
            }
            Change::Healthcheck(check) => docker.healthcheck = Some(check.clone()),
            Change::OnBuild(trigger) => docker.on_build.push(trigger.clone()),
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use std::fs;
    use std::os::unix::fs::FileTypeExt;

    #[test]
    fn changes_parse_like_dockers() {
        let parsed = Change::parse(&[
            r#"CMD ["sh", "-c", "echo hi"]"#,
            "ENV A=1 B=\"two words\"",
            "WORKDIR /srv",
            "ENTRYPOINT top -b",
            "HEALTHCHECK --retries=2 CMD [\"true\"]",
            "ONBUILD RUN echo hi",
        ])
        .unwrap();
        assert_eq!(
            parsed,
            vec![
                Change::Cmd(vec!["sh".into(), "-c".into(), "echo hi".into()]),
                Change::Env("A".into(), "1".into()),
                Change::Env("B".into(), "two words".into()),
                Change::WorkingDir("/srv".into()),
                Change::Entrypoint(vec!["/bin/sh".into(), "-c".into(), "top -b".into()]),
                Change::Healthcheck(HealthConfig {
                    test: vec!["CMD".into(), "true".into()],
                    retries: 2,
                    ..Default::default()
                }),
                Change::OnBuild("RUN echo hi".into()),
            ]
        );
        assert_eq!(Change::parse(&["ENV PATH /opt/bin"]).unwrap(), vec![Change::Env("PATH".into(), "/opt/bin".into())]);
        assert!(Change::parse(&["RUN rm -rf /"]).is_err());
        assert!(Change::parse(&["WORKDIR"]).is_err());
    }

    #[test]
    fn changes_apply_in_order() {
        let mut run = Config::default();
        let mut docker = DockerFields::default();
        apply(
            &mut run,
            &mut docker,
            &[
                Change::Cmd(vec!["sh".into()]),
                Change::Env("A".into(), "1".into()),
                Change::Env("A".into(), "2".into()),
                Change::Entrypoint(vec!["/app".into()]),
                Change::Expose("80".into()),
                Change::WorkingDir("/srv".into()),
                Change::OnBuild("RUN true".into()),
                Change::Healthcheck(HealthConfig::none()),
            ],
        );
        assert_eq!(
            docker,
            DockerFields {
                healthcheck: Some(HealthConfig::none()),
                on_build: vec!["RUN true".into()],
                ..Default::default()
            }
        );
        assert_eq!(run.cmd(), &None);
        assert_eq!(run.env().clone().unwrap(), vec![DEFAULT_PATH.to_string(), "A=2".to_string()]);
        assert_eq!(run.exposed_ports().clone().unwrap(), vec!["80/tcp".to_string()]);
        assert_eq!(run.working_dir().as_deref(), Some("/srv"));
    }

    #[test]
    fn import_then_commit_a_changed_upper_directory() {
        let dir = tempfile::tempdir().unwrap();
        let store = ImageStore::open(dir.path()).unwrap();
        let mut tar = tar::Builder::new(Vec::new());
        for (path, data) in [("etc/motd", &b"hello"[..]), ("etc/keep", b"kept"), ("var/cache/old", b"old")] {
            let mut header = tar::Header::new_gnu();
            header.set_mode(0o644);
            header.set_uid(0);
            header.set_gid(0);
            header.set_size(data.len() as u64);
            tar.append_data(&mut header, path, data).unwrap();
        }
        let new = NewImage {
            tag: Some(Reference::parse("base").unwrap()),
            changes: vec![Change::Cmd(vec!["sh".into()])],
            comment: "Imported from -".into(),
            ..NewImage::default()
        };
        let base = store.import(tar.into_inner().unwrap().as_slice(), &new).unwrap();
        assert_eq!(base.config.cmd, Some(vec!["sh".to_string()]));
        assert_eq!(base.history[0].comment, "Imported from -");

        // What overlayfs leaves in an upper directory after `rm /etc/motd`, a new file, and
        // `rm -r /var/cache; mkdir /var/cache`.
        let upper = dir.path().join("upper");
        fs::create_dir_all(upper.join("etc")).unwrap();
        fs::create_dir_all(upper.join("var/cache")).unwrap();
        rustix::fs::mknodat(
            rustix::fs::CWD,
            upper.join("etc/motd"),
            rustix::fs::FileType::CharacterDevice,
            rustix::fs::Mode::empty(),
            0,
        )
        .unwrap();
        fs::write(upper.join("etc/new"), "new").unwrap();
        rustix::fs::setxattr(upper.join("var/cache"), "trusted.overlay.opaque", b"y", rustix::fs::XattrFlags::empty())
            .unwrap();
        let ran = ContainerConfig { cmd: vec!["sh".into(), "-c".into(), "true".into()], ..Default::default() };
        let new = NewImage { tag: Some(Reference::parse("next").unwrap()), ..NewImage::default() };
        let next = store.commit(&base, &upper, &ran, &new).unwrap();
        assert_eq!(next.layers.len(), 2);
        assert_eq!(next.history.last().unwrap().created_by, "sh -c true");
        let dirs = store.layer_dirs(&next).unwrap();
        assert!(fs::symlink_metadata(dirs[1].join("etc/motd")).unwrap().file_type().is_char_device());
        assert_eq!(fs::read(dirs[1].join("etc/new")).unwrap(), b"new");
        let mut opaque = [0u8; 4];
        let n = rustix::fs::getxattr(dirs[1].join("var/cache"), "trusted.overlay.opaque", &mut opaque).unwrap();
        assert_eq!(&opaque[..n], b"y");
    }
}
