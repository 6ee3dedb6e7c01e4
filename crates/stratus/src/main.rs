//! The `stratus` binary: parses flags, opens the store, builds the services and starts listeners.

use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use store::{Store, StoreOptions};

/// Every request allocates dozens of small buffers (headers, JSON, store records), and glibc's
/// malloc took 15-25% of the CPU of an SQS send in profiles; mimalloc's thread-local free lists
/// are several times cheaper. Without transparent huge pages (`no_thp`): with them, faulting in and
/// zeroing 2 MiB pages for a few small allocations took a third of the CPU of a growing queue.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "stratus",
    version,
    about = "A whole cloud in one binary: AWS-compatible services on one port, with durable state",
    long_about = "A whole cloud in one binary.\n\n\
        `stratus up` serves AWS-compatible APIs on one port (4566, like LocalStack), so awscli, boto3 and \
        the AWS SDKs work with AWS_ENDPOINT_URL=http://localhost:4566. State is kept in a durable \
        store under --data-dir and survives restarts, or only in memory with --ephemeral."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Start every Stratus service in this process, in the foreground, until Ctrl-C or SIGTERM.
    ///
    /// Prints the endpoints once it is ready. On Ctrl-C or SIGTERM it stops accepting connections,
    /// lets requests in flight finish (up to 30 s), and closes the store cleanly.
    /// Logs go to stderr; set RUST_LOG (e.g. RUST_LOG=debug, RUST_LOG=edge=debug) for more.
    Up(UpArgs),
    /// Manage container images (they live under --data-dir, in OCI layout).
    #[command(subcommand)]
    Image(ImageCommand),
    /// The container runtime process that `stratus up` starts; not for direct use.
    #[command(hide = true)]
    Runtime {
        #[arg(long)]
        root: PathBuf,
    },
    /// Deletes the bridges and NAT rules `stratus up` made if it dies without shutting down;
    /// `stratus up` starts it. Not for direct use.
    #[command(hide = true)]
    NetworkJanitor,
}

#[derive(Subcommand)]
enum ImageCommand {
    /// Make a base image from this host's packages, since no registry is reachable.
    ///
    /// `busybox` builds a one-layer image, tagged busybox:latest, from the static busybox of
    /// Debian's busybox-static package: the binary and a symlink per applet in /bin.
    /// `debian` runs debootstrap (minbase) against Debian's mirror and tags the result
    /// debian:<suite>; it downloads about 40 MB and takes a minute or more.
    Bootstrap {
        /// What to build.
        #[arg(value_enum)]
        image: BootstrapImage,
        /// The static busybox binary to use.
        #[arg(long, default_value = "/bin/busybox")]
        busybox: PathBuf,
        /// The Debian suite to bootstrap (for `debian`).
        #[arg(long, default_value = "bookworm")]
        suite: String,
        /// The Debian mirror to bootstrap from (for `debian`).
        #[arg(long, default_value = "http://deb.debian.org/debian")]
        mirror: String,
        #[command(flatten)]
        data: DataDirArg,
    },
    /// List images (like `docker images`).
    Ls {
        #[command(flatten)]
        data: DataDirArg,
    },
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum BootstrapImage {
    Busybox,
    Debian,
}

#[derive(Args)]
struct DataDirArg {
    /// Stratus's state directory [default: $XDG_DATA_HOME/stratus].
    #[arg(long, env = "STRATUS_DATA_DIR", value_name = "DIR")]
    data_dir: Option<PathBuf>,
}

impl DataDirArg {
    fn containers_dir(&self) -> anyhow::Result<PathBuf> {
        Ok(data_dir(self.data_dir.clone())?.join("containers"))
    }
}

fn data_dir(flag: Option<PathBuf>) -> anyhow::Result<PathBuf> {
    match flag {
        Some(dir) => Ok(dir),
        None => Ok(dirs::data_dir().context("no per-user data directory; pass --data-dir")?.join("stratus")),
    }
}

#[derive(Args)]
struct UpArgs {
    /// Directory for Stratus's state [default: $XDG_DATA_HOME/stratus, i.e. ~/.local/share/stratus].
    #[arg(long, env = "STRATUS_DATA_DIR", value_name = "DIR")]
    data_dir: Option<PathBuf>,
    /// Keep all state in memory and write nothing to disk; everything is gone when Stratus stops.
    #[arg(long, env = "STRATUS_EPHEMERAL", conflicts_with = "data_dir")]
    ephemeral: bool,
    /// When an acknowledged write reaches the disk. `always`: before it is acknowledged, so it
    /// survives a power loss. A duration such as `100ms`: it is acknowledged once written to the
    /// store's log, which survives Stratus being killed (kill -9), and the log is synced that often,
    /// so a power loss or kernel crash can lose that last stretch. Much faster where syncs are slow.
    #[arg(long, env = "STRATUS_FSYNC", value_name = "always|DURATION", default_value = "always", value_parser = fsync_policy, conflicts_with = "ephemeral")]
    fsync: store::Fsync,
    /// Port of the edge, where every AWS API is served (0 picks a free one).
    #[arg(long, env = "STRATUS_PORT", default_value_t = 4566)]
    port: u16,
    /// Address to listen on; 0.0.0.0 exposes Stratus to the network.
    #[arg(long, env = "STRATUS_HOST", default_value = "127.0.0.1")]
    host: String,
    /// Seconds a connection may stay idle, or take to send a request head, before it is closed.
    #[arg(long, env = "STRATUS_IDLE_TIMEOUT", value_name = "SECONDS", default_value_t = 60)]
    idle_timeout: u64,
    /// Account id for requests whose access key is not a 12-digit account id (moto users expect 123456789012).
    #[arg(long, env = "STRATUS_DEFAULT_ACCOUNT", default_value = "000000000000", value_parser = account_id)]
    default_account: String,
    /// DynamoDB splits a partition when it holds more than this many bytes (DynamoDB's own limit
    /// is 10 GB; the small default makes splits visible on small tables).
    #[arg(long, env = "STRATUS_DYNAMODB_PARTITION_BYTES", value_name = "BYTES", default_value_t = 1 << 20)]
    dynamodb_partition_bytes: usize,
    /// How often DynamoDB looks for items whose TTL has passed, e.g. 1s, 5s, 1m.
    #[arg(long, env = "STRATUS_DYNAMODB_TTL_INTERVAL", value_name = "DURATION", default_value = "5s", value_parser = humantime::parse_duration)]
    dynamodb_ttl_interval: std::time::Duration,
    /// Throttle DynamoDB requests per partition by their share of the table's capacity, with burst
    /// capacity, as DynamoDB does (ProvisionedThroughputExceededException).
    #[arg(long, env = "STRATUS_ENFORCE_CAPACITY")]
    enforce_capacity: bool,
    /// Unix socket of the Docker Engine API [default: /run/stratus/docker.sock as root,
    /// else $XDG_RUNTIME_DIR/stratus/docker.sock]. Use it with DOCKER_HOST=unix://PATH.
    #[arg(long, env = "STRATUS_DOCKER_SOCKET", value_name = "PATH")]
    docker_socket: Option<PathBuf>,
    /// Run containers in a user namespace whose root is an unprivileged host uid, as dockerd's
    /// flag: `default` (the `dockremap` user's ranges, else 100000-165535), `user[:group]` or
    /// `uid[:gid]` (their ranges in /etc/subuid and /etc/subgid).
    #[arg(long, env = "STRATUS_USERNS_REMAP", value_name = "USER[:GROUP]")]
    userns_remap: Option<String>,
    /// Name of the Linux bridge of Docker's default `bridge` network. Stratus instances sharing a
    /// host need different ones (their NAT rules are tagged with it).
    #[arg(long, env = "STRATUS_DOCKER_BRIDGE", value_name = "NAME", default_value = "stratus0", value_parser = bridge_name)]
    docker_bridge: String,
    /// Subnet of the default `bridge` network (its first address is the gateway).
    #[arg(long, env = "STRATUS_DOCKER_BRIDGE_SUBNET", value_name = "CIDR", default_value = "172.17.0.0/16")]
    docker_bridge_subnet: containers::network::Ipv4Net,
    /// Keep containers running while Stratus is stopped (or killed), as dockerd's flag: the next
    /// `stratus up` on the same data directory adopts them.
    #[arg(long, env = "STRATUS_LIVE_RESTORE", conflicts_with = "ephemeral")]
    live_restore: bool,
}

fn fsync_policy(value: &str) -> Result<store::Fsync, String> {
    match value {
        "always" => Ok(store::Fsync::Always),
        _ => match humantime::parse_duration(value) {
            Ok(interval) if !interval.is_zero() => Ok(store::Fsync::Every(interval)),
            _ => Err("`always`, or how often to sync, such as 100ms or 1s".to_string()),
        },
    }
}

/// A Linux interface name: at most 15 bytes, no `/`, spaces or `:`.
fn bridge_name(value: &str) -> Result<String, String> {
    if !value.is_empty() && value.len() <= 15 && value.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
    {
        Ok(value.to_string())
    } else {
        Err("an interface name is 1 to 15 letters, digits, '-', '_' or '.'".to_string())
    }
}

fn account_id(value: &str) -> Result<String, String> {
    if value.len() == 12 && value.bytes().all(|b| b.is_ascii_digit()) {
        Ok(value.to_string())
    } else {
        Err("an AWS account id is exactly 12 digits".to_string())
    }
}

fn main() -> anyhow::Result<()> {
    let started = Instant::now();
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()))
        .with_writer(std::io::stderr)
        .init();
    match cli.command {
        Command::Up(args) => {
            tokio::runtime::Builder::new_multi_thread().enable_all().build()?.block_on(up(args, started))
        }
        Command::Image(command) => image(command),
        // No tokio here: the runtime process must stay single-threaded (see containers::runtime).
        Command::Runtime { root } => containers::runtime::serve(&root).context("the container runtime process failed"),
        Command::NetworkJanitor => containers::network::janitor::serve().context("the network janitor failed"),
    }
}

fn image(command: ImageCommand) -> anyhow::Result<()> {
    match command {
        ImageCommand::Bootstrap { image, busybox, suite, mirror, data } => {
            let images = containers::image::ImageStore::open(&data.containers_dir()?)?;
            let progress = &mut |line: &str| println!("{line}");
            match image {
                BootstrapImage::Busybox => images.bootstrap_busybox(&busybox, progress)?,
                BootstrapImage::Debian => images.bootstrap_debian(&suite, &mirror, progress)?,
            };
        }
        ImageCommand::Ls { data } => {
            let images = containers::image::ImageStore::open(&data.containers_dir()?)?;
            println!("{:<30} {:<14} {:>10}", "REPOSITORY:TAG", "IMAGE ID", "SIZE");
            for image in images.list()? {
                for tag in &image.tags {
                    let size = format!("{:.1}MB", image.size() as f64 / 1e6);
                    println!("{tag:<30} {:<14} {size:>10}", containers::image::short_id(&image.id));
                }
            }
        }
    }
    Ok(())
}

/// The Docker socket's default place: the system's when root, else the user's runtime dir.
fn default_docker_socket() -> Option<PathBuf> {
    if containers::running_as_root() {
        Some(PathBuf::from("/run/stratus/docker.sock"))
    } else {
        dirs::runtime_dir().map(|dir| dir.join("stratus/docker.sock"))
    }
}

/// Binds the Docker API's socket, replacing a stale socket file but never a live one.
async fn bind_docker_socket(path: &std::path::Path) -> anyhow::Result<tokio::net::UnixListener> {
    if tokio::net::UnixStream::connect(path).await.is_ok() {
        anyhow::bail!("{} is in use (is Stratus or Docker already running? try --docker-socket)", path.display());
    }
    if path.exists() {
        std::fs::remove_file(path).with_context(|| format!("cannot remove the stale socket {}", path.display()))?;
    }
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).with_context(|| format!("cannot create {}", parent.display()))?;
    }
    let listener =
        tokio::net::UnixListener::bind(path).with_context(|| format!("cannot listen on {}", path.display()))?;
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o660))?;
    Ok(listener)
}

async fn up(args: UpArgs, started: Instant) -> anyhow::Result<()> {
    // Containers need files (layers, root filesystems) even when nothing else touches the disk:
    // with --ephemeral they go to a directory of this process's own, removed on exit.
    let (store, state_note, containers_dir, ephemeral_dir): (Arc<dyn Store>, String, PathBuf, Option<PathBuf>) = if args
        .ephemeral
    {
        let dir = std::env::temp_dir().join(format!("stratus-{}", std::process::id()));
        let store = store::ephemeral(StoreOptions::default())?;
        (store, "in memory only (--ephemeral)".into(), dir.join("containers"), Some(dir))
    } else {
        let dir = data_dir(args.data_dir)?;
        let store = store::open(&dir, StoreOptions { fsync: args.fsync, ..StoreOptions::default() })
            .with_context(|| format!("cannot open the store in {} (is another Stratus using it?)", dir.display()))?;
        let synced = match args.fsync {
            store::Fsync::Always => String::new(),
            store::Fsync::Every(interval) => format!(", synced every {}", humantime::format_duration(interval)),
        };
        let note = format!("{} ({}{synced})", dir.display(), store.backend());
        (store, note, dir.join("containers"), None)
    };
    // Without a runtime directory (and no flag) there is no sensible place for the socket: the
    // rest of Stratus still serves, without the Docker API.
    let docker_socket = args.docker_socket.or_else(default_docker_socket);
    let docker_listener = match &docker_socket {
        Some(path) => Some(bind_docker_socket(path).await?),
        None => None,
    };

    let listener = tokio::net::TcpListener::bind((args.host.as_str(), args.port)).await.with_context(|| {
        format!("cannot listen on {}:{} (is Stratus or LocalStack already running? try --port)", args.host, args.port)
    })?;
    let address = listener.local_addr()?;
    let endpoint = format!("http://{address}");
    // The address put in URLs that SNS hands out (SubscribeURL, SigningCertURL).
    let reachable =
        if address.ip().is_unspecified() { format!("http://localhost:{}", address.port()) } else { endpoint.clone() };

    let sqs = sqs::Sqs::open(store.clone()).await.context("cannot load SQS state from the store")?;
    let sns = sns::Sns::open(store.clone(), sqs.clone(), sns::Endpoint(reachable))
        .await
        .context("cannot load SNS state from the store")?;
    let dynamodb = dynamodb::DynamoDb::open(
        store.clone(),
        dynamodb::Options {
            partition_bytes: args.dynamodb_partition_bytes.max(1),
            ttl_interval: args.dynamodb_ttl_interval.max(std::time::Duration::from_millis(100)),
            enforce_capacity: args.enforce_capacity,
            ..Default::default()
        },
    )
    .await
    .context("cannot load DynamoDB state from the store")?;
    let aws = aws_protocol::Aws::new(args.default_account, sqs, sns, dynamodb);
    let userns_remap = args.userns_remap.as_deref().map(containers::userns::Remap::from_host).transpose()?;
    let runtime_process = if containers::running_as_root() {
        Some(std::env::current_exe().context("cannot find the stratus binary to start the runtime")?)
    } else {
        tracing::warn!("not root: containers cannot run (images can still be listed and managed)");
        None
    };
    let network = containers::network::Options { bridge: args.docker_bridge, subnet: args.docker_bridge_subnet };
    let options = containers::Options {
        dir: containers_dir,
        runtime: runtime_process,
        userns_remap,
        network,
        config_json: std::sync::Arc::new(docker_protocol::health::DockerConfigJson),
        live_restore: args.live_restore,
    };
    let engine = containers::Engine::open(store.clone(), options).await.context("cannot open the container engine")?;

    let mut out = std::io::stdout().lock();
    writeln!(out, "Stratus {} ready in {:.1} ms", env!("CARGO_PKG_VERSION"), started.elapsed().as_secs_f64() * 1000.0)?;
    writeln!(out, "  AWS endpoint  {endpoint}  (services: {})", edge::AWS_SERVICES.join(", "))?;
    writeln!(out, "  health        {endpoint}/_stratus/health")?;
    writeln!(out, "  metrics       {endpoint}/metrics")?;
    match &docker_socket {
        Some(path) => {
            writeln!(out, "  Docker API    unix://{}  (DOCKER_HOST=unix://{})", path.display(), path.display())?
        }
        None => writeln!(out, "  Docker API    off (no $XDG_RUNTIME_DIR; pass --docker-socket)")?,
    }
    writeln!(out, "  state         {state_note}")?;
    writeln!(out, "Try: aws --endpoint-url {endpoint} sts get-caller-identity")?;
    out.flush()?;
    drop(out);

    let (stop_docker, docker_stopped) = tokio::sync::oneshot::channel::<()>();
    let docker_server = docker_listener.map(|listener| {
        let docker = docker_protocol::Docker::new(engine.clone());
        tokio::spawn(docker.serve(listener, async move {
            let _ = docker_stopped.await;
        }))
    });
    let edge = edge::Edge::new(store.clone(), aws, engine.clone());
    edge.serve(listener, std::time::Duration::from_secs(args.idle_timeout.max(1)), shutdown_signal())
        .await
        .context("cannot serve HTTP")?;
    let _ = stop_docker.send(());
    if let Some(server) = docker_server {
        let _ = server.await;
    }
    engine.shut_down().await;
    store.close().await;
    if let Some(path) = &docker_socket
        && let Err(error) = std::fs::remove_file(path)
    {
        tracing::warn!(%error, path = %path.display(), "cannot remove the Docker socket");
    }
    if let Some(dir) = ephemeral_dir
        && let Err(error) = std::fs::remove_dir_all(&dir)
    {
        tracing::warn!(%error, path = %dir.display(), "cannot remove the ephemeral container files");
    }
    tracing::info!("stopped cleanly");
    Ok(())
}

async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let terminate = async {
        match signal(SignalKind::terminate()) {
            Ok(mut sigterm) => {
                sigterm.recv().await;
            }
            Err(error) => {
                tracing::warn!(%error, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        () = terminate => {}
    }
    tracing::info!("shutting down: draining requests in flight");
}
