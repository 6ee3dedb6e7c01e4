//! The networks API (`/networks/...`) and the network parts of container create, inspect and
//! list, in Docker's JSON shapes.

use std::collections::BTreeMap;
use std::net::IpAddr;

use containers::network::{
    Attachment, BoundPort, CreateNetwork, Endpoint, Mode, Network, NetworkRequest, Port, PortBinding, format_mac,
};
use containers::{Container, Engine, Error, Status};
use http::{Method, Request, StatusCode};
use hyper::body::Incoming;
use serde::Deserialize;
use serde_json::{Map, Value, json};

use crate::{ApiError, Query, ResponseBody, empty, json_response, ok_json, read_body};

/// `HostConfig.PortBindings`' values.
#[derive(Deserialize, Default)]
#[serde(rename_all = "PascalCase", default)]
pub struct PortBindingBody {
    host_ip: Option<String>,
    host_port: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "PascalCase", default)]
pub struct NetworkingConfigBody {
    endpoints_config: Option<BTreeMap<String, Option<EndpointConfigBody>>>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "PascalCase", default)]
struct EndpointConfigBody {
    aliases: Option<Vec<String>>,
    #[serde(rename = "IPAMConfig")]
    ipam_config: Option<EndpointIpamBody>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct EndpointIpamBody {
    #[serde(rename = "IPv4Address")]
    ipv4_address: Option<String>,
}

impl EndpointConfigBody {
    fn ipv4(&self) -> Option<String> {
        self.ipam_config.as_ref().and_then(|c| c.ipv4_address.clone())
    }
}

/// What a container create body says of the network.
pub struct CreateNetworkParts {
    pub network_mode: Option<String>,
    pub port_bindings: Option<BTreeMap<String, Option<Vec<PortBindingBody>>>>,
    pub publish_all_ports: Option<bool>,
    pub exposed_ports: Option<BTreeMap<String, Value>>,
    pub networking_config: Option<NetworkingConfigBody>,
}

pub fn network_request(parts: CreateNetworkParts) -> Result<NetworkRequest, Error> {
    let mode = parts.network_mode.unwrap_or_default();
    let mut ports = Vec::new();
    for (port, bindings) in parts.port_bindings.unwrap_or_default() {
        let port = Port::parse(&port)?;
        for binding in bindings.unwrap_or_default() {
            ports.push(port_binding(port, &binding)?);
        }
    }
    let exposed = parts.exposed_ports.unwrap_or_default().keys().map(|p| Port::parse(p)).collect::<Result<_, _>>()?;
    let endpoints = parts.networking_config.and_then(|n| n.endpoints_config).unwrap_or_default();
    // The CLI names the default network `default`, as NetworkMode; other clients may say `bridge`.
    let default = matches!(mode.as_str(), "" | "default");
    let endpoint =
        endpoints.get(&mode).or_else(|| endpoints.get("bridge").filter(|_| default)).and_then(|e| e.as_ref());
    Ok(NetworkRequest {
        aliases: endpoint.and_then(|e| e.aliases.clone()).unwrap_or_default(),
        ipv4: endpoint.and_then(EndpointConfigBody::ipv4),
        mode,
        ports,
        publish_all: parts.publish_all_ports.unwrap_or(false),
        exposed,
    })
}

fn port_binding(port: Port, binding: &PortBindingBody) -> Result<PortBinding, Error> {
    let host_ip = match binding.host_ip.as_deref().unwrap_or_default() {
        "" => None,
        text => {
            Some(text.parse::<IpAddr>().map_err(|_| Error::InvalidParameter(format!("invalid IP address: {text}")))?)
        }
    };
    let text = binding.host_port.as_deref().unwrap_or_default();
    let invalid = || Error::InvalidParameter(format!("invalid port specification: \"{text}\""));
    let number = |n: &str| n.parse::<u16>().map_err(|_| invalid());
    let (host_port, host_port_end) = match text.split_once('-') {
        _ if text.is_empty() => (0, None),
        None => (number(text)?, None),
        Some((first, last)) => {
            let (first, last) = (number(first)?, number(last)?);
            if first == 0 || last < first {
                return Err(invalid());
            }
            (first, Some(last))
        }
    };
    Ok(PortBinding { port, host_ip, host_port, host_port_end })
}

/// `NetworkSettings` of container inspect.
pub fn network_settings(container: &Container, engine: &Engine) -> Value {
    let running = container.state.status == Status::Running;
    let (endpoints, bound) = engine.networks().container_endpoints(&container.id);
    let mut networks = Map::new();
    for (name, endpoint, attachment) in attached(container, engine, &endpoints) {
        networks.insert(name, endpoint_settings(endpoint, attachment));
    }
    let default = endpoints
        .iter()
        .find(|e| engine.networks().find(&e.network_id).is_ok_and(|n| n.predefined && n.name == "bridge"));
    let mut ports = Map::new();
    if running && container.network.mode == Mode::Bridge {
        for port in &container.network.exposed {
            ports.insert(port.to_string(), Value::Null);
        }
        for bound in &bound {
            let entry = ports.entry(bound.port.to_string()).or_insert_with(|| json!([]));
            if !entry.is_array() {
                *entry = json!([]);
            }
            if let Some(list) = entry.as_array_mut() {
                list.push(json!({"HostIp": bound.host.ip().to_string(), "HostPort": bound.host.port().to_string()}));
            }
        }
    }
    json!({
        "Bridge": "",
        "SandboxID": if running { container.id.clone() } else { String::new() },
        "SandboxKey": if running { format!("/proc/{}/ns/net", container.state.pid) } else { String::new() },
        "HairpinMode": false,
        "LinkLocalIPv6Address": "",
        "LinkLocalIPv6PrefixLen": 0,
        "Ports": ports,
        "SecondaryIPAddresses": null,
        "SecondaryIPv6Addresses": null,
        "EndpointID": default.map(|e| e.id.clone()).unwrap_or_default(),
        "Gateway": default.map(|e| e.gateway.to_string()).unwrap_or_default(),
        "GlobalIPv6Address": "",
        "GlobalIPv6PrefixLen": 0,
        "IPAddress": default.map(|e| e.address.to_string()).unwrap_or_default(),
        "IPPrefixLen": default.map_or(0, |e| e.prefix),
        "IPv6Gateway": "",
        "MacAddress": default.map(|e| format_mac(&e.mac)).unwrap_or_default(),
        "Networks": networks,
    })
}

/// The container's networks by name, with what it asked of each and its endpoint there while it
/// runs.
fn attached<'a>(
    container: &'a Container,
    engine: &Engine,
    endpoints: &'a [Endpoint],
) -> Vec<(String, Option<&'a Endpoint>, Option<&'a Attachment>)> {
    let name_of = |id: &str| engine.networks().find(id).map(|n| n.name).unwrap_or_else(|_| id.to_string());
    match container.network.mode {
        Mode::Host | Mode::None => vec![(container.network.mode_name.clone(), None, None)],
        Mode::Bridge => container
            .network
            .attachments
            .iter()
            .map(|a| {
                let endpoint = endpoints.iter().find(|e| e.network_id == a.network_id);
                (name_of(&a.network_id), endpoint, Some(a))
            })
            .collect(),
    }
}

fn endpoint_settings(endpoint: Option<&Endpoint>, attachment: Option<&Attachment>) -> Value {
    let aliases = attachment.map(|a| a.aliases.as_slice()).unwrap_or_default();
    let ipv4 = attachment.and_then(|a| a.ipv4);
    json!({
        "IPAMConfig": ipv4.map(|a| json!({"IPv4Address": a.to_string()})),
        "Links": null,
        "Aliases": if aliases.is_empty() { Value::Null } else { json!(aliases) },
        "MacAddress": endpoint.map(|e| format_mac(&e.mac)).unwrap_or_default(),
        "DriverOpts": null,
        "NetworkID": endpoint.map(|e| e.network_id.clone()).unwrap_or_default(),
        "EndpointID": endpoint.map(|e| e.id.clone()).unwrap_or_default(),
        "Gateway": endpoint.map(|e| e.gateway.to_string()).unwrap_or_default(),
        "IPAddress": endpoint.map(|e| e.address.to_string()).unwrap_or_default(),
        "IPPrefixLen": endpoint.map_or(0, |e| e.prefix),
        "IPv6Gateway": "",
        "GlobalIPv6Address": "",
        "GlobalIPv6PrefixLen": 0,
        "DNSNames": endpoint.map(|e| json!(e.dns_names)).unwrap_or(Value::Null),
    })
}

/// `Ports`, `HostConfig` and `NetworkSettings` of a container list entry.
pub fn summary_parts(container: &Container, engine: &Engine) -> (Value, Value, Value) {
    let (endpoints, bound) = engine.networks().container_endpoints(&container.id);
    let mut ports: Vec<Value> = bound.iter().map(summary_port).collect();
    if container.state.status == Status::Running {
        let published: Vec<Port> = bound.iter().map(|b| b.port).collect();
        for port in container.network.exposed.iter().filter(|p| !published.contains(p)) {
            ports.push(json!({"PrivatePort": port.number, "Type": protocol(port)}));
        }
    }
    let mut networks = Map::new();
    for (name, endpoint, attachment) in attached(container, engine, &endpoints) {
        networks.insert(name, endpoint_settings(endpoint, attachment));
    }
    (Value::Array(ports), json!({"NetworkMode": container.network.mode_name}), json!({"Networks": networks}))
}

fn protocol(port: &Port) -> &'static str {
    match port.protocol {
        containers::network::Protocol::Tcp => "tcp",
        containers::network::Protocol::Udp => "udp",
    }
}

fn summary_port(bound: &BoundPort) -> Value {
    json!({
        "IP": bound.host.ip().to_string(),
        "PrivatePort": bound.port.number,
        "PublicPort": bound.host.port(),
        "Type": protocol(&bound.port),
    })
}

/// A network as inspect and list show it.
pub fn network_json(network: &Network, engine: &Engine) -> Value {
    let mut containers = Map::new();
    for endpoint in engine.networks().endpoints_on(&network.id) {
        containers.insert(
            endpoint.container_id.clone(),
            json!({
                "Name": endpoint.container_name,
                "EndpointID": endpoint.id,
                "MacAddress": format_mac(&endpoint.mac),
                "IPv4Address": format!("{}/{}", endpoint.address, endpoint.prefix),
                "IPv6Address": "",
            }),
        );
    }
    let config: Vec<Value> = match (network.subnet, network.gateway) {
        (Some(subnet), Some(gateway)) => {
            let mut config = json!({"Subnet": subnet.to_string(), "Gateway": gateway.to_string()});
            if let Some(range) = network.ip_range {
                config["IPRange"] = json!(range.to_string());
            }
            vec![config]
        }
        _ => Vec::new(),
    };
    let mut options: BTreeMap<String, String> = network.options.clone();
    if network.driver == containers::network::Driver::Bridge {
        options.insert("com.docker.network.bridge.name".into(), network.bridge.clone());
    }
    json!({
        "Name": network.name,
        "Id": network.id,
        "Created": humantime::format_rfc3339_nanos(network.created).to_string(),
        "Scope": "local",
        "Driver": network.driver.as_str(),
        "EnableIPv4": true,
        "EnableIPv6": false,
        "IPAM": {"Driver": "default", "Options": null, "Config": config},
        "Internal": network.internal,
        "Attachable": network.attachable,
        "Ingress": false,
        "ConfigFrom": {"Network": ""},
        "ConfigOnly": false,
        "Containers": containers,
        "Options": options,
        "Labels": network.labels,
    })
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "PascalCase", default)]
struct CreateBody {
    name: Option<String>,
    driver: Option<String>,
    internal: Option<bool>,
    attachable: Option<bool>,
    #[serde(rename = "EnableIPv6")]
    enable_ipv6: Option<bool>,
    #[serde(rename = "IPAM")]
    ipam: Option<IpamBody>,
    options: Option<BTreeMap<String, String>>,
    labels: Option<BTreeMap<String, String>>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "PascalCase", default)]
struct IpamBody {
    config: Option<Vec<IpamConfigBody>>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "PascalCase", default)]
struct IpamConfigBody {
    subnet: Option<String>,
    gateway: Option<String>,
    #[serde(rename = "IPRange")]
    ip_range: Option<String>,
}

fn create_network(body: &[u8]) -> Result<CreateNetwork, Error> {
    let body: CreateBody =
        serde_json::from_slice(body).map_err(|e| Error::InvalidParameter(format!("invalid network config: {e}")))?;
    if body.enable_ipv6 == Some(true) {
        return Err(Error::Unsupported("IPv6 networks"));
    }
    let configs = body.ipam.and_then(|i| i.config).unwrap_or_default();
    if configs.len() > 1 {
        return Err(Error::Unsupported("more than one subnet per network"));
    }
    let config = configs.into_iter().next().unwrap_or_default();
    Ok(CreateNetwork {
        name: body.name.unwrap_or_default(),
        driver: body.driver.unwrap_or_default(),
        subnet: config.subnet,
        gateway: config.gateway,
        ip_range: config.ip_range,
        internal: body.internal.unwrap_or(false),
        attachable: body.attachable.unwrap_or(false),
        labels: body.labels.unwrap_or_default(),
        options: body.options.unwrap_or_default(),
    })
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "PascalCase", default)]
struct ConnectBody {
    container: Option<String>,
    endpoint_config: Option<EndpointConfigBody>,
}

/// `docker network ls --filter`: name (substring), id (prefix), driver, type, label.
fn matches(network: &Network, filters: &BTreeMap<String, Vec<String>>) -> bool {
    filters.iter().all(|(key, values)| {
        values.iter().any(|value| match key.as_str() {
            "name" => network.name.contains(value.as_str()),
            "id" => network.id.starts_with(value.as_str()),
            "driver" => network.driver.as_str() == value,
            "type" => (value == "builtin") == network.predefined,
            "label" => match value.split_once('=') {
                Some((k, v)) => network.labels.get(k).is_some_and(|l| l == v),
                None => network.labels.contains_key(value),
            },
            _ => false,
        })
    })
}

fn parse_filters(text: Option<&str>) -> Result<BTreeMap<String, Vec<String>>, Error> {
    let Some(text) = text.filter(|t| !t.is_empty()) else { return Ok(BTreeMap::new()) };
    let value: Value =
        serde_json::from_str(text).map_err(|e| Error::InvalidParameter(format!("invalid filters: {e}")))?;
    let mut filters = BTreeMap::new();
    for (key, values) in value.as_object().into_iter().flatten() {
        if !matches!(key.as_str(), "name" | "id" | "driver" | "type" | "label") {
            return Err(Error::InvalidParameter(format!("invalid filter '{key}'")));
        }
        // Docker takes both ["a"] and {"a": true}.
        let values: Vec<String> = match values {
            Value::Array(items) => items.iter().filter_map(|v| v.as_str().map(str::to_string)).collect(),
            Value::Object(map) => map.keys().cloned().collect(),
            _ => return Err(Error::InvalidParameter(format!("invalid filter '{key}'"))),
        };
        filters.insert(key.clone(), values);
    }
    Ok(filters)
}

/// `/networks/...`, with `segments` after `networks`.
pub async fn route(
    engine: &Engine,
    method: &Method,
    segments: &[&str],
    query: &Query,
    request: Request<Incoming>,
) -> Result<http::Response<ResponseBody>, ApiError> {
    match (method, segments) {
        (&Method::GET, [] | [""]) => {
            let filters = parse_filters(query.get("filters"))?;
            let networks = engine.networks().list();
            let listed = networks.iter().filter(|n| matches(n, &filters)).map(|n| network_json(n, engine)).collect();
            Ok(ok_json(Value::Array(listed)))
        }
        (&Method::POST, ["create"]) => {
            let create = create_network(&read_body(request).await?)?;
            let network = engine.networks().create(create).await?;
            Ok(json_response(StatusCode::CREATED, json!({"Id": network.id, "Warning": ""})))
        }
        (&Method::POST, ["prune"]) => {
            let removed = engine.prune_networks().await?;
            Ok(ok_json(json!({"NetworksDeleted": removed})))
        }
        (&Method::GET, [name]) => Ok(ok_json(network_json(&engine.networks().find(name)?, engine))),
        (&Method::DELETE, [name]) => {
            engine.networks().remove(name).await?;
            Ok(empty(StatusCode::NO_CONTENT))
        }
        (&Method::POST, [name, "connect"]) => {
            let body: ConnectBody = serde_json::from_slice(&read_body(request).await?)
                .map_err(|e| Error::InvalidParameter(format!("invalid connect request: {e}")))?;
            let endpoint = body.endpoint_config.unwrap_or_default();
            let ipv4 = endpoint.ipv4();
            let aliases = endpoint.aliases.unwrap_or_default();
            let container = body.container.as_deref().unwrap_or_default();
            engine.connect_network(name, container, aliases, ipv4.as_deref()).await?;
            Ok(empty(StatusCode::OK))
        }
        (&Method::POST, [name, "disconnect"]) => {
            let body: ConnectBody = serde_json::from_slice(&read_body(request).await?)
                .map_err(|e| Error::InvalidParameter(format!("invalid disconnect request: {e}")))?;
            engine.disconnect_network(name, body.container.as_deref().unwrap_or_default()).await?;
            Ok(empty(StatusCode::OK))
        }
        _ => Err(ApiError::NotServed(format!(
            "Stratus does not serve {method} /networks/{} of the Docker Engine API yet",
            segments.join("/")
        ))),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn port_bindings_and_aliases_decode() {
        let parts = CreateNetworkParts {
            network_mode: Some("web".into()),
            port_bindings: Some(
                serde_json::from_str(
                    r#"{"80/tcp":[{"HostIp":"","HostPort":"8080"}],"53/udp":[{"HostIp":"127.0.0.1","HostPort":""}],"9/tcp":null}"#,
                )
                .unwrap(),
            ),
            publish_all_ports: Some(true),
            exposed_ports: Some(serde_json::from_str(r#"{"443/tcp":{}}"#).unwrap()),
            networking_config: Some(
                serde_json::from_str(r#"{"EndpointsConfig":{"web":{"Aliases":["db"],"IPAMConfig":{"IPv4Address":"10.1.0.9"}}}}"#)
                    .unwrap(),
            ),
        };
        let request = network_request(parts).unwrap();
        assert_eq!(request.mode, "web");
        assert_eq!(request.aliases, vec!["db"]);
        assert_eq!(request.ipv4.as_deref(), Some("10.1.0.9"));
        assert!(request.publish_all);
        assert_eq!(request.exposed, vec![Port::parse("443").unwrap()]);
        let ports: Vec<String> =
            request.ports.iter().map(|b| format!("{:?}:{}:{}", b.host_ip, b.host_port, b.port)).collect();
        assert_eq!(ports, vec!["Some(127.0.0.1):0:53/udp", "None:8080:80/tcp"]);
        let bad = |ip: &str, port: &str| {
            port_binding(
                Port::parse("80").unwrap(),
                &PortBindingBody { host_ip: Some(ip.into()), host_port: Some(port.into()) },
            )
            .is_err()
        };
        assert!(bad("nope", "80") && bad("", "8010-8000") && bad("", "0-5") && bad("", "80-x") && !bad("::", "80"));
        let range = port_binding(
            Port::parse("80").unwrap(),
            &PortBindingBody { host_ip: None, host_port: Some("8000-8010".into()) },
        )
        .unwrap();
        assert_eq!((range.host_port, range.host_port_end), (8000, Some(8010)));
    }

    #[test]
    fn network_bodies_and_filters_decode() {
        let create = create_network(
            br#"{"Name":"n","Driver":"bridge","IPAM":{"Driver":"default","Config":[{"Subnet":"10.5.0.0/24","IPRange":"10.5.0.128/25","Gateway":"10.5.0.254"}]},"Internal":true,"Labels":{"a":"b"}}"#,
        )
        .unwrap();
        assert_eq!((create.subnet.as_deref(), create.gateway.as_deref()), (Some("10.5.0.0/24"), Some("10.5.0.254")));
        assert_eq!(create.ip_range.as_deref(), Some("10.5.0.128/25"));
        assert!(create.internal && create.labels.contains_key("a"));
        assert!(create_network(br#"{"Name":"n","EnableIPv6":true}"#).is_err());
        assert!(parse_filters(Some(r#"{"bogus":["x"]}"#)).is_err());
        let filters = parse_filters(Some(r#"{"name":{"we":true},"type":["custom"]}"#)).unwrap();
        let network = Network {
            id: "abc".into(),
            name: "web".into(),
            driver: containers::network::Driver::Bridge,
            created: std::time::SystemTime::UNIX_EPOCH,
            subnet: None,
            gateway: None,
            subnet_configured: false,
            ip_range: None,
            bridge: "br-abc".into(),
            internal: false,
            attachable: false,
            labels: BTreeMap::new(),
            options: BTreeMap::new(),
            predefined: false,
        };
        assert!(matches(&network, &filters));
        assert!(!matches(&Network { predefined: true, ..network }, &filters));
    }
}
