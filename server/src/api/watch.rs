//! WATCH: a chunked stream of `{"type": ..., "object": ...}` lines.
//!
//! A watch without a resourceVersion (or with "0") starts with the current objects as
//! ADDED events, then follows; one with a resourceVersion resumes right after it, from
//! the store's history, or answers an ERROR event with a 410 `Status` when that history
//! is gone, as upstream does. Selectors are applied to both sides of each change, so an
//! object that stops matching is reported DELETED and one that starts matching ADDED.

use super::handlers::{self, ListQuery};
use super::request::Target;
use super::status::{ApiError, ApiResult};
use super::table::TableOptions;
use super::Api;
use crate::registry::Resource;
use crate::store::{Entry, EventKind};
use bytes::Bytes;
use serde_json::{json, Value};
use std::collections::HashMap;
use std::time::Duration;
use tokio::sync::mpsc;

/// How often a watch that asked for bookmarks gets one while idle.
const BOOKMARK_EVERY: Duration = Duration::from_secs(30);
/// The longest a watch stays open when the client sets no timeout.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30 * 60);

/// A watch's parameters.
pub struct WatchParams {
    /// Where to start: `None` means "now, after the current state".
    pub from: Option<i64>,
    /// Whether to send the current objects first.
    pub initial: bool,
    /// `allowWatchBookmarks`.
    pub bookmarks: bool,
    /// `sendInitialEvents=true`: end the initial events with a marked bookmark.
    pub initial_marker: bool,
    /// How long to keep the watch open.
    pub timeout: Duration,
    /// The selectors.
    pub query: ListQuery,
    /// Events as Table rows (`kubectl get -w`).
    pub table: Option<TableOptions>,
}

impl WatchParams {
    /// Reads the watch parameters from the query.
    pub fn from_query(
        r: &Resource,
        q: &HashMap<String, String>,
        table: Option<TableOptions>,
    ) -> ApiResult<WatchParams> {
        let query = ListQuery::from_query(r, q)?;
        let rv = q.get("resourceVersion").map(String::as_str).unwrap_or("");
        let send_initial = q.get("sendInitialEvents").map(|s| s == "true");
        let from =
            match rv {
                "" | "0" => None,
                s => Some(s.parse::<i64>().map_err(|_| {
                    ApiError::bad_request(format!("invalid resource version {s:?}"))
                })?),
            };
        let initial = send_initial.unwrap_or(from.is_none());
        let timeout = match q.get("timeoutSeconds").map(String::as_str) {
            None | Some("") => DEFAULT_TIMEOUT,
            Some(s) => Duration::from_secs(
                s.parse::<u64>()
                    .map_err(|_| ApiError::bad_request(format!("invalid timeoutSeconds {s:?}")))?,
            ),
        };
        Ok(WatchParams {
            from,
            initial,
            bookmarks: q.get("allowWatchBookmarks").is_some_and(|b| b == "true"),
            initial_marker: send_initial == Some(true),
            timeout,
            query,
            table,
        })
    }
}

/// Starts a watch; the returned channel yields encoded event lines until the watch ends.
pub fn start(api: &Api, t: &Target, p: WatchParams) -> ApiResult<mpsc::Receiver<Bytes>> {
    let r = t.resource;
    let namespace = t.namespace.clone();
    let prefix = r.prefix(namespace.as_deref());
    let (tx, rx) = mpsc::channel::<Bytes>(64);

    // The starting point and the initial state are taken before the first await, so
    // nothing written in between is missed.
    let mut initial = Vec::new();
    let from = match p.from {
        Some(rev) => rev,
        None => {
            let listed = handlers::list(
                api,
                t,
                &ListQuery {
                    limit: 0,
                    after: None,
                    continue_revision: None,
                    exact_revision: None,
                    ..p.query.clone()
                },
            )?;
            initial = listed.items;
            listed.revision
        }
    };
    let name_filter = t.name.clone();
    let mut watch = match api.store.watch(&prefix, from) {
        Ok(w) => Some(w),
        Err(crate::store::Error::Compacted { requested, oldest }) => {
            let err = ApiError::gone(format!("too old resource version: {requested} ({oldest})"));
            let line = encode("ERROR", &err.to_status());
            let _ = tx.try_send(line);
            None
        }
        Err(e) => return Err(e.into()),
    };
    let Some(mut w) = watch.take() else {
        return Ok(rx);
    };
    tokio::spawn(async move {
        let mut first_row = true;
        // Most watches send the stored bytes as they are; only a Table needs the object.
        let send_entry = |kind: &str, entry: &Entry, first: &mut bool| -> Option<Bytes> {
            if let Some(n) = &name_filter {
                if entry.key.rsplit('/').next() != Some(n.as_str()) {
                    return None;
                }
            }
            let Some(opts) = &p.table else {
                return Some(encode_raw(kind, &entry.value));
            };
            let obj: Value = serde_json::from_slice(&entry.value).ok()?;
            let body = super::table::to_table(r, &[obj], opts, *first, None, None);
            *first = false;
            Some(encode(kind, &body))
        };
        if p.initial {
            for e in &initial {
                if let Some(line) = send_entry("ADDED", e, &mut first_row) {
                    if tx.send(line).await.is_err() {
                        return;
                    }
                }
            }
            if p.initial_marker {
                let line = bookmark(r, from, true);
                if tx.send(line).await.is_err() {
                    return;
                }
            }
        }
        drop(initial);
        let deadline = tokio::time::Instant::now() + p.timeout;
        loop {
            let next = tokio::select! {
                n = w.next() => n,
                _ = tokio::time::sleep(BOOKMARK_EVERY), if p.bookmarks => {
                    if tx.send(bookmark(r, w.revision(), false)).await.is_err() { return; }
                    continue;
                }
                _ = tokio::time::sleep_until(deadline) => return,
                _ = tx.closed() => return,
            };
            let events = match next {
                Ok(events) => events,
                Err(crate::store::Error::Compacted { requested, oldest }) => {
                    let err =
                        ApiError::gone(format!("too old resource version: {requested} ({oldest})"));
                    let _ = tx.send(encode("ERROR", &err.to_status())).await;
                    return;
                }
                Err(_) => return,
            };
            for ev in events {
                let matches = |e: &Entry| p.query.matches_stored(r, &e.value);
                let now = matches(&ev.entry);
                let before = ev.prev.as_ref().is_some_and(matches);
                let kind = match (ev.kind, before, now) {
                    (EventKind::Delete, true, _) => "DELETED",
                    (EventKind::Delete, false, _) => continue,
                    (EventKind::Put, false, true) => "ADDED",
                    (EventKind::Put, true, true) => {
                        if ev.prev.is_none() {
                            "ADDED"
                        } else {
                            "MODIFIED"
                        }
                    }
                    (EventKind::Put, true, false) => "DELETED",
                    (EventKind::Put, false, false) => continue,
                };
                if let Some(line) = send_entry(kind, &ev.entry, &mut first_row) {
                    if tx.send(line).await.is_err() {
                        return;
                    }
                }
            }
        }
    });
    Ok(rx)
}

fn encode(kind: &str, obj: &Value) -> Bytes {
    let mut line = json!({"type": kind, "object": obj}).to_string();
    line.push('\n');
    Bytes::from(line)
}

fn encode_raw(kind: &str, obj: &[u8]) -> Bytes {
    let mut out = Vec::with_capacity(obj.len() + 32);
    out.extend_from_slice(b"{\"type\":\"");
    out.extend_from_slice(kind.as_bytes());
    out.extend_from_slice(b"\",\"object\":");
    out.extend_from_slice(obj);
    out.extend_from_slice(b"}\n");
    Bytes::from(out)
}

fn bookmark(r: &Resource, revision: i64, initial_end: bool) -> Bytes {
    let mut meta = json!({"resourceVersion": revision.to_string()});
    if initial_end {
        meta["annotations"] = json!({"k8s.io/initial-events-end": "true"});
    }
    encode(
        "BOOKMARK",
        &json!({"kind": r.kind, "apiVersion": r.api_version(), "metadata": meta}),
    )
}
