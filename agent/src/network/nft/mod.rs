//! A small nftables layer over netlink: the objects skiff programs (tables, chains,
//! rules made of expressions, sets and verdict maps, their elements), a [`Batch`] of
//! changes that the kernel applies atomically, and the [`Netlink`] trait that applies
//! it, with the real socket ([`NftSocket`]) and a recording fake ([`Recorder`]).
//!
//! Only what skiff needs is modelled, for the IPv4 family (`ip`). The encoding follows
//! the kernel's `uapi/linux/netfilter/nf_tables.h`; see `encode.rs`.

pub mod conntrack;
mod encode;
mod socket;

pub use socket::NftSocket;

use std::fmt;
use std::net::Ipv4Addr;

/// What can go wrong talking nftables to the kernel.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The netlink socket could not be opened or set up.
    #[error("opening the nftables netlink socket")]
    Open(#[source] std::io::Error),
    /// Sending a batch or a request failed.
    #[error("sending {what} to the kernel")]
    Send {
        /// What was being sent.
        what: String,
        /// The socket's error.
        #[source]
        source: std::io::Error,
    },
    /// Reading the kernel's answers failed (including `ENOBUFS`: answers were lost).
    #[error("reading the kernel's answers to {what}")]
    Receive {
        /// What the answers were for.
        what: String,
        /// The socket's error.
        #[source]
        source: std::io::Error,
    },
    /// The kernel sent something that could not be parsed.
    #[error("malformed netlink answer: {0}")]
    Malformed(String),
    /// The kernel refused a message of a batch; the whole batch was not applied.
    #[error("{what} failed: {source}")]
    Rejected {
        /// The message that failed ("adding rule to chain svc-...").
        what: String,
        /// The errno the kernel answered.
        #[source]
        source: std::io::Error,
    },
    /// A batch was refused before any message was looked at (e.g. no nftables in the
    /// kernel).
    #[error("the kernel refused the batch: {0}")]
    Batch(#[source] std::io::Error),
    /// A test fake was told to fail.
    #[error("injected failure: {0}")]
    Injected(String),
}

/// `Result` with this module's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// A register of the nftables virtual machine.
///
/// The 16-byte registers 1-4 overlap the 4-byte registers 8-23 (`REG_1` is
/// `REG32_00..=REG32_03`); concatenations use consecutive 4-byte registers.
pub type Reg = u32;
/// The verdict register (a lookup into a verdict map writes here).
pub const REG_VERDICT: Reg = 0;
/// The first 16-byte data register.
pub const REG_1: Reg = 1;
/// The second 16-byte data register.
pub const REG_2: Reg = 2;
/// The first 4-byte data register (the same bytes as the start of [`REG_1`]).
pub const REG32_00: Reg = 8;

/// A verdict: what a rule or a verdict map element decides.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Verdict {
    /// Let the packet through this hook.
    Accept,
    /// Drop the packet.
    Drop,
    /// Run the named chain, then come back.
    Jump(String),
    /// Run the named chain instead of the rest of this one.
    Goto(String),
    /// Go back to the calling chain.
    Return,
}

/// Where a payload expression reads from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Base {
    /// The network header (IPv4).
    Network,
    /// The transport header (TCP, UDP, SCTP: ports first).
    Transport,
}

/// A key of the `meta` expression.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MetaKey {
    /// The layer 4 protocol number (1 byte).
    L4Proto,
    /// The packet mark (4 bytes, host order).
    Mark,
    /// The input interface's name (16 bytes, NUL padded).
    IifName,
    /// The output interface's name (16 bytes, NUL padded).
    OifName,
}

/// A comparison of the `cmp` expression.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CmpOp {
    /// Equal.
    Eq,
    /// Not equal.
    Neq,
}

/// What a `nat` expression does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum NatKind {
    /// Source NAT.
    Snat,
    /// Destination NAT.
    Dnat,
}

/// How a packet is rejected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RejectKind {
    /// An ICMP destination unreachable with this code (3: port unreachable).
    Icmp(u8),
    /// A TCP reset.
    TcpReset,
}

/// What a `dynset` expression does to its set.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DynsetOp {
    /// Add the key if absent.
    Add,
    /// Add the key, or refresh its timeout if present.
    Update,
}

/// One expression of a rule.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Expr {
    /// Load `len` bytes at `offset` of a header into `dreg`.
    Payload {
        /// The register written.
        dreg: Reg,
        /// Which header.
        base: Base,
        /// Byte offset in that header.
        offset: u32,
        /// How many bytes.
        len: u32,
    },
    /// Load packet metadata into `dreg`.
    Meta {
        /// The register written.
        dreg: Reg,
        /// What to load.
        key: MetaKey,
    },
    /// Set packet metadata from `sreg`.
    MetaSet {
        /// The register read.
        sreg: Reg,
        /// What to set.
        key: MetaKey,
    },
    /// Compare a register with a constant; the rule stops when false.
    Cmp {
        /// The register read.
        sreg: Reg,
        /// The comparison.
        op: CmpOp,
        /// The constant.
        data: Vec<u8>,
    },
    /// `dreg = (sreg & mask) ^ xor` over `mask.len()` bytes.
    Bitwise {
        /// The register read.
        sreg: Reg,
        /// The register written.
        dreg: Reg,
        /// The mask.
        mask: Vec<u8>,
        /// The value xored in (same length as `mask`).
        xor: Vec<u8>,
    },
    /// Look the key in `sreg` up in a set (the rule stops when absent, or present if
    /// `invert`), or in a map writing the value into `dreg`.
    Lookup {
        /// The set or map.
        set: String,
        /// The first register of the key.
        sreg: Reg,
        /// The register written from a map (`REG_VERDICT` for verdict maps).
        dreg: Option<Reg>,
        /// Match when the key is absent.
        invert: bool,
    },
    /// Load a constant into a register.
    Immediate {
        /// The register written.
        dreg: Reg,
        /// The constant.
        data: Vec<u8>,
    },
    /// Decide: [`Verdict`] as an immediate into the verdict register.
    Verdict(Verdict),
    /// A random number in `0..modulus` into `dreg` (4 bytes, host order).
    NumgenRandom {
        /// The register written.
        dreg: Reg,
        /// The modulus.
        modulus: u32,
    },
    /// Source or destination NAT to the address in `addr` and port in `port`.
    Nat {
        /// Source or destination.
        kind: NatKind,
        /// The register holding the address.
        addr: Reg,
        /// The register holding the port, if the port changes.
        port: Option<Reg>,
    },
    /// Source NAT to the outgoing interface's address, ports fully randomised.
    Masquerade,
    /// Load the connection tracking state bits (4 bytes, host order) into `dreg`.
    CtState {
        /// The register written.
        dreg: Reg,
    },
    /// Count packets and bytes.
    Counter,
    /// Load the route type of the destination address (4 bytes, host order; 2 is
    /// local) into `dreg`.
    FibDaddrType {
        /// The register written.
        dreg: Reg,
    },
    /// Reject the packet.
    Reject(RejectKind),
    /// Load the TCP MSS the packet's route allows (its MTU less 40 bytes of headers;
    /// 2 bytes, host order) into `dreg`. Forward, output and postrouting only.
    RtTcpMss {
        /// The register written.
        dreg: Reg,
    },
    /// Turn the `size`-byte number in `reg` from host to network byte order.
    ToNetworkOrder {
        /// The register read and written.
        reg: Reg,
        /// 2 or 4.
        size: u32,
    },
    /// Overwrite a TCP SYN's maximum segment size option with the 2 bytes in `sreg`,
    /// only ever lowering it (the kernel leaves a smaller one alone).
    TcpMssSet {
        /// The register read.
        sreg: Reg,
    },
    /// Add or update the key in `sreg` in a set with a timeout.
    Dynset {
        /// The set.
        set: String,
        /// The first register of the key.
        sreg: Reg,
        /// Add or update.
        op: DynsetOp,
        /// The element's timeout in milliseconds.
        timeout_ms: u64,
    },
}

/// A base chain's place in the packet path.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Hook {
    /// The chain's type.
    pub kind: ChainKind,
    /// The netfilter hook.
    pub hook: HookPoint,
    /// The priority (lower runs first; dstnat is -100, srcnat 100, filter 0).
    pub priority: i32,
}

/// A base chain's type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ChainKind {
    /// Filtering.
    Filter,
    /// Address translation (only the first packet of a connection sees it).
    Nat,
}

/// A netfilter hook of the IPv4 family.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum HookPoint {
    /// Every packet arriving, before routing.
    Prerouting,
    /// Packets for this host.
    Input,
    /// Packets routed through this host.
    Forward,
    /// Packets this host's processes send.
    Output,
    /// Every packet leaving, after routing.
    Postrouting,
}

/// A set or map.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SetSpec {
    /// What the keys are.
    pub key: SetKey,
    /// A verdict map (elements carry a [`Verdict`]) rather than a plain set.
    pub verdict_map: bool,
    /// Elements expire (a dynamic set that `dynset` fills).
    pub timeout: bool,
}

/// What a set's keys are. The kernel needs only their length; the type lets `nft list
/// ruleset` show the elements as addresses and ports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SetKey {
    /// An IPv4 address.
    Ipv4,
    /// `ip daddr . meta l4proto . th dport`.
    Ipv4ProtoPort,
    /// `meta l4proto . th dport`.
    ProtoPort,
    /// A number in host byte order (`numgen`'s).
    Index,
}

/// nftables' data types (`nft describe`), as its sets carry them.
const TYPE_INTEGER: u32 = 4;
const TYPE_IPADDR: u32 = 7;
const TYPE_INET_PROTOCOL: u32 = 12;
const TYPE_INET_SERVICE: u32 = 13;
/// A concatenation's type is its fields' types, 6 bits each, the first highest.
const TYPE_BITS: u32 = 6;

impl SetKey {
    /// The key's length in bytes (concatenations: each field rounded up to 4).
    pub fn bytes(self) -> u32 {
        match self {
            SetKey::Ipv4 | SetKey::Index => 4,
            SetKey::ProtoPort => 8,
            SetKey::Ipv4ProtoPort => 12,
        }
    }

    /// Its type, for `NFTA_SET_KEY_TYPE`.
    pub fn type_id(self) -> u32 {
        let concat = |types: &[u32]| types.iter().fold(0, |t, f| t << TYPE_BITS | f);
        match self {
            SetKey::Ipv4 => TYPE_IPADDR,
            SetKey::Index => TYPE_INTEGER,
            SetKey::ProtoPort => concat(&[TYPE_INET_PROTOCOL, TYPE_INET_SERVICE]),
            SetKey::Ipv4ProtoPort => concat(&[TYPE_IPADDR, TYPE_INET_PROTOCOL, TYPE_INET_SERVICE]),
        }
    }
}

/// One message of a batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    /// Create a table (no error if it exists).
    AddTable {
        /// The table.
        table: String,
    },
    /// Delete a table and all it holds.
    DeleteTable {
        /// The table.
        table: String,
    },
    /// Create a chain (no error if it exists), a base chain if `hook` is given.
    AddChain {
        /// The table.
        table: String,
        /// The chain.
        chain: String,
        /// Where a base chain hooks in.
        hook: Option<Hook>,
    },
    /// Delete all rules of a chain.
    FlushChain {
        /// The table.
        table: String,
        /// The chain.
        chain: String,
    },
    /// Delete an empty, unreferenced chain.
    DeleteChain {
        /// The table.
        table: String,
        /// The chain.
        chain: String,
    },
    /// Append a rule to a chain.
    AddRule {
        /// The table.
        table: String,
        /// The chain.
        chain: String,
        /// The rule's expressions.
        exprs: Vec<Expr>,
    },
    /// Create a set or map.
    AddSet {
        /// The table.
        table: String,
        /// The set.
        set: String,
        /// Its shape.
        spec: SetSpec,
    },
    /// Delete an unreferenced set.
    DeleteSet {
        /// The table.
        table: String,
        /// The set.
        set: String,
    },
    /// Add elements to a set or map.
    AddElements {
        /// The table.
        table: String,
        /// The set.
        set: String,
        /// Keys, and the verdict for maps.
        elements: Vec<(Vec<u8>, Option<Verdict>)>,
    },
    /// Delete elements (by key) from a set or map.
    DeleteElements {
        /// The table.
        table: String,
        /// The set.
        set: String,
        /// Keys.
        keys: Vec<Vec<u8>>,
    },
}

impl fmt::Display for Message {
    /// What the message does, for errors: "adding rule to chain svc-...".
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Message::AddTable { table } => write!(f, "adding table {table}"),
            Message::DeleteTable { table } => write!(f, "deleting table {table}"),
            Message::AddChain { chain, .. } => write!(f, "adding chain {chain}"),
            Message::FlushChain { chain, .. } => write!(f, "flushing chain {chain}"),
            Message::DeleteChain { chain, .. } => write!(f, "deleting chain {chain}"),
            Message::AddRule { chain, .. } => write!(f, "adding rule to chain {chain}"),
            Message::AddSet { set, .. } => write!(f, "adding set {set}"),
            Message::DeleteSet { set, .. } => write!(f, "deleting set {set}"),
            Message::AddElements { set, elements, .. } => {
                write!(f, "adding {} elements to set {set}", elements.len())
            }
            Message::DeleteElements { set, keys, .. } => {
                write!(f, "deleting {} elements from set {set}", keys.len())
            }
        }
    }
}

/// A list of messages the kernel applies all together or not at all.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Batch {
    /// The messages, in order.
    pub messages: Vec<Message>,
}

impl Batch {
    /// An empty batch.
    pub fn new() -> Batch {
        Batch::default()
    }

    /// Appends a message.
    pub fn push(&mut self, message: Message) {
        self.messages.push(message);
    }

    /// Whether there is nothing to send.
    pub fn is_empty(&self) -> bool {
        self.messages.is_empty()
    }

    /// How many messages.
    pub fn len(&self) -> usize {
        self.messages.len()
    }
}

/// Applies batches to the kernel's nftables. The effect on the host, behind a trait so
/// decisions can be tested with [`Recorder`].
pub trait Netlink {
    /// Applies `batch` atomically; on error nothing of it was applied.
    fn apply(&mut self, batch: &Batch) -> Result<()>;

    /// Deletes the tracked UDP flows any of `stale` matches; answers how many.
    fn forget_udp(&mut self, stale: &[conntrack::Stale]) -> Result<usize>;

    /// Whether the `ip` table `table` exists.
    fn table_exists(&mut self, table: &str) -> Result<bool>;
}

/// A [`Netlink`] that records the batches it is given, for tests.
#[derive(Debug, Default)]
pub struct Recorder {
    /// Every batch applied, in order (failed ones included).
    pub batches: Vec<Batch>,
    /// When set, the next `apply` fails with this message (and is recorded).
    pub fail_next: Option<String>,
    /// Every `forget_udp` call's flows, in order.
    pub forgotten: Vec<Vec<conntrack::Stale>>,
    /// Tables removed behind the recorder's back: `table_exists` says no for these.
    pub removed: Vec<String>,
}

impl Netlink for Recorder {
    fn apply(&mut self, batch: &Batch) -> Result<()> {
        self.batches.push(batch.clone());
        match self.fail_next.take() {
            Some(why) => Err(Error::Injected(why)),
            None => Ok(()),
        }
    }

    fn forget_udp(&mut self, stale: &[conntrack::Stale]) -> Result<usize> {
        self.forgotten.push(stale.to_vec());
        Ok(0)
    }

    fn table_exists(&mut self, table: &str) -> Result<bool> {
        Ok(!self.removed.iter().any(|t| t == table))
    }
}

impl<T: Netlink + ?Sized> Netlink for &mut T {
    fn apply(&mut self, batch: &Batch) -> Result<()> {
        (**self).apply(batch)
    }

    fn forget_udp(&mut self, stale: &[conntrack::Stale]) -> Result<usize> {
        (**self).forget_udp(stale)
    }

    fn table_exists(&mut self, table: &str) -> Result<bool> {
        (**self).table_exists(table)
    }
}

/// Builders for the expression sequences skiff's rules are made of.
pub mod expr {
    use super::*;

    /// Protocol numbers.
    pub const TCP: u8 = 6;
    /// Protocol numbers.
    pub const UDP: u8 = 17;
    /// Protocol numbers.
    pub const SCTP: u8 = 132;
    /// The route type of a local address.
    pub const RTN_LOCAL: u32 = 2;

    /// `ip saddr` into `dreg`.
    pub fn ip_saddr(dreg: Reg) -> Expr {
        Expr::Payload {
            dreg,
            base: Base::Network,
            offset: 12,
            len: 4,
        }
    }

    /// `ip daddr` into `dreg`.
    pub fn ip_daddr(dreg: Reg) -> Expr {
        Expr::Payload {
            dreg,
            base: Base::Network,
            offset: 16,
            len: 4,
        }
    }

    /// `th dport` (TCP, UDP or SCTP destination port) into `dreg`.
    pub fn th_dport(dreg: Reg) -> Expr {
        Expr::Payload {
            dreg,
            base: Base::Transport,
            offset: 2,
            len: 2,
        }
    }

    /// `th sport` into `dreg`.
    pub fn th_sport(dreg: Reg) -> Expr {
        Expr::Payload {
            dreg,
            base: Base::Transport,
            offset: 0,
            len: 2,
        }
    }

    /// `meta l4proto` into `dreg`.
    pub fn l4proto(dreg: Reg) -> Expr {
        Expr::Meta {
            dreg,
            key: MetaKey::L4Proto,
        }
    }

    /// `sreg == data`.
    pub fn eq(sreg: Reg, data: impl Into<Vec<u8>>) -> Expr {
        Expr::Cmp {
            sreg,
            op: CmpOp::Eq,
            data: data.into(),
        }
    }

    /// `sreg != data`.
    pub fn neq(sreg: Reg, data: impl Into<Vec<u8>>) -> Expr {
        Expr::Cmp {
            sreg,
            op: CmpOp::Neq,
            data: data.into(),
        }
    }

    /// Matches when the address in `sreg` is (or, with `inside` false, is not) in
    /// `net`: a mask then a comparison.
    pub fn in_cidr(sreg: Reg, net: ipnet::Ipv4Net, inside: bool) -> Vec<Expr> {
        let mask = net.netmask().octets().to_vec();
        let cmp = if inside { eq } else { neq };
        vec![
            Expr::Bitwise {
                sreg,
                dreg: sreg,
                xor: vec![0; mask.len()],
                mask,
            },
            cmp(sreg, net.network().octets()),
        ]
    }

    /// `ip saddr` in (or not in) `net`.
    pub fn saddr_in(net: ipnet::Ipv4Net, inside: bool) -> Vec<Expr> {
        let mut e = vec![ip_saddr(REG_1)];
        e.extend(in_cidr(REG_1, net, inside));
        e
    }

    /// `ip daddr` in (or not in) `net`.
    pub fn daddr_in(net: ipnet::Ipv4Net, inside: bool) -> Vec<Expr> {
        let mut e = vec![ip_daddr(REG_1)];
        e.extend(in_cidr(REG_1, net, inside));
        e
    }

    /// `meta l4proto proto`.
    pub fn l4proto_is(proto: u8) -> Vec<Expr> {
        vec![l4proto(REG_1), eq(REG_1, [proto])]
    }

    /// `meta mark & bit != 0` (`set == true`) or `== 0`.
    pub fn mark_has(bit: u32, set: bool) -> Vec<Expr> {
        let cmp = if set { neq } else { eq };
        vec![
            Expr::Meta {
                dreg: REG_1,
                key: MetaKey::Mark,
            },
            Expr::Bitwise {
                sreg: REG_1,
                dreg: REG_1,
                mask: bit.to_ne_bytes().to_vec(),
                xor: vec![0; 4],
            },
            cmp(REG_1, 0u32.to_ne_bytes()),
        ]
    }

    /// `meta mark set meta mark | bit` (`on`) or `meta mark set meta mark & ~bit`.
    pub fn mark_set(bit: u32, on: bool) -> Vec<Expr> {
        let xor = if on { bit } else { 0 };
        vec![
            Expr::Meta {
                dreg: REG_1,
                key: MetaKey::Mark,
            },
            Expr::Bitwise {
                sreg: REG_1,
                dreg: REG_1,
                mask: (!bit).to_ne_bytes().to_vec(),
                xor: xor.to_ne_bytes().to_vec(),
            },
            Expr::MetaSet {
                sreg: REG_1,
                key: MetaKey::Mark,
            },
        ]
    }

    /// `ct state` bit: a connection that has seen traffic both ways.
    pub const CT_ESTABLISHED: u32 = 0x2;
    /// `ct state` bit: a connection that belongs to another (an ICMP error, FTP data).
    pub const CT_RELATED: u32 = 0x4;
    /// `ct state` bit: a connection's first packet.
    pub const CT_NEW: u32 = 0x8;

    /// `ct state` has any of `bits` ([`CT_ESTABLISHED`], [`CT_RELATED`], [`CT_NEW`]).
    pub fn ct_state_any(bits: u32) -> Vec<Expr> {
        vec![
            Expr::CtState { dreg: REG_1 },
            Expr::Bitwise {
                sreg: REG_1,
                dreg: REG_1,
                mask: bits.to_ne_bytes().to_vec(),
                xor: vec![0; 4],
            },
            neq(REG_1, 0u32.to_ne_bytes()),
        ]
    }

    /// A TCP segment whose flags have SYN without RST: a connection's first two
    /// segments, which carry the MSS option.
    pub fn tcp_syn() -> Vec<Expr> {
        const SYN: u8 = 0x02;
        const RST: u8 = 0x04;
        let mut e = l4proto_is(TCP);
        e.extend([
            Expr::Payload {
                dreg: REG_1,
                base: Base::Transport,
                offset: 13,
                len: 1,
            },
            Expr::Bitwise {
                sreg: REG_1,
                dreg: REG_1,
                mask: vec![SYN | RST],
                xor: vec![0],
            },
            eq(REG_1, [SYN]),
        ]);
        e
    }

    /// `tcp option maxseg size set rt mtu`: a SYN's MSS lowered to what its route
    /// carries.
    pub fn clamp_mss_to_route() -> Vec<Expr> {
        vec![
            Expr::RtTcpMss { dreg: REG_1 },
            Expr::ToNetworkOrder {
                reg: REG_1,
                size: 2,
            },
            Expr::TcpMssSet { sreg: REG_1 },
        ]
    }

    /// `fib daddr type local`.
    pub fn daddr_is_local() -> Vec<Expr> {
        vec![
            Expr::FibDaddrType { dreg: REG_1 },
            eq(REG_1, RTN_LOCAL.to_ne_bytes()),
        ]
    }

    /// `dnat to addr:port`.
    pub fn dnat(addr: Ipv4Addr, port: u16) -> Vec<Expr> {
        vec![
            Expr::Immediate {
                dreg: REG_1,
                data: addr.octets().to_vec(),
            },
            Expr::Immediate {
                dreg: REG_2,
                data: port.to_be_bytes().to_vec(),
            },
            Expr::Nat {
                kind: NatKind::Dnat,
                addr: REG_1,
                port: Some(REG_2),
            },
        ]
    }

    /// The key `ip daddr . meta l4proto . th dport` in 4-byte registers from
    /// [`REG32_00`], as [`service_key`] lays it out.
    pub fn service_key_load() -> Vec<Expr> {
        vec![
            ip_daddr(REG32_00),
            l4proto(REG32_00 + 1),
            th_dport(REG32_00 + 2),
        ]
    }

    /// The key `meta l4proto . th dport` in 4-byte registers from [`REG32_00`], as
    /// [`port_key`] lays it out.
    pub fn port_key_load() -> Vec<Expr> {
        vec![l4proto(REG32_00), th_dport(REG32_00 + 1)]
    }

    /// The bytes of the key `ip daddr . meta l4proto . th dport`: each field padded to
    /// 4 bytes, as the registers hold them.
    pub fn service_key(addr: Ipv4Addr, proto: u8, port: u16) -> Vec<u8> {
        let mut k = addr.octets().to_vec();
        k.extend(port_key(proto, port));
        k
    }

    /// The bytes of the key `meta l4proto . th dport`.
    pub fn port_key(proto: u8, port: u16) -> Vec<u8> {
        let p = port.to_be_bytes();
        vec![proto, 0, 0, 0, p[0], p[1], 0, 0]
    }

    /// The bytes of a `numgen` result `n` as a map key.
    pub fn numgen_key(n: u32) -> Vec<u8> {
        n.to_ne_bytes().to_vec()
    }
}
