//! Removing a pod's cgroup folders. libcontainer removes a container's own cgroup when
//! the container is deleted; the pod's folder above it (`/skiff/pod<uid>`) is the
//! kubelet's to remove once the pod is gone, in every hierarchy (cgroup v1 has one per
//! controller, v2 one in all).

use std::path::{Path, PathBuf};

/// The mount points of the cgroup hierarchies (v1 and v2), from `/proc/self/mountinfo`.
pub fn mounts() -> Vec<PathBuf> {
    let Ok(info) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for line in info.lines() {
        // "... mountpoint options - fstype source superoptions"
        let Some((left, right)) = line.split_once(" - ") else {
            continue;
        };
        let fstype = right.split(' ').next().unwrap_or_default();
        if fstype != "cgroup" && fstype != "cgroup2" {
            continue;
        }
        if let Some(point) = left.split(' ').nth(4) {
            out.push(PathBuf::from(point));
        }
    }
    out
}

/// Removes the cgroup `path` (relative to each hierarchy's root) and every cgroup below
/// it, in every hierarchy. A cgroup that still holds a process stays (with a warning).
pub fn remove(path: &str) {
    let rel = path.trim_start_matches('/');
    if rel.is_empty() || rel.split('/').any(|c| c == "..") {
        return;
    }
    for mount in mounts() {
        let dir = mount.join(rel);
        if dir.is_dir() {
            remove_tree(&dir);
        }
    }
}

/// cgroup folders are removed with rmdir, deepest first (their files cannot be deleted).
fn remove_tree(dir: &Path) {
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                remove_tree(&e.path());
            }
        }
    }
    if let Err(e) = std::fs::remove_dir(dir) {
        if e.kind() != std::io::ErrorKind::NotFound {
            tracing::warn!(cgroup = %dir.display(), error = %e, "removing a cgroup");
        }
    }
}
