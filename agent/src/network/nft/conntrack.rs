//! Connection tracking entries over the same netfilter netlink socket (ctnetlink): the
//! UDP flows the Service rules left pointing where they no longer should.
//!
//! UDP has no connection to end. A flow DNATed to an endpoint that is gone keeps going
//! there for as long as its packets keep coming, and a flow that began while its
//! Service had no endpoint never gets its DNAT. As upstream's proxy does, skiff deletes
//! such entries when the endpoints change ([`Stale`]); the next packet starts a new
//! flow through the current rules.

use super::encode::Writer;
use super::{Error, Result};
use netlink_packet_core::NlasIterator;
use std::net::{Ipv4Addr, SocketAddrV4};

const NFNL_SUBSYS_CTNETLINK: u16 = 1;
const IPCTNL_MSG_CT_NEW: u16 = 0;
const IPCTNL_MSG_CT_GET: u16 = 1;
const IPCTNL_MSG_CT_DELETE: u16 = 2;
const CTA_TUPLE_ORIG: u16 = 1;
const CTA_TUPLE_REPLY: u16 = 2;
const CTA_TIMEOUT: u16 = 7;
const CTA_TUPLE_IP: u16 = 1;
const CTA_TUPLE_PROTO: u16 = 2;
const CTA_IP_V4_SRC: u16 = 1;
const CTA_IP_V4_DST: u16 = 2;
const CTA_PROTO_NUM: u16 = 1;
const CTA_PROTO_SRC_PORT: u16 = 2;
const CTA_PROTO_DST_PORT: u16 = 3;
/// The attribute type without the nested and byte-order flags.
const NLA_TYPE_MASK: u16 = 0x3fff;
const AF_INET: u8 = 2;
const UDP: u8 = 17;

/// One direction of a flow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tuple {
    /// Where its packets come from.
    pub src: SocketAddrV4,
    /// Where they go.
    pub dst: SocketAddrV4,
}

/// A tracked UDP flow: as it was sent, and as its answers come back (after NAT).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Flow {
    /// The first packet's addresses.
    pub orig: Tuple,
    /// The answers' addresses: from the endpoint a DNAT picked.
    pub reply: Tuple,
}

/// UDP flows to forget.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Stale {
    /// Those DNATed to this endpoint, which is no longer one.
    ToEndpoint(SocketAddrV4),
    /// Those sent to this Service address and port, which had no endpoint.
    ToService(SocketAddrV4),
    /// Those sent to this NodePort on any address, which had no endpoint: for a node
    /// whose addresses are not known (else [`Stale::ToService`] with each of them).
    ToNodePort(u16),
    /// Those sent to this Service address and port whose replies come from none of
    /// `endpoints`: what a start sweeps, since flows made before it may be DNATed to an
    /// endpoint that went while skiff was down, or have no DNAT at all.
    NotFrom {
        /// The Service's address and port.
        service: SocketAddrV4,
        /// Its endpoints now.
        endpoints: Vec<SocketAddrV4>,
    },
    /// The same for a NodePort on any address (a node whose addresses are not known;
    /// else [`Stale::NotFrom`] with each of them).
    NodePortNotFrom {
        /// The NodePort.
        port: u16,
        /// Its endpoints now.
        endpoints: Vec<SocketAddrV4>,
    },
}

impl Stale {
    /// Whether `flow` is one of these.
    pub fn matches(&self, flow: &Flow) -> bool {
        match self {
            Stale::ToEndpoint(a) => flow.reply.src == *a && flow.orig.dst != *a,
            Stale::ToService(a) => flow.orig.dst == *a,
            Stale::ToNodePort(p) => flow.orig.dst.port() == *p,
            Stale::NotFrom { service, endpoints } => {
                flow.orig.dst == *service && !endpoints.contains(&flow.reply.src)
            }
            Stale::NodePortNotFrom { port, endpoints } => {
                flow.orig.dst.port() == *port && !endpoints.contains(&flow.reply.src)
            }
        }
    }
}

/// The netlink message type of a ctnetlink message.
pub(super) fn ct_type(msg: u16) -> u16 {
    (NFNL_SUBSYS_CTNETLINK << 8) | msg
}

/// The request for every IPv4 flow.
pub(super) fn dump_request(w: &mut Writer, flags: u16, seq: u32) {
    let s = w.begin(ct_type(IPCTNL_MSG_CT_GET), flags, seq, AF_INET, 0);
    w.end(s);
}

/// Whether `message_type` is a flow in a dump.
pub(super) fn is_flow(message_type: u16) -> bool {
    message_type == ct_type(IPCTNL_MSG_CT_NEW)
}

fn tuple(w: &mut Writer, kind: u16, t: &Tuple) {
    w.nest(kind, |w| {
        w.nest(CTA_TUPLE_IP, |w| {
            w.attr(CTA_IP_V4_SRC, &t.src.ip().octets());
            w.attr(CTA_IP_V4_DST, &t.dst.ip().octets());
        });
        w.nest(CTA_TUPLE_PROTO, |w| {
            w.attr(CTA_PROTO_NUM, &[UDP]);
            w.attr(CTA_PROTO_SRC_PORT, &t.src.port().to_be_bytes());
            w.attr(CTA_PROTO_DST_PORT, &t.dst.port().to_be_bytes());
        });
    });
}

/// The request that deletes `flow`.
pub(super) fn delete_request(w: &mut Writer, flags: u16, seq: u32, flow: &Flow) {
    let s = w.begin(ct_type(IPCTNL_MSG_CT_DELETE), flags, seq, AF_INET, 0);
    tuple(w, CTA_TUPLE_ORIG, &flow.orig);
    w.end(s);
}

/// The request that makes `flow`, for `timeout` seconds (the `conntrack -I` of tests).
pub(super) fn create_request(w: &mut Writer, flags: u16, seq: u32, flow: &Flow, timeout: u32) {
    let s = w.begin(ct_type(IPCTNL_MSG_CT_NEW), flags, seq, AF_INET, 0);
    tuple(w, CTA_TUPLE_ORIG, &flow.orig);
    tuple(w, CTA_TUPLE_REPLY, &flow.reply);
    w.attr(CTA_TIMEOUT, &timeout.to_be_bytes());
    w.end(s);
}

fn attrs(buf: &[u8]) -> impl Iterator<Item = Result<(u16, &[u8])>> {
    NlasIterator::new(buf).map(|nla| {
        let nla = nla.map_err(|e| Error::Malformed(format!("conntrack attribute: {e}")))?;
        let (kind, len) = (nla.kind() & NLA_TYPE_MASK, nla.length() as usize);
        let whole: &[u8] = nla.into_inner();
        Ok((kind, whole.get(4..len).unwrap_or_default()))
    })
}

/// A UDP tuple; `None` for another protocol.
fn parse_tuple(buf: &[u8]) -> Result<Option<Tuple>> {
    let (mut src, mut dst) = (None, None);
    let (mut proto, mut sport, mut dport) = (None, None, None);
    for a in attrs(buf) {
        match a? {
            (CTA_TUPLE_IP, ip) => {
                for a in attrs(ip) {
                    match a? {
                        (CTA_IP_V4_SRC, v) => src = <[u8; 4]>::try_from(v).ok(),
                        (CTA_IP_V4_DST, v) => dst = <[u8; 4]>::try_from(v).ok(),
                        _ => {}
                    }
                }
            }
            (CTA_TUPLE_PROTO, p) => {
                for a in attrs(p) {
                    match a? {
                        (CTA_PROTO_NUM, v) => proto = v.first().copied(),
                        (CTA_PROTO_SRC_PORT, v) => sport = <[u8; 2]>::try_from(v).ok(),
                        (CTA_PROTO_DST_PORT, v) => dport = <[u8; 2]>::try_from(v).ok(),
                        _ => {}
                    }
                }
            }
            _ => {}
        }
    }
    if proto != Some(UDP) {
        return Ok(None);
    }
    match (src, dst, sport, dport) {
        (Some(s), Some(d), Some(sp), Some(dp)) => Ok(Some(Tuple {
            src: SocketAddrV4::new(Ipv4Addr::from(s), u16::from_be_bytes(sp)),
            dst: SocketAddrV4::new(Ipv4Addr::from(d), u16::from_be_bytes(dp)),
        })),
        _ => Err(Error::Malformed(
            "a UDP conntrack tuple without its addresses".into(),
        )),
    }
}

/// The UDP flow a dumped entry's payload (after the netlink header) describes; `None`
/// for another protocol.
pub(super) fn parse_flow(payload: &[u8]) -> Result<Option<Flow>> {
    let (mut orig, mut reply) = (None, None);
    for a in attrs(payload.get(4..).unwrap_or_default()) {
        match a? {
            (CTA_TUPLE_ORIG, t) => orig = parse_tuple(t)?,
            (CTA_TUPLE_REPLY, t) => reply = parse_tuple(t)?,
            _ => {}
        }
    }
    Ok(orig.zip(reply).map(|(orig, reply)| Flow { orig, reply }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flow(orig: (&str, &str), reply: (&str, &str)) -> Flow {
        let t = |(s, d): (&str, &str)| Tuple {
            src: s.parse().unwrap(),
            dst: d.parse().unwrap(),
        };
        Flow {
            orig: t(orig),
            reply: t(reply),
        }
    }

    #[test]
    fn a_flow_written_as_a_request_reads_back_the_same() {
        let f = flow(
            ("10.42.0.5:40000", "10.43.0.20:53"),
            ("10.42.1.7:5353", "10.42.0.5:40000"),
        );
        let mut w = Writer { buf: Vec::new() };
        create_request(&mut w, 0, 1, &f, 30);
        // After the 16-byte netlink header: nfgenmsg and the attributes, as a dump has.
        assert_eq!(parse_flow(&w.buf[16..]).unwrap(), Some(f));
    }

    #[test]
    fn stale_flows_are_the_ones_to_a_gone_endpoint_or_an_empty_service() {
        let dnat = flow(
            ("10.42.0.5:40000", "10.43.0.20:53"),
            ("10.42.1.7:5353", "10.42.0.5:40000"),
        );
        let direct = flow(
            ("10.42.0.5:40001", "10.42.1.7:5353"),
            ("10.42.1.7:5353", "10.42.0.5:40001"),
        );
        let gone = Stale::ToEndpoint("10.42.1.7:5353".parse().unwrap());
        assert!(gone.matches(&dnat));
        // A flow sent to the pod itself, not through the Service, is left alone.
        assert!(!gone.matches(&direct));
        assert!(Stale::ToService("10.43.0.20:53".parse().unwrap()).matches(&dnat));
        assert!(!Stale::ToService("10.43.0.20:54".parse().unwrap()).matches(&dnat));
        assert!(Stale::ToNodePort(53).matches(&dnat));
        // At a start: a flow whose replies come from an endpoint the Service still has
        // stays; from any other, or undNATed, it goes.
        let a = |s: &str| s.parse().unwrap();
        let not_from = |eps: &[&str]| Stale::NotFrom {
            service: a("10.43.0.20:53"),
            endpoints: eps.iter().map(|e| a(e)).collect(),
        };
        assert!(!not_from(&["10.42.1.7:5353"]).matches(&dnat));
        assert!(not_from(&["10.42.1.8:5353"]).matches(&dnat));
        assert!(not_from(&[]).matches(&dnat));
        assert!(!not_from(&[]).matches(&direct));
        let undnated = flow(
            ("10.42.0.5:40002", "10.43.0.20:53"),
            ("10.43.0.20:53", "10.42.0.5:40002"),
        );
        assert!(not_from(&["10.42.1.7:5353"]).matches(&undnated));
    }
}
