//! The engine's side of networks: what a container asks of them at create, `docker network
//! connect/disconnect` (which change a container's record, and its interfaces if it runs), and
//! network prune (which needs to know which networks containers name).

use super::{Engine, Status};
use crate::error::{Error, Result};
use crate::image::Image;
use crate::network::{Attachment, Mode, NetworkConfig, NetworkRequest, Port, static_address};

impl Engine {
    pub(super) fn network_config(&self, request: &NetworkRequest, image: &Image) -> Result<NetworkConfig> {
        let exposed = image.config.exposed_ports.iter().map(|p| Port::parse(p)).collect::<Result<Vec<_>>>()?;
        self.networks.settle(request, &exposed)
    }

    /// `docker network connect [--alias ...] [--ip ...] NETWORK CONTAINER`.
    pub async fn connect_network(
        &self,
        network: &str,
        container: &str,
        aliases: Vec<String>,
        ipv4: Option<&str>,
    ) -> Result<()> {
        let network = self.networks.find(network)?;
        let entry = self.entry(container)?;
        let _lifecycle = entry.lifecycle.lock().await;
        let current = entry.snapshot();
        if (network.predefined && network.name != crate::network::BRIDGE) || current.network.mode != Mode::Bridge {
            return Err(Error::Forbidden(
                "container sharing network namespace with another container or host cannot be connected to any other network".into(),
            ));
        }
        if current.network.attachments.iter().any(|a| a.network_id == network.id) {
            return Err(Error::Forbidden(format!(
                "endpoint with name {} already exists in network {}",
                current.name, network.name
            )));
        }
        if !aliases.is_empty() && !network.has_dns() {
            return Err(Error::InvalidParameter(
                "network-scoped alias is supported only for containers in user defined networks".into(),
            ));
        }
        let ipv4 = match ipv4.filter(|a| !a.is_empty()) {
            Some(text) => Some(static_address(&network, text).map_err(Error::InvalidParameter)?),
            None => None,
        };
        let attachment = Attachment { network_id: network.id.clone(), aliases, ipv4 };
        if current.state.status == Status::Running {
            self.networks.connect_running(&current.id, &current.name, &attachment).await?;
        }
        let updated = {
            let mut c = entry.container.lock().unwrap_or_else(|p| p.into_inner());
            c.network.attachments.push(attachment);
            if c.state.status == Status::Running {
                c.state.plugged = self.networks.plugged(&c.id);
            }
            c.clone()
        };
        self.persist(&updated).await
    }

    /// `docker network disconnect NETWORK CONTAINER`.
    pub async fn disconnect_network(&self, network: &str, container: &str) -> Result<()> {
        let network = self.networks.find(network)?;
        let entry = self.entry(container)?;
        let _lifecycle = entry.lifecycle.lock().await;
        let current = entry.snapshot();
        if !current.network.attachments.iter().any(|a| a.network_id == network.id) {
            return Err(Error::Forbidden(format!(
                "container {} is not connected to network {}",
                current.id, network.name
            )));
        }
        if current.state.status == Status::Running {
            self.networks.disconnect_running(&current.id, &network.id).await;
        }
        let updated = {
            let mut c = entry.container.lock().unwrap_or_else(|p| p.into_inner());
            c.network.attachments.retain(|a| a.network_id != network.id);
            if c.state.status == Status::Running {
                c.state.plugged = self.networks.plugged(&c.id);
            }
            c.clone()
        };
        self.persist(&updated).await
    }

    /// `docker network prune`: removes user-defined networks no container names. Returns their
    /// names.
    pub async fn prune_networks(&self) -> Result<Vec<String>> {
        let named: Vec<String> =
            self.list(true).into_iter().flat_map(|c| c.network.attachments.into_iter().map(|a| a.network_id)).collect();
        let mut removed = Vec::new();
        for network in self.networks.list().into_iter().filter(|n| !n.predefined && !named.contains(&n.id)) {
            self.networks.remove(&network.id).await?;
            removed.push(network.name);
        }
        Ok(removed)
    }
}
