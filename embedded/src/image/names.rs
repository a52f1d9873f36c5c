//! Image names: which manifest each normalized reference names, kept in one JSON file
//! (`names.json`) that is replaced whole (write aside, sync, rename), so a crash leaves
//! either the old names or the new ones.

use super::blobs::Digest;
use super::reference;
use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

/// What can go wrong with the names.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The name is not a valid image reference.
    #[error(transparent)]
    Reference(#[from] reference::Error),
    /// The file could not be read or written.
    #[error("{what} {}", path.display())]
    Io {
        /// What was being done.
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// The file is not what this module writes.
    #[error("{} is damaged: {message}", path.display())]
    Damaged {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
}

/// The names, loaded; changes are written through at once.
#[derive(Debug)]
pub struct Names {
    path: PathBuf,
    names: BTreeMap<String, Digest>,
}

impl Names {
    /// Loads `<dir>/names.json` (none yet: no names).
    pub fn open(dir: &Path) -> Result<Names, Error> {
        let path = dir.join("names.json");
        let names = match fs::read(&path) {
            Ok(bytes) => {
                let damaged = |message: String| Error::Damaged {
                    path: path.clone(),
                    message,
                };
                let raw: BTreeMap<String, String> =
                    serde_json::from_slice(&bytes).map_err(|e| damaged(e.to_string()))?;
                raw.into_iter()
                    .map(|(name, d)| {
                        let d = d
                            .parse::<Digest>()
                            .map_err(|e| damaged(format!("{name}: {e}")))?;
                        Ok((name, d))
                    })
                    .collect::<Result<_, Error>>()?
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => BTreeMap::new(),
            Err(source) => {
                return Err(Error::Io {
                    what: "reading",
                    path,
                    source,
                })
            }
        };
        Ok(Names { path, names })
    }

    /// Points `image` (normalized first) at `digest`; returns the normalized name.
    pub fn set(&mut self, image: &str, digest: &Digest) -> Result<String, Error> {
        let name = reference::canonical(&reference::normalize(image)?);
        let old = self.names.insert(name.clone(), digest.clone());
        if let Err(e) = self.save() {
            match old {
                Some(d) => self.names.insert(name, d),
                None => self.names.remove(&name),
            };
            return Err(e);
        }
        Ok(name)
    }

    /// What `image` names, if anything.
    pub fn get(&self, image: &str) -> Result<Option<&Digest>, Error> {
        let name = reference::canonical(&reference::normalize(image)?);
        Ok(self.names.get(&name))
    }

    /// Forgets `image`; returns what it named.
    pub fn remove(&mut self, image: &str) -> Result<Option<Digest>, Error> {
        let name = reference::canonical(&reference::normalize(image)?);
        let Some(old) = self.names.remove(&name) else {
            return Ok(None);
        };
        if let Err(e) = self.save() {
            self.names.insert(name, old);
            return Err(e);
        }
        Ok(Some(old))
    }

    /// Every name and its manifest, in name order.
    pub fn list(&self) -> impl Iterator<Item = (&str, &Digest)> {
        self.names.iter().map(|(n, d)| (n.as_str(), d))
    }

    fn save(&self) -> Result<(), Error> {
        let io = |what: &'static str, path: &Path| {
            let path = path.to_owned();
            move |source| Error::Io { what, path, source }
        };
        let raw: BTreeMap<&str, String> = self
            .names
            .iter()
            .map(|(n, d)| (n.as_str(), d.to_string()))
            .collect();
        let bytes = serde_json::to_vec_pretty(&raw).map_err(|e| Error::Damaged {
            path: self.path.clone(),
            message: e.to_string(),
        })?;
        let temp = self.path.with_extension("json.new");
        let mut file = File::create(&temp).map_err(io("writing", &temp))?;
        file.write_all(&bytes)
            .and_then(|()| file.sync_all())
            .map_err(io("writing", &temp))?;
        fs::rename(&temp, &self.path).map_err(io("replacing", &self.path))?;
        if let Some(dir) = self.path.parent() {
            File::open(dir)
                .and_then(|d| d.sync_all())
                .map_err(io("syncing", dir))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_normalized_kept_across_opens_and_removed() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (a, b) = (Digest::of(b"a"), Digest::of(b"b"));
        let mut names = Names::open(dir.path()).expect("open");
        assert_eq!(
            names.set("busybox", &a).expect("set"),
            "docker.io/library/busybox:latest"
        );
        names.set("localhost:5000/app:1", &b).expect("set");
        let names = Names::open(dir.path()).expect("reopen");
        assert_eq!(
            names.get("docker.io/library/busybox:latest").expect("get"),
            Some(&a)
        );
        assert_eq!(names.get("busybox:latest").expect("get"), Some(&a));
        let listed: Vec<&str> = names.list().map(|(n, _)| n).collect();
        assert_eq!(
            listed,
            ["docker.io/library/busybox:latest", "localhost:5000/app:1"]
        );
        let mut names = names;
        assert_eq!(names.remove("busybox").expect("remove"), Some(a));
        assert_eq!(names.remove("busybox").expect("remove"), None);
        let names = Names::open(dir.path()).expect("reopen");
        assert_eq!(names.list().count(), 1);
        assert!(!dir.path().join("names.json.new").exists());
    }

    #[test]
    fn bad_names_and_a_damaged_file_are_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut names = Names::open(dir.path()).expect("open");
        let err = names.set("Not A Name", &Digest::of(b"x")).unwrap_err();
        assert!(err.to_string().contains("invalid image reference"), "{err}");
        fs::write(dir.path().join("names.json"), b"{\"x\": \"sha256:12\"}").expect("write");
        let err = Names::open(dir.path()).unwrap_err().to_string();
        assert!(err.contains("is damaged: x: invalid digest"), "{err}");
    }
}
