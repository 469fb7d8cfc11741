//! Readers shared by every archive operation: hashing, progress, cancellation, error tagging.
//!
//! The tar and compression crates only speak `io::Error`. To tell "cancelled", "the archive file
//! could not be read" and "the archive content is bad" apart once an error has travelled through
//! them, the readers here wrap their own errors in private marker types.

use std::error::Error as StdError;
use std::fmt;
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

use crate::events::{Phase, Unit};
use crate::strategy::{ArchiveError, StepContext};

/// Buffer size of every file read and write: large enough that syscalls and per-call overhead
/// vanish next to compression and hashing.
pub(crate) const IO_BUFFER: usize = 1 << 20;

/// Progress is reported when this much time has passed since the last report…
const PROGRESS_INTERVAL: Duration = Duration::from_millis(250);
/// …or this fraction of the total (1%) has been done, so that a fast phase still shows its way.
const PROGRESS_STEPS: u64 = 100;
/// Cancellation, the clock and the count are looked at after this many bytes: reports are never
/// more frequent than one per MiB.
const CHECK_EVERY: u64 = 1 << 20;

/// Marks an `io::Error` as "the run was cancelled".
#[derive(Debug)]
struct CancelledMarker;

impl fmt::Display for CancelledMarker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("cancelled")
    }
}

impl StdError for CancelledMarker {}

/// Marks an `io::Error` as a failure to read a local file (not bad archive content).
#[derive(Debug)]
struct LocalReadError {
    path: PathBuf,
    source: io::Error,
}

impl fmt::Display for LocalReadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "reading {}: {}", self.path.display(), self.source)
    }
}

impl StdError for LocalReadError {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        Some(&self.source)
    }
}

/// An `io::Error` that means "cancelled".
pub(crate) fn cancelled_io() -> io::Error {
    io::Error::other(CancelledMarker)
}

/// What an `io::Error` that came out of the tar or compression crates really is.
pub(crate) enum IoOrigin {
    /// The run was cancelled.
    Cancelled,
    /// Reading a local file failed.
    LocalRead { path: PathBuf, source: io::Error },
    /// Anything else: the archive stream itself, or the writer.
    Other(io::Error),
}

/// Unwrap the markers put on by this module's readers.
pub(crate) fn origin(error: io::Error) -> IoOrigin {
    if error.get_ref().is_some_and(|inner| inner.is::<CancelledMarker>()) {
        return IoOrigin::Cancelled;
    }
    if error.get_ref().is_some_and(|inner| inner.is::<LocalReadError>()) {
        if let Some(inner) = error.into_inner()
            && let Ok(local) = inner.downcast::<LocalReadError>()
        {
            return IoOrigin::LocalRead { path: local.path, source: local.source };
        }
        return IoOrigin::Other(io::Error::other("unreadable local file"));
    }
    IoOrigin::Other(error)
}

/// Map an error met while reading an archive: cancelled, local I/O, or a corrupt archive.
pub(crate) fn read_error(archive: &Path, error: io::Error) -> ArchiveError {
    match origin(error) {
        IoOrigin::Cancelled => ArchiveError::Cancelled,
        IoOrigin::LocalRead { path, source } => ArchiveError::io("reading", path, source),
        IoOrigin::Other(e) => corrupt(archive, e),
    }
}

/// A corrupt archive, with the reason the decoder gave.
pub(crate) fn corrupt(archive: &Path, error: io::Error) -> ArchiveError {
    let reason = match error.kind() {
        io::ErrorKind::UnexpectedEof => format!("it ends unexpectedly (truncated?): {error}"),
        _ => error.to_string(),
    };
    ArchiveError::Corrupt { archive: archive.to_owned(), reason }
}

/// Throttled progress reports and cancellation checks for one phase.
#[derive(Debug)]
pub(crate) struct Progress {
    ctx: StepContext,
    phase: Phase,
    total: Option<u64>,
    done: u64,
    last_check: u64,
    last_report: Instant,
    next_report_at: u64,
}

impl Progress {
    /// Starts the phase's progress at 0 (reported at once).
    pub(crate) fn start(ctx: &StepContext, phase: Phase, total: Option<u64>) -> Self {
        ctx.progress(phase, 0, total, Unit::Bytes);
        Self {
            ctx: ctx.clone(),
            phase,
            total,
            done: 0,
            last_check: 0,
            last_report: Instant::now(),
            next_report_at: Self::step(total),
        }
    }

    fn step(total: Option<u64>) -> u64 {
        total.map_or(u64::MAX, |t| (t / PROGRESS_STEPS).max(1))
    }

    /// Count `bytes` more; reports when due. Fails when the run is cancelled.
    pub(crate) fn advance(&mut self, bytes: u64) -> io::Result<()> {
        self.done += bytes;
        if self.done - self.last_check < CHECK_EVERY {
            return Ok(());
        }
        self.last_check = self.done;
        self.check_cancelled()?;
        if self.done >= self.next_report_at || self.last_report.elapsed() >= PROGRESS_INTERVAL {
            self.report();
        }
        Ok(())
    }

    /// The total, once it is known (it may be counted while the phase already runs).
    pub(crate) fn set_total(&mut self, total: u64) {
        if self.total.is_none() {
            self.total = Some(total);
            self.next_report_at = self.done.saturating_add(Self::step(self.total));
        }
    }

    /// Whether the total is known.
    pub(crate) fn has_total(&self) -> bool {
        self.total.is_some()
    }

    /// Fails when the run is cancelled.
    pub(crate) fn check_cancelled(&self) -> io::Result<()> {
        if self.ctx.is_cancelled() { Err(cancelled_io()) } else { Ok(()) }
    }

    /// Report the count now (at the end of the phase).
    pub(crate) fn report(&mut self) {
        self.last_report = Instant::now();
        self.next_report_at = self.done.saturating_add(Self::step(self.total));
        self.ctx.progress(self.phase, self.done, self.total, Unit::Bytes);
    }

    /// Reports the end of the phase: what was done is the total.
    pub(crate) fn finish(&mut self) {
        self.total = Some(self.done);
        self.report();
    }

    /// The context, for warnings.
    pub(crate) fn ctx(&self) -> &StepContext {
        &self.ctx
    }
}

/// Hashes what passes through, counts it into a [`Progress`], tags read errors with the path.
pub(crate) struct HashingReader<'p, R> {
    inner: R,
    path: &'p Path,
    hasher: Sha256,
    read: u64,
    progress: &'p mut Progress,
}

impl<'p, R: Read> HashingReader<'p, R> {
    /// Wraps `inner`, which reads the local file at `path`.
    pub(crate) fn new(inner: R, path: &'p Path, progress: &'p mut Progress) -> Self {
        Self { inner, path, hasher: Sha256::new(), read: 0, progress }
    }

    /// Lower-case hex SHA-256 of what was read.
    pub(crate) fn finish(self) -> String {
        hex::encode(self.hasher.finalize())
    }
}

impl<R: Read> Read for HashingReader<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self
            .inner
            .read(buf)
            .map_err(|source| io::Error::other(LocalReadError { path: self.path.to_owned(), source }))?;
        self.hasher.update(&buf[..n]);
        self.read += n as u64;
        self.progress.advance(n as u64)?;
        Ok(n)
    }
}

/// Counts the bytes read from an archive file into a [`Progress`] (so progress follows the
/// compressed file, whose size is known) and tags its read errors as local I/O.
pub(crate) struct CountingReader<R> {
    inner: R,
    path: PathBuf,
    progress: Progress,
}

impl<R: Read> CountingReader<R> {
    /// Wraps `inner`, which reads the archive file at `path`.
    pub(crate) fn new(inner: R, path: &Path, progress: Progress) -> Self {
        Self { inner, path: path.to_owned(), progress }
    }
}

impl<R: Read> Read for CountingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self
            .inner
            .read(buf)
            .map_err(|source| io::Error::other(LocalReadError { path: self.path.clone(), source }))?;
        if n == 0 {
            self.progress.report();
        } else {
            self.progress.advance(n as u64)?;
        }
        Ok(n)
    }
}

/// Runs `job` on the blocking pool with a context of its own: cancelled with the run, and also
/// when the returned future is dropped, so an abandoned write never finishes into a final name.
pub(crate) async fn run_blocking<T: Send + 'static>(
    ctx: &StepContext,
    job: impl FnOnce(StepContext) -> Result<T, ArchiveError> + Send + 'static,
) -> Result<T, ArchiveError> {
    let token = ctx.cancellation().child_token();
    let _cancel_on_drop = token.clone().drop_guard();
    let job_ctx = StepContext::new(ctx.backup_id().clone(), ctx.working().clone(), ctx.events().clone(), token);
    tokio::task::spawn_blocking(move || job(job_ctx)).await.map_err(join_error)?
}

/// A blocking task that did not complete: a panic is re-raised (a bug must not pass for an
/// archive error); a task dropped by a shutting-down runtime counts as cancelled.
pub(crate) fn join_error(error: tokio::task::JoinError) -> ArchiveError {
    if error.is_panic() {
        std::panic::resume_unwind(error.into_panic());
    }
    ArchiveError::Cancelled
}

/// The sending end of a pipeline between two threads: items gathered into batches of about
/// [`IO_BUFFER`] bytes, or `max_items` items, sent through a bounded channel.
pub(crate) struct Outbox<T> {
    tx: std::sync::mpsc::SyncSender<Vec<T>>,
    batch: Vec<T>,
    bytes: usize,
    max_items: usize,
}

impl<T> Outbox<T> {
    pub(crate) fn new(tx: std::sync::mpsc::SyncSender<Vec<T>>, max_items: usize) -> Self {
        Self { tx, batch: Vec::new(), bytes: 0, max_items }
    }

    /// Queues `item`, which carries `bytes` of content; sends the batch when it is full.
    pub(crate) fn push(&mut self, item: T, bytes: usize) -> Result<(), ArchiveError> {
        self.batch.push(item);
        self.bytes += bytes;
        if self.bytes >= IO_BUFFER || self.batch.len() >= self.max_items {
            self.flush()?;
        }
        Ok(())
    }

    /// Sends what is queued. Fails only when the receiving thread gave up, whose error is the
    /// one to report.
    pub(crate) fn flush(&mut self) -> Result<(), ArchiveError> {
        if self.batch.is_empty() {
            return Ok(());
        }
        self.bytes = 0;
        self.tx.send(std::mem::take(&mut self.batch)).map_err(|_| ArchiveError::Cancelled)
    }
}
