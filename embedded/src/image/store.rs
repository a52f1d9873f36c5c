//! The image store the node uses: the pieces of this module put together under one
//! directory.
//!
//! ```text
//! <root>/blobs/          content-addressed blobs (manifests, configs, layers)
//! <root>/names.json      which manifest each image name points at
//! <root>/layers/<hex>/   a layer unpacked, named by its diff_id (the digest of its
//!                        uncompressed tar), so images that share a layer share its
//!                        directory; these are overlayfs lower directories
//! <root>/layers/.tmp/    layers being unpacked
//! ```
//!
//! A layer is unpacked aside into `layers/.tmp/`, its uncompressed stream hashed as it
//! goes, and renamed into place only once it unpacked whole, its diff_id matched and its
//! files reached the disk; so a directory under `layers/` is always a complete, verified
//! layer, and what a crash leaves in `.tmp` is removed at the next [`ImageStore::open`].
//!
//! Removing a name frees nothing by itself; [`ImageStore::prune`] deletes what no name
//! and no running container reaches. [`gc_plan`] is the kubelet's image GC decision:
//! which images to remove when the disk fills.

use super::blobs::{self, Blobs, Digest};
use super::decompressed;
use super::import;
use super::names::{self, Names};
use super::platform::{self, Platform};
use super::reference;
use super::unpack;
use oci_spec::image::{Descriptor, ImageConfiguration, ImageIndex, ImageManifest};
use sha2::{Digest as _, Sha256};
use std::collections::{HashMap, HashSet};
use std::fs::{self, File};
use std::io::{self, BufReader, Read};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

/// Where layers are unpacked before they are complete and verified.
const TMP: &str = ".tmp";
/// How deep indexes may nest (an OCI layout's `index.json` entry can itself be an index
/// of platform manifests); content addressing rules out loops, this rules out chains.
const MAX_DEPTH: usize = 4;
/// The largest blob read as a possible manifest when looking for the image a config
/// belongs to (containerd's limit for manifests); layers are larger and are never read.
const MAX_MANIFEST: u64 = 4 << 20;
/// What an image tarball in the air-gap folder is called.
const TARBALL_SUFFIXES: &[&str] = &[".tar", ".tar.gz", ".tgz", ".tar.zst", ".tzst"];

/// Names of unpack directories, unique within the process (the pid makes them unique
/// across processes).
static UNPACK: AtomicU64 = AtomicU64::new(0);

/// What can go wrong in the image store.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A blob could not be read, stored or removed.
    #[error(transparent)]
    Blobs(#[from] blobs::Error),
    /// The names could not be read or written.
    #[error(transparent)]
    Names(#[from] names::Error),
    /// A reference is not a valid image reference.
    #[error(transparent)]
    Reference(#[from] reference::Error),
    /// A tarball could not be imported.
    #[error(transparent)]
    Import(#[from] import::Error),
    /// A tarball holds no image with a name: importing it would name nothing.
    #[error("importing {}: no image in it has a name", path.display())]
    Unnamed {
        /// The tarball.
        path: PathBuf,
    },
    /// A name in a tarball pins a digest other than its image's; nothing was named.
    #[error("importing {}: {name} pins {pinned}, but its image is {digest}", path.display())]
    PinMismatch {
        /// The tarball.
        path: PathBuf,
        /// The name as the tarball gives it.
        name: String,
        /// The digest the name pins.
        pinned: String,
        /// The digest of the image it is given to.
        digest: Digest,
    },
    /// A manifest, index or config in the store is not what it should be.
    #[error("image content {digest} is malformed: {message}")]
    Malformed {
        /// The blob.
        digest: Digest,
        /// What is wrong with it.
        message: String,
    },
    /// A multi-platform image has no build this node runs.
    #[error("image {digest} has no build for {platform}")]
    NoPlatform {
        /// The image's index.
        digest: Digest,
        /// The node's platform, as `os/architecture[/variant]`.
        platform: String,
    },
    /// An image cannot be named: a blob it needs on this node is not stored (a prune
    /// that ran while it was being pulled removed it).
    #[error("image {digest} is incomplete: blob {missing} is not stored")]
    Incomplete {
        /// The image (manifest or index).
        digest: Digest,
        /// The first blob found missing.
        missing: Digest,
    },
    /// A layer could not be unpacked; nothing of it was kept.
    #[error("unpacking layer {layer}")]
    Unpack {
        /// The layer blob.
        layer: Digest,
        /// Why.
        #[source]
        source: unpack::Error,
    },
    /// A layer's uncompressed content is not what the image config says; nothing of it
    /// was kept.
    #[error("layer {layer} unpacks to {actual}, but the image config says {expected}")]
    DiffId {
        /// The layer blob.
        layer: Digest,
        /// The diff_id in the image config.
        expected: Digest,
        /// The digest of the layer's uncompressed content.
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

/// The image store's results.
pub type Result<T, E = Error> = std::result::Result<T, E>;

fn io_err<'a>(what: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> Error + 'a {
    move |source| Error::Io {
        what,
        path: path.to_owned(),
        source,
    }
}

/// An image resolved for this node's platform: what a container is made from.
#[derive(Debug, Clone, PartialEq)]
pub struct Image {
    /// The normalized name it was found under.
    pub name: String,
    /// What the name points at: an index for a multi-platform image, else the same as
    /// `manifest` (the digest a registry knows the image by, the CRI's repo digest).
    pub digest: Digest,
    /// The manifest for this node's platform.
    pub manifest: Digest,
    /// The config's digest: the image ID.
    pub config_digest: Digest,
    /// The config: entrypoint, environment, user, working directory...
    pub config: ImageConfiguration,
    /// The layer blobs, lowest (base) first.
    pub layers: Vec<Descriptor>,
    /// The digests of the layers uncompressed, in the same order.
    pub diff_ids: Vec<Digest>,
}

/// An image as `skiff images ls` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListedImage {
    /// The normalized name.
    pub name: String,
    /// What the name points at (index or manifest).
    pub digest: Digest,
    /// The image ID (its config's digest, for this node's platform).
    pub config_digest: Digest,
    /// Bytes of the blobs this node's build of it takes: index, manifest, config and
    /// compressed layers (shared layers are counted in every image that has them).
    pub size: u64,
}

/// The node's images under one directory.
///
/// `ImageStore` is `Send + Sync`. Methods taking `&self` may run at the same time from
/// several threads: a layer two callers unpack at once is unpacked by both aside, and
/// the first to rename it into place wins, the other discarding its copy. Methods taking
/// `&mut self` need the store alone, as a `Mutex` or `RwLock` around it gives. Open one
/// `ImageStore` per root: opening clears what another one may be unpacking.
#[derive(Debug)]
pub struct ImageStore {
    root: PathBuf,
    blobs: Blobs,
    names: Names,
    /// Held shared while the store is open, so that only a sole user clears leftovers.
    _lock: fs::File,
}

/// A manifest blob or an index blob, told apart by their fields (Docker's manifest lists
/// and OCI indexes both have `manifests`; their manifests both have `config`).
enum Parsed {
    // Boxed: the two differ in size by hundreds of bytes (clippy's large_enum_variant).
    Index(Box<ImageIndex>),
    Manifest(Box<ImageManifest>),
}

/// What prune keeps: blobs reached from names or in-use images, and the unpacked
/// layers of their configs.
#[derive(Default)]
struct Reached {
    blobs: HashSet<Digest>,
    diff_ids: HashSet<Digest>,
}

impl ImageStore {
    /// Opens (creating if needed) the store at `root`, and removes what a crash may have
    /// left half-written: blobs being ingested and layers being unpacked.
    ///
    /// Several processes may open one store (the node and `skiff images`): each holds
    /// a shared lock on `<root>/lock`, and only one that finds no other holder clears the
    /// leftovers, since another's may be work in progress.
    pub fn open(root: &Path) -> Result<ImageStore> {
        use rustix::fs::{flock, FlockOperation};
        fs::create_dir_all(root).map_err(io_err("creating", root))?;
        let lock_path = root.join("lock");
        let lock = fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(io_err("opening", &lock_path))?;
        let alone = flock(&lock, FlockOperation::NonBlockingLockExclusive).is_ok();
        let blobs = Blobs::open_with(root.join("blobs"), alone)?;
        let names = Names::open(root)?;
        let store = ImageStore {
            root: root.to_owned(),
            blobs,
            names,
            _lock: lock,
        };
        let tmp = store.tmp_dir();
        if alone {
            remove_tree(&tmp).map_err(io_err("clearing", &tmp))?;
        }
        fs::create_dir_all(&tmp).map_err(io_err("creating", &tmp))?;
        // Down to shared: others may open it now, without clearing anything.
        flock(&store._lock, FlockOperation::LockShared)
            .map_err(|e| io_err("locking", &lock_path)(e.into()))?;
        Ok(store)
    }

    /// Reads the names again, to see what another process (`skiff images`) changed.
    pub fn reload_names(&mut self) -> Result<()> {
        self.names = Names::open(&self.root)?;
        Ok(())
    }

    /// Runs `f` on the names as they are on disk, with no other process changing them
    /// meanwhile.
    fn change_names<T>(&mut self, f: impl FnOnce(&mut Names) -> Result<T>) -> Result<T> {
        use rustix::fs::{flock, FlockOperation};
        let path = self.root.join("names.lock");
        let lock = fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(io_err("opening", &path))?;
        flock(&lock, FlockOperation::LockExclusive)
            .map_err(|e| io_err("locking", &path)(e.into()))?;
        self.reload_names()?;
        f(&mut self.names)
    }

    fn layers_dir(&self) -> PathBuf {
        self.root.join("layers")
    }

    fn tmp_dir(&self) -> PathBuf {
        self.layers_dir().join(TMP)
    }

    /// Imports the image tarball at `path` (see [`import`]) and points the
    /// names it gives at its images; returns those names, normalized. An image without a
    /// name is stored but not named (a warning says so); a tarball naming none, or with
    /// an invalid name, names nothing.
    pub fn import(&mut self, path: &Path) -> Result<Vec<String>> {
        let imported = import::import(&self.blobs, path)?;
        // Every name is checked before any is set, so a bad one leaves the names as
        // they were.
        let mut named = Vec::new();
        for image in imported {
            let Some(name) = image.name else {
                tracing::warn!(tarball = %path.display(), digest = %image.digest,
                    "an image in the tarball has no name; it is not imported under any");
                continue;
            };
            let parsed = reference::normalize(&name)?;
            if let Some(pinned) = parsed.digest() {
                if pinned != image.digest.to_string() {
                    return Err(Error::PinMismatch {
                        path: path.to_owned(),
                        name,
                        pinned: pinned.to_owned(),
                        digest: image.digest,
                    });
                }
            }
            named.push((name, image.digest));
        }
        if named.is_empty() {
            return Err(Error::Unnamed {
                path: path.to_owned(),
            });
        }
        let set = self.change_names(|names| {
            named
                .iter()
                .map(|(name, digest)| Ok((names.set(name, digest)?, digest.clone())))
                .collect::<Result<Vec<_>>>()
        })?;
        let mut out = Vec::with_capacity(set.len());
        for (name, digest) in set {
            tracing::info!(tarball = %path.display(), image = %name, %digest, "image imported");
            out.push(name);
        }
        Ok(out)
    }

    /// The blob store, for writers that fetch blobs without holding the store: a pull
    /// downloads into it while others use the store, then names the image with
    /// [`ImageStore::set_name`].
    pub fn blobs(&self) -> &Blobs {
        &self.blobs
    }

    /// Points `name` at the image `digest` (a manifest or index stored with
    /// [`ImageStore::blobs`], as a pull stores it); returns the name normalized.
    ///
    /// The image must be complete for this node (its manifest for this platform, config
    /// and layers stored) and well-formed, or nothing is named. Checking here, under the
    /// same exclusive access as [`ImageStore::prune`], is what keeps a prune that ran in
    /// the middle of a pull, and deleted the blobs no name reached yet, from leaving a
    /// name on missing content: such a pull gets [`Error::Incomplete`] and fetches again.
    pub fn set_name(&mut self, name: &str, digest: &Digest) -> Result<String> {
        if let Some(missing) = self.missing_blob(digest)? {
            return Err(Error::Incomplete {
                digest: digest.clone(),
                missing,
            });
        }
        // Reading the image checks its index, manifest and config are what they claim.
        self.image(name.to_owned(), digest.clone())?;
        let name = self.change_names(|names| Ok(names.set(name, digest)?))?;
        tracing::info!(image = %name, %digest, "image named");
        Ok(name)
    }

    /// The first blob of this node's build of `digest` that is not stored, if any.
    fn missing_blob(&self, digest: &Digest) -> Result<Option<Digest>> {
        let host = Platform::host();
        let mut current = digest.clone();
        for _ in 0..=MAX_DEPTH {
            if !self.blobs.contains(&current) {
                return Ok(Some(current));
            }
            match self.parse(&current)? {
                Parsed::Index(index) => {
                    let chosen =
                        platform::choose(&index, &host).ok_or_else(|| Error::NoPlatform {
                            digest: current.clone(),
                            platform: platform_name(&host),
                        })?;
                    current = ours(chosen.digest(), &current)?;
                }
                Parsed::Manifest(manifest) => {
                    let blobs = std::iter::once(manifest.config()).chain(manifest.layers());
                    for blob in blobs {
                        let blob = ours(blob.digest(), &current)?;
                        if !self.blobs.contains(&blob) {
                            return Ok(Some(blob));
                        }
                    }
                    return Ok(None);
                }
            }
        }
        Err(Error::Malformed {
            digest: digest.clone(),
            message: format!("indexes nest more than {MAX_DEPTH} deep"),
        })
    }

    /// Imports every image tarball in `dir` (the node's air-gap folder): the regular
    /// files, or links to them, named `*.tar`, `*.tar.gz`, `*.tgz`, `*.tar.zst` or
    /// `*.tzst`, in name order (so when two set the same name, the same one wins at every
    /// start). A tarball that fails is skipped with a warning; a missing `dir` holds no
    /// tarball. Returns the names set.
    pub fn import_dir(&mut self, dir: &Path) -> Result<Vec<String>> {
        let entries = match fs::read_dir(dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(io_err("listing", dir)(e)),
        };
        let mut tarballs = Vec::new();
        for entry in entries {
            let path = entry.map_err(io_err("listing", dir))?.path();
            let file_name = path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            let is_tarball = TARBALL_SUFFIXES.iter().any(|s| file_name.ends_with(s));
            if is_tarball && fs::metadata(&path).is_ok_and(|m| m.is_file()) {
                tarballs.push(path);
            }
        }
        tarballs.sort();
        let mut names = Vec::new();
        for tarball in tarballs {
            match self.import(&tarball) {
                Ok(mut set) => names.append(&mut set),
                Err(e) => tracing::warn!(tarball = %tarball.display(), error = %chain(&e),
                    "skipping an image tarball that could not be imported"),
            }
        }
        Ok(names)
    }

    /// The image `reference` names, resolved for this node's platform; `None` if the
    /// store has no such image. Any spelling of a name is accepted (`busybox`,
    /// `docker.io/library/busybox:latest`); a reference with a digest
    /// (`busybox@sha256:...`) is found when any name points at that content, and a bare
    /// digest (`sha256:...`) when any name points at it or its image has that manifest
    /// or config digest (the image ID).
    pub fn resolve(&self, reference: &str) -> Result<Option<Image>> {
        if let Ok(wanted) = reference.parse::<Digest>() {
            return self.find(&wanted);
        }
        let parsed = reference::normalize(reference)?;
        let name = reference::canonical(&parsed);
        if let Some(digest) = self.names.get(&name)? {
            return self.image(name, digest.clone()).map(Some);
        }
        // A pinned digest names content, whichever name the content was imported under.
        let Some(Ok(pinned)) = parsed.digest().map(str::parse::<Digest>) else {
            return Ok(None);
        };
        Ok(self.find(&pinned)?.map(|image| Image { name, ..image }))
    }

    /// The first image (in name order) whose name points at `wanted`, or whose build
    /// for this node has it as manifest or config digest.
    fn find(&self, wanted: &Digest) -> Result<Option<Image>> {
        if let Some((name, digest)) = self.names.list().find(|(_, d)| *d == wanted) {
            return self.image(name.to_owned(), digest.clone()).map(Some);
        }
        for (name, digest) in self.names.list() {
            let image = match self.image(name.to_owned(), digest.clone()) {
                Ok(image) => image,
                Err(Error::NoPlatform { .. }) => continue,
                Err(e) => return Err(e),
            };
            if image.manifest == *wanted || image.config_digest == *wanted {
                return Ok(Some(image));
            }
        }
        Ok(None)
    }

    /// The image `digest` (manifest or index) is, for this node's platform.
    fn image(&self, name: String, digest: Digest) -> Result<Image> {
        let host = Platform::host();
        let mut manifest_digest = digest.clone();
        let mut depth = 0;
        let manifest = loop {
            match self.parse(&manifest_digest)? {
                Parsed::Manifest(m) => break m,
                Parsed::Index(index) => {
                    depth += 1;
                    if depth > MAX_DEPTH {
                        return Err(Error::Malformed {
                            digest,
                            message: format!("indexes nest more than {MAX_DEPTH} deep"),
                        });
                    }
                    let chosen =
                        platform::choose(&index, &host).ok_or_else(|| Error::NoPlatform {
                            digest: manifest_digest.clone(),
                            platform: platform_name(&host),
                        })?;
                    manifest_digest = ours(chosen.digest(), &manifest_digest)?;
                }
            }
        };
        let config_digest = ours(manifest.config().digest(), &manifest_digest)?;
        let malformed = |message: String| Error::Malformed {
            digest: config_digest.clone(),
            message,
        };
        let config: ImageConfiguration = serde_json::from_slice(&self.blobs.read(&config_digest)?)
            .map_err(|e| malformed(format!("not an image config: {e}")))?;
        let diff_ids = config
            .rootfs()
            .diff_ids()
            .iter()
            .map(|d| d.parse::<Digest>().map_err(|e| malformed(e.to_string())))
            .collect::<Result<Vec<_>>>()?;
        if diff_ids.len() != manifest.layers().len() {
            return Err(malformed(format!(
                "it lists {} diff_ids, but manifest {manifest_digest} has {} layers",
                diff_ids.len(),
                manifest.layers().len()
            )));
        }
        Ok(Image {
            name,
            digest,
            manifest: manifest_digest,
            config_digest,
            config,
            layers: manifest.layers().clone(),
            diff_ids,
        })
    }

    /// Reads the blob `digest` as a manifest or an index.
    fn parse(&self, digest: &Digest) -> Result<Parsed> {
        let malformed = |e: serde_json::Error| Error::Malformed {
            digest: digest.clone(),
            message: format!("not an image manifest or index: {e}"),
        };
        let value: serde_json::Value =
            serde_json::from_slice(&self.blobs.read(digest)?).map_err(malformed)?;
        Ok(if value.get("manifests").is_some() {
            Parsed::Index(Box::new(serde_json::from_value(value).map_err(malformed)?))
        } else {
            Parsed::Manifest(Box::new(serde_json::from_value(value).map_err(malformed)?))
        })
    }

    /// The unpacked layer directories of `image`, lowest (base) first as the manifest
    /// lists them (overlayfs' `lowerdir=` wants them the other way round). Layers not
    /// unpacked yet are unpacked now; each is checked against its diff_id.
    pub fn layers(&self, image: &Image) -> Result<Vec<PathBuf>> {
        image
            .layers
            .iter()
            .zip(&image.diff_ids)
            .map(|(layer, diff_id)| self.layer(layer, diff_id))
            .collect()
    }

    /// The directory of one layer, unpacked aside and renamed into place if not there.
    fn layer(&self, layer: &Descriptor, diff_id: &Digest) -> Result<PathBuf> {
        let target = self.layers_dir().join(diff_id.hex());
        if target.is_dir() {
            return Ok(target);
        }
        let blob = ours(layer.digest(), diff_id)?;
        let n = UNPACK.fetch_add(1, Ordering::Relaxed);
        let temp = self
            .tmp_dir()
            .join(format!("{}-{}-{n}", diff_id.hex(), std::process::id()));
        let result = self
            .unpack_aside(&blob, diff_id, &temp)
            .and_then(|()| self.commit_layer(&temp, &target));
        // Left only when something failed, or another caller's copy won the rename.
        if let Err(e) = remove_tree(&temp) {
            tracing::warn!(dir = %temp.display(), error = %e, "could not remove an unpack directory");
        }
        result.map(|()| target)
    }

    /// Unpacks the layer blob `blob` into `temp`, checking that its uncompressed stream
    /// hashes to `diff_id`, and flushes it to disk.
    fn unpack_aside(&self, blob: &Digest, diff_id: &Digest, temp: &Path) -> Result<()> {
        let path = self.blobs.path(blob);
        let file = File::open(&path).map_err(io_err("opening the layer blob", &path))?;
        let stream =
            decompressed(BufReader::new(file)).map_err(io_err("reading the layer blob", &path))?;
        let mut hashing = Hashing {
            inner: stream,
            hasher: Sha256::new(),
        };
        unpack::unpack_tar(&mut hashing, temp).map_err(|source| Error::Unpack {
            layer: blob.clone(),
            source,
        })?;
        // tar stops reading at its end-of-archive blocks; the diff_id covers the padding
        // after them too.
        io::copy(&mut hashing, &mut io::sink()).map_err(io_err("reading the layer blob", &path))?;
        let actual = Digest::from_hasher(hashing.hasher);
        if actual != *diff_id {
            return Err(Error::DiffId {
                layer: blob.clone(),
                expected: diff_id.clone(),
                actual,
            });
        }
        // The layer's files must reach the disk before it becomes visible, or a power
        // cut could leave a layer directory of empty files that is never unpacked again.
        // One syncfs costs far less than an fsync per file.
        File::open(temp)
            .and_then(|dir| rustix::fs::syncfs(&dir).map_err(io::Error::from))
            .map_err(io_err("syncing", temp))
    }

    /// Renames an unpacked layer into place unless one is there already.
    fn commit_layer(&self, temp: &Path, target: &Path) -> Result<()> {
        use rustix::fs::{renameat_with, RenameFlags, CWD};
        // NOREPLACE: a plain rename would replace an empty directory, and an empty layer
        // unpacked by another caller may already be in use as a lower directory.
        let renamed = match renameat_with(CWD, temp, CWD, target, RenameFlags::NOREPLACE) {
            // A filesystem without RENAME_NOREPLACE (NFS): a plain rename still refuses
            // to replace a non-empty directory.
            Err(rustix::io::Errno::INVAL) => fs::rename(temp, target),
            other => other.map_err(io::Error::from),
        };
        match renamed {
            Ok(()) => {
                let dir = self.layers_dir();
                File::open(&dir)
                    .and_then(|d| d.sync_all())
                    .map_err(io_err("syncing", &dir))?;
                tracing::debug!(layer = %target.display(), "layer unpacked");
                Ok(())
            }
            // Another caller unpacked the same layer first: the same content, verified.
            Err(_) if target.is_dir() => {
                tracing::debug!(layer = %target.display(), "layer unpacked by another caller first");
                Ok(())
            }
            Err(e) => Err(io_err("storing the unpacked layer", target)(e)),
        }
    }

    /// Every name and its image for this node's platform, in name order. A name whose
    /// image has no build for this node is left out (with a warning).
    pub fn list(&self) -> Result<Vec<ListedImage>> {
        let mut out = Vec::new();
        for (name, digest) in self.names.list() {
            let image = match self.image(name.to_owned(), digest.clone()) {
                Ok(image) => image,
                Err(e @ Error::NoPlatform { .. }) => {
                    tracing::warn!(image = name, error = %e, "not listed");
                    continue;
                }
                Err(e) => return Err(e),
            };
            let mut blobs = vec![image.digest.clone(), image.manifest.clone()];
            blobs.push(image.config_digest.clone());
            for layer in &image.layers {
                blobs.push(ours(layer.digest(), &image.manifest)?);
            }
            let mut seen = HashSet::new();
            let size = blobs
                .iter()
                .filter(|d| seen.insert(*d))
                .filter_map(|d| fs::metadata(self.blobs.path(d)).ok())
                .map(|m| m.len())
                .sum();
            out.push(ListedImage {
                name: image.name,
                digest: image.digest,
                config_digest: image.config_digest,
                size,
            });
        }
        Ok(out)
    }

    /// Forgets the name `reference`; returns whether it was there. Its blobs and layers
    /// stay until [`ImageStore::prune`].
    pub fn remove(&mut self, reference: &str) -> Result<bool> {
        let removed = self.change_names(|names| Ok(names.remove(reference)?))?;
        if let Some(digest) = &removed {
            tracing::info!(image = reference, %digest, "image name removed");
        }
        Ok(removed.is_some())
    }

    /// Deletes the blobs and unpacked layers that no name reaches, except those of the
    /// images in `in_use` (manifest, index or config digests of the images running
    /// containers were made from: their layers are mounted). Returns the bytes freed.
    ///
    /// A named image whose manifest or index cannot be read stops the prune: what it
    /// references cannot be told, so nothing is deleted.
    pub fn prune(&mut self, in_use: &[Digest]) -> Result<u64> {
        let mut reached = Reached::default();
        for (_, digest) in self.names.list() {
            self.reach(digest, &mut reached, 0)?;
        }
        // Manifests by their config's digest, read only if an in-use image is given by
        // its ID and no name reaches it.
        let mut by_config: Option<HashMap<Digest, Vec<Digest>>> = None;
        for digest in in_use {
            if reached.blobs.contains(digest) {
                continue;
            }
            let is_manifest = self
                .small_json(digest)?
                .is_some_and(|v| v.get("manifests").is_some() || config_of(&v).is_some());
            if is_manifest {
                self.reach(digest, &mut reached, 0)?;
                continue;
            }
            if by_config.is_none() {
                by_config = Some(self.manifests_by_config()?);
            }
            let manifests = by_config.as_ref().and_then(|m| m.get(digest));
            for manifest in manifests.into_iter().flatten() {
                self.reach(manifest, &mut reached, 0)?;
            }
        }

        let mut freed = 0;
        for digest in self.blobs.list()? {
            if reached.blobs.contains(&digest) {
                continue;
            }
            let size = fs::metadata(self.blobs.path(&digest)).map_or(0, |m| m.len());
            if self.blobs.remove(&digest)? {
                tracing::debug!(%digest, size, "blob pruned");
                freed += size;
            }
        }
        let layers = self.layers_dir();
        for entry in fs::read_dir(&layers).map_err(io_err("listing", &layers))? {
            let path = entry.map_err(io_err("listing", &layers))?.path();
            let name = path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            // Only layer directories: `.tmp`, and anything else not ours, stay.
            let Ok(diff_id) = format!("sha256:{name}").parse::<Digest>() else {
                continue;
            };
            if reached.diff_ids.contains(&diff_id) {
                continue;
            }
            let size = tree_size(&path).map_err(io_err("measuring", &path))?;
            remove_tree(&path).map_err(io_err("removing", &path))?;
            tracing::debug!(%diff_id, size, "unpacked layer pruned");
            freed += size;
        }
        if freed > 0 {
            tracing::info!(freed, "unused image content pruned");
        }
        Ok(freed)
    }

    /// Marks the manifest or index `digest` and all it references (the diff_ids of its
    /// configs too) as reached. Blobs not stored are skipped: there is nothing to keep.
    fn reach(&self, digest: &Digest, reached: &mut Reached, depth: usize) -> Result<()> {
        if !reached.blobs.insert(digest.clone()) || !self.blobs.contains(digest) {
            return Ok(());
        }
        if depth > MAX_DEPTH {
            return Err(Error::Malformed {
                digest: digest.clone(),
                message: format!("indexes nest more than {MAX_DEPTH} deep"),
            });
        }
        match self.parse(digest)? {
            Parsed::Index(index) => {
                for m in index.manifests() {
                    self.reach(&ours(m.digest(), digest)?, reached, depth + 1)?;
                }
            }
            Parsed::Manifest(manifest) => {
                for layer in manifest.layers() {
                    reached.blobs.insert(ours(layer.digest(), digest)?);
                }
                let config = ours(manifest.config().digest(), digest)?;
                // Read leniently: attestation manifests have configs that are no image
                // config, and only real images' layers are ever unpacked.
                if let Some(config) = self.small_json(&config)? {
                    let diff_ids = config
                        .pointer("/rootfs/diff_ids")
                        .and_then(|d| d.as_array());
                    for d in diff_ids.into_iter().flatten() {
                        if let Some(Ok(d)) = d.as_str().map(str::parse::<Digest>) {
                            reached.diff_ids.insert(d);
                        }
                    }
                }
                reached.blobs.insert(config);
            }
        }
        Ok(())
    }

    /// The blob `digest` as JSON, if it is stored, small enough to be a manifest or
    /// config, and JSON at all.
    fn small_json(&self, digest: &Digest) -> Result<Option<serde_json::Value>> {
        let path = self.blobs.path(digest);
        match fs::metadata(&path) {
            Ok(m) if m.len() <= MAX_MANIFEST => {}
            Ok(_) => return Ok(None),
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io_err("reading", &path)(e)),
        }
        Ok(serde_json::from_slice(&self.blobs.read(digest)?).ok())
    }

    /// Every stored manifest, by the digest of its config.
    fn manifests_by_config(&self) -> Result<HashMap<Digest, Vec<Digest>>> {
        let mut out: HashMap<Digest, Vec<Digest>> = HashMap::new();
        for digest in self.blobs.list()? {
            if let Some(config) = self.small_json(&digest)?.as_ref().and_then(config_of) {
                out.entry(config).or_default().push(digest);
            }
        }
        Ok(out)
    }

    /// Bytes under the store's root (blobs, unpacked layers and the rest; a file with
    /// several hard links counts once), for the image GC to weigh.
    pub fn disk_usage(&self) -> Result<u64> {
        tree_size(&self.root).map_err(io_err("measuring", &self.root))
    }
}

/// The config digest a manifest (as JSON) names.
fn config_of(manifest: &serde_json::Value) -> Option<Digest> {
    manifest.pointer("/config/digest")?.as_str()?.parse().ok()
}

/// An oci-spec digest as the store's; `within` is the blob it was read from, named if
/// the digest is not one the store can hold.
fn ours(digest: &oci_spec::image::Digest, within: &Digest) -> Result<Digest> {
    digest
        .to_string()
        .parse()
        .map_err(|e: blobs::Error| Error::Malformed {
            digest: within.clone(),
            message: e.to_string(),
        })
}

fn platform_name(p: &Platform) -> String {
    match &p.variant {
        Some(v) => format!("{}/{}/{v}", p.os, p.architecture),
        None => format!("{}/{}", p.os, p.architecture),
    }
}

/// A reader that hashes what passes through it.
struct Hashing<R> {
    inner: R,
    hasher: Sha256,
}

impl<R: Read> Read for Hashing<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }
}

/// Removes a directory tree (layers hold whiteout devices and read-only directories,
/// which root removes like anything else); gone already is fine.
fn remove_tree(path: &Path) -> io::Result<()> {
    match fs::remove_dir_all(path) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        other => other,
    }
}

/// The bytes of the files under `root`, each inode once; what vanishes while it is
/// walked (an unpack directory being removed) is not counted.
fn tree_size(root: &Path) -> io::Result<u64> {
    let mut seen = HashSet::new();
    let mut total = 0;
    let mut stack = vec![root.to_owned()];
    while let Some(path) = stack.pop() {
        let meta = match fs::symlink_metadata(&path) {
            Ok(meta) => meta,
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e),
        };
        if meta.is_dir() {
            let entries = match fs::read_dir(&path) {
                Ok(entries) => entries,
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(e),
            };
            for entry in entries {
                stack.push(entry?.path());
            }
        } else if meta.nlink() < 2 || seen.insert((meta.dev(), meta.ino())) {
            total += meta.len();
        }
    }
    Ok(total)
}

/// An error and its causes on one line, for a log message.
fn chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        out.push_str(": ");
        out.push_str(&c.to_string());
        cause = c.source();
    }
    out
}

/// An image as the image GC weighs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GcImage {
    /// Its ID (config digest).
    pub id: Digest,
    /// When a container last used it; for an image no container has used yet, when the
    /// node first saw it (so a fresh image gets `min_age` to be used).
    pub last_used: SystemTime,
    /// Bytes removing it frees.
    pub size: u64,
    /// Whether a container uses it now; such an image is never removed.
    pub in_use: bool,
}

/// When the image GC runs and how much it frees: the kubelet's
/// `imageGCHighThresholdPercent`, `imageGCLowThresholdPercent` and
/// `imageMinimumGCAge`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GcPolicy {
    /// Disk usage (percent) at or above which images are removed.
    pub high_percent: u8,
    /// Disk usage (percent) the removal aims to get under.
    pub low_percent: u8,
    /// Images used (or first seen) more recently than this are kept.
    pub min_age: Duration,
}

impl Default for GcPolicy {
    /// The kubelet's defaults: 85 %, 80 %, two minutes.
    fn default() -> GcPolicy {
        GcPolicy {
            high_percent: 85,
            low_percent: 80,
            min_age: Duration::from_secs(120),
        }
    }
}

/// The filesystem holding the images, as `statvfs` gives it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DiskSpace {
    /// Its size in bytes.
    pub capacity: u64,
    /// Bytes unprivileged users can still write (the root reserve counts as used, as
    /// the kubelet counts it).
    pub available: u64,
}

/// What the image GC decided.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct GcPlan {
    /// The images to remove, in order.
    pub remove: Vec<Digest>,
    /// Bytes to free to get under the low threshold (0: the disk is under the high
    /// threshold).
    pub to_free: u64,
    /// Bytes the removals free; less than `to_free` when too few images may be removed,
    /// which the caller reports as the kubelet does.
    pub freed: u64,
}

/// The kubelet's image GC decision: when disk usage is at or above `high_percent`, the
/// images not in use and older than `min_age`, least recently used first, until what they
/// free brings usage under `low_percent`. Usage is computed as the kubelet does
/// (`100 - available * 100 / capacity`, the available share rounded down).
pub fn gc_plan(images: &[GcImage], disk: DiskSpace, policy: &GcPolicy, now: SystemTime) -> GcPlan {
    if disk.capacity == 0 {
        return GcPlan::default();
    }
    let capacity = u128::from(disk.capacity);
    let available = u128::from(disk.available.min(disk.capacity));
    let usage = 100 - available * 100 / capacity;
    if usage < u128::from(policy.high_percent) {
        return GcPlan::default();
    }
    let low = u128::from(policy.low_percent.min(100));
    // At most the capacity, so it fits.
    let to_free = u64::try_from((capacity * (100 - low) / 100).saturating_sub(available))
        .unwrap_or(disk.capacity);
    let mut candidates: Vec<&GcImage> = images
        .iter()
        .filter(|i| !i.in_use)
        // An image "used" in the future (the clock stepped back) is taken as fresh.
        .filter(|i| {
            now.duration_since(i.last_used)
                .is_ok_and(|age| age >= policy.min_age)
        })
        .collect();
    candidates.sort_by(|a, b| a.last_used.cmp(&b.last_used).then(a.id.cmp(&b.id)));
    let mut plan = GcPlan {
        to_free,
        ..GcPlan::default()
    };
    for image in candidates {
        if plan.freed >= to_free {
            break;
        }
        plan.remove.push(image.id.clone());
        plan.freed += image.size;
    }
    plan
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::io::Write;
    use std::os::unix::fs::FileTypeExt;

    /// A layer tarball of `entries`: a path ending in `/` is a read-only directory, any
    /// other a file (`.wh.NAME` a whiteout).
    fn layer(entries: &[(&str, &[u8])]) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        for (path, data) in entries {
            let mut h = tar::Header::new_gnu();
            if path.ends_with('/') {
                h.set_entry_type(tar::EntryType::Directory);
                h.set_mode(0o555);
            } else {
                h.set_mode(0o644);
            }
            h.set_size(data.len() as u64);
            h.set_uid(0);
            h.set_gid(0);
            h.set_mtime(1_700_000_000);
            b.append_data(&mut h, path, *data).expect("entry");
        }
        b.into_inner().expect("layer")
    }

    fn gzip(bytes: &[u8]) -> Vec<u8> {
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(bytes).expect("gzip");
        gz.finish().expect("gzip")
    }

    /// An image (or index) as the blobs of a tarball: what index.json points at, and
    /// every blob.
    struct Built {
        digest: Digest,
        media_type: &'static str,
        size: usize,
        /// The config's digest (for a manifest).
        config: Option<Digest>,
        platform: serde_json::Value,
        blobs: Vec<Vec<u8>>,
    }

    const MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
    const INDEX: &str = "application/vnd.oci.image.index.v1+json";

    fn host() -> (String, String) {
        let p = Platform::host();
        (p.os, p.architecture)
    }

    /// An image of `blobs` (as stored: gzip, or anything for a broken one) whose config
    /// claims `diff_ids`, for `os`/`arch`.
    fn image_of(blobs: Vec<Vec<u8>>, diff_ids: &[Digest], (os, arch): (String, String)) -> Built {
        let config = json!({"architecture": arch, "os": os,
            "rootfs": {"type": "layers", "diff_ids": diff_ids.iter().map(Digest::to_string).collect::<Vec<_>>()},
            "config": {"Cmd": ["/bin/sh"], "Env": ["PATH=/bin"]}})
        .to_string()
        .into_bytes();
        let layers: Vec<_> = blobs
            .iter()
            .map(|l| {
                json!({"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                            "digest": Digest::of(l).to_string(), "size": l.len()})
            })
            .collect();
        let manifest = json!({"schemaVersion": 2, "mediaType": MANIFEST,
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                       "digest": Digest::of(&config).to_string(), "size": config.len()},
            "layers": layers})
        .to_string()
        .into_bytes();
        Built {
            digest: Digest::of(&manifest),
            media_type: MANIFEST,
            size: manifest.len(),
            config: Some(Digest::of(&config)),
            platform: json!({"os": os, "architecture": arch}),
            blobs: [vec![manifest, config], blobs].concat(),
        }
    }

    /// A host image of `layers` (uncompressed tars), gzip-compressed.
    fn image(layers: &[&[u8]]) -> Built {
        let diff_ids: Vec<_> = layers.iter().map(|l| Digest::of(l)).collect();
        image_of(layers.iter().map(|l| gzip(l)).collect(), &diff_ids, host())
    }

    /// An index of `images`.
    fn index(images: &[&Built]) -> Built {
        let manifests: Vec<_> = images
            .iter()
            .map(|i| {
                json!({"mediaType": i.media_type, "digest": i.digest.to_string(),
                            "size": i.size, "platform": i.platform})
            })
            .collect();
        let index = json!({"schemaVersion": 2, "mediaType": INDEX, "manifests": manifests})
            .to_string()
            .into_bytes();
        let mut blobs = vec![index.clone()];
        for i in images {
            blobs.extend(i.blobs.iter().cloned());
        }
        Built {
            digest: Digest::of(&index),
            media_type: INDEX,
            size: index.len(),
            config: None,
            platform: json!(null),
            blobs,
        }
    }

    /// An OCI layout tarball naming `images` (an empty name: none given).
    fn tarball(images: &[(&str, &Built)]) -> Vec<u8> {
        let entries: Vec<_> = images
            .iter()
            .map(|(name, i)| {
                let mut entry = json!({"mediaType": i.media_type,
                    "digest": i.digest.to_string(), "size": i.size});
                if !name.is_empty() {
                    entry["annotations"] = json!({"io.containerd.image.name": name});
                }
                entry
            })
            .collect();
        let index = json!({"schemaVersion": 2, "manifests": entries}).to_string();
        let mut b = tar::Builder::new(Vec::new());
        let mut add = |path: &str, bytes: &[u8]| {
            let mut h = tar::Header::new_gnu();
            h.set_size(bytes.len() as u64);
            h.set_mode(0o644);
            b.append_data(&mut h, path, bytes).expect("entry");
        };
        add("oci-layout", br#"{"imageLayoutVersion": "1.0.0"}"#);
        add("index.json", index.as_bytes());
        let mut seen = HashSet::new();
        for (_, image) in images {
            for blob in &image.blobs {
                let d = Digest::of(blob);
                if seen.insert(d.clone()) {
                    add(&format!("blobs/sha256/{}", d.hex()), blob);
                }
            }
        }
        b.into_inner().expect("tarball")
    }

    fn store() -> (tempfile::TempDir, ImageStore) {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = ImageStore::open(&dir.path().join("images")).expect("open");
        (dir, store)
    }

    /// Writes `bytes` as the tarball `file` in `dir` and imports it.
    fn import(store: &mut ImageStore, dir: &Path, file: &str, bytes: &[u8]) -> Vec<String> {
        let path = dir.join(file);
        fs::write(&path, bytes).expect("write tarball");
        store
            .import(&path)
            .unwrap_or_else(|e| panic!("{}", chain(&e)))
    }

    fn resolved(store: &ImageStore, reference: &str) -> Image {
        store
            .resolve(reference)
            .unwrap_or_else(|e| panic!("{reference}: {}", chain(&e)))
            .unwrap_or_else(|| panic!("{reference}: not found"))
    }

    fn layer_dirs(dir: &Path) -> Vec<String> {
        let mut names: Vec<_> = fs::read_dir(dir.join("images/layers"))
            .expect("layers")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .filter(|n| n != TMP)
            .collect();
        names.sort();
        names
    }

    fn tmp_is_empty(dir: &Path) -> bool {
        fs::read_dir(dir.join("images/layers/.tmp"))
            .expect("tmp")
            .next()
            .is_none()
    }

    #[test]
    fn an_imported_image_resolves_by_any_spelling() {
        let (dir, mut store) = store();
        let base = layer(&[("etc/motd", b"hello\n")]);
        let busybox = image(&[&base]);
        let names = import(
            &mut store,
            dir.path(),
            "busybox.tar",
            &tarball(&[("busybox:1.36", &busybox)]),
        );
        assert_eq!(names, ["docker.io/library/busybox:1.36"]);

        let found = resolved(&store, "busybox:1.36");
        assert_eq!(found.name, "docker.io/library/busybox:1.36");
        assert_eq!(found.digest, busybox.digest);
        assert_eq!(found.manifest, busybox.digest);
        assert_eq!(Some(&found.config_digest), busybox.config.as_ref());
        assert_eq!(found.diff_ids, [Digest::of(&base)]);
        assert_eq!(found.layers.len(), 1);
        let cmd = found.config.config().as_ref().and_then(|c| c.cmd().clone());
        assert_eq!(cmd, Some(vec!["/bin/sh".to_owned()]));

        for spelling in [
            "docker.io/library/busybox:1.36".to_owned(),
            "library/busybox:1.36".to_owned(),
            format!("busybox@{}", busybox.digest),
            format!("busybox:1.36@{}", busybox.digest),
            // The image ID and the manifest digest, bare.
            found.config_digest.to_string(),
            busybox.digest.to_string(),
        ] {
            assert_eq!(
                resolved(&store, &spelling).manifest,
                busybox.digest,
                "{spelling}"
            );
        }
        assert_eq!(
            resolved(&store, &format!("busybox@{}", busybox.digest)).name,
            format!("docker.io/library/busybox@{}", busybox.digest)
        );
        assert_eq!(store.resolve("busybox").expect("resolve"), None);
        assert_eq!(store.resolve("other:1.36").expect("resolve"), None);
        let elsewhere = format!("busybox@{}", Digest::of(b"elsewhere"));
        assert_eq!(store.resolve(&elsewhere).expect("resolve"), None);
        assert!(matches!(
            store.resolve("Not A Name"),
            Err(Error::Reference(_))
        ));

        // The names are kept across opens.
        let store = ImageStore::open(&dir.path().join("images")).expect("reopen");
        assert_eq!(resolved(&store, "busybox:1.36").manifest, busybox.digest);
    }

    #[test]
    fn a_multi_platform_image_resolves_to_the_host_build() {
        let (dir, mut store) = store();
        let ours = image(&[&layer(&[("arch", b"host")])]);
        let foreign_layer = gzip(&layer(&[("arch", b"s390x")]));
        let foreign_diff = Digest::of(&layer(&[("arch", b"s390x")]));
        let theirs = |arch: &str| {
            image_of(
                vec![foreign_layer.clone()],
                std::slice::from_ref(&foreign_diff),
                ("linux".into(), arch.into()),
            )
        };
        let s390x = theirs("s390x");
        let multi = index(&[&s390x, &ours]);
        let only_foreign = index(&[&theirs("mips64le")]);
        import(
            &mut store,
            dir.path(),
            "multi.tar",
            &tarball(&[("app:1", &multi), ("app:foreign", &only_foreign)]),
        );
        let found = resolved(&store, "app:1");
        assert_eq!(found.digest, multi.digest);
        assert_eq!(found.manifest, ours.digest);
        assert_eq!(Some(&found.config_digest), ours.config.as_ref());
        let err = store.resolve("app:foreign").unwrap_err();
        assert!(
            matches!(&err, Error::NoPlatform { digest, .. } if *digest == only_foreign.digest),
            "{err}"
        );
        // Listed: only what the node can run, sized as the node's build.
        let listed = store.list().expect("list");
        assert_eq!(listed.len(), 1);
        assert_eq!(listed[0].name, "docker.io/library/app:1");
        assert_eq!(listed[0].digest, multi.digest);
        let expected: usize = [multi.blobs[0].len(), ours.size]
            .into_iter()
            .chain(ours.blobs[1..].iter().map(Vec::len))
            .sum();
        assert_eq!(listed[0].size, expected as u64);
    }

    // Needs root: the layers hold whiteouts (device nodes).
    #[test]
    fn a_layer_is_unpacked_once_and_shared_between_images() {
        let (dir, mut store) = store();
        let base = layer(&[("etc/motd", b"base\n"), ("var/.wh.cache", b"")]);
        let a_top = layer(&[("app/a", b"a\n")]);
        let b_top = layer(&[("app/b", b"b\n")]);
        let (a, b) = (image(&[&base, &a_top]), image(&[&base, &b_top]));
        import(
            &mut store,
            dir.path(),
            "ab.tar",
            &tarball(&[("a:1", &a), ("b:1", &b)]),
        );
        let a_image = resolved(&store, "a:1");
        let a_layers = store.layers(&a_image).expect("layers of a");
        let base_dir = dir
            .path()
            .join("images/layers")
            .join(Digest::of(&base).hex());
        assert_eq!(
            a_layers,
            [
                base_dir.clone(),
                dir.path()
                    .join("images/layers")
                    .join(Digest::of(&a_top).hex())
            ]
        );
        assert_eq!(
            fs::read(base_dir.join("etc/motd")).expect("motd"),
            b"base\n"
        );
        let whiteout = fs::symlink_metadata(base_dir.join("var/cache")).expect("whiteout");
        assert!(whiteout.file_type().is_char_device());
        assert_eq!(fs::read(a_layers[1].join("app/a")).expect("a"), b"a\n");

        // Unpacked again neither for a nor for b: a mark left in the directory stays.
        fs::write(base_dir.join("mark"), b"").expect("mark");
        assert_eq!(store.layers(&a_image).expect("again"), a_layers);
        let b_layers = store.layers(&resolved(&store, "b:1")).expect("layers of b");
        assert_eq!(b_layers[0], base_dir);
        assert!(base_dir.join("mark").exists());
        assert_eq!(layer_dirs(dir.path()).len(), 3);
        assert!(tmp_is_empty(dir.path()));
    }

    #[test]
    fn callers_unpacking_the_same_layer_at_once_get_the_same_directory() {
        let (dir, mut store) = store();
        let files: Vec<(String, Vec<u8>)> = (0..200)
            .map(|i| (format!("data/{i}"), vec![i as u8; 4096]))
            .collect();
        let entries: Vec<(&str, &[u8])> = files
            .iter()
            .map(|(p, d)| (p.as_str(), d.as_slice()))
            .collect();
        let built = image(&[&layer(&entries)]);
        import(
            &mut store,
            dir.path(),
            "x.tar",
            &tarball(&[("x:1", &built)]),
        );
        let image = resolved(&store, "x:1");
        let store = &store;
        let results: Vec<_> = std::thread::scope(|s| {
            let threads: Vec<_> = (0..4)
                .map(|_| s.spawn(|| store.layers(&image).expect("layers")))
                .collect();
            threads
                .into_iter()
                .map(|t| t.join().expect("thread"))
                .collect()
        });
        assert!(results.windows(2).all(|w| w[0] == w[1]), "{results:?}");
        assert_eq!(
            fs::read_dir(results[0][0].join("data"))
                .expect("data")
                .count(),
            200
        );
        assert!(tmp_is_empty(dir.path()));
    }

    #[test]
    fn a_layer_that_is_not_its_diff_id_or_broken_leaves_nothing() {
        let (dir, mut store) = store();
        let real = layer(&[("etc/motd", b"real\n")]);
        let claimed = Digest::of(b"what the config claims");
        let lying = image_of(vec![gzip(&real)], std::slice::from_ref(&claimed), host());
        let mut truncated = gzip(&layer(&[("big", &[7u8; 100_000][..])]));
        truncated.truncate(truncated.len() / 2);
        let broken_diff = Digest::of(b"never reached");
        let broken = image_of(vec![truncated], std::slice::from_ref(&broken_diff), host());
        import(
            &mut store,
            dir.path(),
            "bad.tar",
            &tarball(&[("lying:1", &lying), ("broken:1", &broken)]),
        );

        let err = store.layers(&resolved(&store, "lying:1")).unwrap_err();
        assert!(
            matches!(&err, Error::DiffId { expected, actual, .. }
                if *expected == claimed && *actual == Digest::of(&real)),
            "{err}"
        );
        let err = store.layers(&resolved(&store, "broken:1")).unwrap_err();
        assert!(matches!(&err, Error::Unpack { .. }), "{}", chain(&err));
        assert!(layer_dirs(dir.path()).is_empty());
        assert!(tmp_is_empty(dir.path()));
    }

    // Needs root: whiteouts are device nodes.
    #[test]
    fn prune_frees_what_no_name_or_running_container_reaches() {
        let (dir, mut store) = store();
        let base = layer(&[("etc/motd", b"base\n")]);
        // Whiteouts and a read-only directory: removed all the same.
        let a_top = layer(&[("var/.wh.cache", b""), ("ro/", b""), ("ro/file", b"x")]);
        let b_top = layer(&[("app/b", b"b\n")]);
        let c_only = layer(&[("app/c", b"c\n")]);
        let (a, b, c) = (
            image(&[&base, &a_top]),
            image(&[&base, &b_top]),
            image(&[&c_only]),
        );
        import(
            &mut store,
            dir.path(),
            "abc.tar",
            &tarball(&[("a:1", &a), ("b:1", &b), ("c:1", &c)]),
        );
        for name in ["a:1", "b:1", "c:1"] {
            store.layers(&resolved(&store, name)).expect("layers");
        }
        assert_eq!(store.prune(&[]).expect("nothing to prune"), 0);
        let before = store.disk_usage().expect("usage");

        assert!(store.remove("a:1").expect("remove"));
        assert!(!store.remove("a:1").expect("remove again"));
        assert!(store.remove("docker.io/library/c:1").expect("remove"));
        assert_eq!(store.resolve("a:1").expect("resolve"), None);
        // Removing a name frees nothing yet.
        assert!(dir
            .path()
            .join("images/layers")
            .join(Digest::of(&a_top).hex())
            .exists());

        // c runs in a container: kept, given by its image ID.
        let c_id = c.config.clone().expect("config");
        let freed = store.prune(std::slice::from_ref(&c_id)).expect("prune");
        assert!(freed > 0);
        let after = store.disk_usage().expect("usage");
        assert!(after < before, "{after} < {before}");
        let blobs = store.blobs.list().expect("blobs");
        assert!(!blobs.contains(&a.digest));
        assert!(!blobs.contains(&Digest::of(&gzip(&a_top))));
        assert!(blobs.contains(&Digest::of(&gzip(&base))));
        assert!(blobs.contains(&c.digest));
        let mut kept = vec![
            Digest::of(&base).hex().to_owned(),
            Digest::of(&b_top).hex().to_owned(),
            Digest::of(&c_only).hex().to_owned(),
        ];
        kept.sort();
        assert_eq!(layer_dirs(dir.path()), kept);
        // b still works, without unpacking again.
        let b_layers = store.layers(&resolved(&store, "b:1")).expect("b");
        assert_eq!(
            fs::read(b_layers[0].join("etc/motd")).expect("motd"),
            b"base\n"
        );

        // The container is gone: c goes too.
        assert!(store.prune(&[]).expect("prune") > 0);
        assert!(!store.blobs.list().expect("blobs").contains(&c.digest));
        assert_eq!(layer_dirs(dir.path()).len(), 2);
        // b: manifest, config, two layers.
        assert_eq!(store.blobs.list().expect("blobs").len(), 4);
    }

    #[test]
    fn prune_keeps_an_in_use_image_given_by_its_manifest() {
        let (dir, mut store) = store();
        let only = layer(&[("x", b"x")]);
        let built = image(&[&only]);
        import(
            &mut store,
            dir.path(),
            "x.tar",
            &tarball(&[("x:1", &built)]),
        );
        store.layers(&resolved(&store, "x:1")).expect("layers");
        store.remove("x:1").expect("remove");
        assert_eq!(
            store
                .prune(std::slice::from_ref(&built.digest))
                .expect("prune"),
            0
        );
        assert!(store.prune(&[]).expect("prune") > 0);
        assert!(store.blobs.list().expect("blobs").is_empty());
        assert!(layer_dirs(dir.path()).is_empty());
    }

    #[test]
    fn import_dir_skips_what_fails_and_imports_the_rest() {
        let (dir, mut store) = store();
        let airgap = dir.path().join("airgap");
        fs::create_dir(&airgap).expect("airgap");
        let good = image(&[&layer(&[("good", b"1")])]);
        fs::write(
            airgap.join("good.tar.gz"),
            gzip(&tarball(&[("registry.example/good:2", &good)])),
        )
        .expect("good");
        fs::write(airgap.join("corrupt.tar"), b"not a tarball at all").expect("corrupt");
        // Not a tarball's name, and a directory: not looked at.
        fs::write(airgap.join("notes.txt"), b"hi").expect("notes");
        fs::create_dir(airgap.join("dir.tar")).expect("dir");
        let names = store.import_dir(&airgap).expect("import_dir");
        assert_eq!(names, ["registry.example/good:2"]);
        assert_eq!(
            resolved(&store, "registry.example/good:2").manifest,
            good.digest
        );
        assert!(store
            .import_dir(&dir.path().join("missing"))
            .expect("missing dir")
            .is_empty());
    }

    #[test]
    fn a_tarball_naming_nothing_or_pinning_another_digest_names_nothing() {
        let (dir, mut store) = store();
        let built = image(&[&layer(&[("x", b"x")])]);
        let path = dir.path().join("unnamed.tar");
        fs::write(&path, tarball(&[("", &built)])).expect("write");
        let err = store.import(&path).unwrap_err();
        assert!(matches!(err, Error::Unnamed { .. }), "{}", chain(&err));

        let pinned = format!("x@{}", Digest::of(b"another"));
        fs::write(&path, tarball(&[(pinned.as_str(), &built)])).expect("write");
        let err = store.import(&path).unwrap_err();
        assert!(matches!(err, Error::PinMismatch { .. }), "{}", chain(&err));
        assert!(store.list().expect("list").is_empty());
    }

    #[test]
    fn set_name_names_only_what_is_complete_for_this_node() {
        let (_dir, mut store) = store();
        let ours = image(&[&layer(&[("etc/motd", b"hi\n")])]);
        let multi = index(&[&ours]);
        // A pull stored the index and manifest, but a prune removed the rest before the
        // name was set (or the pull never fetched it): nothing is named.
        store.blobs().put_bytes(&multi.blobs[0]).expect("index");
        let err = store.set_name("app:1", &multi.digest).unwrap_err();
        assert!(
            matches!(&err, Error::Incomplete { missing, .. } if *missing == ours.digest),
            "{err}"
        );
        store.blobs().put_bytes(&ours.blobs[0]).expect("manifest");
        let err = store.set_name("app:1", &multi.digest).unwrap_err();
        let config = ours.config.clone().expect("config");
        assert!(
            matches!(&err, Error::Incomplete { missing, .. } if *missing == config),
            "{err}"
        );
        store.blobs().put_bytes(&ours.blobs[1]).expect("config");
        let err = store.set_name("app:1", &multi.digest).unwrap_err();
        assert!(
            err.to_string().ends_with("is not stored")
                && !err.to_string().contains(&config.to_string()),
            "{err}"
        );
        assert!(store.resolve("app:1").expect("resolve").is_none());
        store.blobs().put_bytes(&ours.blobs[2]).expect("layer");
        assert_eq!(
            store.set_name("app:1", &multi.digest).expect("named"),
            "docker.io/library/app:1"
        );
        let resolved = store.resolve("app:1").expect("resolve").expect("named");
        assert_eq!(
            (&resolved.digest, &resolved.manifest),
            (&multi.digest, &ours.digest)
        );
        assert_eq!(store.layers(&resolved).expect("layers").len(), 1);
    }

    #[test]
    fn opening_clears_half_unpacked_layers() {
        let (dir, store) = store();
        let half = dir.path().join("images/layers/.tmp/abc-1-0");
        fs::create_dir_all(half.join("ro/inner")).expect("half");
        fs::write(half.join("ro/inner/file"), b"half").expect("file");
        let mut perms = fs::metadata(half.join("ro")).expect("ro").permissions();
        std::os::unix::fs::PermissionsExt::set_mode(&mut perms, 0o555);
        fs::set_permissions(half.join("ro"), perms).expect("chmod");
        drop(store);
        ImageStore::open(&dir.path().join("images")).expect("reopen");
        assert!(!half.exists());
        assert!(tmp_is_empty(dir.path()));
    }

    fn gc_image(id: &str, age_secs: u64, size: u64, in_use: bool, now: SystemTime) -> GcImage {
        GcImage {
            id: Digest::of(id.as_bytes()),
            last_used: now - Duration::from_secs(age_secs),
            size,
            in_use,
        }
    }

    #[test]
    fn the_image_gc_removes_the_least_recently_used_until_under_low() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        let policy = GcPolicy::default();
        let images = [
            gc_image("old", 3600, 30, false, now),
            gc_image("older-but-running", 7200, 50, true, now),
            gc_image("recent", 600, 30, false, now),
            gc_image("just-pulled", 60, 100, false, now),
            gc_image("oldest", 86_400, 10, false, now),
        ];
        let id = |s: &str| Digest::of(s.as_bytes());
        let disk = |available| DiskSpace {
            capacity: 1000,
            available,
        };

        // 84 % used: under the high threshold, nothing.
        assert_eq!(gc_plan(&images, disk(160), &policy, now), GcPlan::default());
        // 85 %: free down to 80 %, 50 bytes. Least recently used first, never the
        // running image nor the one pulled a minute ago; oldest and old free only 40.
        let plan = gc_plan(&images, disk(150), &policy, now);
        assert_eq!(plan.to_free, 50);
        assert_eq!(plan.remove, [id("oldest"), id("old"), id("recent")]);
        assert_eq!(plan.freed, 70);
        // 84.1 % used counts as 85 %, as the kubelet rounds it.
        let plan = gc_plan(&images, disk(159), &policy, now);
        assert_eq!(plan.to_free, 41);
        assert_eq!(plan.remove, [id("oldest"), id("old"), id("recent")]);
        // More to free than may be removed: all that may go, reported short.
        let plan = gc_plan(&images, disk(119), &policy, now);
        assert_eq!(plan.to_free, 81);
        assert_eq!(plan.remove, [id("oldest"), id("old"), id("recent")]);
        assert!(plan.freed < plan.to_free);
        // Just enough with the first: stops there.
        let plan = gc_plan(
            &images,
            disk(195),
            &GcPolicy {
                high_percent: 80,
                low_percent: 80,
                ..policy.clone()
            },
            now,
        );
        assert_eq!(plan.to_free, 5);
        assert_eq!(plan.remove, [id("oldest")]);
        // Younger than min_age: kept even when nothing else can go.
        let young = GcPolicy {
            min_age: Duration::from_secs(7 * 86_400),
            ..policy
        };
        let plan = gc_plan(&images, disk(0), &young, now);
        assert!(plan.remove.is_empty());
        assert_eq!(plan.to_free, 200);
        assert_eq!(
            gc_plan(
                &images,
                DiskSpace {
                    capacity: 0,
                    available: 0
                },
                &GcPolicy::default(),
                now
            ),
            GcPlan::default()
        );
    }
}
