//! The garbage collector for ownerReferences, over the kinds of the shared caches.
//!
//! * An object whose owners are all gone (by uid) is deleted (background), with the
//!   policy its own finalizers ask for; references to owners that are gone are dropped
//!   when other owners remain.
//! * An owner deleted with `propagationPolicy=Foreground` carries `foregroundDeletion`:
//!   its dependents that block (blockOwnerDeletion) are deleted, and once none remains the
//!   finalizer is removed, which lets the API server delete the owner.
//! * An owner deleted with `propagationPolicy=Orphan` carries `orphan`: its dependents'
//!   references to it are removed, then the finalizer.
//!
//! [`dependent`] and [`owner`] decide from plain metadata; [`GarbageCollector`] keeps the
//! index of owner uid → dependents the caches' hooks feed, and does the writes.

use super::driver::{self, Caches, Effects, Kind, Next, Queue, Reconciler};
use futures::future::BoxFuture;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::api::{ApiResource, PropagationPolicy};
use kube::core::GroupVersionKind;
use kube::Resource;
use serde_json::json;
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

/// The finalizer of a foreground deletion.
pub const FOREGROUND: &str = "foregroundDeletion";
/// The finalizer of an orphaning deletion.
pub const ORPHAN: &str = "orphan";

/// Declares [`Watched`], the kinds the collector indexes (all from the shared caches),
/// with how to read one and how to hook its cache.
macro_rules! watched {
    ($($variant:ident: $field:ident, $ty:ty, $api_version:literal, $namespaced:literal;)*) => {
        /// The kinds the collector watches (the shared caches').
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum Watched {
            $(
                #[doc = concat!($api_version, " ", stringify!($variant), ".")]
                $variant,
            )*
        }

        impl Watched {
            fn from_ref(api_version: &str, kind: &str) -> Option<Watched> {
                match (api_version, kind) {
                    $(($api_version, stringify!($variant)) => Some(Watched::$variant),)*
                    _ => None,
                }
            }

            fn kind(self) -> Kind {
                match self {
                    $(Watched::$variant => Kind::of::<$ty>($namespaced),)*
                }
            }

            fn meta(self, caches: &Caches, namespace: &str, name: &str) -> Option<ObjectMeta> {
                match self {
                    $(Watched::$variant => caches
                        .$field
                        .get(if $namespaced { namespace } else { "" }, name)
                        .map(|o| o.metadata.clone()),)*
                }
            }

            fn hook_all(gc: &Arc<GarbageCollector>, queue: &Arc<Queue<Node>>) {
                $(
                    let (g, q) = (gc.clone(), queue.clone());
                    gc.caches.$field.on_change(Box::new(move |obj: &$ty, change| {
                        g.observe(Watched::$variant, obj.meta(), change, &q)
                    }));
                )*
            }
        }
    };
}

watched! {
    Pod: pods, k8s_openapi::api::core::v1::Pod, "v1", true;
    ReplicaSet: replicasets, k8s_openapi::api::apps::v1::ReplicaSet, "apps/v1", true;
    Deployment: deployments, k8s_openapi::api::apps::v1::Deployment, "apps/v1", true;
    DaemonSet: daemonsets, k8s_openapi::api::apps::v1::DaemonSet, "apps/v1", true;
    StatefulSet: statefulsets, k8s_openapi::api::apps::v1::StatefulSet, "apps/v1", true;
    ControllerRevision: controllerrevisions, k8s_openapi::api::apps::v1::ControllerRevision, "apps/v1", true;
    Job: jobs, k8s_openapi::api::batch::v1::Job, "batch/v1", true;
    CronJob: cronjobs, k8s_openapi::api::batch::v1::CronJob, "batch/v1", true;
    Node: nodes, k8s_openapi::api::core::v1::Node, "v1", false;
    Lease: leases, k8s_openapi::api::coordination::v1::Lease, "coordination.k8s.io/v1", true;
    Service: services, k8s_openapi::api::core::v1::Service, "v1", true;
    Endpoints: endpoints, k8s_openapi::api::core::v1::Endpoints, "v1", true;
    EndpointSlice: endpointslices, k8s_openapi::api::discovery::v1::EndpointSlice, "discovery.k8s.io/v1", true;
    ServiceAccount: serviceaccounts, k8s_openapi::api::core::v1::ServiceAccount, "v1", true;
    PersistentVolumeClaim: pvcs, k8s_openapi::api::core::v1::PersistentVolumeClaim, "v1", true;
    PodDisruptionBudget: pdbs, k8s_openapi::api::policy::v1::PodDisruptionBudget, "policy/v1", true;
}

/// One watched object.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Node {
    /// Its kind.
    pub kind: Watched,
    /// Its namespace.
    pub namespace: String,
    /// Its name.
    pub name: String,
}

/// What became of an owner a dependent refers to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OwnerState {
    /// Exists, with that uid, and is not waiting for its dependents.
    Solid,
    /// Gone (or replaced by an object with another uid).
    Dangling,
    /// Being deleted in the foreground: waits for its dependents.
    Waiting,
}

/// What to do about an object as a dependent.
#[derive(Debug, Clone, PartialEq)]
pub enum DependentAction {
    /// Its owners stand: nothing.
    Keep,
    /// Some owners stand: drop the references to those with these uids.
    DropRefs(Vec<String>),
    /// Its owner waits in the foreground and one of its own dependents waits for it in
    /// the foreground too (a cycle): stop blocking that owner, then delete it in the
    /// foreground.
    UnblockAndDelete(Vec<String>),
    /// All owners are gone or going: delete it with this policy.
    Delete(Option<PropagationPolicy>),
}

fn has_finalizer(meta: &ObjectMeta, f: &str) -> bool {
    meta.finalizers
        .as_deref()
        .unwrap_or_default()
        .iter()
        .any(|x| x == f)
}

fn deleting_dependents(meta: &ObjectMeta) -> bool {
    meta.deletion_timestamp.is_some() && has_finalizer(meta, FOREGROUND)
}

/// Decides about a dependent given the state of each of its owners and its own
/// dependents.
pub fn dependent(
    item: &ObjectMeta,
    owners: &[(&OwnerReference, OwnerState)],
    dependents: &[ObjectMeta],
) -> DependentAction {
    if owners.is_empty()
        || item.deletion_timestamp.is_some()
            && !has_finalizer(item, FOREGROUND)
            && !has_finalizer(item, ORPHAN)
    {
        return DependentAction::Keep;
    }
    let uids = |s: OwnerState| -> Vec<String> {
        owners
            .iter()
            .filter(|(_, st)| *st == s)
            .map(|(r, _)| r.uid.clone())
            .collect()
    };
    let (dangling, waiting) = (uids(OwnerState::Dangling), uids(OwnerState::Waiting));
    if owners.iter().any(|(_, s)| *s == OwnerState::Solid) {
        if dangling.is_empty() && waiting.is_empty() {
            return DependentAction::Keep;
        }
        return DependentAction::DropRefs([dangling, waiting].concat());
    }
    if item.deletion_timestamp.is_some() {
        // Already going, in the way its own finalizers say.
        return DependentAction::Keep;
    }
    if !waiting.is_empty() && !dependents.is_empty() {
        // It keeps blocking its owner, which so waits until it and its own dependents
        // are gone. Only a cycle (a dependent of its own waiting for it in turn) is
        // broken by unblocking, as upstream's collector does.
        if dependents.iter().any(deleting_dependents) {
            return DependentAction::UnblockAndDelete(waiting);
        }
        return DependentAction::Delete(Some(PropagationPolicy::Foreground));
    }
    let policy = if has_finalizer(item, ORPHAN) {
        Some(PropagationPolicy::Orphan)
    } else if has_finalizer(item, FOREGROUND) {
        Some(PropagationPolicy::Foreground)
    } else {
        Some(PropagationPolicy::Background)
    };
    DependentAction::Delete(policy)
}

/// What to do about an owner being deleted with a propagation finalizer.
#[derive(Debug, Clone, PartialEq)]
pub enum OwnerAction {
    /// Remove the owner's reference from these dependents (orphaning).
    Orphan(Vec<usize>),
    /// Delete these dependents (foreground).
    DeleteDependents(Vec<usize>),
    /// Remove this finalizer from the owner.
    Finalize(&'static str),
}

/// Decides about an owner given its dependents (indexes into `dependents`).
pub fn owner(item: &ObjectMeta, dependents: &[ObjectMeta]) -> Vec<OwnerAction> {
    if item.deletion_timestamp.is_none() {
        return Vec::new();
    }
    let uid = item.uid.as_deref().unwrap_or("");
    let refers = |d: &ObjectMeta, blocking: bool| {
        d.owner_references
            .as_deref()
            .unwrap_or_default()
            .iter()
            .any(|r| r.uid == uid && (!blocking || r.block_owner_deletion == Some(true)))
    };
    let mut out = Vec::new();
    if has_finalizer(item, ORPHAN) {
        let left: Vec<usize> = (0..dependents.len())
            .filter(|i| refers(&dependents[*i], false))
            .collect();
        if left.is_empty() {
            out.push(OwnerAction::Finalize(ORPHAN));
        } else {
            out.push(OwnerAction::Orphan(left));
        }
        // Orphaning first: a foreground finalizer as well would delete what was to stay.
        return out;
    }
    if has_finalizer(item, FOREGROUND) {
        let blocking: Vec<usize> = (0..dependents.len())
            .filter(|i| refers(&dependents[*i], true))
            .collect();
        if blocking.is_empty() {
            out.push(OwnerAction::Finalize(FOREGROUND));
        } else {
            let go: Vec<usize> = blocking
                .into_iter()
                .filter(|i| dependents[*i].deletion_timestamp.is_none())
                .collect();
            if !go.is_empty() {
                out.push(OwnerAction::DeleteDependents(go));
            }
        }
    }
    out
}

/// Kinds owners are commonly of that the collector does not cache: looked up live.
const OTHER_OWNERS: &[(&str, &str, &str, bool)] = &[
    ("apps", "StatefulSet", "statefulsets", true),
    ("apps", "DaemonSet", "daemonsets", true),
    ("apps", "ControllerRevision", "controllerrevisions", true),
    ("batch", "Job", "jobs", true),
    ("batch", "CronJob", "cronjobs", true),
    ("", "ReplicationController", "replicationcontrollers", true),
    ("", "Service", "services", true),
    ("", "ConfigMap", "configmaps", true),
    ("", "Secret", "secrets", true),
    ("", "ServiceAccount", "serviceaccounts", true),
    ("", "PersistentVolumeClaim", "persistentvolumeclaims", true),
    ("", "Node", "nodes", false),
    ("", "Namespace", "namespaces", false),
];

fn other_kind(api_version: &str, kind: &str) -> Option<Kind> {
    let (group, version) = match api_version.split_once('/') {
        Some((g, v)) => (g, v),
        None => ("", api_version),
    };
    let (_, k, plural, namespaced) = OTHER_OWNERS
        .iter()
        .find(|(g, k, ..)| *g == group && *k == kind)?;
    Some(Kind {
        resource: ApiResource::from_gvk_with_plural(
            &GroupVersionKind::gvk(group, version, k),
            plural,
        ),
        namespaced: *namespaced,
    })
}

#[derive(Default)]
struct Index {
    /// Owner uid → its dependents.
    dependents: HashMap<String, HashSet<Node>>,
    /// Object → the uids it names as owners (to update `dependents`).
    owners: HashMap<Node, Vec<String>>,
    /// uid → object, for the watched kinds.
    by_uid: HashMap<String, Node>,
    /// The uids of objects being deleted with the orphan or foreground policy: the only
    /// owners their dependents' changes concern.
    propagating: HashSet<String>,
}

/// Registers the collector's hooks and returns its workers (20, upstream's count).
pub fn start(ctx: &super::Context) -> super::Workers {
    let queue = Queue::new();
    let gc = GarbageCollector::new(ctx.caches.clone(), ctx.effects.clone());
    gc.watch(&queue);
    ctx.workers(gc, queue, 20)
}

/// The collector: an index of the caches plus the writes.
pub struct GarbageCollector {
    caches: Arc<Caches>,
    effects: Arc<dyn Effects>,
    index: Mutex<Index>,
}

impl GarbageCollector {
    /// A collector over `caches`, writing through `effects`.
    pub fn new(caches: Arc<Caches>, effects: Arc<dyn Effects>) -> Arc<Self> {
        Arc::new(GarbageCollector {
            caches,
            effects,
            index: Mutex::new(Index::default()),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Index> {
        self.index.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Registers the hooks that keep the index and fill `queue`.
    pub fn watch(self: &Arc<Self>, queue: &Arc<Queue<Node>>) {
        Watched::hook_all(self, queue);
    }

    fn observe(
        &self,
        kind: Watched,
        meta: &ObjectMeta,
        change: driver::Change,
        queue: &Queue<Node>,
    ) {
        let node = Node {
            kind,
            namespace: meta.namespace.clone().unwrap_or_default(),
            name: meta.name.clone().unwrap_or_default(),
        };
        let uid = meta.uid.clone().unwrap_or_default();
        let now: Vec<String> = match change {
            driver::Change::Applied => meta
                .owner_references
                .as_deref()
                .unwrap_or_default()
                .iter()
                .map(|r| r.uid.clone())
                .collect(),
            driver::Change::Deleted => Vec::new(),
        };
        let propagating = has_finalizer(meta, ORPHAN) || has_finalizer(meta, FOREGROUND);
        let deleting = propagating && meta.deletion_timestamp.is_some();
        let mut wake: Vec<Node> = Vec::new();
        let refs_changed;
        {
            let mut ix = self.lock();
            let before = ix.owners.remove(&node).unwrap_or_default();
            refs_changed = before != now;
            for o in &before {
                if let Some(set) = ix.dependents.get_mut(o) {
                    set.remove(&node);
                    if set.is_empty() {
                        ix.dependents.remove(o);
                    }
                }
            }
            for o in &now {
                ix.dependents
                    .entry(o.clone())
                    .or_default()
                    .insert(node.clone());
            }
            // Owners orphaning or deleting in the foreground wait on this object's
            // references: they look again. Other owners do not care (looking at every
            // owner on each change of each dependent would cost the owner's whole
            // dependent list per pod update).
            for o in before.iter().chain(now.iter()) {
                if !ix.propagating.contains(o) {
                    continue;
                }
                if let Some(n) = ix.by_uid.get(o) {
                    wake.push(n.clone());
                }
            }
            match change {
                driver::Change::Applied => {
                    if !now.is_empty() {
                        ix.owners.insert(node.clone(), now.clone());
                    }
                    ix.by_uid.insert(uid.clone(), node.clone());
                    if deleting {
                        ix.propagating.insert(uid.clone());
                    } else {
                        ix.propagating.remove(&uid);
                    }
                }
                driver::Change::Deleted => {
                    ix.propagating.remove(&uid);
                    if ix.by_uid.get(&uid) == Some(&node) {
                        ix.by_uid.remove(&uid);
                    }
                    // Its dependents may now be dangling.
                    wake.extend(ix.dependents.get(&uid).into_iter().flatten().cloned());
                }
            }
        }
        // An object looks at its owners when it names new ones (they may be gone
        // already); its owners' own changes wake it otherwise.
        if change == driver::Change::Applied && (!now.is_empty() && refs_changed || deleting) {
            queue.add(node);
        }
        for n in wake {
            queue.add(n);
        }
    }

    fn meta(&self, node: &Node) -> Option<ObjectMeta> {
        node.kind.meta(&self.caches, &node.namespace, &node.name)
    }

    fn state_of(meta: &ObjectMeta, uid: &str) -> OwnerState {
        if meta.uid.as_deref() != Some(uid) {
            OwnerState::Dangling
        } else if meta.deletion_timestamp.is_some() && has_finalizer(meta, FOREGROUND) {
            OwnerState::Waiting
        } else {
            OwnerState::Solid
        }
    }

    /// An owner's state: the cache when it shows the owner, else a live read (a new
    /// owner's watch may lag its dependents').
    async fn owner_state(&self, namespace: &str, r: &OwnerReference) -> driver::Result<OwnerState> {
        let watched = Watched::from_ref(&r.api_version, &r.kind);
        let kind = match watched {
            Some(w) => {
                let cached = self.meta(&Node {
                    kind: w,
                    namespace: namespace.to_string(),
                    name: r.name.clone(),
                });
                if let Some(m) = cached.filter(|m| m.uid.as_deref() == Some(&r.uid)) {
                    return Ok(Self::state_of(&m, &r.uid));
                }
                w.kind()
            }
            None => match other_kind(&r.api_version, &r.kind) {
                Some(k) => k,
                // A kind we cannot look up: never delete on a guess.
                None => return Ok(OwnerState::Solid),
            },
        };
        let ns = if kind.namespaced { namespace } else { "" };
        match self.effects.get(&kind, ns, &r.name).await {
            Ok(None) => Ok(OwnerState::Dangling),
            Ok(Some(v)) => {
                let meta: ObjectMeta = serde_json::from_value(v["metadata"].clone())
                    .map_err(|e| driver::Error::Encode(r.kind.clone(), e))?;
                Ok(Self::state_of(&meta, &r.uid))
            }
            Err(e) => Err(driver::api_error("get", &kind, ns, &r.name)(e)),
        }
    }

    fn dependents_of(&self, uid: &str) -> Vec<(Node, ObjectMeta)> {
        let nodes: Vec<Node> = self
            .lock()
            .dependents
            .get(uid)
            .into_iter()
            .flatten()
            .cloned()
            .collect();
        nodes
            .into_iter()
            .filter_map(|n| self.meta(&n).map(|m| (n, m)))
            .collect()
    }

    async fn patch(&self, node: &Node, patch: serde_json::Value) -> driver::Result<()> {
        let kind = node.kind.kind();
        match self
            .effects
            .merge_patch(&kind, &node.namespace, &node.name, patch)
            .await
        {
            Ok(_) => Ok(()),
            // Changed or gone meanwhile: the watch brings it back.
            Err(kube::Error::Api(s)) if s.code == 404 || s.code == 409 => Ok(()),
            Err(e) => Err(driver::api_error(
                "patch",
                &kind,
                &node.namespace,
                &node.name,
            )(e)),
        }
    }

    async fn delete(
        &self,
        node: &Node,
        uid: &str,
        policy: Option<PropagationPolicy>,
    ) -> driver::Result<()> {
        let kind = node.kind.kind();
        match self
            .effects
            .delete(&kind, &node.namespace, &node.name, Some(uid), policy)
            .await
        {
            Ok(()) => Ok(()),
            Err(kube::Error::Api(s)) if s.code == 404 || s.code == 409 => Ok(()),
            Err(e) => Err(driver::api_error(
                "delete",
                &kind,
                &node.namespace,
                &node.name,
            )(e)),
        }
    }

    fn refs_patch(meta: &ObjectMeta, refs: Vec<OwnerReference>) -> serde_json::Value {
        json!({"metadata": {"resourceVersion": meta.resource_version, "ownerReferences": refs}})
    }

    async fn sync_node(&self, node: &Node) -> driver::Result<Next> {
        let Some(meta) = self.meta(node) else {
            return Ok(Next::Done);
        };
        let uid = meta.uid.clone().unwrap_or_default();
        // As an owner being deleted with a propagation policy. Its dependents are only
        // looked up when it is being deleted (or, below, when an owner of its own waits
        // on it): the list is as long as a 10,000-replica ReplicaSet's.
        let deps = if meta.deletion_timestamp.is_some() {
            self.dependents_of(&uid)
        } else {
            Vec::new()
        };
        let metas: Vec<ObjectMeta> = deps.iter().map(|(_, m)| m.clone()).collect();
        for action in owner(&meta, &metas) {
            match action {
                OwnerAction::Orphan(which) => {
                    for i in which {
                        let (n, m) = &deps[i];
                        let kept = m
                            .owner_references
                            .clone()
                            .unwrap_or_default()
                            .into_iter()
                            .filter(|r| r.uid != uid)
                            .collect();
                        self.patch(n, Self::refs_patch(m, kept)).await?;
                    }
                }
                OwnerAction::DeleteDependents(which) => {
                    for i in which {
                        let (n, m) = &deps[i];
                        let has_own = self
                            .lock()
                            .dependents
                            .contains_key(m.uid.as_deref().unwrap_or(""));
                        let policy = has_own.then_some(PropagationPolicy::Foreground);
                        self.delete(
                            n,
                            m.uid.as_deref().unwrap_or(""),
                            policy.or(Some(PropagationPolicy::Background)),
                        )
                        .await?;
                    }
                }
                OwnerAction::Finalize(f) => {
                    let left: Vec<String> = meta
                        .finalizers
                        .clone()
                        .unwrap_or_default()
                        .into_iter()
                        .filter(|x| x != f)
                        .collect();
                    self.patch(node, json!({"metadata": {"resourceVersion": meta.resource_version, "finalizers": left}}))
                        .await?;
                }
            }
        }
        // As a dependent.
        let refs = meta.owner_references.clone().unwrap_or_default();
        if refs.is_empty() {
            return Ok(Next::Done);
        }
        let mut states = Vec::new();
        for r in &refs {
            states.push(self.owner_state(&node.namespace, r).await?);
        }
        let owners: Vec<(&OwnerReference, OwnerState)> = refs.iter().zip(states).collect();
        let metas = if metas.is_empty() && owners.iter().any(|(_, s)| *s == OwnerState::Waiting) {
            self.dependents_of(&uid)
                .into_iter()
                .map(|(_, m)| m)
                .collect()
        } else {
            metas
        };
        match dependent(&meta, &owners, &metas) {
            DependentAction::Keep => {}
            DependentAction::DropRefs(uids) => {
                let kept = refs
                    .iter()
                    .filter(|r| !uids.contains(&r.uid))
                    .cloned()
                    .collect();
                self.patch(node, Self::refs_patch(&meta, kept)).await?;
            }
            DependentAction::UnblockAndDelete(waiting) => {
                let unblocked = refs
                    .iter()
                    .cloned()
                    .map(|mut r| {
                        if waiting.contains(&r.uid) {
                            r.block_owner_deletion = Some(false);
                        }
                        r
                    })
                    .collect();
                self.patch(node, Self::refs_patch(&meta, unblocked)).await?;
                self.delete(node, &uid, Some(PropagationPolicy::Foreground))
                    .await?;
            }
            DependentAction::Delete(policy) => {
                tracing::debug!(?node, "deleting a dependent whose owners are gone");
                self.delete(node, &uid, policy).await?;
            }
        }
        Ok(Next::Done)
    }
}

impl Reconciler for GarbageCollector {
    type Key = Node;

    fn name(&self) -> &'static str {
        "garbage-collector"
    }

    fn sync<'a>(&'a self, key: &'a Node) -> BoxFuture<'a, driver::Result<Next>> {
        Box::pin(self.sync_node(key))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controllers::driver::tests::Recording;
    use futures::stream;
    use k8s_openapi::api::apps::v1::ReplicaSet;
    use k8s_openapi::api::core::v1::Pod;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
    use kube::runtime::watcher;

    fn oref(uid: &str, block: bool) -> OwnerReference {
        OwnerReference {
            api_version: "apps/v1".into(),
            kind: "ReplicaSet".into(),
            name: format!("rs-{uid}"),
            uid: uid.into(),
            controller: Some(true),
            block_owner_deletion: Some(block),
        }
    }

    fn meta(uid: &str, owners: Vec<OwnerReference>) -> ObjectMeta {
        ObjectMeta {
            name: Some(format!("obj-{uid}")),
            namespace: Some("default".into()),
            uid: Some(uid.into()),
            owner_references: Some(owners),
            resource_version: Some("3".into()),
            ..Default::default()
        }
    }

    #[test]
    fn dependents_go_when_all_owners_do() {
        let (a, b) = (oref("a", true), oref("b", true));
        let m = meta("p", vec![a.clone(), b.clone()]);
        use OwnerState::*;
        assert_eq!(
            dependent(&m, &[(&a, Solid), (&b, Solid)], &[]),
            DependentAction::Keep
        );
        assert_eq!(
            dependent(&m, &[(&a, Solid), (&b, Dangling)], &[]),
            DependentAction::DropRefs(vec!["b".into()])
        );
        assert_eq!(
            dependent(&m, &[(&a, Dangling), (&b, Dangling)], &[]),
            DependentAction::Delete(Some(PropagationPolicy::Background))
        );
        let mut orphaning = m.clone();
        orphaning.finalizers = Some(vec![ORPHAN.into()]);
        assert_eq!(
            dependent(&orphaning, &[(&a, Dangling), (&b, Waiting)], &[]),
            DependentAction::Delete(Some(PropagationPolicy::Orphan))
        );
        assert_eq!(
            dependent(&meta("x", vec![]), &[], &[]),
            DependentAction::Keep
        );
    }

    #[test]
    fn dependents_of_a_foreground_owner_keep_blocking_it_while_they_go() {
        // A Deployment deleted in the foreground, its ReplicaSet, the ReplicaSet's pod.
        let d = OwnerReference {
            kind: "Deployment".into(),
            ..oref("d", true)
        };
        let rs = meta("rs", vec![d.clone()]);
        let pod = meta("pod", vec![oref("rs", true)]);
        use OwnerState::*;
        // The ReplicaSet goes in the foreground, still blocking the Deployment, so the
        // Deployment outlives the pod.
        assert_eq!(
            dependent(&rs, &[(&d, Waiting)], std::slice::from_ref(&pod)),
            DependentAction::Delete(Some(PropagationPolicy::Foreground))
        );
        // Without dependents of its own it simply goes.
        assert_eq!(
            dependent(&rs, &[(&d, Waiting)], &[]),
            DependentAction::Delete(Some(PropagationPolicy::Background))
        );
        // A cycle: its dependent waits for it in the foreground as well. Unblocking the
        // owner is what lets that end.
        let mut waiting_pod = pod.clone();
        waiting_pod.deletion_timestamp = Some(Time(jiff::Timestamp::UNIX_EPOCH));
        waiting_pod.finalizers = Some(vec![FOREGROUND.into()]);
        assert_eq!(
            dependent(&rs, &[(&d, Waiting)], &[waiting_pod]),
            DependentAction::UnblockAndDelete(vec!["d".into()])
        );
    }

    #[test]
    fn foreground_owners_wait_for_blocking_dependents_then_finalize() {
        let mut o = meta("o", vec![]);
        o.deletion_timestamp = Some(Time(jiff::Timestamp::UNIX_EPOCH));
        o.finalizers = Some(vec![FOREGROUND.into()]);
        let blocking = meta("d1", vec![oref("o", true)]);
        let mut going = meta("d2", vec![oref("o", true)]);
        going.deletion_timestamp = o.deletion_timestamp.clone();
        let loose = meta("d3", vec![oref("o", false)]);
        assert_eq!(
            owner(&o, &[blocking.clone(), going.clone(), loose.clone()]),
            vec![OwnerAction::DeleteDependents(vec![0])]
        );
        assert_eq!(owner(&o, &[going]), vec![]);
        assert_eq!(owner(&o, &[loose]), vec![OwnerAction::Finalize(FOREGROUND)]);
        o.finalizers = Some(vec![ORPHAN.into()]);
        assert_eq!(owner(&o, &[blocking]), vec![OwnerAction::Orphan(vec![0])]);
        assert_eq!(owner(&o, &[]), vec![OwnerAction::Finalize(ORPHAN)]);
    }

    #[tokio::test]
    async fn collects_pods_of_a_deleted_replicaset() {
        let caches = Arc::new(Caches::new());
        let fx = Arc::new(Recording::default());
        let gc = GarbageCollector::new(caches.clone(), fx.clone());
        let queue = Queue::new();
        gc.watch(&queue);
        let rs = ReplicaSet {
            metadata: meta("r", vec![]),
            ..Default::default()
        };
        let pod = Pod {
            metadata: meta(
                "p",
                vec![OwnerReference {
                    name: "obj-r".into(),
                    ..oref("r", true)
                }],
            ),
            ..Default::default()
        };
        let (tx, rx) = futures::channel::mpsc::unbounded();
        let sets = caches.replicasets.clone();
        tokio::spawn(async move { sets.feed(rx).await });
        for e in [
            watcher::Event::Init,
            watcher::Event::InitApply(rs.clone()),
            watcher::Event::InitDone,
        ] {
            tx.unbounded_send(Ok(e)).unwrap();
        }
        let pods = vec![
            Ok(watcher::Event::Init),
            Ok(watcher::Event::InitApply(pod)),
            Ok(watcher::Event::InitDone),
        ];
        caches.pods.feed(stream::iter(pods)).await;
        let wait = std::time::Duration::from_secs(5);
        assert!(
            caches
                .replicasets
                .wait_for(|c| c.get("default", "obj-r").is_some(), wait)
                .await
        );
        let mut keys = HashSet::new();
        while !queue.is_empty() {
            let k = queue.next().await;
            gc.sync(&k).await.unwrap();
            queue.done(&k, Ok(Next::Done));
            keys.insert(k.name);
        }
        assert!(keys.contains("obj-p"));
        // The owner exists: nothing is deleted.
        assert!(
            fx.calls().iter().all(|c| !c.starts_with("delete")),
            "{:?}",
            fx.calls()
        );
        tx.unbounded_send(Ok(watcher::Event::Delete(rs))).unwrap();
        assert!(
            caches
                .replicasets
                .wait_for(|c| c.get("default", "obj-r").is_none(), wait)
                .await
        );
        // The owner's deletion wakes its dependent; the live read (the fake answers "not
        // found") confirms it is gone.
        let k = queue.next().await;
        assert_eq!(k.name, "obj-p");
        gc.sync(&k).await.unwrap();
        let calls = fx.calls();
        assert!(
            calls.contains(&"get ReplicaSet default/obj-r".to_string()),
            "{calls:?}"
        );
        assert!(
            calls.contains(&"delete Pod default/obj-p Some(Background)".to_string()),
            "{calls:?}"
        );
    }
}
