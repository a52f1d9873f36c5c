//! The real [`Netlink`]: an `NETLINK_NETFILTER` socket in the calling thread's network
//! namespace.

use super::conntrack::{self, Flow, Stale};
use super::encode::{
    self, nft_type, Writer, NFPROTO_IPV4, NFTA_CHAIN_NAME, NFTA_CHAIN_TABLE, NFTA_RULE_CHAIN,
    NFTA_RULE_TABLE, NFTA_TABLE_NAME, NFT_MSG_GETCHAIN, NFT_MSG_GETRULE, NFT_MSG_GETTABLE,
    NFT_MSG_NEWCHAIN, NFT_MSG_NEWRULE, NFT_MSG_NEWTABLE, NLM_F_ACK, NLM_F_CREATE, NLM_F_DUMP,
    NLM_F_REQUEST,
};
use super::{Batch, Error, Netlink, Result};
use netlink_packet_core::{ErrorBuffer, NetlinkBuffer, NlasIterator, NLMSG_DONE, NLMSG_ERROR};
use netlink_sys::{protocols::NETLINK_NETFILTER, Socket, SocketAddr};
use nix::sys::socket::{setsockopt, sockopt};
use std::collections::{BTreeMap, HashMap};
use std::io;
use std::time::Duration;

/// Room for the answers of one message: an acknowledgement is a small message, but
/// the socket's receive buffer counts each at its kernel allocation size.
const RCVBUF_PER_MESSAGE: usize = 1024;
/// How long to wait for the kernel's answers before giving up on a batch.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(30);

/// An nftables netlink socket. It belongs to the network namespace of the thread that
/// opened it.
pub struct NftSocket {
    sock: Socket,
    seq: u32,
    sndbuf: usize,
    rcvbuf: usize,
}

impl std::fmt::Debug for NftSocket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NftSocket").field("seq", &self.seq).finish()
    }
}

impl NftSocket {
    /// Opens and binds a socket.
    pub fn open() -> Result<NftSocket> {
        let mut sock = Socket::new(NETLINK_NETFILTER).map_err(Error::Open)?;
        sock.bind_auto().map_err(Error::Open)?;
        sock.connect(&SocketAddr::new(0, 0)).map_err(Error::Open)?;
        // Errors carry only the failing message's header, not the whole message back.
        sock.set_cap_ack(true).map_err(Error::Open)?;
        setsockopt(
            &sock,
            sockopt::ReceiveTimeout,
            &nix::sys::time::TimeVal::new(ANSWER_TIMEOUT.as_secs() as _, 0),
        )
        .map_err(|e| Error::Open(e.into()))?;
        let seq = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs() as u32)
            .unwrap_or(1);
        Ok(NftSocket {
            sock,
            seq,
            sndbuf: 0,
            rcvbuf: 0,
        })
    }

    /// Makes the socket's buffers hold at least `snd` bytes to send and `rcv` bytes of
    /// answers: as root past the system limits (`SO_*BUFFORCE`), else up to them.
    fn ensure_buffers(&mut self, snd: usize, rcv: usize) {
        if snd > self.sndbuf {
            let n = snd.min(i32::MAX as usize);
            if setsockopt(&self.sock, sockopt::SndBufForce, &n).is_err() {
                let _ = setsockopt(&self.sock, sockopt::SndBuf, &n);
            }
            self.sndbuf = snd;
        }
        if rcv > self.rcvbuf {
            let n = rcv.min(i32::MAX as usize);
            if setsockopt(&self.sock, sockopt::RcvBufForce, &n).is_err() {
                let _ = setsockopt(&self.sock, sockopt::RcvBuf, &n);
            }
            self.rcvbuf = rcv;
        }
    }

    fn next_seq(&mut self, n: usize) -> u32 {
        let s = self.seq;
        self.seq = self.seq.wrapping_add(n as u32 + 2);
        s
    }

    /// The names of the chains of the `ip` table `table`.
    pub fn chains(&mut self, table: &str) -> Result<Vec<String>> {
        let mut out = Vec::new();
        self.dump(NFT_MSG_GETCHAIN, NFTA_CHAIN_TABLE, table, |ty, attrs| {
            if ty == nft_type(NFT_MSG_NEWCHAIN)
                && attrs.get(&NFTA_CHAIN_TABLE).map(String::as_str) == Some(table)
            {
                if let Some(name) = attrs.get(&NFTA_CHAIN_NAME) {
                    out.push(name.clone());
                }
            }
        })?;
        out.sort();
        Ok(out)
    }

    /// How many rules each chain of the `ip` table `table` holds (chains without rules
    /// are absent).
    pub fn rule_counts(&mut self, table: &str) -> Result<BTreeMap<String, usize>> {
        let mut out = BTreeMap::new();
        self.dump(NFT_MSG_GETRULE, NFTA_RULE_TABLE, table, |ty, attrs| {
            if ty == nft_type(NFT_MSG_NEWRULE)
                && attrs.get(&NFTA_RULE_TABLE).map(String::as_str) == Some(table)
            {
                if let Some(chain) = attrs.get(&NFTA_RULE_CHAIN) {
                    *out.entry(chain.clone()).or_insert(0) += 1;
                }
            }
        })?;
        Ok(out)
    }

    /// A request of type `get` (with `flags` besides `NLM_F_REQUEST`) naming `table` in
    /// attribute `table_attr`.
    fn table_request(&mut self, get: u8, flags: u16, table_attr: u16, table: &str) -> Vec<u8> {
        let seq = self.next_seq(1);
        let mut w = Writer { buf: Vec::new() };
        let s = w.begin(nft_type(get), NLM_F_REQUEST | flags, seq, NFPROTO_IPV4, 0);
        w_str(&mut w, table_attr, table);
        w.end(s);
        w.buf
    }

    /// Dumps objects of type `get` filtered by table; calls `each` with every answer's
    /// type and its string attributes.
    fn dump(
        &mut self,
        get: u8,
        table_attr: u16,
        table: &str,
        mut each: impl FnMut(u16, &HashMap<u16, String>),
    ) -> Result<()> {
        let request = self.table_request(get, NLM_F_DUMP, table_attr, table);
        let what = format!("listing table {table}");
        self.send(&request, &what)?;
        loop {
            let buf = self.recv(&what)?;
            for (ty, _, payload) in parse_messages(&buf)? {
                match ty {
                    NLMSG_DONE => return Ok(()),
                    NLMSG_ERROR => match error_code(payload)? {
                        0 => return Ok(()),
                        e if e == -nix::libc::ENOENT => return Ok(()),
                        e => {
                            return Err(Error::Rejected {
                                what,
                                source: io::Error::from_raw_os_error(-e),
                            })
                        }
                    },
                    _ => {
                        let attrs = string_attrs(payload.get(4..).unwrap_or_default())?;
                        each(ty, &attrs);
                    }
                }
            }
        }
    }

    /// The IPv4 UDP flows conntrack tracks in the socket's namespace.
    pub fn udp_flows(&mut self) -> Result<Vec<Flow>> {
        let seq = self.next_seq(1);
        let mut w = Writer { buf: Vec::new() };
        conntrack::dump_request(&mut w, NLM_F_REQUEST | NLM_F_DUMP, seq);
        let what = "listing conntrack's flows".to_string();
        self.send(&w.buf, &what)?;
        let mut out = Vec::new();
        loop {
            let buf = self.recv(&what)?;
            for (ty, _, payload) in parse_messages(&buf)? {
                match ty {
                    NLMSG_DONE => return Ok(out),
                    NLMSG_ERROR => {
                        return match error_code(payload)? {
                            0 => Ok(out),
                            e => Err(Error::Rejected {
                                what,
                                source: io::Error::from_raw_os_error(-e),
                            }),
                        }
                    }
                    t if conntrack::is_flow(t) => out.extend(conntrack::parse_flow(payload)?),
                    _ => {}
                }
            }
        }
    }

    /// Deletes `flow`; gone already is fine.
    pub fn delete_flow(&mut self, flow: &Flow) -> Result<()> {
        let seq = self.next_seq(1);
        let mut w = Writer { buf: Vec::new() };
        conntrack::delete_request(&mut w, NLM_F_REQUEST | NLM_F_ACK, seq, flow);
        self.acked(
            &w.buf,
            format!("deleting the flow {flow:?}"),
            -nix::libc::ENOENT,
        )
    }

    /// Makes `flow` for `timeout` seconds, as traffic would (for tests).
    pub fn add_udp_flow(&mut self, flow: &Flow, timeout: u32) -> Result<()> {
        let seq = self.next_seq(1);
        let mut w = Writer { buf: Vec::new() };
        let flags = NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE;
        conntrack::create_request(&mut w, flags, seq, flow, timeout);
        self.acked(&w.buf, format!("making the flow {flow:?}"), 0)
    }

    /// Sends one request and waits for its acknowledgement; the error `fine` counts as
    /// one.
    fn acked(&mut self, bytes: &[u8], what: String, fine: i32) -> Result<()> {
        self.send(bytes, &what)?;
        loop {
            let buf = self.recv(&what)?;
            for (ty, _, payload) in parse_messages(&buf)? {
                if ty != NLMSG_ERROR {
                    continue;
                }
                return match error_code(payload)? {
                    0 => Ok(()),
                    e if e == fine => Ok(()),
                    e => Err(Error::Rejected {
                        what,
                        source: io::Error::from_raw_os_error(-e),
                    }),
                };
            }
        }
    }

    fn send(&self, bytes: &[u8], what: &str) -> Result<()> {
        self.sock.send(bytes, 0).map_err(|source| Error::Send {
            what: what.to_string(),
            source,
        })?;
        Ok(())
    }

    fn recv(&self, what: &str) -> Result<Vec<u8>> {
        let mut buf = Vec::with_capacity(256 * 1024);
        self.sock
            .recv(&mut buf, 0)
            .map_err(|source| Error::Receive {
                what: what.to_string(),
                source,
            })?;
        Ok(buf)
    }
}

fn w_str(w: &mut Writer, kind: u16, s: &str) {
    let len = 4 + s.len() + 1;
    w.buf.extend_from_slice(&(len as u16).to_ne_bytes());
    w.buf.extend_from_slice(&kind.to_ne_bytes());
    w.buf.extend_from_slice(s.as_bytes());
    w.buf.push(0);
    while !w.buf.len().is_multiple_of(4) {
        w.buf.push(0);
    }
}

/// The netlink messages of one datagram: (type, sequence number, payload).
fn parse_messages(buf: &[u8]) -> Result<Vec<(u16, u32, &[u8])>> {
    let mut out = Vec::new();
    let mut at = 0;
    while at < buf.len() {
        let nl = NetlinkBuffer::new_checked(&buf[at..])
            .map_err(|e| Error::Malformed(format!("netlink header: {e}")))?;
        let len = nl.length() as usize;
        let ty = nl.message_type();
        let seq = nl.sequence_number();
        let payload = buf
            .get(at + 16..at + len)
            .ok_or_else(|| Error::Malformed(format!("message of {len} bytes truncated")))?;
        out.push((ty, seq, payload));
        at += len.div_ceil(4) * 4;
    }
    Ok(out)
}

/// The (negative errno, 0 for an acknowledgement) code of an `NLMSG_ERROR` payload.
fn error_code(payload: &[u8]) -> Result<i32> {
    let e = ErrorBuffer::new_checked(&payload)
        .map_err(|e| Error::Malformed(format!("netlink error message: {e}")))?;
    Ok(e.code().map(|c| c.get()).unwrap_or(0))
}

/// The string attributes of an nftables object (NUL terminated, other kinds skipped).
fn string_attrs(buf: &[u8]) -> Result<HashMap<u16, String>> {
    let mut out = HashMap::new();
    for nla in NlasIterator::new(buf) {
        let nla = nla.map_err(|e| Error::Malformed(format!("attribute: {e}")))?;
        let v = nla.value();
        if let Some((0, s)) = v.split_last() {
            if let Ok(s) = std::str::from_utf8(s) {
                out.insert(nla.kind(), s.to_string());
            }
        }
    }
    Ok(out)
}

impl Netlink for NftSocket {
    fn table_exists(&mut self, table: &str) -> Result<bool> {
        let request = self.table_request(NFT_MSG_GETTABLE, NLM_F_ACK, NFTA_TABLE_NAME, table);
        let what = format!("getting table {table}");
        self.send(&request, &what)?;
        let mut found = false;
        loop {
            let buf = self.recv(&what)?;
            for (ty, _, payload) in parse_messages(&buf)? {
                if ty == nft_type(NFT_MSG_NEWTABLE) {
                    found = true;
                } else if ty == NLMSG_ERROR {
                    return match error_code(payload)? {
                        0 => Ok(found),
                        e if e == -nix::libc::ENOENT => Ok(false),
                        e => Err(Error::Rejected {
                            what,
                            source: io::Error::from_raw_os_error(-e),
                        }),
                    };
                }
            }
        }
    }

    fn forget_udp(&mut self, stale: &[Stale]) -> Result<usize> {
        if stale.is_empty() {
            return Ok(0);
        }
        let mut n = 0;
        for flow in self.udp_flows()? {
            if stale.iter().any(|s| s.matches(&flow)) {
                self.delete_flow(&flow)?;
                n += 1;
            }
        }
        Ok(n)
    }

    fn apply(&mut self, batch: &Batch) -> Result<()> {
        if batch.is_empty() {
            return Ok(());
        }
        let seq = self.next_seq(batch.len() * 2);
        let enc = encode::encode_batch(batch, seq);
        // Keep the sequence numbers of the element lists split over several messages
        // ahead too.
        self.seq = self.seq.wrapping_add(enc.seqs.len() as u32);
        self.ensure_buffers(
            enc.bytes.len() + 64 * 1024,
            enc.seqs.len() * RCVBUF_PER_MESSAGE + 256 * 1024,
        );
        let what = format!("a batch of {} messages", batch.len());
        self.send(&enc.bytes, &what)?;

        let mut pending: HashMap<u32, usize> = enc.seqs.iter().copied().collect();
        let mut first_error: Option<(u32, usize, i32)> = None;
        while !pending.is_empty() {
            let buf = self.recv(&what)?;
            for (ty, seq, payload) in parse_messages(&buf)? {
                if ty != NLMSG_ERROR {
                    continue;
                }
                let code = error_code(payload)?;
                if seq == enc.begin_seq {
                    return Err(Error::Batch(io::Error::from_raw_os_error(-code)));
                }
                let Some(index) = pending.remove(&seq) else {
                    continue;
                };
                if code != 0 {
                    tracing::debug!(
                        errno = -code,
                        message = %batch.messages[index],
                        "nftables refused a message"
                    );
                    if first_error.is_none_or(|(s, _, _)| seq < s) {
                        first_error = Some((seq, index, code));
                    }
                }
            }
        }
        match first_error {
            None => Ok(()),
            Some((_, index, code)) => Err(Error::Rejected {
                what: batch.messages[index].to_string(),
                source: io::Error::from_raw_os_error(-code),
            }),
        }
    }
}
