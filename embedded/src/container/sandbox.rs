//! A pod's shared namespaces: network, IPC and UTS, made once per pod and bound to files
//! in the pod's folder (as `ip netns add` does), so they live without any process and the
//! pod's containers join them by path. No pause container is needed.
//!
//! They are made on a thread of their own that unshares and then ends: namespaces belong
//! to a thread, so the rest of the process keeps the host's.

use std::io;
use std::path::{Path, PathBuf};

/// Errors of making or removing a pod's namespaces.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A step failed.
    #[error("{what}")]
    Step {
        /// What was being done.
        what: &'static str,
        /// The cause.
        #[source]
        source: io::Error,
    },
}

fn step(what: &'static str) -> impl FnOnce(nix::Error) -> Error {
    move |e| Error::Step {
        what,
        source: io::Error::from(e),
    }
}

/// The namespace files of a pod.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Namespaces {
    /// Network; `None` for hostNetwork pods.
    pub net: Option<PathBuf>,
    /// IPC.
    pub ipc: PathBuf,
    /// UTS; `None` for hostNetwork pods (they share the host's name, as upstream).
    pub uts: Option<PathBuf>,
}

/// Where the namespace files of the pod in `dir` are.
pub fn paths(dir: &Path, host_network: bool) -> Namespaces {
    Namespaces {
        net: (!host_network).then(|| dir.join("ns-net")),
        ipc: dir.join("ns-ipc"),
        uts: (!host_network).then(|| dir.join("ns-uts")),
    }
}

/// Makes the pod's namespaces (if they are not there yet), with `hostname` and the
/// loopback interface up.
pub fn create(dir: &Path, hostname: &str, host_network: bool) -> Result<Namespaces, Error> {
    let ns = paths(dir, host_network);
    if ns
        .net
        .iter()
        .chain([&ns.ipc])
        .chain(ns.uts.iter())
        .all(|p| is_mounted(p))
    {
        return Ok(ns);
    }
    std::fs::create_dir_all(dir).map_err(|source| Error::Step {
        what: "creating the pod's folder",
        source,
    })?;
    let (ns2, hostname) = (ns.clone(), hostname.to_string());
    std::thread::spawn(move || unshare_and_bind(&ns2, &hostname))
        .join()
        .map_err(|_| Error::Step {
            what: "making the pod's namespaces",
            source: io::Error::other("the thread panicked"),
        })??;
    Ok(ns)
}

fn unshare_and_bind(ns: &Namespaces, hostname: &str) -> Result<(), Error> {
    use nix::mount::{mount, MsFlags};
    use nix::sched::{unshare, CloneFlags};
    let mut flags = CloneFlags::CLONE_NEWIPC;
    if ns.net.is_some() {
        flags |= CloneFlags::CLONE_NEWNET | CloneFlags::CLONE_NEWUTS;
    }
    unshare(flags).map_err(step("unsharing the pod's namespaces"))?;
    if ns.uts.is_some() {
        nix::unistd::sethostname(hostname).map_err(step("setting the pod's hostname"))?;
    }
    if ns.net.is_some() {
        loopback_up()?;
    }
    let tid = nix::unistd::gettid();
    let mut binds = vec![("ipc", &ns.ipc)];
    if let Some(net) = &ns.net {
        binds.push(("net", net));
    }
    if let Some(uts) = &ns.uts {
        binds.push(("uts", uts));
    }
    for (kind, target) in binds {
        if !target.exists() {
            std::fs::File::create(target).map_err(|source| Error::Step {
                what: "creating a namespace file",
                source,
            })?;
        }
        let source = format!("/proc/self/task/{tid}/ns/{kind}");
        mount(
            Some(source.as_str()),
            target.as_path(),
            None::<&str>,
            MsFlags::MS_BIND,
            None::<&str>,
        )
        .map_err(step("binding a namespace to its file"))?;
    }
    Ok(())
}

fn loopback_up() -> Result<(), Error> {
    use libcontainer::network::link::LinkClient;
    use libcontainer::network::wrapper::create_network_client;
    let err = |e: libcontainer::network::NetworkError| Error::Step {
        what: "bringing the pod's loopback up",
        source: io::Error::other(e),
    };
    let mut links = LinkClient::new(create_network_client()).map_err(err)?;
    let lo = links.get_by_name("lo").map_err(err)?;
    links.set_up(lo.header.index).map_err(err)
}

/// Whether `path` is a namespace bound to a file (rather than an empty file).
fn is_mounted(path: &Path) -> bool {
    // A bound namespace file is on nsfs, whose files have no size and a different
    // device than the folder.
    match (
        std::fs::metadata(path),
        path.parent().map(std::fs::metadata),
    ) {
        (Ok(f), Some(Ok(d))) => {
            use std::os::unix::fs::MetadataExt;
            f.dev() != d.dev()
        }
        _ => false,
    }
}

/// Unbinds and removes the pod's namespace files; the namespaces go with their last user.
pub fn remove(dir: &Path) -> Result<(), Error> {
    for name in ["ns-net", "ns-ipc", "ns-uts"] {
        let path = dir.join(name);
        if is_mounted(&path) {
            nix::mount::umount2(&path, nix::mount::MntFlags::MNT_DETACH)
                .map_err(step("unbinding a namespace file"))?;
        }
        match std::fs::remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(source) => {
                return Err(Error::Step {
                    what: "removing a namespace file",
                    source,
                })
            }
        }
    }
    Ok(())
}
