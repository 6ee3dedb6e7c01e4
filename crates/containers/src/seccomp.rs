//! Seccomp profiles as Docker has them: an allowlist whose rules may apply only with (or without)
//! some capabilities, on some architectures, or from some kernel version, resolved for one
//! container into the OCI spec's `linux.seccomp`, then compiled to BPF ([`Programs`]) for the
//! runtime's executor to load.
//!
//! [`default_profile`] is Docker's default, written here as data from its documented behaviour:
//! everything not allowed fails with EPERM; `clone3` fails with ENOSYS (so C libraries fall back
//! to `clone`, whose namespace flags are filtered) unless the container has CAP_SYS_ADMIN.

use std::collections::HashMap;
use std::io::{Read, Seek, SeekFrom};
use std::str::FromStr;
use std::sync::Mutex;

use libseccomp::{ScmpAction, ScmpArch, ScmpArgCompare, ScmpCompareOp, ScmpFilterContext, ScmpSyscall};
use oci_spec::runtime::{
    Arch, Capability, LinuxSeccomp, LinuxSeccompAction, LinuxSeccompArgBuilder, LinuxSeccompBuilder,
    LinuxSeccompFilterFlag, LinuxSeccompOperator, LinuxSyscallBuilder, Spec,
};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// A profile in Docker's terms (names as in its JSON: `SCMP_ACT_ERRNO`, `SCMP_ARCH_X86_64`,
/// `CAP_SYS_ADMIN`, Go's architecture names in includes and excludes). serde is for the
/// container's store record only.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Profile {
    pub default_action: String,
    pub default_errno: Option<u32>,
    /// Used when `arch_map` is empty.
    pub architectures: Vec<String>,
    /// A seccomp architecture and its sub-architectures: the filter covers the host's entry.
    pub arch_map: Vec<(String, Vec<String>)>,
    pub rules: Vec<Rule>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rule {
    pub names: Vec<String>,
    pub action: String,
    pub errno: Option<u32>,
    pub args: Vec<Arg>,
    /// The rule applies only if all of these hold.
    pub includes: Filter,
    /// The rule does not apply if any of these holds.
    pub excludes: Filter,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Arg {
    pub index: u32,
    pub value: u64,
    pub value_two: u64,
    pub op: String,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Filter {
    pub caps: Vec<String>,
    pub arches: Vec<String>,
    /// `major.minor`.
    pub min_kernel: Option<String>,
}

/// What the host is, for includes and excludes.
pub struct Host {
    /// Go's name of the architecture (`amd64`), as profiles name it.
    pub arch: &'static str,
    pub seccomp_arch: &'static str,
    pub kernel: (u32, u32),
}

impl Host {
    pub fn this() -> Host {
        let (arch, seccomp_arch) = match std::env::consts::ARCH {
            "x86_64" => ("amd64", "SCMP_ARCH_X86_64"),
            "aarch64" => ("arm64", "SCMP_ARCH_AARCH64"),
            "riscv64" => ("riscv64", "SCMP_ARCH_RISCV64"),
            "s390x" => ("s390x", "SCMP_ARCH_S390X"),
            "powerpc64" => ("ppc64le", "SCMP_ARCH_PPC64LE"),
            other => (other, "SCMP_ARCH_NATIVE"),
        };
        let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
        Host { arch, seccomp_arch, kernel: parse_kernel(&release).unwrap_or((0, 0)) }
    }
}

fn parse_kernel(text: &str) -> Option<(u32, u32)> {
    let mut parts = text.trim().split(['.', '-']);
    let major = parts.next()?.parse().ok()?;
    let minor = parts.next()?.parse().ok()?;
    Some((major, minor))
}

/// The OCI filter `profile` amounts to for a container with `caps` on `host`. Names that are not
/// actions, operators, architectures or capabilities are a 400, as in Docker.
pub fn resolve(profile: &Profile, caps: &[Capability], host: &Host) -> Result<LinuxSeccomp> {
    let invalid =
        |what: &str, name: &str| Error::InvalidParameter(format!("invalid seccomp profile: unknown {what} {name:?}"));
    let action = |name: &str| LinuxSeccompAction::from_str(name).map_err(|_| invalid("action", name));
    let has_cap = |name: &String| {
        let bare = name.trim_start_matches("CAP_");
        Capability::from_str(bare).map(|c| caps.contains(&c)).map_err(|_| invalid("capability", name))
    };
    let kernel_at_least = |version: &String| {
        parse_kernel(version).map(|v| host.kernel >= v).ok_or_else(|| invalid("kernel version", version))
    };

    let arch_names: Vec<&String> = match profile.arch_map.iter().find(|(arch, _)| arch == host.seccomp_arch) {
        Some((arch, subs)) => std::iter::once(arch).chain(subs).collect(),
        None if profile.arch_map.is_empty() => profile.architectures.iter().collect(),
        None => Vec::new(),
    };
    let architectures = arch_names
        .into_iter()
        .map(|a| Arch::from_str(a).map_err(|_| invalid("architecture", a)))
        .collect::<Result<Vec<_>>>()?;

    let mut syscalls = Vec::new();
    for rule in &profile.rules {
        let mut applies = rule.includes.arches.is_empty() || rule.includes.arches.iter().any(|a| a == host.arch);
        applies &= !rule.excludes.arches.iter().any(|a| a == host.arch);
        for cap in &rule.includes.caps {
            applies &= has_cap(cap)?;
        }
        for cap in &rule.excludes.caps {
            applies &= !has_cap(cap)?;
        }
        if let Some(version) = &rule.includes.min_kernel {
            applies &= kernel_at_least(version)?;
        }
        let action = action(&rule.action)?;
        if !applies {
            continue;
        }
        let args = rule
            .args
            .iter()
            .map(|arg| {
                let op = LinuxSeccompOperator::from_str(&arg.op).map_err(|_| invalid("operator", &arg.op))?;
                let built = LinuxSeccompArgBuilder::default()
                    .index(arg.index as usize)
                    .value(arg.value)
                    .value_two(arg.value_two)
                    .op(op)
                    .build();
                built.map_err(|e| Error::InvalidParameter(format!("invalid seccomp profile: {e}")))
            })
            .collect::<Result<Vec<_>>>()?;
        let mut syscall = LinuxSyscallBuilder::default().names(rule.names.clone()).action(action);
        if let Some(errno) = rule.errno {
            syscall = syscall.errno_ret(errno);
        }
        if !args.is_empty() {
            syscall = syscall.args(args);
        }
        syscalls.push(syscall.build().map_err(|e| Error::InvalidParameter(format!("invalid seccomp profile: {e}")))?);
    }
    let mut seccomp = LinuxSeccompBuilder::default()
        .default_action(action(&profile.default_action)?)
        .architectures(architectures)
        .syscalls(syscalls);
    if let Some(errno) = profile.default_errno {
        seccomp = seccomp.default_errno_ret(errno);
    }
    seccomp.build().map_err(|e| Error::InvalidParameter(format!("invalid seccomp profile: {e}")))
}

/// Allowed for every container.
const ALWAYS: &[&str] = &[
    "accept",
    "accept4",
    "access",
    "adjtimex",
    "alarm",
    "bind",
    "brk",
    "capget",
    "capset",
    "chdir",
    "chmod",
    "chown",
    "chown32",
    "clock_adjtime",
    "clock_adjtime64",
    "clock_getres",
    "clock_getres_time64",
    "clock_gettime",
    "clock_gettime64",
    "clock_nanosleep",
    "clock_nanosleep_time64",
    "close",
    "close_range",
    "connect",
    "copy_file_range",
    "creat",
    "dup",
    "dup2",
    "dup3",
    "epoll_create",
    "epoll_create1",
    "epoll_ctl",
    "epoll_ctl_old",
    "epoll_pwait",
    "epoll_pwait2",
    "epoll_wait",
    "epoll_wait_old",
    "eventfd",
    "eventfd2",
    "execve",
    "execveat",
    "exit",
    "exit_group",
    "faccessat",
    "faccessat2",
    "fadvise64",
    "fadvise64_64",
    "fallocate",
    "fanotify_mark",
    "fchdir",
    "fchmod",
    "fchmodat",
    "fchown",
    "fchown32",
    "fchownat",
    "fcntl",
    "fcntl64",
    "fdatasync",
    "fgetxattr",
    "flistxattr",
    "flock",
    "fork",
    "fremovexattr",
    "fsetxattr",
    "fstat",
    "fstat64",
    "fstatat64",
    "fstatfs",
    "fstatfs64",
    "fsync",
    "ftruncate",
    "ftruncate64",
    "futex",
    "futex_time64",
    "futex_waitv",
    "futimesat",
    "getcpu",
    "getcwd",
    "getdents",
    "getdents64",
    "getegid",
    "getegid32",
    "geteuid",
    "geteuid32",
    "getgid",
    "getgid32",
    "getgroups",
    "getgroups32",
    "getitimer",
    "getpeername",
    "getpgid",
    "getpgrp",
    "getpid",
    "getppid",
    "getpriority",
    "getrandom",
    "getresgid",
    "getresgid32",
    "getresuid",
    "getresuid32",
    "getrlimit",
    "get_robust_list",
    "getrusage",
    "getsid",
    "getsockname",
    "getsockopt",
    "get_thread_area",
    "gettid",
    "gettimeofday",
    "getuid",
    "getuid32",
    "getxattr",
    "inotify_add_watch",
    "inotify_init",
    "inotify_init1",
    "inotify_rm_watch",
    "io_cancel",
    "ioctl",
    "io_destroy",
    "io_getevents",
    "io_pgetevents",
    "io_pgetevents_time64",
    "ioprio_get",
    "ioprio_set",
    "io_setup",
    "io_submit",
    "io_uring_enter",
    "io_uring_register",
    "io_uring_setup",
    "ipc",
    "kill",
    "landlock_add_rule",
    "landlock_create_ruleset",
    "landlock_restrict_self",
    "lchown",
    "lchown32",
    "lgetxattr",
    "link",
    "linkat",
    "listen",
    "listxattr",
    "llistxattr",
    "_llseek",
    "lremovexattr",
    "lseek",
    "lsetxattr",
    "lstat",
    "lstat64",
    "madvise",
    "membarrier",
    "memfd_create",
    "memfd_secret",
    "mincore",
    "mkdir",
    "mkdirat",
    "mknod",
    "mknodat",
    "mlock",
    "mlock2",
    "mlockall",
    "mmap",
    "mmap2",
    "mprotect",
    "mq_getsetattr",
    "mq_notify",
    "mq_open",
    "mq_timedreceive",
    "mq_timedreceive_time64",
    "mq_timedsend",
    "mq_timedsend_time64",
    "mq_unlink",
    "mremap",
    "msgctl",
    "msgget",
    "msgrcv",
    "msgsnd",
    "msync",
    "munlock",
    "munlockall",
    "munmap",
    "name_to_handle_at",
    "nanosleep",
    "newfstatat",
    "_newselect",
    "open",
    "openat",
    "openat2",
    "pause",
    "pidfd_open",
    "pidfd_send_signal",
    "pipe",
    "pipe2",
    "pkey_alloc",
    "pkey_free",
    "pkey_mprotect",
    "poll",
    "ppoll",
    "ppoll_time64",
    "prctl",
    "pread64",
    "preadv",
    "preadv2",
    "prlimit64",
    "process_mrelease",
    "pselect6",
    "pselect6_time64",
    "pwrite64",
    "pwritev",
    "pwritev2",
    "read",
    "readahead",
    "readlink",
    "readlinkat",
    "readv",
    "recv",
    "recvfrom",
    "recvmmsg",
    "recvmmsg_time64",
    "recvmsg",
    "remap_file_pages",
    "removexattr",
    "rename",
    "renameat",
    "renameat2",
    "restart_syscall",
    "rmdir",
    "rseq",
    "rt_sigaction",
    "rt_sigpending",
    "rt_sigprocmask",
    "rt_sigqueueinfo",
    "rt_sigreturn",
    "rt_sigsuspend",
    "rt_sigtimedwait",
    "rt_sigtimedwait_time64",
    "rt_tgsigqueueinfo",
    "sched_getaffinity",
    "sched_getattr",
    "sched_getparam",
    "sched_get_priority_max",
    "sched_get_priority_min",
    "sched_getscheduler",
    "sched_rr_get_interval",
    "sched_rr_get_interval_time64",
    "sched_setaffinity",
    "sched_setattr",
    "sched_setparam",
    "sched_setscheduler",
    "sched_yield",
    "seccomp",
    "select",
    "semctl",
    "semget",
    "semop",
    "semtimedop",
    "semtimedop_time64",
    "send",
    "sendfile",
    "sendfile64",
    "sendmmsg",
    "sendmsg",
    "sendto",
    "setfsgid",
    "setfsgid32",
    "setfsuid",
    "setfsuid32",
    "setgid",
    "setgid32",
    "setgroups",
    "setgroups32",
    "setitimer",
    "setpgid",
    "setpriority",
    "setregid",
    "setregid32",
    "setresgid",
    "setresgid32",
    "setresuid",
    "setresuid32",
    "setreuid",
    "setreuid32",
    "setrlimit",
    "set_robust_list",
    "setsid",
    "setsockopt",
    "set_thread_area",
    "set_tid_address",
    "setuid",
    "setuid32",
    "setxattr",
    "shmat",
    "shmctl",
    "shmdt",
    "shmget",
    "shutdown",
    "sigaltstack",
    "signalfd",
    "signalfd4",
    "sigprocmask",
    "sigreturn",
    "socketcall",
    "socketpair",
    "splice",
    "stat",
    "stat64",
    "statfs",
    "statfs64",
    "statx",
    "symlink",
    "symlinkat",
    "sync",
    "sync_file_range",
    "syncfs",
    "sysinfo",
    "tee",
    "tgkill",
    "time",
    "timer_create",
    "timer_delete",
    "timer_getoverrun",
    "timer_gettime",
    "timer_gettime64",
    "timer_settime",
    "timer_settime64",
    "timerfd_create",
    "timerfd_gettime",
    "timerfd_gettime64",
    "timerfd_settime",
    "timerfd_settime64",
    "times",
    "tkill",
    "truncate",
    "truncate64",
    "ugetrlimit",
    "umask",
    "uname",
    "unlink",
    "unlinkat",
    "utime",
    "utimensat",
    "utimensat_time64",
    "utimes",
    "vfork",
    "vmsplice",
    "wait4",
    "waitid",
    "waitpid",
    "write",
    "writev",
];

/// Allowed only on some architectures (Go's names).
const BY_ARCH: &[(&[&str], &[&str])] = &[
    (&["ppc64le"], &["sync_file_range2", "swapcontext"]),
    (
        &["arm", "arm64"],
        &["arm_fadvise64_64", "arm_sync_file_range", "sync_file_range2", "breakpoint", "cacheflush", "set_tls"],
    ),
    (&["amd64", "x32"], &["arch_prctl"]),
    (&["amd64", "x32", "x86"], &["modify_ldt"]),
    (&["s390", "s390x"], &["s390_pci_mmio_read", "s390_pci_mmio_write", "s390_runtime_instr"]),
    (&["riscv64"], &["riscv_flush_icache"]),
];

/// Allowed only with a capability.
const BY_CAP: &[(&str, &[&str])] = &[
    ("CAP_DAC_READ_SEARCH", &["open_by_handle_at"]),
    (
        "CAP_SYS_ADMIN",
        &[
            "bpf",
            "clone",
            "clone3",
            "fanotify_init",
            "fsconfig",
            "fsmount",
            "fsopen",
            "fspick",
            "lookup_dcookie",
            "mount",
            "mount_setattr",
            "move_mount",
            "open_tree",
            "perf_event_open",
            "quotactl",
            "quotactl_fd",
            "setdomainname",
            "sethostname",
            "setns",
            "syslog",
            "umount",
            "umount2",
            "unshare",
        ],
    ),
    ("CAP_SYS_BOOT", &["reboot"]),
    ("CAP_SYS_CHROOT", &["chroot"]),
    ("CAP_SYS_MODULE", &["delete_module", "init_module", "finit_module"]),
    ("CAP_SYS_PACCT", &["acct"]),
    ("CAP_SYS_PTRACE", &["kcmp", "pidfd_getfd", "process_madvise", "process_vm_readv", "process_vm_writev", "ptrace"]),
    ("CAP_SYS_RAWIO", &["iopl", "ioperm"]),
    ("CAP_SYS_TIME", &["settimeofday", "stime", "clock_settime", "clock_settime64"]),
    ("CAP_SYS_TTY_CONFIG", &["vhangup"]),
    ("CAP_SYS_NICE", &["get_mempolicy", "mbind", "set_mempolicy", "set_mempolicy_home_node"]),
    ("CAP_SYSLOG", &["syslog"]),
    ("CAP_BPF", &["bpf"]),
    ("CAP_PERFMON", &["perf_event_open"]),
];

/// `personality` is allowed only with these personas (Linux, PER_LINUX32, UNAME26 and their
/// mix, and the query 0xffffffff).
const PERSONAS: [u64; 5] = [0x0, 0x8, 0x20000, 0x20008, 0xffff_ffff];

/// The namespace flags of `clone` (CLONE_NEWNS | NEWCGROUP | NEWUTS | NEWIPC | NEWUSER | NEWPID |
/// NEWNET): without CAP_SYS_ADMIN, `clone` is allowed only with none of them set.
const CLONE_NAMESPACES: u64 = 0x7e02_0000;

/// `socket`'s domain AF_VSOCK, refused to every container.
const AF_VSOCK: u64 = 40;

fn allow(names: &[&str]) -> Rule {
    Rule { names: names.iter().map(|n| n.to_string()).collect(), action: "SCMP_ACT_ALLOW".into(), ..Rule::default() }
}

fn arg(index: u32, op: &str, value: u64) -> Arg {
    Arg { index, value, value_two: 0, op: op.into() }
}

fn strings(items: &[&str]) -> Vec<String> {
    items.iter().map(|i| i.to_string()).collect()
}

/// Docker's default seccomp profile.
pub fn default_profile() -> Profile {
    let mut rules = vec![allow(ALWAYS)];
    rules.push(Rule {
        includes: Filter { min_kernel: Some("4.8".into()), ..Filter::default() },
        ..allow(&["process_vm_readv", "process_vm_writev", "ptrace"])
    });
    rules.push(Rule { args: vec![arg(0, "SCMP_CMP_NE", AF_VSOCK)], ..allow(&["socket"]) });
    for persona in PERSONAS {
        rules.push(Rule { args: vec![arg(0, "SCMP_CMP_EQ", persona)], ..allow(&["personality"]) });
    }
    for (arches, names) in BY_ARCH {
        rules.push(Rule { includes: Filter { arches: strings(arches), ..Filter::default() }, ..allow(names) });
    }
    for (cap, names) in BY_CAP {
        rules.push(Rule { includes: Filter { caps: strings(&[cap]), ..Filter::default() }, ..allow(names) });
    }
    let without_sys_admin = Filter { caps: strings(&["CAP_SYS_ADMIN"]), ..Filter::default() };
    let s390 = strings(&["s390", "s390x"]);
    rules.push(Rule {
        args: vec![arg(0, "SCMP_CMP_MASKED_EQ", CLONE_NAMESPACES)],
        excludes: Filter { arches: s390.clone(), ..without_sys_admin.clone() },
        ..allow(&["clone"])
    });
    // s390 passes clone's flags second.
    rules.push(Rule {
        args: vec![arg(1, "SCMP_CMP_MASKED_EQ", CLONE_NAMESPACES)],
        includes: Filter { arches: s390, ..Filter::default() },
        excludes: without_sys_admin.clone(),
        ..allow(&["clone"])
    });
    rules.push(Rule {
        names: strings(&["clone3"]),
        action: "SCMP_ACT_ERRNO".into(),
        errno: Some(ENOSYS),
        excludes: without_sys_admin,
        ..Rule::default()
    });
    let sub = |arches: &[&str]| strings(arches);
    Profile {
        default_action: "SCMP_ACT_ERRNO".into(),
        default_errno: Some(EPERM),
        architectures: Vec::new(),
        arch_map: vec![
            ("SCMP_ARCH_X86_64".into(), sub(&["SCMP_ARCH_X86", "SCMP_ARCH_X32"])),
            ("SCMP_ARCH_AARCH64".into(), sub(&["SCMP_ARCH_ARM"])),
            ("SCMP_ARCH_MIPS64".into(), sub(&["SCMP_ARCH_MIPS", "SCMP_ARCH_MIPS64N32"])),
            ("SCMP_ARCH_MIPS64N32".into(), sub(&["SCMP_ARCH_MIPS", "SCMP_ARCH_MIPS64"])),
            ("SCMP_ARCH_MIPSEL64".into(), sub(&["SCMP_ARCH_MIPSEL", "SCMP_ARCH_MIPSEL64N32"])),
            ("SCMP_ARCH_MIPSEL64N32".into(), sub(&["SCMP_ARCH_MIPSEL", "SCMP_ARCH_MIPSEL64"])),
            ("SCMP_ARCH_S390X".into(), sub(&["SCMP_ARCH_S390"])),
            ("SCMP_ARCH_RISCV64".into(), Vec::new()),
        ],
        rules,
    }
}

const EPERM: u32 = 1;
const ENOSYS: u32 = 38;

/// A filter compiled to classic BPF, which the runtime loads in the container's init (and in each
/// exec'd process) just before `exec`. It is compiled once here: libseccomp takes about 12 ms for
/// Docker's default profile on this machine, too long to spend in every init.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Program {
    /// `struct sock_filter`s in the host's byte order.
    pub instructions: Vec<u8>,
    /// `SECCOMP_FILTER_FLAG_*`.
    pub flags: u32,
    /// Capabilities the process holds only to load the filter, which the loader then drops: without
    /// no_new_privs loading needs CAP_SYS_ADMIN, and dropping from the bounding set CAP_SETPCAP.
    /// (By number: oci-spec's `Capability` cannot go through postcard.)
    pub raised: Vec<u8>,
}

/// Compiled programs by profile: a profile resolves the same for every container with the same
/// capabilities, so there are few.
#[derive(Default)]
pub struct Programs(Mutex<HashMap<Vec<u8>, Vec<u8>>>);

impl Programs {
    /// `spec`'s `linux.seccomp` as a program for the runtime, with the capabilities its loading
    /// needs that the process lacks (the runtime raises them, then drops them). A filter with a notify action (no agent would answer) is refused, as is
    /// one that would stop the process from dropping what it raised (no `capset`) without
    /// no_new_privs: runc loads such a filter before dropping capabilities, and the drop fails.
    pub fn compile(&self, spec: &Spec) -> Result<Option<Program>> {
        let Some(seccomp) = spec.linux().as_ref().and_then(|l| l.seccomp().clone()) else { return Ok(None) };
        let no_new_privileges = spec.process().as_ref().and_then(|p| p.no_new_privileges()).unwrap_or(false);
        let rules = seccomp.syscalls().clone().unwrap_or_default();
        let allows_capset = seccomp.default_action() == LinuxSeccompAction::ScmpActAllow
            || rules.iter().any(|r| {
                r.action() == LinuxSeccompAction::ScmpActAllow
                    && r.args().as_ref().is_none_or(Vec::is_empty)
                    && r.names().iter().any(|n| n == "capset")
            });
        let notifies = rules.iter().any(|r| r.action() == LinuxSeccompAction::ScmpActNotify);
        if notifies {
            return Err(Error::InvalidParameter("seccomp notify actions are not supported".into()));
        }
        if !(no_new_privileges || allows_capset) {
            return Err(Error::InvalidParameter(
                "the seccomp profile must allow capset, which starting the container needs, unless no-new-privileges is set".into(),
            ));
        }
        let key = postcard::to_allocvec(&seccomp).map_err(|e| Error::InvalidParameter(e.to_string()))?;
        let cached = self.0.lock().unwrap_or_else(|p| p.into_inner()).get(&key).cloned();
        let instructions = match cached {
            Some(instructions) => instructions,
            None => {
                let compiled = compile(&seccomp)?;
                let mut programs = self.0.lock().unwrap_or_else(|p| p.into_inner());
                // Custom profiles could grow it without bound; they are rare, so starting over is fine.
                if programs.len() >= 64 {
                    programs.clear();
                }
                programs.insert(key, compiled.clone());
                compiled
            }
        };
        let flags = seccomp.flags().iter().flatten().fold(0, |flags, flag| {
            flags
                | match flag {
                    LinuxSeccompFilterFlag::SeccompFilterFlagTsync => 1,
                    LinuxSeccompFilterFlag::SeccompFilterFlagLog => 2,
                    LinuxSeccompFilterFlag::SeccompFilterFlagSpecAllow => 4,
                    LinuxSeccompFilterFlag::SeccompFilterFlagWaitKillableRecv => 32,
                }
        });
        let effective = (spec.process().as_ref())
            .and_then(|p| p.capabilities().as_ref())
            .and_then(|c| c.effective().clone())
            .unwrap_or_default();
        // CAP_SETPCAP last: the loader drops in this order, and needs it to drop the other.
        let raised: Vec<Capability> = [Capability::SysAdmin, Capability::Setpcap]
            .into_iter()
            .filter(|c| !no_new_privileges && !effective.contains(c))
            .collect();
        let raised =
            raised.iter().map(|c| crate::launch::to_cap(c).map(|c| c.index())).collect::<std::result::Result<_, _>>();
        let raised = raised.map_err(Error::InvalidParameter)?;
        Ok(Some(Program { instructions, flags, raised }))
    }
}

/// libseccomp's program for the filter, made smaller ([`crate::bpf`]).
fn compile(seccomp: &LinuxSeccomp) -> Result<Vec<u8>> {
    let program = libseccomp_program(seccomp)?;
    Ok(crate::bpf::optimize(&program).unwrap_or(program))
}

/// Compiles a filter with libseccomp as runc reads the OCI fields: a rule whose action is the
/// default action is left out, as are syscalls this libseccomp does not know; conditions on
/// distinct arguments form one rule, and on a repeated argument one rule each;
/// `SCMP_CMP_MASKED_EQ` is `(arg & value) == valueTwo`.
fn libseccomp_program(seccomp: &LinuxSeccomp) -> Result<Vec<u8>> {
    let failed = |e: libseccomp::error::SeccompError| Error::InvalidParameter(format!("invalid seccomp profile: {e}"));
    let action = |action: LinuxSeccompAction, errno: Option<u32>| {
        let errno = errno.and_then(|e| i32::try_from(e).ok()).unwrap_or(libc::EPERM);
        ScmpAction::from_str(&action.to_string(), Some(errno)).map_err(failed)
    };
    let default = action(seccomp.default_action(), seccomp.default_errno_ret())?;
    let mut filter = ScmpFilterContext::new(default).map_err(failed)?;
    for arch in seccomp.architectures().iter().flatten() {
        filter.add_arch(ScmpArch::from_str(&arch.to_string()).map_err(failed)?).map_err(failed)?;
    }
    // Whether to set no_new_privs is the runtime's business, not the filter's.
    filter.set_ctl_nnp(false).map_err(failed)?;
    for rule in seccomp.syscalls().iter().flatten() {
        let rule_action = action(rule.action(), rule.errno_ret())?;
        if rule_action == default {
            continue;
        }
        let conditions: Vec<ScmpArgCompare> = rule
            .args()
            .iter()
            .flatten()
            .map(|arg| {
                let index = arg.index() as u32;
                let op = match arg.op() {
                    LinuxSeccompOperator::ScmpCmpNe => ScmpCompareOp::NotEqual,
                    LinuxSeccompOperator::ScmpCmpLt => ScmpCompareOp::Less,
                    LinuxSeccompOperator::ScmpCmpLe => ScmpCompareOp::LessOrEqual,
                    LinuxSeccompOperator::ScmpCmpEq => ScmpCompareOp::Equal,
                    LinuxSeccompOperator::ScmpCmpGe => ScmpCompareOp::GreaterEqual,
                    LinuxSeccompOperator::ScmpCmpGt => ScmpCompareOp::Greater,
                    LinuxSeccompOperator::ScmpCmpMaskedEq => {
                        return ScmpArgCompare::new(
                            index,
                            ScmpCompareOp::MaskedEqual(arg.value()),
                            arg.value_two().unwrap_or(0),
                        );
                    }
                };
                ScmpArgCompare::new(index, op, arg.value())
            })
            .collect();
        let mut indexes: Vec<u32> = rule.args().iter().flatten().map(|a| a.index() as u32).collect();
        indexes.sort_unstable();
        let repeated = indexes.windows(2).any(|w| w[0] == w[1]);
        for name in rule.names() {
            let Ok(syscall) = ScmpSyscall::from_name(name) else { continue };
            if conditions.is_empty() {
                filter.add_rule(rule_action, syscall).map_err(failed)?;
            } else if repeated {
                for condition in &conditions {
                    filter
                        .add_rule_conditional(rule_action, syscall, std::slice::from_ref(condition))
                        .map_err(failed)?;
                }
            } else {
                filter.add_rule_conditional(rule_action, syscall, &conditions).map_err(failed)?;
            }
        }
    }
    let mut out = tempfile::tempfile().map_err(Error::io("cannot make a temporary file", "seccomp"))?;
    filter.export_bpf(&out).map_err(failed)?;
    let mut program = Vec::new();
    out.seek(SeekFrom::Start(0))
        .and_then(|_| out.read_to_end(&mut program))
        .map_err(Error::io("cannot read", "seccomp"))?;
    Ok(program)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    const AMD64: Host = Host { arch: "amd64", seccomp_arch: "SCMP_ARCH_X86_64", kernel: (6, 1) };

    fn allowed(seccomp: &LinuxSeccomp, name: &str) -> Vec<String> {
        let syscalls = seccomp.syscalls().as_ref().unwrap();
        syscalls
            .iter()
            .filter(|s| s.names().iter().any(|n| n == name))
            .map(|s| format!("{}:{}", s.action(), s.args().as_ref().map_or(0, Vec::len)))
            .collect()
    }

    #[test]
    fn the_default_profile_depends_on_capabilities_and_architecture() {
        let profile = default_profile();
        let plain = resolve(&profile, &[Capability::Chown], &AMD64).unwrap();
        assert_eq!(plain.default_action(), LinuxSeccompAction::ScmpActErrno);
        assert_eq!(plain.default_errno_ret(), Some(1));
        assert_eq!(
            plain.architectures().as_ref().unwrap(),
            &[Arch::ScmpArchX86_64, Arch::ScmpArchX86, Arch::ScmpArchX32]
        );
        assert!(allowed(&plain, "mount").is_empty());
        assert!(allowed(&plain, "unshare").is_empty());
        assert!(allowed(&plain, "s390_runtime_instr").is_empty());
        assert_eq!(allowed(&plain, "arch_prctl"), ["SCMP_ACT_ALLOW:0"]);
        assert_eq!(allowed(&plain, "clone"), ["SCMP_ACT_ALLOW:1"]);
        assert_eq!(allowed(&plain, "clone3"), ["SCMP_ACT_ERRNO:0"]);
        assert_eq!(allowed(&plain, "personality").len(), 5);
        assert_eq!(allowed(&plain, "ptrace"), ["SCMP_ACT_ALLOW:0"]);

        let admin = resolve(&profile, &[Capability::SysAdmin], &AMD64).unwrap();
        assert_eq!(allowed(&admin, "mount"), ["SCMP_ACT_ALLOW:0"]);
        assert_eq!(allowed(&admin, "clone"), ["SCMP_ACT_ALLOW:0"]);
        assert_eq!(allowed(&admin, "clone3"), ["SCMP_ACT_ALLOW:0"]);

        let old = Host { kernel: (4, 4), ..AMD64 };
        assert!(allowed(&resolve(&profile, &[], &old).unwrap(), "ptrace").is_empty());
    }

    #[test]
    fn unknown_names_are_refused() {
        let profile = Profile { default_action: "SCMP_ACT_NOPE".into(), ..Profile::default() };
        assert!(resolve(&profile, &[], &AMD64).unwrap_err().to_string().contains("unknown action"));
        let rule = Rule { includes: Filter { caps: vec!["CAP_NOPE".into()], ..Filter::default() }, ..allow(&["read"]) };
        let profile = Profile { default_action: "SCMP_ACT_ALLOW".into(), rules: vec![rule], ..Profile::default() };
        assert!(resolve(&profile, &[], &AMD64).unwrap_err().to_string().contains("unknown capability"));
        assert_eq!(parse_kernel("6.18.44-fc-v657\n"), Some((6, 18)));
    }

    fn spec_with(seccomp: LinuxSeccomp, caps: &[Capability], no_new_privileges: bool) -> Spec {
        let mut spec = Spec::default();
        let set: oci_spec::runtime::Capabilities = caps.iter().copied().collect();
        let mut process = spec.process().clone().unwrap();
        let mut capabilities = process.capabilities().clone().unwrap();
        capabilities.set_effective(Some(set.clone())).set_permitted(Some(set.clone())).set_bounding(Some(set));
        process.set_capabilities(Some(capabilities)).set_no_new_privileges(no_new_privileges.then_some(true));
        spec.set_process(Some(process));
        spec.linux_mut().as_mut().unwrap().set_seccomp(Some(seccomp));
        spec
    }

    #[test]
    fn a_filter_is_compiled_once_and_loading_it_raises_only_what_is_dropped_again() {
        let programs = Programs::default();
        let default = resolve(&default_profile(), &[Capability::Chown], &AMD64).unwrap();
        let program = programs.compile(&spec_with(default.clone(), &[Capability::Chown], false)).unwrap().unwrap();
        assert!(program.instructions.len() > 8 * 100 && program.instructions.len() % 8 == 0);
        assert_eq!((program.flags, program.raised.clone()), (0, vec![21, 8])); // CAP_SYS_ADMIN, CAP_SETPCAP
        assert_eq!(programs.0.lock().unwrap().len(), 1);
        let again = programs.compile(&spec_with(default.clone(), &[Capability::Chown], false)).unwrap().unwrap();
        assert_eq!((again.instructions, programs.0.lock().unwrap().len()), (program.instructions, 1));

        // With no_new_privs nothing is raised; without it, a filter must let capset through.
        let nnp = programs.compile(&spec_with(default, &[Capability::Chown], true)).unwrap().unwrap();
        assert!(nnp.raised.is_empty());
        let no_capset =
            LinuxSeccompBuilder::default().default_action(LinuxSeccompAction::ScmpActErrno).build().unwrap();
        assert!(programs.compile(&spec_with(no_capset.clone(), &[], false)).is_err());
        assert!(programs.compile(&spec_with(no_capset, &[], true)).unwrap().is_some());
    }

    fn custom_profile() -> Profile {
        let rule = |names: &[&str], action: &str, errno: Option<u32>, args: Vec<Arg>| Rule {
            names: strings(names),
            action: action.into(),
            errno,
            args,
            ..Rule::default()
        };
        let masked = Arg { index: 2, value: 0x4, value_two: 0x4, op: "SCMP_CMP_MASKED_EQ".into() };
        Profile {
            default_action: "SCMP_ACT_ALLOW".into(),
            architectures: strings(&["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"]),
            rules: vec![
                rule(&["mkdir", "mkdirat"], "SCMP_ACT_ERRNO", Some(13), vec![]),
                rule(&["kill"], "SCMP_ACT_ERRNO", None, vec![arg(1, "SCMP_CMP_EQ", 9)]),
                rule(
                    &["setpriority"],
                    "SCMP_ACT_ERRNO",
                    None,
                    vec![arg(2, "SCMP_CMP_LT", 5), arg(0, "SCMP_CMP_NE", 0)],
                ),
                rule(&["mmap"], "SCMP_ACT_TRAP", None, vec![masked]),
                rule(&["lseek"], "SCMP_ACT_LOG", None, vec![arg(1, "SCMP_CMP_GT", 0x1_0000_0000)]),
                rule(&["pread64"], "SCMP_ACT_ERRNO", Some(5), vec![arg(3, "SCMP_CMP_GE", 0x2_0000_0001)]),
                rule(&["pwrite64"], "SCMP_ACT_KILL_PROCESS", None, vec![arg(3, "SCMP_CMP_LE", 10)]),
                rule(&["socket"], "SCMP_ACT_ERRNO", None, vec![arg(0, "SCMP_CMP_EQ", 10), arg(0, "SCMP_CMP_EQ", 40)]),
                rule(&["ptrace"], "SCMP_ACT_TRACE", Some(7), vec![]),
                rule(&["reboot"], "SCMP_ACT_KILL", None, vec![]),
            ],
            ..Profile::default()
        }
    }

    #[test]
    fn the_smaller_program_decides_every_syscall_as_libseccomps_does() {
        let arm64 = Host { arch: "arm64", seccomp_arch: "SCMP_ARCH_AARCH64", kernel: (6, 1) };
        let default = default_profile();
        let filters = [
            resolve(&default, &[], &AMD64).unwrap(),
            resolve(&default, &[Capability::Chown, Capability::SysPtrace], &AMD64).unwrap(),
            resolve(&default, &[Capability::SysAdmin, Capability::SysNice, Capability::SysTime], &AMD64).unwrap(),
            resolve(&default, &[], &arm64).unwrap(),
        ];
        for filter in filters {
            let original = libseccomp_program(&filter).unwrap();
            let smaller = compile(&filter).unwrap();
            println!("{} instructions -> {}", original.len() / 8, smaller.len() / 8);
            assert!(smaller.len() * 2 < original.len());
            crate::bpf::tests::assert_equivalent(&original, &smaller);
        }
        // Allowing by default, with conditions on arguments: libseccomp's program is short already,
        // so the optimized one, if any, must decide alike.
        let custom = resolve(&custom_profile(), &[], &AMD64).unwrap();
        let original = libseccomp_program(&custom).unwrap();
        crate::bpf::tests::assert_equivalent(&original, &crate::bpf::optimize(&original).unwrap_or(original.clone()));
    }

    #[cfg(target_arch = "x86_64")]
    #[allow(unsafe_code)]
    #[test]
    fn the_kernel_takes_the_smaller_program_and_it_filters() {
        let filter = resolve(&default_profile(), &[Capability::Chown], &AMD64).unwrap();
        let program = Program { instructions: compile(&filter).unwrap(), flags: 0, raised: Vec::new() };
        // SAFETY: fork in a test process: glibc's fork leaves malloc usable in the child, which loads
        // the filter through the runtime's own code, makes syscalls and exits.
        let status = unsafe {
            match libc::fork() {
                0 => {
                    let errno = || *libc::__errno_location();
                    let loaded = libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) == 0
                        && crate::launch::load_seccomp(&program).is_ok();
                    let unshare = libc::unshare(libc::CLONE_NEWNS) == -1 && errno() == libc::EPERM;
                    let clone3 = libc::syscall(libc::SYS_clone3, 0, 0) == -1 && errno() == libc::ENOSYS;
                    let getpid = libc::getpid() > 0;
                    libc::_exit(
                        i32::from(!loaded)
                            | i32::from(!unshare) << 1
                            | i32::from(!clone3) << 2
                            | i32::from(!getpid) << 3,
                    )
                }
                child => {
                    let mut status = 0;
                    assert_eq!(libc::waitpid(child, &mut status, 0), child);
                    status
                }
            }
        };
        assert!(libc::WIFEXITED(status), "{status:#x}");
        assert_eq!(libc::WEXITSTATUS(status), 0, "bits: loaded, unshare refused, clone3 ENOSYS, getpid allowed");
    }
}
