//! From what a container runs to the OCI runtime spec (`config.json`) the runtime reads: the
//! process, Docker's default capabilities and device rules, the namespaces, and the cgroup limits.

use std::path::Path;

use oci_spec::runtime::{
    Capability, LinuxBlockIo, LinuxBlockIoBuilder, LinuxCapabilitiesBuilder, LinuxCpuBuilder, LinuxDeviceCgroup,
    LinuxDeviceCgroupBuilder, LinuxDeviceType, LinuxMemoryBuilder, LinuxPidsBuilder, LinuxResources,
    LinuxResourcesBuilder, LinuxThrottleDevice, LinuxThrottleDeviceBuilder, LinuxWeightDeviceBuilder, RootBuilder,
    Spec, UserBuilder,
};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// What a container runs, settled at create from the image's config and the request.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Process {
    /// The entrypoint followed by the command.
    pub args: Vec<String>,
    pub env: Vec<String>,
    pub cwd: String,
    /// As Docker takes it: `name`, `uid`, `name:group` or `uid:gid`; empty means root.
    pub user: String,
    pub hostname: String,
}

/// cgroup limits; `None` (or empty) means unlimited.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Limits {
    pub memory_bytes: Option<i64>,
    pub pids: Option<i64>,
    /// CPU time in billionths of a CPU (`--cpus 0.5` is 500_000_000).
    pub nano_cpus: Option<i64>,
    /// Relative weight (`--cpu-shares`).
    pub cpu_shares: Option<u64>,
    /// The CPUs and memory nodes it may use, as cpuset lists (`0-1,3`).
    pub cpuset_cpus: Option<String>,
    pub cpuset_mems: Option<String>,
    #[serde(default)]
    pub block_io: BlockIo,
}

/// Block I/O limits: a relative weight (10-1000) and, per device (by path, as Docker keeps
/// them), weights and throttles in bytes or operations per second.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlockIo {
    pub weight: Option<u16>,
    pub weight_devices: Vec<DeviceLimit>,
    pub read_bps: Vec<DeviceLimit>,
    pub write_bps: Vec<DeviceLimit>,
    pub read_iops: Vec<DeviceLimit>,
    pub write_iops: Vec<DeviceLimit>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceLimit {
    pub path: String,
    pub value: u64,
}

/// The CFS period `--cpus` is expressed in, as in Docker.
const CPU_PERIOD_US: u64 = 100_000;

/// Docker's default capability set.
pub(crate) const CAPABILITIES: [Capability; 14] = [
    Capability::Chown,
    Capability::DacOverride,
    Capability::Fsetid,
    Capability::Fowner,
    Capability::Mknod,
    Capability::NetRaw,
    Capability::Setgid,
    Capability::Setuid,
    Capability::Setfcap,
    Capability::Setpcap,
    Capability::NetBindService,
    Capability::SysChroot,
    Capability::Kill,
    Capability::AuditWrite,
];

/// Docker's default device rules: deny everything, then allow the usual character devices and
/// mknod (without access) of any device.
const DEVICES: [(LinuxDeviceType, Option<i64>, Option<i64>, &str); 11] = [
    (LinuxDeviceType::C, None, None, "m"),
    (LinuxDeviceType::B, None, None, "m"),
    (LinuxDeviceType::C, Some(1), Some(3), "rwm"),
    (LinuxDeviceType::C, Some(1), Some(5), "rwm"),
    (LinuxDeviceType::C, Some(1), Some(7), "rwm"),
    (LinuxDeviceType::C, Some(1), Some(8), "rwm"),
    (LinuxDeviceType::C, Some(1), Some(9), "rwm"),
    (LinuxDeviceType::C, Some(5), Some(0), "rwm"),
    (LinuxDeviceType::C, Some(5), Some(1), "rwm"),
    (LinuxDeviceType::C, Some(5), Some(2), "rwm"),
    (LinuxDeviceType::C, Some(136), None, "rwm"),
];

/// The spec for a container whose root filesystem is mounted at `rootfs`, with its cgroup at
/// `cgroup` (relative to each hierarchy). `uid`/`gid` come from [`resolve_user`].
pub fn build(process: &Process, limits: &Limits, rootfs: &Path, cgroup: &str, uid: u32, gid: u32) -> Result<Spec> {
    let invalid = |e: oci_spec::OciSpecError| Error::InvalidParameter(format!("cannot build the runtime spec: {e}"));
    let mut spec = Spec::default();
    spec.set_hostname(Some(process.hostname.clone()));
    spec.set_root(Some(RootBuilder::default().path(rootfs).readonly(false).build().map_err(invalid)?));

    let mut oci_process = spec.process().clone().unwrap_or_default();
    oci_process.set_args(Some(process.args.clone()));
    oci_process.set_env(Some(process.env.clone()));
    oci_process.set_cwd(if process.cwd.is_empty() { "/".into() } else { process.cwd.clone().into() });
    oci_process.set_user(UserBuilder::default().uid(uid).gid(gid).build().map_err(invalid)?);
    // Docker lets setuid binaries work; runc's template forbids it.
    oci_process.set_no_new_privileges(Some(false));
    let caps: oci_spec::runtime::Capabilities = CAPABILITIES.into_iter().collect();
    oci_process.set_capabilities(Some(
        LinuxCapabilitiesBuilder::default()
            .bounding(caps.clone())
            .effective(caps.clone())
            .permitted(caps)
            .build()
            .map_err(invalid)?,
    ));
    // No rlimits of its own: the container inherits Stratus's, as Docker's inherit dockerd's.
    oci_process.set_rlimits(None);
    spec.set_process(Some(oci_process));

    let mut linux = spec.linux().clone().unwrap_or_default();
    linux.set_cgroups_path(Some(cgroup.into()));
    let mut devices = vec![LinuxDeviceCgroupBuilder::default().allow(false).access("rwm").build().map_err(invalid)?];
    for (typ, major, minor, access) in DEVICES {
        let mut rule = LinuxDeviceCgroupBuilder::default().allow(true).typ(typ).access(access);
        if let Some(major) = major {
            rule = rule.major(major);
        }
        if let Some(minor) = minor {
            rule = rule.minor(minor);
        }
        devices.push(rule.build().map_err(invalid)?);
    }
    linux.set_resources(Some(resources(limits, devices)?));
    spec.set_linux(Some(linux));
    Ok(spec)
}

/// The cgroup settings for `limits` and the device rules `devices` (none for `docker update`,
/// which changes only the limits).
pub(crate) fn resources(limits: &Limits, devices: Vec<LinuxDeviceCgroup>) -> Result<LinuxResources> {
    let invalid = |e: oci_spec::OciSpecError| Error::InvalidParameter(format!("cannot build the runtime spec: {e}"));
    let mut resources = LinuxResourcesBuilder::default().devices(devices);
    if let Some(bytes) = limits.memory_bytes {
        resources = resources.memory(LinuxMemoryBuilder::default().limit(bytes).build().map_err(invalid)?);
    }
    if let Some(pids) = limits.pids {
        resources = resources.pids(LinuxPidsBuilder::default().limit(pids).build().map_err(invalid)?);
    }
    let cpuset = limits.cpuset_cpus.is_some() || limits.cpuset_mems.is_some();
    if limits.nano_cpus.is_some() || limits.cpu_shares.is_some() || cpuset {
        let mut cpu = LinuxCpuBuilder::default();
        if let Some(nano_cpus) = limits.nano_cpus {
            let quota = nano_cpus.saturating_mul(CPU_PERIOD_US as i64) / 1_000_000_000;
            cpu = cpu.period(CPU_PERIOD_US).quota(quota.max(1000));
        }
        if let Some(shares) = limits.cpu_shares {
            cpu = cpu.shares(shares);
        }
        if let Some(cpus) = &limits.cpuset_cpus {
            cpu = cpu.cpus(cpus.clone());
        }
        if let Some(mems) = &limits.cpuset_mems {
            cpu = cpu.mems(mems.clone());
        }
        resources = resources.cpu(cpu.build().map_err(invalid)?);
    }
    if limits.block_io != BlockIo::default() {
        resources = resources.block_io(block_io(&limits.block_io)?);
    }
    resources.build().map_err(invalid)
}

/// Block I/O limits with each device's numbers, as the cgroup takes them.
fn block_io(limits: &BlockIo) -> Result<LinuxBlockIo> {
    let invalid = |e: oci_spec::OciSpecError| Error::InvalidParameter(format!("cannot build the runtime spec: {e}"));
    let device = |path: &str| -> Result<(i64, i64)> {
        let rdev = rustix::fs::stat(path).map_err(|e| Error::io("cannot find the device", path)(e.into()))?.st_rdev;
        Ok((i64::from(rustix::fs::major(rdev)), i64::from(rustix::fs::minor(rdev))))
    };
    let throttles = |limits: &[DeviceLimit]| -> Result<Vec<LinuxThrottleDevice>> {
        limits
            .iter()
            .map(|l| {
                let (major, minor) = device(&l.path)?;
                LinuxThrottleDeviceBuilder::default().major(major).minor(minor).rate(l.value).build().map_err(invalid)
            })
            .collect()
    };
    let weights = (limits.weight_devices.iter())
        .map(|l| {
            let (major, minor) = device(&l.path)?;
            let weight = u16::try_from(l.value).unwrap_or(u16::MAX);
            LinuxWeightDeviceBuilder::default().major(major).minor(minor).weight(weight).build().map_err(invalid)
        })
        .collect::<Result<Vec<_>>>()?;
    let mut io = LinuxBlockIoBuilder::default()
        .weight_device(weights)
        .throttle_read_bps_device(throttles(&limits.read_bps)?)
        .throttle_write_bps_device(throttles(&limits.write_bps)?)
        .throttle_read_iops_device(throttles(&limits.read_iops)?)
        .throttle_write_iops_device(throttles(&limits.write_iops)?);
    if let Some(weight) = limits.weight {
        io = io.weight(weight);
    }
    io.build().map_err(invalid)
}

/// Gives the container's process a terminal (its init makes it in the container's devpts; the
/// runtime hands its master side to Stratus).
pub fn use_terminal(spec: &mut Spec) {
    let mut process = spec.process().clone().unwrap_or_default();
    process.set_terminal(Some(true));
    spec.set_process(Some(process));
}

/// Docker's `--user`: a name or uid, optionally `:group` or `:gid`, looked up in the
/// container's own `/etc/passwd` and `/etc/group`. A uid without an entry runs with gid 0 unless
/// one is given.
pub fn resolve_user(user: &str, passwd: &str, group: &str) -> Result<(u32, u32)> {
    if user.is_empty() {
        return Ok((0, 0));
    }
    let (name, group_name) = match user.split_once(':') {
        Some((name, group)) => (name, Some(group)),
        None => (user, None),
    };
    let entries = |file: &str| -> Vec<Vec<String>> {
        file.lines().filter(|l| !l.starts_with('#')).map(|l| l.split(':').map(str::to_string).collect()).collect()
    };
    let field = |entry: &[String], index: usize| entry.get(index).and_then(|f| f.parse::<u32>().ok());
    let users = entries(passwd);
    let by_name = users.iter().find(|e| e.first().is_some_and(|n| n == name));
    let (uid, mut gid) = match (name.parse::<u32>(), by_name) {
        (Ok(uid), _) => {
            let entry = users.iter().find(|e| field(e, 2) == Some(uid));
            (uid, entry.and_then(|e| field(e, 3)).unwrap_or(0))
        }
        (Err(_), Some(entry)) => match (field(entry, 2), field(entry, 3)) {
            (Some(uid), Some(gid)) => (uid, gid),
            _ => return Err(Error::InvalidParameter(format!("malformed passwd entry for user {name}"))),
        },
        (Err(_), None) => {
            return Err(Error::InvalidParameter(format!(
                "unable to find user {name}: no matching entries in passwd file"
            )));
        }
    };
    if let Some(group_name) = group_name {
        gid = match group_name.parse::<u32>() {
            Ok(gid) => gid,
            Err(_) => entries(group)
                .iter()
                .find(|e| e.first().is_some_and(|n| n == group_name))
                .and_then(|e| field(e, 2))
                .ok_or_else(|| {
                    Error::InvalidParameter(format!(
                        "unable to find group {group_name}: no matching entries in group file"
                    ))
                })?,
        };
    }
    Ok((uid, gid))
}

#[cfg(test)]
pub(crate) mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    const PASSWD: &str = "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/home:/bin/false\n";
    const GROUP: &str = "root:x:0:\nnobody:x:65534:\nstaff:x:50:\n";

    fn check(user: &str, expected: &str) {
        let got = match resolve_user(user, PASSWD, GROUP) {
            Ok((uid, gid)) => format!("{uid}:{gid}"),
            Err(error) => error.to_string(),
        };
        assert_eq!(got, expected, "{user}");
    }

    #[test]
    fn users_resolve_like_docker() {
        check("", "0:0");
        check("root", "0:0");
        check("nobody", "65534:65534");
        check("65534", "65534:65534");
        check("1000", "1000:0");
        check("1000:1000", "1000:1000");
        check("nobody:staff", "65534:50");
        check("alice", "unable to find user alice: no matching entries in passwd file");
        check("nobody:wheel", "unable to find group wheel: no matching entries in group file");
    }

    /// One limit of each kind, the block I/O ones on /dev/null (character device 1:3).
    pub(crate) fn example_limits() -> Limits {
        Limits {
            memory_bytes: Some(32 << 20),
            pids: Some(64),
            nano_cpus: Some(500_000_000),
            cpu_shares: Some(512),
            cpuset_cpus: Some("0".into()),
            cpuset_mems: None,
            block_io: BlockIo {
                weight: Some(300),
                write_bps: vec![DeviceLimit { path: "/dev/null".into(), value: 1 << 20 }],
                ..BlockIo::default()
            },
        }
    }

    #[test]
    fn spec_carries_process_limits_and_isolation() {
        let process = Process {
            args: vec!["sh".into(), "-c".into(), "echo hi".into()],
            env: vec!["PATH=/bin".into(), "A=1".into()],
            cwd: "/tmp".into(),
            user: "nobody".into(),
            hostname: "0123456789ab".into(),
        };
        let spec = build(&process, &example_limits(), Path::new("/r/rootfs"), "/stratus/abc", 65534, 65534).unwrap();
        assert_eq!(spec.hostname().as_deref(), Some("0123456789ab"));
        assert_eq!(spec.root().as_ref().unwrap().path(), Path::new("/r/rootfs"));
        assert_eq!(spec.root().as_ref().unwrap().readonly(), Some(false));
        let p = spec.process().as_ref().unwrap();
        assert_eq!(p.args().as_ref().unwrap(), &process.args);
        assert_eq!(p.env().as_ref().unwrap(), &process.env);
        assert_eq!(p.cwd(), Path::new("/tmp"));
        assert_eq!((p.user().uid(), p.user().gid()), (65534, 65534));
        assert_eq!(p.capabilities().as_ref().unwrap().bounding().as_ref().unwrap().len(), 14);
        let linux = spec.linux().as_ref().unwrap();
        assert_eq!(linux.cgroups_path().as_deref(), Some(Path::new("/stratus/abc")));
        let kinds: Vec<String> =
            linux.namespaces().as_ref().unwrap().iter().map(|n| format!("{:?}", n.typ())).collect();
        for kind in ["Pid", "Network", "Ipc", "Uts", "Mount"] {
            assert!(kinds.iter().any(|k| k == kind), "{kind} in {kinds:?}");
        }
        let resources = linux.resources().as_ref().unwrap();
        assert_eq!(resources.memory().as_ref().unwrap().limit(), Some(32 << 20));
        assert_eq!(resources.pids().as_ref().unwrap().limit(), 64);
        let cpu = resources.cpu().as_ref().unwrap();
        assert_eq!((cpu.quota(), cpu.period(), cpu.shares()), (Some(50_000), Some(100_000), Some(512)));
        assert_eq!((cpu.cpus().as_deref(), cpu.mems().as_deref()), (Some("0"), None));
        let io = resources.block_io().as_ref().unwrap();
        let throttle = &io.throttle_write_bps_device().as_ref().unwrap()[0];
        // /dev/null is character device 1:3; the numbers are the device's, whatever its kind.
        assert_eq!((io.weight(), throttle.major(), throttle.minor(), throttle.rate()), (Some(300), 1, 3, 1 << 20));
        let devices = resources.devices().as_ref().unwrap();
        assert!(!devices[0].allow() && devices.len() == 12);
    }

    #[test]
    fn no_limits_means_no_cgroup_settings() {
        let spec = build(&Process::default(), &Limits::default(), Path::new("/r"), "/stratus/x", 0, 0).unwrap();
        let resources = spec.linux().as_ref().unwrap().resources().as_ref().unwrap();
        assert!(resources.memory().is_none() && resources.pids().is_none() && resources.cpu().is_none());
        assert_eq!(spec.process().as_ref().unwrap().cwd(), Path::new("/"));
    }
}
