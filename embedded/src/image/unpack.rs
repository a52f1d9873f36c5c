//! Unpacking a layer into its own directory, ready to be an overlayfs lower directory:
//! layers stay separate and images that share a layer share its directory.
//!
//! OCI whiteouts become overlayfs ones: `.wh.NAME` (NAME deleted by this layer) becomes
//! a character device 0/0 named NAME, and `.wh..wh..opq` (the directory hides what lower
//! layers have in it) becomes the `trusted.overlay.opaque=y` attribute of its
//! directory. Both need root, as the runtime does. Entries that would land outside the
//! directory (absolute paths, `..`) are refused.

use super::decompressed;
use rustix::fs::{mknodat, setxattr, FileType, Mode, XattrFlags, CWD};
use std::fs;
use std::io::{self, BufReader, Read};
use std::path::{Component, Path, PathBuf};

/// The whiteout prefix.
const WHITEOUT: &str = ".wh.";
/// The opaque-directory marker.
const OPAQUE: &str = ".wh..wh..opq";

/// Why a layer could not be unpacked.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Reading the layer, or writing under the directory, failed.
    #[error("unpacking a layer into {}: {what}", dir.display())]
    Io {
        /// The layer's directory.
        dir: PathBuf,
        /// What failed.
        what: String,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// An entry would land outside the layer's directory.
    #[error("unpacking a layer into {}: refused entry {path:?}: it leaves the layer", dir.display())]
    Unsafe {
        /// The layer's directory.
        dir: PathBuf,
        /// The entry's path.
        path: String,
    },
}

/// A relative path made only of normal components, or `None`.
fn contained(path: &Path) -> Option<PathBuf> {
    let mut out = PathBuf::new();
    for c in path.components() {
        match c {
            Component::Normal(p) => out.push(p),
            Component::CurDir => {}
            _ => return None,
        }
    }
    Some(out)
}

/// Whether a directory on the way from `dir` to `dir/rel` is a symlink: a whiteout
/// written through one could land outside the layer.
fn through_symlink(dir: &Path, rel: &Path) -> bool {
    let mut at = dir.to_path_buf();
    rel.components().any(|c| {
        at.push(c);
        fs::symlink_metadata(&at).is_ok_and(|m| m.file_type().is_symlink())
    })
}

/// Unpacks the layer `layer` (a tar stream: plain, gzip or zstd) into `dir`, which it
/// creates. Ownership, modes, times and extended attributes are kept.
pub fn unpack(layer: impl Read, dir: &Path) -> Result<(), Error> {
    let input = decompressed(BufReader::new(layer)).map_err(|source| Error::Io {
        dir: dir.to_owned(),
        what: "reading".into(),
        source,
    })?;
    unpack_tar(input, dir)
}

/// [`unpack`] for a stream already decompressed: the caller that checks a layer's
/// diff_id hashes the uncompressed stream itself, and a second sniff for compression
/// could mistake a tar whose first bytes happen to look like a magic number.
pub fn unpack_tar(tar: impl Read, dir: &Path) -> Result<(), Error> {
    let io_err = |what: String| {
        let dir = dir.to_owned();
        move |source| Error::Io { dir, what, source }
    };
    fs::create_dir_all(dir).map_err(io_err("creating it".into()))?;
    let mut archive = tar::Archive::new(tar);
    archive.set_preserve_permissions(true);
    archive.set_preserve_ownerships(true);
    archive.set_preserve_mtime(true);
    archive.set_unpack_xattrs(true);
    archive.set_overwrite(true);
    let entries = archive.entries().map_err(io_err("reading".into()))?;
    for entry in entries {
        let mut entry = entry.map_err(io_err("reading".into()))?;
        let raw = entry.path().map_err(io_err("reading".into()))?.into_owned();
        let shown = raw.to_string_lossy().into_owned();
        let unsafe_entry = || Error::Unsafe {
            dir: dir.to_owned(),
            path: shown.clone(),
        };
        let path = contained(&raw).ok_or_else(unsafe_entry)?;
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
        let rel_parent = path.parent().unwrap_or(Path::new(""));
        let parent = dir.join(rel_parent);
        if name.starts_with(WHITEOUT) && through_symlink(dir, rel_parent) {
            return Err(unsafe_entry());
        }
        if name == OPAQUE {
            fs::create_dir_all(&parent).map_err(io_err(format!("creating {shown}")))?;
            setxattr(&parent, "trusted.overlay.opaque", b"y", XattrFlags::empty())
                .map_err(|e| io_err(format!("marking {shown} opaque"))(e.into()))?;
        } else if let Some(hidden) = name.strip_prefix(WHITEOUT) {
            fs::create_dir_all(&parent).map_err(io_err(format!("creating {shown}")))?;
            let target = parent.join(hidden);
            match fs::symlink_metadata(&target) {
                Ok(m) if m.is_dir() => fs::remove_dir_all(&target),
                Ok(_) => fs::remove_file(&target),
                Err(_) => Ok(()),
            }
            .map_err(io_err(format!("replacing {shown}")))?;
            mknodat(CWD, &target, FileType::CharacterDevice, Mode::empty(), 0)
                .map_err(|e| io_err(format!("writing the whiteout {shown}"))(e.into()))?;
        } else if !entry
            .unpack_in(dir)
            .map_err(io_err(format!("writing {shown}")))?
        {
            return Err(unsafe_entry());
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};

    fn header(kind: tar::EntryType, mode: u32, size: usize) -> tar::Header {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(kind);
        h.set_size(size as u64);
        h.set_mode(mode);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(1_700_000_000);
        h
    }

    fn file(b: &mut tar::Builder<Vec<u8>>, path: &str, mode: u32, data: &[u8]) {
        let mut h = header(tar::EntryType::Regular, mode, data.len());
        b.append_data(&mut h, path, data).expect("entry");
    }

    fn dir_entry(b: &mut tar::Builder<Vec<u8>>, path: &str) {
        let mut h = header(tar::EntryType::Directory, 0o755, 0);
        b.append_data(&mut h, path, &[][..]).expect("dir entry");
    }

    // Needs root (whiteouts are device nodes, opaque marks trusted xattrs); CI is root.
    #[test]
    fn files_links_and_whiteouts_become_an_overlay_lower_directory() {
        let mut b = tar::Builder::new(Vec::new());
        dir_entry(&mut b, "etc/");
        file(&mut b, "etc/motd", 0o640, b"hello\n");
        file(&mut b, "bin/tool", 0o755, b"#!/bin/sh\n");
        let mut h = header(tar::EntryType::Symlink, 0o777, 0);
        b.append_link(&mut h, "bin/alias", "tool").expect("symlink");
        file(&mut b, "var/.wh.cache", 0o600, b"");
        file(&mut b, "etc/.wh..wh..opq", 0o600, b"");
        let layer = b.into_inner().expect("tar");
        let gz = {
            use std::io::Write;
            let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            e.write_all(&layer).expect("gzip");
            e.finish().expect("gzip")
        };
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = tmp.path().join("layer");
        unpack(gz.as_slice(), &dir).expect("unpack");

        assert_eq!(fs::read(dir.join("etc/motd")).expect("motd"), b"hello\n");
        let mode = fs::metadata(dir.join("etc/motd"))
            .expect("meta")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o640);
        assert_eq!(
            fs::read_link(dir.join("bin/alias")).expect("link"),
            Path::new("tool")
        );
        let whiteout = fs::symlink_metadata(dir.join("var/cache")).expect("whiteout");
        assert!(whiteout.file_type().is_char_device(), "{whiteout:?}");
        assert_eq!(whiteout.rdev(), 0);
        assert!(!dir.join("var/.wh.cache").exists());
        let mut opaque = [0u8; 4];
        let n = rustix::fs::getxattr(dir.join("etc"), "trusted.overlay.opaque", &mut opaque)
            .expect("opaque xattr");
        assert_eq!(&opaque[..n], b"y");
        assert!(!dir.join("etc/.wh..wh..opq").exists());
    }

    #[test]
    fn entries_leaving_the_layer_are_refused() {
        let mut h = header(tar::EntryType::Regular, 0o644, 2);
        let name = b"../escape";
        h.as_gnu_mut().expect("gnu").name[..name.len()].copy_from_slice(name);
        h.set_cksum();
        let mut b = tar::Builder::new(Vec::new());
        b.append(&h, &b"no"[..]).expect("entry");
        let layer = b.into_inner().expect("tar");
        let tmp = tempfile::tempdir().expect("tempdir");
        let err = unpack(layer.as_slice(), &tmp.path().join("layer")).unwrap_err();
        assert!(
            err.to_string().contains("refused entry \"../escape\""),
            "{err}"
        );
        assert!(!tmp.path().join("escape").exists());

        // A whiteout under a symlink to outside the layer.
        let outside = tmp.path().join("outside");
        fs::create_dir(&outside).expect("outside");
        fs::write(outside.join("precious"), b"keep").expect("precious");
        let mut b = tar::Builder::new(Vec::new());
        let mut h = header(tar::EntryType::Symlink, 0o777, 0);
        b.append_link(&mut h, "var", &outside).expect("symlink");
        file(&mut b, "var/.wh.precious", 0o600, b"");
        let layer = b.into_inner().expect("tar");
        let err = unpack(layer.as_slice(), &tmp.path().join("layer2")).unwrap_err();
        assert!(err.to_string().contains("leaves the layer"), "{err}");
        assert_eq!(
            fs::read(outside.join("precious")).expect("still there"),
            b"keep"
        );
    }
}
