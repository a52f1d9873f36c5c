//! Content-addressed blobs: layers, configs and manifests, each stored once under its
//! sha256 digest at `<root>/sha256/<hex>`.
//!
//! A blob is written to `<root>/ingest/` first, hashed as it is written, synced, and
//! renamed into place only if its digest is the one expected, so a reader never sees a
//! half-written or corrupt blob, and a crash leaves only ingest files, removed at the
//! next [`Blobs::open`]. Rename within one directory tree is atomic, and a digest names
//! one content, so two writers of the same blob cannot conflict.

use sha2::{Digest as _, Sha256};
use std::fmt;
use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};

/// A sha256 digest, as OCI spells it: `sha256:` and 64 lowercase hex digits.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Digest {
    hex: String,
}

impl Digest {
    /// The digest of `bytes`.
    pub fn of(bytes: &[u8]) -> Digest {
        Digest {
            hex: hex::encode(Sha256::digest(bytes)),
        }
    }

    /// The 64 hex digits.
    pub fn hex(&self) -> &str {
        &self.hex
    }

    /// The digest a sha256 hasher has computed (for callers hashing a stream as it
    /// passes, such as a layer's uncompressed content).
    pub(crate) fn from_hasher(hasher: Sha256) -> Digest {
        Digest {
            hex: hex::encode(hasher.finalize()),
        }
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "sha256:{}", self.hex)
    }
}

impl FromStr for Digest {
    type Err = Error;

    fn from_str(s: &str) -> Result<Digest, Error> {
        let invalid = || Error::InvalidDigest(s.to_owned());
        let (algorithm, hex) = s.split_once(':').ok_or_else(invalid)?;
        if algorithm != "sha256" {
            return Err(Error::UnsupportedAlgorithm(algorithm.to_owned()));
        }
        let lower_hex = |c: char| c.is_ascii_digit() || ('a'..='f').contains(&c);
        if hex.len() != 64 || !hex.chars().all(lower_hex) {
            return Err(invalid());
        }
        Ok(Digest {
            hex: hex.to_owned(),
        })
    }
}

/// What can go wrong with a blob.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Not `sha256:` and 64 lowercase hex digits.
    #[error("invalid digest {0:?}")]
    InvalidDigest(String),
    /// Only sha256 is stored (as containerd does by default).
    #[error("unsupported digest algorithm {0:?}: only sha256 is supported")]
    UnsupportedAlgorithm(String),
    /// The content does not hash to the digest it was given under; nothing was stored.
    #[error("content does not match its digest: expected {expected}, got {actual}")]
    Mismatch {
        /// The digest asked for.
        expected: Digest,
        /// The digest of what was read.
        actual: Digest,
    },
    /// A file operation failed.
    #[error("{what} {}", path.display())]
    Io {
        /// What was being done.
        what: &'static str,
        /// On which file.
        path: PathBuf,
        /// Why it failed.
        #[source]
        source: io::Error,
    },
}

fn io_err<'a>(what: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> Error + 'a {
    move |source| Error::Io {
        what,
        path: path.to_owned(),
        source,
    }
}

/// Names of ingest files, unique within the process (the pid makes them unique across
/// processes sharing a store).
static INGEST: AtomicU64 = AtomicU64::new(0);

/// The blob store under one directory.
#[derive(Debug, Clone)]
pub struct Blobs {
    root: PathBuf,
}

impl Blobs {
    /// Opens (creating if needed) the store at `root`, and removes what a crash may have
    /// left half-written in its ingest directory.
    pub fn open(root: impl Into<PathBuf>) -> Result<Blobs, Error> {
        Blobs::open_with(root, true)
    }

    /// Opens the store at `root`; `clean` removes the ingest directory's leftovers,
    /// which only the store's sole user may do (another process may be writing there).
    pub fn open_with(root: impl Into<PathBuf>, clean: bool) -> Result<Blobs, Error> {
        let blobs = Blobs { root: root.into() };
        let sha = blobs.root.join("sha256");
        fs::create_dir_all(&sha).map_err(io_err("creating", &sha))?;
        let ingest = blobs.ingest_dir();
        if !clean {
            fs::create_dir_all(&ingest).map_err(io_err("creating", &ingest))?;
            return Ok(blobs);
        }
        match fs::remove_dir_all(&ingest) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(io_err("clearing", &ingest)(e)),
        }
        fs::create_dir_all(&ingest).map_err(io_err("creating", &ingest))?;
        Ok(blobs)
    }

    fn ingest_dir(&self) -> PathBuf {
        self.root.join("ingest")
    }

    /// Where the blob `d` lives (whether or not it is there).
    pub fn path(&self, d: &Digest) -> PathBuf {
        self.root.join("sha256").join(d.hex())
    }

    /// Whether the blob is stored.
    pub fn contains(&self, d: &Digest) -> bool {
        self.path(d).is_file()
    }

    /// Stores what `content` yields as the blob `expected`, returning its size. The blob
    /// becomes visible only whole and only if it hashes to `expected`; a blob already
    /// stored is not read again.
    pub fn put(&self, expected: &Digest, content: impl Read) -> Result<u64, Error> {
        if let Ok(meta) = fs::metadata(self.path(expected)) {
            return Ok(meta.len());
        }
        let (temp, size, actual) = self.ingest(content)?;
        if actual != *expected {
            let _ = fs::remove_file(&temp);
            return Err(Error::Mismatch {
                expected: expected.clone(),
                actual,
            });
        }
        self.commit(&temp, expected, size)?;
        Ok(size)
    }

    /// Stores what `content` yields under the digest it hashes to (content whose digest
    /// nothing states yet, such as the layers of a `docker save` tarball).
    pub fn put_unnamed(&self, content: impl Read) -> Result<(Digest, u64), Error> {
        let (temp, size, digest) = self.ingest(content)?;
        if self.contains(&digest) {
            let _ = fs::remove_file(&temp);
        } else {
            self.commit(&temp, &digest, size)?;
        }
        Ok((digest, size))
    }

    /// Writes `content` to a new ingest file: its path, size and digest.
    fn ingest(&self, mut content: impl Read) -> Result<(PathBuf, u64, Digest), Error> {
        let n = INGEST.fetch_add(1, Ordering::Relaxed);
        let temp = self
            .ingest_dir()
            .join(format!("{}-{n}", std::process::id()));
        match write_hashed(&temp, &mut content) {
            Ok((size, digest)) => Ok((temp, size, digest)),
            Err(e) => {
                let _ = fs::remove_file(&temp);
                Err(e)
            }
        }
    }

    /// Renames a verified ingest file into place, durably.
    fn commit(&self, temp: &Path, digest: &Digest, size: u64) -> Result<(), Error> {
        let target = self.path(digest);
        if let Err(e) = fs::rename(temp, &target) {
            let _ = fs::remove_file(temp);
            return Err(io_err("storing", &target)(e));
        }
        // The rename itself is made durable by syncing the directory that holds it.
        let dir = self.root.join("sha256");
        File::open(&dir)
            .and_then(|d| d.sync_all())
            .map_err(io_err("syncing", &dir))?;
        tracing::debug!(%digest, size, "blob stored");
        Ok(())
    }

    /// Stores `bytes`, returning their digest.
    pub fn put_bytes(&self, bytes: &[u8]) -> Result<Digest, Error> {
        let d = Digest::of(bytes);
        self.put(&d, bytes)?;
        Ok(d)
    }

    /// Reads a whole blob (manifests and configs; layers are streamed from [`Blobs::path`]).
    pub fn read(&self, d: &Digest) -> Result<Vec<u8>, Error> {
        let path = self.path(d);
        fs::read(&path).map_err(io_err("reading", &path))
    }

    /// Removes a blob; `false` if it was not there.
    pub fn remove(&self, d: &Digest) -> Result<bool, Error> {
        let path = self.path(d);
        match fs::remove_file(&path) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(io_err("removing", &path)(e)),
        }
    }

    /// Every stored blob, in digest order. Files that are not blobs are ignored.
    pub fn list(&self) -> Result<Vec<Digest>, Error> {
        let dir = self.root.join("sha256");
        let entries = fs::read_dir(&dir).map_err(io_err("listing", &dir))?;
        let mut out = Vec::new();
        for entry in entries {
            let entry = entry.map_err(io_err("listing", &dir))?;
            if let Some(name) = entry.file_name().to_str() {
                if let Ok(d) = format!("sha256:{name}").parse::<Digest>() {
                    out.push(d);
                }
            }
        }
        out.sort();
        Ok(out)
    }
}

/// Copies `content` into a new file at `path`, synced, returning its size and digest.
fn write_hashed(path: &Path, content: &mut impl Read) -> Result<(u64, Digest), Error> {
    let mut file = File::create_new(path).map_err(io_err("creating", path))?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 64 * 1024];
    let mut size = 0u64;
    loop {
        let n = match content.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(io_err("reading the content for", path)(e)),
        };
        hasher.update(&buf[..n]);
        file.write_all(&buf[..n]).map_err(io_err("writing", path))?;
        size += n as u64;
    }
    file.sync_all().map_err(io_err("syncing", path))?;
    let actual = Digest {
        hex: hex::encode(hasher.finalize()),
    };
    Ok((size, actual))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store() -> (tempfile::TempDir, Blobs) {
        let dir = tempfile::tempdir().expect("tempdir");
        let blobs = Blobs::open(dir.path().join("blobs")).expect("open");
        (dir, blobs)
    }

    #[test]
    fn digests_parse_and_print_as_oci_spells_them() {
        let d = Digest::of(b"hello");
        let text = d.to_string();
        assert_eq!(
            text,
            "sha256:2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824"
        );
        assert_eq!(text.parse::<Digest>().expect("parses"), d);
        for bad in ["", "sha256:", "sha256:2CF24DBA", "2cf24dba", &text[..70]] {
            assert!(
                matches!(bad.parse::<Digest>(), Err(Error::InvalidDigest(_))),
                "{bad}"
            );
        }
        assert!(matches!(
            "sha512:00".parse::<Digest>(),
            Err(Error::UnsupportedAlgorithm(a)) if a == "sha512"
        ));
    }

    #[test]
    fn a_blob_is_stored_once_under_its_digest() {
        let (_dir, blobs) = store();
        let content = vec![7u8; 200_000];
        let d = Digest::of(&content);
        assert!(!blobs.contains(&d));
        assert_eq!(blobs.put(&d, content.as_slice()).expect("put"), 200_000);
        assert!(blobs.contains(&d));
        assert_eq!(blobs.read(&d).expect("read"), content);
        // Stored again: nothing is read, the size is reported.
        let unreadable = io::repeat(1).take(0);
        assert_eq!(blobs.put(&d, unreadable).expect("put again"), 200_000);
        assert_eq!(blobs.list().expect("list"), vec![d.clone()]);
        assert!(blobs.remove(&d).expect("remove"));
        assert!(!blobs.remove(&d).expect("remove again"));
        assert!(blobs.list().expect("list").is_empty());
    }

    #[test]
    fn content_that_does_not_match_is_never_visible() {
        let (dir, blobs) = store();
        let claimed = Digest::of(b"what the manifest says");
        let err = blobs
            .put(&claimed, &b"what the registry sent"[..])
            .unwrap_err();
        assert!(
            matches!(&err, Error::Mismatch { expected, actual }
                if *expected == claimed && *actual == Digest::of(b"what the registry sent")),
            "{err}"
        );
        assert!(!blobs.contains(&claimed));
        let leftovers = fs::read_dir(dir.path().join("blobs/ingest"))
            .expect("ingest")
            .count();
        assert_eq!(leftovers, 0);
    }

    #[test]
    fn a_failed_read_leaves_nothing_behind() {
        struct Broken(usize);
        impl Read for Broken {
            fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
                if self.0 == 0 {
                    return Err(io::Error::other("connection reset"));
                }
                self.0 -= 1;
                buf[0] = b'x';
                Ok(1)
            }
        }
        let (dir, blobs) = store();
        let d = Digest::of(b"xxxx");
        let err = blobs.put(&d, Broken(3)).unwrap_err();
        assert!(err.to_string().contains("reading the content for"), "{err}");
        assert!(!blobs.contains(&d));
        assert_eq!(
            fs::read_dir(dir.path().join("blobs/ingest"))
                .expect("ingest")
                .count(),
            0
        );
    }

    #[test]
    fn opening_clears_what_a_crash_left_half_written() {
        let (dir, blobs) = store();
        let kept = blobs.put_bytes(b"whole").expect("put");
        let half = dir.path().join("blobs/ingest/123-0-abc");
        fs::write(&half, b"half a lay").expect("write");
        let blobs = Blobs::open(dir.path().join("blobs")).expect("reopen");
        assert!(!half.exists());
        assert_eq!(blobs.list().expect("list"), vec![kept]);
    }
}
