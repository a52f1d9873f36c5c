//! The image store: references as Docker spells them, and content-addressed blobs.
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
//!   ones, so layers serve as overlay lower directories.

pub mod blobs;
pub mod import;
pub mod names;
pub mod platform;
pub mod reference;
pub mod unpack;

pub use blobs::{Blobs, Digest};
pub use names::Names;
pub use reference::{canonical, normalize};
