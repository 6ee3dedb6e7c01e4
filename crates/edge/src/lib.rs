//! The edge: the one HTTP/1.1 listener through which everything Stratus serves over HTTP arrives.
//!
//! It owns connections and their limits (header and body timeouts, body size), request ids,
//! metrics, Stratus's own routes under `/_stratus/`, and the graceful drain on shutdown. Every
//! other request goes to the AWS protocol adapter. Kubernetes and Docker APIs will get listeners of
//! their own beside this one.

mod isolation;
mod metrics;

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use aws_protocol::{Aws, AwsError};
use bytes::Bytes;
use http::{HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, LengthLimitError, Limited};
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use store::{Op, Store, Txn};
use tokio::net::TcpListener;

use metrics::Metrics;

/// The AWS services the edge serves, by botocore name.
pub use aws_protocol::SERVED as AWS_SERVICES;

/// The largest request body accepted (DynamoDB's BatchWriteItem allows 16 MB).
pub const MAX_BODY: usize = 16 << 20;
/// And a whole body within this.
pub const BODY_TIMEOUT: Duration = Duration::from_secs(30);
/// How long shutdown waits for in-flight requests.
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(30);

pub struct Edge {
    aws: Aws,
    containers: Arc<containers::Engine>,
    store: Arc<dyn Store>,
    metrics: Metrics,
    started: Instant,
}

impl Edge {
    pub fn new(store: Arc<dyn Store>, aws: Aws, containers: Arc<containers::Engine>) -> Arc<Self> {
        Arc::new(Edge { aws, containers, store, metrics: Metrics::new(), started: Instant::now() })
    }

    /// Serves `listener` until `shutdown` resolves, then stops accepting and waits (up to
    /// [`DRAIN_TIMEOUT`]) for the requests in flight. A connection that sends no complete request
    /// head for `idle_timeout` (idle between requests, or trickling a head: slowloris) is closed.
    ///
    /// Connections are served by one thread per core, each running a single-threaded runtime; a
    /// connection stays on its thread, and so do the tasks its requests spawn. On the shared
    /// work-stealing runtime every request with a body woke a second worker (hyper wakes the
    /// connection's task from inside its own poll, and tokio wakes an idle worker to steal a task
    /// queued that way): a context switch per request, which one connection's request rate paid
    /// for (BENCHMARKS.md, "One runtime per core"). The rest of Stratus (the store, containers,
    /// the Docker API) stays on the main runtime, which accepts and deals the connections to the
    /// threads in turn: threads accepting for themselves left a client's burst of connections on
    /// whichever woke first, all 16 of a benchmark's on one core in some runs.
    pub async fn serve(
        self: Arc<Self>,
        listener: TcpListener,
        idle_timeout: Duration,
        shutdown: impl Future<Output = ()>,
    ) -> std::io::Result<()> {
        let threads = std::thread::available_parallelism().map_or(1, std::num::NonZero::get);
        let (mut lanes, mut finished) = (Vec::with_capacity(threads), Vec::with_capacity(threads));
        for index in 0..threads {
            let (lane, streams) = tokio::sync::mpsc::unbounded_channel();
            let edge = self.clone();
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
            let (done, finished_rx) = tokio::sync::oneshot::channel::<()>();
            std::thread::Builder::new().name(format!("edge-{index}")).spawn(move || {
                runtime.block_on(edge.serve_thread(streams, idle_timeout));
                // Its tasks are dropped before Stratus goes on to close the store.
                drop(runtime);
                drop(done);
            })?;
            lanes.push(lane);
            finished.push(finished_rx);
        }
        tokio::pin!(shutdown);
        for next in (0..threads).cycle() {
            let stream = tokio::select! {
                accepted = listener.accept() => match accepted.and_then(|(stream, _)| stream.into_std()) {
                    Ok(stream) => stream,
                    Err(error) => {
                        // Out of file descriptors and the like: back off instead of spinning.
                        tracing::warn!(%error, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                },
                () = &mut shutdown => break,
            };
            // Small responses must not wait for Nagle's algorithm.
            let _ = stream.set_nodelay(true);
            let _ = lanes[next].send(stream);
        }
        // New connections are refused from here; each thread sees its lane close, then drains.
        drop(listener);
        drop(lanes);
        for thread in finished {
            let _ = thread.await;
        }
        Ok(())
    }

    /// One thread's connections (see [`Edge::serve`]) until its lane closes, then its drain.
    async fn serve_thread(
        self: Arc<Self>,
        mut streams: tokio::sync::mpsc::UnboundedReceiver<std::net::TcpStream>,
        idle_timeout: Duration,
    ) {
        let mut http = hyper::server::conn::http1::Builder::new();
        // hyper's header timer runs from the moment it waits for a request head, so it is both
        // the keep-alive idle limit and the slow-head limit.
        // half_close: a client that shuts down its sending side after the request still gets the response.
        http.timer(TokioTimer::new()).header_read_timeout(idle_timeout).half_close(true);
        let graceful = GracefulShutdown::new();
        while let Some(stream) = streams.recv().await {
            let stream = match tokio::net::TcpStream::from_std(stream) {
                Ok(stream) => stream,
                Err(error) => {
                    tracing::warn!(%error, "cannot serve a connection on this thread");
                    continue;
                }
            };
            let edge = self.clone();
            let service = hyper::service::service_fn(move |request| {
                let edge = edge.clone();
                async move { Ok::<_, Infallible>(edge.dispatch(request).await) }
            });
            let connection = graceful.watch(http.serve_connection(TokioIo::new(stream), service));
            tokio::spawn(async move {
                if let Err(error) = connection.await {
                    tracing::debug!(%error, "connection ended with an error");
                }
            });
        }
        tokio::select! {
            () = graceful.shutdown() => {}
            () = tokio::time::sleep(DRAIN_TIMEOUT) => tracing::warn!("requests still in flight after {DRAIN_TIMEOUT:?}; stopping anyway"),
        }
    }

    async fn dispatch(&self, request: Request<Incoming>) -> Response<Full<Bytes>> {
        let started = Instant::now();
        let request_id = uuid::Uuid::new_v4().to_string();
        let unsigned = !request.headers().contains_key(http::header::AUTHORIZATION)
            && !request.uri().query().is_some_and(|q| q.contains("X-Amz-Credential"));
        let (service, operation, mut response) = match (request.method(), request.uri().path()) {
            (&Method::GET, "/_stratus/health") => ("stratus", "health", self.health()),
            (&Method::GET, "/_stratus/state") => ("stratus", "state", self.state().await),
            (&Method::POST, "/_stratus/reset") => ("stratus", "reset", self.reset().await),
            (&Method::GET, "/_stratus/sqs") => ("stratus", "sqs", json(StatusCode::OK, &self.aws.sqs_inspection())),
            (_, path) if path.starts_with("/_stratus/sns") => ("stratus", "sns", self.sns(&request).await),
            (&Method::GET, "/_stratus/dynamodb") => {
                ("stratus", "dynamodb", json(StatusCode::OK, &self.aws.dynamodb_tables()))
            }
            (&Method::GET, path) if path.starts_with("/_stratus/dynamodb/tables/") => {
                ("stratus", "dynamodb", self.dynamodb_partitions(&request))
            }
            (&Method::GET, path) if path.starts_with("/_stratus/containers/") => {
                ("stratus", "containers", isolation::view(&self.containers, path))
            }
            // Unsigned only: a signed GET /metrics is S3's ListObjects on a bucket named "metrics".
            (&Method::GET, "/metrics") if unsigned => ("stratus", "metrics", self.prometheus()),
            (&Method::GET, "/_stratus/metrics") => ("stratus", "metrics", self.prometheus()),
            (_, path) if path.starts_with("/_stratus/") => {
                let message = format!("no Stratus endpoint {} {path}", request.method());
                ("stratus", "unknown", json(StatusCode::NOT_FOUND, &serde_json::json!({ "error": message })))
            }
            _ => {
                let outcome = self.aws(&request_id, request).await;
                (outcome.service, outcome.operation, outcome.response)
            }
        };
        if let Ok(id) = HeaderValue::from_str(&request_id) {
            response.headers_mut().entry("x-amzn-requestid").or_insert(id);
        }
        let status = response.status().as_u16();
        let elapsed = started.elapsed();
        self.metrics.record(service, operation, status, elapsed.as_secs_f64());
        tracing::debug!(request_id, service, operation, status, elapsed_us = elapsed.as_micros() as u64, "request");
        response.map(Full::new)
    }

    /// `/_stratus/sns` (topics, subscriptions, recent deliveries; `?topic=<arn>`),
    /// `/_stratus/sns/outbox` (GET with `protocol`, `endpoint`, `topic`, `account` filters;
    /// DELETE empties it) and the signing certificate at SigningCertURL.
    async fn sns(&self, request: &Request<Incoming>) -> Response<Bytes> {
        let query: Vec<(String, String)> = request
            .uri()
            .query()
            .map(|q| form_urlencoded::parse(q.as_bytes()).into_owned().collect())
            .unwrap_or_default();
        let param = |name: &str| query.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone());
        let sns = self.aws.sns();
        let failed = |error: sns::SnsError| {
            tracing::error!(error = &error as &dyn std::error::Error, "SNS inspection failed");
            json(StatusCode::INTERNAL_SERVER_ERROR, &serde_json::json!({ "error": error.to_string() }))
        };
        match (request.method(), request.uri().path()) {
            (&Method::GET, "/_stratus/sns") => json(StatusCode::OK, &sns.inspect(param("topic").as_deref())),
            (&Method::GET, "/_stratus/sns/outbox") => {
                let filter = sns::OutboxFilter {
                    protocol: param("protocol"),
                    endpoint: param("endpoint"),
                    topic_arn: param("topic"),
                    account: param("account"),
                };
                match sns.outbox(&filter).await {
                    Ok(messages) => json(StatusCode::OK, &serde_json::json!({ "messages": messages })),
                    Err(error) => failed(error),
                }
            }
            (&Method::DELETE, "/_stratus/sns/outbox") => match sns.clear_outbox().await {
                Ok(()) => json(StatusCode::OK, &serde_json::json!({ "cleared": true })),
                Err(error) => failed(error),
            },
            (&Method::GET, "/_stratus/sns/SimpleNotificationService.pem") => match sns.signing_certificate().await {
                Ok(pem) => {
                    let mut response = Response::new(Bytes::from(pem));
                    let pem_type = HeaderValue::from_static("application/x-pem-file");
                    response.headers_mut().insert(http::header::CONTENT_TYPE, pem_type);
                    response
                }
                Err(error) => failed(error),
            },
            (method, path) => {
                let message = format!("no Stratus endpoint {method} {path}");
                json(StatusCode::NOT_FOUND, &serde_json::json!({ "error": message }))
            }
        }
    }

    /// `/_stratus/dynamodb/tables/<name>/partitions[?account=&region=]`: the table's partition map.
    fn dynamodb_partitions(&self, request: &Request<Incoming>) -> Response<Bytes> {
        let query: Vec<(String, String)> = request
            .uri()
            .query()
            .map(|q| form_urlencoded::parse(q.as_bytes()).into_owned().collect())
            .unwrap_or_default();
        let param = |name: &str| query.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str());
        let path = request.uri().path();
        let name = path.strip_prefix("/_stratus/dynamodb/tables/").and_then(|rest| rest.strip_suffix("/partitions"));
        match name.and_then(|n| self.aws.dynamodb_partitions(param("account"), param("region"), n)) {
            Some(map) => json(StatusCode::OK, &map),
            None => json(StatusCode::NOT_FOUND, &serde_json::json!({ "error": format!("no table at {path}") })),
        }
    }

    async fn aws(&self, request_id: &str, request: Request<Incoming>) -> aws_protocol::Outcome {
        let (parts, body) = request.into_parts();
        let rejected = |status, code, message: String| {
            let error = AwsError::new(status, code, message);
            aws_protocol::Outcome {
                response: self.aws.reject(&parts, request_id, &error),
                service: "unknown",
                operation: "rejected",
            }
        };
        let body = match tokio::time::timeout(BODY_TIMEOUT, Limited::new(body, MAX_BODY).collect()).await {
            Ok(Ok(collected)) => collected.to_bytes(),
            Ok(Err(error)) if error.is::<LengthLimitError>() => {
                let message = format!("The request body is larger than the {} MiB Stratus accepts", MAX_BODY >> 20);
                return rejected(StatusCode::PAYLOAD_TOO_LARGE, "RequestEntityTooLarge", message);
            }
            Ok(Err(error)) => {
                return rejected(
                    StatusCode::BAD_REQUEST,
                    "IncompleteBody",
                    format!("The request body could not be read: {error}"),
                );
            }
            Err(_) => {
                let message = format!("The request body did not arrive within {} seconds", BODY_TIMEOUT.as_secs());
                return rejected(StatusCode::REQUEST_TIMEOUT, "RequestTimeout", message);
            }
        };
        self.aws.handle(request_id, Request::from_parts(parts, body)).await
    }

    fn health(&self) -> Response<Bytes> {
        let services: serde_json::Map<_, _> = AWS_SERVICES.iter().map(|s| (s.to_string(), "running".into())).collect();
        json(
            StatusCode::OK,
            &serde_json::json!({
                "status": "running",
                "version": env!("CARGO_PKG_VERSION"),
                "uptime_seconds": self.started.elapsed().as_secs_f64(),
                "store": { "backend": self.store.backend(), "revision": self.store.revision() },
                "services": services,
            }),
        )
    }

    async fn state(&self) -> Response<Bytes> {
        let keys = match self.store.count(b"", b"").await {
            Ok(keys) => keys,
            Err(error) => return store_failed(&error),
        };
        let services: serde_json::Map<_, _> = self
            .aws
            .summary()
            .into_iter()
            .map(|(service, counts)| {
                let counts: serde_json::Map<_, _> =
                    counts.into_iter().map(|(k, v)| (k.to_string(), v.into())).collect();
                (service.to_string(), serde_json::Value::Object(counts))
            })
            .collect();
        json(
            StatusCode::OK,
            &serde_json::json!({
                "store": { "backend": self.store.backend(), "revision": self.store.revision(), "keys": keys },
                "services": services,
            }),
        )
    }

    async fn reset(&self) -> Response<Bytes> {
        let everything = Op::DeleteRange { start: Vec::new(), end: Vec::new() };
        match self.store.txn(Txn::ops(vec![everything])).await {
            Ok(done) => {
                self.aws.reset();
                json(StatusCode::OK, &serde_json::json!({ "reset": true, "revision": done.revision }))
            }
            Err(error) => store_failed(&error),
        }
    }

    fn prometheus(&self) -> Response<Bytes> {
        let mut response = Response::new(Bytes::from(self.metrics.encode()));
        response.headers_mut().insert(
            http::header::CONTENT_TYPE,
            HeaderValue::from_static("application/openmetrics-text; version=1.0.0; charset=utf-8"),
        );
        response
    }
}

fn json(status: StatusCode, value: &serde_json::Value) -> Response<Bytes> {
    let mut response = Response::new(Bytes::from(value.to_string()));
    *response.status_mut() = status;
    response.headers_mut().insert(http::header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

fn store_failed(error: &store::StoreError) -> Response<Bytes> {
    tracing::error!(error = error as &dyn std::error::Error, "store request failed");
    json(StatusCode::INTERNAL_SERVER_ERROR, &serde_json::json!({ "error": error.to_string() }))
}
