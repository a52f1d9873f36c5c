//! The OCI runtime spec (`config.json`) of one container, built from what the kubelet
//! decided ([`ContainerConfig`]). The spec is written as the JSON document it is and then
//! read back through oci-spec's types, so a field of the wrong shape fails here, before
//! anything is started.

use super::seccomp::{self, Seccomp};
use oci_spec::runtime::Spec;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use std::path::PathBuf;

/// Errors of building a spec.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The document did not fit oci-spec's types (a bug of ours, or a bad capability name).
    #[error("building the OCI runtime spec")]
    Spec(#[source] serde_json::Error),
}

/// The capabilities a container has unless told otherwise: containerd's default set,
/// which is what pods get on upstream Kubernetes.
pub const DEFAULT_CAPABILITIES: &[&str] = &[
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_FSETID",
    "CAP_FOWNER",
    "CAP_MKNOD",
    "CAP_NET_RAW",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETFCAP",
    "CAP_SETPCAP",
    "CAP_NET_BIND_SERVICE",
    "CAP_SYS_CHROOT",
    "CAP_KILL",
    "CAP_AUDIT_WRITE",
];

/// Every capability, for privileged containers, in the kernel's numbering (bit N of a
/// capability set is entry N).
const ALL_CAPABILITIES: &[&str] = &[
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_DAC_READ_SEARCH",
    "CAP_FOWNER",
    "CAP_FSETID",
    "CAP_KILL",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETPCAP",
    "CAP_LINUX_IMMUTABLE",
    "CAP_NET_BIND_SERVICE",
    "CAP_NET_BROADCAST",
    "CAP_NET_ADMIN",
    "CAP_NET_RAW",
    "CAP_IPC_LOCK",
    "CAP_IPC_OWNER",
    "CAP_SYS_MODULE",
    "CAP_SYS_RAWIO",
    "CAP_SYS_CHROOT",
    "CAP_SYS_PTRACE",
    "CAP_SYS_PACCT",
    "CAP_SYS_ADMIN",
    "CAP_SYS_BOOT",
    "CAP_SYS_NICE",
    "CAP_SYS_RESOURCE",
    "CAP_SYS_TIME",
    "CAP_SYS_TTY_CONFIG",
    "CAP_MKNOD",
    "CAP_LEASE",
    "CAP_AUDIT_WRITE",
    "CAP_AUDIT_CONTROL",
    "CAP_SETFCAP",
    "CAP_MAC_OVERRIDE",
    "CAP_MAC_ADMIN",
    "CAP_SYSLOG",
    "CAP_WAKE_ALARM",
    "CAP_BLOCK_SUSPEND",
    "CAP_AUDIT_READ",
    "CAP_PERFMON",
    "CAP_BPF",
    "CAP_CHECKPOINT_RESTORE",
];

/// A namespace the container shares with its pod, or with the host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Shared {
    /// The host's own (hostNetwork, hostIPC).
    Host,
    /// The pod's, bound at this path.
    Path(PathBuf),
}

/// A mount into the container.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Mount {
    /// Where it appears in the container.
    pub destination: String,
    /// The host path bound there.
    pub source: PathBuf,
    /// Read-only.
    pub read_only: bool,
}

/// cgroup limits, in the units of the kernel's files.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Resources {
    /// `cpu.shares` (from the CPU request; 2 when there is none, as the kubelet does).
    pub cpu_shares: Option<u64>,
    /// `cpu.cfs_quota_us` per `cpu_period` (from the CPU limit).
    pub cpu_quota: Option<i64>,
    /// `cpu.cfs_period_us`.
    pub cpu_period: Option<u64>,
    /// Memory limit in bytes.
    pub memory_limit: Option<i64>,
    /// Most processes.
    pub pids_limit: Option<i64>,
}

/// What a container is to run with; the kubelet derives it from the pod.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContainerConfig {
    /// The command: entrypoint and arguments, resolved.
    pub args: Vec<String>,
    /// `KEY=value` lines.
    pub env: Vec<String>,
    /// Working directory (absolute).
    pub cwd: String,
    /// User id.
    pub uid: u32,
    /// Group id.
    pub gid: u32,
    /// Supplementary groups (fsGroup, supplementalGroups).
    pub additional_gids: Vec<u32>,
    /// The hostname (the pod's name unless it shares the host's UTS namespace).
    pub hostname: String,
    /// Network namespace; `None` is the pod having none yet (a new one for the container).
    pub network: Option<Shared>,
    /// IPC namespace.
    pub ipc: Option<Shared>,
    /// UTS namespace.
    pub uts: Option<Shared>,
    /// Bind mounts: volumes, `/etc/hosts`, `/etc/resolv.conf`, the termination log.
    pub mounts: Vec<Mount>,
    /// The cgroup path, relative to each hierarchy's root.
    pub cgroups_path: String,
    /// cgroup limits.
    pub resources: Resources,
    /// Every capability, every device, no masked paths, no seccomp filter.
    pub privileged: bool,
    /// Capabilities to add (`NET_ADMIN` or `CAP_NET_ADMIN`).
    pub cap_add: Vec<String>,
    /// Capabilities to drop (`ALL` drops all defaults).
    pub cap_drop: Vec<String>,
    /// The root filesystem is mounted read-only.
    pub read_only_rootfs: bool,
    /// `no_new_privs` (allowPrivilegeEscalation: false).
    pub no_new_privileges: bool,
    /// A terminal instead of pipes.
    pub tty: bool,
    /// A stdin that attached clients write to (`stdin: true`); else `/dev/null`.
    pub stdin: bool,
    /// The stdin closes when the first attached client's input ends (`stdinOnce`).
    pub stdin_once: bool,
    /// The seccomp filter (none when privileged).
    pub seccomp: Seccomp,
}

fn cap_name(c: &str) -> String {
    let upper = c.to_ascii_uppercase();
    if upper.starts_with("CAP_") {
        upper
    } else {
        format!("CAP_{upper}")
    }
}

/// The capabilities after the defaults, drops and adds, in a stable order, within
/// `bounding` (bit N is capability number N, as in `/proc/self/status`'s `CapBnd`): a
/// container cannot have what the node's own processes may not, so a privileged one
/// gets every capability the node has, as containerd gives it.
pub fn capabilities(config: &ContainerConfig, bounding: u64) -> Vec<String> {
    let all = || -> Vec<String> {
        ALL_CAPABILITIES
            .iter()
            .enumerate()
            .filter(|(bit, _)| bounding & (1 << bit) != 0)
            .map(|(_, c)| c.to_string())
            .collect()
    };
    if config.privileged {
        return all();
    }
    let drop: Vec<String> = config.cap_drop.iter().map(|c| cap_name(c)).collect();
    let drop_all = drop.iter().any(|c| c == "CAP_ALL");
    let mut caps: Vec<String> = DEFAULT_CAPABILITIES
        .iter()
        .map(|c| c.to_string())
        .filter(|c| !drop_all && !drop.contains(c))
        .collect();
    for add in &config.cap_add {
        let add = cap_name(add);
        if add == "CAP_ALL" {
            return all();
        }
        if !caps.contains(&add) {
            caps.push(add);
        }
    }
    let bit = |c: &String| ALL_CAPABILITIES.iter().position(|a| a == c);
    caps.retain(|c| bit(c).is_none_or(|b| bounding & (1 << b) != 0));
    caps
}

/// This process's capability bounding set (`CapBnd` in `/proc/self/status`); every
/// capability when it cannot be read.
pub fn host_bounding_set() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find_map(|l| l.strip_prefix("CapBnd:"))
                .and_then(|hex| u64::from_str_radix(hex.trim(), 16).ok())
        })
        .unwrap_or(u64::MAX)
}

fn namespace(kind: &str, shared: &Option<Shared>) -> Option<Value> {
    match shared {
        Some(Shared::Host) => None,
        Some(Shared::Path(p)) => Some(json!({"type": kind, "path": p})),
        None => Some(json!({"type": kind})),
    }
}

/// The spec of a container whose root filesystem is `rootfs` (relative to the bundle).
pub fn build(config: &ContainerConfig) -> Result<Spec, Error> {
    let caps = capabilities(config, host_bounding_set());
    let mut namespaces = vec![json!({"type": "pid"}), json!({"type": "mount"})];
    namespaces.extend(namespace("network", &config.network));
    namespaces.extend(namespace("ipc", &config.ipc));
    namespaces.extend(namespace("uts", &config.uts));

    let sys_options = if config.privileged {
        json!(["nosuid", "noexec", "nodev"])
    } else {
        json!(["nosuid", "noexec", "nodev", "ro"])
    };
    let mut mounts = vec![
        json!({"destination": "/proc", "type": "proc", "source": "proc",
               "options": ["nosuid", "noexec", "nodev"]}),
        json!({"destination": "/dev", "type": "tmpfs", "source": "tmpfs",
               "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]}),
        json!({"destination": "/dev/pts", "type": "devpts", "source": "devpts",
               "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"]}),
        json!({"destination": "/dev/shm", "type": "tmpfs", "source": "shm",
               "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"]}),
        json!({"destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue",
               "options": ["nosuid", "noexec", "nodev"]}),
        json!({"destination": "/sys", "type": "sysfs", "source": "sysfs", "options": sys_options}),
    ];
    for m in &config.mounts {
        let mut options = vec!["rbind", "rprivate"];
        if m.read_only {
            options.push("ro");
        }
        mounts.push(json!({"destination": m.destination, "type": "bind",
                           "source": m.source, "options": options}));
    }

    let mut resources = serde_json::Map::new();
    let r = &config.resources;
    let mut cpu = serde_json::Map::new();
    if let Some(s) = r.cpu_shares {
        cpu.insert("shares".into(), json!(s));
    }
    if let Some(q) = r.cpu_quota {
        cpu.insert("quota".into(), json!(q));
    }
    if let Some(p) = r.cpu_period {
        cpu.insert("period".into(), json!(p));
    }
    if !cpu.is_empty() {
        resources.insert("cpu".into(), Value::Object(cpu));
    }
    if let Some(m) = r.memory_limit {
        // Swap equal to the limit: no swap on top of it, as the kubelet sets it.
        resources.insert("memory".into(), json!({"limit": m, "swap": m}));
    }
    if let Some(p) = r.pids_limit {
        resources.insert("pids".into(), json!({"limit": p}));
    }
    if config.privileged {
        resources.insert("devices".into(), json!([{"allow": true, "access": "rwm"}]));
    } else {
        resources.insert("devices".into(), json!([{"allow": false, "access": "rwm"}]));
    }

    let (masked, readonly) = if config.privileged {
        (json!([]), json!([]))
    } else {
        (
            json!([
                "/proc/acpi",
                "/proc/asound",
                "/proc/kcore",
                "/proc/keys",
                "/proc/latency_stats",
                "/proc/timer_list",
                "/proc/timer_stats",
                "/proc/sched_debug",
                "/proc/scsi",
                "/sys/firmware",
                "/sys/devices/virtual/powercap"
            ]),
            json!([
                "/proc/bus",
                "/proc/fs",
                "/proc/irq",
                "/proc/sys",
                "/proc/sysrq-trigger"
            ]),
        )
    };

    let filter = match &config.seccomp {
        _ if config.privileged => None,
        Seccomp::Unconfined => None,
        Seccomp::RuntimeDefault => Some(seccomp::runtime_default(&caps).map_err(Error::Spec)?),
        Seccomp::Localhost(profile) => Some((**profile).clone()),
    };

    let mut user = json!({"uid": config.uid, "gid": config.gid});
    if !config.additional_gids.is_empty() {
        user["additionalGids"] = json!(config.additional_gids);
    }
    let mut doc = json!({
        "ociVersion": "1.0.2",
        "root": {"path": "rootfs", "readonly": config.read_only_rootfs},
        "hostname": config.hostname,
        "process": {
            "terminal": config.tty,
            "user": user,
            "args": config.args,
            "env": config.env,
            "cwd": if config.cwd.is_empty() { "/" } else { &config.cwd },
            "capabilities": {
                "bounding": caps, "effective": caps, "permitted": caps,
            },
        },
        "mounts": mounts,
        "linux": {
            "cgroupsPath": config.cgroups_path,
            "namespaces": namespaces,
            "resources": resources,
            "maskedPaths": masked,
            "readonlyPaths": readonly,
        },
    });
    // Only ever `true` or absent: libcontainer 0.7 loads the seccomp filter before it
    // drops capabilities only when the field is absent; when it is there, even as
    // `false`, it loads it afterwards, which the kernel refuses without no_new_privs
    // or CAP_SYS_ADMIN.
    if config.no_new_privileges {
        doc["process"]["noNewPrivileges"] = json!(true);
    }
    if let Some(filter) = filter {
        let filter =
            serde_json::to_value(seccomp::for_libcontainer(filter)).map_err(Error::Spec)?;
        doc["linux"]["seccomp"] = filter;
    }
    serde_json::from_value(doc).map_err(Error::Spec)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> ContainerConfig {
        ContainerConfig {
            args: vec!["sh".into(), "-c".into(), "echo hi".into()],
            env: vec!["PATH=/bin".into()],
            cwd: "/".into(),
            hostname: "web".into(),
            network: Some(Shared::Path("/run/ns/net".into())),
            ipc: None,
            uts: Some(Shared::Host),
            cgroups_path: "/skiff/podx/c1".into(),
            resources: Resources {
                cpu_shares: Some(102),
                cpu_quota: Some(50_000),
                cpu_period: Some(100_000),
                memory_limit: Some(64 << 20),
                pids_limit: Some(100),
            },
            ..Default::default()
        }
    }

    #[test]
    fn namespaces_follow_the_pod() {
        let spec = build(&config()).unwrap();
        let v = serde_json::to_value(&spec).unwrap();
        let ns = v["linux"]["namespaces"].as_array().unwrap();
        let types: Vec<&str> = ns.iter().map(|n| n["type"].as_str().unwrap()).collect();
        assert_eq!(
            types,
            ["pid", "mount", "network", "ipc"],
            "uts is the host's"
        );
        assert_eq!(ns[2]["path"], "/run/ns/net");
        assert!(ns[3].get("path").is_none(), "a new ipc namespace");
    }

    #[test]
    fn resources_and_process() {
        let v = serde_json::to_value(build(&config()).unwrap()).unwrap();
        let r = &v["linux"]["resources"];
        assert_eq!(r["cpu"]["shares"], 102);
        assert_eq!(r["cpu"]["quota"], 50_000);
        assert_eq!(r["memory"]["limit"], 64 << 20);
        assert_eq!(r["pids"]["limit"], 100);
        assert_eq!(v["process"]["args"][2], "echo hi");
        assert_eq!(v["linux"]["cgroupsPath"], "/skiff/podx/c1");
        assert_eq!(v["root"]["path"], "rootfs");
    }

    #[test]
    fn seccomp_follows_the_config_and_privileged_has_none() {
        let seccomp = |c: &ContainerConfig| {
            serde_json::to_value(build(c).unwrap()).unwrap()["linux"]["seccomp"].clone()
        };
        let mut c = config();
        assert!(seccomp(&c).is_null(), "unconfined by default");
        c.seccomp = Seccomp::RuntimeDefault;
        let filter = seccomp(&c);
        assert_eq!(filter["defaultAction"], "SCMP_ACT_ALLOW");
        let denies = |f: &Value, name: &str| {
            f["syscalls"]
                .as_array()
                .unwrap()
                .iter()
                .any(|s| s["names"].as_array().unwrap().iter().any(|n| n == name))
        };
        assert!(denies(&filter, "unshare"));
        c.cap_add = vec!["SYS_ADMIN".into()];
        assert!(
            !denies(&seccomp(&c), "unshare"),
            "the profile follows the capabilities"
        );
        let local: oci_spec::runtime::LinuxSeccomp = serde_json::from_value(json!({
            "defaultAction": "SCMP_ACT_ALLOW",
            "syscalls": [{"names": ["mkdirat"], "action": "SCMP_ACT_ERRNO"}]
        }))
        .unwrap();
        c.seccomp = Seccomp::Localhost(Box::new(local));
        assert_eq!(seccomp(&c)["syscalls"][0]["names"][0], "mkdirat");
        c.privileged = true;
        assert!(seccomp(&c).is_null(), "privileged: no filter");
    }

    #[test]
    fn no_new_privileges_is_true_or_absent() {
        let mut c = config();
        let v = serde_json::to_value(build(&c).unwrap()).unwrap();
        assert!(
            v["process"].get("noNewPrivileges").is_none(),
            "absent, so seccomp loads before the capabilities go"
        );
        c.no_new_privileges = true;
        let v = serde_json::to_value(build(&c).unwrap()).unwrap();
        assert_eq!(v["process"]["noNewPrivileges"], true);
    }

    #[test]
    fn capabilities_add_and_drop() {
        let mut c = config();
        c.cap_drop = vec!["ALL".into()];
        c.cap_add = vec!["net_admin".into()];
        assert_eq!(capabilities(&c, u64::MAX), ["CAP_NET_ADMIN"]);
        c.cap_drop = vec!["CAP_CHOWN".into()];
        c.cap_add = vec![];
        let caps = capabilities(&c, u64::MAX);
        assert!(!caps.contains(&"CAP_CHOWN".to_string()));
        assert_eq!(caps.len(), DEFAULT_CAPABILITIES.len() - 1);
        c.privileged = true;
        assert!(capabilities(&c, u64::MAX).contains(&"CAP_SYS_ADMIN".to_string()));
        assert_eq!(capabilities(&c, u64::MAX).len(), ALL_CAPABILITIES.len());
    }

    #[test]
    fn capabilities_stay_within_the_bounding_set() {
        // A node without CAP_SYS_RESOURCE (bit 24), as some VMs and nested containers are.
        let bounding = 0x1ff_feff_ffff;
        let mut c = config();
        c.privileged = true;
        let caps = capabilities(&c, bounding);
        assert!(!caps.contains(&"CAP_SYS_RESOURCE".to_string()));
        assert!(caps.contains(&"CAP_SYS_ADMIN".to_string()));
        assert_eq!(caps.len(), ALL_CAPABILITIES.len() - 1);
        c.privileged = false;
        c.cap_add = vec!["SYS_RESOURCE".into(), "NET_ADMIN".into()];
        let caps = capabilities(&c, bounding);
        assert!(!caps.contains(&"CAP_SYS_RESOURCE".to_string()));
        assert!(caps.contains(&"CAP_NET_ADMIN".to_string()));
        // The table is in the kernel's numbering, which the bits index.
        assert_eq!(ALL_CAPABILITIES[24], "CAP_SYS_RESOURCE");
        assert_eq!(ALL_CAPABILITIES[40], "CAP_CHECKPOINT_RESTORE");
    }
}
