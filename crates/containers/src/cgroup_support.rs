//! dockerd's checks of a container's limits against what this host's cgroups can do: a limit the
//! host cannot apply is discarded with dockerd's warning, and a blkio weight out of range or a
//! cpuset naming CPUs or memory nodes the host lacks is refused with dockerd's message.

use std::collections::BTreeSet;
use std::sync::OnceLock;

use crate::cgroup::Hierarchies;
use crate::error::{Error, Result};
use crate::spec::Limits;

/// What the host's cgroup hierarchy offers, read once.
#[derive(Debug, Default)]
struct Support {
    /// The CPUs and memory nodes, as cpuset lists; `None` without a cpuset controller.
    cpus: Option<String>,
    mems: Option<String>,
    weight: bool,
    weight_device: bool,
    read_bps: bool,
    write_bps: bool,
    read_iops: bool,
    write_iops: bool,
}

fn support() -> &'static Support {
    static SUPPORT: OnceLock<Support> = OnceLock::new();
    SUPPORT.get_or_init(|| probe(Hierarchies::host()))
}

/// What the cgroup v1 hierarchies offer (wherever they are mounted), else cgroup v2.
fn probe(hierarchies: &Hierarchies) -> Support {
    match hierarchies {
        Hierarchies::V1(_) => {
            let path = |controller: &str, file: &str| hierarchies.v1_mount(controller).map(|m| m.join(file));
            let read =
                |controller, file| std::fs::read_to_string(path(controller, file)?).ok().map(|s| s.trim().to_string());
            let exists = |file| path("blkio", file).is_some_and(|p| p.exists());
            Support {
                cpus: read("cpuset", "cpuset.cpus"),
                mems: read("cpuset", "cpuset.mems"),
                weight: exists("blkio.weight") || exists("blkio.bfq.weight"),
                weight_device: exists("blkio.weight_device") || exists("blkio.bfq.weight_device"),
                read_bps: exists("blkio.throttle.read_bps_device"),
                write_bps: exists("blkio.throttle.write_bps_device"),
                read_iops: exists("blkio.throttle.read_iops_device"),
                write_iops: exists("blkio.throttle.write_iops_device"),
            }
        }
        Hierarchies::V2 { root, controllers } => {
            let read = |file: &str| std::fs::read_to_string(root.join(file)).ok().map(|s| s.trim().to_string());
            let exists = |file: &str| root.join(file).exists();
            let io = controllers.iter().any(|c| c == "io");
            Support {
                cpus: read("cpuset.cpus.effective"),
                mems: read("cpuset.mems.effective"),
                weight: io && (exists("io.weight") || exists("io.bfq.weight")),
                weight_device: io && exists("io.weight"),
                read_bps: io,
                write_bps: io,
                read_iops: io,
                write_iops: io,
            }
        }
    }
}

/// Checks `limits` as dockerd does at create and update; returns its warnings.
pub fn check(limits: &mut Limits) -> Result<Vec<String>> {
    check_against(limits, support())
}

fn check_against(limits: &mut Limits, host: &Support) -> Result<Vec<String>> {
    let mut warnings = Vec::new();
    if (limits.cpuset_cpus.is_some() || limits.cpuset_mems.is_some()) && host.cpus.is_none() {
        warnings.push("Your kernel does not support cpuset or the cgroup is not mounted. Cpuset discarded.".into());
        limits.cpuset_cpus = None;
        limits.cpuset_mems = None;
    }
    for (asked, available, what) in [
        (&limits.cpuset_cpus, &host.cpus, ("cpuset cpus", "CPUs")),
        (&limits.cpuset_mems, &host.mems, ("cpuset mems", "memory nodes")),
    ] {
        let (Some(asked), Some(available)) = (asked, available) else { continue };
        let requested = parse_list(asked)
            .ok_or_else(|| Error::InvalidParameter(format!("Invalid value {asked} for {}", what.0)))?;
        if !requested.is_subset(&parse_list(available).unwrap_or_default()) {
            return Err(Error::InvalidParameter(format!(
                "Requested {} are not available - requested {asked}, available: {available}",
                what.1
            )));
        }
    }
    let io = &mut limits.block_io;
    if io.weight.is_some() && !host.weight {
        warnings.push(
            "Your kernel does not support Block I/O weight or the cgroup is not mounted. Weight discarded.".into(),
        );
        io.weight = None;
    }
    if io.weight.is_some_and(|w| !(10..=1000).contains(&w)) {
        return Err(Error::InvalidParameter("Range of blkio weight is from 10 to 1000".into()));
    }
    discard(
        &mut io.weight_devices,
        host.weight_device,
        &mut warnings,
        "Your kernel does not support Block I/O weight_device or the cgroup is not mounted. Weight-device discarded.",
    );
    discard(
        &mut io.read_bps,
        host.read_bps,
        &mut warnings,
        "Your kernel does not support BPS Block I/O read limit or the cgroup is not mounted. Block I/O BPS read limit discarded.",
    );
    discard(
        &mut io.write_bps,
        host.write_bps,
        &mut warnings,
        "Your kernel does not support BPS Block I/O write limit or the cgroup is not mounted. Block I/O BPS write limit discarded.",
    );
    discard(
        &mut io.read_iops,
        host.read_iops,
        &mut warnings,
        "Your kernel does not support IOPS Block read limit or the cgroup is not mounted. Block I/O IOPS read limit discarded.",
    );
    discard(
        &mut io.write_iops,
        host.write_iops,
        &mut warnings,
        "Your kernel does not support IOPS Block write limit or the cgroup is not mounted. Block I/O IOPS write limit discarded.",
    );
    Ok(warnings)
}

fn discard<T>(limits: &mut Vec<T>, supported: bool, warnings: &mut Vec<String>, warning: &str) {
    if !limits.is_empty() && !supported {
        warnings.push(warning.to_string());
        limits.clear();
    }
}

/// A cpuset list (`0-2,4`) as its members; `None` if malformed.
fn parse_list(list: &str) -> Option<BTreeSet<u32>> {
    let mut members = BTreeSet::new();
    for part in list.split(',').filter(|p| !p.is_empty()) {
        let (low, high): (u32, u32) = match part.split_once('-') {
            Some((low, high)) => (low.parse().ok()?, high.parse().ok()?),
            None => (part.parse().ok()?, part.parse().ok()?),
        };
        if low > high {
            return None;
        }
        members.extend(low..=high);
    }
    Some(members)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::spec::{BlockIo, DeviceLimit};

    #[test]
    fn limits_the_host_cannot_apply_are_discarded_and_impossible_ones_refused() {
        let host = Support { cpus: Some("0-1".into()), mems: Some("0".into()), write_bps: true, ..Support::default() };
        let device = DeviceLimit { path: "/dev/vda".into(), value: 1 << 20 };
        let mut limits = Limits {
            cpuset_cpus: Some("1".into()),
            block_io: BlockIo {
                weight: Some(300),
                write_bps: vec![device.clone()],
                read_bps: vec![device.clone()],
                ..BlockIo::default()
            },
            ..Limits::default()
        };
        let warnings = check_against(&mut limits, &host).unwrap();
        assert_eq!(warnings.len(), 2, "{warnings:?}");
        assert!(warnings[0].contains("Weight discarded") && warnings[1].contains("BPS read limit discarded"));
        assert_eq!(
            (limits.block_io.weight, limits.block_io.write_bps.len(), limits.block_io.read_bps.len()),
            (None, 1, 0)
        );
        assert_eq!(limits.cpuset_cpus.as_deref(), Some("1"));

        let refused = |limits: Limits| check_against(&mut limits.clone(), &host).unwrap_err().to_string();
        assert!(
            refused(Limits { cpuset_cpus: Some("0-3".into()), ..Limits::default() })
                .contains("Requested CPUs are not available - requested 0-3, available: 0-1")
        );
        assert!(
            refused(Limits { cpuset_mems: Some("x".into()), ..Limits::default() })
                .contains("Invalid value x for cpuset mems")
        );
        let weighty = Support { weight: true, ..Support::default() };
        let mut heavy = Limits { block_io: BlockIo { weight: Some(5), ..BlockIo::default() }, ..Limits::default() };
        assert!(check_against(&mut heavy, &weighty).unwrap_err().to_string().contains("from 10 to 1000"));
        assert_eq!(parse_list("0-2,4"), Some([0, 1, 2, 4].into()));
        assert_eq!(parse_list("2-1"), None);
    }
}
