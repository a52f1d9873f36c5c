//! A process run in a running container (`kubectl exec`): `skiff container-exec DIR --
//! ARGS`, the skiff binary re-executed, single-threaded because libcontainer forks. It
//! joins the container's namespaces and cgroup through libcontainer's tenant builder,
//! with the container's environment, user and working directory, passes its own stdio
//! to the process, waits for it, and exits with its exit code (128 + the signal when a
//! signal ended it).
//!
//! The process runs under the container's seccomp filter, loaded by [`WithSeccomp`]
//! just before it executes, because libcontainer 0.7 leaves the filter out of the spec
//! it builds for an exec'd process.
//!
//! With a terminal (`--tty`), libcontainer gives the process a pty and hands its master
//! end back over a console socket; this process then copies its stdin to the terminal
//! and the terminal to its stdout, and applies resizes ("COLS ROWS" lines) read from the
//! FIFO named by `SKIFF_RESIZE_FIFO`.

use libcontainer::container::builder::ContainerBuilder;
use libcontainer::syscall::syscall::SyscallType;
use libcontainer::workload::{
    Executor, ExecutorError, ExecutorSetEnvsError, ExecutorValidationError,
};
use oci_spec::runtime::{LinuxSeccomp, Spec};
use rustix::process::{Pid, WaitOptions};
use std::collections::HashMap;
use std::io::Write;
use std::path::Path;

/// The exit code when the process could not be started at all (as a shell's 126).
pub const CANNOT_EXEC: i32 = 126;

/// Runs `args` in the container whose folder is `dir`, on a terminal with `tty`;
/// returns the exit code.
pub fn main(dir: &Path, args: Vec<String>, tty: bool) -> i32 {
    let result = if tty {
        run_tty(dir, args)
    } else {
        run(dir, args)
    };
    match result {
        Ok(code) => code,
        Err(message) => {
            let _ = writeln!(std::io::stderr(), "skiff: {message}");
            CANNOT_EXEC
        }
    }
}

/// libcontainer's own executor, after loading the container's seccomp filter.
///
/// libcontainer 0.7 builds an exec'd process's spec from the namespaces and cgroup of
/// the container's, without its `linux.seccomp`, so the process would run unfiltered.
/// This executor runs last in the new process, after it dropped to the container's
/// user and capabilities: loading a filter then needs `CAP_SYS_ADMIN` or
/// `no_new_privs`, so a process without the former gets the latter (setuid programs in
/// an exec'd shell of a filtered container do not gain privileges).
#[derive(Clone)]
struct WithSeccomp(Option<LinuxSeccomp>);

impl WithSeccomp {
    fn of(spec: &Spec) -> WithSeccomp {
        WithSeccomp(spec.linux().as_ref().and_then(|l| l.seccomp().clone()))
    }
}

impl Executor for WithSeccomp {
    fn exec(&self, spec: &Spec) -> Result<(), ExecutorError> {
        if let Some(filter) = &self.0 {
            use rustix::thread::{capabilities, set_no_new_privs, CapabilitySet};
            let admin =
                capabilities(None).is_ok_and(|c| c.effective.contains(CapabilitySet::SYS_ADMIN));
            if !admin {
                set_no_new_privs(true)
                    .map_err(|e| ExecutorError::Other(format!("setting no_new_privs: {e}")))?;
            }
            libcontainer::seccomp::initialize_seccomp(filter).map_err(|e| {
                ExecutorError::Other(format!("loading the container's seccomp filter: {e}"))
            })?;
        }
        libcontainer::workload::default::get_executor().exec(spec)
    }

    fn validate(&self, spec: &Spec) -> Result<(), ExecutorValidationError> {
        libcontainer::workload::default::get_executor().validate(spec)
    }

    fn setup_envs(&self, envs: HashMap<String, String>) -> Result<(), ExecutorSetEnvsError> {
        libcontainer::workload::default::get_executor().setup_envs(envs)
    }
}

fn run(dir: &Path, args: Vec<String>) -> Result<i32, String> {
    let id = dir
        .file_name()
        .and_then(|n| n.to_str())
        .ok_or_else(|| format!("{} is not a container folder", dir.display()))?
        .to_string();
    let spec =
        Spec::load(dir.join("config.json")).map_err(|e| format!("the container's spec: {e}"))?;
    // The container's user, groups and working directory (the tenant builder's defaults
    // are root and /).
    let process = spec
        .process()
        .clone()
        .ok_or("the container's spec has no process")?;
    let user = process.user();
    let dup = |fd: std::os::fd::BorrowedFd<'_>| {
        rustix::io::fcntl_dupfd_cloexec(fd, 3).map_err(|e| format!("duplicating stdio: {e}"))
    };
    use std::os::fd::AsFd;
    let (stdin, stdout, stderr) = (
        dup(std::io::stdin().as_fd())?,
        dup(std::io::stdout().as_fd())?,
        dup(std::io::stderr().as_fd())?,
    );
    let pid = ContainerBuilder::new(id, SyscallType::Linux)
        .with_root_path(dir.join("runtime"))
        .map_err(|e| format!("the container's state: {e}"))?
        .with_stdin(stdin)
        .with_stdout(stdout)
        .with_stderr(stderr)
        .with_executor(WithSeccomp::of(&spec))
        .as_tenant()
        .with_container_args(args)
        .with_user(Some(user.uid()))
        .with_group(Some(user.gid()))
        .with_additional_gids(user.additional_gids().clone().unwrap_or_default())
        .with_cwd(Some(process.cwd()))
        .with_detach(false)
        .build()
        .map_err(|e| format!("executing in the container: {e}"))?;
    let pid = Pid::from_raw(pid.as_raw()).ok_or("the process has no pid")?;
    let status = rustix::process::waitpid(Some(pid), WaitOptions::empty())
        .map_err(|e| format!("waiting for the process: {e}"))?;
    Ok(match status.map(|(_, s)| s) {
        Some(s) => s
            .exit_status()
            .or_else(|| s.terminating_signal().map(|sig| 128 + sig))
            .unwrap_or(255),
        None => 255,
    })
}

fn wait(pid: Pid) -> Result<i32, String> {
    let status = rustix::process::waitpid(Some(pid), WaitOptions::empty())
        .map_err(|e| format!("waiting for the process: {e}"))?;
    Ok(match status.map(|(_, s)| s) {
        Some(s) => s
            .exit_status()
            .or_else(|| s.terminating_signal().map(|sig| 128 + sig))
            .unwrap_or(255),
        None => 255,
    })
}

fn run_tty(dir: &Path, args: Vec<String>) -> Result<i32, String> {
    use rustix::event::{poll, PollFd, PollFlags};
    use std::os::fd::{AsFd, OwnedFd};
    let id = dir
        .file_name()
        .and_then(|n| n.to_str())
        .ok_or_else(|| format!("{} is not a container folder", dir.display()))?
        .to_string();
    // The container's own process, with these arguments, on a terminal.
    let spec =
        Spec::load(dir.join("config.json")).map_err(|e| format!("the container's spec: {e}"))?;
    let mut process = spec
        .process()
        .clone()
        .ok_or("the container's spec has no process")?;
    process.set_args(Some(args));
    process.set_terminal(Some(true));
    let me = std::process::id();
    let process_path = dir.join(format!("exec-{me}.json"));
    let sock_path = dir.join(format!("exec-{me}.sock"));
    std::fs::write(
        &process_path,
        serde_json::to_vec(&process).map_err(|e| e.to_string())?,
    )
    .map_err(|e| format!("writing the process: {e}"))?;
    let _ = std::fs::remove_file(&sock_path);
    let listener = std::os::unix::net::UnixListener::bind(&sock_path)
        .map_err(|e| format!("the console socket: {e}"))?;
    let cleanup = || {
        let _ = std::fs::remove_file(&process_path);
        let _ = std::fs::remove_file(&sock_path);
    };
    let built = ContainerBuilder::new(id, SyscallType::Linux)
        .with_root_path(dir.join("runtime"))
        .map_err(|e| format!("the container's state: {e}"))
        .map(|b| {
            b.with_console_socket(Some(&sock_path))
                .with_executor(WithSeccomp::of(&spec))
                .as_tenant()
                .with_process(Some(&process_path))
                .with_detach(true)
                .build()
        });
    let pid = match built {
        Ok(Ok(pid)) => pid,
        Ok(Err(e)) => {
            cleanup();
            return Err(format!("executing in the container: {e}"));
        }
        Err(e) => {
            cleanup();
            return Err(e);
        }
    };
    let pid = Pid::from_raw(pid.as_raw()).ok_or("the process has no pid")?;
    let master = super::receive_fd(&listener);
    cleanup();
    let master = master?;
    let resize = std::env::var_os("SKIFF_RESIZE_FIFO").and_then(|p| {
        std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(p)
            .ok()
    });
    let pidfd = rustix::process::pidfd_open(pid, rustix::process::PidfdFlags::empty())
        .map_err(|e| format!("watching the process: {e}"))?;
    let stdin = std::io::stdin();
    let mut stdin_open = true;
    let mut buf = vec![0u8; 32 * 1024];
    let mut pending = String::new();
    loop {
        let mut fds = vec![
            PollFd::new(&master, PollFlags::IN),
            PollFd::new(&pidfd, PollFlags::IN),
        ];
        if let Some(r) = &resize {
            fds.push(PollFd::new(r, PollFlags::IN));
        }
        if stdin_open {
            fds.push(PollFd::new(&stdin, PollFlags::IN));
        }
        match poll(&mut fds, None) {
            Ok(_) => {}
            Err(rustix::io::Errno::INTR) => continue,
            Err(e) => return Err(format!("polling the terminal: {e}")),
        }
        let ready: Vec<bool> = fds.iter().map(|f| !f.revents().is_empty()).collect();
        drop(fds);
        if ready[0] {
            match rustix::io::read(&master, &mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    let mut out = std::io::stdout();
                    if out.write_all(&buf[..n]).and_then(|()| out.flush()).is_err() {
                        break;
                    }
                }
            }
        }
        let mut i = 2;
        if let Some(r) = &resize {
            if ready[i] {
                if let Ok(n) = rustix::io::read(r, &mut buf) {
                    pending.push_str(&String::from_utf8_lossy(&buf[..n]));
                    while let Some(nl) = pending.find('\n') {
                        let line: String = pending.drain(..=nl).collect();
                        let mut it = line
                            .split_whitespace()
                            .filter_map(|v| v.parse::<u16>().ok());
                        if let (Some(cols), Some(rows)) = (it.next(), it.next()) {
                            let size = rustix::termios::Winsize {
                                ws_row: rows,
                                ws_col: cols,
                                ws_xpixel: 0,
                                ws_ypixel: 0,
                            };
                            let _ = rustix::termios::tcsetwinsize(&master, size);
                        }
                    }
                }
            }
            i += 1;
        }
        if stdin_open && ready.get(i) == Some(&true) {
            match rustix::io::read(stdin.as_fd(), &mut buf) {
                Ok(0) | Err(_) => stdin_open = false,
                Ok(n) => {
                    if rustix::io::write(&master, &buf[..n]).is_err() {
                        stdin_open = false;
                    }
                }
            }
        }
        if ready[1] {
            // The process is gone: what it wrote last is still in the terminal.
            while let Ok(n) = rustix::io::read(&master, &mut buf) {
                if n == 0 || std::io::stdout().write_all(&buf[..n]).is_err() {
                    break;
                }
                let mut probe = [PollFd::new(&master, PollFlags::IN)];
                let quick = rustix::event::Timespec {
                    tv_sec: 0,
                    tv_nsec: 20_000_000,
                };
                if !matches!(poll(&mut probe, Some(&quick)), Ok(n) if n > 0) {
                    break;
                }
            }
            let _ = std::io::stdout().flush();
            break;
        }
    }
    let _: &OwnedFd = &master;
    wait(pid)
}
