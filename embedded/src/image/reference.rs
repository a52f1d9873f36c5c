//! Image references, normalized as Docker and kubelets do: a name without a registry is
//! on `docker.io`, a one-part name there is under `library/`, and a reference without a
//! tag or digest means `:latest`. Parsing is oci-spec's (the distribution reference
//! grammar); this module fixes the spelling skiff stores and shows.

use oci_spec::distribution::{ParseError, Reference};

/// Why a reference was refused.
#[derive(Debug, thiserror::Error)]
#[error("invalid image reference {reference:?}: {source}")]
pub struct Error {
    reference: String,
    #[source]
    source: ParseError,
}

/// Parses `image` (as a pod's `image` field spells it) into its normalized reference.
pub fn normalize(image: &str) -> Result<Reference, Error> {
    image.parse::<Reference>().map_err(|source| Error {
        reference: image.to_owned(),
        source,
    })
}

/// The normalized reference as one string: `registry/repository[:tag][@digest]`.
pub fn canonical(r: &Reference) -> String {
    let mut out = format!("{}/{}", r.registry(), r.repository());
    if let Some(tag) = r.tag() {
        out.push(':');
        out.push_str(tag);
    }
    if let Some(digest) = r.digest() {
        out.push('@');
        out.push_str(digest);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn canon(image: &str) -> String {
        canonical(&normalize(image).unwrap_or_else(|e| panic!("{image}: {e}")))
    }

    const DIGEST: &str = "sha256:7d246653d0511db2a6b2e0436cfd0e52ac8c066000264b3ce63331ac66dca625";

    #[test]
    fn docker_hub_names_get_the_registry_library_and_latest() {
        assert_eq!(canon("busybox"), "docker.io/library/busybox:latest");
        assert_eq!(canon("busybox:1.36"), "docker.io/library/busybox:1.36");
        assert_eq!(canon("library/busybox"), "docker.io/library/busybox:latest");
        assert_eq!(
            canon("docker.io/busybox"),
            "docker.io/library/busybox:latest"
        );
        assert_eq!(
            canon("index.docker.io/busybox"),
            "docker.io/library/busybox:latest"
        );
        assert_eq!(canon("someone/tool:v2"), "docker.io/someone/tool:v2");
    }

    #[test]
    fn other_registries_keep_their_names() {
        assert_eq!(
            canon("localhost:5000/busybox"),
            "localhost:5000/busybox:latest"
        );
        assert_eq!(canon("127.0.0.1:5000/a/b:1"), "127.0.0.1:5000/a/b:1");
        assert_eq!(
            canon("registry.example/edge/app:3"),
            "registry.example/edge/app:3"
        );
    }

    #[test]
    fn digests_are_kept_and_need_no_tag() {
        assert_eq!(
            canon(&format!("busybox@{DIGEST}")),
            format!("docker.io/library/busybox@{DIGEST}")
        );
        assert_eq!(
            canon(&format!("busybox:1.36@{DIGEST}")),
            format!("docker.io/library/busybox:1.36@{DIGEST}")
        );
    }

    #[test]
    fn bad_references_are_refused_with_the_reference_named() {
        for bad in ["", "Busybox", "busybox:", "busybox@sha256:12", "a b"] {
            let err = normalize(bad).expect_err(bad).to_string();
            assert!(err.contains(&format!("{bad:?}")), "{err}");
        }
    }
}
