//! Stratus's container engine. So far: the OCI image store ([`image`]). No wire format lives
//! here; the Docker Engine API will be an adapter over this crate.

mod engine;
mod error;
pub mod image;
pub mod runtime;
pub mod spec;

pub use engine::{
    Changed, Container, CreateRequest, Engine, LogEntry, Options, OutputEvent, State, Status, Stream, WaitCondition,
};
pub use error::{Error, Result};
