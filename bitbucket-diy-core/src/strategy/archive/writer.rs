//! Streams a working folder into a tar stream: metadata first, the tree, the manifest last.

use std::io::{BufReader, Read, Write};
use std::path::{Component, Path};

use tar::{EntryType, Header, HeaderMode};

use crate::archive_format::{BackupMetadata, EntryKind, MANIFEST_PATH, METADATA_PATH, Manifest, ManifestEntry};
use crate::events::Phase;
use crate::strategy::{ArchiveError, StepContext};

use super::policy;
use super::stream::{self, HashingReader, IO_BUFFER, IoOrigin, Progress};
use super::tree::{self, TreeEntry};

/// Writes the tar stream of the working folder at `root` into `out` and returns `out` (the tar
/// end marker written, the compressor not finished) with the manifest. `archive` names the
/// archive in errors.
pub(crate) fn write_tar<W: Write>(
    out: W,
    root: &Path,
    metadata: &BackupMetadata,
    archive: &Path,
    ctx: &StepContext,
) -> Result<(W, Manifest), ArchiveError> {
    tree::warn_if_nothing_to_archive(root, ctx);
    let total = tree::total_file_bytes(root, ctx)?;
    let mut progress = Progress::start(ctx, Phase::Archive, Some(total));

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

    let mut entries = Vec::new();
    tree::walk(root, ctx, |entry| {
        let recorded = append_entry(&mut builder, &entry, &mut progress, archive)?;
        entries.push(recorded);
        Ok(())
    })?;

    let manifest = Manifest { metadata: metadata.clone(), entries };
    let manifest_json = serde_json::to_vec_pretty(&manifest).map_err(|e| json_error(archive, e))?;
    append_own_file(&mut builder, MANIFEST_PATH, &manifest_json, mtime, archive)?;
    let out = builder.into_inner().map_err(|e| write_error(archive, e))?;
    progress.report();
    Ok((out, manifest))
}

fn append_entry<W: Write>(
    builder: &mut tar::Builder<W>,
    entry: &TreeEntry,
    progress: &mut Progress,
    archive: &Path,
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
            Ok(ManifestEntry { path: entry.rel.clone(), kind: EntryKind::Dir, size: 0, sha256: None, link: None })
        }
        EntryKind::Symlink => {
            let target = stored_link_target(entry.link.as_deref().unwrap_or_default());
            if let Err(reason) = policy::check_symlink_target(&entry.rel, &target) {
                progress.ctx().warn(format!(
                    "{} is archived as a symlink, but extraction will refuse it: {reason}",
                    entry.abs.display()
                ));
            }
            header.set_entry_type(EntryType::Symlink);
            header.set_size(0);
            builder.append_link(&mut header, &entry.rel, &target).map_err(|e| write_error(archive, e))?;
            Ok(ManifestEntry {
                path: entry.rel.clone(),
                kind: EntryKind::Symlink,
                size: 0,
                sha256: None,
                link: Some(target),
            })
        }
        EntryKind::File => {
            let size = entry.meta.len();
            let file = tree::open_no_follow(&entry.abs)?;
            let mut reader =
                HashingReader::new(BufReader::with_capacity(IO_BUFFER, file).take(size), &entry.abs, progress);
            header.set_entry_type(EntryType::Regular);
            header.set_size(size);
            builder.append_data(&mut header, &entry.rel, &mut reader).map_err(|e| write_error(archive, e))?;
            let read = reader.bytes_read();
            let grew = reader
                .inner_mut()
                .get_mut()
                .read(&mut [0u8; 1])
                .map_err(|e| ArchiveError::io("reading", &entry.abs, e))?
                > 0;
            if read != size || grew {
                return Err(ArchiveError::io(
                    "reading",
                    &entry.abs,
                    std::io::Error::other(format!(
                        "the file changed size while it was archived ({size} bytes when listed); the \
                         working folder must not change during the archive step"
                    )),
                ));
            }
            Ok(ManifestEntry {
                path: entry.rel.clone(),
                kind: EntryKind::File,
                size,
                sha256: Some(reader.finish()),
                link: None,
            })
        }
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
    let mut header = Header::new_gnu();
    header.set_entry_type(EntryType::Regular);
    header.set_size(content.len() as u64);
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
