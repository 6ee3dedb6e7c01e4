use std::path::PathBuf;

/// What can go wrong in the container engine. Messages follow Docker's wording where Docker
/// clients show them to people (`No such container: web`).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("No such image: {0}")]
    NoSuchImage(String),
    #[error("No such container: {0}")]
    NoSuchContainer(String),
    /// Something else the request named is missing (a volume driver).
    #[error("{0}")]
    NotFound(String),
    #[error("get {0}: no such volume")]
    NoSuchVolume(String),
    #[error("network {0} not found")]
    NoSuchNetwork(String),
    #[error("plugin \"{0}\" not found")]
    PluginNotFound(String),
    /// Docker's 403: the request is understood but not allowed (removing a predefined network).
    #[error("{0}")]
    Forbidden(String),
    /// Making links, addresses, rules or port listeners failed.
    #[error("{0}")]
    Network(String),
    #[error("invalid reference format: {0}")]
    InvalidReference(String),
    #[error("{0}")]
    InvalidParameter(String),
    #[error(
        "Conflict. The container name \"/{name}\" is already in use by container \"{id}\". You have to remove (or rename) that container to be able to reuse that name."
    )]
    NameInUse { name: String, id: String },
    /// The request contradicts the container's or image's state (e.g. removing a running container).
    #[error("{0}")]
    Conflict(String),
    #[error("{0} is not supported by Stratus yet")]
    Unsupported(&'static str),
    #[error("containers need root: Stratus runs them with namespaces, overlayfs and cgroups")]
    NotRoot,
    #[error("{context}: {path}")]
    Io {
        context: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("OCI document {path}")]
    Oci {
        path: PathBuf,
        #[source]
        source: oci_spec::OciSpecError,
    },
    #[error("cannot read or write the stored record {0}: {1}")]
    Record(String, String),
    /// An exec'd process could not start: Docker's message and exit code (126 or 127).
    #[error("{message}")]
    ExecFailed { code: i32, message: String },
    #[error("No such exec instance: {0}")]
    NoSuchExec(String),
    /// A build's RUN failed (Docker's wording; the build's error carries the code too).
    #[error("The command '{command}' returned a non-zero code: {code}")]
    CommandFailed { command: String, code: i32 },
    #[error("the container runtime failed: {0}")]
    Runtime(String),
    #[error(transparent)]
    Store(#[from] store::StoreError),
}

impl Error {
    pub(crate) fn io(context: &'static str, path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> Error {
        let path = path.into();
        move |source| Error::Io { context, path, source }
    }

    pub(crate) fn oci(path: impl Into<PathBuf>) -> impl FnOnce(oci_spec::OciSpecError) -> Error {
        let path = path.into();
        move |source| Error::Oci { path, source }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
