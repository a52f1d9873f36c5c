//! The datastore: a watch cache in memory over a durable, revisioned log.
//!
//! Every write gets the next value of one global revision counter, which is the
//! Kubernetes `resourceVersion`. [`Store`] keeps the current value of every key and a
//! window of recent events in memory, so gets, lists and watches never touch disk; only
//! writes do, through a single writer thread that batches whatever writes are waiting
//! into one transaction (group commit) and answers each caller only once that
//! transaction is durable. The log itself sits behind the [`Backend`] trait: SQLite is
//! the embedded default ([`sqlite`]); a backend for several servers plugs in the same way.
//!
//! Values are Kubernetes objects as JSON. The store stamps `metadata.resourceVersion`
//! into each value as it assigns the revision, so a read never re-encodes an object.
//! Secrets can be encrypted at rest: [`encrypted::Encrypted`] wraps the backend, so
//! memory holds plaintext and the disk ciphertext.

mod cache;
pub mod encrypted;
pub mod sqlite;

pub use cache::{ListPage, Store, StoreConfig, Watch};

use bytes::Bytes;
use std::sync::Arc;

/// A revision of the store: the `resourceVersion` of Kubernetes.
pub type Revision = i64;

/// Errors of the datastore.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The key does not exist.
    #[error("key not found")]
    NotFound,
    /// A create found the key already there.
    #[error("key already exists")]
    AlreadyExists,
    /// An update or delete expected another revision of the key.
    #[error("revision conflict: expected {expected}, found {found}")]
    Conflict {
        /// The revision the caller based its write on.
        expected: Revision,
        /// The key's current revision.
        found: Revision,
    },
    /// A watch or continue asked for a revision older than the history kept.
    #[error("revision {requested} has been compacted; the oldest available is {oldest}")]
    Compacted {
        /// The revision asked for.
        requested: Revision,
        /// The oldest revision a watch may start after.
        oldest: Revision,
    },
    /// The value to write is not a JSON object.
    #[error("value is not a JSON object")]
    NotAnObject,
    /// The durable log failed; the write was not applied.
    #[error("datastore backend failed")]
    Backend(#[source] BackendError),
    /// The writer has stopped (the server is shutting down).
    #[error("datastore is closed")]
    Closed,
}

/// An error of a [`Backend`], kept as a cause chain.
pub type BackendError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Result of the datastore.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// One key at one revision.
#[derive(Debug, Clone)]
pub struct Entry {
    /// The key, e.g. `/registry/core/configmaps/default/settings`.
    pub key: Arc<str>,
    /// The object as JSON, with `metadata.resourceVersion` equal to `revision`.
    pub value: Bytes,
    /// The revision of the write that produced this value.
    pub revision: Revision,
    /// The revision at which the key was created.
    pub create_revision: Revision,
}

/// What happened to a key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventKind {
    /// Created or updated: `entry` is the new value.
    Put,
    /// Deleted: `entry` is the last value, stamped with the deletion's revision.
    Delete,
}

/// One change, as watches see it.
#[derive(Debug, Clone)]
pub struct Event {
    /// Put or delete.
    pub kind: EventKind,
    /// The value after the change (for a delete, the last value at the delete's revision).
    pub entry: Entry,
    /// The value before the change, if the key existed.
    pub prev: Option<Entry>,
}

/// A write asked of the store.
#[derive(Debug)]
pub enum WriteOp {
    /// Create `key`; fails with [`Error::AlreadyExists`] if it exists.
    Create {
        /// The key.
        key: String,
        /// The object.
        value: serde_json::Value,
    },
    /// Replace `key`; fails with [`Error::NotFound`], or with [`Error::Conflict`] if
    /// `expected` is given and is not the key's current revision.
    Update {
        /// The key.
        key: String,
        /// The object.
        value: serde_json::Value,
        /// The revision the caller read.
        expected: Option<Revision>,
    },
    /// Delete `key`, with the same preconditions as an update.
    Delete {
        /// The key.
        key: String,
        /// The revision the caller read.
        expected: Option<Revision>,
    },
}

impl WriteOp {
    fn key(&self) -> &str {
        match self {
            WriteOp::Create { key, .. }
            | WriteOp::Update { key, .. }
            | WriteOp::Delete { key, .. } => key,
        }
    }
}

/// One row of the durable log.
#[derive(Debug, Clone)]
pub struct Row {
    /// The revision (unique, increasing).
    pub revision: Revision,
    /// The key.
    pub key: Arc<str>,
    /// The value (for a delete: the last value, stamped with this revision).
    pub value: Bytes,
    /// The revision at which the key was created.
    pub create_revision: Revision,
    /// The key's previous revision, 0 if it did not exist.
    pub prev_revision: Revision,
    /// Whether this row deletes the key.
    pub deleted: bool,
}

/// What a backend hands back at start.
#[derive(Debug, Default)]
pub struct Loaded {
    /// Every row kept, in revision order.
    pub rows: Vec<Row>,
    /// The revision up to which history was compacted.
    pub compacted: Revision,
    /// The highest revision ever written (may exceed the last row's, after deletes were compacted).
    pub revision: Revision,
}

/// The durable, revisioned log under the watch cache. Only the writer thread calls it,
/// so implementations are synchronous and need no locking of their own.
pub trait Backend: Send + 'static {
    /// Reads everything kept: the latest row of every live key and all rows after the
    /// compaction point.
    fn load(&mut self) -> Result<Loaded, BackendError>;
    /// Appends rows atomically and durably: when this returns `Ok` they survive a crash.
    fn commit(&mut self, rows: &[Row]) -> Result<(), BackendError>;
    /// Forgets history up to `revision`: rows superseded at or before it and deletions at
    /// or before it. The state as of `revision` and everything after stay.
    fn compact(&mut self, revision: Revision) -> Result<(), BackendError>;
    /// Replaces, in place and in one transaction, the stored value of each kept row
    /// (current or history) whose key starts with `prefix` and for which `f` returns a
    /// new value; revisions stay. Once it returns, no trace of a replaced value is left
    /// in the backend's files. A backend that transforms values on their way to disk
    /// (encryption) hands `f` the values as loaded, and also stores again every row
    /// whose stored form is out of date, so `f` returning `None` for every row brings
    /// the rows under `prefix` up to date. Returns how many rows were stored again.
    fn rewrite(
        &mut self,
        prefix: &str,
        f: &mut dyn FnMut(&Row) -> Result<Option<Bytes>, BackendError>,
    ) -> Result<usize, BackendError>;
}
