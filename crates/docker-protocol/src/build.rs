//! `POST /build` (the classic builder): the query says what to build, the body is the context
//! tar, and the answer is a stream of JSON lines (`{"stream": ...}`, `{"aux": {"ID": ...}}`,
//! `{"errorDetail": ..., "error": ...}`). As in dockerd, an error before the first line is an
//! HTTP error; after it, it is the last line of a 200.

use std::collections::BTreeMap;
use std::sync::Arc;

use bytes::Bytes;
use containers::{BuildEvent, BuildRequest, Engine, Error};
use http::{HeaderValue, Request, Response, header};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use serde_json::{Value, json};
use tokio::sync::mpsc;

use crate::{ChannelBody, Query, ResponseBody};

/// The largest context accepted (it is held in memory while it is unpacked).
const MAX_CONTEXT: usize = 1 << 30;

pub(crate) async fn build(
    engine: Arc<Engine>,
    query: &Query,
    request: Request<Incoming>,
) -> Result<Response<ResponseBody>, Error> {
    let build_request = decode(query)?;
    let context = match Limited::new(request.into_body(), MAX_CONTEXT).collect().await {
        Ok(collected) => collected.to_bytes().to_vec(),
        Err(error) => return Err(Error::InvalidParameter(format!("cannot read the build context: {error}"))),
    };
    let (events, mut received) = mpsc::unbounded_channel();
    let task = tokio::spawn(async move { engine.build(build_request, context, events).await });
    // Nothing reported yet means the build ended before its first step: answer its error as
    // the response's status.
    let Some(first) = received.recv().await else {
        return match task.await {
            Ok(Ok(id)) => Err(Error::Runtime(format!("the build of {id} reported nothing"))),
            Ok(Err(error)) => Err(error),
            Err(error) => Err(Error::Runtime(format!("the build task failed: {error}"))),
        };
    };
    let (lines, body) = mpsc::channel::<Bytes>(64);
    tokio::spawn(async move {
        let mut next = Some(first);
        while let Some(event) = next {
            if lines.send(line(&event_json(&event))).await.is_err() {
                tracing::debug!("the build's client went away");
            }
            next = received.recv().await;
        }
        let failure = match task.await {
            Ok(Ok(_)) => None,
            Ok(Err(error)) => Some(error_json(&error)),
            Err(error) => Some(error_json(&Error::Runtime(format!("the build task failed: {error}")))),
        };
        if let Some(failure) = failure {
            let _ = lines.send(line(&failure)).await;
        }
    });
    let mut response = Response::new(ChannelBody(body).boxed());
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    Ok(response)
}

fn decode(query: &Query) -> Result<BuildRequest, Error> {
    if query.get("remote").is_some_and(|r| !r.is_empty()) {
        return Err(Error::Unsupported("building from a remote context (a Git or HTTP URL)"));
    }
    if query.get("version") == Some("2") {
        return Err(Error::Unsupported("BuildKit (builder version 2); use the classic builder"));
    }
    let json_map = |name: &str| -> Result<BTreeMap<String, Option<String>>, Error> {
        match query.get(name).filter(|text| !text.is_empty()) {
            None => Ok(BTreeMap::new()),
            Some(text) => serde_json::from_str(text).map_err(|error| {
                Error::InvalidParameter(format!("invalid {name} (a JSON object of strings): {error}"))
            }),
        }
    };
    let labels = json_map("labels")?.into_iter().map(|(k, v)| (k, v.unwrap_or_default())).collect();
    Ok(BuildRequest {
        dockerfile: query.get("dockerfile").filter(|d| !d.is_empty()).unwrap_or("Dockerfile").to_string(),
        tags: query.all("t").into_iter().filter(|t| !t.is_empty()).map(str::to_string).collect(),
        build_args: json_map("buildargs")?,
        no_cache: query.flag("nocache"),
        target: query.get("target").filter(|t| !t.is_empty()).map(str::to_string),
        labels,
        quiet: query.flag("q"),
    })
}

fn event_json(event: &BuildEvent) -> Value {
    match event {
        BuildEvent::Output(text) => json!({ "stream": text }),
        BuildEvent::Built(id) => json!({ "aux": { "ID": id } }),
    }
}

/// Docker's error line; a failed RUN carries its exit code.
fn error_json(error: &Error) -> Value {
    let message = crate::error_chain(error);
    match error {
        Error::CommandFailed { code, .. } => {
            json!({ "errorDetail": { "code": code, "message": message }, "error": message })
        }
        _ => json!({ "errorDetail": { "message": message }, "error": message }),
    }
}

fn line(value: &Value) -> Bytes {
    Bytes::from(format!("{value}\r\n"))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn queries_decode_into_build_requests() {
        let query = Query::parse(Some(
            "dockerfile=sub%2FDockerfile&t=a&t=b%3Av1&buildargs=%7B%22X%22%3A%221%22%2C%22Y%22%3Anull%7D&nocache=1&target=build&labels=%7B%22k%22%3A%22v%22%7D&q=1",
        ));
        let request = decode(&query).unwrap();
        assert_eq!(request.dockerfile, "sub/Dockerfile");
        assert_eq!(request.tags, vec!["a", "b:v1"]);
        assert_eq!(request.build_args.get("X"), Some(&Some("1".to_string())));
        assert_eq!(request.build_args.get("Y"), Some(&None));
        assert!(request.no_cache && request.quiet);
        assert_eq!(request.target.as_deref(), Some("build"));
        assert_eq!(request.labels.get("k").map(String::as_str), Some("v"));
        assert!(decode(&Query::parse(Some("buildargs=notjson"))).is_err());
        assert!(matches!(decode(&Query::parse(Some("remote=https://x"))), Err(Error::Unsupported(_))));
    }

    #[test]
    fn lines_are_dockers() {
        assert_eq!(
            event_json(&BuildEvent::Output("Step 1/2 : FROM busybox\n".into())).to_string(),
            r#"{"stream":"Step 1/2 : FROM busybox\n"}"#
        );
        assert_eq!(event_json(&BuildEvent::Built("sha256:ab".into())).to_string(), r#"{"aux":{"ID":"sha256:ab"}}"#);
        let failed = error_json(&Error::CommandFailed { command: "/bin/sh -c exit 3".into(), code: 3 });
        assert_eq!(failed["errorDetail"]["code"], 3);
        assert_eq!(failed["error"], "The command '/bin/sh -c exit 3' returned a non-zero code: 3");
    }
}
