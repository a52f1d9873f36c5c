//! The shim: one small process per container, the `skiff` binary re-executed
//! (`skiff shim DIR`), single-threaded because libcontainer forks.
//!
//! It mounts the container's overlay root, creates and starts the container through
//! libcontainer (whose init becomes the shim's own child, so the shim is the one that
//! reaps it), reports the init's pid on its stdout, then owns the container's stdio (pipes,
//! or a terminal when the container asks for one): it writes the output to the CRI log
//! and to the clients attached on `attach.sock` (see [`super::attach`]), and their input
//! to the container, until the init exits. Then it records the exit
//! (code, signal, OOM kill) in `exit.json`, deletes the container (its cgroup) and
//! unmounts the root. It runs in its own session, so the agent can stop, restart or be
//! upgraded while containers keep running; the agent finds them again from the files in
//! the container's folder.

use super::attach;
use super::log::{LogWriter, Stream};
use super::{Exit, ShimConfig, State, EXIT_FILE, SHIM_FILE, STATE_FILE};
use libcontainer::container::builder::ContainerBuilder;
use libcontainer::syscall::syscall::SyscallType;
use rustix::event::{poll, PollFd, PollFlags};
use rustix::fd::OwnedFd;
use rustix::process::{Pid, PidfdFlags, WaitOptions};
use std::io::{self, Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
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
    let mut log =
        LogWriter::open(&config.log_path, config.log_max_size, config.log_max_files).map_err(
            io_err(format!("opening the log {}", config.log_path.display())),
        )?;
    // The folder stays open so that its sockets have short paths (see attach::short_path).
    let dir_fd = std::fs::File::open(dir).map_err(io_err("opening the container's folder"))?;
    let _ = std::fs::remove_file(dir.join(attach::SOCKET));
    let listener = UnixListener::bind(attach::short_path(&dir_fd, attach::SOCKET))
        .map_err(io_err("listening on the attach socket"))?;
    listener
        .set_nonblocking(true)
        .map_err(io_err("listening on the attach socket"))?;

    let state_root = dir.join("runtime");
    std::fs::create_dir_all(&state_root).map_err(io_err("creating the runtime state folder"))?;
    let builder = ContainerBuilder::new(config.id.clone(), SyscallType::Linux)
        .with_root_path(&state_root)
        .map_err(|source| Error::Container {
            what: "setting the runtime state folder",
            source,
        })?;
    // The container's stdio: a terminal whose master end comes back over a console
    // socket, or pipes (stdin only when the container asks for it).
    let mut outputs = Vec::new();
    let mut stdin = None;
    let mut console = None;
    let builder = if config.tty {
        let path = dir.join(CONSOLE_SOCKET);
        let _ = std::fs::remove_file(&path);
        console = Some(
            UnixListener::bind(attach::short_path(&dir_fd, CONSOLE_SOCKET))
                .map_err(io_err("listening on the console socket"))?,
        );
        builder.with_console_socket(Some(&path))
    } else {
        let (out_r, out_w) = pipe()?;
        let (err_r, err_w) = pipe()?;
        outputs.push((Stream::Stdout, out_r));
        outputs.push((Stream::Stderr, err_r));
        let input = if config.stdin {
            let (in_r, in_w) = pipe()?;
            stdin = Some(in_w);
            in_r
        } else {
            OwnedFd::from(std::fs::File::open("/dev/null").map_err(io_err("opening /dev/null"))?)
        };
        builder
            .with_stdin(input)
            .with_stdout(out_w)
            .with_stderr(err_w)
    };
    let builder = builder
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
    let mut terminal = None;
    if let Some(console) = console {
        let master = super::receive_fd(&console)
            .map_err(|e| io_err("receiving the container's terminal")(io::Error::other(e)));
        let _ = std::fs::remove_file(dir.join(CONSOLE_SOCKET));
        let master = master?;
        if config.stdin {
            stdin = Some(
                rustix::io::fcntl_dupfd_cloexec(&master, 3)
                    .map_err(rustix_err("duplicating the terminal"))?,
            );
        }
        terminal = Some(
            rustix::io::fcntl_dupfd_cloexec(&master, 3)
                .map_err(rustix_err("duplicating the terminal"))?,
        );
        outputs.push((Stream::Stdout, master));
    }
    for (_, fd) in &outputs {
        set_nonblocking(fd)?;
    }
    if let Some(fd) = &stdin {
        set_nonblocking(fd)?;
    }
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
    let mut pump = Pump {
        log: &mut log,
        outputs,
        stdin,
        stdin_pending: Vec::new(),
        stdin_closing: false,
        stdin_once: config.stdin_once,
        terminal,
        listener,
        clients: Vec::new(),
    };
    pump.run(&pidfd);
    let status = rustix::process::waitpid(Some(pid), WaitOptions::empty())
        .map_err(rustix_err("waiting for the container's init"))?;
    // The init is gone and with it its pid namespace: the rest of the output is in the
    // pipes already (or held by nothing), so it drains to the end now.
    pump.drain();
    pump.finish();
    let _ = std::fs::remove_file(dir.join(attach::SOCKET));

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

/// The console socket's name in the container's folder, while the container starts.
const CONSOLE_SOCKET: &str = "console.sock";

/// An attached client may fall this far behind the container's output before it is
/// dropped: a stalled client must not stall the container.
const CLIENT_BACKLOG: usize = 4 << 20;

/// Input waiting for the container; past this, clients are not read until it drains.
const STDIN_BACKLOG: usize = 1 << 20;

fn pipe() -> Result<(OwnedFd, OwnedFd), Error> {
    rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC).map_err(rustix_err("making a pipe"))
}

fn set_nonblocking(fd: &OwnedFd) -> Result<(), Error> {
    let flags = rustix::fs::fcntl_getfl(fd).map_err(rustix_err("reading a descriptor's flags"))?;
    rustix::fs::fcntl_setfl(fd, flags | rustix::fs::OFlags::NONBLOCK)
        .map_err(rustix_err("making a descriptor non-blocking"))
}

/// An attached client (see [`attach`]).
struct Client {
    sock: UnixStream,
    decoder: attach::Decoder,
    /// Frames not yet written to it.
    out: Vec<u8>,
    /// It said it writes stdin and has not closed it.
    writes_stdin: bool,
    gone: bool,
}

/// The container's stdio: output to the log and to attached clients, their input to
/// the container.
struct Pump<'a> {
    log: &'a mut LogWriter,
    /// Output still open.
    outputs: Vec<(Stream, OwnedFd)>,
    /// The container's stdin (a pipe's write end, or the terminal).
    stdin: Option<OwnedFd>,
    stdin_pending: Vec<u8>,
    /// Close stdin once what is pending is written.
    stdin_closing: bool,
    stdin_once: bool,
    /// The terminal, for resizes.
    terminal: Option<OwnedFd>,
    listener: UnixListener,
    clients: Vec<Client>,
}

impl Pump<'_> {
    /// Moves bytes until the init exits.
    fn run(&mut self, pidfd: &OwnedFd) {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let stdin_full = self.stdin_pending.len() >= STDIN_BACKLOG;
            let mut fds = vec![
                PollFd::new(pidfd, PollFlags::IN),
                PollFd::new(&self.listener, PollFlags::IN),
            ];
            for (_, fd) in &self.outputs {
                fds.push(PollFd::new(fd, PollFlags::IN));
            }
            let stdin_at = fds.len();
            if let Some(fd) = self
                .stdin
                .as_ref()
                .filter(|_| !self.stdin_pending.is_empty())
            {
                fds.push(PollFd::new(fd, PollFlags::OUT));
            }
            let clients_at = fds.len();
            for c in &self.clients {
                let mut flags = PollFlags::empty();
                if !stdin_full {
                    flags |= PollFlags::IN;
                }
                if !c.out.is_empty() {
                    flags |= PollFlags::OUT;
                }
                fds.push(PollFd::new(&c.sock, flags));
            }
            match poll(&mut fds, None) {
                Ok(_) => {}
                Err(rustix::io::Errno::INTR) => continue,
                Err(e) => {
                    tracing::error!(error = %e, "polling the container's stdio");
                    return;
                }
            }
            let ready: Vec<PollFlags> = fds.iter().map(|f| f.revents()).collect();
            drop(fds);
            let exited = !ready[0].is_empty();

            // Output first, so that a client attached now sees only what comes after.
            let mut closed = Vec::new();
            for i in 0..self.outputs.len() {
                if ready[2 + i].is_empty() {
                    continue;
                }
                let stream = self.outputs[i].0;
                match rustix::io::read(&self.outputs[i].1, &mut buf) {
                    Ok(0) => closed.push(i),
                    Ok(n) => self.output(stream, &buf[..n]),
                    Err(rustix::io::Errno::INTR) | Err(rustix::io::Errno::AGAIN) => {}
                    Err(_) => closed.push(i),
                }
            }
            for i in closed.into_iter().rev() {
                self.outputs.remove(i);
            }
            if !ready[1].is_empty() {
                self.accept();
            }
            if stdin_at < clients_at && !ready[stdin_at].is_empty() {
                self.write_stdin();
            }
            for i in 0..self.clients.len() {
                let flags = ready
                    .get(clients_at + i)
                    .copied()
                    .unwrap_or(PollFlags::empty());
                if flags.intersects(PollFlags::IN | PollFlags::HUP | PollFlags::ERR) {
                    self.read_client(i, &mut buf);
                }
                if flags.contains(PollFlags::OUT) {
                    flush(&mut self.clients[i]);
                }
            }
            self.forget_gone();
            if exited {
                return;
            }
        }
    }

    /// Output of the container: to its log, and to every attached client.
    fn output(&mut self, stream: Stream, data: &[u8]) {
        if let Err(e) = self.log.write(stream, data) {
            tracing::warn!(error = %e, "writing the container's log");
        }
        if self.clients.is_empty() {
            return;
        }
        let kind = match stream {
            Stream::Stdout => attach::STDOUT,
            Stream::Stderr => attach::STDERR,
        };
        let frame = attach::frame(kind, data);
        for c in &mut self.clients {
            if c.out.len() + frame.len() > CLIENT_BACKLOG {
                tracing::warn!(
                    "an attached client fell behind the container's output; dropping it"
                );
                c.gone = true;
                continue;
            }
            c.out.extend_from_slice(&frame);
            flush(c);
        }
    }

    fn accept(&mut self) {
        loop {
            match self.listener.accept() {
                Ok((sock, _)) => {
                    if sock.set_nonblocking(true).is_ok() {
                        self.clients.push(Client {
                            sock,
                            decoder: attach::Decoder::default(),
                            out: Vec::new(),
                            writes_stdin: false,
                            gone: false,
                        });
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return,
            }
        }
    }

    fn read_client(&mut self, i: usize, buf: &mut [u8]) {
        match self.clients[i].sock.read(buf) {
            Ok(0) => self.clients[i].gone = true,
            Ok(n) => self.clients[i].decoder.push(&buf[..n]),
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
                ) =>
            {
                return
            }
            Err(_) => self.clients[i].gone = true,
        }
        loop {
            let frame = match self.clients[i].decoder.next_frame() {
                Ok(Some(f)) => f,
                Ok(None) => break,
                Err(e) => {
                    tracing::warn!(error = %e, "an attached client spoke out of turn; dropping it");
                    self.clients[i].gone = true;
                    break;
                }
            };
            match frame {
                (attach::WANT_STDIN, _) => self.clients[i].writes_stdin = true,
                (attach::STDIN, data) if self.stdin.is_some() && !self.stdin_closing => {
                    self.stdin_pending.extend_from_slice(&data);
                }
                (attach::CLOSE_STDIN, _) if self.clients[i].writes_stdin => {
                    self.clients[i].writes_stdin = false;
                    self.stdin_ended();
                }
                (attach::RESIZE, data) => {
                    if let (Some(t), Some((cols, rows))) =
                        (&self.terminal, attach::parse_resize(&data))
                    {
                        let size = rustix::termios::Winsize {
                            ws_row: rows,
                            ws_col: cols,
                            ws_xpixel: 0,
                            ws_ypixel: 0,
                        };
                        let _ = rustix::termios::tcsetwinsize(t, size);
                    }
                }
                _ => {}
            }
        }
        self.write_stdin();
    }

    /// A client's input ended: with `stdinOnce`, so does the container's.
    fn stdin_ended(&mut self) {
        if self.stdin_once {
            self.stdin_closing = true;
            self.write_stdin();
        }
    }

    fn write_stdin(&mut self) {
        if let Some(fd) = &self.stdin {
            while !self.stdin_pending.is_empty() {
                match rustix::io::write(fd, &self.stdin_pending) {
                    Ok(n) => {
                        self.stdin_pending.drain(..n);
                    }
                    Err(rustix::io::Errno::INTR) => {}
                    Err(rustix::io::Errno::AGAIN) => return,
                    Err(_) => {
                        // The container closed its stdin: nothing more goes in.
                        self.stdin_pending.clear();
                        self.stdin = None;
                        return;
                    }
                }
            }
        }
        if self.stdin_closing && self.stdin_pending.is_empty() {
            self.stdin = None;
        }
    }

    fn forget_gone(&mut self) {
        let mut ended = false;
        self.clients.retain(|c| {
            if c.gone && c.writes_stdin {
                ended = true;
            }
            !c.gone
        });
        if ended {
            self.stdin_ended();
        }
    }

    /// Reads what is left in the outputs without waiting for writers that may never
    /// close them.
    fn drain(&mut self) {
        let mut buf = vec![0u8; 64 * 1024];
        for i in 0..self.outputs.len() {
            let stream = self.outputs[i].0;
            loop {
                let mut fds = [PollFd::new(&self.outputs[i].1, PollFlags::IN)];
                let timeout = rustix::event::Timespec {
                    tv_sec: 0,
                    tv_nsec: 50_000_000,
                };
                match poll(&mut fds, Some(&timeout)) {
                    Ok(0) => break,
                    Ok(_) => {}
                    Err(rustix::io::Errno::INTR) => continue,
                    Err(_) => break,
                }
                match rustix::io::read(&self.outputs[i].1, &mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => self.output(stream, &buf[..n]),
                }
            }
        }
    }

    /// Ends the log's last lines and gives each client what it has not had yet, then
    /// closes them: the container is gone.
    fn finish(&mut self) {
        let _ = self.log.finish(Stream::Stdout);
        let _ = self.log.finish(Stream::Stderr);
        for c in &mut self.clients {
            let _ = c.sock.set_nonblocking(false);
            let _ = c
                .sock
                .set_write_timeout(Some(std::time::Duration::from_secs(1)));
            let _ = c.sock.write_all(&c.out);
            let _ = c.sock.shutdown(std::net::Shutdown::Both);
        }
        self.clients.clear();
    }
}

/// Writes what a client can take now.
fn flush(c: &mut Client) {
    while !c.out.is_empty() {
        match c.sock.write(&c.out) {
            Ok(0) => {
                c.gone = true;
                return;
            }
            Ok(n) => {
                c.out.drain(..n);
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
            Err(_) => {
                c.gone = true;
                return;
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
