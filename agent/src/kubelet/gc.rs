//! The image garbage collector, as the kubelet's: every [`PERIOD`], when the disk
//! holding the image store is at or above the high threshold (85 %), images no
//! container uses, least recently used first and none younger than two minutes, are
//! removed until usage would be under the low threshold (80 %). The decision is the
//! store's pure `gc_plan`; this is its driver.

use super::worker::labels;
use super::Kubelet;
use skiff_embedded::image::store::{gc_plan, DiskSpace, GcImage, GcPolicy};
use skiff_embedded::image::Digest;
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};
use tokio_util::sync::CancellationToken;

/// How often the disk is looked at (the kubelet's image GC period).
pub const PERIOD: Duration = Duration::from_secs(300);

/// When each image (by ID) was last used by a container start, or first seen.
#[derive(Debug, Default)]
pub struct LastUsed(Mutex<HashMap<Digest, SystemTime>>);

impl LastUsed {
    /// Records a container start from image `id`.
    pub fn used(&self, id: Digest) {
        if let Ok(mut m) = self.0.lock() {
            m.insert(id, SystemTime::now());
        }
    }

    fn get_or_first_seen(&self, id: &Digest, now: SystemTime) -> SystemTime {
        match self.0.lock() {
            Ok(mut m) => *m.entry(id.clone()).or_insert(now),
            Err(_) => now,
        }
    }
}

/// One pass: returns the bytes freed.
pub fn collect(k: &Kubelet, policy: &GcPolicy) -> Result<u64, String> {
    let mut in_use: HashSet<Digest> = HashSet::new();
    for id in k.containers.list().map_err(|e| e.to_string())? {
        let l = k.containers.labels(&id).unwrap_or_default();
        if let Some(d) = l.get(labels::IMAGE_CONFIG).and_then(|d| d.parse().ok()) {
            in_use.insert(d);
        }
    }
    let mut store = k
        .images
        .lock()
        .map_err(|_| "the image store's lock is poisoned")?;
    let root = k.config.data_dir.join("agent").join("image-store");
    let fs = rustix::fs::statvfs(&root).map_err(|e| format!("statvfs {}: {e}", root.display()))?;
    let disk = DiskSpace {
        capacity: fs.f_blocks.saturating_mul(fs.f_frsize),
        available: fs.f_bavail.saturating_mul(fs.f_frsize),
    };
    let now = SystemTime::now();
    let listed = store.list().map_err(|e| e.to_string())?;
    let mut by_id: HashMap<Digest, (u64, Vec<String>)> = HashMap::new();
    for i in &listed {
        let e = by_id
            .entry(i.config_digest.clone())
            .or_insert((0, Vec::new()));
        e.0 = e.0.max(i.size);
        e.1.push(i.name.clone());
    }
    let images: Vec<GcImage> = by_id
        .iter()
        .map(|(id, (size, _))| GcImage {
            id: id.clone(),
            last_used: k.last_used.get_or_first_seen(id, now),
            size: *size,
            in_use: in_use.contains(id),
        })
        .collect();
    let plan = gc_plan(&images, disk, policy, now);
    if plan.to_free == 0 {
        return Ok(0);
    }
    for id in &plan.remove {
        for name in by_id.get(id).map(|(_, n)| n.clone()).unwrap_or_default() {
            tracing::info!(image = %name, "image GC removes an unused image");
            store.remove(&name).map_err(|e| e.to_string())?;
        }
    }
    let in_use: Vec<Digest> = in_use.into_iter().collect();
    let freed = store.prune(&in_use).map_err(|e| e.to_string())?;
    if plan.freed < plan.to_free {
        tracing::warn!(
            wanted = plan.to_free,
            freed,
            "image GC could not free enough: the images left are in use or recent"
        );
    }
    Ok(freed)
}

/// Runs the image GC every [`PERIOD`] until cancelled.
pub async fn run(k: Arc<Kubelet>, cancel: CancellationToken) {
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep(PERIOD) => {}
        }
        let k2 = k.clone();
        match tokio::task::spawn_blocking(move || collect(&k2, &GcPolicy::default())).await {
            Ok(Ok(freed)) if freed > 0 => tracing::info!(freed, "image GC freed space"),
            Ok(Ok(_)) => {}
            Ok(Err(e)) => tracing::warn!(error = %e, "image GC failed"),
            Err(e) => tracing::warn!(error = %e, "image GC panicked"),
        }
    }
}
