//! The agent's side of containers: each lives in its own folder under the runtime's root,
//! run by its own shim. Nothing here forks inside the agent except the shim's own
//! `exec`, so the agent may be multi-threaded.

use super::spec::{self, ContainerConfig};
use super::{
    read_json, write_json, Exit, ShimConfig, State, EXIT_FILE, META_FILE, SHIM_FILE, STATE_FILE,
};
use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, BufReader};

/// How long a shim may take to report that its container runs.
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// Errors of the runtime.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A file of the container's folder could not be read or written.
    #[error("{what} of container {id}")]
    Io {
        /// The container.
        id: String,
        /// What was being done.
        what: &'static str,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// The spec could not be built.
    #[error("the spec of container {id}")]
    Spec {
        /// The container.
        id: String,
        /// The cause.
        #[source]
        source: spec::Error,
    },
    /// The container could not be created or started; the message is the shim's.
    #[error("{0}")]
    Start(String),
}

type Result<T, E = Error> = std::result::Result<T, E>;

/// What the runtime knows of a container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Status {
    /// Its shim runs and so does it.
    Running(State),
    /// It ran and ended.
    Exited(State, Exit),
    /// It never ran, or its shim died without saying how it ended.
    Failed(String),
}

/// The containers of one node.
#[derive(Debug, Clone)]
pub struct Containers {
    root: PathBuf,
    shim_exe: PathBuf,
}

/// What a new container is made of.
#[derive(Debug, Clone)]
pub struct NewContainer<'a> {
    /// Its id (letters, digits, `-`, `_`, `.`).
    pub id: &'a str,
    /// What to run.
    pub config: &'a ContainerConfig,
    /// The image's unpacked layers, base first.
    pub lowers: Vec<PathBuf>,
    /// Its CRI log.
    pub log_path: PathBuf,
    /// The kubelet's labels, kept beside it.
    pub labels: &'a BTreeMap<String, String>,
}

impl Containers {
    /// The containers under `root`, whose shims are `shim_exe shim DIR`.
    pub fn new(root: impl Into<PathBuf>, shim_exe: impl Into<PathBuf>) -> Containers {
        Containers {
            root: root.into(),
            shim_exe: shim_exe.into(),
        }
    }

    /// The folder of container `id`.
    pub fn dir(&self, id: &str) -> PathBuf {
        self.root.join(id)
    }

    /// Writes the container's folder and starts its shim; returns once the container
    /// runs, or with the reason it could not start.
    pub async fn start(&self, new: NewContainer<'_>) -> Result<State> {
        let id = new.id.to_string();
        let dir = self.dir(&id);
        let io = |what| {
            let id = id.clone();
            move |source| Error::Io { id, what, source }
        };
        std::fs::create_dir_all(&dir).map_err(io("creating the folder"))?;
        let spec = spec::build(new.config).map_err(|source| Error::Spec {
            id: id.clone(),
            source,
        })?;
        write_json(&dir.join("config.json"), &spec).map_err(io("writing config.json"))?;
        let shim = ShimConfig {
            id: id.clone(),
            lowers: new.lowers,
            log_path: new.log_path,
            log_max_size: 10 << 20,
            log_max_files: 5,
            cgroups_path: new.config.cgroups_path.clone(),
            tty: new.config.tty,
            stdin: new.config.stdin,
            stdin_once: new.config.stdin_once,
        };
        write_json(&dir.join(SHIM_FILE), &shim).map_err(io("writing shim.json"))?;
        write_json(&dir.join(META_FILE), new.labels).map_err(io("writing meta.json"))?;
        // The shim logs to shim.log itself; its stderr catches what comes before that.
        let shim_log =
            std::fs::File::create(dir.join("shim.err")).map_err(io("creating shim.err"))?;

        let mut child = tokio::process::Command::new(&self.shim_exe)
            .arg("shim")
            .arg(&dir)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(shim_log)
            .env(
                "SKIFF_LOG",
                "warn,libcgroups=error,libcontainer::process::init::process=error",
            )
            .kill_on_drop(false)
            .spawn()
            .map_err(io("starting the shim"))?;
        let stdout = child
            .stdout
            .take()
            .ok_or_else(|| Error::Start("the shim has no stdout".into()))?;
        let mut line = String::new();
        let read =
            tokio::time::timeout(START_TIMEOUT, BufReader::new(stdout).read_line(&mut line)).await;
        // The shim lives on after this; tokio reaps it when it exits.
        drop(child);
        match read {
            Err(_) => return Err(Error::Start("the shim did not report within 60 s".into())),
            Ok(Err(e)) => return Err(io("reading the shim's report")(e)),
            Ok(Ok(_)) => {}
        }
        let line = line.trim();
        if let Some(message) = line.strip_prefix("error ") {
            return Err(Error::Start(message.to_string()));
        }
        if !line.starts_with("ok ") {
            let log = std::fs::read_to_string(dir.join("shim.log")).unwrap_or_default();
            return Err(Error::Start(format!(
                "the shim ended without starting the container: {}",
                log.lines().last().unwrap_or("no message")
            )));
        }
        read_json::<State>(&dir.join(STATE_FILE))
            .map_err(io("reading state.json"))?
            .ok_or_else(|| Error::Start("the shim reported no state".into()))
    }

    /// The container's status now; `None` when there is no such container.
    pub fn status(&self, id: &str) -> Result<Option<Status>> {
        let dir = self.dir(id);
        if !dir.exists() {
            return Ok(None);
        }
        let io = |what| {
            let id = id.to_string();
            move |source| Error::Io { id, what, source }
        };
        let state = read_json::<State>(&dir.join(STATE_FILE)).map_err(io("reading state.json"))?;
        let exit = read_json::<Exit>(&dir.join(EXIT_FILE)).map_err(io("reading exit.json"))?;
        Ok(Some(match (state, exit) {
            (Some(s), Some(e)) => Status::Exited(s, e),
            (Some(s), None) if shim_alive(s.shim_pid, &dir) => Status::Running(s),
            (Some(_), None) => Status::Failed("the container's shim died".into()),
            (None, _) if self.shim_of(&dir).is_some() => {
                // Still starting (its shim runs but has not written its state yet).
                return Ok(None);
            }
            (None, _) => Status::Failed("the container never started".into()),
        }))
    }

    /// The pid of a shim still starting the container in `dir`, found in /proc.
    fn shim_of(&self, dir: &Path) -> Option<i32> {
        let proc = std::fs::read_dir("/proc").ok()?;
        proc.filter_map(|e| e.ok())
            .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
            .find(|pid| shim_alive(*pid, dir))
    }

    /// The kubelet's labels of a container.
    pub fn labels(&self, id: &str) -> Result<BTreeMap<String, String>> {
        read_json(&self.dir(id).join(META_FILE))
            .map_err(|source| Error::Io {
                id: id.to_string(),
                what: "reading meta.json",
                source,
            })
            .map(Option::unwrap_or_default)
    }

    /// Every container folder's id.
    pub fn list(&self) -> Result<Vec<String>> {
        let entries = match std::fs::read_dir(&self.root) {
            Ok(e) => e,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(source) => {
                return Err(Error::Io {
                    id: String::new(),
                    what: "listing the containers",
                    source,
                })
            }
        };
        let mut ids: Vec<String> = entries
            .filter_map(|e| e.ok())
            .filter(|e| e.path().is_dir())
            .filter_map(|e| e.file_name().into_string().ok())
            .collect();
        ids.sort();
        Ok(ids)
    }

    /// Sends `signal` to the container's init, if it still runs.
    pub fn signal(&self, id: &str, signal: rustix::process::Signal) -> Result<()> {
        if let Some(Status::Running(state)) = self.status(id)? {
            if let Some(pid) = rustix::process::Pid::from_raw(state.pid) {
                match rustix::process::kill_process(pid, signal) {
                    Ok(()) | Err(rustix::io::Errno::SRCH) => {}
                    Err(e) => {
                        return Err(Error::Io {
                            id: id.to_string(),
                            what: "signalling",
                            source: e.into(),
                        })
                    }
                }
            }
        }
        Ok(())
    }

    /// Waits until the container's shim has exited (it has recorded the exit by then).
    pub async fn wait(&self, id: &str) -> Result<()> {
        let Some(Status::Running(state)) = self.status(id)? else {
            return Ok(());
        };
        let Some(pid) = rustix::process::Pid::from_raw(state.shim_pid) else {
            return Ok(());
        };
        let fd = match rustix::process::pidfd_open(pid, rustix::process::PidfdFlags::NONBLOCK) {
            Ok(fd) => fd,
            Err(rustix::io::Errno::SRCH) => return Ok(()),
            Err(e) => {
                return Err(Error::Io {
                    id: id.to_string(),
                    what: "opening a pidfd of the shim",
                    source: e.into(),
                })
            }
        };
        // The shim may have exited, and its pid been reused, before the pidfd opened.
        if !shim_alive(state.shim_pid, &self.dir(id)) {
            return Ok(());
        }
        let fd = watch_pidfd(fd).map_err(|source| Error::Io {
            id: id.to_string(),
            what: "watching the shim",
            source,
        })?;
        let _ready = fd.readable().await.map_err(|source| Error::Io {
            id: id.to_string(),
            what: "watching the shim",
            source,
        })?;
        Ok(())
    }

    /// A connection to the running container `id`'s own stdio, speaking the frames of
    /// [`super::attach`].
    pub async fn attach(&self, id: &str) -> Result<tokio::net::UnixStream> {
        let io = |what| {
            let id = id.to_string();
            move |source| Error::Io { id, what, source }
        };
        let dir = std::fs::File::open(self.dir(id)).map_err(io("opening the folder"))?;
        tokio::net::UnixStream::connect(super::attach::short_path(&dir, super::attach::SOCKET))
            .await
            .map_err(io("connecting to the attach socket"))
    }

    /// The command that runs `args` in the running container `id` (see `exec.rs`), on
    /// a terminal with `tty`; the caller sets its stdio and waits for it. Its exit code is the process's.
    pub fn exec_command(&self, id: &str, args: &[String], tty: bool) -> tokio::process::Command {
        let mut cmd = tokio::process::Command::new(&self.shim_exe);
        cmd.arg("container-exec")
            .arg(self.dir(id))
            .args(tty.then_some("--tty"))
            .arg("--")
            .args(args)
            .env("SKIFF_LOG", "error")
            .kill_on_drop(true);
        cmd
    }

    /// Kills every container and its shim at once (SIGKILL), then unmounts their roots
    /// and removes their cgroups; the folders stay, so a restarted node sees them as
    /// ended. Returns how many were running.
    pub fn kill_all(&self) -> Result<usize> {
        use rustix::process::{kill_process, Pid, Signal};
        let mut pids = Vec::new();
        let ids = self.list()?;
        for id in &ids {
            let dir = self.dir(id);
            match self.status(id) {
                Ok(Some(Status::Running(s))) => pids.extend([s.pid, s.shim_pid]),
                Ok(None) => pids.extend(self.shim_of(&dir)),
                _ => {}
            }
        }
        for pid in &pids {
            if let Some(p) = Pid::from_raw(*pid) {
                let _ = kill_process(p, Signal::KILL);
            }
        }
        // Killed processes leave /proc once reaped; give them a moment.
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while pids
            .iter()
            .any(|p| std::path::Path::new(&format!("/proc/{p}")).exists())
            && std::time::Instant::now() < deadline
        {
            std::thread::sleep(Duration::from_millis(20));
        }
        for id in &ids {
            let dir = self.dir(id);
            let _ = rustix::mount::unmount(dir.join("rootfs"), rustix::mount::UnmountFlags::DETACH);
            if let Ok(Some(shim)) = read_json::<ShimConfig>(&dir.join(SHIM_FILE)) {
                super::cgroups::remove(&shim.cgroups_path);
            }
        }
        Ok(pids.len() / 2)
    }

    /// Removes an exited container's folder (its log stays).
    pub fn remove(&self, id: &str) -> Result<()> {
        let dir = self.dir(id);
        // The shim unmounts the root when the container ends; a shim killed before that
        // leaves it mounted.
        let _ = rustix::mount::unmount(dir.join("rootfs"), rustix::mount::UnmountFlags::DETACH);
        match std::fs::remove_dir_all(&dir) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(source) => Err(Error::Io {
                id: id.to_string(),
                what: "removing the folder",
                source,
            }),
        }
    }
}

/// Registers a pidfd with tokio's reactor: it turns readable when the process exits.
#[allow(unsafe_code)]
fn watch_pidfd(
    fd: rustix::fd::OwnedFd,
) -> io::Result<tokio::io::unix::AsyncFd<rustix::fd::OwnedFd>> {
    // SAFETY: the AsyncFd takes ownership of the descriptor, which nothing else holds,
    // so it can be neither closed nor replaced while registered.
    unsafe {
        tokio::io::unix::AsyncFd::register_with_interest(fd, tokio::io::Interest::READABLE)
            .map_err(|e| e.into_parts().1)
    }
}

/// Whether `pid` is a live shim of the container in `dir` (and not a reused pid).
fn shim_alive(pid: i32, dir: &Path) -> bool {
    let Ok(cmdline) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
        return false;
    };
    if let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // A zombie has exited already.
        if let Some(rest) = stat.rsplit_once(')') {
            if rest.1.trim_start().starts_with('Z') {
                return false;
            }
        }
    }
    let mut args = cmdline.split(|&b| b == 0);
    let _exe = args.next();
    args.next() == Some(b"shim".as_slice())
        && args.next() == Some(dir.as_os_str().as_encoded_bytes())
}
