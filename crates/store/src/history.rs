//! The redb engine's history: each revision's events, for watches to replay.
//!
//! Every group commit's events already go to the write-ahead log, so history is kept by keeping
//! the log's records rather than by writing them a second time into redb: at each checkpoint the
//! records of the epoch that ends are written to a segment file of their own, and a compaction
//! deletes the segments it passes (in the background: see [`delete`]). Storing history in redb as
//! well doubled the bytes behind each write: without it, batched durable sends at 16 connections
//! ran 15-29% faster side by side, and the durable p99s, set by the checkpoint's flush that holds
//! up writers, fell by a third.
//!
//! A segment is `history/<first>-<last>` (zero-padded revisions): one record in the log's format
//! (`wal::encode_record`), checksummed with its first revision. It is written to a temporary name
//! and renamed, and not synced; with `--fsync always` a checkpoint writes it out to the disk a
//! slice at a time as it writes it, only so that its pages do not reach the disk later in one
//! burst that the log's syncs would queue behind (`paced.rs`). History is not data (the checkpoint
//! that ends the epoch holds the data), so a power loss that loses or tears a segment costs the
//! watches that would have replayed it, which then see their revisions as compacted.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::engine::decode_events;
use crate::paced::write_in_slices;
use crate::wal::{Entry, encode_record, parse};
use crate::{Event, Result, Revision, StoreError};

/// One epoch's records, encoded and ready to write; see [`History::segment`].
pub(crate) struct Segment {
    first: Revision,
    last: Revision,
    record: Vec<u8>,
    path: PathBuf,
}

impl Segment {
    /// Writes it under a temporary name and renames it into place, so that a crash leaves a whole
    /// segment or a `.partial` file, which opening deletes; `in_slices`, writing it out to the disk a
    /// slice at a time as it goes.
    pub fn write(&self, in_slices: bool) -> Result<()> {
        let partial = self.path.with_extension("partial");
        let write = || {
            if in_slices {
                write_in_slices(&mut std::fs::File::create(&partial)?, &self.record)?;
            } else {
                std::fs::write(&partial, &self.record)?;
            }
            std::fs::rename(&partial, &self.path)
        };
        write().map_err(StoreError::engine)
    }
}

pub(crate) struct History {
    dir: PathBuf,
    /// The segments on disk: first revision -> last revision.
    segments: BTreeMap<Revision, Revision>,
    /// The last segment read, decoded: a watch replays a segment in many small reads.
    cached: Option<(Revision, Arc<Vec<Entry>>)>,
}

impl History {
    pub fn open(dir: &Path) -> Result<History> {
        std::fs::create_dir_all(dir).map_err(StoreError::engine)?;
        let mut segments = BTreeMap::new();
        for entry in std::fs::read_dir(dir).map_err(StoreError::engine)? {
            let entry = entry.map_err(StoreError::engine)?;
            let name = entry.file_name();
            if name.to_str().is_some_and(|n| n.ends_with(".partial")) {
                // Left by a crash while saving: its records are in redb, and in no segment.
                let _ = std::fs::remove_file(entry.path());
            } else if let Some((first, last)) = name.to_str().and_then(|n| n.split_once('-'))
                && let (Ok(first), Ok(last)) = (first.parse(), last.parse())
            {
                segments.insert(first, last);
            }
        }
        Ok(History { dir: dir.to_path_buf(), segments, cached: None })
    }

    /// The oldest revision kept.
    pub fn first(&self) -> Option<Revision> {
        self.segments.keys().next().copied()
    }

    /// Keeps `entries` (consecutive revisions) as a segment.
    pub fn save(&mut self, entries: &[Entry]) -> Result<()> {
        match Self::segment(&self.dir, entries) {
            Some(segment) => segment.write(false).map(|()| self.add(&segment)),
            None => Ok(()),
        }
    }

    /// `entries` (consecutive revisions) as a segment to write into the history in `dir`, which
    /// [`History::add`] then keeps: the checkpoint encodes and writes it without the engine's lock.
    pub fn segment(dir: &Path, entries: &[Entry]) -> Option<Segment> {
        let (Some((first, _)), Some((last, _))) = (entries.first(), entries.last()) else { return None };
        Some(Segment {
            first: *first,
            last: *last,
            record: encode_record(*first, entries),
            path: segment_path(dir, *first, *last),
        })
    }

    /// Keeps a segment once written.
    pub fn add(&mut self, segment: &Segment) {
        self.segments.insert(segment.first, segment.last);
    }

    /// Appends to `out` the events of revisions `from..to` that touch `prefix`, from the segments
    /// that hold them; returns the first revision after the segments.
    pub fn read(&mut self, from: Revision, to: Revision, prefix: &[u8], out: &mut Vec<Event>) -> Result<Revision> {
        let mut next = from;
        let overlapping: Vec<_> =
            self.segments.range(..to).filter(|(_, last)| **last >= from).map(|(f, l)| (*f, *l)).collect();
        for (first, last) in overlapping {
            let entries = self.load(first, last)?;
            let start = entries.partition_point(|(revision, _)| *revision < next);
            for (revision, events) in entries[start..].iter().take_while(|(r, _)| *r < to) {
                if *revision != next {
                    break; // torn: the rest of this segment is lost
                }
                decode_events(*revision, events, prefix, out)?;
                next += 1;
            }
        }
        Ok(next)
    }

    fn load(&mut self, first: Revision, last: Revision) -> Result<Arc<Vec<Entry>>> {
        if let Some((cached_first, entries)) = &self.cached
            && *cached_first == first
        {
            return Ok(entries.clone());
        }
        let bytes = match std::fs::read(self.path(first, last)) {
            Ok(bytes) => bytes,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(error) => return Err(StoreError::engine(error)),
        };
        let entries = Arc::new(parse(&bytes, first).0);
        self.cached = Some((first, entries.clone()));
        Ok(entries)
    }

    /// The first revision of the first segment after `revision`.
    pub fn kept_after(&self, revision: Revision) -> Option<Revision> {
        self.segments.range(revision + 1..).next().map(|(first, _)| *first)
    }

    /// Forgets the segments wholly before `revision` and returns their files, for [`delete`].
    pub fn compact(&mut self, revision: Revision) -> Vec<PathBuf> {
        let mut files = Vec::new();
        while let Some((&first, &last)) = self.segments.first_key_value()
            && last < revision
        {
            files.push(self.path(first, last));
            self.segments.remove(&first);
            if self.cached.as_ref().is_some_and(|(cached, _)| *cached == first) {
                self.cached = None;
            }
        }
        files
    }

    fn path(&self, first: Revision, last: Revision) -> PathBuf {
        segment_path(&self.dir, first, last)
    }
}

fn segment_path(dir: &Path, first: Revision, last: Revision) -> PathBuf {
    dir.join(format!("{first:020}-{last:020}"))
}

/// Deletes compacted segments' files in a thread of its own: unlinking 64 segments (what passing
/// the history limit compacts) took 20 ms here while their pages were still in memory, 130 ms once
/// written out, and every write waited while the engine's lock was held for it. A file left behind
/// (the thread could not start, or the process ended first) is read again at the next start and
/// deleted by the next compaction that passes it.
pub(crate) fn delete(files: Vec<PathBuf>) {
    if files.is_empty() {
        return;
    }
    let deleting = std::thread::Builder::new().name("store-history-rm".into()).spawn(move || {
        for file in files {
            match std::fs::remove_file(&file) {
                Err(error) if error.kind() != std::io::ErrorKind::NotFound => {
                    tracing::warn!(%error, file = %file.display(), "cannot delete a compacted history segment");
                }
                _ => {}
            }
        }
    });
    if let Err(error) = deleting {
        tracing::warn!(%error, "cannot delete compacted history segments until the next start");
    }
}
