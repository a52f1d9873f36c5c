//! The one trait the kubelet runs workloads through. Containers (libcontainer behind a
//! shim, [`crate::container::Containers`]) implement it; the WebAssembly runtime will
//! implement it beside them, chosen by a pod's `runtimeClassName`. It is kept to what
//! the kubelet needs: start a run, observe it (status, labels, list, wait), stop it
//! (signal), run a process in it (exec), reach its own stdio (attach), and forget it
//! (remove).

pub use crate::container::runtime::{Error, NewContainer, Status};
pub use crate::container::State;
use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;

/// A boxed future, so that the trait can be used as `dyn Runtime`.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// A runtime of pods' containers.
pub trait Runtime: Send + Sync {
    /// The handler name a RuntimeClass gives for it (`runc`-like runtimes are the
    /// default, with no RuntimeClass).
    fn handler(&self) -> &'static str;
    /// Starts a new run; returns once it runs, or why it could not start.
    fn start<'a>(&'a self, new: NewContainer<'a>) -> BoxFuture<'a, Result<State, Error>>;
    /// A run's status now; `None` when it is unknown or still starting.
    fn status(&self, id: &str) -> Result<Option<Status>, Error>;
    /// The labels the kubelet gave a run.
    fn labels(&self, id: &str) -> Result<BTreeMap<String, String>, Error>;
    /// Every run it knows, running or ended.
    fn list(&self) -> Result<Vec<String>, Error>;
    /// Sends a signal to a running run.
    fn signal(&self, id: &str, signal: rustix::process::Signal) -> Result<(), Error>;
    /// Resolves once the run has ended (at once if it has).
    fn wait<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<(), Error>>;
    /// The command that runs `args` inside a running run (exec, probes, hooks), on a
    /// terminal with `tty`.
    fn exec_command(&self, id: &str, args: &[String], tty: bool) -> tokio::process::Command;
    /// A connection to a running run's own stdio (`kubectl attach`), speaking the
    /// frames of [`crate::container::attach`].
    fn attach<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<tokio::net::UnixStream, Error>>;
    /// Forgets an ended run.
    fn remove(&self, id: &str) -> Result<(), Error>;
}

impl Runtime for crate::container::Containers {
    fn handler(&self) -> &'static str {
        "runc"
    }
    fn start<'a>(&'a self, new: NewContainer<'a>) -> BoxFuture<'a, Result<State, Error>> {
        Box::pin(crate::container::Containers::start(self, new))
    }
    fn status(&self, id: &str) -> Result<Option<Status>, Error> {
        crate::container::Containers::status(self, id)
    }
    fn labels(&self, id: &str) -> Result<BTreeMap<String, String>, Error> {
        crate::container::Containers::labels(self, id)
    }
    fn list(&self) -> Result<Vec<String>, Error> {
        crate::container::Containers::list(self)
    }
    fn signal(&self, id: &str, signal: rustix::process::Signal) -> Result<(), Error> {
        crate::container::Containers::signal(self, id, signal)
    }
    fn wait<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<(), Error>> {
        Box::pin(crate::container::Containers::wait(self, id))
    }
    fn exec_command(&self, id: &str, args: &[String], tty: bool) -> tokio::process::Command {
        crate::container::Containers::exec_command(self, id, args, tty)
    }
    fn attach<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<tokio::net::UnixStream, Error>> {
        Box::pin(crate::container::Containers::attach(self, id))
    }
    fn remove(&self, id: &str) -> Result<(), Error> {
        crate::container::Containers::remove(self, id)
    }
}
