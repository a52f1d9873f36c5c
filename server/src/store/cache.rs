//! The watch cache: current state and recent history in memory, one writer thread that
//! group-commits to the [`Backend`].

use super::{Backend, Entry, Error, Event, EventKind, Result, Revision, Row, WriteOp};
use bytes::Bytes;
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::ops::Bound;
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};
use tokio::sync::{mpsc, oneshot, watch};

/// Tuning of the store.
#[derive(Debug, Clone)]
pub struct StoreConfig {
    /// How many events are kept for watches to resume from. A watch older than that
    /// gets [`Error::Compacted`] (410 Gone on the API), as upstream's watch cache does.
    pub history: usize,
    /// The most writes committed in one transaction.
    pub max_batch: usize,
    /// How many writes between compactions of the backend.
    pub compact_every: usize,
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            history: 10_000,
            max_batch: 512,
            compact_every: 1_000,
        }
    }
}

struct State {
    revision: Revision,
    objects: BTreeMap<Arc<str>, Entry>,
    /// Events in revision order; the first one's revision minus one is the oldest
    /// revision a watch may resume from.
    history: VecDeque<Event>,
    /// The oldest revision a watch may start after (history before it is gone).
    oldest: Revision,
}

struct Shared {
    state: RwLock<State>,
    revision_tx: watch::Sender<Revision>,
}

impl Shared {
    // A poisoned lock means a panic mid-update elsewhere; the data is still a consistent
    // map (updates are applied in one go), so keep serving rather than cascade the panic.
    fn read(&self) -> RwLockReadGuard<'_, State> {
        self.state.read().unwrap_or_else(|e| e.into_inner())
    }
    fn write(&self) -> RwLockWriteGuard<'_, State> {
        self.state.write().unwrap_or_else(|e| e.into_inner())
    }
}

type Reply = oneshot::Sender<Result<Entry>>;

/// What the writer thread is asked to do.
enum Request {
    /// One write; batched with the others waiting.
    Write(WriteOp, Reply),
    /// [`Backend::rewrite`] of the rows under a prefix, between two batches.
    Rewrite {
        prefix: String,
        reply: oneshot::Sender<Result<usize>>,
    },
}

/// The most events one [`Watch::next`] hands out, so one slow reader does not hold the
/// lock long.
const MAX_WATCH_BATCH: usize = 1024;

/// The datastore as the API server sees it. Cheap to clone.
#[derive(Clone)]
pub struct Store {
    shared: Arc<Shared>,
    writes: mpsc::Sender<Request>,
}

/// One page of a list.
#[derive(Debug)]
pub struct ListPage {
    /// The matching entries, in key order.
    pub items: Vec<Entry>,
    /// The revision the list was read at.
    pub revision: Revision,
    /// If the page was cut by the limit: the last key returned (continue after it).
    pub next: Option<Arc<str>>,
    /// How many more matching entries there are after this page, when `next` is set.
    pub remaining: usize,
}

impl Store {
    /// Loads the backend's log into memory and starts the writer thread.
    pub fn open<B: Backend>(mut backend: B, config: StoreConfig) -> Result<Store> {
        let loaded = backend.load().map_err(Error::Backend)?;
        let mut objects: BTreeMap<Arc<str>, Entry> = BTreeMap::new();
        let mut history = VecDeque::new();
        let mut revision = loaded.revision.max(loaded.compacted);
        for row in loaded.rows {
            revision = revision.max(row.revision);
            let entry = Entry {
                key: row.key.clone(),
                value: row.value,
                revision: row.revision,
                create_revision: row.create_revision,
            };
            let prev = if row.deleted {
                objects.remove(&row.key)
            } else {
                objects.insert(row.key.clone(), entry.clone())
            };
            if row.revision > loaded.compacted {
                history.push_back(Event {
                    kind: if row.deleted {
                        EventKind::Delete
                    } else {
                        EventKind::Put
                    },
                    entry,
                    prev,
                });
            }
        }
        let mut oldest = loaded.compacted;
        while history.len() > config.history {
            if let Some(e) = history.pop_front() {
                oldest = e.entry.revision;
            }
        }
        tracing::info!(
            revision,
            keys = objects.len(),
            history = history.len(),
            "datastore loaded"
        );
        let (revision_tx, _) = watch::channel(revision);
        let shared = Arc::new(Shared {
            state: RwLock::new(State {
                revision,
                objects,
                history,
                oldest,
            }),
            revision_tx,
        });
        let (tx, rx) = mpsc::channel(4096);
        let writer = Writer {
            shared: shared.clone(),
            backend,
            config,
            since_compact: 0,
            compacted: loaded.compacted,
        };
        std::thread::Builder::new()
            .name("store-writer".into())
            .spawn(move || writer.run(rx))
            .map_err(|e| Error::Backend(Box::new(e)))?;
        Ok(Store { shared, writes: tx })
    }

    /// The current revision.
    pub fn revision(&self) -> Revision {
        self.shared.read().revision
    }

    /// The current value of `key`.
    pub fn get(&self, key: &str) -> Option<Entry> {
        self.shared.read().objects.get(key).cloned()
    }

    /// Entries whose key starts with `prefix` and that `keep` accepts, in key order,
    /// after the key `after` if given, at most `limit` (0: no limit). With `count_rest`,
    /// the entries after a cut page are counted (`remaining`); without, the scan stops at
    /// the first one past the page, which matters when `keep` is costly.
    pub fn list(
        &self,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
        count_rest: bool,
        keep: &dyn Fn(&Entry) -> bool,
    ) -> ListPage {
        let state = self.shared.read();
        let start = match after {
            Some(a) if a >= prefix => Bound::Excluded(a),
            _ => Bound::Included(prefix),
        };
        let revision = state.revision;
        let entries = state
            .objects
            .range::<str, _>((start, Bound::Unbounded))
            .take_while(|(key, _)| key.starts_with(prefix))
            .map(|(_, e)| e);
        paginate(entries, revision, limit, count_rest, keep)
    }

    /// Like [`Store::list`], but as the keys were at `revision`, rebuilt from the current
    /// state and the history after it. Fails with [`Error::Compacted`] if that history is
    /// gone. Serves `resourceVersionMatch=Exact` and the later pages of a paged list.
    pub fn list_at(
        &self,
        prefix: &str,
        revision: Revision,
        after: Option<&str>,
        limit: usize,
        count_rest: bool,
        keep: &dyn Fn(&Entry) -> bool,
    ) -> Result<ListPage> {
        let state = self.shared.read();
        if revision < state.oldest {
            return Err(Error::Compacted {
                requested: revision,
                oldest: state.oldest,
            });
        }
        let mut view: BTreeMap<Arc<str>, Entry> = state
            .objects
            .range::<str, _>((Bound::Included(prefix), Bound::Unbounded))
            .take_while(|(k, _)| k.starts_with(prefix))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let start = state
            .history
            .partition_point(|e| e.entry.revision <= revision);
        // Undo the later changes, newest first, so each key ends at its value as of
        // `revision`.
        for event in state.history.range(start..).rev() {
            if !event.entry.key.starts_with(prefix) {
                continue;
            }
            match &event.prev {
                Some(prev) => view.insert(prev.key.clone(), prev.clone()),
                None => view.remove(&event.entry.key),
            };
        }
        drop(state);
        let lower = match after {
            Some(a) => Bound::Excluded(a),
            None => Bound::Unbounded,
        };
        let entries = view
            .range::<str, _>((lower, Bound::Unbounded))
            .map(|(_, e)| e);
        Ok(paginate(entries, revision, limit, count_rest, keep))
    }

    /// Counts the keys under `prefix` (used for cheap existence checks such as "is this
    /// namespace empty").
    pub fn count(&self, prefix: &str) -> usize {
        let state = self.shared.read();
        state
            .objects
            .range::<str, _>((Bound::Included(prefix), Bound::Unbounded))
            .take_while(|(k, _)| k.starts_with(prefix))
            .count()
    }

    /// The oldest revision a watch may resume from.
    pub fn oldest_revision(&self) -> Revision {
        self.shared.read().oldest
    }

    /// Applies one write and answers once it is durable.
    pub async fn write(&self, op: WriteOp) -> Result<Entry> {
        let (tx, rx) = oneshot::channel();
        self.writes
            .send(Request::Write(op, tx))
            .await
            .map_err(|_| Error::Closed)?;
        rx.await.map_err(|_| Error::Closed)?
    }

    /// Has the backend store again, in place, every kept row under `prefix` whose stored
    /// form is out of date (after the encryption key changed, see [`Backend::rewrite`]).
    /// Values and revisions do not change, so memory and watches see nothing; writes
    /// wait meanwhile. Returns how many rows were stored again.
    pub async fn rewrite_stored(&self, prefix: &str) -> Result<usize> {
        let (reply, rx) = oneshot::channel();
        self.writes
            .send(Request::Rewrite {
                prefix: prefix.to_string(),
                reply,
            })
            .await
            .map_err(|_| Error::Closed)?;
        rx.await.map_err(|_| Error::Closed)?
    }

    /// Watches keys under `prefix` for changes after revision `from`.
    pub fn watch(&self, prefix: &str, from: Revision) -> Result<Watch> {
        let oldest = self.oldest_revision();
        if from < oldest {
            return Err(Error::Compacted {
                requested: from,
                oldest,
            });
        }
        Ok(Watch {
            shared: self.shared.clone(),
            prefix: prefix.to_string(),
            after: from,
            revisions: self.shared.revision_tx.subscribe(),
        })
    }
}

/// Cuts a page of at most `limit` (0: no limit) accepted entries, counting the rest
/// when `count_rest`.
fn paginate<'a>(
    entries: impl Iterator<Item = &'a Entry>,
    revision: Revision,
    limit: usize,
    count_rest: bool,
    keep: &dyn Fn(&Entry) -> bool,
) -> ListPage {
    let mut items: Vec<Entry> = Vec::new();
    let mut next = None;
    let mut remaining = 0;
    for entry in entries.filter(|e| keep(e)) {
        if limit > 0 && items.len() == limit {
            if next.is_none() {
                next = items.last().map(|e| e.key.clone());
            }
            remaining += 1;
            if !count_rest {
                break;
            }
            continue;
        }
        items.push(entry.clone());
    }
    ListPage {
        items,
        revision,
        next,
        remaining,
    }
}

/// A stream of events under a prefix, in revision order, none lost and none repeated.
pub struct Watch {
    shared: Arc<Shared>,
    prefix: String,
    after: Revision,
    revisions: watch::Receiver<Revision>,
}

impl Watch {
    /// The revision of the last event handed out (or the starting revision).
    pub fn revision(&self) -> Revision {
        self.after
    }

    /// Waits for the next events. Fails with [`Error::Compacted`] if the watcher fell so
    /// far behind that history it had not read yet was dropped, and [`Error::Closed`] when
    /// the store stops.
    pub async fn next(&mut self) -> Result<Vec<Event>> {
        loop {
            // Mark the current value seen before reading history, so a write that lands
            // between the read and the wait still wakes us.
            self.revisions.borrow_and_update();
            let batch = self.collect()?;
            if !batch.is_empty() {
                return Ok(batch);
            }
            self.revisions.changed().await.map_err(|_| Error::Closed)?;
        }
    }

    fn collect(&mut self) -> Result<Vec<Event>> {
        let state = self.shared.read();
        if self.after < state.oldest {
            return Err(Error::Compacted {
                requested: self.after,
                oldest: state.oldest,
            });
        }
        let start = state
            .history
            .partition_point(|e| e.entry.revision <= self.after);
        let mut out = Vec::new();
        for event in state.history.range(start..) {
            if out.len() == MAX_WATCH_BATCH {
                return Ok(out);
            }
            self.after = event.entry.revision;
            if event.entry.key.starts_with(&self.prefix) {
                out.push(event.clone());
            }
        }
        // Read to the end: everything up to now has been seen.
        self.after = self.after.max(state.revision);
        Ok(out)
    }
}

struct Writer<B> {
    shared: Arc<Shared>,
    backend: B,
    config: StoreConfig,
    since_compact: usize,
    compacted: Revision,
}

impl<B: Backend> Writer<B> {
    fn run(mut self, mut rx: mpsc::Receiver<Request>) {
        let mut next = rx.blocking_recv();
        while let Some(request) = next.take() {
            match request {
                Request::Write(op, reply) => {
                    let mut batch = vec![(op, reply)];
                    while batch.len() < self.config.max_batch {
                        match rx.try_recv() {
                            Ok(Request::Write(op, reply)) => batch.push((op, reply)),
                            // Anything else runs once this batch is committed.
                            Ok(other) => {
                                next = Some(other);
                                break;
                            }
                            Err(_) => break,
                        }
                    }
                    self.commit(batch);
                    if self.since_compact >= self.config.compact_every {
                        self.compact();
                    }
                }
                Request::Rewrite { prefix, reply } => {
                    let result = self.backend.rewrite(&prefix, &mut |_| Ok(None));
                    if let Err(e) = &result {
                        tracing::error!(error = %e, prefix, "rewriting stored rows failed");
                    }
                    let _ = reply.send(result.map_err(Error::Backend));
                }
            }
            if next.is_none() {
                next = rx.blocking_recv();
            }
        }
        tracing::debug!("store writer stopped");
    }

    fn commit(&mut self, batch: Vec<(WriteOp, Reply)>) {
        let mut revision = self.shared.read().revision;
        // Writes earlier in the batch are visible to later ones through this overlay.
        let mut overlay: HashMap<Arc<str>, Option<Entry>> = HashMap::new();
        let mut rows: Vec<Row> = Vec::with_capacity(batch.len());
        let mut events: Vec<Event> = Vec::with_capacity(batch.len());
        let mut replies: Vec<(Reply, Result<usize>)> = Vec::with_capacity(batch.len());
        for (op, reply) in batch {
            let current = match overlay.get(op.key()) {
                Some(e) => e.clone(),
                None => self.shared.read().objects.get(op.key()).cloned(),
            };
            let result = prepare(op, current, revision + 1);
            match result {
                Ok((row, event)) => {
                    revision += 1;
                    overlay.insert(row.key.clone(), (!row.deleted).then(|| event.entry.clone()));
                    rows.push(row);
                    events.push(event);
                    replies.push((reply, Ok(events.len() - 1)));
                }
                Err(e) => replies.push((reply, Err(e))),
            }
        }
        if !rows.is_empty() {
            if let Err(e) = self.backend.commit(&rows) {
                tracing::error!(error = %e, "datastore commit failed");
                let msg = e.to_string();
                for (reply, _) in replies {
                    let _ = reply.send(Err(Error::Backend(msg.clone().into())));
                }
                return;
            }
            self.since_compact += rows.len();
            let mut state = self.shared.write();
            for event in &events {
                match event.kind {
                    EventKind::Put => {
                        state
                            .objects
                            .insert(event.entry.key.clone(), event.entry.clone());
                    }
                    EventKind::Delete => {
                        state.objects.remove(&event.entry.key);
                    }
                }
                state.history.push_back(event.clone());
            }
            state.revision = revision;
            while state.history.len() > self.config.history {
                if let Some(e) = state.history.pop_front() {
                    state.oldest = e.entry.revision;
                }
            }
            drop(state);
            self.shared.revision_tx.send_replace(revision);
        }
        for (reply, result) in replies {
            let _ = reply.send(result.map(|i| events[i].entry.clone()));
        }
    }

    /// Compacts the backend up to the oldest revision watches can still resume from.
    fn compact(&mut self) {
        self.since_compact = 0;
        let oldest = self.shared.read().oldest;
        if oldest <= self.compacted {
            return;
        }
        match self.backend.compact(oldest) {
            Ok(()) => self.compacted = oldest,
            Err(e) => tracing::warn!(error = %e, "datastore compaction failed; will retry"),
        }
    }
}

/// Checks a write against the key's current value and builds its log row and event.
fn prepare(op: WriteOp, current: Option<Entry>, revision: Revision) -> Result<(Row, Event)> {
    let check = |expected: Option<Revision>, cur: &Entry| match expected {
        Some(exp) if exp != cur.revision => Err(Error::Conflict {
            expected: exp,
            found: cur.revision,
        }),
        _ => Ok(()),
    };
    match op {
        WriteOp::Create { key, value } => {
            if current.is_some() {
                return Err(Error::AlreadyExists);
            }
            let key: Arc<str> = key.into();
            let value = stamp(value, revision)?;
            let entry = Entry {
                key: key.clone(),
                value: value.clone(),
                revision,
                create_revision: revision,
            };
            Ok((
                Row {
                    revision,
                    key,
                    value,
                    create_revision: revision,
                    prev_revision: 0,
                    deleted: false,
                },
                Event {
                    kind: EventKind::Put,
                    entry,
                    prev: None,
                },
            ))
        }
        WriteOp::Update {
            key,
            value,
            expected,
        } => {
            let cur = current.ok_or(Error::NotFound)?;
            check(expected, &cur)?;
            let value = stamp(value, revision)?;
            let entry = Entry {
                key: cur.key.clone(),
                value: value.clone(),
                revision,
                create_revision: cur.create_revision,
            };
            drop(key);
            Ok((
                Row {
                    revision,
                    key: cur.key.clone(),
                    value,
                    create_revision: cur.create_revision,
                    prev_revision: cur.revision,
                    deleted: false,
                },
                Event {
                    kind: EventKind::Put,
                    entry,
                    prev: Some(cur),
                },
            ))
        }
        WriteOp::Delete { key: _, expected } => {
            let cur = current.ok_or(Error::NotFound)?;
            check(expected, &cur)?;
            // The deleted object is reported at the deletion's revision, as upstream does.
            let last: serde_json::Value =
                serde_json::from_slice(&cur.value).map_err(|_| Error::NotAnObject)?;
            let value = stamp(last, revision)?;
            let entry = Entry {
                key: cur.key.clone(),
                value: value.clone(),
                revision,
                create_revision: cur.create_revision,
            };
            Ok((
                Row {
                    revision,
                    key: cur.key.clone(),
                    value,
                    create_revision: cur.create_revision,
                    prev_revision: cur.revision,
                    deleted: true,
                },
                Event {
                    kind: EventKind::Delete,
                    entry,
                    prev: Some(cur),
                },
            ))
        }
    }
}

/// Sets `metadata.resourceVersion` and encodes the object.
fn stamp(mut value: serde_json::Value, revision: Revision) -> Result<Bytes> {
    let obj = value.as_object_mut().ok_or(Error::NotAnObject)?;
    let meta = obj
        .entry("metadata")
        .or_insert_with(|| serde_json::Value::Object(Default::default()));
    let meta = meta.as_object_mut().ok_or(Error::NotAnObject)?;
    meta.insert(
        "resourceVersion".into(),
        serde_json::Value::String(revision.to_string()),
    );
    serde_json::to_vec(&value)
        .map(Bytes::from)
        .map_err(|_| Error::NotAnObject)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::sqlite::Sqlite;
    use serde_json::json;

    fn open(dir: &std::path::Path, history: usize) -> Store {
        let backend = Sqlite::open(&dir.join("db.sqlite")).unwrap();
        Store::open(
            backend,
            StoreConfig {
                history,
                max_batch: 64,
                compact_every: 10,
            },
        )
        .unwrap()
    }

    fn cm(name: &str, v: i64) -> serde_json::Value {
        json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name}, "data": {"v": v.to_string()}})
    }

    fn rv(e: &Entry) -> String {
        let v: serde_json::Value = serde_json::from_slice(&e.value).unwrap();
        v["metadata"]["resourceVersion"]
            .as_str()
            .unwrap()
            .to_string()
    }

    #[tokio::test]
    async fn writes_are_revisioned_checked_and_survive_reopen() {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = open(dir.path(), 100);
            let a = store
                .write(WriteOp::Create {
                    key: "/r/a".into(),
                    value: cm("a", 1),
                })
                .await
                .unwrap();
            assert_eq!(a.revision, 1);
            assert_eq!(rv(&a), "1");
            let err = store
                .write(WriteOp::Create {
                    key: "/r/a".into(),
                    value: cm("a", 1),
                })
                .await
                .unwrap_err();
            assert!(matches!(err, Error::AlreadyExists));
            let b = store
                .write(WriteOp::Update {
                    key: "/r/a".into(),
                    value: cm("a", 2),
                    expected: Some(1),
                })
                .await
                .unwrap();
            assert_eq!((b.revision, b.create_revision), (2, 1));
            let err = store
                .write(WriteOp::Update {
                    key: "/r/a".into(),
                    value: cm("a", 3),
                    expected: Some(1),
                })
                .await
                .unwrap_err();
            assert!(matches!(
                err,
                Error::Conflict {
                    expected: 1,
                    found: 2
                }
            ));
            store
                .write(WriteOp::Create {
                    key: "/r/b".into(),
                    value: cm("b", 1),
                })
                .await
                .unwrap();
            store
                .write(WriteOp::Delete {
                    key: "/r/b".into(),
                    expected: None,
                })
                .await
                .unwrap();
            assert!(store.get("/r/b").is_none());
        }
        let store = open(dir.path(), 100);
        assert_eq!(store.revision(), 4);
        let a = store.get("/r/a").unwrap();
        assert_eq!((a.revision, rv(&a).as_str()), (2, "2"));
        // History survives a restart: a watch from revision 1 sees the rest.
        let mut w = store.watch("/r/", 1).unwrap();
        let events = w.next().await.unwrap();
        let seen: Vec<(EventKind, i64)> =
            events.iter().map(|e| (e.kind, e.entry.revision)).collect();
        assert_eq!(
            seen,
            vec![
                (EventKind::Put, 2),
                (EventKind::Put, 3),
                (EventKind::Delete, 4)
            ]
        );
    }

    #[tokio::test]
    async fn list_pages_and_watch_filters_by_prefix() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path(), 100);
        for i in 0..5 {
            store
                .write(WriteOp::Create {
                    key: format!("/r/ns1/{i}"),
                    value: cm("x", i),
                })
                .await
                .unwrap();
            store
                .write(WriteOp::Create {
                    key: format!("/r/ns2/{i}"),
                    value: cm("x", i),
                })
                .await
                .unwrap();
        }
        let page = store.list("/r/ns1/", None, 2, true, &|_| true);
        assert_eq!(page.items.len(), 2);
        assert_eq!(page.remaining, 3);
        let next = page.next.unwrap();
        let page2 = store.list("/r/ns1/", Some(&next), 10, true, &|_| true);
        assert_eq!(page2.items.len(), 3);
        assert!(page2.next.is_none());

        // The same list as of an earlier revision, after changes.
        let before = store.revision();
        store
            .write(WriteOp::Delete {
                key: "/r/ns1/0".into(),
                expected: None,
            })
            .await
            .unwrap();
        store
            .write(WriteOp::Create {
                key: "/r/ns1/9".into(),
                value: cm("x", 9),
            })
            .await
            .unwrap();
        store
            .write(WriteOp::Update {
                key: "/r/ns1/1".into(),
                value: cm("x", 100),
                expected: None,
            })
            .await
            .unwrap();
        let then = store
            .list_at("/r/ns1/", before, None, 0, true, &|_| true)
            .unwrap();
        let keys: Vec<&str> = then.items.iter().map(|e| &*e.key).collect();
        assert_eq!(
            keys,
            vec!["/r/ns1/0", "/r/ns1/1", "/r/ns1/2", "/r/ns1/3", "/r/ns1/4"]
        );
        assert!(then.items.iter().all(|e| e.revision <= before));
        assert_eq!(
            store.list("/r/ns1/", None, 0, true, &|_| true).items.len(),
            5
        );

        let mut w = store.watch("/r/ns2/", store.revision()).unwrap();
        store
            .write(WriteOp::Create {
                key: "/r/ns1/new".into(),
                value: cm("x", 9),
            })
            .await
            .unwrap();
        store
            .write(WriteOp::Create {
                key: "/r/ns2/new".into(),
                value: cm("x", 9),
            })
            .await
            .unwrap();
        let events = w.next().await.unwrap();
        assert_eq!(events.len(), 1);
        assert_eq!(&*events[0].entry.key, "/r/ns2/new");
    }

    #[tokio::test]
    async fn old_watches_are_refused_once_history_is_trimmed() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path(), 5);
        for i in 0..20 {
            store
                .write(WriteOp::Create {
                    key: format!("/r/{i}"),
                    value: cm("x", i),
                })
                .await
                .unwrap();
        }
        assert!(matches!(
            store.watch("/r/", 2),
            Err(Error::Compacted { .. })
        ));
        assert!(store.watch("/r/", 16).is_ok());
        // After reopen, the compacted log still rebuilds the full current state.
        drop(store);
        let store = open(dir.path(), 5);
        assert_eq!(store.list("/r/", None, 0, true, &|_| true).items.len(), 20);
        assert_eq!(store.revision(), 20);
    }

    #[tokio::test]
    async fn concurrent_writers_are_batched_without_loss() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path(), 10_000);
        let mut tasks = Vec::new();
        for t in 0..8 {
            let store = store.clone();
            tasks.push(tokio::spawn(async move {
                for i in 0..50 {
                    store
                        .write(WriteOp::Create {
                            key: format!("/r/{t}/{i}"),
                            value: cm("x", i),
                        })
                        .await
                        .unwrap();
                }
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        assert_eq!(store.revision(), 400);
        assert_eq!(store.count("/r/"), 400);
    }
}
