//! Clusters of several hosts on one machine, for tests of more than one node (needs
//! root).
//!
//! A [`Net`] is a private network the test makes: a Linux bridge in the root namespace
//! holding the gateway address `10.213.N.1/24`, and per host a network namespace joined
//! to the bridge by a veth pair, holding `10.213.N.(10+i)/24` with a default route via
//! the gateway. The gateway sits in the test's own namespace, so the test, kubectl and
//! kube-rs reach every host directly. A [`Host`] is one machine: a namespace, a data
//! directory and a `skiff` process entered into that namespace. A [`Cluster`] is a net
//! and its hosts; [`Cluster::start_server`] runs `skiff server` on one of them.
//!
//! Processes enter a host with `nsenter --net=/run/netns/NAME`, not `ip netns exec`: the
//! latter also remounts `/sys` for the namespace, which hides `/sys/fs/cgroup` from the
//! container runtime. Only the network is separate: hosts share the file system, the
//! cgroup tree, pids and `/var/log/pods`, which is why every host has its own data
//! directory and dropping a host stops its containers. For the same reason
//! `/sys/class/net` on a host lists the test's own links (sysfs shows the namespace that
//! mounted it), while `/proc/net`, `/proc/sys/net` and netlink show the host's.
//!
//! Names carry the test process's pid and N (`skt<pid>-<N>` in hex, then `br`, `v<i>` or
//! `h<i>`), so a run that crashed is recognised by its dead pid, and what it left is
//! removed before a new net is made. Dropping a net removes everything, also when the
//! test panics; dropping a cluster stops its hosts first.

use crate::harness::{
    block_on, client_from, kubeconfig_complete, log_tail, run_command, serves_readyz,
    stop_containers, wait_until, Kubectl, KubectlCommand, Output,
};
use k8s_openapi::api::core::v1::Node;
use kube::api::{Api, ListParams};
use kube::ResourceExt as _;
use serde_json::{json, Value};
use std::collections::BTreeSet;
use std::ffi::{OsStr, OsString};
use std::io::Write as _;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How long a server may take to become ready (a debug build on a busy 2-core machine).
const START_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a process may take to stop after SIGTERM before it gets SIGKILL.
const STOP_TIMEOUT: Duration = Duration::from_secs(20);
/// How long a command run on a host ([`Host::run`]) may take.
const RUN_TIMEOUT: Duration = Duration::from_secs(30);
/// The API server's port on every host: each host has its own namespace.
pub const API_PORT: u16 = 6443;
/// The first two octets of every test network.
const PREFIX: [u8; 2] = [10, 213];
/// What every name of a test network starts with.
const NAME_PREFIX: &str = "skt";
/// Host indexes are one hex digit in interface names (15 characters at most).
const MAX_HOSTS: usize = 16;
/// A host's directory (in the temporary folder) is named this, its namespace's name and
/// a random part.
const HOST_DIR_PREFIX: &str = "skiff-e2e-";

/// The next N to try; N is unique among the nets of this process.
static NEXT_SUBNET: AtomicUsize = AtomicUsize::new(0);
/// Held while leftovers are removed, so tests starting together do not race at it.
static LEFTOVERS: Mutex<()> = Mutex::new(());

/// The names of the nets of the process `pid` on subnet `n` start with this: at most 10
/// characters, as pids are below 2^22.
fn name_base(pid: u32, n: u8) -> String {
    format!("{NAME_PREFIX}{pid:x}-{n:02x}")
}

/// The pid and subnet a test network's name carries, if it is one.
fn parse_name(name: &str) -> Option<(u32, u8)> {
    let (pid, rest) = name.strip_prefix(NAME_PREFIX)?.split_once('-')?;
    let pid = u32::from_str_radix(pid, 16).ok()?;
    let n = u8::from_str_radix(rest.get(..2)?, 16).ok()?;
    let kind = rest.get(2..)?;
    let valid = kind == "br"
        || kind
            .strip_prefix(['v', 'h'])
            .is_some_and(|i| !i.is_empty() && i.chars().all(|c| c.is_ascii_hexdigit()));
    valid.then_some((pid, n))
}

/// Whether a process `pid` exists.
fn alive(pid: u32) -> bool {
    let Some(pid) = i32::try_from(pid)
        .ok()
        .and_then(rustix::process::Pid::from_raw)
    else {
        return false;
    };
    rustix::process::test_kill_process(pid) != Err(rustix::io::Errno::SRCH)
}

/// Runs `ip args`, returning its stdout, or stderr on failure.
fn ip(args: &[&str]) -> Result<String, String> {
    let out = Command::new("ip")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run ip: {e}"))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(format!(
            "`ip {}` failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// Runs `ip args`, failing the test if it fails.
#[track_caller]
fn ip_ok(args: &[&str]) {
    if let Err(e) = ip(args) {
        panic!("changing the test network: {e}");
    }
}

/// The names of the links in the root namespace.
fn links() -> Vec<String> {
    // `12: name@if11: <...> ...`: a veth's name carries its peer after `@`.
    ip(&["-o", "link", "show"])
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split(": ").nth(1))
        .map(|n| n.split('@').next().unwrap_or(n).to_string())
        .collect()
}

/// The names of the network namespaces in `/run/netns`.
fn namespaces() -> Vec<String> {
    ip(&["netns", "list"])
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .map(String::from)
        .collect()
}

/// Deletes the link `name`; one that is already gone is fine.
fn remove_link(name: &str) {
    if let Err(e) = ip(&["link", "del", name]) {
        if links().iter().any(|l| l == name) {
            eprintln!("removing the test network: {e}");
        }
    }
}

/// Kills what still runs in the namespace `name`, then deletes it; one that is already
/// gone is fine.
fn remove_namespace(name: &str) {
    if !Path::new("/run/netns").join(name).exists() {
        return;
    }
    for pid in ip(&["netns", "pids", name])
        .unwrap_or_default()
        .split_whitespace()
        .filter_map(|p| p.parse::<i32>().ok())
        .filter_map(rustix::process::Pid::from_raw)
    {
        let _ = rustix::process::kill_process(pid, rustix::process::Signal::KILL);
    }
    if let Err(e) = ip(&["netns", "del", name]) {
        if Path::new("/run/netns").join(name).exists() {
            eprintln!("removing the test network: {e}");
        }
    }
}

/// Removes the test networks of processes that no longer exist (a crashed run's), the
/// processes still running on their hosts, their containers and their directories.
fn remove_leftovers() {
    let dead = |name: &String| parse_name(name).is_some_and(|(pid, _)| !alive(pid));
    // Veths before bridges, so no port outlives its bridge even for a moment.
    let mut stale: Vec<String> = links().into_iter().filter(dead).collect();
    stale.sort_by_key(|l| l.ends_with("br"));
    for link in stale {
        eprintln!("removing {link}, left by a test run that is gone");
        remove_link(&link);
    }
    for ns in namespaces().into_iter().filter(dead) {
        eprintln!("removing the namespace {ns}, left by a test run that is gone");
        remove_namespace(&ns);
    }
    // Host directories are named `<HOST_DIR_PREFIX><netns>-<random>`.
    let temp = std::env::temp_dir();
    for entry in std::fs::read_dir(&temp).into_iter().flatten().flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(ns) = name
            .strip_prefix(HOST_DIR_PREFIX)
            .and_then(|rest| rest.rsplit_once('-'))
            .map(|(ns, _)| ns.to_string())
        else {
            continue;
        };
        if dead(&ns) {
            eprintln!("removing {name}, left by a test run that is gone");
            let dir = entry.path();
            if dir.join("data").join("agent").exists() {
                stop_containers(&dir.join("data"));
            }
            if let Err(e) = std::fs::remove_dir_all(&dir) {
                eprintln!("removing {}: {e}", dir.display());
            }
        }
    }
}

/// The subnets (N) some interface or test network already uses.
fn subnets_in_use() -> BTreeSet<u8> {
    let mut used: BTreeSet<u8> = links()
        .iter()
        .chain(&namespaces())
        .filter_map(|name| parse_name(name).map(|(_, n)| n))
        .collect();
    let prefix = format!("{}.{}.", PREFIX[0], PREFIX[1]);
    for line in ip(&["-o", "-4", "addr", "show"])
        .unwrap_or_default()
        .lines()
    {
        let mut words = line.split_whitespace();
        if words.any(|w| w == "inet") {
            let third = words
                .next()
                .and_then(|a| a.strip_prefix(&prefix))
                .and_then(|rest| rest.split('.').next())
                .and_then(|n| n.parse::<u8>().ok());
            used.extend(third);
        }
    }
    used
}

/// A private network of hosts: a bridge in the root namespace holding the gateway
/// address, and a network namespace per host joined to it by a veth pair. Dropping it
/// removes all of it.
pub struct Net {
    n: u8,
    base: String,
    hosts: usize,
}

impl Net {
    /// Makes a network of `hosts` hosts on a subnet `10.213.N.0/24` nothing else uses.
    pub fn new(hosts: usize) -> Net {
        assert!(
            (1..=MAX_HOSTS).contains(&hosts),
            "a test network has 1 to {MAX_HOSTS} hosts, not {hosts}"
        );
        {
            let _one_at_a_time = LEFTOVERS.lock().unwrap_or_else(|e| e.into_inner());
            remove_leftovers();
        }
        let used = subnets_in_use();
        let n = (0..256)
            .map(|_| (NEXT_SUBNET.fetch_add(1, Ordering::Relaxed) % 256) as u8)
            .find(|n| !used.contains(n))
            .expect("every 10.213.N.0/24 is in use");
        let net = Net {
            n,
            base: name_base(std::process::id(), n),
            hosts,
        };
        // From here on a failure drops `net`, which removes what was made so far.
        net.create();
        net
    }

    fn create(&self) {
        let bridge = self.bridge();
        let gateway = format!("{}/24", self.gateway());
        ip_ok(&["link", "add", &bridge, "type", "bridge"]);
        ip_ok(&["addr", "add", &gateway, "dev", &bridge]);
        ip_ok(&["link", "set", &bridge, "up"]);
        for i in 0..self.hosts {
            let (ns, veth) = (self.netns(i), self.veth(i));
            let address = format!("{}/24", self.address(i));
            ip_ok(&["netns", "add", &ns]);
            // The host's end is made inside its namespace, where `eth0` is free.
            ip_ok(&[
                "link", "add", &veth, "type", "veth", "peer", "name", "eth0", "netns", &ns,
            ]);
            ip_ok(&["link", "set", &veth, "master", &bridge]);
            ip_ok(&["link", "set", &veth, "up"]);
            ip_ok(&["-n", &ns, "link", "set", "lo", "up"]);
            ip_ok(&["-n", &ns, "addr", "add", &address, "dev", "eth0"]);
            ip_ok(&["-n", &ns, "link", "set", "eth0", "up"]);
            ip_ok(&[
                "-n",
                &ns,
                "route",
                "add",
                "default",
                "via",
                &self.gateway().to_string(),
            ]);
        }
    }

    /// The number of hosts.
    pub fn hosts(&self) -> usize {
        self.hosts
    }

    /// The gateway's address, on the bridge in the test's own namespace.
    pub fn gateway(&self) -> Ipv4Addr {
        Ipv4Addr::new(PREFIX[0], PREFIX[1], self.n, 1)
    }

    /// Host `i`'s address.
    pub fn address(&self, i: usize) -> Ipv4Addr {
        assert!(i < self.hosts, "no host {i} in a net of {}", self.hosts);
        Ipv4Addr::new(PREFIX[0], PREFIX[1], self.n, 10 + i as u8)
    }

    /// The bridge's name.
    pub fn bridge(&self) -> String {
        format!("{}br", self.base)
    }

    /// The name of host `i`'s network namespace (in `/run/netns`).
    pub fn netns(&self, i: usize) -> String {
        format!("{}h{i:x}", self.base)
    }

    /// The name of host `i`'s veth end on the bridge.
    pub fn veth(&self, i: usize) -> String {
        format!("{}v{i:x}", self.base)
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        for i in 0..self.hosts {
            remove_link(&self.veth(i));
            remove_namespace(&self.netns(i));
        }
        remove_link(&self.bridge());
    }
}

/// One machine of a [`Net`]: its namespace, address, data directory, log, and the
/// `skiff` process running there. Dropping it kills the process and stops its
/// containers.
pub struct Host {
    name: String,
    netns: String,
    veth: String,
    address: Ipv4Addr,
    dir: tempfile::TempDir,
    args: Vec<OsString>,
    child: Option<Child>,
    starts: u32,
    /// Runs `skiff server`: a (re)start waits for its kubeconfig and `/readyz`.
    server: bool,
}

impl Host {
    fn new(net: &Net, i: usize) -> Host {
        let dir = tempfile::Builder::new()
            .prefix(&format!("{HOST_DIR_PREFIX}{}-", net.netns(i)))
            .tempdir()
            .expect("creating the host's directory");
        std::fs::create_dir_all(dir.path().join("home")).expect("creating the kubectl home");
        Host {
            name: format!("host{i}"),
            netns: net.netns(i),
            veth: net.veth(i),
            address: net.address(i),
            dir,
            args: Vec::new(),
            child: None,
            starts: 0,
            server: false,
        }
    }

    /// Its name, `host<i>`; also its node's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Its address on the net.
    pub fn address(&self) -> Ipv4Addr {
        self.address
    }

    /// Its network namespace's name.
    pub fn netns(&self) -> &str {
        &self.netns
    }

    /// Its directory (the data directory, log and kubeconfig are below it).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The data directory its `skiff` gets.
    pub fn data_dir(&self) -> PathBuf {
        self.dir().join("data")
    }

    /// The admin kubeconfig of a server on this host, for use from outside the host:
    /// the one the server wrote, naming the host's address instead of loopback (as a
    /// user copying it off the machine edits it).
    pub fn kubeconfig(&self) -> PathBuf {
        self.dir().join("kubeconfig.yaml")
    }

    /// Where a server on this host writes the admin kubeconfig (naming loopback, as
    /// it listens on every address).
    fn local_kubeconfig(&self) -> PathBuf {
        self.dir().join("kubeconfig.local.yaml")
    }

    /// `$HOME` for kubectl run against this host (its discovery cache).
    pub fn home(&self) -> PathBuf {
        self.dir().join("home")
    }

    /// Its `skiff`'s log (stdout and stderr of every start).
    pub fn log_path(&self) -> PathBuf {
        self.dir().join("skiff.log")
    }

    /// The last lines of its log.
    pub fn log_tail(&self) -> String {
        log_tail(&self.log_path())
    }

    /// The pid of its `skiff` process, while one runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// A command that runs `program` in this host's network namespace.
    pub fn command(&self, program: impl AsRef<OsStr>) -> Command {
        let mut cmd = Command::new("nsenter");
        cmd.arg(format!("--net=/run/netns/{}", self.netns))
            .arg("--")
            .arg(program);
        cmd
    }

    /// Runs `cmd` (program and arguments) in this host's network namespace to completion.
    pub fn run(&self, cmd: &[&str]) -> Output {
        let (program, args) = cmd.split_first().expect("a command to run");
        let mut command = self.command(program);
        command.args(args);
        run_command(command, None, RUN_TIMEOUT)
    }

    /// Whether a TCP connection from this host to `to` succeeds within `timeout`
    /// (whole seconds, at least one).
    pub fn connects(&self, to: SocketAddr, timeout: Duration) -> bool {
        let secs = timeout.as_secs().max(1).to_string();
        let (ip, port) = (to.ip().to_string(), to.port().to_string());
        // `-e` runs a program on the connection, so nc exits as soon as it is made.
        self.run(&["busybox", "nc", "-w", &secs, &ip, &port, "-e", "/bin/true"])
            .status
            .success()
    }

    /// Starts `skiff args` in this host's namespace; [`restart`](Self::restart) uses the
    /// same arguments again.
    pub fn start<I, S>(&mut self, args: I)
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        self.args = args.into_iter().map(|a| a.as_ref().to_owned()).collect();
        self.launch();
    }

    fn launch(&mut self) {
        assert!(self.child.is_none(), "{} already runs skiff", self.name);
        if self.server {
            // The kubeconfig is written once the server is ready, so an old one must
            // not count as a sign of readiness after a restart.
            for old in [self.kubeconfig(), self.local_kubeconfig()] {
                match std::fs::remove_file(old) {
                    Ok(()) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => panic!("removing the old kubeconfig: {e}"),
                }
            }
        }
        self.starts += 1;
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
            .expect("opening the host's log");
        let args: Vec<_> = self.args.iter().map(|a| a.to_string_lossy()).collect();
        writeln!(
            &log,
            "===== start #{} on {} ({}): skiff {} =====",
            self.starts,
            self.name,
            self.address,
            args.join(" ")
        )
        .expect("writing the host's log");
        // nsenter enters the namespace and execs skiff: the child is skiff itself.
        let child = self
            .command(env!("CARGO_BIN_EXE_skiff"))
            .args(&self.args)
            .env("SKIFF_LOG", "info")
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("duplicating the log handle"))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("starting skiff on {}: {e}", self.name));
        self.child = Some(child);
        if self.server {
            self.wait_ready();
        }
    }

    /// Waits until the server wrote its kubeconfig and answers `/readyz` through the
    /// copy that names the host's address.
    fn wait_ready(&mut self) {
        let local = self.local_kubeconfig();
        let kubeconfig = self.kubeconfig();
        let loopback = format!("https://127.0.0.1:{API_PORT}");
        let remote = format!("https://{}:{API_PORT}", self.address);
        let what = format!("the server on {} to be ready", self.name);
        wait_until(START_TIMEOUT, &what, || {
            if let Some(status) = self.exited() {
                panic!(
                    "the server on {} exited with {status} while starting; log:\n{}",
                    self.name,
                    self.log_tail()
                );
            }
            if !kubeconfig_complete(&local) {
                return Err("no kubeconfig yet".into());
            }
            let written = std::fs::read_to_string(&local).expect("reading the kubeconfig");
            assert!(
                written.contains(&loopback),
                "the kubeconfig does not name {loopback}:\n{written}"
            );
            std::fs::write(&kubeconfig, written.replace(&loopback, &remote))
                .expect("writing the host's kubeconfig");
            if !serves_readyz(&kubeconfig) {
                return Err("/readyz does not answer ok".into());
            }
            Ok(())
        });
    }

    /// How its `skiff` ended, if it has (it is then no longer running).
    pub fn exited(&mut self) -> Option<ExitStatus> {
        let status = self
            .child
            .as_mut()
            .and_then(|c| c.try_wait().expect("polling skiff"))?;
        self.child = None;
        Some(status)
    }

    /// Stops its `skiff` with SIGTERM, or SIGKILL if it is still running after a
    /// deadline, and returns how it ended (`None` if it was not running).
    pub fn stop(&mut self) -> Option<ExitStatus> {
        let mut child = self.child.take()?;
        let _ = rustix::process::kill_process(
            rustix::process::Pid::from_child(&child),
            rustix::process::Signal::TERM,
        );
        let deadline = Instant::now() + STOP_TIMEOUT;
        while Instant::now() < deadline {
            if let Some(status) = child.try_wait().expect("polling skiff") {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        eprintln!(
            "skiff on {} did not stop within {STOP_TIMEOUT:?} of SIGTERM; killing it",
            self.name
        );
        let _ = child.kill();
        Some(child.wait().expect("waiting for skiff"))
    }

    /// Kills its `skiff` with SIGKILL, as a crash or power loss would.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Stops its `skiff` (if it runs) and starts it again with the same arguments; a
    /// server is waited for until it is ready.
    pub fn restart(&mut self) {
        assert!(self.starts > 0, "{} never started skiff", self.name);
        self.stop();
        self.launch();
    }

    /// Cuts the host off the net: its veth end on the bridge goes down.
    pub fn cut_off(&self) {
        ip_ok(&["link", "set", &self.veth, "down"]);
    }

    /// Joins the host to the net again after [`cut_off`](Self::cut_off).
    pub fn reconnect(&self) {
        ip_ok(&["link", "set", &self.veth, "up"]);
    }
}

impl Drop for Host {
    fn drop(&mut self) {
        self.kill();
        if self.data_dir().join("agent").exists() {
            stop_containers(&self.data_dir());
        }
        if std::thread::panicking() && self.starts > 0 {
            eprintln!(
                "----- skiff log of {} ({}, last lines) -----\n{}",
                self.name,
                self.address,
                self.log_tail()
            );
        }
    }
}

/// Hosts on a private [`Net`]; dropping it stops every host, then removes the net.
pub struct Cluster {
    // Fields drop in order: the hosts (their processes and containers) before the net.
    hosts: Vec<Host>,
    net: Net,
    /// The host running the server kubectl and the client talk to.
    server: Option<usize>,
}

impl Cluster {
    /// A net of `hosts` hosts, nothing running on them yet.
    pub fn new(hosts: usize) -> Cluster {
        let net = Net::new(hosts);
        let hosts = (0..hosts).map(|i| Host::new(&net, i)).collect();
        Cluster {
            hosts,
            net,
            server: None,
        }
    }

    /// The network.
    pub fn net(&self) -> &Net {
        &self.net
    }

    /// Every host.
    pub fn hosts(&self) -> &[Host] {
        &self.hosts
    }

    /// Host `i`.
    pub fn host(&self, i: usize) -> &Host {
        &self.hosts[i]
    }

    /// Host `i`, to start, stop or restart.
    pub fn host_mut(&mut self, i: usize) -> &mut Host {
        &mut self.hosts[i]
    }

    /// Runs `skiff server` with its node on host `i`, listening on every address on
    /// [`API_PORT`] as a plain `skiff server` does (so it advertises its node's address),
    /// and waits until it is ready. The node is named after the host and
    /// has busybox (`docker.io/library/busybox:latest`) in its air-gap folder. `extra`
    /// flags are added (and kept across restarts).
    pub fn start_server(&mut self, i: usize, extra: &[&str]) {
        let host = &mut self.hosts[i];
        put_busybox(&host.data_dir());
        let address = host.address.to_string();
        let mut args: Vec<OsString> = vec!["server".into(), "--data-dir".into()];
        args.push(host.data_dir().into());
        args.push("--write-kubeconfig".into());
        args.push(host.local_kubeconfig().into());
        args.extend(
            [
                "--config",
                "/dev/null",
                "--https-listen-port",
                &API_PORT.to_string(),
                "--node-ip",
                &address,
                "--node-name",
                &host.name,
            ]
            .map(OsString::from),
        );
        args.extend(extra.iter().map(OsString::from));
        host.server = true;
        host.start(args);
        self.server.get_or_insert(i);
    }

    /// Runs `skiff args` on host `i`, with busybox in the air-gap folder of its data
    /// directory (`<data_dir>/agent/images/`); `args` should pass
    /// `--data-dir <data_dir>`. Does not wait for anything.
    pub fn start_agent<I, S>(&mut self, i: usize, args: I)
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let host = &mut self.hosts[i];
        put_busybox(&host.data_dir());
        host.start(args);
    }

    /// The host running the server.
    fn server_host(&self) -> &Host {
        let i = self.server.expect("no host of the cluster runs a server");
        &self.hosts[i]
    }

    /// The server's URL, as agents are given it: `https://10.213.N.(10+i):6443`.
    pub fn server_url(&self) -> String {
        format!("https://{}:{API_PORT}", self.server_host().address)
    }

    /// The server's admin kubeconfig.
    pub fn kubeconfig(&self) -> PathBuf {
        self.server_host().kubeconfig()
    }

    /// A kubectl invocation against the server.
    pub fn kubectl(&self, which: Kubectl) -> KubectlCommand {
        let host = self.server_host();
        KubectlCommand::new(which, host.kubeconfig(), host.home(), host.dir())
    }

    /// A kube client authenticated with the server's admin kubeconfig.
    pub async fn client(&self) -> kube::Client {
        client_from(&self.kubeconfig())
            .await
            .expect("a kube client")
    }
}

/// Builds busybox into the air-gap folder of the node whose data directory is
/// `data_dir`, named as [`crate::harness::Server::start_node`] names it.
fn put_busybox(data_dir: &Path) {
    let images = data_dir.join("agent").join("images");
    std::fs::create_dir_all(&images).expect("creating the air-gap folder");
    crate::images::busybox(&images, "docker.io/library/busybox:latest");
}

// ---- tests of the harness itself ----

/// Convergence on a debug build on a busy 2-core machine.
const SOON: Duration = Duration::from_secs(60);
const KUBECTL: Kubectl = Kubectl::V132;

/// Names fit in an interface name and give back the pid and subnet they were made of;
/// other names are not taken for a test network's.
#[test]
fn names_fit_interfaces_and_parse_back() {
    // Linux pids are below 2^22 (PID_MAX_LIMIT).
    let pid = (1 << 22) - 1;
    let base = name_base(pid, 255);
    for name in [format!("{base}br"), format!("{base}v{:x}", MAX_HOSTS - 1)] {
        assert!(name.len() <= 15, "{name} is too long for an interface");
        assert_eq!(parse_name(&name), Some((pid, 255)));
    }
    assert_eq!(parse_name("skt1f-0ah3"), Some((0x1f, 10)));
    for other in [
        "skiff0",
        "skt1f-0a",
        "skt1f-0ax",
        "sktzz-00br",
        "skt1f-0av",
        "eth0",
    ] {
        assert_eq!(parse_name(other), None, "{other}");
    }
}

/// Waits until node `name` is Ready and returns it.
fn wait_node_ready(c: &Cluster, name: &str) -> Value {
    wait_until(SOON, &format!("node {name} Ready"), || {
        let out = c.kubectl(KUBECTL).run(&["get", "node", name, "-o", "json"]);
        let n: Value = serde_json::from_str(&out.stdout).map_err(|_| out.stderr.clone())?;
        let ready = n["status"]["conditions"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|c| c["type"] == "Ready" && c["status"] == "True");
        if ready {
            Ok(n)
        } else {
            Err(n["status"].to_string())
        }
    })
}

/// A server on host 0 is reached from host 1 and from the test itself; cutting host
/// 1 off makes it unreachable from there (only), reconnecting makes it reachable
/// again; a server stops cleanly on SIGTERM, and a killed one restarts and its node is
/// Ready again.
#[test]
fn hosts_reach_the_server_until_cut_off() {
    let mut c = Cluster::new(2);
    c.start_server(0, &[]);
    let host0 = c.host(0);
    let pid = host0.pid().unwrap();
    // nsenter exec'd skiff, in the host's namespace.
    assert_eq!(
        std::fs::read_link(format!("/proc/{pid}/exe")).unwrap(),
        Path::new(env!("CARGO_BIN_EXE_skiff"))
    );
    let out = Command::new("ip")
        .args(["netns", "identify", &pid.to_string()])
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), host0.netns());
    assert_eq!(
        c.server_url(),
        format!("https://{}:6443", c.net().address(0))
    );

    let node = wait_node_ready(&c, c.host(0).name());
    let addresses = node["status"]["addresses"].to_string();
    assert!(
        addresses.contains(&c.host(0).address().to_string()),
        "{addresses}"
    );
    // kube-rs reaches the host from the test's namespace, as kubectl does.
    let nodes = block_on(async {
        Api::<Node>::all(c.client().await)
            .list(&ListParams::default())
            .await
            .unwrap()
    });
    let names: Vec<_> = nodes.iter().map(|n| n.name_any()).collect();
    assert_eq!(names, ["host0"]);

    let api = SocketAddr::from((c.net().address(0), API_PORT));
    let readyz = format!("{}/readyz", c.server_url());
    let out = c.host(1).run(&[
        "busybox",
        "wget",
        "-q",
        "-O-",
        "--no-check-certificate",
        &readyz,
    ]);
    assert_eq!(out.ok().trim(), "ok", "{out:?}");
    assert!(c.host(1).connects(api, Duration::from_secs(2)));

    c.host(1).cut_off();
    let started = Instant::now();
    assert!(!c.host(1).connects(api, Duration::from_secs(2)));
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "a cut-off host should fail to connect within its timeout, took {:?}",
        started.elapsed()
    );
    // The rest of the net is untouched.
    c.kubectl(KUBECTL).run(&["get", "nodes"]).ok();
    c.host(1).reconnect();
    wait_until(
        Duration::from_secs(20),
        "host1 reaching the server again",
        || {
            c.host(1)
                .connects(api, Duration::from_secs(2))
                .then_some(())
                .ok_or_else(|| "no connection".to_string())
        },
    );

    // SIGTERM reaches skiff itself, not only nsenter, and it shuts down cleanly (its
    // node has registered: it is Ready).
    let status = c.host_mut(0).stop().unwrap();
    assert!(status.success(), "{status}; log:\n{}", c.host(0).log_tail());
    assert!(!c.host(1).connects(api, Duration::from_secs(2)));
    c.host_mut(0).restart();

    c.host_mut(0).kill();
    assert!(!c.host(1).connects(api, Duration::from_secs(2)));
    c.host_mut(0).restart();
    assert!(c.host(1).connects(api, Duration::from_secs(2)));
    wait_node_ready(&c, "host0");
}

/// What a cluster made on the machine, to check it is gone after the drop.
#[derive(Debug, Default)]
struct Traces {
    namespaces: Vec<String>,
    links: Vec<String>,
    /// Processes as (pid, start time), so a reused pid does not count.
    processes: Vec<(u32, u64)>,
    dirs: Vec<PathBuf>,
}

/// A process's start time (field 22 of `/proc/<pid>/stat`), if it exists.
fn start_time(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) is in parentheses and may hold spaces.
    let after = &stat[stat.rfind(')')? + 2..];
    after.split_whitespace().nth(19)?.parse().ok()
}

/// The processes whose cgroup path holds `needle` (a pod's containers).
fn processes_in_cgroup(needle: &str) -> Vec<u32> {
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/cgroup")).is_ok_and(|c| c.contains(needle))
        })
        .collect()
}

impl Traces {
    /// What `c` has made so far, with the containers of the pods `pod_uids`.
    fn of(c: &Cluster, pod_uids: &[String]) -> Traces {
        let net = c.net();
        let mut links = vec![net.bridge()];
        links.extend((0..net.hosts()).map(|i| net.veth(i)));
        let namespaces: Vec<String> = (0..net.hosts()).map(|i| net.netns(i)).collect();
        let mut pids: Vec<u32> = namespaces
            .iter()
            .flat_map(|ns| {
                ip(&["netns", "pids", ns])
                    .unwrap()
                    .split_whitespace()
                    .map(|p| p.parse::<u32>().unwrap())
                    .collect::<Vec<_>>()
            })
            .collect();
        for uid in pod_uids {
            pids.extend(processes_in_cgroup(&format!("/skiff/pod{uid}")));
        }
        let processes = pids
            .into_iter()
            .filter_map(|p| Some((p, start_time(p)?)))
            .collect();
        Traces {
            namespaces,
            links,
            processes,
            dirs: c.hosts().iter().map(|h| h.dir().to_owned()).collect(),
        }
    }

    #[track_caller]
    fn assert_gone(&self) {
        let left: Vec<_> = namespaces()
            .into_iter()
            .filter(|n| self.namespaces.contains(n))
            .collect();
        assert!(left.is_empty(), "namespaces left: {left:?}");
        let left: Vec<_> = links()
            .into_iter()
            .filter(|l| self.links.contains(l))
            .collect();
        assert!(left.is_empty(), "links left: {left:?}");
        let left: Vec<_> = self
            .processes
            .iter()
            .filter(|(pid, start)| start_time(*pid) == Some(*start))
            .collect();
        assert!(left.is_empty(), "processes left: {left:?}");
        let left: Vec<_> = self.dirs.iter().filter(|d| d.exists()).collect();
        assert!(left.is_empty(), "directories left: {left:?}");
    }
}

/// Dropping a cluster removes its namespaces, links, processes (the servers, what
/// runs on other hosts, the node's containers) and directories, also when the drop
/// comes from a panic.
#[test]
fn dropping_a_cluster_leaves_nothing() {
    // A server whose node runs a pod, and simulated nodes on another host.
    let mut c = Cluster::new(2);
    c.start_server(0, &[]);
    let kubeconfig = c.kubeconfig();
    let data_dir = c.host(1).data_dir();
    // `sim-nodes` takes no data directory: busybox is put in the host's all the same.
    c.start_agent(
        1,
        [
            OsStr::new("sim-nodes"),
            OsStr::new("--kubeconfig"),
            kubeconfig.as_os_str(),
        ],
    );
    assert!(
        data_dir
            .join("agent/images/docker.io_library_busybox_latest.tar")
            .is_file(),
        "busybox in the agent's air-gap folder"
    );
    wait_node_ready(&c, "sim-0");
    c.kubectl(KUBECTL)
        .stdin(
            json!({
                "apiVersion": "v1", "kind": "Pod", "metadata": {"name": "sleeper"},
                "spec": {
                    "nodeName": "host0",
                    "terminationGracePeriodSeconds": 1,
                    "containers": [{"name": "main", "image": "busybox",
                                    // The node has it: no pull from docker.io first.
                                    "imagePullPolicy": "IfNotPresent",
                                    "command": ["sleep", "3600"]}]
                }
            })
            .to_string(),
        )
        .run(&["apply", "-f", "-"])
        .ok();
    let uid = wait_until(SOON, "the pod Running", || {
        let out = c
            .kubectl(KUBECTL)
            .run(&["get", "pod", "sleeper", "-o", "json"]);
        let p: Value = serde_json::from_str(&out.stdout).map_err(|_| out.stderr.clone())?;
        if p["status"]["phase"] == "Running" {
            Ok(p["metadata"]["uid"].as_str().unwrap().to_string())
        } else {
            Err(p["status"].to_string())
        }
    });
    let traces = Traces::of(&c, &[uid]);
    assert!(
        traces.processes.len() >= 4,
        "the server, the simulated nodes, a shim and a container: {traces:?}"
    );
    drop(c);
    traces.assert_gone();

    // The same when a test fails with the cluster in hand.
    let seen = Mutex::new(Traces::default());
    let result = std::panic::catch_unwind(|| {
        let mut c = Cluster::new(2);
        c.start_server(1, &[]);
        *seen.lock().unwrap() = Traces::of(&c, &[]);
        panic!("a test fails");
    });
    assert!(result.is_err());
    let traces = seen.into_inner().unwrap();
    assert_eq!(traces.processes.len(), 1, "{traces:?}");
    traces.assert_gone();
}
