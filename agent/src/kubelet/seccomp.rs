//! A container's seccomp filter, as upstream's kubelet and containerd pick it: the
//! container's `securityContext.seccompProfile`, else the pod's; `RuntimeDefault` is the
//! runtime's default profile, `Localhost` a profile file in the node's profile folder
//! (`<data-dir>/agent/seccomp/`, upstream's `--seccomp-profile-root`), `Unconfined` or
//! none is no filter (unless the node runs with `--seccomp-default`); a privileged
//! container has no filter whatever it asks for.
//!
//! [`choice`] and [`localhost_path`] decide from the pod alone; [`resolve`] reads the
//! Localhost profile, and is what the pod worker calls.

use super::container::ConfigError;
use k8s_openapi::api::core::v1::{Container, Pod, SeccompProfile};
use oci_spec::runtime::{LinuxSeccomp, LinuxSeccompAction};
use skiff_embedded::container::Seccomp;
use std::path::{Component, Path, PathBuf};

/// The node's seccomp settings, the same for every pod.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NodeSeccomp {
    /// The kernel filters system calls; without that no container gets a filter.
    pub supported: bool,
    /// A container with no profile gets `RuntimeDefault` (`--seccomp-default`).
    pub default_runtime_default: bool,
}

/// The profile a container asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Choice {
    /// No filter.
    Unconfined,
    /// skiff's default profile.
    RuntimeDefault,
    /// The profile at this path below the node's profile folder.
    Localhost(String),
}

/// The profile container `container` of `pod` asked for: its own `seccompProfile`,
/// else the pod's, else `RuntimeDefault` with `--seccomp-default` and `Unconfined`
/// without; `Unconfined` for a privileged container.
pub fn choice(
    pod: &Pod,
    container: &Container,
    default_runtime_default: bool,
) -> Result<Choice, ConfigError> {
    let sc = container.security_context.as_ref();
    if sc.and_then(|s| s.privileged) == Some(true) {
        return Ok(Choice::Unconfined);
    }
    let pod_profile = pod
        .spec
        .as_ref()
        .and_then(|s| s.security_context.as_ref())
        .and_then(|s| s.seccomp_profile.as_ref());
    let profile: Option<&SeccompProfile> =
        sc.and_then(|s| s.seccomp_profile.as_ref()).or(pod_profile);
    let Some(profile) = profile else {
        return Ok(if default_runtime_default {
            Choice::RuntimeDefault
        } else {
            Choice::Unconfined
        });
    };
    match profile.type_.as_str() {
        "Unconfined" => Ok(Choice::Unconfined),
        "RuntimeDefault" => Ok(Choice::RuntimeDefault),
        "Localhost" => match profile.localhost_profile.as_deref() {
            Some(name) if !name.is_empty() => Ok(Choice::Localhost(name.to_string())),
            _ => Err(ConfigError(
                "seccompProfile type Localhost needs a localhostProfile".into(),
            )),
        },
        other => Err(ConfigError(format!(
            "seccompProfile type {other:?} is not one of Unconfined, RuntimeDefault, Localhost"
        ))),
    }
}

/// Where Localhost profile `name` is below `root`: a relative path that stays inside
/// it (no absolute path, no `..`), as the API's validation asks of `localhostProfile`.
pub fn localhost_path(root: &Path, name: &str) -> Result<PathBuf, ConfigError> {
    let relative = Path::new(name);
    let inside = relative
        .components()
        .all(|c| matches!(c, Component::Normal(_) | Component::CurDir));
    if name.is_empty() || !inside {
        return Err(ConfigError(format!(
            "localhostProfile {name:?} must be a relative path inside the node's seccomp folder, without \"..\""
        )));
    }
    Ok(root.join(relative))
}

/// Reads Localhost profile `name` at `path`: an OCI runtime spec `LinuxSeccomp`
/// document (`defaultAction`, `architectures`, `syscalls`).
pub fn load(path: &Path, name: &str) -> Result<LinuxSeccomp, ConfigError> {
    let what = || format!("localhost seccomp profile {name:?} ({})", path.display());
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(ConfigError(format!("{} not found", what())))
        }
        Err(e) => return Err(ConfigError(format!("reading {}: {e}", what()))),
    };
    let raw: serde_json::Value = serde_json::from_slice(&bytes)
        .map_err(|e| ConfigError(format!("{} is not JSON: {e}", what())))?;
    // Docker's profile format looks alike, but its conditions would be silently dropped
    // by the OCI types, widening or narrowing the filter: refuse it instead.
    let docker = raw.get("archMap").is_some()
        || raw["syscalls"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|s| s.get("includes").is_some() || s.get("excludes").is_some());
    if docker {
        return Err(ConfigError(format!(
            "{} is in Docker's profile format (archMap, includes, excludes); write it as an OCI LinuxSeccomp",
            what()
        )));
    }
    let profile: LinuxSeccomp = serde_json::from_value(raw).map_err(|e| {
        ConfigError(format!(
            "{} is not an OCI LinuxSeccomp profile: {e}",
            what()
        ))
    })?;
    let notify = profile.default_action() == LinuxSeccompAction::ScmpActNotify
        || profile
            .syscalls()
            .iter()
            .flatten()
            .any(|s| s.action() == LinuxSeccompAction::ScmpActNotify);
    if notify {
        return Err(ConfigError(format!(
            "{} uses SCMP_ACT_NOTIFY, which needs a seccomp agent that skiff does not run",
            what()
        )));
    }
    Ok(profile)
}

/// The filter container `container` of `pod` runs under on this node; Localhost
/// profiles are read from `root`. On a kernel without seccomp every container runs
/// without a filter (the kubelet warned at start).
pub fn resolve(
    pod: &Pod,
    container: &Container,
    node: NodeSeccomp,
    root: &Path,
) -> Result<Seccomp, ConfigError> {
    let choice = choice(pod, container, node.default_runtime_default)?;
    if !node.supported {
        return Ok(Seccomp::Unconfined);
    }
    Ok(match choice {
        Choice::Unconfined => Seccomp::Unconfined,
        Choice::RuntimeDefault => Seccomp::RuntimeDefault,
        Choice::Localhost(name) => {
            let path = localhost_path(root, &name)?;
            Seccomp::Localhost(Box::new(load(&path, &name)?))
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(
        pod_profile: Option<serde_json::Value>,
        container: serde_json::Value,
    ) -> (Pod, Container) {
        let mut spec = json!({"containers": [container]});
        if let Some(p) = pod_profile {
            spec["securityContext"] = json!({"seccompProfile": p});
        }
        let pod: Pod =
            serde_json::from_value(json!({"metadata": {"name": "p"}, "spec": spec})).unwrap();
        let c = pod.spec.as_ref().unwrap().containers[0].clone();
        (pod, c)
    }

    #[test]
    fn the_containers_profile_overrides_the_pods() {
        let (p, c) = pod(
            Some(json!({"type": "RuntimeDefault"})),
            json!({"name": "c"}),
        );
        assert_eq!(choice(&p, &c, false).unwrap(), Choice::RuntimeDefault);
        let (p, c) = pod(
            Some(json!({"type": "RuntimeDefault"})),
            json!({"name": "c", "securityContext": {"seccompProfile": {"type": "Unconfined"}}}),
        );
        assert_eq!(choice(&p, &c, false).unwrap(), Choice::Unconfined);
        let (p, c) = pod(
            None,
            json!({"name": "c", "securityContext": {"seccompProfile": {"type": "Localhost", "localhostProfile": "a/b.json"}}}),
        );
        assert_eq!(
            choice(&p, &c, false).unwrap(),
            Choice::Localhost("a/b.json".into())
        );
        let (p, c) = pod(
            None,
            json!({"name": "c", "securityContext": {"seccompProfile": {"type": "Localhost"}}}),
        );
        assert!(
            choice(&p, &c, false).is_err(),
            "Localhost without a profile"
        );
        let (p, c) = pod(Some(json!({"type": "Bogus"})), json!({"name": "c"}));
        assert!(choice(&p, &c, false).is_err());
    }

    #[test]
    fn unset_follows_seccomp_default_and_privileged_is_unconfined() {
        let (p, c) = pod(None, json!({"name": "c"}));
        assert_eq!(choice(&p, &c, false).unwrap(), Choice::Unconfined);
        assert_eq!(choice(&p, &c, true).unwrap(), Choice::RuntimeDefault);
        let (p, c) = pod(
            Some(json!({"type": "RuntimeDefault"})),
            json!({"name": "c", "securityContext": {"privileged": true}}),
        );
        assert_eq!(choice(&p, &c, true).unwrap(), Choice::Unconfined);
    }

    #[test]
    fn localhost_paths_stay_inside_the_folder() {
        let root = Path::new("/var/lib/skiff/agent/seccomp");
        assert_eq!(
            localhost_path(root, "profiles/deny.json").unwrap(),
            root.join("profiles/deny.json")
        );
        assert_eq!(
            localhost_path(root, "./x.json").unwrap(),
            root.join("x.json")
        );
        for bad in ["/etc/x.json", "../x.json", "a/../../x.json", "a/..", ""] {
            assert!(localhost_path(root, bad).is_err(), "{bad:?} is refused");
        }
    }

    #[test]
    fn localhost_profiles_are_read_and_checked() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        let write = |name: &str, v: serde_json::Value| {
            std::fs::write(root.join(name), v.to_string()).unwrap()
        };
        write(
            "good.json",
            json!({"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{"names": ["mkdirat"], "action": "SCMP_ACT_ERRNO"}]}),
        );
        write(
            "docker.json",
            json!({"defaultAction": "SCMP_ACT_ERRNO", "syscalls": [{"names": ["mount"], "action": "SCMP_ACT_ALLOW", "includes": {"caps": ["CAP_SYS_ADMIN"]}}]}),
        );
        write("notify.json", json!({"defaultAction": "SCMP_ACT_NOTIFY"}));
        write("shape.json", json!({"defaultAction": "SCMP_ACT_BOGUS"}));
        std::fs::write(root.join("text.json"), "not json").unwrap();
        let localhost = |name: &str| {
            let (p, c) = pod(
                Some(json!({"type": "Localhost", "localhostProfile": name})),
                json!({"name": "c"}),
            );
            resolve(
                &p,
                &c,
                NodeSeccomp {
                    supported: true,
                    default_runtime_default: false,
                },
                root,
            )
        };
        match localhost("good.json").unwrap() {
            Seccomp::Localhost(p) => {
                assert_eq!(p.syscalls().as_ref().unwrap()[0].names(), &["mkdirat"])
            }
            other => panic!("{other:?}"),
        }
        let err = localhost("missing.json").unwrap_err().0;
        assert!(
            err.contains("\"missing.json\"") && err.contains("not found"),
            "{err}"
        );
        for (bad, says) in [
            ("docker.json", "Docker's profile format"),
            ("notify.json", "SCMP_ACT_NOTIFY"),
            ("shape.json", "not an OCI LinuxSeccomp"),
            ("text.json", "not JSON"),
            ("../good.json", "without \"..\""),
        ] {
            let err = localhost(bad).unwrap_err().0;
            assert!(err.contains(says), "{bad}: {err}");
        }
        let (p, c) = pod(
            Some(json!({"type": "Localhost", "localhostProfile": "missing.json"})),
            json!({"name": "c"}),
        );
        assert_eq!(
            resolve(
                &p,
                &c,
                NodeSeccomp {
                    supported: false,
                    default_runtime_default: true
                },
                root
            )
            .unwrap(),
            Seccomp::Unconfined,
            "no seccomp in the kernel: no filter"
        );
    }
}
