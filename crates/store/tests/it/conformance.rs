//! Every behaviour of the `Store` trait, checked on the redb and the memory engine alike, and on
//! redb with a periodic sync (where a transaction submitted alone is committed by its caller).

use std::sync::Arc;
use std::time::Duration;

use store::{Compare, EventKind, Fsync, Op, Store, StoreError, StoreOptions, Txn};

type Fixture = (Arc<dyn Store>, Option<tempfile::TempDir>);

fn memory() -> Fixture {
    (store::ephemeral(StoreOptions::default()).expect("memory store"), None)
}

fn redb() -> Fixture {
    let dir = tempfile::tempdir().expect("tempdir");
    (store::open(dir.path(), StoreOptions::default()).expect("redb store"), Some(dir))
}

fn redb_synced_periodically() -> Fixture {
    let dir = tempfile::tempdir().expect("tempdir");
    let options = StoreOptions { fsync: Fsync::Every(Duration::from_millis(10)), ..StoreOptions::default() };
    (store::open(dir.path(), options).expect("redb store"), Some(dir))
}

// Two worker threads, as callers that commit inline then contend for the turn.
macro_rules! on_every_engine {
    ($($case:ident),* $(,)?) => {
        mod memory_engine { $( #[tokio::test(flavor = "multi_thread", worker_threads = 2)] async fn $case() { super::$case(super::memory()).await } )* }
        mod redb_engine { $( #[tokio::test(flavor = "multi_thread", worker_threads = 2)] async fn $case() { super::$case(super::redb()).await } )* }
        mod redb_synced_periodically { $( #[tokio::test(flavor = "multi_thread", worker_threads = 2)] async fn $case() { super::$case(super::redb_synced_periodically()).await } )* }
    };
}

on_every_engine!(
    put_get_and_revisions,
    range_is_ordered_and_bounded,
    compare_and_set,
    deletes_take_a_revision_only_when_they_delete,
    concurrent_writers_serialise,
    transactions_commit_in_submission_order,
    watch_replays_then_streams,
    watch_from_compacted_revision_fails,
    closed_store_refuses_writes_and_ends_watches,
);

async fn put_get_and_revisions((store, _dir): Fixture) {
    assert_eq!(store.revision(), 0);
    assert_eq!(store.put(b"a", b"1").await.unwrap().revision, 1);
    assert_eq!(store.put(b"a", b"2").await.unwrap().revision, 2);
    assert_eq!(store.put(b"b", b"x").await.unwrap().revision, 3);
    let a = store.get(b"a").await.unwrap().unwrap();
    assert_eq!((&a.value[..], a.create_revision, a.mod_revision, a.version), (&b"2"[..], 1, 2, 2));
    assert_eq!(store.get(b"missing").await.unwrap(), None);
    assert_eq!(store.revision(), 3);
    // Several ops in one transaction share one revision.
    let r = store.txn(Txn::ops(vec![Op::put(*b"c", *b"1"), Op::put(*b"d", *b"1")])).await.unwrap();
    assert_eq!(r.revision, 4);
    assert_eq!(store.get(b"d").await.unwrap().unwrap().mod_revision, 4);
}

async fn range_is_ordered_and_bounded((store, _dir): Fixture) {
    for key in ["sqs/b", "sqs/a", "sns/x", "sqs/c", "sqs0"] {
        store.put(key.as_bytes(), b"v").await.unwrap();
    }
    let keys = |kvs: Vec<store::KeyValue>| {
        kvs.into_iter().map(|kv| String::from_utf8(kv.key.to_vec()).unwrap()).collect::<Vec<_>>()
    };
    let end = store::prefix_end(b"sqs/");
    assert_eq!(keys(store.range(b"sqs/", &end, None).await.unwrap()), ["sqs/a", "sqs/b", "sqs/c"]);
    assert_eq!(keys(store.range(b"sqs/", &end, Some(2)).await.unwrap()), ["sqs/a", "sqs/b"]);
    assert_eq!(keys(store.range(b"sqs/b", b"", None).await.unwrap()), ["sqs/b", "sqs/c", "sqs0"]);
    assert_eq!(store.range(b"z", b"a", None).await.unwrap(), vec![], "an inverted range is empty");
    assert_eq!(store.count(b"sqs/", &end).await.unwrap(), 3);
    assert_eq!(store.count(b"", b"").await.unwrap(), 5);
}

async fn compare_and_set((store, _dir): Fixture) {
    let create = Txn { compares: vec![Compare::absent(*b"k")], success: vec![Op::put(*b"k", *b"v1")], failure: vec![] };
    let first = store.txn(create.clone()).await.unwrap();
    assert!(first.succeeded);
    let again = store.txn(create).await.unwrap();
    assert!(!again.succeeded, "the key exists now");
    assert_eq!(again.revision, first.revision, "a transaction that changes nothing takes no revision");

    let stale = Txn {
        compares: vec![Compare::ModRevision { key: b"k".to_vec(), revision: first.revision + 100 }],
        success: vec![Op::put(*b"k", *b"lost")],
        failure: vec![Op::put(*b"conflicts", *b"1")],
    };
    let r = store.txn(stale).await.unwrap();
    assert!(!r.succeeded);
    assert_eq!(&*store.get(b"k").await.unwrap().unwrap().value, b"v1");
    assert_eq!(store.get(b"conflicts").await.unwrap().unwrap().mod_revision, r.revision, "failure ops ran");

    let by_value = Txn {
        compares: vec![Compare::Value { key: b"k".to_vec(), value: b"v1".to_vec() }],
        success: vec![Op::put(*b"k", *b"v2")],
        failure: vec![],
    };
    assert!(store.txn(by_value.clone()).await.unwrap().succeeded);
    assert!(!store.txn(by_value).await.unwrap().succeeded);
}

async fn deletes_take_a_revision_only_when_they_delete((store, _dir): Fixture) {
    store.put(b"p/1", b"").await.unwrap();
    store.put(b"p/2", b"").await.unwrap();
    store.put(b"q", b"").await.unwrap();
    assert_eq!(store.delete(b"nothing").await.unwrap().revision, 3);
    let r = store
        .txn(Txn::ops(vec![Op::DeleteRange { start: b"p/".to_vec(), end: store::prefix_end(b"p/") }]))
        .await
        .unwrap();
    assert_eq!(r.revision, 4);
    assert_eq!(store.count(b"", b"").await.unwrap(), 1);
    // Re-creating a deleted key starts its life over.
    store.put(b"p/1", b"again").await.unwrap();
    let kv = store.get(b"p/1").await.unwrap().unwrap();
    assert_eq!((kv.create_revision, kv.version), (5, 1));
    store.txn(Txn::ops(vec![Op::DeleteRange { start: Vec::new(), end: Vec::new() }])).await.unwrap();
    assert_eq!(store.count(b"", b"").await.unwrap(), 0);
}

/// 64 tasks increment one counter with compare-and-set; group commit must not lose or merge any.
async fn concurrent_writers_serialise((store, _dir): Fixture) {
    let writers: Vec<_> = (0..64)
        .map(|_| {
            let store = store.clone();
            tokio::spawn(async move {
                let mut revisions = Vec::new();
                for _ in 0..20 {
                    loop {
                        let current = store.get(b"counter").await.unwrap();
                        let (n, seen) = current.map_or((0, 0), |kv| {
                            (String::from_utf8(kv.value.to_vec()).unwrap().parse::<u64>().unwrap(), kv.mod_revision)
                        });
                        let txn = Txn {
                            compares: vec![Compare::ModRevision { key: b"counter".to_vec(), revision: seen }],
                            success: vec![Op::put(*b"counter", (n + 1).to_string().as_bytes())],
                            failure: vec![],
                        };
                        let r = store.txn(txn).await.unwrap();
                        if r.succeeded {
                            revisions.push(r.revision);
                            break;
                        }
                    }
                }
                revisions
            })
        })
        .collect();
    let mut revisions = Vec::new();
    for writer in writers {
        revisions.extend(writer.await.unwrap());
    }
    revisions.sort();
    revisions.dedup();
    assert_eq!(revisions.len(), 64 * 20, "every successful increment has its own revision");
    assert_eq!(&*store.get(b"counter").await.unwrap().unwrap().value, b"1280");
}

/// Commit order is submission order, whatever order the answers are awaited in; and a
/// transaction whose answer is dropped unawaited still commits.
async fn transactions_commit_in_submission_order((store, _dir): Fixture) {
    let first = store.put(b"k", b"1");
    let dropped = store.put(b"k", b"2");
    let last = store.put(b"other", b"3");
    drop(dropped);
    let last = last.await.unwrap();
    let first = first.await.unwrap();
    assert!(first.revision < last.revision);
    assert_eq!(&*store.get(b"k").await.unwrap().unwrap().value, b"2");

    drop(store.put(b"alone", b"4"));
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while store.get(b"alone").await.unwrap().is_none() {
        assert!(std::time::Instant::now() < deadline, "a dropped transaction never committed");
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

async fn watch_replays_then_streams((store, _dir): Fixture) {
    store.put(b"sqs/a", b"1").await.unwrap(); // 1
    store.put(b"sns/x", b"1").await.unwrap(); // 2
    store.put(b"sqs/b", b"1").await.unwrap(); // 3
    let mut from_start = store.watch(b"sqs/", 1).await.unwrap();
    let mut only_new = store.watch(b"sqs/", 0).await.unwrap();
    store.delete(b"sqs/a").await.unwrap(); // 4
    store.put(b"sns/y", b"1").await.unwrap(); // 5
    store.put(b"sqs/c", b"2").await.unwrap(); // 6

    let mut seen = Vec::new();
    for _ in 0..4 {
        let event = tokio::time::timeout(Duration::from_secs(5), from_start.next()).await.unwrap().unwrap().unwrap();
        seen.push((event.kind, event.kv.key.to_vec(), event.revision()));
    }
    assert_eq!(
        seen,
        vec![
            (EventKind::Put, b"sqs/a".to_vec(), 1),
            (EventKind::Put, b"sqs/b".to_vec(), 3),
            (EventKind::Delete, b"sqs/a".to_vec(), 4),
            (EventKind::Put, b"sqs/c".to_vec(), 6),
        ]
    );
    let first_new = tokio::time::timeout(Duration::from_secs(5), only_new.next()).await.unwrap().unwrap().unwrap();
    assert_eq!(first_new.revision(), 4);
    assert!(tokio::time::timeout(Duration::from_millis(50), from_start.next()).await.is_err(), "nothing more");
}

async fn watch_from_compacted_revision_fails((store, _dir): Fixture) {
    for i in 0..10u8 {
        store.put(b"k", &[i]).await.unwrap();
    }
    store.compact(6).await.unwrap();
    match store.watch(b"", 3).await {
        Err(StoreError::Compacted { requested: 3, compacted: 6 }) => {}
        other => panic!("expected Compacted, got {:?}", other.map(|_| ())),
    }
    let mut watch = store.watch(b"", 6).await.unwrap();
    let event = watch.next().await.unwrap().unwrap();
    assert_eq!((event.revision(), &event.kv.value[..]), (6, &[5u8][..]));
}

async fn closed_store_refuses_writes_and_ends_watches((store, _dir): Fixture) {
    store.put(b"k", b"v").await.unwrap();
    let mut watch = store.watch(b"", 0).await.unwrap();
    store.close().await;
    assert!(matches!(store.put(b"k", b"w").await, Err(StoreError::Closed)));
    assert!(tokio::time::timeout(Duration::from_secs(5), watch.next()).await.unwrap().is_none());
    assert_eq!(&*store.get(b"k").await.unwrap().unwrap().value, b"v", "reads still work");
}

#[tokio::test]
async fn redb_keeps_data_revision_and_history_across_reopen() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = store::open(dir.path(), StoreOptions::default()).unwrap();
        store.put(b"a", b"1").await.unwrap();
        store.put(b"a", b"2").await.unwrap();
        store.compact(2).await.unwrap();
        store.close().await;
    }
    let store = store::open(dir.path(), StoreOptions::default()).unwrap();
    assert_eq!(store.revision(), 2);
    assert_eq!(store.get(b"a").await.unwrap().unwrap().version, 2);
    assert!(matches!(store.watch(b"", 1).await, Err(StoreError::Compacted { .. })));
    let mut watch = store.watch(b"", 2).await.unwrap();
    assert_eq!(&*watch.next().await.unwrap().unwrap().kv.value, b"2");
    assert_eq!(store.put(b"b", b"").await.unwrap().revision, 3);
}

/// History is the write-ahead log's records, kept in a segment file per checkpoint.
#[tokio::test]
async fn redb_history_spans_checkpoints_and_reopens_and_compaction_deletes_segments() {
    let dir = tempfile::tempdir().unwrap();
    let segments = || std::fs::read_dir(dir.path().join("history")).unwrap().count();
    let options = StoreOptions { checkpoint_bytes: 4 << 10, ..StoreOptions::default() };
    let value = vec![7u8; 512];
    // Ten sessions, each closed with a checkpoint: at least ten segments, however far the
    // checkpoint thread (at a lower priority) lags behind the writes.
    for session in 0..10u32 {
        let store = store::open(dir.path(), options.clone()).unwrap();
        for i in 0..10u32 {
            store.put(&i.to_be_bytes(), &value).await.unwrap();
        }
        assert_eq!(store.get(&0u32.to_be_bytes()).await.unwrap().unwrap().version, u64::from(session) + 1);
        store.close().await;
    }
    assert!(segments() >= 10, "a checkpoint at least every session: {} segments", segments());
    let store = store::open(dir.path(), options).unwrap();
    let mut watch = store.watch(b"", 1).await.unwrap();
    for revision in 1..=100 {
        let event = watch.next().await.unwrap().unwrap();
        assert_eq!((event.revision(), event.kv.version), (revision, (revision - 1) / 10 + 1));
    }
    store.put(b"after", b"").await.unwrap();
    assert_eq!(watch.next().await.unwrap().unwrap().revision(), 101, "then it streams");

    let before = segments();
    store.compact(90).await.unwrap();
    // In the background, within moments.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while segments() >= before && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(segments() < before, "compaction deletes the segments it passes");
    assert!(matches!(store.watch(b"", 89).await, Err(StoreError::Compacted { .. })));
    assert_eq!(store.watch(b"", 90).await.unwrap().next().await.unwrap().unwrap().revision(), 90);
}

#[tokio::test]
async fn a_lost_history_segment_is_a_compacted_range_not_missing_events() {
    let dir = tempfile::tempdir().unwrap();
    let options = StoreOptions { checkpoint_bytes: 1 << 10, ..StoreOptions::default() };
    // Four sessions, each closed with a checkpoint: at least four segments.
    for session in 0..4u32 {
        let store = store::open(dir.path(), options.clone()).unwrap();
        for i in session * 10..(session + 1) * 10 {
            store.put(&i.to_be_bytes(), &[1; 256]).await.unwrap();
        }
        store.close().await;
    }
    let mut names: Vec<_> = std::fs::read_dir(dir.path().join("history")).unwrap().map(|e| e.unwrap().path()).collect();
    names.sort();
    assert!(names.len() >= 3);
    std::fs::remove_file(&names[1]).unwrap();
    let store = store::open(dir.path(), options).unwrap();
    let mut watch = store.watch(b"", 1).await.unwrap();
    let mut revisions = Vec::new();
    let error = loop {
        match watch.next().await.unwrap() {
            Ok(event) => revisions.push(event.revision()),
            Err(error) => break error,
        }
    };
    assert!(matches!(error, StoreError::Compacted { .. }), "{error:?}");
    assert_eq!(revisions, (1..=revisions.len() as u64).collect::<Vec<_>>(), "events before the gap, in order");
    assert_eq!(store.count(b"", b"").await.unwrap(), 40, "history lost is not data lost");
}

#[tokio::test]
async fn scheduled_compaction_keeps_at_least_one_interval() {
    let options = StoreOptions { compaction_interval: Duration::from_millis(100), ..StoreOptions::default() };
    let store = store::ephemeral(options).unwrap();
    store.put(b"k", b"1").await.unwrap();
    tokio::time::sleep(Duration::from_millis(150)).await; // first tick: compacts to 0, remembers 1
    store.put(b"k", b"2").await.unwrap();
    assert!(store.watch(b"", 1).await.is_ok(), "revision 1 is still within the retained interval");
    // Two ticks later history before revision 2 is gone.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while store.watch(b"", 1).await.is_ok() {
        assert!(tokio::time::Instant::now() < deadline, "history was never compacted");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(store.watch(b"", 2).await.is_ok(), "the last interval is kept");
}

#[tokio::test]
async fn history_is_compacted_when_it_outgrows_its_byte_limit() {
    let dir = tempfile::tempdir().unwrap();
    let options = StoreOptions { history_limit_bytes: 64 << 10, ..StoreOptions::default() };
    for store in [store::ephemeral(options.clone()).unwrap(), store::open(dir.path(), options).unwrap()] {
        let value = vec![7u8; 1024];
        for i in 0..200u32 {
            store.put(&i.to_be_bytes(), &value).await.unwrap();
        }
        assert!(matches!(store.watch(b"", 1).await, Err(StoreError::Compacted { .. })), "{}", store.backend());
        let mut recent = store.watch(b"", 190).await.unwrap();
        assert_eq!(recent.next().await.unwrap().unwrap().revision(), 190, "the newest history is kept");
        assert_eq!(store.count(b"", b"").await.unwrap(), 200, "compaction drops history, never data");
        store.close().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_compaction_keeps_data_and_the_newest_history() {
    // Thousands of commits compacted at once: the memory engine frees them in a thread of its own.
    let options = StoreOptions { history_limit_bytes: 256 << 10, ..StoreOptions::default() };
    let store = store::ephemeral(options).unwrap();
    for i in 0..12_000u32 {
        store.put(&i.to_be_bytes(), b"v").await.unwrap();
    }
    assert!(matches!(store.watch(b"", 1).await, Err(StoreError::Compacted { .. })));
    let mut recent = store.watch(b"", 11_990).await.unwrap();
    assert_eq!(recent.next().await.unwrap().unwrap().revision(), 11_990, "the newest history is kept");
    assert_eq!(store.count(b"", b"").await.unwrap(), 12_000, "compaction drops history, never data");
    assert_eq!(&*store.get(&5u32.to_be_bytes()).await.unwrap().unwrap().value, b"v");
    store.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transaction_committed_as_submitted_says_so() {
    let memory = store::ephemeral(StoreOptions::default()).unwrap();
    let mut submitted = memory.put(b"k", b"v");
    let outcome = submitted.outcome_now().expect("the memory engine commits in the caller's thread");
    assert_eq!(outcome.unwrap().revision, 1);
    assert_eq!(&*memory.get(b"k").await.unwrap().unwrap().value, b"v");

    let dir = tempfile::tempdir().unwrap();
    let durable = store::open(dir.path(), StoreOptions::default()).unwrap();
    let mut submitted = durable.put(b"k", b"v");
    assert!(submitted.outcome_now().is_none(), "a durable commit waits for its sync");
    assert_eq!(submitted.await.unwrap().revision, 1);
    durable.close().await;
}
