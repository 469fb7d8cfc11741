//! Moving archive bytes between the blocking tar/zstd/age pipeline and the async object store:
//! a writer that hands parts to a multipart upload, and a reader over a streaming GET.

use std::io::{self, Read, Write};
use std::sync::{Arc, Mutex};

use bytes::{Bytes, BytesMut};
use futures_util::{StreamExt, TryStreamExt};
use object_store::{MultipartUpload, PutPayload};
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio_util::io::{StreamReader, SyncIoBridge};
use tokio_util::sync::CancellationToken;

use crate::strategy::ArchiveError;

use super::store::remote_error;

/// S3 allows at most this many parts in one upload.
const MAX_PARTS: usize = 10_000;
/// Part sizes double every this many parts, so that a large archive never runs out of parts
/// while a small one keeps small parts (and little memory).
const PARTS_PER_SIZE: usize = 2_500;

/// The blocking side of an upload: cuts what is written into parts and sends them to
/// [`upload_parts`]. Fails once the upload side has given up (its receiver dropped).
pub(crate) struct PartWriter {
    sender: mpsc::Sender<Bytes>,
    buffer: BytesMut,
    base_size: usize,
    parts: usize,
}

impl PartWriter {
    /// Parts of `base_size` bytes (more for very large archives, see [`PARTS_PER_SIZE`]).
    pub(crate) fn new(sender: mpsc::Sender<Bytes>, base_size: usize) -> Self {
        Self { sender, buffer: BytesMut::with_capacity(base_size), base_size, parts: 0 }
    }

    fn part_size(&self) -> usize {
        let doublings = u32::try_from(self.parts / PARTS_PER_SIZE).unwrap_or(u32::MAX).min(16);
        self.base_size.saturating_mul(1 << doublings)
    }

    fn send(&mut self) -> io::Result<()> {
        if self.parts >= MAX_PARTS {
            return Err(io::Error::other(format!(
                "the archive needs more than {MAX_PARTS} upload parts: raise archive.remote.part_size_mib"
            )));
        }
        let part = self.buffer.split().freeze();
        self.parts += 1;
        self.buffer.reserve(self.part_size());
        // Blocking here is the back-pressure: at most `concurrency` parts wait in the channel.
        self.sender.blocking_send(part).map_err(|_| io::Error::other("the upload stopped"))
    }

    /// Sends the last, possibly short, part. Not called on failure: an upload whose writer did not
    /// finish is aborted, never completed.
    pub(crate) fn finish(mut self) -> io::Result<()> {
        if !self.buffer.is_empty() || self.parts == 0 {
            self.send()?;
        }
        Ok(())
    }
}

impl Write for PartWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let room = self.part_size() - self.buffer.len();
        let n = buf.len().min(room);
        self.buffer.extend_from_slice(&buf[..n]);
        if self.buffer.len() >= self.part_size() {
            self.send()?;
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Writes everything to both writers (the local copy and the upload).
pub(crate) struct Tee<A, B> {
    pub(crate) first: A,
    pub(crate) second: B,
}

impl<A: Write, B: Write> Write for Tee<A, B> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.first.write_all(buf)?;
        self.second.write_all(buf)?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.first.flush()?;
        self.second.flush()
    }
}

/// A multipart upload that is aborted unless completed: explicitly on failure, and from `Drop`
/// (on a spawned task) when the write is abandoned, e.g. by a timeout dropping its future.
pub(crate) struct PendingUpload {
    upload: Option<Box<dyn MultipartUpload>>,
    location: String,
}

impl PendingUpload {
    pub(crate) fn new(upload: Box<dyn MultipartUpload>, location: String) -> Self {
        Self { upload: Some(upload), location }
    }

    /// Uploads the parts `receiver` delivers, at most `concurrency` at a time, until the writer
    /// hangs up. Returns the number of parts; the first failed part (after the store's own
    /// retries) ends the upload.
    pub(crate) async fn upload_parts(
        &mut self,
        receiver: mpsc::Receiver<Bytes>,
        concurrency: usize,
        cancel: &CancellationToken,
    ) -> Result<usize, ArchiveError> {
        tokio::select! {
            uploaded = self.upload_all(receiver, concurrency) => uploaded,
            () = cancel.cancelled() => Err(ArchiveError::Cancelled),
        }
    }

    async fn upload_all(
        &mut self,
        mut receiver: mpsc::Receiver<Bytes>,
        concurrency: usize,
    ) -> Result<usize, ArchiveError> {
        let Some(upload) = self.upload.as_mut() else { return Ok(0) };
        let location = self.location.clone();
        let mut running: JoinSet<object_store::Result<()>> = JoinSet::new();
        let mut parts = 0;
        let failed = |e| remote_error("uploading a part of", &location, e);
        while let Some(part) = receiver.recv().await {
            while running.len() >= concurrency.max(1) {
                if let Some(done) = running.join_next().await {
                    done.map_err(super::super::stream::join_error)?.map_err(failed)?;
                }
            }
            parts += 1;
            running.spawn(upload.put_part(PutPayload::from(part)));
        }
        while let Some(done) = running.join_next().await {
            done.map_err(super::super::stream::join_error)?.map_err(failed)?;
        }
        Ok(parts)
    }

    /// Makes the object visible under its final name.
    pub(crate) async fn complete(&mut self) -> Result<(), ArchiveError> {
        let Some(mut upload) = self.upload.take() else { return Ok(()) };
        match upload.complete().await {
            Ok(_) => Ok(()),
            Err(e) => {
                abort(upload, &self.location).await;
                Err(remote_error("completing the upload of", &self.location, e))
            }
        }
    }

    /// Gives the upload up: the store discards the parts sent so far.
    pub(crate) async fn abort(&mut self) {
        if let Some(upload) = self.upload.take() {
            abort(upload, &self.location).await;
        }
    }
}

impl Drop for PendingUpload {
    fn drop(&mut self) {
        if let Some(upload) = self.upload.take()
            && let Ok(runtime) = tokio::runtime::Handle::try_current()
        {
            let location = std::mem::take(&mut self.location);
            runtime.spawn(async move { abort(upload, &location).await });
        }
    }
}

async fn abort(mut upload: Box<dyn MultipartUpload>, location: &str) {
    if let Err(e) = upload.abort().await {
        // Not fatal: the parts are invisible, and a lifecycle rule removes them (docs/offsite.md).
        tracing::warn!(object = location, error = %e, "could not abort an unfinished upload");
    }
}

type BodyReader = StreamReader<futures_util::stream::BoxStream<'static, io::Result<Bytes>>, Bytes>;

/// The body of a GET as a blocking reader (for the tar/zstd/age pipeline on a blocking thread).
/// The store's failure is kept aside, so that it is reported as such and not as a corrupt archive.
pub(crate) struct RemoteReader {
    body: SyncIoBridge<BodyReader>,
    failure: Arc<Mutex<Option<object_store::Error>>>,
}

impl RemoteReader {
    /// Must be created on a blocking thread of the runtime (it blocks on the runtime's handle).
    pub(crate) fn new(stream: futures_util::stream::BoxStream<'static, object_store::Result<Bytes>>) -> Self {
        let failure = Arc::new(Mutex::new(None));
        let kept = failure.clone();
        let stream = stream
            .map_err(move |e| {
                let message = e.to_string();
                if let Ok(mut slot) = kept.lock() {
                    slot.get_or_insert(e);
                }
                io::Error::other(message)
            })
            .boxed();
        Self { body: SyncIoBridge::new(StreamReader::new(stream)), failure }
    }

    /// A handle on the store's failure, if one ends the read.
    pub(crate) fn failure(&self) -> Arc<Mutex<Option<object_store::Error>>> {
        self.failure.clone()
    }
}

impl Read for RemoteReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.body.read(buf)
    }
}

/// The store's failure, if the read ended because of one.
pub(crate) fn take_failure(failure: &Mutex<Option<object_store::Error>>) -> Option<object_store::Error> {
    failure.lock().ok().and_then(|mut slot| slot.take())
}
