//! Image pulls against a real registry: Debian's `docker-registry` (the CNCF
//! distribution registry) on loopback, filled by `skopeo copy` from OCI archives built
//! here, pulled through a `registries.yaml` as K3s users write it.
//!
//! Both tools are required: a machine without them fails these tests, saying what to
//! install, rather than skipping them (CI installs them, see `.ci/run`).
//!
//! Nothing here reaches past loopback: every registries file turns the default endpoint
//! off, so a failing mirror never falls through to Docker Hub.

use serde_json::json;
use sha2::{Digest as _, Sha256};
use skiff_embedded::image::platform::Platform;
use skiff_embedded::image::{pull, Digest, ImageStore, Registries};
use std::io::Write as _;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// A `docker-registry` serving from a temporary directory, killed when dropped (also
/// when a test fails).
struct Registry {
    child: Child,
    port: u16,
    dir: tempfile::TempDir,
    https: bool,
}

impl Registry {
    /// Starts a registry on a free loopback port; with `tls`, over https with that
    /// certificate and key (PEM files).
    fn start(tls: Option<(&Path, &Path)>) -> Registry {
        let dir = tempfile::tempdir().expect("tempdir");
        let port = free_port();
        let mut config = format!(
            "version: 0.1\nlog:\n  level: warn\n  accesslog:\n    disabled: true\n\
             storage:\n  filesystem:\n    rootdirectory: {}\n\
             http:\n  addr: 127.0.0.1:{port}\n",
            dir.path().join("storage").display()
        );
        if let Some((cert, key)) = tls {
            config.push_str(&format!(
                "  tls:\n    certificate: {}\n    key: {}\n",
                cert.display(),
                key.display()
            ));
        }
        let config_path = dir.path().join("config.yml");
        std::fs::write(&config_path, config).expect("write registry config");
        let log = std::fs::File::create(dir.path().join("registry.log")).expect("registry log");
        let child = Command::new("docker-registry")
            .arg("serve")
            .arg(&config_path)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot start docker-registry ({e}); these tests need Debian's \
                     docker-registry package (apt-get install docker-registry)"
                )
            });
        let mut registry = Registry {
            child,
            port,
            dir,
            https: tls.is_some(),
        };
        registry.wait_ready();
        registry
    }

    fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("docker-registry exited ({status}): {}", self.log());
            }
            if std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "docker-registry did not listen on port {} within 20 s: {}",
                self.port,
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("registry.log")).unwrap_or_default()
    }

    fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    fn url(&self) -> String {
        let scheme = if self.https { "https" } else { "http" };
        format!("{scheme}://{}", self.host())
    }

    /// Pushes an OCI archive to `repository:tag` with skopeo, as it is (`--all`: an
    /// index with every platform's manifest; `--preserve-digests`: no recompression, so
    /// the registry serves the digests built here).
    fn push(&self, archive: &Path, repository_and_tag: &str) {
        let target = format!("docker://{}/{repository_and_tag}", self.host());
        let output = Command::new("skopeo")
            .args(["--insecure-policy", "copy", "--all", "--preserve-digests"])
            .arg("--dest-tls-verify=false")
            .arg(format!("oci-archive:{}", archive.display()))
            .arg(&target)
            .output()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot run skopeo ({e}); these tests need Debian's skopeo package \
                     (apt-get install skopeo)"
                )
            });
        assert!(
            output.status.success(),
            "skopeo copy to {target} failed: {}\nregistry log: {}",
            String::from_utf8_lossy(&output.stderr),
            self.log()
        );
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A loopback port nothing listens on (the listener is closed before it is used; the
/// kernel does not hand it out again at once).
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port()
}

fn sha256(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

/// One platform's build: its layer (one file, `etc/motd`, gzipped as registries
/// usually hold layers), config and manifest.
struct Build {
    layer: Vec<u8>,
    config: Vec<u8>,
    manifest: Vec<u8>,
}

fn build(motd: &str, os: &str, architecture: &str) -> Build {
    let mut layer = tar::Builder::new(Vec::new());
    let mut header = tar::Header::new_gnu();
    header.set_size(motd.len() as u64);
    header.set_mode(0o644);
    header.set_uid(0);
    header.set_gid(0);
    header.set_mtime(1_700_000_000);
    layer
        .append_data(&mut header, "etc/motd", motd.as_bytes())
        .expect("layer entry");
    let tar = layer.into_inner().expect("layer");
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(&tar).expect("gzip");
    let layer = gz.finish().expect("gzip");
    let config = json!({"architecture": architecture, "os": os,
        "rootfs": {"type": "layers", "diff_ids": [sha256(&tar)]},
        "config": {"Cmd": ["/bin/sh"]}})
    .to_string()
    .into_bytes();
    let manifest = json!({"schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                   "digest": sha256(&config), "size": config.len()},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                    "digest": sha256(&layer), "size": layer.len()}]})
    .to_string()
    .into_bytes();
    Build {
        layer,
        config,
        manifest,
    }
}

/// An OCI archive (what `skopeo copy oci-archive:` reads) whose `index.json` names
/// `top`, holding `blobs`.
fn archive(dir: &Path, file: &str, top: serde_json::Value, blobs: &[&[u8]]) -> PathBuf {
    let mut out = tar::Builder::new(Vec::new());
    let mut add = |path: &str, bytes: &[u8]| {
        let mut header = tar::Header::new_gnu();
        header.set_size(bytes.len() as u64);
        header.set_mode(0o644);
        out.append_data(&mut header, path, bytes).expect("entry");
    };
    add("oci-layout", br#"{"imageLayoutVersion": "1.0.0"}"#);
    let index = json!({"schemaVersion": 2, "manifests": [top]}).to_string();
    add("index.json", index.as_bytes());
    for blob in blobs {
        let digest = sha256(blob);
        let hex = digest.trim_start_matches("sha256:");
        add(&format!("blobs/sha256/{hex}"), blob);
    }
    let path = dir.join(file);
    std::fs::write(&path, out.into_inner().expect("tar")).expect("write archive");
    path
}

/// An archive of a single-platform image (the host's).
fn single(dir: &Path, motd: &str) -> (PathBuf, Build) {
    let host = Platform::host();
    let image = build(motd, &host.os, &host.architecture);
    let top = json!({"mediaType": "application/vnd.oci.image.manifest.v1+json",
        "digest": sha256(&image.manifest), "size": image.manifest.len()});
    let path = archive(
        dir,
        "single.tar",
        top,
        &[&image.layer, &image.config, &image.manifest],
    );
    (path, image)
}

fn registries(yaml: &str) -> Registries {
    Registries::parse(yaml)
        .expect("registries.yaml")
        // Loopback only: no test may fall through to a real registry.
        .with_default_endpoint(false)
}

fn open_store() -> (tempfile::TempDir, Mutex<ImageStore>) {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = ImageStore::open(&dir.path().join("images")).expect("store");
    (dir, Mutex::new(store))
}

fn lock(store: &Mutex<ImageStore>) -> std::sync::MutexGuard<'_, ImageStore> {
    store.lock().expect("store lock")
}

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

/// The file `etc/motd` of the image's single layer, unpacked.
fn motd_of(store: &Mutex<ImageStore>, name: &str) -> String {
    let store = lock(store);
    let image = store
        .resolve(name)
        .expect("resolve")
        .unwrap_or_else(|| panic!("{name} is not in the store"));
    let layers = store.layers(&image).expect("layers");
    assert_eq!(layers.len(), 1);
    std::fs::read_to_string(layers[0].join("etc/motd")).expect("motd")
}

#[tokio::test]
async fn a_mirrored_docker_hub_image_pulls_resolves_and_unpacks() {
    let work = tempfile::tempdir().expect("tempdir");
    let registry = Registry::start(None);
    let (archive, image) = single(work.path(), "pulled through a mirror\n");
    registry.push(&archive, "library/busybox:1");
    let registries = registries(&format!(
        "mirrors:\n  docker.io:\n    endpoint: [\"{}\"]\n",
        registry.url()
    ));
    let (_dir, store) = open_store();

    let name = pull(&store, "busybox:1", &registries, &[])
        .await
        .unwrap_or_else(|e| panic!("pull: {}", chain(&e)));
    assert_eq!(name, "docker.io/library/busybox:1");
    assert_eq!(
        motd_of(&store, "docker.io/library/busybox:1"),
        "pulled through a mirror\n"
    );
    let resolved = lock(&store)
        .resolve("busybox:1")
        .expect("resolve")
        .expect("pulled");
    assert_eq!(resolved.digest.to_string(), sha256(&image.manifest));
    assert_eq!(resolved.config_digest.to_string(), sha256(&image.config));
    assert_eq!(lock(&store).blobs().list().expect("blobs").len(), 3);

    // Pulled again: the same image, nothing fetched twice, nothing half-written left.
    let again = pull(&store, "docker.io/library/busybox:1", &registries, &[])
        .await
        .unwrap_or_else(|e| panic!("pull again: {}", chain(&e)));
    assert_eq!(again, name);
    assert_eq!(lock(&store).blobs().list().expect("blobs").len(), 3);

    // By digest too (the name then pins it).
    let pinned = format!("busybox@{}", sha256(&image.manifest));
    let name = pull(&store, &pinned, &registries, &[])
        .await
        .unwrap_or_else(|e| panic!("pull by digest: {}", chain(&e)));
    assert_eq!(
        name,
        format!("docker.io/library/busybox@{}", sha256(&image.manifest))
    );
}

#[tokio::test]
async fn a_missing_tag_is_not_found_naming_the_endpoint() {
    let work = tempfile::tempdir().expect("tempdir");
    let registry = Registry::start(None);
    registry.push(&single(work.path(), "one\n").0, "library/busybox:1");
    // A first mirror that is down, then the registry that answers.
    let down = format!("http://127.0.0.1:{}", free_port());
    let registries = registries(&format!(
        "mirrors:\n  docker.io:\n    endpoint: [\"{down}\", \"{}\"]\n",
        registry.url()
    ));
    let (_dir, store) = open_store();

    let err = pull(&store, "busybox:2", &registries, &[])
        .await
        .expect_err("no such tag");
    let message = chain(&err);
    assert!(err.is_not_found(), "{message}");
    assert!(!err.is_unauthorized() && !err.is_unreachable(), "{message}");
    assert!(
        message.contains(&format!(
            "manifest not found at {}/v2/library/busybox/manifests/2",
            registry.url()
        )),
        "{message}"
    );
    assert!(message.contains("MANIFEST_UNKNOWN"), "{message}");
    // The mirror that was down is reported too.
    assert!(
        message.contains(&format!("also tried: {down}/v2")),
        "{message}"
    );
    assert!(message.contains("is unreachable"), "{message}");
    assert!(lock(&store)
        .resolve("busybox:2")
        .expect("resolve")
        .is_none());

    // With nothing reachable at all, the pull says so.
    let nowhere = registries_for(&down);
    let err = pull(&store, "busybox:1", &nowhere, &[])
        .await
        .expect_err("unreachable");
    assert!(err.is_unreachable(), "{}", chain(&err));
}

fn registries_for(url: &str) -> Registries {
    registries(&format!(
        "mirrors:\n  docker.io:\n    endpoint: [\"{url}\"]\n"
    ))
}

#[tokio::test]
async fn a_rewrite_asks_the_mirror_for_another_repository() {
    let work = tempfile::tempdir().expect("tempdir");
    let registry = Registry::start(None);
    registry.push(
        &single(work.path(), "rewritten\n").0,
        "mirrored/hub/busybox:1",
    );
    let registries = registries(&format!(
        "mirrors:\n  docker.io:\n    endpoint: [\"{}\"]\n    rewrite:\n      \
         \"^library/(.*)\": \"mirrored/hub/$1\"\n",
        registry.url()
    ));
    let (_dir, store) = open_store();

    let name = pull(&store, "busybox:1", &registries, &[])
        .await
        .unwrap_or_else(|e| panic!("pull: {}", chain(&e)));
    // Stored under the name the pod gave, as K3s does.
    assert_eq!(name, "docker.io/library/busybox:1");
    assert_eq!(motd_of(&store, "busybox:1"), "rewritten\n");

    // Without the rewrite, the mirror has no such repository.
    let err = pull(&store, "busybox:1", &registries_for(&registry.url()), &[])
        .await
        .expect_err("not rewritten");
    assert!(err.is_not_found(), "{}", chain(&err));
}

#[tokio::test]
async fn a_multi_platform_image_pulls_only_this_nodes_build() {
    let work = tempfile::tempdir().expect("tempdir");
    let registry = Registry::start(None);
    let host = Platform::host();
    let other_arch = if host.architecture == "s390x" {
        "riscv64"
    } else {
        "s390x"
    };
    let ours = build("this node's build\n", &host.os, &host.architecture);
    let theirs = build("another platform's build\n", "linux", other_arch);
    let entry = |b: &Build, arch: &str| {
        json!({"mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": sha256(&b.manifest), "size": b.manifest.len(),
            "platform": {"os": "linux", "architecture": arch}})
    };
    let index = json!({"schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [entry(&theirs, other_arch), entry(&ours, &host.architecture)]})
    .to_string()
    .into_bytes();
    let top = json!({"mediaType": "application/vnd.oci.image.index.v1+json",
        "digest": sha256(&index), "size": index.len()});
    let blobs: Vec<&[u8]> = vec![
        &ours.layer,
        &ours.config,
        &ours.manifest,
        &theirs.layer,
        &theirs.config,
        &theirs.manifest,
        &index,
    ];
    let archive = archive(work.path(), "multi.tar", top, &blobs);
    registry.push(&archive, "library/busybox:multi");
    let (_dir, store) = open_store();

    pull(
        &store,
        "busybox:multi",
        &registries_for(&registry.url()),
        &[],
    )
    .await
    .unwrap_or_else(|e| panic!("pull: {}", chain(&e)));
    let image = lock(&store)
        .resolve("busybox:multi")
        .expect("resolve")
        .expect("pulled");
    // The name points at the index (the digest the registry knows the image by).
    assert_eq!(image.digest.to_string(), sha256(&index));
    assert_eq!(image.manifest.to_string(), sha256(&ours.manifest));
    assert_eq!(motd_of(&store, "busybox:multi"), "this node's build\n");
    let stored = lock(&store).blobs().list().expect("blobs");
    let theirs_layer: Digest = sha256(&theirs.layer).parse().expect("digest");
    assert!(
        !stored.contains(&theirs_layer),
        "another platform's layer was pulled"
    );
    assert_eq!(stored.len(), 4, "index, manifest, config, layer");
}

#[tokio::test]
async fn https_registries_need_their_ca_or_insecure_skip_verify() {
    let work = tempfile::tempdir().expect("tempdir");
    // A self-signed certificate for the loopback address.
    let params =
        rcgen::CertificateParams::new(vec!["127.0.0.1".to_owned(), "localhost".to_owned()])
            .expect("certificate params");
    let key = rcgen::KeyPair::generate().expect("key");
    let cert = params.self_signed(&key).expect("certificate");
    let (cert_path, key_path) = (work.path().join("cert.pem"), work.path().join("key.pem"));
    std::fs::write(&cert_path, cert.pem()).expect("write cert");
    std::fs::write(&key_path, key.serialize_pem()).expect("write key");
    let registry = Registry::start(Some((&cert_path, &key_path)));
    registry.push(&single(work.path(), "over https\n").0, "library/busybox:1");
    let host = registry.host();
    let (_dir, store) = open_store();

    // Not trusted: the TLS failure is reported as such, naming the endpoint.
    let err = pull(&store, "busybox:1", &registries_for(&registry.url()), &[])
        .await
        .expect_err("untrusted certificate");
    let message = chain(&err);
    assert!(err.is_unreachable(), "{message}");
    assert!(
        message.contains(&format!("https://{host}/v2/")),
        "{message}"
    );
    assert!(message.contains("certificate"), "{message}");

    // Trusted through ca_file.
    let with_ca = registries(&format!(
        "mirrors:\n  docker.io:\n    endpoint: [\"{}\"]\n\
         configs:\n  \"{host}\":\n    tls:\n      ca_file: {}\n",
        registry.url(),
        cert_path.display()
    ));
    pull(&store, "busybox:1", &with_ca, &[])
        .await
        .unwrap_or_else(|e| panic!("pull with ca_file: {}", chain(&e)));
    assert_eq!(motd_of(&store, "busybox:1"), "over https\n");

    // Or not verified at all; the scheme-less endpoint of a loopback host on a port
    // would be http, so it is written out.
    let (_dir2, store2) = open_store();
    let insecure = registries(&format!(
        "mirrors:\n  docker.io:\n    endpoint: [\"https://{host}\"]\n\
         configs:\n  \"{host}\":\n    tls:\n      insecure_skip_verify: true\n"
    ));
    pull(&store2, "busybox:1", &insecure, &[])
        .await
        .unwrap_or_else(|e| panic!("pull with insecure_skip_verify: {}", chain(&e)));
    assert_eq!(motd_of(&store2, "busybox:1"), "over https\n");

    // A ca_file that is not there is a TLS settings error, not a network one.
    let missing_ca = registries(&format!(
        "mirrors:\n  docker.io:\n    endpoint: [\"{}\"]\n\
         configs:\n  \"{host}\":\n    tls:\n      ca_file: /nonexistent/ca.pem\n",
        registry.url()
    ));
    let err = pull(&store, "busybox:1", &missing_ca, &[])
        .await
        .expect_err("missing ca_file");
    let message = chain(&err);
    assert!(message.contains("TLS settings for"), "{message}");
    assert!(message.contains("/nonexistent/ca.pem"), "{message}");
}
