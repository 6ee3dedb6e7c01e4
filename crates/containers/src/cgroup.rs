//! A container's cgroup, made, limited, joined and removed by Stratus itself: the same files
//! youki's libcgroups 0.7 writes for the same `LinuxResources` (and the same conversions for cgroup
//! v2), without its per-call parsing of `/proc/self/mountinfo` for each controller. The host's
//! hierarchies are read once per process.
//!
//! Each limit becomes a list of [`Write`]s (a pure function of the resources and of what the
//! cgroup's files hold now), which the unit tests check; [`Cgroup`] carries them out.

use std::fs;
use std::io::{self, Write as _};
use std::path::{Component, Path, PathBuf};
use std::sync::OnceLock;
use std::time::Duration;

use oci_spec::runtime::{LinuxBlockIo, LinuxCpu, LinuxDeviceCgroup, LinuxMemory, LinuxResources};

/// The host's cgroup hierarchies.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Hierarchies {
    /// cgroup v1: every mounted hierarchy, named ones (`name=systemd`) and, on a hybrid host, the
    /// controller-less cgroup2 one too, as runc joins them all.
    V1(Vec<Hierarchy>),
    /// cgroup v2 mounted at `root`, whose `cgroup.controllers` lists `controllers`.
    V2 { root: PathBuf, controllers: Vec<String> },
}

#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Hierarchy {
    pub mount: PathBuf,
    /// `cpu`, `cpuacct`; `name=systemd`; none for a cgroup2 hierarchy.
    pub controllers: Vec<String>,
}

/// Mount options of a v1 hierarchy that are not controllers.
const NOT_CONTROLLERS: [&str; 7] =
    ["rw", "ro", "xattr", "noprefix", "clone_children", "cpuset_v2_mode", "favordynmods"];

/// The cgroup v2 controllers libcgroups enables for a container's cgroup (the others it knows
/// nothing about, such as `rdma` and `misc`, stay off).
const V2_CONTROLLERS: [&str; 6] = ["cpu", "cpuset", "hugetlb", "io", "memory", "pids"];

/// Makes a cgroup v1 host count block I/O to the disk holding `dir` (the data directory, or a
/// bind mount's source) in `blkio.throttle.io_service_bytes`, which `docker stats` reads. On
/// recent kernels (this host's 6.18) a disk's throttling, and with it that count, starts only once
/// some cgroup configures a throttle on the disk; until then every container shows 0 B. A rule of
/// 0 (no limit) in `parent`, the cgroup under which Stratus makes containers, starts it and
/// limits nothing. Once per filesystem and process; best effort.
pub(crate) fn count_block_io(dir: &Path, parent: &str) {
    use std::os::unix::fs::MetadataExt as _;
    static COUNTED: std::sync::Mutex<Vec<u64>> = std::sync::Mutex::new(Vec::new());
    let root = Path::new("/sys/fs/cgroup/blkio");
    let Ok(device) = fs::metadata(dir).map(|m| m.dev()) else { return };
    {
        let mut counted = COUNTED.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if counted.contains(&device) {
            return;
        }
        counted.push(device);
    }
    if !root.join("blkio.throttle.read_bps_device").exists() {
        return;
    }
    // Throttles are set on whole disks; a partition's disk is its parent in sysfs.
    let sysfs = PathBuf::from(format!("/sys/dev/block/{}:{}", libc::major(device), libc::minor(device)));
    let disk = if sysfs.join("partition").exists() { sysfs.join("../dev") } else { sysfs.join("dev") };
    let Ok(disk) = fs::read_to_string(disk) else { return };
    let cgroup = root.join(parent.trim_start_matches('/'));
    let rule = format!("{} 0", disk.trim());
    if let Err(error) =
        fs::create_dir_all(&cgroup).and_then(|()| fs::write(cgroup.join("blkio.throttle.read_bps_device"), &rule))
    {
        tracing::debug!(%error, rule, "cannot start the disk's block I/O accounting");
    }
}

impl Hierarchies {
    /// This host's, read from `/proc/self/mountinfo` on first use.
    pub(crate) fn host() -> &'static Hierarchies {
        static HOST: OnceLock<Hierarchies> = OnceLock::new();
        HOST.get_or_init(|| {
            let mut hierarchies = Self::parse(&fs::read_to_string("/proc/self/mountinfo").unwrap_or_default());
            if let Hierarchies::V2 { root, controllers } = &mut hierarchies {
                let available = fs::read_to_string(root.join("cgroup.controllers")).unwrap_or_default();
                *controllers = available.split_whitespace().map(str::to_string).collect();
            }
            hierarchies
        })
    }

    /// cgroup v1 if any v1 hierarchy is mounted (a hybrid host's cgroup2 mount, which holds no
    /// controller v1 holds, is then one more hierarchy to join), else cgroup v2.
    fn parse(mountinfo: &str) -> Hierarchies {
        let (mut v1, mut v2) = (Vec::<Hierarchy>::new(), Vec::new());
        for line in mountinfo.lines() {
            // `id parent dev root mount-point options [optional...] - type source super-options`
            let Some((before, after)) = line.split_once(" - ") else { continue };
            let (Some(mount), mut after) = (before.split(' ').nth(4), after.split(' ')) else { continue };
            let (fs_type, options) = (after.next(), after.nth(1).unwrap_or_default());
            let mount = PathBuf::from(mount);
            match fs_type {
                Some("cgroup") => {
                    let controllers: Vec<String> = (options.split(','))
                        .filter(|o| !NOT_CONTROLLERS.contains(o) && (o.starts_with("name=") || !o.contains('=')))
                        .map(str::to_string)
                        .collect();
                    // The same hierarchy mounted twice is joined once.
                    if !v1.iter().any(|h| h.controllers == controllers) {
                        v1.push(Hierarchy { mount, controllers });
                    }
                }
                Some("cgroup2") if v2.is_empty() => v2.push(mount),
                _ => {}
            }
        }
        match v2.pop() {
            Some(unified) if !v1.is_empty() => {
                v1.push(Hierarchy { mount: unified, controllers: Vec::new() });
                Hierarchies::V1(v1)
            }
            Some(root) => Hierarchies::V2 { root, controllers: Vec::new() },
            None => Hierarchies::V1(v1),
        }
    }

    /// Where the v1 hierarchy holding `controller` is mounted.
    pub(crate) fn v1_mount(&self, controller: &str) -> Option<&Path> {
        let Hierarchies::V1(hierarchies) = self else { return None };
        hierarchies.get(self.v1_index(controller)?).map(|h| h.mount.as_path())
    }

    fn v1_index(&self, controller: &str) -> Option<usize> {
        let Hierarchies::V1(hierarchies) = self else { return None };
        hierarchies.iter().position(|h| h.controllers.iter().any(|c| c == controller))
    }
}

/// A container's cgroup: the directory `path` (such as `/stratus/<id>`) under every hierarchy.
#[derive(Debug)]
pub struct Cgroup {
    hierarchies: &'static Hierarchies,
    /// On v1 one per hierarchy, in the order of [`Hierarchies::V1`]; on v2 the one directory.
    dirs: Vec<PathBuf>,
}

impl Cgroup {
    /// The cgroup at `path`, whether or not it exists yet (cheap: the host's hierarchies are read
    /// once per process).
    pub fn new(path: &str) -> Cgroup {
        let hierarchies = Hierarchies::host();
        let relative = path.trim_start_matches('/');
        let dirs = match hierarchies {
            Hierarchies::V1(list) => list.iter().map(|h| h.mount.join(relative)).collect(),
            Hierarchies::V2 { root, .. } => vec![root.join(relative)],
        };
        Cgroup { hierarchies, dirs }
    }

    /// Makes the directories (under every v1 hierarchy, as runc does; on v2 the one directory,
    /// with the parents' controllers enabled) and writes `resources`, device rules included.
    pub fn create(&self, resources: &LinuxResources) -> io::Result<()> {
        match self.hierarchies {
            Hierarchies::V1(_) => {
                for dir in &self.dirs {
                    fs::create_dir_all(dir).map_err(|e| named("cannot create", dir, e))?;
                }
                self.fill_cpuset()?;
                let mut writes = v1_writes(resources, |controller, file| self.read(controller, file))?;
                writes.extend(v1_device_writes(resources.devices().as_deref().unwrap_or_default()));
                self.write_all(&writes)
            }
            Hierarchies::V2 { root, controllers } => {
                self.make_v2(root, controllers)?;
                // Device rules on v2 need an eBPF program; libcgroups 0.7 loads one only with its
                // `cgroupsv2_devices` feature, which Stratus's build never had: none here either.
                self.write_all(&v2_writes(resources, |controller, file| self.read(controller, file))?)
            }
        }
    }

    /// Writes the limits of `resources` that are set (`docker update`): no device rules.
    pub fn apply(&self, resources: &LinuxResources) -> io::Result<()> {
        let writes = match self.hierarchies {
            Hierarchies::V1(_) => v1_writes(resources, |controller, file| self.read(controller, file))?,
            Hierarchies::V2 { .. } => v2_writes(resources, |controller, file| self.read(controller, file))?,
        };
        self.write_all(&writes)
    }

    /// Moves process `pid`, with its threads, into every directory.
    pub fn add_process(&self, pid: i32) -> io::Result<()> {
        let pid = pid.to_string();
        self.dirs.iter().try_for_each(|dir| write_file(&dir.join("cgroup.procs"), &pid))
    }

    /// The cgroup2 directory (a hybrid host's controller-less one, or v2's), which a new process
    /// can be cloned straight into (`CLONE_INTO_CGROUP`) instead of being moved there.
    pub fn v2_dir(&self) -> Option<&Path> {
        match self.hierarchies {
            Hierarchies::V1(list) => {
                list.iter().zip(&self.dirs).find(|(h, _)| h.controllers.is_empty()).map(|(_, dir)| dir.as_path())
            }
            Hierarchies::V2 { .. } => self.dirs.first().map(PathBuf::as_path),
        }
    }

    /// Moves the calling thread into every v1 directory by writing 0 to its `tasks`; called by a
    /// new process while it has one thread, which is then the whole process. Moving a process by
    /// pid (`cgroup.procs`) takes the kernel's global `cgroup_threadgroup_rwsem` for writing, and
    /// the first writer after a quiet spell waits for an RCU grace period: 3-17 ms in ~40% of
    /// container starts here. A thread moving itself takes no such lock.
    pub fn join_v1_self(&self) -> io::Result<()> {
        let Hierarchies::V1(list) = self.hierarchies else { return Ok(()) };
        let v1 = list.iter().zip(&self.dirs).filter(|(h, _)| !h.controllers.is_empty());
        v1.map(|(_, dir)| dir).try_for_each(|dir| write_file(&dir.join("tasks"), "0"))
    }

    /// SIGKILLs what is still in it, then removes the directories (and any cgroups the container
    /// made inside them).
    pub fn remove(&self) -> io::Result<()> {
        self.dirs.iter().try_for_each(|dir| remove_dir(dir))
    }

    /// The directory of the v1 hierarchy holding `controller` (the one directory on v2).
    fn dir(&self, controller: &str) -> io::Result<&Path> {
        let index = match self.hierarchies {
            Hierarchies::V1(_) => self.hierarchies.v1_index(controller),
            Hierarchies::V2 { .. } => Some(0),
        };
        index.and_then(|i| self.dirs.get(i)).map(PathBuf::as_path).ok_or_else(|| {
            io::Error::new(io::ErrorKind::Unsupported, format!("the {controller} cgroup controller is not mounted"))
        })
    }

    fn read(&self, controller: &str, file: &str) -> Option<String> {
        fs::read_to_string(self.dir(controller).ok()?.join(file)).ok()
    }

    /// Writes each value with its own write(2), through one open file for a run of writes into
    /// the same file (device rules): opening costs more than writing.
    fn write_all(&self, writes: &[Write]) -> io::Result<()> {
        let mut open: Option<(PathBuf, fs::File)> = None;
        for write in writes {
            let path = self.dir(write.controller)?.join(write.file);
            let file = match open.take() {
                Some((open_path, file)) if open_path == path => file,
                _ => fs::OpenOptions::new().write(true).open(&path).map_err(|e| named("cannot open", &path, e))?,
            };
            let (path, file) = open.insert((path, file));
            (file.write_all(write.value.as_bytes()))
                .map_err(|e| named(&format!("cannot write {:?} to", write.value), path, e))?;
        }
        Ok(())
    }

    /// A new v1 cpuset directory (and its new parents) has empty `cpuset.cpus` and `cpuset.mems`,
    /// which the kernel refuses a process to join: each gets its parent's.
    fn fill_cpuset(&self) -> io::Result<()> {
        let (Some(mount), Ok(dir)) = (self.hierarchies.v1_mount("cpuset"), self.dir("cpuset")) else { return Ok(()) };
        ["cpuset.cpus", "cpuset.mems"].into_iter().try_for_each(|file| fill_from_parent(mount, dir, file).map(drop))
    }

    /// Makes the v2 directory and its parents, enabling in each parent the controllers
    /// libcgroups enables (those of the root that it knows), as far as the kernel lets it.
    fn make_v2(&self, root: &Path, available: &[String]) -> io::Result<()> {
        let [dir] = self.dirs.as_slice() else { return Ok(()) };
        let wanted: Vec<&str> = available.iter().map(String::as_str).filter(|c| V2_CONTROLLERS.contains(c)).collect();
        let mut current = root.to_path_buf();
        for component in dir.strip_prefix(root).unwrap_or(Path::new("")).components() {
            let Component::Normal(name) = component else { continue };
            let subtree = current.join("cgroup.subtree_control");
            let enabled = fs::read_to_string(&subtree).unwrap_or_default();
            for controller in wanted.iter().filter(|c| !enabled.split_whitespace().any(|e| e == **c)) {
                // Best effort, as libcgroups: a limit needing a controller that could not be
                // enabled fails when written, naming its file.
                if let Err(error) = write_file(&subtree, &format!("+{controller}")) {
                    tracing::debug!(%error, "cgroup controller not enabled");
                }
            }
            current.push(name);
            if let Err(e) = fs::create_dir(&current)
                && e.kind() != io::ErrorKind::AlreadyExists
            {
                return Err(named("cannot create", &current, e));
            }
        }
        Ok(())
    }
}

/// The value of `file` in `dir`, copied from the nearest ancestor (up to `mount`) if empty;
/// returns it.
fn fill_from_parent(mount: &Path, dir: &Path, file: &str) -> io::Result<String> {
    let path = dir.join(file);
    let value = read_file(&path)?;
    match dir.parent() {
        Some(parent) if value.trim().is_empty() && dir != mount && parent.starts_with(mount) => {
            let inherited = fill_from_parent(mount, parent, file)?;
            write_file(&path, &inherited)?;
            Ok(inherited)
        }
        _ => Ok(value),
    }
}

/// Removes cgroup `dir`, killing what is still in it and removing the cgroups made inside it
/// first. The killed processes leave the cgroup as they exit: until then rmdir says EBUSY.
fn remove_dir(dir: &Path) -> io::Result<()> {
    let mut delay = Duration::from_millis(1);
    for _ in 0..12 {
        match fs::remove_dir(dir) {
            Ok(()) => return Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) if e.raw_os_error() == Some(libc::EBUSY) => {}
            Err(e) => return Err(named("cannot remove", dir, e)),
        }
        // v2's cgroup.kill (Linux 5.14) kills the whole subtree, racing no fork; else each process.
        if write_file(&dir.join("cgroup.kill"), "1").is_err() {
            let procs = dir.join("cgroup.procs");
            for pid in read_file(&procs)?.lines().filter_map(|p| rustix::process::Pid::from_raw(p.parse().ok()?)) {
                // Gone already: rmdir's answer tells.
                let _ = rustix::process::kill_process(pid, rustix::process::Signal::KILL);
            }
        }
        let children: Vec<PathBuf> = (fs::read_dir(dir).map_err(|e| named("cannot read", dir, e))?)
            .filter_map(|entry| entry.ok().filter(|e| e.file_type().is_ok_and(|t| t.is_dir())))
            .map(|entry| entry.path())
            .collect();
        children.iter().try_for_each(|child| remove_dir(child))?;
        std::thread::sleep(delay);
        delay = (delay * 2).min(Duration::from_millis(100));
    }
    Err(named("cannot remove", dir, io::Error::from_raw_os_error(libc::EBUSY)))
}

fn named(what: &str, path: &Path, error: io::Error) -> io::Error {
    io::Error::new(error.kind(), format!("{what} {}: {error}", path.display()))
}

fn read_file(path: &Path) -> io::Result<String> {
    fs::read_to_string(path).map_err(|e| named("cannot read", path, e))
}

/// One write(2), as the kernel takes a cgroup file's value.
fn write_file(path: &Path, value: &str) -> io::Result<()> {
    let write = fs::OpenOptions::new().write(true).open(path).and_then(|mut file| file.write_all(value.as_bytes()));
    write.map_err(|e| named(&format!("cannot write {value:?} to"), path, e))
}

/// `value` written into `file` of the container's directory under the v1 hierarchy holding
/// `controller` (on v2, the one directory).
#[derive(Debug)]
struct Write {
    controller: &'static str,
    file: &'static str,
    value: String,
}

fn push(writes: &mut Vec<Write>, controller: &'static str, file: &'static str, value: impl ToString) {
    writes.push(Write { controller, file, value: value.to_string() });
}

fn invalid(message: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, message)
}

/// The cgroup v1 writes of `resources`' limits (device rules aside), as libcgroups 0.7 makes
/// them. `read(controller, file)` is what the file holds now, `None` if it does not exist.
/// Hugepage, network, RDMA and unified settings are not written: Stratus's specs never carry them.
fn v1_writes(resources: &LinuxResources, read: impl Fn(&str, &str) -> Option<String>) -> io::Result<Vec<Write>> {
    let mut writes = Vec::new();
    if let Some(cpu) = resources.cpu() {
        v1_cpu(&mut writes, cpu);
    }
    if let Some(memory) = resources.memory() {
        v1_memory(&mut writes, memory, &read)?;
    }
    if let Some(pids) = resources.pids() {
        let limit = pids.limit();
        push(&mut writes, "pids", "pids.max", if limit > 0 { limit.to_string() } else { "max".into() });
    }
    if let Some(io) = resources.block_io() {
        v1_block_io(&mut writes, io, &read);
    }
    Ok(writes)
}

fn v1_cpu(writes: &mut Vec<Write>, cpu: &LinuxCpu) {
    // Zero means unset, except for the burst and idle values.
    let nonzero = |v: Option<u64>| v.filter(|v| *v != 0);
    if let Some(shares) = nonzero(cpu.shares()) {
        push(writes, "cpu", "cpu.shares", shares);
    }
    if let Some(period) = nonzero(cpu.period()) {
        push(writes, "cpu", "cpu.cfs_period_us", period);
    }
    if let Some(quota) = cpu.quota().filter(|q| *q != 0) {
        push(writes, "cpu", "cpu.cfs_quota_us", quota);
    }
    if let Some(burst) = cpu.burst() {
        push(writes, "cpu", "cpu.cfs_burst_us", burst);
    }
    if let Some(runtime) = cpu.realtime_runtime().filter(|r| *r != 0) {
        push(writes, "cpu", "cpu.rt_runtime_us", runtime);
    }
    if let Some(period) = nonzero(cpu.realtime_period()) {
        push(writes, "cpu", "cpu.rt_period_us", period);
    }
    idle_and_cpuset(writes, cpu);
}

/// The same files on v1 and v2.
fn idle_and_cpuset(writes: &mut Vec<Write>, cpu: &LinuxCpu) {
    if let Some(idle) = cpu.idle() {
        push(writes, "cpu", "cpu.idle", idle);
    }
    if let Some(cpus) = cpu.cpus() {
        push(writes, "cpuset", "cpuset.cpus", cpus);
    }
    if let Some(mems) = cpu.mems() {
        push(writes, "cpuset", "cpuset.mems", mems);
    }
}

fn v1_memory(
    writes: &mut Vec<Write>,
    memory: &LinuxMemory,
    read: impl Fn(&str, &str) -> Option<String>,
) -> io::Result<()> {
    const LIMIT: &str = "memory.limit_in_bytes";
    const MEMSW: &str = "memory.memsw.limit_in_bytes";
    // The kernel keeps memory+swap at least the memory limit, so (as runc) memsw goes first when
    // it grows past the current limit or becomes unlimited, last otherwise. Zero means unset.
    let (limit, memsw, memsw_first) = match (memory.limit(), memory.swap()) {
        (Some(-1), None) => (-1, -1, true),
        (Some(limit), None) => (limit, 0, false),
        (Some(limit), Some(swap)) => {
            let current = read("memory", LIMIT).and_then(|v| v.trim().parse::<i64>().ok()).unwrap_or(i64::MAX);
            (limit, swap, swap == -1 || current < swap)
        }
        (None, swap) => (0, swap.unwrap_or(0), false),
    };
    let mut pair = [(LIMIT, limit), (MEMSW, memsw)];
    if memsw_first {
        pair.reverse();
    }
    for (file, value) in pair.into_iter().filter(|(_, v)| *v != 0) {
        push(writes, "memory", file, value);
    }
    if let Some(reservation) = memory.reservation().filter(|r| *r != 0) {
        push(writes, "memory", "memory.soft_limit_in_bytes", reservation);
    }
    push(writes, "memory", "memory.oom_control", u8::from(memory.disable_oom_killer() == Some(true)));
    if let Some(swappiness) = memory.swappiness() {
        if swappiness > 100 {
            return Err(invalid(format!("invalid swappiness {swappiness}: the range is 0-100")));
        }
        push(writes, "memory", "memory.swappiness", swappiness);
    }
    if let Some(kernel) = memory.kernel() {
        push(writes, "memory", "memory.kmem.limit_in_bytes", kernel);
    }
    if let Some(tcp) = memory.kernel_tcp() {
        push(writes, "memory", "memory.kmem.tcp.limit_in_bytes", tcp);
    }
    Ok(())
}

fn v1_block_io(writes: &mut Vec<Write>, io: &LinuxBlockIo, read: impl Fn(&str, &str) -> Option<String>) {
    // CFQ's files if the kernel has them, else BFQ's (CFQ left the kernel in 5.0).
    let cfq = read("blkio", "blkio.weight").is_some();
    if let Some(weight) = io.weight().filter(|w| *w != 0) {
        push(writes, "blkio", if cfq { "blkio.weight" } else { "blkio.bfq.weight" }, weight);
    }
    // libcgroups 0.7 does not write per-device weights on v1; runc does, so here they are.
    for device in io.weight_device().iter().flatten() {
        if let Some(weight) = device.weight() {
            let file = if cfq { "blkio.weight_device" } else { "blkio.bfq.weight_device" };
            push(writes, "blkio", file, format!("{}:{} {weight}", device.major(), device.minor()));
        }
    }
    for (file, devices) in [
        ("blkio.throttle.read_bps_device", io.throttle_read_bps_device()),
        ("blkio.throttle.write_bps_device", io.throttle_write_bps_device()),
        ("blkio.throttle.read_iops_device", io.throttle_read_iops_device()),
        ("blkio.throttle.write_iops_device", io.throttle_write_iops_device()),
    ] {
        for device in devices.iter().flatten() {
            push(writes, "blkio", file, format!("{}:{} {}", device.major(), device.minor(), device.rate()));
        }
    }
}

/// The device rules libcgroups 0.7 allows after a spec's own on v1: the usual character devices,
/// mknod of any device, the console, ptys and /dev/net/tun.
const LIBCGROUPS_DEVICES: [&str; 12] = [
    "c 1:3 rwm",
    "c 1:5 rwm",
    "c 1:7 rwm",
    "c 5:0 rwm",
    "c 1:9 rwm",
    "c 1:8 rwm",
    "c *:* m",
    "b *:* m",
    "c 5:1 rwm",
    "c 136:* rwm",
    "c 5:2 rwm",
    "c 10:200 rwm",
];

/// The v1 device rules: `devices`, then libcgroups' own, each into `devices.allow` or
/// `devices.deny` as `c 1:3 rwm` (`*` for any number, `a` for any type). libcgroups' rules that
/// `devices` already allow (after their last deny) are left out: the kernel would keep one copy,
/// and 11 fewer writes save ~50 µs a container.
fn v1_device_writes(devices: &[LinuxDeviceCgroup]) -> Vec<Write> {
    let rule = |allow: bool, value: String| Write {
        controller: "devices",
        file: if allow { "devices.allow" } else { "devices.deny" },
        value,
    };
    let own: Vec<Write> = devices.iter().map(|d| rule(d.allow(), d.to_string())).collect();
    let last_deny = own.iter().rposition(|w| w.file == "devices.deny").map_or(0, |i| i + 1);
    let allowed = |rule: &str| own[last_deny..].iter().any(|w| w.value == rule || w.value == "a *:* rwm");
    let missing: Vec<&str> = LIBCGROUPS_DEVICES.into_iter().filter(|d| !allowed(d)).collect();
    own.into_iter().chain(missing.into_iter().map(|d| rule(true, d.to_string()))).collect()
}

/// The cgroup v2 writes of `resources` (the kernel's cgroup-v2 interface files), converted from
/// the spec's v1 terms as libcgroups 0.7 (and runc) convert them. `read(_, file)` is what the
/// file holds now, `None` if it does not exist.
fn v2_writes(resources: &LinuxResources, read: impl Fn(&str, &str) -> Option<String>) -> io::Result<Vec<Write>> {
    let mut writes = Vec::new();
    if let Some(cpu) = resources.cpu() {
        v2_cpu(&mut writes, cpu, &read)?;
    }
    if let Some(io) = resources.block_io() {
        v2_io(&mut writes, io, &read)?;
    }
    if let Some(memory) = resources.memory() {
        v2_memory(&mut writes, memory)?;
    }
    if let Some(pids) = resources.pids() {
        // 0 becomes 1, as runc does (systemd takes 0 as no limit).
        let limit = match pids.limit() {
            0 => "1".to_string(),
            limit if limit > 0 => limit.to_string(),
            _ => "max".to_string(),
        };
        push(&mut writes, "pids", "pids.max", limit);
    }
    Ok(writes)
}

fn v2_cpu(writes: &mut Vec<Write>, cpu: &LinuxCpu, read: impl Fn(&str, &str) -> Option<String>) -> io::Result<()> {
    if cpu.realtime_runtime().is_some_and(|r| r > 0) || cpu.realtime_period().is_some_and(|p| p > 0) {
        return Err(invalid("realtime CPU limits are not supported on cgroup v2".into()));
    }
    if let Some(weight) = cpu.shares().map(shares_to_weight).filter(|w| *w != 0) {
        push(writes, "cpu", "cpu.weight", weight);
    }
    // `cpu.max` is "quota period", "max" for no quota; a period alone keeps the current quota.
    let max = match (cpu.quota(), cpu.period()) {
        (Some(quota), period) => {
            let quota = if quota > 0 { quota.to_string() } else { "max".into() };
            Some(match period {
                Some(period) => format!("{quota} {period}"),
                None => quota,
            })
        }
        (None, Some(period)) => {
            let current = read("cpu", "cpu.max").ok_or_else(|| invalid("cannot read cpu.max".into()))?;
            current.split_whitespace().next().map(|quota| format!("{quota} {period}"))
        }
        (None, None) => None,
    };
    if let Some(max) = max {
        push(writes, "cpu", "cpu.max", max);
    }
    if let Some(burst) = cpu.burst() {
        push(writes, "cpu", "cpu.max.burst", burst);
    }
    idle_and_cpuset(writes, cpu);
    Ok(())
}

/// v1's CPU shares (2-262144, default 1024) as v2's weight (1-10000, default 100): runc's
/// quadratic fit in log space, which keeps the ends and the defaults; 0 stays unset.
fn shares_to_weight(shares: u64) -> u64 {
    match shares {
        0 => 0,
        1..=2 => 1,
        262_144.. => 10_000,
        _ => {
            let log = (shares as f64).log2();
            let exponent = (log * log + 125.0 * log) / 612.0 - 7.0 / 34.0;
            (10f64.powf(exponent).ceil() as u64).clamp(1, 10_000)
        }
    }
}

fn v2_io(writes: &mut Vec<Write>, io: &LinuxBlockIo, read: impl Fn(&str, &str) -> Option<String>) -> io::Result<()> {
    for device in io.weight_device().iter().flatten() {
        if let Some(weight) = device.weight() {
            push(writes, "io", "io.bfq.weight", format!("{}:{} {weight}", device.major(), device.minor()));
        }
    }
    if io.leaf_weight().is_some_and(|w| w > 0) {
        return Err(invalid("a block I/O leaf weight cannot be set on cgroup v2".into()));
    }
    if let Some(weight) = io.weight().filter(|w| *w > 0) {
        if read("io", "io.bfq.weight").is_some() {
            push(writes, "io", "io.bfq.weight", weight);
        } else {
            // blkio's 10-1000 onto io.weight's 1-10000, linearly (in u64: libcgroups 0.7 does
            // it in u16, which wraps for weights above 16).
            push(writes, "io", "io.weight", 1 + (u64::from(weight).saturating_sub(10)) * 9999 / 990);
        }
    }
    for (key, devices) in [
        ("rbps", io.throttle_read_bps_device()),
        ("wbps", io.throttle_write_bps_device()),
        ("riops", io.throttle_read_iops_device()),
        ("wiops", io.throttle_write_iops_device()),
    ] {
        for device in devices.iter().flatten() {
            push(writes, "io", "io.max", format!("{}:{} {key}={}", device.major(), device.minor(), device.rate()));
        }
    }
    Ok(())
}

fn v2_memory(writes: &mut Vec<Write>, memory: &LinuxMemory) -> io::Result<()> {
    // -1 is "max", 0 leaves the file alone.
    let mut set = |file: &'static str, value: i64| match value {
        0 => {}
        -1 => push(writes, "memory", file, "max"),
        value => push(writes, "memory", file, value),
    };
    match (memory.limit(), memory.swap()) {
        (Some(limit), _) if limit < -1 => return Err(invalid(format!("invalid memory limit {limit}"))),
        (Some(_), Some(swap)) if swap < -1 => return Err(invalid(format!("invalid memory+swap limit {swap}"))),
        (Some(limit), Some(swap)) if swap == -1 || limit == -1 => {
            set("memory.swap.max", swap);
            set("memory.max", limit);
        }
        (Some(limit), Some(swap)) => {
            if swap < limit {
                return Err(invalid(format!("memory+swap limit {swap} is below the memory limit {limit}")));
            }
            // The spec's swap is v1's memory+swap; v2 limits swap alone.
            set("memory.swap.max", swap - limit);
            set("memory.max", limit);
        }
        (Some(limit), None) => {
            if limit == -1 {
                set("memory.swap.max", -1);
            }
            set("memory.max", limit);
        }
        (None, Some(_)) => return Err(invalid("a swap limit needs a memory limit".into())),
        (None, None) => {}
    }
    match memory.reservation() {
        Some(reservation) if reservation < -1 => Err(invalid(format!("invalid memory reservation {reservation}"))),
        Some(reservation) => {
            set("memory.low", reservation);
            Ok(())
        }
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use std::collections::HashMap;
    use std::time::{Instant, SystemTime};

    use oci_spec::runtime::{
        LinuxBlockIoBuilder, LinuxCpuBuilder, LinuxDeviceCgroupBuilder, LinuxMemoryBuilder, LinuxResourcesBuilder,
    };

    use super::*;
    use crate::security::Security;
    use crate::spec::tests::example_limits;
    use crate::spec::{self, BlockIo, DeviceLimit, Limits, Process};

    /// What a hybrid host like this one mounts, with a hierarchy mounted twice.
    const HYBRID: &str = "\
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu,cpuacct rw,relatime shared:9 - cgroup cgroup rw,cpu,cpuacct
34 31 0:31 / /sys/fs/cgroup/cpuset rw,relatime - cgroup cgroup rw,cpuset,clone_children
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
36 31 0:33 / /sys/fs/cgroup/devices rw,relatime - cgroup cgroup rw,devices
40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,xattr,release_agent=/x,name=systemd
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
42 23 0:32 / /mnt/memory rw,relatime - cgroup cgroup rw,memory
";

    /// The writes as `controller file value` lines.
    fn lines(writes: &[Write]) -> Vec<String> {
        writes.iter().map(|w| format!("{} {} {}", w.controller, w.file, w.value)).collect()
    }

    /// A cgroup directory whose files hold `files` (`file`, content); the others do not exist.
    fn holding<'a>(files: &'a [(&str, &str)]) -> impl Fn(&str, &str) -> Option<String> + 'a {
        |_, file| files.iter().find(|(f, _)| *f == file).map(|(_, content)| content.to_string())
    }

    fn v1(resources: &LinuxResources, files: &[(&str, &str)]) -> Vec<String> {
        lines(&v1_writes(resources, holding(files)).unwrap())
    }

    fn v2(resources: &LinuxResources, files: &[(&str, &str)]) -> Vec<String> {
        lines(&v2_writes(resources, holding(files)).unwrap())
    }

    fn memory(limit: Option<i64>, swap: Option<i64>) -> LinuxResources {
        let mut memory = LinuxMemoryBuilder::default();
        if let Some(limit) = limit {
            memory = memory.limit(limit);
        }
        if let Some(swap) = swap {
            memory = memory.swap(swap);
        }
        LinuxResourcesBuilder::default().memory(memory.build().unwrap()).build().unwrap()
    }

    /// The resources `spec::build` gives a container with `limits` and Docker's device rules.
    fn container_resources(limits: &Limits, security: &Security) -> LinuxResources {
        let mut spec = spec::build(&Process::default(), limits, Path::new("/r"), "/stratus/x", 0, 0).unwrap();
        security.apply(&mut spec).unwrap();
        spec.linux().as_ref().unwrap().resources().clone().unwrap()
    }

    #[test]
    fn hierarchies_come_from_mountinfo() {
        let Hierarchies::V1(hybrid) = Hierarchies::parse(HYBRID) else { panic!("not v1") };
        let mounts: Vec<(&str, String)> =
            hybrid.iter().map(|h| (h.mount.to_str().unwrap(), h.controllers.join(","))).collect();
        assert_eq!(
            mounts,
            [
                ("/sys/fs/cgroup/cpu,cpuacct", "cpu,cpuacct".to_string()),
                ("/sys/fs/cgroup/cpuset", "cpuset".into()),
                ("/sys/fs/cgroup/memory", "memory".into()),
                ("/sys/fs/cgroup/devices", "devices".into()),
                ("/sys/fs/cgroup/systemd", "name=systemd".into()),
                ("/sys/fs/cgroup/unified", String::new()),
            ]
        );
        let hybrid = Hierarchies::parse(HYBRID);
        assert_eq!(hybrid.v1_mount("cpuacct"), Some(Path::new("/sys/fs/cgroup/cpu,cpuacct")));
        assert_eq!(hybrid.v1_mount("blkio"), None);
        let unified = "30 23 0:26 / /sys/fs/cgroup rw,nosuid - cgroup2 cgroup2 rw,nsdelegate,memory_recursiveprot\n";
        assert_eq!(
            Hierarchies::parse(unified),
            Hierarchies::V2 { root: "/sys/fs/cgroup".into(), controllers: Vec::new() }
        );
        assert_eq!(Hierarchies::parse("garbage\n"), Hierarchies::V1(Vec::new()));
    }

    #[test]
    fn a_containers_limits_on_v1_are_libcgroups_files() {
        let resources = container_resources(&example_limits(), &Security::default());
        assert_eq!(
            v1(&resources, &[]),
            [
                "cpu cpu.shares 512",
                "cpu cpu.cfs_period_us 100000",
                "cpu cpu.cfs_quota_us 50000",
                "cpuset cpuset.cpus 0",
                "memory memory.limit_in_bytes 33554432",
                "memory memory.oom_control 0",
                "pids pids.max 64",
                "blkio blkio.bfq.weight 300",
                "blkio blkio.throttle.write_bps_device 1:3 1048576",
            ]
        );
        // CFQ's files where the kernel has them, per-device weights too.
        let io = LinuxBlockIoBuilder::default()
            .weight(500u16)
            .weight_device(vec![
                oci_spec::runtime::LinuxWeightDeviceBuilder::default()
                    .major(8)
                    .minor(0)
                    .weight(200u16)
                    .build()
                    .unwrap(),
            ])
            .build()
            .unwrap();
        let resources = LinuxResourcesBuilder::default().block_io(io).build().unwrap();
        assert_eq!(
            v1(&resources, &[("blkio.weight", "500\n")]),
            ["blkio blkio.weight 500", "blkio blkio.weight_device 8:0 200"]
        );
        let no_limits = LinuxResourcesBuilder::default()
            .pids(oci_spec::runtime::LinuxPidsBuilder::default().limit(0).build().unwrap());
        assert_eq!(v1(&no_limits.build().unwrap(), &[]), ["pids pids.max max"]);
    }

    #[test]
    fn v1_memory_and_swap_go_in_the_order_the_kernel_accepts() {
        let current = [("memory.limit_in_bytes", "33554432\n")];
        // Raising memory+swap past the current limit: memsw first.
        assert_eq!(
            v1(&memory(Some(64 << 20), Some(128 << 20)), &current)[..2],
            ["memory memory.memsw.limit_in_bytes 134217728", "memory memory.limit_in_bytes 67108864"]
        );
        // Lowering: the limit first.
        let current = [("memory.limit_in_bytes", "536870912\n")];
        assert_eq!(
            v1(&memory(Some(64 << 20), Some(128 << 20)), &current)[..2],
            ["memory memory.limit_in_bytes 67108864", "memory memory.memsw.limit_in_bytes 134217728"]
        );
        assert_eq!(
            v1(&memory(Some(-1), None), &[]),
            ["memory memory.memsw.limit_in_bytes -1", "memory memory.limit_in_bytes -1", "memory memory.oom_control 0"]
        );
        assert_eq!(v1(&memory(None, Some(1 << 30)), &[])[0], "memory memory.memsw.limit_in_bytes 1073741824");
        let swappy = LinuxMemoryBuilder::default().swappiness(101u64).build().unwrap();
        let resources = LinuxResourcesBuilder::default().memory(swappy).build().unwrap();
        assert!(v1_writes(&resources, holding(&[])).unwrap_err().to_string().contains("swappiness 101"));
    }

    #[test]
    fn v1_device_rules_deny_all_then_allow_docker_s_and_libcgroups_own() {
        let rules = lines(&v1_device_writes(
            container_resources(&Limits::default(), &Security::default()).devices().as_deref().unwrap(),
        ));
        assert_eq!(
            rules[..4],
            [
                "devices devices.deny a *:* rwm",
                "devices devices.allow c *:* m",
                "devices devices.allow b *:* m",
                "devices devices.allow c 1:3 rwm"
            ]
        );
        // Of libcgroups' rules, only /dev/net/tun is not among Docker's.
        assert_eq!(rules[11..], ["devices devices.allow c 136:* rwm", "devices devices.allow c 10:200 rwm"]);
        let privileged = Security { privileged: true, ..Security::default() };
        let rules = lines(&v1_device_writes(
            container_resources(&Limits::default(), &privileged).devices().as_deref().unwrap(),
        ));
        assert_eq!(rules, ["devices devices.allow a *:* rwm"]);
        // A deny after an allow: libcgroups' rules come after it, all of them.
        let deny_null = LinuxDeviceCgroupBuilder::default()
            .allow(false)
            .typ(oci_spec::runtime::LinuxDeviceType::C)
            .major(1)
            .minor(3)
            .access("rwm")
            .build()
            .unwrap();
        let rules = lines(&v1_device_writes(&[deny_null]));
        assert_eq!(rules[..2], ["devices devices.deny c 1:3 rwm", "devices devices.allow c 1:3 rwm"]);
        assert_eq!(rules.len(), 1 + LIBCGROUPS_DEVICES.len());
    }

    #[test]
    fn a_containers_limits_on_v2_are_converted_as_libcgroups_and_runc_do() {
        let resources = container_resources(&example_limits(), &Security::default());
        assert_eq!(
            v2(&resources, &[]),
            [
                "cpu cpu.weight 59",
                "cpu cpu.max 50000 100000",
                "cpuset cpuset.cpus 0",
                "io io.weight 2930",
                "io io.max 1:3 wbps=1048576",
                "memory memory.max 33554432",
                "pids pids.max 64",
            ]
        );
        for (shares, weight) in [(2, 1), (3, 2), (100, 17), (1024, 100), (262_144, 10_000), (0, 0)] {
            assert_eq!(shares_to_weight(shares), weight, "{shares}");
        }
        // BFQ takes blkio's weight as it is, and per-device weights.
        let io = LinuxBlockIoBuilder::default()
            .weight(500u16)
            .weight_device(vec![
                oci_spec::runtime::LinuxWeightDeviceBuilder::default()
                    .major(8)
                    .minor(0)
                    .weight(200u16)
                    .build()
                    .unwrap(),
            ])
            .throttle_read_iops_device(vec![
                oci_spec::runtime::LinuxThrottleDeviceBuilder::default()
                    .major(8)
                    .minor(0)
                    .rate(100u64)
                    .build()
                    .unwrap(),
            ])
            .build()
            .unwrap();
        let resources = LinuxResourcesBuilder::default().block_io(io.clone()).build().unwrap();
        assert_eq!(
            v2(&resources, &[("io.bfq.weight", "default 100\n")]),
            ["io io.bfq.weight 8:0 200", "io io.bfq.weight 500", "io io.max 8:0 riops=100"]
        );
        // 500 would wrap in libcgroups' u16 arithmetic.
        assert_eq!(v2(&resources, &[])[1], "io io.weight 4950");
    }

    #[test]
    fn v2_cpu_memory_and_pids_follow_the_kernels_formats() {
        let cpu = |quota: Option<i64>, period: Option<u64>| {
            let mut cpu = LinuxCpuBuilder::default();
            if let Some(quota) = quota {
                cpu = cpu.quota(quota);
            }
            if let Some(period) = period {
                cpu = cpu.period(period);
            }
            LinuxResourcesBuilder::default().cpu(cpu.build().unwrap()).build().unwrap()
        };
        assert_eq!(v2(&cpu(Some(-1), None), &[]), ["cpu cpu.max max"]);
        assert_eq!(v2(&cpu(Some(-1), Some(50_000)), &[]), ["cpu cpu.max max 50000"]);
        assert_eq!(v2(&cpu(None, Some(50_000)), &[("cpu.max", "20000 100000\n")]), ["cpu cpu.max 20000 50000"]);
        let realtime = LinuxCpuBuilder::default().realtime_runtime(1000i64).build().unwrap();
        let realtime = LinuxResourcesBuilder::default().cpu(realtime).build().unwrap();
        assert!(v2_writes(&realtime, holding(&[])).is_err());

        // v2's swap is swap alone: the spec's memory+swap less the limit.
        assert_eq!(
            v2(&memory(Some(64 << 20), Some(128 << 20)), &[]),
            ["memory memory.swap.max 67108864", "memory memory.max 67108864"]
        );
        assert_eq!(v2(&memory(Some(-1), None), &[]), ["memory memory.swap.max max", "memory memory.max max"]);
        for (limit, swap, error) in [
            (Some(64 << 20), Some(32 << 20), "below the memory limit"),
            (None, Some(1), "needs a memory limit"),
            (Some(-2), None, "invalid memory limit -2"),
        ] {
            let got = v2_writes(&memory(limit, swap), holding(&[])).unwrap_err().to_string();
            assert!(got.contains(error), "{got}");
        }
        let pids = |limit| {
            let pids = oci_spec::runtime::LinuxPidsBuilder::default().limit(limit).build().unwrap();
            v2(&LinuxResourcesBuilder::default().pids(pids).build().unwrap(), &[])
        };
        assert_eq!([pids(0), pids(-1), pids(7)], [["pids pids.max 1"], ["pids pids.max max"], ["pids pids.max 7"]]);
    }

    #[test]
    fn errors_name_the_file() {
        let error = write_file(Path::new("/nonexistent/memory.max"), "1").unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::NotFound);
        assert!(error.to_string().starts_with("cannot write \"1\" to /nonexistent/memory.max: "), "{error}");
    }

    /// Where this process's hierarchies put the cgroup at `path`, and the files worth comparing.
    fn limit_files(cgroup: &Cgroup) -> HashMap<String, String> {
        const FILES: [&str; 18] = [
            "memory.limit_in_bytes",
            "memory.memsw.limit_in_bytes",
            "memory.soft_limit_in_bytes",
            "memory.max",
            "memory.swap.max",
            "pids.max",
            "cpu.shares",
            "cpu.cfs_quota_us",
            "cpu.cfs_period_us",
            "cpu.weight",
            "cpu.max",
            "cpuset.cpus",
            "cpuset.mems",
            "devices.list",
            "blkio.throttle.write_bps_device",
            "blkio.throttle.read_iops_device",
            "io.max",
            "io.weight",
        ];
        let mut found = HashMap::new();
        for dir in &cgroup.dirs {
            for file in FILES {
                if let Ok(content) = fs::read_to_string(dir.join(file)) {
                    found.insert(file.to_string(), content);
                }
            }
        }
        found
    }

    fn unique(name: &str) -> String {
        let nanos = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).unwrap().subsec_nanos();
        format!("/stratus-test-{}-{nanos}-{name}", std::process::id())
    }

    /// A child that lives until its stdin closes.
    fn child() -> std::process::Child {
        std::process::Command::new("cat").stdin(std::process::Stdio::piped()).spawn().unwrap()
    }

    fn libcgroups_manager(path: &str) -> libcgroups::common::AnyCgroupManager {
        libcgroups::common::create_cgroup_manager(libcgroups::common::CgroupConfig {
            cgroup_path: path.into(),
            systemd_cgroup: false,
            container_name: "test".into(),
        })
        .unwrap()
    }

    fn libcgroups_options(resources: &LinuxResources) -> libcgroups::common::ControllerOpt<'_> {
        libcgroups::common::ControllerOpt {
            resources,
            disable_oom_killer: false,
            oom_score_adj: None,
            freezer_state: None,
        }
    }

    #[test]
    fn a_real_cgroup_is_made_limited_joined_and_removed_as_libcgroups_does() {
        if !crate::running_as_root() || Hierarchies::host() == &Hierarchies::V1(Vec::new()) {
            eprintln!("skipped: needs root and a cgroup filesystem");
            return;
        }
        use libcgroups::common::CgroupManager as _;
        // A throttle needs a disk; /dev/null (stratus_limits) is not one.
        let mut disks =
            fs::read_dir("/sys/block").unwrap().map(|e| format!("/dev/{}", e.unwrap().file_name().display()));
        let throttled: Vec<DeviceLimit> = disks
            .find(|disk| Path::new(disk).exists())
            .map(|path| DeviceLimit { path, value: 1 << 20 })
            .into_iter()
            .collect();
        let limits = Limits { block_io: BlockIo { write_bps: throttled, ..BlockIo::default() }, ..example_limits() };
        let resources = container_resources(&limits, &Security::default());
        let path = unique("own");
        let cgroup = Cgroup::new(&path);
        cgroup.create(&resources).unwrap();
        let mut process = child();
        cgroup.add_process(process.id() as i32).unwrap();
        let joined = fs::read_to_string(format!("/proc/{}/cgroup", process.id())).unwrap();
        assert_eq!(joined.lines().filter(|l| l.ends_with(&path)).count(), cgroup.dirs.len(), "{joined}");

        // The same through libcgroups, as libcontainer drives it: join, then limits.
        let theirs_path = unique("libcgroups");
        let theirs = libcgroups_manager(&theirs_path);
        let mut their_process = child();
        theirs.add_task(nix_pid(their_process.id())).unwrap();
        theirs.apply(&libcgroups_options(&resources)).unwrap();
        let ours = limit_files(&cgroup);
        assert_eq!(ours, limit_files(&Cgroup::new(&theirs_path)));
        assert!(ours.get("pids.max").is_some_and(|p| p.trim() == "64"), "{ours:?}");

        // docker update, then (where the kernel counts swap) memory+swap raised past the limit
        // and lowered below it, which the kernel takes only in the right order.
        let mut updates = vec![memory(Some(64 << 20), None)];
        if ours.contains_key("memory.memsw.limit_in_bytes") || ours.contains_key("memory.swap.max") {
            updates.extend([memory(Some(128 << 20), Some(256 << 20)), memory(Some(32 << 20), Some(48 << 20))]);
        }
        for update in updates {
            cgroup.apply(&update).unwrap();
            theirs.apply(&libcgroups_options(&update)).unwrap();
            assert_eq!(limit_files(&cgroup), limit_files(&Cgroup::new(&theirs_path)));
        }

        // A cgroup the container made inside its own goes too.
        fs::create_dir(cgroup.dirs[0].join("nested")).unwrap();
        cgroup.remove().unwrap();
        theirs.remove().unwrap();
        for process in [&mut process, &mut their_process] {
            use std::os::unix::process::ExitStatusExt as _;
            assert_eq!(process.wait().unwrap().signal(), Some(libc::SIGKILL));
        }
        assert!(cgroup.dirs.iter().all(|dir| !dir.exists()));
    }

    fn nix_pid(pid: u32) -> nix::unistd::Pid {
        nix::unistd::Pid::from_raw(pid as i32)
    }

    /// `cargo test -p containers --release --lib cgroup_cycle_time -- --ignored --nocapture`: a
    /// container's cgroup (Docker's device rules, a memory limit) made and joined, then removed
    /// once its process has exited, by Stratus and by libcgroups (as libcontainer drives it).
    #[test]
    #[ignore = "a measurement: needs root, prints medians"]
    fn cgroup_cycle_time() {
        use libcgroups::common::CgroupManager as _;
        let limits = Limits { memory_bytes: Some(64 << 20), ..Limits::default() };
        let resources = container_resources(&limits, &Security::default());
        // Each step's median over 200 cgroups, each joined by a new process; the last step
        // (removal) after the process exited.
        type Step<'a> = &'a dyn Fn(&str, u32);
        let cycle = |steps: &[Step]| {
            let mut times = vec![Vec::new(); steps.len()];
            let mut timed = |i: usize, step: Step, path: &str, pid: u32| {
                let start = Instant::now();
                step(path, pid);
                times[i].push(start.elapsed());
            };
            let (remove, make) = steps.split_last().unwrap();
            for _ in 0..200 {
                let path = unique("bench");
                let mut process = child();
                for (i, step) in make.iter().enumerate() {
                    timed(i, *step, &path, process.id());
                }
                drop(process.stdin.take());
                process.wait().unwrap();
                timed(make.len(), *remove, &path, process.id());
            }
            times
                .into_iter()
                .map(|mut t| {
                    t.sort();
                    t[t.len() / 2]
                })
                .collect::<Vec<Duration>>()
        };
        let ours = cycle(&[
            &|path, _| Cgroup::new(path).create(&resources).unwrap(),
            &|path, pid| Cgroup::new(path).add_process(pid as i32).unwrap(),
            &|path, _| Cgroup::new(path).remove().unwrap(),
        ]);
        // As libcontainer drives it: one manager joins and limits, another removes.
        let theirs = cycle(&[
            &|path, pid| {
                let manager = libcgroups_manager(path);
                manager.add_task(nix_pid(pid)).unwrap();
                manager.apply(&libcgroups_options(&resources)).unwrap();
            },
            &|path, _| libcgroups_manager(path).remove().unwrap(),
        ]);
        println!("Stratus p50 of 200: new+create {:?}, add_process {:?}, remove {:?}", ours[0], ours[1], ours[2]);
        println!(
            "libcgroups p50 of 200: create_cgroup_manager+add_task+apply {:?}, create_cgroup_manager+remove {:?}",
            theirs[0], theirs[1]
        );
    }
}
