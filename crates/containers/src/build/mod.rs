//! `docker build` with Docker's classic builder semantics: the context is unpacked into a
//! directory of the build, the Dockerfile is parsed whole (so a parse error fails the build before
//! any step runs), and each stage's instructions run in order. Every step makes an image: RUN in
//! a container of the build whose upper directory becomes a layer, COPY and ADD a layer of the
//! copied files, the others a new config only (an "empty layer" in the history).
//!
//! The build cache maps a key (the parent image's id, the step as Docker writes it in the
//! history, and for COPY/ADD the checksum of what is copied) to the image the step made, in the
//! store under `containers/build-cache/<key>`. A step whose key is there, and whose image still
//! exists, is not run again.

mod context;

pub use context::clean as clean_path;

use std::collections::BTreeMap;
use std::fs;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use oci_spec::image::{
    Arch, ConfigBuilder, HistoryBuilder, ImageConfiguration, ImageConfigurationBuilder, Os, RootFsBuilder,
};
use tokio::sync::{broadcast, mpsc};

use crate::dockerfile::{self, Command, CommandLine, Copy, Dockerfile, Instruction};
use crate::engine::{Engine, mount_overlay, unmount};
use crate::error::{Error, Result};
use crate::health::HealthConfig;
use crate::image::{self, DockerFields, Image, Layer, Reference};
use crate::{CreateRequest, OutputEvent, WaitCondition};

/// The ARGs every build knows without an ARG instruction; they stay out of the history.
const PREDEFINED_ARGS: [&str; 10] = [
    "HTTP_PROXY",
    "http_proxy",
    "HTTPS_PROXY",
    "https_proxy",
    "FTP_PROXY",
    "ftp_proxy",
    "NO_PROXY",
    "no_proxy",
    "ALL_PROXY",
    "all_proxy",
];

/// What `POST /build` asks for.
#[derive(Clone, Debug, Default)]
pub struct BuildRequest {
    /// The Dockerfile's path in the context.
    pub dockerfile: String,
    pub tags: Vec<String>,
    /// `--build-arg`s; `None` takes the value from nowhere (the ARG's default).
    pub build_args: BTreeMap<String, Option<String>>,
    pub no_cache: bool,
    pub target: Option<String>,
    /// `--label`s, set on the final image.
    pub labels: BTreeMap<String, String>,
    /// `-q`: only the image id is reported.
    pub quiet: bool,
}

/// What a build reports as it goes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BuildEvent {
    /// Text for the client's terminal (`Step 1/3 : FROM busybox\n`, a RUN's output).
    Output(String),
    /// The id of the image built (`sha256:...`), before the final messages.
    Built(String),
}

/// A stage as the build goes through it.
struct Stage {
    name: Option<String>,
    /// The image of the last step (`None` before the first step of `FROM scratch`).
    image: Option<Image>,
    config: ImageConfiguration,
    layers: Vec<Layer>,
    /// Docker's config fields oci-spec's config lacks (health check, shell, ONBUILD triggers).
    docker: DockerFields,
    /// ARGs declared in this stage, with their values.
    args: BTreeMap<String, String>,
    /// Whether CMD was set in this stage (an ENTRYPOINT resets an inherited CMD).
    cmd_set: bool,
}

impl Stage {
    fn parent_id(&self) -> &str {
        self.image.as_ref().map_or("scratch", |image| image.id.as_str())
    }

    fn env(&self) -> Vec<String> {
        self.config.config().as_ref().and_then(|c| c.env().clone()).unwrap_or_default()
    }

    /// ARGs then ENV (which wins over an ARG of the same name), for word expansion.
    fn variables(&self) -> BTreeMap<String, String> {
        let mut variables = self.args.clone();
        for variable in self.env() {
            let (name, value) = variable.split_once('=').unwrap_or((&variable, ""));
            variables.insert(name.to_string(), value.to_string());
        }
        variables
    }

    /// What shell forms run in: SHELL's, else `/bin/sh -c`.
    fn shell(&self) -> Vec<String> {
        image::shell_or_default(&self.docker.shell)
    }

    fn run_config(&self) -> oci_spec::image::Config {
        self.config.config().clone().unwrap_or_default()
    }
}

/// One build: its directory (the unpacked context, mounts of other images' roots) and its
/// progress so far.
struct Build<'a> {
    engine: &'a Engine,
    request: &'a BuildRequest,
    events: &'a mpsc::UnboundedSender<BuildEvent>,
    dir: PathBuf,
    context: PathBuf,
    ignore: context::Ignore,
    escape: char,
    /// Finished stages, for `FROM <stage>` and `COPY --from=<stage>`.
    stages: Vec<(Option<String>, Image)>,
    step: usize,
    steps: usize,
    /// The ARGs before the first FROM, with their values: a stage's `ARG NAME` without a default
    /// takes the value from there.
    meta_args: BTreeMap<String, String>,
    /// Build args some ARG used (the others are reported as not consumed).
    consumed: std::collections::BTreeSet<String>,
}

impl Engine {
    /// Builds the Dockerfile of the context tar `context_tar`, reporting progress to `events`.
    /// Returns the image's id. Errors before the first event (an unreadable context, a parse
    /// error) mean nothing was started.
    pub async fn build(
        &self,
        request: BuildRequest,
        context_tar: Vec<u8>,
        events: mpsc::UnboundedSender<BuildEvent>,
    ) -> Result<String> {
        if !self.can_run() {
            return Err(Error::NotRoot);
        }
        let builds = self.dir().join("build");
        fs::create_dir_all(&builds).map_err(Error::io("cannot create", &builds))?;
        let dir = tempfile::Builder::new()
            .prefix("build-")
            .tempdir_in(&builds)
            .map_err(Error::io("cannot create a build directory in", &builds))?;
        let context = dir.path().join("context");
        let unpack_into = context.clone();
        tokio::task::spawn_blocking(move || unpack_context(&context_tar, &unpack_into))
            .await
            .map_err(|e| Error::Runtime(format!("the context unpacking task failed: {e}")))??;
        let dockerfile_path = context::resolve_in_root(&context, &request.dockerfile, true)
            .map_err(Error::io("cannot resolve the Dockerfile", &request.dockerfile))?;
        let text = match fs::read(&dockerfile_path) {
            Ok(bytes) => String::from_utf8_lossy(&bytes).into_owned(),
            Err(_) => {
                return Err(Error::InvalidParameter(format!(
                    "Cannot locate specified Dockerfile: {}",
                    request.dockerfile
                )));
            }
        };
        let dockerfile = Dockerfile::parse(&text).map_err(|e| Error::InvalidParameter(e.to_string()))?;
        let ignore = context::Ignore::parse(&fs::read_to_string(context.join(".dockerignore")).unwrap_or_default());
        for tag in &request.tags {
            Reference::parse(tag)?;
        }
        let mut build = Build {
            engine: self,
            request: &request,
            events: &events,
            dir: dir.path().to_path_buf(),
            context: dir.path().join("context"),
            ignore,
            escape: escape_of(&text),
            stages: Vec::new(),
            step: 0,
            steps: 0,
            meta_args: BTreeMap::new(),
            consumed: Default::default(),
        };
        let image = build.run(&dockerfile).await?;
        drop(dir);
        Ok(image)
    }

    /// Forgets the build cache (`docker builder prune`); returns how many entries it held.
    pub async fn prune_build_cache(&self) -> Result<usize> {
        let prefix = self.keys.key(b"build-cache/");
        let entries = self.store.range(&prefix, &store::prefix_end(&prefix), None).await?;
        let ops = entries.iter().map(|kv| store::Op::delete(kv.key.to_vec())).collect();
        self.store.txn(store::Txn::ops(ops)).await?;
        Ok(entries.len())
    }

    async fn cached(&self, key: &str) -> Option<Image> {
        let stored = self.store.get(&self.keys.key(format!("build-cache/{key}").as_bytes())).await.ok()??;
        self.images().find(&String::from_utf8_lossy(&stored.value)).ok()
    }

    async fn remember(&self, key: &str, image: &Image) -> Result<()> {
        self.store.put(&self.keys.key(format!("build-cache/{key}").as_bytes()), image.id.as_bytes()).await?;
        Ok(())
    }
}

/// Removes what builds that were under way when Stratus stopped left in `<dir>/build`: their
/// unpacked contexts and any image roots still mounted for COPY.
pub(crate) fn clear_leftovers(dir: &Path) {
    let builds = dir.join("build");
    let Ok(entries) = fs::read_dir(&builds) else { return };
    for entry in entries.flatten() {
        for mounted in fs::read_dir(entry.path()).into_iter().flatten().flatten() {
            unmount(&mounted.path().join("root"));
        }
        if let Err(error) = fs::remove_dir_all(entry.path()) {
            tracing::warn!(path = %entry.path().display(), %error, "cannot remove a stopped build's files");
        }
    }
}

/// Whether `image` is a build step's image that a later step built on: untagged, and its
/// layers and history begin another image's. `docker images` hides these unless `-a` is given.
pub fn is_intermediate(image: &Image, images: &[Image]) -> bool {
    image.tags.is_empty()
        && images.iter().any(|child| {
            child.history.len() > image.history.len()
                && child.history.starts_with(&image.history)
                && child.layers.starts_with(&image.layers)
        })
}

fn unpack_context(tar_bytes: &[u8], into: &Path) -> Result<()> {
    fs::create_dir_all(into).map_err(Error::io("cannot create", into))?;
    let mut archive = tar::Archive::new(tar_bytes);
    archive.set_preserve_permissions(true);
    archive.set_preserve_mtime(true);
    let invalid = |error: std::io::Error| Error::InvalidParameter(format!("cannot read the build context: {error}"));
    for entry in archive.entries().map_err(invalid)? {
        let mut entry = entry.map_err(invalid)?;
        let path = entry.path().map_err(invalid)?.into_owned();
        if !context::is_plain_relative(&path) {
            return Err(Error::InvalidParameter(format!("the build context holds an unsafe path: {}", path.display())));
        }
        entry.unpack_in(into).map_err(invalid)?;
    }
    Ok(())
}

fn escape_of(text: &str) -> char {
    let directive = text.lines().take_while(|l| l.trim_start().starts_with('#')).find_map(|l| {
        let (key, value) = l.trim_start().trim_start_matches('#').split_once('=')?;
        (key.trim().eq_ignore_ascii_case("escape")).then(|| value.trim().to_string())
    });
    if directive.as_deref() == Some("`") { '`' } else { '\\' }
}

impl Build<'_> {
    fn say(&self, text: impl Into<String>) {
        if !self.request.quiet {
            let _ = self.events.send(BuildEvent::Output(text.into()));
        }
    }

    fn build_arg(&self, name: &str) -> Option<String> {
        self.request.build_args.get(name).cloned().flatten()
    }

    async fn run(&mut self, dockerfile: &Dockerfile) -> Result<String> {
        // ARGs before the first FROM are for FROM lines (and stage ARGs that name them).
        let mut meta_args = BTreeMap::new();
        let mut stages: Vec<(&Instruction, Vec<&Instruction>)> = Vec::new();
        for instruction in &dockerfile.instructions {
            match (&instruction.command, stages.last_mut()) {
                (Command::From { .. }, _) => stages.push((instruction, Vec::new())),
                (_, Some((_, body))) => body.push(instruction),
                (Command::Arg(args), None) => {
                    for (name, default) in args {
                        let value = self.build_arg(name).or_else(|| default.clone());
                        self.consumed.insert(name.clone());
                        let value = self.expand(&value.unwrap_or_default(), &meta_args, instruction)?;
                        meta_args.insert(name.clone(), value);
                    }
                }
                (_, None) => {}
            }
        }
        let last = match &self.request.target {
            Some(target) => stages
                .iter()
                .position(|(from, _)| matches!(&from.command, Command::From { name: Some(n), .. } if n.eq_ignore_ascii_case(target)))
                .ok_or_else(|| Error::InvalidParameter(format!("target stage \"{target}\" could not be found")))?,
            None => stages.len().saturating_sub(1),
        };
        stages.truncate(last + 1);
        self.meta_args = meta_args.clone();
        let label_step = usize::from(!self.request.labels.is_empty());
        self.steps = stages.iter().map(|(_, body)| 1 + body.len()).sum::<usize>() + label_step;

        let mut final_image = None;
        let count = stages.len();
        for (index, (from, body)) in stages.into_iter().enumerate() {
            let mut stage = self.from(from, &meta_args).await?;
            self.run_triggers(&mut stage).await?;
            for instruction in body {
                self.step(&mut stage, instruction).await?;
            }
            if index + 1 == count && label_step == 1 {
                self.labels(&mut stage).await?;
            }
            let image = self.commit_if_needed(&mut stage).await?;
            self.stages.push((stage.name.clone(), image.clone()));
            final_image = Some(image);
        }
        let image = final_image.ok_or_else(|| Error::InvalidParameter("the Dockerfile has no stage".into()))?;
        let unused: Vec<&String> = self
            .request
            .build_args
            .keys()
            .filter(|name| !self.consumed.contains(*name) && !PREDEFINED_ARGS.contains(&name.as_str()))
            .collect();
        if !unused.is_empty() {
            let names: Vec<&str> = unused.iter().map(|s| s.as_str()).collect();
            self.say(format!("[Warning] One or more build-args [{}] were not consumed\n", names.join(" ")));
        }
        let _ = self.events.send(BuildEvent::Built(image.id.clone()));
        self.say(format!("Successfully built {}\n", image::short_id(&image.id)));
        for tag in &self.request.tags {
            let reference = Reference::parse(tag)?.to_string();
            self.engine.images().tag(&image.id, &reference)?;
            self.say(format!("Successfully tagged {reference}\n"));
        }
        if self.request.quiet {
            let _ = self.events.send(BuildEvent::Output(format!("{}\n", image.id)));
        }
        Ok(image.id)
    }

    fn expand(&self, word: &str, variables: &BTreeMap<String, String>, at: &Instruction) -> Result<String> {
        dockerfile::expand(word, variables, self.escape).map_err(|message| {
            Error::InvalidParameter(format!("dockerfile parse error on line {}: {message}", at.line))
        })
    }

    fn announce(&mut self, instruction: &Instruction) {
        self.step += 1;
        self.say(format!("Step {}/{} : {}\n", self.step, self.steps, instruction.original));
    }

    async fn from(&mut self, from: &Instruction, meta_args: &BTreeMap<String, String>) -> Result<Stage> {
        let Command::From { image, name } = &from.command else {
            return Err(Error::InvalidParameter("a stage must start with FROM".into()));
        };
        self.announce(from);
        let reference = self.expand(image, meta_args, from)?;
        let base = if reference == "scratch" {
            None
        } else if let Some((_, image)) =
            self.stages.iter().find(|(n, _)| n.as_deref() == Some(&reference.to_ascii_lowercase()))
        {
            Some(image.clone())
        } else {
            Some(self.engine.images().find(&reference).map_err(|error| match error {
                Error::NoSuchImage(_) => Error::NoSuchImage(format!(
                    "{} (Stratus cannot pull images; make one with `stratus image bootstrap busybox`, `docker load` or `docker import`)",
                    Reference::parse(&reference).map(|r| r.to_string()).unwrap_or(reference.clone())
                )),
                other => other,
            })?)
        };
        let config = match &base {
            Some(image) => self.engine.images().configuration(image)?,
            None => empty_configuration()?,
        };
        match &base {
            Some(image) => self.say(format!(" ---> {}\n", image::short_id(&image.id))),
            None => self.say(" ---> \n"),
        }
        // A child does not inherit its base's ONBUILD triggers (they run in its build).
        let docker = base.as_ref().map(|image| image.config.docker.clone()).unwrap_or_default();
        let docker = DockerFields { on_build: Vec::new(), ..docker };
        Ok(Stage {
            name: name.clone(),
            layers: base.as_ref().map(|image| image.layers.clone()).unwrap_or_default(),
            image: base,
            config,
            docker,
            args: BTreeMap::new(),
            cmd_set: false,
        })
    }

    /// Runs the ONBUILD triggers of the stage's base image, as steps of its FROM.
    async fn run_triggers(&mut self, stage: &mut Stage) -> Result<()> {
        let triggers = stage.image.as_ref().map(|base| base.config.docker.on_build.clone()).unwrap_or_default();
        if triggers.is_empty() {
            return Ok(());
        }
        let plural = if triggers.len() == 1 { "" } else { "s" };
        self.say(format!("# Executing {} build trigger{plural}\n", triggers.len()));
        let texts: Vec<&str> = triggers.iter().map(String::as_str).collect();
        let instructions = dockerfile::parse_instructions(&texts)
            .map_err(|e| Error::InvalidParameter(format!("invalid ONBUILD trigger: {}", e.message)))?;
        for instruction in &instructions {
            self.execute(stage, instruction).await?;
        }
        Ok(())
    }

    async fn step(&mut self, stage: &mut Stage, instruction: &Instruction) -> Result<()> {
        self.announce(instruction);
        self.execute(stage, instruction).await
    }

    async fn execute(&mut self, stage: &mut Stage, instruction: &Instruction) -> Result<()> {
        if let Command::Arg(args) = &instruction.command {
            self.consumed.extend(args.iter().map(|(name, _)| name.clone()));
        }
        let variables = stage.variables();
        let expand = |word: &str| self.expand(word, &variables, instruction);
        let mut config = stage.run_config();
        let nop = |text: String| format!("/bin/sh -c #(nop) {text}");
        let created_by = match &instruction.command {
            Command::Run(command) => return self.run_step(stage, command).await,
            Command::Copy(copy) => return self.copy_step(stage, copy, instruction).await,
            Command::From { .. } => return Err(Error::InvalidParameter("FROM inside a stage".into())),
            Command::Arg(args) => {
                for (name, default) in args {
                    let inherited = || self.meta_args.get(name).cloned();
                    let value = match self.build_arg(name).or_else(|| default.clone()).or_else(inherited) {
                        Some(value) => Some(expand(&value)?),
                        None => None,
                    };
                    // An ARG without a value anywhere is declared but unset.
                    if let Some(value) = value {
                        stage.args.insert(name.clone(), value);
                    }
                }
                let names: Vec<String> = args
                    .iter()
                    .map(|(name, default)| match default {
                        Some(default) => format!("{name}={default}"),
                        None => name.clone(),
                    })
                    .collect();
                nop(format!("ARG {}", names.join(" ")))
            }
            Command::Env(pairs) => {
                let mut env = config.env().clone().unwrap_or_default();
                let mut shown = Vec::new();
                for (name, value) in pairs {
                    let value = expand(value)?;
                    env.retain(|v| v.split('=').next() != Some(name.as_str()));
                    env.push(format!("{name}={value}"));
                    shown.push(format!("{name}={value}"));
                }
                config.set_env(Some(env));
                nop(format!(" ENV {}", shown.join(" ")))
            }
            Command::Label(pairs) => {
                let mut labels = config.labels().clone().unwrap_or_default();
                let mut shown = Vec::new();
                for (name, value) in pairs {
                    let (name, value) = (expand(name)?, expand(value)?);
                    shown.push(format!("{name}={value}"));
                    labels.insert(name, value);
                }
                config.set_labels(Some(labels));
                nop(format!(" LABEL {}", shown.join(" ")))
            }
            Command::Cmd(command) => {
                config.set_cmd(Some(command.argv(&stage.shell())));
                stage.cmd_set = true;
                nop(format!(" CMD {}", json_list(&command.argv(&stage.shell()))))
            }
            Command::Entrypoint(command) => {
                config.set_entrypoint(Some(command.argv(&stage.shell())));
                if !stage.cmd_set {
                    config.set_cmd(None);
                }
                nop(format!(" ENTRYPOINT {}", json_list(&command.argv(&stage.shell()))))
            }
            Command::Workdir(dir) => {
                let current = config.working_dir().clone().unwrap_or_default();
                let dir = absolute_workdir(&current, &expand(dir)?);
                config.set_working_dir(Some(dir.clone()));
                nop(format!("WORKDIR {dir}"))
            }
            Command::User(user) => {
                let user = expand(user)?;
                config.set_user(Some(user.clone()));
                nop(format!(" USER {user}"))
            }
            Command::Expose(ports) => {
                let mut exposed = config.exposed_ports().clone().unwrap_or_default();
                let mut shown = Vec::new();
                for port in ports {
                    let port = expand(port)?;
                    let port = if port.contains('/') { port.to_ascii_lowercase() } else { format!("{port}/tcp") };
                    validate_port(&port)?;
                    if !exposed.contains(&port) {
                        exposed.push(port.clone());
                    }
                    shown.push(port);
                }
                config.set_exposed_ports(Some(exposed));
                nop(format!(" EXPOSE {}", shown.join(" ")))
            }
            Command::Volume(paths) => {
                let mut volumes = config.volumes().clone().unwrap_or_default();
                let mut shown = Vec::new();
                for path in paths {
                    let path = expand(path)?;
                    if path.is_empty() {
                        return Err(Error::InvalidParameter("VOLUME specified can not be an empty string".into()));
                    }
                    if !volumes.contains(&path) {
                        volumes.push(path.clone());
                    }
                    shown.push(path);
                }
                config.set_volumes(Some(volumes));
                nop(format!(" VOLUME {}", json_list(&shown)))
            }
            Command::StopSignal(signal) => {
                let signal = expand(signal)?;
                crate::engine::signal_number(&signal)?;
                config.set_stop_signal(Some(signal.clone()));
                nop(format!(" STOPSIGNAL {signal}"))
            }
            Command::Shell(shell) => {
                stage.docker.shell = shell.clone();
                nop(format!(" SHELL {}", json_list(shell)))
            }
            Command::Healthcheck(check) => {
                stage.docker.healthcheck = Some(check.clone());
                nop(format!(" HEALTHCHECK {}", healthcheck_history(check)))
            }
            Command::Onbuild(trigger) => {
                stage.docker.on_build.push(trigger.clone());
                nop(format!(" ONBUILD {trigger}"))
            }
            Command::Maintainer(author) => {
                let author = expand(author)?;
                stage.config.set_author(Some(author.clone()));
                nop(format!(" MAINTAINER {author}"))
            }
        };
        stage.config.set_config(Some(config));
        let key = cache_key(stage.parent_id(), &created_by, "");
        if self.use_cache(stage, &key).await? {
            return Ok(());
        }
        self.commit(stage, None, created_by, &key).await
    }

    /// On a cache hit, moves the stage to the cached image and says so.
    async fn use_cache(&self, stage: &mut Stage, key: &str) -> Result<bool> {
        if self.request.no_cache {
            return Ok(false);
        }
        let Some(image) = self.engine.cached(key).await else { return Ok(false) };
        stage.config = self.engine.images().configuration(&image)?;
        stage.docker = image.config.docker.clone();
        stage.layers = image.layers.clone();
        self.say(format!(" ---> Using cache\n ---> {}\n", image::short_id(&image.id)));
        stage.image = Some(image);
        Ok(true)
    }

    /// Stores the stage's config (plus `layer`, when the step made one) as a new image.
    async fn commit(&self, stage: &mut Stage, layer: Option<Layer>, created_by: String, key: &str) -> Result<()> {
        let now = humantime::format_rfc3339_seconds(SystemTime::now()).to_string();
        let empty_layer = layer.is_none();
        stage.layers.extend(layer);
        let oci = |e| Error::oci(&self.dir)(e);
        let mut history = stage.config.history().clone().unwrap_or_default();
        let mut entry = HistoryBuilder::default().created(now.clone()).created_by(created_by);
        if empty_layer {
            entry = entry.empty_layer(true);
        }
        history.push(entry.build().map_err(oci)?);
        stage.config.set_history(Some(history));
        stage.config.set_created(Some(now));
        stage.config.rootfs_mut().set_diff_ids(stage.layers.iter().map(|l| l.diff_id.clone()).collect());
        let image = self.engine.images().store_image(&stage.config, &stage.docker, &stage.layers, &[])?;
        self.engine.remember(key, &image).await?;
        self.say(format!(" ---> {}\n", image::short_id(&image.id)));
        stage.image = Some(image);
        Ok(())
    }

    /// A stage that is only `FROM scratch` has no image yet: it gets an empty one.
    async fn commit_if_needed(&self, stage: &mut Stage) -> Result<Image> {
        if stage.image.is_none() {
            let key = cache_key("scratch", "", "");
            if !self.use_cache(stage, &key).await? {
                self.commit(stage, None, String::new(), &key).await?;
            }
        }
        stage.image.clone().ok_or_else(|| Error::InvalidParameter("the stage has no image".into()))
    }

    async fn labels(&mut self, stage: &mut Stage) -> Result<()> {
        let shown: Vec<String> = self.request.labels.iter().map(|(k, v)| format!("{k}={v:?}")).collect();
        self.step += 1;
        self.say(format!("Step {}/{} : LABEL {}\n", self.step, self.steps, shown.join(" ")));
        let mut config = stage.run_config();
        let mut labels = config.labels().clone().unwrap_or_default();
        labels.extend(self.request.labels.clone());
        config.set_labels(Some(labels));
        stage.config.set_config(Some(config));
        let created_by = format!("/bin/sh -c #(nop)  LABEL {}", shown.join(" "));
        let key = cache_key(stage.parent_id(), &created_by, "");
        if self.use_cache(stage, &key).await? {
            return Ok(());
        }
        self.commit(stage, None, created_by, &key).await
    }

    async fn run_step(&mut self, stage: &mut Stage, command: &CommandLine) -> Result<()> {
        let argv = command.argv(&stage.shell());
        let env_names: Vec<String> =
            stage.env().iter().map(|v| v.split('=').next().unwrap_or_default().to_string()).collect();
        // Build args reach RUN as environment variables, below ENV; the declared ones are
        // written in the history (and so key the cache) as Docker's `|N A=1 ...` prefix.
        let declared: Vec<String> = stage
            .args
            .iter()
            .filter(|(name, _)| !env_names.contains(name))
            .map(|(name, value)| format!("{name}={value}"))
            .collect();
        let predefined: Vec<String> = PREDEFINED_ARGS
            .iter()
            .filter_map(|name| self.build_arg(name).map(|value| format!("{name}={value}")))
            .collect();
        let mut created_by = argv.join(" ");
        if !declared.is_empty() {
            created_by = format!("|{} {} {created_by}", declared.len(), declared.join(" "));
        }
        let key = cache_key(stage.parent_id(), &created_by, "");
        if self.use_cache(stage, &key).await? {
            return Ok(());
        }
        let Some(image) = stage.image.clone().filter(|image| !image.layers.is_empty()) else {
            return Err(Error::InvalidParameter(
                "RUN needs a base image with a filesystem (this stage is FROM scratch)".into(),
            ));
        };
        let config = stage.run_config();
        let request = CreateRequest {
            image: image.id.clone(),
            entrypoint: Some(Vec::new()),
            cmd: Some(argv.clone()),
            env: declared.into_iter().chain(predefined).collect(),
            working_dir: config.working_dir().clone(),
            user: config.user().clone(),
            ..CreateRequest::default()
        };
        let layer = self.run_container(request, &argv).await?;
        self.commit(stage, Some(layer), created_by, &key).await
    }

    /// Runs a RUN's container to its end, streaming its output, and stores what it changed as
    /// a layer. The container is removed whatever happens.
    async fn run_container(&self, request: CreateRequest, argv: &[String]) -> Result<Layer> {
        let (container, _) = self.engine.create(request).await?;
        let id = container.id.clone();
        self.say(format!(" ---> Running in {}\n", image::short_id(&id)));
        let result = self.run_and_pack(&id, argv).await;
        if let Err(error) = self.engine.remove(&id, true, true).await {
            tracing::warn!(container = %id, %error, "cannot remove a build container");
        }
        if result.is_ok() {
            self.say(format!(" ---> Removed intermediate container {}\n", image::short_id(&id)));
        }
        result
    }

    async fn run_and_pack(&self, id: &str, argv: &[String]) -> Result<Layer> {
        let mut output = self.engine.attach(id, false)?.output;
        self.engine.start(id).await?;
        loop {
            match output.recv().await {
                Ok(OutputEvent::Output(entry)) => self.say(String::from_utf8_lossy(&entry.bytes).into_owned()),
                Ok(OutputEvent::End) | Err(broadcast::error::RecvError::Closed) => break,
                Err(broadcast::error::RecvError::Lagged(_)) => {}
            }
        }
        let code = self.engine.wait(id, WaitCondition::NotRunning).await?;
        if code != 0 {
            return Err(Error::CommandFailed { command: argv.join(" "), code });
        }
        let upper_dir = self.engine.upper_dir(id);
        let mut file = tempfile::tempfile_in(&self.dir).map_err(Error::io("cannot create a file in", &self.dir))?;
        crate::layer::pack(&upper_dir, &mut file).map_err(Error::io("cannot make a layer of", &upper_dir))?;
        file.seek(SeekFrom::Start(0)).map_err(Error::io("cannot read back the layer of", &upper_dir))?;
        let (layer, _) = self.engine.images().store_layer(file)?;
        Ok(layer)
    }

    async fn copy_step(&mut self, stage: &mut Stage, copy: &Copy, instruction: &Instruction) -> Result<()> {
        let variables = stage.variables();
        let verb = if copy.add { "ADD" } else { "COPY" };
        let sources = dockerfile::expand_words(&copy.sources, &variables, self.escape).map_err(|m| {
            Error::InvalidParameter(format!("dockerfile parse error on line {}: {m}", instruction.line))
        })?;
        let destination = self.expand(&copy.destination, &variables, instruction)?;
        if let Some(url) = sources.iter().find(|s| s.starts_with("http://") || s.starts_with("https://")) {
            return Err(Error::InvalidParameter(format!(
                "{verb} failed: Stratus builds have no network to download {url} (copy it into the context instead)"
            )));
        }
        let from_root = match &copy.from {
            Some(from) => Some(self.mount_from(&self.expand(from, &variables, instruction)?)?),
            None => None,
        };
        let own_root = MountedRoot::new(self.engine, &stage.layers, &self.dir.join(format!("step-{}", self.step)))?;
        let config = stage.run_config();
        let workdir = config.working_dir().clone().unwrap_or_else(|| "/".into());
        let owner = match &copy.chown {
            Some(chown) => {
                let chown = self.expand(chown, &variables, instruction)?;
                let read = |file: &str| fs::read_to_string(own_root.path().join(file)).unwrap_or_default();
                Some(crate::spec::resolve_user(&chown, &read("etc/passwd"), &read("etc/group"))?)
            }
            None => None,
        };
        let no_ignore = context::Ignore::default();
        let (source_root, ignore) = match &from_root {
            Some(root) => (root.path(), &no_ignore),
            None => (self.context.clone(), &self.ignore),
        };
        let built =
            build_copy_layer(copy.add, &sources, &destination, &workdir, &source_root, ignore, &own_root.path(), owner);
        drop(own_root);
        drop(from_root);
        let (tar, checksum) = built.map_err(|message| Error::InvalidParameter(format!("{verb} failed: {message}")))?;
        let from_text = copy.from.as_ref().map(|f| format!("--from={f} ")).unwrap_or_default();
        let chown_text = copy.chown.as_ref().map(|c| format!("--chown={c} ")).unwrap_or_default();
        let created_by = format!("/bin/sh -c #(nop) {verb} {from_text}{chown_text}{checksum} in {destination} ");
        let key = cache_key(stage.parent_id(), &created_by, &checksum);
        if self.use_cache(stage, &key).await? {
            return Ok(());
        }
        let (layer, _) = self.engine.images().store_layer(tar.as_slice())?;
        self.commit(stage, Some(layer), created_by, &key).await
    }

    /// The root of `COPY --from`'s stage (by name or index) or image, mounted read-only.
    fn mount_from(&self, from: &str) -> Result<MountedRoot> {
        let by_index = from.parse::<usize>().ok().and_then(|i| self.stages.get(i));
        let by_name = self.stages.iter().find(|(name, _)| name.as_deref() == Some(&from.to_ascii_lowercase()));
        let image = match by_name.or(by_index) {
            Some((_, image)) => image.clone(),
            None => self.engine.images().find(from)?,
        };
        MountedRoot::new(self.engine, &image.layers, &self.dir.join(format!("from-{}", self.step)))
    }
}

/// An image's layers mounted (overlayfs, with a throwaway upper directory) for reading, and
/// unmounted when dropped.
struct MountedRoot {
    dir: PathBuf,
    mounted: bool,
}

impl MountedRoot {
    fn new(engine: &Engine, layers: &[Layer], dir: &Path) -> Result<MountedRoot> {
        let root = dir.join("root");
        for sub in ["root", "upper", "work"] {
            fs::create_dir_all(dir.join(sub)).map_err(Error::io("cannot create", dir.join(sub)))?;
        }
        let image = Image { layers: layers.to_vec(), ..placeholder_image() };
        let lower = engine.images().layer_dirs(&image)?;
        let mounted = !lower.is_empty();
        if mounted {
            mount_overlay(&lower, &dir.join("upper"), &dir.join("work"), &root)?;
        }
        Ok(MountedRoot { dir: dir.to_path_buf(), mounted })
    }

    fn path(&self) -> PathBuf {
        self.dir.join("root")
    }
}

impl Drop for MountedRoot {
    fn drop(&mut self) {
        if self.mounted {
            unmount(&self.path());
        }
        let _ = fs::remove_dir_all(&self.dir);
    }
}

fn placeholder_image() -> Image {
    Image {
        id: String::new(),
        manifest_digest: String::new(),
        tags: Vec::new(),
        created: None,
        architecture: String::new(),
        os: String::new(),
        config: Default::default(),
        layers: Vec::new(),
        history: Vec::new(),
    }
}

/// The layer of a COPY or ADD and its checksum; errors are Docker's messages after `COPY failed: `.
#[allow(clippy::too_many_arguments)] // One call site; a struct would only rename the arguments.
fn build_copy_layer(
    add: bool,
    sources: &[String],
    destination: &str,
    workdir: &str,
    source_root: &Path,
    ignore: &context::Ignore,
    image_root: &Path,
    owner: Option<(u32, u32)>,
) -> std::result::Result<(Vec<u8>, String), String> {
    let io = |e: std::io::Error| e.to_string();
    let mut matched: Vec<String> = Vec::new();
    for source in sources {
        let cleaned = context::clean(source);
        if context::is_pattern(&cleaned) {
            let found: Vec<String> = context::walk(source_root, ignore)
                .map_err(io)?
                .into_iter()
                .filter(|path| context::glob_match(&cleaned, path))
                .collect();
            if found.is_empty() {
                return Err("no source files were specified".into());
            }
            matched.extend(found);
        } else {
            let excluded = !cleaned.is_empty() && ignore.excludes(&cleaned);
            let path = context::resolve_in_root(source_root, &cleaned, true).map_err(io)?;
            if excluded || fs::symlink_metadata(&path).is_err() {
                return Err(format!(
                    "file not found in build context or excluded by .dockerignore: stat {source}: file does not exist"
                ));
            }
            matched.push(cleaned);
        }
    }
    let absolute =
        if destination.starts_with('/') { destination.to_string() } else { format!("{workdir}/{destination}") };
    let to_directory = destination.ends_with('/') || destination.ends_with("/.") || destination == ".";
    if matched.len() > 1 && !to_directory {
        return Err(
            "When using COPY with more than one source file, the destination must be a directory and end with a /"
                .into(),
        );
    }
    // The destination as it is in the image, through its symlinks.
    let resolved = context::resolve_in_root(image_root, &absolute, true).map_err(io)?;
    let target_base = context::clean(&resolved.strip_prefix(image_root).unwrap_or(Path::new("")).to_string_lossy());
    let destination_is_dir = to_directory || resolved.is_dir();
    let existing = |path: &str| fs::symlink_metadata(image_root.join(path)).ok();
    let mut layer = context::CopyLayer::new(owner);
    for source in &matched {
        let path = context::resolve_in_root(source_root, source, true).map_err(io)?;
        let meta = fs::symlink_metadata(&path).map_err(io)?;
        let name = Path::new(source).file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        let join = |base: &str, name: &str| if base.is_empty() { name.to_string() } else { format!("{base}/{name}") };
        if meta.is_dir() {
            layer.parents(&join(&target_base, "x"), &existing).map_err(io)?;
            layer.add(&path, &target_base, ignore, source).map_err(io)?;
        } else if let Some(archive) = add.then(|| open_archive(&path)).flatten() {
            layer.parents(&join(&target_base, "x"), &existing).map_err(io)?;
            layer.extract(archive, &target_base).map_err(io)?;
        } else {
            let target = if destination_is_dir { join(&target_base, &name) } else { target_base.clone() };
            layer.parents(&target, &existing).map_err(io)?;
            layer.add(&path, &target, ignore, source).map_err(io)?;
        }
    }
    layer.finish().map_err(io)
}

/// What ADD extracts: a tar archive, plain or gzip-compressed (any other file is copied as it
/// is). `None` when the file does not read as one.
fn open_archive(path: &Path) -> Option<Box<dyn Read>> {
    let open = || -> std::io::Result<Box<dyn Read>> {
        let mut file = fs::File::open(path)?;
        let mut magic = [0u8; 2];
        let gzip = file.read(&mut magic)? == 2 && magic == [0x1f, 0x8b];
        file.seek(SeekFrom::Start(0))?;
        Ok(if gzip { Box::new(flate2::read::MultiGzDecoder::new(file)) } else { Box::new(file) })
    };
    let readable = tar::Archive::new(open().ok()?).entries().ok()?.next()?.is_ok();
    if readable { open().ok() } else { None }
}

fn cache_key(parent: &str, created_by: &str, checksum: &str) -> String {
    image::sha256(format!("{parent}\n{created_by}\n{checksum}").as_bytes()).trim_start_matches("sha256:").to_string()
}

fn empty_configuration() -> Result<ImageConfiguration> {
    let oci = |e| Error::oci("scratch")(e);
    ImageConfigurationBuilder::default()
        .architecture(Arch::from(image::go_arch()))
        .os(Os::Linux)
        .config(ConfigBuilder::default().env(vec![image::DEFAULT_PATH.to_string()]).build().map_err(oci)?)
        .rootfs(RootFsBuilder::default().typ("layers").diff_ids(Vec::<String>::new()).build().map_err(oci)?)
        .build()
        .map_err(oci)
}

/// WORKDIR's path: relative ones are taken from the current one.
fn absolute_workdir(current: &str, dir: &str) -> String {
    let joined = if dir.starts_with('/') { dir.to_string() } else { format!("{current}/{dir}") };
    format!("/{}", context::clean(&joined))
}

/// A HEALTHCHECK as Docker writes it in the history (Go's `%v` of its config).
fn healthcheck_history(check: &HealthConfig) -> String {
    let test: Vec<String> = check.test.iter().map(|word| format!("{word:?}")).collect();
    let go = |duration| format!("{:?}", crate::health::go_duration(duration));
    format!(
        "&{{[{}] {} {} {} {} '\\x{:02x}'}}",
        test.join(" "),
        go(check.interval),
        go(check.timeout),
        go(check.start_period),
        go(check.start_interval),
        check.retries
    )
}

/// `["a","b"]`, as Docker writes exec forms in the history.
fn json_list(words: &[String]) -> String {
    let quoted: Vec<String> = words.iter().map(|w| format!("{w:?}")).collect();
    format!("[{}]", quoted.join(","))
}

fn validate_port(port: &str) -> Result<()> {
    let (number, protocol) = port.split_once('/').unwrap_or((port, "tcp"));
    let numbers_ok = number.split('-').all(|n| n.parse::<u16>().is_ok());
    if !numbers_ok || !matches!(protocol, "tcp" | "udp" | "sctp") {
        return Err(Error::InvalidParameter(format!("invalid containerPort: {port}")));
    }
    Ok(())
}
