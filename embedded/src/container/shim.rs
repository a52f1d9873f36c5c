//! The shim: one small process per container, the `skiff` binary re-executed
//! (`skiff shim DIR`), single-threaded because libcontainer forks.
//!
//! It mounts the container's overlay root, creates and starts the container through
//! libcontainer (whose init becomes the shim's own child, so the shim is the one that
//! reaps it), reports the init's pid on its stdout, then owns the container's stdout and
//! stderr: it writes them to the CRI log until the init exits. Then it records the exit
//! (code, signal, OOM kill) in `exit.json`, deletes the container (its cgroup) and
//! unmounts the root. It runs in its own session, so the agent can stop, restart or be
//! upgraded while containers keep running; the agent finds them again from the files in
//! the container's folder.

use super::log::{LogWriter, Stream};
use super::{Exit, ShimConfig, State, EXIT_FILE, SHIM_FILE, STATE_FILE};
use libcontainer::container::builder::ContainerBuilder;
use libcontainer::syscall::syscall::SyscallType;
use rustix::event::{poll, PollFd, PollFlags};
use rustix::fd::{AsFd, OwnedFd};
use rustix::process::{Pid, PidfdFlags, WaitOptions};
use std::io::{self, Read, Write};
use std::path::Path;

/// Errors of the shim; each ends the shim, after it says so on stdout or in `exit.json`.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A file of the container's folder could not be read or written.
    #[error("{what}")]
    Io {
        /// What was being done.
        what: String,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// `shim.json` does not parse.
    #[error("reading {SHIM_FILE}")]
    Config(#[source] serde_json::Error),
    /// libcontainer refused or failed.
    #[error("{what}")]
    Container {
        /// What was being done.
        what: &'static str,
        /// The cause.
        #[source]
        source: libcontainer::error::LibcontainerError,
    },
    /// A layer path cannot be given to overlayfs (it holds `:` or `,`).
    #[error("layer path {0} cannot be an overlay lower directory")]
    LayerPath(String),
}

fn io_err(what: impl Into<String>) -> impl FnOnce(io::Error) -> Error {
    let what = what.into();
    move |source| Error::Io { what, source }
}

fn rustix_err(what: impl Into<String>) -> impl FnOnce(rustix::io::Errno) -> Error {
    let what = what.into();
    move |e| Error::Io {
        what,
        source: e.into(),
    }
}

/// The shim's entry point. Returns the process's exit code.
pub fn main(dir: &Path) -> i32 {
    // Its own session: a signal to the agent's process group does not reach it.
    let _ = rustix::process::setsid();
    let mut reported = false;
    match run(dir, &mut reported) {
        Ok(()) => 0,
        Err(e) => {
            let message = error_chain(&e);
            tracing::error!(error = %message, dir = %dir.display(), "container shim failed");
            if !reported {
                let mut out = io::stdout();
                let _ = writeln!(out, "error {message}");
                let _ = out.flush();
            }
            1
        }
    }
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        s.push_str(": ");
        s.push_str(&cause.to_string());
        source = cause.source();
    }
    s
}

fn run(dir: &Path, reported: &mut bool) -> Result<(), Error> {
    let raw = std::fs::read(dir.join(SHIM_FILE)).map_err(io_err(format!("reading {SHIM_FILE}")))?;
    let config: ShimConfig = serde_json::from_slice(&raw).map_err(Error::Config)?;
    let rootfs = dir.join("rootfs");
    mount_rootfs(dir, &config)?;
    let result = run_mounted(dir, &config, reported);
    if let Err(e) = rustix::mount::unmount(&rootfs, rustix::mount::UnmountFlags::DETACH) {
        tracing::warn!(error = %e, "unmounting the container's root");
    }
    result
}

fn mount_rootfs(dir: &Path, config: &ShimConfig) -> Result<(), Error> {
    let mut lower = String::new();
    // overlayfs lists the top layer first; the config lists the base first.
    for layer in config.lowers.iter().rev() {
        let s = layer.to_string_lossy();
        if s.contains(':') || s.contains(',') {
            return Err(Error::LayerPath(s.into_owned()));
        }
        if !lower.is_empty() {
            lower.push(':');
        }
        lower.push_str(&s);
    }
    let (upper, work, rootfs) = (dir.join("upper"), dir.join("work"), dir.join("rootfs"));
    for d in [&upper, &work, &rootfs] {
        std::fs::create_dir_all(d).map_err(io_err(format!("creating {}", d.display())))?;
    }
    let data = format!(
        "lowerdir={lower},upperdir={},workdir={}",
        upper.display(),
        work.display()
    );
    let data = std::ffi::CString::new(data)
        .map_err(|e| io_err("overlay options")(io::Error::new(io::ErrorKind::InvalidInput, e)))?;
    rustix::mount::mount(
        "overlay",
        &rootfs,
        "overlay",
        rustix::mount::MountFlags::empty(),
        data.as_c_str(),
    )
    .map_err(rustix_err("mounting the container's overlay root"))
}

fn run_mounted(dir: &Path, config: &ShimConfig, reported: &mut bool) -> Result<(), Error> {
    let (out_r, out_w) = rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC)
        .map_err(rustix_err("making the stdout pipe"))?;
    let (err_r, err_w) = rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC)
        .map_err(rustix_err("making the stderr pipe"))?;
    let null = std::fs::File::open("/dev/null").map_err(io_err("opening /dev/null"))?;
    let mut log =
        LogWriter::open(&config.log_path, config.log_max_size, config.log_max_files).map_err(
            io_err(format!("opening the log {}", config.log_path.display())),
        )?;

    let state_root = dir.join("runtime");
    std::fs::create_dir_all(&state_root).map_err(io_err("creating the runtime state folder"))?;
    let builder = ContainerBuilder::new(config.id.clone(), SyscallType::Linux)
        .with_root_path(&state_root)
        .map_err(|source| Error::Container {
            what: "setting the runtime state folder",
            source,
        })?
        .with_stdin(OwnedFd::from(null))
        .with_stdout(out_w)
        .with_stderr(err_w)
        .validate_id()
        .map_err(|source| Error::Container {
            what: "checking the container id",
            source,
        })?
        .as_init(dir)
        .with_systemd(false)
        .with_detach(true);
    let mut container = builder.build().map_err(|source| Error::Container {
        what: "creating the container",
        source,
    })?;
    container.start().map_err(|source| Error::Container {
        what: "starting the container",
        source,
    })?;
    let pid = container
        .pid()
        .map(|p| p.as_raw())
        .and_then(Pid::from_raw)
        .ok_or_else(|| io_err("the started container has no pid")(io::Error::other("no pid")))?;
    let state = State {
        pid: pid.as_raw_nonzero().get(),
        shim_pid: std::process::id() as i32,
        started_at: jiff::Timestamp::now().to_string(),
    };
    super::write_json(&dir.join(STATE_FILE), &state)
        .map_err(io_err(format!("writing {STATE_FILE}")))?;
    {
        let mut out = io::stdout();
        let _ = writeln!(out, "ok {}", state.pid);
        let _ = out.flush();
    }
    *reported = true;

    let pidfd = rustix::process::pidfd_open(pid, PidfdFlags::empty())
        .map_err(rustix_err("opening a pidfd of the container's init"))?;
    pump(&mut log, &out_r, &err_r, &pidfd);
    let status = rustix::process::waitpid(Some(pid), WaitOptions::empty())
        .map_err(rustix_err("waiting for the container's init"))?;
    // The init is gone and with it its pid namespace: the rest of the output is in the
    // pipes already (or held by nothing), so it drains to the end now.
    drain(&mut log, &out_r, Stream::Stdout);
    drain(&mut log, &err_r, Stream::Stderr);
    let _ = log.finish(Stream::Stdout);
    let _ = log.finish(Stream::Stderr);

    let (exit_code, signal) = match status.map(|(_, s)| s) {
        Some(s) => match (s.exit_status(), s.terminating_signal()) {
            (Some(code), _) => (code, None),
            (None, Some(sig)) => (128 + sig, Some(sig)),
            _ => (255, None),
        },
        None => (255, None),
    };
    let oom_killed = oom_kills(&config.cgroups_path) > 0;
    if let Err(e) = container.delete(true) {
        tracing::warn!(error = %e, "deleting the stopped container");
    }
    let exit = Exit {
        exit_code,
        signal,
        oom_killed,
        finished_at: jiff::Timestamp::now().to_string(),
    };
    super::write_json(&dir.join(EXIT_FILE), &exit).map_err(io_err(format!("writing {EXIT_FILE}")))
}

/// Copies output to the log until the init exits.
fn pump(log: &mut LogWriter, out: &OwnedFd, err: &OwnedFd, pidfd: &OwnedFd) {
    let mut open = [true, true];
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let mut fds = vec![PollFd::new(pidfd, PollFlags::IN)];
        let streams: Vec<(usize, &OwnedFd)> = [(0usize, out), (1, err)]
            .into_iter()
            .filter(|(i, _)| open[*i])
            .collect();
        for (_, fd) in &streams {
            fds.push(PollFd::new(*fd, PollFlags::IN));
        }
        match poll(&mut fds, None) {
            Ok(_) => {}
            Err(rustix::io::Errno::INTR) => continue,
            Err(e) => {
                tracing::error!(error = %e, "polling the container's output");
                return;
            }
        }
        let exited = !fds[0].revents().is_empty();
        let ready: Vec<bool> = fds[1..].iter().map(|f| !f.revents().is_empty()).collect();
        for ((i, fd), ready) in streams.iter().zip(ready) {
            if !ready {
                continue;
            }
            let stream = if *i == 0 {
                Stream::Stdout
            } else {
                Stream::Stderr
            };
            match rustix::io::read(fd.as_fd(), &mut buf) {
                Ok(0) => open[*i] = false,
                Ok(n) => {
                    if let Err(e) = log.write(stream, &buf[..n]) {
                        tracing::warn!(error = %e, "writing the container's log");
                    }
                }
                Err(rustix::io::Errno::INTR) | Err(rustix::io::Errno::AGAIN) => {}
                Err(_) => open[*i] = false,
            }
        }
        if exited {
            return;
        }
    }
}

/// Reads what is left in a pipe without waiting for writers that may never close it.
fn drain(log: &mut LogWriter, fd: &OwnedFd, stream: Stream) {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let mut fds = [PollFd::new(fd, PollFlags::IN)];
        let timeout = rustix::event::Timespec {
            tv_sec: 0,
            tv_nsec: 50_000_000,
        };
        match poll(&mut fds, Some(&timeout)) {
            Ok(0) => return,
            Ok(_) => {}
            Err(rustix::io::Errno::INTR) => continue,
            Err(_) => return,
        }
        match rustix::io::read(fd.as_fd(), &mut buf) {
            Ok(0) | Err(_) => return,
            Ok(n) => {
                let _ = log.write(stream, &buf[..n]);
            }
        }
    }
}

/// How many times the kernel's OOM killer struck in the container's memory cgroup
/// (cgroup v1's `memory.oom_control`, else v2's `memory.events`).
fn oom_kills(cgroups_path: &str) -> u64 {
    let rel = cgroups_path.trim_start_matches('/');
    let candidates = [
        (
            format!("/sys/fs/cgroup/memory/{rel}/memory.oom_control"),
            "oom_kill ",
        ),
        (format!("/sys/fs/cgroup/{rel}/memory.events"), "oom_kill "),
    ];
    for (path, key) in candidates {
        let mut text = String::new();
        if std::fs::File::open(&path)
            .and_then(|mut f| f.read_to_string(&mut text))
            .is_ok()
        {
            return text
                .lines()
                .find_map(|l| l.strip_prefix(key))
                .and_then(|n| n.trim().parse().ok())
                .unwrap_or(0);
        }
    }
    0
}
