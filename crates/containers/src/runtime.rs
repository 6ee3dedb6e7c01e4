//! The runtime process: youki's libcontainer runs in a child process of Stratus (the binary
//! re-executes itself as `stratus runtime`), never inside Stratus's own multi-threaded process.
//! libcontainer creates containers with a raw `clone3` and then runs Rust code (allocation,
//! logging) in the child before `exec`; after a clone of a multi-threaded process a lock held by
//! another thread (malloc's, stderr's) stays locked forever in the child. The runtime process is
//! single-threaded, so that cannot happen.
//!
//! Stratus starts one per core ([`Runtime`] picks one by container id). Each is the parent of
//! its containers' init processes: it reaps them (one pidfd each, polled with
//! its socket, so no signal mask is inherited by containers) and reports each exit. When Stratus
//! goes away (its end of the socket closes, even on SIGKILL), the runtime kills and deletes every
//! container it made, then exits.
//!
//! Stratus talks to it over a `SOCK_SEQPACKET` socket pair: one postcard message per packet,
//! the container's stdio passed as `SCM_RIGHTS`. Requests are answered in order, one at a time.

use std::collections::HashMap;
use std::io::{IoSlice, IoSliceMut};
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use libcontainer::container::Container;
use libcontainer::container::builder::ContainerBuilder;
use libcontainer::signal::Signal;
use libcontainer::syscall::syscall::SyscallType;
use libcontainer::workload::default::DefaultExecutor;
use libcontainer::workload::{Executor, ExecutorError, ExecutorValidationError};
use rustix::event::{PollFd, PollFlags};
use rustix::net::{
    AddressFamily, RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags, SendAncillaryBuffer, SendAncillaryMessage,
    SendFlags, SocketFlags, SocketType,
};
use rustix::process::{Pid, PidfdFlags, WaitId, WaitIdOptions};
use serde::{Deserialize, Serialize};
use tokio::io::Interest;
use tokio::io::unix::AsyncFd;
use tokio::sync::{mpsc, oneshot};

use crate::error::{Error, Result};
use crate::seccomp::Program;

/// Larger than any message: requests carry an id and a path.
const MAX_MESSAGE: usize = 64 * 1024;

#[derive(Debug, Serialize, Deserialize)]
enum Request {
    /// Create the container from the OCI bundle; stdin, stdout and stderr come as three fds.
    /// With a terminal, the init sends its master side to `console_socket` instead.
    Create {
        id: String,
        bundle: PathBuf,
        console_socket: Option<PathBuf>,
        /// The seccomp filter, if Stratus compiled it (see [`Program`]), for the init and every
        /// exec'd process.
        seccomp: Option<Program>,
    },
    Start {
        id: String,
    },
    Kill {
        id: String,
        signal: i32,
    },
    /// Remove what libcontainer keeps (its state directory, the cgroup) of an exited container.
    Delete {
        id: String,
    },
    /// Run a process in a running container's namespaces and cgroup; stdio come as three fds.
    Exec(ExecProcess),
}

/// A process to run in a running container (`docker exec`).
#[derive(Debug, Serialize, Deserialize)]
pub struct ExecProcess {
    /// The exec's id: its exit is reported under it.
    pub id: String,
    pub container: String,
    pub args: Vec<String>,
    /// Added to (or replacing) the container's environment.
    pub env: Vec<(String, String)>,
    pub cwd: String,
    pub uid: u32,
    pub gid: u32,
    /// Its stdin is a terminal, to become its controlling terminal.
    pub tty: bool,
}

#[derive(Debug, Serialize, Deserialize)]
enum Message {
    /// The answer to the last request: the init's pid for Create.
    Reply(Reply),
    /// A container's init process, or an exec'd process, ended: its exit code, or 128 + the
    /// signal that killed it.
    Exited { id: String, status: i32 },
}

/// The runtime's answer to a request: the init's pid for Create, or what went wrong.
type Reply = Result<Option<i32>, String>;

/// A container's init process (`id` is the container's) or an exec'd process (the exec's) ended.
#[derive(Debug)]
pub struct Exit {
    pub id: String,
    pub status: i32,
}

/// Stratus's handle on its runtime processes. Each serves one request at a time, so there are as
/// many as cores, each making and serving the containers whose ids hash to it (creates overlap,
/// and one container's requests stay in order).
pub struct Runtime {
    workers: Vec<std::sync::Arc<Worker>>,
}

impl Runtime {
    /// Starts `program runtime --root <root>/<n>` once per core. Exits from all of them arrive on
    /// the returned channel.
    pub fn spawn(program: &Path, root: &Path) -> Result<(Runtime, mpsc::UnboundedReceiver<Exit>)> {
        let (exits, exits_rx) = mpsc::unbounded_channel();
        let count = std::thread::available_parallelism().map_or(2, std::num::NonZeroUsize::get);
        let workers = (0..count)
            .map(|n| {
                let root = root.join(n.to_string());
                Worker::spawn(program, &["runtime", "--root", &root.to_string_lossy()], exits.clone())
            })
            .collect::<Result<Vec<_>>>()?;
        Ok((Runtime { workers }, exits_rx))
    }

    fn worker(&self, container_id: &str) -> &Worker {
        let hash = container_id.bytes().fold(0usize, |h, b| h.wrapping_mul(31).wrapping_add(usize::from(b)));
        &self.workers[hash % self.workers.len()]
    }

    /// Creates the container from `bundle/config.json`; returns its init's pid. The init
    /// waits for [`Runtime::start`] before running the entrypoint.
    pub async fn create(
        &self,
        id: &str,
        bundle: &Path,
        stdio: [BorrowedFd<'_>; 3],
        console_socket: Option<&Path>,
        seccomp: Option<Program>,
    ) -> Result<i32> {
        let request = Request::Create {
            id: id.to_string(),
            bundle: bundle.to_path_buf(),
            console_socket: console_socket.map(Path::to_path_buf),
            seccomp,
        };
        let pid = self.worker(id).call(request, &stdio).await?;
        pid.ok_or_else(|| Error::Runtime("create answered without a pid".into()))
    }

    pub async fn start(&self, id: &str) -> Result<()> {
        self.worker(id).call(Request::Start { id: id.to_string() }, &[]).await.map(drop)
    }

    pub async fn kill(&self, id: &str, signal: i32) -> Result<()> {
        self.worker(id).call(Request::Kill { id: id.to_string(), signal }, &[]).await.map(drop)
    }

    /// Signals the exec'd process `exec` of `container`.
    pub async fn kill_exec(&self, container: &str, exec: &str, signal: i32) -> Result<()> {
        self.worker(container).call(Request::Kill { id: exec.to_string(), signal }, &[]).await.map(drop)
    }

    pub async fn delete(&self, id: &str) -> Result<()> {
        self.worker(id).call(Request::Delete { id: id.to_string() }, &[]).await.map(drop)
    }

    /// Starts `process` in its container with `stdio`; returns its pid. An executable that cannot
    /// be run is an [`Error::ExecFailed`].
    pub async fn exec(&self, process: ExecProcess, stdio: [BorrowedFd<'_>; 3]) -> Result<i32> {
        let worker = self.worker(&process.container);
        match worker.call(Request::Exec(process), &stdio).await {
            Ok(pid) => pid.ok_or_else(|| Error::Runtime("exec answered without a pid".into())),
            Err(Error::Runtime(message)) => match message.strip_prefix(EXEC_FAILED).and_then(|m| m.split_once(':')) {
                Some((code, message)) => {
                    Err(Error::ExecFailed { code: code.parse().unwrap_or(126), message: message.to_string() })
                }
                None => Err(Error::Runtime(message)),
            },
            Err(error) => Err(error),
        }
    }

    /// Has every runtime process kill what is left and exit.
    pub async fn shut_down(&self) {
        futures_util::future::join_all(self.workers.iter().map(|w| w.shut_down())).await;
    }
}

/// One runtime process.
struct Worker {
    socket: AsyncFd<OwnedFd>,
    /// Held for a whole request and its reply: the runtime answers in order.
    calls: tokio::sync::Mutex<()>,
    reply: Mutex<Option<oneshot::Sender<Reply>>>,
    child: Mutex<Option<tokio::process::Child>>,
}

impl Worker {
    /// Starts `program args...` as a runtime process with its socket as stdin; its exits go to
    /// `exits`.
    fn spawn(program: &Path, args: &[&str], exits: mpsc::UnboundedSender<Exit>) -> Result<std::sync::Arc<Worker>> {
        let (ours, theirs) =
            rustix::net::socketpair(AddressFamily::UNIX, SocketType::SEQPACKET, SocketFlags::CLOEXEC, None)
                .map_err(|e| Error::io("cannot make a socket pair", "runtime")(e.into()))?;
        rustix::io::ioctl_fionbio(&ours, true).map_err(|e| Error::io("cannot set O_NONBLOCK", "runtime")(e.into()))?;
        let child = tokio::process::Command::new(program)
            .args(args)
            .stdin(std::process::Stdio::from(theirs))
            .stdout(std::process::Stdio::null())
            .kill_on_drop(false)
            .spawn()
            .map_err(Error::io("cannot start the runtime process", program))?;
        // SAFETY: `ours` is an `OwnedFd` that moves into the `AsyncFd`: it stays open, and is the
        // same descriptor, until the `AsyncFd` drops it.
        #[allow(unsafe_code)]
        let socket = unsafe { AsyncFd::register(ours) }
            .map_err(|e| Error::io("cannot register the runtime socket", "runtime")(e.into()))?;
        let worker = std::sync::Arc::new(Worker {
            socket,
            calls: tokio::sync::Mutex::new(()),
            reply: Mutex::new(None),
            child: Mutex::new(Some(child)),
        });
        tokio::spawn(read_messages(worker.clone(), exits));
        Ok(worker)
    }

    async fn call(&self, request: Request, fds: &[BorrowedFd<'_>]) -> Result<Option<i32>> {
        let _turn = self.calls.lock().await;
        let (tx, rx) = oneshot::channel();
        *self.reply.lock().unwrap_or_else(|p| p.into_inner()) = Some(tx);
        let bytes =
            postcard::to_stdvec(&request).map_err(|e| Error::Runtime(format!("cannot encode a request: {e}")))?;
        let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(3))];
        let sent = self
            .socket
            .async_io(Interest::WRITABLE, |fd| {
                let mut control = SendAncillaryBuffer::new(&mut space);
                if !fds.is_empty() {
                    control.push(SendAncillaryMessage::ScmRights(fds));
                }
                rustix::net::sendmsg(fd, &[IoSlice::new(&bytes)], &mut control, SendFlags::NOSIGNAL).map_err(Into::into)
            })
            .await;
        sent.map_err(|e| Error::Runtime(format!("the runtime process is gone: {e}")))?;
        match rx.await {
            Ok(reply) => reply.map_err(Error::Runtime),
            Err(_) => Err(Error::Runtime("the runtime process exited".into())),
        }
    }

    /// Closes the socket's write side (the runtime kills what is left and exits) and reaps it.
    async fn shut_down(&self) {
        let _turn = self.calls.lock().await;
        if let Err(error) = rustix::net::shutdown(self.socket.get_ref(), rustix::net::Shutdown::Write) {
            tracing::warn!(%error, "cannot close the runtime socket");
        }
        let child = self.child.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(mut child) = child {
            match child.wait().await {
                Ok(status) if status.success() => {}
                Ok(status) => tracing::warn!(%status, "the runtime process failed"),
                Err(error) => tracing::warn!(%error, "cannot reap the runtime process"),
            }
        }
    }
}

async fn read_messages(runtime: std::sync::Arc<Worker>, exits: mpsc::UnboundedSender<Exit>) {
    let mut buffer = vec![0u8; MAX_MESSAGE];
    loop {
        let received = runtime
            .socket
            .async_io(Interest::READABLE, |fd| {
                rustix::net::recv(fd, &mut buffer[..], RecvFlags::empty()).map(|(n, _)| n).map_err(Into::into)
            })
            .await;
        let message = match received {
            Ok(0) => break,
            Ok(n) => postcard::from_bytes::<Message>(buffer.get(..n).unwrap_or_default()),
            Err(error) => {
                tracing::error!(%error, "cannot read from the runtime process");
                break;
            }
        };
        match message {
            Ok(Message::Reply(reply)) => {
                if let Some(tx) = runtime.reply.lock().unwrap_or_else(|p| p.into_inner()).take() {
                    let _ = tx.send(reply);
                }
            }
            Ok(Message::Exited { id, status }) => {
                let _ = exits.send(Exit { id, status });
            }
            Err(error) => tracing::error!(%error, "malformed message from the runtime process"),
        }
    }
    // Whoever waits for a reply learns that none will come.
    runtime.reply.lock().unwrap_or_else(|p| p.into_inner()).take();
    tracing::info!("the runtime process closed its socket");
}

/// A container this runtime made and has not deleted.
struct Made {
    container: Container,
    /// The bundle, whose `rootfs` Stratus mounted; unmounted here if Stratus is gone.
    bundle: PathBuf,
    /// Its init process while it runs; dropped once reaped.
    init: Option<(i32, OwnedFd)>,
    seccomp: Option<Program>,
}

/// The runtime process's main loop (`stratus runtime`): serves requests from fd 0 until it
/// closes, keeping libcontainer's state under `root` (cleared at start: a previous runtime
/// deleted its containers when it ended).
pub fn serve(root: &Path) -> std::io::Result<()> {
    let socket = std::io::stdin().as_fd().try_clone_to_owned()?;
    // Nothing the runtime starts should inherit the socket as its stdin.
    let null = std::fs::File::open("/dev/null")?;
    rustix::stdio::dup2_stdin(&null)?;
    drop(null);
    if root.exists() {
        std::fs::remove_dir_all(root)?;
    }
    std::fs::create_dir_all(root)?;

    let mut made: HashMap<String, Made> = HashMap::new();
    // Exec'd processes by exec id: pid and pidfd.
    let mut execs: HashMap<String, (i32, OwnedFd)> = HashMap::new();
    let mut buffer = vec![0u8; MAX_MESSAGE];
    loop {
        let inits = made.iter().filter_map(|(id, m)| m.init.as_ref().map(|init| (id, init)));
        let processes: Vec<(String, i32, &OwnedFd)> =
            inits.chain(execs.iter()).map(|(id, (pid, pidfd))| (id.clone(), *pid, pidfd)).collect();
        let running: Vec<(String, i32)> = processes.iter().map(|(id, pid, _)| (id.clone(), *pid)).collect();
        let ready = {
            let mut polled = vec![PollFd::new(&socket, PollFlags::IN)];
            polled.extend(processes.iter().map(|(_, _, pidfd)| PollFd::new(*pidfd, PollFlags::IN)));
            match rustix::event::poll(&mut polled, None) {
                Ok(_) => {}
                Err(rustix::io::Errno::INTR) => continue,
                Err(error) => return Err(error.into()),
            }
            polled.iter().map(|p| !p.revents().is_empty()).collect::<Vec<bool>>()
        };
        for ((id, pid), exited) in running.iter().zip(ready.iter().skip(1)) {
            if *exited {
                let status = reap(*pid);
                if let Some(m) = made.get_mut(id) {
                    m.init = None;
                }
                execs.remove(id);
                send(&socket, &Message::Exited { id: id.clone(), status })?;
            }
        }
        if ready.first().copied().unwrap_or(false) {
            let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(3))];
            let mut control = RecvAncillaryBuffer::new(&mut space);
            let received = rustix::net::recvmsg(
                &socket,
                &mut [IoSliceMut::new(&mut buffer)],
                &mut control,
                RecvFlags::CMSG_CLOEXEC,
            )?;
            if received.bytes == 0 {
                break;
            }
            let mut fds: Vec<OwnedFd> = Vec::new();
            for message in control.drain() {
                if let RecvAncillaryMessage::ScmRights(received) = message {
                    fds.extend(received);
                }
            }
            let reply = match postcard::from_bytes::<Request>(buffer.get(..received.bytes).unwrap_or_default()) {
                Ok(request) => handle(request, fds, root, &mut made, &mut execs),
                Err(error) => Err(format!("malformed request: {error}")),
            };
            send(&socket, &Message::Reply(reply))?;
        }
    }
    // Stratus is gone: leave nothing behind.
    for (id, mut m) in made.drain() {
        if let Some((pid, _)) = m.init.take() {
            if let Some(Err(error)) = sigkill().map(|signal| m.container.kill(signal, true)) {
                tracing::warn!(container = %id, %error, "cannot kill");
            }
            reap(pid);
        }
        if let Err(error) = m.container.delete(true) {
            tracing::warn!(container = %id, %error, "cannot delete");
        }
        let rootfs = m.bundle.join("rootfs");
        if let Err(error) = rustix::mount::unmount(&rootfs, rustix::mount::UnmountFlags::DETACH) {
            tracing::warn!(container = %id, %error, "cannot unmount its root filesystem");
        }
    }
    Ok(())
}

fn sigkill() -> Option<Signal> {
    Signal::try_from(9).ok()
}

fn handle(
    request: Request,
    fds: Vec<OwnedFd>,
    root: &Path,
    made: &mut HashMap<String, Made>,
    execs: &mut HashMap<String, (i32, OwnedFd)>,
) -> Result<Option<i32>, String> {
    match request {
        Request::Exec(process) => {
            let seccomp = made.get(&process.container).and_then(|m| m.seccomp.clone());
            exec(process, seccomp, fds, root, execs)
        }
        Request::Create { id, bundle, console_socket, seccomp } => {
            let [stdin, stdout, stderr]: [OwnedFd; 3] =
                fds.try_into().map_err(|_| "create needs three file descriptors".to_string())?;
            let container = ContainerBuilder::new(id.clone(), SyscallType::default())
                .with_root_path(root)
                .map_err(|e| e.to_string())?
                .with_stdin(stdin)
                .with_stdout(stdout)
                .with_stderr(stderr)
                .with_console_socket(console_socket)
                .with_executor(Launcher { tty: false, seccomp: seccomp.clone() })
                .as_init(&bundle)
                .with_systemd(false)
                .with_detach(true)
                .build()
                .map_err(|e| format!("{e}: {}", source_chain(&e)))?;
            let pid = container.pid().map(|p| p.as_raw()).ok_or("libcontainer returned no pid")?;
            let pidfd = Pid::from_raw(pid)
                .ok_or("invalid pid")
                .and_then(|p| rustix::process::pidfd_open(p, PidfdFlags::empty()).map_err(|_| "cannot open a pidfd"))?;
            made.insert(id, Made { container, bundle, init: Some((pid, pidfd)), seccomp });
            Ok(Some(pid))
        }
        Request::Start { id } => {
            let m = made.get_mut(&id).ok_or_else(|| format!("no container {id}"))?;
            m.container.start().map_err(|e| format!("{e}: {}", source_chain(&e)))?;
            Ok(None)
        }
        Request::Kill { id, signal } => {
            // An exec's id kills the exec'd process through its pidfd (never a reused pid).
            if let Some((_, pidfd)) = execs.get(&id) {
                let signal = rustix::process::Signal::from_named_raw(signal).ok_or("invalid signal")?;
                rustix::process::pidfd_send_signal(pidfd, signal).map_err(|e| e.to_string())?;
                return Ok(None);
            }
            let m = made.get_mut(&id).ok_or_else(|| format!("no container {id}"))?;
            let signal = Signal::try_from(signal).map_err(|e| e.to_string())?;
            m.container.kill(signal, false).map_err(|e| e.to_string())?;
            Ok(None)
        }
        Request::Delete { id } => {
            if let Some(mut m) = made.remove(&id) {
                if let Some((pid, _)) = m.init.take() {
                    if let Some(signal) = sigkill() {
                        let _ = m.container.kill(signal, true);
                    }
                    reap(pid);
                }
                m.container.delete(true).map_err(|e| e.to_string())?;
            }
            Ok(None)
        }
    }
}

/// Starts an exec'd process: it joins the container's namespaces and cgroup (libcontainer's
/// tenant builder). If its executable cannot run, the reply says so as Docker words it, with the
/// exit code Docker gives (`EXEC_FAILED<code>:<message>`).
fn exec(
    process: ExecProcess,
    seccomp: Option<Program>,
    fds: Vec<OwnedFd>,
    root: &Path,
    execs: &mut HashMap<String, (i32, OwnedFd)>,
) -> Result<Option<i32>, String> {
    let [stdin, stdout, stderr]: [OwnedFd; 3] =
        fds.try_into().map_err(|_| "exec needs three file descriptors".to_string())?;
    // libcontainer does not return the pid of a process whose executable failed validation:
    // the pid file names the child to reap.
    let pid_file = root.join(format!("{}.pid", process.id));
    let built = ContainerBuilder::new(process.container.clone(), SyscallType::default())
        .with_root_path(root)
        .and_then(|b| b.with_pid_file(Some(&pid_file)))
        .map_err(|e| e.to_string())?
        .with_stdin(stdin)
        .with_stdout(stdout)
        .with_stderr(stderr)
        .with_executor(Launcher { tty: process.tty, seccomp })
        .as_tenant()
        .with_container_args(process.args.clone())
        .with_env(process.env.iter().cloned().collect())
        .with_cwd(Some(&process.cwd))
        .with_user(Some(process.uid))
        .with_group(Some(process.gid))
        .with_detach(true)
        .build();
    let written_pid = std::fs::read_to_string(&pid_file).ok().and_then(|p| p.trim().parse::<i32>().ok());
    let _ = std::fs::remove_file(&pid_file);
    let pid = match built {
        Ok(pid) => pid.as_raw(),
        Err(error) => {
            if let Some(pid) = written_pid {
                reap(pid);
            }
            let message = format!("{error}: {}", source_chain(&error));
            let executable = process.args.first().map(String::as_str).unwrap_or_default();
            return Err(match exec_failure(executable, &message) {
                Some((code, docker_message)) => format!("{EXEC_FAILED}{code}:{docker_message}"),
                None => message,
            });
        }
    };
    let pidfd = Pid::from_raw(pid)
        .ok_or("invalid pid")
        .and_then(|p| rustix::process::pidfd_open(p, PidfdFlags::empty()).map_err(|_| "cannot open a pidfd"))?;
    execs.insert(process.id, (pid, pidfd));
    Ok(Some(pid))
}

/// Marks a reply for an executable that could not run.
const EXEC_FAILED: &str = "exec failed:";

/// Docker's exit code and message for an executable libcontainer refused: 127 when it does not
/// exist, 126 when it cannot be executed.
fn exec_failure(executable: &str, message: &str) -> Option<(i32, String)> {
    let prefix = "OCI runtime exec failed: exec failed: unable to start container process: exec:";
    if message.contains("not found in $PATH") {
        let why = if executable.contains('/') {
            format!("stat {executable}: no such file or directory")
        } else {
            "executable file not found in $PATH".to_string()
        };
        Some((127, format!("{prefix} \"{executable}\": {why}: unknown")))
    } else if message.contains("does not have correct permissions") {
        Some((126, format!("{prefix} \"{executable}\": permission denied: unknown")))
    } else {
        None
    }
}

/// libcontainer's executor, run in the container's init or an exec'd process just before `exec`:
/// it makes a terminal on stdin the controlling terminal (the process is a session leader by
/// then), so that ^C and job control reach it, and loads the seccomp filter Stratus compiled.
#[derive(Clone)]
struct Launcher {
    tty: bool,
    seccomp: Option<Program>,
}

impl Executor for Launcher {
    fn exec(&self, spec: &oci_spec::runtime::Spec) -> Result<(), ExecutorError> {
        if self.tty {
            rustix::process::ioctl_tiocsctty(std::io::stdin())
                .map_err(|e| ExecutorError::Other(format!("cannot take the terminal: {e}")))?;
        }
        if let Some(program) = &self.seccomp {
            load_seccomp(program).map_err(|e| ExecutorError::Other(format!("cannot load the seccomp filter: {e}")))?;
        }
        DefaultExecutor {}.exec(spec)
    }

    fn validate(&self, spec: &oci_spec::runtime::Spec) -> Result<(), ExecutorValidationError> {
        DefaultExecutor {}.validate(spec)
    }
}

/// Loads `program` and drops the capabilities raised to load it, in the order that needs them:
/// out of the bounding set (CAP_SETPCAP), the filter (CAP_SYS_ADMIN), out of the effective and
/// permitted sets.
fn load_seccomp(program: &Program) -> std::io::Result<()> {
    let raised = (program.raised.iter())
        .map(|&i| caps::all().into_iter().find(|c| c.index() == i))
        .collect::<Option<Vec<caps::Capability>>>()
        .ok_or_else(|| std::io::Error::other("an unknown capability"))?;
    let failed = |e: caps::errors::CapsError| std::io::Error::other(e.to_string());
    for cap in &raised {
        caps::drop(None, caps::CapSet::Bounding, *cap).map_err(failed)?;
    }
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
    #[allow(unsafe_code)]
    let loaded = unsafe {
        libc::syscall(
            libc::SYS_seccomp,
            libc::SECCOMP_SET_MODE_FILTER,
            program.flags,
            &fprog as *const libc::sock_fprog,
        )
    };
    if loaded != 0 {
        return Err(std::io::Error::last_os_error());
    }
    for cap in &raised {
        caps::drop(None, caps::CapSet::Effective, *cap).map_err(failed)?;
        caps::drop(None, caps::CapSet::Permitted, *cap).map_err(failed)?;
    }
    Ok(())
}

fn source_chain(error: &dyn std::error::Error) -> String {
    let mut chain = Vec::new();
    let mut source = error.source();
    while let Some(cause) = source {
        chain.push(cause.to_string());
        source = cause.source();
    }
    chain.join(": ")
}

/// Waits for `pid` (a child of this process) to end: its exit code or 128 + its signal.
fn reap(pid: i32) -> i32 {
    let Some(pid) = Pid::from_raw(pid) else { return 255 };
    loop {
        match rustix::process::waitid(WaitId::Pid(pid), WaitIdOptions::EXITED) {
            Ok(Some(status)) => {
                return status
                    .exit_status()
                    .or_else(|| status.terminating_signal().map(|signal| 128 + signal))
                    .unwrap_or(255);
            }
            Ok(None) => return 255,
            Err(rustix::io::Errno::INTR) => continue,
            Err(_) => return 255,
        }
    }
}

fn send(socket: &OwnedFd, message: &Message) -> std::io::Result<()> {
    let bytes = postcard::to_stdvec(message).map_err(std::io::Error::other)?;
    let mut control = SendAncillaryBuffer::default();
    rustix::net::sendmsg(socket, &[IoSlice::new(&bytes)], &mut control, SendFlags::NOSIGNAL)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn executables_that_cannot_run_get_dockers_words_and_codes() {
        let prefix = "OCI runtime exec failed: exec failed: unable to start container process: exec:";
        let not_found = "failed to validate executor: executable 'nosuch' not found in $PATH";
        assert_eq!(
            exec_failure("nosuch", not_found),
            Some((127, format!("{prefix} \"nosuch\": executable file not found in $PATH: unknown")))
        );
        assert_eq!(
            exec_failure("/bin/nosuch", not_found),
            Some((127, format!("{prefix} \"/bin/nosuch\": stat /bin/nosuch: no such file or directory: unknown")))
        );
        let denied = "executable '/etc/passwd' at path '\"/etc/passwd\"' does not have correct permissions";
        assert_eq!(
            exec_failure("/etc/passwd", denied),
            Some((126, format!("{prefix} \"/etc/passwd\": permission denied: unknown")))
        );
        assert_eq!(exec_failure("sh", "cannot join the cgroup"), None);
    }
}
