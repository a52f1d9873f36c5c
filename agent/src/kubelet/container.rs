//! A pod's container as the runtime runs it: command, environment, user, mounts and
//! cgroup limits, decided from the pod, the container and the image, as the kubelet and
//! containerd decide them between them. Pure: the caller brings every input.

use k8s_openapi::api::core::v1::{Container, Pod};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use oci_spec::image::ImageConfiguration;
use skiff_embedded::container::{ContainerConfig, Mount, Resources, Seccomp, Shared};
use std::collections::BTreeMap;
use std::path::PathBuf;

/// Why a container's config cannot be made (`CreateContainerConfigError`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ConfigError(pub String);

/// The pod-level inputs every container of the pod shares.
#[derive(Debug, Clone)]
pub struct PodContext {
    /// The pod's namespaces (`None` where the host's are shared).
    pub net: Option<PathBuf>,
    /// IPC namespace.
    pub ipc: PathBuf,
    /// UTS namespace.
    pub uts: Option<PathBuf>,
    /// `/etc/hosts`, `/etc/hostname`, `/etc/resolv.conf` made for the pod.
    pub etc_files: Vec<(String, PathBuf)>,
    /// Host folders of the pod's volumes by volume name.
    pub volumes: BTreeMap<String, PathBuf>,
    /// The pod's cgroup path (the containers' are below it).
    pub cgroup_parent: String,
    /// Values of downward-API fields (`metadata.name`, `status.podIP`, ...).
    pub fields: BTreeMap<String, String>,
    /// Variables from ConfigMaps and Secrets, already looked up, by `env` entry name.
    pub env_from_refs: BTreeMap<String, String>,
    /// Variables from `envFrom` sources, already looked up, in order.
    pub env_from: Vec<(String, String)>,
    /// The Services' variables (`KUBERNETES_SERVICE_HOST`, ...), below everything else.
    pub service_env: Vec<(String, String)>,
    /// The container's seccomp filter, its Localhost profile already read
    /// ([`super::seccomp::resolve`]).
    pub seccomp: Seccomp,
}

/// The milli-CPUs of a quantity (`500m`, `2`, `1.5`).
pub fn millicpu(q: &Quantity) -> Option<i64> {
    let s = q.0.trim();
    if let Some(m) = s.strip_suffix('m') {
        return m.parse().ok();
    }
    s.parse::<f64>().ok().map(|c| (c * 1000.0).ceil() as i64)
}

/// The bytes of a quantity (`64Mi`, `1G`, `128974848`, `129e6`).
pub fn bytes(q: &Quantity) -> Option<i64> {
    let s = q.0.trim();
    let suffixes: [(&str, f64); 12] = [
        ("Ki", 1024.0),
        ("Mi", 1024f64.powi(2)),
        ("Gi", 1024f64.powi(3)),
        ("Ti", 1024f64.powi(4)),
        ("Pi", 1024f64.powi(5)),
        ("Ei", 1024f64.powi(6)),
        ("k", 1e3),
        ("M", 1e6),
        ("G", 1e9),
        ("T", 1e12),
        ("P", 1e15),
        ("E", 1e18),
    ];
    for (suffix, factor) in suffixes {
        if let Some(n) = s.strip_suffix(suffix) {
            return n.parse::<f64>().ok().map(|n| (n * factor).ceil() as i64);
        }
    }
    if let Some(m) = s.strip_suffix('m') {
        return m.parse::<f64>().ok().map(|n| (n / 1000.0).ceil() as i64);
    }
    s.parse::<f64>().ok().map(|n| n.ceil() as i64)
}

/// cgroup limits from the container's requests and limits, as the kubelet converts them.
pub fn resources(container: &Container) -> Resources {
    let req = container
        .resources
        .as_ref()
        .and_then(|r| r.requests.as_ref());
    let lim = container.resources.as_ref().and_then(|r| r.limits.as_ref());
    // A limit without a request means the request equals the limit.
    let cpu_request = req
        .and_then(|r| r.get("cpu"))
        .or_else(|| lim.and_then(|l| l.get("cpu")))
        .and_then(millicpu);
    let cpu_limit = lim.and_then(|l| l.get("cpu")).and_then(millicpu);
    const PERIOD: i64 = 100_000;
    Resources {
        // 1024 shares per CPU, at least 2 (the kernel's minimum), as the kubelet.
        cpu_shares: Some(cpu_request.map_or(2, |m| ((m * 1024) / 1000).max(2)) as u64),
        cpu_quota: cpu_limit.map(|m| ((m * PERIOD) / 1000).max(1000)),
        cpu_period: cpu_limit.map(|_| PERIOD as u64),
        memory_limit: lim.and_then(|l| l.get("memory")).and_then(bytes),
        pids_limit: None,
    }
}

/// The command: the container's `command` replaces the image's entrypoint (and then the
/// image's cmd is dropped); its `args` replace the image's cmd.
pub fn command(
    container: &Container,
    image: &ImageConfiguration,
) -> Result<Vec<String>, ConfigError> {
    let config = image.config().as_ref();
    let entrypoint = config
        .and_then(|c| c.entrypoint().clone())
        .unwrap_or_default();
    let cmd = config.and_then(|c| c.cmd().clone()).unwrap_or_default();
    let mut argv = match &container.command {
        Some(c) if !c.is_empty() => c.clone(),
        _ => entrypoint,
    };
    match &container.args {
        Some(a) if !a.is_empty() => argv.extend(a.iter().cloned()),
        _ if container.command.as_ref().is_some_and(|c| !c.is_empty()) => {}
        _ => argv.extend(cmd),
    }
    if argv.is_empty() {
        return Err(ConfigError(
            "no command specified: the image has no entrypoint or cmd and the container sets none"
                .into(),
        ));
    }
    Ok(argv)
}

/// `$(VAR)` references expanded from `env` as upstream does; `$$(VAR)` escapes.
pub fn expand(s: &str, env: &[(String, String)]) -> String {
    let mut out = String::new();
    let mut rest = s;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        if let Some(stripped) = after.strip_prefix('$') {
            out.push('$');
            rest = stripped;
        } else if let Some(inner) = after.strip_prefix('(') {
            match inner.find(')') {
                Some(end) => {
                    let name = &inner[..end];
                    match env.iter().rev().find(|(k, _)| k == name) {
                        Some((_, v)) => out.push_str(v),
                        None => {
                            out.push_str("$(");
                            out.push_str(name);
                            out.push(')');
                        }
                    }
                    rest = &inner[end + 1..];
                }
                None => {
                    out.push('$');
                    rest = after;
                }
            }
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    out
}

/// The container's environment: the image's, then `envFrom`, then `env` (later wins).
pub fn environment(
    container: &Container,
    image: &ImageConfiguration,
    ctx: &PodContext,
) -> Result<Vec<(String, String)>, ConfigError> {
    let mut env: Vec<(String, String)> = Vec::new();
    let set = |env: &mut Vec<(String, String)>, k: String, v: String| {
        env.retain(|(name, _)| *name != k);
        env.push((k, v));
    };
    for line in image
        .config()
        .as_ref()
        .and_then(|c| c.env().clone())
        .unwrap_or_default()
    {
        let (k, v) = line.split_once('=').unwrap_or((line.as_str(), ""));
        set(&mut env, k.to_string(), v.to_string());
    }
    for (k, v) in &ctx.service_env {
        set(&mut env, k.clone(), v.clone());
    }
    for (k, v) in &ctx.env_from {
        set(&mut env, k.clone(), v.clone());
    }
    for var in container.env.iter().flatten() {
        let value = if let Some(v) = &var.value {
            expand(v, &env)
        } else if let Some(from) = &var.value_from {
            if let Some(field) = &from.field_ref {
                ctx.fields.get(&field.field_path).cloned().ok_or_else(|| {
                    ConfigError(format!(
                        "unsupported fieldPath {:?} in env {}",
                        field.field_path, var.name
                    ))
                })?
            } else if let Some(res) = &from.resource_field_ref {
                resource_field(container, &res.resource).ok_or_else(|| {
                    ConfigError(format!(
                        "unsupported resource {:?} in env {}",
                        res.resource, var.name
                    ))
                })?
            } else {
                match ctx.env_from_refs.get(&var.name) {
                    Some(v) => v.clone(),
                    // An optional reference that found nothing sets nothing.
                    None => continue,
                }
            }
        } else {
            String::new()
        };
        set(&mut env, var.name.clone(), value);
    }
    Ok(env)
}

fn resource_field(container: &Container, resource: &str) -> Option<String> {
    let r = container.resources.as_ref();
    let (kind, name) = resource.split_once('.')?;
    let map = match kind {
        "limits" => r.and_then(|r| r.limits.as_ref()),
        "requests" => r.and_then(|r| r.requests.as_ref()),
        _ => return None,
    };
    let q = map.and_then(|m| m.get(name));
    Some(match (name, q) {
        ("cpu", Some(q)) => (millicpu(q)?.max(1) as f64 / 1000.0).ceil().to_string(),
        ("cpu", None) => "0".to_string(),
        (_, Some(q)) => bytes(q)?.to_string(),
        (_, None) => "0".to_string(),
    })
}

/// The uid and gid: the container's securityContext, else the pod's, else the image's
/// `User` (numeric `uid[:gid]`; a name is refused, as the rootfs is not read here).
fn user(
    pod: &Pod,
    container: &Container,
    image: &ImageConfiguration,
) -> Result<(u32, u32), ConfigError> {
    let pod_sc = pod.spec.as_ref().and_then(|s| s.security_context.as_ref());
    let sc = container.security_context.as_ref();
    let uid = sc
        .and_then(|s| s.run_as_user)
        .or(pod_sc.and_then(|s| s.run_as_user));
    let gid = sc
        .and_then(|s| s.run_as_group)
        .or(pod_sc.and_then(|s| s.run_as_group));
    let image_user = image
        .config()
        .as_ref()
        .and_then(|c| c.user().clone())
        .unwrap_or_default();
    let (image_uid, image_gid) = match image_user.split_once(':') {
        Some((u, g)) => (u.to_string(), Some(g.to_string())),
        None => (image_user.clone(), None),
    };
    let uid = match uid {
        Some(u) => u,
        None if image_uid.is_empty() => 0,
        None => image_uid.parse().map_err(|_| {
            ConfigError(format!(
                "image user {image_user:?} is a name; set runAsUser (names are not looked up yet)"
            ))
        })?,
    };
    let gid = match (gid, image_gid) {
        (Some(g), _) => g,
        (None, Some(g)) => g
            .parse()
            .map_err(|_| ConfigError(format!("image group {g:?} is a name; set runAsGroup")))?,
        (None, None) => 0,
    };
    let uid =
        u32::try_from(uid).map_err(|_| ConfigError(format!("runAsUser {uid} is out of range")))?;
    let gid =
        u32::try_from(gid).map_err(|_| ConfigError(format!("runAsGroup {gid} is out of range")))?;
    if sc
        .and_then(|s| s.run_as_non_root)
        .or(pod_sc.and_then(|s| s.run_as_non_root))
        == Some(true)
        && uid == 0
    {
        return Err(ConfigError(
            "container has runAsNonRoot and image will run as root".into(),
        ));
    }
    Ok((uid, gid))
}

/// The whole config of container `container` of `pod`, `id` being its runtime id.
pub fn config(
    pod: &Pod,
    container: &Container,
    image: &ImageConfiguration,
    ctx: &PodContext,
    id: &str,
) -> Result<ContainerConfig, ConfigError> {
    let env = environment(container, image, ctx)?;
    let args: Vec<String> = command(container, image)?
        .iter()
        .map(|a| expand(a, &env))
        .collect();
    let (uid, gid) = user(pod, container, image)?;
    let spec = pod.spec.as_ref();
    let pod_sc = spec.and_then(|s| s.security_context.as_ref());
    let sc = container.security_context.as_ref();
    let mut additional_gids: Vec<u32> = Vec::new();
    if let Some(g) = pod_sc.and_then(|s| s.fs_group) {
        additional_gids.extend(u32::try_from(g).ok());
    }
    for g in pod_sc
        .and_then(|s| s.supplemental_groups.clone())
        .unwrap_or_default()
    {
        additional_gids.extend(u32::try_from(g).ok());
    }
    let mut mounts = Vec::new();
    for m in container.volume_mounts.iter().flatten() {
        let source = ctx.volumes.get(&m.name).ok_or_else(|| {
            ConfigError(format!(
                "volume {:?} of mount {:?} is not defined",
                m.name, m.mount_path
            ))
        })?;
        let source = match &m.sub_path {
            Some(sub) if !sub.is_empty() => {
                if sub.starts_with('/') || sub.split('/').any(|c| c == "..") {
                    return Err(ConfigError(format!(
                        "subPath {sub:?} must be a relative path inside the volume"
                    )));
                }
                source.join(sub)
            }
            _ => source.clone(),
        };
        mounts.push(Mount {
            destination: m.mount_path.clone(),
            source,
            read_only: m.read_only.unwrap_or(false),
        });
    }
    for (dest, source) in &ctx.etc_files {
        if !mounts.iter().any(|m| &m.destination == dest) {
            mounts.push(Mount {
                destination: dest.clone(),
                source: source.clone(),
                read_only: false,
            });
        }
    }
    let caps = sc.and_then(|s| s.capabilities.as_ref());
    let working_dir = container
        .working_dir
        .clone()
        .filter(|w| !w.is_empty())
        .or_else(|| {
            image
                .config()
                .as_ref()
                .and_then(|c| c.working_dir().clone())
        })
        .filter(|w| !w.is_empty())
        .unwrap_or_else(|| "/".to_string());
    let hostname = pod.metadata.name.clone().unwrap_or_default();
    Ok(ContainerConfig {
        args,
        env: env.iter().map(|(k, v)| format!("{k}={v}")).collect(),
        cwd: working_dir,
        uid,
        gid,
        additional_gids,
        hostname: spec.and_then(|s| s.hostname.clone()).unwrap_or(hostname),
        network: Some(ctx.net.clone().map_or(Shared::Host, Shared::Path)),
        ipc: Some(if spec.and_then(|s| s.host_ipc) == Some(true) {
            Shared::Host
        } else {
            Shared::Path(ctx.ipc.clone())
        }),
        uts: Some(ctx.uts.clone().map_or(Shared::Host, Shared::Path)),
        mounts,
        cgroups_path: format!("{}/{id}", ctx.cgroup_parent),
        resources: resources(container),
        privileged: sc.and_then(|s| s.privileged) == Some(true),
        cap_add: caps.and_then(|c| c.add.clone()).unwrap_or_default(),
        cap_drop: caps.and_then(|c| c.drop.clone()).unwrap_or_default(),
        read_only_rootfs: sc.and_then(|s| s.read_only_root_filesystem) == Some(true),
        no_new_privileges: sc.and_then(|s| s.allow_privilege_escalation) == Some(false),
        tty: container.tty == Some(true),
        stdin: container.stdin == Some(true),
        stdin_once: container.stdin_once == Some(true),
        seccomp: ctx.seccomp.clone(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{EnvVar, ResourceRequirements};

    fn image(entrypoint: &[&str], cmd: &[&str], env: &[&str]) -> ImageConfiguration {
        serde_json::from_value(serde_json::json!({
            "architecture": "amd64", "os": "linux",
            "config": {"Entrypoint": entrypoint, "Cmd": cmd, "Env": env},
            "rootfs": {"type": "layers", "diff_ids": []}
        }))
        .unwrap()
    }

    fn container(v: serde_json::Value) -> Container {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn command_follows_docker_rules() {
        let img = image(&["/entry"], &["default"], &[]);
        let c = container(serde_json::json!({"name": "c"}));
        assert_eq!(command(&c, &img).unwrap(), ["/entry", "default"]);
        let c = container(serde_json::json!({"name": "c", "args": ["x"]}));
        assert_eq!(command(&c, &img).unwrap(), ["/entry", "x"]);
        let c = container(serde_json::json!({"name": "c", "command": ["sh"]}));
        assert_eq!(
            command(&c, &img).unwrap(),
            ["sh"],
            "command drops the image's cmd"
        );
        let c =
            container(serde_json::json!({"name": "c", "command": ["sh"], "args": ["-c", "true"]}));
        assert_eq!(command(&c, &img).unwrap(), ["sh", "-c", "true"]);
        let empty = image(&[], &[], &[]);
        assert!(command(&container(serde_json::json!({"name": "c"})), &empty).is_err());
    }

    #[test]
    fn env_expands_and_overrides() {
        let img = image(&[], &["sh"], &["PATH=/bin", "A=image"]);
        let mut c = container(serde_json::json!({"name": "c"}));
        c.env = Some(vec![
            EnvVar {
                name: "A".into(),
                value: Some("pod".into()),
                ..Default::default()
            },
            EnvVar {
                name: "B".into(),
                value: Some("$(A)-$$(A)-$(NONE)".into()),
                ..Default::default()
            },
        ]);
        let ctx = PodContext {
            net: None,
            ipc: "/x".into(),
            uts: None,
            etc_files: vec![],
            volumes: BTreeMap::new(),
            cgroup_parent: "/skiff/podx".into(),
            fields: BTreeMap::new(),
            env_from_refs: BTreeMap::new(),
            env_from: vec![],
            service_env: vec![("KUBERNETES_SERVICE_HOST".into(), "10.43.0.1".into())],
            seccomp: Seccomp::Unconfined,
        };
        let env = environment(&c, &img, &ctx).unwrap();
        assert_eq!(
            env,
            [
                ("PATH".to_string(), "/bin".to_string()),
                (
                    "KUBERNETES_SERVICE_HOST".to_string(),
                    "10.43.0.1".to_string()
                ),
                ("A".to_string(), "pod".to_string()),
                ("B".to_string(), "pod-$(A)-$(NONE)".to_string())
            ]
        );
    }

    #[test]
    fn resources_convert_as_the_kubelet() {
        let mut c = container(serde_json::json!({"name": "c"}));
        assert_eq!(resources(&c).cpu_shares, Some(2));
        c.resources = Some(ResourceRequirements {
            limits: Some(BTreeMap::from([
                ("cpu".to_string(), Quantity("500m".into())),
                ("memory".to_string(), Quantity("64Mi".into())),
            ])),
            ..Default::default()
        });
        let r = resources(&c);
        assert_eq!(r.cpu_shares, Some(512));
        assert_eq!(r.cpu_quota, Some(50_000));
        assert_eq!(r.memory_limit, Some(64 << 20));
        assert_eq!(bytes(&Quantity("1G".into())), Some(1_000_000_000));
        assert_eq!(millicpu(&Quantity("1.5".into())), Some(1500));
    }
}
