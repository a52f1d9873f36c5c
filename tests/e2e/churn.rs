//! Sustained updates do not grow the database without bound: history is compacted and
//! the freed space reused.

use crate::harness::Server;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, Patch, PatchParams, PostParams};
use serde_json::json;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Instant;

const OBJECTS: usize = 300;
const UPDATES: usize = 100_000;
const CLIENTS: usize = 16;
/// The bound on the database file plus its write-ahead log.
const MAX_BYTES: u64 = 64 * 1024 * 1024;
/// How much the main file may grow between the half-way and the final measurement.
const GROWTH_SLACK: u64 = 2 * 1024 * 1024;
/// The write-ahead log is truncated after checkpoints; it must stay well below this.
const MAX_WAL_BYTES: u64 = 16 * 1024 * 1024;

fn size(path: &Path) -> u64 {
    match std::fs::metadata(path) {
        Ok(m) => m.len(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => 0,
        Err(e) => panic!("{}: {e}", path.display()),
    }
}

#[derive(Debug, Clone, Copy)]
struct Sizes {
    db: u64,
    wal: u64,
}

impl Sizes {
    fn of(server: &Server) -> Sizes {
        let db = server.db_path();
        let mut wal = db.clone().into_os_string();
        wal.push("-wal");
        Sizes {
            db: size(&db),
            wal: size(Path::new(&wal)),
        }
    }

    fn total(self) -> u64 {
        self.db + self.wal
    }
}

fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / (1024.0 * 1024.0))
}

/// Runs updates `from..to` with `CLIENTS` concurrent clients.
async fn update(apis: &[Api<ConfigMap>], from: usize, to: usize) {
    let next = Arc::new(AtomicUsize::new(from));
    let mut tasks = tokio::task::JoinSet::new();
    for api in apis {
        let (api, next) = (api.clone(), next.clone());
        tasks.spawn(async move {
            loop {
                let n = next.fetch_add(1, Ordering::Relaxed);
                if n >= to {
                    return;
                }
                let name = format!("churn-{:03}", n % OBJECTS);
                let patch = Patch::Merge(json!({"data": {"counter": n.to_string()}}));
                api.patch(&name, &PatchParams::default(), &patch)
                    .await
                    .unwrap_or_else(|e| panic!("update {n} of {name}: {e}"));
            }
        });
    }
    while let Some(done) = tasks.join_next().await {
        done.expect("an updater panicked");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn database_stays_bounded_under_churn() {
    let server = tokio::task::block_in_place(Server::start);
    let mut apis = Vec::new();
    for _ in 0..CLIENTS {
        apis.push(Api::<ConfigMap>::namespaced(
            server.client().await,
            "default",
        ));
    }
    let pad = "p".repeat(512);
    for i in 0..OBJECTS {
        let cm: ConfigMap = serde_json::from_value(json!({
            "metadata": {"name": format!("churn-{i:03}")},
            "data": {"counter": "0", "pad": pad},
        }))
        .unwrap();
        apis[i % CLIENTS]
            .create(&PostParams::default(), &cm)
            .await
            .expect("creating a churn object");
    }

    let started = Instant::now();
    update(&apis, 0, UPDATES / 2).await;
    let half = Sizes::of(&server);
    let half_time = started.elapsed();
    update(&apis, UPDATES / 2, UPDATES).await;
    let full = Sizes::of(&server);
    let elapsed = started.elapsed();
    eprintln!(
        "churn: {UPDATES} updates over {OBJECTS} objects in {elapsed:?} ({:.0}/s; half in {half_time:?}); \
         after {}: db {} + wal {} = {}; after {UPDATES}: db {} + wal {} = {} (bound {})",
        UPDATES as f64 / elapsed.as_secs_f64(),
        UPDATES / 2,
        mib(half.db),
        mib(half.wal),
        mib(half.total()),
        mib(full.db),
        mib(full.wal),
        mib(full.total()),
        mib(MAX_BYTES),
    );

    // The last write of every object is what is stored.
    let api = &apis[0];
    for i in [0, OBJECTS / 2, OBJECTS - 1] {
        let cm = api.get(&format!("churn-{i:03}")).await.expect("get");
        let last = (0..UPDATES).rev().find(|n| n % OBJECTS == i).unwrap();
        let counter: usize = cm.data.as_ref().unwrap()["counter"].parse().unwrap();
        // Concurrent clients may finish their updates of one object out of order.
        assert!(
            counter + CLIENTS * OBJECTS >= last && counter % OBJECTS == i,
            "churn-{i:03} holds counter {counter}, last written {last}"
        );
    }

    for (when, s) in [("half-way", half), ("at the end", full)] {
        assert!(
            s.total() <= MAX_BYTES,
            "{when}: the database is {} (db {} + wal {}), over {}",
            mib(s.total()),
            mib(s.db),
            mib(s.wal),
            mib(MAX_BYTES)
        );
        assert!(s.wal <= MAX_WAL_BYTES, "{when}: the WAL is {}", mib(s.wal));
    }
    assert!(
        full.db <= half.db + half.db / 10 + GROWTH_SLACK,
        "the database keeps growing: {} after {} updates, {} after {UPDATES}",
        mib(half.db),
        UPDATES / 2,
        mib(full.db)
    );
}

/// Patches without a resourceVersion that race on one object all apply: a conflict in
/// the store is retried on the newer object (a 409 is only for a resourceVersion the
/// client sent), and no patch's change is lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn racing_patches_of_one_object_all_apply() {
    const RACERS: usize = 8;
    const ROUNDS: usize = 25;
    let server = tokio::task::block_in_place(Server::start);
    let api = Api::<ConfigMap>::namespaced(server.client().await, "default");
    let cm: ConfigMap =
        serde_json::from_value(json!({"metadata": {"name": "raced"}, "data": {}})).unwrap();
    api.create(&PostParams::default(), &cm).await.unwrap();
    let mut tasks = tokio::task::JoinSet::new();
    for racer in 0..RACERS {
        let api = Api::<ConfigMap>::namespaced(server.client().await, "default");
        tasks.spawn(async move {
            for round in 0..ROUNDS {
                let patch = Patch::Merge(json!({"data": {format!("r{racer}"): round.to_string()}}));
                api.patch("raced", &PatchParams::default(), &patch)
                    .await
                    .unwrap_or_else(|e| panic!("racer {racer} round {round}: {e}"));
            }
        });
    }
    while let Some(done) = tasks.join_next().await {
        done.expect("a racer panicked");
    }
    let data = api.get("raced").await.unwrap().data.unwrap_or_default();
    for racer in 0..RACERS {
        assert_eq!(
            data.get(&format!("r{racer}")).map(String::as_str),
            Some((ROUNDS - 1).to_string().as_str()),
            "racer {racer}'s last patch: {data:?}"
        );
    }

    // A patch that names an old resourceVersion is refused.
    let stale = Patch::Merge(json!({"metadata": {"resourceVersion": "1"}, "data": {"x": "y"}}));
    let err = api
        .patch("raced", &PatchParams::default(), &stale)
        .await
        .unwrap_err();
    assert!(
        matches!(err, kube::Error::Api(ref s) if s.code == 409),
        "{err}"
    );
}
