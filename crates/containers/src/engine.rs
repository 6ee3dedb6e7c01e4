//! Containers: their records in the store, their files on disk, their lifecycle.
//!
//! A container's record (`containers/container/<id>`, postcard) holds what it runs and its state;
//! `containers/name/<name>` maps its name to its id, created in the same transaction under a
//! compare-absent so two creates cannot take one name. Its files are under
//! `<dir>/run/<id>/`: `upper` and `work` (the overlayfs writable layer), `rootfs` (where the
//! overlay is mounted while it runs), `config.json` (the OCI bundle) and `log` (its output).
//!
//! One lifecycle lock per container orders start, exit handling and removal, so an exit that
//! races with a start is recorded after the start, never overwritten by it.

use std::collections::{BTreeMap, HashMap};
use std::fs;
use std::io::{Read, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};
use store::{Compare, Keyspace, Op, Store, Txn};
use tokio::sync::{broadcast, mpsc, watch};

use crate::cgroup::Cgroup;
use crate::error::{Error, Result};
use crate::events::{Event, Events};
use crate::health::{Health, HealthConfig};
use crate::image::{self, ConfigJson, Image, ImageStore};
use crate::network::{self, NetworkConfig, NetworkRequest, Networks};
use crate::restart::{self, RestartPolicy};
use crate::runtime::{Exit, Runtime};
use crate::security::Security;
use crate::spec::{self, Limits, Process};
use crate::stats::{self, Stats};
use crate::stdio::{self, AsyncStdio};
use crate::userns::{Remap, UserNamespace};
use crate::volume::{self, Mount, MountKind, Volume, Volumes};

pub(crate) mod exec;
mod health;
mod networking;

/// Where Stratus puts each container's cgroup, under every hierarchy.
const CGROUP_PARENT: &str = "/stratus";
/// How long Stratus's own shutdown lets containers handle SIGTERM before SIGKILL.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(3);
/// `docker stop`'s wait before SIGKILL unless the container or the request says otherwise.
const STOP_TIMEOUT: Duration = Duration::from_secs(10);
/// Debian's static tini (package `tini`), which `--init` runs as PID 1 like Docker's docker-init.
const INIT_BINARY: &str = "/usr/bin/tini-static";
/// Where the init binary appears in the container, as in Docker.
const INIT_IN_CONTAINER: &str = "/sbin/docker-init";
/// Where removed containers' directories wait for their deletion (under the engine's directory).
const REMOVED: &str = "removed";

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum Status {
    #[default]
    Created,
    Running,
    /// Exited, and its restart policy starts it again after a delay.
    Restarting,
    Exited,
}

impl Status {
    /// Docker's word for it.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Created => "created",
            Status::Running => "running",
            Status::Restarting => "restarting",
            Status::Exited => "exited",
        }
    }
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct State {
    pub status: Status,
    /// The init process's pid on the host while it runs, else 0.
    pub pid: i32,
    pub started_at: Option<SystemTime>,
    pub finished_at: Option<SystemTime>,
    pub exit_code: i32,
    pub oom_killed: bool,
    /// Why the last start failed, or why the container stopped outside its own doing.
    pub error: String,
    /// How many times it has exited (what `wait?condition=next-exit` counts).
    pub exits: u64,
    /// How many times its restart policy started it again.
    pub restart_count: u32,
    /// Stopped or killed by a user since its last start (`unless-stopped` then leaves it down).
    pub manually_stopped: bool,
    /// Its health, when it has a check; in memory only (its probes start again with it).
    #[serde(skip)]
    pub health: Option<Health>,
    /// While it runs: its addresses and published ports, for a Stratus that adopts it.
    #[serde(default)]
    pub plugged: Option<network::Plugged>,
}

/// A container. serde is for its store record only (postcard).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Container {
    /// 64 hex digits.
    pub id: String,
    /// Without Docker's leading `/`.
    pub name: String,
    pub created: SystemTime,
    /// The image as the request named it.
    pub image: String,
    pub image_id: String,
    pub process: Process,
    /// The entrypoint and command as settled at create (their concatenation is `process.args`).
    pub entrypoint: Vec<String>,
    pub cmd: Vec<String>,
    pub labels: BTreeMap<String, String>,
    pub limits: Limits,
    pub auto_remove: bool,
    pub security: Security,
    /// Volumes resolved to names: anonymous ones were created with the container.
    pub mounts: Vec<Mount>,
    pub restart_policy: RestartPolicy,
    /// Run `docker-init` (tini) as PID 1, the command as its child.
    pub init: bool,
    /// What `docker stop` sends first, and how long it waits before SIGKILL.
    pub stop_signal: String,
    pub stop_timeout: Option<Duration>,
    pub network: NetworkConfig,
    pub state: State,
    pub stdio: StdioConfig,
    /// Its health check: the image's, merged with the request's (`["NONE"]` disables it).
    #[serde(default)]
    pub healthcheck: Option<HealthConfig>,
    /// The image's SHELL (for `CMD-SHELL` checks); empty means `/bin/sh -c`.
    #[serde(default)]
    pub shell: Vec<String>,
}

impl Container {
    /// What shell forms run in.
    pub fn shell(&self) -> Vec<String> {
        image::shell_or_default(&self.shell)
    }
}

/// How the container's own process is wired: a terminal (`-t`), a stdin (`-i`), and whether
/// that stdin closes when the first attached client ends it (Docker's StdinOnce).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StdioConfig {
    pub tty: bool,
    pub open_stdin: bool,
    pub stdin_once: bool,
}

/// What `docker create` asks for; `None` means "the image's".
#[derive(Clone, Debug, Default)]
pub struct CreateRequest {
    pub name: Option<String>,
    pub image: String,
    pub entrypoint: Option<Vec<String>>,
    pub cmd: Option<Vec<String>>,
    pub env: Vec<String>,
    pub working_dir: Option<String>,
    pub user: Option<String>,
    pub hostname: Option<String>,
    pub labels: BTreeMap<String, String>,
    pub limits: Limits,
    pub auto_remove: bool,
    pub security: Security,
    /// Binds, volumes and tmpfs, from `-v`, `--mount` and `--tmpfs`; the image's VOLUMEs are added.
    pub mounts: Vec<Mount>,
    pub restart_policy: RestartPolicy,
    pub init: bool,
    pub stop_signal: Option<String>,
    pub stop_timeout: Option<Duration>,
    pub tty: bool,
    pub open_stdin: bool,
    pub stdin_once: bool,
    pub network: NetworkRequest,
    /// `--health-*` or `--no-healthcheck`; the image's check fills what it leaves unset.
    pub healthcheck: Option<HealthConfig>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stream {
    Stdout,
    Stderr,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogEntry {
    pub stream: Stream,
    pub time: SystemTime,
    pub bytes: Vec<u8>,
}

/// What attach and `logs --follow` receive.
#[derive(Clone, Debug)]
pub enum OutputEvent {
    Output(LogEntry),
    /// Every process of the container closed its stdout and stderr: this run's output is over.
    End,
}

/// An attached client's view of a container: its output, where its input goes (dropping the
/// sender ends it), and whether it has a terminal (raw output) or not (Docker's frames).
pub struct Attach {
    pub output: broadcast::Receiver<OutputEvent>,
    pub input: Option<mpsc::Sender<Vec<u8>>>,
    pub tty: bool,
}

/// What `wait` waits for (Docker's `condition`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WaitCondition {
    NotRunning,
    NextExit,
    Removed,
}

/// Whether a start or stop changed anything (Docker answers 304 when not).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Changed {
    Yes,
    AlreadyDone,
}

#[derive(Clone, Copy, Debug, Default)]
struct Watched {
    status: Status,
    exit_code: i32,
    exits: u64,
    removed: bool,
}

struct Entry {
    container: Mutex<Container>,
    lifecycle: tokio::sync::Mutex<()>,
    watched: watch::Sender<Watched>,
    /// Held while appending to the log and broadcasting, so a follower that reads the log and
    /// subscribes under it sees every entry exactly once.
    output_lock: Mutex<()>,
    output: broadcast::Sender<OutputEvent>,
    /// The task copying this run's output to the log; exit handling waits for it.
    pump: Mutex<Option<tokio::task::JoinHandle<()>>>,
    /// The write end of this run's stdin (a pipe, or the terminal) while it is open.
    stdin: watch::Sender<Option<Arc<AsyncStdio>>>,
    /// This run's terminal, for resize.
    terminal: Mutex<Option<Arc<AsyncStdio>>>,
    /// The last restart policy delay (zero before the first).
    restart_delay: Mutex<Duration>,
    /// The task probing this run's health, if it has a check.
    health_checks: Mutex<Option<tokio::task::AbortHandle>>,
}

impl Entry {
    fn new(container: Container) -> Arc<Entry> {
        let watched = watch::Sender::new(Watched {
            status: container.state.status,
            exit_code: container.state.exit_code,
            exits: container.state.exits,
            removed: false,
        });
        Arc::new(Entry {
            container: Mutex::new(container),
            lifecycle: tokio::sync::Mutex::new(()),
            watched,
            output_lock: Mutex::new(()),
            output: broadcast::channel(1024).0,
            pump: Mutex::new(None),
            stdin: watch::Sender::new(None),
            terminal: Mutex::new(None),
            restart_delay: Mutex::new(Duration::ZERO),
            health_checks: Mutex::new(None),
        })
    }

    fn snapshot(&self) -> Container {
        self.container.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    fn publish(&self) {
        let c = self.snapshot();
        self.watched.send_modify(|w| {
            w.status = c.state.status;
            w.exit_code = c.state.exit_code;
            w.exits = c.state.exits;
        });
    }
}

pub struct Options {
    /// `<data-dir>/containers`.
    pub dir: PathBuf,
    /// The `stratus` binary, whose `runtime` subcommand is the runtime process; `None` when
    /// containers cannot run (not root): images still work.
    pub runtime: Option<PathBuf>,
    /// `--userns-remap`: containers run in a user namespace whose root is this range's start.
    pub userns_remap: Option<Remap>,
    /// This instance's default bridge.
    pub network: network::Options,
    /// Reads and writes Docker's image config fields that oci-spec lacks.
    pub config_json: Arc<dyn ConfigJson>,
    /// `--live-restore`: containers keep running while Stratus is down, and the next Stratus
    /// adopts them.
    pub live_restore: bool,
}

pub struct Engine {
    /// Itself, for the tasks it spawns.
    this: Weak<Engine>,
    pub(crate) store: Arc<dyn Store>,
    pub(crate) keys: Keyspace,
    images: ImageStore,
    volumes: Volumes,
    events: Arc<Events>,
    dir: PathBuf,
    runtime: Option<Arc<Runtime>>,
    userns: Option<UserNamespace>,
    networks: Arc<Networks>,
    seccomp: crate::seccomp::Programs,
    containers: Mutex<HashMap<String, Arc<Entry>>>,
    execs: Mutex<HashMap<String, Arc<exec::ExecEntry>>>,
    /// Set by [`Engine::shut_down`]: exits are then not restarted, nor stops counted as a user's.
    shutting_down: std::sync::atomic::AtomicBool,
    live_restore: bool,
}

impl Engine {
    /// Opens the image store, loads the containers recorded in the store and starts the runtime
    /// processes. Containers recorded as running are adopted from the runtime an earlier Stratus
    /// left running them (`--live-restore`); the others belonged to a runtime that has ended (and
    /// killed them): they are recorded as exited with code 255, as Docker does after a daemon crash.
    pub async fn open(store: Arc<dyn Store>, options: Options) -> Result<Arc<Engine>> {
        let keys = Keyspace::new("containers");
        crate::record::upgrade::<Container>(store.as_ref(), &keys.key(b"container/")).await?;
        crate::record::upgrade::<crate::network::Network>(store.as_ref(), &keys.key(b"network/")).await?;
        crate::record::upgrade::<crate::volume::Volume>(store.as_ref(), &keys.key(b"volume/")).await?;
        let images = ImageStore::open(&options.dir)?.with_config_json(options.config_json);
        images.collect_garbage()?;
        crate::build::clear_leftovers(&options.dir);
        let run_dir = options.dir.join("run");
        fs::create_dir_all(&run_dir).map_err(Error::io("cannot create", &run_dir))?;
        if options.runtime.is_some() {
            crate::cgroup::count_block_io(&options.dir, CGROUP_PARENT);
        }
        let removed = options.dir.join(REMOVED);
        if let Err(error) = fs::remove_dir_all(&removed)
            && error.kind() != std::io::ErrorKind::NotFound
        {
            tracing::warn!(path = %removed.display(), %error, "cannot remove removed containers' files");
        }
        fs::create_dir_all(&removed).map_err(Error::io("cannot create", &removed))?;
        let (runtime, exits) = match &options.runtime {
            Some(program) => {
                let (runtime, exits) =
                    Runtime::spawn(program, &options.dir.join("runtime"), options.live_restore).await?;
                (Some(Arc::new(runtime)), Some(exits))
            }
            None => (None, None),
        };
        let userns = match (&runtime, options.userns_remap) {
            (Some(_), Some(remap)) => Some(UserNamespace::new(remap, &run_dir)?),
            _ => None,
        };
        let events = Arc::new(Events::default());
        let program = options.runtime.as_deref();
        let networks = Networks::open(store.clone(), options.network, program, options.live_restore).await?;
        let volumes = Volumes::open(store.clone(), &options.dir, events.clone())?;
        let engine = Arc::new_cyclic(|this| Engine {
            this: this.clone(),
            userns,
            volumes,
            events,
            store,
            keys,
            images,
            dir: options.dir,
            runtime,
            networks,
            seccomp: Default::default(),
            containers: Mutex::new(HashMap::new()),
            execs: Mutex::new(HashMap::new()),
            shutting_down: std::sync::atomic::AtomicBool::new(false),
            live_restore: options.live_restore,
        });
        let prefix = engine.keys.key(b"container/");
        let records = engine.store.range(&prefix, &store::prefix_end(&prefix), None).await?;
        let mut containers = Vec::new();
        let mut adopted = Vec::new();
        for kv in records {
            let id = String::from_utf8_lossy(kv.key.get(prefix.len()..).unwrap_or_default()).into_owned();
            let mut container: Container =
                crate::record::decode(&kv.value).map_err(|e| Error::Record(id.clone(), e))?;
            if container.state.status == Status::Running {
                let entry = Entry::new(container.clone());
                match engine.adopt(&entry).await {
                    Ok(()) => {
                        engine.lock_map().insert(container.id.clone(), entry);
                        adopted.push(container.id);
                        continue;
                    }
                    Err(error) => {
                        tracing::info!(container = %container.id, %error, "lost with the runtime that ran it")
                    }
                }
                unmount(&engine.rootfs(&container.id));
                container.state = State {
                    status: Status::Exited,
                    exit_code: 255,
                    finished_at: Some(SystemTime::now()),
                    error: "Stratus stopped while the container ran".into(),
                    exits: container.state.exits + 1,
                    plugged: None,
                    ..container.state
                };
                engine.persist(&container).await?;
            }
            if container.state.status == Status::Restarting {
                container.state.status = Status::Exited;
            }
            containers.push(container);
        }
        if let Some(runtime) = &engine.runtime {
            runtime.retain(&adopted).await?;
        }
        let mut leftover = Vec::new();
        let mut restart = Vec::new();
        for container in containers {
            if container.state.started_at.is_some()
                && container.restart_policy.restarts_with_stratus(container.state.manually_stopped)
            {
                restart.push(container.id.clone());
            } else if container.auto_remove && container.state.status == Status::Exited {
                leftover.push(container.id.clone());
            }
            engine.lock_map().insert(container.id.clone(), Entry::new(container));
        }
        for id in leftover {
            engine.remove(&id, true, true).await?;
        }
        if let Some(exits) = exits {
            tokio::spawn(handle_exits(Arc::downgrade(&engine), exits));
        }
        for id in restart {
            if let Err(error) = engine.start(&id).await {
                tracing::warn!(container = %id, %error, "cannot start again as its restart policy asks");
            }
        }
        Ok(engine)
    }

    pub fn images(&self) -> &ImageStore {
        &self.images
    }

    /// The `--userns-remap` range containers run in, if any.
    pub fn userns_remap(&self) -> Option<Remap> {
        self.userns.as_ref().map(|ns| ns.remap)
    }

    pub fn volumes(&self) -> &Volumes {
        &self.volumes
    }

    pub fn events(&self) -> &Events {
        &self.events
    }

    /// A container event with Docker's attributes: its labels, name and image, and `extra`.
    fn container_event(&self, container: &Container, action: &str, extra: &[(&str, String)]) {
        let mut attributes = container.labels.clone();
        attributes.insert("name".into(), container.name.clone());
        attributes.insert("image".into(), container.image.clone());
        attributes.extend(extra.iter().map(|(k, v)| (k.to_string(), v.clone())));
        let (kind, action, id) = ("container", action.to_string(), container.id.clone());
        self.events.publish(Event { time: SystemTime::now(), kind, action, id, attributes });
    }

    fn shutting_down(&self) -> bool {
        self.shutting_down.load(std::sync::atomic::Ordering::SeqCst)
    }

    pub fn networks(&self) -> &Networks {
        &self.networks
    }

    /// Whether containers outlive Stratus (`--live-restore`).
    pub fn live_restore(&self) -> bool {
        self.live_restore
    }

    /// Whether this engine can run containers (it can store and list them either way).
    pub fn can_run(&self) -> bool {
        self.runtime.is_some()
    }

    /// `<data-dir>/containers`.
    pub(crate) fn dir(&self) -> &Path {
        &self.dir
    }

    fn lock_map(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<Entry>>> {
        self.containers.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Moves a removed container's directory aside and deletes it in the background: freeing its
    /// blocks can wait for the disk (`/` here is mounted with `discard`), and nothing Docker shows
    /// depends on it. What a crash leaves aside goes when the engine opens.
    fn discard_files(&self, id: &str) {
        let aside = self.dir.join(REMOVED).join(id);
        match fs::rename(self.container_dir(id), &aside) {
            Ok(()) => drop(tokio::task::spawn_blocking(move || {
                if let Err(error) = fs::remove_dir_all(&aside) {
                    tracing::warn!(path = %aside.display(), %error, "cannot remove a container's files");
                }
            })),
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
            Err(error) => tracing::warn!(container = %id, %error, "cannot remove its files"),
        }
    }

    fn container_dir(&self, id: &str) -> PathBuf {
        self.dir.join("run").join(id)
    }

    fn rootfs(&self, id: &str) -> PathBuf {
        self.container_dir(id).join("rootfs")
    }

    /// Where the container's output is kept.
    pub fn log_path(&self, id: &str) -> PathBuf {
        self.container_dir(id).join("log")
    }

    /// A file Stratus keeps for the container (`hosts`, `resolv.conf`, `hostname`).
    pub fn container_file(&self, id: &str, name: &str) -> PathBuf {
        self.container_dir(id).join(name)
    }

    /// The container's writable layer.
    pub fn upper_dir(&self, id: &str) -> PathBuf {
        self.container_dir(id).join("upper")
    }

    fn record_key(&self, id: &str) -> Vec<u8> {
        self.keys.key(format!("container/{id}").as_bytes())
    }

    fn name_key(&self, name: &str) -> Vec<u8> {
        self.keys.key(format!("name/{name}").as_bytes())
    }

    async fn persist(&self, container: &Container) -> Result<()> {
        let bytes = crate::record::encode(container).map_err(|e| Error::Record(container.id.clone(), e))?;
        self.store.put(&self.record_key(&container.id), &bytes).await?;
        Ok(())
    }

    /// By full id, by name (with or without Docker's leading `/`), or by a unique id prefix.
    fn entry(&self, reference: &str) -> Result<Arc<Entry>> {
        let map = self.lock_map();
        if let Some(entry) = map.get(reference) {
            return Ok(entry.clone());
        }
        let name = reference.strip_prefix('/').unwrap_or(reference);
        if let Some(entry) = map.values().find(|e| e.container.lock().unwrap_or_else(|p| p.into_inner()).name == name) {
            return Ok(entry.clone());
        }
        let mut prefixed = map.iter().filter(|(id, _)| !reference.is_empty() && id.starts_with(reference));
        match (prefixed.next(), prefixed.next()) {
            (Some((_, entry)), None) => Ok(entry.clone()),
            _ => Err(Error::NoSuchContainer(reference.to_string())),
        }
    }

    pub fn inspect(&self, reference: &str) -> Result<Container> {
        Ok(self.entry(reference)?.snapshot())
    }

    /// Newest first; `all` includes containers that are not running.
    pub fn list(&self, all: bool) -> Vec<Container> {
        let mut containers: Vec<Container> = self
            .lock_map()
            .values()
            .map(|e| e.snapshot())
            .filter(|c| all || c.state.status == Status::Running)
            .collect();
        containers.sort_by(|a, b| b.created.cmp(&a.created).then_with(|| a.id.cmp(&b.id)));
        containers
    }

    /// A container using the image, if any (images in use cannot be deleted).
    pub fn container_using(&self, image_id: &str) -> Option<String> {
        self.lock_map().values().map(|e| e.snapshot()).find(|c| c.image_id == image_id).map(|c| c.id)
    }

    /// Removes an image reference unless a container needs the image.
    pub fn remove_image(&self, name: &str, force: bool) -> Result<Vec<image::Removed>> {
        self.images.remove(name, force, &|image_id| self.container_using(image_id))
    }

    /// Creates a container; returns it with dockerd's warnings (limits the host cannot apply).
    pub async fn create(&self, mut request: CreateRequest) -> Result<(Container, Vec<String>)> {
        if self.runtime.is_none() {
            return Err(Error::NotRoot);
        }
        let warnings = crate::cgroup_support::check(&mut request.limits)?;
        let image = self.images.find(&request.image).map_err(|error| match error {
            Error::NoSuchImage(_) => match image::Reference::parse(&request.image) {
                Ok(reference) => Error::NoSuchImage(reference.to_string()),
                Err(_) => Error::NoSuchImage(request.image.clone()),
            },
            other => other,
        })?;
        let id = new_id();
        let name = match &request.name {
            Some(name) => {
                let name = name.strip_prefix('/').unwrap_or(name);
                if !valid_name(name) {
                    return Err(Error::InvalidParameter(format!(
                        "Invalid container name ({name}), only [a-zA-Z0-9][a-zA-Z0-9_.-] are allowed"
                    )));
                }
                name.to_string()
            }
            None => generated_name(&id),
        };
        if self.userns.is_some() && request.security.privileged && !request.security.host_userns {
            return Err(Error::InvalidParameter(
                "privileged mode is incompatible with user namespaces.  You must run the container in the host namespace when running privileged mode".into(),
            ));
        }
        let mut container = settle(&request, &image, id, name)?;
        container.network = self.network_config(&request.network, &image)?;
        if container.init {
            fs::metadata(INIT_BINARY).map_err(Error::io("--init needs Debian's tini package", INIT_BINARY))?;
        }
        container.mounts = self.create_volumes(volume::with_image_volumes(&request.mounts, &image)?).await?;

        let dir = self.container_dir(&container.id);
        for sub in ["upper", "work", "rootfs"] {
            if let Err(error) = fs::create_dir_all(dir.join(sub)) {
                self.remove_anonymous_volumes(&container).await;
                return Err(Error::io("cannot create", dir.join(sub))(error));
            }
        }
        let bytes = crate::record::encode(&container).map_err(|e| Error::Record(container.id.clone(), e))?;
        let name_key = self.name_key(&container.name);
        let txn = Txn {
            compares: vec![Compare::absent(name_key.clone())],
            success: vec![
                Op::put(self.record_key(&container.id), bytes),
                Op::put(name_key.clone(), container.id.as_bytes()),
            ],
            failure: Vec::new(),
        };
        let committed = self.store.txn(txn).await;
        match committed {
            Ok(response) if response.succeeded => {}
            other => {
                let _ = fs::remove_dir_all(&dir);
                self.remove_anonymous_volumes(&container).await;
                other?;
                let holder = self.store.get(&name_key).await?.map(|kv| String::from_utf8_lossy(&kv.value).into_owned());
                return Err(Error::NameInUse { name: container.name, id: holder.unwrap_or_default() });
            }
        }
        self.lock_map().insert(container.id.clone(), Entry::new(container.clone()));
        self.container_event(&container, "create", &[]);
        tracing::info!(container = %container.id, name = %container.name, image = %container.image, "created");
        Ok((container, warnings))
    }

    /// Creates the volumes `mounts` name (and an anonymous one for each without a name); on an
    /// error removes the anonymous ones it made.
    async fn create_volumes(&self, mut mounts: Vec<Mount>) -> Result<Vec<Mount>> {
        let mut made = Vec::new();
        for mount in &mut mounts {
            let MountKind::Volume { name, .. } = &mut mount.kind else { continue };
            let anonymous = name.is_empty();
            let labels =
                if anonymous { [(volume::ANONYMOUS_LABEL.to_string(), String::new())].into() } else { BTreeMap::new() };
            match self.volumes.create(Some(name.as_str()).filter(|_| !anonymous), labels).await {
                Ok(volume) if anonymous => {
                    *name = volume.name.clone();
                    made.push(volume.name);
                }
                Ok(_) => {}
                Err(error) => {
                    for name in made {
                        let _ = self.volumes.delete(&name).await;
                    }
                    return Err(error);
                }
            }
        }
        Ok(mounts)
    }

    /// Removes the container's anonymous volumes that no other container uses (`docker rm -v`,
    /// `--rm`, a create that failed).
    async fn remove_anonymous_volumes(&self, container: &Container) {
        for mount in &container.mounts {
            let MountKind::Volume { name, .. } = &mount.kind else { continue };
            let anonymous = self.volumes.get(name).await.is_ok_and(|v| v.anonymous());
            if anonymous
                && self.volume_users(name).iter().all(|id| *id == container.id)
                && let Err(error) = self.volumes.delete(name).await
            {
                tracing::warn!(volume = %name, %error, "cannot remove an anonymous volume");
            }
        }
    }

    /// The containers whose mounts name the volume.
    pub fn volume_users(&self, name: &str) -> Vec<String> {
        let uses =
            |c: &Container| c.mounts.iter().any(|m| matches!(&m.kind, MountKind::Volume { name: n, .. } if n == name));
        self.lock_map().values().map(|e| e.snapshot()).filter(uses).map(|c| c.id).collect()
    }

    /// `docker volume rm`: refused while a container uses it; `force` ignores a missing volume.
    pub async fn remove_volume(&self, name: &str, force: bool) -> Result<()> {
        let users = self.volume_users(name);
        if !users.is_empty() {
            return Err(Error::Conflict(format!("remove {name}: volume is in use - [{}]", users.join(", "))));
        }
        match self.volumes.delete(name).await {
            Err(Error::NoSuchVolume(_)) if force => Ok(()),
            other => other.map(|_| ()),
        }
    }

    /// `docker volume prune`: removes the volumes no container uses that `wanted` picks; returns
    /// their names and the bytes they held.
    pub async fn prune_volumes(&self, wanted: impl Fn(&Volume) -> bool) -> Result<(Vec<String>, u64)> {
        let (mut names, mut reclaimed) = (Vec::new(), 0);
        for volume in self.volumes.list().await? {
            if wanted(&volume) && self.volume_users(&volume.name).is_empty() {
                reclaimed += self.volumes.delete(&volume.name).await?;
                names.push(volume.name);
            }
        }
        Ok((names, reclaimed))
    }

    pub async fn start(&self, reference: &str) -> Result<Changed> {
        self.start_entry(self.entry(reference)?, false).await
    }

    /// Starts the container again after its restart policy's delay, unless it was stopped,
    /// started or removed meanwhile.
    async fn restart_after(&self, id: &str, delay: Duration) {
        tokio::time::sleep(delay).await;
        let Ok(entry) = self.entry(id) else { return };
        if self.shutting_down() {
            return;
        }
        if let Err(error) = self.start_entry(entry, true).await {
            tracing::warn!(container = %id, %error, "cannot restart");
        }
    }

    /// A user's start, or (`by_policy`) the restart policy's, which only starts a container
    /// still waiting to restart.
    async fn start_entry(&self, entry: Arc<Entry>, by_policy: bool) -> Result<Changed> {
        let Some(runtime) = &self.runtime else { return Err(Error::NotRoot) };
        let _lifecycle = entry.lifecycle.lock().await;
        let container = entry.snapshot();
        if container.state.status == Status::Running || (by_policy && container.state.status != Status::Restarting) {
            return Ok(Changed::AlreadyDone);
        }
        match self.launch(runtime, &entry, &container).await {
            Ok(pid) => {
                let running = {
                    let mut c = entry.container.lock().unwrap_or_else(|p| p.into_inner());
                    c.state = State {
                        status: Status::Running,
                        pid,
                        started_at: Some(SystemTime::now()),
                        finished_at: None,
                        exit_code: 0,
                        oom_killed: false,
                        error: String::new(),
                        manually_stopped: false,
                        plugged: self.networks.plugged(&container.id),
                        ..c.state.clone()
                    };
                    c.clone()
                };
                self.persist(&running).await?;
                entry.publish();
                self.container_event(&running, "start", &[]);
                self.start_health_checks(&entry);
                tracing::info!(container = %container.id, pid, "started");
                Ok(Changed::Yes)
            }
            Err(error) => {
                let _ = runtime.delete(&container.id).await;
                self.networks.unplug(&container.id);
                unmount(&self.rootfs(&container.id));
                let failed = {
                    let mut c = entry.container.lock().unwrap_or_else(|p| p.into_inner());
                    c.state.error = error.to_string();
                    c.state.exit_code = 128;
                    if c.state.status == Status::Restarting {
                        c.state.status = Status::Exited;
                    }
                    c.clone()
                };
                self.persist(&failed).await?;
                drop(_lifecycle);
                // dockerd removes an auto-remove container whose start failed; `docker run --rm`
                // waits for that.
                if failed.auto_remove {
                    self.remove(&failed.id, true, true).await?;
                }
                Err(error)
            }
        }
    }

    /// Mounts the root filesystem, writes the bundle, and has the runtime create and start the
    /// container with its output going to the log. Returns the init's pid.
    async fn launch(&self, runtime: &Runtime, entry: &Arc<Entry>, container: &Container) -> Result<i32> {
        let image = self.images.find(&container.image_id)?;
        let layers = self.images.layer_dirs(&image)?;
        let dir = self.container_dir(&container.id);
        let rootfs = dir.join("rootfs");
        let (upper, work) = (dir.join("upper"), dir.join("work"));
        let userns = self.userns.as_ref().filter(|_| !container.security.host_userns);
        match userns {
            Some(ns) => {
                ns.own(&upper)?;
                ns.with_idmapped(&layers, &dir.join("lower"), |lower| mount_overlay(lower, &upper, &work, &rootfs))?;
            }
            None => mount_overlay(&layers, &upper, &work, &rootfs)?,
        }
        let cwd = rootfs.join(container.process.cwd.trim_start_matches('/'));
        fs::create_dir_all(&cwd).map_err(Error::io("cannot create the working directory", &cwd))?;
        let read = |file: &str| fs::read_to_string(rootfs.join(file)).unwrap_or_default();
        let (uid, gid) = spec::resolve_user(&container.process.user, &read("etc/passwd"), &read("etc/group"))?;
        let cgroup = format!("{CGROUP_PARENT}/{}", container.id);
        let mut process = container.process.clone();
        let mut mounts = self.prepare_mounts(container, &rootfs)?;
        if container.init {
            process.args.splice(0..0, [INIT_IN_CONTAINER.to_string(), "--".to_string()]);
            mounts.push(volume::bind_read_only(Path::new(INIT_BINARY), INIT_IN_CONTAINER)?);
        }
        let mut spec = spec::build(&process, &container.limits, &rootfs, &cgroup, uid, gid)?;
        volume::add_to_spec(&mut spec, mounts);
        if container.stdio.tty {
            spec::use_terminal(&mut spec);
        }
        container.security.apply(&mut spec)?;
        if let Some(ns) = userns {
            ns.apply(&mut spec)?;
        }
        let process = &container.process;
        let network = self.networks.prepare(
            &container.id,
            &container.name,
            &process.hostname,
            &container.network,
            &dir,
            userns.is_none(),
        )?;
        network.apply(&mut spec)?;
        let seccomp = self.seccomp.compile(&spec)?;
        // The whole spec, seccomp profile included, as any OCI runtime would take it (the
        // benchmark gives it to runc and crun); the runtime loads the compiled filter instead.
        let config = dir.join("config.json");
        spec.save(&config).map_err(Error::oci(&config))?;

        let null = || fs::File::open("/dev/null").map(OwnedFd::from).map_err(Error::io("cannot open", "/dev/null"));
        let (pid, output, stdin) = if container.stdio.tty {
            // The init makes the terminal in its own devpts; the runtime hands over its master side.
            let stdio = [null()?, null()?, null()?];
            let (pid, terminal) =
                runtime.create(&container.id, &dir, stdio.each_ref().map(AsFd::as_fd), seccomp).await?;
            let terminal = terminal.ok_or_else(|| Error::Runtime("no terminal came".into()))?;
            (pid, vec![terminal], None)
        } else {
            let (stdout_read, stdout_write) = stdio::pipe()?;
            let (stderr_read, stderr_write) = stdio::pipe()?;
            let (stdin_read, stdin_write) = match container.stdio.open_stdin {
                true => stdio::pipe().map(|(read, write)| (read, Some(write)))?,
                false => (null()?, None),
            };
            let stdio = [stdin_read.as_fd(), stdout_write.as_fd(), stderr_write.as_fd()];
            let (pid, _) = runtime.create(&container.id, &dir, stdio, seccomp).await?;
            // Only the container may hold the write ends, so that its exit ends the output.
            drop((stdout_write, stderr_write, stdin_read));
            (pid, vec![stdout_read, stderr_read], stdin_write)
        };
        // The container holds its network namespace now.
        drop(network);
        runtime.hold(&container.id, &output.iter().map(AsFd::as_fd).collect::<Vec<_>>()).await?;
        self.pump(entry, container, output, stdin)?;
        self.networks.plug(&container.id, pid, &container.network).await?;
        runtime.start(&container.id).await?;
        Ok(pid)
    }

    /// Starts copying a run's output to its log and to attached clients: from its terminal
    /// (`output` is its master side, also its input when it has stdin) or from its stdout and
    /// stderr pipes (`stdin` then the write end of its stdin pipe, if any).
    fn pump(
        &self,
        entry: &Arc<Entry>,
        container: &Container,
        output: Vec<OwnedFd>,
        stdin: Option<OwnedFd>,
    ) -> Result<()> {
        let path = self.log_path(&container.id);
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(Error::io("cannot open the log", &path))?;
        let mut output = output.into_iter().map(|fd| AsyncStdio::new(fd).map(Arc::new));
        let stdout = output.next().ok_or_else(|| Error::Runtime("no output to read".into()))??;
        let stderr = output.next().transpose()?;
        let stdin = match container.stdio.tty {
            true => {
                *entry.terminal.lock().unwrap_or_else(|p| p.into_inner()) = Some(stdout.clone());
                container.stdio.open_stdin.then(|| stdout.clone())
            }
            false => stdin.map(|w| AsyncStdio::new(w).map(Arc::new)).transpose()?,
        };
        entry.stdin.send_replace(stdin);
        let pump = tokio::spawn(pump_output(entry.clone(), stdout, stderr, log));
        *entry.pump.lock().unwrap_or_else(|p| p.into_inner()) = Some(pump);
        Ok(())
    }

    /// Takes over a container recorded as running from the runtime an earlier Stratus left
    /// running it (`--live-restore`): its output, its networking and its health checks again.
    async fn adopt(&self, entry: &Arc<Entry>) -> Result<()> {
        let Some(runtime) = &self.runtime else { return Err(Error::NotRoot) };
        let container = entry.snapshot();
        let (pid, output) = runtime.adopt(&container.id).await?;
        if output.len() != if container.stdio.tty { 1 } else { 2 } {
            return Err(Error::Runtime("the runtime holds none of its output".into()));
        }
        // A stdin pipe closed with the Stratus that wrote to it; a terminal is the output.
        self.pump(entry, &container, output, None)?;
        // Exited meanwhile: its exit comes next, once its output has drained.
        let Some(pid) = pid else { return Ok(()) };
        let plugged = container.state.plugged.clone().unwrap_or_default();
        if let Err(error) = self.networks.adopt(&container.id, &container.name, pid, &container.network, &plugged).await
        {
            tracing::warn!(container = %container.id, %error, "cannot plug its networking in again");
        }
        self.start_health_checks(entry);
        tracing::info!(container = %container.id, pid, "adopted from a runtime left running");
        Ok(())
    }

    /// The container's mounts for its OCI spec: volumes seeded from the image (an empty one, on
    /// first use), missing `-v` bind sources made, as Docker does.
    fn prepare_mounts(&self, container: &Container, rootfs: &Path) -> Result<Vec<oci_spec::runtime::Mount>> {
        let mut mounts = Vec::with_capacity(container.mounts.len());
        for mount in &container.mounts {
            let source = match &mount.kind {
                MountKind::Volume { name, no_copy } => {
                    let path = self.volumes.path(name);
                    if !no_copy {
                        volume::seed(&rootfs.join(mount.destination.trim_start_matches('/')), &path)?;
                    }
                    Some(path)
                }
                MountKind::Bind { source, create_missing } => {
                    if *create_missing && !source.exists() {
                        fs::create_dir_all(source).map_err(Error::io("cannot create the bind source", source))?;
                    }
                    if self.runtime.is_some() {
                        crate::cgroup::count_block_io(source, CGROUP_PARENT);
                    }
                    Some(source.clone())
                }
                MountKind::Tmpfs { .. } => None,
            };
            mounts.push(volume::oci_mount(mount, source.as_deref())?);
        }
        Ok(mounts)
    }

    /// Records an exit the runtime reported: waits for the output to drain, reads the cgroup's
    /// OOM kill count, has the runtime delete the container, unmounts its root. Returns the delay
    /// after which its restart policy starts it again, if it does.
    async fn on_exit(&self, exit: Exit) -> Result<Option<Duration>> {
        if self.exec_exited(&exit.id, exit.status) {
            return Ok(None);
        }
        let Ok(entry) = self.entry(&exit.id) else { return Ok(None) };
        self.stop_health_checks(&entry);
        let _lifecycle = entry.lifecycle.lock().await;
        let pump = entry.pump.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(pump) = pump {
            let _ = pump.await;
        }
        entry.stdin.send_replace(None);
        entry.terminal.lock().unwrap_or_else(|p| p.into_inner()).take();
        let oom_killed = oom_kills(&exit.id) > 0;
        if let Some(runtime) = &self.runtime
            && let Err(error) = runtime.delete(&exit.id).await
        {
            tracing::warn!(container = %exit.id, %error, "cannot delete from the runtime");
        }
        self.networks.unplug(&exit.id);
        unmount(&self.rootfs(&exit.id));
        let exited = {
            let mut c = entry.container.lock().unwrap_or_else(|p| p.into_inner());
            let policy = c.restart_policy;
            let state = &mut c.state;
            let restart = !self.shutting_down()
                && policy.should_restart(exit.status, state.restart_count, state.manually_stopped);
            state.status = if restart { Status::Restarting } else { Status::Exited };
            state.restart_count += u32::from(restart);
            state.pid = 0;
            state.plugged = None;
            state.exit_code = exit.status;
            state.oom_killed = oom_killed;
            state.finished_at = Some(SystemTime::now());
            state.exits += 1;
            c.clone()
        };
        self.persist(&exited).await?;
        entry.publish();
        if oom_killed {
            self.container_event(&exited, "oom", &[]);
        }
        self.container_event(&exited, "die", &[("exitCode", exit.status.to_string())]);
        tracing::info!(container = %exit.id, status = exit.status, oom_killed, "exited");
        drop(_lifecycle);
        if exited.state.status == Status::Restarting {
            let ran_for = match (exited.state.started_at, exited.state.finished_at) {
                (Some(started), Some(finished)) => finished.duration_since(started).unwrap_or_default(),
                _ => Duration::ZERO,
            };
            let mut delay = entry.restart_delay.lock().unwrap_or_else(|p| p.into_inner());
            *delay = restart::next_delay(*delay, ran_for);
            return Ok(Some(*delay));
        }
        if exited.auto_remove {
            self.remove(&exit.id, false, true).await?;
        }
        Ok(None)
    }

    /// Waits for `condition`; returns the exit code.
    pub async fn wait(&self, reference: &str, condition: WaitCondition) -> Result<i32> {
        let entry = self.entry(reference)?;
        let mut watched = entry.watched.subscribe();
        let exits_before = watched.borrow().exits;
        let done = watched
            .wait_for(|w| match condition {
                WaitCondition::NotRunning => w.status != Status::Running,
                WaitCondition::NextExit => w.exits > exits_before || w.removed,
                WaitCondition::Removed => w.removed,
            })
            .await;
        match done {
            Ok(w) => Ok(w.exit_code),
            Err(_) => Ok(entry.watched.borrow().exit_code),
        }
    }

    /// Sends `signal` (a name such as `SIGTERM`/`TERM` or a number) to the container's init.
    pub async fn kill(&self, reference: &str, signal: &str) -> Result<()> {
        let entry = self.entry(reference)?;
        let number = signal_number(signal)?;
        let container = entry.snapshot();
        if container.state.status != Status::Running {
            return Err(Error::Conflict(format!(
                "Cannot kill container: {reference}: Container {} is not running",
                container.id
            )));
        }
        let runtime = self.runtime.as_ref().ok_or(Error::NotRoot)?;
        self.note_user_stop(&entry);
        runtime.kill(&container.id, number).await?;
        self.container_event(&container, "kill", &[("signal", number.to_string())]);
        Ok(())
    }

    /// A user (not Stratus's shutdown) stopped or killed it: its restart policy lets it be.
    fn note_user_stop(&self, entry: &Entry) {
        if !self.shutting_down() {
            entry.container.lock().unwrap_or_else(|p| p.into_inner()).state.manually_stopped = true;
        }
    }

    /// The container's stop signal, then SIGKILL after `timeout` (by default the container's
    /// own, else 10 s). A container waiting to restart just stays stopped.
    pub async fn stop(&self, reference: &str, timeout: Option<Duration>) -> Result<Changed> {
        let entry = self.entry(reference)?;
        let container = entry.snapshot();
        if container.state.status == Status::Restarting {
            return self.cancel_restart(&entry).await;
        }
        if container.state.status != Status::Running {
            return Ok(Changed::AlreadyDone);
        }
        let runtime = self.runtime.as_ref().ok_or(Error::NotRoot)?;
        let timeout = timeout.or(container.stop_timeout).unwrap_or(STOP_TIMEOUT);
        let mut watched = entry.watched.subscribe();
        self.note_user_stop(&entry);
        let signal = signal_number(&container.stop_signal)?;
        match runtime.kill(&container.id, signal).await {
            Ok(()) => self.container_event(&container, "kill", &[("signal", signal.to_string())]),
            Err(error) => tracing::debug!(container = %container.id, %error, "the stop signal was not delivered"),
        }
        let stopped = tokio::time::timeout(timeout, watched.wait_for(|w| w.status != Status::Running)).await.is_ok();
        if !stopped {
            tracing::info!(container = %container.id, "still running after {timeout:?}: SIGKILL");
            if runtime.kill(&container.id, 9).await.is_ok() {
                self.container_event(&container, "kill", &[("signal", "9".into())]);
            }
            let _ = watched.wait_for(|w| w.status != Status::Running).await;
        }
        self.container_event(&container, "stop", &[]);
        Ok(Changed::Yes)
    }

    /// A container waiting for its restart policy's delay is recorded as exited instead.
    async fn cancel_restart(&self, entry: &Entry) -> Result<Changed> {
        let _lifecycle = entry.lifecycle.lock().await;
        let stopped = {
            let mut c = entry.container.lock().unwrap_or_else(|p| p.into_inner());
            if c.state.status != Status::Restarting {
                return Ok(Changed::AlreadyDone);
            }
            c.state.status = Status::Exited;
            c.state.manually_stopped = !self.shutting_down();
            c.clone()
        };
        self.persist(&stopped).await?;
        entry.publish();
        Ok(Changed::Yes)
    }

    /// `docker rm`: a running container only with `force` (killed first); with `volumes`, its
    /// anonymous volumes go too.
    pub async fn remove(&self, reference: &str, force: bool, volumes: bool) -> Result<()> {
        let entry = self.entry(reference)?;
        let container = entry.snapshot();
        if matches!(container.state.status, Status::Running | Status::Restarting) {
            if !force {
                return Err(Error::Conflict(format!(
                    "cannot remove container \"/{}\": container is {}: stop the container before removing or force remove",
                    container.name,
                    container.state.status.as_str()
                )));
            }
            self.cancel_restart(&entry).await?;
        }
        if entry.snapshot().state.status == Status::Running {
            // SIGKILL straight away, as `docker rm -f` does.
            let mut watched = entry.watched.subscribe();
            let runtime = self.runtime.as_ref().ok_or(Error::NotRoot)?;
            self.note_user_stop(&entry);
            if let Err(error) = runtime.kill(&container.id, 9).await {
                tracing::debug!(container = %container.id, %error, "SIGKILL not delivered");
            }
            let _ = watched.wait_for(|w| w.status != Status::Running).await;
        }
        let _lifecycle = entry.lifecycle.lock().await;
        if entry.watched.borrow().removed {
            return Ok(());
        }
        let txn =
            Txn::ops(vec![Op::delete(self.record_key(&container.id)), Op::delete(self.name_key(&container.name))]);
        self.store.txn(txn).await?;
        unmount(&self.rootfs(&container.id));
        self.discard_files(&container.id);
        self.lock_map().remove(&container.id);
        self.forget_execs(&container.id);
        entry.watched.send_modify(|w| w.removed = true);
        self.container_event(&container, "destroy", &[]);
        tracing::info!(container = %container.id, "removed");
        if volumes {
            self.remove_anonymous_volumes(&container).await;
        }
        Ok(())
    }

    /// `docker rename`: the new name is taken in the same transaction that frees the old one.
    pub async fn rename(&self, reference: &str, new_name: &str) -> Result<()> {
        let entry = self.entry(reference)?;
        let new_name = new_name.strip_prefix('/').unwrap_or(new_name);
        if !valid_name(new_name) {
            return Err(Error::InvalidParameter(format!(
                "Invalid container name ({new_name}), only [a-zA-Z0-9][a-zA-Z0-9_.-] are allowed"
            )));
        }
        let _lifecycle = entry.lifecycle.lock().await;
        let mut renamed = entry.snapshot();
        let old_name = std::mem::replace(&mut renamed.name, new_name.to_string());
        if old_name == new_name {
            return Err(Error::InvalidParameter("Renaming a container with the same name as its current name".into()));
        }
        let bytes = crate::record::encode(&renamed).map_err(|e| Error::Record(renamed.id.clone(), e))?;
        let new_key = self.name_key(new_name);
        let txn = Txn {
            compares: vec![Compare::absent(new_key.clone())],
            success: vec![
                Op::put(self.record_key(&renamed.id), bytes),
                Op::delete(self.name_key(&old_name)),
                Op::put(new_key.clone(), renamed.id.as_bytes()),
            ],
            failure: Vec::new(),
        };
        if !self.store.txn(txn).await?.succeeded {
            let holder = self.store.get(&new_key).await?.map(|kv| String::from_utf8_lossy(&kv.value).into_owned());
            return Err(Error::NameInUse { name: new_name.to_string(), id: holder.unwrap_or_default() });
        }
        entry.container.lock().unwrap_or_else(|p| p.into_inner()).name = new_name.to_string();
        self.networks.rename(&renamed.id, new_name);
        self.container_event(&renamed, "rename", &[("oldName", format!("/{old_name}"))]);
        Ok(())
    }

    /// `docker update`: new limits (those given) and restart policy, applied to the running
    /// container's cgroup, then recorded; returns dockerd's warnings (limits the host cannot
    /// apply).
    pub async fn update(
        &self,
        reference: &str,
        mut limits: Limits,
        restart_policy: Option<RestartPolicy>,
    ) -> Result<Vec<String>> {
        let warnings = crate::cgroup_support::check(&mut limits)?;
        let entry = self.entry(reference)?;
        let _lifecycle = entry.lifecycle.lock().await;
        let mut updated = entry.snapshot();
        if let Some(policy) = restart_policy {
            if updated.auto_remove && policy != RestartPolicy::No {
                return Err(Error::InvalidParameter(
                    "Restart policy cannot be updated because AutoRemove is enabled for the container".into(),
                ));
            }
            updated.restart_policy = policy;
        }
        let current = &mut updated.limits;
        current.memory_bytes = limits.memory_bytes.or(current.memory_bytes);
        current.pids = limits.pids.or(current.pids);
        current.nano_cpus = limits.nano_cpus.or(current.nano_cpus);
        current.cpu_shares = limits.cpu_shares.or(current.cpu_shares);
        current.cpuset_cpus = limits.cpuset_cpus.or(current.cpuset_cpus.take());
        current.cpuset_mems = limits.cpuset_mems.or(current.cpuset_mems.take());
        let (io, asked) = (&mut current.block_io, limits.block_io);
        io.weight = asked.weight.or(io.weight);
        for (now, new) in [
            (&mut io.weight_devices, asked.weight_devices),
            (&mut io.read_bps, asked.read_bps),
            (&mut io.write_bps, asked.write_bps),
            (&mut io.read_iops, asked.read_iops),
            (&mut io.write_iops, asked.write_iops),
        ] {
            if !new.is_empty() {
                *now = new;
            }
        }
        if updated.state.status == Status::Running {
            let resources = spec::resources(&updated.limits, Vec::new())?;
            Cgroup::new(&format!("{CGROUP_PARENT}/{}", updated.id))
                .apply(&resources)
                .map_err(|e| Error::Runtime(format!("Cannot update container {}: {e}", updated.id)))?;
        }
        let updated = {
            let mut c = entry.container.lock().unwrap_or_else(|p| p.into_inner());
            (c.limits, c.restart_policy) = (updated.limits, updated.restart_policy);
            c.clone()
        };
        self.persist(&updated).await?;
        self.container_event(&updated, "update", &[]);
        Ok(warnings)
    }

    /// `docker container prune`: removes the containers not running that `wanted` picks;
    /// returns their ids and the bytes their writable layers held.
    pub async fn prune(&self, wanted: impl Fn(&Container) -> bool) -> Result<(Vec<String>, u64)> {
        let (mut removed, mut reclaimed) = (Vec::new(), 0);
        for container in self.list(true) {
            if matches!(container.state.status, Status::Created | Status::Exited) && wanted(&container) {
                let size = volume::disk_usage(&self.upper_dir(&container.id));
                match self.remove(&container.id, false, false).await {
                    Ok(()) => {
                        removed.push(container.id);
                        reclaimed += size;
                    }
                    // Started or removed meanwhile: not this prune's to remove.
                    Err(Error::Conflict(_) | Error::NoSuchContainer(_)) => {}
                    Err(error) => return Err(error),
                }
            }
        }
        Ok((removed, reclaimed))
    }

    fn running_cgroup(&self, reference: &str) -> Result<(Container, String)> {
        let container = self.inspect(reference)?;
        if container.state.status != Status::Running {
            return Err(Error::Conflict(format!("Container {} is not running", container.id)));
        }
        let cgroup = format!("{CGROUP_PARENT}/{}", container.id);
        Ok((container, cgroup))
    }

    /// `docker top`: titles and rows of `ps` for the container's processes.
    pub async fn top(&self, reference: &str, ps_args: &str) -> Result<(Vec<String>, Vec<Vec<String>>)> {
        let (_, cgroup) = self.running_cgroup(reference)?;
        stats::top(&cgroup, ps_args).await
    }

    /// `docker stats`: one sample of the container's cgroup (zeros once it stopped, as Docker).
    pub fn stats(&self, reference: &str) -> Result<(Container, Stats)> {
        let container = self.inspect(reference)?;
        if container.state.status != Status::Running {
            return Ok((container, Stats::default()));
        }
        let stats = stats::sample(&format!("{CGROUP_PARENT}/{}", container.id), Some(container.state.pid));
        Ok((container, stats))
    }

    /// What the container wrote so far and, with `follow` while it runs, what it writes next.
    pub fn logs(
        &self,
        reference: &str,
        follow: bool,
    ) -> Result<(Vec<LogEntry>, Option<broadcast::Receiver<OutputEvent>>)> {
        let entry = self.entry(reference)?;
        let id = entry.snapshot().id;
        let _output = entry.output_lock.lock().unwrap_or_else(|p| p.into_inner());
        let live = (follow && entry.snapshot().state.status == Status::Running).then(|| entry.output.subscribe());
        let entries = read_log(&self.log_path(&id))?;
        Ok((entries, live))
    }

    /// The output of the container's next (or current) run, as it comes, and, with `stdin`,
    /// where the client's input goes: into its stdin once it runs; with StdinOnce and no
    /// terminal, the end of the client's input closes the container's stdin. An exited container
    /// can be attached to, as dockerd allows: `docker start -a` attaches before it starts one (the
    /// refusal `docker attach` prints for a stopped container is the CLI's own check).
    pub fn attach(&self, reference: &str, stdin: bool) -> Result<Attach> {
        let entry = self.entry(reference)?;
        let container = entry.snapshot();
        let input = (stdin && container.stdio.open_stdin).then(|| {
            let (tx, mut rx) = mpsc::channel::<Vec<u8>>(16);
            let entry = entry.clone();
            tokio::spawn(async move {
                let mut target = entry.stdin.subscribe();
                while let Some(bytes) = rx.recv().await {
                    let open = match target.wait_for(Option::is_some).await {
                        Ok(open) => open.clone(),
                        Err(_) => return,
                    };
                    let Some(open) = open else { return };
                    if open.write_all(&bytes).await.is_err() {
                        return;
                    }
                }
                // A terminal stays: a client leaving it (or detaching) does not end its input.
                if container.stdio.stdin_once && !container.stdio.tty {
                    entry.stdin.send_replace(None);
                }
            });
            tx
        });
        Ok(Attach { output: entry.output.subscribe(), input, tty: container.stdio.tty })
    }

    /// Sets the size of a running container's terminal; nothing without one, as in Docker.
    pub fn resize(&self, reference: &str, rows: u16, columns: u16) -> Result<()> {
        let entry = self.entry(reference)?;
        let container = entry.snapshot();
        if container.state.status != Status::Running {
            return Err(Error::Conflict(format!("Container {} is not running", container.id)));
        }
        let terminal = entry.terminal.lock().unwrap_or_else(|p| p.into_inner()).clone();
        terminal.map_or(Ok(()), |t| t.resize(rows, columns))
    }

    /// Stops every running container (SIGTERM, then SIGKILL after a short grace) and ends the
    /// runtime processes; with `--live-restore`, leaves them all running.
    pub async fn shut_down(&self) {
        self.shutting_down.store(true, std::sync::atomic::Ordering::SeqCst);
        if self.live_restore {
            // Containers, their mounts, veths and bridges stay for the next Stratus to adopt.
            if let Some(runtime) = &self.runtime {
                runtime.shut_down().await;
            }
            return;
        }
        let running: Vec<String> = self.list(false).into_iter().map(|c| c.id).collect();
        let stops = running.iter().map(|id| self.stop(id, Some(SHUTDOWN_GRACE)));
        // Concurrently: one after another would add up the grace periods.
        for (id, stopped) in running.iter().zip(futures_util::future::join_all(stops).await) {
            if let Err(error) = stopped {
                tracing::warn!(container = %id, %error, "cannot stop");
            }
        }
        if let Some(runtime) = &self.runtime {
            runtime.shut_down().await;
        }
        self.networks.shut_down().await;
    }
}

async fn handle_exits(engine: std::sync::Weak<Engine>, mut exits: mpsc::UnboundedReceiver<Exit>) {
    while let Some(exit) = exits.recv().await {
        let Some(engine) = engine.upgrade() else { return };
        // Each exit in its own task: one waits for its output to drain, not for the others'.
        tokio::spawn(async move {
            let id = exit.id.clone();
            match engine.on_exit(exit).await {
                Ok(Some(delay)) => engine.restart_after(&id, delay).await,
                Ok(None) => {}
                Err(error) => tracing::error!(container = %id, error = %error, "cannot record the exit"),
            }
        });
    }
}

/// Merges the request with the image's config the way Docker does: an entrypoint given in the
/// request drops the image's command too.
fn settle(request: &CreateRequest, image: &Image, id: String, name: String) -> Result<Container> {
    let (entrypoint, cmd) = match &request.entrypoint {
        Some(entrypoint) => (entrypoint.clone(), request.cmd.clone().unwrap_or_default()),
        None => (
            image.config.entrypoint.clone().unwrap_or_default(),
            request.cmd.clone().or_else(|| image.config.cmd.clone()).unwrap_or_default(),
        ),
    };
    let args: Vec<String> = entrypoint.iter().chain(&cmd).cloned().collect();
    if args.is_empty() {
        return Err(Error::InvalidParameter("No command specified".into()));
    }
    let mut env: Vec<String> = image.config.env.clone();
    for variable in &request.env {
        let key = variable.split('=').next().unwrap_or_default();
        env.retain(|existing| existing.split('=').next() != Some(key));
        env.push(variable.clone());
    }
    if !env.iter().any(|v| v.starts_with("PATH=")) {
        env.insert(0, image::DEFAULT_PATH.to_string());
    }
    let hostname =
        request.hostname.clone().filter(|h| !h.is_empty()).unwrap_or_else(|| image::short_id(&id).to_string());
    env.push(format!("HOSTNAME={hostname}"));
    request.security.validate()?;
    let mut labels = image.config.labels.clone();
    labels.extend(request.labels.clone());
    let stop_signal = request.stop_signal.clone().or_else(|| image.config.stop_signal.clone());
    let stop_signal = stop_signal.filter(|s| !s.is_empty()).unwrap_or_else(|| "SIGTERM".into());
    signal_number(&stop_signal)?;
    if let Some(check) = &request.healthcheck {
        check.validate().map_err(Error::InvalidParameter)?;
    }
    if request.auto_remove && request.restart_policy != RestartPolicy::No {
        return Err(Error::InvalidParameter("can't create 'AutoRemove' container with restart policy".into()));
    }
    Ok(Container {
        process: Process {
            args,
            env,
            cwd: request
                .working_dir
                .clone()
                .filter(|d| !d.is_empty())
                .unwrap_or_else(|| image.config.working_dir.clone()),
            user: request.user.clone().filter(|u| !u.is_empty()).unwrap_or_else(|| image.config.user.clone()),
            hostname,
        },
        id,
        name,
        created: SystemTime::now(),
        image: request.image.clone(),
        image_id: image.id.clone(),
        entrypoint,
        cmd,
        labels,
        limits: request.limits.clone(),
        auto_remove: request.auto_remove,
        security: request.security.clone(),
        mounts: Vec::new(),
        restart_policy: request.restart_policy,
        init: request.init,
        stop_signal,
        stop_timeout: request.stop_timeout,
        network: NetworkConfig::default(),
        state: State::default(),
        stdio: StdioConfig { tty: request.tty, open_stdin: request.open_stdin, stdin_once: request.stdin_once },
        healthcheck: HealthConfig::merged(request.healthcheck.as_ref(), image.config.docker.healthcheck.as_ref()),
        shell: image.config.docker.shell.clone(),
    })
}

fn valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    name.len() >= 2
        && chars.next().is_some_and(|c| c.is_ascii_alphanumeric())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
}

pub(crate) fn new_id() -> String {
    static COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let seed = format!(
        "{:?}/{}/{}",
        SystemTime::now(),
        std::process::id(),
        COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    );
    image::sha256(seed.as_bytes()).trim_start_matches("sha256:").to_string()
}

/// Docker-style `adjective_scientist`, picked from the id.
fn generated_name(id: &str) -> String {
    const LEFT: [&str; 16] = [
        "admiring", "bold", "brave", "clever", "eager", "gentle", "happy", "jolly", "keen", "lucid", "nifty", "quirky",
        "serene", "sharp", "tender", "vibrant",
    ];
    const RIGHT: [&str; 16] = [
        "babbage", "curie", "darwin", "einstein", "feynman", "hopper", "kepler", "lamport", "liskov", "lovelace",
        "noether", "pascal", "ritchie", "shannon", "turing", "wozniak",
    ];
    let byte = |i: usize| id.get(i..i + 2).and_then(|h| u8::from_str_radix(h, 16).ok()).unwrap_or(0) as usize;
    format!("{}_{}_{}", LEFT[byte(0) % 16], RIGHT[byte(2) % 16], id.get(4..8).unwrap_or("0"))
}

pub(crate) fn signal_number(signal: &str) -> Result<i32> {
    const NAMES: [(&str, i32); 12] = [
        ("HUP", 1),
        ("INT", 2),
        ("QUIT", 3),
        ("KILL", 9),
        ("USR1", 10),
        ("USR2", 12),
        ("PIPE", 13),
        ("ALRM", 14),
        ("TERM", 15),
        ("CHLD", 17),
        ("CONT", 18),
        ("STOP", 19),
    ];
    if signal.is_empty() {
        return Ok(9);
    }
    if let Ok(number) = signal.parse::<i32>()
        && (1..=64).contains(&number)
    {
        return Ok(number);
    }
    let name = signal.to_ascii_uppercase();
    let name = name.strip_prefix("SIG").unwrap_or(&name);
    NAMES
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, number)| *number)
        .ok_or_else(|| Error::InvalidParameter(format!("Invalid signal: {signal}")))
}

pub(crate) fn mount_overlay(layers: &[PathBuf], upper: &Path, work: &Path, target: &Path) -> Result<()> {
    // overlayfs lists lower directories top first; an image lists its layers bottom first.
    let lower: Vec<String> = layers.iter().rev().map(|p| p.display().to_string()).collect();
    let data = format!("lowerdir={},upperdir={},workdir={}", lower.join(":"), upper.display(), work.display());
    let data = std::ffi::CString::new(data).map_err(|_| Error::InvalidParameter("a path holds a NUL byte".into()))?;
    rustix::mount::mount("overlay", target, "overlay", rustix::mount::MountFlags::empty(), data.as_c_str())
        .map_err(|e| Error::io("cannot mount the overlay root filesystem", target)(e.into()))
}

/// Detaches the root filesystem if mounted; not mounted is fine.
pub(crate) fn unmount(target: &Path) {
    match rustix::mount::unmount(target, rustix::mount::UnmountFlags::DETACH) {
        Ok(()) | Err(rustix::io::Errno::INVAL) | Err(rustix::io::Errno::NOENT) => {}
        Err(error) => tracing::warn!(path = %target.display(), %error, "cannot unmount"),
    }
}

/// How many times the kernel's OOM killer struck in the container's memory cgroup (v1's
/// `memory.oom_control`, or v2's `memory.events`).
fn oom_kills(id: &str) -> u64 {
    let v1 = format!("/sys/fs/cgroup/memory{CGROUP_PARENT}/{id}/memory.oom_control");
    let v2 = format!("/sys/fs/cgroup{CGROUP_PARENT}/{id}/memory.events");
    for path in [v1, v2] {
        if let Ok(text) = fs::read_to_string(&path) {
            return parse_oom_kills(&text);
        }
    }
    0
}

fn parse_oom_kills(text: &str) -> u64 {
    text.lines()
        .filter_map(|line| line.strip_prefix("oom_kill "))
        .filter_map(|count| count.trim().parse().ok())
        .next()
        .unwrap_or(0)
}

/// Copies a run's stdout and stderr (or its terminal, as stdout) to the log and to attached
/// clients until both end.
async fn pump_output(entry: Arc<Entry>, stdout: Arc<AsyncStdio>, stderr: Option<Arc<AsyncStdio>>, mut log: fs::File) {
    let (mut out_open, mut err_open) = (true, stderr.is_some());
    let mut out_buffer = vec![0u8; 16 * 1024];
    let mut err_buffer = vec![0u8; 16 * 1024];
    while out_open || err_open {
        let (stream, read) = tokio::select! {
            read = stdout.read(&mut out_buffer), if out_open => (Stream::Stdout, read),
            read = async { match &stderr { Some(e) => e.read(&mut err_buffer).await, None => Ok(0) } }, if err_open => {
                (Stream::Stderr, read)
            }
        };
        let bytes = match read {
            Ok(0) | Err(_) => {
                match stream {
                    Stream::Stdout => out_open = false,
                    Stream::Stderr => err_open = false,
                }
                continue;
            }
            Ok(n) => match stream {
                Stream::Stdout => out_buffer.get(..n).unwrap_or_default().to_vec(),
                Stream::Stderr => err_buffer.get(..n).unwrap_or_default().to_vec(),
            },
        };
        let entry_out = LogEntry { stream, time: SystemTime::now(), bytes };
        let _output = entry.output_lock.lock().unwrap_or_else(|p| p.into_inner());
        if let Err(error) = log.write_all(&encode_log_entry(&entry_out)) {
            tracing::warn!(%error, "cannot write a container's log");
        }
        let _ = entry.output.send(OutputEvent::Output(entry_out));
    }
    let _output = entry.output_lock.lock().unwrap_or_else(|p| p.into_inner());
    let _ = entry.output.send(OutputEvent::End);
}

/// A log record: stream (1 byte), time in nanoseconds since the epoch (8, little-endian),
/// length (4, little-endian), then the bytes.
fn encode_log_entry(entry: &LogEntry) -> Vec<u8> {
    let nanos = entry.time.duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default().as_nanos() as u64;
    let mut record = Vec::with_capacity(13 + entry.bytes.len());
    record.push(match entry.stream {
        Stream::Stdout => 1,
        Stream::Stderr => 2,
    });
    record.extend_from_slice(&nanos.to_le_bytes());
    record.extend_from_slice(&(entry.bytes.len() as u32).to_le_bytes());
    record.extend_from_slice(&entry.bytes);
    record
}

fn decode_log(mut bytes: &[u8]) -> Vec<LogEntry> {
    let mut entries = Vec::new();
    // A torn last record (a crash mid-write) ends the log.
    while let (Some(&kind), Some(nanos), Some(length)) = (bytes.first(), bytes.get(1..9), bytes.get(9..13)) {
        let nanos = u64::from_le_bytes(nanos.try_into().unwrap_or_default());
        let length = u32::from_le_bytes(length.try_into().unwrap_or_default()) as usize;
        let Some(data) = bytes.get(13..13 + length) else { break };
        let stream = if kind == 2 { Stream::Stderr } else { Stream::Stdout };
        entries.push(LogEntry {
            stream,
            time: SystemTime::UNIX_EPOCH + Duration::from_nanos(nanos),
            bytes: data.to_vec(),
        });
        bytes = bytes.get(13 + length..).unwrap_or_default();
    }
    entries
}

fn read_log(path: &Path) -> Result<Vec<LogEntry>> {
    let mut bytes = Vec::new();
    match fs::File::open(path) {
        Ok(mut file) => file.read_to_end(&mut bytes).map_err(Error::io("cannot read the log", path))?,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => 0,
        Err(error) => return Err(Error::io("cannot read the log", path)(error)),
    };
    Ok(decode_log(&bytes))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::image::{ImageConfig, Layer};

    fn image(entrypoint: Option<&[&str]>, cmd: Option<&[&str]>) -> Image {
        let strings = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        Image {
            id: "sha256:aa".into(),
            manifest_digest: "sha256:bb".into(),
            tags: vec!["busybox:latest".into()],
            created: None,
            architecture: "amd64".into(),
            os: "linux".into(),
            config: ImageConfig {
                env: vec![image::DEFAULT_PATH.into(), "A=image".into()],
                entrypoint: entrypoint.map(strings),
                cmd: cmd.map(strings),
                working_dir: "/srv".into(),
                user: "nobody".into(),
                ..ImageConfig::default()
            },
            layers: vec![Layer { digest: "sha256:cc".into(), diff_id: "sha256:cc".into(), size: 1 }],
            history: Vec::new(),
        }
    }

    fn args(request: CreateRequest, image: &Image) -> String {
        match settle(&request, image, "0123456789abcdef".into(), "n".into()) {
            Ok(c) => c.process.args.join(" "),
            Err(error) => error.to_string(),
        }
    }

    #[test]
    fn entrypoint_and_cmd_merge_like_docker() {
        let strings = |v: &[&str]| Some(v.iter().map(|s| s.to_string()).collect::<Vec<_>>());
        let plain = image(None, Some(&["sh"]));
        let with_entrypoint = image(Some(&["/bin/app"]), Some(&["--serve"]));
        assert_eq!(args(CreateRequest::default(), &plain), "sh");
        assert_eq!(args(CreateRequest { cmd: strings(&["echo", "hi"]), ..Default::default() }, &plain), "echo hi");
        assert_eq!(args(CreateRequest::default(), &with_entrypoint), "/bin/app --serve");
        assert_eq!(
            args(CreateRequest { cmd: strings(&["-v"]), ..Default::default() }, &with_entrypoint),
            "/bin/app -v"
        );
        // An entrypoint in the request drops the image's command.
        assert_eq!(
            args(CreateRequest { entrypoint: strings(&["env"]), ..Default::default() }, &with_entrypoint),
            "env"
        );
        assert_eq!(args(CreateRequest::default(), &image(None, None)), "No command specified");
    }

    #[test]
    fn env_user_cwd_and_hostname_come_from_request_then_image() {
        let request = CreateRequest { env: vec!["A=request".into(), "B=2".into()], ..Default::default() };
        let c = settle(&request, &image(None, Some(&["sh"])), "0123456789abcdef".into(), "n".into()).unwrap();
        assert_eq!(c.process.env, vec![image::DEFAULT_PATH, "A=request", "B=2", "HOSTNAME=0123456789ab"]);
        assert_eq!((c.process.cwd.as_str(), c.process.user.as_str()), ("/srv", "nobody"));
        assert_eq!(c.process.hostname, "0123456789ab");
        let request = CreateRequest {
            user: Some("0".into()),
            working_dir: Some("/".into()),
            hostname: Some("web".into()),
            ..Default::default()
        };
        let c = settle(&request, &image(None, Some(&["sh"])), "0123456789abcdef".into(), "n".into()).unwrap();
        assert_eq!((c.process.cwd.as_str(), c.process.user.as_str(), c.process.hostname.as_str()), ("/", "0", "web"));
    }

    #[test]
    fn names_signals_and_oom_counts() {
        assert!(valid_name("web-1.a_b") && !valid_name("a") && !valid_name("-web") && !valid_name("a b"));
        assert_eq!(signal_number("SIGTERM").unwrap(), 15);
        assert_eq!(signal_number("kill").unwrap(), 9);
        assert_eq!(signal_number("10").unwrap(), 10);
        assert_eq!(signal_number("").unwrap(), 9);
        assert!(signal_number("SIGNOPE").is_err() && signal_number("99").is_err());
        assert_eq!(parse_oom_kills("oom_kill_disable 0\nunder_oom 0\noom_kill 2\n"), 2);
        assert_eq!(parse_oom_kills("low 0\nhigh 0\nmax 3\noom 1\noom_kill 1\n"), 1);
        assert_eq!(parse_oom_kills("oom_kill_disable 0\n"), 0);
        let name = generated_name(&new_id());
        assert_eq!(name.split('_').count(), 3, "{name}");
    }

    #[test]
    fn log_records_round_trip_and_a_torn_tail_is_dropped() {
        let at = SystemTime::UNIX_EPOCH + Duration::from_nanos(1_700_000_000_123_456_789);
        let entries = vec![
            LogEntry { stream: Stream::Stdout, time: at, bytes: b"hi\n".to_vec() },
            LogEntry { stream: Stream::Stderr, time: at, bytes: b"oops\n".to_vec() },
        ];
        let mut bytes: Vec<u8> = entries.iter().flat_map(encode_log_entry).collect();
        assert_eq!(decode_log(&bytes), entries);
        bytes.extend_from_slice(&encode_log_entry(&entries[0])[..7]);
        assert_eq!(decode_log(&bytes), entries);
    }
}
