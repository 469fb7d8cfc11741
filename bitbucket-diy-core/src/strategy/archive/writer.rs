//! Streams a working folder into a tar stream: metadata first, the tree, the manifest last.

use std::fs::File;
use std::io::{BufWriter, Read, Seek, Write};
use std::path::{Component, Path};
use std::sync::{OnceLock, mpsc};

use sha2::{Digest, Sha256};

use tar::{EntryType, Header, HeaderMode};

use crate::archive_format::{BackupMetadata, EntryKind, MANIFEST_PATH, METADATA_PATH, ManifestEntry, ManifestWriter};
use crate::events::Phase;
use crate::strategy::{ArchiveError, StepContext};

use super::policy;
use super::stream::{self, IO_BUFFER, IoOrigin, Outbox, Progress};
use super::tree::{self, TreeEntry};

/// Content read ahead of the tar stream, bounded so memory stays flat: this many batches of
/// about [`IO_BUFFER`] bytes may wait between the reading thread and the compressing one.
const READ_AHEAD_BATCHES: usize = 8;

/// Items sent together: one thread wake-up per batch, not per small file of a home.
const BATCH_ITEMS: usize = 512;

/// What the reading thread hands to the writing one, in archive order.
enum Item {
    /// A folder, symlink or file entry; a file's content follows as chunks, then `FileEnd`.
    Entry(TreeEntry),
    /// Part of the current file's content.
    Chunk(Vec<u8>),
    /// The current file is complete: its SHA-256.
    FileEnd(String),
    /// Reading failed (or the run was cancelled): stop.
    Failed(ArchiveError),
}

/// Writes the tar stream of the working folder at `root` into `out` and returns `out` (the tar
/// end marker written, the compressor not finished). `archive` names the archive in errors.
///
/// Two threads: this one builds the tar stream and feeds the compressor; a reader walks the
/// tree, reads each file once and hashes it, READ_AHEAD_CHUNKS ahead. Reading (often from a cold
/// cache) and hashing then overlap with compression instead of taking turns with it.
pub(crate) fn write_tar<W: Write>(
    out: W,
    root: &Path,
    metadata: &BackupMetadata,
    archive: &Path,
    ctx: &StepContext,
) -> Result<W, ArchiveError> {
    tree::warn_if_nothing_to_archive(root, ctx);

    let mut builder = tar::Builder::new(out);
    // Never follow symlinks: a link in a home (to a shared drive, to /etc) is part of the backup
    // as a link. Following it could pull a whole other filesystem or a secret outside the home
    // into the archive, loop forever, and would restore a copy where a link was. We build every
    // header ourselves, so this is a second line of defence should that ever change.
    builder.follow_symlinks(false);
    builder.mode(HeaderMode::Complete);

    let mtime = u64::try_from(metadata.created_at.as_second()).unwrap_or(0);
    let metadata_json = serde_json::to_vec_pretty(metadata).map_err(|e| json_error(archive, e))?;
    append_own_file(&mut builder, METADATA_PATH, &metadata_json, mtime, archive)?;

    // The manifest is written entry by entry into an unnamed temporary file in the working folder
    // (local, ours; the archive may be a stream to object storage), then appended last: a home of
    // 300 000 files has about 50 MB of manifest, which is never held in memory.
    let spool = tempfile::tempfile_in(root).map_err(|e| write_error(archive, e))?;
    let mut manifest = ManifestWriter::new(BufWriter::with_capacity(IO_BUFFER, spool), metadata)
        .map_err(|e| write_error(archive, e))?;

    let (items, inbox) = mpsc::sync_channel::<Vec<Item>>(READ_AHEAD_BATCHES);
    let (spent, recycled) = mpsc::channel::<Vec<u8>>();
    // The total (for progress) is counted beside the reading, not before it: on a cold cache the
    // metadata walk alone takes about as long as reading the tree, and the two share its cost.
    let total = OnceLock::new();
    std::thread::scope(|scope| {
        scope.spawn(|| {
            if let Ok(bytes) = tree::total_file_bytes(root, ctx) {
                let _ = total.set(bytes);
            }
        });
        let total = &total;
        scope.spawn(move || read_tree(root, ctx, total, Outbox::new(items, BATCH_ITEMS), &recycled));
        let mut inbox = Inbox { rx: inbox, pending: std::collections::VecDeque::new() };
        let written = write_entries(&mut builder, &mut manifest, &mut inbox, &spent, archive, ctx);
        // Whatever happened here, the reader must not wait on a full channel forever.
        drop(inbox);
        written
    })?;

    let (spooled, _summary) = manifest.finish().map_err(|e| write_error(archive, e))?;
    let mut manifest_json = spooled.into_inner().map_err(|e| write_error(archive, e.into_error()))?;
    let size = manifest_json.stream_position().map_err(|e| write_error(archive, e))?;
    manifest_json.rewind().map_err(|e| write_error(archive, e))?;
    append_own_data(
        &mut builder,
        MANIFEST_PATH,
        size,
        std::io::BufReader::with_capacity(IO_BUFFER, manifest_json),
        mtime,
        archive,
    )?;
    builder.into_inner().map_err(|e| write_error(archive, e))
}

/// The reading thread: every entry of the tree in order, files as hashed chunks.
fn read_tree(
    root: &Path,
    ctx: &StepContext,
    total: &OnceLock<u64>,
    mut items: Outbox<Item>,
    recycled: &mpsc::Receiver<Vec<u8>>,
) {
    let mut progress = Progress::start(ctx, Phase::Archive, total.get().copied());
    // A send fails only when the writer gave up; its error is the one reported.
    let walked = tree::walk(root, ctx, |entry| {
        let file = (entry.kind == EntryKind::File).then(|| (entry.abs.clone(), entry.meta.len()));
        items.push(Item::Entry(entry), 0)?;
        if let Some((path, size)) = file {
            if !progress.has_total()
                && let Some(&bytes) = total.get()
            {
                progress.set_total(bytes);
            }
            let sha256 = read_file(&path, size, &mut progress, &mut items, recycled)?;
            items.push(Item::FileEnd(sha256), 0)?;
        }
        Ok(())
    })
    .and_then(|()| items.flush());
    match walked {
        // Everything was read: the count is the total, even when the counting walk lost the race.
        Ok(()) => progress.finish(),
        Err(e) => {
            let _ = items.push(Item::Failed(e), 0).and_then(|()| items.flush());
        }
    }
}

/// The receiving end: one item at a time out of the batches.
struct Inbox {
    rx: mpsc::Receiver<Vec<Item>>,
    pending: std::collections::VecDeque<Item>,
}

impl Inbox {
    /// The next item; `None` once the reader finished and everything was taken.
    fn recv(&mut self) -> Option<Item> {
        if self.pending.is_empty() {
            self.pending.extend(self.rx.recv().ok()?);
        }
        self.pending.pop_front()
    }
}

/// Sends `size` bytes of the file at `path` as chunks and returns their SHA-256; fails when the
/// file changed size since it was listed.
fn read_file(
    path: &Path,
    size: u64,
    progress: &mut Progress,
    items: &mut Outbox<Item>,
    recycled: &mpsc::Receiver<Vec<u8>>,
) -> Result<String, ArchiveError> {
    let mut file = tree::open_no_follow(path)?;
    let mut hasher = Sha256::new();
    let mut left = size;
    while left > 0 {
        let want = usize::try_from(left).unwrap_or(IO_BUFFER).min(IO_BUFFER);
        // Full-size buffers are recycled; a small file's content gets an allocation of its size.
        let mut chunk = match want {
            IO_BUFFER => recycled.try_recv().unwrap_or_else(|_| Vec::with_capacity(IO_BUFFER)),
            _ => Vec::with_capacity(want),
        };
        chunk.resize(want, 0);
        let mut filled = 0;
        while filled < want {
            match file.read(&mut chunk[filled..]) {
                Ok(0) => return Err(changed_size(path, size)),
                Ok(n) => filled += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(ArchiveError::io("reading", path, e)),
            }
        }
        hasher.update(&chunk);
        left -= want as u64;
        progress.advance(want as u64).map_err(|_| ArchiveError::Cancelled)?;
        items.push(Item::Chunk(chunk), want)?;
    }
    let grew = file.read(&mut [0u8; 1]).map_err(|e| ArchiveError::io("reading", path, e))? > 0;
    if grew {
        return Err(changed_size(path, size));
    }
    Ok(hex::encode(hasher.finalize()))
}

fn changed_size(path: &Path, size: u64) -> ArchiveError {
    ArchiveError::io(
        "reading",
        path,
        std::io::Error::other(format!(
            "the file changed size while it was archived ({size} bytes when listed); the working \
             folder must not change during the archive step"
        )),
    )
}

/// The writing side: tar headers and content in the order the reader sends them, and each
/// entry into the manifest.
fn write_entries<W: Write>(
    builder: &mut tar::Builder<W>,
    manifest: &mut ManifestWriter<BufWriter<File>>,
    inbox: &mut Inbox,
    spent: &mpsc::Sender<Vec<u8>>,
    archive: &Path,
    ctx: &StepContext,
) -> Result<(), ArchiveError> {
    loop {
        let entry = match inbox.recv() {
            Some(Item::Entry(entry)) => entry,
            Some(Item::Failed(e)) => return Err(e),
            Some(Item::Chunk(_) | Item::FileEnd(_)) => {
                return Err(write_error(archive, std::io::Error::other("archive reader out of step")));
            }
            // The reader finished the tree.
            None => return Ok(()),
        };
        let recorded = append_entry(builder, entry, inbox, spent, archive, ctx)?;
        manifest.push(&recorded).map_err(|e| write_error(archive, e))?;
    }
}

fn append_entry<W: Write>(
    builder: &mut tar::Builder<W>,
    entry: TreeEntry,
    inbox: &mut Inbox,
    spent: &mpsc::Sender<Vec<u8>>,
    archive: &Path,
    ctx: &StepContext,
) -> Result<ManifestEntry, ArchiveError> {
    let mut header = Header::new_gnu();
    header.set_metadata_in_mode(&entry.meta, HeaderMode::Complete);
    // Permission bits only, as GNU tar writes them (st_mode also carries the file type).
    header.set_mode(entry.mode());
    header.set_mtime(u64::try_from(entry.mtime()).unwrap_or(0));
    match entry.kind {
        EntryKind::Dir => {
            header.set_entry_type(EntryType::Directory);
            header.set_size(0);
            builder.append_data(&mut header, &entry.rel, std::io::empty()).map_err(|e| write_error(archive, e))?;
            Ok(ManifestEntry { path: entry.rel, kind: EntryKind::Dir, size: 0, sha256: None, link: None })
        }
        EntryKind::Symlink => {
            let target = stored_link_target(entry.link.as_deref().unwrap_or_default());
            if let Err(reason) = policy::check_symlink_target(&entry.rel, &target) {
                ctx.warn(format!(
                    "{} is archived as a symlink, but extraction will refuse it: {reason}",
                    entry.abs.display()
                ));
            }
            header.set_entry_type(EntryType::Symlink);
            header.set_size(0);
            builder.append_link(&mut header, &entry.rel, &target).map_err(|e| write_error(archive, e))?;
            Ok(ManifestEntry { path: entry.rel, kind: EntryKind::Symlink, size: 0, sha256: None, link: Some(target) })
        }
        EntryKind::File => {
            let size = entry.meta.len();
            header.set_entry_type(EntryType::Regular);
            header.set_size(size);
            let mut content = ChunkReader { inbox, spent, current: Vec::new(), at: 0, sha256: None, failed: None };
            let appended = builder.append_data(&mut header, &entry.rel, &mut content);
            if let Some(e) = content.failed.take() {
                return Err(e);
            }
            appended.map_err(|e| write_error(archive, e))?;
            let sha256 = content
                .sha256
                .ok_or_else(|| write_error(archive, std::io::Error::other("archive reader out of step")))?;
            Ok(ManifestEntry { path: entry.rel, kind: EntryKind::File, size, sha256: Some(sha256), link: None })
        }
    }
}

/// One file's content as the reader sends it, until its `FileEnd`.
struct ChunkReader<'a> {
    inbox: &'a mut Inbox,
    spent: &'a mpsc::Sender<Vec<u8>>,
    current: Vec<u8>,
    at: usize,
    sha256: Option<String>,
    failed: Option<ArchiveError>,
}

impl Read for ChunkReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while self.at == self.current.len() {
            if self.sha256.is_some() {
                return Ok(0);
            }
            match self.inbox.recv() {
                Some(Item::Chunk(chunk)) => {
                    let old = std::mem::replace(&mut self.current, chunk);
                    if old.capacity() == IO_BUFFER {
                        let _ = self.spent.send(old);
                    }
                    self.at = 0;
                }
                Some(Item::FileEnd(sha256)) => self.sha256 = Some(sha256),
                Some(Item::Failed(e)) => {
                    self.failed = Some(e);
                    return Err(std::io::Error::other("reading failed"));
                }
                Some(Item::Entry(_)) | None => return Err(std::io::Error::other("archive reader out of step")),
            }
        }
        let n = buf.len().min(self.current.len() - self.at);
        buf[..n].copy_from_slice(&self.current[self.at..self.at + n]);
        self.at += n;
        Ok(n)
    }
}

/// The metadata and the manifest: owner-only, owned by whoever makes the backup.
fn append_own_file<W: Write>(
    builder: &mut tar::Builder<W>,
    path: &str,
    content: &[u8],
    mtime: u64,
    archive: &Path,
) -> Result<(), ArchiveError> {
    append_own_data(builder, path, content.len() as u64, content, mtime, archive)
}

/// One of bitbucket-diy's own files, `size` bytes read from `content`, owner-only.
fn append_own_data<W: Write>(
    builder: &mut tar::Builder<W>,
    path: &str,
    size: u64,
    content: impl Read,
    mtime: u64,
    archive: &Path,
) -> Result<(), ArchiveError> {
    let mut header = Header::new_gnu();
    header.set_entry_type(EntryType::Regular);
    header.set_size(size);
    header.set_mode(0o600);
    header.set_mtime(mtime);
    header.set_uid(u64::from(rustix::process::geteuid().as_raw()));
    header.set_gid(u64::from(rustix::process::getegid().as_raw()));
    builder.append_data(&mut header, path, content).map_err(|e| write_error(archive, e))
}

/// A symlink target as tar stores it: `Path::components` drops repeated and trailing `/` and
/// inner `.`, so the manifest records exactly what the archive holds.
pub(crate) fn stored_link_target(target: &str) -> String {
    let path = Path::new(target);
    let absolute = path.has_root();
    let parts: Vec<&str> =
        path.components().filter(|c| !matches!(c, Component::RootDir)).filter_map(|c| c.as_os_str().to_str()).collect();
    let joined = parts.join("/");
    if absolute { format!("/{joined}") } else { joined }
}

fn write_error(archive: &Path, error: std::io::Error) -> ArchiveError {
    match stream::origin(error) {
        IoOrigin::Cancelled => ArchiveError::Cancelled,
        IoOrigin::LocalRead { path, source } => ArchiveError::io("reading", path, source),
        IoOrigin::Other(e) => ArchiveError::io("writing", archive, e),
    }
}

fn json_error(archive: &Path, error: serde_json::Error) -> ArchiveError {
    ArchiveError::io("writing", archive, std::io::Error::other(error))
}

#[cfg(test)]
mod tests {
    use super::stored_link_target;

    #[test]
    fn link_targets_are_recorded_as_tar_stores_them() {
        assert_eq!(stored_link_target("../a//b/./c/"), "../a/b/c");
        assert_eq!(stored_link_target("./x"), "./x");
        assert_eq!(stored_link_target("/etc//passwd"), "/etc/passwd");
    }
}
