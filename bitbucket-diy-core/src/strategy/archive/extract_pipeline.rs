//! Extraction on two threads: the caller's thread decompresses, parses and hashes; a writer
//! thread creates the files. Writing a home is mostly the kernel's work (file creation, page
//! cache), reading it mostly ours (zstd, SHA-256): side by side, the extraction takes about as
//! long as the slower of the two instead of their sum.
//!
//! Entries reach the writer in order, in batches through a bounded channel (at most
//! [`BATCHES_IN_FLIGHT`] batches of about [`IO_BUFFER`] bytes), so memory stays flat whatever
//! the size of a file. The writer's first error ends it; the reading side then stops at its next
//! entry, and the writer's error is the one reported.

use std::io::{Read, Write};
use std::path::Path;
use std::sync::mpsc;

use sha2::{Digest, Sha256};

use crate::strategy::{ArchiveError, DatabaseExtracted, WorkingFolder};

use super::reader::EntrySink;
use super::safe_extract::Extractor;
use super::stream::{self, IO_BUFFER, Outbox};

/// Batches queued between the threads.
const BATCHES_IN_FLIGHT: usize = 4;
/// At most this many entries in one batch (small files).
const BATCH_OPS: usize = 256;

/// One step for the writer.
enum Op {
    Folder {
        path: String,
        mode: u32,
        mtime: i64,
    },
    FileStart {
        path: String,
    },
    Data(Vec<u8>),
    FileEnd {
        mode: u32,
        mtime: i64,
    },
    Symlink {
        path: String,
        target: String,
        mtime: i64,
    },
    /// Everything before it is on disk: the database folder is complete.
    DatabaseExtracted(DatabaseExtracted),
}

/// Runs `scan` with a sink whose entries `extractor` writes on another thread. Returns the
/// scan's result (the writer's error first) and the database callback if it was not called.
pub(crate) fn extract_with<T>(
    archive: &Path,
    extractor: &mut Extractor,
    database_extracted: Option<DatabaseExtracted>,
    scan: impl FnOnce(&mut dyn EntrySink) -> Result<T, ArchiveError>,
) -> (Result<T, ArchiveError>, Option<DatabaseExtracted>) {
    let (batches, inbox) = mpsc::sync_channel::<Vec<Op>>(BATCHES_IN_FLIGHT);
    let (spent, recycled) = mpsc::channel::<Vec<u8>>();
    std::thread::scope(|scope| {
        let writer = scope.spawn(move || write_all(extractor, &inbox, &spent));
        let mut sink = PipelinedSink {
            archive,
            outbox: Outbox::new(batches, BATCH_OPS),
            recycled,
            database: DatabaseWatch { callback: database_extracted, seen: false, has_symlink: false },
        };
        let scanned = scan(&mut sink).and_then(|t| sink.outbox.flush().map(|()| t));
        let PipelinedSink { outbox, database, .. } = sink;
        // Closing the channel lets the writer finish what is queued and return.
        drop(outbox);
        let written = writer.join().unwrap_or_else(|_| Err(ArchiveError::io("extracting", archive, panicked())));
        let result = match (written, scanned) {
            (Err(e), _) => Err(e),
            (Ok(()), scanned) => scanned,
        };
        (result, database.callback)
    })
}

fn panicked() -> std::io::Error {
    std::io::Error::other("the extraction's writer thread panicked")
}

/// The writer thread: applies the ops in order; stops at the first error.
fn write_all(
    extractor: &mut Extractor,
    inbox: &mpsc::Receiver<Vec<Op>>,
    spent: &mpsc::Sender<Vec<u8>>,
) -> Result<(), ArchiveError> {
    let mut open: Option<(String, std::fs::File)> = None;
    while let Ok(batch) = inbox.recv() {
        for op in batch {
            match op {
                Op::Folder { path, mode, mtime } => extractor.folder(&path, mode, mtime)?,
                Op::FileStart { path } => {
                    let file = extractor.create_file(&path)?;
                    open = Some((path, file));
                }
                Op::Data(chunk) => {
                    if let Some((path, file)) = open.as_mut() {
                        file.write_all(&chunk).map_err(|e| extractor.write_error(path, e))?;
                    }
                    if chunk.capacity() == IO_BUFFER {
                        let _ = spent.send(chunk);
                    }
                }
                Op::FileEnd { mode, mtime } => {
                    if let Some((path, file)) = open.take() {
                        extractor.close_file(&path, &file, mode, mtime)?;
                    }
                }
                Op::Symlink { path, target, mtime } => extractor.symlink(&path, &target, mtime)?,
                Op::DatabaseExtracted(callback) => callback(),
            }
        }
    }
    Ok(())
}

/// The reading side's sink: hashes each file and queues its content for the writer.
struct PipelinedSink<'a> {
    archive: &'a Path,
    outbox: Outbox<Op>,
    recycled: mpsc::Receiver<Vec<u8>>,
    database: DatabaseWatch,
}

impl PipelinedSink<'_> {
    fn entry(&mut self, path: &str, symlink: bool) -> Result<(), ArchiveError> {
        if let Some(callback) = self.database.passed(path, symlink) {
            self.outbox.push(Op::DatabaseExtracted(callback), 0)?;
        }
        Ok(())
    }
}

impl EntrySink for PipelinedSink<'_> {
    fn folder(&mut self, path: &str, mode: u32, mtime: i64) -> Result<(), ArchiveError> {
        self.entry(path, false)?;
        self.outbox.push(Op::Folder { path: path.to_owned(), mode, mtime }, 0)
    }

    fn file(
        &mut self,
        path: &str,
        mode: u32,
        mtime: i64,
        size: u64,
        data: &mut dyn Read,
    ) -> Result<String, ArchiveError> {
        self.entry(path, false)?;
        self.outbox.push(Op::FileStart { path: path.to_owned() }, 0)?;
        let mut hasher = Sha256::new();
        let mut left = size;
        while left > 0 {
            let want = usize::try_from(left).unwrap_or(IO_BUFFER).min(IO_BUFFER);
            // Full-size buffers come back from the writer; a small file gets one of its size.
            let mut chunk = match want {
                IO_BUFFER => self.recycled.try_recv().unwrap_or_else(|_| Vec::with_capacity(IO_BUFFER)),
                _ => Vec::with_capacity(want),
            };
            chunk.resize(want, 0);
            let mut filled = 0;
            while filled < want {
                match data.read(&mut chunk[filled..]) {
                    Ok(0) => {
                        let got = size - left + filled as u64;
                        return Err(ArchiveError::UnsafeEntry {
                            archive: self.archive.to_owned(),
                            entry: path.to_owned(),
                            reason: format!(
                                "it declares {size} bytes but only {got} follow (truncated or forged size)"
                            ),
                        });
                    }
                    Ok(n) => filled += n,
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                    Err(e) => return Err(stream::read_error(self.archive, e)),
                }
            }
            hasher.update(&chunk);
            left -= want as u64;
            self.outbox.push(Op::Data(chunk), want)?;
        }
        self.outbox.push(Op::FileEnd { mode, mtime }, 0)?;
        Ok(hex::encode(hasher.finalize()))
    }

    fn symlink(&mut self, path: &str, target: &str, mtime: i64) -> Result<(), ArchiveError> {
        self.entry(path, true)?;
        self.outbox.push(Op::Symlink { path: path.to_owned(), target: target.to_owned(), mtime }, 0)
    }
}

/// Watches the entries go by for the end of the database folder, which the built-in archives
/// write first. A folder's symlinks are created only after the first entry past it is written,
/// so a database folder that holds one is left to the end of the extraction.
struct DatabaseWatch {
    callback: Option<DatabaseExtracted>,
    seen: bool,
    has_symlink: bool,
}

impl DatabaseWatch {
    /// The callback, when `path` is the first entry past a complete database folder.
    fn passed(&mut self, path: &str, symlink: bool) -> Option<DatabaseExtracted> {
        self.callback.as_ref()?;
        let database = WorkingFolder::DATABASE;
        let inside = path == database || path.strip_prefix(database).is_some_and(|rest| rest.starts_with('/'));
        if inside {
            self.seen = true;
            self.has_symlink |= symlink;
            None
        } else if self.seen && !self.has_symlink {
            self.callback.take()
        } else {
            None
        }
    }
}
