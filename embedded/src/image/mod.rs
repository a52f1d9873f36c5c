//! The image store: references as Docker spells them, content-addressed blobs, and the
//! node's [`ImageStore`] built on them.
//!
//! - `reference.rs`: image names normalized as Docker does (`busybox` is
//!   `docker.io/library/busybox:latest`);
//! - `blobs.rs`: blobs under their sha256 digest, written so that a half-written or
//!   corrupt blob never becomes visible (write aside, verify the digest, sync, rename);
//! - `import.rs`: image tarballs (OCI layout or docker save's, plain, gzip or zstd)
//!   into the blobs, with the names they give;
//! - `names.rs`: which manifest each normalized image name points at, in one file
//!   replaced whole;
//! - `platform.rs`: which manifest of a multi-platform image the node runs;
//! - `unpack.rs`: a layer into its own directory, OCI whiteouts turned into overlayfs
//!   ones, so layers serve as overlay lower directories;
//! - `store.rs`: [`ImageStore`], the above under one directory as the node uses them:
//!   import, resolve a name for the node's platform, layers unpacked once and verified
//!   against their diff_ids, list, remove, prune; and the kubelet's image GC decision;
//! - `registries.rs`: K3s's `registries.yaml`, and the endpoints (mirrors, rewrites,
//!   credentials, TLS) it gives for an image;
//! - `pull.rs`: [`pull()`], an image from those endpoints into the store over the Docker
//!   Registry HTTP API v2, for this node's platform.

pub mod blobs;
pub mod import;
pub mod names;
pub mod platform;
pub mod pull;
pub mod reference;
pub mod registries;
pub mod store;
pub mod unpack;

pub use blobs::{Blobs, Digest};
pub use names::Names;
pub use pull::{pull, Credential};
pub use reference::{canonical, normalize};
pub use registries::Registries;
pub use store::{Image, ImageStore, ListedImage};

use std::io::{self, BufRead, Read};

/// A tarball stream as it reads uncompressed: gzip and zstd are told by their magic
/// bytes (image tarballs and layers both come either way), anything else is plain.
fn decompressed<'a>(mut input: impl BufRead + 'a) -> io::Result<Box<dyn Read + 'a>> {
    let head = input.fill_buf()?;
    Ok(if head.starts_with(&[0x1f, 0x8b]) {
        Box::new(flate2::bufread::MultiGzDecoder::new(input))
    } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        Box::new(zstd::stream::read::Decoder::with_buffer(input)?)
    } else {
        Box::new(input)
    })
}
