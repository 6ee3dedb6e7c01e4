//! `/_stratus/containers/<id>/isolation`: what isolates a running container (its namespaces next
//! to Stratus's, its cgroups with limits and usage, its mounts, its veths and addresses), in JSON.

use bytes::Bytes;
use containers::isolation::Isolation;
use containers::network::format_mac;
use http::{Response, StatusCode};
use serde_json::{Value, json};

use crate::json;

pub fn view(engine: &containers::Engine, path: &str) -> Response<Bytes> {
    let id = path.strip_prefix("/_stratus/containers/").and_then(|rest| rest.strip_suffix("/isolation"));
    let Some(id) = id.filter(|id| !id.is_empty() && !id.contains('/')) else {
        return json(StatusCode::NOT_FOUND, &json!({"error": format!("no Stratus endpoint GET {path}")}));
    };
    match engine.isolation(id) {
        Ok(isolation) => json(StatusCode::OK, &render(&isolation)),
        Err(error @ containers::Error::NoSuchContainer(_)) => {
            json(StatusCode::NOT_FOUND, &json!({"error": error.to_string()}))
        }
        Err(error @ containers::Error::Conflict(_)) => json(StatusCode::CONFLICT, &json!({"error": error.to_string()})),
        Err(error) => json(StatusCode::INTERNAL_SERVER_ERROR, &json!({"error": error.to_string()})),
    }
}

fn render(isolation: &Isolation) -> Value {
    let namespaces: Vec<Value> = isolation
        .namespaces
        .iter()
        .map(|n| {
            json!({
                "type": n.kind,
                "container": n.container,
                "host": n.host,
                "shared_with_host": n.container.is_some() && n.container == n.host,
            })
        })
        .collect();
    let cgroups: Vec<Value> = isolation
        .cgroups
        .iter()
        .map(|c| {
            let values: serde_json::Map<String, Value> =
                c.values.iter().map(|(file, value)| (file.clone(), Value::String(value.clone()))).collect();
            json!({"controllers": if c.controllers.is_empty() { "unified" } else { &c.controllers }, "path": c.path, "files": values})
        })
        .collect();
    let mounts: Vec<Value> = isolation
        .mounts
        .iter()
        .map(|m| json!({"target": m.target, "type": m.fs_type, "source": m.source, "options": m.options}))
        .collect();
    let network: Vec<Value> = isolation
        .endpoints
        .iter()
        .map(|e| {
            json!({
                "interface": e.interface,
                "host_veth": e.host_veth,
                "bridge": e.bridge,
                "address": format!("{}/{}", e.address, e.prefix),
                "gateway": e.gateway.to_string(),
                "mac": format_mac(&e.mac),
            })
        })
        .collect();
    json!({
        "id": isolation.id,
        "pid": isolation.pid,
        "namespaces": namespaces,
        "cgroups": cgroups,
        "mounts": mounts,
        "network": network,
    })
}
