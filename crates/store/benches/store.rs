//! Store benchmark: durable 1 KiB writes from 1, 8 and 64 concurrent writers, and range scans,
//! for the Stratus store (redb, group commit) and SQLite (WAL, synchronous=FULL) in the same run.
//!
//!     cargo bench -p store                      # 3 s per measurement
//!     BENCH_SECONDS=10 BENCH_DIR=/var/tmp cargo bench -p store
//!
//! Both write to a fresh directory under BENCH_DIR (default: the system temp dir), so both pay the
//! same fsync. Each SQLite writer is a thread with its own connection, as concurrent processes or
//! pooled connections would be; each Stratus writer is a task sharing one store.

// A benchmark fails by panicking; unwrap is how it says so.
#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use store::{Store, StoreOptions};

const VALUE_SIZE: usize = 1024;
const SCAN_KEYS: usize = 100_000;
const SCAN_LIMIT: usize = 100;

struct Measured {
    ops: usize,
    elapsed: Duration,
    latencies: Vec<Duration>,
}

impl Measured {
    fn ops_per_second(&self) -> f64 {
        self.ops as f64 / self.elapsed.as_secs_f64()
    }
    fn percentile_ms(&mut self, p: f64) -> f64 {
        self.latencies.sort_unstable();
        let index = ((self.latencies.len() as f64 * p) as usize).min(self.latencies.len().saturating_sub(1));
        self.latencies.get(index).map_or(f64::NAN, |d| d.as_secs_f64() * 1000.0)
    }
    fn merge(parts: Vec<(usize, Vec<Duration>)>, elapsed: Duration) -> Self {
        let ops = parts.iter().map(|(n, _)| n).sum();
        Measured { ops, elapsed, latencies: parts.into_iter().flat_map(|(_, l)| l).collect() }
    }
}

fn main() {
    let seconds: u64 = std::env::var("BENCH_SECONDS").ok().and_then(|s| s.parse().ok()).unwrap_or(3);
    let duration = Duration::from_secs(seconds);
    let base = std::env::var_os("BENCH_DIR").map_or_else(std::env::temp_dir, Into::into);
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    let value = vec![0x5a_u8; VALUE_SIZE];

    println!("store benchmark: {seconds} s per measurement, data under {}", base.display());
    println!();
    println!("durable {VALUE_SIZE} B puts");
    header("writers");
    for writers in [1, 8, 64] {
        let dir = tempfile::tempdir_in(&base).unwrap();
        let store = store::open(&dir.path().join("stratus"), StoreOptions::default()).unwrap();
        let ours = runtime.block_on(stratus_puts(store.clone(), writers, duration, &value));
        runtime.block_on(store.close());
        let theirs = sqlite_puts(&dir.path().join("sqlite.db"), writers, duration, &value);
        row(&writers.to_string(), ours, theirs);
    }

    println!();
    println!("range scans: {SCAN_LIMIT} consecutive keys from a random start, {SCAN_KEYS} keys stored, 1 reader");
    let dir = tempfile::tempdir_in(&base).unwrap();
    let store = store::open(&dir.path().join("stratus"), StoreOptions::default()).unwrap();
    let ours = runtime.block_on(stratus_scans(store.clone(), duration, &value));
    runtime.block_on(store.close());
    let theirs = sqlite_scans(&dir.path().join("sqlite.db"), duration, &value);
    header("");
    row("scan", ours, theirs);
}

fn header(first: &str) {
    println!(
        "{first:>8} | {:>12} {:>8} {:>8} | {:>12} {:>8} {:>8} | {:>8}",
        "stratus op/s", "p50 ms", "p99 ms", "sqlite op/s", "p50 ms", "p99 ms", "ratio"
    );
}

fn row(label: &str, mut ours: Measured, mut theirs: Measured) {
    println!(
        "{label:>8} | {:>12.0} {:>8.3} {:>8.3} | {:>12.0} {:>8.3} {:>8.3} | {:>7.1}x",
        ours.ops_per_second(),
        ours.percentile_ms(0.50),
        ours.percentile_ms(0.99),
        theirs.ops_per_second(),
        theirs.percentile_ms(0.50),
        theirs.percentile_ms(0.99),
        ours.ops_per_second() / theirs.ops_per_second()
    );
}

fn key(writer: usize, n: usize) -> Vec<u8> {
    format!("bench/{writer:03}/{n:012}").into_bytes()
}

async fn stratus_puts(store: Arc<dyn Store>, writers: usize, duration: Duration, value: &[u8]) -> Measured {
    let started = Instant::now();
    let tasks: Vec<_> = (0..writers)
        .map(|writer| {
            let store = store.clone();
            let value = value.to_vec();
            tokio::spawn(async move {
                let mut latencies = Vec::new();
                while started.elapsed() < duration {
                    let op = Instant::now();
                    store.put(&key(writer, latencies.len()), &value).await.unwrap();
                    latencies.push(op.elapsed());
                }
                (latencies.len(), latencies)
            })
        })
        .collect();
    let mut parts = Vec::new();
    for task in tasks {
        parts.push(task.await.unwrap());
    }
    Measured::merge(parts, started.elapsed())
}

fn sqlite(path: &std::path::Path) -> rusqlite::Connection {
    let connection = rusqlite::Connection::open(path).unwrap();
    connection.pragma_update(None, "journal_mode", "WAL").unwrap();
    connection.pragma_update(None, "synchronous", "FULL").unwrap();
    connection.busy_timeout(Duration::from_secs(60)).unwrap();
    connection
        .execute("CREATE TABLE IF NOT EXISTS kv (k BLOB PRIMARY KEY, v BLOB NOT NULL) WITHOUT ROWID", [])
        .unwrap();
    connection
}

fn sqlite_puts(path: &std::path::Path, writers: usize, duration: Duration, value: &[u8]) -> Measured {
    drop(sqlite(path)); // create the schema before the writers race for it
    let started = Instant::now();
    let threads: Vec<_> = (0..writers)
        .map(|writer| {
            let path = path.to_path_buf();
            let value = value.to_vec();
            std::thread::spawn(move || {
                let connection = sqlite(&path);
                let mut insert = connection.prepare("INSERT OR REPLACE INTO kv (k, v) VALUES (?1, ?2)").unwrap();
                let mut latencies = Vec::new();
                while started.elapsed() < duration {
                    let op = Instant::now();
                    insert.execute((key(writer, latencies.len()), &value)).unwrap();
                    latencies.push(op.elapsed());
                }
                (latencies.len(), latencies)
            })
        })
        .collect();
    let parts = threads.into_iter().map(|t| t.join().unwrap()).collect();
    Measured::merge(parts, started.elapsed())
}

async fn stratus_scans(store: Arc<dyn Store>, duration: Duration, value: &[u8]) -> Measured {
    for chunk in (0..SCAN_KEYS).collect::<Vec<_>>().chunks(1000) {
        let ops = chunk.iter().map(|&n| store::Op::put(key(0, n), value)).collect();
        store.txn(store::Txn::ops(ops)).await.unwrap();
    }
    let started = Instant::now();
    let mut latencies = Vec::new();
    while started.elapsed() < duration {
        let start = key(0, fastrand::usize(0..SCAN_KEYS - SCAN_LIMIT));
        let op = Instant::now();
        let found = store.range(&start, b"bench0", Some(SCAN_LIMIT)).await.unwrap();
        latencies.push(op.elapsed());
        assert_eq!(found.len(), SCAN_LIMIT);
    }
    Measured { ops: latencies.len(), elapsed: started.elapsed(), latencies }
}

fn sqlite_scans(path: &std::path::Path, duration: Duration, value: &[u8]) -> Measured {
    let mut connection = sqlite(path);
    let load = connection.transaction().unwrap();
    for n in 0..SCAN_KEYS {
        load.execute("INSERT INTO kv (k, v) VALUES (?1, ?2)", (key(0, n), value)).unwrap();
    }
    load.commit().unwrap();
    let mut scan = connection.prepare("SELECT k, v FROM kv WHERE k >= ?1 ORDER BY k LIMIT ?2").unwrap();
    let started = Instant::now();
    let mut latencies = Vec::new();
    while started.elapsed() < duration {
        let start = key(0, fastrand::usize(0..SCAN_KEYS - SCAN_LIMIT));
        let op = Instant::now();
        let rows: Vec<(Vec<u8>, Vec<u8>)> = scan
            .query_map((start, SCAN_LIMIT as i64), |row| Ok((row.get(0)?, row.get(1)?)))
            .unwrap()
            .map(Result::unwrap)
            .collect();
        latencies.push(op.elapsed());
        assert_eq!(rows.len(), SCAN_LIMIT);
    }
    Measured { ops: latencies.len(), elapsed: started.elapsed(), latencies }
}
