//! Files synced every few pages as they are written, rather than once at the end: redb's file
//! (`Paced`, its storage backend) and history segments (`write_in_slices`).
//!
//! A checkpoint that rewrites thousands of records writes megabytes of pages, then syncs them. On
//! a disk with a write-back cache, that one sync flushes them all at once, and the write-ahead
//! log's syncs, which acknowledged writes wait for, queue behind it: with 4 MiB of pages, the
//! checkpoint's `fdatasync` took 16-18 ms and the log's syncs issued meanwhile 14-16 ms. Syncing
//! every `SLICE` bytes leaves any one log sync behind at most a slice (BENCHMARKS.md, "A
//! checkpoint's pages, synced as they are written").
//!
//! Only with `--fsync always`: with syncs at an interval no acknowledgement waits for a sync, and
//! the extra syncs only cost CPU and the disk's time (receive p99s at one connection 2.4-3.2 ms
//! with them, 1.6-2.4 ms without).
//!
//! The extra syncs change nothing redb relies on: the kernel may write back any dirty page at any
//! time anyway, and a commit is durable only at redb's own `sync_data`, which comes after every
//! page of the commit is written.

use std::fs::File;
use std::io::{self, Write};
use std::ops::Bound;
use std::sync::atomic::{AtomicU64, Ordering};

use redb::{BackendError, StorageBackend};

/// Bytes written between two syncs: eight of redb's pages. Of 32, 64, 128 and 256 KiB, the
/// smallest gave the lowest receive p99 at 250,000 queued messages, and sends as fast as the rest.
const SLICE: u64 = 32 << 10;

/// Writes `data` to the end of `file`, syncing each slice.
pub(crate) fn write_in_slices(file: &mut File, data: &[u8]) -> io::Result<()> {
    for slice in data.chunks(SLICE as usize) {
        file.write_all(slice)?;
        file.sync_data()?;
    }
    Ok(())
}

/// A redb storage backend that syncs `inner` every `SLICE` bytes written.
#[derive(Debug)]
pub(crate) struct Paced<B> {
    inner: B,
    /// Bytes written since the last sync.
    unsynced: AtomicU64,
}

impl<B> Paced<B> {
    pub fn new(inner: B) -> Self {
        Paced { inner, unsynced: AtomicU64::new(0) }
    }
}

impl<B: StorageBackend> StorageBackend for Paced<B> {
    fn len(&self) -> io::Result<u64> {
        self.inner.len()
    }

    fn read(&self, offset: u64, out: &mut [u8]) -> io::Result<()> {
        self.inner.read(offset, out)
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        self.inner.set_len(len)
    }

    fn sync_data(&self) -> io::Result<()> {
        self.unsynced.store(0, Ordering::Relaxed);
        self.inner.sync_data()
    }

    fn write(&self, offset: u64, data: &[u8]) -> io::Result<()> {
        self.inner.write(offset, data)?;
        let len = data.len() as u64;
        if self.unsynced.fetch_add(len, Ordering::Relaxed) + len >= SLICE { self.sync_data() } else { Ok(()) }
    }

    fn close(&self) -> io::Result<()> {
        self.inner.close()
    }

    // The locks that keep a second process from opening the file are the inner backend's.
    fn try_lock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<bool, BackendError> {
        self.inner.try_lock_range(start, end)
    }

    fn try_lock_shared_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<bool, BackendError> {
        self.inner.try_lock_shared_range(start, end)
    }

    fn lock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<(), BackendError> {
        self.inner.lock_range(start, end)
    }

    fn lock_shared_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<(), BackendError> {
        self.inner.lock_shared_range(start, end)
    }

    fn unlock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<(), BackendError> {
        self.inner.unlock_range(start, end)
    }

    fn query_lock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<bool, BackendError> {
        self.inner.query_lock_range(start, end)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::AtomicUsize;

    use redb::backends::InMemoryBackend;

    use super::*;

    /// An in-memory backend that counts its syncs.
    #[derive(Debug)]
    struct Counted(InMemoryBackend, Arc<AtomicUsize>);

    impl StorageBackend for Counted {
        fn len(&self) -> io::Result<u64> {
            self.0.len()
        }
        fn read(&self, offset: u64, out: &mut [u8]) -> io::Result<()> {
            self.0.read(offset, out)
        }
        fn set_len(&self, len: u64) -> io::Result<()> {
            self.0.set_len(len)
        }
        fn sync_data(&self) -> io::Result<()> {
            self.1.fetch_add(1, Ordering::Relaxed);
            self.0.sync_data()
        }
        fn write(&self, offset: u64, data: &[u8]) -> io::Result<()> {
            self.0.write(offset, data)
        }
    }

    #[test]
    fn syncs_once_a_slice_and_at_the_callers_sync() {
        let syncs = Arc::new(AtomicUsize::new(0));
        let paced = Paced::new(Counted(InMemoryBackend::new(), syncs.clone()));
        paced.set_len(1 << 20).unwrap();
        let page = [7u8; 4096];
        for i in 0..20 {
            paced.write(i * 4096, &page).unwrap();
        }
        // 80 KiB: a sync after the 8th and the 16th page.
        assert_eq!(syncs.load(Ordering::Relaxed), 2);
        paced.sync_data().unwrap();
        assert_eq!(syncs.load(Ordering::Relaxed), 3);
        // The count starts again from the caller's sync.
        for i in 0..7 {
            paced.write(i * 4096, &page).unwrap();
        }
        assert_eq!(syncs.load(Ordering::Relaxed), 3);
        let mut out = [0u8; 4096];
        paced.read(19 * 4096, &mut out).unwrap();
        assert_eq!(out, page);
    }

    #[test]
    fn a_database_on_it_keeps_its_commits() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db");
        let table: redb::TableDefinition<u64, &[u8]> = redb::TableDefinition::new("t");
        let open = || {
            let file =
                std::fs::OpenOptions::new().read(true).write(true).create(true).truncate(false).open(&path).unwrap();
            redb::Database::builder()
                .create_with_backend(Paced::new(redb::backends::FileBackend::new(file).unwrap()))
                .unwrap()
        };
        {
            let db = open();
            let txn = db.begin_write().unwrap();
            {
                let mut t = txn.open_table(table).unwrap();
                for i in 0..1000u64 {
                    t.insert(i, &[i as u8; 500][..]).unwrap();
                }
            }
            txn.commit().unwrap();
        }
        let db = open();
        let t = redb::ReadableDatabase::begin_read(&db).unwrap().open_table(table).unwrap();
        assert_eq!(redb::ReadableTableMetadata::len(&t).unwrap(), 1000);
        assert_eq!(t.get(999).unwrap().unwrap().value(), &[999u64 as u8; 500][..]);
    }
}
