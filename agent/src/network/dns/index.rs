//! The records of the cluster zone, prebuilt from Services and EndpointSlices so that a
//! query costs one hash-map look-up.
//!
//! Names follow upstream's "Kubernetes DNS-Based Service Discovery" specification with
//! the defaults of the DNS skiff's users know from K3s: TTL 5 s, pod records for any
//! dashed address (`pods insecure`), reverse names answered for cluster addresses and
//! passed on otherwise.

use hickory_proto::op::Query;
use hickory_proto::rr::rdata::{A, AAAA, CNAME, PTR, SOA, SRV};
use hickory_proto::rr::{Name, RData, Record, RecordType};
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use std::collections::{BTreeSet, HashMap};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::Arc;

/// The TTL of every record skiff answers for the cluster zone (CoreDNS's in K3s).
pub const TTL: u32 = 5;

/// The label that ties an EndpointSlice to its Service.
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";

/// The lookup key of a name: lowercase, without the trailing dot.
pub fn key_of(name: &Name) -> String {
    let mut s = name.to_ascii();
    s.make_ascii_lowercase();
    if s.ends_with('.') {
        s.pop();
    }
    s
}

/// What the zone says about one question.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// The name has records of the asked type (or a CNAME standing for them).
    Records {
        /// The answer section (owned by the looked-up name).
        answers: Vec<Record>,
        /// The additional section: the addresses of SRV targets.
        additionals: Vec<Record>,
    },
    /// The name exists but has no record of the asked type (NOERROR, no answer).
    NoData,
    /// The name is in the cluster zone and does not exist.
    NxDomain,
    /// Not a name skiff answers for: forward it upstream.
    Elsewhere,
}

/// Everything one name holds.
#[derive(Debug, Default, Clone)]
struct Node {
    records: Vec<Record>,
    /// Addresses of the targets of the SRV records among `records`.
    additionals: Vec<Record>,
}

impl Node {
    fn answer(&self, qtype: RecordType) -> Answer {
        let answers: Vec<Record> = self
            .records
            .iter()
            .filter(|r| qtype == RecordType::ANY || r.record_type() == qtype)
            .cloned()
            .collect();
        if answers.is_empty() {
            let cname: Vec<Record> = self
                .records
                .iter()
                .filter(|r| r.record_type() == RecordType::CNAME)
                .cloned()
                .collect();
            if cname.is_empty() {
                return Answer::NoData;
            }
            return Answer::Records {
                answers: cname,
                additionals: Vec::new(),
            };
        }
        let additionals = if answers.iter().any(|r| r.record_type() == RecordType::SRV) {
            self.additionals.clone()
        } else {
            Vec::new()
        };
        Answer::Records {
            answers,
            additionals,
        }
    }
}

/// A snapshot of the cluster zone and of the reverse names of cluster addresses.
#[derive(Debug, Clone)]
pub struct Index {
    /// The cluster domain, lowercase, without dots at either end.
    domain: String,
    /// `.` + the domain: what every name in the zone ends with.
    suffix: String,
    /// `.pod.` + the domain: the pod records' zone.
    pod_suffix: String,
    names: HashMap<String, Node>,
    soa: Record,
}

/// The cluster domain as keys use it.
fn normalize_domain(domain: &str) -> String {
    domain.trim_matches('.').to_ascii_lowercase()
}

/// An address as a DNS label: its dots or colons turned into dashes.
pub fn dashed(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(v4) => v4.to_string().replace('.', "-"),
        IpAddr::V6(v6) => v6.to_string().replace(':', "-"),
    }
}

/// The reverse-lookup key of an address (`in-addr.arpa` or nibbles in `ip6.arpa`).
pub fn reverse_key(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(v4) => {
            let [a, b, c, d] = v4.octets();
            format!("{d}.{c}.{b}.{a}.in-addr.arpa")
        }
        IpAddr::V6(v6) => {
            let mut s = String::with_capacity(72);
            for byte in v6.octets().iter().rev() {
                s.push_str(&format!("{:x}.{:x}.", byte & 0xf, byte >> 4));
            }
            s.push_str("ip6.arpa");
            s
        }
    }
}

fn address_rdata(ip: IpAddr) -> RData {
    match ip {
        IpAddr::V4(v4) => RData::A(A(v4)),
        IpAddr::V6(v6) => RData::AAAA(AAAA(v6)),
    }
}

/// Parses a dashed pod address label (`10-42-0-5`, `fd00--5`).
fn undashed(label: &str) -> Option<IpAddr> {
    if let Ok(v4) = label.replace('-', ".").parse::<Ipv4Addr>() {
        return Some(IpAddr::V4(v4));
    }
    label
        .replace('-', ":")
        .parse::<Ipv6Addr>()
        .ok()
        .map(IpAddr::V6)
}

/// A name from a key (which has no trailing dot), fully qualified.
fn fqdn(key: &str) -> Option<Name> {
    match Name::from_ascii(format!("{key}.")) {
        Ok(n) => Some(n),
        Err(e) => {
            tracing::debug!(name = key, error = %e, "not a valid DNS name; no record");
            None
        }
    }
}

/// Collects records by owner.
#[derive(Default)]
struct Builder {
    names: HashMap<String, Node>,
    parsed: HashMap<String, Option<Name>>,
}

impl Builder {
    fn name(&mut self, key: &str) -> Option<Name> {
        if let Some(n) = self.parsed.get(key) {
            return n.clone();
        }
        let n = fqdn(key);
        self.parsed.insert(key.to_string(), n.clone());
        n
    }

    /// Makes `key` exist, even with no records (an empty non-terminal answers NODATA).
    fn touch(&mut self, key: &str) {
        if !self.names.contains_key(key) {
            self.names.insert(key.to_string(), Node::default());
        }
    }

    fn record(&mut self, key: &str, data: RData) {
        let Some(owner) = self.name(key) else {
            return;
        };
        self.names
            .entry(key.to_string())
            .or_default()
            .records
            .push(Record::from_rdata(owner, TTL, data));
    }

    fn additional(&mut self, key: &str, owner_key: &str, data: RData) {
        let Some(owner) = self.name(owner_key) else {
            return;
        };
        self.names
            .entry(key.to_string())
            .or_default()
            .additionals
            .push(Record::from_rdata(owner, TTL, data));
    }

    fn address(&mut self, key: &str, ip: IpAddr) {
        self.record(key, address_rdata(ip));
    }

    fn ptr(&mut self, ip: IpAddr, target_key: &str) {
        if let Some(target) = self.name(target_key) {
            self.record(&reverse_key(ip), RData::PTR(PTR(target)));
        }
    }

    /// An SRV record at `key` to `target_key`:`port`, with the target's address in the
    /// additional section. Weights are set once all records are in ([`Builder::finish`]).
    fn srv(&mut self, key: &str, port: u16, target_key: &str, target_ips: &[IpAddr]) {
        let Some(target) = self.name(target_key) else {
            return;
        };
        self.record(key, RData::SRV(SRV::new(0, 100, port, target)));
        for ip in target_ips {
            self.additional(key, target_key, address_rdata(*ip));
        }
    }

    /// Upstream's SRV weights: the records of one name share 100 equally.
    fn finish(mut self) -> HashMap<String, Node> {
        for node in self.names.values_mut() {
            let n = node
                .records
                .iter()
                .filter(|r| r.record_type() == RecordType::SRV)
                .count();
            if n > 1 {
                let weight = u16::try_from(100 / n).unwrap_or(1).max(1);
                for r in &mut node.records {
                    if let RData::SRV(srv) = &r.data {
                        r.data = RData::SRV(SRV::new(
                            srv.priority,
                            weight,
                            srv.port,
                            srv.target.clone(),
                        ));
                    }
                }
            }
            node.additionals.dedup();
        }
        self.names
    }
}

fn protocol_label(protocol: Option<&str>) -> String {
    format!("_{}", protocol.unwrap_or("TCP").to_ascii_lowercase())
}

/// The Service's cluster addresses (none for a headless or ExternalName Service).
fn cluster_ips(svc: &Service) -> Vec<IpAddr> {
    let Some(spec) = svc.spec.as_ref() else {
        return Vec::new();
    };
    let listed: Vec<&str> = match spec.cluster_ips.as_deref() {
        Some(ips) if !ips.is_empty() => ips.iter().map(String::as_str).collect(),
        _ => spec.cluster_ip.as_deref().into_iter().collect(),
    };
    listed.iter().filter_map(|ip| ip.parse().ok()).collect()
}

fn is_headless(svc: &Service) -> bool {
    svc.spec.as_ref().and_then(|s| s.cluster_ip.as_deref()) == Some("None")
}

/// One endpoint address a headless Service publishes, with its DNS label.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Published {
    ip: IpAddr,
    label: String,
}

fn add_service(b: &mut Builder, domain: &str, svc: &Service, slices: &[&EndpointSlice]) {
    let (Some(name), Some(ns)) = (
        svc.metadata.name.as_deref(),
        svc.metadata.namespace.as_deref(),
    ) else {
        return;
    };
    let Some(spec) = svc.spec.as_ref() else {
        return;
    };
    let ns = ns.to_ascii_lowercase();
    let base = format!("{}.{ns}.svc.{domain}", name.to_ascii_lowercase());
    b.touch(&format!("{ns}.svc.{domain}"));
    b.touch(&base);

    if spec.type_.as_deref() == Some("ExternalName") {
        let target = spec
            .external_name
            .as_deref()
            .unwrap_or("")
            .trim_end_matches('.');
        if !target.is_empty() {
            if let Some(t) = fqdn(target) {
                b.record(&base, RData::CNAME(CNAME(t)));
            }
        }
        return;
    }

    if !is_headless(svc) {
        let ips = cluster_ips(svc);
        for ip in &ips {
            b.address(&base, *ip);
            b.ptr(*ip, &base);
        }
        for port in spec.ports.iter().flatten() {
            let Some(pname) = port.name.as_deref().filter(|n| !n.is_empty()) else {
                continue;
            };
            let Ok(number) = u16::try_from(port.port) else {
                continue;
            };
            let proto = format!("{}.{base}", protocol_label(port.protocol.as_deref()));
            b.touch(&proto);
            let key = format!("_{}.{proto}", pname.to_ascii_lowercase());
            b.srv(&key, number, &base, &ips);
        }
        return;
    }

    // Headless: the endpoints themselves, ready ones only unless the Service publishes
    // not-ready addresses.
    let publish = spec.publish_not_ready_addresses.unwrap_or(false);
    let mut published: BTreeSet<Published> = BTreeSet::new();
    let mut srvs: BTreeSet<(String, u16, Published)> = BTreeSet::new();
    for slice in slices {
        if !matches!(slice.address_type.as_str(), "IPv4" | "IPv6") {
            continue;
        }
        for ep in slice.endpoints.iter().flatten() {
            // A missing condition means ready, as the API documents.
            let ready = ep.conditions.as_ref().and_then(|c| c.ready).unwrap_or(true);
            if !ready && !publish {
                continue;
            }
            for addr in &ep.addresses {
                let Ok(ip) = addr.parse::<IpAddr>() else {
                    continue;
                };
                let label = ep
                    .hostname
                    .as_deref()
                    .filter(|h| !h.is_empty())
                    .map(str::to_ascii_lowercase)
                    .unwrap_or_else(|| dashed(ip));
                let p = Published { ip, label };
                for port in slice.ports.iter().flatten() {
                    let Some(pname) = port.name.as_deref().filter(|n| !n.is_empty()) else {
                        continue;
                    };
                    let Some(number) = port.port.and_then(|n| u16::try_from(n).ok()) else {
                        continue;
                    };
                    let proto = protocol_label(port.protocol.as_deref());
                    let key = format!("_{}.{proto}", pname.to_ascii_lowercase());
                    srvs.insert((key, number, p.clone()));
                }
                published.insert(p);
            }
        }
    }
    for p in &published {
        let own = format!("{}.{base}", p.label);
        b.address(&base, p.ip);
        b.address(&own, p.ip);
        b.ptr(p.ip, &own);
    }
    for (key, port, p) in srvs {
        let own = format!("{}.{base}", p.label);
        let proto = key.split_once('.').map(|(_, proto)| proto).unwrap_or("");
        b.touch(&format!("{proto}.{base}"));
        b.srv(&format!("{key}.{base}"), port, &own, &[p.ip]);
    }
}

impl Index {
    /// An empty zone for `domain` (e.g. `cluster.local`).
    pub fn empty(domain: &str) -> Index {
        Index::build(domain, &[], &[])
    }

    /// The zone of `domain` for these Services and the EndpointSlices of their
    /// namespaces (slices belong to the Service their `kubernetes.io/service-name`
    /// label names).
    pub fn build(domain: &str, services: &[Arc<Service>], slices: &[Arc<EndpointSlice>]) -> Index {
        let domain = normalize_domain(domain);
        let mut by_service: HashMap<(&str, &str), Vec<&EndpointSlice>> = HashMap::new();
        for s in slices {
            let ns = s.metadata.namespace.as_deref().unwrap_or("");
            let Some(svc) = s
                .metadata
                .labels
                .as_ref()
                .and_then(|l| l.get(SERVICE_NAME_LABEL))
            else {
                continue;
            };
            by_service.entry((ns, svc.as_str())).or_default().push(s);
        }
        let mut b = Builder::default();
        let soa = soa_record(&domain);
        if let Some(apex) = fqdn(&domain) {
            let mut soa_at_apex = soa.clone();
            soa_at_apex.name = apex;
            b.names
                .entry(domain.clone())
                .or_default()
                .records
                .push(soa_at_apex);
        }
        b.touch(&format!("svc.{domain}"));
        b.touch(&format!("pod.{domain}"));
        for svc in services {
            let key = (
                svc.metadata.namespace.as_deref().unwrap_or(""),
                svc.metadata.name.as_deref().unwrap_or(""),
            );
            let mine = by_service.get(&key).map(Vec::as_slice).unwrap_or_default();
            add_service(&mut b, &domain, svc, mine);
        }
        Index {
            suffix: format!(".{domain}"),
            pod_suffix: format!(".pod.{domain}"),
            names: b.finish(),
            soa,
            domain,
        }
    }

    /// The zone's SOA record, for the authority section of negative answers.
    pub fn soa(&self) -> &Record {
        &self.soa
    }

    /// How many names the zone holds (reverse names included).
    pub fn len(&self) -> usize {
        self.names.len()
    }

    /// Whether the zone holds no name at all (never: the apex is always there).
    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
    }

    /// What the zone says about `query`.
    pub fn lookup(&self, query: &Query) -> Answer {
        self.lookup_name(query.name(), query.query_type())
    }

    /// What the zone says about `name`'s records of type `qtype`.
    pub fn lookup_name(&self, name: &Name, qtype: RecordType) -> Answer {
        let key = key_of(name);
        if let Some(node) = self.names.get(&key) {
            return node.answer(qtype);
        }
        let in_zone = key == self.domain || key.ends_with(&self.suffix);
        if !in_zone {
            // Reverse names of addresses that are not the cluster's go upstream too (the
            // fallthrough K3s configures).
            return Answer::Elsewhere;
        }
        if let Some(rest) = key.strip_suffix(&self.pod_suffix) {
            if let Some(answer) = pod_answer(name, rest, qtype) {
                return answer;
            }
        }
        Answer::NxDomain
    }
}

/// `<a-b-c-d>.<namespace>` in the pod zone: the address itself, for any namespace, as
/// CoreDNS's `pods insecure` answers.
fn pod_answer(name: &Name, rest: &str, qtype: RecordType) -> Option<Answer> {
    let (label, ns) = rest.split_once('.')?;
    if ns.is_empty() || ns.contains('.') {
        return None;
    }
    let ip = undashed(label)?;
    let data = address_rdata(ip);
    let wanted = qtype == RecordType::ANY || data.record_type() == qtype;
    if !wanted {
        return Some(Answer::NoData);
    }
    Some(Answer::Records {
        answers: vec![Record::from_rdata(name.clone(), TTL, data)],
        additionals: Vec::new(),
    })
}

fn soa_record(domain: &str) -> Record {
    let apex = fqdn(domain).unwrap_or_else(Name::root);
    let mname = fqdn(&format!("ns.dns.{domain}")).unwrap_or_else(Name::root);
    let rname = fqdn(&format!("hostmaster.{domain}")).unwrap_or_else(Name::root);
    // The serial only has to grow when the zone changes; seconds since the epoch do.
    let serial = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as u32)
        .unwrap_or(1);
    Record::from_rdata(
        apex,
        TTL,
        RData::SOA(SOA::new(mname, rname, serial, 7200, 1800, 86400, TTL)),
    )
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{ServicePort, ServiceSpec};
    use k8s_openapi::api::discovery::v1::{Endpoint, EndpointConditions, EndpointPort};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
    use std::collections::BTreeMap;

    pub fn port(name: &str, number: i32, protocol: &str) -> ServicePort {
        ServicePort {
            name: Some(name.into()),
            port: number,
            protocol: Some(protocol.into()),
            ..Default::default()
        }
    }

    pub fn service(ns: &str, name: &str, cluster_ip: &str, ports: Vec<ServicePort>) -> Service {
        Service {
            metadata: ObjectMeta {
                name: Some(name.into()),
                namespace: Some(ns.into()),
                ..Default::default()
            },
            spec: Some(ServiceSpec {
                cluster_ip: Some(cluster_ip.into()),
                cluster_ips: (cluster_ip != "None").then(|| vec![cluster_ip.into()]),
                ports: Some(ports),
                type_: Some("ClusterIP".into()),
                ..Default::default()
            }),
            status: None,
        }
    }

    /// An endpoint: address, hostname, ready.
    pub type Ep<'a> = (&'a str, Option<&'a str>, Option<bool>);

    pub fn slice(
        ns: &str,
        svc: &str,
        name: &str,
        eps: &[Ep<'_>],
        ports: &[(&str, i32)],
    ) -> EndpointSlice {
        EndpointSlice {
            metadata: ObjectMeta {
                name: Some(name.into()),
                namespace: Some(ns.into()),
                labels: Some(BTreeMap::from([(
                    SERVICE_NAME_LABEL.to_string(),
                    svc.to_string(),
                )])),
                ..Default::default()
            },
            address_type: if eps.first().is_some_and(|e| e.0.contains(':')) {
                "IPv6".into()
            } else {
                "IPv4".into()
            },
            endpoints: Some(
                eps.iter()
                    .map(|(ip, host, ready)| Endpoint {
                        addresses: vec![ip.to_string()],
                        hostname: host.map(String::from),
                        conditions: Some(EndpointConditions {
                            ready: *ready,
                            ..Default::default()
                        }),
                        ..Default::default()
                    })
                    .collect(),
            ),
            ports: Some(
                ports
                    .iter()
                    .map(|(n, p)| EndpointPort {
                        name: Some(n.to_string()),
                        port: Some(*p),
                        protocol: Some("TCP".into()),
                        ..Default::default()
                    })
                    .collect(),
            ),
        }
    }

    fn name(s: &str) -> Name {
        Name::from_ascii(s).unwrap()
    }

    fn data(a: &Answer) -> Vec<String> {
        match a {
            Answer::Records { answers, .. } => {
                let mut v: Vec<String> = answers.iter().map(|r| r.data.to_string()).collect();
                v.sort();
                v
            }
            other => panic!("no records: {other:?}"),
        }
    }

    fn additional(a: &Answer) -> Vec<String> {
        match a {
            Answer::Records { additionals, .. } => {
                let mut v: Vec<String> = additionals
                    .iter()
                    .map(|r| format!("{} {}", r.name, r.data))
                    .collect();
                v.sort();
                v
            }
            other => panic!("no records: {other:?}"),
        }
    }

    fn index() -> Index {
        let mut dual = service("default", "dual", "10.43.0.20", vec![]);
        let spec = dual.spec.as_mut().unwrap();
        spec.cluster_ips = Some(vec!["10.43.0.20".into(), "fd00:43::20".into()]);
        let mut ext = service("default", "ext", "", vec![]);
        let spec = ext.spec.as_mut().unwrap();
        spec.type_ = Some("ExternalName".into());
        spec.external_name = Some("example.com".into());
        spec.cluster_ip = None;
        spec.cluster_ips = None;
        let mut pub_nr = service("db", "all", "None", vec![]);
        pub_nr.spec.as_mut().unwrap().publish_not_ready_addresses = Some(true);
        let services = vec![
            Arc::new(service(
                "default",
                "web",
                "10.43.0.15",
                vec![
                    port("http", 80, "TCP"),
                    port("", 81, "TCP"),
                    port("dns", 53, "UDP"),
                ],
            )),
            Arc::new(dual),
            Arc::new(ext),
            Arc::new(service("db", "pg", "None", vec![port("pg", 5432, "TCP")])),
            Arc::new(pub_nr),
        ];
        let slices = vec![
            Arc::new(slice(
                "db",
                "pg",
                "pg-1",
                &[
                    ("10.42.0.5", Some("pg-0"), Some(true)),
                    ("10.42.0.6", None, None),
                    ("10.42.0.7", Some("pg-2"), Some(false)),
                ],
                &[("pg", 5432)],
            )),
            // The same endpoint in a second slice (mid-update) counts once.
            Arc::new(slice(
                "db",
                "pg",
                "pg-2",
                &[("10.42.0.5", Some("pg-0"), Some(true))],
                &[("pg", 5432)],
            )),
            Arc::new(slice(
                "db",
                "all",
                "all-1",
                &[("10.42.1.9", None, Some(false))],
                &[],
            )),
            // A slice of another namespace's Service of the same name.
            Arc::new(slice(
                "other",
                "pg",
                "x",
                &[("10.42.9.9", None, Some(true))],
                &[],
            )),
        ];
        Index::build("cluster.local", &services, &slices)
    }

    #[test]
    fn services_answer_their_cluster_ips_by_family() {
        let idx = index();
        let a = idx.lookup_name(&name("web.default.svc.cluster.local."), RecordType::A);
        assert_eq!(data(&a), ["10.43.0.15"]);
        // Case does not matter, nor does the trailing dot.
        let a = idx.lookup_name(&name("WEB.Default.SVC.cluster.LOCAL"), RecordType::A);
        assert_eq!(data(&a), ["10.43.0.15"]);
        assert_eq!(
            idx.lookup_name(&name("web.default.svc.cluster.local."), RecordType::AAAA),
            Answer::NoData
        );
        let a = idx.lookup_name(&name("dual.default.svc.cluster.local."), RecordType::AAAA);
        assert_eq!(data(&a), ["fd00:43::20"]);
        let a = idx.lookup_name(&name("dual.default.svc.cluster.local."), RecordType::A);
        assert_eq!(data(&a), ["10.43.0.20"]);
    }

    #[test]
    fn named_ports_have_srv_records_to_the_service() {
        let idx = index();
        let a = idx.lookup_name(
            &name("_http._tcp.web.default.svc.cluster.local."),
            RecordType::SRV,
        );
        assert_eq!(data(&a), ["0 100 80 web.default.svc.cluster.local."]);
        assert_eq!(
            additional(&a),
            ["web.default.svc.cluster.local. 10.43.0.15"]
        );
        let a = idx.lookup_name(
            &name("_dns._udp.web.default.svc.cluster.local."),
            RecordType::SRV,
        );
        assert_eq!(data(&a), ["0 100 53 web.default.svc.cluster.local."]);
        // The protocol level exists (empty non-terminal); a wrong protocol does not.
        assert_eq!(
            idx.lookup_name(
                &name("_tcp.web.default.svc.cluster.local."),
                RecordType::SRV
            ),
            Answer::NoData
        );
        assert_eq!(
            idx.lookup_name(
                &name("_http._udp.web.default.svc.cluster.local."),
                RecordType::SRV
            ),
            Answer::NxDomain
        );
    }

    #[test]
    fn headless_services_answer_ready_endpoints_by_hostname_or_dashed_address() {
        let idx = index();
        let a = idx.lookup_name(&name("pg.db.svc.cluster.local."), RecordType::A);
        assert_eq!(data(&a), ["10.42.0.5", "10.42.0.6"]);
        let a = idx.lookup_name(&name("pg-0.pg.db.svc.cluster.local."), RecordType::A);
        assert_eq!(data(&a), ["10.42.0.5"]);
        let a = idx.lookup_name(&name("10-42-0-6.pg.db.svc.cluster.local."), RecordType::A);
        assert_eq!(data(&a), ["10.42.0.6"]);
        // Not ready: not published.
        assert_eq!(
            idx.lookup_name(&name("pg-2.pg.db.svc.cluster.local."), RecordType::A),
            Answer::NxDomain
        );
        let a = idx.lookup_name(&name("_pg._tcp.pg.db.svc.cluster.local."), RecordType::SRV);
        assert_eq!(
            data(&a),
            [
                "0 50 5432 10-42-0-6.pg.db.svc.cluster.local.",
                "0 50 5432 pg-0.pg.db.svc.cluster.local."
            ]
        );
        assert_eq!(
            additional(&a),
            [
                "10-42-0-6.pg.db.svc.cluster.local. 10.42.0.6",
                "pg-0.pg.db.svc.cluster.local. 10.42.0.5"
            ]
        );
        // publishNotReadyAddresses includes the not-ready ones.
        let a = idx.lookup_name(&name("all.db.svc.cluster.local."), RecordType::A);
        assert_eq!(data(&a), ["10.42.1.9"]);
    }

    #[test]
    fn external_names_are_cnames() {
        let idx = index();
        for t in [RecordType::A, RecordType::AAAA, RecordType::CNAME] {
            let a = idx.lookup_name(&name("ext.default.svc.cluster.local."), t);
            assert_eq!(data(&a), ["example.com."]);
        }
    }

    #[test]
    fn cluster_addresses_have_reverse_names_and_others_go_upstream() {
        let idx = index();
        let a = idx.lookup_name(&name("15.0.43.10.in-addr.arpa."), RecordType::PTR);
        assert_eq!(data(&a), ["web.default.svc.cluster.local."]);
        let a = idx.lookup_name(&name("5.0.42.10.in-addr.arpa."), RecordType::PTR);
        assert_eq!(data(&a), ["pg-0.pg.db.svc.cluster.local."]);
        let v6 = reverse_key("fd00:43::20".parse().unwrap());
        let a = idx.lookup_name(&name(&v6), RecordType::PTR);
        assert_eq!(data(&a), ["dual.default.svc.cluster.local."]);
        assert_eq!(
            idx.lookup_name(&name("8.8.8.8.in-addr.arpa."), RecordType::PTR),
            Answer::Elsewhere
        );
    }

    #[test]
    fn pods_resolve_from_their_dashed_address_in_any_namespace() {
        let idx = index();
        let a = idx.lookup_name(
            &name("10-42-0-9.anything.pod.cluster.local."),
            RecordType::A,
        );
        assert_eq!(data(&a), ["10.42.0.9"]);
        let a = idx.lookup_name(
            &name("fd00--9.default.pod.cluster.local."),
            RecordType::AAAA,
        );
        assert_eq!(data(&a), ["fd00::9"]);
        assert_eq!(
            idx.lookup_name(
                &name("10-42-0-9.default.pod.cluster.local."),
                RecordType::AAAA
            ),
            Answer::NoData
        );
        assert_eq!(
            idx.lookup_name(&name("not-an-ip.default.pod.cluster.local."), RecordType::A),
            Answer::NxDomain
        );
    }

    #[test]
    fn unknown_cluster_names_are_nxdomain_and_outside_names_elsewhere() {
        let idx = index();
        for n in [
            "nope.default.svc.cluster.local.",
            "web.nope.svc.cluster.local.",
            "google.com.default.svc.cluster.local.",
            "x.web.default.svc.cluster.local.",
        ] {
            assert_eq!(
                idx.lookup_name(&name(n), RecordType::A),
                Answer::NxDomain,
                "{n}"
            );
        }
        for n in [
            "default.svc.cluster.local.",
            "svc.cluster.local.",
            "cluster.local.",
        ] {
            assert_eq!(
                idx.lookup_name(&name(n), RecordType::A),
                Answer::NoData,
                "{n}"
            );
        }
        let soa = idx.lookup_name(&name("cluster.local."), RecordType::SOA);
        assert!(data(&soa)[0].starts_with("ns.dns.cluster.local. hostmaster.cluster.local."));
        for n in ["google.com.", "cluster.localhost.", "local."] {
            assert_eq!(
                idx.lookup_name(&name(n), RecordType::A),
                Answer::Elsewhere,
                "{n}"
            );
        }
    }
}
