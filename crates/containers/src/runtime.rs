//! The runtime process: containers are made (`launch`) in a child process of Stratus (the binary
//! re-executes itself as `stratus runtime`), never inside Stratus's own multi-threaded process.
//! A container's init is a `clone3` that then runs Rust code (allocation, logging) before `exec`;
//! after a clone of a multi-threaded process a lock held by another thread (malloc's, stderr's)
//! stays locked forever in the child. The runtime process is single-threaded, so that cannot
//! happen.
//!
//! Stratus starts one per core ([`Runtime`] picks one by container id). Each is the parent of
//! its containers' init processes: it reaps them (one pidfd each, polled with
//! its socket, so no signal mask is inherited by containers) and reports each exit. When Stratus
//! goes away (its end of the socket closes, even on SIGKILL), the runtime kills and deletes every
//! container it made, then exits; unless Stratus runs with `--live-restore`: then it keeps its
//! containers (and the reading ends of their output, so that it waits in the pipes), listens on
//! `<root>/runtime.sock`, and the next Stratus connects there and adopts them.
//!
//! Stratus talks to it over a `SOCK_SEQPACKET` socket (a socket pair at first): one postcard
//! message per packet, descriptors passed as `SCM_RIGHTS`. Requests are answered in order, one at
//! a time.

use std::collections::HashMap;
use std::io::{IoSlice, IoSliceMut};
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use rustix::event::{PollFd, PollFlags};
use rustix::net::{
    AddressFamily, RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags, SendAncillaryBuffer, SendAncillaryMessage,
    SendFlags, SocketFlags, SocketType,
};
use rustix::process::{Pid, WaitId, WaitIdOptions};
use serde::{Deserialize, Serialize};
use tokio::io::Interest;
use tokio::io::unix::AsyncFd;
use tokio::sync::{mpsc, oneshot};

use crate::cgroup::Cgroup;
use crate::error::{Error, Result};
use crate::launch::{self, EXEC_FAILED};
use crate::seccomp::Program;

/// Larger than any message: requests carry an id and a path.
const MAX_MESSAGE: usize = 64 * 1024;

#[derive(Debug, Serialize, Deserialize)]
enum Request {
    /// The first request of every connection: whether containers outlive it (`--live-restore`).
    Hello {
        live_restore: bool,
    },
    /// Create the container from the OCI bundle; stdin, stdout and stderr come as three fds.
    /// With a terminal, the reply carries its master side. The spec's seccomp profile is the one
    /// `seccomp` is compiled from: the program is what is loaded.
    Create {
        id: String,
        bundle: PathBuf,
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
    /// Remove what is left of an exited container (its cgroup).
    Delete {
        id: String,
    },
    /// Run a process in a running container's namespaces and cgroup; stdio come as three fds.
    Exec(ExecProcess),
    /// Keep the descriptors that come with it (the reading ends of the container's output, or its
    /// terminal) for a Stratus that adopts the container.
    Hold {
        id: String,
    },
    /// A container made on an earlier connection: the answer is its init's pid while it runs,
    /// with the descriptors held for it; an exit no one has recorded yet is reported right after.
    Adopt {
        id: String,
    },
    /// Kill and delete every container not named (made by a Stratus that recorded none of them).
    Retain {
        ids: Vec<String>,
    },
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

/// Descriptors that came with a reply.
type Fds = Vec<OwnedFd>;

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
    live_restore: bool,
}

impl Runtime {
    /// Connects to the runtime processes an earlier Stratus left running (`--live-restore`),
    /// and starts `program runtime --root <root>/<n>` for the others, one per core at least:
    /// the number of runtimes left decides which one each container id hashes to, so it is kept.
    /// Exits from all of them arrive on the returned channel.
    pub async fn spawn(
        program: &Path,
        root: &Path,
        live_restore: bool,
    ) -> Result<(Runtime, mpsc::UnboundedReceiver<Exit>)> {
        let (exits, exits_rx) = mpsc::unbounded_channel();
        let cores = std::thread::available_parallelism().map_or(2, std::num::NonZeroUsize::get);
        let mut workers = Vec::new();
        for n in 0.. {
            let dir = root.join(n.to_string());
            let worker = match Worker::connect(&dir, exits.clone()) {
                Some(worker) => worker,
                None if n < cores => {
                    Worker::spawn(program, &["runtime", "--root", &dir.to_string_lossy()], exits.clone())?
                }
                None => break,
            };
            worker.call(Request::Hello { live_restore }, &[]).await?;
            workers.push(worker);
        }
        Ok((Runtime { workers, live_restore }, exits_rx))
    }

    fn worker(&self, container_id: &str) -> &Worker {
        let hash = container_id.bytes().fold(0usize, |h, b| h.wrapping_mul(31).wrapping_add(usize::from(b)));
        &self.workers[hash % self.workers.len()]
    }

    /// Creates the container from `bundle/config.json`; returns its init's pid and, if the spec
    /// gives it a terminal, the terminal's master side. The init waits for [`Runtime::start`]
    /// before running the entrypoint. An entrypoint that cannot run is an [`Error::ExecFailed`].
    pub async fn create(
        &self,
        id: &str,
        bundle: &Path,
        stdio: [BorrowedFd<'_>; 3],
        seccomp: Option<Program>,
    ) -> Result<(i32, Option<OwnedFd>)> {
        let request = Request::Create { id: id.to_string(), bundle: bundle.to_path_buf(), seccomp };
        let called = self.worker(id).call(request, &stdio).await;
        let (pid, fds) = exec_failed(
            called,
            "failed to create task for container: failed to create shim task: OCI runtime create failed",
        )?;
        let pid = pid.ok_or_else(|| Error::Runtime("create answered without a pid".into()))?;
        Ok((pid, fds.into_iter().next()))
    }

    /// With `--live-restore`, has the runtime keep `fds` (what Stratus reads the container's
    /// output from) while no Stratus is connected.
    pub async fn hold(&self, id: &str, fds: &[BorrowedFd<'_>]) -> Result<()> {
        if !self.live_restore {
            return Ok(());
        }
        self.worker(id).call(Request::Hold { id: id.to_string() }, fds).await.map(drop)
    }

    /// Takes over a container an earlier Stratus made: its init's pid (none if it has exited:
    /// the exit follows as any other) and the descriptors held for it.
    pub async fn adopt(&self, id: &str) -> Result<(Option<i32>, Vec<OwnedFd>)> {
        self.worker(id).call(Request::Adopt { id: id.to_string() }, &[]).await
    }

    /// Has every runtime kill and delete the containers not in `ids`.
    pub async fn retain(&self, ids: &[String]) -> Result<()> {
        for worker in &self.workers {
            worker.call(Request::Retain { ids: ids.to_vec() }, &[]).await?;
        }
        Ok(())
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
        let called = self.worker(&process.container).call(Request::Exec(process), &stdio).await;
        let (pid, _) = exec_failed(called, "OCI runtime exec failed: exec failed")?;
        pid.ok_or_else(|| Error::Runtime("exec answered without a pid".into()))
    }

    /// Has every runtime process kill what is left and exit; with `--live-restore`, leaves them
    /// running their containers for the next Stratus.
    pub async fn shut_down(&self) {
        futures_util::future::join_all(self.workers.iter().map(|w| w.shut_down(self.live_restore))).await;
    }
}

/// A reply saying an executable could not run becomes an [`Error::ExecFailed`] with dockerd's
/// words, which begin with `prefix`.
fn exec_failed(called: Result<(Option<i32>, Fds)>, prefix: &str) -> Result<(Option<i32>, Fds)> {
    match called {
        Err(Error::Runtime(message)) => match message.strip_prefix(EXEC_FAILED).and_then(|m| m.split_once(':')) {
            Some((code, message)) => Err(Error::ExecFailed {
                code: code.parse().unwrap_or(126),
                message: format!("{prefix}: unable to start container process: {message}: unknown"),
            }),
            None => Err(Error::Runtime(message)),
        },
        other => other,
    }
}

/// One runtime process.
struct Worker {
    socket: AsyncFd<OwnedFd>,
    /// Held for a whole request and its reply: the runtime answers in order.
    calls: tokio::sync::Mutex<()>,
    reply: Mutex<Option<oneshot::Sender<(Reply, Fds)>>>,
    /// The process, if this Stratus started it (not one it connected to).
    child: Mutex<Option<tokio::process::Child>>,
    /// Set once the runtime has closed its end of the socket.
    closed: tokio::sync::watch::Sender<bool>,
}

impl Worker {
    /// Starts `program args...` as a runtime process with its socket as stdin; its exits go to
    /// `exits`.
    fn spawn(program: &Path, args: &[&str], exits: mpsc::UnboundedSender<Exit>) -> Result<std::sync::Arc<Worker>> {
        let (ours, theirs) =
            rustix::net::socketpair(AddressFamily::UNIX, SocketType::SEQPACKET, SocketFlags::CLOEXEC, None)
                .map_err(|e| Error::io("cannot make a socket pair", "runtime")(e.into()))?;
        let child = tokio::process::Command::new(program)
            .args(args)
            .stdin(std::process::Stdio::from(theirs))
            .stdout(std::process::Stdio::null())
            // Out of Stratus's process group, so that a terminal's ^C reaches Stratus alone,
            // which stops containers (or, with --live-restore, leaves them) as it should.
            .process_group(0)
            .kill_on_drop(false)
            .spawn()
            .map_err(Error::io("cannot start the runtime process", program))?;
        Worker::start(ours, Some(child), exits)
    }

    /// Connects to the runtime process an earlier Stratus left in `dir`, if there is one.
    fn connect(dir: &Path, exits: mpsc::UnboundedSender<Exit>) -> Option<std::sync::Arc<Worker>> {
        let directory = std::fs::File::open(dir).ok()?;
        let socket =
            rustix::net::socket_with(AddressFamily::UNIX, SocketType::SEQPACKET, SocketFlags::CLOEXEC, None).ok()?;
        let address = rustix::net::SocketAddrUnix::new(socket_path(&directory)).ok()?;
        if let Err(error) = rustix::net::connect(&socket, &address) {
            tracing::info!(dir = %dir.display(), %error, "no runtime process left here");
            return None;
        }
        tracing::info!(dir = %dir.display(), "connected to a runtime process left running");
        Worker::start(socket, None, exits).ok()
    }

    fn start(
        socket: OwnedFd,
        child: Option<tokio::process::Child>,
        exits: mpsc::UnboundedSender<Exit>,
    ) -> Result<std::sync::Arc<Worker>> {
        rustix::io::ioctl_fionbio(&socket, true)
            .map_err(|e| Error::io("cannot set O_NONBLOCK", "runtime")(e.into()))?;
        // SAFETY: `socket` is an `OwnedFd` that moves into the `AsyncFd`: it stays open, and is
        // the same descriptor, until the `AsyncFd` drops it.
        #[allow(unsafe_code)]
        let socket = unsafe { AsyncFd::register(socket) }
            .map_err(|e| Error::io("cannot register the runtime socket", "runtime")(e.into()))?;
        let worker = std::sync::Arc::new(Worker {
            socket,
            calls: tokio::sync::Mutex::new(()),
            reply: Mutex::new(None),
            child: Mutex::new(child),
            closed: tokio::sync::watch::Sender::new(false),
        });
        tokio::spawn(read_messages(worker.clone(), exits));
        Ok(worker)
    }

    async fn call(&self, request: Request, fds: &[BorrowedFd<'_>]) -> Result<(Option<i32>, Fds)> {
        let _turn = self.calls.lock().await;
        let (tx, rx) = oneshot::channel();
        *self.reply.lock().unwrap_or_else(|p| p.into_inner()) = Some(tx);
        let bytes =
            postcard::to_stdvec(&request).map_err(|e| Error::Runtime(format!("cannot encode a request: {e}")))?;
        let sent = self
            .socket
            .async_io(Interest::WRITABLE, |fd| send_packet(fd.as_fd(), &bytes, fds).map_err(Into::into))
            .await;
        sent.map_err(|e| Error::Runtime(format!("the runtime process is gone: {e}")))?;
        match rx.await {
            Ok((reply, fds)) => reply.map(|pid| (pid, fds)).map_err(Error::Runtime),
            Err(_) => Err(Error::Runtime("the runtime process exited".into())),
        }
    }

    /// Closes the socket's write side and waits for the runtime to close its own: it kills what
    /// is left and exits or, with `live_restore`, keeps its containers for the next Stratus.
    async fn shut_down(&self, live_restore: bool) {
        let _turn = self.calls.lock().await;
        if let Err(error) = rustix::net::shutdown(self.socket.get_ref(), rustix::net::Shutdown::Write) {
            tracing::warn!(%error, "cannot close the runtime socket");
        }
        if live_restore {
            return;
        }
        let _ = self.closed.subscribe().wait_for(|closed| *closed).await;
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

/// The path of the socket a runtime listens on in `dir`, through the directory's descriptor: a
/// socket path must fit in 108 bytes.
fn socket_path(dir: &std::fs::File) -> String {
    format!("/proc/self/fd/{}/runtime.sock", std::os::fd::AsRawFd::as_raw_fd(dir))
}

async fn read_messages(runtime: std::sync::Arc<Worker>, exits: mpsc::UnboundedSender<Exit>) {
    let mut buffer = vec![0u8; MAX_MESSAGE];
    loop {
        let received = runtime
            .socket
            .async_io(Interest::READABLE, |fd| receive_packet(fd.as_fd(), &mut buffer).map_err(Into::into))
            .await;
        let (message, fds) = match received {
            Ok((0, _)) => break,
            Ok((n, fds)) => (postcard::from_bytes::<Message>(buffer.get(..n).unwrap_or_default()), fds),
            Err(error) => {
                tracing::error!(%error, "cannot read from the runtime process");
                break;
            }
        };
        match message {
            Ok(Message::Reply(reply)) => {
                if let Some(tx) = runtime.reply.lock().unwrap_or_else(|p| p.into_inner()).take() {
                    let _ = tx.send((reply, fds));
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
    runtime.closed.send_replace(true);
    tracing::info!("the runtime process closed its socket");
}

/// Sends one packet: `bytes`, with `fds` as `SCM_RIGHTS`.
fn send_packet(socket: BorrowedFd<'_>, bytes: &[u8], fds: &[BorrowedFd<'_>]) -> rustix::io::Result<usize> {
    let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(3))];
    let mut control = SendAncillaryBuffer::new(&mut space);
    if !fds.is_empty() {
        control.push(SendAncillaryMessage::ScmRights(fds));
    }
    rustix::net::sendmsg(socket, &[IoSlice::new(bytes)], &mut control, SendFlags::NOSIGNAL)
}

/// Receives one packet into `buffer`: its length (0 when the other end closed) and the
/// descriptors that came with it.
fn receive_packet(socket: BorrowedFd<'_>, buffer: &mut [u8]) -> rustix::io::Result<(usize, Fds)> {
    let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(3))];
    let mut control = RecvAncillaryBuffer::new(&mut space);
    let received = rustix::net::recvmsg(socket, &mut [IoSliceMut::new(buffer)], &mut control, RecvFlags::CMSG_CLOEXEC)?;
    let mut fds = Vec::new();
    for message in control.drain() {
        if let RecvAncillaryMessage::ScmRights(received) = message {
            fds.extend(received);
        }
    }
    Ok((received.bytes, fds))
}

/// A container this runtime made and has not deleted.
struct Made {
    init: launch::Init,
    /// What its exec'd processes share with the init.
    shared: launch::Shared,
    cgroup: Cgroup,
    /// The bundle, whose `rootfs` Stratus mounted; unmounted here if Stratus is gone.
    bundle: PathBuf,
    /// Whether its init runs (its pidfd is polled until it is reaped).
    running: bool,
    /// Its init's exit status once reaped: reported again to a Stratus that adopts it, since the
    /// one it was reported to may have died before recording it.
    exited: Option<i32>,
    /// Whether that exit was reported on the current connection (so an Adopt does not repeat it).
    reported: bool,
    /// What Stratus reads the container's output from, kept for the next Stratus (`Hold`).
    held: Fds,
}

/// What the runtime process serves.
struct Served {
    made: HashMap<String, Made>,
    /// Exec'd processes by exec id: pid and pidfd.
    execs: HashMap<String, (i32, OwnedFd)>,
    /// Whether containers outlive the connection (`Hello`).
    live_restore: bool,
    /// Exits to report after the reply being made.
    queued: Vec<Message>,
}

/// The runtime process's main loop (`stratus runtime`): serves requests from fd 0, then from
/// whoever connects to `<root>/runtime.sock` when containers outlive a connection (`root` is
/// cleared at start: a previous runtime deleted its containers when it ended, or is still running
/// and was connected to instead).
pub fn serve(root: &Path) -> std::io::Result<()> {
    let mut connection = Some(std::io::stdin().as_fd().try_clone_to_owned()?);
    // Nothing the runtime starts should inherit the socket as its stdin.
    let null = std::fs::File::open("/dev/null")?;
    rustix::stdio::dup2_stdin(&null)?;
    drop(null);
    if root.exists() {
        std::fs::remove_dir_all(root)?;
    }
    std::fs::create_dir_all(root)?;
    let listener = listen(root)?;

    let mut served = Served { made: HashMap::new(), execs: HashMap::new(), live_restore: false, queued: Vec::new() };
    let mut buffer = vec![0u8; MAX_MESSAGE];
    loop {
        let running: Vec<(String, i32)> = (served.made.iter())
            .filter(|(_, m)| m.running)
            .map(|(id, m)| (id.clone(), m.init.pid))
            .chain(served.execs.iter().map(|(id, (pid, _))| (id.clone(), *pid)))
            .collect();
        let ready = {
            let pidfds = (served.made.values().filter(|m| m.running).map(|m| &m.init.pidfd))
                .chain(served.execs.values().map(|(_, pidfd)| pidfd));
            // Requests on the connection; without one, the next Stratus connecting.
            let mut polled = vec![PollFd::new(connection.as_ref().unwrap_or(&listener), PollFlags::IN)];
            polled.extend(pidfds.map(|pidfd| PollFd::new(pidfd, PollFlags::IN)));
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
                // With no Stratus connected, the exit waits in `Made` for the next one's Adopt.
                let reported = connection.is_some();
                if let Some(m) = served.made.get_mut(id) {
                    (m.running, m.exited, m.reported) = (false, Some(status), reported);
                }
                served.execs.remove(id);
                if reported {
                    served.queued.push(Message::Exited { id: id.clone(), status });
                }
            }
        }
        if ready.first().copied().unwrap_or(false) {
            let Some(socket) = &connection else {
                match rustix::net::accept_with(&listener, SocketFlags::CLOEXEC) {
                    Ok(accepted) => connection = Some(accepted),
                    Err(error) => tracing::warn!(%error, "cannot accept a connection"),
                }
                continue;
            };
            let (reply, fds) = match receive_packet(socket.as_fd(), &mut buffer) {
                Ok((bytes, fds)) if bytes > 0 => {
                    match postcard::from_bytes::<Request>(buffer.get(..bytes).unwrap_or_default()) {
                        Ok(request) => match served.handle(request, fds) {
                            Ok((pid, fds)) => (Ok(pid), fds),
                            Err(error) => (Err(error), Vec::new()),
                        },
                        Err(error) => (Err(format!("malformed request: {error}")), Vec::new()),
                    }
                }
                // Stratus is gone (its end closed, even on SIGKILL). A runtime with no container
                // to keep has nothing to wait for: the next Stratus starts a new one.
                _ => match served.live_restore && !served.made.is_empty() {
                    true => {
                        served.disconnected();
                        connection = None;
                        continue;
                    }
                    false => break,
                },
            };
            let borrowed: Vec<BorrowedFd<'_>> = fds.iter().map(AsFd::as_fd).collect();
            if send(socket, &Message::Reply(reply), &borrowed).is_err() {
                // Stratus went away before the answer; the connection's end says so next time.
                continue;
            }
        }
        if let Some(socket) = &connection {
            for message in std::mem::take(&mut served.queued) {
                // A lost exit is reported again to the Stratus that adopts its container.
                let _ = send(socket, &message, &[]);
            }
        }
    }
    served.remove_all();
    let _ = std::fs::remove_file(root.join("runtime.sock"));
    Ok(())
}

/// Listens for the next Stratus at `<root>/runtime.sock` (only root can connect).
fn listen(root: &Path) -> std::io::Result<OwnedFd> {
    let directory = std::fs::File::open(root)?;
    let listener = rustix::net::socket_with(AddressFamily::UNIX, SocketType::SEQPACKET, SocketFlags::CLOEXEC, None)?;
    rustix::net::bind(&listener, &rustix::net::SocketAddrUnix::new(socket_path(&directory))?)?;
    std::fs::set_permissions(root.join("runtime.sock"), std::os::unix::fs::PermissionsExt::from_mode(0o600))?;
    rustix::net::listen(&listener, 4)?;
    Ok(listener)
}

impl Served {
    fn handle(&mut self, request: Request, fds: Fds) -> Result<(Option<i32>, Fds), String> {
        let none = |()| (None, Vec::new());
        match request {
            Request::Hello { live_restore } => {
                self.live_restore = live_restore;
                Ok((None, Vec::new()))
            }
            Request::Exec(process) => self.exec(process, fds).map(|pid| (Some(pid), Vec::new())),
            Request::Create { id, bundle, seccomp } => self.create(id, bundle, seccomp, fds),
            Request::Start { id } => {
                let m = self.made.get_mut(&id).ok_or_else(|| format!("no container {id}"))?;
                launch::start(&mut m.init).map(none)
            }
            Request::Kill { id, signal } => self.kill(&id, signal).map(none),
            Request::Delete { id } => match self.made.remove(&id) {
                Some(m) => remove(&id, m, false).map(none),
                None => Ok((None, Vec::new())),
            },
            Request::Hold { id } => {
                self.made.get_mut(&id).ok_or_else(|| format!("no container {id}"))?.held = fds;
                Ok((None, Vec::new()))
            }
            Request::Adopt { id } => {
                let m = self.made.get_mut(&id).ok_or_else(|| format!("no container {id}"))?;
                let held = m.held.iter().map(|fd| fd.try_clone()).collect::<std::io::Result<Fds>>();
                let held = held.map_err(|e| e.to_string())?;
                if let (Some(status), false) = (m.exited, m.reported) {
                    m.reported = true;
                    self.queued.push(Message::Exited { id: id.clone(), status });
                }
                Ok((m.running.then_some(m.init.pid), held))
            }
            Request::Retain { ids } => {
                let unknown: Vec<String> = self.made.keys().filter(|id| !ids.contains(id)).cloned().collect();
                for id in unknown {
                    if let Some(m) = self.made.remove(&id) {
                        tracing::warn!(container = %id, "made for a Stratus that never recorded it: removing");
                        remove(&id, m, true).map_err(|e| format!("cannot remove container {id}: {e}"))?;
                    }
                }
                Ok((None, Vec::new()))
            }
        }
    }

    /// Makes the container's cgroup and its init; the reply carries the init's pid and its
    /// terminal's master side, if it has one.
    fn create(
        &mut self,
        id: String,
        bundle: PathBuf,
        seccomp: Option<Program>,
        fds: Fds,
    ) -> Result<(Option<i32>, Fds), String> {
        let stdio: [OwnedFd; 3] = fds.try_into().map_err(|_| "create needs three file descriptors".to_string())?;
        let config = bundle.join("config.json");
        let spec =
            oci_spec::runtime::Spec::load(&config).map_err(|e| format!("cannot read {}: {e}", config.display()))?;
        let linux = spec.linux().as_ref().ok_or("the spec has no linux section")?;
        let path = linux.cgroups_path().as_ref().ok_or("the spec names no cgroup")?;
        let cgroup = Cgroup::new(&path.to_string_lossy());
        let resources = linux.resources().clone().unwrap_or_default();
        let launched = cgroup
            .create(&resources)
            .map_err(|e| format!("cannot make the cgroup: {e}"))
            .and_then(|()| launch::create(&spec, stdio, &cgroup, seccomp));
        let (init, shared, terminal) = match launched {
            Ok(launched) => launched,
            Err(error) => {
                if let Err(removing) = cgroup.remove() {
                    tracing::warn!(container = %id, error = %removing, "cannot remove the cgroup");
                }
                return Err(error);
            }
        };
        let pid = init.pid;
        let made =
            Made { init, shared, cgroup, bundle, running: true, exited: None, reported: false, held: Vec::new() };
        self.made.insert(id, made);
        Ok((Some(pid), terminal.into_iter().collect()))
    }

    /// Starts an exec'd process in its container's namespaces and cgroup; returns its pid.
    fn exec(&mut self, process: ExecProcess, fds: Fds) -> Result<i32, String> {
        let stdio: [OwnedFd; 3] = fds.try_into().map_err(|_| "exec needs three file descriptors".to_string())?;
        let m = self.made.get(&process.container).ok_or_else(|| format!("no container {}", process.container))?;
        if !m.running {
            return Err(format!("container {} is not running", process.container));
        }
        let exec = launch::Exec {
            args: &process.args,
            env: &process.env,
            cwd: Path::new(&process.cwd),
            uid: process.uid,
            gid: process.gid,
            tty: process.tty,
        };
        let (pid, pidfd) = launch::exec(&m.init, &m.cgroup, &m.shared, &exec, stdio)?;
        self.execs.insert(process.id, (pid, pidfd));
        Ok(pid)
    }

    fn kill(&mut self, id: &str, signal: i32) -> Result<(), String> {
        let signal = rustix::process::Signal::from_named_raw(signal).ok_or("invalid signal")?;
        // An exec's id kills the exec'd process through its pidfd (never a reused pid).
        if let Some((_, pidfd)) = self.execs.get(id) {
            return rustix::process::pidfd_send_signal(pidfd, signal).map_err(|e| e.to_string());
        }
        let m = self.made.get_mut(id).ok_or_else(|| format!("no container {id}"))?;
        if !m.running {
            return Err(format!("container {id} is not running"));
        }
        rustix::process::pidfd_send_signal(&m.init.pidfd, signal).map_err(|e| e.to_string())
    }

    /// The connection closed and containers outlive it: exec'd processes end with it (their
    /// streams were Stratus's), containers carry on.
    fn disconnected(&mut self) {
        for (id, (pid, pidfd)) in self.execs.drain() {
            if let Err(error) = rustix::process::pidfd_send_signal(&pidfd, rustix::process::Signal::KILL) {
                tracing::warn!(exec = %id, %error, "cannot kill");
            }
            reap(pid);
        }
        self.queued.clear();
        for m in self.made.values_mut() {
            m.reported = false;
        }
        tracing::info!(containers = self.made.len(), "Stratus is gone: keeping the containers for the next");
    }

    /// Stratus is gone for good: leave nothing behind.
    fn remove_all(&mut self) {
        for (id, m) in self.made.drain() {
            if let Err(error) = remove(&id, m, true) {
                tracing::warn!(container = %id, %error, "cannot remove");
            }
        }
    }
}

/// Kills a container's init if it still runs (its PID namespace goes with it) and removes its
/// cgroup; with `unmount`, also unmounts its root filesystem (Stratus's job while it is there).
fn remove(id: &str, m: Made, unmount: bool) -> Result<(), String> {
    if m.running {
        if let Err(error) = rustix::process::pidfd_send_signal(&m.init.pidfd, rustix::process::Signal::KILL) {
            tracing::warn!(container = %id, %error, "cannot kill");
        }
        reap(m.init.pid);
    }
    m.cgroup.remove().map_err(|e| format!("cannot remove the cgroup: {e}"))?;
    if unmount {
        let rootfs = m.bundle.join("rootfs");
        if let Err(error) = rustix::mount::unmount(&rootfs, rustix::mount::UnmountFlags::DETACH) {
            tracing::warn!(container = %id, %error, "cannot unmount its root filesystem");
        }
    }
    Ok(())
}

/// Waits for `pid` (a child of this process) to end: its exit code or 128 + its signal.
pub(crate) fn reap(pid: i32) -> i32 {
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

fn send(socket: &OwnedFd, message: &Message, fds: &[BorrowedFd<'_>]) -> std::io::Result<()> {
    let bytes = postcard::to_stdvec(message).map_err(std::io::Error::other)?;
    send_packet(socket.as_fd(), &bytes, fds)?;
    Ok(())
}
