//! Encoding batches into nfnetlink messages, attribute by attribute, as
//! `uapi/linux/netfilter/nf_tables.h` lays them out.
//!
//! The netlink header comes from `netlink-packet-core`; the nftables attributes are
//! written here straight into the send buffer. `netlink-packet-netfilter` models only
//! six expressions and none of the set element data skiff needs (verdicts, nested
//! keys), so most of it would have been hand-encoded bytes inside its `Other` variants.

use super::{
    Base, Batch, ChainKind, CmpOp, DynsetOp, Expr, HookPoint, Message, MetaKey, NatKind,
    RejectKind, SetKey, Verdict,
};
use netlink_packet_core::{Emitable, NetlinkHeader};

/// The nftables subsystem of nfnetlink.
pub(super) const NFNL_SUBSYS_NFTABLES: u16 = 10;
const NFNL_MSG_BATCH_BEGIN: u16 = 0x10;
const NFNL_MSG_BATCH_END: u16 = 0x11;

pub(super) const NLM_F_REQUEST: u16 = 0x1;
pub(super) const NLM_F_ACK: u16 = 0x4;
pub(super) const NLM_F_CREATE: u16 = 0x400;
const NLM_F_APPEND: u16 = 0x800;
pub(super) const NLM_F_DUMP: u16 = 0x300;
const NLA_F_NESTED: u16 = 0x8000;
const NLMSG_HDRLEN: usize = 16;

/// The IPv4 family (`nft ... ip ...`).
pub(super) const NFPROTO_IPV4: u8 = 2;

pub(super) const NFT_MSG_NEWTABLE: u8 = 0;
pub(super) const NFT_MSG_GETTABLE: u8 = 1;
const NFT_MSG_DELTABLE: u8 = 2;
pub(super) const NFT_MSG_NEWCHAIN: u8 = 3;
pub(super) const NFT_MSG_GETCHAIN: u8 = 4;
const NFT_MSG_DELCHAIN: u8 = 5;
pub(super) const NFT_MSG_NEWRULE: u8 = 6;
pub(super) const NFT_MSG_GETRULE: u8 = 7;
const NFT_MSG_DELRULE: u8 = 8;
const NFT_MSG_NEWSET: u8 = 9;
const NFT_MSG_DELSET: u8 = 11;
const NFT_MSG_NEWSETELEM: u8 = 12;
const NFT_MSG_DELSETELEM: u8 = 14;

pub(super) const NFTA_TABLE_NAME: u16 = 1;
pub(super) const NFTA_CHAIN_TABLE: u16 = 1;
pub(super) const NFTA_CHAIN_NAME: u16 = 3;
const NFTA_CHAIN_HOOK: u16 = 4;
const NFTA_CHAIN_TYPE: u16 = 7;
const NFTA_HOOK_HOOKNUM: u16 = 1;
const NFTA_HOOK_PRIORITY: u16 = 2;
pub(super) const NFTA_RULE_TABLE: u16 = 1;
pub(super) const NFTA_RULE_CHAIN: u16 = 2;
const NFTA_RULE_EXPRESSIONS: u16 = 4;
const NFTA_LIST_ELEM: u16 = 1;
const NFTA_EXPR_NAME: u16 = 1;
const NFTA_EXPR_DATA: u16 = 2;
const NFTA_SET_TABLE: u16 = 1;
const NFTA_SET_NAME: u16 = 2;
const NFTA_SET_FLAGS: u16 = 3;
const NFTA_SET_KEY_TYPE: u16 = 4;
const NFTA_SET_KEY_LEN: u16 = 5;
const NFTA_SET_DATA_TYPE: u16 = 6;
const NFTA_SET_ID: u16 = 10;
const NFTA_SET_USERDATA: u16 = 13;
/// nft's set userdata: the key's byte order (a u32: 1 is host order).
const UDATA_SET_KEYBYTEORDER: u8 = 0;
const BYTEORDER_HOST_ENDIAN: u32 = 1;
const NFTA_SET_ELEM_LIST_TABLE: u16 = 1;
const NFTA_SET_ELEM_LIST_SET: u16 = 2;
const NFTA_SET_ELEM_LIST_ELEMENTS: u16 = 3;
const NFTA_SET_ELEM_KEY: u16 = 1;
const NFTA_SET_ELEM_DATA: u16 = 2;
const NFTA_DATA_VALUE: u16 = 1;
const NFTA_DATA_VERDICT: u16 = 2;
const NFTA_VERDICT_CODE: u16 = 1;
const NFTA_VERDICT_CHAIN: u16 = 2;

const NFT_SET_MAP: u32 = 0x8;
const NFT_SET_TIMEOUT: u32 = 0x10;
const NFT_SET_EVAL: u32 = 0x20;
const NFT_DATA_VERDICT: u32 = 0xffff_ff00;

/// The most element bytes put in one message: a nested attribute's length is 16 bits.
const ELEMENTS_PER_MESSAGE_BYTES: usize = 48 * 1024;

/// Appends attributes to a buffer.
pub(super) struct Writer {
    pub(super) buf: Vec<u8>,
}

impl Writer {
    pub(super) fn attr(&mut self, kind: u16, data: &[u8]) {
        let len = 4 + data.len();
        self.buf.extend_from_slice(&(len as u16).to_ne_bytes());
        self.buf.extend_from_slice(&kind.to_ne_bytes());
        self.buf.extend_from_slice(data);
        self.pad();
    }

    fn pad(&mut self) {
        while !self.buf.len().is_multiple_of(4) {
            self.buf.push(0);
        }
    }

    fn u32(&mut self, kind: u16, v: u32) {
        self.attr(kind, &v.to_be_bytes());
    }

    fn str(&mut self, kind: u16, s: &str) {
        let mut data = Vec::with_capacity(s.len() + 1);
        data.extend_from_slice(s.as_bytes());
        data.push(0);
        self.attr(kind, &data);
    }

    pub(super) fn nest(&mut self, kind: u16, f: impl FnOnce(&mut Writer)) {
        let start = self.buf.len();
        self.buf.extend_from_slice(&[0; 4]);
        f(self);
        let len = (self.buf.len() - start) as u16;
        self.buf[start..start + 2].copy_from_slice(&len.to_ne_bytes());
        self.buf[start + 2..start + 4].copy_from_slice(&(kind | NLA_F_NESTED).to_ne_bytes());
    }

    fn value(&mut self, kind: u16, data: &[u8]) {
        self.nest(kind, |w| w.attr(NFTA_DATA_VALUE, data));
    }

    fn verdict(&mut self, kind: u16, v: &Verdict) {
        let (code, chain): (i32, Option<&str>) = match v {
            Verdict::Drop => (0, None),
            Verdict::Accept => (1, None),
            Verdict::Jump(c) => (-3, Some(c)),
            Verdict::Goto(c) => (-4, Some(c)),
            Verdict::Return => (-5, None),
        };
        self.nest(kind, |w| {
            w.nest(NFTA_DATA_VERDICT, |w| {
                w.attr(NFTA_VERDICT_CODE, &code.to_be_bytes());
                if let Some(c) = chain {
                    w.str(NFTA_VERDICT_CHAIN, c);
                }
            })
        });
    }

    /// Starts a netlink message; returns where it starts for [`Writer::end`].
    pub(super) fn begin(
        &mut self,
        message_type: u16,
        flags: u16,
        seq: u32,
        family: u8,
        res_id: u16,
    ) -> usize {
        let start = self.buf.len();
        let mut header = NetlinkHeader::default();
        header.message_type = message_type;
        header.flags = flags;
        header.sequence_number = seq;
        self.buf.resize(start + NLMSG_HDRLEN, 0);
        header.emit(&mut self.buf[start..start + NLMSG_HDRLEN]);
        // nfgenmsg: family, version 0, resource id (big endian).
        self.buf.push(family);
        self.buf.push(0);
        self.buf.extend_from_slice(&res_id.to_be_bytes());
        start
    }

    /// Writes the length of the message started at `start`.
    pub(super) fn end(&mut self, start: usize) {
        let len = (self.buf.len() - start) as u32;
        self.buf[start..start + 4].copy_from_slice(&len.to_ne_bytes());
    }
}

/// The netlink message type of an nftables message.
pub(super) fn nft_type(msg: u8) -> u16 {
    (NFNL_SUBSYS_NFTABLES << 8) | msg as u16
}

/// A batch in bytes, and for each nftables message sent its sequence number and the
/// index of the batch message it came from (element lists may take several).
pub(super) struct Encoded {
    pub(super) bytes: Vec<u8>,
    pub(super) seqs: Vec<(u32, usize)>,
    /// The sequence number of the batch-begin message.
    pub(super) begin_seq: u32,
}

/// Encodes `batch` between batch-begin and batch-end, sequence numbers from `seq`, every
/// nftables message asking for an acknowledgement.
pub(super) fn encode_batch(batch: &Batch, seq: u32) -> Encoded {
    let mut w = Writer {
        buf: Vec::with_capacity(batch.len() * 160 + 64),
    };
    let begin_seq = seq;
    let start = w.begin(
        NFNL_MSG_BATCH_BEGIN,
        NLM_F_REQUEST,
        seq,
        0,
        NFNL_SUBSYS_NFTABLES,
    );
    w.end(start);
    let mut ctx = (seq, Vec::with_capacity(batch.len()));
    for (i, m) in batch.messages.iter().enumerate() {
        encode_message(&mut w, m, &mut ctx, i);
    }
    let (last, seqs) = ctx;
    let start = w.begin(
        NFNL_MSG_BATCH_END,
        NLM_F_REQUEST,
        last.wrapping_add(1),
        0,
        NFNL_SUBSYS_NFTABLES,
    );
    w.end(start);
    Encoded {
        bytes: w.buf,
        seqs,
        begin_seq,
    }
}

/// Starts the next netlink message of batch message `index`, recording its sequence
/// number.
fn next(
    w: &mut Writer,
    ctx: &mut (u32, Vec<(u32, usize)>),
    index: usize,
    ty: u8,
    flags: u16,
) -> usize {
    ctx.0 = ctx.0.wrapping_add(1);
    ctx.1.push((ctx.0, index));
    w.begin(
        nft_type(ty),
        NLM_F_REQUEST | NLM_F_ACK | flags,
        ctx.0,
        NFPROTO_IPV4,
        0,
    )
}

/// Writes batch message `i` (several netlink messages for long element lists).
fn encode_message(w: &mut Writer, m: &Message, ctx: &mut (u32, Vec<(u32, usize)>), i: usize) {
    let mut next = |w: &mut Writer, ty: u8, flags: u16| next(w, ctx, i, ty, flags);
    match m {
        Message::AddTable { table } => {
            let s = next(w, NFT_MSG_NEWTABLE, NLM_F_CREATE);
            w.str(NFTA_TABLE_NAME, table);
            w.end(s);
        }
        Message::DeleteTable { table } => {
            let s = next(w, NFT_MSG_DELTABLE, 0);
            w.str(NFTA_TABLE_NAME, table);
            w.end(s);
        }
        Message::AddChain { table, chain, hook } => {
            let s = next(w, NFT_MSG_NEWCHAIN, NLM_F_CREATE);
            w.str(NFTA_CHAIN_TABLE, table);
            w.str(NFTA_CHAIN_NAME, chain);
            if let Some(h) = hook {
                let num = match h.hook {
                    HookPoint::Prerouting => 0,
                    HookPoint::Input => 1,
                    HookPoint::Forward => 2,
                    HookPoint::Output => 3,
                    HookPoint::Postrouting => 4,
                };
                w.nest(NFTA_CHAIN_HOOK, |w| {
                    w.u32(NFTA_HOOK_HOOKNUM, num);
                    w.attr(NFTA_HOOK_PRIORITY, &h.priority.to_be_bytes());
                });
                w.str(
                    NFTA_CHAIN_TYPE,
                    match h.kind {
                        ChainKind::Filter => "filter",
                        ChainKind::Nat => "nat",
                    },
                );
            }
            w.end(s);
        }
        Message::FlushChain { table, chain } => {
            // A rule deletion naming a chain but no rule handle deletes all its rules.
            let s = next(w, NFT_MSG_DELRULE, 0);
            w.str(NFTA_RULE_TABLE, table);
            w.str(NFTA_RULE_CHAIN, chain);
            w.end(s);
        }
        Message::DeleteChain { table, chain } => {
            let s = next(w, NFT_MSG_DELCHAIN, 0);
            w.str(NFTA_CHAIN_TABLE, table);
            w.str(NFTA_CHAIN_NAME, chain);
            w.end(s);
        }
        Message::AddRule {
            table,
            chain,
            exprs,
        } => {
            let s = next(w, NFT_MSG_NEWRULE, NLM_F_CREATE | NLM_F_APPEND);
            w.str(NFTA_RULE_TABLE, table);
            w.str(NFTA_RULE_CHAIN, chain);
            w.nest(NFTA_RULE_EXPRESSIONS, |w| {
                for e in exprs {
                    w.nest(NFTA_LIST_ELEM, |w| encode_expr(w, e));
                }
            });
            w.end(s);
        }
        Message::AddSet { table, set, spec } => {
            let s = next(w, NFT_MSG_NEWSET, NLM_F_CREATE);
            let mut flags = 0;
            if spec.verdict_map {
                flags |= NFT_SET_MAP;
            }
            if spec.timeout {
                flags |= NFT_SET_TIMEOUT | NFT_SET_EVAL;
            }
            w.str(NFTA_SET_TABLE, table);
            w.str(NFTA_SET_NAME, set);
            w.u32(NFTA_SET_FLAGS, flags);
            w.u32(NFTA_SET_ID, i as u32);
            w.u32(NFTA_SET_KEY_TYPE, spec.key.type_id());
            w.u32(NFTA_SET_KEY_LEN, spec.key.bytes());
            if spec.key == SetKey::Index {
                let mut udata = vec![UDATA_SET_KEYBYTEORDER, 4];
                udata.extend_from_slice(&BYTEORDER_HOST_ENDIAN.to_ne_bytes());
                w.attr(NFTA_SET_USERDATA, &udata);
            }
            if spec.verdict_map {
                w.u32(NFTA_SET_DATA_TYPE, NFT_DATA_VERDICT);
            }
            w.end(s);
        }
        Message::DeleteSet { table, set } => {
            let s = next(w, NFT_MSG_DELSET, 0);
            w.str(NFTA_SET_TABLE, table);
            w.str(NFTA_SET_NAME, set);
            w.end(s);
        }
        Message::AddElements {
            table,
            set,
            elements,
        } => {
            let mut rest = &elements[..];
            while !rest.is_empty() {
                let s = next(w, NFT_MSG_NEWSETELEM, NLM_F_CREATE);
                w.str(NFTA_SET_ELEM_LIST_TABLE, table);
                w.str(NFTA_SET_ELEM_LIST_SET, set);
                let list_start = w.buf.len();
                let mut taken = 0;
                w.nest(NFTA_SET_ELEM_LIST_ELEMENTS, |w| {
                    for (key, data) in rest {
                        if w.buf.len() - list_start > ELEMENTS_PER_MESSAGE_BYTES {
                            break;
                        }
                        w.nest(NFTA_LIST_ELEM, |w| {
                            w.value(NFTA_SET_ELEM_KEY, key);
                            if let Some(v) = data {
                                w.verdict(NFTA_SET_ELEM_DATA, v);
                            }
                        });
                        taken += 1;
                    }
                });
                w.end(s);
                rest = &rest[taken..];
            }
        }
        Message::DeleteElements { table, set, keys } => {
            let mut rest = &keys[..];
            while !rest.is_empty() {
                let s = next(w, NFT_MSG_DELSETELEM, 0);
                w.str(NFTA_SET_ELEM_LIST_TABLE, table);
                w.str(NFTA_SET_ELEM_LIST_SET, set);
                let list_start = w.buf.len();
                let mut taken = 0;
                w.nest(NFTA_SET_ELEM_LIST_ELEMENTS, |w| {
                    for key in rest {
                        if w.buf.len() - list_start > ELEMENTS_PER_MESSAGE_BYTES {
                            break;
                        }
                        w.nest(NFTA_LIST_ELEM, |w| w.value(NFTA_SET_ELEM_KEY, key));
                        taken += 1;
                    }
                });
                w.end(s);
                rest = &rest[taken..];
            }
        }
    }
}

fn encode_expr(w: &mut Writer, e: &Expr) {
    let name = match e {
        Expr::Payload { .. } => "payload",
        Expr::Meta { .. } | Expr::MetaSet { .. } => "meta",
        Expr::Cmp { .. } => "cmp",
        Expr::Bitwise { .. } => "bitwise",
        Expr::Lookup { .. } => "lookup",
        Expr::Immediate { .. } | Expr::Verdict(_) => "immediate",
        Expr::NumgenRandom { .. } => "numgen",
        Expr::Nat { .. } => "nat",
        Expr::Masquerade => "masq",
        Expr::CtState { .. } => "ct",
        Expr::Counter => "counter",
        Expr::FibDaddrType { .. } => "fib",
        Expr::Reject(_) => "reject",
        Expr::Dynset { .. } => "dynset",
        Expr::RtTcpMss { .. } => "rt",
        Expr::ToNetworkOrder { .. } => "byteorder",
        Expr::TcpMssSet { .. } => "exthdr",
    };
    w.str(NFTA_EXPR_NAME, name);
    w.nest(NFTA_EXPR_DATA, |w| match e {
        Expr::Payload {
            dreg,
            base,
            offset,
            len,
        } => {
            w.u32(1, *dreg);
            w.u32(
                2,
                match base {
                    Base::Network => 1,
                    Base::Transport => 2,
                },
            );
            w.u32(3, *offset);
            w.u32(4, *len);
        }
        Expr::Meta { dreg, key } => {
            w.u32(1, *dreg);
            w.u32(2, meta_key(*key));
        }
        Expr::MetaSet { sreg, key } => {
            w.u32(2, meta_key(*key));
            w.u32(3, *sreg);
        }
        Expr::Cmp { sreg, op, data } => {
            w.u32(1, *sreg);
            w.u32(
                2,
                match op {
                    CmpOp::Eq => 0,
                    CmpOp::Neq => 1,
                },
            );
            w.value(3, data);
        }
        Expr::Bitwise {
            sreg,
            dreg,
            mask,
            xor,
        } => {
            w.u32(1, *sreg);
            w.u32(2, *dreg);
            w.u32(3, mask.len() as u32);
            w.value(4, mask);
            w.value(5, xor);
        }
        Expr::Lookup {
            set,
            sreg,
            dreg,
            invert,
        } => {
            w.str(1, set);
            w.u32(2, *sreg);
            if let Some(d) = dreg {
                w.u32(3, *d);
            }
            if *invert {
                w.u32(5, 1);
            }
        }
        Expr::Immediate { dreg, data } => {
            w.u32(1, *dreg);
            w.value(2, data);
        }
        Expr::Verdict(v) => {
            w.u32(1, super::REG_VERDICT);
            w.verdict(2, v);
        }
        Expr::NumgenRandom { dreg, modulus } => {
            w.u32(1, *dreg);
            w.u32(2, *modulus);
            w.u32(3, 1);
        }
        Expr::Nat { kind, addr, port } => {
            w.u32(
                1,
                match kind {
                    NatKind::Snat => 0,
                    NatKind::Dnat => 1,
                },
            );
            w.u32(2, NFPROTO_IPV4 as u32);
            w.u32(3, *addr);
            if let Some(p) = port {
                w.u32(5, *p);
            }
        }
        Expr::Masquerade => {
            // NF_NAT_RANGE_PROTO_RANDOM_FULLY: source ports picked at random, so two
            // nodes' masqueraded flows do not collide on predictable ports.
            w.u32(1, 0x10);
        }
        Expr::CtState { dreg } => {
            w.u32(1, *dreg);
            w.u32(2, 0);
        }
        Expr::Counter => {}
        Expr::FibDaddrType { dreg } => {
            w.u32(1, *dreg);
            w.u32(2, 3); // NFT_FIB_RESULT_ADDRTYPE
            w.u32(3, 2); // NFTA_FIB_F_DADDR
        }
        Expr::RtTcpMss { dreg } => {
            w.u32(1, *dreg); // NFTA_RT_DREG
            w.u32(2, 3); // NFTA_RT_KEY: NFT_RT_TCPMSS
        }
        Expr::ToNetworkOrder { reg, size } => {
            w.u32(1, *reg); // NFTA_BYTEORDER_SREG
            w.u32(2, *reg); // NFTA_BYTEORDER_DREG
            w.u32(3, 1); // NFTA_BYTEORDER_OP: NFT_BYTEORDER_HTON
            w.u32(4, *size); // NFTA_BYTEORDER_LEN
            w.u32(5, *size); // NFTA_BYTEORDER_SIZE
        }
        Expr::TcpMssSet { sreg } => {
            // NFTA_EXTHDR_TYPE: TCP option 2 (maximum segment size), whose value is
            // the 2 bytes at offset 2.
            w.attr(2, &[2]);
            w.u32(3, 2); // NFTA_EXTHDR_OFFSET
            w.u32(4, 2); // NFTA_EXTHDR_LEN
            w.u32(6, 1); // NFTA_EXTHDR_OP: NFT_EXTHDR_OP_TCPOPT
            w.u32(7, *sreg); // NFTA_EXTHDR_SREG
        }
        Expr::Reject(kind) => match kind {
            RejectKind::Icmp(code) => {
                w.u32(1, 0);
                w.attr(2, &[*code]);
            }
            RejectKind::TcpReset => w.u32(1, 1),
        },
        Expr::Dynset {
            set,
            sreg,
            op,
            timeout_ms,
        } => {
            w.str(1, set);
            w.u32(
                3,
                match op {
                    DynsetOp::Add => 0,
                    DynsetOp::Update => 1,
                },
            );
            w.u32(4, *sreg);
            w.attr(6, &timeout_ms.to_be_bytes());
        }
    });
}

fn meta_key(k: MetaKey) -> u32 {
    match k {
        MetaKey::Mark => 3,
        MetaKey::IifName => 6,
        MetaKey::OifName => 7,
        MetaKey::L4Proto => 16,
    }
}

#[cfg(test)]
mod tests {
    use super::super::{expr, Batch, Message, SetSpec};
    use super::*;

    /// Walks the netlink messages of a buffer: (type, flags, seq, payload).
    fn messages(buf: &[u8]) -> Vec<(u16, u16, u32, Vec<u8>)> {
        let mut out = Vec::new();
        let mut at = 0;
        while at + 16 <= buf.len() {
            let len = u32::from_ne_bytes([buf[at], buf[at + 1], buf[at + 2], buf[at + 3]]) as usize;
            let ty = u16::from_ne_bytes([buf[at + 4], buf[at + 5]]);
            let flags = u16::from_ne_bytes([buf[at + 6], buf[at + 7]]);
            let seq = u32::from_ne_bytes([buf[at + 8], buf[at + 9], buf[at + 10], buf[at + 11]]);
            out.push((ty, flags, seq, buf[at + 16..at + len].to_vec()));
            at += len.div_ceil(4) * 4;
        }
        out
    }

    #[test]
    fn a_batch_is_framed_by_begin_and_end_and_every_message_asks_for_an_ack() {
        let mut b = Batch::new();
        b.push(Message::AddTable {
            table: "skiff".into(),
        });
        b.push(Message::AddRule {
            table: "skiff".into(),
            chain: "c".into(),
            exprs: expr::dnat(
                "10.42.0.5".parse().unwrap_or(std::net::Ipv4Addr::LOCALHOST),
                80,
            ),
        });
        let e = encode_batch(&b, 100);
        let m = messages(&e.bytes);
        assert_eq!(m.len(), 4);
        assert_eq!(m[0].0, NFNL_MSG_BATCH_BEGIN);
        assert_eq!(&m[0].3[2..4], &10u16.to_be_bytes());
        assert_eq!(m[3].0, NFNL_MSG_BATCH_END);
        assert_eq!(m[1].0, nft_type(NFT_MSG_NEWTABLE));
        assert_eq!(m[2].0, nft_type(NFT_MSG_NEWRULE));
        for msg in &m[1..3] {
            assert_ne!(msg.1 & NLM_F_ACK, 0);
        }
        assert_eq!(e.seqs, vec![(101, 0), (102, 1)]);
        // The table name, NUL terminated, in the first attribute.
        assert_eq!(
            &m[1].3[4..],
            &[10, 0, 1, 0, b's', b'k', b'i', b'f', b'f', 0, 0, 0]
        );
    }

    #[test]
    fn long_element_lists_are_split_under_the_attribute_length_limit() {
        let elements: Vec<_> = (0..5000u32)
            .map(|i| {
                (
                    expr::numgen_key(i),
                    Some(Verdict::Goto(format!("ep-some/long/chain/name/{i}"))),
                )
            })
            .collect();
        let mut b = Batch::new();
        b.push(Message::AddSet {
            table: "t".into(),
            set: "m".into(),
            spec: SetSpec {
                key: SetKey::Ipv4,
                verdict_map: true,
                timeout: false,
            },
        });
        b.push(Message::AddElements {
            table: "t".into(),
            set: "m".into(),
            elements,
        });
        let e = encode_batch(&b, 0);
        let m = messages(&e.bytes);
        assert!(m.len() > 4, "elements split over several messages");
        for msg in &m {
            assert!(msg.3.len() < 65535);
        }
        assert!(e.seqs.iter().skip(1).all(|(_, i)| *i == 1));
    }
}
