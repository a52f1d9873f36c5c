//! A minimal SPDY/3.1 server session, as `kubectl port-forward` needs it.
//!
//! Kubernetes clients speak SPDY through moby/spdystream: directly after an
//! `Upgrade: SPDY/3.1`, or (kubectl 1.31 and later) tunneled in the binary messages of a
//! WebSocket. The client opens every stream and a server only answers, so this session
//! accepts streams ([`Session::accept`]), answers them (SYN_REPLY), and carries data both
//! ways with FIN and RST_STREAM; it answers PINGs and heeds SETTINGS, WINDOW_UPDATE and
//! GOAWAY. It opens no streams and sends no PINGs of its own.
//!
//! Header blocks are zlib streams preset with the SPDY/3 dictionary, with one compression
//! context per direction for the whole connection: every block goes through it in order,
//! also those of frames that are otherwise ignored, or the next one cannot be read.
//!
//! Flow control: SPDY/3.1 gives each stream, and the session, a 64 KiB send window that
//! the receiver reopens with WINDOW_UPDATE. spdystream implements none of it: it never
//! sends WINDOW_UPDATE and never waits for one. A sender holding to the window would stall
//! every transfer after its first 64 KiB, so the windows are counted all along but held to
//! only once the peer shows that it does flow control (a WINDOW_UPDATE, or an
//! INITIAL_WINDOW_SIZE setting). The other way, this side credits back what the
//! application has read, which a flow-controlled peer needs and spdystream ignores. A peer
//! sending past its window is not cut off (spdystream always would be); instead a stream
//! whose reader falls [`BUFFERED`] bytes behind stops the reading of the connection until
//! it catches up, pushing back on the peer through the transport, as spdystream does.

use bytes::Bytes;
use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader, BufWriter};
use tokio::sync::{mpsc, Notify, Semaphore};
use tokio_util::sync::CancellationToken;

/// Errors of a SPDY session or one of its streams.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Reading or writing the connection failed.
    #[error("SPDY connection")]
    Io(#[source] std::io::Error),
    /// The peer broke the protocol; the session ends.
    #[error("SPDY protocol error: {0}")]
    Protocol(String),
    /// A header block could not be compressed or decompressed.
    #[error("SPDY header compression: {0}")]
    Compression(String),
    /// A frame to send does not fit SPDY's 24-bit length.
    #[error("a SPDY frame of {0} bytes is too long")]
    TooLong(usize),
    /// The stream was reset, by the peer or by this side.
    #[error("SPDY stream {0} was reset")]
    Reset(u32),
    /// This side already finished the stream (sent FIN).
    #[error("SPDY stream {0} is already finished")]
    Finished(u32),
    /// The session is over.
    #[error("the SPDY session is closed")]
    Closed,
}

/// Results of this module.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// The protocol version spoken.
const VERSION: u16 = 3;
/// The initial send window of a stream and of the session (SPDY/3.1).
pub const INITIAL_WINDOW: u32 = 64 * 1024;
/// The largest payload of one frame (24-bit length).
const MAX_LENGTH: usize = (1 << 24) - 1;
/// The largest data frame sent: what spdystream sends too.
const MAX_DATA_FRAME: usize = 32 * 1024;
/// How many bytes of one stream may wait for its reader before the connection's reading
/// waits for it.
pub const BUFFERED: usize = 256 * 1024;
/// The largest header block accepted, decompressed.
const MAX_HEADER_BLOCK: usize = 256 * 1024;
/// Streams open at once; more are refused.
const MAX_STREAMS: usize = 1024;
/// Frames waiting for the writer.
const QUEUE: usize = 64;

const SYN_STREAM: u16 = 1;
const SYN_REPLY: u16 = 2;
const RST_STREAM: u16 = 3;
const SETTINGS: u16 = 4;
const PING: u16 = 6;
const GOAWAY: u16 = 7;
const HEADERS: u16 = 8;
const WINDOW_UPDATE: u16 = 9;
const FLAG_FIN: u8 = 0x01;
const FLAG_UNIDIRECTIONAL: u8 = 0x02;
/// The SETTINGS id of the initial window of new streams.
pub const SETTINGS_INITIAL_WINDOW_SIZE: u32 = 7;

/// RST_STREAM status codes (SPDY/3 section 2.6.3).
pub mod status {
    /// The stream broke the protocol.
    pub const PROTOCOL_ERROR: u32 = 1;
    /// A frame for a stream that is not open.
    pub const INVALID_STREAM: u32 = 2;
    /// The stream was refused before any processing.
    pub const REFUSED_STREAM: u32 = 3;
    /// The stream is no longer needed.
    pub const CANCEL: u32 = 5;
    /// The endpoint failed.
    pub const INTERNAL_ERROR: u32 = 6;
}

/// GOAWAY status codes.
mod goaway {
    /// The session ends because the peer broke the protocol.
    pub const PROTOCOL_ERROR: u32 = 1;
}

/// A stream's headers: lowercase names; a name with several values appears once per value.
pub type Headers = Vec<(String, String)>;

/// One entry of a SETTINGS frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Setting {
    /// FLAG_SETTINGS_PERSIST_VALUE (1) and FLAG_SETTINGS_PERSISTED (2).
    pub flags: u8,
    /// Which setting (24 bits).
    pub id: u32,
    /// Its value.
    pub value: u32,
}

/// A frame, with its header block decompressed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// The peer opens a stream.
    SynStream {
        /// The stream (odd when the client opens it).
        id: u32,
        /// The stream this one is associated with; 0 for none.
        associated: u32,
        /// 0 (highest) to 7.
        priority: u8,
        /// The opener sends nothing more.
        fin: bool,
        /// The receiver may send nothing.
        unidirectional: bool,
        /// The stream's headers.
        headers: Headers,
    },
    /// The answer to a SYN_STREAM.
    SynReply {
        /// The stream.
        id: u32,
        /// The answerer sends nothing more.
        fin: bool,
        /// The answer's headers.
        headers: Headers,
    },
    /// A stream ends abnormally.
    RstStream {
        /// The stream.
        id: u32,
        /// Why ([`status`]).
        status: u32,
    },
    /// Session settings.
    Settings {
        /// FLAG_SETTINGS_CLEAR_SETTINGS.
        clear: bool,
        /// The settings.
        entries: Vec<Setting>,
    },
    /// A liveness check: answered with the same id when the peer sent it.
    Ping {
        /// Odd from the client, even from the server.
        id: u32,
    },
    /// The sender opens no more streams.
    GoAway {
        /// The last stream the sender accepted.
        last_good: u32,
        /// 0 OK, 1 protocol error, 2 internal error.
        status: u32,
    },
    /// More headers for a stream.
    Headers {
        /// The stream.
        id: u32,
        /// The sender sends nothing more.
        fin: bool,
        /// The headers.
        headers: Headers,
    },
    /// Reopens the sender's window by `delta` bytes.
    WindowUpdate {
        /// The stream; 0 for the session's window.
        id: u32,
        /// Bytes (31 bits).
        delta: u32,
    },
    /// Stream data.
    Data {
        /// The stream.
        id: u32,
        /// The sender sends nothing more on the stream.
        fin: bool,
        /// The bytes.
        data: Bytes,
    },
    /// A control frame of a type this session does not know (skipped, as the spec asks).
    Unknown {
        /// Its type.
        kind: u16,
    },
}

/// The header names and values that open the SPDY/3 compression dictionary (SPDY/3
/// section 2.6.10.1), each stored after its length as a big-endian u32.
const DICTIONARY_WORDS: &[&str] = &[
    "options",
    "head",
    "post",
    "put",
    "delete",
    "trace",
    "accept",
    "accept-charset",
    "accept-encoding",
    "accept-language",
    "accept-ranges",
    "age",
    "allow",
    "authorization",
    "cache-control",
    "connection",
    "content-base",
    "content-encoding",
    "content-language",
    "content-length",
    "content-location",
    "content-md5",
    "content-range",
    "content-type",
    "date",
    "etag",
    "expect",
    "expires",
    "from",
    "host",
    "if-match",
    "if-modified-since",
    "if-none-match",
    "if-range",
    "if-unmodified-since",
    "last-modified",
    "location",
    "max-forwards",
    "pragma",
    "proxy-authenticate",
    "proxy-authorization",
    "range",
    "referer",
    "retry-after",
    "server",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "user-agent",
    "vary",
    "via",
    "warning",
    "www-authenticate",
    "method",
    "get",
    "status",
    "200 OK",
    "version",
    "HTTP/1.1",
    "url",
    "public",
    "set-cookie",
    "keep-alive",
    "origin",
];

/// The text that closes the SPDY/3 dictionary, stored as is.
const DICTIONARY_TAIL: &str = concat!(
    "100101201202205206300302303304305306307402405406407408409410411412413414415416417",
    "502504505",
    "203 Non-Authoritative Information",
    "204 No Content",
    "301 Moved Permanently",
    "400 Bad Request",
    "401 Unauthorized",
    "403 Forbidden",
    "404 Not Found",
    "500 Internal Server Error",
    "501 Not Implemented",
    "503 Service Unavailable",
    "Jan Feb Mar Apr May Jun Jul Aug Sept Oct Nov Dec 00:00:00 ",
    "Mon, Tue, Wed, Thu, Fri, Sat, Sun, GMT",
    "chunked,text/html,image/png,image/jpg,image/gif,application/xml,",
    "application/xhtml+xml,text/plain,text/javascript,publicprivatemax-age=",
    "gzip,deflate,sdch",
    "charset=utf-8charset=iso-8859-1,utf-,*,enq=0.",
);

/// The SPDY/3 header compression dictionary (1423 bytes).
pub fn dictionary() -> Vec<u8> {
    let mut d = Vec::with_capacity(1423);
    for word in DICTIONARY_WORDS {
        d.extend_from_slice(&(word.len() as u32).to_be_bytes());
        d.extend_from_slice(word.as_bytes());
    }
    d.extend_from_slice(DICTIONARY_TAIL.as_bytes());
    d
}

/// The compressing side of one direction's header blocks.
pub struct Deflater {
    z: Compress,
}

impl Deflater {
    /// A fresh context, preset with the dictionary.
    pub fn new() -> Result<Deflater> {
        let mut z = Compress::new(Compression::default(), true);
        z.set_dictionary(&dictionary())
            .map_err(|e| Error::Compression(e.to_string()))?;
        Ok(Deflater { z })
    }

    /// Compresses one header block, flushed so the peer can read all of it now.
    pub fn compress(&mut self, block: &[u8]) -> Result<Vec<u8>> {
        let mut out = Vec::with_capacity(block.len() / 2 + 64);
        let mut pos = 0;
        loop {
            out.reserve(block.len() - pos + 64);
            let before = self.z.total_in();
            self.z
                .compress_vec(&block[pos..], &mut out, FlushCompress::Sync)
                .map_err(|e| Error::Compression(e.to_string()))?;
            pos += (self.z.total_in() - before) as usize;
            // Room left over means the flush is complete.
            if pos == block.len() && out.len() < out.capacity() {
                return Ok(out);
            }
        }
    }
}

/// The decompressing side of one direction's header blocks.
pub struct Inflater {
    z: Decompress,
}

impl Default for Inflater {
    fn default() -> Self {
        Inflater {
            z: Decompress::new(true),
        }
    }
}

impl Inflater {
    /// Decompresses one header block (the whole of it: the sender flushed it).
    pub fn decompress(&mut self, input: &[u8]) -> Result<Vec<u8>> {
        let mut out = Vec::with_capacity(input.len() * 4 + 64);
        let mut pos = 0;
        loop {
            if out.len() == out.capacity() {
                if out.len() >= MAX_HEADER_BLOCK {
                    return Err(Error::Protocol(format!(
                        "a header block is over {MAX_HEADER_BLOCK} bytes"
                    )));
                }
                out.reserve(out.len().max(256));
            }
            let (before_in, before_out) = (self.z.total_in(), self.z.total_out());
            let needed_dictionary =
                match self
                    .z
                    .decompress_vec(&input[pos..], &mut out, FlushDecompress::Sync)
                {
                    Ok(_) => false,
                    Err(e) if e.needs_dictionary().is_some() => {
                        // The first block asks for the dictionary (the stream's header has
                        // FDICT); a wrong one is refused here.
                        self.z
                            .set_dictionary(&dictionary())
                            .map_err(|e| Error::Compression(e.to_string()))?;
                        true
                    }
                    Err(e) => return Err(Error::Compression(e.to_string())),
                };
            pos += (self.z.total_in() - before_in) as usize;
            if pos == input.len() && out.len() < out.capacity() {
                return Ok(out);
            }
            let progressed = self.z.total_in() != before_in || self.z.total_out() != before_out;
            if !progressed && !needed_dictionary && out.len() < out.capacity() {
                return Err(Error::Compression("a header block is cut short".into()));
            }
        }
    }
}

/// An uncompressed header block: a count, then length-prefixed names and values, a
/// name's several values joined with NUL.
pub fn header_block(headers: &[(String, String)]) -> Vec<u8> {
    let mut names: Vec<(String, Vec<&str>)> = Vec::new();
    for (name, value) in headers {
        let name = name.to_ascii_lowercase();
        match names.iter_mut().find(|(n, _)| *n == name) {
            Some((_, values)) => values.push(value),
            None => names.push((name, vec![value])),
        }
    }
    let mut out = Vec::new();
    out.extend_from_slice(&(names.len() as u32).to_be_bytes());
    for (name, values) in names {
        let value = values.join("\0");
        out.extend_from_slice(&(name.len() as u32).to_be_bytes());
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(&(value.len() as u32).to_be_bytes());
        out.extend_from_slice(value.as_bytes());
    }
    out
}

fn parse_header_block(block: &[u8]) -> Result<Headers> {
    let mut rest = block;
    let mut take = |n: usize| -> Result<&[u8]> {
        if rest.len() < n {
            return Err(Error::Protocol("a header block is cut short".into()));
        }
        let (head, tail) = rest.split_at(n);
        rest = tail;
        Ok(head)
    };
    let count = u32_at(take(4)?);
    let mut headers = Vec::new();
    for _ in 0..count {
        let len = u32_at(take(4)?) as usize;
        let name = String::from_utf8_lossy(take(len)?).to_ascii_lowercase();
        let len = u32_at(take(4)?) as usize;
        let value = String::from_utf8_lossy(take(len)?).into_owned();
        for v in value.split('\0') {
            headers.push((name.clone(), v.to_string()));
        }
    }
    Ok(headers)
}

fn u32_at(b: &[u8]) -> u32 {
    u32::from_be_bytes([b[0], b[1], b[2], b[3]])
}

fn id_at(b: &[u8]) -> u32 {
    u32_at(b) & 0x7fff_ffff
}

fn need(payload: &[u8], n: usize, what: &str) -> Result<()> {
    if payload.len() < n {
        return Err(Error::Protocol(format!(
            "a {what} frame of {} bytes is too short",
            payload.len()
        )));
    }
    Ok(())
}

/// Decodes one frame from its 8-byte header and its payload; header blocks go through
/// `inflater`.
pub fn decode(head: [u8; 8], payload: Bytes, inflater: &mut Inflater) -> Result<Frame> {
    let first = u32_at(&head[..4]);
    let flags = head[4];
    let fin = flags & FLAG_FIN != 0;
    if first & 0x8000_0000 == 0 {
        let id = first & 0x7fff_ffff;
        if id == 0 {
            return Err(Error::Protocol("a data frame for stream 0".into()));
        }
        return Ok(Frame::Data {
            id,
            fin,
            data: payload,
        });
    }
    let version = ((first >> 16) & 0x7fff) as u16;
    let kind = (first & 0xffff) as u16;
    if version != VERSION {
        return Err(Error::Protocol(format!(
            "SPDY version {version} is not spoken (only {VERSION})"
        )));
    }
    let p = &payload[..];
    Ok(match kind {
        SYN_STREAM => {
            need(p, 10, "SYN_STREAM")?;
            Frame::SynStream {
                id: id_at(&p[0..4]),
                associated: id_at(&p[4..8]),
                priority: p[8] >> 5,
                fin,
                unidirectional: flags & FLAG_UNIDIRECTIONAL != 0,
                headers: parse_header_block(&inflater.decompress(&p[10..])?)?,
            }
        }
        SYN_REPLY => {
            need(p, 4, "SYN_REPLY")?;
            Frame::SynReply {
                id: id_at(&p[0..4]),
                fin,
                headers: parse_header_block(&inflater.decompress(&p[4..])?)?,
            }
        }
        HEADERS => {
            need(p, 4, "HEADERS")?;
            Frame::Headers {
                id: id_at(&p[0..4]),
                fin,
                headers: parse_header_block(&inflater.decompress(&p[4..])?)?,
            }
        }
        RST_STREAM => {
            need(p, 8, "RST_STREAM")?;
            Frame::RstStream {
                id: id_at(&p[0..4]),
                status: u32_at(&p[4..8]),
            }
        }
        SETTINGS => {
            need(p, 4, "SETTINGS")?;
            let count = u32_at(&p[0..4]) as usize;
            need(p, 4 + count.saturating_mul(8), "SETTINGS")?;
            let entries = p[4..4 + count * 8]
                .chunks_exact(8)
                .map(|e| Setting {
                    flags: e[0],
                    id: u32_at(&e[0..4]) & 0x00ff_ffff,
                    value: u32_at(&e[4..8]),
                })
                .collect();
            Frame::Settings {
                clear: fin,
                entries,
            }
        }
        PING => {
            need(p, 4, "PING")?;
            Frame::Ping { id: u32_at(p) }
        }
        GOAWAY => {
            need(p, 4, "GOAWAY")?;
            Frame::GoAway {
                last_good: id_at(&p[0..4]),
                status: if p.len() >= 8 { u32_at(&p[4..8]) } else { 0 },
            }
        }
        WINDOW_UPDATE => {
            need(p, 8, "WINDOW_UPDATE")?;
            Frame::WindowUpdate {
                id: id_at(&p[0..4]),
                delta: id_at(&p[4..8]),
            }
        }
        kind => Frame::Unknown { kind },
    })
}

fn control(out: &mut Vec<u8>, kind: u16, flags: u8, payload: &[u8]) -> Result<()> {
    if payload.len() > MAX_LENGTH {
        return Err(Error::TooLong(payload.len()));
    }
    out.extend_from_slice(&(0x8000 | VERSION).to_be_bytes());
    out.extend_from_slice(&kind.to_be_bytes());
    out.extend_from_slice(&((u32::from(flags) << 24) | payload.len() as u32).to_be_bytes());
    out.extend_from_slice(payload);
    Ok(())
}

fn with_headers(id: u32, headers: &Headers, deflater: &mut Deflater) -> Result<Vec<u8>> {
    let block = deflater.compress(&header_block(headers))?;
    let mut p = Vec::with_capacity(4 + block.len());
    p.extend_from_slice(&(id & 0x7fff_ffff).to_be_bytes());
    p.extend_from_slice(&block);
    Ok(p)
}

/// Appends `frame` to `out`; header blocks go through `deflater`.
pub fn encode(frame: &Frame, deflater: &mut Deflater, out: &mut Vec<u8>) -> Result<()> {
    let fin_flag = |fin: bool| if fin { FLAG_FIN } else { 0 };
    match frame {
        Frame::Data { id, fin, data } => {
            if data.len() > MAX_LENGTH {
                return Err(Error::TooLong(data.len()));
            }
            out.extend_from_slice(&(id & 0x7fff_ffff).to_be_bytes());
            let flags_len = (u32::from(fin_flag(*fin)) << 24) | data.len() as u32;
            out.extend_from_slice(&flags_len.to_be_bytes());
            out.extend_from_slice(data);
            Ok(())
        }
        Frame::SynStream {
            id,
            associated,
            priority,
            fin,
            unidirectional,
            headers,
        } => {
            let block = deflater.compress(&header_block(headers))?;
            let mut p = Vec::with_capacity(10 + block.len());
            p.extend_from_slice(&(id & 0x7fff_ffff).to_be_bytes());
            p.extend_from_slice(&(associated & 0x7fff_ffff).to_be_bytes());
            p.push((priority & 0x07) << 5);
            p.push(0);
            p.extend_from_slice(&block);
            let flags = fin_flag(*fin)
                | if *unidirectional {
                    FLAG_UNIDIRECTIONAL
                } else {
                    0
                };
            control(out, SYN_STREAM, flags, &p)
        }
        Frame::SynReply { id, fin, headers } => control(
            out,
            SYN_REPLY,
            fin_flag(*fin),
            &with_headers(*id, headers, deflater)?,
        ),
        Frame::Headers { id, fin, headers } => control(
            out,
            HEADERS,
            fin_flag(*fin),
            &with_headers(*id, headers, deflater)?,
        ),
        Frame::RstStream { id, status } => {
            let mut p = (id & 0x7fff_ffff).to_be_bytes().to_vec();
            p.extend_from_slice(&status.to_be_bytes());
            control(out, RST_STREAM, 0, &p)
        }
        Frame::Settings { clear, entries } => {
            let mut p = (entries.len() as u32).to_be_bytes().to_vec();
            for e in entries {
                p.extend_from_slice(
                    &((u32::from(e.flags) << 24) | (e.id & 0x00ff_ffff)).to_be_bytes(),
                );
                p.extend_from_slice(&e.value.to_be_bytes());
            }
            control(out, SETTINGS, fin_flag(*clear), &p)
        }
        Frame::Ping { id } => control(out, PING, 0, &id.to_be_bytes()),
        Frame::GoAway { last_good, status } => {
            let mut p = (last_good & 0x7fff_ffff).to_be_bytes().to_vec();
            p.extend_from_slice(&status.to_be_bytes());
            control(out, GOAWAY, 0, &p)
        }
        Frame::WindowUpdate { id, delta } => {
            let mut p = (id & 0x7fff_ffff).to_be_bytes().to_vec();
            p.extend_from_slice(&(delta & 0x7fff_ffff).to_be_bytes());
            control(out, WINDOW_UPDATE, 0, &p)
        }
        Frame::Unknown { kind } => control(out, *kind, 0, &[]),
    }
}

/// Reads one frame; `None` when the connection ends between frames.
pub async fn read_frame<R: AsyncRead + Unpin>(
    r: &mut R,
    inflater: &mut Inflater,
) -> Result<Option<Frame>> {
    let mut head = [0u8; 8];
    let n = r.read(&mut head).await.map_err(Error::Io)?;
    if n == 0 {
        return Ok(None);
    }
    r.read_exact(&mut head[n..]).await.map_err(Error::Io)?;
    let len = u32_at(&[0, head[5], head[6], head[7]]) as usize;
    let mut payload = vec![0u8; len];
    r.read_exact(&mut payload).await.map_err(Error::Io)?;
    decode(head, Bytes::from(payload), inflater).map(Some)
}

/// What the reader, the writer and the streams share.
struct Shared {
    state: Mutex<State>,
    /// Wakes senders waiting for a window.
    window_opened: Notify,
    /// Cancelled when the session ends.
    closed: CancellationToken,
    /// Frames for the writer.
    out: mpsc::Sender<Frame>,
}

struct State {
    /// The peer has shown it does flow control: send windows are held to.
    flow_control: bool,
    /// The send window new streams start with.
    initial_window: i64,
    /// The session's send window.
    session_window: i64,
    /// Bytes consumed and not yet credited back to the peer's session window.
    session_unacked: u32,
    /// The latest stream the peer opened.
    last_peer_id: u32,
    streams: HashMap<u32, StreamState>,
}

struct StreamState {
    send_window: i64,
    /// Where the peer's data goes; `None` once the peer finished.
    inbound: Option<mpsc::UnboundedSender<Bytes>>,
    /// Room for the peer's data that the reader has not taken yet.
    room: Arc<Semaphore>,
    /// Cancelled when the stream is reset (or the session ends).
    reset: CancellationToken,
    /// This side sent FIN.
    sent_fin: bool,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    async fn queue(&self, frame: Frame) -> Result<()> {
        self.out.send(frame).await.map_err(|_| Error::Closed)
    }

    /// Credits `n` consumed (or dropped) bytes to the peer's session window.
    async fn credit_session(&self, n: usize) -> Result<()> {
        let delta = {
            let mut st = self.lock();
            st.session_unacked = st.session_unacked.saturating_add(n as u32);
            if st.session_unacked >= INITIAL_WINDOW / 2 {
                std::mem::take(&mut st.session_unacked)
            } else {
                0
            }
        };
        if delta > 0 {
            self.queue(Frame::WindowUpdate { id: 0, delta }).await?;
        }
        Ok(())
    }

    /// The peer sends nothing more on `id`.
    fn peer_finished(&self, id: u32) {
        let mut st = self.lock();
        if let Some(s) = st.streams.get_mut(&id) {
            s.inbound = None;
            if s.sent_fin {
                st.streams.remove(&id);
            }
        }
    }

    fn gone(&self, id: u32) -> Error {
        if self.closed.is_cancelled() {
            Error::Closed
        } else {
            Error::Reset(id)
        }
    }
}

/// A SPDY session over a connection: streams the peer opens come out of
/// [`Session::accept`].
pub struct Session {
    incoming: mpsc::Receiver<Stream>,
    shared: Arc<Shared>,
}

impl Session {
    /// Starts serving `io` (the reader and writer run as tasks of their own).
    pub fn start<T>(io: T) -> Session
    where
        T: AsyncRead + AsyncWrite + Send + 'static,
    {
        let (r, w) = tokio::io::split(io);
        let (out, out_rx) = mpsc::channel(QUEUE);
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                flow_control: false,
                initial_window: i64::from(INITIAL_WINDOW),
                session_window: i64::from(INITIAL_WINDOW),
                session_unacked: 0,
                last_peer_id: 0,
                streams: HashMap::new(),
            }),
            window_opened: Notify::new(),
            closed: CancellationToken::new(),
            out,
        });
        let (incoming_tx, incoming) = mpsc::channel(16);
        let closed = shared.closed.clone();
        tokio::spawn(async move {
            if let Err(e) = write_loop(w, out_rx, &closed).await {
                tracing::debug!(error = %e, "SPDY session's writing ended");
            }
            closed.cancel();
        });
        let reader = shared.clone();
        tokio::spawn(async move {
            if let Err(e) = read_loop(r, &reader, incoming_tx).await {
                tracing::debug!(error = %e, "SPDY session's reading ended");
                if matches!(e, Error::Protocol(_) | Error::Compression(_)) {
                    let last_good = reader.lock().last_peer_id;
                    let _ = reader.out.try_send(Frame::GoAway {
                        last_good,
                        status: goaway::PROTOCOL_ERROR,
                    });
                }
            }
            reader.closed.cancel();
            // Wake senders waiting for a window: they see the session closed.
            reader.window_opened.notify_waiters();
        });
        Session { incoming, shared }
    }

    /// The next stream the peer opens; `None` once the session is over.
    pub async fn accept(&mut self) -> Option<Stream> {
        self.incoming.recv().await
    }

    /// Ends the session: the connection is closed once queued frames are written.
    pub fn close(&self) {
        self.shared.closed.cancel();
        self.shared.window_opened.notify_waiters();
    }
}

async fn write_loop<W: AsyncWrite + Unpin>(
    w: W,
    mut frames: mpsc::Receiver<Frame>,
    closed: &CancellationToken,
) -> Result<()> {
    let mut w = BufWriter::with_capacity(64 * 1024, w);
    let mut deflater = Deflater::new()?;
    let mut buf = Vec::new();
    loop {
        // Frames queued before the end are still written.
        let frame = tokio::select! {
            biased;
            f = frames.recv() => f,
            _ = closed.cancelled() => None,
        };
        let Some(frame) = frame else { break };
        buf.clear();
        encode(&frame, &mut deflater, &mut buf)?;
        w.write_all(&buf).await.map_err(Error::Io)?;
        if frames.is_empty() {
            w.flush().await.map_err(Error::Io)?;
        }
    }
    w.flush().await.map_err(Error::Io)?;
    w.shutdown().await.map_err(Error::Io)
}

async fn read_loop<R: AsyncRead + Unpin>(
    r: R,
    shared: &Arc<Shared>,
    incoming: mpsc::Sender<Stream>,
) -> Result<()> {
    let mut r = BufReader::with_capacity(64 * 1024, r);
    let mut inflater = Inflater::default();
    loop {
        let frame = tokio::select! {
            f = read_frame(&mut r, &mut inflater) => f?,
            _ = shared.closed.cancelled() => return Ok(()),
        };
        let Some(frame) = frame else { return Ok(()) };
        match frame {
            Frame::SynStream {
                id,
                fin,
                unidirectional,
                headers,
                ..
            } => on_syn_stream(shared, &incoming, id, fin, unidirectional, headers).await?,
            Frame::Data { id, fin, data } => on_data(shared, id, fin, data).await?,
            Frame::RstStream { id, .. } => {
                if let Some(s) = shared.lock().streams.remove(&id) {
                    s.reset.cancel();
                }
                shared.window_opened.notify_waiters();
            }
            Frame::Settings { entries, .. } => {
                let mut st = shared.lock();
                for e in entries {
                    if e.id == SETTINGS_INITIAL_WINDOW_SIZE {
                        let delta = i64::from(e.value) - st.initial_window;
                        st.initial_window = i64::from(e.value);
                        for s in st.streams.values_mut() {
                            s.send_window += delta;
                        }
                        st.flow_control = true;
                    }
                }
                drop(st);
                shared.window_opened.notify_waiters();
            }
            // Odd ids are the client's own pings, to be answered; even ones would answer
            // ours, and this side sends none.
            Frame::Ping { id } if id % 2 == 1 => shared.queue(Frame::Ping { id }).await?,
            Frame::WindowUpdate { id, delta } => {
                let mut st = shared.lock();
                st.flow_control = true;
                if id == 0 {
                    st.session_window += i64::from(delta);
                } else if let Some(s) = st.streams.get_mut(&id) {
                    s.send_window += i64::from(delta);
                }
                drop(st);
                shared.window_opened.notify_waiters();
            }
            Frame::Headers { id, fin: true, .. } => shared.peer_finished(id),
            // GOAWAY: the peer opens no more streams, and those open carry on. A SYN_REPLY
            // answers nothing this side opened. Their header blocks were read all the same.
            Frame::GoAway { .. }
            | Frame::SynReply { .. }
            | Frame::Headers { .. }
            | Frame::Ping { .. }
            | Frame::Unknown { .. } => {}
        }
    }
}

async fn on_syn_stream(
    shared: &Arc<Shared>,
    incoming: &mpsc::Sender<Stream>,
    id: u32,
    fin: bool,
    unidirectional: bool,
    headers: Headers,
) -> Result<()> {
    if id == 0 {
        return Err(Error::Protocol("SYN_STREAM for stream 0".into()));
    }
    let refusal = {
        let mut st = shared.lock();
        if id.is_multiple_of(2) || id <= st.last_peer_id {
            Some(status::PROTOCOL_ERROR)
        } else if st.streams.len() >= MAX_STREAMS {
            st.last_peer_id = id;
            Some(status::REFUSED_STREAM)
        } else {
            None
        }
    };
    if let Some(status) = refusal {
        return shared.queue(Frame::RstStream { id, status }).await;
    }
    let (tx, rx) = mpsc::unbounded_channel();
    let room = Arc::new(Semaphore::new(BUFFERED));
    let reset = shared.closed.child_token();
    {
        let mut st = shared.lock();
        st.last_peer_id = id;
        let send_window = st.initial_window;
        st.streams.insert(
            id,
            StreamState {
                send_window,
                inbound: (!fin).then_some(tx),
                room: room.clone(),
                reset: reset.clone(),
                sent_fin: unidirectional,
            },
        );
    }
    let stream = Stream {
        id,
        headers,
        reader: StreamReader {
            id,
            rx,
            room,
            reset: reset.clone(),
            shared: shared.clone(),
            unacked: 0,
        },
        writer: StreamWriter {
            id,
            reset,
            shared: shared.clone(),
        },
    };
    if incoming.send(stream).await.is_err() {
        // Nobody accepts streams any more.
        shared.lock().streams.remove(&id);
        shared
            .queue(Frame::RstStream {
                id,
                status: status::REFUSED_STREAM,
            })
            .await?;
    }
    Ok(())
}

async fn on_data(shared: &Arc<Shared>, id: u32, fin: bool, data: Bytes) -> Result<()> {
    let n = data.len();
    let target = {
        let st = shared.lock();
        st.streams
            .get(&id)
            .and_then(|s| Some((s.inbound.clone()?, s.room.clone(), s.reset.clone())))
    };
    // Data for a stream that is reset, finished by the peer, or unknown is dropped (and
    // credited back at once).
    let Some((tx, room, reset)) = target else {
        return shared.credit_session(n).await;
    };
    if n > 0 {
        let permits = n.min(BUFFERED) as u32;
        let delivered = tokio::select! {
            permit = room.acquire_many(permits) => match permit {
                Ok(p) => {
                    p.forget();
                    tx.send(data).is_ok()
                }
                Err(_) => false,
            },
            _ = tx.closed() => false,
            _ = reset.cancelled() => false,
        };
        if !delivered {
            shared.credit_session(n).await?;
        }
    }
    if fin {
        shared.peer_finished(id);
    }
    Ok(())
}

/// A stream the peer opened.
pub struct Stream {
    id: u32,
    headers: Headers,
    reader: StreamReader,
    writer: StreamWriter,
}

impl std::fmt::Debug for Stream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Stream")
            .field("id", &self.id)
            .field("headers", &self.headers)
            .finish()
    }
}

impl Stream {
    /// The stream's id.
    pub fn id(&self) -> u32 {
        self.id
    }

    /// The headers it was opened with.
    pub fn headers(&self) -> &[(String, String)] {
        &self.headers
    }

    /// The first value of header `name` (any case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// Accepts the stream (SYN_REPLY, no headers), as every stream must be before data.
    pub async fn reply(&self) -> Result<()> {
        self.writer
            .queue(Frame::SynReply {
                id: self.id,
                fin: false,
                headers: Vec::new(),
            })
            .await
    }

    /// Resets the stream (RST_STREAM with `status`).
    pub async fn reset(&self, status: u32) -> Result<()> {
        self.writer.reset(status).await
    }

    /// Another handle on its writing half.
    pub fn writer(&self) -> StreamWriter {
        self.writer.clone()
    }

    /// Its reading and writing halves.
    pub fn split(self) -> (StreamReader, StreamWriter) {
        (self.reader, self.writer)
    }
}

/// The reading half of a stream.
pub struct StreamReader {
    id: u32,
    rx: mpsc::UnboundedReceiver<Bytes>,
    room: Arc<Semaphore>,
    reset: CancellationToken,
    shared: Arc<Shared>,
    /// Bytes read and not yet credited back to the peer's stream window.
    unacked: u32,
}

impl StreamReader {
    /// The next bytes from the peer; `None` once it finished the stream (FIN).
    pub async fn recv(&mut self) -> Result<Option<Bytes>> {
        // A reset (or the session's end) drops what was not read yet.
        let data = tokio::select! {
            biased;
            _ = self.reset.cancelled() => return Err(self.shared.gone(self.id)),
            d = self.rx.recv() => d,
        };
        let Some(data) = data else {
            return Ok(None);
        };
        let n = data.len();
        self.room.add_permits(n.min(BUFFERED));
        self.unacked = self.unacked.saturating_add(n as u32);
        if self.unacked >= INITIAL_WINDOW / 2 {
            let delta = std::mem::take(&mut self.unacked);
            self.shared
                .queue(Frame::WindowUpdate { id: self.id, delta })
                .await?;
        }
        self.shared.credit_session(n).await?;
        Ok(Some(data))
    }
}

/// The writing half of a stream (cloning gives another handle on it).
#[derive(Clone)]
pub struct StreamWriter {
    id: u32,
    reset: CancellationToken,
    shared: Arc<Shared>,
}

impl StreamWriter {
    async fn queue(&self, frame: Frame) -> Result<()> {
        tokio::select! {
            sent = self.shared.queue(frame) => sent,
            _ = self.reset.cancelled() => Err(self.shared.gone(self.id)),
        }
    }

    /// Takes up to `want` bytes of send window, waiting for the window to open when the
    /// peer does flow control.
    async fn reserve(&self, want: usize) -> Result<usize> {
        loop {
            let opened = self.shared.window_opened.notified();
            tokio::pin!(opened);
            opened.as_mut().enable();
            {
                let mut st = self.shared.lock();
                if self.reset.is_cancelled() {
                    return Err(self.shared.gone(self.id));
                }
                let session_window = st.session_window;
                let flow_control = st.flow_control;
                let Some(s) = st.streams.get_mut(&self.id) else {
                    return Err(self.shared.gone(self.id));
                };
                if s.sent_fin {
                    return Err(Error::Finished(self.id));
                }
                let window = s.send_window.min(session_window);
                let n = if !flow_control {
                    want
                } else {
                    want.min(usize::try_from(window.max(0)).unwrap_or(0))
                };
                if n > 0 {
                    s.send_window -= n as i64;
                    st.session_window -= n as i64;
                    return Ok(n);
                }
            }
            tokio::select! {
                _ = &mut opened => {}
                _ = self.reset.cancelled() => return Err(self.shared.gone(self.id)),
            }
        }
    }

    /// Sends `data` (in frames of at most 32 KiB, as the send window allows).
    pub async fn send(&self, mut data: Bytes) -> Result<()> {
        while !data.is_empty() {
            let n = self.reserve(data.len().min(MAX_DATA_FRAME)).await?;
            let chunk = data.split_to(n);
            self.queue(Frame::Data {
                id: self.id,
                fin: false,
                data: chunk,
            })
            .await?;
        }
        Ok(())
    }

    /// Finishes this side of the stream (an empty DATA frame with FIN); finishing again,
    /// or a stream that was reset, is a no-op.
    pub async fn finish(&self) -> Result<()> {
        {
            let mut st = self.shared.lock();
            let Some(s) = st.streams.get_mut(&self.id) else {
                return Ok(());
            };
            if s.sent_fin {
                return Ok(());
            }
            s.sent_fin = true;
            if s.inbound.is_none() {
                st.streams.remove(&self.id);
            }
        }
        self.shared
            .queue(Frame::Data {
                id: self.id,
                fin: true,
                data: Bytes::new(),
            })
            .await
    }

    /// Resets the stream (RST_STREAM with `status`); a stream already gone is left be.
    pub async fn reset(&self, status: u32) -> Result<()> {
        let Some(s) = self.shared.lock().streams.remove(&self.id) else {
            return Ok(());
        };
        s.reset.cancel();
        self.shared
            .queue(Frame::RstStream {
                id: self.id,
                status,
            })
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::DuplexStream;

    /// The test's end of the connection: a SPDY client built from the frame functions,
    /// with its own compression contexts.
    struct Client {
        io: DuplexStream,
        deflater: Deflater,
        inflater: Inflater,
    }

    impl Client {
        fn new(io: DuplexStream) -> Client {
            Client {
                io,
                deflater: Deflater::new().unwrap(),
                inflater: Inflater::default(),
            }
        }

        async fn send(&mut self, frame: Frame) {
            let mut buf = Vec::new();
            encode(&frame, &mut self.deflater, &mut buf).unwrap();
            self.io.write_all(&buf).await.unwrap();
        }

        async fn open(&mut self, id: u32, headers: &[(&str, &str)]) {
            let headers = headers
                .iter()
                .map(|(n, v)| (n.to_string(), v.to_string()))
                .collect();
            self.send(Frame::SynStream {
                id,
                associated: 0,
                priority: 0,
                fin: false,
                unidirectional: false,
                headers,
            })
            .await;
        }

        async fn next(&mut self) -> Frame {
            tokio::time::timeout(
                std::time::Duration::from_secs(5),
                read_frame(&mut self.io, &mut self.inflater),
            )
            .await
            .expect("a frame within 5 s")
            .unwrap()
            .expect("a frame, not the end")
        }

        /// The next frame that is not a WINDOW_UPDATE.
        async fn next_skipping_updates(&mut self) -> Frame {
            loop {
                match self.next().await {
                    Frame::WindowUpdate { .. } => {}
                    f => return f,
                }
            }
        }

        /// Data of stream `id` until its FIN, skipping other frames.
        async fn read_to_fin(&mut self, id: u32) -> Vec<u8> {
            let mut got = Vec::new();
            loop {
                if let Frame::Data { id: i, fin, data } = self.next().await {
                    assert_eq!(i, id);
                    got.extend_from_slice(&data);
                    if fin {
                        return got;
                    }
                }
            }
        }
    }

    fn pair() -> (Client, Session) {
        let (a, b) = tokio::io::duplex(1 << 20);
        (Client::new(a), Session::start(b))
    }

    #[test]
    fn the_dictionary_is_spdy3s() {
        let d = dictionary();
        assert_eq!(d.len(), 1423);
        assert_eq!(&d[..11], b"\0\0\0\x07options");
        assert!(d.ends_with(b",*,enq=0."));
        let at = d.windows(6).position(|w| w == b"origin").unwrap();
        assert!(d[at + 6..].starts_with(b"100101201"));
    }

    #[test]
    fn header_blocks_share_one_context_per_direction() {
        let mut out = Deflater::new().unwrap();
        let mut inn = Inflater::default();
        let first: Headers = vec![
            ("streamtype".into(), "error".into()),
            ("port".into(), "8080".into()),
            ("requestid".into(), "0".into()),
        ];
        let a = out.compress(&header_block(&first)).unwrap();
        // zlib header: deflate, and FDICT with the dictionary's Adler-32 after it.
        assert_eq!(a[0] & 0x0f, 8);
        assert_ne!(a[1] & 0x20, 0, "FDICT is set");
        assert_eq!(
            a[2..6],
            [0xe3, 0xc6, 0xa7, 0xc2],
            "the SPDY/3 dictionary's id"
        );
        assert_eq!(((u16::from(a[0]) << 8) | u16::from(a[1])) % 31, 0);
        // A sync flush ends each block.
        assert!(a.ends_with(&[0, 0, 0xff, 0xff]));
        let second: Headers = vec![
            ("streamtype".into(), "data".into()),
            ("port".into(), "8080".into()),
            ("requestid".into(), "0".into()),
        ];
        let b = out.compress(&header_block(&second)).unwrap();
        assert!(
            b.len() < a.len(),
            "the second block reuses the first's window"
        );
        assert_eq!(
            parse_header_block(&inn.decompress(&a).unwrap()).unwrap(),
            first
        );
        assert_eq!(
            parse_header_block(&inn.decompress(&b).unwrap()).unwrap(),
            second
        );
        // A fresh context cannot read the second block alone.
        assert!(Inflater::default()
            .decompress(&b)
            .and_then(|b| parse_header_block(&b))
            .map_or(true, |h| h != second));
    }

    #[test]
    fn a_header_block_from_a_separate_zlib_is_read() {
        // Made with Python's zlib (C zlib), level 9, preset with the SPDY/3 dictionary
        // (Adler-32 e3c6a7c2, the well-known `78 f9 e3 c6 a7 c2` start of SPDY/3 header
        // blocks): streamtype=data, port=80, x="a\0b" in that order, sync-flushed.
        let block = header_block(&[
            ("streamType".into(), "data".into()),
            ("port".into(), "80".into()),
            ("x".into(), "a".into()),
            ("x".into(), "b".into()),
        ]);
        let mut expected = 3u32.to_be_bytes().to_vec();
        for (n, v) in [("streamtype", "data"), ("port", "80"), ("x", "a\0b")] {
            expected.extend_from_slice(&(n.len() as u32).to_be_bytes());
            expected.extend_from_slice(n.as_bytes());
            expected.extend_from_slice(&(v.len() as u32).to_be_bytes());
            expected.extend_from_slice(v.as_bytes());
        }
        assert_eq!(
            block, expected,
            "names lowercased, repeated ones joined with NUL"
        );
        let mut inn = Inflater::default();
        let got = parse_header_block(&inn.decompress(C_ZLIB_BLOCK).unwrap()).unwrap();
        assert_eq!(
            got,
            [
                ("streamtype", "data"),
                ("port", "80"),
                ("x", "a"),
                ("x", "b")
            ]
            .map(|(n, v)| (n.to_string(), v.to_string()))
        );
    }

    /// See `a_header_block_from_a_separate_zlib_is_read`.
    const C_ZLIB_BLOCK: &[u8] = &[
        0x78, 0xf9, 0xe3, 0xc6, 0xa7, 0xc2, 0x02, 0x25, 0x3a, 0x70, 0x3a, 0x2b, 0x29, 0x4a, 0x4d,
        0xcc, 0x45, 0x2a, 0x4a, 0x12, 0x21, 0xa5, 0x72, 0x11, 0x28, 0x05, 0x33, 0x59, 0x18, 0x00,
        0x49, 0xc6, 0x0a, 0x70, 0x99, 0xc9, 0x90, 0x04, 0x00, 0x00, 0x00, 0xff, 0xff,
    ];

    #[tokio::test]
    async fn frames_round_trip() {
        let mut d = Deflater::new().unwrap();
        let mut i = Inflater::default();
        let frames = [
            Frame::SynStream {
                id: 5,
                associated: 0,
                priority: 3,
                fin: true,
                unidirectional: false,
                headers: vec![("port".into(), "80".into())],
            },
            Frame::SynReply {
                id: 5,
                fin: false,
                headers: vec![],
            },
            Frame::RstStream { id: 5, status: 5 },
            Frame::Settings {
                clear: false,
                entries: vec![Setting {
                    flags: 1,
                    id: 7,
                    value: 1000,
                }],
            },
            Frame::Ping { id: 7 },
            Frame::GoAway {
                last_good: 5,
                status: 0,
            },
            Frame::Headers {
                id: 5,
                fin: true,
                headers: vec![("a".into(), "b".into())],
            },
            Frame::WindowUpdate { id: 0, delta: 9 },
            Frame::Data {
                id: 5,
                fin: true,
                data: Bytes::from_static(b"hello"),
            },
        ];
        let mut wire = Vec::new();
        for f in &frames {
            encode(f, &mut d, &mut wire).unwrap();
        }
        let mut r = &wire[..];
        for f in &frames {
            assert_eq!(&read_frame(&mut r, &mut i).await.unwrap().unwrap(), f);
        }
        assert!(read_frame(&mut r, &mut i).await.unwrap().is_none());
        // An unknown control type is skipped, and another version refused.
        let mut r: &[u8] = &[0x80, 0x03, 0x00, 0x0a, 0, 0, 0, 2, 1, 2];
        assert_eq!(
            read_frame(&mut r, &mut i).await.unwrap(),
            Some(Frame::Unknown { kind: 10 })
        );
        let mut r: &[u8] = &[0x80, 0x02, 0x00, 0x06, 0, 0, 0, 4, 0, 0, 0, 1];
        assert!(matches!(
            read_frame(&mut r, &mut i).await,
            Err(Error::Protocol(_))
        ));
    }

    #[tokio::test]
    async fn streams_are_accepted_answered_and_carry_data_both_ways() {
        let (mut c, mut s) = pair();
        c.open(
            1,
            &[("streamType", "error"), ("port", "80"), ("requestID", "0")],
        )
        .await;
        let error = s.accept().await.unwrap();
        assert_eq!(error.id(), 1);
        assert_eq!(error.header("streamtype"), Some("error"));
        assert_eq!(error.header("requestID"), Some("0"));
        error.reply().await.unwrap();
        assert_eq!(
            c.next().await,
            Frame::SynReply {
                id: 1,
                fin: false,
                headers: vec![]
            }
        );
        // The client finishes the error stream at once, as kubectl does.
        c.send(Frame::Data {
            id: 1,
            fin: true,
            data: Bytes::new(),
        })
        .await;
        c.open(
            3,
            &[("streamType", "data"), ("port", "80"), ("requestID", "0")],
        )
        .await;
        let data = s.accept().await.unwrap();
        assert_eq!(data.header("streamtype"), Some("data"));
        data.reply().await.unwrap();
        assert!(matches!(c.next().await, Frame::SynReply { id: 3, .. }));

        let (mut rx, tx) = data.split();
        c.send(Frame::Data {
            id: 3,
            fin: false,
            data: Bytes::from_static(b"GET / HTTP/1.0\r\n\r\n"),
        })
        .await;
        c.send(Frame::Data {
            id: 3,
            fin: true,
            data: Bytes::new(),
        })
        .await;
        assert_eq!(
            rx.recv().await.unwrap().unwrap(),
            &b"GET / HTTP/1.0\r\n\r\n"[..]
        );
        assert!(rx.recv().await.unwrap().is_none(), "FIN ends the stream");

        tx.send(Bytes::from_static(b"HTTP/1.0 200 OK\r\n\r\nhi"))
            .await
            .unwrap();
        tx.finish().await.unwrap();
        tx.finish().await.unwrap();
        assert_eq!(c.read_to_fin(3).await, b"HTTP/1.0 200 OK\r\n\r\nhi");
        let (_, etx) = error.split();
        etx.send(Bytes::from_static(b"boom")).await.unwrap();
        etx.finish().await.unwrap();
        assert_eq!(c.read_to_fin(1).await, b"boom");
        // Both sides finished: the streams are gone.
        assert!(s.shared.lock().streams.is_empty());
    }

    #[tokio::test]
    async fn a_peer_without_flow_control_gets_more_than_a_window() {
        // spdystream never sends WINDOW_UPDATE: a megabyte must still go through.
        let (mut c, mut s) = pair();
        c.open(1, &[("port", "80")]).await;
        let stream = s.accept().await.unwrap();
        stream.reply().await.unwrap();
        let (_rx, tx) = stream.split();
        let body: Vec<u8> = (0..1_000_000u32).map(|i| (i % 251) as u8).collect();
        let sent = body.clone();
        let sender = tokio::spawn(async move {
            tx.send(Bytes::from(sent)).await.unwrap();
            tx.finish().await.unwrap();
        });
        assert!(matches!(c.next().await, Frame::SynReply { id: 1, .. }));
        let got = c.read_to_fin(1).await;
        assert_eq!(got.len(), body.len());
        assert!(got == body);
        sender.await.unwrap();
    }

    #[tokio::test]
    async fn a_flow_controlled_peer_holds_the_sender_to_its_window() {
        let (mut c, mut s) = pair();
        c.send(Frame::Settings {
            clear: false,
            entries: vec![Setting {
                flags: 0,
                id: SETTINGS_INITIAL_WINDOW_SIZE,
                value: 1000,
            }],
        })
        .await;
        c.open(1, &[("port", "80")]).await;
        let stream = s.accept().await.unwrap();
        stream.reply().await.unwrap();
        let (_rx, tx) = stream.split();
        let sender = tokio::spawn(async move {
            tx.send(Bytes::from(vec![7u8; 3000])).await.unwrap();
            tx.finish().await.unwrap();
        });
        assert!(matches!(c.next().await, Frame::SynReply { id: 1, .. }));
        let mut got = 0;
        while got < 1000 {
            match c.next().await {
                Frame::Data { data, fin, .. } => {
                    assert!(!fin);
                    got += data.len();
                }
                f => panic!("unexpected {f:?}"),
            }
        }
        assert_eq!(got, 1000, "no more than the window");
        let early = tokio::time::timeout(
            std::time::Duration::from_millis(200),
            read_frame(&mut c.io, &mut c.inflater),
        )
        .await;
        assert!(early.is_err(), "the sender waits for WINDOW_UPDATE");
        c.send(Frame::WindowUpdate { id: 1, delta: 5000 }).await;
        assert_eq!(c.read_to_fin(1).await.len(), 2000);
        sender.await.unwrap();
    }

    #[tokio::test]
    async fn reading_credits_the_peers_windows() {
        let (mut c, mut s) = pair();
        c.open(1, &[("port", "80")]).await;
        let stream = s.accept().await.unwrap();
        stream.reply().await.unwrap();
        assert!(matches!(c.next().await, Frame::SynReply { id: 1, .. }));
        let (mut rx, _tx) = stream.split();
        for _ in 0..2 {
            c.send(Frame::Data {
                id: 1,
                fin: false,
                data: Bytes::from(vec![0u8; 20_000]),
            })
            .await;
        }
        assert_eq!(rx.recv().await.unwrap().unwrap().len(), 20_000);
        assert_eq!(rx.recv().await.unwrap().unwrap().len(), 20_000);
        let mut updates = Vec::new();
        while updates.len() < 2 {
            if let Frame::WindowUpdate { id, delta } = c.next().await {
                updates.push((id, delta));
            }
        }
        updates.sort();
        assert_eq!(updates, [(0, 40_000), (1, 40_000)]);
    }

    #[tokio::test]
    async fn pings_rst_and_bad_streams() {
        let (mut c, mut s) = pair();
        c.send(Frame::Ping { id: 1 }).await;
        assert_eq!(c.next().await, Frame::Ping { id: 1 });
        // Even ids are the server's: refused.
        c.open(2, &[]).await;
        assert_eq!(
            c.next().await,
            Frame::RstStream {
                id: 2,
                status: status::PROTOCOL_ERROR
            }
        );
        c.open(5, &[("port", "80")]).await;
        let stream = s.accept().await.unwrap();
        stream.reply().await.unwrap();
        assert!(matches!(c.next().await, Frame::SynReply { id: 5, .. }));
        // Ids must grow.
        c.open(3, &[]).await;
        assert_eq!(
            c.next_skipping_updates().await,
            Frame::RstStream {
                id: 3,
                status: status::PROTOCOL_ERROR
            }
        );
        let (mut rx, tx) = stream.split();
        c.send(Frame::RstStream {
            id: 5,
            status: status::CANCEL,
        })
        .await;
        assert!(matches!(rx.recv().await, Err(Error::Reset(5))));
        assert!(matches!(
            tx.send(Bytes::from_static(b"x")).await,
            Err(Error::Reset(5))
        ));
        tx.finish().await.unwrap();
        // This side resets a stream.
        c.open(7, &[("port", "80")]).await;
        let stream = s.accept().await.unwrap();
        stream.reset(status::CANCEL).await.unwrap();
        assert_eq!(
            c.next_skipping_updates().await,
            Frame::RstStream {
                id: 7,
                status: status::CANCEL
            }
        );
        // The client going away ends the session.
        drop(c);
        assert!(s.accept().await.is_none());
    }

    #[tokio::test]
    async fn a_broken_header_block_ends_the_session_with_goaway() {
        let (mut c, mut s) = pair();
        // A SYN_STREAM whose header block is not zlib.
        let mut p = 1u32.to_be_bytes().to_vec();
        p.extend_from_slice(&[0, 0, 0, 0, 0, 0, 1, 2, 3, 4]);
        let mut frame = Vec::new();
        control(&mut frame, SYN_STREAM, 0, &p).unwrap();
        c.io.write_all(&frame).await.unwrap();
        assert!(s.accept().await.is_none());
        assert!(matches!(
            c.next().await,
            Frame::GoAway {
                status: goaway::PROTOCOL_ERROR,
                ..
            }
        ));
    }
}
