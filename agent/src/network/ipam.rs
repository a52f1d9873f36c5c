//! Host-local address management: the addresses of this node's pod range, each held by
//! one pod, kept on disk so that no address is handed out twice or lost across a crash.
//!
//! One file per address held, named by the address and holding the pod's uid, made with
//! `O_CREAT|O_EXCL`: a file that exists is a held address, whatever happened to the
//! process after. A crash between making the file and writing the uid leaves an empty
//! file, which [`Ipam::collect`] frees. The next address is looked for after the last
//! one given (kept in `last`), so a freed address is not reused at once, as upstream's
//! host-local plugin does: a pod's old address may still be cached by its peers.

use ipnet::Ipv4Net;
use std::io::{self, Write};
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

/// Errors of the address store.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Reading or writing the store failed.
    #[error("{what} {path}")]
    Io {
        /// What was being done.
        what: &'static str,
        /// The file or folder.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// Every address of the range is held.
    #[error("no free address left in {0}")]
    Full(Ipv4Net),
}

/// A `Result` with this module's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// The addresses of one pod range.
#[derive(Debug, Clone)]
pub struct Ipam {
    dir: PathBuf,
    range: Ipv4Net,
}

impl Ipam {
    /// The store of `range` in `dir` (made if missing). Ranges are kept apart, so a node
    /// given a new range starts clean.
    pub fn open(dir: &Path, range: Ipv4Net) -> Result<Ipam> {
        let dir = dir.join(range.to_string().replace('/', "-"));
        std::fs::create_dir_all(&dir).map_err(|source| Error::Io {
            what: "making the address store",
            path: dir.clone(),
            source,
        })?;
        Ok(Ipam { dir, range })
    }

    /// The range's gateway: its first address, on the node's bridge.
    pub fn gateway(&self) -> Ipv4Addr {
        first_host(self.range)
    }

    /// The range.
    pub fn range(&self) -> Ipv4Net {
        self.range
    }

    /// The address `owner` holds, holding a new one if it holds none.
    pub fn allocate(&self, owner: &str) -> Result<Ipv4Addr> {
        if let Some(ip) = self.held_by(owner)? {
            return Ok(ip);
        }
        let hosts: Vec<Ipv4Addr> = self.range.hosts().skip(1).collect();
        let last = std::fs::read_to_string(self.dir.join("last"))
            .ok()
            .and_then(|s| s.trim().parse::<Ipv4Addr>().ok());
        let start = last
            .and_then(|l| hosts.iter().position(|h| *h == l))
            .map_or(0, |i| i + 1);
        for i in 0..hosts.len() {
            let ip = hosts[(start + i) % hosts.len()];
            let path = self.dir.join(ip.to_string());
            match std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&path)
            {
                Ok(mut f) => {
                    f.write_all(owner.as_bytes())
                        .and_then(|()| f.sync_all())
                        .map_err(|source| Error::Io {
                            what: "writing",
                            path: path.clone(),
                            source,
                        })?;
                    let last = self.dir.join("last");
                    std::fs::write(&last, ip.to_string()).map_err(|source| Error::Io {
                        what: "writing",
                        path: last,
                        source,
                    })?;
                    return Ok(ip);
                }
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
                Err(source) => {
                    return Err(Error::Io {
                        what: "making",
                        path,
                        source,
                    })
                }
            }
        }
        Err(Error::Full(self.range))
    }

    /// The address `owner` holds, if any.
    pub fn held_by(&self, owner: &str) -> Result<Option<Ipv4Addr>> {
        Ok(self
            .holders()?
            .into_iter()
            .find(|(_, o)| o == owner)
            .map(|(ip, _)| ip))
    }

    /// Frees what `owner` holds.
    pub fn release(&self, owner: &str) -> Result<()> {
        for (ip, o) in self.holders()? {
            if o == owner {
                self.free(ip)?;
            }
        }
        Ok(())
    }

    /// Every held address and its holder (empty for a file a crash left unwritten).
    pub fn holders(&self) -> Result<Vec<(Ipv4Addr, String)>> {
        let read = std::fs::read_dir(&self.dir).map_err(|source| Error::Io {
            what: "reading the address store",
            path: self.dir.clone(),
            source,
        })?;
        let mut out = Vec::new();
        for entry in read.flatten() {
            let Ok(ip) = entry.file_name().to_string_lossy().parse::<Ipv4Addr>() else {
                continue;
            };
            let owner = std::fs::read_to_string(entry.path()).unwrap_or_default();
            out.push((ip, owner.trim().to_string()));
        }
        out.sort();
        Ok(out)
    }

    /// Frees every address whose holder `keep` does not want kept (pods gone while the
    /// node was down) and every address a crash left without a holder. Returns them.
    pub fn collect(&self, keep: impl Fn(&str) -> bool) -> Result<Vec<Ipv4Addr>> {
        let mut freed = Vec::new();
        for (ip, owner) in self.holders()? {
            if owner.is_empty() || !keep(&owner) {
                self.free(ip)?;
                freed.push(ip);
            }
        }
        Ok(freed)
    }

    fn free(&self, ip: Ipv4Addr) -> Result<()> {
        let path = self.dir.join(ip.to_string());
        match std::fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(source) => Err(Error::Io {
                what: "removing",
                path,
                source,
            }),
        }
    }
}

/// The first host address of `range` (its gateway; for a node's range the overlay's
/// address is the network address itself).
pub fn first_host(range: Ipv4Net) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(range.network()).saturating_add(1))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store(range: &str) -> (tempfile::TempDir, Ipam) {
        let dir = tempfile::tempdir().unwrap();
        let ipam = Ipam::open(dir.path(), range.parse().unwrap()).unwrap();
        (dir, ipam)
    }

    #[test]
    fn addresses_skip_the_gateway_and_are_not_reused_at_once() {
        let (_d, ipam) = store("10.42.1.0/24");
        assert_eq!(ipam.gateway(), Ipv4Addr::new(10, 42, 1, 1));
        let a = ipam.allocate("a").unwrap();
        assert_eq!(a, Ipv4Addr::new(10, 42, 1, 2));
        // The same owner keeps its address.
        assert_eq!(ipam.allocate("a").unwrap(), a);
        let b = ipam.allocate("b").unwrap();
        assert_eq!(b, Ipv4Addr::new(10, 42, 1, 3));
        ipam.release("a").unwrap();
        // The freed .2 comes back only after the rest of the range.
        assert_eq!(ipam.allocate("c").unwrap(), Ipv4Addr::new(10, 42, 1, 4));
        assert_eq!(ipam.held_by("a").unwrap(), None);
    }

    #[test]
    fn a_full_range_says_so_and_wraps_around_when_freed() {
        let (_d, ipam) = store("10.42.1.0/29");
        // .1 is the gateway and .7 the broadcast: .2 to .6 are pods'.
        for i in 0..5 {
            ipam.allocate(&format!("p{i}")).unwrap();
        }
        assert!(matches!(ipam.allocate("x"), Err(Error::Full(_))));
        ipam.release("p1").unwrap();
        assert_eq!(ipam.allocate("x").unwrap(), Ipv4Addr::new(10, 42, 1, 3));
    }

    #[test]
    fn collect_frees_gone_pods_and_unwritten_files() {
        let (d, ipam) = store("10.42.1.0/24");
        ipam.allocate("live").unwrap();
        ipam.allocate("gone").unwrap();
        // What a crash between creating and writing leaves.
        std::fs::write(d.path().join("10.42.1.0-24").join("10.42.1.9"), "").unwrap();
        let freed = ipam.collect(|o| o == "live").unwrap();
        assert_eq!(
            freed,
            vec![Ipv4Addr::new(10, 42, 1, 3), Ipv4Addr::new(10, 42, 1, 9)]
        );
        assert_eq!(ipam.holders().unwrap().len(), 1);
    }

    #[test]
    fn the_store_survives_reopening() {
        let (d, ipam) = store("10.42.1.0/24");
        let a = ipam.allocate("a").unwrap();
        let again = Ipam::open(d.path(), "10.42.1.0/24".parse().unwrap()).unwrap();
        assert_eq!(again.held_by("a").unwrap(), Some(a));
        assert_ne!(again.allocate("b").unwrap(), a);
    }
}
