//! Stratus's container engine. So far: the OCI image store ([`image`]). No wire format lives
//! here; the Docker Engine API will be an adapter over this crate.

mod error;
pub mod image;

pub use error::{Error, Result};
