//! What `docker stats` and `docker top` show, read from the host: the container's cgroup (v1 or
//! v2) for memory, CPU time and pids, `/proc/stat` for the host's CPU time, and the host's `ps`
//! filtered to the container's processes (as dockerd does).

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

/// A sample of the cgroup at `cgroup` (such as `/stratus/<id>`).
pub fn sample(cgroup: &str) -> Stats {
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
    }
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
