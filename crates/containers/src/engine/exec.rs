//! `docker exec`: processes started in a running container's namespaces and cgroup by the runtime
//! process. Like dockerd, Stratus keeps exec instances in memory only, until their container is
//! removed.

use std::fs;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use tokio::sync::{mpsc, watch};

use super::{Engine, LogEntry, Status, Stream, new_id};
use crate::error::{Error, Result};
use crate::runtime::ExecProcess;
use crate::spec;
use crate::stdio::{self, AsyncStdio};

/// What `docker exec` asks for.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ExecRequest {
    pub cmd: Vec<String>,
    /// `KEY=value`, added to the container's environment.
    pub env: Vec<String>,
    /// Empty means the container's user.
    pub user: String,
    /// Empty means the container's working directory.
    pub working_dir: String,
    pub tty: bool,
    pub attach_stdin: bool,
    pub attach_stdout: bool,
    pub attach_stderr: bool,
}

/// An exec instance as `docker exec` inspects it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Exec {
    pub id: String,
    pub container_id: String,
    pub request: ExecRequest,
    pub running: bool,
    /// Set once it has run (126 or 127 when it could not start).
    pub exit_code: Option<i32>,
    pub pid: i32,
}

/// A started exec's streams: its output until it ends (after its exit is recorded), and where
/// its input goes if it takes any (dropping that sender ends its input).
pub struct ExecIo {
    pub output: mpsc::Receiver<LogEntry>,
    pub input: Option<mpsc::Sender<Vec<u8>>>,
}

pub(super) struct ExecEntry {
    exec: Mutex<Exec>,
    /// Whether start was called (an exec runs at most once).
    started: Mutex<bool>,
    /// Becomes true when the process has ended.
    done: watch::Sender<bool>,
    /// The terminal's master side while it runs with one (for resize).
    terminal: Mutex<Option<Arc<AsyncStdio>>>,
}

impl ExecEntry {
    fn snapshot(&self) -> Exec {
        self.exec.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    fn finish(&self, code: i32) {
        {
            let mut exec = self.exec.lock().unwrap_or_else(|p| p.into_inner());
            exec.running = false;
            exec.pid = 0;
            exec.exit_code = Some(code);
        }
        self.terminal.lock().unwrap_or_else(|p| p.into_inner()).take();
        self.done.send_replace(true);
    }
}

/// The descriptors an exec'd process gets, and Stratus's ends of them.
struct Wiring {
    child: [OwnedFd; 3],
    stdout: Option<Arc<AsyncStdio>>,
    stderr: Option<Arc<AsyncStdio>>,
    input: Option<Arc<AsyncStdio>>,
    terminal: Option<Arc<AsyncStdio>>,
}

impl Engine {
    fn exec_entry(&self, id: &str) -> Result<Arc<ExecEntry>> {
        let execs = self.execs.lock().unwrap_or_else(|p| p.into_inner());
        execs.get(id).cloned().ok_or_else(|| Error::NoSuchExec(id.to_string()))
    }

    /// Registers an exec instance in a running container; returns its id.
    pub fn exec_create(&self, reference: &str, request: ExecRequest) -> Result<String> {
        let container = self.entry(reference)?.snapshot();
        if container.state.status != Status::Running {
            return Err(Error::Conflict(format!("container {} is not running", container.id)));
        }
        if request.cmd.is_empty() {
            return Err(Error::InvalidParameter("No exec command specified".into()));
        }
        let id = new_id();
        let action = format!("exec_create: {}", exec_command(&request.cmd));
        self.container_event(&container, &action, &[("execID", id.clone())]);
        let exec =
            Exec { id: id.clone(), container_id: container.id, request, running: false, exit_code: None, pid: 0 };
        let entry = ExecEntry {
            exec: Mutex::new(exec),
            started: Mutex::new(false),
            done: watch::Sender::new(false),
            terminal: Mutex::new(None),
        };
        self.execs.lock().unwrap_or_else(|p| p.into_inner()).insert(id.clone(), Arc::new(entry));
        Ok(id)
    }

    pub fn exec_inspect(&self, id: &str) -> Result<Exec> {
        Ok(self.exec_entry(id)?.snapshot())
    }

    /// Sets the size of a running exec's terminal.
    pub fn exec_resize(&self, id: &str, rows: u16, columns: u16) -> Result<()> {
        let entry = self.exec_entry(id)?;
        let terminal = entry.terminal.lock().unwrap_or_else(|p| p.into_inner()).clone();
        match terminal {
            Some(terminal) => terminal.resize(rows, columns),
            None => Err(Error::Conflict(format!("Exec {id} is not running with a terminal"))),
        }
    }

    /// Starts the exec'd process. `detach` discards its output; `size` is its terminal's first
    /// size (rows, columns).
    pub async fn exec_start(&self, id: &str, detach: bool, size: Option<(u16, u16)>) -> Result<ExecIo> {
        let entry = self.exec_entry(id)?;
        {
            let mut started = entry.started.lock().unwrap_or_else(|p| p.into_inner());
            if *started {
                return Err(Error::Conflict(format!("Exec command {id} has already run")));
            }
            *started = true;
        }
        match self.exec_launch(&entry, detach, size).await {
            Ok(io) => Ok(io),
            Err(error) => {
                entry.finish(match &error {
                    Error::ExecFailed { code, .. } => *code,
                    _ => 126,
                });
                Err(error)
            }
        }
    }

    async fn exec_launch(&self, entry: &Arc<ExecEntry>, detach: bool, size: Option<(u16, u16)>) -> Result<ExecIo> {
        let exec = entry.snapshot();
        let runtime = self.runtime.as_ref().ok_or(Error::NotRoot)?;
        let container = self.entry(&exec.container_id)?.snapshot();
        if container.state.status != Status::Running {
            return Err(Error::Conflict(format!("container {} is not running", container.id)));
        }
        let action = format!("exec_start: {}", exec_command(&exec.request.cmd));
        self.container_event(&container, &action, &[("execID", exec.id.clone())]);
        let rootfs = self.rootfs(&container.id);
        let read = |file: &str| fs::read_to_string(rootfs.join(file)).unwrap_or_default();
        let user = if exec.request.user.is_empty() { &container.process.user } else { &exec.request.user };
        let (uid, gid) = spec::resolve_user(user, &read("etc/passwd"), &read("etc/group"))?;
        let cwd = match exec.request.working_dir.as_str() {
            "" => container.process.cwd.clone(),
            dir => dir.to_string(),
        };
        let wiring = wire(&exec.request, detach, container.state.pid, size)?;
        let process = ExecProcess {
            id: exec.id.clone(),
            container: container.id.clone(),
            args: exec.request.cmd.clone(),
            env: exec
                .request
                .env
                .iter()
                .map(|v| v.split_once('=').map(|(k, v)| (k.to_string(), v.to_string())))
                .map(|pair| pair.unwrap_or_default())
                .filter(|(k, _)| !k.is_empty())
                .collect(),
            cwd: if cwd.is_empty() { "/".into() } else { cwd },
            uid,
            gid,
            tty: exec.request.tty,
        };
        let [stdin, stdout, stderr] = &wiring.child;
        let pid = runtime.exec(process, [stdin.as_fd(), stdout.as_fd(), stderr.as_fd()]).await?;
        // Only the process may hold its ends, so that its exit ends its output.
        drop(wiring.child);
        {
            // A quick process's exit can be recorded before this task resumes from the await.
            let mut state = entry.exec.lock().unwrap_or_else(|p| p.into_inner());
            if state.exit_code.is_none() {
                state.running = true;
                state.pid = pid;
                *entry.terminal.lock().unwrap_or_else(|p| p.into_inner()) = wiring.terminal.clone();
            }
        }
        tracing::info!(container = %container.id, exec = %exec.id, pid, "exec started");
        let (tx, output) = mpsc::channel(64);
        let pump = pump_exec_output(wiring.stdout, wiring.stderr, tx, entry.done.subscribe());
        tokio::spawn(pump);
        Ok(ExecIo { output, input: wiring.input.map(stdio::input_channel) })
    }

    /// Records the end of an exec'd process; false if `id` is not an exec.
    pub(super) fn exec_exited(&self, id: &str, status: i32) -> bool {
        match self.exec_entry(id) {
            Ok(entry) => {
                entry.finish(status);
                if let Ok(container) = self.entry(&entry.snapshot().container_id) {
                    let attributes = [("execID", id.to_string()), ("exitCode", status.to_string())];
                    self.container_event(&container.snapshot(), "exec_die", &attributes);
                }
                tracing::info!(exec = %id, status, "exec exited");
                true
            }
            Err(_) => false,
        }
    }

    /// The container's execs that are running (what Docker's inspect lists as `ExecIDs`).
    pub fn running_execs(&self, container_id: &str) -> Vec<String> {
        let execs = self.execs.lock().unwrap_or_else(|p| p.into_inner());
        let mut running: Vec<String> = execs
            .values()
            .map(|e| e.snapshot())
            .filter(|e| e.running && e.container_id == container_id)
            .map(|e| e.id)
            .collect();
        running.sort();
        running
    }

    /// Forgets an exec instance (a health probe's, once it has run).
    pub(super) fn forget_exec(&self, id: &str) {
        self.execs.lock().unwrap_or_else(|p| p.into_inner()).remove(id);
    }

    /// Forgets the exec instances of a removed container.
    pub(super) fn forget_execs(&self, container_id: &str) {
        self.execs.lock().unwrap_or_else(|p| p.into_inner()).retain(|_, e| e.snapshot().container_id != container_id);
    }
}

/// Makes the exec'd process's stdio: a terminal in the container (its three descriptors), or
/// pipes for the streams the client attaches and `/dev/null` for the others.
/// An exec's command as dockerd names it in its events: the executable, a space, the arguments.
fn exec_command(cmd: &[String]) -> String {
    let (executable, args) = cmd.split_first().map_or(("", &[][..]), |(e, a)| (e.as_str(), a));
    format!("{executable} {}", args.join(" "))
}

fn wire(request: &ExecRequest, detach: bool, init_pid: i32, size: Option<(u16, u16)>) -> Result<Wiring> {
    if request.tty {
        let (master, peer) = stdio::open_terminal(init_pid)?;
        let master = Arc::new(AsyncStdio::new(master)?);
        if let Some((rows, columns)) = size.filter(|(r, c)| *r > 0 && *c > 0) {
            master.resize(rows, columns)?;
        }
        let input = (request.attach_stdin && !detach).then(|| master.clone());
        let stdout = (!detach).then(|| master.clone());
        return Ok(Wiring { child: stdio::triple(&peer)?, stdout, stderr: None, input, terminal: Some(master) });
    }
    let null = || fs::File::open("/dev/null").map(OwnedFd::from).map_err(Error::io("cannot open", "/dev/null"));
    let (stdin, input) = if request.attach_stdin && !detach {
        let (read, write) = stdio::pipe()?;
        (read, Some(Arc::new(AsyncStdio::new(write)?)))
    } else {
        (null()?, None)
    };
    let output = |attached: bool| -> Result<(OwnedFd, Option<Arc<AsyncStdio>>)> {
        if attached && !detach {
            let (read, write) = stdio::pipe()?;
            Ok((write, Some(Arc::new(AsyncStdio::new(read)?))))
        } else {
            Ok((null()?, None))
        }
    };
    let (stdout_child, stdout) = output(request.attach_stdout)?;
    let (stderr_child, stderr) = output(request.attach_stderr)?;
    Ok(Wiring { child: [stdin, stdout_child, stderr_child], stdout, stderr, input, terminal: None })
}

/// Copies an exec's output to its client until both streams end, then waits for its exit to be
/// recorded, so that a client inspecting it after the stream closes sees the exit code.
async fn pump_exec_output(
    stdout: Option<Arc<AsyncStdio>>,
    stderr: Option<Arc<AsyncStdio>>,
    tx: mpsc::Sender<LogEntry>,
    mut done: watch::Receiver<bool>,
) {
    let copy = |source: Option<Arc<AsyncStdio>>, stream: Stream| {
        let tx = tx.clone();
        async move {
            let Some(source) = source else { return };
            let mut buffer = vec![0u8; 16 * 1024];
            while let Ok(n) = source.read(&mut buffer).await {
                let Some(bytes) = buffer.get(..n).filter(|b| !b.is_empty()) else { break };
                let entry = LogEntry { stream, time: SystemTime::now(), bytes: bytes.to_vec() };
                if tx.send(entry).await.is_err() {
                    // The client left; keep draining so the process never blocks on a full pipe.
                    continue;
                }
            }
        }
    };
    tokio::join!(copy(stdout, Stream::Stdout), copy(stderr, Stream::Stderr));
    let _ = done.wait_for(|ended| *ended).await;
}
