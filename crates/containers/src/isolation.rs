//! What isolates a running container, read from the kernel (`/proc/<pid>/...`, the cgroup
//! filesystem) for the learning view `/_stratus/containers/<id>/isolation`: its namespaces next
//! to Stratus's own, its cgroups with their limits and live usage, its mounts, and its network
//! endpoints.

use std::fs;
use std::os::unix::fs::MetadataExt;

use crate::engine::{Engine, Status};
use crate::error::{Error, Result};
use crate::network::Endpoint;

/// The namespace kinds `/proc/<pid>/ns/` shows.
const NAMESPACES: [&str; 8] = ["pid", "mnt", "net", "uts", "ipc", "cgroup", "user", "time"];

/// The cgroup files worth showing, per controller: limits, then usage.
const CGROUP_FILES: [(&str, &[&str]); 4] = [
    ("memory", &["memory.limit_in_bytes", "memory.usage_in_bytes", "memory.max", "memory.current"]),
    ("pids", &["pids.max", "pids.current"]),
    ("cpu", &["cpu.cfs_quota_us", "cpu.cfs_period_us", "cpu.shares", "cpu.max", "cpu.weight"]),
    ("cpuacct", &["cpuacct.usage"]),
];

pub struct Namespace {
    pub kind: &'static str,
    /// The namespace's inode in the container and in Stratus: equal means shared.
    pub container: Option<u64>,
    pub host: Option<u64>,
}

pub struct Cgroup {
    /// `memory`, `pids,...`; empty for the unified (v2) hierarchy.
    pub controllers: String,
    pub path: String,
    /// File name and content, for the files that exist.
    pub values: Vec<(String, String)>,
}

pub struct Mount {
    pub target: String,
    pub fs_type: String,
    pub source: String,
    pub options: String,
}

pub struct Isolation {
    pub id: String,
    pub pid: i32,
    pub namespaces: Vec<Namespace>,
    pub cgroups: Vec<Cgroup>,
    pub mounts: Vec<Mount>,
    pub endpoints: Vec<Endpoint>,
}

impl Engine {
    /// The isolation of a running container, as the kernel reports it now.
    pub fn isolation(&self, reference: &str) -> Result<Isolation> {
        let container = self.inspect(reference)?;
        let pid = container.state.pid;
        if container.state.status != Status::Running || pid <= 0 {
            return Err(Error::Conflict(format!("container {} is not running", container.id)));
        }
        let inode = |path: String| fs::metadata(path).ok().map(|m| m.ino());
        let namespaces = NAMESPACES
            .iter()
            .map(|kind| Namespace {
                kind,
                container: inode(format!("/proc/{pid}/ns/{kind}")),
                host: inode(format!("/proc/self/ns/{kind}")),
            })
            .collect();
        let cgroups = parse_cgroups(&fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap_or_default())
            .into_iter()
            .map(|(controllers, path)| {
                let values = cgroup_values(&controllers, &path);
                Cgroup { controllers, path, values }
            })
            .collect();
        let mounts = parse_mountinfo(&fs::read_to_string(format!("/proc/{pid}/mountinfo")).unwrap_or_default());
        let (endpoints, _) = self.networks().container_endpoints(&container.id);
        Ok(Isolation { id: container.id, pid, namespaces, cgroups, mounts, endpoints })
    }
}

/// `/proc/<pid>/cgroup`: `hierarchy:controllers:path` per line.
fn parse_cgroups(text: &str) -> Vec<(String, String)> {
    text.lines()
        .filter_map(|line| {
            let mut fields = line.splitn(3, ':');
            let (_, controllers, path) = (fields.next()?, fields.next()?, fields.next()?);
            Some((controllers.to_string(), path.to_string()))
        })
        .filter(|(controllers, _)| !controllers.starts_with("name="))
        .collect()
}

fn cgroup_values(controllers: &str, path: &str) -> Vec<(String, String)> {
    // v1 mounts each controller (or a comma-joined group) under its own directory; v2 has one
    // tree, mounted at /sys/fs/cgroup/unified on hybrid hosts.
    let roots: Vec<String> = if controllers.is_empty() {
        vec!["/sys/fs/cgroup/unified".into(), "/sys/fs/cgroup".into()]
    } else {
        vec![format!("/sys/fs/cgroup/{controllers}")]
    };
    let files = CGROUP_FILES
        .iter()
        .filter(|(controller, _)| controllers.is_empty() || controllers.split(',').any(|c| c == *controller))
        .flat_map(|(_, files)| files.iter());
    let mut values = Vec::new();
    for file in files {
        let value = roots.iter().find_map(|root| fs::read_to_string(format!("{root}{path}/{file}")).ok());
        if let Some(value) = value {
            values.push((file.to_string(), value.trim().to_string()));
        }
    }
    values
}

/// `/proc/<pid>/mountinfo`: the mount point is the 5th field, options the 6th; after the ` - `
/// separator come the filesystem type and the source.
fn parse_mountinfo(text: &str) -> Vec<Mount> {
    text.lines()
        .filter_map(|line| {
            let (before, after) = line.split_once(" - ")?;
            let fields: Vec<&str> = before.split(' ').collect();
            let mut rest = after.split(' ');
            Some(Mount {
                target: fields.get(4)?.to_string(),
                options: fields.get(5)?.to_string(),
                fs_type: rest.next()?.to_string(),
                source: rest.next().unwrap_or_default().to_string(),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_files_parse() {
        let cgroups = parse_cgroups("12:pids:/stratus/abc\n1:name=systemd:/x\n0::/stratus/abc\n4:cpu,cpuacct:/s\n");
        assert_eq!(
            cgroups,
            vec![
                ("pids".to_string(), "/stratus/abc".to_string()),
                (String::new(), "/stratus/abc".to_string()),
                ("cpu,cpuacct".to_string(), "/s".to_string()),
            ]
        );
        let mounts = parse_mountinfo(
            "22 1 0:21 / / rw,relatime - overlay overlay rw,lowerdir=/l\n30 22 0:5 / /proc rw - proc proc rw\n",
        );
        let summary: Vec<String> = mounts.iter().map(|m| format!("{} {} {}", m.target, m.fs_type, m.source)).collect();
        assert_eq!(summary, vec!["/ overlay overlay", "/proc proc proc"]);
    }
}
