//! Stratus's container engine: an OCI image store ([`image`]), and containers ([`Engine`])
//! isolated by namespaces, rooted on overlayfs and limited by cgroups, which a separate
//! single-threaded runtime process ([`runtime`]) creates from an OCI runtime spec ([`spec`]). Container records live in the store. No wire format lives here: the
//! Docker Engine API is an adapter (`docker-protocol`) over [`Engine`].

mod bpf;
mod build;
pub mod cgroup;
mod cgroup_support;
mod commit;
mod debian;
mod dockerfile;
mod engine;
mod error;
pub mod events;
pub mod health;
pub mod image;
pub mod isolation;
mod launch;
mod layer;
pub mod network;
mod record;
pub mod restart;
pub mod runtime;
pub mod seccomp;
pub mod security;
pub mod spec;
pub mod stats;
mod stdio;
pub mod userns;
pub mod volume;

pub use build::{BuildEvent, BuildRequest, clean_path, is_intermediate};
pub use commit::{Change, ContainerConfig, NewImage};
pub use engine::exec::{Exec, ExecIo, ExecRequest};
pub use engine::{
    Attach, Changed, Container, CreateRequest, Engine, LogEntry, Options, OutputEvent, State, Status, StdioConfig,
    Stream, WaitCondition,
};
pub use error::{Error, Result};

/// Whether this process can run containers (namespaces, mounts and cgroups need root).
pub fn running_as_root() -> bool {
    rustix::process::geteuid().is_root()
}
