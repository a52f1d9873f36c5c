//! The one driver every API-client controller runs on: shared caches, a work queue, and
//! the API calls a decision turns into.
//!
//! * [`Cache`]: one kube-runtime reflector store per kind, fed by one watch and shared by
//!   every controller (at 30,000 pods a second copy would cost as much as the first).
//!   Controllers register [`Hook`]s that map a change to the keys they must look at; a
//!   relist's silent deletions are reported to hooks as deletions.
//! * [`Queue`]: keys waiting for a sync, de-duplicated, one worker per key at a time, a
//!   key that changes while it is being synced is synced again afterwards, delayed
//!   requeues and per-key backoff after errors.
//! * [`Reconciler`] and [`run`]: workers take keys and call `sync`, whose returned
//!   [`Next`] is the requeue (never a side effect).
//! * [`Effects`]: the narrow interface to the API ([`KubeEffects`] is the real one), and
//!   [`Clock`]: the time decisions are made at. Both are passed in, so tests feed them.
//!
//! kube-runtime's own `Controller::for_shared_stream` needs its `unstable-runtime`
//! features; this is the small stable equivalent.

use futures::future::BoxFuture;
use futures::{FutureExt, Stream, StreamExt};
use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta, OwnerReference};
use kube::api::{
    Api, ApiResource, DeleteParams, DynamicObject, Patch, PatchParams, PostParams, Preconditions,
    PropagationPolicy,
};
use kube::core::{Selector, SelectorExt};
use kube::runtime::reflector::store::Writer;
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::watcher;
use kube::Resource;
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet, VecDeque};
use std::fmt::Debug;
use std::hash::Hash;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// Errors of one sync.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An API call failed.
    #[error("{verb} {kind} {namespace}/{name}")]
    Api {
        /// What was attempted.
        verb: &'static str,
        /// The kind.
        kind: String,
        /// The namespace (empty for cluster-scoped objects).
        namespace: String,
        /// The name.
        name: String,
        /// The cause.
        #[source]
        source: kube::Error,
    },
    /// An object could not be turned into JSON or back.
    #[error("encoding {0}")]
    Encode(String, #[source] serde_json::Error),
    /// A legacy ServiceAccount token could not be signed.
    #[error("signing a service account token")]
    Sign(#[source] crate::auth::jwt::Error),
}

impl Error {
    /// The HTTP status code of the API's answer, if the cause was one.
    pub fn code(&self) -> Option<u16> {
        let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(self);
        while let Some(e) = cause {
            if let Some(kube::Error::Api(status)) = e.downcast_ref::<kube::Error>() {
                return Some(status.code);
            }
            cause = e.source();
        }
        None
    }
}

/// `Result` with this module's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// One kind the controllers write: its API coordinates and scope.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Kind {
    /// Group, version, kind and plural.
    pub resource: ApiResource,
    /// Whether objects live in namespaces.
    pub namespaced: bool,
}

impl Kind {
    /// The kind of a k8s-openapi type.
    pub fn of<K: Resource<DynamicType = ()>>(namespaced: bool) -> Kind {
        Kind {
            resource: ApiResource::erase::<K>(&()),
            namespaced,
        }
    }

    /// core/v1 Pod.
    pub fn pods() -> Kind {
        Kind::of::<Pod>(true)
    }

    /// apps/v1 ReplicaSet.
    pub fn replicasets() -> Kind {
        Kind::of::<ReplicaSet>(true)
    }

    /// apps/v1 Deployment.
    pub fn deployments() -> Kind {
        Kind::of::<Deployment>(true)
    }

    /// core/v1 Event.
    pub fn events() -> Kind {
        Kind::of::<k8s_openapi::api::core::v1::Event>(true)
    }
}

/// A boxed API call.
pub type Call<'a, T> = BoxFuture<'a, Result<T, kube::Error>>;

/// The API calls controllers make, as JSON. Narrow on purpose: a test records them.
pub trait Effects: Send + Sync {
    /// Creates an object; answers the stored object (with its generated name).
    fn create<'a>(&'a self, kind: &'a Kind, namespace: &'a str, body: Value) -> Call<'a, Value>;
    /// Applies a JSON merge patch. A `metadata.resourceVersion` in it is a precondition.
    fn merge_patch<'a>(
        &'a self,
        kind: &'a Kind,
        namespace: &'a str,
        name: &'a str,
        patch: Value,
    ) -> Call<'a, Value>;
    /// Replaces the `status` subresource with `body`'s status (preconditioned on its
    /// resourceVersion).
    fn replace_status<'a>(
        &'a self,
        kind: &'a Kind,
        namespace: &'a str,
        name: &'a str,
        body: Value,
    ) -> Call<'a, Value>;
    /// Deletes an object, if it still has `uid`, with a propagation policy.
    fn delete<'a>(
        &'a self,
        kind: &'a Kind,
        namespace: &'a str,
        name: &'a str,
        uid: Option<&'a str>,
        propagation: Option<PropagationPolicy>,
    ) -> Call<'a, ()>;
    /// Deletes a pod at once (grace period 0), if it still has `uid`, as upstream's pod
    /// garbage collector does for pods no kubelet will finish.
    fn delete_now<'a>(
        &'a self,
        kind: &'a Kind,
        namespace: &'a str,
        name: &'a str,
        uid: Option<&'a str>,
    ) -> Call<'a, ()>;
    /// Reads an object live (`None` when it does not exist).
    fn get<'a>(
        &'a self,
        kind: &'a Kind,
        namespace: &'a str,
        name: &'a str,
    ) -> Call<'a, Option<Value>>;
}

/// [`Effects`] over a real client.
#[derive(Clone)]
pub struct KubeEffects {
    client: kube::Client,
    manager: &'static str,
}

impl KubeEffects {
    /// Calls through `client`, naming `manager` as the field manager of writes.
    pub fn new(client: kube::Client, manager: &'static str) -> Self {
        KubeEffects { client, manager }
    }

    /// Deletes with `dp`, preconditioned on `uid` when given.
    fn delete_with<'a>(
        &'a self,
        kind: &'a Kind,
        namespace: &'a str,
        name: &'a str,
        uid: Option<&'a str>,
        mut dp: DeleteParams,
    ) -> Call<'a, ()> {
        dp.preconditions = uid.map(|u| Preconditions {
            uid: Some(u.into()),
            resource_version: None,
        });
        Box::pin(async move {
            self.api(kind, namespace).delete(name, &dp).await?;
            Ok(())
        })
    }

    fn api(&self, kind: &Kind, namespace: &str) -> Api<DynamicObject> {
        if kind.namespaced {
            Api::namespaced_with(self.client.clone(), namespace, &kind.resource)
        } else {
            Api::all_with(self.client.clone(), &kind.resource)
        }
    }
}

fn to_dynamic(v: Value) -> Result<DynamicObject, kube::Error> {
    serde_json::from_value(v).map_err(kube::Error::SerdeError)
}

fn to_value(o: &DynamicObject) -> Result<Value, kube::Error> {
    serde_json::to_value(o).map_err(kube::Error::SerdeError)
}

impl Effects for KubeEffects {
    fn create<'a>(&'a self, kind: &'a Kind, namespace: &'a str, body: Value) -> Call<'a, Value> {
        Box::pin(async move {
            let pp = PostParams {
                field_manager: Some(self.manager.into()),
                ..Default::default()
            };
            let made = self
                .api(kind, namespace)
                .create(&pp, &to_dynamic(body)?)
                .await?;
            to_value(&made)
        })
    }

    fn merge_patch<'a>(
        &'a self,
        kind: &'a Kind,
        namespace: &'a str,
        name: &'a str,
        patch: Value,
    ) -> Call<'a, Value> {
        Box::pin(async move {
            let pp = PatchParams {
                field_manager: Some(self.manager.into()),
                ..Default::default()
            };
            let done = self
                .api(kind, namespace)
                .patch(name, &pp, &Patch::Merge(&patch))
                .await?;
            to_value(&done)
        })
    }

    fn replace_status<'a>(
        &'a self,
        kind: &'a Kind,
        namespace: &'a str,
        name: &'a str,
        body: Value,
    ) -> Call<'a, Value> {
        Box::pin(async move {
            let pp = PostParams {
                field_manager: Some(self.manager.into()),
                ..Default::default()
            };
            let done = self
                .api(kind, namespace)
                .replace_status(name, &pp, &to_dynamic(body)?)
                .await?;
            to_value(&done)
        })
    }

    fn delete<'a>(
        &'a self,
        kind: &'a Kind,
        namespace: &'a str,
        name: &'a str,
        uid: Option<&'a str>,
        propagation: Option<PropagationPolicy>,
    ) -> Call<'a, ()> {
        let dp = DeleteParams {
            propagation_policy: propagation,
            ..Default::default()
        };
        self.delete_with(kind, namespace, name, uid, dp)
    }

    fn delete_now<'a>(
        &'a self,
        kind: &'a Kind,
        namespace: &'a str,
        name: &'a str,
        uid: Option<&'a str>,
    ) -> Call<'a, ()> {
        let dp = DeleteParams {
            grace_period_seconds: Some(0),
            ..Default::default()
        };
        self.delete_with(kind, namespace, name, uid, dp)
    }

    fn get<'a>(
        &'a self,
        kind: &'a Kind,
        namespace: &'a str,
        name: &'a str,
    ) -> Call<'a, Option<Value>> {
        Box::pin(async move {
            match self.api(kind, namespace).get_opt(name).await? {
                Some(o) => Ok(Some(to_value(&o)?)),
                None => Ok(None),
            }
        })
    }
}

/// Wraps an API failure with what was being done.
pub fn api_error(
    verb: &'static str,
    kind: &Kind,
    namespace: &str,
    name: &str,
) -> impl FnOnce(kube::Error) -> Error {
    let (kind, namespace, name) = (
        kind.resource.kind.clone(),
        namespace.to_string(),
        name.to_string(),
    );
    move |source| Error::Api {
        verb,
        kind,
        namespace,
        name,
        source,
    }
}

/// The time decisions are made at.
pub trait Clock: Send + Sync {
    /// Now.
    fn now(&self) -> jiff::Timestamp;
}

/// A time as the API writes it (RFC 3339, whole seconds, UTC).
pub fn rfc3339(t: jiff::Timestamp) -> String {
    t.strftime("%Y-%m-%dT%H:%M:%SZ").to_string()
}

/// The system's wall clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> jiff::Timestamp {
        jiff::Timestamp::now()
    }
}

/// What happened to a cached object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    /// Added or modified (also: listed again after a relist).
    Applied,
    /// Deleted (also: missing from a relist).
    Deleted,
}

/// Called by a cache after each change it applied. Must be quick: it runs on the watch.
pub type Hook<K> = Box<dyn Fn(&K, Change) + Send + Sync>;

/// One kind's shared cache: a reflector store, the hooks told of each change, and a
/// counter of applied events that writers wait on to see their own writes.
pub struct Cache<K>
where
    K: Resource<DynamicType = ()> + Clone + 'static,
{
    reader: Store<K>,
    writer: Mutex<Option<Writer<K>>>,
    hooks: RwLock<Vec<Hook<K>>>,
    applied: tokio::sync::watch::Sender<u64>,
}

impl<K> Cache<K>
where
    K: Resource<DynamicType = ()> + Clone + Send + Sync + 'static,
{
    /// An empty cache, not yet fed.
    pub fn new() -> Arc<Self> {
        let writer = Writer::default();
        Arc::new(Cache {
            reader: writer.as_reader(),
            writer: Mutex::new(Some(writer)),
            hooks: RwLock::new(Vec::new()),
            applied: tokio::sync::watch::Sender::new(0),
        })
    }

    /// The store to read.
    pub fn store(&self) -> &Store<K> {
        &self.reader
    }

    /// One object by namespace and name.
    pub fn get(&self, namespace: &str, name: &str) -> Option<Arc<K>> {
        let mut r = ObjectRef::<K>::new(name);
        if !namespace.is_empty() {
            r = r.within(namespace);
        }
        self.reader.get(&r)
    }

    /// The objects of one namespace.
    pub fn in_namespace(&self, namespace: &str) -> Vec<Arc<K>> {
        self.reader
            .state_filter(|o| o.meta().namespace.as_deref().unwrap_or("") == namespace)
    }

    /// Registers a hook; register before the cache is fed so no change is missed.
    pub fn on_change(&self, hook: Hook<K>) {
        if let Ok(mut hooks) = self.hooks.write() {
            hooks.push(hook);
        }
    }

    fn tell(&self, obj: &K, change: Change) {
        if let Ok(hooks) = self.hooks.read() {
            for h in hooks.iter() {
                h(obj, change);
            }
        }
    }

    /// Feeds the cache from a watch stream until it ends. Only the first call feeds; a
    /// second returns at once.
    pub async fn feed<S>(&self, events: S)
    where
        S: Stream<Item = watcher::Result<watcher::Event<K>>> + Send,
    {
        let Some(mut writer) = self.writer.lock().ok().and_then(|mut w| w.take()) else {
            return;
        };
        let mut events = std::pin::pin!(events);
        while let Some(event) = events.next().await {
            let event = match event {
                Ok(e) => e.modify(|o| o.meta_mut().managed_fields = None),
                Err(e) => {
                    tracing::warn!(kind = %K::kind(&()), error = %e, "watch failed; retrying");
                    continue;
                }
            };
            match &event {
                watcher::Event::Apply(o) => {
                    writer.apply_watcher_event(&event);
                    self.tell(o, Change::Applied);
                }
                watcher::Event::Delete(o) => {
                    writer.apply_watcher_event(&event);
                    self.tell(o, Change::Deleted);
                }
                watcher::Event::Init | watcher::Event::InitApply(_) => {
                    writer.apply_watcher_event(&event);
                }
                watcher::Event::InitDone => {
                    let before = self.reader.state();
                    writer.apply_watcher_event(&event);
                    for old in before {
                        let r = ObjectRef::from_obj(old.as_ref());
                        let same = self
                            .reader
                            .get(&r)
                            .is_some_and(|n| n.meta().uid == old.meta().uid);
                        if !same {
                            self.tell(&old, Change::Deleted);
                        }
                    }
                    for o in self.reader.state() {
                        self.tell(&o, Change::Applied);
                    }
                }
            }
            self.applied.send_modify(|n| *n += 1);
        }
    }

    /// Waits until `done` holds on the store, or `timeout` passes; says which. Writers
    /// call it so their next decision sees their own writes (upstream's expectations).
    pub async fn wait_for(&self, done: impl Fn(&Self) -> bool, timeout: Duration) -> bool {
        let mut rx = self.applied.subscribe();
        let deadline = Instant::now() + timeout;
        loop {
            if done(self) {
                return true;
            }
            match tokio::time::timeout_at(deadline, rx.changed()).await {
                Ok(Ok(())) => {}
                Ok(Err(_)) | Err(_) => return done(self),
            }
        }
    }
}

/// Watches a kind through `client` (only the objects `fields` selects, if given) and
/// feeds `cache` until `cancel` fires.
pub async fn reflect<K>(
    client: kube::Client,
    cache: Arc<Cache<K>>,
    fields: Option<&'static str>,
    cancel: CancellationToken,
) where
    K: Resource<DynamicType = ()>
        + Clone
        + Debug
        + serde::de::DeserializeOwned
        + Send
        + Sync
        + 'static,
{
    use kube::runtime::WatchStreamExt;
    let api = Api::<K>::all(client);
    let mut config = watcher::Config::default();
    if let Some(f) = fields {
        config = config.fields(f);
    }
    let stream = watcher::watcher(api, config).default_backoff();
    tokio::select! {
        () = cancel.cancelled() => {}
        () = cache.feed(stream) => {}
    }
}

/// Declares [`Caches`]: one shared cache per kind the controllers read, optionally
/// limited by a field selector.
macro_rules! caches {
    ($($field:ident: $ty:ty, $doc:literal $(, fields = $fields:literal)?;)*) => {
        /// The caches the controllers share, one per kind, each fed by one watch.
        pub struct Caches {
            $(
                #[doc = $doc]
                pub $field: Arc<Cache<$ty>>,
            )*
        }

        impl Caches {
            /// Empty caches.
            pub fn new() -> Self {
                Caches { $($field: Cache::new(),)* }
            }

            /// Starts one watch per cache, each feeding it until `cancel` fires.
            pub fn feed_all(
                &self,
                client: &kube::Client,
                cancel: &CancellationToken,
                tasks: &mut tokio::task::JoinSet<()>,
            ) {
                $(
                    let fields: Option<&'static str> = None $(.or(Some($fields)))?;
                    tasks.spawn(reflect(client.clone(), self.$field.clone(), fields, cancel.clone()));
                )*
            }

            /// Waits until every cache holds its first complete list.
            pub async fn ready(&self) {
                $(
                    let _ = self.$field.store().wait_until_ready().await;
                )*
            }

            /// How many objects each cache holds, for the log.
            pub fn sizes(&self) -> Vec<(&'static str, usize)> {
                vec![$((stringify!($field), self.$field.store().len()),)*]
            }
        }
    };
}

caches! {
    pods: Pod, "Pods.";
    replicasets: ReplicaSet, "ReplicaSets.";
    deployments: Deployment, "Deployments.";
    daemonsets: k8s_openapi::api::apps::v1::DaemonSet, "DaemonSets.";
    statefulsets: k8s_openapi::api::apps::v1::StatefulSet, "StatefulSets.";
    controllerrevisions: k8s_openapi::api::apps::v1::ControllerRevision, "ControllerRevisions.";
    jobs: k8s_openapi::api::batch::v1::Job, "Jobs.";
    cronjobs: k8s_openapi::api::batch::v1::CronJob, "CronJobs.";
    nodes: k8s_openapi::api::core::v1::Node, "Nodes.";
    leases: k8s_openapi::api::coordination::v1::Lease, "Leases (node heartbeats among them).";
    namespaces: k8s_openapi::api::core::v1::Namespace, "Namespaces.";
    services: k8s_openapi::api::core::v1::Service, "Services.";
    endpoints: k8s_openapi::api::core::v1::Endpoints, "Endpoints.";
    endpointslices: k8s_openapi::api::discovery::v1::EndpointSlice, "EndpointSlices.";
    serviceaccounts: k8s_openapi::api::core::v1::ServiceAccount, "ServiceAccounts.";
    pvcs: k8s_openapi::api::core::v1::PersistentVolumeClaim, "PersistentVolumeClaims.";
    pdbs: k8s_openapi::api::policy::v1::PodDisruptionBudget, "PodDisruptionBudgets.";
    resourcequotas: k8s_openapi::api::core::v1::ResourceQuota, "ResourceQuotas.";
    rootcas: k8s_openapi::api::core::v1::ConfigMap, "The `kube-root-ca.crt` ConfigMaps (no others).",
        fields = "metadata.name=kube-root-ca.crt";
    tokensecrets: k8s_openapi::api::core::v1::Secret, "ServiceAccount token Secrets (no others).",
        fields = "type=kubernetes.io/service-account-token";
}

impl Default for Caches {
    fn default() -> Self {
        Caches::new()
    }
}

/// What a sync asks for next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    /// Nothing until something changes.
    Done,
    /// Look again after this long even if nothing changes.
    After(Duration),
}

impl Next {
    /// The sooner of two.
    pub fn min(self, other: Next) -> Next {
        match (self, other) {
            (Next::Done, o) | (o, Next::Done) => o,
            (Next::After(a), Next::After(b)) => Next::After(a.min(b)),
        }
    }
}

struct QueueState<T> {
    ready: VecDeque<T>,
    queued: HashSet<T>,
    active: HashSet<T>,
    dirty: HashSet<T>,
    delayed: BTreeMap<(Instant, u64), T>,
    seq: u64,
    failures: HashMap<T, u32>,
}

/// A work queue of keys: de-duplicated, never the same key on two workers, delayed
/// requeues, and backoff for keys whose sync failed.
pub struct Queue<T> {
    state: Mutex<QueueState<T>>,
    wake: tokio::sync::Notify,
}

impl<T: Clone + Eq + Hash + Send> Queue<T> {
    /// An empty queue.
    pub fn new() -> Arc<Self> {
        Arc::new(Queue {
            state: Mutex::new(QueueState {
                ready: VecDeque::new(),
                queued: HashSet::new(),
                active: HashSet::new(),
                dirty: HashSet::new(),
                delayed: BTreeMap::new(),
                seq: 0,
                failures: HashMap::new(),
            }),
            wake: tokio::sync::Notify::new(),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, QueueState<T>> {
        // A panic while holding this lock cannot leave the sets inconsistent in a way
        // that matters more than stopping would.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Asks for a sync of `key` soon.
    pub fn add(&self, key: T) {
        let mut s = self.lock();
        if s.active.contains(&key) {
            s.dirty.insert(key);
        } else if s.queued.insert(key.clone()) {
            s.ready.push_back(key);
            drop(s);
            self.wake.notify_one();
        }
    }

    /// Asks for a sync of `key` after `delay`.
    pub fn add_after(&self, key: T, delay: Duration) {
        if delay.is_zero() {
            return self.add(key);
        }
        let mut s = self.lock();
        s.seq += 1;
        let at = (Instant::now() + delay, s.seq);
        s.delayed.insert(at, key);
        drop(s);
        self.wake.notify_one();
    }

    /// How many keys wait (ready or delayed).
    pub fn len(&self) -> usize {
        let s = self.lock();
        s.ready.len() + s.delayed.len()
    }

    /// Whether no key waits.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The next key to sync; the caller must call [`Queue::done`] with it.
    pub async fn next(&self) -> T {
        loop {
            let notified = self.wake.notified();
            let deadline = {
                let mut s = self.lock();
                let now = Instant::now();
                while let Some(entry) = s.delayed.first_entry() {
                    if entry.key().0 > now {
                        break;
                    }
                    let key = entry.remove();
                    if s.active.contains(&key) {
                        s.dirty.insert(key);
                    } else if s.queued.insert(key.clone()) {
                        s.ready.push_back(key);
                    }
                }
                if let Some(key) = s.ready.pop_front() {
                    s.queued.remove(&key);
                    s.active.insert(key.clone());
                    if !s.ready.is_empty() {
                        // Let another worker pick up the rest.
                        self.wake.notify_one();
                    }
                    return key;
                }
                s.delayed.keys().next().map(|k| k.0)
            };
            match deadline {
                Some(at) => {
                    tokio::select! {
                        () = notified => {}
                        () = tokio::time::sleep_until(at) => {}
                    }
                }
                None => notified.await,
            }
        }
    }

    /// Ends a sync of `key` with its outcome: `Ok(next)` or a failure (backoff).
    pub fn done(&self, key: &T, outcome: Result<Next, ()>) {
        let mut s = self.lock();
        s.active.remove(key);
        let delay = match outcome {
            Ok(next) => {
                s.failures.remove(key);
                match next {
                    Next::Done => None,
                    Next::After(d) => Some(d),
                }
            }
            Err(()) => {
                let n = s.failures.entry(key.clone()).or_insert(0);
                *n = n.saturating_add(1);
                Some(backoff(*n))
            }
        };
        let again = s.dirty.remove(key);
        drop(s);
        if again {
            self.add(key.clone());
        } else if let Some(d) = delay {
            self.add_after(key.clone(), d);
        }
    }
}

/// Per-key retry delay after `failures` failed syncs: 100 ms doubling, at most 2 min.
pub fn backoff(failures: u32) -> Duration {
    let exp = failures.saturating_sub(1).min(11);
    Duration::from_millis(100u64 << exp).min(Duration::from_secs(120))
}

/// A controller as the driver sees it: a key type and one sync for one key.
pub trait Reconciler: Send + Sync + 'static {
    /// What the queue holds.
    type Key: Clone + Eq + Hash + Debug + Send + Sync + 'static;
    /// The controller's name, for logs.
    fn name(&self) -> &'static str;
    /// Reads the caches, decides, and carries the decision out.
    fn sync<'a>(&'a self, key: &'a Self::Key) -> BoxFuture<'a, Result<Next>>;
}

/// Runs `workers` workers on `queue` until `cancel` fires.
pub async fn run<R: Reconciler>(
    reconciler: Arc<R>,
    queue: Arc<Queue<R::Key>>,
    workers: usize,
    cancel: CancellationToken,
) {
    let mut set = tokio::task::JoinSet::new();
    for _ in 0..workers.max(1) {
        let (r, q, c) = (reconciler.clone(), queue.clone(), cancel.clone());
        set.spawn(async move {
            loop {
                let key = tokio::select! {
                    () = c.cancelled() => return,
                    k = q.next() => k,
                };
                // A panicking sync must not take its worker (and its key) with it.
                let sync = std::panic::AssertUnwindSafe(r.sync(&key)).catch_unwind();
                let outcome = tokio::select! {
                    () = c.cancelled() => return,
                    o = sync => o,
                };
                match outcome {
                    Ok(Ok(next)) => q.done(&key, Ok(next)),
                    Err(_) => {
                        tracing::error!(controller = r.name(), key = ?key, "sync panicked; will retry");
                        q.done(&key, Err(()));
                    }
                    Ok(Err(e)) => {
                        tracing::warn!(controller = r.name(), key = ?key, error = %crate::controllers::driver::chain(&e), "sync failed; will retry");
                        q.done(&key, Err(()));
                    }
                }
            }
        });
    }
    while set.join_next().await.is_some() {}
}

/// What an API failure says, as upstream's events quote it (after "Error creating: ").
pub fn api_message(e: &kube::Error) -> String {
    match e {
        kube::Error::Api(s) => s.message.clone(),
        other => chain(other),
    }
}

/// An error with its causes, for logs.
pub fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut s = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cause = c.source();
    }
    s
}

/// Namespace and name: the key of a namespaced object.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Key {
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
}

impl Key {
    /// The key of an object.
    pub fn of(meta: &ObjectMeta) -> Key {
        Key {
            namespace: meta.namespace.clone().unwrap_or_default(),
            name: meta.name.clone().unwrap_or_default(),
        }
    }
}

/// Queues whoever must look at a dependent that changed: its controller when that is
/// `group`'s `kind`, or, for an orphan, every object of `owners` in its namespace that
/// `adopts` accepts (upstream: every controller whose selector matches may adopt it).
pub fn queue_controller<O>(
    queue: &Queue<Key>,
    owners: &Cache<O>,
    group: &str,
    kind: &str,
    dependent: &ObjectMeta,
    adopts: impl Fn(&O) -> bool,
) where
    O: Resource<DynamicType = ()> + Clone + Send + Sync + 'static,
{
    let namespace = dependent.namespace.clone().unwrap_or_default();
    match controller_of(dependent) {
        Some(r) if r.kind == kind && r.api_version.split('/').next() == Some(group) => {
            queue.add(Key {
                namespace,
                name: r.name.clone(),
            })
        }
        Some(_) => {}
        None => {
            for owner in owners.in_namespace(&namespace) {
                if adopts(&owner) {
                    queue.add(Key::of(owner.meta()));
                }
            }
        }
    }
}

/// The owner reference marked `controller: true`, if any.
pub fn controller_of(meta: &ObjectMeta) -> Option<&OwnerReference> {
    meta.owner_references
        .as_deref()
        .unwrap_or_default()
        .iter()
        .find(|r| r.controller == Some(true))
}

/// A controller reference to `owner`, as upstream controllers write them.
pub fn controller_ref<K: Resource<DynamicType = ()>>(owner: &K) -> OwnerReference {
    OwnerReference {
        api_version: K::api_version(&()).into_owned(),
        kind: K::kind(&()).into_owned(),
        name: owner.meta().name.clone().unwrap_or_default(),
        uid: owner.meta().uid.clone().unwrap_or_default(),
        controller: Some(true),
        block_owner_deletion: Some(true),
    }
}

/// A label selector compiled once for many matches. `None` (a missing or invalid
/// selector) matches nothing, as upstream's controllers treat it.
pub struct LabelMatcher(Option<Selector>);

impl LabelMatcher {
    /// Compiles `selector`.
    pub fn new(selector: Option<&LabelSelector>) -> Self {
        LabelMatcher(selector.and_then(|s| Selector::try_from(s.clone()).ok()))
    }

    /// Whether `labels` are selected. An empty selector selects everything.
    pub fn matches(&self, labels: Option<&BTreeMap<String, String>>) -> bool {
        let empty = BTreeMap::new();
        match &self.0 {
            None => false,
            Some(s) => s.matches(labels.unwrap_or(&empty)),
        }
    }
}

/// A set of unique ids, for waiting on a cache to show writes.
pub type Uids = BTreeSet<String>;

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use futures::stream;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// A recording [`Effects`]: answers creates with the body plus a name and uid, and
    /// everything else with success.
    #[derive(Default)]
    pub struct Recording {
        pub calls: Mutex<Vec<String>>,
        pub fail_creates_after: Mutex<Option<usize>>,
        pub creates: AtomicUsize,
    }

    impl Recording {
        pub fn calls(&self) -> Vec<String> {
            self.calls.lock().unwrap().clone()
        }
        fn log(&self, s: String) {
            self.calls.lock().unwrap().push(s);
        }
    }

    fn refused(code: u16) -> kube::Error {
        kube::Error::Api(
            kube::core::Status {
                code,
                message: "refused".into(),
                reason: "Forbidden".into(),
                ..Default::default()
            }
            .boxed(),
        )
    }

    impl Effects for Recording {
        fn create<'a>(
            &'a self,
            kind: &'a Kind,
            namespace: &'a str,
            mut body: Value,
        ) -> Call<'a, Value> {
            Box::pin(async move {
                let n = if kind.resource.kind == "Pod" {
                    self.creates.fetch_add(1, Ordering::SeqCst)
                } else {
                    0
                };
                if let Some(limit) = *self.fail_creates_after.lock().unwrap() {
                    if n >= limit {
                        self.log(format!("create {} {namespace} refused", kind.resource.kind));
                        return Err(refused(403));
                    }
                }
                let name = match body.pointer("/metadata/name").and_then(Value::as_str) {
                    Some(n) => n.to_string(),
                    None => format!(
                        "{}{n}",
                        body.pointer("/metadata/generateName")
                            .and_then(Value::as_str)
                            .unwrap_or("")
                    ),
                };
                body["metadata"]["name"] = name.clone().into();
                body["metadata"]["uid"] = format!("uid-{name}").into();
                self.log(format!("create {} {namespace}/{name}", kind.resource.kind));
                Ok(body)
            })
        }
        fn merge_patch<'a>(
            &'a self,
            kind: &'a Kind,
            namespace: &'a str,
            name: &'a str,
            patch: Value,
        ) -> Call<'a, Value> {
            Box::pin(async move {
                self.log(format!(
                    "patch {} {namespace}/{name} {patch}",
                    kind.resource.kind
                ));
                Ok(patch)
            })
        }
        fn replace_status<'a>(
            &'a self,
            kind: &'a Kind,
            namespace: &'a str,
            name: &'a str,
            body: Value,
        ) -> Call<'a, Value> {
            Box::pin(async move {
                self.log(format!(
                    "status {} {namespace}/{name} {}",
                    kind.resource.kind, body["status"]
                ));
                Ok(body)
            })
        }
        fn delete<'a>(
            &'a self,
            kind: &'a Kind,
            namespace: &'a str,
            name: &'a str,
            _uid: Option<&'a str>,
            p: Option<PropagationPolicy>,
        ) -> Call<'a, ()> {
            Box::pin(async move {
                self.log(format!(
                    "delete {} {namespace}/{name} {p:?}",
                    kind.resource.kind
                ));
                Ok(())
            })
        }
        fn delete_now<'a>(
            &'a self,
            kind: &'a Kind,
            namespace: &'a str,
            name: &'a str,
            _uid: Option<&'a str>,
        ) -> Call<'a, ()> {
            Box::pin(async move {
                self.log(format!(
                    "delete now {} {namespace}/{name}",
                    kind.resource.kind
                ));
                Ok(())
            })
        }
        fn get<'a>(
            &'a self,
            kind: &'a Kind,
            namespace: &'a str,
            name: &'a str,
        ) -> Call<'a, Option<Value>> {
            Box::pin(async move {
                self.log(format!("get {} {namespace}/{name}", kind.resource.kind));
                Ok(None)
            })
        }
    }

    /// A clock that stays where it is put.
    pub struct FixedClock(pub Mutex<jiff::Timestamp>);

    impl Clock for FixedClock {
        fn now(&self) -> jiff::Timestamp {
            *self.0.lock().unwrap()
        }
    }

    #[tokio::test(start_paused = true)]
    async fn queue_deduplicates_and_resyncs_keys_changed_while_active() {
        let q = Queue::new();
        q.add(1);
        q.add(1);
        q.add(2);
        assert_eq!(q.len(), 2);
        let k = q.next().await;
        assert_eq!(k, 1);
        q.add(1); // changed while active: synced again after
        assert_eq!(q.len(), 1);
        q.done(&1, Ok(Next::Done));
        assert_eq!(q.next().await, 2);
        assert_eq!(q.next().await, 1);
    }

    #[tokio::test(start_paused = true)]
    async fn queue_delays_and_backs_off() {
        let q = Queue::new();
        q.add_after("a", Duration::from_secs(5));
        let start = Instant::now();
        assert_eq!(q.next().await, "a");
        assert_eq!(start.elapsed(), Duration::from_secs(5));
        q.done(&"a", Err(()));
        q.next().await;
        assert_eq!(start.elapsed(), Duration::from_millis(5100));
        q.done(&"a", Err(()));
        q.next().await;
        assert_eq!(start.elapsed(), Duration::from_millis(5300));
        assert_eq!(backoff(30), Duration::from_secs(120));
    }

    fn pod(name: &str, uid: &str) -> Pod {
        Pod {
            metadata: ObjectMeta {
                name: Some(name.into()),
                namespace: Some("ns".into()),
                uid: Some(uid.into()),
                ..Default::default()
            },
            ..Default::default()
        }
    }

    #[tokio::test]
    async fn cache_tells_hooks_of_changes_and_of_deletions_a_relist_reveals() {
        let cache = Cache::<Pod>::new();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let s = seen.clone();
        cache.on_change(Box::new(move |p: &Pod, c| {
            s.lock()
                .unwrap()
                .push(format!("{:?} {}", c, p.metadata.name.clone().unwrap()));
        }));
        let events = vec![
            Ok(watcher::Event::Init),
            Ok(watcher::Event::InitApply(pod("a", "1"))),
            Ok(watcher::Event::InitApply(pod("b", "2"))),
            Ok(watcher::Event::InitDone),
            Ok(watcher::Event::Apply(pod("c", "3"))),
            Ok(watcher::Event::Delete(pod("c", "3"))),
            // The watch broke; "a" went away and "b" was re-created meanwhile.
            Ok(watcher::Event::Init),
            Ok(watcher::Event::InitApply(pod("b", "4"))),
            Ok(watcher::Event::InitDone),
        ];
        cache.feed(stream::iter(events)).await;
        let mut seen = seen.lock().unwrap().clone();
        seen[..2].sort();
        seen[4..6].sort();
        let want = [
            "Applied a",
            "Applied b",
            "Applied c",
            "Deleted c",
            "Deleted a",
            "Deleted b",
            "Applied b",
        ];
        assert_eq!(seen, want.map(String::from).to_vec());
        assert_eq!(cache.store().len(), 1);
        assert!(
            cache
                .wait_for(|c| c.get("ns", "b").is_some(), Duration::from_millis(1))
                .await
        );
    }
}
