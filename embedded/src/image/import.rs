//! Import of image tarballs, plain, gzip or zstd compressed (the compression is read
//! from the file's first bytes), in either layout:
//!
//! - the OCI image layout (`oci-layout`, `index.json`, `blobs/sha256/`), what
//!   `skopeo copy ... oci-archive:` writes, and `docker save` since Docker 25;
//! - the older `docker save` layout: a `manifest.json` naming each image's config
//!   (`<hex>.json`) and layer tarballs (`<id>/layer.tar`), for which an OCI manifest is
//!   written here.
//!
//! The tarball is read once, as a stream: every blob goes into the [`Blobs`] store
//! (verified against its digest, so a damaged tarball stores nothing under a wrong
//! name), then `index.json` names the images. An image whose manifest or any blob it
//! references is missing is refused, so a name never points at a partial image.

use super::blobs::{self, Blobs, Digest};
use super::decompressed;
use oci_spec::image::{ImageIndex, ImageManifest, MediaType};
use std::collections::HashMap;
use std::fs::File;
use std::io::{self, BufReader, Read};
use std::path::{Path, PathBuf};

/// containerd's annotation with an image's full name (what `ctr` and K3s read).
const CONTAINERD_NAME: &str = "io.containerd.image.name";
/// The OCI annotation with an image's name or tag.
const OCI_REF_NAME: &str = "org.opencontainers.image.ref.name";

/// An image found in a tarball.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Imported {
    /// Its name, if the tarball gives one (a tag alone is kept as the tarball says it).
    pub name: Option<String>,
    /// Its manifest (or index, for a multi-platform image).
    pub digest: Digest,
}

/// Why an import failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The file could not be read.
    #[error("reading {}", path.display())]
    Read {
        /// The tarball.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// A blob could not be stored (or did not match its digest).
    #[error("importing {}: blob {name}", path.display())]
    Blob {
        /// The tarball.
        path: PathBuf,
        /// The entry's name in the tarball.
        name: String,
        /// Why.
        #[source]
        source: blobs::Error,
    },
    /// The tarball is neither image layout, or its index or a manifest is malformed or
    /// incomplete.
    #[error("importing {}: {message}", path.display())]
    Layout {
        /// The tarball.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
}

/// Imports the tarball at `path` into `blobs`, returning the images it holds.
pub fn import(blobs: &Blobs, path: &Path) -> Result<Vec<Imported>, Error> {
    let read = |source| Error::Read {
        path: path.to_owned(),
        source,
    };
    let layout = |message: String| Error::Layout {
        path: path.to_owned(),
        message,
    };
    let file = File::open(path).map_err(read)?;
    let mut archive = tar::Archive::new(decompressed(BufReader::new(file)).map_err(read)?);
    let mut index: Option<Vec<u8>> = None;
    let mut has_layout_marker = false;
    let mut docker_manifest: Option<Vec<u8>> = None;
    // Files of the docker-save layout, stored under the digest they hash to.
    let mut loose: HashMap<String, (Digest, u64)> = HashMap::new();
    for entry in archive.entries().map_err(read)? {
        let mut entry = entry.map_err(read)?;
        if !entry.header().entry_type().is_file() {
            continue;
        }
        let name = entry.path().map_err(read)?.to_string_lossy().into_owned();
        let name = name.trim_start_matches("./").to_owned();
        let blob_err = |source| Error::Blob {
            path: path.to_owned(),
            name: name.clone(),
            source,
        };
        let mut whole = || -> Result<Vec<u8>, Error> {
            let mut bytes = Vec::new();
            entry.read_to_end(&mut bytes).map_err(read)?;
            Ok(bytes)
        };
        if name == "index.json" {
            index = Some(whole()?);
        } else if name == "oci-layout" {
            has_layout_marker = true;
        } else if name == "manifest.json" {
            docker_manifest = Some(whole()?);
        } else if is_docker_save_file(&name) {
            let stored = blobs.put_unnamed(&mut entry).map_err(blob_err)?;
            loose.insert(name, stored);
        } else if let Some(hex) = name.strip_prefix("blobs/sha256/") {
            let digest: Digest = format!("sha256:{hex}").parse().map_err(blob_err)?;
            blobs.put(&digest, &mut entry).map_err(blob_err)?;
        }
    }
    let Some(index) = index.filter(|_| has_layout_marker) else {
        let Some(manifest) = docker_manifest else {
            return Err(layout(
                "not an image tarball: neither an OCI image layout (oci-layout, index.json) nor docker save's (manifest.json)".into(),
            ));
        };
        return from_docker_save(blobs, &manifest, &loose).map_err(layout);
    };
    let index: ImageIndex = serde_json::from_slice(&index)
        .map_err(|e| layout(format!("index.json is not an OCI image index: {e}")))?;
    let mut out = Vec::new();
    for d in index.manifests() {
        let digest: Digest = d
            .digest()
            .to_string()
            .parse()
            .map_err(|e| layout(format!("index.json: {e}")))?;
        check_complete(blobs, d.media_type(), &digest).map_err(layout)?;
        let annotations = d.annotations().as_ref();
        let name = annotations
            .and_then(|a| a.get(CONTAINERD_NAME).or_else(|| a.get(OCI_REF_NAME)))
            .cloned();
        out.push(Imported { name, digest });
    }
    if out.is_empty() {
        return Err(layout("index.json lists no image".into()));
    }
    Ok(out)
}

/// Whether a file of a docker-save tarball is an image config or a layer.
fn is_docker_save_file(name: &str) -> bool {
    (name.ends_with(".json") && !name.contains('/')) || name.ends_with("/layer.tar")
}

/// Writes an OCI manifest for each image of a docker-save `manifest.json`, whose
/// configs and layers are in `loose` (by their path in the tarball).
fn from_docker_save(
    blobs: &Blobs,
    manifest: &[u8],
    loose: &HashMap<String, (Digest, u64)>,
) -> Result<Vec<Imported>, String> {
    #[derive(serde::Deserialize)]
    #[serde(rename_all = "PascalCase")]
    struct Saved {
        config: String,
        #[serde(default)]
        repo_tags: Option<Vec<String>>,
        layers: Vec<String>,
    }
    let saved: Vec<Saved> = serde_json::from_slice(manifest)
        .map_err(|e| format!("manifest.json is not docker save's: {e}"))?;
    let find = |what: &str, file: &str| {
        loose
            .get(file)
            .cloned()
            .ok_or_else(|| format!("the image is incomplete: {what} {file} is missing"))
    };
    let mut out = Vec::new();
    for image in saved {
        let (config, config_size) = find("its config", &image.config)?;
        let layers = image
            .layers
            .iter()
            .map(|l| {
                let (d, size) = find("layer", l)?;
                Ok(
                    serde_json::json!({"mediaType": "application/vnd.oci.image.layer.v1.tar",
                    "digest": d.to_string(), "size": size}),
                )
            })
            .collect::<Result<Vec<_>, String>>()?;
        let manifest = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                       "digest": config.to_string(), "size": config_size},
            "layers": layers,
        });
        let bytes = serde_json::to_vec(&manifest).map_err(|e| e.to_string())?;
        let digest = blobs
            .put_bytes(&bytes)
            .map_err(|e| format!("storing the manifest: {e}"))?;
        let tags = image.repo_tags.unwrap_or_default();
        let names: Vec<Option<String>> = if tags.is_empty() {
            vec![None]
        } else {
            tags.into_iter().map(Some).collect()
        };
        for name in names {
            out.push(Imported {
                name,
                digest: digest.clone(),
            });
        }
    }
    if out.is_empty() {
        return Err("manifest.json lists no image".into());
    }
    Ok(out)
}

/// Checks that the manifest (or index) `digest` and every blob it references are
/// stored.
fn check_complete(blobs: &Blobs, media_type: &MediaType, digest: &Digest) -> Result<(), String> {
    let bytes = blobs
        .read(digest)
        .map_err(|_| format!("the image {digest} is incomplete: its manifest is missing"))?;
    let missing =
        |what: &str, d: &str| format!("the image {digest} is incomplete: {what} {d} is missing");
    match media_type {
        MediaType::ImageIndex => {
            let index: ImageIndex = serde_json::from_slice(&bytes)
                .map_err(|e| format!("{digest} is not an OCI image index: {e}"))?;
            for m in index.manifests() {
                let d: Digest = m.digest().to_string().parse().map_err(|e| format!("{e}"))?;
                check_complete(blobs, m.media_type(), &d)?;
            }
        }
        _ => {
            let manifest: ImageManifest = serde_json::from_slice(&bytes)
                .map_err(|e| format!("{digest} is not an OCI image manifest: {e}"))?;
            let config = manifest.config().digest().to_string();
            let present = |d: &str| d.parse::<Digest>().is_ok_and(|d| blobs.contains(&d));
            if !present(&config) {
                return Err(missing("its config", &config));
            }
            for layer in manifest.layers() {
                let d = layer.digest().to_string();
                if !present(&d) {
                    return Err(missing("layer", &d));
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::io::Write;

    /// An OCI layout tarball of one image with one layer, as (tar bytes, manifest).
    fn layout(name: &str, tamper: bool, leave_out_layer: bool) -> (Vec<u8>, Digest) {
        let mut layer = tar::Builder::new(Vec::new());
        let text = b"hello from a layer\n";
        let mut h = tar::Header::new_gnu();
        h.set_size(text.len() as u64);
        h.set_mode(0o644);
        layer
            .append_data(&mut h, "etc/motd", &text[..])
            .expect("layer entry");
        let layer = layer.into_inner().expect("layer");
        let config = json!({"architecture": "amd64", "os": "linux",
            "rootfs": {"type": "layers", "diff_ids": [Digest::of(&layer).to_string()]},
            "config": {"Cmd": ["/bin/sh"]}})
        .to_string()
        .into_bytes();
        let manifest = json!({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": Digest::of(&config).to_string(), "size": config.len()},
            "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": Digest::of(&layer).to_string(), "size": layer.len()}]})
        .to_string()
        .into_bytes();
        let manifest_digest = Digest::of(&manifest);
        let index = json!({"schemaVersion": 2, "manifests": [{
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": manifest_digest.to_string(), "size": manifest.len(),
            "annotations": {CONTAINERD_NAME: name, OCI_REF_NAME: "latest"}}]})
        .to_string()
        .into_bytes();
        let mut out = tar::Builder::new(Vec::new());
        let mut add = |path: &str, bytes: &[u8]| {
            let mut h = tar::Header::new_gnu();
            h.set_size(bytes.len() as u64);
            h.set_mode(0o644);
            out.append_data(&mut h, path, bytes).expect("entry");
        };
        add("oci-layout", br#"{"imageLayoutVersion": "1.0.0"}"#);
        add("index.json", &index);
        let blob = |bytes: &[u8], add: &mut dyn FnMut(&str, &[u8])| {
            let path = format!("blobs/sha256/{}", Digest::of(bytes).hex());
            if tamper && bytes == layer.as_slice() {
                add(&path, b"not the layer");
            } else {
                add(&path, bytes);
            }
        };
        blob(&config, &mut add);
        blob(&manifest, &mut add);
        if !leave_out_layer {
            blob(&layer, &mut add);
        }
        (out.into_inner().expect("tar"), manifest_digest)
    }

    fn store() -> (tempfile::TempDir, Blobs) {
        let dir = tempfile::tempdir().expect("tempdir");
        let blobs = Blobs::open(dir.path().join("blobs")).expect("blobs");
        (dir, blobs)
    }

    #[test]
    fn plain_gzip_and_zstd_layouts_import_with_their_names() {
        let name = "docker.io/library/motd:latest";
        let (tar, manifest) = layout(name, false, false);
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(&tar).expect("gzip");
        let gz = gz.finish().expect("gzip");
        let zst = zstd::encode_all(tar.as_slice(), 3).expect("zstd");
        for (suffix, bytes) in [("tar", tar.clone()), ("tar.gz", gz), ("tar.zst", zst)] {
            let (dir, blobs) = store();
            let file = dir.path().join(format!("image.{suffix}"));
            std::fs::write(&file, &bytes).expect("write");
            let images = import(&blobs, &file).unwrap_or_else(|e| panic!("{suffix}: {e}"));
            assert_eq!(
                images,
                vec![Imported {
                    name: Some(name.into()),
                    digest: manifest.clone()
                }],
                "{suffix}"
            );
            assert_eq!(blobs.list().expect("list").len(), 3, "{suffix}");
        }
    }

    #[test]
    fn a_damaged_or_incomplete_tarball_names_no_image() {
        let (dir, blobs) = store();
        let file = dir.path().join("bad.tar");
        std::fs::write(&file, layout("x", true, false).0).expect("write");
        let err = import(&blobs, &file).unwrap_err();
        assert!(
            matches!(
                &err,
                Error::Blob {
                    source: blobs::Error::Mismatch { .. },
                    ..
                }
            ),
            "{err}"
        );

        std::fs::write(&file, layout("x", false, true).0).expect("write");
        let err = import(&blobs, &file).unwrap_err().to_string();
        assert!(err.contains("is incomplete: layer sha256:"), "{err}");
    }

    #[test]
    fn docker_save_tarballs_get_an_oci_manifest() {
        let layer = b"pretend this is a layer tarball".to_vec();
        let config =
            br#"{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}"#
                .to_vec();
        let config_name = format!("{}.json", Digest::of(&config).hex());
        let saved = json!([{"Config": config_name, "RepoTags": ["busybox:latest", "busybox:1.36"],
                            "Layers": ["abc/layer.tar"]}])
        .to_string();
        let mut b = tar::Builder::new(Vec::new());
        let mut add = |path: &str, bytes: &[u8]| {
            let mut h = tar::Header::new_gnu();
            h.set_size(bytes.len() as u64);
            h.set_mode(0o644);
            b.append_data(&mut h, path, bytes).expect("entry");
        };
        add("abc/VERSION", b"1.0");
        add("abc/json", b"{}");
        add("abc/layer.tar", &layer);
        add(&config_name, &config);
        add("manifest.json", saved.as_bytes());
        add("repositories", b"{}");
        let (dir, blobs) = store();
        let file = dir.path().join("saved.tar");
        std::fs::write(&file, b.into_inner().expect("tar")).expect("write");
        let images = import(&blobs, &file).expect("import");
        let names: Vec<_> = images
            .iter()
            .map(|i| i.name.clone().unwrap_or_default())
            .collect();
        assert_eq!(names, ["busybox:latest", "busybox:1.36"]);
        assert_eq!(images[0].digest, images[1].digest);
        let manifest: ImageManifest =
            serde_json::from_slice(&blobs.read(&images[0].digest).expect("manifest")).expect("oci");
        assert_eq!(
            manifest.config().digest().to_string(),
            Digest::of(&config).to_string()
        );
        assert_eq!(
            manifest.layers()[0].digest().to_string(),
            Digest::of(&layer).to_string()
        );
        assert_eq!(manifest.layers()[0].size(), layer.len() as u64);
        // The layer, the config and the manifest; not VERSION, json or repositories.
        assert_eq!(blobs.list().expect("list").len(), 3);

        let missing = json!([{"Config": config_name, "Layers": ["zzz/layer.tar"]}]).to_string();
        let mut b = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_gnu();
        h.set_size(missing.len() as u64);
        b.append_data(&mut h, "manifest.json", missing.as_bytes())
            .expect("entry");
        let (_dir2, empty) = store();
        std::fs::write(&file, b.into_inner().expect("tar")).expect("write");
        let err = import(&empty, &file).unwrap_err().to_string();
        assert!(err.contains("is incomplete: its config"), "{err}");
    }

    #[test]
    fn what_is_not_an_image_tarball_is_refused_plainly() {
        let (dir, blobs) = store();
        let mut other = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_gnu();
        h.set_size(2);
        other
            .append_data(&mut h, "notes.txt", &b"hi"[..])
            .expect("entry");
        let file = dir.path().join("other.tar");
        std::fs::write(&file, other.into_inner().expect("tar")).expect("write");
        let err = import(&blobs, &file).unwrap_err().to_string();
        assert!(err.contains("not an image tarball"), "{err}");
        let missing = import(&blobs, &dir.path().join("nope.tar"))
            .unwrap_err()
            .to_string();
        assert!(missing.starts_with("reading "), "{missing}");
    }
}
