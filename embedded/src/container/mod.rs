//! The container runtime: libcontainer behind a per-container shim.
//!
//! - `spec.rs`: the OCI runtime spec from a [`ContainerConfig`];
//! - `seccomp.rs`: the seccomp filter a container runs under, and skiff's
//!   `RuntimeDefault` profile;
//! - `shim.rs`: the shim process (`skiff shim DIR`): mounts the root, runs the container,
//!   writes its CRI log, records its exit;
//! - `attach.rs`: the frames the shim speaks to attached clients (`kubectl attach`);
//! - `exec.rs`: a process run in a running container (`skiff container-exec`);
//! - `log.rs`: the CRI log format and its rotation;
//! - `runtime.rs`: [`Containers`], the agent's side: prepares a container's folder, starts
//!   its shim, reads its state, signals and removes it, and lists what is there after a
//!   restart;
//! - `cgroups.rs`: removing a pod's cgroup folders in every hierarchy;
//! - `sandbox.rs`: a pod's shared namespaces (network, IPC, UTS), bound to files so they
//!   outlive every process.
//!
//! A container's folder holds `config.json` (the OCI spec), `shim.json` (what the shim
//! needs), `meta.json` (the kubelet's labels), and what the shim writes: `state.json`
//! once the container runs, `exit.json` once it has exited.

pub mod attach;
pub mod cgroups;
pub mod exec;
pub mod log;
pub mod runtime;
pub mod sandbox;
pub mod seccomp;
pub mod shim;
pub mod spec;

pub use runtime::{Containers, Status};
pub use seccomp::Seccomp;
pub use spec::{ContainerConfig, Mount, Resources, Shared};

use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// The shim's instructions.
pub const SHIM_FILE: &str = "shim.json";
/// Written once the container runs.
pub const STATE_FILE: &str = "state.json";
/// Written once the container has exited.
pub const EXIT_FILE: &str = "exit.json";
/// The kubelet's labels of the container.
pub const META_FILE: &str = "meta.json";

/// What the shim needs besides the spec.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ShimConfig {
    /// The container id.
    pub id: String,
    /// The image's unpacked layers, base first.
    pub lowers: Vec<PathBuf>,
    /// The CRI log file.
    pub log_path: PathBuf,
    /// Rotate the log past this size.
    pub log_max_size: u64,
    /// Keep this many log files.
    pub log_max_files: usize,
    /// The container's cgroup path (where its OOM kills are counted).
    pub cgroups_path: String,
    /// The container runs on a terminal.
    #[serde(default)]
    pub tty: bool,
    /// The container has a stdin that attached clients write to.
    #[serde(default)]
    pub stdin: bool,
    /// Its stdin closes for good when the first client's input ends.
    #[serde(default)]
    pub stdin_once: bool,
}

/// A running container.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct State {
    /// Its init's pid (on the host).
    pub pid: i32,
    /// The shim's pid.
    pub shim_pid: i32,
    /// When it started (RFC 3339).
    pub started_at: String,
}

/// How a container ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Exit {
    /// Its exit code; 128 + the signal when a signal ended it.
    pub exit_code: i32,
    /// The signal that ended it.
    pub signal: Option<i32>,
    /// The kernel's OOM killer struck in its cgroup.
    pub oom_killed: bool,
    /// When it ended (RFC 3339).
    pub finished_at: String,
}

/// Writes `value` as JSON to `path` through a temporary file and a rename, so a reader
/// sees the whole file or none.
pub(crate) fn write_json<T: Serialize>(path: &Path, value: &T) -> std::io::Result<()> {
    let bytes = serde_json::to_vec(value).map_err(std::io::Error::other)?;
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    std::fs::write(&tmp, bytes)?;
    std::fs::rename(&tmp, path)
}

/// Reads a JSON file; `None` when it does not exist.
pub(crate) fn read_json<T: for<'de> Deserialize<'de>>(path: &Path) -> std::io::Result<Option<T>> {
    match std::fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// The pty master libcontainer sends over the console socket.
pub(crate) fn receive_fd(
    listener: &std::os::unix::net::UnixListener,
) -> Result<std::os::fd::OwnedFd, String> {
    use nix::sys::socket::{recvmsg, ControlMessageOwned, MsgFlags};
    use std::os::fd::{AsRawFd, FromRawFd};
    let (stream, _) = listener
        .accept()
        .map_err(|e| format!("the console socket: {e}"))?;
    let mut name = [0u8; 4096];
    let mut iov = [std::io::IoSliceMut::new(&mut name)];
    let mut space = nix::cmsg_space!([std::os::fd::RawFd; 1]);
    let msg = recvmsg::<()>(
        stream.as_raw_fd(),
        &mut iov,
        Some(&mut space),
        MsgFlags::empty(),
    )
    .map_err(|e| format!("receiving the terminal: {e}"))?;
    for cmsg in msg
        .cmsgs()
        .map_err(|e| format!("receiving the terminal: {e}"))?
    {
        if let ControlMessageOwned::ScmRights(fds) = cmsg {
            if let Some(fd) = fds.first() {
                #[allow(unsafe_code)]
                // SAFETY: SCM_RIGHTS just gave this process the descriptor; nothing
                // else owns it.
                return Ok(unsafe { std::os::fd::OwnedFd::from_raw_fd(*fd) });
            }
        }
    }
    Err("no terminal came over the console socket".into())
}
