//! Docker's JSON shapes (from the Engine API's swagger.yaml), in and out.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use containers::health::HealthStatus;
use containers::image::{Image, Removed};
use containers::restart::RestartPolicy;
use containers::spec::{BlockIo, DeviceLimit};
use containers::{Container, CreateRequest, Engine, Error, LogEntry, Status};
use serde::Deserialize;
use serde_json::{Value, json};

/// Go's zero time, which Docker shows for "never".
const ZERO_TIME: &str = "0001-01-01T00:00:00Z";
/// Docker refuses memory limits below this.
const MIN_MEMORY: i64 = 6 * 1024 * 1024;

fn rfc3339(time: Option<SystemTime>) -> String {
    time.map_or_else(|| ZERO_TIME.to_string(), |t| humantime::format_rfc3339_nanos(t).to_string())
}

fn unix_seconds(time: SystemTime) -> u64 {
    time.duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default().as_secs()
}

fn read_proc(path: &str) -> String {
    std::fs::read_to_string(path).unwrap_or_default().trim().to_string()
}

pub fn version() -> Value {
    let kernel = read_proc("/proc/sys/kernel/osrelease");
    let arch = go_arch();
    json!({
        "Platform": {"Name": "Stratus"},
        "Components": [{
            "Name": "Engine",
            "Version": env!("CARGO_PKG_VERSION"),
            "Details": {
                "ApiVersion": crate::API_VERSION,
                "MinAPIVersion": crate::MIN_API_VERSION,
                "Os": "linux",
                "Arch": arch,
                "KernelVersion": kernel,
            }
        }],
        "Version": env!("CARGO_PKG_VERSION"),
        "ApiVersion": crate::API_VERSION,
        "MinAPIVersion": crate::MIN_API_VERSION,
        "GitCommit": "",
        "GoVersion": "",
        "Os": "linux",
        "Arch": arch,
        "KernelVersion": kernel,
        "BuildTime": "",
    })
}

pub(crate) fn go_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    }
}

/// `docker info`'s Security Options: the default seccomp profile, and user namespaces with
/// `--userns-remap`.
fn security_options(engine: &Engine) -> Vec<&'static str> {
    let mut options = vec!["name=seccomp,profile=builtin"];
    if engine.userns_remap().is_some() {
        options.push("name=userns");
    }
    options
}

pub fn info(engine: &Engine) -> Result<Value, Error> {
    let containers = engine.list(true);
    let count = |status: Status| containers.iter().filter(|c| c.state.status == status).count();
    let memory_kib: u64 = read_proc("/proc/meminfo")
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0);
    Ok(json!({
        "ID": "stratus",
        "Name": read_proc("/proc/sys/kernel/hostname"),
        "Containers": containers.len(),
        "ContainersRunning": count(Status::Running),
        "ContainersPaused": 0,
        "ContainersStopped": count(Status::Exited) + count(Status::Created),
        "Images": engine.images().list()?.len(),
        "Driver": "overlay",
        "DriverStatus": [],
        "OperatingSystem": "Stratus",
        "OSType": "linux",
        "Architecture": std::env::consts::ARCH,
        "KernelVersion": read_proc("/proc/sys/kernel/osrelease"),
        "NCPU": std::thread::available_parallelism().map_or(1, |n| n.get()),
        "MemTotal": memory_kib * 1024,
        "ServerVersion": env!("CARGO_PKG_VERSION"),
        "CgroupDriver": "cgroupfs",
        "DefaultRuntime": "stratus",
        "Runtimes": {"stratus": {"path": "stratus runtime"}},
        "LoggingDriver": "stratus",
        "LiveRestoreEnabled": engine.live_restore(),
        "SecurityOptions": security_options(engine),
        "Warnings": if engine.can_run() { json!([]) } else { json!(["Stratus is not root: containers cannot run"]) },
    }))
}

fn created_seconds(image: &Image) -> u64 {
    image.created.as_deref().and_then(|c| humantime::parse_rfc3339_weak(c).ok()).map_or(0, unix_seconds)
}

pub fn image_summary(image: &Image) -> Value {
    json!({
        "Id": image.id,
        "ParentId": "",
        "RepoTags": image.tags,
        "RepoDigests": [],
        "Created": created_seconds(image),
        "Size": image.size(),
        "SharedSize": -1,
        "VirtualSize": image.size(),
        "Labels": image.config.labels,
        "Containers": -1,
    })
}

pub fn image_inspect(image: &Image) -> Value {
    json!({
        "Id": image.id,
        "RepoTags": image.tags,
        "RepoDigests": [],
        "Parent": "",
        "Comment": image.history.last().map_or("", |h| h.comment.as_str()),
        "Created": image.created.clone().unwrap_or_else(|| ZERO_TIME.to_string()),
        "Author": "",
        "Config": {
            "Env": image.config.env,
            "Cmd": image.config.cmd,
            "Entrypoint": image.config.entrypoint,
            "WorkingDir": image.config.working_dir,
            "User": image.config.user,
            "Labels": image.config.labels,
            "StopSignal": image.config.stop_signal,
            "Healthcheck": crate::health::healthcheck_json(image.config.docker.healthcheck.as_ref()),
            "Shell": Some(&image.config.docker.shell).filter(|s| !s.is_empty()),
            "OnBuild": Some(&image.config.docker.on_build).filter(|o| !o.is_empty()),
        },
        "Architecture": image.architecture,
        "Os": image.os,
        "Size": image.size(),
        "GraphDriver": {"Name": "overlay", "Data": null},
        "RootFS": {"Type": "layers", "Layers": image.layers.iter().map(|l| l.diff_id.clone()).collect::<Vec<_>>()},
        "Metadata": {"LastTagTime": ZERO_TIME},
    })
}

/// Newest step first, as Docker lists it; the image's id on the newest step only.
pub fn image_history(image: &Image) -> Value {
    let mut layers = image.layers.iter().rev();
    let mut steps = Vec::new();
    for (index, step) in image.history.iter().rev().enumerate() {
        let size = if step.empty_layer { 0 } else { layers.next().map_or(0, |l| l.size) };
        let created =
            step.created.as_deref().and_then(|c| humantime::parse_rfc3339_weak(c).ok()).map_or(0, unix_seconds);
        steps.push(json!({
            "Id": if index == 0 { image.id.as_str() } else { "<missing>" },
            "Created": created,
            "CreatedBy": step.created_by,
            "Tags": if index == 0 { json!(image.tags) } else { Value::Null },
            "Size": size,
            "Comment": step.comment,
        }));
    }
    Value::Array(steps)
}

pub fn removed_images(removed: &[Removed]) -> Value {
    Value::Array(
        removed
            .iter()
            .map(|r| match r {
                Removed::Untagged(tag) => json!({"Untagged": tag}),
                Removed::Deleted(id) => json!({"Deleted": id}),
            })
            .collect(),
    )
}

/// Docker's strslice: a JSON string or an array of strings.
#[derive(Deserialize)]
#[serde(untagged)]
enum StrSlice {
    One(String),
    Many(Vec<String>),
}

impl StrSlice {
    fn into_vec(self) -> Vec<String> {
        match self {
            StrSlice::One(one) => vec![one],
            StrSlice::Many(many) => many,
        }
    }
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "PascalCase", default)]
struct CreateBody {
    image: Option<String>,
    cmd: Option<StrSlice>,
    entrypoint: Option<StrSlice>,
    env: Option<Vec<String>>,
    working_dir: Option<String>,
    user: Option<String>,
    hostname: Option<String>,
    labels: Option<BTreeMap<String, String>>,
    tty: Option<bool>,
    open_stdin: Option<bool>,
    stdin_once: Option<bool>,
    volumes: Option<BTreeMap<String, Value>>,
    stop_signal: Option<String>,
    stop_timeout: Option<i64>,
    exposed_ports: Option<BTreeMap<String, Value>>,
    networking_config: Option<crate::networks::NetworkingConfigBody>,
    host_config: Option<HostConfigBody>,
    healthcheck: Option<crate::health::HealthcheckBody>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "PascalCase", default)]
struct HostConfigBody {
    memory: Option<i64>,
    pids_limit: Option<i64>,
    nano_cpus: Option<i64>,
    cpu_shares: Option<i64>,
    cpu_quota: Option<i64>,
    cpu_period: Option<i64>,
    cpuset_cpus: Option<String>,
    cpuset_mems: Option<String>,
    blkio_weight: Option<u16>,
    blkio_weight_device: Option<Vec<DeviceWeightBody>>,
    blkio_device_read_bps: Option<Vec<DeviceRateBody>>,
    blkio_device_write_bps: Option<Vec<DeviceRateBody>>,
    #[serde(rename = "BlkioDeviceReadIOps")]
    blkio_device_read_iops: Option<Vec<DeviceRateBody>>,
    #[serde(rename = "BlkioDeviceWriteIOps")]
    blkio_device_write_iops: Option<Vec<DeviceRateBody>>,
    auto_remove: Option<bool>,
    binds: Option<Vec<String>>,
    mounts: Option<Vec<crate::volumes::MountBody>>,
    tmpfs: Option<BTreeMap<String, String>>,
    init: Option<bool>,
    port_bindings: Option<BTreeMap<String, Option<Vec<crate::networks::PortBindingBody>>>>,
    publish_all_ports: Option<bool>,
    network_mode: Option<String>,
    #[serde(flatten)]
    security: crate::security::SecurityBody,
    restart_policy: Option<RestartPolicyBody>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "PascalCase", default)]
struct RestartPolicyBody {
    name: Option<String>,
    maximum_retry_count: Option<i64>,
}

/// `POST /containers/create`'s body, checked for what Stratus cannot do yet.
pub fn create_request(body: &[u8], name: Option<&str>) -> Result<CreateRequest, Error> {
    let body: CreateBody =
        serde_json::from_slice(body).map_err(|e| Error::InvalidParameter(format!("invalid container config: {e}")))?;
    let host = body.host_config.unwrap_or_default();
    let limits = limits(&host)?;
    let restart = host.restart_policy.unwrap_or_default();
    let restart_policy =
        RestartPolicy::parse(restart.name.as_deref().unwrap_or_default(), restart.maximum_retry_count.unwrap_or(0))?;
    let mut mounts = Vec::new();
    for bind in host.binds.unwrap_or_default() {
        mounts.push(crate::volumes::parse_bind(&bind)?);
    }
    for mount in host.mounts.unwrap_or_default() {
        mounts.push(crate::volumes::parse_mount(&mount)?);
    }
    for (destination, options) in host.tmpfs.unwrap_or_default() {
        mounts.push(crate::volumes::parse_tmpfs(&destination, &options)?);
    }
    for destination in body.volumes.unwrap_or_default().into_keys() {
        if !mounts.iter().any(|m| m.destination.trim_end_matches('/') == destination.trim_end_matches('/')) {
            let kind = containers::volume::MountKind::Volume { name: String::new(), no_copy: false };
            mounts.push(containers::volume::Mount { kind, destination, read_only: false });
        }
    }
    let entrypoint = body.entrypoint.map(StrSlice::into_vec).map(|e| {
        // `--entrypoint ""` arrives as [""]: no entrypoint at all.
        if e.iter().all(String::is_empty) { Vec::new() } else { e }
    });
    Ok(CreateRequest {
        name: name.filter(|n| !n.is_empty()).map(str::to_string),
        image: body
            .image
            .filter(|i| !i.is_empty())
            .ok_or_else(|| Error::InvalidParameter("config.Image is empty".into()))?,
        entrypoint,
        cmd: body.cmd.map(StrSlice::into_vec),
        env: body.env.unwrap_or_default(),
        working_dir: body.working_dir,
        user: body.user,
        hostname: body.hostname,
        labels: body.labels.unwrap_or_default(),
        limits,
        auto_remove: host.auto_remove.unwrap_or(false),
        security: host.security.settings()?,
        mounts,
        restart_policy,
        init: host.init.unwrap_or(false),
        stop_signal: body.stop_signal.filter(|s| !s.is_empty()),
        stop_timeout: body.stop_timeout.map(|t| Duration::from_secs(t.max(0) as u64)),
        tty: body.tty.unwrap_or(false),
        open_stdin: body.open_stdin.unwrap_or(false),
        stdin_once: body.stdin_once.unwrap_or(false),
        network: crate::networks::network_request(crate::networks::CreateNetworkParts {
            network_mode: host.network_mode,
            port_bindings: host.port_bindings,
            publish_all_ports: host.publish_all_ports,
            exposed_ports: body.exposed_ports,
            networking_config: body.networking_config,
        })?,
        healthcheck: body.healthcheck.as_ref().map(crate::health::HealthcheckBody::config).transpose()?,
    })
}

/// Docker's `filters` query parameter, `{"label":["a=b"]}` or the older `{"label":{"a=b":true}}`,
/// refusing keys not in `allowed`.
pub fn parse_filters(text: Option<&str>, allowed: &[&str]) -> Result<BTreeMap<String, Vec<String>>, Error> {
    let Some(text) = text.filter(|t| !t.is_empty()) else { return Ok(BTreeMap::new()) };
    let value: Value =
        serde_json::from_str(text).map_err(|e| Error::InvalidParameter(format!("invalid filters: {e}")))?;
    let Value::Object(map) = value else { return Err(Error::InvalidParameter("invalid filters".into())) };
    let mut filters = BTreeMap::new();
    for (key, values) in map {
        if !allowed.contains(&key.as_str()) {
            return Err(Error::InvalidParameter(format!("invalid filter '{key}'")));
        }
        let values: Vec<String> = match values {
            Value::Array(items) => items.into_iter().filter_map(|v| v.as_str().map(str::to_string)).collect(),
            Value::Object(items) => items.into_iter().map(|(k, _)| k).collect(),
            _ => return Err(Error::InvalidParameter(format!("invalid filter '{key}'"))),
        };
        filters.insert(key, values);
    }
    Ok(filters)
}

/// HostConfig's `BlkioWeightDevice` entries.
#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct DeviceWeightBody {
    path: String,
    weight: u16,
}

/// HostConfig's `BlkioDevice{Read,Write}{Bps,IOps}` entries.
#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct DeviceRateBody {
    path: String,
    rate: u64,
}

/// The cgroup limits a create or an update asks for; zero or absent means none (or unchanged).
fn limits(host: &HostConfigBody) -> Result<containers::spec::Limits, Error> {
    let memory = host.memory.filter(|m| *m > 0);
    if memory.is_some_and(|m| m < MIN_MEMORY) {
        return Err(Error::InvalidParameter("Minimum memory limit allowed is 6MB".into()));
    }
    let nano_cpus = match (host.nano_cpus.filter(|n| *n > 0), host.cpu_quota.filter(|q| *q > 0)) {
        (Some(_), Some(_)) => {
            return Err(Error::InvalidParameter(
                "Conflicting options: Nano CPUs and CPU Period cannot both be set".into(),
            ));
        }
        (Some(nano), None) => Some(nano),
        (None, Some(quota)) => {
            let period = host.cpu_period.filter(|p| *p > 0).unwrap_or(100_000);
            Some(quota.saturating_mul(1_000_000_000) / period)
        }
        (None, None) => None,
    };
    Ok(containers::spec::Limits {
        memory_bytes: memory,
        pids: host.pids_limit.filter(|p| *p > 0),
        nano_cpus,
        cpu_shares: host.cpu_shares.filter(|s| *s > 0).map(|s| s as u64),
        cpuset_cpus: host.cpuset_cpus.clone().filter(|c| !c.is_empty()),
        cpuset_mems: host.cpuset_mems.clone().filter(|m| !m.is_empty()),
        block_io: BlockIo {
            weight: host.blkio_weight.filter(|w| *w > 0),
            weight_devices: (host.blkio_weight_device.iter().flatten())
                .map(|d| DeviceLimit { path: d.path.clone(), value: u64::from(d.weight) })
                .collect(),
            read_bps: rates(&host.blkio_device_read_bps),
            write_bps: rates(&host.blkio_device_write_bps),
            read_iops: rates(&host.blkio_device_read_iops),
            write_iops: rates(&host.blkio_device_write_iops),
        },
    })
}

fn rates(devices: &Option<Vec<DeviceRateBody>>) -> Vec<DeviceLimit> {
    devices.iter().flatten().map(|d| DeviceLimit { path: d.path.clone(), value: d.rate }).collect()
}

/// Docker's `[{"Path": ..., "Rate": ...}]` (or `"Weight"`) lists.
fn device_list(devices: &[DeviceLimit], field: &str) -> Value {
    devices.iter().map(|d| json!({"Path": d.path, field: d.value})).collect()
}

/// `POST /containers/{id}/update`'s body (Docker's UpdateConfig: HostConfig's resources and
/// restart policy): the limits to change and the new restart policy, if any.
pub fn update_request(body: &[u8]) -> Result<(containers::spec::Limits, Option<RestartPolicy>), Error> {
    let host: HostConfigBody =
        serde_json::from_slice(body).map_err(|e| Error::InvalidParameter(format!("invalid update config: {e}")))?;
    let policy = match host.restart_policy.as_ref().and_then(|r| r.name.as_deref()).filter(|n| !n.is_empty()) {
        Some(name) => {
            let max_retries = host.restart_policy.as_ref().and_then(|r| r.maximum_retry_count).unwrap_or(0);
            Some(RestartPolicy::parse(name, max_retries)?)
        }
        None => None,
    };
    Ok((limits(&host)?, policy))
}

/// `docker ps --filter`: label, name, id and status.
#[derive(Debug, Default)]
pub struct Filters(BTreeMap<String, Vec<String>>);

impl Filters {
    pub fn parse(text: Option<&str>) -> Result<Filters, Error> {
        parse_filters(text, &["label", "name", "id", "status", "health"]).map(Filters)
    }

    /// Every filter key must match; within a key, any value may (labels: all must).
    pub fn matches(&self, container: &Container) -> bool {
        self.0.iter().all(|(key, values)| match key.as_str() {
            "label" => values.iter().all(|wanted| match wanted.split_once('=') {
                Some((k, v)) => container.labels.get(k).is_some_and(|have| have == v),
                None => container.labels.contains_key(wanted),
            }),
            "name" => values.iter().any(|n| container.name.contains(n.trim_start_matches('/'))),
            "id" => values.iter().any(|id| container.id.starts_with(id.as_str())),
            "status" => values.iter().any(|s| s == container.state.status.as_str()),
            "health" => values.iter().any(|h| h == health_filter_value(container)),
            _ => false,
        })
    }
}

/// go-units' HumanDuration, which `docker ps` shows.
fn human_duration(elapsed: Duration) -> String {
    let seconds = elapsed.as_secs();
    let minutes = seconds / 60;
    let hours = minutes / 60;
    match () {
        () if seconds < 1 => "Less than a second".into(),
        () if seconds == 1 => "1 second".into(),
        () if seconds < 60 => format!("{seconds} seconds"),
        () if minutes == 1 => "About a minute".into(),
        () if minutes < 60 => format!("{minutes} minutes"),
        () if hours == 1 => "About an hour".into(),
        () if hours < 48 => format!("{hours} hours"),
        () if hours < 24 * 7 * 2 => format!("{} days", hours / 24),
        () if hours < 24 * 30 * 2 => format!("{} weeks", hours / 24 / 7),
        () if hours < 24 * 365 * 2 => format!("{} months", hours / 24 / 30),
        () => format!("{} years", hours / 24 / 365),
    }
}

fn since(time: Option<SystemTime>) -> Duration {
    time.and_then(|t| SystemTime::now().duration_since(t).ok()).unwrap_or_default()
}

/// What the `health` filter compares: the status of a running container's check, else `none`.
fn health_filter_value(container: &Container) -> &'static str {
    match &container.state.health {
        Some(health) if container.state.status == Status::Running => health.status.as_str(),
        _ => "none",
    }
}

fn status_text(container: &Container) -> String {
    match container.state.status {
        Status::Created => "Created".into(),
        Status::Running => {
            let up = format!("Up {}", human_duration(since(container.state.started_at)));
            match &container.state.health {
                Some(health) if health.status == HealthStatus::Starting => format!("{up} (health: starting)"),
                Some(health) => format!("{up} ({})", health.status.as_str()),
                None => up,
            }
        }
        Status::Restarting => format!(
            "Restarting ({}) {} ago",
            container.state.exit_code,
            human_duration(since(container.state.finished_at))
        ),
        Status::Exited => {
            format!("Exited ({}) {} ago", container.state.exit_code, human_duration(since(container.state.finished_at)))
        }
    }
}

pub fn container_summary(container: &Container, engine: &Engine) -> Value {
    let (ports, host_config, network_settings) = crate::networks::summary_parts(container, engine);
    json!({
        "Id": container.id,
        "Names": [format!("/{}", container.name)],
        "Image": container.image,
        "ImageID": container.image_id,
        "Command": container.process.args.join(" "),
        "Created": unix_seconds(container.created),
        "Ports": ports,
        "Labels": container.labels,
        "State": container.state.status.as_str(),
        "Status": status_text(container),
        "HostConfig": host_config,
        "NetworkSettings": network_settings,
        "Mounts": [],
    })
}

pub fn container_inspect(container: &Container, engine: &Engine) -> Value {
    let state = &container.state;
    let (path, args) = container.process.args.split_first().map_or(("", &[][..]), |(p, a)| (p.as_str(), a));
    let limits = &container.limits;
    let mut inspect = json!({
        "Id": container.id,
        "Created": rfc3339(Some(container.created)),
        "Path": path,
        "Args": args,
        "State": {
            "Status": state.status.as_str(),
            "Running": state.status == Status::Running,
            "Paused": false,
            "Restarting": state.status == Status::Restarting,
            "OOMKilled": state.oom_killed,
            "Dead": false,
            "Pid": state.pid,
            "ExitCode": state.exit_code,
            "Error": state.error,
            "StartedAt": rfc3339(state.started_at),
            "FinishedAt": rfc3339(state.finished_at),
            "Health": state.health.as_ref().map(crate::health::health_json),
        },
        "Image": container.image_id,
        "ResolvConfPath": engine.container_file(&container.id, "resolv.conf").display().to_string(),
        "HostnamePath": "",
        "HostsPath": engine.container_file(&container.id, "hosts").display().to_string(),
        "LogPath": engine.log_path(&container.id).display().to_string(),
        "Name": format!("/{}", container.name),
        "RestartCount": state.restart_count,
        "Driver": "overlay",
        "Platform": "linux",
        "MountLabel": "",
        "ProcessLabel": "",
        "AppArmorProfile": "",
        "HostConfig": {
            "Memory": limits.memory_bytes.unwrap_or(0),
            "NanoCpus": limits.nano_cpus.unwrap_or(0),
            "CpuShares": limits.cpu_shares.unwrap_or(0),
            "PidsLimit": limits.pids,
            "AutoRemove": container.auto_remove,
            "Privileged": container.security.privileged,
            "CapAdd": container.security.cap_add,
            "CapDrop": container.security.cap_drop,
            "ReadonlyRootfs": container.security.read_only_rootfs,
            "SecurityOpt": crate::security::options(&container.security),
            "UsernsMode": if container.security.host_userns { "host" } else { "" },
            "NetworkMode": container.network.mode_name,
            "PortBindings": port_bindings(container),
            "PublishAllPorts": container.network.publish_all,
            "RestartPolicy": {
                "Name": container.restart_policy.name(),
                "MaximumRetryCount": container.restart_policy.max_retries(),
            },
            "Init": container.init,
            // The log file has Stratus's own format, but clients read this name to learn whether
            // the daemon can give the logs back (docker-py's `run` reads them only for json-file
            // or journald), and ours can, just as json-file's can.
            "LogConfig": {"Type": "json-file", "Config": {}},
        },
        "GraphDriver": {
            "Name": "overlay",
            "Data": {"UpperDir": engine.upper_dir(&container.id).display().to_string()},
        },
        "Mounts": crate::volumes::container_mounts(container, engine),
        "ExecIDs": Some(engine.running_execs(&container.id)).filter(|ids| !ids.is_empty()),
        "Config": {
            "Hostname": container.process.hostname,
            "Domainname": "",
            "User": container.process.user,
            "AttachStdin": container.stdio.open_stdin,
            "AttachStdout": true,
            "AttachStderr": true,
            "Tty": container.stdio.tty,
            "OpenStdin": container.stdio.open_stdin,
            "StdinOnce": container.stdio.stdin_once,
            "Env": container.process.env,
            "Cmd": container.cmd,
            "Image": container.image,
            "WorkingDir": container.process.cwd,
            "Entrypoint": if container.entrypoint.is_empty() { Value::Null } else { json!(container.entrypoint) },
            "Labels": container.labels,
            "StopSignal": container.stop_signal,
            "StopTimeout": container.stop_timeout.map(|t| t.as_secs()),
            "Healthcheck": crate::health::healthcheck_json(container.healthcheck.as_ref()),
            "Shell": Some(&container.shell).filter(|s| !s.is_empty()),
        },
        "NetworkSettings": crate::networks::network_settings(container, engine),
    });
    // Here rather than above: more fields would take json! past its recursion limit.
    if let Some(host_config) = inspect["HostConfig"].as_object_mut() {
        let io = &limits.block_io;
        host_config.extend([
            ("CpusetCpus".to_string(), json!(limits.cpuset_cpus.clone().unwrap_or_default())),
            ("CpusetMems".to_string(), json!(limits.cpuset_mems.clone().unwrap_or_default())),
            ("BlkioWeight".to_string(), json!(io.weight.unwrap_or(0))),
            ("BlkioWeightDevice".to_string(), device_list(&io.weight_devices, "Weight")),
            ("BlkioDeviceReadBps".to_string(), device_list(&io.read_bps, "Rate")),
            ("BlkioDeviceWriteBps".to_string(), device_list(&io.write_bps, "Rate")),
            ("BlkioDeviceReadIOps".to_string(), device_list(&io.read_iops, "Rate")),
            ("BlkioDeviceWriteIOps".to_string(), device_list(&io.write_iops, "Rate")),
        ]);
    }
    inspect
}

/// `HostConfig.PortBindings` as requested.
fn port_bindings(container: &Container) -> Value {
    let mut bindings = serde_json::Map::new();
    for binding in &container.network.ports {
        let entry = bindings.entry(binding.port.to_string()).or_insert_with(|| json!([]));
        if let Some(list) = entry.as_array_mut() {
            let host_ip = binding.host_ip.map(|ip| ip.to_string()).unwrap_or_default();
            let host_port = match (binding.host_port, binding.host_port_end) {
                (0, _) => String::new(),
                (first, Some(last)) => format!("{first}-{last}"),
                (port, None) => port.to_string(),
            };
            list.push(json!({"HostIp": host_ip, "HostPort": host_port}));
        }
    }
    Value::Object(bindings)
}

/// Log entries cut at line ends, as Docker keeps them (and as `--tail` counts them).
pub fn split_lines(entries: Vec<LogEntry>) -> Vec<LogEntry> {
    let mut lines = Vec::with_capacity(entries.len());
    for entry in entries {
        for line in entry.bytes.split_inclusive(|b| *b == b'\n') {
            lines.push(LogEntry { stream: entry.stream, time: entry.time, bytes: line.to_vec() });
        }
    }
    lines
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    /// A JSON value of the shape Docker's bodies have, with its keys among `keys`.
    fn body(keys: &'static [&'static str]) -> impl proptest::strategy::Strategy<Value = Value> {
        use proptest::prelude::*;
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::from),
            any::<i64>().prop_map(Value::from),
            "[ -~]{0,12}".prop_map(Value::from),
            proptest::sample::select(vec!["bridge", "host", "none", "/dev/null:1mb", "0-1", "80/tcp", "a:/b:ro"])
                .prop_map(Value::from),
        ];
        leaf.prop_recursive(3, 24, 6, move |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..4).prop_map(Value::from),
                proptest::collection::btree_map(proptest::sample::select(keys), inner, 0..6)
                    .prop_map(|m| Value::Object(m.into_iter().map(|(k, v)| (k.to_string(), v)).collect())),
            ]
        })
    }

    const CREATE_KEYS: &[&str] = &[
        "Image",
        "Cmd",
        "Entrypoint",
        "Env",
        "User",
        "WorkingDir",
        "Labels",
        "Tty",
        "OpenStdin",
        "StopSignal",
        "StopTimeout",
        "ExposedPorts",
        "Volumes",
        "HostConfig",
        "NetworkingConfig",
        "EndpointsConfig",
        "Memory",
        "NanoCpus",
        "CpuQuota",
        "CpusetCpus",
        "BlkioWeight",
        "BlkioDeviceReadBps",
        "Path",
        "Rate",
        "Weight",
        "Binds",
        "Mounts",
        "Tmpfs",
        "PortBindings",
        "HostPort",
        "HostIp",
        "RestartPolicy",
        "Name",
        "MaximumRetryCount",
        "CapAdd",
        "SecurityOpt",
        "Privileged",
        "NetworkMode",
        "Aliases",
        "Type",
        "Source",
        "Target",
        "ReadOnly",
    ];

    proptest::proptest! {
        /// Whatever a client sends as a create or update body, or as filters: decoded or refused
        /// with an error, never a panic.
        #[test]
        fn any_create_or_update_body_decodes_or_is_refused(
            shaped in body(CREATE_KEYS),
            raw in proptest::collection::vec(proptest::num::u8::ANY, 0..64),
            filters in "[ -~]{0,40}",
        ) {
            let text = serde_json::to_vec(&shaped).unwrap();
            let _ = create_request(&text, Some("n"));
            let _ = update_request(&text);
            let _ = create_request(&raw, None);
            let _ = Filters::parse(Some(&filters));
            let _ = parse_filters(Some(&filters), &["label", "name"]);
        }
    }

    #[test]
    fn create_bodies_from_the_cli_decode() {
        let body = br#"{"Hostname":"","User":"","Env":["A=1"],"Cmd":["echo","hi"],"Image":"busybox","Entrypoint":null,
            "Labels":{"k":"v"},"Tty":false,"OpenStdin":false,"WorkingDir":"",
            "HostConfig":{"Memory":33554432,"PidsLimit":null,"NanoCpus":500000000,"AutoRemove":true,"NetworkMode":"bridge",
            "Binds":null,"PortBindings":{},"RestartPolicy":{"Name":"no","MaximumRetryCount":0},"Mounts":null}}"#;
        let request = create_request(body, Some("web")).unwrap();
        assert_eq!(request.name.as_deref(), Some("web"));
        assert_eq!(request.image, "busybox");
        assert_eq!(request.cmd, Some(vec!["echo".to_string(), "hi".to_string()]));
        assert_eq!(request.entrypoint, None);
        assert_eq!(request.limits.memory_bytes, Some(32 << 20));
        assert_eq!(request.limits.nano_cpus, Some(500_000_000));
        assert!(request.auto_remove && request.labels.contains_key("k"));

        let reset = create_request(br#"{"Image":"busybox","Entrypoint":[""],"Cmd":"sh"}"#, None).unwrap();
        assert_eq!((reset.entrypoint, reset.cmd), (Some(vec![]), Some(vec!["sh".to_string()])));
    }

    fn error(body: &[u8]) -> String {
        create_request(body, None).map(|_| String::new()).unwrap_or_else(|e| e.to_string())
    }

    #[test]
    fn what_stratus_cannot_do_is_refused_by_name() {
        assert_eq!(
            error(br#"{"Image":"busybox","HostConfig":{"Memory":1000}}"#),
            "Minimum memory limit allowed is 6MB"
        );
        assert_eq!(
            error(br#"{"Image":"busybox","HostConfig":{"Binds":["/a"]}}"#),
            "invalid volume specification: '/a'"
        );
        assert!(error(br#"{"Image":"busybox","HostConfig":{"RestartPolicy":{"Name":"often"}}}"#).contains("restart"));
        assert!(
            error(br#"{"Image":"busybox","HostConfig":{"PortBindings":{"80/udp":[{"HostPort":"x"}]}}}"#)
                .contains("port")
        );
        assert_eq!(error(br#"{"Cmd":["x"]}"#), "config.Image is empty");
        assert!(error(b"{not json").starts_with("invalid container config"));
    }

    #[test]
    fn filters_and_durations() {
        assert!(Filters::parse(Some(r#"{"bogus":["x"]}"#)).is_err());
        let new = Filters::parse(Some(r#"{"label":["a=b","c"]}"#)).unwrap();
        let old = Filters::parse(Some(r#"{"label":{"a=b":true,"c":true}}"#)).unwrap();
        assert_eq!(format!("{new:?}"), format!("{old:?}"));
        assert_eq!(human_duration(Duration::from_millis(300)), "Less than a second");
        assert_eq!(human_duration(Duration::from_secs(5)), "5 seconds");
        assert_eq!(human_duration(Duration::from_secs(90)), "About a minute");
        assert_eq!(human_duration(Duration::from_secs(3 * 3600)), "3 hours");
    }

    #[test]
    fn logs_split_at_line_ends() {
        let entry =
            LogEntry { stream: containers::Stream::Stdout, time: SystemTime::UNIX_EPOCH, bytes: b"a\nb\nc".to_vec() };
        let lines: Vec<Vec<u8>> = split_lines(vec![entry]).into_iter().map(|l| l.bytes).collect();
        assert_eq!(lines, vec![b"a\n".to_vec(), b"b\n".to_vec(), b"c".to_vec()]);
    }
}
