//! Container networking: Docker's networks (`bridge`, `host`, `none` and user-defined bridges),
//! and each running container's place on them.
//!
//! A bridge network is a Linux bridge holding the gateway address of its subnet. A container on
//! it gets, between its creation and its start, a veth pair: one end on the bridge, the other
//! moved into the container's network namespace as `eth0` (`eth1`... for more networks) with an
//! address from the subnet ([`ipam`], [`link`]). Outbound traffic is masqueraded ([`firewall`]);
//! published ports are relayed by listeners on the host ([`proxy`]); containers on user-defined
//! networks resolve each other by name and alias through the embedded DNS server at
//! 127.0.0.11 ([`dns`]).
//!
//! User-defined networks are records in the store (`containers/network/<id>`, postcard, and
//! `containers/network-name/<name>` → id); the predefined ones are made at open from the
//! options. Endpoints (a running container's addresses, veths, proxies, DNS server) live in
//! memory only: they end with the container, and every container ends with Stratus.

pub mod dns;
pub mod firewall;
pub mod ipam;
pub mod janitor;
pub mod link;
pub mod proxy;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, Weak};
use std::time::SystemTime;

pub use ipam::format_mac;
pub use ipnet::Ipv4Net;
use serde::{Deserialize, Serialize};
use store::{Compare, Keyspace, Op, Store, Txn};
use tokio::task::JoinHandle;

use crate::error::{Error, Result};
use firewall::{BridgeRules, Firewall};
use janitor::{Janitor, Note};

/// Docker's names for the predefined networks.
pub const BRIDGE: &str = "bridge";
pub const HOST: &str = "host";
pub const NONE: &str = "none";

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Driver {
    Bridge,
    Host,
    Null,
}

impl Driver {
    pub fn as_str(self) -> &'static str {
        match self {
            Driver::Bridge => "bridge",
            Driver::Host => "host",
            Driver::Null => "null",
        }
    }
}

/// A network. serde is for its store record only (postcard).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Network {
    /// 64 hex digits.
    pub id: String,
    pub name: String,
    pub driver: Driver,
    pub created: SystemTime,
    /// Bridge networks only.
    pub subnet: Option<Ipv4Net>,
    pub gateway: Option<Ipv4Addr>,
    /// `--subnet` was given: only then does Docker take `--ip` on the network.
    #[serde(default)]
    pub subnet_configured: bool,
    /// `--ip-range`: where endpoints without `--ip` get their addresses (else the whole subnet).
    #[serde(default)]
    pub ip_range: Option<Ipv4Net>,
    /// The Linux bridge's name (bridge networks only).
    pub bridge: String,
    pub internal: bool,
    pub attachable: bool,
    pub labels: BTreeMap<String, String>,
    pub options: BTreeMap<String, String>,
    /// `bridge`, `host` and `none`: made by Stratus, never stored, never removed.
    pub predefined: bool,
}

impl Network {
    /// Containers on it resolve each other by name (user-defined bridges, as in Docker).
    pub fn has_dns(&self) -> bool {
        self.driver == Driver::Bridge && !self.predefined
    }

    fn rules(&self) -> Option<BridgeRules> {
        Some(BridgeRules { bridge: self.bridge.clone(), subnet: self.subnet?, internal: self.internal })
    }
}

/// What `docker network create` asks for.
#[derive(Clone, Debug, Default)]
pub struct CreateNetwork {
    pub name: String,
    pub driver: String,
    pub subnet: Option<String>,
    pub gateway: Option<String>,
    pub ip_range: Option<String>,
    pub internal: bool,
    pub attachable: bool,
    pub labels: BTreeMap<String, String>,
    pub options: BTreeMap<String, String>,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Protocol {
    #[default]
    Tcp,
    Udp,
}

/// A container port: `80/tcp`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Port {
    pub number: u16,
    pub protocol: Protocol,
}

impl Port {
    /// Docker's `80`, `80/tcp`, `53/udp`.
    pub fn parse(text: &str) -> Result<Port> {
        let (number, protocol) = text.split_once('/').unwrap_or((text, "tcp"));
        let protocol = match protocol.to_ascii_lowercase().as_str() {
            "tcp" | "" => Protocol::Tcp,
            "udp" => Protocol::Udp,
            other => return Err(Error::InvalidParameter(format!("invalid proto: {other}"))),
        };
        let number = number
            .parse::<u16>()
            .ok()
            .filter(|n| *n > 0)
            .ok_or_else(|| Error::InvalidParameter(format!("invalid port: {text}")))?;
        Ok(Port { number, protocol })
    }
}

impl fmt::Display for Port {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let protocol = match self.protocol {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
        };
        write!(f, "{}/{protocol}", self.number)
    }
}

/// `-p [host_ip:][host_port[-end]:]port[/proto]`; host port 0 lets the kernel choose. (The CLI
/// sends `-p 8000-8001:80-81` as one binding per port.)
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortBinding {
    pub port: Port,
    pub host_ip: Option<IpAddr>,
    pub host_port: u16,
    /// The last port of a host port range: the first free port of the range is published.
    #[serde(default)]
    pub host_port_end: Option<u16>,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum Mode {
    /// On bridge networks: the default `bridge` or user-defined ones.
    #[default]
    Bridge,
    /// The host's network namespace.
    Host,
    /// A namespace of its own with only loopback.
    None,
}

/// A network a container joins when it starts.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attachment {
    pub network_id: String,
    pub aliases: Vec<String>,
    /// `--ip`: the address it always gets.
    #[serde(default)]
    pub ipv4: Option<Ipv4Addr>,
}

/// How a container is networked, settled at create. serde is for its store record only.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetworkConfig {
    pub mode: Mode,
    /// What `--network` said (`HostConfig.NetworkMode`), `bridge` by default.
    pub mode_name: String,
    /// Bridge mode: the networks to join, in order (the first one's gateway is the default route).
    pub attachments: Vec<Attachment>,
    pub ports: Vec<PortBinding>,
    /// `-P`: every exposed port on a port the kernel chooses.
    pub publish_all: bool,
    /// The image's and the request's exposed ports.
    pub exposed: Vec<Port>,
}

/// What `docker create` asks of the network.
#[derive(Clone, Debug, Default)]
pub struct NetworkRequest {
    /// `--network`: empty, `default`, `bridge`, `host`, `none` or a network's name or id.
    pub mode: String,
    /// `--network-alias` (for the network of `mode`).
    pub aliases: Vec<String>,
    /// `--ip` (for the network of `mode`), as given.
    pub ipv4: Option<String>,
    pub ports: Vec<PortBinding>,
    pub publish_all: bool,
    pub exposed: Vec<Port>,
}

/// A running container's place on a network.
#[derive(Clone, Debug)]
pub struct Endpoint {
    pub id: String,
    pub network_id: String,
    pub container_id: String,
    pub container_name: String,
    pub address: Ipv4Addr,
    pub prefix: u8,
    pub gateway: Ipv4Addr,
    pub mac: [u8; 6],
    /// The veth's end on the host.
    pub host_veth: String,
    pub bridge: String,
    /// Its name inside the container (`eth0`...).
    pub interface: String,
    pub aliases: Vec<String>,
    /// What the embedded DNS server answers with this endpoint's address.
    pub dns_names: Vec<String>,
}

/// How a running container is plugged in, recorded with it so that a Stratus that adopts it
/// (`--live-restore`) plugs it in again as it was: the same addresses and host ports.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Plugged {
    pub endpoints: Vec<PluggedEndpoint>,
    pub ports: Vec<BoundPort>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PluggedEndpoint {
    pub network_id: String,
    pub address: Ipv4Addr,
    pub host_veth: String,
    pub interface: String,
}

/// A published port as bound on the host.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BoundPort {
    pub port: Port,
    pub host: SocketAddr,
}

/// A container's networking while it runs.
struct Sandbox {
    mode: Mode,
    endpoints: Vec<Endpoint>,
    ports: Vec<BoundPort>,
    /// The DNS server and the port relays; aborted when the container stops.
    tasks: Vec<JoinHandle<()>>,
    /// The init's pid once the container exists (connect of a running container enters it).
    pid: Option<i32>,
    has_dns_server: bool,
    /// Its namespace was a [`Spare`], plugged in already.
    spare: bool,
}

/// A network namespace made ahead for the next container on the default bridge, with its veth on
/// the bridge, its address and default route, and loopback up: a container that takes it skips
/// ~2 ms of its start (making the namespace in the clone, then the veth and its addresses).
struct Spare {
    namespace: OwnedFd,
    address: Ipv4Addr,
    host_veth: String,
}

/// The default bridge of this Stratus instance. Several instances on one host need different
/// names and subnets.
#[derive(Clone, Debug)]
pub struct Options {
    pub bridge: String,
    pub subnet: Ipv4Net,
}

/// What a starting container's bundle needs from its network: files to bind-mount, and whether
/// it keeps the host's network namespace.
pub struct Prepared {
    pub mounts: Vec<(PathBuf, &'static str)>,
    pub host_namespace: bool,
    /// A network namespace made ahead (see [`Spare`]) for the container to join, held until the
    /// runtime has made the container.
    pub namespace: Option<OwnedFd>,
}

impl Prepared {
    /// Adds the files as bind mounts and, for the host's network, drops the network namespace.
    pub fn apply(&self, spec: &mut oci_spec::runtime::Spec) -> Result<()> {
        let mut mounts = spec.mounts().clone().unwrap_or_default();
        for (source, target) in &self.mounts {
            let mount = oci_spec::runtime::MountBuilder::default()
                .destination(*target)
                .typ("bind")
                .source(source)
                .options(vec!["rbind".to_string(), "rprivate".to_string()])
                .build()
                .map_err(|e| Error::InvalidParameter(format!("cannot build a mount: {e}")))?;
            mounts.push(mount);
        }
        spec.set_mounts(Some(mounts));
        if let Some(namespaces) = spec.linux_mut().as_mut().and_then(|l| l.namespaces_mut().as_mut()) {
            let network = oci_spec::runtime::LinuxNamespaceType::Network;
            if self.host_namespace {
                namespaces.retain(|n| n.typ() != network);
            } else if let Some(fd) = &self.namespace {
                // The runtime process opens it through this process's descriptor.
                let path = format!("/proc/{}/fd/{}", std::process::id(), fd.as_raw_fd());
                for namespace in namespaces.iter_mut().filter(|n| n.typ() == network) {
                    namespace.set_path(Some(path.clone().into()));
                }
            }
        }
        Ok(())
    }
}

#[derive(Default)]
struct State {
    networks: BTreeMap<String, Network>,
    /// Addresses in use, by network id.
    used: HashMap<String, BTreeSet<Ipv4Addr>>,
    /// By container id.
    sandboxes: HashMap<String, Sandbox>,
    /// Networks whose bridges this process has made (or found): they are made when first used,
    /// so an instance that runs no container leaves the host's network alone.
    made: BTreeSet<String>,
    /// Whether this instance's nftables table exists.
    rules_applied: bool,
    /// The default bridge's spare namespace, and whether one is being made.
    spare: Option<Spare>,
    making_spare: bool,
}

pub struct Networks {
    store: Arc<dyn Store>,
    keys: Keyspace,
    /// Whether links and rules are made (root); records work either way.
    enabled: bool,
    firewall: Firewall,
    default_bridge: String,
    /// Told what to delete should Stratus die without shutting down.
    janitor: Option<Janitor>,
    upstreams: Arc<Vec<SocketAddr>>,
    host_resolv_conf: String,
    state: Mutex<State>,
    this: Weak<Networks>,
}

impl Networks {
    /// Loads user-defined networks and adds the predefined ones. Bridges and rules are made when
    /// first needed. With `program` (the stratus binary) links and rules are made, and a janitor
    /// process watches over them unless they are to outlive Stratus (`live_restore`).
    pub async fn open(
        store: Arc<dyn Store>,
        options: Options,
        program: Option<&Path>,
        live_restore: bool,
    ) -> Result<Arc<Networks>> {
        let keys = Keyspace::new("containers");
        let prefix = keys.key(b"network/");
        let mut networks = BTreeMap::new();
        for kv in store.range(&prefix, &store::prefix_end(&prefix), None).await? {
            let network: Network = crate::record::decode(&kv.value)
                .map_err(|e| Error::Record(String::from_utf8_lossy(&kv.key).into_owned(), e))?;
            networks.insert(network.id.clone(), network);
        }
        for network in predefined(&options) {
            networks.insert(network.id.clone(), network);
        }
        let host_resolv_conf = std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default();
        let upstreams = dns::nameservers(&host_resolv_conf).into_iter().map(|ip| SocketAddr::new(ip, 53)).collect();
        let janitor = program.filter(|_| !live_restore).map(Janitor::spawn).transpose()?;
        let this = Arc::new_cyclic(|this| Networks {
            store,
            keys,
            enabled: program.is_some(),
            firewall: Firewall::new(&options.bridge),
            default_bridge: options.bridge.clone(),
            janitor,
            upstreams: Arc::new(upstreams),
            host_resolv_conf,
            state: Mutex::new(State { networks, ..State::default() }),
            this: this.clone(),
        });
        Ok(this)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn network_key(&self, id: &str) -> Vec<u8> {
        self.keys.key(format!("network/{id}").as_bytes())
    }

    fn name_key(&self, name: &str) -> Vec<u8> {
        self.keys.key(format!("network-name/{name}").as_bytes())
    }

    fn note(&self, note: Note<'_>) {
        if let Some(janitor) = &self.janitor {
            janitor.note(note);
        }
    }

    /// Sorted by name.
    pub fn list(&self) -> Vec<Network> {
        let mut networks: Vec<Network> = self.lock().networks.values().cloned().collect();
        networks.sort_by(|a, b| a.name.cmp(&b.name));
        networks
    }

    /// By full id, by name, or by a unique id prefix (Docker's order).
    pub fn find(&self, reference: &str) -> Result<Network> {
        let state = self.lock();
        if let Some(network) = state.networks.get(reference) {
            return Ok(network.clone());
        }
        if let Some(network) = state.networks.values().find(|n| n.name == reference) {
            return Ok(network.clone());
        }
        let mut prefixed = state.networks.values().filter(|n| !reference.is_empty() && n.id.starts_with(reference));
        match (prefixed.next(), prefixed.next()) {
            (Some(network), None) => Ok(network.clone()),
            _ => Err(Error::NoSuchNetwork(reference.to_string())),
        }
    }

    /// The endpoints of running containers on the network.
    pub fn endpoints_on(&self, network_id: &str) -> Vec<Endpoint> {
        let state = self.lock();
        let mut endpoints: Vec<Endpoint> = state
            .sandboxes
            .values()
            .flat_map(|s| s.endpoints.iter().filter(|e| e.network_id == network_id && s.pid.is_some()).cloned())
            .collect();
        endpoints.sort_by(|a, b| a.container_name.cmp(&b.container_name));
        endpoints
    }

    /// A running container's endpoints and published ports.
    pub fn container_endpoints(&self, container_id: &str) -> (Vec<Endpoint>, Vec<BoundPort>) {
        match self.lock().sandboxes.get(container_id) {
            Some(sandbox) => (sandbox.endpoints.clone(), sandbox.ports.clone()),
            None => (Vec::new(), Vec::new()),
        }
    }

    /// The host end of the container's first veth and its bridge, while it runs.
    pub fn host_side(&self, container_id: &str) -> Option<(String, String)> {
        let state = self.lock();
        let endpoint = state.sandboxes.get(container_id)?.endpoints.first()?;
        Some((endpoint.host_veth.clone(), endpoint.bridge.clone()))
    }

    pub async fn create(&self, request: CreateNetwork) -> Result<Network> {
        let name = request.name.trim().to_string();
        if name.is_empty() || name.contains('/') {
            return Err(Error::InvalidParameter(format!("invalid network name: \"{name}\"")));
        }
        match request.driver.as_str() {
            "" | "bridge" => {}
            "host" | "null" => {
                return Err(Error::Forbidden(format!(
                    "only one instance of \"{}\" network is allowed",
                    request.driver
                )));
            }
            other => return Err(Error::PluginNotFound(other.to_string())),
        }
        if self.find(&name).is_ok_and(|n| n.name == name) {
            return Err(Error::Conflict(format!("network with name {name} already exists")));
        }
        let id = crate::engine::new_id();
        let (subnet, gateway, ip_range) = self.address_space(&request)?;
        let bridge = match request.options.get("com.docker.network.bridge.name") {
            Some(bridge) => bridge.clone(),
            None => format!("br-{}", crate::image::short_id(&id)),
        };
        let network = Network {
            id,
            name,
            driver: Driver::Bridge,
            created: SystemTime::now(),
            subnet: Some(subnet),
            gateway: Some(gateway),
            subnet_configured: request.subnet.as_deref().is_some_and(|s| !s.is_empty()),
            ip_range,
            bridge,
            internal: request.internal,
            attachable: request.attachable,
            labels: request.labels,
            options: request.options,
            predefined: false,
        };
        self.make_bridge(&network).await?;
        let bytes = crate::record::encode(&network).map_err(|e| Error::Record(network.id.clone(), e))?;
        let name_key = self.name_key(&network.name);
        let txn = Txn {
            compares: vec![Compare::absent(name_key.clone())],
            success: vec![Op::put(self.network_key(&network.id), bytes), Op::put(name_key, network.id.as_bytes())],
            failure: Vec::new(),
        };
        let committed = self.store.txn(txn).await;
        if !matches!(committed, Ok(ref response) if response.succeeded) {
            self.delete_bridge(&network).await;
            committed?;
            return Err(Error::Conflict(format!("network with name {} already exists", network.name)));
        }
        self.lock().networks.insert(network.id.clone(), network.clone());
        self.update_rules(&network).await;
        tracing::info!(network = %network.id, name = %network.name, subnet = ?network.subnet, "network created");
        Ok(network)
    }

    /// The requested subnet, gateway and address range, or the first free default pool.
    fn address_space(&self, request: &CreateNetwork) -> Result<(Ipv4Net, Ipv4Addr, Option<Ipv4Net>)> {
        let taken: Vec<Ipv4Net> = self.lock().networks.values().filter_map(|n| n.subnet).collect();
        let subnet = match request.subnet.as_deref().filter(|s| !s.is_empty()) {
            Some(text) => {
                let subnet: Ipv4Net =
                    text.parse().map_err(|_| Error::InvalidParameter(format!("invalid CIDR address: {text}")))?;
                if taken.iter().any(|t| ipam::overlaps(t, &subnet)) {
                    return Err(Error::Forbidden("Pool overlaps with other one on this address space".into()));
                }
                subnet.trunc()
            }
            None => {
                let routes = ipam::parse_routes(&std::fs::read_to_string("/proc/net/route").unwrap_or_default());
                ipam::choose_subnet(&[taken, routes].concat())
                    .ok_or_else(|| Error::Forbidden("all predefined address pools have been fully subnetted".into()))?
            }
        };
        let gateway = match request.gateway.as_deref().filter(|g| !g.is_empty()) {
            Some(text) => {
                let gateway: Ipv4Addr =
                    text.parse().map_err(|_| Error::InvalidParameter(format!("invalid gateway address: {text}")))?;
                if !subnet.contains(&gateway) {
                    return Err(Error::Forbidden(format!("no matching subnet for gateway {gateway}")));
                }
                gateway
            }
            None => ipam::default_gateway(&subnet)
                .ok_or_else(|| Error::InvalidParameter(format!("subnet {subnet} has no room for a gateway")))?,
        };
        let ip_range = match request.ip_range.as_deref().filter(|r| !r.is_empty()) {
            Some(_) if request.subnet.as_deref().is_none_or(str::is_empty) => {
                return Err(Error::InvalidParameter(
                    "invalid network config:\ninvalid subnet : invalid CIDR block notation".into(),
                ));
            }
            Some(text) => Some(ipam::parse_ip_range(text, &subnet).map_err(Error::InvalidParameter)?),
            None => None,
        };
        Ok((subnet, gateway, ip_range))
    }

    /// `docker network rm`: not a predefined network, nor one a running container is on.
    pub async fn remove(&self, reference: &str) -> Result<()> {
        let network = self.find(reference)?;
        if network.predefined {
            return Err(Error::Forbidden(format!("{} is a pre-defined network and cannot be removed", network.name)));
        }
        if let Some(endpoint) = self.endpoints_on(&network.id).first() {
            return Err(Error::Forbidden(format!(
                "error while removing network: network {} has active endpoints (name:\"{}\" id:\"{}\")",
                network.name,
                endpoint.container_name,
                crate::image::short_id(&endpoint.container_id)
            )));
        }
        let txn = Txn::ops(vec![Op::delete(self.network_key(&network.id)), Op::delete(self.name_key(&network.name))]);
        self.store.txn(txn).await?;
        self.lock().networks.remove(&network.id);
        self.delete_bridge(&network).await;
        self.update_rules(&network).await;
        tracing::info!(network = %network.id, name = %network.name, "network removed");
        Ok(())
    }

    async fn make_bridge(&self, network: &Network) -> Result<()> {
        if let (true, Driver::Bridge, Some(subnet), Some(gateway)) =
            (self.enabled, network.driver, network.subnet, network.gateway)
            && !self.lock().made.contains(&network.id)
        {
            link::ensure_bridge(&network.bridge, gateway, &subnet).await?;
            self.lock().made.insert(network.id.clone());
            self.note(Note::Bridge(&network.bridge));
        }
        Ok(())
    }

    /// Before a container joins `endpoints`' networks: their bridges, forwarding, the rules.
    async fn make_ready(&self, endpoints: &[Endpoint]) -> Result<()> {
        for endpoint in endpoints {
            self.make_bridge(&self.find(&endpoint.network_id)?).await?;
        }
        if !self.lock().rules_applied {
            firewall::enable_forwarding()?;
            self.apply_rules().await?;
        }
        Ok(())
    }

    async fn delete_bridge(&self, network: &Network) {
        self.lock().made.remove(&network.id);
        if self.enabled && network.driver == Driver::Bridge {
            match link::delete(&network.bridge).await {
                Ok(()) => self.note(Note::BridgeDeleted(&network.bridge)),
                Err(error) => tracing::warn!(bridge = %network.bridge, %error, "cannot delete the bridge"),
            }
        }
    }

    async fn apply_rules(&self) -> Result<()> {
        if !self.enabled {
            return Ok(());
        }
        let rules: Vec<BridgeRules> = self.list().iter().filter_map(Network::rules).collect();
        self.firewall.apply(&rules).await?;
        self.lock().rules_applied = true;
        self.note(Note::Rules(&self.default_bridge));
        Ok(())
    }

    /// Keeps the rules in step with the networks once they exist.
    async fn update_rules(&self, network: &Network) {
        if self.lock().rules_applied
            && let Err(error) = self.apply_rules().await
        {
            tracing::warn!(network = %network.id, %error, "cannot update the NAT rules");
        }
    }

    /// Settles `docker create`'s network request: which networks, which aliases, which ports.
    pub fn settle(&self, request: &NetworkRequest, image_exposed: &[Port]) -> Result<NetworkConfig> {
        let mode_name = match request.mode.as_str() {
            "" | "default" => BRIDGE.to_string(),
            other => other.to_string(),
        };
        if mode_name.starts_with("container:") {
            return Err(Error::Unsupported("sharing another container's network namespace"));
        }
        let network = self.find(&mode_name)?;
        let mode = match network.driver {
            Driver::Host => Mode::Host,
            Driver::Null => Mode::None,
            Driver::Bridge => Mode::Bridge,
        };
        if !request.aliases.is_empty() && !network.has_dns() {
            return Err(Error::InvalidParameter(
                "network-scoped alias is supported only for containers in user defined networks".into(),
            ));
        }
        let ipv4 = match request.ipv4.as_deref().filter(|a| !a.is_empty()) {
            Some(text) => Some(static_address(&network, text).map_err(|reason| {
                Error::InvalidParameter(format!("invalid config for network {mode_name}: {reason}"))
            })?),
            None => None,
        };
        let attachments = match mode {
            Mode::Bridge => vec![Attachment { network_id: network.id, aliases: request.aliases.clone(), ipv4 }],
            Mode::Host | Mode::None => Vec::new(),
        };
        let mut exposed: Vec<Port> = image_exposed.iter().chain(&request.exposed).copied().collect();
        exposed.extend(request.ports.iter().map(|b| b.port));
        exposed.sort();
        exposed.dedup();
        Ok(NetworkConfig {
            mode,
            mode_name,
            attachments,
            ports: request.ports.clone(),
            publish_all: request.publish_all,
            exposed,
        })
    }

    /// Reserves the container's addresses and writes its `/etc/hosts` and `/etc/resolv.conf` into
    /// `dir` (not `/etc/hostname`: a build step may delete the image's). Undone by [`Networks::unplug`].
    /// `may_join` says whether the container can join a namespace made ahead (one in a user
    /// namespace of its own cannot).
    pub fn prepare(
        &self,
        container_id: &str,
        container_name: &str,
        hostname: &str,
        config: &NetworkConfig,
        dir: &Path,
        may_join: bool,
    ) -> Result<Prepared> {
        let (endpoints, namespace) = {
            let mut state = self.lock();
            let mut endpoints = Vec::new();
            let spare = match (config.mode, config.attachments.as_slice()) {
                (Mode::Bridge, [only]) if may_join && only.ipv4.is_none() && only.network_id == bridge_id() => {
                    state.spare.take()
                }
                _ => None,
            };
            if let (Some(spare), Some(network)) = (&spare, state.networks.get(&bridge_id())) {
                let attachment = &config.attachments[0];
                let mut endpoint =
                    endpoint(network, attachment, container_id, container_name, spare.address, "eth0".into())?;
                endpoint.host_veth = spare.host_veth.clone();
                endpoints.push(endpoint);
            }
            for attachment in config.attachments.iter().skip(endpoints.len()) {
                match reserve(&mut state, attachment, container_id, container_name, endpoints.len()) {
                    Ok(endpoint) => endpoints.push(endpoint),
                    Err(error) => {
                        release(&mut state, &endpoints);
                        return Err(error);
                    }
                }
            }
            state.sandboxes.insert(
                container_id.to_string(),
                Sandbox {
                    mode: config.mode,
                    endpoints: endpoints.clone(),
                    ports: Vec::new(),
                    tasks: Vec::new(),
                    pid: None,
                    has_dns_server: false,
                    spare: spare.is_some(),
                },
            );
            (endpoints, spare.map(|s| s.namespace))
        };
        let uses_dns = endpoints.iter().any(|e| self.lock().networks.get(&e.network_id).is_some_and(Network::has_dns));
        let host_hosts = std::fs::read_to_string("/etc/hosts").unwrap_or_default();
        let hosts = match config.mode {
            Mode::Host => host_hosts,
            Mode::Bridge | Mode::None => hosts_file(hostname, endpoints.first().map(|e| e.address)),
        };
        let resolv_conf = match config.mode {
            Mode::Host => self.host_resolv_conf.clone(),
            Mode::Bridge | Mode::None => resolv_conf(&self.host_resolv_conf, uses_dns),
        };
        let mut mounts = Vec::new();
        for (file, content, target) in
            [("hosts", hosts, "/etc/hosts"), ("resolv.conf", resolv_conf, "/etc/resolv.conf")]
        {
            let path = dir.join(file);
            std::fs::write(&path, content).map_err(Error::io("cannot write", &path))?;
            mounts.push((path, target));
        }
        Ok(Prepared { mounts, host_namespace: config.mode == Mode::Host, namespace })
    }

    /// Connects the created (not yet started) container whose init is `pid` to its networks:
    /// veths, loopback, routes, its DNS server and its published ports.
    pub async fn plug(&self, container_id: &str, pid: i32, config: &NetworkConfig) -> Result<()> {
        let (mode, endpoints, spare) = {
            let mut state = self.lock();
            let sandbox = state
                .sandboxes
                .get_mut(container_id)
                .ok_or_else(|| Error::Network(format!("container {container_id} has no network prepared")))?;
            sandbox.pid = Some(pid);
            (sandbox.mode, sandbox.endpoints.clone(), sandbox.spare)
        };
        if mode == Mode::Host || !self.enabled {
            return Ok(());
        }
        if !spare {
            self.make_ready(&endpoints).await?;
            self.add_interfaces(container_id, pid, &endpoints, true).await?;
        }
        if endpoints.iter().any(|e| e.network_id == bridge_id()) {
            self.make_spare();
        }
        let Some(target) = endpoints.first().map(|e| e.address) else { return Ok(()) };
        let mut wanted: Vec<PortBinding> = config.ports.clone();
        if config.publish_all {
            let bound: BTreeSet<Port> = wanted.iter().map(|b| b.port).collect();
            wanted.extend(config.exposed.iter().filter(|p| !bound.contains(p)).map(|port| PortBinding {
                port: *port,
                host_ip: None,
                host_port: 0,
                host_port_end: None,
            }));
        }
        for binding in wanted {
            self.publish(container_id, &binding, target).await?;
        }
        Ok(())
    }

    /// Makes the default bridge's [`Spare`] in the background, unless there is one (or one is
    /// being made). Called once a container has used the bridge, which is made by then.
    fn make_spare(&self) {
        let Some(this) = self.this.upgrade() else { return };
        let endpoint = {
            let mut state = self.lock();
            if state.spare.is_some() || state.making_spare {
                return;
            }
            let attachment = Attachment { network_id: bridge_id(), aliases: Vec::new(), ipv4: None };
            match reserve(&mut state, &attachment, "", "", 0) {
                Ok(endpoint) => {
                    state.making_spare = true;
                    endpoint
                }
                Err(error) => return tracing::debug!(%error, "no spare network namespace"),
            }
        };
        tokio::spawn(async move {
            let made = this.plug_spare(&endpoint).await;
            let mut state = this.lock();
            state.making_spare = false;
            match made {
                Ok(namespace) => {
                    let (address, host_veth) = (endpoint.address, endpoint.host_veth);
                    state.spare = Some(Spare { namespace, address, host_veth });
                }
                Err(error) => {
                    release(&mut state, std::slice::from_ref(&endpoint));
                    tracing::warn!(%error, "cannot make a spare network namespace");
                }
            }
        });
    }

    /// A new network namespace with `endpoint`'s veth, address and route, and loopback up.
    async fn plug_spare(&self, endpoint: &Endpoint) -> Result<OwnedFd> {
        let namespace = tokio::task::spawn_blocking(link::new_namespace)
            .await
            .map_err(|e| Error::Network(format!("the network namespace task failed: {e}")))??;
        let interface = link::Interface {
            bridge: endpoint.bridge.clone(),
            host_name: endpoint.host_veth.clone(),
            name: endpoint.interface.clone(),
            address: endpoint.address,
            prefix: endpoint.prefix,
            mac: endpoint.mac,
            gateway: endpoint.gateway,
        };
        link::add_veths(std::slice::from_ref(&interface), &namespace).await?;
        let inside = namespace.try_clone().map_err(Error::io("cannot duplicate", "the network namespace"))?;
        tokio::task::spawn_blocking(move || link::configure_inside(inside, vec![interface], true, || Ok(())))
            .await
            .map_err(|e| Error::Network(format!("the network namespace task failed: {e}")))??;
        Ok(namespace)
    }

    /// Relays `binding`'s host port to the container's port at `target`.
    async fn publish(&self, container_id: &str, binding: &PortBinding, target: Ipv4Addr) -> Result<()> {
        let (host, task) = publish(binding, SocketAddr::new(IpAddr::V4(target), binding.port.number)).await?;
        match self.lock().sandboxes.get_mut(container_id) {
            Some(sandbox) => {
                sandbox.ports.push(BoundPort { port: binding.port, host });
                sandbox.tasks.push(task);
            }
            None => task.abort(),
        }
        Ok(())
    }

    /// How the container is plugged in now, to record with it.
    pub fn plugged(&self, container_id: &str) -> Option<Plugged> {
        let state = self.lock();
        let sandbox = state.sandboxes.get(container_id)?;
        let endpoints = (sandbox.endpoints.iter())
            .map(|e| PluggedEndpoint {
                network_id: e.network_id.clone(),
                address: e.address,
                host_veth: e.host_veth.clone(),
                interface: e.interface.clone(),
            })
            .collect();
        Some(Plugged { endpoints, ports: sandbox.ports.clone() })
    }

    /// Takes over the networking of a container an earlier Stratus plugged in as `plugged` and
    /// left running (`--live-restore`): its veths and addresses are still in its namespace, its
    /// bridges are made again if need be; its DNS server and port relays, which were that
    /// Stratus's, start again. A port taken meanwhile is logged and left.
    pub async fn adopt(
        &self,
        container_id: &str,
        container_name: &str,
        pid: i32,
        config: &NetworkConfig,
        plugged: &Plugged,
    ) -> Result<()> {
        let endpoints = {
            let mut state = self.lock();
            let mut endpoints = Vec::new();
            for p in &plugged.endpoints {
                let attachment = config.attachments.iter().find(|a| a.network_id == p.network_id);
                let (Some(attachment), Some(network)) = (attachment, state.networks.get(&p.network_id)) else {
                    continue;
                };
                let mut endpoint =
                    endpoint(network, attachment, container_id, container_name, p.address, p.interface.clone())?;
                endpoint.host_veth = p.host_veth.clone();
                state.used.entry(p.network_id.clone()).or_default().insert(p.address);
                endpoints.push(endpoint);
            }
            let sandbox = Sandbox {
                mode: config.mode,
                endpoints: endpoints.clone(),
                ports: Vec::new(),
                tasks: Vec::new(),
                pid: Some(pid),
                has_dns_server: false,
                spare: false,
            };
            state.sandboxes.insert(container_id.to_string(), sandbox);
            endpoints
        };
        if config.mode == Mode::Host || !self.enabled {
            return Ok(());
        }
        self.make_ready(&endpoints).await?;
        self.enter(container_id, pid, Vec::new(), false, &endpoints).await?;
        let Some(target) = endpoints.first().map(|e| e.address) else { return Ok(()) };
        for bound in &plugged.ports {
            let binding = PortBinding {
                port: bound.port,
                host_ip: Some(bound.host.ip()),
                host_port: bound.host.port(),
                host_port_end: None,
            };
            if let Err(error) = self.publish(container_id, &binding, target).await {
                tracing::warn!(container = %container_id, port = %bound.host, %error, "cannot publish the port again");
            }
        }
        Ok(())
    }

    /// Makes `endpoints`' interfaces in the namespace of `pid`, and the DNS server when one of
    /// them is on a user-defined network and the container has none yet.
    async fn add_interfaces(&self, container_id: &str, pid: i32, endpoints: &[Endpoint], first: bool) -> Result<()> {
        let interfaces: Vec<link::Interface> = endpoints
            .iter()
            .map(|e| link::Interface {
                bridge: e.bridge.clone(),
                host_name: e.host_veth.clone(),
                name: e.interface.clone(),
                address: e.address,
                prefix: e.prefix,
                mac: e.mac,
                gateway: e.gateway,
            })
            .collect();
        link::add_veths(&interfaces, &network_namespace(pid)?).await?;
        self.enter(container_id, pid, interfaces, first, endpoints).await
    }

    /// From a thread inside the namespace of `pid`: configures `interfaces` (with the default
    /// route via the first when `default_route`) and, when one of `endpoints` is on a
    /// user-defined network and the container has no DNS server yet, opens its DNS server there.
    async fn enter(
        &self,
        container_id: &str,
        pid: i32,
        interfaces: Vec<link::Interface>,
        default_route: bool,
        endpoints: &[Endpoint],
    ) -> Result<()> {
        let wants_dns = {
            let state = self.lock();
            let has_server = state.sandboxes.get(container_id).is_some_and(|s| s.has_dns_server);
            !has_server && endpoints.iter().any(|e| state.networks.get(&e.network_id).is_some_and(Network::has_dns))
        };
        let netns = network_namespace(pid)?;
        let open_dns = move || wants_dns.then(|| dns::Sockets::bind(link::DNS_ADDRESS)).transpose();
        let sockets =
            tokio::task::spawn_blocking(move || link::configure_inside(netns, interfaces, default_route, open_dns))
                .await
                .map_err(|e| Error::Network(format!("the network namespace task failed: {e}")))??;
        if let Some(sockets) = sockets {
            let (this, asking) = (self.this.clone(), container_id.to_string());
            let lookup: dns::Lookup = Arc::new(move |name| match this.upgrade() {
                Some(networks) => networks.resolve(&asking, name),
                None => Vec::new(),
            });
            let task = dns::spawn(sockets, lookup, self.upstreams.clone())?;
            match self.lock().sandboxes.get_mut(container_id) {
                Some(sandbox) => {
                    sandbox.has_dns_server = true;
                    sandbox.tasks.push(task);
                }
                None => task.abort(),
            }
        }
        Ok(())
    }

    /// The addresses `name` has for `asking`: running containers on the user-defined networks it
    /// is on whose name, alias or short id it is.
    fn resolve(&self, asking: &str, name: &str) -> Vec<Ipv4Addr> {
        let state = self.lock();
        let Some(sandbox) = state.sandboxes.get(asking) else { return Vec::new() };
        let shared: BTreeSet<&str> = sandbox
            .endpoints
            .iter()
            .filter(|e| state.networks.get(&e.network_id).is_some_and(Network::has_dns))
            .map(|e| e.network_id.as_str())
            .collect();
        let mut addresses: Vec<Ipv4Addr> = state
            .sandboxes
            .values()
            .filter(|s| s.pid.is_some())
            .flat_map(|s| &s.endpoints)
            .filter(|e| shared.contains(e.network_id.as_str()))
            .filter(|e| e.dns_names.iter().any(|n| n.eq_ignore_ascii_case(name)))
            .map(|e| e.address)
            .collect();
        addresses.sort();
        addresses.dedup();
        addresses
    }

    /// Ends the container's networking: its relays and DNS server stop, its veths go, its
    /// addresses are free again. Nothing to undo is fine.
    pub fn unplug(&self, container_id: &str) {
        let sandbox = {
            let mut state = self.lock();
            let Some(sandbox) = state.sandboxes.remove(container_id) else { return };
            release(&mut state, &sandbox.endpoints);
            sandbox
        };
        // The veths go with the container's network namespace, which the kernel takes down once
        // its last process has exited (the runtime has killed them all by now) and nothing holds
        // it: the DNS server's sockets were the only things of Stratus's that did. Deleting them here
        // would only contend with that teardown (3-4 ms a container).
        for task in &sandbox.tasks {
            task.abort();
        }
    }

    /// `docker rename`: a running container's endpoints answer to the new name at once.
    pub fn rename(&self, container_id: &str, new_name: &str) {
        if let Some(sandbox) = self.lock().sandboxes.get_mut(container_id) {
            for endpoint in &mut sandbox.endpoints {
                endpoint.container_name = new_name.to_string();
                endpoint.dns_names = dns_names(container_id, new_name, &endpoint.aliases);
            }
        }
    }

    /// `docker network connect` of a running container: a new interface now.
    pub async fn connect_running(
        &self,
        container_id: &str,
        container_name: &str,
        attachment: &Attachment,
    ) -> Result<()> {
        let (pid, endpoint) = {
            let mut state = self.lock();
            let Some(sandbox) = state.sandboxes.get(container_id) else { return Ok(()) };
            // The lowest free interface number: a disconnect may have left a gap.
            let taken: BTreeSet<&str> = sandbox.endpoints.iter().map(|e| e.interface.as_str()).collect();
            let index = (0..).find(|i| !taken.contains(format!("eth{i}").as_str())).unwrap_or_default();
            let endpoint = reserve(&mut state, attachment, container_id, container_name, index)?;
            let sandbox = state.sandboxes.get_mut(container_id);
            let pid = sandbox.as_ref().and_then(|s| s.pid);
            if let Some(sandbox) = sandbox {
                sandbox.endpoints.push(endpoint.clone());
            }
            (pid, endpoint)
        };
        let Some(pid) = pid.filter(|_| self.enabled) else { return Ok(()) };
        let added = match self.make_ready(std::slice::from_ref(&endpoint)).await {
            Ok(()) => self.add_interfaces(container_id, pid, std::slice::from_ref(&endpoint), false).await,
            Err(error) => Err(error),
        };
        if added.is_err() {
            self.drop_endpoint(container_id, &endpoint.network_id).await;
        }
        added
    }

    /// `docker network disconnect` of a running container: its interface on the network goes.
    pub async fn disconnect_running(&self, container_id: &str, network_id: &str) {
        self.drop_endpoint(container_id, network_id).await;
    }

    async fn drop_endpoint(&self, container_id: &str, network_id: &str) {
        let endpoint = {
            let mut state = self.lock();
            let Some(sandbox) = state.sandboxes.get_mut(container_id) else { return };
            let Some(position) = sandbox.endpoints.iter().position(|e| e.network_id == network_id) else { return };
            let endpoint = sandbox.endpoints.remove(position);
            release(&mut state, std::slice::from_ref(&endpoint));
            endpoint
        };
        if self.enabled
            && let Err(error) = link::delete(&endpoint.host_veth).await
        {
            tracing::warn!(container = %container_id, veth = %endpoint.host_veth, %error, "cannot delete");
        }
    }

    /// Removes this instance's bridges and rules (containers are gone by now).
    pub async fn shut_down(&self) {
        let ids: Vec<String> = self.lock().sandboxes.keys().cloned().collect();
        for id in ids {
            self.unplug(&id);
        }
        let made: Vec<Network> = self.list().into_iter().filter(|n| self.lock().made.contains(&n.id)).collect();
        for network in made {
            self.delete_bridge(&network).await;
        }
        if self.lock().rules_applied {
            match self.firewall.remove().await {
                Ok(()) => self.note(Note::RulesDeleted),
                Err(error) => tracing::warn!(%error, "cannot remove the NAT rules"),
            }
        }
    }
}

/// Relays `binding`'s host port to `target`: the first of its range that is free.
async fn publish(binding: &PortBinding, target: SocketAddr) -> Result<(SocketAddr, JoinHandle<()>)> {
    let ip = binding.host_ip.unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED));
    let last = binding.host_port_end.unwrap_or(binding.host_port);
    let mut port = binding.host_port;
    loop {
        let listen = SocketAddr::new(ip, port);
        let published = match binding.port.protocol {
            Protocol::Tcp => proxy::tcp(listen, target).await,
            Protocol::Udp => proxy::udp(listen, target).await,
        };
        if published.is_ok() || port >= last {
            return published;
        }
        port += 1;
    }
}

/// Takes an address on the attachment's network for a new endpoint (the container's
/// `index`-th interface).
fn reserve(
    state: &mut State,
    attachment: &Attachment,
    container_id: &str,
    container_name: &str,
    index: usize,
) -> Result<Endpoint> {
    let network = state
        .networks
        .get(&attachment.network_id)
        .ok_or_else(|| Error::NoSuchNetwork(attachment.network_id.clone()))?
        .clone();
    let (Some(subnet), Some(gateway)) = (network.subnet, network.gateway) else {
        return Err(Error::InvalidParameter(format!("network {} has no subnet", network.name)));
    };
    let used = state.used.entry(network.id.clone()).or_default();
    let address = match attachment.ipv4 {
        Some(address) if ipam::assignable(&subnet, gateway, address) && !used.contains(&address) => address,
        Some(_) => return Err(Error::Forbidden("Address already in use".into())),
        None => ipam::next_free(&network.ip_range.unwrap_or(subnet), &subnet, gateway, used).ok_or_else(|| {
            Error::Network(format!("no available IPv4 addresses on this network's address pools: {}", network.name))
        })?,
    };
    used.insert(address);
    endpoint(&network, attachment, container_id, container_name, address, format!("eth{index}"))
}

/// An endpoint at `address` on `network`, its interface in the container named `interface`.
fn endpoint(
    network: &Network,
    attachment: &Attachment,
    container_id: &str,
    container_name: &str,
    address: Ipv4Addr,
    interface: String,
) -> Result<Endpoint> {
    let (Some(subnet), Some(gateway)) = (network.subnet, network.gateway) else {
        return Err(Error::InvalidParameter(format!("network {} has no subnet", network.name)));
    };
    let id = crate::engine::new_id();
    Ok(Endpoint {
        // As Docker's: random, so a restarted container's new veth never meets its old one,
        // which the kernel may still be removing with the old namespace.
        host_veth: format!("veth{}", &id[..7]),
        id,
        network_id: network.id.clone(),
        container_id: container_id.to_string(),
        container_name: container_name.to_string(),
        address,
        prefix: subnet.prefix_len(),
        gateway,
        mac: ipam::mac_for(address),
        bridge: network.bridge.clone(),
        interface,
        aliases: attachment.aliases.clone(),
        dns_names: dns_names(container_id, container_name, &attachment.aliases),
    })
}

/// The network namespace of the process `pid`.
fn network_namespace(pid: i32) -> Result<std::os::fd::OwnedFd> {
    let path = format!("/proc/{pid}/ns/net");
    std::fs::File::open(&path).map(std::os::fd::OwnedFd::from).map_err(Error::io("cannot open", path))
}

/// The names an endpoint answers to: its container's name, its aliases, its short id.
fn dns_names(container_id: &str, container_name: &str, aliases: &[String]) -> Vec<String> {
    let mut names = vec![container_name.to_string()];
    names.extend(aliases.iter().cloned());
    names.push(crate::image::short_id(container_id).to_string());
    names
}

/// A static address (`--ip`) on `network`, checked as Docker does; the error is Docker's.
pub fn static_address(network: &Network, text: &str) -> std::result::Result<Ipv4Addr, String> {
    let reason = if network.predefined {
        "user specified IP address is supported on user defined networks only".to_string()
    } else {
        match (text.parse::<Ipv4Addr>().ok().filter(|a| !a.is_unspecified()), network.subnet) {
            (None, _) => format!("invalid IPv4 address: {text}"),
            (Some(_), Some(_)) if !network.subnet_configured => {
                "user specified IP address is supported only when connecting to networks with user configured subnets"
                    .to_string()
            }
            (Some(address), Some(subnet)) if subnet.contains(&address) => return Ok(address),
            (Some(address), _) => format!("no configured subnet or ip-range contain the IP address {address}"),
        }
    };
    Err(format!("invalid endpoint settings:\n{reason}"))
}

fn release(state: &mut State, endpoints: &[Endpoint]) {
    for endpoint in endpoints {
        if let Some(used) = state.used.get_mut(&endpoint.network_id) {
            used.remove(&endpoint.address);
        }
    }
}

/// A predefined network's id: from its name alone, so containers keep their networks when the
/// options change.
fn predefined_id(name: &str) -> String {
    crate::image::sha256(format!("stratus network {name}").as_bytes()).trim_start_matches("sha256:").to_string()
}

/// The default bridge's id.
fn bridge_id() -> String {
    predefined_id(BRIDGE)
}

fn predefined(options: &Options) -> [Network; 3] {
    let network = |name: &str, driver: Driver| Network {
        id: predefined_id(name),
        name: name.to_string(),
        driver,
        created: SystemTime::UNIX_EPOCH,
        subnet: None,
        gateway: None,
        subnet_configured: false,
        ip_range: None,
        bridge: String::new(),
        internal: false,
        attachable: false,
        labels: BTreeMap::new(),
        options: BTreeMap::new(),
        predefined: true,
    };
    let bridge = Network {
        subnet: Some(options.subnet.trunc()),
        gateway: ipam::default_gateway(&options.subnet),
        bridge: options.bridge.clone(),
        ..network(BRIDGE, Driver::Bridge)
    };
    [bridge, network(HOST, Driver::Host), network(NONE, Driver::Null)]
}

/// Docker's `/etc/hosts` for a container of its own network namespace.
fn hosts_file(hostname: &str, address: Option<Ipv4Addr>) -> String {
    let mut hosts = String::from(
        "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\nfe00::\tip6-localnet\nff00::\tip6-mcastprefix\nff02::1\tip6-allnodes\nff02::2\tip6-allrouters\n",
    );
    if let Some(address) = address {
        hosts.push_str(&format!("{address}\t{hostname}\n"));
    }
    hosts
}

/// The container's `/etc/resolv.conf`: the embedded server on user-defined networks (which
/// relays to the host's resolvers), else the host's resolvers that are reachable from another
/// namespace (not loopback ones), or Google's as Docker falls back to.
fn resolv_conf(host: &str, embedded: bool) -> String {
    let options: Vec<&str> = host.lines().filter(|l| l.starts_with("search") || l.starts_with("options")).collect();
    let mut text = String::new();
    if embedded {
        text.push_str(&format!("nameserver {}\n", link::DNS_ADDRESS));
    } else {
        let mut servers: Vec<IpAddr> = dns::nameservers(host).into_iter().filter(|ip| !ip.is_loopback()).collect();
        if servers.is_empty() {
            servers = vec![IpAddr::V4(Ipv4Addr::new(8, 8, 8, 8)), IpAddr::V4(Ipv4Addr::new(8, 8, 4, 4))];
        }
        for server in servers {
            text.push_str(&format!("nameserver {server}\n"));
        }
    }
    for line in options {
        text.push_str(line);
        text.push('\n');
    }
    if embedded {
        text.push_str("options ndots:0\n");
    }
    text
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn ports_parse_like_docker() {
        assert_eq!(Port::parse("80").unwrap(), Port { number: 80, protocol: Protocol::Tcp });
        assert_eq!(Port::parse("53/UDP").unwrap().to_string(), "53/udp");
        assert!(Port::parse("0").is_err() && Port::parse("70000").is_err() && Port::parse("80/sctp").is_err());
    }

    #[test]
    fn resolv_conf_points_at_the_embedded_server_or_the_hosts_resolvers() {
        let host = "nameserver 127.0.0.53\nnameserver 10.0.0.2\nsearch corp\noptions edns0\n";
        assert_eq!(resolv_conf(host, true), "nameserver 127.0.0.11\nsearch corp\noptions edns0\noptions ndots:0\n");
        assert_eq!(resolv_conf(host, false), "nameserver 10.0.0.2\nsearch corp\noptions edns0\n");
        assert_eq!(resolv_conf("nameserver 127.0.0.53\n", false), "nameserver 8.8.8.8\nnameserver 8.8.4.4\n");
        assert!(hosts_file("web", Some(Ipv4Addr::new(172, 17, 0, 2))).ends_with("172.17.0.2\tweb\n"));
    }

    #[test]
    fn static_addresses_and_ranges() {
        let mut network = predefined(&Options { bridge: "st0".into(), subnet: "10.9.0.0/24".parse().unwrap() })
            .into_iter()
            .next()
            .unwrap();
        let refused =
            |network: &Network, text| static_address(network, text).unwrap_err().lines().last().unwrap().to_string();
        assert_eq!(
            refused(&network, "10.9.0.5"),
            "user specified IP address is supported on user defined networks only"
        );
        network.predefined = false;
        assert!(refused(&network, "10.9.0.5").contains("networks with user configured subnets"));
        network.subnet_configured = true;
        assert_eq!(static_address(&network, "10.9.0.5"), Ok(Ipv4Addr::new(10, 9, 0, 5)));
        assert_eq!(refused(&network, "10.8.0.5"), "no configured subnet or ip-range contain the IP address 10.8.0.5");
        assert_eq!(refused(&network, "0.0.0.0"), "invalid IPv4 address: 0.0.0.0");
        network.ip_range = Some("10.9.0.128/25".parse().unwrap());
        let mut state = State::default();
        state.networks.insert(network.id.clone(), network.clone());
        let on = |ipv4| Attachment { network_id: network.id.clone(), aliases: Vec::new(), ipv4 };
        let dynamic = reserve(&mut state, &on(None), "aaaa", "a", 0).unwrap();
        assert_eq!(dynamic.address, Ipv4Addr::new(10, 9, 0, 128), "from the range");
        let fixed = reserve(&mut state, &on(Some(Ipv4Addr::new(10, 9, 0, 5))), "bbbb", "b", 0).unwrap();
        assert_eq!(fixed.address, Ipv4Addr::new(10, 9, 0, 5), "anywhere in the subnet");
        for taken in [fixed.address, dynamic.address, Ipv4Addr::new(10, 9, 0, 1), Ipv4Addr::new(10, 9, 0, 255)] {
            let error = reserve(&mut state, &on(Some(taken)), "cccc", "c", 0).unwrap_err();
            assert_eq!(error.to_string(), "Address already in use");
        }
    }

    #[test]
    fn endpoints_take_free_addresses_and_give_them_back() {
        let options = Options { bridge: "st0".into(), subnet: "10.9.0.0/29".parse().unwrap() };
        let mut state = State::default();
        for network in predefined(&options) {
            state.networks.insert(network.id.clone(), network);
        }
        let bridge = state.networks.values().find(|n| n.name == BRIDGE).unwrap().id.clone();
        let attachment = Attachment { network_id: bridge, aliases: vec!["db".into()], ipv4: None };
        let first = reserve(&mut state, &attachment, "0123456789abcdef", "one", 0).unwrap();
        let second = reserve(&mut state, &attachment, "fedcba9876543210", "two", 1).unwrap();
        assert_eq!((first.address, second.address), (Ipv4Addr::new(10, 9, 0, 2), Ipv4Addr::new(10, 9, 0, 3)));
        assert_eq!(second.interface, "eth1");
        assert!(
            first.host_veth.starts_with("veth") && first.host_veth.len() == 11 && first.host_veth != second.host_veth
        );
        assert_eq!(first.dns_names, vec!["one", "db", "0123456789ab"]);
        assert_eq!(first.gateway, Ipv4Addr::new(10, 9, 0, 1));
        release(&mut state, std::slice::from_ref(&first));
        let again = reserve(&mut state, &attachment, "aaaaaaaaaaaaaaaa", "three", 0).unwrap();
        assert_eq!(again.address, first.address);
    }
}
