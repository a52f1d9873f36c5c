//! Attaching to a container's own process (`kubectl attach`, `kubectl run -it`): the
//! shim listens on `attach.sock` in the container's folder and speaks frames to every
//! client that connects: `[kind: u8][length: u32, big-endian][payload]`.
//!
//! The shim sends the container's output as it comes ([`STDOUT`], [`STDERR`]; with a
//! terminal everything is [`STDOUT`]) and closes the connection when the container has
//! exited. A client sends [`WANT_STDIN`] once to say it writes stdin, then [`STDIN`]
//! data, [`CLOSE_STDIN`] when its input ends, and [`RESIZE`] (columns and rows, two
//! big-endian `u16`) for a terminal. With `stdinOnce`, the container's stdin closes for
//! good when the first client that wrote stdin closes it or goes away, as upstream
//! runtimes do; otherwise it stays open for the next client.

use std::path::{Path, PathBuf};

/// The socket's name in the container's folder.
pub const SOCKET: &str = "attach.sock";

/// Input for the container (client to shim).
pub const STDIN: u8 = 0;
/// The container's standard output (shim to client).
pub const STDOUT: u8 = 1;
/// The container's standard error (shim to client).
pub const STDERR: u8 = 2;
/// A terminal's new size (client to shim).
pub const RESIZE: u8 = 4;
/// The client's input has ended (client to shim).
pub const CLOSE_STDIN: u8 = 5;
/// The client writes stdin (client to shim, once, first).
pub const WANT_STDIN: u8 = 6;

/// The largest payload a frame may carry.
pub const MAX_FRAME: usize = 1 << 20;

/// One frame, encoded.
pub fn frame(kind: u8, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(5 + payload.len());
    out.push(kind);
    out.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    out.extend_from_slice(payload);
    out
}

/// The payload of a [`RESIZE`] frame.
pub fn resize_payload(cols: u16, rows: u16) -> [u8; 4] {
    let (c, r) = (cols.to_be_bytes(), rows.to_be_bytes());
    [c[0], c[1], r[0], r[1]]
}

/// Columns and rows from a [`RESIZE`] payload.
pub fn parse_resize(payload: &[u8]) -> Option<(u16, u16)> {
    match payload {
        [c0, c1, r0, r1] => Some((
            u16::from_be_bytes([*c0, *c1]),
            u16::from_be_bytes([*r0, *r1]),
        )),
        _ => None,
    }
}

/// A frame too big to be one of ours: the peer is not speaking this protocol.
#[derive(Debug, thiserror::Error)]
#[error("an attach frame of {0} bytes is larger than {MAX_FRAME}")]
pub struct TooLarge(pub usize);

/// Splits a byte stream into frames.
#[derive(Debug, Default)]
pub struct Decoder {
    buf: Vec<u8>,
}

impl Decoder {
    /// Takes bytes as they arrive.
    pub fn push(&mut self, data: &[u8]) {
        self.buf.extend_from_slice(data);
    }

    /// The next whole frame, if one has arrived.
    pub fn next_frame(&mut self) -> Result<Option<(u8, Vec<u8>)>, TooLarge> {
        let Some(header) = self.buf.get(..5) else {
            return Ok(None);
        };
        let len = u32::from_be_bytes([header[1], header[2], header[3], header[4]]) as usize;
        if len > MAX_FRAME {
            return Err(TooLarge(len));
        }
        if self.buf.len() < 5 + len {
            return Ok(None);
        }
        let kind = self.buf[0];
        let payload = self.buf[5..5 + len].to_vec();
        self.buf.drain(..5 + len);
        Ok(Some((kind, payload)))
    }
}

/// A path to `name` in the folder open as `dir` that fits in a socket address however
/// deep the folder is: `/proc/self/fd/N/name`, valid while `dir` stays open.
pub fn short_path(dir: &impl std::os::fd::AsRawFd, name: &str) -> PathBuf {
    Path::new("/proc/self/fd")
        .join(dir.as_raw_fd().to_string())
        .join(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_split_and_join() {
        let mut bytes = frame(STDOUT, b"hello");
        bytes.extend(frame(RESIZE, &resize_payload(120, 40)));
        bytes.extend(frame(CLOSE_STDIN, b""));
        let mut d = Decoder::default();
        let mut got = Vec::new();
        // A byte at a time, as a slow socket might deliver them.
        for b in bytes {
            d.push(&[b]);
            while let Some(f) = d.next_frame().unwrap() {
                got.push(f);
            }
        }
        assert_eq!(got[0], (STDOUT, b"hello".to_vec()));
        assert_eq!(got[1].0, RESIZE);
        assert_eq!(parse_resize(&got[1].1), Some((120, 40)));
        assert_eq!(got[2], (CLOSE_STDIN, Vec::new()));
        assert_eq!(got.len(), 3);
    }

    #[test]
    fn oversized_frames_are_refused() {
        let mut d = Decoder::default();
        d.push(&[STDIN, 0xff, 0xff, 0xff, 0xff]);
        assert!(d.next_frame().is_err());
        assert_eq!(parse_resize(b"xyz"), None);
    }
}
