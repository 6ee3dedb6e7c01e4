//! The Docker Engine API, served on a unix socket over [`containers::Engine`], enough for the
//! `docker` CLI (28.x, API 1.50, which negotiates down to [`API_VERSION`]) to list images, run,
//! list, inspect, log, stop and remove containers, manage volumes and follow events. Handlers decode the request, call the engine,
//! and encode Docker's JSON; errors are Docker's `{"message": ...}` with its status codes.
//! Attach is a hijacked connection (HTTP 101) carrying Docker's multiplexed stream frames.

mod activity;
mod build;
mod exec;
pub mod health;
mod hijack;
mod images;
mod json;
mod networks;
mod security;
mod volumes;

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use containers::{Change, Changed, Engine, Error, OutputEvent, Stream, WaitCondition};
use http::{HeaderValue, Method, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::{Body, Frame, Incoming};
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use tokio::net::UnixListener;
use tokio::sync::{broadcast, mpsc};

/// The API version Stratus answers with; newer clients negotiate down to it.
pub const API_VERSION: &str = "1.47";
/// The oldest version accepted, as Docker 28 does.
pub const MIN_API_VERSION: &str = "1.24";
/// Request bodies (container configs) are small.
const MAX_BODY: usize = 1 << 20;

pub struct Docker {
    engine: Arc<Engine>,
}

/// Why a request failed: the engine said no, or the route is not served.
enum ApiError {
    Engine(Error),
    NotServed(String),
}

impl From<Error> for ApiError {
    fn from(error: Error) -> Self {
        ApiError::Engine(error)
    }
}

type ResponseBody = http_body_util::combinators::BoxBody<Bytes, Infallible>;

impl Docker {
    pub fn new(engine: Arc<Engine>) -> Arc<Docker> {
        Arc::new(Docker { engine })
    }

    /// Serves `listener` until `shutdown` resolves, then stops accepting. Connections still open
    /// (waits, attaches, followed logs) end as the engine stops their containers, or with the
    /// process.
    pub async fn serve(self: Arc<Self>, listener: UnixListener, shutdown: impl Future<Output = ()>) {
        let http = hyper::server::conn::http1::Builder::new();
        tokio::pin!(shutdown);
        loop {
            let stream = tokio::select! {
                accepted = listener.accept() => match accepted {
                    Ok((stream, _)) => stream,
                    Err(error) => {
                        tracing::warn!(%error, "docker socket: accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                },
                () = &mut shutdown => break,
            };
            let docker = self.clone();
            let service = hyper::service::service_fn(move |request| {
                let docker = docker.clone();
                async move { Ok::<_, Infallible>(docker.handle(request).await) }
            });
            let connection = http.serve_connection(TokioIo::new(stream), service).with_upgrades();
            tokio::spawn(async move {
                if let Err(error) = connection.await {
                    tracing::debug!(%error, "docker connection ended with an error");
                }
            });
        }
    }

    async fn handle(&self, request: Request<Incoming>) -> Response<ResponseBody> {
        let method = request.method().clone();
        let path = request.uri().path().to_string();
        let response = match self.route(request).await {
            Ok(response) => response,
            Err(ApiError::Engine(error)) => error_response(&error),
            // 404, as dockerd answers an unknown route: `docker inspect` then tries its next kind
            // of object (networks, volumes, ...) instead of failing.
            Err(ApiError::NotServed(message)) => json_response(StatusCode::NOT_FOUND, json!({ "message": message })),
        };
        tracing::debug!(%method, %path, status = response.status().as_u16(), "docker api");
        response
    }

    async fn route(&self, request: Request<Incoming>) -> Result<Response<ResponseBody>, ApiError> {
        let path = strip_version(request.uri().path()).to_string();
        let query = Query::parse(request.uri().query());
        let method = request.method().clone();
        let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
        match (&method, segments.as_slice()) {
            (&Method::GET | &Method::HEAD, ["_ping"]) => Ok(ping(&method)),
            (&Method::GET, ["version"]) => Ok(ok_json(json::version())),
            (&Method::GET, ["info"]) => Ok(ok_json(json::info(&self.engine)?)),

            (&Method::GET, ["images", "json"]) => {
                let filters = images::ImageFilters::parse(query.get("filters"))?;
                let images = self.engine.images().list()?;
                // Intermediate build images are hidden unless `-a`, as in Docker.
                let all = query.flag("all");
                let shown = images
                    .iter()
                    .filter(|i| filters.matches(i) && (all || !containers::is_intermediate(i, &images)));
                Ok(ok_json(Value::Array(shown.map(json::image_summary).collect())))
            }
            (&Method::POST, ["images", "create"]) if query.get("fromSrc") == Some("-") => {
                // Reading starts first, so that a bad parameter's error reaches the client (the
                // body is then read and dropped) rather than a broken pipe.
                let body = images::BodyReader::new(request);
                let new = containers::NewImage {
                    tag: images::reference(query.get("repo"), query.get("tag"))?,
                    changes: Change::parse(&query.all("changes"))?,
                    comment: query.get("message").filter(|m| !m.is_empty()).unwrap_or("Imported from -").to_string(),
                    author: String::new(),
                };
                let engine = self.engine.clone();
                let image = images::blocking(move || engine.images().import(body, &new)).await?;
                Ok(json_lines(&[json!({"status": image.id})]))
            }
            (&Method::POST, ["images", "create"]) if query.get("fromSrc").is_some() => {
                Err(Error::Unsupported("importing from a URL (only `docker import -` or a file)").into())
            }
            (&Method::POST, ["images", "load"]) => {
                let (engine, body, quiet) = (self.engine.clone(), images::BodyReader::new(request), query.flag("quiet"));
                let messages = images::blocking(move || images::load(engine.images(), body, quiet)).await?;
                Ok(json_lines(&messages))
            }
            (&Method::GET, ["images", "get"]) => self.save(&query.all("names")),
            (&Method::GET, ["images", name @ .., "get"]) if !name.is_empty() => self.save(&[name.join("/").as_str()]),
            (&Method::POST, ["images", "prune"]) => Ok(ok_json(images::prune(&self.engine, query.get("filters"))?)),
            (&Method::POST, ["commit"]) => {
                let new = containers::NewImage {
                    tag: images::reference(query.get("repo"), query.get("tag"))?,
                    changes: Change::parse(&query.all("changes"))?,
                    comment: query.get("comment").unwrap_or_default().to_string(),
                    author: query.get("author").unwrap_or_default().to_string(),
                };
                let (engine, container) = (self.engine.clone(), query.get("container").unwrap_or_default().to_string());
                let image = images::blocking(move || images::commit(&engine, &container, &new)).await?;
                Ok(json_response(StatusCode::CREATED, json!({"Id": image.id})))
            }
            (&Method::POST, ["images", "create"]) => Err(ApiError::NotServed(
                "Stratus cannot pull images (no registry is reachable); make one with `stratus image bootstrap busybox`"
                    .into(),
            )),
            (&Method::GET, ["images", name @ .., "json"]) if !name.is_empty() => {
                let image = self.engine.images().find(&name.join("/"))?;
                Ok(ok_json(json::image_inspect(&image)))
            }
            (&Method::GET, ["images", name @ .., "history"]) if !name.is_empty() => {
                let image = self.engine.images().find(&name.join("/"))?;
                Ok(ok_json(json::image_history(&image)))
            }
            (&Method::POST, ["images", name @ .., "tag"]) if !name.is_empty() => {
                let repo = query.get("repo").unwrap_or_default();
                let target = match query.get("tag").filter(|t| !t.is_empty()) {
                    Some(tag) => format!("{repo}:{tag}"),
                    None => repo.to_string(),
                };
                self.engine.images().tag(&name.join("/"), &target)?;
                Ok(empty(StatusCode::CREATED))
            }
            (&Method::DELETE, ["images", name @ ..]) if !name.is_empty() => {
                let removed = self.engine.remove_image(&name.join("/"), query.flag("force"))?;
                Ok(ok_json(json::removed_images(&removed)))
            }

            (&Method::POST, ["build"]) => Ok(build::build(self.engine.clone(), &query, request).await?),
            (&Method::POST, ["build", "prune"]) => {
                let pruned = self.engine.prune_build_cache().await?;
                tracing::info!(pruned, "build cache pruned");
                Ok(ok_json(json!({"CachesDeleted": [], "SpaceReclaimed": 0})))
            }
            (&Method::POST, ["containers", "create"]) => {
                let body = read_body(request).await?;
                let create = json::create_request(&body, query.get("name"))?;
                let (container, warnings) = self.engine.create(create).await?;
                Ok(json_response(StatusCode::CREATED, json!({"Id": container.id, "Warnings": warnings})))
            }
            (&Method::GET, ["containers", "json"]) => {
                let filters = json::Filters::parse(query.get("filters"))?;
                let mut containers: Vec<_> =
                    self.engine.list(query.flag("all")).into_iter().filter(|c| filters.matches(c)).collect();
                if let Some(limit) = query.get("limit").and_then(|l| l.parse::<usize>().ok()).filter(|l| *l > 0) {
                    containers.truncate(limit);
                }
                Ok(ok_json(Value::Array(containers.iter().map(|c| json::container_summary(c, &self.engine)).collect())))
            }
            (&Method::GET, ["containers", id, "json"]) => {
                let container = self.engine.inspect(id)?;
                Ok(ok_json(json::container_inspect(&container, &self.engine)))
            }
            (&Method::POST, ["containers", id, "start"]) => match self.engine.start(id).await? {
                Changed::Yes => Ok(empty(StatusCode::NO_CONTENT)),
                Changed::AlreadyDone => Ok(empty(StatusCode::NOT_MODIFIED)),
            },
            (&Method::POST, ["containers", id, "wait"]) => {
                let condition = match query.get("condition").unwrap_or("not-running") {
                    "" | "not-running" => WaitCondition::NotRunning,
                    "next-exit" => WaitCondition::NextExit,
                    "removed" => WaitCondition::Removed,
                    other => return Err(Error::InvalidParameter(format!("invalid condition: \"{other}\"")).into()),
                };
                // Checked now, so that an unknown container is a 404 rather than a wait.
                let id = self.engine.inspect(id)?.id;
                // The CLI waits for the response head before it starts the container: answer
                // 200 at once and send the body when the condition is met, as dockerd does.
                let (tx, rx) = mpsc::channel::<Bytes>(1);
                let engine = self.engine.clone();
                tokio::spawn(async move {
                    let body = match engine.wait(&id, condition).await {
                        Ok(code) => json!({"StatusCode": code, "Error": null}),
                        Err(error) => json!({"StatusCode": -1, "Error": {"Message": error.to_string()}}),
                    };
                    let _ = tx.send(Bytes::from(body.to_string())).await;
                });
                Ok(json_stream(rx))
            }
            (&Method::POST, ["containers", id, "kill"]) => {
                self.engine.kill(id, query.get("signal").unwrap_or("SIGKILL")).await?;
                Ok(empty(StatusCode::NO_CONTENT))
            }
            (&Method::POST, ["containers", id, "stop"]) => {
                let timeout = stop_timeout(&query)?;
                match self.engine.stop(id, timeout).await? {
                    Changed::Yes => Ok(empty(StatusCode::NO_CONTENT)),
                    Changed::AlreadyDone => Ok(empty(StatusCode::NOT_MODIFIED)),
                }
            }
            (&Method::POST, ["containers", id, "restart"]) => {
                let timeout = stop_timeout(&query)?;
                self.engine.stop(id, timeout).await?;
                self.engine.wait(id, WaitCondition::NotRunning).await?;
                self.engine.start(id).await?;
                Ok(empty(StatusCode::NO_CONTENT))
            }
            (&Method::DELETE, ["containers", id]) => {
                self.engine.remove(id, query.flag("force"), query.flag("v")).await?;
                Ok(empty(StatusCode::NO_CONTENT))
            }

            (&Method::POST, ["containers", id, "rename"]) => {
                self.engine.rename(id, query.get("name").unwrap_or_default()).await?;
                Ok(empty(StatusCode::NO_CONTENT))
            }
            (&Method::POST, ["containers", id, "update"]) => {
                let (limits, restart_policy) = json::update_request(&read_body(request).await?)?;
                let warnings = self.engine.update(id, limits, restart_policy).await?;
                Ok(ok_json(json!({"Warnings": warnings})))
            }
            (&Method::POST, ["containers", "prune"]) => {
                let (deleted, reclaimed) = self.engine.prune(activity::prune_filter(query.get("filters"))?).await?;
                Ok(ok_json(json!({"ContainersDeleted": deleted, "SpaceReclaimed": reclaimed})))
            }
            (&Method::GET, ["containers", id, "top"]) => {
                let (titles, rows) = self.engine.top(id, query.get("ps_args").unwrap_or_default()).await?;
                Ok(ok_json(activity::top_json(&titles, &rows)))
            }
            (&Method::GET, ["containers", id, "stats"]) => {
                let id = self.engine.inspect(id)?.id;
                let stream = query.get("stream").is_none() || query.flag("stream");
                let (tx, rx) = mpsc::channel::<Bytes>(4);
                tokio::spawn(activity::stream_stats(self.engine.clone(), id, stream, tx));
                Ok(json_stream(rx))
            }
            (&Method::GET, ["events"]) => {
                let since = activity::parse_time(query.get("since"))?;
                let until = activity::parse_time(query.get("until"))?;
                let filters = activity::EventFilters::parse(query.get("filters"))?;
                // `until` alone replays everything remembered up to it.
                let from = since.or(until.map(|_| std::time::SystemTime::UNIX_EPOCH));
                let (past, live) = self.engine.events().subscribe(from);
                let (tx, rx) = mpsc::channel::<Bytes>(64);
                tokio::spawn(activity::stream_events(past, live, filters, until, tx));
                Ok(json_stream(rx))
            }

            (&Method::POST, ["volumes", "create"]) => {
                let body = read_body(request).await?;
                Ok(json_response(StatusCode::CREATED, volumes::create(&self.engine, &body).await?))
            }
            (&Method::GET, ["volumes"]) => Ok(ok_json(volumes::list(&self.engine, query.get("filters")).await?)),
            (&Method::POST, ["volumes", "prune"]) => Ok(ok_json(volumes::prune(&self.engine, query.get("filters")).await?)),
            (&Method::GET, ["volumes", name]) => {
                let volume = self.engine.volumes().get(name).await?;
                Ok(ok_json(volumes::volume_json(&volume, &self.engine)))
            }
            (&Method::DELETE, ["volumes", name]) => {
                self.engine.remove_volume(name, query.flag("force")).await?;
                Ok(empty(StatusCode::NO_CONTENT))
            }
            (&Method::GET, ["containers", id, "logs"]) => Ok(self.logs(id, &query)?),
            (&Method::POST, ["containers", id, "attach"]) => Ok(self.attach(id, &query, request)?),
            (&Method::POST, ["containers", id, "exec"]) => {
                let exec = exec::create_request(&read_body(request).await?)?;
                let id = self.engine.exec_create(id, exec)?;
                Ok(json_response(StatusCode::CREATED, json!({ "Id": id })))
            }
            (&Method::POST, ["exec", id, "start"]) => Ok(exec::start(&self.engine, id, request).await?),
            (&Method::GET, ["exec", id, "json"]) => Ok(ok_json(exec::inspect(&self.engine.exec_inspect(id)?))),
            (&Method::POST, ["containers", id, "resize"]) => {
                let (rows, columns) = exec::size(&query)?;
                self.engine.resize(id, rows, columns)?;
                Ok(empty(StatusCode::OK))
            }
            (&Method::POST, ["exec", id, "resize"]) => {
                let (rows, columns) = exec::size(&query)?;
                self.engine.exec_resize(id, rows, columns)?;
                Ok(empty(StatusCode::OK))
            }
            (_, ["networks", rest @ ..]) => networks::route(&self.engine, &method, rest, &query, request).await,
            _ => Err(ApiError::NotServed(format!("Stratus does not serve {method} {path} of the Docker Engine API yet"))),
        }
    }

    fn save(&self, names: &[&str]) -> Result<Response<ResponseBody>, ApiError> {
        let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        let mut response = Response::new(ChannelBody(images::save(&self.engine, &names)?).boxed());
        response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/x-tar"));
        Ok(response)
    }

    fn logs(&self, id: &str, query: &Query) -> Result<Response<ResponseBody>, Error> {
        let (stdout, stderr) = (query.flag("stdout"), query.flag("stderr"));
        if !stdout && !stderr {
            return Err(Error::InvalidParameter("You must choose at least one stream".into()));
        }
        let timestamps = query.flag("timestamps");
        // A terminal's output is one raw stream, as the CLI reads it for a Tty container.
        let raw = self.engine.inspect(id)?.stdio.tty;
        let encode = move |entry: &containers::LogEntry| {
            if raw { Bytes::from(entry.bytes.clone()) } else { frame(entry, timestamps) }
        };
        let (entries, live) = self.engine.logs(id, query.flag("follow"))?;
        let mut lines = json::split_lines(entries);
        if let Some(tail) = query.get("tail").and_then(|t| t.parse::<usize>().ok()) {
            lines.drain(..lines.len().saturating_sub(tail));
        }
        let wanted = move |stream: Stream| match stream {
            Stream::Stdout => stdout,
            Stream::Stderr => stderr,
        };
        let (tx, rx) = mpsc::channel::<Bytes>(64);
        tokio::spawn(async move {
            for line in lines.into_iter().filter(|l| wanted(l.stream)) {
                if tx.send(encode(&line)).await.is_err() {
                    return;
                }
            }
            if let Some(mut live) = live {
                while let Some(event) = next_event(&mut live).await {
                    let OutputEvent::Output(entry) = event else { break };
                    for line in json::split_lines(vec![entry]).into_iter().filter(|l| wanted(l.stream)) {
                        if tx.send(encode(&line)).await.is_err() {
                            return;
                        }
                    }
                }
            }
        });
        let mut response = Response::new(ChannelBody(rx).boxed());
        response
            .headers_mut()
            .insert(header::CONTENT_TYPE, HeaderValue::from_static("application/vnd.docker.multiplexed-stream"));
        Ok(response)
    }

    /// Hijacks the connection (`Upgrade: tcp`, as the CLI asks): the container's output goes
    /// out until it ends, and with `stdin=1` the client's bytes go to its stdin. Subscribing
    /// happens now, before the 101 goes out, so output of a start that follows the attach is
    /// never missed.
    fn attach(&self, id: &str, query: &Query, mut request: Request<Incoming>) -> Result<Response<ResponseBody>, Error> {
        if !request.headers().contains_key(header::UPGRADE) {
            return Err(Error::InvalidParameter("attach needs a connection upgrade (Upgrade: tcp)".into()));
        }
        let (stdout, stderr) = (query.flag("stdout"), query.flag("stderr"));
        let containers::Attach { mut output, input, tty } = self.engine.attach(id, query.flag("stdin"))?;
        let (tx, session_output) = mpsc::channel(64);
        tokio::spawn(async move {
            while let Some(OutputEvent::Output(entry)) = next_event(&mut output).await {
                let wanted = match entry.stream {
                    Stream::Stdout => stdout,
                    Stream::Stderr => stderr,
                };
                if wanted && tx.send(entry).await.is_err() {
                    return;
                }
            }
        });
        let session = hijack::Session { output: session_output, input };
        Ok(hijack::respond(hyper::upgrade::on(&mut request), tty, async move { session }))
    }
}

/// The next event, skipping over a lag (a client too slow for the output loses the oldest part).
async fn next_event(receiver: &mut broadcast::Receiver<OutputEvent>) -> Option<OutputEvent> {
    loop {
        match receiver.recv().await {
            Ok(event) => return Some(event),
            Err(broadcast::error::RecvError::Lagged(skipped)) => {
                tracing::warn!(skipped, "a client fell behind a container's output");
            }
            Err(broadcast::error::RecvError::Closed) => return None,
        }
    }
}

/// Docker's stream frame: stream (1 stdout, 2 stderr), three zero bytes, the length (u32,
/// big-endian), the payload.
fn frame(entry: &containers::LogEntry, timestamps: bool) -> Bytes {
    let mut payload = Vec::with_capacity(entry.bytes.len() + 40);
    if timestamps {
        payload.extend_from_slice(humantime::format_rfc3339_nanos(entry.time).to_string().as_bytes());
        payload.push(b' ');
    }
    payload.extend_from_slice(&entry.bytes);
    let mut framed = Vec::with_capacity(payload.len() + 8);
    framed.push(match entry.stream {
        Stream::Stdout => 1,
        Stream::Stderr => 2,
    });
    framed.extend_from_slice(&[0, 0, 0]);
    framed.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    framed.extend_from_slice(&payload);
    Bytes::from(framed)
}

/// A response body fed by a channel: ends when the sender is dropped.
struct ChannelBody(mpsc::Receiver<Bytes>);

impl Body for ChannelBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        self.0.poll_recv(cx).map(|chunk| chunk.map(|bytes| Ok(Frame::data(bytes))))
    }
}

/// `/v1.47/containers/json` and `/containers/json` are the same route.
fn strip_version(path: &str) -> &str {
    if let Some(rest) = path.strip_prefix("/v")
        && let Some(slash) = rest.find('/')
        && rest[..slash].split('.').all(|part| !part.is_empty() && part.bytes().all(|b| b.is_ascii_digit()))
    {
        return &rest[slash..];
    }
    path
}

/// The request's `t`; none means the container's own stop timeout.
fn stop_timeout(query: &Query) -> Result<Option<Duration>, Error> {
    match query.get("t").or_else(|| query.get("timeout")) {
        None | Some("") => Ok(None),
        Some(seconds) => match seconds.parse::<i64>() {
            Ok(seconds) if seconds < 0 => Ok(Some(Duration::from_secs(3600 * 24 * 365))),
            Ok(seconds) => Ok(Some(Duration::from_secs(seconds as u64))),
            Err(_) => Err(Error::InvalidParameter(format!("invalid stop timeout: {seconds}"))),
        },
    }
}

async fn read_body(request: Request<Incoming>) -> Result<Bytes, Error> {
    match Limited::new(request.into_body(), MAX_BODY).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(error) => Err(Error::InvalidParameter(format!("cannot read the request body: {error}"))),
    }
}

fn ping(method: &Method) -> Response<ResponseBody> {
    let body = if method == Method::HEAD { Bytes::new() } else { Bytes::from_static(b"OK") };
    let mut response = Response::new(Full::new(body).boxed());
    let headers = response.headers_mut();
    headers.insert("Api-Version", HeaderValue::from_static(API_VERSION));
    headers.insert("OSType", HeaderValue::from_static("linux"));
    headers.insert("Docker-Experimental", HeaderValue::from_static("false"));
    headers.insert("Builder-Version", HeaderValue::from_static("1"));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache, no-store, must-revalidate"));
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"));
    response
}

/// A 200 whose JSON body comes from a channel as it is produced.
fn json_stream(rx: mpsc::Receiver<Bytes>) -> Response<ResponseBody> {
    let mut response = Response::new(ChannelBody(rx).boxed());
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

fn empty(status: StatusCode) -> Response<ResponseBody> {
    let mut response = Response::new(Full::new(Bytes::new()).boxed());
    *response.status_mut() = status;
    response
}

fn ok_json(value: Value) -> Response<ResponseBody> {
    json_response(StatusCode::OK, value)
}

/// A finished stream of Docker's JSON messages (progress, "Loaded image: ..."), one a line.
fn json_lines(messages: &[Value]) -> Response<ResponseBody> {
    let text: String = messages.iter().map(|m| format!("{m}\r\n")).collect();
    let mut response = Response::new(Full::new(Bytes::from(text)).boxed());
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

fn json_response(status: StatusCode, value: Value) -> Response<ResponseBody> {
    let mut response = Response::new(Full::new(Bytes::from(value.to_string())).boxed());
    *response.status_mut() = status;
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response.headers_mut().insert("Api-Version", HeaderValue::from_static(API_VERSION));
    response
}

/// Docker's error shape with the status its clients expect for each kind of error.
fn error_response(error: &Error) -> Response<ResponseBody> {
    let status = match error {
        Error::NoSuchImage(_)
        | Error::NoSuchContainer(_)
        | Error::NoSuchExec(_)
        | Error::NoSuchVolume(_)
        | Error::NotFound(_) => StatusCode::NOT_FOUND,
        Error::NoSuchNetwork(_) | Error::PluginNotFound(_) => StatusCode::NOT_FOUND,
        Error::Forbidden(_) => StatusCode::FORBIDDEN,
        Error::InvalidReference(_) | Error::InvalidParameter(_) | Error::ExecFailed { .. } => StatusCode::BAD_REQUEST,
        Error::NameInUse { .. } | Error::Conflict(_) => StatusCode::CONFLICT,
        Error::Unsupported(_) => StatusCode::NOT_IMPLEMENTED,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    };
    let message = if status == StatusCode::INTERNAL_SERVER_ERROR {
        tracing::error!(error = %error_chain(error), "docker api request failed");
        error_chain(error)
    } else {
        error.to_string()
    };
    json_response(status, json!({ "message": message }))
}

fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// Query parameters, percent-decoded.
struct Query(Vec<(String, String)>);

impl Query {
    fn parse(query: Option<&str>) -> Query {
        let pairs = query
            .unwrap_or_default()
            .split('&')
            .filter(|pair| !pair.is_empty())
            .map(|pair| {
                let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
                (percent_decode(key), percent_decode(value))
            })
            .collect();
        Query(pairs)
    }

    fn get(&self, key: &str) -> Option<&str> {
        self.0.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
    }

    /// Every value of a repeated key (`names=a&names=b`).
    fn all(&self, key: &str) -> Vec<&str> {
        self.0.iter().filter(|(k, _)| k == key).map(|(_, v)| v.as_str()).collect()
    }

    /// Docker's booleans: `1`, `true`, `True` (and a bare key) are true.
    fn flag(&self, key: &str) -> bool {
        matches!(self.get(key), Some("" | "1" | "true" | "True" | "TRUE"))
    }
}

fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while let Some(&byte) = bytes.get(i) {
        let hex = |b: u8| (b as char).to_digit(16);
        match (byte, bytes.get(i + 1).copied().and_then(hex), bytes.get(i + 2).copied().and_then(hex)) {
            (b'%', Some(high), Some(low)) => {
                out.push((high * 16 + low) as u8);
                i += 3;
            }
            (b'+', _, _) => {
                out.push(b' ');
                i += 1;
            }
            _ => {
                out.push(byte);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn versioned_and_plain_paths_route_alike() {
        assert_eq!(strip_version("/v1.47/containers/json"), "/containers/json");
        assert_eq!(strip_version("/v1.12/_ping"), "/_ping");
        assert_eq!(strip_version("/containers/json"), "/containers/json");
        assert_eq!(strip_version("/version"), "/version");
        assert_eq!(strip_version("/vx/containers"), "/vx/containers");
    }

    #[test]
    fn queries_decode_and_booleans_read_like_docker() {
        let query = Query::parse(Some("all=1&filters=%7B%22label%22%3A%5B%22a%3Db%22%5D%7D&follow=true&x=0&name=a+b"));
        assert!(query.flag("all") && query.flag("follow") && !query.flag("x") && !query.flag("missing"));
        assert_eq!(query.get("filters"), Some(r#"{"label":["a=b"]}"#));
        assert_eq!(query.get("name"), Some("a b"));
        assert_eq!(percent_decode("%zz%4"), "%zz%4");
    }

    #[test]
    fn frames_carry_stream_and_big_endian_length() {
        let entry = containers::LogEntry {
            stream: Stream::Stderr,
            time: std::time::SystemTime::UNIX_EPOCH,
            bytes: b"oops\n".to_vec(),
        };
        assert_eq!(frame(&entry, false).as_ref(), b"\x02\x00\x00\x00\x00\x00\x00\x05oops\n");
        assert_eq!(
            frame(&entry, true).as_ref(),
            b"\x02\x00\x00\x00\x00\x00\x00\x241970-01-01T00:00:00.000000000Z oops\n"
        );
    }

    #[test]
    fn errors_have_dockers_status_and_shape() {
        let response = error_response(&Error::NoSuchContainer("web".into()));
        assert_eq!(response.status(), StatusCode::NOT_FOUND);
        let response = error_response(&Error::NameInUse { name: "web".into(), id: "abc".into() });
        assert_eq!(response.status(), StatusCode::CONFLICT);
        let response = error_response(&Error::InvalidParameter("bad".into()));
        assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    }
}
