//! The host's resolver configuration: where cluster DNS forwards other names, and what
//! pods with `dnsPolicy: Default` get.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::Path;

/// The host's resolver configuration.
pub const ETC_RESOLV_CONF: &str = "/etc/resolv.conf";
/// systemd-resolved's list of the real upstream servers (its stub is 127.0.0.53).
pub const SYSTEMD_RESOLV_CONF: &str = "/run/systemd/resolve/resolv.conf";
/// The address of systemd-resolved's local stub.
pub const SYSTEMD_STUB: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 53);

/// The cluster DNS pods are given: what the kubelet's `--cluster-dns` and
/// `--cluster-domain` are upstream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterDns {
    /// The address pods send queries to (the DNS Service's cluster IP, 10.43.0.10).
    pub nameserver: Ipv4Addr,
    /// The cluster domain (`cluster.local`).
    pub domain: String,
}

/// A resolv.conf, read as upstream's kubelet reads it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ResolvConf {
    /// `nameserver` lines, in order (as written, not checked).
    pub nameservers: Vec<String>,
    /// The last `search` line's domains, without trailing dots, `.` left out.
    pub searches: Vec<String>,
    /// `options`, each `name` or `name:value`; a later one replaces an earlier one of
    /// the same name.
    pub options: Vec<String>,
}

/// The name of an option (`ndots` of `ndots:5`).
pub fn option_name(option: &str) -> &str {
    option.split_once(':').map_or(option, |(n, _)| n)
}

/// Adds `option` to `options`, replacing one of the same name in place.
pub fn merge_option(options: &mut Vec<String>, option: String) {
    match options
        .iter_mut()
        .find(|o| option_name(o) == option_name(&option))
    {
        Some(existing) => *existing = option,
        None => options.push(option),
    }
}

impl ResolvConf {
    /// Parses resolv.conf text. Comments (`#`, `;`) and unknown keywords are skipped;
    /// a `search` line replaces the ones before it, as in the C library.
    pub fn parse(text: &str) -> ResolvConf {
        let mut conf = ResolvConf::default();
        for line in text.lines() {
            let line = line.split(['#', ';']).next().unwrap_or("");
            let mut fields = line.split_whitespace();
            match fields.next() {
                Some("nameserver") => {
                    if let Some(ns) = fields.next() {
                        conf.nameservers.push(ns.to_string());
                    }
                }
                Some("search") => {
                    conf.searches = fields
                        .filter(|s| *s != ".")
                        .map(|s| s.trim_end_matches('.').to_string())
                        .collect();
                }
                Some("options") => {
                    for o in fields {
                        merge_option(&mut conf.options, o.to_string());
                    }
                }
                _ => {}
            }
        }
        conf
    }

    /// The nameservers that are IP addresses (a zone suffix such as `%eth0` dropped).
    pub fn nameserver_ips(&self) -> Vec<IpAddr> {
        self.nameservers
            .iter()
            .filter_map(|ns| ns.split('%').next()?.parse().ok())
            .collect()
    }
}

/// Whether a resolv.conf names only systemd-resolved's stub.
fn only_stub(conf: &ResolvConf) -> bool {
    let ips = conf.nameserver_ips();
    !ips.is_empty() && ips.iter().all(|ip| *ip == IpAddr::V4(SYSTEMD_STUB))
}

/// The text of the host's resolver configuration as pods and cluster DNS should see it:
/// `etc` (normally [`ETC_RESOLV_CONF`]), or `systemd` (normally [`SYSTEMD_RESOLV_CONF`])
/// when `etc` names only systemd-resolved's stub, which is unreachable from a pod.
/// A file that cannot be read counts as empty (no upstream servers, no search list).
pub fn host_resolv_conf(etc: &Path, systemd: &Path) -> String {
    let text = match std::fs::read_to_string(etc) {
        Ok(t) => t,
        Err(e) => {
            tracing::warn!(path = %etc.display(), error = %e, "cannot read the host's resolver configuration");
            return String::new();
        }
    };
    if !only_stub(&ResolvConf::parse(&text)) {
        return text;
    }
    match std::fs::read_to_string(systemd) {
        Ok(real) => real,
        Err(e) => {
            tracing::warn!(path = %systemd.display(), error = %e, "the host's resolver is systemd-resolved's stub and its upstream list cannot be read");
            text
        }
    }
}

/// The servers cluster DNS forwards to: the nameservers of `resolv_conf`, port 53.
/// Loopback servers are kept: it is the node, not the pod, that asks them.
pub fn upstreams(resolv_conf: &str) -> Vec<SocketAddr> {
    ResolvConf::parse(resolv_conf)
        .nameserver_ips()
        .into_iter()
        .map(|ip| SocketAddr::new(ip, 53))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_like_the_c_library() {
        let conf = ResolvConf::parse(
            "# generated\nnameserver 10.0.0.2\nnameserver fe80::1%eth0 ; link-local\nsearch old.example\nsearch corp.example. . lab.example\noptions ndots:2 edns0\noptions ndots:3\ndomain ignored.example\nnameserver\n",
        );
        assert_eq!(conf.nameservers, ["10.0.0.2", "fe80::1%eth0"]);
        assert_eq!(conf.searches, ["corp.example", "lab.example"]);
        assert_eq!(conf.options, ["ndots:3", "edns0"]);
        assert_eq!(
            upstreams("nameserver 10.0.0.2\nnameserver fe80::1%eth0\nnameserver bogus\n"),
            [
                "10.0.0.2:53".parse::<SocketAddr>().unwrap(),
                "[fe80::1]:53".parse().unwrap()
            ]
        );
        assert_eq!(
            upstreams("nameserver 127.0.0.1\n"),
            ["127.0.0.1:53".parse::<SocketAddr>().unwrap()]
        );
    }

    #[test]
    fn systemd_resolved_stub_is_replaced_by_its_real_file() {
        let dir = tempfile::tempdir().unwrap();
        let etc = dir.path().join("resolv.conf");
        let real = dir.path().join("real.conf");
        std::fs::write(
            &etc,
            "nameserver 127.0.0.53\noptions edns0 trust-ad\nsearch lan\n",
        )
        .unwrap();
        std::fs::write(&real, "nameserver 192.168.1.1\nsearch lan\n").unwrap();
        assert_eq!(
            host_resolv_conf(&etc, &real),
            "nameserver 192.168.1.1\nsearch lan\n"
        );
        // Missing real file: the stub file, as it is.
        let missing = dir.path().join("missing");
        assert!(host_resolv_conf(&etc, &missing).contains("127.0.0.53"));
        // Another server beside the stub: the file is used as it is.
        std::fs::write(&etc, "nameserver 127.0.0.53\nnameserver 1.1.1.1\n").unwrap();
        assert!(host_resolv_conf(&etc, &real).contains("1.1.1.1"));
        assert_eq!(host_resolv_conf(&missing, &real), "");
    }
}
