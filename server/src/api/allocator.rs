//! ClusterIP and NodePort allocation for Services.
//!
//! Allocation reads which addresses and ports are in use from the store's current
//! Services, under one lock held across the create, so two creates never get the same
//! one. Requested values are honoured when free and in range, refused otherwise.

use super::objects::meta_str;
use super::status::{ApiError, ApiResult, Cause};
use crate::store::Store;
use ipnet::Ipv4Net;
use serde_json::Value;
use std::collections::HashSet;
use std::net::Ipv4Addr;

/// Allocates Service addresses and node ports.
#[derive(Debug, Clone)]
pub struct Allocator {
    /// The Service network.
    pub service_cidr: Ipv4Net,
    /// The NodePort range, inclusive.
    pub node_ports: (u16, u16),
}

fn invalid(name: &str, field: &str, message: String) -> ApiError {
    ApiError::invalid(
        "",
        "Service",
        name,
        vec![Cause {
            reason: "FieldValueInvalid".into(),
            message,
            field: field.into(),
        }],
    )
}

impl Allocator {
    /// The address of the `kubernetes` Service: the first of the range.
    pub fn first_ip(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.service_cidr.network()) + 1)
    }

    fn in_use(store: &Store, skip: Option<&str>) -> (HashSet<String>, HashSet<i64>) {
        let mut ips = HashSet::new();
        let mut ports = HashSet::new();
        for e in store
            .list("/registry/core/services/", None, 0, false, &|_| true)
            .items
        {
            if Some(&*e.key) == skip {
                continue;
            }
            let Ok(svc) = serde_json::from_slice::<Value>(&e.value) else {
                continue;
            };
            if let Some(ip) = svc.pointer("/spec/clusterIP").and_then(Value::as_str) {
                ips.insert(ip.to_string());
            }
            for p in svc
                .pointer("/spec/ports")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                if let Some(n) = p.get("nodePort").and_then(Value::as_i64) {
                    ports.insert(n);
                }
            }
        }
        (ips, ports)
    }

    /// Fills in `spec.clusterIP(s)` and node ports of a new Service.
    pub fn allocate(&self, store: &Store, svc: &mut Value) -> ApiResult<()> {
        let name = meta_str(svc, "name").to_string();
        let kind = svc
            .pointer("/spec/type")
            .and_then(Value::as_str)
            .unwrap_or("ClusterIP")
            .to_string();
        if kind == "ExternalName" {
            return Ok(());
        }
        let (ips, ports) = Self::in_use(store, None);
        let requested = svc
            .pointer("/spec/clusterIP")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string();
        let ip = match requested.as_str() {
            "None" => "None".to_string(),
            "" => self.free_ip(&ips).ok_or_else(|| {
                ApiError::internal("failed to allocate a serviceIP: range is full")
            })?,
            want => {
                let addr: Ipv4Addr = want.parse().map_err(|_| {
                    invalid(
                        &name,
                        "spec.clusterIPs[0]",
                        format!("Invalid value: {want:?}: must be a valid IP address"),
                    )
                })?;
                if !self.service_cidr.contains(&addr) {
                    return Err(invalid(&name, "spec.clusterIPs", format!(
                        "Invalid value: []string{{{want:?}}}: failed to allocate IP {want}: the provided IP ({want}) is not in the valid range. The range of valid IPs is {}",
                        self.service_cidr
                    )));
                }
                if ips.contains(want) {
                    return Err(invalid(&name, "spec.clusterIPs", format!(
                        "Invalid value: []string{{{want:?}}}: failed to allocate IP {want}: provided IP is already allocated"
                    )));
                }
                want.to_string()
            }
        };
        svc["spec"]["clusterIP"] = ip.clone().into();
        svc["spec"]["clusterIPs"] = serde_json::json!([ip]);
        if kind == "NodePort" || kind == "LoadBalancer" {
            self.node_ports_into(svc, &name, ports)?;
        }
        Ok(())
    }

    /// Gives every port of a NodePort or LoadBalancer Service being updated a node port,
    /// keeping those it has. `own_key` is the Service's store key: its current ports are
    /// its own, not a conflict.
    pub fn allocate_on_update(
        &self,
        store: &Store,
        svc: &mut Value,
        own_key: &str,
    ) -> ApiResult<()> {
        let kind = svc
            .pointer("/spec/type")
            .and_then(Value::as_str)
            .unwrap_or("ClusterIP");
        if kind != "NodePort" && kind != "LoadBalancer" {
            return Ok(());
        }
        let name = meta_str(svc, "name").to_string();
        let (_, ports) = Self::in_use(store, Some(own_key));
        self.node_ports_into(svc, &name, ports)
    }

    fn node_ports_into(
        &self,
        svc: &mut Value,
        name: &str,
        mut taken: HashSet<i64>,
    ) -> ApiResult<()> {
        let name = name.to_string();
        let count = svc
            .pointer("/spec/ports")
            .and_then(Value::as_array)
            .map_or(0, Vec::len);
        for i in 0..count {
            let field = format!("spec.ports[{i}].nodePort");
            let want = svc["spec"]["ports"][i]
                .get("nodePort")
                .and_then(Value::as_i64)
                .unwrap_or(0);
            let port = if want == 0 {
                self.free_port(&taken).ok_or_else(|| {
                    ApiError::internal("failed to allocate a nodePort: range is full")
                })?
            } else {
                let (lo, hi) = self.node_ports;
                if want < i64::from(lo) || want > i64::from(hi) {
                    return Err(invalid(&name, &field, format!(
                            "Invalid value: {want}: provided port is not in the valid range. The range of valid ports is {lo}-{hi}"
                        )));
                }
                if taken.contains(&want) {
                    return Err(invalid(
                        &name,
                        &field,
                        format!("Invalid value: {want}: provided port is already allocated"),
                    ));
                }
                want
            };
            taken.insert(port);
            svc["spec"]["ports"][i]["nodePort"] = port.into();
        }
        Ok(())
    }

    fn free_ip(&self, used: &HashSet<String>) -> Option<String> {
        use rand::Rng;
        let base = u32::from(self.service_cidr.network());
        let size = 1u64 << (32 - u32::from(self.service_cidr.prefix_len()));
        // Skip the network address, the first address (the `kubernetes` Service's) and
        // the broadcast address; start at a random offset as upstream does.
        let usable = size.saturating_sub(3);
        if usable == 0 {
            return None;
        }
        let start = rand::rng().random_range(0..usable);
        (0..usable).find_map(|i| {
            let offset = 2 + (start + i) % usable;
            let ip = Ipv4Addr::from(base + offset as u32).to_string();
            (!used.contains(&ip)).then_some(ip)
        })
    }

    fn free_port(&self, used: &HashSet<i64>) -> Option<i64> {
        use rand::Rng;
        let (lo, hi) = (i64::from(self.node_ports.0), i64::from(self.node_ports.1));
        let n = hi - lo + 1;
        let start = rand::rng().random_range(0..n);
        (0..n)
            .map(|i| lo + (start + i) % n)
            .find(|p| !used.contains(p))
    }
}

/// On update, a Service keeps its allocated ClusterIP and node ports unless the update
/// sets them explicitly (validation refuses a changed ClusterIP).
pub fn carry_over(old: &Value, new: &mut Value) {
    for field in ["clusterIP", "clusterIPs"] {
        let empty = new
            .pointer(&format!("/spec/{field}"))
            .is_none_or(|v| v.is_null() || v == "");
        if empty {
            if let Some(v) = old.pointer(&format!("/spec/{field}")) {
                new["spec"][field] = v.clone();
            }
        }
    }
    let old_ports = old
        .pointer("/spec/ports")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let node_ports = matches!(
        new.pointer("/spec/type").and_then(Value::as_str),
        Some("NodePort" | "LoadBalancer")
    );
    if !node_ports {
        // So does the traffic policy that only externally reachable types have.
        for field in [
            "externalTrafficPolicy",
            "healthCheckNodePort",
            "allocateLoadBalancerNodePorts",
        ] {
            let pointer = format!("/spec/{field}");
            if new.pointer(&pointer).is_some() && new.pointer(&pointer) == old.pointer(&pointer) {
                if let Some(spec) = new.get_mut("spec").and_then(Value::as_object_mut) {
                    spec.remove(field);
                }
            }
        }
    }
    if let Some(ports) = new.pointer_mut("/spec/ports").and_then(Value::as_array_mut) {
        for p in ports {
            if !node_ports {
                // Leaving NodePort: the ports it was given go with the type, as upstream
                // drops type-dependent fields.
                let inherited = p.get("nodePort").is_some_and(|n| {
                    old_ports
                        .iter()
                        .any(|o| o.get("port") == p.get("port") && o.get("nodePort") == Some(n))
                });
                if inherited {
                    if let Some(o) = p.as_object_mut() {
                        o.remove("nodePort");
                    }
                }
                continue;
            }
            if p.get("nodePort")
                .is_some_and(|n| n.as_i64().unwrap_or(0) != 0)
            {
                continue;
            }
            let same = old_ports.iter().find(|o| {
                o.get("port") == p.get("port")
                    && o.get("protocol").unwrap_or(&Value::Null)
                        == p.get("protocol").unwrap_or(&Value::Null)
            });
            if let Some(n) = same.and_then(|o| o.get("nodePort")) {
                p["nodePort"] = n.clone();
            }
        }
    }
}
