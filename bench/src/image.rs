//! The busybox image the node suite runs, built from Debian's busybox-static
//! (`/bin/busybox`) as an OCI image-layout tarball that skiff imports from its air-gap
//! folder; the same approach as the end-to-end tests' `tests/e2e/images.rs`, cut down to
//! the one image the bench needs.
//!
//! The image is one gzip layer over nothing: `bin/busybox`, a `bin/<applet>` symlink for
//! every applet it lists, the directories a shell expects, and `etc/passwd` and
//! `etc/group` with root and nobody. The build is deterministic (entries sorted, times 0,
//! owner root).

use anyhow::{bail, Context, Result};
use sha2::{Digest as _, Sha256};
use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;
use std::process::Command;

/// The busybox the image is made of (Debian's `busybox-static`: no shared libraries).
const BUSYBOX: &str = "/bin/busybox";
/// The name the image is imported as; pods say `busybox`.
pub const NAME: &str = "docker.io/library/busybox:latest";
const DEFAULT_PATH: &str = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
const PASSWD: &[u8] = b"root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n";
const GROUP: &[u8] = b"root:x:0:\nnobody:x:65534:\n";
/// Directories the image has, with their modes.
const DIRECTORIES: &[(&str, u32)] = &[
    ("bin", 0o755),
    ("dev", 0o755),
    ("etc", 0o755),
    ("proc", 0o555),
    ("root", 0o700),
    ("sys", 0o555),
    ("tmp", 0o1777),
    ("usr", 0o755),
    ("usr/bin", 0o755),
    ("var", 0o755),
];

/// The image's one layer, an uncompressed tar: also what the crun baseline unpacks as
/// its rootfs, so both run the same files.
pub fn layer() -> Result<Vec<u8>> {
    let busybox = std::fs::read(BUSYBOX)
        .with_context(|| format!("reading {BUSYBOX} (install Debian's busybox-static)"))?;
    let list = Command::new(BUSYBOX)
        .arg("--list")
        .output()
        .with_context(|| format!("running {BUSYBOX} --list"))?;
    if !list.status.success() {
        bail!(
            "{BUSYBOX} --list: {}: {}",
            list.status,
            String::from_utf8_lossy(&list.stderr)
        );
    }
    let list = String::from_utf8(list.stdout)?;

    enum Node<'a> {
        Dir(u32),
        File(&'a [u8], u32),
        Symlink,
    }
    let mut nodes: BTreeMap<String, Node> = BTreeMap::new();
    for (dir, mode) in DIRECTORIES {
        nodes.insert((*dir).into(), Node::Dir(*mode));
    }
    for applet in list.lines().map(str::trim) {
        if !applet.is_empty() && applet != "busybox" && !applet.contains('/') {
            nodes.insert(format!("bin/{applet}"), Node::Symlink);
        }
    }
    nodes.insert("bin/busybox".into(), Node::File(&busybox, 0o755));
    nodes.insert("etc/passwd".into(), Node::File(PASSWD, 0o644));
    nodes.insert("etc/group".into(), Node::File(GROUP, 0o644));

    let mut tar = tar::Builder::new(Vec::new());
    for (path, node) in &nodes {
        match node {
            Node::Dir(mode) => {
                let mut h = header(tar::EntryType::Directory, *mode, 0);
                tar.append_data(&mut h, path, std::io::empty())?;
            }
            Node::File(content, mode) => {
                let mut h = header(tar::EntryType::Regular, *mode, content.len() as u64);
                tar.append_data(&mut h, path, *content)?;
            }
            Node::Symlink => {
                let mut h = header(tar::EntryType::Symlink, 0o777, 0);
                tar.append_link(&mut h, path, "busybox")?;
            }
        }
    }
    Ok(tar.into_inner()?)
}

/// Writes the OCI image layout tarball of `layer` (from [`layer`]), named [`NAME`], to
/// `out`.
pub fn write_oci(layer: &[u8], out: &Path) -> Result<()> {
    let mut gz = flate2::GzBuilder::new()
        .mtime(0)
        .write(Vec::new(), flate2::Compression::default());
    gz.write_all(layer)?;
    let layer_gz = gz.finish()?;
    let arch = match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    };
    let config = serde_json::to_vec(&serde_json::json!({
        "created": "1970-01-01T00:00:00Z",
        "architecture": arch,
        "os": "linux",
        "config": {"Env": [DEFAULT_PATH], "Cmd": ["sh"]},
        "rootfs": {"type": "layers", "diff_ids": [format!("sha256:{}", sha256(layer))]},
        "history": [{"created": "1970-01-01T00:00:00Z", "created_by": "skiff-bench"}],
    }))?;
    let manifest = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                   "digest": format!("sha256:{}", sha256(&config)), "size": config.len()},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                    "digest": format!("sha256:{}", sha256(&layer_gz)), "size": layer_gz.len()}],
    }))?;
    let tag = NAME.rsplit_once(':').map_or("latest", |(_, t)| t);
    let index = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [{
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": format!("sha256:{}", sha256(&manifest)),
            "size": manifest.len(),
            "annotations": {
                "io.containerd.image.name": NAME,
                "org.opencontainers.image.ref.name": tag,
            },
        }],
    }))?;

    let file = std::fs::File::create(out).with_context(|| format!("creating {}", out.display()))?;
    let mut tar = tar::Builder::new(std::io::BufWriter::new(file));
    let mut add = |path: &str, bytes: &[u8]| {
        let mut h = header(tar::EntryType::Regular, 0o644, bytes.len() as u64);
        tar.append_data(&mut h, path, bytes)
    };
    add("oci-layout", br#"{"imageLayoutVersion":"1.0.0"}"#)?;
    add("index.json", &index)?;
    for blob in [&config, &manifest, &layer_gz] {
        add(&format!("blobs/sha256/{}", sha256(blob)), blob)?;
    }
    tar.into_inner()?.flush()?;
    Ok(())
}

/// The lowercase hex sha256 of `bytes`.
fn sha256(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// A tar header owned by root, time 0.
fn header(kind: tar::EntryType, mode: u32, size: u64) -> tar::Header {
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(kind);
    h.set_mode(mode);
    h.set_size(size);
    h.set_mtime(0);
    h.set_uid(0);
    h.set_gid(0);
    h
}
