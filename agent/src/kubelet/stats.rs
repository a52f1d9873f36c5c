//! Resource usage from the kernel: the node's from /proc, each pod's and container's
//! from its cgroup (v1's cpuacct and memory controllers, or v2's unified files), as the
//! node's API serves it: `/stats/summary` (the kubelet's Summary API, JSON) and
//! `/metrics/resource` (Prometheus text, what metrics-server scrapes).

use super::worker::labels;
use super::Kubelet;
use serde_json::{json, Value};
use skiff_embedded::container::cgroups;
use skiff_embedded::runtime::Status;
use std::collections::BTreeMap;
use std::path::PathBuf;

/// CPU time and memory of one cgroup or of the node.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    /// CPU time used, in nanoseconds.
    pub cpu_ns: Option<u64>,
    /// Memory in use, page cache included.
    pub memory_bytes: Option<u64>,
    /// Memory in use less inactive file pages (what eviction and `kubectl top` use).
    pub working_set_bytes: Option<u64>,
}

fn read_u64(path: PathBuf) -> Option<u64> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

fn stat_field(path: PathBuf, key: &str) -> Option<u64> {
    let text = std::fs::read_to_string(path).ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix(' '))
        .and_then(|v| v.trim().parse().ok())
}

/// The usage of the cgroup at `path` (relative to each hierarchy's root).
pub fn cgroup(path: &str) -> Usage {
    let rel = path.trim_start_matches('/');
    let mut u = Usage::default();
    for mount in cgroups::mounts() {
        let dir = mount.join(rel);
        if !dir.is_dir() {
            continue;
        }
        let name = mount
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        if name.split(',').any(|c| c == "cpuacct") {
            u.cpu_ns = u.cpu_ns.or(read_u64(dir.join("cpuacct.usage")));
        }
        if name == "memory" {
            let usage = read_u64(dir.join("memory.usage_in_bytes"));
            let inactive = stat_field(dir.join("memory.stat"), "total_inactive_file").unwrap_or(0);
            u.memory_bytes = u.memory_bytes.or(usage);
            u.working_set_bytes = u
                .working_set_bytes
                .or(usage.map(|b| b.saturating_sub(inactive)));
        }
        // cgroup v2: the unified files, where its controllers are enabled.
        if let Some(usec) = stat_field(dir.join("cpu.stat"), "usage_usec") {
            u.cpu_ns = u.cpu_ns.or(Some(usec * 1000));
        }
        if let Some(current) = read_u64(dir.join("memory.current")) {
            let inactive = stat_field(dir.join("memory.stat"), "inactive_file").unwrap_or(0);
            u.memory_bytes = u.memory_bytes.or(Some(current));
            u.working_set_bytes = u
                .working_set_bytes
                .or(Some(current.saturating_sub(inactive)));
        }
    }
    u
}

/// The node's usage, from /proc/stat and /proc/meminfo.
pub fn node() -> Usage {
    // Jiffies of every CPU's busy states; USER_HZ is 100 on Linux.
    let cpu_ns = std::fs::read_to_string("/proc/stat").ok().and_then(|s| {
        let line = s.lines().next()?;
        let f: Vec<u64> = line
            .split_whitespace()
            .skip(1)
            .filter_map(|v| v.parse().ok())
            .collect();
        // user nice system idle iowait irq softirq steal
        let busy =
            f.first()? + f.get(1)? + f.get(2)? + f.get(5)? + f.get(6)? + f.get(7).unwrap_or(&0);
        Some(busy * 10_000_000)
    });
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let kib = |key: &str| {
        meminfo
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .map(|k| k * 1024)
    };
    let (total, available) = (kib("MemTotal:"), kib("MemAvailable:"));
    let used = total.zip(available).map(|(t, a)| t.saturating_sub(a));
    Usage {
        cpu_ns,
        memory_bytes: used,
        working_set_bytes: used,
    }
}

/// A running container as the stats see it.
struct Running {
    namespace: String,
    pod: String,
    uid: String,
    container: String,
    usage: Usage,
    started_at: String,
}

fn running(k: &Kubelet) -> Vec<Running> {
    let mut out = Vec::new();
    for id in k.containers.list().unwrap_or_default() {
        let Ok(Some(Status::Running(state))) = k.containers.status(&id) else {
            continue;
        };
        let l = k.containers.labels(&id).unwrap_or_default();
        let get = |key: &str| l.get(key).cloned().unwrap_or_default();
        let uid = get(labels::POD_UID);
        out.push(Running {
            usage: cgroup(&format!("{}/{id}", super::pod_cgroup(&uid))),
            namespace: get(labels::POD_NAMESPACE),
            pod: get(labels::POD_NAME),
            container: get(labels::CONTAINER),
            uid,
            started_at: state.started_at,
        });
    }
    out
}

fn cpu_json(u: &Usage, time: &str) -> Value {
    json!({"time": time, "usageCoreNanoSeconds": u.cpu_ns})
}

fn memory_json(u: &Usage, time: &str) -> Value {
    json!({"time": time, "usageBytes": u.memory_bytes, "workingSetBytes": u.working_set_bytes})
}

/// The Summary API's answer (`/stats/summary`).
pub fn summary(k: &Kubelet) -> Value {
    let now = jiff::Timestamp::now().to_string();
    let n = node();
    let mut pods: BTreeMap<(String, String, String), Vec<Running>> = BTreeMap::new();
    for r in running(k) {
        pods.entry((r.namespace.clone(), r.pod.clone(), r.uid.clone()))
            .or_default()
            .push(r);
    }
    let pods: Vec<Value> = pods
        .into_iter()
        .map(|((namespace, name, uid), containers)| {
            let pod_usage = cgroup(&super::pod_cgroup(&uid));
            json!({
                "podRef": {"name": name, "namespace": namespace, "uid": uid},
                "startTime": containers.iter().map(|c| c.started_at.clone()).min(),
                "cpu": cpu_json(&pod_usage, &now),
                "memory": memory_json(&pod_usage, &now),
                "containers": containers.iter().map(|c| json!({
                    "name": c.container,
                    "startTime": c.started_at,
                    "cpu": cpu_json(&c.usage, &now),
                    "memory": memory_json(&c.usage, &now),
                })).collect::<Vec<_>>(),
            })
        })
        .collect();
    json!({
        "node": {
            "nodeName": k.node_name,
            "cpu": cpu_json(&n, &now),
            "memory": memory_json(&n, &now),
        },
        "pods": pods,
    })
}

/// The resource metrics in Prometheus's text format (`/metrics/resource`).
pub fn resource_metrics(k: &Kubelet) -> String {
    let ms = jiff::Timestamp::now().as_millisecond();
    let n = node();
    let mut out = String::new();
    let mut metric = |name: &str, help: &str, kind: &str, rows: Vec<(String, f64)>| {
        out.push_str(&format!("# HELP {name} {help}\n# TYPE {name} {kind}\n"));
        for (labels, v) in rows {
            out.push_str(&format!("{name}{labels} {v} {ms}\n"));
        }
    };
    let secs = |u: &Usage| u.cpu_ns.map(|n| n as f64 / 1e9);
    metric(
        "node_cpu_usage_seconds_total",
        "Cumulative cpu time consumed by the node in core-seconds",
        "counter",
        secs(&n)
            .map(|v| vec![(String::new(), v)])
            .unwrap_or_default(),
    );
    metric(
        "node_memory_working_set_bytes",
        "Current working set of the node in bytes",
        "gauge",
        n.working_set_bytes
            .map(|v| vec![(String::new(), v as f64)])
            .unwrap_or_default(),
    );
    let running = running(k);
    let label = |r: &Running| {
        format!(
            "{{container=\"{}\",namespace=\"{}\",pod=\"{}\"}}",
            r.container, r.namespace, r.pod
        )
    };
    metric(
        "container_cpu_usage_seconds_total",
        "Cumulative cpu time consumed by the container in core-seconds",
        "counter",
        running
            .iter()
            .filter_map(|r| secs(&r.usage).map(|v| (label(r), v)))
            .collect(),
    );
    metric(
        "container_memory_working_set_bytes",
        "Current working set of the container in bytes",
        "gauge",
        running
            .iter()
            .filter_map(|r| r.usage.working_set_bytes.map(|v| (label(r), v as f64)))
            .collect(),
    );
    out.push_str("# HELP scrape_error 1 if there was an error while getting container metrics, 0 otherwise\n# TYPE scrape_error gauge\nscrape_error 0\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_node_has_usage() {
        let n = node();
        assert!(n.cpu_ns.is_some_and(|c| c > 0));
        assert!(n.working_set_bytes.is_some_and(|m| m > 0));
        // A cgroup that does not exist has no usage, and no error.
        assert_eq!(cgroup("/skiff/no-such-pod"), Usage::default());
    }
}
