//! A pod's `fsGroup` on its volumes, as upstream's kubelet applies it
//! (`SetVolumeOwnership`) to the volumes it manages: emptyDir, configMap, secret,
//! downwardAPI, projected and claims, not hostPath. Every file and folder gets group
//! fsGroup (the owner stays); files gain owner and group read, and write too where the
//! containers write (emptyDir, claims); folders also gain owner and group search and
//! setgid, so whatever is created inside later inherits the group.
//!
//! `fsGroupChangePolicy: OnRootMismatch` skips the walk when the volume's root already
//! has the group, the mode bits and setgid; `Always`, the default, walks every time.
//!
//! The walk never follows a symlink, in the volume or into it: each entry is opened with
//! `O_PATH | O_NOFOLLOW` relative to its folder's descriptor and changed through that
//! descriptor. A container writing into the volume while the walk runs (replacing a
//! file with a symlink to a host file) cannot redirect a chown or chmod out of the
//! volume; a symlink itself only has its group changed.

use k8s_openapi::api::core::v1::Pod;
use rustix::fd::{AsFd, AsRawFd, OwnedFd};
use rustix::fs::{AtFlags, Dir, FileType, Gid, Mode, OFlags, CWD};
use std::io;
use std::path::Path;

/// Who writes a volume's files.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// The containers (emptyDir, claims): group read and write.
    ReadWrite,
    /// Only the kubelet (configMap, secret, downwardAPI, projected): group read.
    ReadOnly,
}

/// `fsGroupChangePolicy`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChangePolicy {
    /// Walk the whole volume every time (the default).
    Always,
    /// Walk only when the volume's root is not already right.
    OnRootMismatch,
}

impl ChangePolicy {
    /// The pod's `securityContext.fsGroupChangePolicy`.
    pub fn of(pod: &Pod) -> ChangePolicy {
        let policy = pod
            .spec
            .as_ref()
            .and_then(|s| s.security_context.as_ref())
            .and_then(|s| s.fs_group_change_policy.as_deref());
        match policy {
            Some("OnRootMismatch") => ChangePolicy::OnRootMismatch,
            _ => ChangePolicy::Always,
        }
    }
}

/// The pod's `securityContext.fsGroup`, if it has a usable one.
pub fn fs_group(pod: &Pod) -> Option<u32> {
    let group = pod
        .spec
        .as_ref()
        .and_then(|s| s.security_context.as_ref())
        .and_then(|s| s.fs_group)?;
    u32::try_from(group).ok().filter(|g| *g != u32::MAX)
}

const RW_MASK: u32 = 0o660;
const RO_MASK: u32 = 0o440;
const SEARCH_MASK: u32 = 0o110;
const SETGID: u32 = 0o2000;

/// The mode a file (or folder) with mode `mode` gets in a volume with an fsGroup.
pub fn mode_for(mode: u32, folder: bool, access: Access) -> u32 {
    let mut add = match access {
        Access::ReadWrite => RW_MASK,
        Access::ReadOnly => RO_MASK,
    };
    if folder {
        add |= SEARCH_MASK | SETGID;
    }
    mode | add
}

/// Gives the volume at `root` group `gid` as the module says.
pub fn set(root: &Path, gid: u32, access: Access, policy: ChangePolicy) -> io::Result<()> {
    if policy == ChangePolicy::OnRootMismatch && !root_mismatch(root, gid, access)? {
        return Ok(());
    }
    let gid = Gid::from_raw(gid);
    // The root is the kubelet's path (a pod folder, a PersistentVolume's path): it may
    // be a symlink an administrator made, so it is followed.
    let root = rustix::fs::openat(CWD, root, OFlags::PATH | OFlags::CLOEXEC, Mode::empty())?;
    if change(&root, gid, access)? != FileType::Directory {
        return Ok(());
    }
    let mut stack = vec![open_folder(&root)?];
    while let Some(folder) = stack.last_mut() {
        let Some(entry) = folder.next() else {
            stack.pop();
            continue;
        };
        let entry = entry?;
        let name = entry.file_name();
        if name == c"." || name == c".." {
            continue;
        }
        let flags = OFlags::PATH | OFlags::NOFOLLOW | OFlags::CLOEXEC;
        let fd = match rustix::fs::openat(folder.fd()?, name, flags, Mode::empty()) {
            Ok(fd) => fd,
            // Removed since the folder was read: nothing to change.
            Err(rustix::io::Errno::NOENT) => continue,
            Err(e) => return Err(e.into()),
        };
        if change(&fd, gid, access)? == FileType::Directory {
            let inner = open_folder(&fd)?;
            stack.push(inner);
        }
    }
    Ok(())
}

/// Whether the root lacks the group, the mode bits or setgid (upstream's
/// `requiresPermissionChange`); a root that is not a folder always needs the walk.
fn root_mismatch(root: &Path, gid: u32, access: Access) -> io::Result<bool> {
    let st = rustix::fs::stat(root)?;
    if st.st_gid != gid || FileType::from_raw_mode(st.st_mode) != FileType::Directory {
        return Ok(true);
    }
    let want = mode_for(0, true, access);
    Ok(st.st_mode & want != want)
}

fn open_folder(fd: &OwnedFd) -> io::Result<Dir> {
    let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC;
    let folder = rustix::fs::openat(fd, c".", flags, Mode::empty())?;
    Ok(Dir::new(folder)?)
}

/// Changes the file `fd` (opened `O_PATH`) refers to; returns its type.
fn change(fd: &OwnedFd, gid: Gid, access: Access) -> io::Result<FileType> {
    let st = rustix::fs::fstat(fd)?;
    let kind = FileType::from_raw_mode(st.st_mode);
    let chown = st.st_gid != gid.as_raw();
    if chown {
        rustix::fs::chownat(fd, c"", None, Some(gid), AtFlags::EMPTY_PATH)?;
    }
    if kind == FileType::Symlink {
        return Ok(kind);
    }
    let old = st.st_mode & 0o7777;
    let new = mode_for(old, kind == FileType::Directory, access);
    // A chown clears setuid and setgid on executables: set the whole mode again.
    if chown || new != old {
        // chmod has no "empty path" form before Linux 6.6: go through the descriptor's
        // /proc link, which names this very inode.
        let path = format!("/proc/self/fd/{}", fd.as_fd().as_raw_fd());
        rustix::fs::chmodat(CWD, path, Mode::from_raw_mode(new), AtFlags::empty())?;
    }
    Ok(kind)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::{MetadataExt, PermissionsExt};

    fn mode(p: &Path) -> u32 {
        std::fs::symlink_metadata(p).unwrap().mode() & 0o7777
    }

    fn gid(p: &Path) -> u32 {
        std::fs::symlink_metadata(p).unwrap().gid()
    }

    #[test]
    fn modes_follow_upstream() {
        assert_eq!(mode_for(0o644, false, Access::ReadOnly), 0o644);
        assert_eq!(mode_for(0o400, false, Access::ReadOnly), 0o440);
        assert_eq!(mode_for(0o600, false, Access::ReadWrite), 0o660);
        assert_eq!(mode_for(0o755, true, Access::ReadWrite), 0o2775);
        assert_eq!(mode_for(0o700, true, Access::ReadOnly), 0o2750);
    }

    /// Needs root (chown to another group), as the tests in CI run.
    #[test]
    fn the_walk_changes_the_volume_and_nothing_its_symlinks_point_at() {
        let dir = tempfile::tempdir().unwrap();
        let outside = dir.path().join("outside");
        std::fs::write(&outside, b"host").unwrap();
        std::fs::set_permissions(&outside, std::fs::Permissions::from_mode(0o600)).unwrap();
        let outside_dir = dir.path().join("outside-dir");
        std::fs::create_dir(&outside_dir).unwrap();
        let v = dir.path().join("vol");
        std::fs::create_dir_all(v.join("sub/deeper")).unwrap();
        std::fs::set_permissions(&v, std::fs::Permissions::from_mode(0o755)).unwrap();
        std::fs::write(v.join("sub/deeper/f"), b"x").unwrap();
        std::fs::set_permissions(
            v.join("sub/deeper/f"),
            std::fs::Permissions::from_mode(0o4700),
        )
        .unwrap();
        std::os::unix::fs::symlink(&outside, v.join("link")).unwrap();
        std::os::unix::fs::symlink(&outside_dir, v.join("sub/dirlink")).unwrap();

        set(&v, 2000, Access::ReadWrite, ChangePolicy::Always).unwrap();
        for p in [
            "",
            "sub",
            "sub/deeper",
            "sub/deeper/f",
            "link",
            "sub/dirlink",
        ] {
            assert_eq!(gid(&v.join(p)), 2000, "{p:?} has the group");
        }
        assert_eq!(mode(&v), 0o2775);
        assert_eq!(mode(&v.join("sub/deeper")), 0o2775);
        assert_eq!(
            mode(&v.join("sub/deeper/f")),
            0o4760,
            "setuid kept after the chown"
        );
        assert_eq!(gid(&outside), 0, "a symlink's target is not changed");
        assert_eq!(mode(&outside), 0o600);
        assert_eq!(gid(&outside_dir), 0, "nor walked into");

        // OnRootMismatch: a right root means no walk.
        std::fs::write(v.join("new"), b"y").unwrap();
        std::os::unix::fs::chown(v.join("new"), None, Some(0)).unwrap();
        set(&v, 2000, Access::ReadWrite, ChangePolicy::OnRootMismatch).unwrap();
        assert_eq!(gid(&v.join("new")), 0, "skipped: the root was right");
        set(&v, 2000, Access::ReadWrite, ChangePolicy::Always).unwrap();
        assert_eq!(gid(&v.join("new")), 2000, "Always walks");
        std::os::unix::fs::chown(&v, None, Some(0)).unwrap();
        std::os::unix::fs::chown(v.join("new"), None, Some(0)).unwrap();
        set(&v, 2000, Access::ReadWrite, ChangePolicy::OnRootMismatch).unwrap();
        assert_eq!(gid(&v.join("new")), 2000, "a wrong root means the walk");
    }

    #[test]
    fn fs_group_and_policy_from_the_pod() {
        let pod: Pod = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "p"},
            "spec": {"containers": [], "securityContext": {"fsGroup": 2000, "fsGroupChangePolicy": "OnRootMismatch"}}
        }))
        .unwrap();
        assert_eq!(fs_group(&pod), Some(2000));
        assert_eq!(ChangePolicy::of(&pod), ChangePolicy::OnRootMismatch);
        assert_eq!(fs_group(&Pod::default()), None);
        assert_eq!(ChangePolicy::of(&Pod::default()), ChangePolicy::Always);
    }
}
