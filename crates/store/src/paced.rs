//! Files written out to the disk a slice at a time as they are written, rather than all at once at
//! the end: redb's file (`Paced`, its storage backend) and history segments (`write_in_slices`).
//!
//! A checkpoint that rewrites thousands of records writes megabytes of pages, then syncs them. On
//! a disk with a write-back cache, the first flush after those writes pays for all of them, and
//! the write-ahead log's syncs, which acknowledged writes wait for, queue behind it: with 4 MiB of
//! pages, the checkpoint's `fdatasync` took 16-18 ms and the log's syncs issued meanwhile 14-16 ms.
//! History segments, which are not synced, went to the disk ~30 s later in the kernel's writeback,
//! in bursts a log sync then waited behind for up to hundreds of ms.
//!
//! Each slice is written out with `sync_file_range`, which waits until the disk has taken it but
//! flushes nothing and commits no journal: the log's next sync carries it, and carries only the
//! slices written since the one before (BENCHMARKS.md, "A checkpoint's pages, written out as they
//! are written"). Syncing each slice with `fdatasync` instead did as well with one server, but a
//! new segment's sync commits the journal, which waits for every other file's newly allocated
//! data; checkpoints then lagged, and a log that outgrows its preallocated size waits for the
//! journal too (100 ms p99s with four servers sharing the disk).
//!
//! None of this changes what redb relies on: the kernel may write back any dirty page at any time
//! anyway, and a commit is durable only at redb's own `sync_data`.

use std::fs::File;
use std::io::{self, Write};
use std::ops::Bound;
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use redb::backends::FileBackend;
use redb::{BackendError, StorageBackend};

/// Bytes written between two write-outs: eight of redb's pages. Of 32, 64, 128 and 256 KiB, the
/// smallest gave the lowest receive p99 at 250,000 queued messages, and sends as fast as the rest.
const SLICE: u64 = 32 << 10;

/// Writes `data` to the end of `file`, writing each slice out.
pub(crate) fn write_in_slices(file: &mut File, data: &[u8]) -> io::Result<()> {
    for slice in data.chunks(SLICE as usize) {
        file.write_all(slice)?;
        write_out(file)?;
    }
    Ok(())
}

/// Writes `file`'s dirty pages to the disk and waits until it has taken them; no flush of the
/// disk's cache. Hand-written: rustix does not wrap `sync_file_range`.
#[allow(unsafe_code)]
fn write_out(file: &File) -> io::Result<()> {
    let flags = libc::SYNC_FILE_RANGE_WAIT_BEFORE | libc::SYNC_FILE_RANGE_WRITE | libc::SYNC_FILE_RANGE_WAIT_AFTER;
    // SAFETY: a system call on a descriptor `file` keeps open, with plain integers; it reads and
    // writes none of this process's memory. Offset 0 and length 0 mean the whole file.
    let rc = unsafe { libc::sync_file_range(file.as_raw_fd(), 0, 0, flags) };
    if rc == 0 { Ok(()) } else { Err(io::Error::last_os_error()) }
}

/// redb's file, written out every `SLICE` bytes.
#[derive(Debug)]
pub(crate) struct Paced {
    inner: FileBackend,
    /// The same file, for `write_out`: FileBackend does not lend its descriptor.
    file: File,
    /// Bytes written since the last write-out or sync.
    unwritten: AtomicU64,
    /// Set while writers wait for the checkpoint: no log sync is then waiting to be protected, and
    /// writing out slice by slice only makes the wait longer.
    hurry: Arc<AtomicBool>,
}

impl Paced {
    pub fn new(file: File, hurry: Arc<AtomicBool>) -> Result<Self, redb::DatabaseError> {
        let handle = file.try_clone()?;
        Ok(Paced { inner: FileBackend::new(file)?, file: handle, unwritten: AtomicU64::new(0), hurry })
    }
}

impl StorageBackend for Paced {
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
        self.unwritten.store(0, Ordering::Relaxed);
        self.inner.sync_data()
    }

    fn write(&self, offset: u64, data: &[u8]) -> io::Result<()> {
        self.inner.write(offset, data)?;
        if self.hurry.load(Ordering::Relaxed) {
            return Ok(());
        }
        let len = data.len() as u64;
        if self.unwritten.fetch_add(len, Ordering::Relaxed) + len < SLICE {
            return Ok(());
        }
        self.unwritten.store(0, Ordering::Relaxed);
        write_out(&self.file)
    }

    fn close(&self) -> io::Result<()> {
        self.inner.close()
    }

    // The locks that keep a second process from opening the file are FileBackend's.
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
    use super::*;

    #[test]
    fn a_file_written_in_slices_holds_every_byte() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("segment");
        let data: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
        write_in_slices(&mut File::create(&path).unwrap(), &data).unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), data);
    }

    #[test]
    fn a_database_on_it_keeps_its_commits_and_its_lock() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db");
        let table: redb::TableDefinition<u64, &[u8]> = redb::TableDefinition::new("t");
        let open = || {
            let file =
                std::fs::OpenOptions::new().read(true).write(true).create(true).truncate(false).open(&path).unwrap();
            redb::Database::builder().create_with_backend(Paced::new(file, Arc::default()).unwrap())
        };
        {
            let db = open().unwrap();
            // FileBackend's lock, forwarded: a second open of the same file is refused.
            assert!(open().is_err());
            let txn = db.begin_write().unwrap();
            {
                let mut t = txn.open_table(table).unwrap();
                for i in 0..1000u64 {
                    t.insert(i, &[i as u8; 500][..]).unwrap();
                }
            }
            txn.commit().unwrap();
        }
        let db = open().unwrap();
        let t = redb::ReadableDatabase::begin_read(&db).unwrap().open_table(table).unwrap();
        assert_eq!(redb::ReadableTableMetadata::len(&t).unwrap(), 1000);
        assert_eq!(t.get(999).unwrap().unwrap().value(), &[999u64 as u8; 500][..]);
    }
}
