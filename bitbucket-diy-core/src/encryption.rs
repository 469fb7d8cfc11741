//! Encryption at rest with [age](https://age-encryption.org): archives are encrypted to one or
//! more **recipients** (public keys, `age1…`), so the host that makes backups needs no private
//! key; `verify` and `restore` take an **identity** file (the private keys, as `age-keygen`
//! writes them).
//!
//! The archive stream is encrypted as it is written (tar → zstd → age → file or upload), so the
//! plaintext archive never exists on disk. An encrypted archive is a standard age file:
//! `age -d -i key.txt x.tar.zst.age | tar --zstd -x` reads it without bitbucket-diy.
//!
//! ```
//! use bitbucket_diy_core::encryption::{Encryption, Recipients};
//!
//! let recipients = Recipients::parse(["age1ql3z7hjy54pw3hyww5ayyfg7zqgvc7w3j2elw8zmrj2kg5sfn9aqmcac8p"], "example")?;
//! let encryption = Encryption::to(recipients);
//! assert!(encryption.can_encrypt() && !encryption.can_decrypt());
//! # Ok::<(), bitbucket_diy_core::ConfigError>(())
//! ```

use std::fmt;
use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};

use crate::config::ConfigError;
use crate::strategy::ArchiveError;

/// File name extension of encrypted archives, after the archive format's own (`.tar.zst.age`).
pub const EXTENSION: &str = "age";

/// The public keys archives are encrypted to. Public keys are not secret: `Debug` shows them.
#[derive(Clone)]
pub struct Recipients {
    keys: Vec<age::x25519::Recipient>,
}

impl fmt::Debug for Recipients {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.keys.iter().map(ToString::to_string)).finish()
    }
}

impl Recipients {
    /// Parses `age1…` public keys. `origin` names where they came from in errors (a config key or
    /// a file). Empty strings and `#` comments are skipped; at least one key is required.
    pub fn parse<I, S>(keys: I, origin: &str) -> Result<Self, ConfigError>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let mut parsed = Vec::new();
        for (n, raw) in keys.into_iter().enumerate() {
            let key = raw.as_ref().trim();
            if key.is_empty() || key.starts_with('#') {
                continue;
            }
            let recipient = key.parse::<age::x25519::Recipient>().map_err(|reason| {
                ConfigError::invalid(
                    origin,
                    format!(
                        "entry {} (`{}`) is not an age public key ({reason}); expected `age1…` as printed by \
                         `age-keygen -y`",
                        n + 1,
                        shorten(key)
                    ),
                )
            })?;
            parsed.push(recipient);
        }
        if parsed.is_empty() {
            return Err(ConfigError::invalid(origin, "holds no age public key (`age1…`)"));
        }
        Ok(Self { keys: parsed })
    }

    /// Reads a recipients file: one `age1…` key per line, `#` comments allowed (`age -R`'s
    /// format).
    pub fn from_file(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            ConfigError::invalid("archive.encryption.recipients_file", format!("cannot read {}: {e}", path.display()))
        })?;
        Self::parse(text.lines(), &format!("recipients file {}", path.display()))
    }

    /// Both sets of keys together: an archive is readable by any one of them.
    pub fn merged(mut self, other: Recipients) -> Self {
        for key in other.keys {
            if !self.keys.iter().any(|k| k.to_string() == key.to_string()) {
                self.keys.push(key);
            }
        }
        self
    }

    /// How many keys.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// Always false: parsing refuses an empty set.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }
}

/// Private keys that decrypt archives, read from an identity file. `Debug` shows only the file.
pub struct Identities {
    keys: Vec<age::x25519::Identity>,
    file: PathBuf,
}

impl fmt::Debug for Identities {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Identities").field("file", &self.file).field("keys", &self.keys.len()).finish()
    }
}

impl Identities {
    /// Reads an identity file as `age-keygen -o` writes it (`AGE-SECRET-KEY-1…` lines, `#`
    /// comments). Encrypted (passphrase-protected) identity files and plugin identities are not
    /// supported: decrypt the file with `age -d` into a private location first.
    pub fn from_file(path: &Path) -> Result<Self, ConfigError> {
        let key = "identity file";
        let text = std::fs::read_to_string(path)
            .map_err(|e| ConfigError::invalid(key, format!("cannot read {}: {e}", path.display())))?;
        if text.starts_with("age-encryption.org/") {
            return Err(ConfigError::invalid(
                key,
                format!(
                    "{} is itself age-encrypted; decrypt it (`age -d -o key.txt {}`) into a private file",
                    path.display(),
                    path.display()
                ),
            ));
        }
        let mut keys = Vec::new();
        for (n, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            // The parse error would not name the line, and the line is a secret: say where only.
            let identity = line.parse::<age::x25519::Identity>().map_err(|_| {
                ConfigError::invalid(
                    key,
                    format!(
                        "{} line {}: not an age identity (expected `AGE-SECRET-KEY-1…` as written by age-keygen)",
                        path.display(),
                        n + 1
                    ),
                )
            })?;
            keys.push(identity);
        }
        if keys.is_empty() {
            return Err(ConfigError::invalid(key, format!("{} holds no age identity", path.display())));
        }
        Ok(Self { keys, file: path.to_owned() })
    }

    /// The public keys of these identities (what `age-keygen -y` prints).
    pub fn recipients(&self) -> Recipients {
        Recipients { keys: self.keys.iter().map(age::x25519::Identity::to_public).collect() }
    }

    /// The file they were read from.
    pub fn file(&self) -> &Path {
        &self.file
    }
}

/// How archives are encrypted (recipients) and decrypted (identities). Either may be absent: a
/// backup host holds only recipients, a restore host only an identity.
#[derive(Debug, Default)]
pub struct Encryption {
    recipients: Option<Recipients>,
    identities: Option<Identities>,
}

impl Encryption {
    /// Encrypt new archives to `recipients`.
    pub fn to(recipients: Recipients) -> Self {
        Self { recipients: Some(recipients), identities: None }
    }

    /// Decrypt archives with `identities` only (a restore host): writing is refused.
    pub fn with_identities_only(identities: Identities) -> Self {
        Self { recipients: None, identities: Some(identities) }
    }

    /// Also decrypt with `identities`.
    pub fn identities(mut self, identities: Identities) -> Self {
        self.identities = Some(identities);
        self
    }

    /// Whether new archives can be written (recipients are set).
    pub fn can_encrypt(&self) -> bool {
        self.recipients.is_some()
    }

    /// Whether encrypted archives can be read (an identity is set).
    pub fn can_decrypt(&self) -> bool {
        self.identities.is_some()
    }

    /// Wraps `out` so that what is written is encrypted; `archive` names the archive in errors.
    pub(crate) fn encrypt<W: Write>(
        &self,
        out: W,
        archive: &Path,
    ) -> Result<age::stream::StreamWriter<W>, ArchiveError> {
        let recipients = self.recipients.as_ref().ok_or_else(|| ArchiveError::KeyMissing {
            archive: archive.to_owned(),
            reason: "encryption is configured without recipients, so this host can only read encrypted \
                     archives: add `recipients` or `recipients_file` to [archive.encryption] to write backups"
                .to_owned(),
        })?;
        let encryptor =
            age::Encryptor::with_recipients(recipients.keys.iter().map(|k| k as &dyn age::Recipient)).map_err(|e| {
                ArchiveError::KeyMissing { archive: archive.to_owned(), reason: format!("cannot encrypt: {e}") }
            })?;
        encryptor.wrap_output(out).map_err(|e| ArchiveError::io("writing", archive, e))
    }

    /// Reads the age header from `input` and returns the decrypting reader.
    pub(crate) fn decrypt<R: BufRead>(
        &self,
        input: R,
        archive: &Path,
    ) -> Result<age::stream::StreamReader<R>, ArchiveError> {
        let identities = self.identities.as_ref().ok_or_else(|| identity_required(archive))?;
        decrypt_with(identities, input, archive)
    }
}

/// The error for an encrypted archive read without an identity.
pub(crate) fn identity_required(archive: &Path) -> ArchiveError {
    ArchiveError::KeyMissing {
        archive: archive.to_owned(),
        reason: "the archive is encrypted and no identity was given: pass the age identity file \
                 (--identity FILE, or identity_file in [archive.encryption])"
            .to_owned(),
    }
}

fn decrypt_with<R: BufRead>(
    identities: &Identities,
    input: R,
    archive: &Path,
) -> Result<age::stream::StreamReader<R>, ArchiveError> {
    let failed = |reason: String| ArchiveError::Decryption { archive: archive.to_owned(), reason };
    let decryptor = age::Decryptor::new_buffered(input).map_err(|e| match e {
        age::DecryptError::Io(e) => crate::strategy::archive::read_error(archive, e),
        other => failed(format!("not a readable age file: {other}")),
    })?;
    decryptor.decrypt(identities.keys.iter().map(|k| k as &dyn age::Identity)).map_err(|e| match e {
        age::DecryptError::NoMatchingKeys => failed(format!(
            "no matching key: the identity file {} holds none of the keys it was encrypted to",
            identities.file.display()
        )),
        age::DecryptError::Io(e) => crate::strategy::archive::read_error(archive, e),
        other => failed(other.to_string()),
    })
}

fn shorten(key: &str) -> String {
    if key.chars().count() > 24 { format!("{}…", key.chars().take(20).collect::<String>()) } else { key.to_owned() }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_recipients_are_named() {
        let err = Recipients::parse(["age1notakey"], "archive.encryption.recipients").unwrap_err().to_string();
        assert!(err.contains("archive.encryption.recipients") && err.contains("entry 1"), "{err}");
        let err = Recipients::parse(["# only a comment", ""], "x").unwrap_err().to_string();
        assert!(err.contains("no age public key"), "{err}");
    }

    #[test]
    fn identity_debug_shows_no_key() {
        let dir = tempfile::tempdir().unwrap();
        let identity = age::x25519::Identity::generate();
        let secret = age::secrecy::ExposeSecret::expose_secret(&identity.to_string()).to_owned();
        let path = dir.path().join("key.txt");
        std::fs::write(&path, format!("# created by a test\n{secret}\n")).unwrap();
        let loaded = Identities::from_file(&path).unwrap();
        assert!(!format!("{loaded:?}").contains("AGE-SECRET-KEY"));
        assert_eq!(loaded.recipients().len(), 1);
        std::fs::write(&path, "AGE-SECRET-KEY-1NOPE\n").unwrap();
        let err = Identities::from_file(&path).unwrap_err().to_string();
        assert!(err.contains("line 1") && !err.contains("NOPE"), "{err}");
    }
}
