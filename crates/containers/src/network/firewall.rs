//! NAT and isolation through nftables: one table per Stratus instance (`ip stratus_<bridge>`),
//! rewritten whole and atomically on every change, and deleted when Stratus stops, so cleanup
//! never touches another instance's or Docker's rules. Applied with the `nft` tool (Debian's
//! `nftables` package): its ruleset language is stable, and one table per instance keeps the
//! whole state in one text this module renders.

use ipnet::Ipv4Net;
use tokio::io::AsyncWriteExt;

use crate::error::{Error, Result};

/// What the rules need to know of a bridge network.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BridgeRules {
    pub bridge: String,
    pub subnet: Ipv4Net,
    /// `--internal`: no traffic to or from outside the bridge.
    pub internal: bool,
}

pub struct Firewall {
    table: String,
}

impl Firewall {
    /// The table for the instance whose default bridge is `bridge`.
    pub fn new(bridge: &str) -> Firewall {
        let tag: String = bridge.chars().map(|c| if c.is_ascii_alphanumeric() { c } else { '_' }).collect();
        Firewall { table: format!("stratus_{tag}") }
    }

    pub fn table(&self) -> &str {
        &self.table
    }

    /// Replaces the table with rules for `networks`.
    pub async fn apply(&self, networks: &[BridgeRules]) -> Result<()> {
        run_nft(&render(&self.table, networks)).await
    }

    /// Removes the table, if present.
    pub async fn remove(&self) -> Result<()> {
        run_nft(&format!("table ip {0} {{}}\ndelete table ip {0}\n", self.table)).await
    }
}

/// The whole table: masquerade what leaves a bridge for elsewhere (unless internal), drop what
/// crosses from one bridge network to another, and what enters or leaves an internal network.
/// Declaring the table empty and deleting it first makes the script replace it in one
/// transaction, whether or not it existed.
pub fn render(table: &str, networks: &[BridgeRules]) -> String {
    let mut nat = String::new();
    let mut forward = String::new();
    for network in networks {
        let bridge = &network.bridge;
        if network.internal {
            forward.push_str(&format!("    iifname \"{bridge}\" oifname != \"{bridge}\" drop\n"));
            forward.push_str(&format!("    oifname \"{bridge}\" iifname != \"{bridge}\" drop\n"));
        } else {
            nat.push_str(&format!("    ip saddr {} oifname != \"{bridge}\" masquerade\n", network.subnet));
        }
        for other in networks.iter().filter(|o| o.bridge != *bridge) {
            forward.push_str(&format!("    iifname \"{bridge}\" oifname \"{}\" drop\n", other.bridge));
        }
    }
    format!(
        "table ip {table} {{}}\ndelete table ip {table}\ntable ip {table} {{\n  chain postrouting {{\n    type nat hook postrouting priority srcnat; policy accept;\n{nat}  }}\n  chain forward {{\n    type filter hook forward priority filter; policy accept;\n{forward}  }}\n}}\n"
    )
}

async fn run_nft(script: &str) -> Result<()> {
    let mut child = tokio::process::Command::new("nft")
        .args(["-f", "-"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .map_err(|e| Error::Network(format!("cannot run nft (Debian's nftables package): {e}")))?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin.write_all(script.as_bytes()).await.map_err(|e| Error::Network(format!("cannot write to nft: {e}")))?;
    }
    let output = child.wait_with_output().await.map_err(|e| Error::Network(format!("nft failed: {e}")))?;
    if !output.status.success() {
        return Err(Error::Network(format!("nft failed: {}", String::from_utf8_lossy(&output.stderr).trim())));
    }
    Ok(())
}

/// Containers' traffic is routed through the host.
pub fn enable_forwarding() -> Result<()> {
    std::fs::write("/proc/sys/net/ipv4/ip_forward", "1")
        .map_err(|e| Error::Network(format!("cannot enable IPv4 forwarding: {e}")))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn rules_masquerade_isolate_and_replace_the_whole_table() {
        let networks = vec![
            BridgeRules { bridge: "st0".into(), subnet: "172.17.0.0/16".parse().unwrap(), internal: false },
            BridgeRules { bridge: "br-1".into(), subnet: "172.18.0.0/16".parse().unwrap(), internal: true },
        ];
        let table = Firewall::new("st-0").table().to_string();
        assert_eq!(table, "stratus_st_0");
        let script = render(&table, &networks);
        assert!(script.starts_with("table ip stratus_st_0 {}\ndelete table ip stratus_st_0\n"), "{script}");
        assert!(script.contains("ip saddr 172.17.0.0/16 oifname != \"st0\" masquerade"));
        assert!(!script.contains("172.18.0.0/16"), "an internal network is not masqueraded");
        assert!(script.contains("iifname \"br-1\" oifname != \"br-1\" drop"));
        assert!(script.contains("iifname \"st0\" oifname \"br-1\" drop"));
        assert!(script.contains("iifname \"br-1\" oifname \"st0\" drop"));
    }
}
