//! The `stratus` binary: parses flags, opens the store, builds the services and starts listeners.

use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use store::{Store, StoreOptions};

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
}

#[derive(Args)]
struct UpArgs {
    /// Directory for Stratus's state [default: $XDG_DATA_HOME/stratus, i.e. ~/.local/share/stratus].
    #[arg(long, env = "STRATUS_DATA_DIR", value_name = "DIR")]
    data_dir: Option<PathBuf>,
    /// Keep all state in memory and write nothing to disk; everything is gone when Stratus stops.
    #[arg(long, env = "STRATUS_EPHEMERAL", conflicts_with = "data_dir")]
    ephemeral: bool,
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
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    match cli.command {
        Command::Up(args) => runtime.block_on(up(args, started)),
    }
}

async fn up(args: UpArgs, started: Instant) -> anyhow::Result<()> {
    let (store, state_note): (Arc<dyn Store>, String) = if args.ephemeral {
        (store::ephemeral(StoreOptions::default())?, "in memory only (--ephemeral)".into())
    } else {
        let dir = match args.data_dir {
            Some(dir) => dir,
            None => dirs::data_dir().context("no per-user data directory; pass --data-dir")?.join("stratus"),
        };
        let store = store::open(&dir, StoreOptions::default())
            .with_context(|| format!("cannot open the store in {} (is another Stratus using it?)", dir.display()))?;
        let note = format!("{} ({})", dir.display(), store.backend());
        (store, note)
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
        },
    )
    .await
    .context("cannot load DynamoDB state from the store")?;
    let aws = aws_protocol::Aws::new(args.default_account, sqs, sns, dynamodb);

    let mut out = std::io::stdout().lock();
    writeln!(out, "Stratus {} ready in {:.1} ms", env!("CARGO_PKG_VERSION"), started.elapsed().as_secs_f64() * 1000.0)?;
    writeln!(out, "  AWS endpoint  {endpoint}  (services: {})", edge::AWS_SERVICES.join(", "))?;
    writeln!(out, "  health        {endpoint}/_stratus/health")?;
    writeln!(out, "  metrics       {endpoint}/metrics")?;
    writeln!(out, "  state         {state_note}")?;
    writeln!(out, "Try: aws --endpoint-url {endpoint} sts get-caller-identity")?;
    out.flush()?;
    drop(out);

    let edge = edge::Edge::new(store.clone(), aws);
    edge.serve(listener, std::time::Duration::from_secs(args.idle_timeout.max(1)), shutdown_signal()).await;
    store.close().await;
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
