//! `docker exec`: create (`POST /containers/{id}/exec`), start (`POST /exec/{id}/start`,
//! hijacked with HTTP 101 like attach), inspect (`GET /exec/{id}/json`) and resize.

use std::sync::Arc;

use containers::{Engine, Error, Exec, ExecRequest};
use http::{Request, Response, StatusCode, header};
use hyper::body::Incoming;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::hijack::{self, Session};
use crate::{Query, ResponseBody, empty, read_body};

#[derive(Deserialize, Default)]
#[serde(rename_all = "PascalCase", default)]
struct CreateBody {
    cmd: Option<Vec<String>>,
    env: Option<Vec<String>>,
    user: Option<String>,
    working_dir: Option<String>,
    tty: bool,
    attach_stdin: bool,
    attach_stdout: bool,
    attach_stderr: bool,
    privileged: bool,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "PascalCase", default)]
struct StartBody {
    detach: bool,
    console_size: Option<[u16; 2]>,
}

pub fn create_request(body: &[u8]) -> Result<ExecRequest, Error> {
    let body: CreateBody =
        serde_json::from_slice(body).map_err(|e| Error::InvalidParameter(format!("invalid exec config: {e}")))?;
    if body.privileged {
        return Err(Error::Unsupported("privileged exec (docker exec --privileged)"));
    }
    Ok(ExecRequest {
        cmd: body.cmd.unwrap_or_default(),
        env: body.env.unwrap_or_default(),
        user: body.user.unwrap_or_default(),
        working_dir: body.working_dir.unwrap_or_default(),
        tty: body.tty,
        attach_stdin: body.attach_stdin,
        attach_stdout: body.attach_stdout,
        attach_stderr: body.attach_stderr,
    })
}

pub fn inspect(exec: &Exec) -> Value {
    let (entrypoint, arguments) = exec.request.cmd.split_first().map(|(e, a)| (e.as_str(), a)).unwrap_or_default();
    json!({
        "ID": exec.id,
        "Running": exec.running,
        "ExitCode": exec.exit_code,
        "ProcessConfig": {
            "tty": exec.request.tty,
            "entrypoint": entrypoint,
            "arguments": arguments,
            "privileged": false,
            "user": exec.request.user,
        },
        "OpenStdin": exec.request.attach_stdin,
        "OpenStderr": exec.request.attach_stderr,
        "OpenStdout": exec.request.attach_stdout,
        "CanRemove": false,
        "ContainerID": exec.container_id,
        "DetachKeys": "",
        "Pid": exec.pid,
    })
}

/// Starts the exec. Detached, it answers 200 once the process runs. Otherwise the connection is
/// hijacked first and, as dockerd does, a failure to start (an executable that does not exist)
/// is written into the stream, the exit code (126 or 127) going to exec inspect.
pub async fn start(
    engine: &Arc<Engine>,
    id: &str,
    mut request: Request<Incoming>,
) -> Result<Response<ResponseBody>, Error> {
    let exec = engine.exec_inspect(id)?;
    let upgrade = request.headers().contains_key(header::UPGRADE);
    let on_upgrade = hyper::upgrade::on(&mut request);
    let body = read_body(request).await?;
    let start: StartBody = if body.is_empty() {
        StartBody::default()
    } else {
        serde_json::from_slice(&body).map_err(|e| Error::InvalidParameter(format!("invalid exec start config: {e}")))?
    };
    let size = start.console_size.map(|[rows, columns]| (rows, columns));
    if start.detach {
        engine.exec_start(id, true, size).await?;
        return Ok(empty(StatusCode::OK));
    }
    if !upgrade {
        return Err(Error::InvalidParameter("exec start needs a connection upgrade (Upgrade: tcp)".into()));
    }
    let (engine, id) = (engine.clone(), id.to_string());
    Ok(hijack::respond(on_upgrade, exec.request.tty, async move {
        match engine.exec_start(&id, false, size).await {
            Ok(io) => Session { output: io.output, input: io.input },
            Err(error) => Session::error(error.to_string()),
        }
    }))
}

/// `?h=rows&w=columns`.
pub fn size(query: &Query) -> Result<(u16, u16), Error> {
    let dimension = |key: &str| {
        query
            .get(key)
            .and_then(|v| v.parse::<u16>().ok())
            .ok_or_else(|| Error::InvalidParameter(format!("invalid terminal size: {key}")))
    };
    Ok((dimension("h")?, dimension("w")?))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn exec_configs_decode_like_the_cli_sends_them() {
        let body = br#"{"User":"nobody","Privileged":false,"Tty":true,"ConsoleSize":[24,80],"AttachStdin":true,
            "AttachStderr":true,"AttachStdout":true,"Detach":false,"DetachKeys":"","Env":["A=1"],
            "WorkingDir":"/tmp","Cmd":["sh","-c","tty"]}"#;
        let request = create_request(body).unwrap();
        assert_eq!(request.cmd, ["sh", "-c", "tty"]);
        assert_eq!((request.user.as_str(), request.working_dir.as_str()), ("nobody", "/tmp"));
        assert!(request.tty && request.attach_stdin && request.attach_stdout && request.attach_stderr);
        assert!(matches!(create_request(b"{"), Err(Error::InvalidParameter(_))));
        assert!(matches!(create_request(br#"{"Cmd":["id"],"Privileged":true}"#), Err(Error::Unsupported(_))));
        let query = Query::parse(Some("h=40&w=120"));
        assert_eq!(size(&query).unwrap(), (40, 120));
        assert!(size(&Query::parse(Some("h=-1&w=2"))).is_err());
    }
}
