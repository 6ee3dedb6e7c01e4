//! What a container may do beyond its namespaces: its capabilities (`--cap-add`, `--cap-drop`),
//! its seccomp filter (`--security-opt seccomp=...`), `--privileged`, `--read-only` and
//! `--security-opt no-new-privileges`, applied to the OCI spec the way Docker applies them.

use std::path::Path;
use std::str::FromStr;

use oci_spec::runtime::{
    Capability, LinuxCapabilitiesBuilder, LinuxDevice, LinuxDeviceBuilder, LinuxDeviceCgroupBuilder, LinuxDeviceType,
    Spec,
};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::seccomp::{self, Profile};
use crate::spec::CAPABILITIES;

/// A container's security settings. serde is for its store record only.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Security {
    /// All capabilities, every host device, no seccomp filter, `/sys` and `/proc` unmasked.
    pub privileged: bool,
    /// Capability names as Docker takes them (`NET_ADMIN`, `CAP_NET_ADMIN` or `ALL`).
    pub cap_add: Vec<String>,
    pub cap_drop: Vec<String>,
    pub read_only_rootfs: bool,
    pub no_new_privileges: bool,
    pub seccomp: Seccomp,
    /// `--userns=host`: no user namespace even with `--userns-remap`.
    pub host_userns: bool,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum Seccomp {
    /// Docker's default profile.
    #[default]
    Default,
    Unconfined,
    Custom(Profile),
}

impl Security {
    /// The capabilities the container gets, as Docker settles them: the default set (or every
    /// capability when `ALL` is added), less the dropped ones (all of them for `ALL`), plus the
    /// added ones. An unknown name is a 400.
    pub fn capabilities(&self) -> Result<Vec<Capability>> {
        if self.privileged {
            return Ok(all_capabilities());
        }
        let parse = |names: &[String], field: &str| -> Result<Vec<Capability>> {
            names
                .iter()
                .filter(|n| !n.eq_ignore_ascii_case("ALL"))
                .map(|name| {
                    let bare = name.to_ascii_uppercase();
                    Capability::from_str(bare.trim_start_matches("CAP_")).map_err(|_| {
                        Error::InvalidParameter(format!("invalid {field}: unknown capability: \"{name}\""))
                    })
                })
                .collect()
        };
        let has_all = |names: &[String]| names.iter().any(|n| n.eq_ignore_ascii_case("ALL"));
        let added = parse(&self.cap_add, "CapAdd")?;
        let dropped = parse(&self.cap_drop, "CapDrop")?;
        let base = if has_all(&self.cap_add) { all_capabilities() } else { CAPABILITIES.to_vec() };
        let mut caps: Vec<Capability> = if has_all(&self.cap_drop) {
            Vec::new()
        } else {
            base.into_iter().filter(|c| !dropped.contains(c)).collect()
        };
        for cap in added {
            if !caps.contains(&cap) {
                caps.push(cap);
            }
        }
        Ok(caps)
    }

    /// Checks what can be checked at create, so a bad setting is a 400 then rather than a failed
    /// start.
    pub fn validate(&self) -> Result<()> {
        let caps = self.capabilities()?;
        if let Seccomp::Custom(profile) = &self.seccomp {
            seccomp::resolve(profile, &caps, &seccomp::Host::this())?;
        }
        Ok(())
    }

    /// Applies these settings to a spec from [`crate::spec::build`].
    pub fn apply(&self, spec: &mut Spec) -> Result<()> {
        let invalid =
            |e: oci_spec::OciSpecError| Error::InvalidParameter(format!("cannot build the runtime spec: {e}"));
        let caps = self.capabilities()?;
        let mut process = spec.process().clone().unwrap_or_default();
        let set: oci_spec::runtime::Capabilities = caps.iter().copied().collect();
        process.set_capabilities(Some(
            LinuxCapabilitiesBuilder::default()
                .bounding(set.clone())
                .effective(set.clone())
                .permitted(set)
                // The builder's defaults would make some capabilities ambient, which Docker's
                // processes never get.
                .inheritable(oci_spec::runtime::Capabilities::new())
                .ambient(oci_spec::runtime::Capabilities::new())
                .build()
                .map_err(invalid)?,
        ));
        process.set_no_new_privileges(self.no_new_privileges.then_some(true));
        spec.set_process(Some(process));
        if let Some(root) = spec.root_mut() {
            root.set_readonly(Some(self.read_only_rootfs));
        }

        let mut linux = spec.linux().clone().unwrap_or_default();
        let host = seccomp::Host::this();
        linux.set_seccomp(match (&self.seccomp, self.privileged) {
            (Seccomp::Unconfined, _) | (_, true) => None,
            (Seccomp::Default, false) => Some(seccomp::resolve(&seccomp::default_profile(), &caps, &host)?),
            (Seccomp::Custom(profile), false) => Some(seccomp::resolve(profile, &caps, &host)?),
        });
        if self.privileged {
            linux.set_masked_paths(None);
            linux.set_readonly_paths(None);
            linux.set_devices(Some(host_devices(Path::new("/dev"))));
            let mut resources = linux.resources().clone().unwrap_or_default();
            let all = LinuxDeviceCgroupBuilder::default().allow(true).access("rwm").build().map_err(invalid)?;
            resources.set_devices(Some(vec![all]));
            linux.set_resources(Some(resources));
            // /sys and the cgroup tree are writable, as on the host.
            if let Some(mounts) = spec.mounts_mut() {
                for mount in mounts.iter_mut() {
                    if let Some(options) = mount.options_mut() {
                        options.retain(|o| o != "ro");
                    }
                }
            }
        }
        spec.set_linux(Some(linux));
        Ok(())
    }
}

/// Every capability Stratus itself may hold (its bounding set, which on some hosts lacks a few
/// the kernel knows: a container cannot be given more), in a stable order.
fn all_capabilities() -> Vec<Capability> {
    let bounding = caps::read(None, caps::CapSet::Bounding).unwrap_or_else(|_| caps::all());
    let mut all: Vec<Capability> = bounding
        .into_iter()
        .filter_map(|c| Capability::from_str(c.to_string().trim_start_matches("CAP_")).ok())
        .collect();
    all.sort_by_key(|c| c.to_string());
    all
}

/// The host's device nodes under `dir`, for a privileged container, leaving out what the
/// container mounts its own of (ptys, shared memory, message queues) and the host's console.
fn host_devices(dir: &Path) -> Vec<LinuxDevice> {
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    let mut devices = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else { return devices };
    for entry in entries.flatten() {
        let path = entry.path();
        let Ok(meta) = std::fs::symlink_metadata(&path) else { continue };
        let kind = meta.file_type();
        if kind.is_dir() {
            if !matches!(entry.file_name().to_str(), Some("pts" | "shm" | "mqueue" | ".lxc" | ".udev")) {
                devices.extend(host_devices(&path));
            }
            continue;
        }
        let typ = if kind.is_char_device() {
            LinuxDeviceType::C
        } else if kind.is_block_device() {
            LinuxDeviceType::B
        } else {
            continue;
        };
        if path == Path::new("/dev/console") {
            continue;
        }
        let rdev = meta.rdev();
        let device = LinuxDeviceBuilder::default()
            .path(&path)
            .typ(typ)
            .major(rustix::fs::major(rdev) as i64)
            .minor(rustix::fs::minor(rdev) as i64)
            .file_mode(meta.mode() & 0o7777)
            .uid(meta.uid())
            .gid(meta.gid())
            .build();
        devices.extend(device.ok());
    }
    devices
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn caps(add: &[&str], drop: &[&str]) -> Result<Vec<String>> {
        let security = Security {
            cap_add: add.iter().map(|s| s.to_string()).collect(),
            cap_drop: drop.iter().map(|s| s.to_string()).collect(),
            ..Security::default()
        };
        Ok(security.capabilities()?.iter().map(|c| c.to_string()).collect())
    }

    #[test]
    fn capabilities_settle_like_docker() {
        assert_eq!(caps(&[], &[]).unwrap().len(), 14);
        let added = caps(&["CAP_SYS_ADMIN", "net_admin"], &["CHOWN"]).unwrap();
        assert!(added.contains(&"SYS_ADMIN".into()) && added.contains(&"NET_ADMIN".into()));
        assert!(!added.contains(&"CHOWN".into()) && added.len() == 15);
        assert_eq!(caps(&["NET_RAW"], &["ALL"]).unwrap(), ["NET_RAW"]);
        assert!(caps(&["ALL"], &["MKNOD"]).unwrap().len() > 30);
        assert_eq!(caps(&["BOGUS"], &[]).unwrap_err().to_string(), "invalid CapAdd: unknown capability: \"BOGUS\"");
        let privileged = Security { privileged: true, ..Security::default() };
        assert_eq!(privileged.capabilities().unwrap().len(), all_capabilities().len());
    }

    #[test]
    fn settings_reach_the_spec() {
        let mut spec = Spec::default();
        Security::default().apply(&mut spec).unwrap();
        let seccomp = spec.linux().as_ref().unwrap().seccomp().as_ref().unwrap();
        assert!(seccomp.syscalls().as_ref().unwrap().len() > 10);
        let process = spec.process().as_ref().unwrap();
        assert_eq!(process.no_new_privileges(), None);
        let caps = process.capabilities().as_ref().unwrap();
        assert!(caps.ambient().as_ref().unwrap().is_empty() && caps.inheritable().as_ref().unwrap().is_empty());

        let mut spec = Spec::default();
        let security = Security {
            read_only_rootfs: true,
            no_new_privileges: true,
            seccomp: Seccomp::Unconfined,
            ..Security::default()
        };
        security.apply(&mut spec).unwrap();
        assert!(spec.linux().as_ref().unwrap().seccomp().is_none());
        assert_eq!(spec.root().as_ref().unwrap().readonly(), Some(true));
        assert_eq!(spec.process().as_ref().unwrap().no_new_privileges(), Some(true));

        let mut spec = Spec::default();
        Security { privileged: true, ..Security::default() }.apply(&mut spec).unwrap();
        let linux = spec.linux().as_ref().unwrap();
        assert!(linux.seccomp().is_none() && linux.masked_paths().is_none());
        assert!(linux.devices().as_ref().unwrap().iter().any(|d| d.path() == Path::new("/dev/null")));
        let sys = spec.mounts().as_ref().unwrap().iter().find(|m| m.destination() == Path::new("/sys")).unwrap();
        assert!(!sys.options().as_ref().unwrap().iter().any(|o| o == "ro"));
    }
}
