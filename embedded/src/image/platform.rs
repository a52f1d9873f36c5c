//! Which manifest of a multi-platform image a node runs: the same OS and architecture,
//! and the best CPU variant the node can run (an ARMv7 board runs v7, then v6, then v5
//! images; arm64 without a variant is v8), as containerd's default matcher chooses.

use oci_spec::image::{Descriptor, ImageIndex};

/// A platform in OCI's (Go's) names: `linux`, `amd64`, `arm64`, `arm` + `v7`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Platform {
    /// `GOOS`.
    pub os: String,
    /// `GOARCH`.
    pub architecture: String,
    /// The CPU variant, if the architecture has them.
    pub variant: Option<String>,
}

impl Platform {
    /// The platform this binary was built for (32-bit ARM builds are taken as v7, the
    /// usual edge board).
    pub fn host() -> Platform {
        let (architecture, variant) = match std::env::consts::ARCH {
            "x86_64" => ("amd64", None),
            "aarch64" => ("arm64", Some("v8")),
            "arm" => ("arm", Some("v7")),
            "x86" => ("386", None),
            "powerpc64" if cfg!(target_endian = "little") => ("ppc64le", None),
            other => (other, None),
        };
        Platform {
            os: std::env::consts::OS.to_owned(),
            architecture: architecture.to_owned(),
            variant: variant.map(str::to_owned),
        }
    }

    /// The variants this platform runs, best first ("" stands for none given).
    fn runs(&self) -> Vec<&str> {
        match (self.architecture.as_str(), self.variant.as_deref()) {
            ("arm64", None | Some("v8")) => vec!["v8", ""],
            ("arm", Some("v7")) => vec!["v7", "v6", "v5", ""],
            ("arm", Some("v6")) => vec!["v6", "v5", ""],
            ("arm", Some("v5")) => vec!["v5", ""],
            (_, Some(v)) => vec![v, ""],
            (_, None) => vec![""],
        }
    }
}

/// The manifest in `index` for `platform`: the best variant it runs; a manifest that
/// names no platform only when none does. `None` when the image has no build for it.
pub fn choose<'a>(index: &'a ImageIndex, platform: &Platform) -> Option<&'a Descriptor> {
    let runs = platform.runs();
    let rank = |d: &Descriptor| -> Option<usize> {
        let Some(p) = d.platform() else {
            return Some(runs.len());
        };
        if p.os().to_string() != platform.os
            || p.architecture().to_string() != platform.architecture
        {
            return None;
        }
        let variant = p.variant().as_deref().unwrap_or("");
        runs.iter().position(|v| *v == variant)
    };
    index
        .manifests()
        .iter()
        .filter_map(|d| rank(d).map(|r| (r, d)))
        .min_by_key(|(r, _)| *r)
        .map(|(_, d)| d)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn index(platforms: &[(&str, &str, Option<&str>)]) -> ImageIndex {
        let manifests: Vec<_> = platforms
            .iter()
            .enumerate()
            .map(|(i, (os, arch, variant))| {
                let mut platform = json!({"os": os, "architecture": arch});
                if let Some(v) = variant {
                    platform["variant"] = json!(v);
                }
                json!({"mediaType": "application/vnd.oci.image.manifest.v1+json",
                       "digest": format!("sha256:{:064x}", i), "size": 1, "platform": platform})
            })
            .collect();
        serde_json::from_value(json!({"schemaVersion": 2, "manifests": manifests})).expect("index")
    }

    fn pick(index: &ImageIndex, arch: &str, variant: Option<&str>) -> Option<String> {
        let p = Platform {
            os: "linux".into(),
            architecture: arch.into(),
            variant: variant.map(str::to_owned),
        };
        choose(index, &p).map(|d| d.digest().to_string())
    }

    fn digest(i: usize) -> Option<String> {
        Some(format!("sha256:{i:064x}"))
    }

    #[test]
    fn the_node_gets_its_os_architecture_and_best_variant() {
        let multi = index(&[
            ("linux", "amd64", None),
            ("linux", "arm", Some("v6")),
            ("linux", "arm", Some("v7")),
            ("linux", "arm64", Some("v8")),
            ("windows", "amd64", None),
            ("unknown", "unknown", None),
        ]);
        assert_eq!(pick(&multi, "amd64", None), digest(0));
        assert_eq!(pick(&multi, "arm", Some("v7")), digest(2));
        assert_eq!(pick(&multi, "arm", Some("v6")), digest(1));
        assert_eq!(pick(&multi, "arm64", None), digest(3));
        assert_eq!(pick(&multi, "riscv64", None), None);
        // An arm64 build without a variant is v8; an ARMv7 board runs an ARMv6 build.
        let plain = index(&[("linux", "arm64", None), ("linux", "arm", Some("v6"))]);
        assert_eq!(pick(&plain, "arm64", Some("v8")), digest(0));
        assert_eq!(pick(&plain, "arm", Some("v7")), digest(1));
        assert_eq!(pick(&plain, "arm", Some("v5")), None);
    }

    #[test]
    fn the_host_platform_is_named_as_oci_names_it() {
        let host = Platform::host();
        assert_eq!(host.os, "linux");
        if cfg!(target_arch = "x86_64") {
            assert_eq!(host.architecture, "amd64");
        }
    }
}
