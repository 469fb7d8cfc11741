//! The optional encryption layer between the compressor and the archive's bytes, and what an
//! encrypted archive carries beside it.
//!
//! The layer sits where the archive's bytes leave the compressor (writing) or enter the
//! decompressor (reading): `tar → zstd → age → file/upload` and back. Without the `encryption`
//! feature it is always the identity, and encrypted archives are refused with a clear error.

use std::io::{self, BufRead, Read, Write};
use std::path::Path;
#[cfg(feature = "encryption")]
use std::sync::Arc;

use sha2::{Digest, Sha256};

#[cfg(feature = "encryption")]
use crate::encryption::Encryption;
use crate::strategy::ArchiveError;

/// `.age`: the suffix encrypted archives carry after the format's extension.
pub(crate) const ENCRYPTED_SUFFIX: &str = ".age";

/// Whether the archive's name says it is encrypted.
pub(crate) fn is_encrypted_name(name: &str) -> bool {
    name.ends_with(ENCRYPTED_SUFFIX)
}

/// How archives are sealed: plain, or encrypted with age.
#[derive(Clone, Default)]
pub(crate) struct Sealing {
    #[cfg(feature = "encryption")]
    encryption: Option<Arc<Encryption>>,
}

impl std::fmt::Debug for Sealing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.is_configured() { "Sealing(age)" } else { "Sealing(none)" })
    }
}

impl Sealing {
    /// Archives encrypted (and decrypted) as `encryption` says.
    #[cfg(feature = "encryption")]
    pub(crate) fn age(encryption: Arc<Encryption>) -> Self {
        Self { encryption: Some(encryption) }
    }

    /// Whether encryption is configured at all: new archives are then encrypted (or refused when
    /// only an identity is known).
    pub(crate) fn is_configured(&self) -> bool {
        #[cfg(feature = "encryption")]
        {
            self.encryption.is_some()
        }
        #[cfg(not(feature = "encryption"))]
        {
            false
        }
    }

    /// The suffix new archives get: `.age` when encrypting.
    pub(crate) fn suffix(&self) -> &'static str {
        if self.is_configured() { ENCRYPTED_SUFFIX } else { "" }
    }

    /// Wraps the archive's output in the encryption layer, if any.
    pub(crate) fn wrap_writer<W: Write>(&self, out: W, archive: &Path) -> Result<SealedWriter<W>, ArchiveError> {
        #[cfg(feature = "encryption")]
        if let Some(encryption) = &self.encryption {
            return Ok(SealedWriter::Age(encryption.encrypt(out, archive)?));
        }
        let _ = archive;
        Ok(SealedWriter::Plain(out))
    }

    /// Opens the decrypting layer over an archive's bytes when `encrypted`.
    pub(crate) fn open_reader<'r, R: BufRead + Send + 'r>(
        &self,
        encrypted: bool,
        input: R,
        archive: &Path,
    ) -> Result<Box<dyn Read + Send + 'r>, ArchiveError> {
        if !encrypted {
            return Ok(Box::new(input));
        }
        #[cfg(feature = "encryption")]
        {
            match &self.encryption {
                Some(encryption) => Ok(Box::new(encryption.decrypt(input, archive)?)),
                None => Err(crate::encryption::identity_required(archive)),
            }
        }
        #[cfg(not(feature = "encryption"))]
        {
            drop(input);
            Err(ArchiveError::KeyMissing {
                archive: archive.to_owned(),
                reason: "the archive is encrypted, and this build has no encryption support (cargo feature \
                         `encryption`)"
                    .to_owned(),
            })
        }
    }
}

/// A writer that is encrypted or not, finished the same way.
pub(crate) enum SealedWriter<W: Write> {
    /// No encryption.
    Plain(W),
    /// age.
    #[cfg(feature = "encryption")]
    Age(age::stream::StreamWriter<W>),
}

impl<W: Write> SealedWriter<W> {
    /// Writes the final chunk (for age) and returns the inner writer.
    pub(crate) fn finish(self) -> io::Result<W> {
        match self {
            SealedWriter::Plain(w) => Ok(w),
            #[cfg(feature = "encryption")]
            SealedWriter::Age(w) => w.finish(),
        }
    }
}

impl<W: Write> Write for SealedWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            SealedWriter::Plain(w) => w.write(buf),
            #[cfg(feature = "encryption")]
            SealedWriter::Age(w) => w.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            SealedWriter::Plain(w) => w.flush(),
            #[cfg(feature = "encryption")]
            SealedWriter::Age(w) => w.flush(),
        }
    }
}

/// Counts and hashes the archive's bytes on their way out: what the receipt records and what an
/// upload is checked against.
pub(crate) struct DigestWriter<W> {
    inner: W,
    hasher: Option<Sha256>,
    bytes: u64,
}

impl<W: Write> DigestWriter<W> {
    /// Counts what goes through; hashes it too when `hash` (receipts and uploads need the
    /// SHA-256; a plain local archive is checked by its manifest and skips the cost).
    pub(crate) fn new(inner: W, hash: bool) -> Self {
        Self { inner, hasher: hash.then(Sha256::new), bytes: 0 }
    }

    /// The inner writer, the lower-case hex SHA-256 (empty when not hashed) and the byte count.
    pub(crate) fn finish(self) -> (W, String, u64) {
        let sha256 = self.hasher.map(|h| hex::encode(h.finalize())).unwrap_or_default();
        (self.inner, sha256, self.bytes)
    }
}

impl<W: Write> Write for DigestWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        if let Some(hasher) = &mut self.hasher {
            hasher.update(&buf[..n]);
        }
        self.bytes += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// Counts and hashes the archive's bytes on their way in, to compare with the receipt.
#[cfg_attr(not(feature = "object-store"), allow(dead_code))]
pub(crate) struct DigestReader<R> {
    inner: R,
    hasher: Sha256,
    bytes: u64,
}

#[cfg_attr(not(feature = "object-store"), allow(dead_code))]
impl<R: Read> DigestReader<R> {
    pub(crate) fn new(inner: R) -> Self {
        Self { inner, hasher: Sha256::new(), bytes: 0 }
    }

    /// Reads whatever is left, then returns the hex SHA-256 and the byte count of everything.
    pub(crate) fn finish(mut self) -> io::Result<(String, u64)> {
        io::copy(&mut self, &mut io::sink())?;
        Ok((hex::encode(self.hasher.finalize()), self.bytes))
    }
}

impl<R: Read> Read for DigestReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        self.bytes += n as u64;
        Ok(n)
    }
}
