//! A process run in a running container (`kubectl exec`): `skiff container-exec DIR --
//! ARGS`, the skiff binary re-executed, single-threaded because libcontainer forks. It
//! joins the container's namespaces and cgroup through libcontainer's tenant builder,
//! with the container's environment, user and working directory, passes its own stdio
//! to the process, waits for it, and exits with its exit code (128 + the signal when a
//! signal ended it).

use libcontainer::container::builder::ContainerBuilder;
use libcontainer::syscall::syscall::SyscallType;
use rustix::process::{Pid, WaitOptions};
use std::io::Write;
use std::path::Path;

/// The exit code when the process could not be started at all (as a shell's 126).
pub const CANNOT_EXEC: i32 = 126;

/// Runs `args` in the container whose folder is `dir`; returns the exit code.
pub fn main(dir: &Path, args: Vec<String>) -> i32 {
    match run(dir, args) {
        Ok(code) => code,
        Err(message) => {
            let _ = writeln!(std::io::stderr(), "skiff: {message}");
            CANNOT_EXEC
        }
    }
}

fn run(dir: &Path, args: Vec<String>) -> Result<i32, String> {
    let id = dir
        .file_name()
        .and_then(|n| n.to_str())
        .ok_or_else(|| format!("{} is not a container folder", dir.display()))?
        .to_string();
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
        .as_tenant()
        .with_container_args(args)
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
