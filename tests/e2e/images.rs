//! Container images the tests build themselves, from Debian's busybox-static
//! (`/bin/busybox`), as OCI image-layout tarballs: what skiff imports and `skopeo` reads as
//! `oci-archive:`.
//!
//! An image is one gzip layer over nothing: `bin/busybox` and a `bin/<applet>` symlink for
//! every applet it lists, the directories a shell expects (`tmp` sticky and world
//! writable), `etc/passwd` and `etc/group` with root and nobody, and the spec's extra
//! files. Builds are deterministic (entries sorted, times 0, owner root), so one spec
//! always gives the same digests.

use sha2::{Digest as _, Sha256};
use std::collections::BTreeMap;
use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::process::Command;

/// The busybox the images are made of (Debian's `busybox-static`: no shared libraries).
const BUSYBOX: &str = "/bin/busybox";
/// The `PATH` every image has, as Docker's official images set it.
const DEFAULT_PATH: &str = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
const PASSWD: &[u8] = b"root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n";
const GROUP: &[u8] = b"root:x:0:\nnobody:x:65534:\n";
/// Directories every image has, with their modes.
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
    ("var/www", 0o755),
];

const MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const INDEX: &str = "application/vnd.oci.image.index.v1+json";
const CONFIG: &str = "application/vnd.oci.image.config.v1+json";
const LAYER_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";

/// An image to build.
#[derive(Debug, Clone, Copy)]
pub struct ImageSpec<'a> {
    /// Its name, as a pod spells it (`busybox:test`, `docker.io/library/busybox:test`);
    /// stored normalized, and with a tag (`latest` if none): a digest cannot be chosen.
    pub name: &'a str,
    /// The image's `Cmd`; none if empty.
    pub cmd: &'a [&'a str],
    /// The image's `Entrypoint`; none if empty.
    pub entrypoint: &'a [&'a str],
    /// `NAME=value` entries added to the default `PATH` (a `PATH=` entry replaces it).
    pub env: &'a [&'a str],
    /// The image's `WorkingDir`.
    pub working_dir: Option<&'a str>,
    /// More files: path in the image (missing parent directories are added, 0755), content
    /// and mode. A path the image already has is replaced.
    pub extra_files: &'a [(&'a str, &'a [u8], u32)],
}

impl<'a> ImageSpec<'a> {
    /// Plain busybox named `name`: `Cmd` `["sh"]`, no entrypoint, no extra environment,
    /// working directory or files.
    pub fn new(name: &'a str) -> ImageSpec<'a> {
        ImageSpec {
            name,
            cmd: &["sh"],
            entrypoint: &[],
            env: &[],
            working_dir: None,
            extra_files: &[],
        }
    }
}

/// Writes an OCI image layout tarball (one gzip layer) for `spec` to `out`.
pub fn build(spec: &ImageSpec, out: &Path) -> io::Result<()> {
    let (full_name, tag) = names(spec.name)?;
    let layer = layer(spec)?;
    let diff_id = sha256(&layer);
    let mut gz = flate2::GzBuilder::new()
        .mtime(0)
        .write(Vec::new(), flate2::Compression::default());
    gz.write_all(&layer)?;
    let layer_gz = gz.finish()?;
    let json = |value: serde_json::Value| serde_json::to_vec(&value).map_err(io::Error::other);

    let mut env: Vec<&str> = Vec::new();
    if !spec.env.iter().any(|e| e.starts_with("PATH=")) {
        env.push(DEFAULT_PATH);
    }
    env.extend(spec.env);
    let mut config = serde_json::Map::new();
    config.insert("Env".into(), env.into());
    if !spec.entrypoint.is_empty() {
        config.insert("Entrypoint".into(), spec.entrypoint.into());
    }
    if !spec.cmd.is_empty() {
        config.insert("Cmd".into(), spec.cmd.into());
    }
    if let Some(dir) = spec.working_dir {
        config.insert("WorkingDir".into(), dir.into());
    }
    let config = json(serde_json::json!({
        "created": "1970-01-01T00:00:00Z",
        "architecture": go_arch(),
        "os": "linux",
        "config": config,
        "rootfs": {"type": "layers", "diff_ids": [format!("sha256:{diff_id}")]},
        "history": [{"created": "1970-01-01T00:00:00Z", "created_by": "tests/e2e/images.rs"}],
    }))?;
    let manifest = json(serde_json::json!({
        "schemaVersion": 2,
        "mediaType": MANIFEST,
        "config": {"mediaType": CONFIG, "digest": format!("sha256:{}", sha256(&config)),
                   "size": config.len()},
        "layers": [{"mediaType": LAYER_GZIP, "digest": format!("sha256:{}", sha256(&layer_gz)),
                    "size": layer_gz.len()}],
    }))?;
    let index = json(serde_json::json!({
        "schemaVersion": 2,
        "mediaType": INDEX,
        "manifests": [{
            "mediaType": MANIFEST,
            "digest": format!("sha256:{}", sha256(&manifest)),
            "size": manifest.len(),
            "annotations": {
                "io.containerd.image.name": full_name,
                "org.opencontainers.image.ref.name": tag,
            },
        }],
    }))?;

    let mut tar = tar::Builder::new(BufWriter::new(File::create(out)?));
    let mut file = |path: &str, bytes: &[u8]| {
        let mut h = header(tar::EntryType::Regular, 0o644, bytes.len() as u64);
        tar.append_data(&mut h, path, bytes)
    };
    file("oci-layout", br#"{"imageLayoutVersion":"1.0.0"}"#)?;
    file("index.json", &index)?;
    for blob in [&config, &manifest, &layer_gz] {
        file(&format!("blobs/sha256/{}", sha256(blob)), blob)?;
    }
    tar.into_inner()?.flush()
}

/// Shorthand: busybox with `Cmd` `["sh"]` named `name`, written to
/// `dir/<name, file-safe>.tar`; returns that path. Panics if it cannot be built.
pub fn busybox(dir: &Path, name: &str) -> PathBuf {
    let file: String = name
        .chars()
        .map(|c| match c {
            'a'..='z' | 'A'..='Z' | '0'..='9' | '.' | '-' | '_' => c,
            _ => '_',
        })
        .collect();
    let out = dir.join(format!("{file}.tar"));
    build(&ImageSpec::new(name), &out)
        .unwrap_or_else(|e| panic!("building the image {name} at {}: {e}", out.display()));
    out
}

/// The normalized full name and the tag of `name`.
fn names(name: &str) -> io::Result<(String, String)> {
    use skiff_embedded::image::{canonical, normalize};
    let invalid = |message: String| io::Error::new(io::ErrorKind::InvalidInput, message);
    let reference = normalize(name).map_err(|e| invalid(e.to_string()))?;
    if reference.digest().is_some() {
        return Err(invalid(format!(
            "{name}: an image to build is named by a tag, not a digest"
        )));
    }
    let tag = reference.tag().unwrap_or("latest").to_owned();
    let mut full = canonical(&reference);
    if reference.tag().is_none() {
        full = format!("{full}:{tag}");
    }
    Ok((full, tag))
}

/// The host's architecture as Go (and so OCI) spells it.
fn go_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    }
}

/// The lowercase hex sha256 of `bytes`.
fn sha256(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// What one path of the layer is.
enum Node<'a> {
    Dir(u32),
    File(&'a [u8], u32),
    Symlink(String),
}

/// The layer of `spec`, an uncompressed tar.
fn layer(spec: &ImageSpec) -> io::Result<Vec<u8>> {
    let missing = |e: io::Error| {
        io::Error::new(
            e.kind(),
            format!("{BUSYBOX}: {e} (install Debian's busybox-static)"),
        )
    };
    let busybox = std::fs::read(BUSYBOX).map_err(missing)?;
    let list = Command::new(BUSYBOX)
        .arg("--list")
        .output()
        .map_err(missing)?;
    if !list.status.success() {
        return Err(io::Error::other(format!(
            "{BUSYBOX} --list: {}: {}",
            list.status,
            String::from_utf8_lossy(&list.stderr)
        )));
    }
    let list = String::from_utf8(list.stdout).map_err(io::Error::other)?;

    let mut nodes: BTreeMap<String, Node> = BTreeMap::new();
    for (dir, mode) in DIRECTORIES {
        nodes.insert((*dir).into(), Node::Dir(*mode));
    }
    for applet in list.lines().map(str::trim) {
        if !applet.is_empty() && applet != "busybox" && !applet.contains('/') {
            nodes.insert(format!("bin/{applet}"), Node::Symlink("busybox".into()));
        }
    }
    nodes.insert("bin/busybox".into(), Node::File(&busybox, 0o755));
    nodes.insert("etc/passwd".into(), Node::File(PASSWD, 0o644));
    nodes.insert("etc/group".into(), Node::File(GROUP, 0o644));
    for (path, content, mode) in spec.extra_files {
        let path = path.trim_start_matches('/');
        for parent in Path::new(path).ancestors().skip(1) {
            let parent = parent.to_string_lossy();
            if !parent.is_empty() {
                nodes.entry(parent.into_owned()).or_insert(Node::Dir(0o755));
            }
        }
        nodes.insert(path.to_owned(), Node::File(content, *mode));
    }

    let mut tar = tar::Builder::new(Vec::new());
    for (path, node) in &nodes {
        match node {
            Node::Dir(mode) => {
                let mut h = header(tar::EntryType::Directory, *mode, 0);
                tar.append_data(&mut h, path, io::empty())?;
            }
            Node::File(content, mode) => {
                let mut h = header(tar::EntryType::Regular, *mode, content.len() as u64);
                tar.append_data(&mut h, path, *content)?;
            }
            Node::Symlink(target) => {
                let mut h = header(tar::EntryType::Symlink, 0o777, 0);
                tar.append_link(&mut h, path, target)?;
            }
        }
    }
    tar.into_inner()
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

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;
    use skiff_embedded::image::import::import;
    use skiff_embedded::image::{Blobs, Digest};
    use std::io::Read;

    fn digest(d: &Value) -> Digest {
        d.as_str().unwrap().parse().unwrap()
    }

    /// A layer entry: path, type, mode, link target and content.
    type Entry = (String, tar::EntryType, u32, Option<String>, Vec<u8>);

    /// Imports `tarball` into a fresh store under `dir` and checks it names one image,
    /// `name`, whose manifest, config and layer are stored, the layer deterministic (sorted,
    /// time 0, owner root) and matching the config's diff ID; returns the manifest digest,
    /// the config and the layer's entries.
    fn imported(dir: &Path, tarball: &Path, name: &str) -> (Digest, Value, Vec<Entry>) {
        let blobs = Blobs::open(dir.join("store")).unwrap();
        let images = import(&blobs, tarball).unwrap();
        assert_eq!(images.len(), 1, "{images:?}");
        assert_eq!(images[0].name.as_deref(), Some(name));
        let manifest: Value =
            serde_json::from_slice(&blobs.read(&images[0].digest).unwrap()).unwrap();
        assert_eq!(manifest["mediaType"], MANIFEST);
        let config_digest = digest(&manifest["config"]["digest"]);
        assert!(blobs.contains(&config_digest));
        let config: Value = serde_json::from_slice(&blobs.read(&config_digest).unwrap()).unwrap();
        assert_eq!(manifest["layers"].as_array().unwrap().len(), 1);
        assert_eq!(manifest["layers"][0]["mediaType"], LAYER_GZIP);
        let layer_digest = digest(&manifest["layers"][0]["digest"]);
        assert!(blobs.contains(&layer_digest));

        let mut layer = Vec::new();
        flate2::read::GzDecoder::new(blobs.read(&layer_digest).unwrap().as_slice())
            .read_to_end(&mut layer)
            .unwrap();
        assert_eq!(
            config["rootfs"]["diff_ids"][0],
            format!("sha256:{}", sha256(&layer))
        );
        let mut entries = Vec::new();
        for entry in tar::Archive::new(layer.as_slice()).entries().unwrap() {
            let mut entry = entry.unwrap();
            let h = entry.header();
            assert_eq!(
                (h.mtime().unwrap(), h.uid().unwrap(), h.gid().unwrap()),
                (0, 0, 0)
            );
            let path = entry.path().unwrap().to_string_lossy().into_owned();
            let kind = h.entry_type();
            let mode = h.mode().unwrap();
            let link = entry
                .link_name()
                .unwrap()
                .map(|l| l.to_string_lossy().into_owned());
            let mut content = Vec::new();
            entry.read_to_end(&mut content).unwrap();
            entries.push((path, kind, mode, link, content));
        }
        let paths: Vec<&str> = entries.iter().map(|e| e.0.as_str()).collect();
        assert!(paths.is_sorted(), "{paths:?}");
        (images[0].digest.clone(), config, entries)
    }

    /// `skopeo inspect oci-archive:<tarball>`, parsed.
    fn skopeo_inspect(tarball: &Path) -> Value {
        let out = Command::new("skopeo")
            .arg("inspect")
            .arg(format!("oci-archive:{}", tarball.display()))
            .output()
            .unwrap_or_else(|e| panic!("running skopeo ({e}): install Debian's skopeo"));
        assert!(
            out.status.success(),
            "skopeo inspect {}: {}: {}",
            tarball.display(),
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).unwrap()
    }

    #[test]
    fn built_images_import_and_skopeo_reads_them() {
        let dir = tempfile::tempdir().unwrap();

        // The shorthand.
        let plain = busybox(dir.path(), "busybox:test");
        assert_eq!(plain, dir.path().join("busybox_test.tar"));
        let (manifest, config, entries) = imported(
            &dir.path().join("plain"),
            &plain,
            "docker.io/library/busybox:test",
        );
        assert_eq!(config["architecture"], go_arch());
        assert_eq!(config["os"], "linux");
        assert_eq!(
            config["config"],
            serde_json::json!({"Env": [DEFAULT_PATH], "Cmd": ["sh"]})
        );
        let find = |path: &str| {
            entries
                .iter()
                .find(|e| e.0 == path)
                .unwrap_or_else(|| panic!("{path} is not in the layer"))
        };
        let busybox_entry = find("bin/busybox");
        assert_eq!(
            (busybox_entry.1, busybox_entry.2),
            (tar::EntryType::Regular, 0o755)
        );
        assert_eq!(busybox_entry.4, std::fs::read(BUSYBOX).unwrap());
        for applet in ["sh", "ls", "httpd", "["] {
            let e = find(&format!("bin/{applet}"));
            assert_eq!(
                (e.1, e.3.as_deref()),
                (tar::EntryType::Symlink, Some("busybox"))
            );
        }
        let tmp = find("tmp");
        assert_eq!((tmp.1, tmp.2), (tar::EntryType::Directory, 0o1777));
        assert_eq!(find("etc/passwd").4, PASSWD);
        assert_eq!(find("etc/group").4, GROUP);
        let inspected = skopeo_inspect(&plain);
        assert_eq!(inspected["Digest"], manifest.to_string(), "{inspected}");
        assert_eq!(inspected["Architecture"], go_arch(), "{inspected}");
        assert_eq!(inspected["Os"], "linux", "{inspected}");

        // Every field, and the same spec built twice gives the same bytes.
        let spec = ImageSpec {
            name: "registry.example/e2e/web",
            entrypoint: &["httpd", "-f"],
            cmd: &["-p", "8080"],
            env: &["GREETING=hello"],
            working_dir: Some("/var/www"),
            extra_files: &[
                ("var/www/index.html", b"hello\n", 0o644),
                ("/opt/tools/run", b"#!/bin/sh\nexec httpd -f\n", 0o755),
            ],
        };
        let web = dir.path().join("web.tar");
        build(&spec, &web).unwrap();
        let again = dir.path().join("web-again.tar");
        build(&spec, &again).unwrap();
        assert!(std::fs::read(&web).unwrap() == std::fs::read(&again).unwrap());
        let (manifest, config, entries) = imported(
            &dir.path().join("web"),
            &web,
            "registry.example/e2e/web:latest",
        );
        assert_eq!(
            config["config"],
            serde_json::json!({
                "Env": [DEFAULT_PATH, "GREETING=hello"],
                "Entrypoint": ["httpd", "-f"],
                "Cmd": ["-p", "8080"],
                "WorkingDir": "/var/www",
            })
        );
        let find = |path: &str| entries.iter().find(|e| e.0 == path);
        assert_eq!(find("var/www/index.html").unwrap().4, b"hello\n");
        assert_eq!(
            find("opt").map(|e| (e.1, e.2)),
            Some((tar::EntryType::Directory, 0o755))
        );
        let run = find("opt/tools/run").unwrap();
        assert_eq!((run.1, run.2), (tar::EntryType::Regular, 0o755));
        let inspected = skopeo_inspect(&web);
        assert_eq!(inspected["Digest"], manifest.to_string(), "{inspected}");
        assert_eq!(
            inspected["Env"],
            serde_json::json!([DEFAULT_PATH, "GREETING=hello"]),
            "{inspected}"
        );

        // A digest cannot be chosen.
        let err = build(
            &ImageSpec::new(&format!("busybox@sha256:{}", "0".repeat(64))),
            &dir.path().join("bad.tar"),
        )
        .unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput, "{err}");
    }
}
