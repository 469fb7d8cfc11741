//! Generates a Bitbucket-shaped home of **real** git repositories, for the demo, the tests of
//! every strategy and the benchmarks.
//!
//! ```text
//! shared/bitbucket.properties
//! shared/config/…                          shared/plugins/installed-plugins/*.jar
//! shared/data/repositories/<id>/           bare repositories: repository-config, refs/, packed-refs,
//!                                          stash-refs/, stash-packed-refs, packs and loose objects
//! shared/data/repositories/<fork>/objects/info/alternates  → the parent's objects (absolute, as Bitbucket writes it)
//! shared/data/attachments/…  shared/data/git-lfs/…  shared/search/…
//! shared/data/db.*                          internal database files (optional)
//! caches/ tmp/ log/ .lock plugins/.osgi-cache/ export/ shared/.lock shared/search/data/   (excluded from backups)
//! ```
//!
//! History is created in bulk with `git fast-import` (one process per repository, which writes
//! one pack) rather than thousands of `git commit` calls; a few commits are added afterwards
//! with plumbing ([`commit_to_repo`]) so repositories also hold loose objects and loose refs.
//! Content comes from a seeded generator: the same spec gives the same files.

use std::fs;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use rayon::prelude::*;

use crate::strategy::filesystem::git_locks::find_bare_repositories;

mod compare;
mod git;

pub use compare::compare_trees;

use git::{git, git_with_env};

/// The generator failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SampleHomeError {
    /// `git` is not installed.
    #[error("`git` was not found on PATH: install it (`apt-get install git`) to generate sample homes")]
    GitMissing,
    /// A git command failed.
    #[error("`{command}` failed in {}: {stderr}", dir.display())]
    Git {
        /// The command (first arguments only).
        command: String,
        /// Where it ran.
        dir: PathBuf,
        /// Its standard error.
        stderr: String,
    },
    /// Writing a file failed.
    #[error("writing {}: {source}", path.display())]
    Io {
        /// Which path.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The spec cannot be generated.
    #[error("invalid sample home spec: {0}")]
    InvalidSpec(String),
}

/// How big and how varied a sample home is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SampleHomeSpec {
    /// Ordinary (small) repositories.
    pub repositories: usize,
    /// Commits in each ordinary repository.
    pub commits_per_repo: usize,
    /// Files added or changed by each commit.
    pub files_per_commit: usize,
    /// Size of each file in ordinary repositories (text-like content).
    pub file_size: usize,
    /// Large repositories (binary-like content, stored uncompressed as such files would be).
    pub large_repos: usize,
    /// Bytes of content in each large repository.
    pub large_repo_bytes: u64,
    /// Attachment files.
    pub attachments: usize,
    /// Size of each attachment.
    pub attachment_size: usize,
    /// Git LFS objects.
    pub lfs_objects: usize,
    /// Size of each LFS object.
    pub lfs_object_size: usize,
    /// Installed app jars.
    pub plugins: usize,
    /// Size of each jar.
    pub plugin_size: usize,
    /// Bytes of caches, logs and temporary files (all excluded from backups).
    pub excluded_bytes: u64,
    /// Add a fork of repository 1 borrowing its objects through `objects/info/alternates`.
    pub fork: bool,
    /// Leave stale git lock files in one repository.
    pub stale_locks: bool,
    /// Add internal database files (`shared/data/db.*`).
    pub internal_database: bool,
    /// Seed of the content generator.
    pub seed: u64,
}

impl SampleHomeSpec {
    /// A few repositories and well under 2 MB, generated in well under a second: for tests.
    pub fn tiny() -> Self {
        Self {
            repositories: 3,
            commits_per_repo: 4,
            files_per_commit: 2,
            file_size: 600,
            large_repos: 0,
            large_repo_bytes: 0,
            attachments: 3,
            attachment_size: 2 * 1024,
            lfs_objects: 2,
            lfs_object_size: 4 * 1024,
            plugins: 2,
            plugin_size: 8 * 1024,
            excluded_bytes: 16 * 1024,
            fork: true,
            stale_locks: true,
            internal_database: true,
            seed: 1,
        }
    }

    /// A home worth looking at in a demo: a few MB, some history, one larger repository.
    pub fn demo() -> Self {
        Self {
            repositories: 12,
            commits_per_repo: 20,
            files_per_commit: 3,
            file_size: 2 * 1024,
            large_repos: 1,
            large_repo_bytes: 4 * 1024 * 1024,
            attachments: 20,
            attachment_size: 16 * 1024,
            lfs_objects: 8,
            lfs_object_size: 64 * 1024,
            plugins: 4,
            plugin_size: 256 * 1024,
            excluded_bytes: 1024 * 1024,
            ..Self::tiny()
        }
    }

    /// About `total` bytes on disk, shaped like a real home: many small repositories (a quarter),
    /// a few large ones (45 %), attachments, LFS objects and app jars, plus 3 % of caches and logs
    /// that backups leave out. For the 200 MB, 2 GB and 6 GB benchmarks.
    pub fn with_total_bytes(total: u64) -> Self {
        let share = |percent: u64| total / 100 * percent;
        let large_repos = (total / (512 << 20)).clamp(1, 4) as usize;
        let repositories = (share(25) / (256 << 10)).clamp(10, 2000) as usize;
        let commits_per_repo = 10;
        let files_per_commit = 2;
        // Text packs to about 80 % of its size at the compression level the generator uses.
        let file_size = (share(25) / (repositories * commits_per_repo * files_per_commit) as u64).max(64) as usize;
        let attachment_size = 256 << 10;
        let lfs_object_size = 1 << 20;
        let plugin_size = 2 << 20;
        Self {
            repositories,
            commits_per_repo,
            files_per_commit,
            file_size,
            large_repos,
            large_repo_bytes: share(45) / large_repos as u64,
            attachments: (share(10) / attachment_size as u64).max(1) as usize,
            attachment_size,
            lfs_objects: (share(12) / lfs_object_size as u64).max(1) as usize,
            lfs_object_size,
            plugins: (share(5) / plugin_size as u64).max(1) as usize,
            plugin_size,
            excluded_bytes: share(3),
            fork: true,
            stale_locks: true,
            internal_database: true,
            seed: 42,
        }
    }
}

/// One generated repository.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SampleRepository {
    /// Its id (the folder name).
    pub id: u64,
    /// The bare repository.
    pub path: PathBuf,
    /// The parent's id, for the fork.
    pub fork_of: Option<u64>,
}

/// A generated home.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SampleHome {
    /// The home folder.
    pub root: PathBuf,
    /// Every repository, by id.
    pub repositories: Vec<SampleRepository>,
    /// The stale lock files left in one repository.
    pub stale_locks: Vec<PathBuf>,
}

impl SampleHome {
    /// `shared/data/repositories` of `home`.
    pub fn repositories_dir(home: &Path) -> PathBuf {
        home.join("shared").join("data").join("repositories")
    }

    /// The repository with this id.
    pub fn repository(&self, id: u64) -> Option<&Path> {
        self.repositories.iter().find(|r| r.id == id).map(|r| r.path.as_path())
    }

    /// The fork, when generated.
    pub fn fork(&self) -> Option<&SampleRepository> {
        self.repositories.iter().find(|r| r.fork_of.is_some())
    }
}

/// Generate a home at `root` (created if missing; must be empty).
pub fn generate(root: &Path, spec: &SampleHomeSpec) -> Result<SampleHome, SampleHomeError> {
    if spec.repositories == 0 && spec.large_repos == 0 {
        return Err(SampleHomeError::InvalidSpec("at least one repository is needed".to_owned()));
    }
    if spec.commits_per_repo == 0 || spec.files_per_commit == 0 {
        return Err(SampleHomeError::InvalidSpec(
            "commits_per_repo and files_per_commit must be at least 1".to_owned(),
        ));
    }
    create_dir(root)?;
    let root = root.canonicalize().map_err(|e| io_error(root, e))?;
    if fs::read_dir(&root).map_err(|e| io_error(&root, e))?.next().is_some() {
        return Err(SampleHomeError::InvalidSpec(format!("{} is not empty", root.display())));
    }
    let repos_dir = SampleHome::repositories_dir(&root);
    create_dir(&repos_dir)?;

    let small = (1..=spec.repositories as u64).map(|id| (id, false));
    let large = (1..=spec.large_repos as u64).map(|n| (spec.repositories as u64 + n, true));
    let plan: Vec<(u64, bool)> = small.chain(large).collect();
    let mut repositories: Vec<SampleRepository> = plan
        .par_iter()
        .map(|&(id, is_large)| {
            let path = repos_dir.join(id.to_string());
            create_repository(&path, id, spec, is_large)?;
            Ok(SampleRepository { id, path, fork_of: None })
        })
        .collect::<Result<_, SampleHomeError>>()?;

    if spec.fork {
        let fork_id = plan.len() as u64 + 1;
        let path = repos_dir.join(fork_id.to_string());
        create_fork(&path, fork_id, &repositories[0].path)?;
        repositories.push(SampleRepository { id: fork_id, path, fork_of: Some(repositories[0].id) });
    }
    let stale_locks = if spec.stale_locks {
        let target = &repositories[repositories.len().min(2) - 1].path;
        leave_stale_locks(target)?
    } else {
        Vec::new()
    };
    write_home_files(&root, spec)?;
    Ok(SampleHome { root, repositories, stale_locks })
}

fn create_repository(path: &Path, id: u64, spec: &SampleHomeSpec, is_large: bool) -> Result<(), SampleHomeError> {
    init_bare(path, id)?;
    let mut random = Random::new(spec.seed ^ id.wrapping_mul(0x9E37_79B9_7F4A_7C15));
    let (commits, files, size) = if is_large {
        let files = 4usize;
        let commits = spec.commits_per_repo.clamp(1, 8);
        let size = (spec.large_repo_bytes / (commits * files) as u64).max(1) as usize;
        (commits, files, size)
    } else {
        (spec.commits_per_repo, spec.files_per_commit, spec.file_size)
    };
    let path_str = path.to_string_lossy().into_owned();
    // Binary-like content is stored, not deflated: compressing random bytes only burns time.
    let compression = if is_large { "pack.compression=0" } else { "pack.compression=1" };
    let mut child = std::process::Command::new("git")
        .args(["-C", &path_str, "-c", compression, "fast-import", "--quiet", "--done"])
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .map_err(|e| {
            if e.kind() == std::io::ErrorKind::NotFound { SampleHomeError::GitMissing } else { io_error(path, e) }
        })?;
    let write_result = (|| -> std::io::Result<()> {
        let Some(stdin) = child.stdin.take() else {
            return Ok(());
        };
        let mut out = std::io::BufWriter::with_capacity(1 << 20, stdin);
        let mut content = vec![0u8; size];
        for c in 0..commits {
            let when = 1_700_000_000 + (id as usize * 10_000 + c * 60);
            let message = format!("Change {c} of repository {id}\n");
            write!(
                out,
                "commit refs/heads/main\ncommitter {} <{}> {when} +0000\ndata {}\n{message}",
                git::AUTHOR_NAME,
                git::AUTHOR_EMAIL,
                message.len()
            )?;
            for f in 0..files {
                if is_large {
                    random.fill_bytes(&mut content);
                } else {
                    random.fill_text(&mut content);
                }
                let file = if is_large {
                    format!("assets/blob-{c}-{f}.bin")
                } else {
                    format!("src/module-{}/file-{f}.txt", c % 5)
                };
                write!(out, "M 100644 inline {file}\ndata {}\n", content.len())?;
                out.write_all(&content)?;
                out.write_all(b"\n")?;
            }
            out.write_all(b"\n")?;
        }
        write!(out, "reset refs/tags/v1\nfrom refs/heads/main\n\ndone\n")?;
        out.flush()
    })();
    let output = child.wait_with_output().map_err(|e| io_error(path, e))?;
    if !output.status.success() {
        return Err(SampleHomeError::Git {
            command: "git fast-import".to_owned(),
            dir: path.to_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).trim().to_owned(),
        });
    }
    write_result.map_err(|e| io_error(path, e))?;

    // Variety: some repositories keep loose refs, others packed ones; some gain loose objects.
    if id.is_multiple_of(2) {
        git(Some(path), &["pack-refs", "--all"], None)?;
    }
    let head = git(Some(path), &["rev-parse", "refs/heads/main"], None)?.trim().to_owned();
    write_stash_refs(path, &head)?;
    if id % 3 == 1 {
        commit_to_repo(path, "Loose commit after import")?;
    }
    Ok(())
}

fn init_bare(path: &Path, id: u64) -> Result<(), SampleHomeError> {
    let path_str = path.to_string_lossy().into_owned();
    // No template: Bitbucket manages hooks itself, and the sample hooks are 20 KB of noise.
    git(None, &["init", "--bare", "--quiet", "--template=", "--initial-branch=main", &path_str], None)?;
    create_dir(&path.join("hooks"))?;
    create_dir(&path.join("logs").join("refs").join("heads"))?;
    let hierarchy = format!("{:020x}", id.wrapping_mul(0x2545_F491_4F6C_DD1D));
    write_file(
        &path.join("repository-config"),
        format!(
            "[bitbucket]\n\thierarchy = {hierarchy}\n\tproject = PROJECT_{}\n\trepository = repository-{id}\n",
            id % 7
        )
        .as_bytes(),
    )
}

/// Bitbucket's own refs (pull requests) beside git's.
fn write_stash_refs(path: &Path, head: &str) -> Result<(), SampleHomeError> {
    let pr = path.join("stash-refs").join("pull-requests").join("1");
    create_dir(&pr)?;
    write_file(&pr.join("from"), format!("{head}\n").as_bytes())?;
    write_file(
        &path.join("stash-packed-refs"),
        format!("# pack-refs with: peeled fully-peeled sorted \n{head} refs/pull-requests/1/merge\n").as_bytes(),
    )
}

fn create_fork(path: &Path, id: u64, parent: &Path) -> Result<(), SampleHomeError> {
    init_bare(path, id)?;
    // Absolute, as `git clone --shared` (and so Bitbucket) writes it; a restore relinks it.
    let alternates = path.join("objects").join("info").join("alternates");
    create_dir(alternates.parent().unwrap_or(path))?;
    write_file(&alternates, format!("{}\n", parent.join("objects").display()).as_bytes())?;
    let head = git(Some(parent), &["rev-parse", "refs/heads/main"], None)?.trim().to_owned();
    git(Some(path), &["update-ref", "refs/heads/main", &head], None)?;
    commit_to_repo(path, "Work in the fork")?;
    write_stash_refs(path, &head)
}

/// Lock files a copy of a live repository can hold; returns them.
fn leave_stale_locks(repo: &Path) -> Result<Vec<PathBuf>, SampleHomeError> {
    let locks = [
        "HEAD.lock",
        "config.lock",
        "index.lock",
        "packed-refs.lock",
        "stash-packed-refs.lock",
        "gc.pid",
        "refs/heads/main.lock",
        "stash-refs/pull-requests/1/from.lock",
        "logs/refs/heads/main.lock",
    ];
    let mut written = Vec::new();
    for lock in locks {
        let path = repo.join(lock);
        if let Some(parent) = path.parent() {
            create_dir(parent)?;
        }
        write_file(&path, b"0000000000000000000000000000000000000000\n")?;
        written.push(path);
    }
    Ok(written)
}

fn write_home_files(root: &Path, spec: &SampleHomeSpec) -> Result<(), SampleHomeError> {
    let mut random = Random::new(spec.seed.wrapping_add(7));
    let shared = root.join("shared");
    let properties = shared.join("bitbucket.properties");
    write_file(
        &properties,
        b"# Generated sample home\njdbc.driver=org.postgresql.Driver\n\
          jdbc.url=jdbc:postgresql://localhost:5432/bitbucket\njdbc.user=bitbucket\n\
          jdbc.password=sample-not-a-secret\nsetup.displayName=Sample\n",
    )?;
    fs::set_permissions(&properties, fs::Permissions::from_mode(0o600)).map_err(|e| io_error(&properties, e))?;
    let config = shared.join("config");
    create_dir(&config)?;
    write_file(
        &config.join("ssh-server-keys.pem"),
        b"-----BEGIN SAMPLE KEY-----\nnot a key\n-----END SAMPLE KEY-----\n",
    )?;
    std::os::unix::fs::symlink("ssh-server-keys.pem", config.join("current-key.pem"))
        .map_err(|e| io_error(&config.join("current-key.pem"), e))?;
    create_dir(&shared.join("data").join("kv-store"))?;

    let mut write_random = |path: PathBuf, size: usize| -> Result<(), SampleHomeError> {
        let mut bytes = vec![0u8; size];
        random.fill_bytes(&mut bytes);
        if let Some(parent) = path.parent() {
            create_dir(parent)?;
        }
        write_file(&path, &bytes)
    };
    for n in 0..spec.attachments {
        let path = shared
            .join("data/attachments")
            .join(format!("{}", n % 5 + 1))
            .join(format!("{:02}", n % 100))
            .join(format!("attachment-{n}.png"));
        write_random(path, spec.attachment_size)?;
    }
    for n in 0..spec.lfs_objects {
        let oid = format!("{:064x}", (n as u128 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15_F39C_C060_5CED_C835));
        let path = shared.join("data/git-lfs/storage").join(&oid[..2]).join(&oid[2..4]).join(&oid);
        write_random(path, spec.lfs_object_size)?;
    }
    for n in 0..spec.plugins {
        write_random(shared.join("plugins/installed-plugins").join(format!("plugin-{n}.jar")), spec.plugin_size)?;
    }
    write_file(&shared.join("search").join("state.json"), b"{\"indexed\": true}\n")?;
    if spec.internal_database {
        write_random(shared.join("data").join("db.mv.db"), 32 * 1024)?;
        write_random(shared.join("data").join("db.trace.db"), 1024)?;
    }

    // What backups leave out.
    let excluded = spec.excluded_bytes.max(6 * 1024);
    let piece = (excluded / 6) as usize;
    write_random(root.join("caches/idx/index-0.bin"), piece)?;
    write_random(root.join("log/atlassian-bitbucket.log"), piece)?;
    write_random(root.join("tmp/upload-0.tmp"), piece)?;
    write_random(root.join("plugins/.osgi-cache/felix/bundle0/bundle.jar"), piece)?;
    write_random(root.join("export/export-0.zip"), piece / 2)?;
    write_random(shared.join("export/export-1.zip"), piece / 2)?;
    write_random(shared.join("search/data/nodes/0/segment"), piece)?;
    write_file(&root.join(".lock"), b"locked by node 1\n")?;
    write_file(&shared.join(".lock"), b"locked by node 1\n")?;
    Ok(())
}

/// Add one commit to the default branch of the bare repository `repo` with plumbing
/// (`hash-object`, `mktree`, `commit-tree`, `update-ref`), changing `LIVE-WRITES.txt`.
/// Returns the new commit's id. The ref update is compare-and-swap, as a push's would be.
pub fn commit_to_repo(repo: &Path, message: &str) -> Result<String, SampleHomeError> {
    let head_ref = git(Some(repo), &["symbolic-ref", "HEAD"], None)?.trim().to_owned();
    let parent = git(Some(repo), &["rev-parse", "--verify", "--quiet", &format!("{head_ref}^{{commit}}")], None)
        .ok()
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty());
    let nanos = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default().as_nanos();
    let content = format!("{message}\n{nanos}\n");
    let blob = git(Some(repo), &["hash-object", "-w", "--stdin"], Some(content.as_bytes()))?.trim().to_owned();
    let mut entries: Vec<String> = match &parent {
        Some(parent) => git(Some(repo), &["ls-tree", parent], None)?
            .lines()
            .filter(|line| !line.ends_with("\tLIVE-WRITES.txt"))
            .map(str::to_owned)
            .collect(),
        None => Vec::new(),
    };
    entries.push(format!("100644 blob {blob}\tLIVE-WRITES.txt"));
    let tree_input = entries.join("\n") + "\n";
    let tree = git(Some(repo), &["mktree"], Some(tree_input.as_bytes()))?.trim().to_owned();
    let mut args = vec!["commit-tree", tree.as_str(), "-m", message];
    if let Some(parent) = &parent {
        args.extend(["-p", parent.as_str()]);
    }
    let commit = git_with_env(Some(repo), &args, None, &[])?.trim().to_owned();
    let mut update = vec!["update-ref", head_ref.as_str(), commit.as_str()];
    if let Some(parent) = &parent {
        update.push(parent.as_str());
    }
    git(Some(repo), &update, None)?;
    Ok(commit)
}

/// `git fsck --full --strict` on every bare repository below `home` (its
/// `shared/data/repositories/`, or a data store's `repositories/`). Returns how many were
/// checked, or the first failure with git's output.
pub fn fsck_all(home: &Path) -> Result<usize, String> {
    let repos = find_bare_repositories(home).map_err(|e| format!("listing repositories in {}: {e}", home.display()))?;
    for repo in &repos {
        git(Some(repo), &["fsck", "--full", "--strict", "--no-dangling", "--no-progress"], None)
            .map_err(|e| format!("{}: {e}", repo.display()))?;
    }
    Ok(repos.len())
}

fn create_dir(path: &Path) -> Result<(), SampleHomeError> {
    fs::create_dir_all(path).map_err(|e| io_error(path, e))
}

fn write_file(path: &Path, bytes: &[u8]) -> Result<(), SampleHomeError> {
    if let Some(parent) = path.parent() {
        create_dir(parent)?;
    }
    fs::write(path, bytes).map_err(|e| io_error(path, e))
}

fn io_error(path: &Path, source: std::io::Error) -> SampleHomeError {
    SampleHomeError::Io { path: path.to_owned(), source }
}

/// xorshift64*: fast, seedable, good enough for filler content.
struct Random(u64);

impl Random {
    fn new(seed: u64) -> Self {
        Self(seed | 1)
    }

    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn fill_bytes(&mut self, buf: &mut [u8]) {
        for chunk in buf.chunks_mut(8) {
            let bytes = self.next().to_le_bytes();
            chunk.copy_from_slice(&bytes[..chunk.len()]);
        }
    }

    /// Source-code-like text: words, spaces and newlines (compresses about 2:1).
    fn fill_text(&mut self, buf: &mut [u8]) {
        const ALPHABET: &[u8; 32] = b"etaoinshrdlucmfwypvbgkqjxz  \n(){";
        for chunk in buf.chunks_mut(12) {
            let mut bits = self.next();
            for byte in chunk {
                *byte = ALPHABET[(bits & 31) as usize];
                bits >>= 5;
            }
        }
    }
}
