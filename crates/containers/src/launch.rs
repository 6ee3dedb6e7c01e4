//! Making a container's processes, in the runtime process (see `runtime`): the init (a clone into
//! new namespaces that mounts the container's filesystems, enters its root with `pivot_root`, takes
//! its user, capabilities and seccomp filter, and waits for *start* to exec the entrypoint) and
//! exec'd processes (which join a running init's namespaces and cgroup).
//!
//! Stratus used youki's libcontainer for this. It made a cycle of create, start, exit and delete
//! cost ~12 ms more than the kernel's work (BENCHMARKS.md, "Containers"): its cgroup manager reads
//! the mount table once per controller and was built twice a container, and each of its init's 17
//! mounts went through path checks costing ~100 syscalls. Stratus writes its own specs
//! (`spec.rs`), so this implements the part of the OCI runtime spec they use, in runc's order, with
//! one `openat2(RESOLVE_IN_ROOT)` per mount target to keep an image's symlinks inside its root.
//!
//! The runtime process is single-threaded, so the child of a clone may allocate: no lock can be
//! held by another thread. A child is cloned into its cgroup2 directory (if the host has one) and
//! moves itself into the v1 ones (`Cgroup::join_v1_self`: no global lock, unlike a move by pid),
//! except an init born in a user namespace, which may not write the host's cgroup files: the
//! runtime moves it. Child and runtime talk over a `SOCK_SEQPACKET` pair: the runtime sends *go*
//! (after the user namespace's id maps and that move); an init answers *ready* (with its
//! terminal's master side, if it made one) and waits for *start*; a failure is sent as text
//! instead. The child's end closes when it execs.
//!
//! Raw syscalls go through the small wrappers at the end (`sys`), each one `unsafe` block.
#![allow(unsafe_code)]

use std::collections::HashSet;
use std::convert::Infallible;
use std::ffi::CString;
use std::io::{IoSlice, IoSliceMut};
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};

use oci_spec::runtime::{LinuxDevice, LinuxDeviceType, LinuxNamespaceType, Mount, Spec};
use rustix::fs::{Mode, OFlags, ResolveFlags};
use rustix::net::{
    AddressFamily, RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags, SendAncillaryBuffer, SendAncillaryMessage,
    SendFlags, SocketFlags, SocketType,
};

use crate::cgroup::{Cgroup, Hierarchies};
use crate::seccomp::Program;

/// Marks a failure to run an executable: `EXEC_FAILED<exit code>:<what exec says of it>`.
pub(crate) const EXEC_FAILED: &str = "exec failed:";

/// A container's init, made and waiting for *start*.
pub(crate) struct Init {
    pub pid: i32,
    pub pidfd: OwnedFd,
    /// The runtime's end of the pair with the init, until it is started.
    sync: Option<OwnedFd>,
}

/// What a container's exec'd processes share with its init.
#[derive(Clone)]
pub(crate) struct Shared {
    capabilities: Capabilities,
    no_new_privileges: bool,
    env: Vec<String>,
    pub seccomp: Option<Program>,
}

/// A process's capability sets.
#[derive(Clone, Default)]
struct Capabilities {
    bounding: caps::CapsHashSet,
    effective: caps::CapsHashSet,
    permitted: caps::CapsHashSet,
    inheritable: caps::CapsHashSet,
    ambient: caps::CapsHashSet,
}

/// Creates the container `spec` describes (its root filesystem already mounted at `root.path`):
/// its init joins `cgroup`, gets `stdio` (or a terminal of its own when the spec asks: its master
/// side is returned), and waits for [`start`].
pub(crate) fn create(
    spec: &Spec,
    stdio: [OwnedFd; 3],
    cgroup: &Cgroup,
    seccomp: Option<Program>,
) -> Result<(Init, Shared, Option<OwnedFd>), String> {
    let process = spec.process().as_ref().ok_or("the spec has no process")?;
    let linux = spec.linux().as_ref().ok_or("the spec has no linux section")?;
    let mut capabilities = Capabilities::of(process.capabilities().as_ref())?;
    // Held only to load the filter, which drops them again (`load_seccomp`).
    for cap in seccomp.iter().flat_map(|p| &p.raised).filter_map(|&i| caps::all().into_iter().find(|c| c.index() == i))
    {
        for set in [&mut capabilities.bounding, &mut capabilities.effective, &mut capabilities.permitted] {
            set.insert(cap);
        }
    }
    let shared = Shared {
        capabilities,
        no_new_privileges: process.no_new_privileges().unwrap_or(false),
        env: process.env().clone().unwrap_or_default(),
        seccomp,
    };
    // New namespaces come with the clone, except the cgroup one, unshared once the child is in its
    // cgroup so that the cgroup is the namespace's root.
    let (mut flags, mut joined, mut cgroupns) = (0u64, Vec::new(), false);
    for namespace in linux.namespaces().iter().flatten() {
        let flag = clone_flag(namespace.typ());
        match namespace.path() {
            Some(path) => joined.push((open(path)?, flag)),
            None if namespace.typ() == LinuxNamespaceType::Cgroup => cgroupns = true,
            None => flags |= flag,
        }
    }
    let userns = flags & libc::CLONE_NEWUSER as u64 != 0;
    let child = Child { spec, stdio: &stdio, joined: &joined, cgroup, cgroupns, userns, shared: &shared };
    let (ours, theirs) = pair()?;
    let into = if userns { None } else { v2_dir(cgroup)? };
    let (pid, pidfd) =
        sys::clone(flags, into.as_ref().map(AsFd::as_fd), || fail(theirs.as_fd(), child.init(theirs.as_fd()), 1))?;
    drop(theirs);
    let ready = (|| {
        if userns {
            for (file, mappings) in [("uid_map", linux.uid_mappings()), ("gid_map", linux.gid_mappings())] {
                let lines: String = (mappings.iter().flatten())
                    .map(|m| format!("{} {} {}\n", m.container_id(), m.host_id(), m.size()))
                    .collect();
                let path = format!("/proc/{pid}/{file}");
                std::fs::write(&path, lines).map_err(|e| format!("cannot write {path}: {e}"))?;
            }
        }
        go(ours.as_fd(), userns.then_some((cgroup, pid)))
    })();
    match settle(ready, pid, &pidfd)? {
        (message, terminal) if message.is_empty() => Ok((Init { pid, pidfd, sync: Some(ours) }, shared, terminal)),
        (failure, _) => Err(String::from_utf8_lossy(&failure).into_owned()),
    }
}

/// Lets the init exec the container's entrypoint.
pub(crate) fn start(init: &mut Init) -> Result<(), String> {
    let sync = init.sync.take().ok_or("the container was started already")?;
    send(sync.as_fd(), b"start", None).map_err(|e| format!("cannot start the container: {e}"))
}

/// A process to start in a running container.
pub(crate) struct Exec<'a> {
    pub args: &'a [String],
    /// Added to, or replacing, the container's environment.
    pub env: &'a [(String, String)],
    pub cwd: &'a Path,
    pub uid: u32,
    pub gid: u32,
    /// Its stdin is a terminal, to become its controlling terminal.
    pub tty: bool,
}

/// Starts `exec` in the running container of `init`, in its namespaces and `cgroup`, with
/// `stdio`; returns its pid and pidfd. An executable that cannot run is an `EXEC_FAILED` error.
pub(crate) fn exec(
    init: &Init,
    cgroup: &Cgroup,
    shared: &Shared,
    exec: &Exec<'_>,
    stdio: [OwnedFd; 3],
) -> Result<(i32, OwnedFd), String> {
    // The namespaces the init does not share with the runtime (a container on the host's network
    // has none of its own to join there).
    let (mut flags, mut new_pid) = (0, false);
    for (name, flag) in NAMESPACES {
        let theirs = rustix::fs::stat(format!("/proc/{}/ns/{name}", init.pid)).map_err(|e| e.to_string())?;
        let ours = rustix::fs::stat(format!("/proc/self/ns/{name}")).map_err(|e| e.to_string())?;
        if (theirs.st_dev, theirs.st_ino) != (ours.st_dev, ours.st_ino) {
            match flag {
                libc::CLONE_NEWPID => new_pid = true,
                flag => flags |= flag,
            }
        }
    }
    let mut env = shared.env.clone();
    for (name, value) in exec.env {
        env.retain(|v| v.split_once('=').is_none_or(|(n, _)| n != name));
        env.push(format!("{name}={value}"));
    }
    let (ours, theirs) = pair()?;
    // A PID namespace is the one of children to come: the runtime enters the container's for the
    // clone only.
    let own_pid_ns = open(Path::new("/proc/self/ns/pid"))?;
    if new_pid {
        sys::setns(init.pidfd.as_fd(), libc::CLONE_NEWPID)?;
    }
    let into = v2_dir(cgroup)?;
    let cloned = sys::clone(0, into.as_ref().map(AsFd::as_fd), || {
        let run = || -> Result<Infallible, String> {
            expect(theirs.as_fd(), b"go")?;
            join_v1(cgroup)?;
            if flags != 0 {
                sys::setns(init.pidfd.as_fd(), flags)?;
            }
            set_stdio(&stdio)?;
            if exec.tty {
                rustix::process::setsid().map_err(|e| format!("setsid: {e}"))?;
                rustix::process::ioctl_tiocsctty(std::io::stdin())
                    .map_err(|e| format!("cannot take the terminal: {e}"))?;
            }
            let finish = Finish { args: exec.args, env, cwd: exec.cwd, uid: exec.uid, gid: exec.gid, groups: &[] };
            finish.run(shared, theirs.as_fd(), None)
        };
        fail(theirs.as_fd(), run(), 127)
    });
    if new_pid {
        sys::setns(own_pid_ns.as_fd(), libc::CLONE_NEWPID)?;
    }
    drop(theirs);
    let (pid, pidfd) = cloned?;
    // Nothing comes back but the end of the pair, closed by a successful exec.
    match settle(go(ours.as_fd(), None), pid, &pidfd)? {
        (message, _) if message.is_empty() => Ok((pid, pidfd)),
        (failure, _) => Err(String::from_utf8_lossy(&failure).into_owned()),
    }
}

/// The namespaces of `/proc/<pid>/ns/` an exec'd process joins, with their clone flags.
const NAMESPACES: [(&str, i32); 7] = [
    ("user", libc::CLONE_NEWUSER),
    ("mnt", libc::CLONE_NEWNS),
    ("uts", libc::CLONE_NEWUTS),
    ("ipc", libc::CLONE_NEWIPC),
    ("net", libc::CLONE_NEWNET),
    ("cgroup", libc::CLONE_NEWCGROUP),
    ("pid", libc::CLONE_NEWPID),
];

fn clone_flag(typ: LinuxNamespaceType) -> u64 {
    let flag = match typ {
        LinuxNamespaceType::Mount => libc::CLONE_NEWNS,
        LinuxNamespaceType::Cgroup => libc::CLONE_NEWCGROUP,
        LinuxNamespaceType::Uts => libc::CLONE_NEWUTS,
        LinuxNamespaceType::Ipc => libc::CLONE_NEWIPC,
        LinuxNamespaceType::User => libc::CLONE_NEWUSER,
        LinuxNamespaceType::Pid => libc::CLONE_NEWPID,
        LinuxNamespaceType::Network => libc::CLONE_NEWNET,
        LinuxNamespaceType::Time => libc::CLONE_NEWTIME,
    };
    flag as u64
}

/// Lets the child go on, first moving it (`pid`) into `cgroup` if given; then its first message,
/// or the end of the pair.
fn go(sync: BorrowedFd<'_>, move_into: Option<(&Cgroup, i32)>) -> Result<(Vec<u8>, Option<OwnedFd>), String> {
    if let Some((cgroup, pid)) = move_into {
        cgroup.add_process(pid).map_err(|e| format!("cannot join the cgroup: {e}"))?;
    }
    send(sync, b"go", None).map_err(|e| format!("cannot reach the new process: {e}"))?;
    receive(sync)
}

/// The cgroup2 directory of `cgroup`, opened for `CLONE_INTO_CGROUP`, if the host has one.
fn v2_dir(cgroup: &Cgroup) -> Result<Option<OwnedFd>, String> {
    let open = |dir: &Path| {
        rustix::fs::open(dir, OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC, Mode::empty())
            .map_err(|e| format!("cannot open {}: {e}", dir.display()))
    };
    cgroup.v2_dir().map(open).transpose()
}

/// In a new child, still single-threaded: joins the v1 directories of `cgroup`.
fn join_v1(cgroup: &Cgroup) -> Result<(), String> {
    cgroup.join_v1_self().map_err(|e| format!("cannot join the cgroup: {e}"))
}

/// After a child's first message: a failure is reaped; a child that could not be talked to is
/// killed first.
fn settle(
    outcome: Result<(Vec<u8>, Option<OwnedFd>), String>,
    pid: i32,
    pidfd: &OwnedFd,
) -> Result<(Vec<u8>, Option<OwnedFd>), String> {
    match outcome {
        Ok((message, fd)) => {
            if !message.is_empty() {
                crate::runtime::reap(pid);
            }
            Ok((message, fd))
        }
        Err(error) => {
            let _ = rustix::process::pidfd_send_signal(pidfd, rustix::process::Signal::KILL);
            crate::runtime::reap(pid);
            Err(error)
        }
    }
}

/// In a child: reports why it could not go on and exits with `code`.
fn fail(sync: BorrowedFd<'_>, result: Result<Infallible, String>, code: i32) -> Infallible {
    let Err(failure) = result;
    let _ = send(sync, failure.as_bytes(), None);
    sys::exit(code)
}

/// What the init's child needs from the runtime's `create`.
struct Child<'a> {
    spec: &'a Spec,
    stdio: &'a [OwnedFd; 3],
    joined: &'a [(OwnedFd, u64)],
    cgroup: &'a Cgroup,
    cgroupns: bool,
    userns: bool,
    shared: &'a Shared,
}

impl Child<'_> {
    /// The container's init: everything up to *start*, then the exec.
    fn init(&self, sync: BorrowedFd<'_>) -> Result<Infallible, String> {
        let spec = self.spec;
        let process = spec.process().as_ref().ok_or("the spec has no process")?;
        let linux = spec.linux().as_ref().ok_or("the spec has no linux section")?;
        expect(sync, b"go")?;
        if self.userns {
            // The id maps are written (and the runtime moved this process into its cgroup):
            // become the namespace's root.
            sys::check(sys::setresgid(0), "setresgid")?;
            sys::check(sys::setresuid(0), "setresuid")?;
        } else {
            join_v1(self.cgroup)?;
        }
        for (fd, flag) in self.joined {
            sys::setns(fd.as_fd(), *flag as i32)?;
        }
        if self.cgroupns {
            sys::check(sys::unshare(libc::CLONE_NEWCGROUP), "cannot make the cgroup namespace")?;
        }
        if let Some(hostname) = spec.hostname() {
            rustix::system::sethostname(hostname.as_bytes()).map_err(|e| format!("sethostname: {e}"))?;
        }
        let root = spec.root().as_ref().ok_or("the spec has no root")?;
        let terminal = process.terminal().unwrap_or(false);
        Rootfs { spec, path: root.path(), userns: self.userns, cgroupns: self.cgroupns }.enter()?;
        for (key, value) in linux.sysctl().iter().flatten() {
            let path = format!("/proc/sys/{}", key.replace('.', "/"));
            std::fs::write(&path, value).map_err(|e| format!("cannot set sysctl {key}: {e}"))?;
        }
        for rlimit in process.rlimits().iter().flatten() {
            sys::setrlimit(rlimit.typ() as u32, rlimit.soft(), rlimit.hard())
                .map_err(|e| format!("cannot set {:?}: {e}", rlimit.typ()))?;
        }
        if let Some(adj) = process.oom_score_adj() {
            std::fs::write("/proc/self/oom_score_adj", adj.to_string()).map_err(|e| format!("oom_score_adj: {e}"))?;
        }
        if let Some(umask) = process.user().umask() {
            rustix::process::umask(Mode::from_bits_truncate(umask));
        }
        rustix::process::setsid().map_err(|e| format!("setsid: {e}"))?;
        let master = if terminal {
            let (master, peer) = terminal_in_container()?;
            let copy = || peer.try_clone().map_err(|e| e.to_string());
            set_stdio(&[copy()?, copy()?, copy()?])?;
            rustix::process::ioctl_tiocsctty(std::io::stdin()).map_err(|e| format!("cannot take the terminal: {e}"))?;
            Some(master)
        } else {
            set_stdio(self.stdio)?;
            None
        };
        let user = process.user();
        let groups = user.additional_gids().clone().unwrap_or_default();
        let env = self.shared.env.clone();
        let args = process.args().as_deref().unwrap_or_default();
        let finish = Finish { args, env, cwd: process.cwd(), uid: user.uid(), gid: user.gid(), groups: &groups };
        finish.run(self.shared, sync, Some(master))
    }
}

/// The home directory of `uid` in the container's `/etc/passwd`, as runc gives `HOME`.
fn home(uid: u32) -> String {
    let passwd = std::fs::read_to_string("/etc/passwd").unwrap_or_default();
    (passwd.lines())
        .map(|line| line.split(':').collect::<Vec<_>>())
        .find(|fields| fields.get(2).and_then(|f| f.parse::<u32>().ok()) == Some(uid))
        .and_then(|fields| fields.get(5).map(|home| home.to_string()))
        .unwrap_or_else(|| "/".to_string())
}

/// The last steps of a container's process, an init's or an exec'd one's.
struct Finish<'a> {
    args: &'a [String],
    env: Vec<String>,
    cwd: &'a Path,
    uid: u32,
    gid: u32,
    groups: &'a [u32],
}

impl Finish<'_> {
    /// Takes the process's user, capabilities and seccomp filter, finds its executable, and
    /// execs it. An init (`ready` is its terminal, if any) first says it is ready and waits for
    /// *start*.
    fn run(&self, shared: &Shared, sync: BorrowedFd<'_>, ready: Option<Option<OwnedFd>>) -> Result<Infallible, String> {
        let cwd = self.cwd.as_os_str();
        if !cwd.is_empty() {
            rustix::process::chdir(self.cwd)
                .map_err(|e| format!("chdir to cwd (\"{}\") set in config.json failed: {e}", self.cwd.display()))?;
        }
        let caps = &shared.capabilities;
        let bounding =
            caps::read(None, caps::CapSet::Bounding).map_err(|e| format!("cannot read capabilities: {e}"))?;
        for cap in bounding.difference(&caps.bounding) {
            caps::drop(None, caps::CapSet::Bounding, *cap)
                .map_err(|e| format!("cannot drop {cap} from the bounding set: {e}"))?;
        }
        rustix::thread::set_keep_capabilities(true).map_err(|e| format!("PR_SET_KEEPCAPS: {e}"))?;
        sys::check(sys::setgroups(self.groups), "setgroups")?;
        sys::check(sys::setresgid(self.gid), "setresgid")?;
        sys::check(sys::setresuid(self.uid), "setresuid")?;
        rustix::thread::set_keep_capabilities(false).map_err(|e| format!("PR_SET_KEEPCAPS: {e}"))?;
        let failed =
            |set: &'static str| move |e: caps::errors::CapsError| format!("cannot set the {set} capabilities: {e}");
        caps::set(None, caps::CapSet::Inheritable, &caps.inheritable).map_err(failed("inheritable"))?;
        // Effective first: it must stay within the permitted set at every step.
        caps::set(None, caps::CapSet::Effective, &caps.effective).map_err(failed("effective"))?;
        caps::set(None, caps::CapSet::Permitted, &caps.permitted).map_err(failed("permitted"))?;
        for cap in &caps.ambient {
            caps::raise(None, caps::CapSet::Ambient, *cap).map_err(failed("ambient"))?;
        }
        if shared.no_new_privileges {
            rustix::thread::set_no_new_privs(true).map_err(|e| format!("PR_SET_NO_NEW_PRIVS: {e}"))?;
        }
        let executable = self.executable()?;
        if let Some(program) = &shared.seccomp {
            load_seccomp(program).map_err(|e| format!("cannot load the seccomp filter: {e}"))?;
        }
        let strings = |values: &[String]| -> Result<Vec<CString>, String> {
            values.iter().map(|v| CString::new(v.as_bytes()).map_err(|e| e.to_string())).collect()
        };
        let mut env = self.env.clone();
        if !env.iter().any(|v| v.strip_prefix("HOME=").is_some_and(|home| !home.is_empty())) {
            env.push(format!("HOME={}", home(self.uid)));
        }
        let (args, env) = (strings(self.args)?, strings(&env)?);
        sys::close_range_cloexec();
        if let Some(terminal) = ready {
            send(sync, b"", terminal.as_ref().map(|t| t.as_fd())).map_err(|e| format!("cannot say ready: {e}"))?;
            drop(terminal);
            // The runtime closing its end instead means the container is deleted before it ran.
            if expect(sync, b"start").is_err() {
                sys::exit(1);
            }
        }
        let error = sys::execve(&executable, &args, &env);
        Err(exec_error(&self.args[0], error.raw_os_error() == Some(libc::EACCES), false))
    }

    /// The executable the first argument names, found in the environment's `PATH` as Docker does.
    fn executable(&self) -> Result<CString, String> {
        let name = self.args.first().ok_or("the process has no arguments")?;
        let candidates: Vec<PathBuf> = if name.contains('/') {
            vec![PathBuf::from(name)]
        } else {
            let path = (self.env.iter().rev()).find_map(|v| v.strip_prefix("PATH=")).unwrap_or_default();
            path.split(':').map(|dir| Path::new(if dir.is_empty() { "." } else { dir }).join(name)).collect()
        };
        let mut denied = false;
        for candidate in candidates {
            let Ok(stat) = rustix::fs::stat(&candidate) else { continue };
            if rustix::fs::FileType::from_raw_mode(stat.st_mode) == rustix::fs::FileType::Directory {
                denied = true;
                continue;
            }
            if rustix::fs::access(&candidate, rustix::fs::Access::EXEC_OK).is_err() {
                denied = true;
                continue;
            }
            return CString::new(candidate.as_os_str().as_bytes()).map_err(|e| e.to_string());
        }
        Err(exec_error(name, denied, !name.contains('/')))
    }
}

/// What Docker says of an executable that cannot run, and the exit code it gives.
fn exec_error(name: &str, denied: bool, searched: bool) -> String {
    match (denied, searched) {
        (true, _) => format!("{EXEC_FAILED}126:exec: \"{name}\": permission denied"),
        (false, true) => format!("{EXEC_FAILED}127:exec: \"{name}\": executable file not found in $PATH"),
        (false, false) => format!("{EXEC_FAILED}127:exec: \"{name}\": stat {name}: no such file or directory"),
    }
}

impl Capabilities {
    fn of(spec: Option<&oci_spec::runtime::LinuxCapabilities>) -> Result<Capabilities, String> {
        let Some(spec) = spec else { return Ok(Capabilities::default()) };
        let set = |caps: &Option<oci_spec::runtime::Capabilities>| -> Result<caps::CapsHashSet, String> {
            (caps.iter().flatten()).map(to_cap).collect()
        };
        Ok(Capabilities {
            bounding: set(spec.bounding())?,
            effective: set(spec.effective())?,
            permitted: set(spec.permitted())?,
            inheritable: set(spec.inheritable())?,
            ambient: set(spec.ambient())?,
        })
    }
}

/// The `caps` crate's name for an OCI capability (`CHOWN` becomes `CAP_CHOWN`).
pub(crate) fn to_cap(cap: &oci_spec::runtime::Capability) -> Result<caps::Capability, String> {
    format!("CAP_{cap}").parse().map_err(|_| format!("unknown capability {cap}"))
}

/// Loads `program` and drops the capabilities raised to load it, in the order that needs them:
/// out of the bounding set (CAP_SETPCAP), the filter (CAP_SYS_ADMIN), out of the effective and
/// permitted sets.
pub(crate) fn load_seccomp(program: &Program) -> std::io::Result<()> {
    let raised = (program.raised.iter())
        .map(|&i| caps::all().into_iter().find(|c| c.index() == i))
        .collect::<Option<Vec<caps::Capability>>>()
        .ok_or_else(|| std::io::Error::other("an unknown capability"))?;
    let failed = |e: caps::errors::CapsError| std::io::Error::other(e.to_string());
    for cap in &raised {
        caps::drop(None, caps::CapSet::Bounding, *cap).map_err(failed)?;
    }
    sys::seccomp(program)?;
    for cap in &raised {
        caps::drop(None, caps::CapSet::Effective, *cap).map_err(failed)?;
        caps::drop(None, caps::CapSet::Permitted, *cap).map_err(failed)?;
    }
    Ok(())
}

/// Makes `stdio` the process's standard descriptors.
fn set_stdio(stdio: &[OwnedFd; 3]) -> Result<(), String> {
    for (n, fd) in stdio.iter().enumerate() {
        sys::check(sys::dup2(fd.as_fd(), n as i32), "cannot set up stdio")?;
    }
    Ok(())
}

/// A new terminal in the container's own devpts (mounted at `/dev/pts`): its master side and the
/// other, which also becomes `/dev/console` as runc makes it.
fn terminal_in_container() -> Result<(OwnedFd, OwnedFd), String> {
    let flags = rustix::pty::OpenptFlags::RDWR | rustix::pty::OpenptFlags::NOCTTY | rustix::pty::OpenptFlags::CLOEXEC;
    let master = rustix::fs::open("/dev/pts/ptmx", OFlags::RDWR | OFlags::NOCTTY | OFlags::CLOEXEC, Mode::empty())
        .map_err(|e| format!("cannot open /dev/pts/ptmx: {e}"))?;
    rustix::pty::unlockpt(&master).map_err(|e| format!("unlockpt: {e}"))?;
    let peer = rustix::pty::ioctl_tiocgptpeer(&master, flags).map_err(|e| format!("TIOCGPTPEER: {e}"))?;
    let console = Path::new("/dev/console");
    if rustix::fs::stat(console).is_err() {
        std::fs::File::create(console).map_err(|e| format!("cannot make /dev/console: {e}"))?;
    }
    sys::mount(Some(&fd_path(peer.as_fd())), console, None, libc::MS_BIND, None)
        .map_err(|e| format!("cannot bind the terminal at /dev/console: {e}"))?;
    Ok((master, peer))
}

/// The container's root filesystem, being entered by its init.
struct Rootfs<'a> {
    spec: &'a Spec,
    path: &'a Path,
    userns: bool,
    cgroupns: bool,
}

/// Devices every container gets, as runc makes them: path, major, minor.
const DEFAULT_DEVICES: [(&str, i64, i64); 6] = [
    ("/dev/null", 1, 3),
    ("/dev/zero", 1, 5),
    ("/dev/full", 1, 7),
    ("/dev/random", 1, 8),
    ("/dev/urandom", 1, 9),
    ("/dev/tty", 5, 0),
];

impl Rootfs<'_> {
    /// Mounts the spec's filesystems and devices in the root, pivots into it, then masks and makes
    /// read-only what the spec says.
    fn enter(&self) -> Result<(), String> {
        let linux = self.spec.linux().as_ref().ok_or("the spec has no linux section")?;
        // Nothing mounted here reaches the host; the host's later mounts still reach here.
        let propagation = match linux.rootfs_propagation().as_deref() {
            Some("private") => libc::MS_PRIVATE,
            Some("shared") => libc::MS_SHARED,
            Some("unbindable") => libc::MS_UNBINDABLE,
            _ => libc::MS_SLAVE,
        };
        sys::mount(None, Path::new("/"), None, propagation | libc::MS_REC, None)
            .map_err(|e| format!("cannot make / {propagation:#x}: {e}"))?;
        sys::mount(Some(self.path), self.path, None, libc::MS_BIND | libc::MS_REC, None)
            .map_err(|e| format!("cannot bind the root filesystem: {e}"))?;
        let root = rustix::fs::open(self.path, OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC, Mode::empty())
            .map_err(|e| format!("cannot open the root filesystem: {e}"))?;
        for mount in self.spec.mounts().iter().flatten() {
            self.mount(root.as_fd(), mount).map_err(|e| {
                format!(
                    "cannot mount {} at {}: {e}",
                    mount.typ().as_deref().unwrap_or("bind"),
                    mount.destination().display()
                )
            })?;
        }
        self.devices(root.as_fd(), linux.devices().as_deref().unwrap_or_default())?;
        rustix::process::fchdir(&root).map_err(|e| format!("cannot enter the root filesystem: {e}"))?;
        drop(root);
        sys::pivot_root().map_err(|e| format!("pivot_root: {e}"))?;
        for path in linux.masked_paths().iter().flatten() {
            mask(Path::new(path)).map_err(|e| format!("cannot mask {path}: {e}"))?;
        }
        for path in linux.readonly_paths().iter().flatten() {
            read_only(Path::new(path), true).map_err(|e| format!("cannot make {path} read-only: {e}"))?;
        }
        if self.spec.root().as_ref().and_then(|r| r.readonly()).unwrap_or(false) {
            read_only(Path::new("/"), false).map_err(|e| format!("cannot make / read-only: {e}"))?;
        }
        Ok(())
    }

    /// One of the spec's mounts.
    fn mount(&self, root: BorrowedFd<'_>, mount: &Mount) -> Result<(), String> {
        let options = Options::parse(mount.options().as_deref().unwrap_or_default());
        let typ = mount.typ().as_deref().unwrap_or("bind");
        let bind = options.flags & libc::MS_BIND != 0 || typ == "bind";
        let source = mount.source().as_deref().unwrap_or(Path::new(typ));
        let is_dir = !bind || std::fs::metadata(source).map(|m| m.is_dir()).unwrap_or(true);
        let at = make_target(root, mount.destination(), is_dir)?;
        let target = fd_path(at.as_fd());
        if typ == "cgroup" {
            return self.cgroup(root, mount.destination(), &target, &options);
        }
        // A descriptor opened before a mount names what is under it: the mount is reached afresh.
        let mounted = || make_target(root, mount.destination(), is_dir).map(|fd| (fd_path(fd.as_fd()), fd));
        // A bind mount takes its flags in a remount, keeping those a user namespace may not lift
        // from the source.
        let remount = |flags: libc::c_ulong| -> Result<(), String> {
            let (path, _fd) = mounted()?;
            let flags = libc::MS_BIND | libc::MS_REMOUNT | flags | locked_flags(&path);
            sys::mount(None, &path, None, flags, None).map_err(|e| format!("remount: {e}"))
        };
        if bind {
            let flags = options.flags & libc::MS_REC | libc::MS_BIND;
            sys::mount(Some(source), &target, None, flags, None).map_err(|e| e.to_string())?;
            let flags = options.flags & !(libc::MS_BIND | libc::MS_REC);
            if flags != 0 {
                remount(flags)?;
            }
        } else {
            let data = (!options.data.is_empty()).then_some(options.data.as_str());
            match sys::mount(Some(source), &target, Some(typ), options.flags, data) {
                // sysfs needs a network namespace of the user namespace's: without one, the host's.
                Err(error) if typ == "sysfs" && error.raw_os_error() == Some(libc::EPERM) => {
                    sys::mount(Some(Path::new("/sys")), &target, None, libc::MS_BIND | libc::MS_REC, None)
                        .map_err(|e| e.to_string())?;
                    remount(options.flags)?;
                }
                mounted => mounted.map_err(|e| e.to_string())?,
            }
        }
        if options.propagation != 0 {
            let (path, _fd) = mounted()?;
            sys::mount(None, &path, None, options.propagation, None).map_err(|e| format!("propagation: {e}"))?;
        }
        Ok(())
    }

    /// `/sys/fs/cgroup` as the container sees it: its own cgroup namespace's view of each
    /// hierarchy (cgroup v2: one mount; v1: a tmpfs with one mount per hierarchy and the host's
    /// symlinks for co-mounted controllers).
    fn cgroup(&self, root: BorrowedFd<'_>, destination: &Path, target: &Path, options: &Options) -> Result<(), String> {
        let flags = options.flags | libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC;
        let Hierarchies::V1(hierarchies) = Hierarchies::host() else {
            return sys::mount(Some(Path::new("cgroup2")), target, Some("cgroup2"), flags, None)
                .map_err(|e| e.to_string());
        };
        let tmpfs = libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC;
        sys::mount(Some(Path::new("tmpfs")), target, Some("tmpfs"), tmpfs, Some("mode=755"))
            .map_err(|e| e.to_string())?;
        // The descriptor named the directory under the new tmpfs: the mount is reached afresh.
        let mounted = make_target(root, destination, true)?;
        let target = &fd_path(mounted.as_fd());
        // A hybrid host's cgroup2 hierarchy, which holds no controller, is left out, as Docker does.
        for hierarchy in hierarchies.iter().filter(|h| !h.controllers.is_empty()) {
            let Some(name) = hierarchy.mount.file_name() else { continue };
            let dir = target.join(name);
            std::fs::create_dir(&dir).map_err(|e| format!("mkdir {}: {e}", dir.display()))?;
            // In the container's cgroup namespace a hierarchy mounted again shows its cgroup as
            // root; without one, the container's own directory is bound.
            if self.cgroupns {
                let mut subsystems = hierarchy.controllers.join(",");
                if hierarchy.controllers.iter().all(|c| c.starts_with("name=")) {
                    subsystems.insert_str(0, "none,");
                }
                sys::mount(Some(Path::new("cgroup")), &dir, Some("cgroup"), flags, Some(&subsystems))
                    .map_err(|e| format!("{}: {e}", name.to_string_lossy()))?;
            } else {
                let path = self.spec.linux().as_ref().and_then(|l| l.cgroups_path().clone()).unwrap_or_default();
                let source = hierarchy.mount.join(path.strip_prefix("/").unwrap_or(&path));
                sys::mount(Some(&source), &dir, None, libc::MS_BIND, None).map_err(|e| e.to_string())?;
                sys::mount(None, &dir, None, libc::MS_BIND | libc::MS_REMOUNT | flags, None)
                    .map_err(|e| e.to_string())?;
            }
        }
        for (link, to) in cgroup_links() {
            std::os::unix::fs::symlink(to, target.join(link)).map_err(|e| format!("symlink {link}: {e}"))?;
        }
        if options.flags & libc::MS_RDONLY != 0 {
            sys::mount(None, target, None, libc::MS_REMOUNT | libc::MS_RDONLY | tmpfs, None)
                .map_err(|e| format!("remount read-only: {e}"))?;
        }
        Ok(())
    }

    /// The default devices, those the spec adds, and `/dev`'s usual links. In a user namespace,
    /// where `mknod` is refused, the host's nodes are bound instead, as runc does.
    fn devices(&self, root: BorrowedFd<'_>, extra: &[LinuxDevice]) -> Result<(), String> {
        let mut made = HashSet::new();
        let defaults = DEFAULT_DEVICES
            .iter()
            .map(|&(path, major, minor)| (PathBuf::from(path), LinuxDeviceType::C, major, minor, 0o666, 0, 0));
        let others = extra.iter().map(|d| {
            (
                d.path().clone(),
                d.typ(),
                d.major(),
                d.minor(),
                d.file_mode().unwrap_or(0o666),
                d.uid().unwrap_or(0),
                d.gid().unwrap_or(0),
            )
        });
        for (path, typ, major, minor, mode, uid, gid) in others.chain(defaults) {
            if !made.insert(path.clone()) {
                continue;
            }
            let failed = |e: String| format!("cannot make the device {}: {e}", path.display());
            let relative = path.strip_prefix("/").unwrap_or(&path);
            let (parent, name) = match (relative.parent(), relative.file_name()) {
                (Some(parent), Some(name)) => (parent, name),
                _ => continue,
            };
            let dir = make_target(root, Path::new("/").join(parent).as_path(), true).map_err(failed)?;
            if self.userns {
                let _ = rustix::fs::openat(
                    &dir,
                    name,
                    OFlags::CREATE | OFlags::WRONLY | OFlags::CLOEXEC,
                    Mode::from_bits_truncate(0o644),
                );
                let node =
                    rustix::fs::openat(&dir, name, OFlags::PATH | OFlags::NOFOLLOW | OFlags::CLOEXEC, Mode::empty())
                        .map_err(|e| failed(e.to_string()))?;
                sys::mount(Some(&path), &fd_path(node.as_fd()), None, libc::MS_BIND, None)
                    .map_err(|e| failed(e.to_string()))?;
            } else {
                let kind = match typ {
                    LinuxDeviceType::B => rustix::fs::FileType::BlockDevice,
                    LinuxDeviceType::P => rustix::fs::FileType::Fifo,
                    _ => rustix::fs::FileType::CharacterDevice,
                };
                let dev = rustix::fs::makedev(major as u32, minor as u32);
                match rustix::fs::mknodat(&dir, name, kind, Mode::from_bits_truncate(mode), dev) {
                    Ok(()) | Err(rustix::io::Errno::EXIST) => {}
                    Err(error) => return Err(failed(error.to_string())),
                }
                // mknod's mode passes through the umask; the spec's is the mode.
                rustix::fs::chmodat(&dir, name, Mode::from_bits_truncate(mode), rustix::fs::AtFlags::empty())
                    .map_err(|e| failed(e.to_string()))?;
                rustix::fs::chownat(
                    &dir,
                    name,
                    Some(uid_of(uid)),
                    Some(gid_of(gid)),
                    rustix::fs::AtFlags::SYMLINK_NOFOLLOW,
                )
                .map_err(|e| failed(e.to_string()))?;
            }
        }
        let dev = make_target(root, Path::new("/dev"), true)?;
        for (link, to) in [
            ("fd", "/proc/self/fd"),
            ("stdin", "/proc/self/fd/0"),
            ("stdout", "/proc/self/fd/1"),
            ("stderr", "/proc/self/fd/2"),
            ("ptmx", "pts/ptmx"),
            ("core", "/proc/kcore"),
        ] {
            match rustix::fs::symlinkat(to, &dev, link) {
                Ok(()) | Err(rustix::io::Errno::EXIST) => {}
                Err(error) => return Err(format!("cannot link /dev/{link}: {error}")),
            }
        }
        Ok(())
    }
}

/// The symlinks among the host's v1 hierarchies under `/sys/fs/cgroup` (`cpu` to `cpu,cpuacct`),
/// read once per runtime.
fn cgroup_links() -> &'static [(String, PathBuf)] {
    static LINKS: std::sync::OnceLock<Vec<(String, PathBuf)>> = std::sync::OnceLock::new();
    LINKS.get_or_init(|| {
        let entries = std::fs::read_dir("/sys/fs/cgroup").into_iter().flatten().flatten();
        (entries.filter_map(|e| Some((e.file_name().into_string().ok()?, std::fs::read_link(e.path()).ok()?))))
            .collect()
    })
}

/// A mount's options, as the mount call takes them.
#[derive(Debug, Default, PartialEq)]
struct Options {
    flags: libc::c_ulong,
    propagation: libc::c_ulong,
    /// What is the filesystem's own (`mode=755,size=65536k`).
    data: String,
}

impl Options {
    fn parse(options: &[String]) -> Options {
        let mut parsed = Options::default();
        for option in options {
            let (set, clear) = match option.as_str() {
                "defaults" | "tmpcopyup" => (0, 0),
                "ro" => (libc::MS_RDONLY, 0),
                "rw" => (0, libc::MS_RDONLY),
                "nosuid" => (libc::MS_NOSUID, 0),
                "suid" => (0, libc::MS_NOSUID),
                "nodev" => (libc::MS_NODEV, 0),
                "dev" => (0, libc::MS_NODEV),
                "noexec" => (libc::MS_NOEXEC, 0),
                "exec" => (0, libc::MS_NOEXEC),
                "sync" => (libc::MS_SYNCHRONOUS, 0),
                "async" => (0, libc::MS_SYNCHRONOUS),
                "dirsync" => (libc::MS_DIRSYNC, 0),
                "noatime" => (libc::MS_NOATIME, 0),
                "atime" => (0, libc::MS_NOATIME),
                "nodiratime" => (libc::MS_NODIRATIME, 0),
                "diratime" => (0, libc::MS_NODIRATIME),
                "relatime" => (libc::MS_RELATIME, 0),
                "norelatime" => (0, libc::MS_RELATIME),
                "strictatime" => (libc::MS_STRICTATIME, 0),
                "bind" => (libc::MS_BIND, 0),
                "rbind" => (libc::MS_BIND | libc::MS_REC, 0),
                propagation => {
                    let flag = match propagation {
                        "private" => libc::MS_PRIVATE,
                        "rprivate" => libc::MS_PRIVATE | libc::MS_REC,
                        "shared" => libc::MS_SHARED,
                        "rshared" => libc::MS_SHARED | libc::MS_REC,
                        "slave" => libc::MS_SLAVE,
                        "rslave" => libc::MS_SLAVE | libc::MS_REC,
                        "unbindable" => libc::MS_UNBINDABLE,
                        "runbindable" => libc::MS_UNBINDABLE | libc::MS_REC,
                        data => {
                            if !parsed.data.is_empty() {
                                parsed.data.push(',');
                            }
                            parsed.data.push_str(data);
                            0
                        }
                    };
                    parsed.propagation |= flag;
                    (0, 0)
                }
            };
            parsed.flags = (parsed.flags | set) & !clear;
        }
        parsed
    }
}

/// The flags of the mount at `path` a remount must keep: in a user namespace, those the source
/// had cannot be lifted.
fn locked_flags(path: &Path) -> libc::c_ulong {
    let Ok(stat) = rustix::fs::statvfs(path) else { return 0 };
    let mut flags = 0;
    for (st, ms) in [
        (rustix::fs::StatVfsMountFlags::NOSUID, libc::MS_NOSUID),
        (rustix::fs::StatVfsMountFlags::NODEV, libc::MS_NODEV),
        (rustix::fs::StatVfsMountFlags::NOEXEC, libc::MS_NOEXEC),
        (rustix::fs::StatVfsMountFlags::RDONLY, libc::MS_RDONLY),
    ] {
        if stat.f_flag.contains(st) {
            flags |= ms;
        }
    }
    flags
}

/// Opens `destination` inside `root` (its symlinks resolved as if `root` were `/`), making it,
/// and the directories on the way, if missing: a directory, or an empty file.
fn make_target(root: BorrowedFd<'_>, destination: &Path, is_dir: bool) -> Result<OwnedFd, String> {
    let resolve = ResolveFlags::IN_ROOT | ResolveFlags::NO_MAGICLINKS;
    let open =
        |path: &Path, flags: OFlags| rustix::fs::openat2(root, path, flags | OFlags::CLOEXEC, Mode::empty(), resolve);
    let relative: PathBuf = destination.components().filter(|c| matches!(c, Component::Normal(_))).collect();
    match open(&relative, OFlags::PATH) {
        Ok(fd) => return Ok(fd),
        Err(rustix::io::Errno::NOENT) => {}
        Err(error) => return Err(format!("cannot open {}: {error}", destination.display())),
    }
    let mut dir = rustix::fs::openat(root, ".", OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC, Mode::empty())
        .map_err(|e| e.to_string())?;
    let mut walked = PathBuf::new();
    let components: Vec<_> = relative.components().collect();
    for (n, component) in components.iter().enumerate() {
        walked.push(component);
        let last = n + 1 == components.len();
        match open(&walked, OFlags::PATH) {
            Ok(fd) => dir = fd,
            Err(rustix::io::Errno::NOENT) => {
                // Made in the directory resolved so far, which is inside the root.
                let name = component.as_os_str();
                if last && !is_dir {
                    rustix::fs::openat(
                        &dir,
                        name,
                        OFlags::CREATE | OFlags::WRONLY | OFlags::CLOEXEC,
                        Mode::from_bits_truncate(0o644),
                    )
                    .map_err(|e| format!("cannot make {}: {e}", walked.display()))?;
                } else {
                    match rustix::fs::mkdirat(&dir, name, Mode::from_bits_truncate(0o755)) {
                        Ok(()) | Err(rustix::io::Errno::EXIST) => {}
                        Err(error) => return Err(format!("cannot make {}: {error}", walked.display())),
                    }
                }
                dir = open(&walked, OFlags::PATH).map_err(|e| format!("cannot open {}: {e}", walked.display()))?;
            }
            Err(error) => return Err(format!("cannot open {}: {error}", walked.display())),
        }
    }
    Ok(dir)
}

/// Hides `path` (in the container's root, entered): a directory under an empty read-only tmpfs,
/// a file under `/dev/null`.
fn mask(path: &Path) -> std::io::Result<()> {
    match std::fs::metadata(path) {
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(error) => Err(error),
        Ok(meta) if meta.is_dir() => sys::mount(Some(Path::new("tmpfs")), path, Some("tmpfs"), libc::MS_RDONLY, None),
        Ok(_) => sys::mount(Some(Path::new("/dev/null")), path, None, libc::MS_BIND, None),
    }
}

/// Makes the mount at `path` read-only (first binding it onto itself, for a path that is not a
/// mount point), keeping its other flags.
fn read_only(path: &Path, bind_first: bool) -> std::io::Result<()> {
    if bind_first {
        match sys::mount(Some(path), path, None, libc::MS_BIND | libc::MS_REC, None) {
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            bound => bound?,
        }
    }
    let flags = libc::MS_BIND | libc::MS_REMOUNT | libc::MS_RDONLY | locked_flags(path);
    sys::mount(None, path, None, flags | if bind_first { libc::MS_REC } else { 0 }, None)
}

/// `/proc/self/fd/<fd>`: a path the kernel resolves to what `fd` is, wherever it is.
fn fd_path(fd: BorrowedFd<'_>) -> PathBuf {
    PathBuf::from(format!("/proc/self/fd/{}", std::os::fd::AsRawFd::as_raw_fd(&fd)))
}

fn open(path: &Path) -> Result<OwnedFd, String> {
    rustix::fs::open(path, OFlags::RDONLY | OFlags::CLOEXEC, Mode::empty())
        .map_err(|e| format!("cannot open {}: {e}", path.display()))
}

fn uid_of(uid: u32) -> rustix::fs::Uid {
    rustix::fs::Uid::from_raw(uid)
}

fn gid_of(gid: u32) -> rustix::fs::Gid {
    rustix::fs::Gid::from_raw(gid)
}

/// A socket pair between the runtime and a child.
fn pair() -> Result<(OwnedFd, OwnedFd), String> {
    rustix::net::socketpair(AddressFamily::UNIX, SocketType::SEQPACKET, SocketFlags::CLOEXEC, None)
        .map_err(|e| format!("cannot make a socket pair: {e}"))
}

fn send(socket: BorrowedFd<'_>, bytes: &[u8], fd: Option<BorrowedFd<'_>>) -> rustix::io::Result<()> {
    let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(1))];
    let mut control = SendAncillaryBuffer::new(&mut space);
    let fds = fd.map(|fd| [fd]);
    if let Some(fds) = &fds {
        control.push(SendAncillaryMessage::ScmRights(fds));
    }
    rustix::net::sendmsg(socket, &[IoSlice::new(bytes)], &mut control, SendFlags::NOSIGNAL).map(drop)
}

/// The next message and the descriptor that came with it; an empty message when the other end
/// closed.
fn receive(socket: BorrowedFd<'_>) -> Result<(Vec<u8>, Option<OwnedFd>), String> {
    let mut buffer = vec![0u8; 4096];
    let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(1))];
    let mut control = RecvAncillaryBuffer::new(&mut space);
    let received = loop {
        match rustix::net::recvmsg(socket, &mut [IoSliceMut::new(&mut buffer)], &mut control, RecvFlags::CMSG_CLOEXEC) {
            Err(rustix::io::Errno::INTR) => continue,
            received => break received.map_err(|e| format!("cannot hear from the new process: {e}"))?,
        }
    };
    buffer.truncate(received.bytes);
    let fd = control.drain().find_map(|message| match message {
        RecvAncillaryMessage::ScmRights(mut fds) => fds.next(),
        _ => None,
    });
    Ok((buffer, fd))
}

/// Waits for `expected` from the runtime.
fn expect(sync: BorrowedFd<'_>, expected: &[u8]) -> Result<(), String> {
    match receive(sync)? {
        (message, _) if message == expected => Ok(()),
        _ => Err("the runtime went away".into()),
    }
}

/// The raw syscalls, one `unsafe` block each.
mod sys {
    use std::convert::Infallible;
    use std::ffi::{CStr, CString};
    use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
    use std::os::unix::ffi::OsStrExt;
    use std::path::Path;

    use crate::seccomp::Program;

    /// Turns a syscall's -1 into the error `errno` names.
    pub fn check(result: libc::c_int, what: &str) -> Result<(), String> {
        if result == -1 { Err(format!("{what}: {}", std::io::Error::last_os_error())) } else { Ok(()) }
    }

    /// linux/sched.h's; libc's constant is a `c_int` it overflows.
    const CLONE_INTO_CGROUP: u64 = 0x2_0000_0000;

    /// `clone3` with `flags`, the child born in the cgroup2 directory `cgroup` if given: runs
    /// `child` in the new process, which must not return; the parent gets the child's pid and
    /// pidfd. Only sound in a single-threaded process (the runtime).
    pub fn clone(
        flags: u64,
        cgroup: Option<BorrowedFd<'_>>,
        child: impl FnOnce() -> Infallible,
    ) -> Result<(i32, OwnedFd), String> {
        let mut pidfd: libc::c_int = -1;
        let mut args: libc::clone_args = unsafe_zeroed();
        args.flags = flags | libc::CLONE_PIDFD as u64;
        if let Some(cgroup) = cgroup {
            args.flags |= CLONE_INTO_CGROUP;
            args.cgroup = cgroup.as_raw_fd() as u64;
        }
        args.pidfd = &mut pidfd as *mut libc::c_int as u64;
        args.exit_signal = libc::SIGCHLD as u64;
        // SAFETY: with no stack given, clone3 forks: the child runs on a copy of this stack and
        // ends in `child`, which never returns. `args` and `pidfd` live through the call.
        let pid = unsafe {
            libc::syscall(libc::SYS_clone3, &mut args as *mut libc::clone_args, std::mem::size_of::<libc::clone_args>())
        };
        // The child's arm never ends: rustc notes that, as unreachable code.
        #[allow(unreachable_code)]
        match pid {
            -1 => Err(format!("clone3: {}", std::io::Error::last_os_error())),
            0 => match child() {},
            // SAFETY: CLONE_PIDFD made `pidfd` a descriptor this process owns.
            pid => Ok((pid as i32, unsafe { OwnedFd::from_raw_fd(pidfd) })),
        }
    }

    fn unsafe_zeroed() -> libc::clone_args {
        // SAFETY: clone_args is plain integers, for which zero is valid.
        unsafe { std::mem::zeroed() }
    }

    pub fn exit(code: i32) -> ! {
        // SAFETY: ends the child without running the runtime's destructors or atexit handlers.
        unsafe { libc::_exit(code) }
    }

    pub fn setns(fd: BorrowedFd<'_>, flags: i32) -> Result<(), String> {
        // SAFETY: setns reads only its arguments.
        check(unsafe { libc::setns(fd.as_raw_fd(), flags) }, "setns")
    }

    pub fn unshare(flags: i32) -> libc::c_int {
        // SAFETY: unshare reads only its argument.
        unsafe { libc::unshare(flags) }
    }

    pub fn setresuid(uid: u32) -> libc::c_int {
        // SAFETY: a raw syscall on this thread only; the process is single-threaded.
        unsafe { libc::syscall(libc::SYS_setresuid, uid, uid, uid) as libc::c_int }
    }

    pub fn setresgid(gid: u32) -> libc::c_int {
        // SAFETY: as for setresuid.
        unsafe { libc::syscall(libc::SYS_setresgid, gid, gid, gid) as libc::c_int }
    }

    pub fn setgroups(groups: &[u32]) -> libc::c_int {
        // SAFETY: `groups` is valid for its length through the call.
        unsafe { libc::syscall(libc::SYS_setgroups, groups.len(), groups.as_ptr()) as libc::c_int }
    }

    pub fn setrlimit(resource: u32, soft: u64, hard: u64) -> std::io::Result<()> {
        let limit = libc::rlimit64 { rlim_cur: soft, rlim_max: hard };
        // SAFETY: `limit` is valid through the call, which only reads it.
        let result = unsafe { libc::setrlimit64(resource as libc::__rlimit_resource_t, &limit) };
        if result == -1 { Err(std::io::Error::last_os_error()) } else { Ok(()) }
    }

    pub fn dup2(fd: BorrowedFd<'_>, to: i32) -> libc::c_int {
        // SAFETY: dup2 only changes the descriptor table; `to` is a standard descriptor.
        unsafe { libc::dup2(fd.as_raw_fd(), to) }
    }

    /// Marks every descriptor but the standard ones close-on-exec.
    pub fn close_range_cloexec() {
        // SAFETY: only sets a flag on descriptors.
        unsafe { libc::close_range(3, libc::c_uint::MAX, libc::CLOSE_RANGE_CLOEXEC as libc::c_int) };
    }

    fn c_path(path: &Path) -> std::io::Result<CString> {
        CString::new(path.as_os_str().as_bytes()).map_err(std::io::Error::other)
    }

    pub fn mount(
        source: Option<&Path>,
        target: &Path,
        typ: Option<&str>,
        flags: libc::c_ulong,
        data: Option<&str>,
    ) -> std::io::Result<()> {
        let source = source.map(c_path).transpose()?;
        let target = c_path(target)?;
        let typ = typ.map(CString::new).transpose().map_err(std::io::Error::other)?;
        let data = data.map(CString::new).transpose().map_err(std::io::Error::other)?;
        let ptr = |s: &Option<CString>| s.as_deref().map_or(std::ptr::null(), CStr::as_ptr);
        // SAFETY: every pointer is null or a NUL-terminated string alive through the call.
        let result = unsafe { libc::mount(ptr(&source), target.as_ptr(), ptr(&typ), flags, ptr(&data).cast()) };
        if result == -1 { Err(std::io::Error::last_os_error()) } else { Ok(()) }
    }

    /// Makes the current directory the root, the old root unmounted (runc's `pivot_root(".", ".")`).
    pub fn pivot_root() -> std::io::Result<()> {
        let dot = c".";
        // SAFETY: the paths are NUL-terminated literals.
        if unsafe { libc::syscall(libc::SYS_pivot_root, dot.as_ptr(), dot.as_ptr()) } == -1 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: as above.
        if unsafe { libc::umount2(dot.as_ptr(), libc::MNT_DETACH) } == -1 {
            return Err(std::io::Error::last_os_error());
        }
        rustix::process::chdir("/").map_err(Into::into)
    }

    pub fn seccomp(program: &Program) -> std::io::Result<()> {
        let mut instructions: Vec<libc::sock_filter> = program
            .instructions
            .chunks_exact(8)
            .map(|i| libc::sock_filter {
                code: u16::from_ne_bytes([i[0], i[1]]),
                jt: i[2],
                jf: i[3],
                k: u32::from_ne_bytes([i[4], i[5], i[6], i[7]]),
            })
            .collect();
        let len = u16::try_from(instructions.len()).map_err(|_| std::io::Error::other("the filter is too long"))?;
        let fprog = libc::sock_fprog { len, filter: instructions.as_mut_ptr() };
        // SAFETY: `fprog` points at `len` instructions that outlive the call, which only reads them.
        let loaded = unsafe {
            libc::syscall(
                libc::SYS_seccomp,
                libc::SECCOMP_SET_MODE_FILTER,
                program.flags,
                &fprog as *const libc::sock_fprog,
            )
        };
        if loaded != 0 { Err(std::io::Error::last_os_error()) } else { Ok(()) }
    }

    /// Replaces the process; returns only if it cannot.
    pub fn execve(path: &CStr, args: &[CString], env: &[CString]) -> std::io::Error {
        let pointers = |strings: &[CString]| {
            strings.iter().map(|s| s.as_ptr()).chain(std::iter::once(std::ptr::null())).collect::<Vec<_>>()
        };
        let (argv, envp) = (pointers(args), pointers(env));
        // SAFETY: `argv` and `envp` are null-terminated arrays of NUL-terminated strings, alive
        // through the call.
        unsafe { libc::execve(path.as_ptr(), argv.as_ptr(), envp.as_ptr()) };
        std::io::Error::last_os_error()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mount_options_split_into_flags_propagation_and_data() {
        let options: Vec<String> =
            ["nosuid", "noexec", "mode=755", "size=65536k", "rbind", "rprivate", "ro"].map(String::from).to_vec();
        let parsed = Options::parse(&options);
        assert_eq!(parsed.flags, libc::MS_NOSUID | libc::MS_NOEXEC | libc::MS_BIND | libc::MS_REC | libc::MS_RDONLY);
        assert_eq!(parsed.propagation, libc::MS_PRIVATE | libc::MS_REC);
        assert_eq!(parsed.data, "mode=755,size=65536k");
        assert_eq!(Options::parse(&["ro".into(), "rw".into()]).flags, 0);
    }

    #[test]
    fn executables_that_cannot_run_get_dockers_words_and_codes() {
        assert_eq!(
            exec_error("nosuch", false, true),
            "exec failed:127:exec: \"nosuch\": executable file not found in $PATH"
        );
        assert_eq!(
            exec_error("/bin/nosuch", false, false),
            "exec failed:127:exec: \"/bin/nosuch\": stat /bin/nosuch: no such file or directory"
        );
        assert_eq!(exec_error("/etc/passwd", true, false), "exec failed:126:exec: \"/etc/passwd\": permission denied");
    }

    #[test]
    fn oci_capabilities_have_caps_names() {
        assert_eq!(to_cap(&oci_spec::runtime::Capability::NetBindService), Ok(caps::Capability::CAP_NET_BIND_SERVICE));
        assert_eq!(to_cap(&oci_spec::runtime::Capability::SysAdmin), Ok(caps::Capability::CAP_SYS_ADMIN));
    }
}
