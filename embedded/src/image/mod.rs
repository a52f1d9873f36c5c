//! The image store: references as Docker spells them, and content-addressed blobs.
//!
//! - `reference.rs`: image names normalized as Docker does (`busybox` is
//!   `docker.io/library/busybox:latest`);
//! - `blobs.rs`: blobs under their sha256 digest, written so that a half-written or
//!   corrupt blob never becomes visible (write aside, verify the digest, sync, rename);
//! - `import.rs`: OCI image layout tarballs (plain, gzip, zstd) into the blobs, with the
//!   names their index gives.

pub mod blobs;
pub mod import;
pub mod reference;

pub use blobs::{Blobs, Digest};
pub use reference::{canonical, normalize};
