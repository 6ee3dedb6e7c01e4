//! What `docker stats` and `docker top` show, read from the host: the container's cgroup (v1 or
//! v2) for memory, CPU time, pids and block I/O, `/proc/stat` for the host's CPU time, its init's
//! `/proc/<pid>/net/dev` (its own network namespace's interfaces), and the host's `ps` filtered to
//! the container's processes (as dockerd does).

use std::fs;
use std::path::PathBuf;
use std::time::SystemTime;

use crate::error::{Error, Result};

/// One sample of a container's resource use.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    pub read: Option<SystemTime>,
    /// CPU time the container used, in nanoseconds.
    pub cpu_total_ns: u64,
    /// CPU time the whole host used, in nanoseconds (the denominator of CPU %).
    pub system_cpu_ns: u64,
    pub online_cpus: u32,
    pub memory_usage: u64,
    /// The limit, or the host's memory when there is none.
    pub memory_limit: u64,
    /// Page cache the kernel can drop (`docker stats` subtracts it from the usage).
    pub memory_inactive_file: u64,
    pub pids: u64,
    pub pids_limit: Option<u64>,
    /// Bytes read and written per device and operation, as the cgroup counts them.
    pub block_io: Vec<BlockIoBytes>,
    /// Its interfaces but loopback, by name.
    pub networks: Vec<(String, Interface)>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct BlockIoBytes {
    pub major: u64,
    pub minor: u64,
    /// As the cgroup names it: `Read`, `Write`... on v1, `read` or `write` on v2.
    pub op: String,
    pub value: u64,
}

/// One interface's counters, as `/proc/net/dev` has them.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Interface {
    pub rx_bytes: u64,
    pub rx_packets: u64,
    pub rx_errors: u64,
    pub rx_dropped: u64,
    pub tx_bytes: u64,
    pub tx_packets: u64,
    pub tx_errors: u64,
    pub tx_dropped: u64,
}

/// The container's cgroup directory under `controller` (v1), or its v2 directory.
fn cgroup_file(cgroup: &str, controller: &str, file: &str) -> Option<PathBuf> {
    let v1 = PathBuf::from(format!("/sys/fs/cgroup/{controller}{cgroup}/{file}"));
    let v2 = PathBuf::from(format!("/sys/fs/cgroup{cgroup}/{file}"));
    [v1, v2].into_iter().find(|p| p.exists())
}

fn read_number(cgroup: &str, controller: &str, files: &[&str]) -> Option<u64> {
    files.iter().find_map(|file| {
        let text = fs::read_to_string(cgroup_file(cgroup, controller, file)?).ok()?;
        text.trim().parse().ok()
    })
}

fn stat_field(text: &str, key: &str) -> Option<u64> {
    text.lines().find_map(|l| l.strip_prefix(key)?.strip_prefix(' ')?.trim().parse().ok())
}

/// A sample of the cgroup at `cgroup` (such as `/stratus/<id>`) and, while it runs, of the
/// network namespace of its init `pid`.
pub fn sample(cgroup: &str, pid: Option<i32>) -> Stats {
    let host_memory = fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|t| {
            t.lines().find_map(|l| l.strip_prefix("MemTotal:")?.trim().strip_suffix("kB")?.trim().parse().ok())
        })
        .map_or(0, |kib: u64| kib * 1024);
    let memory_limit = read_number(cgroup, "memory", &["memory.limit_in_bytes", "memory.max"])
        .filter(|limit| *limit < host_memory)
        .unwrap_or(host_memory);
    let memory_stat =
        cgroup_file(cgroup, "memory", "memory.stat").and_then(|p| fs::read_to_string(p).ok()).unwrap_or_default();
    let cpu_total_ns = read_number(cgroup, "cpuacct", &["cpuacct.usage"]).unwrap_or_else(|| {
        let text = cgroup_file(cgroup, "cpu", "cpu.stat").and_then(|p| fs::read_to_string(p).ok()).unwrap_or_default();
        stat_field(&text, "usage_usec").unwrap_or(0) * 1000
    });
    Stats {
        read: Some(SystemTime::now()),
        cpu_total_ns,
        system_cpu_ns: system_cpu_ns(),
        online_cpus: std::thread::available_parallelism().map_or(1, |n| n.get() as u32),
        memory_usage: read_number(cgroup, "memory", &["memory.usage_in_bytes", "memory.current"]).unwrap_or(0),
        memory_limit,
        memory_inactive_file: stat_field(&memory_stat, "total_inactive_file")
            .or_else(|| stat_field(&memory_stat, "inactive_file"))
            .unwrap_or(0),
        pids: read_number(cgroup, "pids", &["pids.current"]).unwrap_or(0),
        pids_limit: read_number(cgroup, "pids", &["pids.max"]),
        block_io: block_io(cgroup),
        networks: pid
            .and_then(|pid| fs::read_to_string(format!("/proc/{pid}/net/dev")).ok())
            .map(|text| parse_net_dev(&text))
            .unwrap_or_default(),
    }
}

/// v1's `blkio.throttle.io_service_bytes_recursive` (`8:0 Read 4096` lines, and totals, which
/// are left out), else v2's `io.stat` (`8:0 rbytes=4096 wbytes=0 ...`).
fn block_io(cgroup: &str) -> Vec<BlockIoBytes> {
    let device = |field: &str| -> Option<(u64, u64)> {
        let (major, minor) = field.split_once(':')?;
        Some((major.parse().ok()?, minor.parse().ok()?))
    };
    let read = |file| cgroup_file(cgroup, "blkio", file).and_then(|p| fs::read_to_string(p).ok());
    if let Some(text) = read("blkio.throttle.io_service_bytes_recursive") {
        return text
            .lines()
            .filter_map(|line| {
                let mut fields = line.split_whitespace();
                let (major, minor) = device(fields.next()?)?;
                let (op, value) = (fields.next()?, fields.next()?.parse().ok()?);
                Some(BlockIoBytes { major, minor, op: op.to_string(), value })
            })
            .collect();
    }
    let text = cgroup_file(cgroup, "io", "io.stat").and_then(|p| fs::read_to_string(p).ok()).unwrap_or_default();
    let mut entries = Vec::new();
    for line in text.lines() {
        let mut fields = line.split_whitespace();
        let Some((major, minor)) = fields.next().and_then(device) else { continue };
        for (key, op) in [("rbytes", "read"), ("wbytes", "write")] {
            let value = fields.clone().find_map(|f| f.strip_prefix(key)?.strip_prefix('=')?.parse().ok());
            if let Some(value) = value {
                entries.push(BlockIoBytes { major, minor, op: op.to_string(), value });
            }
        }
    }
    entries
}

/// `/proc/<pid>/net/dev`: a two-line heading, then `name: 8 receive counters 8 transmit ones`.
fn parse_net_dev(text: &str) -> Vec<(String, Interface)> {
    text.lines()
        .skip(2)
        .filter_map(|line| {
            let (name, counters) = line.split_once(':')?;
            let n: Vec<u64> = counters.split_whitespace().filter_map(|c| c.parse().ok()).collect();
            let name = name.trim();
            (name != "lo" && n.len() >= 16).then(|| {
                let interface = Interface {
                    rx_bytes: n[0],
                    rx_packets: n[1],
                    rx_errors: n[2],
                    rx_dropped: n[3],
                    tx_bytes: n[8],
                    tx_packets: n[9],
                    tx_errors: n[10],
                    tx_dropped: n[11],
                };
                (name.to_string(), interface)
            })
        })
        .collect()
}

/// The host's CPU time in nanoseconds: the first line of `/proc/stat`, in clock ticks (100 a
/// second on Linux, as dockerd assumes too).
fn system_cpu_ns() -> u64 {
    let text = fs::read_to_string("/proc/stat").unwrap_or_default();
    let ticks: u64 = text
        .lines()
        .next()
        .and_then(|l| l.strip_prefix("cpu "))
        .map(|fields| fields.split_whitespace().filter_map(|f| f.parse::<u64>().ok()).sum())
        .unwrap_or(0);
    ticks * 10_000_000
}

/// The processes in the cgroup.
fn pids(cgroup: &str) -> Vec<u32> {
    let Some(path) =
        cgroup_file(cgroup, "pids", "cgroup.procs").or_else(|| cgroup_file(cgroup, "memory", "cgroup.procs"))
    else {
        return Vec::new();
    };
    fs::read_to_string(path).unwrap_or_default().lines().filter_map(|l| l.trim().parse().ok()).collect()
}

/// `docker top`: the host's `ps` with `ps_args` (default `-ef`), the rows of the container's
/// processes only. Returns the titles and the rows.
pub async fn top(cgroup: &str, ps_args: &str) -> Result<(Vec<String>, Vec<Vec<String>>)> {
    let args: Vec<&str> = if ps_args.trim().is_empty() { vec!["-ef"] } else { ps_args.split_whitespace().collect() };
    let output =
        tokio::process::Command::new("ps").args(&args).output().await.map_err(Error::io("cannot run ps", "ps"))?;
    if !output.status.success() {
        return Err(Error::InvalidParameter(format!("ps: {}", String::from_utf8_lossy(&output.stderr).trim())));
    }
    parse_ps(&String::from_utf8_lossy(&output.stdout), &pids(cgroup))
}

fn parse_ps(text: &str, pids: &[u32]) -> Result<(Vec<String>, Vec<Vec<String>>)> {
    let mut lines = text.lines();
    let titles: Vec<String> = lines.next().unwrap_or_default().split_whitespace().map(str::to_string).collect();
    let pid_column = titles
        .iter()
        .position(|t| t == "PID")
        .ok_or_else(|| Error::InvalidParameter("Couldn't find PID field in ps output".into()))?;
    let mut rows = Vec::new();
    for line in lines {
        // The last column (the command) may hold spaces.
        let mut fields: Vec<String> = Vec::with_capacity(titles.len());
        let mut rest = line.trim_start();
        while fields.len() + 1 < titles.len() {
            let end = rest.find(char::is_whitespace).unwrap_or(rest.len());
            fields.push(rest[..end].to_string());
            rest = rest[end..].trim_start();
        }
        fields.push(rest.to_string());
        if fields.get(pid_column).and_then(|p| p.parse::<u32>().ok()).is_some_and(|p| pids.contains(&p)) {
            rows.push(fields);
        }
    }
    Ok((titles, rows))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn interfaces_but_loopback_are_read_from_net_dev() {
        let text = "Inter-|   Receive                                                |  Transmit\n \
                    face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier compressed\n    \
                    lo:     100       1    0    0    0     0          0         0      100       1    0    0    0     0       0          0\n  \
                    eth0:    1500      12    1    2    0     0          0         0      700       6    3    4    0     0       0          0\n";
        let networks = parse_net_dev(text);
        assert_eq!(networks.len(), 1);
        let (name, eth0) = &networks[0];
        assert_eq!(
            (name.as_str(), eth0.rx_bytes, eth0.rx_packets, eth0.rx_errors, eth0.rx_dropped),
            ("eth0", 1500, 12, 1, 2)
        );
        assert_eq!((eth0.tx_bytes, eth0.tx_packets, eth0.tx_errors, eth0.tx_dropped), (700, 6, 3, 4));
    }

    #[test]
    fn ps_rows_are_kept_for_the_containers_pids_only() {
        let ps = "UID PID PPID C STIME TTY TIME CMD\n\
                  root 1 0 0 10:00 ? 00:00:01 /sbin/init\n\
                  root 4242 4200 0 10:01 ? 00:00:00 sh -c sleep 30\n";
        let (titles, rows) = parse_ps(ps, &[4242]).unwrap();
        assert_eq!(titles.len(), 8);
        assert_eq!(rows, vec![vec!["root", "4242", "4200", "0", "10:01", "?", "00:00:00", "sh -c sleep 30"]]);
        assert!(parse_ps("USER COMMAND\n", &[]).is_err());
    }

    #[test]
    fn stat_files_parse() {
        assert_eq!(stat_field("cache 10\ntotal_inactive_file 4096\n", "total_inactive_file"), Some(4096));
        assert_eq!(stat_field("usage_usec 15\nuser_usec 5\n", "usage_usec"), Some(15));
        assert_eq!(stat_field("inactive_file_x 1\n", "inactive_file"), None);
    }
}
