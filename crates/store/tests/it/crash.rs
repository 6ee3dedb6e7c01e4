//! Crash test: writers commit multi-key transactions while the process is killed with SIGKILL at
//! random moments; after each restart every acknowledged transaction must be there, whole, and no
//! transaction may be visible in part.
//!
//! The writer runs in a child process: this same test binary, re-executed to run `writer_process`
//! with `STORE_CRASH_DIR` set (without it, that entry does nothing). It runs once syncing every
//! commit, and once with a background sync so rare that it never runs: a SIGKILL must lose nothing
//! acknowledged either way, since the kernel keeps what the process wrote.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::time::Duration;

use store::{Compare, Durability, Fsync, Op, StoreOptions, Txn};

const WRITERS: usize = 8;
const CYCLES: usize = 20;
const PADDING: usize = 1024;

#[test]
fn acknowledged_writes_survive_sigkill() {
    crash_cycles("always");
}

#[test]
fn acknowledged_writes_survive_sigkill_without_waiting_for_the_disk() {
    crash_cycles("never in this test");
}

/// The policy the writer process runs with, named by `STORE_CRASH_FSYNC`.
fn fsync_policy(name: &str) -> Fsync {
    match name {
        "always" => Fsync::Always,
        _ => Fsync::Every(Duration::from_secs(3600)),
    }
}

fn crash_cycles(fsync: &str) {
    let dir = tempfile::tempdir().unwrap();
    let exe = std::env::current_exe().unwrap();
    let mut acked: Vec<(usize, u64)> = Vec::new();
    for cycle in 0..CYCLES {
        let mut child = Command::new(&exe)
            .args(["crash::writer_process", "--exact", "--nocapture", "--test-threads=1"])
            .env("STORE_CRASH_DIR", dir.path())
            .env("STORE_CRASH_FSYNC", fsync)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let reader = std::thread::spawn(move || {
            let mut acks = Vec::new();
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                let mut fields = line.split_whitespace();
                if fields.next() == Some("ACK") {
                    let writer = fields.next().unwrap().parse().unwrap();
                    let seq = fields.next().unwrap().parse().unwrap();
                    acks.push((writer, seq));
                }
            }
            acks
        });
        std::thread::sleep(Duration::from_millis(fastrand::u64(30..300)));
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        let acks = reader.join().unwrap();
        acked.extend(acks);
        verify(dir.path(), &acked, cycle);
        eprintln!("cycle {cycle}: {} acknowledged so far", acked.len());
    }
    assert!(acked.len() > CYCLES * 10, "the writers made progress: {} acks", acked.len());
}

fn key(writer: usize, seq: u64, part: &str) -> Vec<u8> {
    format!("w{writer}/{seq:010}/{part}").into_bytes()
}

fn counter(writer: usize) -> Vec<u8> {
    format!("counter/{writer}").into_bytes()
}

fn verify(dir: &std::path::Path, acked: &[(usize, u64)], cycle: usize) {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    runtime.block_on(async {
        let store = store::open(dir, StoreOptions::default()).unwrap();
        let all = store.range(b"w", b"x", None).await.unwrap();
        let mut parts: BTreeMap<(usize, u64), BTreeSet<String>> = BTreeMap::new();
        for kv in &all {
            let text = String::from_utf8(kv.key.to_vec()).unwrap();
            let mut fields = text.trim_start_matches('w').split('/');
            let writer: usize = fields.next().unwrap().parse().unwrap();
            let seq: u64 = fields.next().unwrap().parse().unwrap();
            assert!(kv.value.starts_with(format!("{writer}:{seq}:").as_bytes()), "cycle {cycle}: value of {text}");
            assert!(kv.mod_revision <= store.revision(), "cycle {cycle}: {text} is newer than the store");
            parts.entry((writer, seq)).or_default().insert(fields.next().unwrap().to_string());
        }
        for ((writer, seq), found) in &parts {
            assert_eq!(found.len(), 3, "cycle {cycle}: torn transaction w{writer}/{seq}: {found:?}");
        }
        for &(writer, seq) in acked {
            assert!(parts.contains_key(&(writer, seq)), "cycle {cycle}: acknowledged w{writer}/{seq} is lost");
        }
        for writer in 0..WRITERS {
            let seqs: Vec<u64> = parts.keys().filter(|(w, _)| *w == writer).map(|(_, s)| *s).collect();
            assert!(seqs.iter().copied().eq(0..seqs.len() as u64), "cycle {cycle}: w{writer} has gaps");
            let last =
                store.get(&counter(writer)).await.unwrap().map(|kv| String::from_utf8(kv.value.to_vec()).unwrap());
            assert_eq!(last, seqs.last().map(|s| s.to_string()), "cycle {cycle}: counter of w{writer}");
        }
        store.close().await;
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writer_process() {
    let Some(dir) = std::env::var_os("STORE_CRASH_DIR") else { return };
    // A small log, so that kills land before, during and after checkpoints.
    let fsync = fsync_policy(&std::env::var("STORE_CRASH_FSYNC").unwrap_or_default());
    let options = StoreOptions { checkpoint_bytes: 64 << 10, fsync, ..StoreOptions::default() };
    let store = store::open(std::path::Path::new(&dir), options).unwrap();
    for writer in 0..WRITERS {
        let store = store.clone();
        tokio::spawn(async move {
            let last = store.get(&counter(writer)).await.unwrap();
            let (mut seq, mut seen) = match last {
                Some(kv) => {
                    (String::from_utf8(kv.value.to_vec()).unwrap().parse::<u64>().unwrap() + 1, kv.mod_revision)
                }
                None => (0, 0),
            };
            loop {
                let value = format!("{writer}:{seq}:{}", "x".repeat(PADDING)).into_bytes();
                let txn = Txn {
                    compares: vec![Compare::ModRevision { key: counter(writer), revision: seen }],
                    success: vec![
                        Op::put(key(writer, seq, "a"), value.clone()),
                        Op::put(key(writer, seq, "b"), value.clone()),
                        Op::put(key(writer, seq, "c"), value),
                        Op::put(counter(writer), seq.to_string().as_bytes()),
                    ],
                    failure: vec![],
                };
                // Half the writers ask only for their records to be written: a kill must not lose
                // those either, nor leave a gap that the synced writes' records then follow.
                let durability = if writer % 2 == 0 { Durability::Synced } else { Durability::Written };
                let response = store.txn_with(txn, durability).await.unwrap();
                assert!(response.succeeded, "only this writer changes its counter");
                let mut out = std::io::stdout().lock();
                writeln!(out, "ACK {writer} {seq}").unwrap();
                out.flush().unwrap();
                seen = response.revision;
                seq += 1;
            }
        });
    }
    // Runs until the parent kills this process.
    std::future::pending::<()>().await;
}
