//! Resource arithmetic: quantities, what a pod requests and what a node offers.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Container, Node, PodSpec};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

/// CPU a container without a CPU request counts for when scoring (upstream's 100m).
pub const DEFAULT_MILLI_CPU: i64 = 100;
/// Memory a container without a memory request counts for when scoring (200 MiB).
pub const DEFAULT_MEMORY: i64 = 200 * 1024 * 1024;

/// An amount of each resource the scheduler accounts for.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Resources {
    /// CPU in thousandths of a core.
    pub milli_cpu: i64,
    /// Memory in bytes.
    pub memory: i64,
    /// Ephemeral storage in bytes.
    pub ephemeral: i64,
    /// Number of pods.
    pub pods: i64,
    /// Extended resources (`nvidia.com/gpu`, `hugepages-2Mi`, ...) in whole units (or bytes).
    pub scalar: BTreeMap<String, i64>,
}

impl Resources {
    /// Adds `other` to `self`.
    pub fn add(&mut self, other: &Resources) {
        self.milli_cpu += other.milli_cpu;
        self.memory += other.memory;
        self.ephemeral += other.ephemeral;
        self.pods += other.pods;
        for (k, v) in &other.scalar {
            *self.scalar.entry(k.clone()).or_default() += v;
        }
    }

    /// Subtracts `other` from `self`.
    pub fn sub(&mut self, other: &Resources) {
        self.milli_cpu -= other.milli_cpu;
        self.memory -= other.memory;
        self.ephemeral -= other.ephemeral;
        self.pods -= other.pods;
        for (k, v) in &other.scalar {
            if let Some(have) = self.scalar.get_mut(k) {
                *have -= v;
                if *have == 0 {
                    self.scalar.remove(k);
                }
            }
        }
    }

    /// Per resource, the larger of `self` and `other`.
    fn max_with(&mut self, other: &Resources) {
        self.milli_cpu = self.milli_cpu.max(other.milli_cpu);
        self.memory = self.memory.max(other.memory);
        self.ephemeral = self.ephemeral.max(other.ephemeral);
        self.pods = self.pods.max(other.pods);
        for (k, v) in &other.scalar {
            let have = self.scalar.entry(k.clone()).or_default();
            *have = (*have).max(*v);
        }
    }

    /// Reads a `requests`, `limits`, `allocatable` or `overhead` map.
    pub fn from_map(map: Option<&BTreeMap<String, Quantity>>) -> Resources {
        let mut r = Resources::default();
        for (name, q) in map.into_iter().flatten() {
            let Some(milli) = parse_milli(&q.0) else {
                continue;
            };
            match name.as_str() {
                "cpu" => r.milli_cpu = milli,
                "memory" => r.memory = div_ceil_1000(milli),
                "ephemeral-storage" => r.ephemeral = div_ceil_1000(milli),
                "pods" => r.pods = div_ceil_1000(milli),
                // Extended and hugepages resources: qualified names or `hugepages-*`.
                other if other.contains('/') || other.starts_with("hugepages-") => {
                    r.scalar.insert(other.to_owned(), div_ceil_1000(milli));
                }
                _ => {}
            }
        }
        r
    }
}

fn div_ceil_1000(milli: i64) -> i64 {
    milli.div_euclid(1000) + i64::from(milli.rem_euclid(1000) != 0)
}

/// Parses a Kubernetes quantity (`100m`, `1.5Gi`, `2e3`, `128974848`) into thousandths of
/// its unit, rounding up. `None` when it is not a quantity. Saturates at `i64::MAX`.
pub fn parse_milli(s: &str) -> Option<i64> {
    let s = s.trim();
    let (negative, s) = match s.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, s.strip_prefix('+').unwrap_or(s)),
    };
    let number_end = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (number, suffix) = s.split_at(number_end);
    if number.is_empty() || number == "." || number.matches('.').count() > 1 {
        return None;
    }
    let (int_part, frac_part) = number.split_once('.').unwrap_or((number, ""));
    // Keep at most 30 significant digits: beyond that the value saturates anyway.
    let mut mantissa: i128 = 0;
    let mut scale: i32 = 0;
    for c in int_part.chars().chain(frac_part.chars()) {
        mantissa = mantissa
            .saturating_mul(10)
            .saturating_add(i128::from(c as u8 - b'0'));
    }
    scale -= i32::try_from(frac_part.len()).ok()?;
    // Binary suffixes multiply by powers of 1024; decimal ones shift the exponent.
    let (binary_pow, decimal_exp): (u32, i32) = match suffix {
        "" => (0, 0),
        "Ki" => (1, 0),
        "Mi" => (2, 0),
        "Gi" => (3, 0),
        "Ti" => (4, 0),
        "Pi" => (5, 0),
        "Ei" => (6, 0),
        "n" => (0, -9),
        "u" => (0, -6),
        "m" => (0, -3),
        "k" => (0, 3),
        "M" => (0, 6),
        "G" => (0, 9),
        "T" => (0, 12),
        "P" => (0, 15),
        "E" => (0, 18),
        exp if exp.starts_with(['e', 'E']) => (0, exp[1..].parse::<i32>().ok()?),
        _ => return None,
    };
    if mantissa > 0 && binary_pow > 0 {
        mantissa = mantissa.saturating_mul(1i128 << (10 * binary_pow));
    }
    let exp = scale + decimal_exp + 3;
    let value: i128 = if exp >= 0 {
        if exp > 30 {
            if mantissa == 0 {
                0
            } else {
                i128::MAX
            }
        } else {
            mantissa.saturating_mul(10i128.pow(exp.unsigned_abs()))
        }
    } else if exp < -36 {
        i128::from(mantissa != 0)
    } else {
        let d = 10i128.pow(exp.unsigned_abs());
        mantissa / d + i128::from(mantissa % d != 0)
    };
    let value = i64::try_from(value).unwrap_or(i64::MAX);
    Some(if negative { -value } else { value })
}

fn container_requests(c: &Container) -> Resources {
    Resources::from_map(c.resources.as_ref().and_then(|r| r.requests.as_ref()))
}

/// What a pod requests, as upstream's `PodRequests` computes it: app containers and
/// sidecars (restartable init containers) run together; each ordinary init container runs
/// alone next to the sidecars started before it; the pod needs the larger of the two, plus
/// its overhead. Pod-level requests, when set, replace the containers' for what they name.
/// `pods` is 1.
pub fn pod_requests(spec: &PodSpec) -> Resources {
    let mut total = Resources::default();
    for c in &spec.containers {
        total.add(&container_requests(c));
    }
    let mut sidecars = Resources::default();
    let mut init_peak = Resources::default();
    for c in spec.init_containers.iter().flatten() {
        let mut r = container_requests(c);
        if c.restart_policy.as_deref() == Some("Always") {
            total.add(&r);
            sidecars.add(&r);
            r = sidecars.clone();
        } else {
            r.add(&sidecars);
        }
        init_peak.max_with(&r);
    }
    total.max_with(&init_peak);
    if let Some(pod_level) = spec
        .resources
        .as_ref()
        .and_then(|r| r.requests.as_ref())
        .filter(|r| !r.is_empty())
    {
        let p = Resources::from_map(Some(pod_level));
        if pod_level.contains_key("cpu") {
            total.milli_cpu = p.milli_cpu;
        }
        if pod_level.contains_key("memory") {
            total.memory = p.memory;
        }
    }
    total.add(&Resources::from_map(spec.overhead.as_ref()));
    total.pods = 1;
    total
}

/// CPU and memory a pod counts for when scoring: like [`pod_requests`], but a container
/// that requests no CPU (memory) counts for [`DEFAULT_MILLI_CPU`] ([`DEFAULT_MEMORY`]), so
/// that best-effort pods still spread.
pub fn non_zero_requests(spec: &PodSpec) -> (i64, i64) {
    let nz = |c: &Container| {
        let r = container_requests(c);
        let has = |k: &str| {
            c.resources
                .as_ref()
                .and_then(|r| r.requests.as_ref())
                .is_some_and(|m| m.contains_key(k))
        };
        (
            if has("cpu") {
                r.milli_cpu
            } else {
                DEFAULT_MILLI_CPU
            },
            if has("memory") {
                r.memory
            } else {
                DEFAULT_MEMORY
            },
        )
    };
    let (mut cpu, mut mem) = (0, 0);
    for c in &spec.containers {
        let (c, m) = nz(c);
        cpu += c;
        mem += m;
    }
    let (mut side_cpu, mut side_mem, mut peak_cpu, mut peak_mem) = (0, 0, 0, 0);
    for c in spec.init_containers.iter().flatten() {
        let (mut c_cpu, mut c_mem) = nz(c);
        if c.restart_policy.as_deref() == Some("Always") {
            cpu += c_cpu;
            mem += c_mem;
            side_cpu += c_cpu;
            side_mem += c_mem;
            (c_cpu, c_mem) = (side_cpu, side_mem);
        } else {
            c_cpu += side_cpu;
            c_mem += side_mem;
        }
        peak_cpu = peak_cpu.max(c_cpu);
        peak_mem = peak_mem.max(c_mem);
    }
    let overhead = Resources::from_map(spec.overhead.as_ref());
    (
        cpu.max(peak_cpu) + overhead.milli_cpu,
        mem.max(peak_mem) + overhead.memory,
    )
}

/// What a node offers: `status.allocatable`, or `status.capacity` when a node reports no
/// allocatable.
pub fn node_allocatable(node: &Node) -> Resources {
    let status = node.status.as_ref();
    let map = status
        .and_then(|s| s.allocatable.as_ref())
        .filter(|m| !m.is_empty())
        .or_else(|| status.and_then(|s| s.capacity.as_ref()));
    Resources::from_map(map)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::ResourceRequirements;

    fn q(s: &str) -> Quantity {
        Quantity(s.to_owned())
    }

    pub(crate) fn container(cpu: &str, mem: &str) -> Container {
        let mut requests = BTreeMap::new();
        if !cpu.is_empty() {
            requests.insert("cpu".to_owned(), q(cpu));
        }
        if !mem.is_empty() {
            requests.insert("memory".to_owned(), q(mem));
        }
        Container {
            name: "c".into(),
            resources: Some(ResourceRequirements {
                requests: Some(requests),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn quantities() {
        assert_eq!(parse_milli("100m"), Some(100));
        assert_eq!(parse_milli("1"), Some(1000));
        assert_eq!(parse_milli("1.5"), Some(1500));
        assert_eq!(parse_milli("0.1"), Some(100));
        assert_eq!(parse_milli("1Ki"), Some(1024 * 1000));
        assert_eq!(parse_milli("1.5Gi"), Some(1_610_612_736_000));
        assert_eq!(parse_milli("2e3"), Some(2_000_000));
        assert_eq!(parse_milli("1k"), Some(1_000_000));
        assert_eq!(parse_milli("1n"), Some(1));
        assert_eq!(parse_milli("1u"), Some(1));
        assert_eq!(parse_milli("128974848"), Some(128_974_848_000));
        assert_eq!(parse_milli("-1"), Some(-1000));
        assert_eq!(parse_milli("1x"), None);
        assert_eq!(parse_milli(""), None);
        assert_eq!(parse_milli("9E"), Some(i64::MAX));
        let r = Resources::from_map(Some(&BTreeMap::from([
            ("cpu".to_owned(), q("2")),
            ("memory".to_owned(), q("1Mi")),
            ("ephemeral-storage".to_owned(), q("1G")),
            ("pods".to_owned(), q("110")),
            ("nvidia.com/gpu".to_owned(), q("1")),
        ])));
        assert_eq!(
            (r.milli_cpu, r.memory, r.ephemeral, r.pods),
            (2000, 1 << 20, 1_000_000_000, 110)
        );
        assert_eq!(r.scalar.get("nvidia.com/gpu"), Some(&1));
    }

    #[test]
    fn pod_requests_take_init_containers_and_sidecars_into_account() {
        let mut init = container("2", "");
        let mut sidecar = container("300m", "100Mi");
        sidecar.restart_policy = Some("Always".into());
        let spec = PodSpec {
            containers: vec![container("500m", "1Gi"), container("", "")],
            init_containers: Some(vec![sidecar, init.clone()]),
            overhead: Some(BTreeMap::from([("cpu".to_owned(), q("10m"))])),
            ..Default::default()
        };
        let r = pod_requests(&spec);
        // init (2) + sidecar (0.3) beats containers (0.5) + sidecar (0.3); overhead on top.
        assert_eq!(r.milli_cpu, 2310);
        assert_eq!(r.memory, (1 << 30) + 100 * (1 << 20));
        assert_eq!(r.pods, 1);
        init.resources = None;
        let nz = non_zero_requests(&PodSpec {
            containers: vec![container("", ""), container("1", "")],
            ..Default::default()
        });
        assert_eq!(nz, (1100, 2 * DEFAULT_MEMORY));
    }

    #[test]
    fn pod_level_requests_replace_containers() {
        let spec = PodSpec {
            containers: vec![container("500m", "1Gi")],
            resources: Some(ResourceRequirements {
                requests: Some(BTreeMap::from([("cpu".to_owned(), q("2"))])),
                ..Default::default()
            }),
            ..Default::default()
        };
        let r = pod_requests(&spec);
        assert_eq!((r.milli_cpu, r.memory), (2000, 1 << 30));
    }
}
