//! Cleanup after a Stratus that could not shut down (SIGKILL, a crash): its containers die with
//! it (see `runtime`), and with them their veths, but bridges and the nftables table would stay.
//! So Stratus starts `stratus network-janitor` with a pipe as its stdin and tells it, one line
//! each, what it makes and what it deletes. When the pipe closes (Stratus is gone, however it
//! went), the janitor deletes what is still listed and exits. After a clean shutdown the list is
//! already empty.

use std::collections::BTreeSet;
use std::io::{BufRead, Write};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::sync::Mutex;

use crate::error::{Error, Result};
use crate::network::{firewall, link};

/// Stratus's end: the janitor's stdin.
pub struct Janitor {
    stdin: Mutex<std::process::ChildStdin>,
}

/// What the janitor is told.
pub enum Note<'a> {
    Bridge(&'a str),
    BridgeDeleted(&'a str),
    /// The table of the instance whose default bridge is this.
    Rules(&'a str),
    RulesDeleted,
}

impl Janitor {
    /// Starts `program network-janitor`; it outlives this process.
    pub fn spawn(program: &Path) -> Result<Janitor> {
        // A process group of its own: a Ctrl-C meant for Stratus must not end it first.
        let mut child = std::process::Command::new(program)
            .arg("network-janitor")
            .process_group(0)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::null())
            .spawn()
            .map_err(Error::io("cannot start the network janitor", program))?;
        let stdin = child.stdin.take().ok_or_else(|| Error::Network("the network janitor has no stdin".into()))?;
        Ok(Janitor { stdin: Mutex::new(stdin) })
    }

    pub fn note(&self, note: Note<'_>) {
        let line = match note {
            Note::Bridge(name) => format!("bridge {name}\n"),
            Note::BridgeDeleted(name) => format!("-bridge {name}\n"),
            Note::Rules(bridge) => format!("rules {bridge}\n"),
            Note::RulesDeleted => "-rules\n".to_string(),
        };
        let mut stdin = self.stdin.lock().unwrap_or_else(|p| p.into_inner());
        if let Err(error) = stdin.write_all(line.as_bytes()) {
            tracing::warn!(%error, "the network janitor is gone");
        }
    }
}

/// What is still to delete, from the notes read so far.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Leftovers {
    pub bridges: BTreeSet<String>,
    /// The default bridge naming the nftables table.
    pub rules: Option<String>,
}

impl Leftovers {
    pub fn apply(&mut self, line: &str) {
        match line.split_once(' ') {
            Some(("bridge", name)) => {
                self.bridges.insert(name.to_string());
            }
            Some(("-bridge", name)) => {
                self.bridges.remove(name);
            }
            Some(("rules", bridge)) => self.rules = Some(bridge.to_string()),
            _ if line == "-rules" => self.rules = None,
            _ => {}
        }
    }
}

/// The janitor process: reads notes until its stdin closes, then deletes the leftovers.
pub fn serve() -> Result<()> {
    let mut leftovers = Leftovers::default();
    for line in std::io::stdin().lock().lines() {
        let Ok(line) = line else { break };
        leftovers.apply(line.trim_end());
    }
    if leftovers == Leftovers::default() {
        return Ok(());
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| Error::Network(format!("cannot start the janitor's runtime: {e}")))?;
    runtime.block_on(async {
        for bridge in &leftovers.bridges {
            if let Err(error) = link::delete(bridge).await {
                tracing::warn!(%bridge, %error, "janitor: cannot delete the bridge");
            }
        }
        if let Some(bridge) = &leftovers.rules
            && let Err(error) = firewall::Firewall::new(bridge).remove().await
        {
            tracing::warn!(%error, "janitor: cannot remove the NAT rules");
        }
    });
    tracing::info!(bridges = leftovers.bridges.len(), "janitor: cleaned up after Stratus");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn notes_add_and_remove_leftovers() {
        let mut leftovers = Leftovers::default();
        for line in ["bridge st0", "bridge br-1", "rules st0", "-bridge br-1", "junk"] {
            leftovers.apply(line);
        }
        assert_eq!(leftovers.bridges.iter().collect::<Vec<_>>(), vec!["st0"]);
        assert_eq!(leftovers.rules.as_deref(), Some("st0"));
        leftovers.apply("-rules");
        leftovers.apply("-bridge st0");
        assert_eq!(leftovers, Leftovers::default());
    }
}
