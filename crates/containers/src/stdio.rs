//! The pipes and terminals that carry a process's stdin, stdout and stderr, read and written
//! asynchronously from Stratus's side.

use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::path::Path;
use std::sync::Arc;

use rustix::fs::{Mode, OFlags};
use tokio::io::Interest;
use tokio::io::unix::AsyncFd;
use tokio::sync::mpsc;

use crate::error::{Error, Result};

/// A non-blocking descriptor (a pipe end or a terminal's master side).
pub struct AsyncStdio(AsyncFd<OwnedFd>);

impl AsyncStdio {
    pub fn new(fd: OwnedFd) -> Result<AsyncStdio> {
        rustix::io::ioctl_fionbio(&fd, true).map_err(|e| Error::io("cannot set O_NONBLOCK", "stdio")(e.into()))?;
        // SAFETY: `fd` is an `OwnedFd` that moves into the `AsyncFd`: it stays open, and is the
        // same descriptor, until the `AsyncFd` drops it.
        #[allow(unsafe_code)]
        let registered = unsafe { AsyncFd::register(fd) };
        registered.map(AsyncStdio).map_err(|e| Error::io("cannot watch", "stdio")(e.into()))
    }

    /// 0 at the end: a pipe whose writers all closed, or a terminal with no process left on it
    /// (the kernel's EIO).
    pub async fn read(&self, buffer: &mut [u8]) -> io::Result<usize> {
        let read =
            self.0.async_io(Interest::READABLE, |fd| rustix::io::read(fd, &mut *buffer).map_err(Into::into)).await;
        match read {
            Err(error) if error.raw_os_error() == Some(rustix::io::Errno::IO.raw_os_error()) => Ok(0),
            other => other,
        }
    }

    pub async fn write_all(&self, mut bytes: &[u8]) -> io::Result<()> {
        while !bytes.is_empty() {
            let written =
                self.0.async_io(Interest::WRITABLE, |fd| rustix::io::write(fd, bytes).map_err(Into::into)).await?;
            bytes = bytes.get(written..).unwrap_or_default();
        }
        Ok(())
    }

    /// Sets a terminal's size (rows and columns), as the process sees it.
    pub fn resize(&self, rows: u16, columns: u16) -> Result<()> {
        let size = rustix::termios::Winsize { ws_row: rows, ws_col: columns, ws_xpixel: 0, ws_ypixel: 0 };
        rustix::termios::tcsetwinsize(self.0.get_ref(), size)
            .map_err(|e| Error::InvalidParameter(format!("cannot resize the terminal: {e}")))
    }
}

/// A channel whose messages are written to `target` (a process's stdin pipe or its terminal)
/// until every sender is dropped; then `target` drops, and a pipe's reader sees the end of its
/// input.
pub fn input_channel(target: Arc<AsyncStdio>) -> mpsc::Sender<Vec<u8>> {
    let (tx, mut rx) = mpsc::channel::<Vec<u8>>(16);
    tokio::spawn(async move {
        while let Some(bytes) = rx.recv().await {
            if target.write_all(&bytes).await.is_err() {
                break;
            }
        }
    });
    tx
}

/// A new terminal in the devpts of the container whose init is `init_pid`, so that the process
/// given its other side sees it as `/dev/pts/N` there. Returns the master side and that other side.
pub fn open_terminal(init_pid: i32) -> Result<(OwnedFd, OwnedFd)> {
    let ptmx = format!("/proc/{init_pid}/root/dev/pts/ptmx");
    let failed = |context: &'static str| Error::io(context, Path::new(&ptmx).to_path_buf());
    let master = rustix::fs::open(&ptmx, OFlags::RDWR | OFlags::NOCTTY | OFlags::CLOEXEC, Mode::empty())
        .map_err(|e| failed("cannot open the container's terminal multiplexer")(e.into()))?;
    rustix::pty::unlockpt(&master).map_err(|e| failed("cannot unlock a terminal")(e.into()))?;
    // TIOCGPTPEER opens the other side through the master, not by a path the container controls.
    let peer = rustix::pty::ioctl_tiocgptpeer(
        &master,
        rustix::pty::OpenptFlags::RDWR | rustix::pty::OpenptFlags::NOCTTY | rustix::pty::OpenptFlags::CLOEXEC,
    )
    .map_err(|e| failed("cannot open a terminal's other side")(e.into()))?;
    Ok((master, peer))
}

/// A pipe: its read end and its write end, both close-on-exec.
pub fn pipe() -> Result<(OwnedFd, OwnedFd)> {
    rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC)
        .map_err(|e| Error::io("cannot make a pipe", "stdio")(e.into()))
}

/// Three copies of one descriptor, as a process's stdin, stdout and stderr.
pub fn triple(fd: &OwnedFd) -> Result<[OwnedFd; 3]> {
    let copy = || fd.as_fd().try_clone_to_owned().map_err(Error::io("cannot duplicate", "stdio"));
    Ok([copy()?, copy()?, copy()?])
}
