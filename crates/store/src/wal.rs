//! The write-ahead log in front of redb.
//!
//! A durable redb commit rewrites and fsyncs every B-tree page the commit touched, which costs
//! ~40 µs per 1 KiB write even in batches of 64 on this class of machine. So a group commit instead
//! appends the events it produced to this log (one `write` and one `fdatasync`) and keeps its changes
//! in memory. Every few MiB a checkpoint commits them to redb durably and empties the log: the
//! engine keeps two, and switches to the other at each checkpoint, so that writes go on while
//! redb syncs. On open, the entries newer than redb's last durable revision are applied again.
//!
//! The file is reused rather than truncated, and filled with zeros up to its expected size when
//! created, because overwriting blocks in place makes `fdatasync` about half as expensive as
//! appending here (no size or block allocation to write to the inode, which costs a second
//! synchronous write). It starts
//! with a 16-byte header: a magic number and the current epoch, which every checkpoint increments.
//! Then records: `u32` payload length, `u32` CRC-32 of epoch and payload, payload. Payload: per
//! revision a `u64` revision, a `u32` length and that revision's events (`engine::encode_events`).
//! The first record that is cut short or fails its CRC ends the log: either it was being
//! written when the process died (and its commit was never acknowledged), or it is left over from
//! an earlier epoch.
//!
//! With [`Fsync::Every`], an append returns once its record is written to the file, without
//! waiting for the disk, and a thread of the log's own syncs the file within that interval. With
//! [`Fsync::Always`], so does an append its caller says need not wait (`sync == false`: a record
//! of changes that at-least-once delivery may lose, such as an SQS receive's), synced by that
//! thread within [`WRITTEN_SYNC_DELAY`] or by the next append that waits, whichever comes
//! first. A written record is in the kernel's page cache, so it survives the process being
//! killed (`kill -9`, a panic, an OOM kill); only a power loss or a kernel crash can lose the
//! records of the last interval, and since the first record that is cut short ends the log, what
//! survives is always a prefix of what was acknowledged. Message brokers make the same trade by default (Kafka and NATS
//! JetStream acknowledge from the page cache, Redis syncs its append-only file every second).

use std::fs::{File, OpenOptions};
use std::io::Read;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::Duration;

use crate::{Result, Revision, StoreError};

/// When the log reaches the disk, relative to acknowledging a write.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Fsync {
    /// Every append waits for `fdatasync`: an acknowledged write survives a power loss.
    #[default]
    Always,
    /// Appends are synced every this often in the background: an acknowledged write survives the
    /// process dying, and a power loss loses at most the last interval.
    Every(Duration),
}

/// How soon, with [`Fsync::Always`], a record appended without a sync reaches the disk at the
/// latest: short, so that a power loss loses only the last moments of such records, and not zero,
/// so that a stream of them shares each sync. Unit tests make it long enough to see what is left
/// unsynced.
#[cfg(not(test))]
const WRITTEN_SYNC_DELAY: Duration = Duration::from_millis(10);
#[cfg(test)]
const WRITTEN_SYNC_DELAY: Duration = Duration::from_secs(600);

const MAGIC: &[u8; 8] = b"STRATWAL";
const HEADER: u64 = 16;

pub(crate) struct Wal {
    file: Arc<SyncedFile>,
    /// Wakes the sync thread, which ends when this is dropped.
    wake_syncer: SyncSender<()>,
    fsync: Fsync,
    epoch: u64,
    /// Where the next record goes.
    end: u64,
}

/// One revision's encoded events.
pub(crate) type Entry = (Revision, Vec<u8>);

impl Wal {
    /// Opens (or creates) the log and returns the entries of its intact records, in order. The file
    /// is extended with zeros to at least `size` bytes.
    pub fn open(path: &Path, size: u64, fsync: Fsync) -> Result<(Wal, Vec<Entry>)> {
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)
            .map_err(StoreError::engine)?;
        // Read into the page cache a page at a time (no readahead): see `preallocate`. Only a
        // hint; a filesystem that refuses it still holds a good log.
        let _ = rustix::fs::fadvise(&file, 0, None, rustix::fs::Advice::Random);
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes).map_err(StoreError::engine)?;
        let epoch = match bytes.get(..HEADER as usize) {
            Some(header) if header.starts_with(MAGIC) => {
                u64::from_le_bytes(header[8..16].try_into().unwrap_or_default())
            }
            _ => 0, // new, or never got past its header: nothing in it was acknowledged
        };
        let (entries, intact) = if epoch == 0 { (Vec::new(), 0) } else { parse(&bytes[HEADER as usize..], epoch) };
        preallocate(&file, bytes.len() as u64, size)?;
        let file = Arc::new(SyncedFile {
            file,
            unsynced: AtomicBool::new(false),
            syncing: Mutex::new(()),
            failed: AtomicBool::new(false),
        });
        let delay = match fsync {
            Fsync::Always => WRITTEN_SYNC_DELAY,
            Fsync::Every(interval) => interval,
        };
        let (wake_syncer, woken) = std::sync::mpsc::sync_channel(1);
        let weak = Arc::downgrade(&file);
        std::thread::Builder::new()
            .name("stratus-wal-sync".into())
            .spawn(move || sync_when_woken(weak, woken, delay))
            .map_err(StoreError::engine)?;
        let mut wal = Wal { file, wake_syncer, fsync, epoch, end: HEADER + intact as u64 };
        if epoch == 0 {
            wal.restart()?;
        }
        Ok((wal, entries))
    }

    /// Appends one record holding `entries`, and with [`Fsync::Always`] and `sync`, waits until
    /// it is on disk (with everything appended before it).
    pub fn append(&mut self, entries: &[Entry], sync: bool) -> Result<()> {
        self.file.refuse_if_failed().map_err(StoreError::engine)?;
        let record = encode_record(self.epoch, entries);
        self.file.file.write_all_at(&record, self.end).map_err(StoreError::engine)?;
        self.end += record.len() as u64;
        if sync && self.fsync == Fsync::Always {
            self.file.unsynced.store(false, Ordering::Release);
            return self.file.file.sync_data().map_err(StoreError::engine);
        }
        // The first record since the last sync wakes the sync thread; later ones ride with it.
        if !self.file.unsynced.swap(true, Ordering::AcqRel)
            && let Err(TrySendError::Disconnected(())) = self.wake_syncer.try_send(())
        {
            return Err(StoreError::engine(std::io::Error::other("the write-ahead log's sync thread stopped")));
        }
        Ok(())
    }

    /// Syncs what was appended without a sync and is not on disk yet: the engine calls it on the
    /// previous epoch's log before a sync of the current one, so that a power loss cannot keep a
    /// record of the current epoch and lose the previous epoch's end.
    pub fn sync_written(&self) -> Result<()> {
        self.file.sync_unsynced().map_err(StoreError::engine)
    }

    /// Starts a new epoch, which empties the log: called once everything in it is durable elsewhere.
    ///
    /// The header is not synced here but with the first record after it, as every sync of the file
    /// covers it: until then a crash leaves the previous epoch's header, whose records are durable
    /// elsewhere (and so skipped when replaying), or the new one with none. A sync of its own here
    /// ran under the engine's lock at each checkpoint: with the history segment's encoding beside
    /// it, it held every writer up for 1.3-4.7 ms.
    pub fn restart(&mut self) -> Result<()> {
        let mut header = [0; HEADER as usize];
        header[..8].copy_from_slice(MAGIC);
        header[8..].copy_from_slice(&(self.epoch + 1).to_le_bytes());
        self.file.file.write_all_at(&header, 0).map_err(StoreError::engine)?;
        self.epoch += 1;
        self.end = HEADER;
        Ok(())
    }

    /// Starts an epoch later than both this log's and `other`'s: the engine keeps two logs and
    /// switches between them at each checkpoint, so that its writes never wait for one.
    pub fn restart_after(&mut self, other: &Wal) -> Result<()> {
        self.epoch = self.epoch.max(other.epoch);
        self.restart()
    }

    #[cfg(test)]
    pub fn unsynced(&self) -> bool {
        self.file.unsynced.load(Ordering::Acquire)
    }

    /// Bytes of records in the current epoch.
    pub fn len(&self) -> u64 {
        self.end - HEADER
    }
}

impl Drop for Wal {
    /// A store that closes cleanly leaves its log on disk whatever the policy.
    fn drop(&mut self) {
        if let Err(error) = self.file.sync_unsynced() {
            tracing::error!(%error, "cannot sync the write-ahead log at close");
        }
    }
}

struct SyncedFile {
    file: File,
    /// Records were written since the last sync.
    unsynced: AtomicBool,
    /// Held while a sync that took `unsynced` runs, so that another waits for its records.
    syncing: Mutex<()>,
    /// A background sync failed: what it should have made durable may be gone from the page cache
    /// too (Linux can drop dirty pages after a failed writeback), so no further write is accepted.
    failed: AtomicBool,
}

impl SyncedFile {
    /// Syncs the records written since the last sync, if any. Returns once they are on disk, even
    /// when the sync thread took them first and is still syncing: `sync_written` promises that
    /// much before the other log's sync. An error if that sync, or an earlier one, failed.
    fn sync_unsynced(&self) -> std::io::Result<()> {
        let _syncing = self.syncing.lock().unwrap_or_else(PoisonError::into_inner);
        self.refuse_if_failed()?;
        if self.unsynced.swap(false, Ordering::AcqRel)
            && let Err(error) = self.file.sync_data()
        {
            self.failed.store(true, Ordering::Release);
            return Err(error);
        }
        Ok(())
    }

    fn refuse_if_failed(&self) -> std::io::Result<()> {
        if self.failed.load(Ordering::Acquire) {
            return Err(std::io::Error::other("a background sync of the write-ahead log failed; restart Stratus"));
        }
        Ok(())
    }
}

/// Syncs the file `delay` after each wake-up, if something is still unsynced; returns once the log
/// is dropped. Woken by the first record appended without a sync, so an idle store never wakes it.
fn sync_when_woken(file: Weak<SyncedFile>, woken: Receiver<()>, delay: Duration) {
    while woken.recv().is_ok() {
        std::thread::sleep(delay);
        let Some(file) = file.upgrade() else { return };
        if let Err(error) = file.sync_unsynced() {
            tracing::error!(%error, "cannot sync the write-ahead log; the store accepts no more writes");
            return;
        }
    }
}

/// Writes zeros from `len` to `size` (real blocks: `fallocate` would leave unwritten extents, whose
/// first write still changes the inode), then syncs them. A page at a time: the page cache keeps
/// a larger write in a folio as large, and ext4 then walks each block of that folio on every
/// small write into it (a 700-byte record took ~3.8 µs into 1 MiB folios, ~2 µs into pages).
fn preallocate(file: &File, len: u64, size: u64) -> Result<()> {
    const CHUNK: u64 = 4096;
    if len >= size {
        return Ok(());
    }
    let zeros = vec![0; CHUNK as usize];
    let mut at = len;
    while at < size {
        let n = CHUNK.min(size - at);
        file.write_all_at(&zeros[..n as usize], at).map_err(StoreError::engine)?;
        at += n;
    }
    file.sync_all().map_err(StoreError::engine)
}

/// One record holding `entries`, checksummed with `epoch`.
pub(crate) fn encode_record(epoch: u64, entries: &[Entry]) -> Vec<u8> {
    let payload_len: usize = entries.iter().map(|(_, events)| 12 + events.len()).sum();
    let mut out = Vec::with_capacity(8 + payload_len);
    out.extend_from_slice(&(payload_len as u32).to_le_bytes());
    out.extend_from_slice(&[0; 4]); // the CRC, once the payload is there
    for (revision, events) in entries {
        out.extend_from_slice(&revision.to_le_bytes());
        out.extend_from_slice(&(events.len() as u32).to_le_bytes());
        out.extend_from_slice(events);
    }
    let crc = checksum(epoch, &out[8..]);
    out[4..8].copy_from_slice(&crc.to_le_bytes());
    out
}

fn checksum(epoch: u64, payload: &[u8]) -> u32 {
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(&epoch.to_le_bytes());
    hasher.update(payload);
    hasher.finalize()
}

/// The entries of the leading intact records of `epoch`, and how many bytes those records span.
pub(crate) fn parse(bytes: &[u8], epoch: u64) -> (Vec<Entry>, usize) {
    let mut entries = Vec::new();
    let mut at = 0;
    while let Some(header) = bytes.get(at..at + 8) {
        let (len, crc) = header.split_at(4);
        let len = u32::from_le_bytes([len[0], len[1], len[2], len[3]]) as usize;
        let crc = u32::from_le_bytes([crc[0], crc[1], crc[2], crc[3]]);
        let Some(payload) = bytes.get(at + 8..at + 8 + len) else { break };
        if checksum(epoch, payload) != crc {
            break;
        }
        let Some(record_entries) = parse_payload(payload) else { break };
        entries.extend(record_entries);
        at += 8 + len;
    }
    (entries, at)
}

fn parse_payload(mut payload: &[u8]) -> Option<Vec<Entry>> {
    let mut entries = Vec::new();
    while !payload.is_empty() {
        let revision = u64::from_le_bytes(payload.get(..8)?.try_into().ok()?);
        let len = u32::from_le_bytes(payload.get(8..12)?.try_into().ok()?) as usize;
        entries.push((revision, payload.get(12..12 + len)?.to_vec()));
        payload = &payload[12 + len..];
    }
    Some(entries)
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;

    #[test]
    fn appends_reopen_and_torn_tails() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("wal");
        let (mut wal, entries) = Wal::open(&path, 0, Fsync::Always).unwrap();
        assert!(entries.is_empty());
        wal.append(&[(1, b"one".to_vec()), (2, b"two".to_vec())], true).unwrap();
        wal.append(&[(3, b"three".to_vec())], true).unwrap();
        let intact = wal.len();
        drop(wal);

        // A record torn by a crash: its header promises more than was written.
        let mut file = OpenOptions::new().append(true).open(&path).unwrap();
        file.write_all(&[100, 0, 0, 0, 1, 2, 3, 4, b'x']).unwrap();
        drop(file);
        let (mut wal, entries) = Wal::open(&path, 0, Fsync::Always).unwrap();
        assert_eq!(entries, vec![(1, b"one".to_vec()), (2, b"two".to_vec()), (3, b"three".to_vec())]);
        assert_eq!(wal.len(), intact, "the next record overwrites the torn one");

        // After a restart the old records are still in the file, but of an earlier epoch.
        wal.restart().unwrap();
        wal.append(&[(4, b"four".to_vec())], true).unwrap();
        drop(wal);
        assert_eq!(Wal::open(&path, 0, Fsync::Always).unwrap().1, vec![(4, b"four".to_vec())]);
    }

    #[test]
    fn a_preallocated_log_reads_back_only_its_records() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("wal");
        let (mut wal, _) = Wal::open(&path, 1 << 16, Fsync::Always).unwrap();
        assert_eq!(std::fs::metadata(&path).unwrap().len(), 1 << 16);
        wal.append(&[(1, b"one".to_vec())], true).unwrap();
        drop(wal);
        let (wal, entries) = Wal::open(&path, 1 << 16, Fsync::Always).unwrap();
        assert_eq!(entries, vec![(1, b"one".to_vec())]);
        assert_eq!(wal.len(), 8 + 12 + 3, "the zeros after the record are not records");
    }

    #[test]
    fn a_periodic_log_syncs_in_the_background_and_stops_with_the_log() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("wal");
        let (mut wal, _) = Wal::open(&path, 0, Fsync::Every(Duration::from_millis(5))).unwrap();
        wal.append(&[(1, b"one".to_vec())], true).unwrap();
        assert!(wal.file.unsynced.load(Ordering::Acquire), "the append did not wait for the disk");
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while wal.file.unsynced.load(Ordering::Acquire) {
            assert!(std::time::Instant::now() < deadline, "the background sync never ran");
            std::thread::sleep(Duration::from_millis(1));
        }
        let synced = Arc::downgrade(&wal.file);
        drop(wal);
        std::thread::sleep(Duration::from_millis(50));
        assert!(synced.upgrade().is_none(), "the sync thread let go of the file");
        assert_eq!(Wal::open(&path, 0, Fsync::Always).unwrap().1, vec![(1, b"one".to_vec())]);
    }

    #[test]
    fn an_append_that_need_not_wait_is_synced_by_the_next_that_waits() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("wal");
        let (mut wal, _) = Wal::open(&path, 0, Fsync::Always).unwrap();
        wal.append(&[(1, b"one".to_vec())], false).unwrap();
        assert!(wal.unsynced(), "the append did not wait for the disk");
        wal.append(&[(2, b"two".to_vec())], true).unwrap();
        assert!(!wal.unsynced(), "the sync covered the append before it");
        wal.append(&[(3, b"three".to_vec())], false).unwrap();
        wal.sync_written().unwrap();
        assert!(!wal.unsynced());
        drop(wal);
        assert_eq!(Wal::open(&path, 0, Fsync::Always).unwrap().1.len(), 3);
    }

    #[test]
    fn syncing_the_written_records_waits_for_a_sync_already_under_way() {
        let dir = tempfile::tempdir().unwrap();
        let (mut wal, _) = Wal::open(&dir.path().join("wal"), 0, Fsync::Always).unwrap();
        wal.append(&[(1, b"one".to_vec())], false).unwrap();
        // What the sync thread holds between taking the records and having them on disk.
        let syncing = wal.file.syncing.lock().unwrap();
        assert!(wal.file.unsynced.swap(false, Ordering::AcqRel));
        std::thread::scope(|scope| {
            let waiter = scope.spawn(|| wal.sync_written());
            std::thread::sleep(Duration::from_millis(50));
            assert!(!waiter.is_finished(), "returned before the sync under way ended");
            drop(syncing);
            waiter.join().unwrap().unwrap();
        });
    }

    #[test]
    fn a_corrupt_record_ends_the_log() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("wal");
        let (mut wal, _) = Wal::open(&path, 0, Fsync::Always).unwrap();
        wal.append(&[(1, b"one".to_vec())], true).unwrap();
        wal.append(&[(2, b"two".to_vec())], true).unwrap();
        drop(wal);
        let mut bytes = std::fs::read(&path).unwrap();
        let last = bytes.len() - 1; // inside the second record's payload
        bytes[last] ^= 0xff;
        std::fs::write(&path, &bytes).unwrap();
        assert_eq!(Wal::open(&path, 0, Fsync::Always).unwrap().1, vec![(1, b"one".to_vec())]);
    }

    proptest::proptest! {
        /// A log file holding anything at all parses to a prefix of records, never a panic.
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..4096), epoch in 0u64..3) {
            let (_, intact) = parse(&bytes, epoch);
            proptest::prop_assert!(intact <= bytes.len());
        }
    }
}
