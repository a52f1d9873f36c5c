//! A pod's volumes and its `/etc` files on the node, under the pod's folder.
//!
//! configMap, secret and downwardAPI volumes are written as upstream's atomic writer
//! does: the files live in a timestamped folder, `..data` is a symlink to it, and each
//! key is a symlink through `..data`; an update writes a new folder and swaps `..data`
//! with one rename, so a running container sees the old set or the new one, never a mix.
//! Every sync rewrites them when their content changed, so updates reach running pods.
//!
//! With a pod `fsGroup`, the volumes kubelets manage get that group (`ownership.rs`):
//! emptyDir when made, a claim when the pod first uses it, and the atomic writer's files
//! as it writes them, so an update arrives with the group already set.

use super::ownership::{self, Access, ChangePolicy};
use super::Kubelet;
use crate::network::dns::{self, ClusterDns, ResolvConf};
use k8s_openapi::api::core::v1::{ConfigMap, Container, KeyToPath, Pod, Secret, Volume};
use kube::api::Api;
use std::collections::BTreeMap;
use std::io;
use std::net::IpAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

/// The `/etc/hosts`, `/etc/hostname` and `/etc/resolv.conf` bound into every container.
pub fn etc_files(
    dir: &Path,
    pod: &Pod,
    node_ip: IpAddr,
    cluster_dns: Option<&crate::network::dns::resolv::ClusterDns>,
    host_resolv: &str,
) -> io::Result<Vec<(String, PathBuf)>> {
    let etc = dir.join("etc");
    std::fs::create_dir_all(&etc)?;
    let spec = pod.spec.clone().unwrap_or_default();
    let host_network = spec.host_network == Some(true);
    let name = spec
        .hostname
        .clone()
        .or_else(|| pod.metadata.name.clone())
        .unwrap_or_default();
    let hostname = if host_network {
        std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_string())
            .unwrap_or(name)
    } else {
        name
    };
    let mut hosts = String::from(
        "# Kubernetes-managed hosts file.\n127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\nfe00::0\tip6-localnet\nfe00::0\tip6-mcastprefix\nfe00::1\tip6-allnodes\nfe00::2\tip6-allrouters\n",
    );
    let own_ip = if host_network {
        Some(node_ip.to_string())
    } else {
        pod.status.as_ref().and_then(|s| s.pod_ip.clone())
    };
    if let Some(ip) = own_ip {
        hosts.push_str(&format!("{ip}\t{hostname}\n"));
    }
    for alias in spec.host_aliases.iter().flatten() {
        hosts.push_str(&format!(
            "{}\t{}\n",
            alias.ip,
            alias.hostnames.clone().unwrap_or_default().join("\t")
        ));
    }
    write_if_changed(&etc.join("hosts"), hosts.as_bytes())?;
    write_if_changed(&etc.join("hostname"), format!("{hostname}\n").as_bytes())?;
    let resolv = resolv_conf(pod, cluster_dns, host_resolv)
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    write_if_changed(&etc.join("resolv.conf"), resolv.as_bytes())?;
    Ok(vec![
        ("/etc/hosts".to_string(), etc.join("hosts")),
        ("/etc/hostname".to_string(), etc.join("hostname")),
        ("/etc/resolv.conf".to_string(), etc.join("resolv.conf")),
    ])
}

/// Why a pod's resolv.conf cannot be made.
#[derive(Debug, thiserror::Error)]
pub enum ResolvConfError {
    /// The pod's `dnsPolicy` is none upstream knows (the API should have refused it).
    #[error("invalid dnsPolicy {0:?}")]
    UnknownPolicy(String),
}

/// At most this many nameservers (upstream's and the C library's limit).
pub const MAX_NAMESERVERS: usize = 3;
/// At most this many search domains (upstream's expanded limit).
pub const MAX_SEARCHES: usize = 32;
/// At most this many characters in the search line.
pub const MAX_SEARCH_CHARS: usize = 2048;
/// A search domain longer than this is dropped (some C libraries abort on them).
const MAX_SEARCH_DOMAIN: usize = 253;

fn omit_duplicates(list: Vec<String>) -> Vec<String> {
    let mut seen = std::collections::HashSet::new();
    list.into_iter()
        .filter(|s| seen.insert(s.clone()))
        .collect()
}

/// Cuts a search list down to the limits as upstream's kubelet does: the first
/// [`MAX_SEARCHES`], without over-long domains, then from the end until the line fits
/// in [`MAX_SEARCH_CHARS`].
fn fit_searches(mut searches: Vec<String>) -> Vec<String> {
    searches.truncate(MAX_SEARCHES);
    searches.retain(|s| s.len() <= MAX_SEARCH_DOMAIN);
    while searches.len() > 1 && searches.join(" ").len() > MAX_SEARCH_CHARS {
        searches.pop();
    }
    if searches.join(" ").len() > MAX_SEARCH_CHARS {
        searches.clear();
    }
    searches
}

/// A pod's `/etc/resolv.conf`, as upstream's kubelet makes it.
///
/// `cluster` is the node's cluster DNS (`None` when the kubelet has none: ClusterFirst
/// then falls back to Default, as upstream does with a warning); `host_resolv` is the
/// host's resolver configuration (systemd-resolved's real file when it applies, see
/// [`crate::network::dns::host_resolv_conf`]).
///
/// - `ClusterFirst` (the default): the cluster nameserver, the search list
///   `<ns>.svc.<domain> svc.<domain> <domain>` then the host's, `options ndots:5`;
///   a hostNetwork pod gets `Default` instead.
/// - `ClusterFirstWithHostNet`: `ClusterFirst`, hostNetwork or not.
/// - `Default`: the host's nameservers, search list and options.
/// - `None`: only the pod's `dnsConfig`.
///
/// The pod's `dnsConfig` is then added: nameservers and searches appended without
/// duplicates, options replacing those of the same name; finally at most
/// [`MAX_NAMESERVERS`] nameservers and the search list within its limits.
pub fn resolv_conf(
    pod: &Pod,
    cluster: Option<&ClusterDns>,
    host_resolv: &str,
) -> Result<String, ResolvConfError> {
    let spec = pod.spec.as_ref();
    let host_network = spec.and_then(|s| s.host_network) == Some(true);
    let policy = spec
        .and_then(|s| s.dns_policy.as_deref())
        .unwrap_or("ClusterFirst");
    let wants_cluster = match policy {
        "ClusterFirst" => !host_network,
        "ClusterFirstWithHostNet" => true,
        "Default" | "None" => false,
        other => return Err(ResolvConfError::UnknownPolicy(other.to_string())),
    };
    let mut conf = if policy == "None" {
        ResolvConf::default()
    } else {
        ResolvConf::parse(host_resolv)
    };
    if wants_cluster {
        match cluster {
            Some(c) => {
                let ns = pod.metadata.namespace.as_deref().unwrap_or("default");
                let domain = c.domain.trim_matches('.');
                let mut searches = vec![
                    format!("{ns}.svc.{domain}"),
                    format!("svc.{domain}"),
                    domain.to_string(),
                ];
                searches.append(&mut conf.searches);
                conf = ResolvConf {
                    nameservers: vec![c.nameserver.to_string()],
                    searches: omit_duplicates(searches),
                    options: vec!["ndots:5".to_string()],
                };
            }
            None => tracing::debug!(
                pod = pod.metadata.name.as_deref().unwrap_or(""),
                "no cluster DNS configured: the pod gets the host's resolver configuration (dnsPolicy Default)"
            ),
        }
    }
    if let Some(dns) = spec.and_then(|s| s.dns_config.as_ref()) {
        conf.nameservers
            .extend(dns.nameservers.iter().flatten().cloned());
        conf.nameservers = omit_duplicates(std::mem::take(&mut conf.nameservers));
        conf.searches.extend(dns.searches.iter().flatten().cloned());
        conf.searches = omit_duplicates(std::mem::take(&mut conf.searches));
        for o in dns.options.iter().flatten() {
            let name = o.name.clone().unwrap_or_default();
            let option = match o.value.as_deref() {
                Some(v) if !v.is_empty() => format!("{name}:{v}"),
                _ => name,
            };
            dns::merge_option(&mut conf.options, option);
        }
    }
    if conf.nameservers.len() > MAX_NAMESERVERS {
        tracing::warn!(
            pod = pod.metadata.name.as_deref().unwrap_or(""),
            "more than {MAX_NAMESERVERS} nameservers; the others are left out"
        );
        conf.nameservers.truncate(MAX_NAMESERVERS);
    }
    let searches = fit_searches(conf.searches);
    // The layout container runtimes write: search, nameservers, options.
    let mut out = String::new();
    if !searches.is_empty() {
        out.push_str(&format!("search {}\n", searches.join(" ")));
    }
    for ns in &conf.nameservers {
        out.push_str(&format!("nameserver {ns}\n"));
    }
    if !conf.options.is_empty() {
        out.push_str(&format!("options {}\n", conf.options.join(" ")));
    }
    Ok(out)
}

fn write_if_changed(path: &Path, content: &[u8]) -> io::Result<()> {
    if std::fs::read(path).ok().as_deref() == Some(content) {
        return Ok(());
    }
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    std::fs::write(&tmp, content)?;
    std::fs::rename(&tmp, path)
}

/// Makes or refreshes every volume of the pod; returns their host folders by name.
/// `known` is what the last call returned: a claim not in it is new to this pod.
pub async fn prepare(
    k: &Kubelet,
    pod: &Pod,
    dir: &Path,
    known: &BTreeMap<String, PathBuf>,
) -> Result<BTreeMap<String, PathBuf>, String> {
    let mut out = BTreeMap::new();
    let ns = pod
        .metadata
        .namespace
        .clone()
        .unwrap_or_else(|| "default".into());
    for v in pod.spec.iter().flat_map(|s| s.volumes.iter().flatten()) {
        let path = volume(k, pod, &ns, dir, v, known.contains_key(&v.name))
            .await
            .map_err(|e| format!("volume {:?}: {e}", v.name))?;
        out.insert(v.name.clone(), path);
    }
    Ok(out)
}

async fn volume(
    k: &Kubelet,
    pod: &Pod,
    ns: &str,
    dir: &Path,
    v: &Volume,
    known: bool,
) -> Result<PathBuf, String> {
    let path = dir.join("volumes").join(&v.name);
    let io = |e: io::Error| e.to_string();
    let group = ownership::fs_group(pod);
    let owned = |e: io::Error| format!("giving it the pod's fsGroup: {e}");
    if let Some(empty) = &v.empty_dir {
        if !path.exists() {
            std::fs::create_dir_all(&path).map_err(io)?;
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o777)).map_err(io)?;
            if empty.medium.as_deref() == Some("Memory") {
                let size = empty
                    .size_limit
                    .as_ref()
                    .and_then(super::container::bytes)
                    .map(|b| format!(",size={b}"))
                    .unwrap_or_default();
                let data = std::ffi::CString::new(format!("mode=1777{size}"))
                    .map_err(|e| e.to_string())?;
                rustix::mount::mount(
                    "tmpfs",
                    &path,
                    "tmpfs",
                    rustix::mount::MountFlags::empty(),
                    data.as_c_str(),
                )
                .map_err(|e| format!("mounting tmpfs: {e}"))?;
            }
            if let Some(g) = group {
                ownership::set(&path, g, Access::ReadWrite, ChangePolicy::of(pod))
                    .map_err(owned)?;
            }
        }
        return Ok(path);
    }
    if let Some(host) = &v.host_path {
        let p = PathBuf::from(&host.path);
        match host.type_.as_deref().unwrap_or("") {
            "DirectoryOrCreate" => {
                std::fs::create_dir_all(&p).map_err(io)?;
            }
            "FileOrCreate" if !p.exists() => {
                if let Some(parent) = p.parent() {
                    std::fs::create_dir_all(parent).map_err(io)?;
                }
                std::fs::File::create(&p).map_err(io)?;
            }
            "Directory" if !p.is_dir() => {
                return Err(format!("hostPath {} is not a directory", host.path))
            }
            "File" if !p.is_file() => return Err(format!("hostPath {} is not a file", host.path)),
            "Socket" | "CharDevice" | "BlockDevice" if !p.exists() => {
                return Err(format!("hostPath {} does not exist", host.path))
            }
            _ => {}
        }
        return Ok(p);
    }
    if let Some(cm) = &v.config_map {
        let api: Api<ConfigMap> = Api::namespaced(k.client.clone(), ns);
        let name = cm.name.clone();
        let files = match api.get_opt(&name).await.map_err(|e| e.to_string())? {
            Some(obj) => {
                let mut data: BTreeMap<String, Vec<u8>> = obj
                    .data
                    .unwrap_or_default()
                    .into_iter()
                    .map(|(k, v)| (k, v.into_bytes()))
                    .collect();
                data.extend(
                    obj.binary_data
                        .unwrap_or_default()
                        .into_iter()
                        .map(|(k, v)| (k, v.0)),
                );
                select(
                    &data,
                    cm.items.as_deref(),
                    cm.default_mode,
                    &format!("configmap {name:?}"),
                )?
            }
            None if cm.optional == Some(true) => Vec::new(),
            None => return Err(format!("configmap {name:?} not found")),
        };
        write_atomic(&path, &files, group).map_err(io)?;
        return Ok(path);
    }
    if let Some(s) = &v.secret {
        let api: Api<Secret> = Api::namespaced(k.client.clone(), ns);
        let name = s.secret_name.clone().unwrap_or_default();
        let files = match api.get_opt(&name).await.map_err(|e| e.to_string())? {
            Some(obj) => {
                let data: BTreeMap<String, Vec<u8>> = obj
                    .data
                    .unwrap_or_default()
                    .into_iter()
                    .map(|(k, v)| (k, v.0))
                    .collect();
                select(
                    &data,
                    s.items.as_deref(),
                    s.default_mode,
                    &format!("secret {name:?}"),
                )?
            }
            None if s.optional == Some(true) => Vec::new(),
            None => return Err(format!("secret {name:?} not found")),
        };
        write_atomic(&path, &files, group).map_err(io)?;
        return Ok(path);
    }
    if let Some(d) = &v.downward_api {
        let fields = super::worker::downward_fields(pod, &k.node_name, k.node_ip);
        let mut files = Vec::new();
        for item in d.items.iter().flatten() {
            let value = if let Some(f) = &item.field_ref {
                match f.field_path.as_str() {
                    "metadata.labels" => kv_lines(pod.metadata.labels.as_ref()),
                    "metadata.annotations" => kv_lines(pod.metadata.annotations.as_ref()),
                    other => fields
                        .get(other)
                        .cloned()
                        .ok_or_else(|| format!("unsupported fieldPath {other:?}"))?,
                }
            } else {
                return Err("resourceFieldRef in downwardAPI volumes is not supported yet".into());
            };
            let mode = item.mode.or(d.default_mode).unwrap_or(0o644);
            files.push((item.path.clone(), value.into_bytes(), mode as u32));
        }
        write_atomic(&path, &files, group).map_err(io)?;
        return Ok(path);
    }
    if let Some(claim) = &v.persistent_volume_claim {
        let path = claimed_path(k, ns, &claim.claim_name).await?;
        // Once per pod, as upstream sets a volume up once; a read-only claim is left
        // alone, as upstream's local volumes are.
        if let (Some(g), false, false) = (group, known, claim.read_only == Some(true)) {
            let (root, policy) = (path.clone(), ChangePolicy::of(pod));
            tokio::task::spawn_blocking(move || {
                ownership::set(&root, g, Access::ReadWrite, policy)
            })
            .await
            .map_err(|e| e.to_string())?
            .map_err(owned)?;
        }
        return Ok(path);
    }
    if let Some(p) = &v.projected {
        let mut files = Vec::new();
        let mode = p.default_mode;
        for source in p.sources.iter().flatten() {
            if let Some(cm) = &source.config_map {
                let api: Api<ConfigMap> = Api::namespaced(k.client.clone(), ns);
                match api.get_opt(&cm.name).await.map_err(|e| e.to_string())? {
                    Some(obj) => {
                        let mut data: BTreeMap<String, Vec<u8>> = obj
                            .data
                            .unwrap_or_default()
                            .into_iter()
                            .map(|(k, v)| (k, v.into_bytes()))
                            .collect();
                        data.extend(
                            obj.binary_data
                                .unwrap_or_default()
                                .into_iter()
                                .map(|(k, v)| (k, v.0)),
                        );
                        files.extend(select(
                            &data,
                            cm.items.as_deref(),
                            mode,
                            &format!("configmap {:?}", cm.name),
                        )?);
                    }
                    None if cm.optional == Some(true) => {}
                    None => return Err(format!("configmap {:?} not found", cm.name)),
                }
            } else if let Some(sec) = &source.secret {
                let api: Api<Secret> = Api::namespaced(k.client.clone(), ns);
                match api.get_opt(&sec.name).await.map_err(|e| e.to_string())? {
                    Some(obj) => {
                        let data: BTreeMap<String, Vec<u8>> = obj
                            .data
                            .unwrap_or_default()
                            .into_iter()
                            .map(|(k, v)| (k, v.0))
                            .collect();
                        files.extend(select(
                            &data,
                            sec.items.as_deref(),
                            mode,
                            &format!("secret {:?}", sec.name),
                        )?);
                    }
                    None if sec.optional == Some(true) => {}
                    None => return Err(format!("secret {:?} not found", sec.name)),
                }
            } else if let Some(d) = &source.downward_api {
                let fields = super::worker::downward_fields(pod, &k.node_name, k.node_ip);
                for item in d.items.iter().flatten() {
                    let Some(f) = &item.field_ref else {
                        return Err(
                            "resourceFieldRef in projected volumes is not supported yet".into()
                        );
                    };
                    let value = match f.field_path.as_str() {
                        "metadata.labels" => kv_lines(pod.metadata.labels.as_ref()),
                        "metadata.annotations" => kv_lines(pod.metadata.annotations.as_ref()),
                        other => fields
                            .get(other)
                            .cloned()
                            .ok_or_else(|| format!("unsupported fieldPath {other:?}"))?,
                    };
                    files.push((
                        item.path.clone(),
                        value.into_bytes(),
                        item.mode.or(mode).unwrap_or(0o644) as u32,
                    ));
                }
            } else if let Some(tp) = &source.service_account_token {
                let token = k.tokens.get(&k.client, pod, ns, tp).await?;
                // As upstream: owner-only when the pod has an fsGroup (which then adds
                // group read), the volume's mode otherwise.
                let mode = match group {
                    Some(_) => 0o600,
                    None => mode.unwrap_or(0o644) as u32,
                };
                files.push((tp.path.clone(), token.into_bytes(), mode));
            }
        }
        write_atomic(&path, &files, group).map_err(io)?;
        return Ok(path);
    }
    Err("this volume type is not supported yet".into())
}

/// The host folder of the PersistentVolume bound to claim `name` (hostPath and local
/// volumes, which is what a single node provisions).
async fn claimed_path(k: &Kubelet, ns: &str, name: &str) -> Result<PathBuf, String> {
    use k8s_openapi::api::core::v1::{PersistentVolume, PersistentVolumeClaim};
    let claims: Api<PersistentVolumeClaim> = Api::namespaced(k.client.clone(), ns);
    let claim = claims
        .get_opt(name)
        .await
        .map_err(|e| e.to_string())?
        .ok_or_else(|| format!("persistentvolumeclaim {name:?} not found"))?;
    let bound = claim.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Bound");
    let volume = claim
        .spec
        .as_ref()
        .and_then(|s| s.volume_name.clone())
        .filter(|v| !v.is_empty());
    let (true, Some(volume)) = (bound, volume) else {
        return Err(format!("persistentvolumeclaim {name:?} is not bound"));
    };
    let pvs: Api<PersistentVolume> = Api::all(k.client.clone());
    let pv = pvs
        .get_opt(&volume)
        .await
        .map_err(|e| e.to_string())?
        .ok_or_else(|| format!("persistentvolume {volume:?} not found"))?;
    let spec = pv.spec.unwrap_or_default();
    let path = if let Some(h) = spec.host_path {
        let p = PathBuf::from(&h.path);
        if h.type_.as_deref().unwrap_or("DirectoryOrCreate") == "DirectoryOrCreate" {
            std::fs::create_dir_all(&p).map_err(|e| format!("creating {}: {e}", p.display()))?;
        }
        p
    } else if let Some(l) = spec.local {
        PathBuf::from(l.path)
    } else {
        return Err(format!(
            "persistentvolume {volume:?} is neither hostPath nor local, which this node cannot mount"
        ));
    };
    if !path.exists() {
        return Err(format!(
            "the path {} of persistentvolume {volume:?} does not exist",
            path.display()
        ));
    }
    Ok(path)
}

fn kv_lines(m: Option<&BTreeMap<String, String>>) -> String {
    m.into_iter()
        .flatten()
        .map(|(k, v)| format!("{k}={v:?}\n"))
        .collect()
}

/// The files of a configMap or secret volume: every key, or the listed items.
fn select(
    data: &BTreeMap<String, Vec<u8>>,
    items: Option<&[KeyToPath]>,
    default_mode: Option<i32>,
    what: &str,
) -> Result<Vec<(String, Vec<u8>, u32)>, String> {
    let mode = default_mode.unwrap_or(0o644) as u32;
    match items {
        Some(items) if !items.is_empty() => items
            .iter()
            .map(|i| {
                let v = data
                    .get(&i.key)
                    .ok_or_else(|| format!("{what} has no key {:?}", i.key))?;
                Ok((i.path.clone(), v.clone(), i.mode.map_or(mode, |m| m as u32)))
            })
            .collect(),
        _ => Ok(data
            .iter()
            .map(|(k, v)| (k.clone(), v.clone(), mode))
            .collect()),
    }
}

/// Writes `files` (relative path, content, mode) into `dir` as the atomic writer does;
/// with the pod's fsGroup `group`, every file and folder gets that group and group read.
pub fn write_atomic(
    dir: &Path,
    files: &[(String, Vec<u8>, u32)],
    group: Option<u32>,
) -> io::Result<()> {
    use std::os::unix::fs::MetadataExt;
    let mode_of = |mode: u32| match group {
        Some(_) => ownership::mode_for(mode, false, Access::ReadOnly),
        None => mode,
    };
    for (rel, _, _) in files {
        if rel.starts_with('/')
            || rel.split('/').any(|c| c == ".." || c.is_empty())
            || rel.starts_with("..")
        {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("invalid path {rel:?}"),
            ));
        }
    }
    std::fs::create_dir_all(dir)?;
    let data_link = dir.join("..data");
    // Unchanged: nothing to do.
    if let Ok(current) = std::fs::read_link(&data_link) {
        let current = dir.join(current);
        let same = files.iter().all(|(rel, content, mode)| {
            let p = current.join(rel);
            std::fs::read(&p).ok().as_deref() == Some(content.as_slice())
                && std::fs::metadata(&p).is_ok_and(|m| {
                    m.permissions().mode() & 0o7777 == mode_of(*mode)
                        && group.is_none_or(|g| m.gid() == g)
                })
        }) && count_files(&current) == files.len();
        if same {
            return Ok(());
        }
    }
    let stamp = format!(
        "..{}",
        jiff::Timestamp::now().strftime("%Y_%m_%d_%H_%M_%S.%f")
    );
    let target = dir.join(&stamp);
    std::fs::create_dir_all(&target)?;
    for (rel, content, mode) in files {
        let p = target.join(rel);
        if let Some(parent) = p.parent() {
            std::fs::create_dir_all(parent)?;
        }
        std::fs::write(&p, content)?;
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode_of(*mode)))?;
    }
    // The new set has its group before it becomes visible through ..data.
    if let Some(g) = group {
        ownership::set(&target, g, Access::ReadOnly, ChangePolicy::Always)?;
    }
    let tmp_link = dir.join("..data_tmp");
    let _ = std::fs::remove_file(&tmp_link);
    std::os::unix::fs::symlink(&stamp, &tmp_link)?;
    let old = std::fs::read_link(&data_link).ok();
    std::fs::rename(&tmp_link, &data_link)?;
    // The top-level names point through ..data; stale ones go.
    let mut tops: Vec<String> = files
        .iter()
        .filter_map(|(rel, _, _)| rel.split('/').next().map(str::to_string))
        .collect();
    tops.sort();
    tops.dedup();
    for top in &tops {
        let link = dir.join(top);
        if std::fs::symlink_metadata(&link).is_err() {
            std::os::unix::fs::symlink(format!("..data/{top}"), &link)?;
        }
    }
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if !name.starts_with("..") && !tops.contains(&name) {
            std::fs::remove_file(entry.path())?;
        }
    }
    if let Some(old) = old {
        if old != Path::new(&stamp) {
            let _ = std::fs::remove_dir_all(dir.join(old));
        }
    }
    // The volume's root, ..data and the names through it.
    if let Some(g) = group {
        ownership::set(dir, g, Access::ReadOnly, ChangePolicy::Always)?;
    }
    Ok(())
}

fn count_files(dir: &Path) -> usize {
    std::fs::read_dir(dir)
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .map(|e| {
                    if e.path().is_dir() {
                        count_files(&e.path())
                    } else {
                        1
                    }
                })
                .sum()
        })
        .unwrap_or(0)
}

/// Values for `env` entries that read ConfigMaps and Secrets, and the variables of
/// `envFrom`, in order.
pub async fn env_refs(
    k: &Kubelet,
    pod: &Pod,
    c: &Container,
) -> Result<(BTreeMap<String, String>, Vec<(String, String)>), String> {
    let ns = pod
        .metadata
        .namespace
        .clone()
        .unwrap_or_else(|| "default".into());
    let cms: Api<ConfigMap> = Api::namespaced(k.client.clone(), &ns);
    let secrets: Api<Secret> = Api::namespaced(k.client.clone(), &ns);
    let mut refs = BTreeMap::new();
    for var in c.env.iter().flatten() {
        let Some(from) = &var.value_from else {
            continue;
        };
        if let Some(r) = &from.config_map_key_ref {
            let found = cms.get_opt(&r.name).await.map_err(|e| e.to_string())?;
            match found.and_then(|cm| cm.data.and_then(|d| d.get(&r.key).cloned())) {
                Some(v) => {
                    refs.insert(var.name.clone(), v);
                }
                None if r.optional == Some(true) => {}
                None => {
                    return Err(format!(
                        "couldn't find key {} in ConfigMap {}/{}",
                        r.key, ns, r.name
                    ))
                }
            }
        } else if let Some(r) = &from.secret_key_ref {
            let found = secrets.get_opt(&r.name).await.map_err(|e| e.to_string())?;
            match found.and_then(|s| s.data.and_then(|d| d.get(&r.key).cloned())) {
                Some(v) => {
                    refs.insert(var.name.clone(), String::from_utf8_lossy(&v.0).into_owned());
                }
                None if r.optional == Some(true) => {}
                None => {
                    return Err(format!(
                        "couldn't find key {} in Secret {}/{}",
                        r.key, ns, r.name
                    ))
                }
            }
        }
    }
    let mut from = Vec::new();
    for src in c.env_from.iter().flatten() {
        let prefix = src.prefix.clone().unwrap_or_default();
        if let Some(r) = &src.config_map_ref {
            match cms.get_opt(&r.name).await.map_err(|e| e.to_string())? {
                Some(cm) => from.extend(
                    cm.data
                        .unwrap_or_default()
                        .into_iter()
                        .map(|(k, v)| (format!("{prefix}{k}"), v)),
                ),
                None if r.optional == Some(true) => {}
                None => return Err(format!("configmap {:?} not found", r.name)),
            }
        }
        if let Some(r) = &src.secret_ref {
            match secrets.get_opt(&r.name).await.map_err(|e| e.to_string())? {
                Some(s) => from.extend(s.data.unwrap_or_default().into_iter().map(|(k, v)| {
                    (
                        format!("{prefix}{k}"),
                        String::from_utf8_lossy(&v.0).into_owned(),
                    )
                })),
                None if r.optional == Some(true) => {}
                None => return Err(format!("secret {:?} not found", r.name)),
            }
        }
    }
    Ok((refs, from))
}

/// The Service environment variables every container gets, as upstream's kubelet sets
/// them: `KUBERNETES_SERVICE_HOST` and `_PORT` always, and with `enableServiceLinks`
/// (the default) the docker-link variables of every Service of the pod's namespace
/// that has a cluster IP.
pub async fn service_env(k: &Kubelet, pod: &Pod) -> Vec<(String, String)> {
    use k8s_openapi::api::core::v1::Service;
    let ns = pod
        .metadata
        .namespace
        .clone()
        .unwrap_or_else(|| "default".into());
    let links = pod.spec.as_ref().and_then(|s| s.enable_service_links) != Some(false);
    let mut services: Vec<Service> = Vec::new();
    if links {
        let api: Api<Service> = Api::namespaced(k.client.clone(), &ns);
        if let Ok(list) = api.list(&Default::default()).await {
            services.extend(list.items);
        }
    }
    if ns != "default" || !links {
        let api: Api<Service> = Api::namespaced(k.client.clone(), "default");
        if let Ok(Some(svc)) = api.get_opt("kubernetes").await {
            services.push(svc);
        }
    }
    let mut env = Vec::new();
    for svc in services {
        let name = svc.metadata.name.clone().unwrap_or_default();
        let Some(spec) = svc.spec else { continue };
        let Some(ip) = spec.cluster_ip.filter(|ip| !ip.is_empty() && ip != "None") else {
            continue;
        };
        let prefix = name.to_ascii_uppercase().replace('-', "_");
        let ports = spec.ports.unwrap_or_default();
        let Some(first) = ports.first() else { continue };
        env.push((format!("{prefix}_SERVICE_HOST"), ip.clone()));
        env.push((format!("{prefix}_SERVICE_PORT"), first.port.to_string()));
        for p in &ports {
            if let Some(pn) = &p.name {
                env.push((
                    format!(
                        "{prefix}_SERVICE_PORT_{}",
                        pn.to_ascii_uppercase().replace('-', "_")
                    ),
                    p.port.to_string(),
                ));
            }
        }
        let proto = first.protocol.clone().unwrap_or_else(|| "TCP".into());
        env.push((
            format!("{prefix}_PORT"),
            format!("{}://{ip}:{}", proto.to_ascii_lowercase(), first.port),
        ));
        for p in &ports {
            let proto = p.protocol.clone().unwrap_or_else(|| "TCP".into());
            let base = format!("{prefix}_PORT_{}_{}", p.port, proto.to_ascii_uppercase());
            env.push((
                base.clone(),
                format!("{}://{ip}:{}", proto.to_ascii_lowercase(), p.port),
            ));
            env.push((format!("{base}_PROTO"), proto.to_ascii_lowercase()));
            env.push((format!("{base}_PORT"), p.port.to_string()));
            env.push((format!("{base}_ADDR"), ip.clone()));
        }
    }
    env
}

/// Registry credentials from the pod's imagePullSecrets (`.dockerconfigjson` and
/// `.dockercfg`), for the puller to match against the image's registry.
pub async fn pull_credentials(
    k: &Kubelet,
    pod: &Pod,
) -> Vec<skiff_embedded::image::pull::Credential> {
    let ns = pod
        .metadata
        .namespace
        .clone()
        .unwrap_or_else(|| "default".into());
    let secrets: Api<Secret> = Api::namespaced(k.client.clone(), &ns);
    let mut out = Vec::new();
    for r in pod
        .spec
        .iter()
        .flat_map(|s| s.image_pull_secrets.iter().flatten())
    {
        let Ok(Some(secret)) = secrets.get_opt(&r.name).await else {
            tracing::warn!(secret = %r.name, "imagePullSecret not found");
            continue;
        };
        let data = secret.data.unwrap_or_default();
        let auths = if let Some(v) = data.get(".dockerconfigjson") {
            serde_json::from_slice::<serde_json::Value>(&v.0)
                .ok()
                .map(|j| j["auths"].clone())
        } else {
            data.get(".dockercfg")
                .and_then(|v| serde_json::from_slice::<serde_json::Value>(&v.0).ok())
        };
        let Some(serde_json::Value::Object(auths)) = auths else {
            continue;
        };
        for (registry, entry) in auths {
            let mut username = entry["username"].as_str().unwrap_or_default().to_string();
            let mut password = entry["password"].as_str().unwrap_or_default().to_string();
            if let Some(auth) = entry["auth"].as_str() {
                use base64::Engine;
                if let Ok(decoded) = base64::engine::general_purpose::STANDARD.decode(auth) {
                    let text = String::from_utf8_lossy(&decoded).into_owned();
                    if let Some((u, p)) = text.split_once(':') {
                        (username, password) = (u.to_string(), p.to_string());
                    }
                }
            }
            if !username.is_empty() {
                out.push(skiff_embedded::image::pull::Credential {
                    registry,
                    username,
                    password,
                });
            }
        }
    }
    out
}

/// Unmounts the pod's memory-backed volumes; the caller removes the folder.
pub fn remove(dir: &Path) -> io::Result<()> {
    let volumes = dir.join("volumes");
    let Ok(entries) = std::fs::read_dir(&volumes) else {
        return Ok(());
    };
    for e in entries.flatten() {
        // A tmpfs sits on another device than the folder holding it.
        use std::os::unix::fs::MetadataExt;
        let (Ok(m), Ok(parent)) = (e.metadata(), std::fs::metadata(&volumes)) else {
            continue;
        };
        if m.dev() != parent.dev() {
            rustix::mount::unmount(e.path(), rustix::mount::UnmountFlags::DETACH)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{PodDNSConfig, PodDNSConfigOption, PodSpec};
    use std::net::Ipv4Addr;

    const HOST: &str = "nameserver 192.168.1.1\nnameserver 192.168.1.2\nsearch lan corp.example.\noptions edns0 ndots:2\n";

    fn dns_pod(policy: Option<&str>, host_network: bool, config: Option<PodDNSConfig>) -> Pod {
        Pod {
            metadata: kube::api::ObjectMeta {
                name: Some("p".into()),
                namespace: Some("shop".into()),
                ..Default::default()
            },
            spec: Some(PodSpec {
                dns_policy: policy.map(String::from),
                host_network: Some(host_network),
                dns_config: config,
                ..Default::default()
            }),
            status: None,
        }
    }

    fn cluster() -> ClusterDns {
        ClusterDns {
            nameserver: Ipv4Addr::new(10, 43, 0, 10),
            domain: "cluster.local".into(),
        }
    }

    #[test]
    fn cluster_first_gets_cluster_dns_and_the_namespace_search_list() {
        let want = "search shop.svc.cluster.local svc.cluster.local cluster.local lan corp.example\nnameserver 10.43.0.10\noptions ndots:5\n";
        for policy in [None, Some("ClusterFirst"), Some("ClusterFirstWithHostNet")] {
            let pod = dns_pod(policy, false, None);
            assert_eq!(resolv_conf(&pod, Some(&cluster()), HOST).unwrap(), want);
        }
        // hostNetwork: ClusterFirst means the host's; ClusterFirstWithHostNet does not.
        let host = "search lan corp.example\nnameserver 192.168.1.1\nnameserver 192.168.1.2\noptions edns0 ndots:2\n";
        let pod = dns_pod(Some("ClusterFirst"), true, None);
        assert_eq!(resolv_conf(&pod, Some(&cluster()), HOST).unwrap(), host);
        let pod = dns_pod(Some("ClusterFirstWithHostNet"), true, None);
        assert_eq!(resolv_conf(&pod, Some(&cluster()), HOST).unwrap(), want);
        // Default, and ClusterFirst without a cluster DNS: the host's.
        let pod = dns_pod(Some("Default"), false, None);
        assert_eq!(resolv_conf(&pod, Some(&cluster()), HOST).unwrap(), host);
        let pod = dns_pod(None, false, None);
        assert_eq!(resolv_conf(&pod, None, HOST).unwrap(), host);
        let pod = dns_pod(Some("Sometimes"), false, None);
        assert!(matches!(
            resolv_conf(&pod, None, HOST),
            Err(ResolvConfError::UnknownPolicy(p)) if p == "Sometimes"
        ));
    }

    #[test]
    fn dns_config_is_merged_and_none_uses_it_alone() {
        let config = PodDNSConfig {
            nameservers: Some(vec!["1.1.1.1".into(), "10.43.0.10".into()]),
            searches: Some(vec!["extra.example".into(), "svc.cluster.local".into()]),
            options: Some(vec![
                PodDNSConfigOption {
                    name: Some("ndots".into()),
                    value: Some("2".into()),
                },
                PodDNSConfigOption {
                    name: Some("single-request".into()),
                    value: None,
                },
            ]),
        };
        let pod = dns_pod(None, false, Some(config.clone()));
        assert_eq!(
            resolv_conf(&pod, Some(&cluster()), HOST).unwrap(),
            "search shop.svc.cluster.local svc.cluster.local cluster.local lan corp.example extra.example\nnameserver 10.43.0.10\nnameserver 1.1.1.1\noptions ndots:2 single-request\n"
        );
        let pod = dns_pod(Some("None"), false, Some(config));
        assert_eq!(
            resolv_conf(&pod, Some(&cluster()), HOST).unwrap(),
            "search extra.example svc.cluster.local\nnameserver 1.1.1.1\nnameserver 10.43.0.10\noptions ndots:2 single-request\n"
        );
    }

    #[test]
    fn nameservers_and_search_lists_are_cut_to_the_limits() {
        let config = PodDNSConfig {
            nameservers: Some(vec!["1.1.1.1".into(), "8.8.8.8".into(), "9.9.9.9".into()]),
            searches: Some(
                (0..40)
                    .map(|i| format!("d{i:02}.{}", "x".repeat(60)))
                    .collect(),
            ),
            options: None,
        };
        let pod = dns_pod(None, false, Some(config));
        let out = resolv_conf(&pod, Some(&cluster()), HOST).unwrap();
        let nameservers: Vec<&str> = out
            .lines()
            .filter(|l| l.starts_with("nameserver"))
            .collect();
        assert_eq!(
            nameservers,
            [
                "nameserver 10.43.0.10",
                "nameserver 1.1.1.1",
                "nameserver 8.8.8.8"
            ]
        );
        let search = out.lines().next().unwrap().strip_prefix("search ").unwrap();
        assert!(search.len() <= MAX_SEARCH_CHARS);
        let domains: Vec<&str> = search.split(' ').collect();
        assert!(domains.len() <= MAX_SEARCHES);
        assert_eq!(domains[0], "shop.svc.cluster.local");
        // 5 from the cluster and host, then as many 64-character domains as fit.
        assert_eq!(domains.len(), 5 + 27);
    }

    #[test]
    fn atomic_writer_swaps_whole_sets() {
        let dir = tempfile::tempdir().unwrap();
        let v = dir.path().join("cm");
        write_atomic(
            &v,
            &[
                ("a".into(), b"1".to_vec(), 0o644),
                ("b".into(), b"2".to_vec(), 0o600),
            ],
            None,
        )
        .unwrap();
        assert_eq!(std::fs::read(v.join("a")).unwrap(), b"1");
        assert_eq!(
            std::fs::metadata(v.join("b")).unwrap().permissions().mode() & 0o777,
            0o600
        );
        let first = std::fs::read_link(v.join("..data")).unwrap();
        write_atomic(
            &v,
            &[
                ("a".into(), b"1".to_vec(), 0o644),
                ("b".into(), b"2".to_vec(), 0o600),
            ],
            None,
        )
        .unwrap();
        assert_eq!(
            std::fs::read_link(v.join("..data")).unwrap(),
            first,
            "unchanged: not rewritten"
        );
        write_atomic(&v, &[("a".into(), b"new".to_vec(), 0o644)], None).unwrap();
        assert_eq!(std::fs::read(v.join("a")).unwrap(), b"new");
        assert!(
            std::fs::symlink_metadata(v.join("b")).is_err(),
            "a removed key goes"
        );
        assert!(!v.join(&first).exists(), "the old set goes");
        assert!(write_atomic(&v, &[("../x".into(), vec![], 0o644)], None).is_err());
    }

    /// Needs root (chown to another group), as the tests in CI run.
    #[test]
    fn atomic_writer_gives_the_fs_group_and_keeps_it_on_updates() {
        use std::os::unix::fs::MetadataExt;
        let dir = tempfile::tempdir().unwrap();
        let v = dir.path().join("cm");
        let meta = |p: &str| std::fs::symlink_metadata(v.join(p)).unwrap();
        let files = [
            ("a".to_string(), b"1".to_vec(), 0o644),
            ("nested/b".to_string(), b"2".to_vec(), 0o400),
        ];
        write_atomic(&v, &files, Some(2000)).unwrap();
        let data = std::fs::read_link(v.join("..data")).unwrap();
        for p in [
            "",
            "..data",
            "a",
            "nested",
            "..data/a",
            "..data/nested",
            "..data/nested/b",
        ] {
            assert_eq!(meta(p).gid(), 2000, "{p:?} has the group");
        }
        assert_eq!(meta("..data/a").mode() & 0o7777, 0o644, "defaultMode kept");
        assert_eq!(
            meta("..data/nested/b").mode() & 0o7777,
            0o440,
            "an item's mode, made group-readable"
        );
        assert_eq!(meta("").mode() & 0o2000, 0o2000, "setgid root");
        write_atomic(&v, &files, Some(2000)).unwrap();
        assert_eq!(
            std::fs::read_link(v.join("..data")).unwrap(),
            data,
            "unchanged: not rewritten"
        );
        write_atomic(&v, &[("a".to_string(), b"new".to_vec(), 0o600)], Some(2000)).unwrap();
        assert_ne!(std::fs::read_link(v.join("..data")).unwrap(), data);
        assert_eq!(std::fs::read(v.join("a")).unwrap(), b"new");
        assert_eq!(meta("..data/a").gid(), 2000, "the update has the group");
        assert_eq!(meta("..data/a").mode() & 0o7777, 0o640);
        assert_eq!(meta("..data").gid(), 2000);
    }
}
