//! `kubectl exec` and `kubectl attach` on the node: the WebSocket remote-command protocol
//! (`v5.channel.k8s.io`, and `v4.channel.k8s.io` for older clients). Every binary
//! message starts with its channel: 0 stdin, 1 stdout, 2 stderr, 3 the final status
//! (a `Status` object, with the exit code for a non-zero exit), 4 terminal resize, and
//! in v5, 255 to close a stream (the client closing stdin).

use super::Kubelet;
use futures::{SinkExt, StreamExt};
use http::{header, HeaderValue, Request, Response, StatusCode};
use hyper::body::Incoming;
use serde_json::json;
use std::process::Stdio;
use std::sync::Arc;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_tungstenite::tungstenite::protocol::Role;
use tokio_tungstenite::tungstenite::Message;

/// How long after the upgrade an exec's first output waits. kubectl 1.32's WebSocket
/// client starts reading before it has made its streams, and drops output that arrives
/// in between ("Unknown stream id"); a process in a container can answer that fast. The
/// process itself starts at once; only its first output is held back until then.
const FIRST_OUTPUT_AFTER: std::time::Duration = std::time::Duration::from_millis(50);

/// The subprotocols spoken, best first.
const PROTOCOLS: &[&str] = &["v5.channel.k8s.io", "v4.channel.k8s.io"];

/// What an exec request asks for.
#[derive(Debug, Clone, Default)]
pub struct ExecRequest {
    /// The command and its arguments.
    pub command: Vec<String>,
    /// Whether the client sends stdin.
    pub stdin: bool,
    /// Whether it wants stdout.
    pub stdout: bool,
    /// Whether it wants stderr.
    pub stderr: bool,
    /// Whether it runs on a terminal (stderr then comes with stdout; channel 4 resizes).
    pub tty: bool,
}

impl ExecRequest {
    /// From the query string (`command` repeats).
    pub fn from_query(query: &str) -> ExecRequest {
        let mut r = ExecRequest::default();
        for (k, v) in form_urlencoded::parse(query.as_bytes()) {
            let on = v == "true" || v == "1";
            match k.as_ref() {
                "command" => r.command.push(v.into_owned()),
                "stdin" => r.stdin = on,
                "stdout" => r.stdout = on,
                "stderr" => r.stderr = on,
                "tty" => r.tty = on,
                _ => {}
            }
        }
        r
    }
}

/// The final status message of a command that exited with `code`.
pub fn exit_status(command: &[String], code: i32) -> serde_json::Value {
    if code == 0 {
        return json!({"metadata": {}, "status": "Success"});
    }
    json!({
        "metadata": {},
        "status": "Failure",
        "message": format!(
            "command terminated with non-zero exit code: error executing command {command:?}, exit code {code}"
        ),
        "reason": "NonZeroExitCode",
        "details": {"causes": [{"reason": "ExitCode", "message": code.to_string()}]},
    })
}

/// Answers the WebSocket upgrade and runs the command in container `id`; `Err` is a
/// message for a 400 answer.
pub fn exec(
    k: &Arc<Kubelet>,
    id: String,
    exec: ExecRequest,
    req: Request<Incoming>,
) -> Result<Response<super::api::Body>, String> {
    if exec.command.is_empty() {
        return Err("you must specify at least one command for the container".into());
    }
    let k = k.clone();
    upgrade(req, "exec", move |ws, v5| async move {
        run(&k, &id, exec, v5, ws).await
    })
}

/// Answers the WebSocket upgrade and attaches to container `id`'s own process (the
/// same channels as exec, the streams being the container's); `Err` is a message for a
/// 400 answer.
pub fn attach(
    k: &Arc<Kubelet>,
    id: String,
    attach: ExecRequest,
    req: Request<Incoming>,
) -> Result<Response<super::api::Body>, String> {
    if !(attach.stdin || attach.stdout || attach.stderr) {
        return Err("you must specify at least one of stdin, stdout, stderr".into());
    }
    let k = k.clone();
    upgrade(req, "attach", move |ws, v5| async move {
        run_attach(&k, &id, attach, v5, ws).await
    })
}

/// The WebSocket the client upgraded to.
type Socket = tokio_tungstenite::WebSocketStream<hyper_util::rt::TokioIo<hyper::upgrade::Upgraded>>;

/// Answers a WebSocket upgrade in one of [`PROTOCOLS`], then runs `session` on the
/// socket (with whether the protocol is v5).
fn upgrade<F, Fut>(
    req: Request<Incoming>,
    what: &'static str,
    session: F,
) -> Result<Response<super::api::Body>, String>
where
    F: FnOnce(Socket, bool) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let upgrade = req
        .headers()
        .get(header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("websocket"));
    let key = req.headers().get(header::SEC_WEBSOCKET_KEY).cloned();
    let (true, Some(key)) = (upgrade, key) else {
        return Err(format!(
            "{what} needs a WebSocket upgrade (SPDY is not served)"
        ));
    };
    let offered: Vec<String> = req
        .headers()
        .get_all(header::SEC_WEBSOCKET_PROTOCOL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(',').map(|p| p.trim().to_string()))
        .collect();
    let Some(protocol) = PROTOCOLS.iter().find(|p| offered.iter().any(|o| o == *p)) else {
        return Err(format!(
            "none of the offered subprotocols {offered:?} is spoken; use one of {PROTOCOLS:?}"
        ));
    };
    let v5 = protocol.starts_with("v5");
    let accept = tokio_tungstenite::tungstenite::handshake::derive_accept_key(key.as_bytes());
    tokio::spawn(async move {
        let upgraded = match hyper::upgrade::on(req).await {
            Ok(u) => u,
            Err(e) => {
                tracing::debug!(error = %e, what, "upgrade failed");
                return;
            }
        };
        let ws = tokio_tungstenite::WebSocketStream::from_raw_socket(
            hyper_util::rt::TokioIo::new(upgraded),
            Role::Server,
            None,
        )
        .await;
        session(ws, v5).await;
    });
    let mut resp = Response::new(super::api::empty());
    *resp.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let h = resp.headers_mut();
    h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    h.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
    if let Ok(v) = HeaderValue::from_str(&accept) {
        h.insert(header::SEC_WEBSOCKET_ACCEPT, v);
    }
    h.insert(
        header::SEC_WEBSOCKET_PROTOCOL,
        HeaderValue::from_static(protocol),
    );
    Ok(resp)
}

/// A terminal size message (channel 4: `{"Width": cols, "Height": rows}`).
fn terminal_size(data: &[u8]) -> Option<(u16, u16)> {
    let size: serde_json::Value = serde_json::from_slice(data).ok()?;
    Some((
        u16::try_from(size["Width"].as_u64()?).ok()?,
        u16::try_from(size["Height"].as_u64()?).ok()?,
    ))
}

/// Sends a channel-3 status and closes.
async fn finish<S>(tx: &mut S, status: serde_json::Value)
where
    S: futures::Sink<Message> + Unpin,
{
    let mut msg = vec![3u8];
    msg.extend(status.to_string().into_bytes());
    let _ = tx.send(Message::binary(msg)).await;
    close(tx).await;
}

async fn run_attach(k: &Kubelet, id: &str, r: ExecRequest, v5: bool, ws: Socket) {
    use skiff_embedded::container::attach;
    let (mut tx, mut rx) = ws.split();
    let conn = match k.containers.attach(id).await {
        Ok(c) => c,
        Err(e) => {
            let message = format!("error attaching to container: {e}");
            let status = json!({"metadata": {}, "status": "Failure", "message": message, "reason": "InternalError", "code": 500});
            finish(&mut tx, status).await;
            return;
        }
    };
    let (mut from_shim, mut to_shim) = conn.into_split();
    if r.stdin
        && to_shim
            .write_all(&attach::frame(attach::WANT_STDIN, &[]))
            .await
            .is_err()
    {
        return;
    }
    let mut decoder = attach::Decoder::default();
    let mut buf = vec![0u8; 32 * 1024];
    // Whether the shim still takes input. It stops when the container has exited; its
    // last output may still be on the way, so the session goes on until that is read.
    let mut shim_takes_input = true;
    loop {
        tokio::select! {
            n = from_shim.read(&mut buf) => {
                // The shim closes the connection when the container has exited.
                let Ok(n @ 1..) = n else { break };
                decoder.push(&buf[..n]);
                while let Ok(Some((kind, data))) = decoder.next_frame() {
                    let channel = match kind {
                        attach::STDOUT if r.stdout => 1u8,
                        attach::STDERR if r.stderr => 2,
                        _ => continue,
                    };
                    let mut msg = Vec::with_capacity(data.len() + 1);
                    msg.push(channel);
                    msg.extend_from_slice(&data);
                    if tx.send(Message::binary(msg)).await.is_err() {
                        return;
                    }
                }
            }
            msg = rx.next() => {
                let frame = match msg {
                    Some(Ok(Message::Binary(data))) if !data.is_empty() => match data[0] {
                        0 if r.stdin => attach::frame(attach::STDIN, &data[1..]),
                        255 if v5 && r.stdin && data.get(1) == Some(&0) => {
                            attach::frame(attach::CLOSE_STDIN, &[])
                        }
                        4 => match terminal_size(&data[1..]) {
                            Some((cols, rows)) => {
                                attach::frame(attach::RESIZE, &attach::resize_payload(cols, rows))
                            }
                            None => continue,
                        },
                        _ => continue,
                    },
                    // The client is gone: so is this connection (the shim then ends
                    // a stdinOnce container's input).
                    Some(Ok(Message::Close(_))) | None | Some(Err(_)) => return,
                    Some(Ok(_)) => continue,
                };
                if shim_takes_input && to_shim.write_all(&frame).await.is_err() {
                    shim_takes_input = false;
                }
            }
        }
    }
    finish(&mut tx, json!({"metadata": {}, "status": "Success"})).await;
}

async fn run(k: &Kubelet, id: &str, exec: ExecRequest, v5: bool, ws: Socket) {
    let first_output = tokio::time::Instant::now() + FIRST_OUTPUT_AFTER;
    let (mut tx, mut rx) = ws.split();
    let mut cmd = k.containers.exec_command(id, &exec.command, exec.tty);
    // A terminal's size comes through a FIFO the process reads "COLS ROWS" lines from.
    let fifo = exec.tty.then(|| {
        std::env::temp_dir().join(format!("skiff-resize-{}", uuid::Uuid::new_v4().simple()))
    });
    let mut resize: Option<std::fs::File> = None;
    if let Some(path) = &fifo {
        let made = rustix::fs::mknodat(
            rustix::fs::CWD,
            path,
            rustix::fs::FileType::Fifo,
            rustix::fs::Mode::from_raw_mode(0o600),
            0,
        );
        if made.is_ok() {
            // Read and write, so opening never waits for the other end.
            resize = std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .open(path)
                .ok();
            cmd.env("SKIFF_RESIZE_FIFO", path);
        }
    }
    let piped = |on: bool| if on { Stdio::piped() } else { Stdio::null() };
    cmd.stdin(piped(exec.stdin))
        .stdout(piped(exec.stdout))
        .stderr(piped(exec.stderr && !exec.tty));
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => {
            let status = json!({"metadata": {}, "status": "Failure", "message": format!("starting the command: {e}"), "reason": "InternalError"});
            finish(&mut tx, status).await;
            return;
        }
    };
    let mut stdin = child.stdin.take();
    // Output of both streams, tagged with its channel, through one queue.
    let (out_tx, mut out_rx) = tokio::sync::mpsc::channel::<Vec<u8>>(16);
    let mut readers = Vec::new();
    for (channel, pipe) in [
        (
            1u8,
            child
                .stdout
                .take()
                .map(|p| Box::new(p) as Box<dyn tokio::io::AsyncRead + Send + Unpin>),
        ),
        (
            2u8,
            child
                .stderr
                .take()
                .map(|p| Box::new(p) as Box<dyn tokio::io::AsyncRead + Send + Unpin>),
        ),
    ] {
        let Some(mut pipe) = pipe else { continue };
        let out_tx = out_tx.clone();
        readers.push(tokio::spawn(async move {
            let mut buf = vec![0u8; 32 * 1024];
            loop {
                match pipe.read(&mut buf[1..]).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => {
                        buf[0] = channel;
                        if out_tx.send(buf[..=n].to_vec()).await.is_err() {
                            return;
                        }
                    }
                }
            }
        }));
    }
    drop(out_tx);
    let mut output_open = true;
    let code = loop {
        tokio::select! {
            out = out_rx.recv(), if output_open => match out {
                Some(msg) => {
                    tokio::time::sleep_until(first_output).await;
                    if tx.send(Message::binary(msg)).await.is_err() {
                        let _ = child.kill().await;
                        return;
                    }
                }
                None => output_open = false,
            },
            msg = rx.next() => match msg {
                Some(Ok(Message::Binary(data))) if !data.is_empty() => match data[0] {
                    0 => {
                        if let Some(w) = stdin.as_mut() {
                            if w.write_all(&data[1..]).await.is_err() {
                                stdin = None;
                            }
                        }
                    }
                    255 if v5 && data.get(1) == Some(&0) => stdin = None,
                    4 => {
                        if let (Some((w, h)), Some(f)) = (terminal_size(&data[1..]), resize.as_mut()) {
                            use std::io::Write;
                            let _ = writeln!(f, "{w} {h}");
                        }
                    }
                    _ => {}
                },
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => {
                    // The client is gone: so is the command.
                    let _ = child.kill().await;
                    return;
                }
                Some(Ok(_)) => {}
            },
            status = child.wait(), if !output_open => {
                break status.ok().and_then(|s| s.code()).unwrap_or(255);
            }
        }
    };
    for r in readers {
        let _ = r.await;
    }
    if let Some(path) = &fifo {
        let _ = std::fs::remove_file(path);
    }
    finish(&mut tx, exit_status(&exec.command, code)).await;
}

/// Closes with code 1000: clients take a close without a code (1005) as an error.
async fn close<S>(tx: &mut S)
where
    S: futures::Sink<Message> + Unpin,
{
    use tokio_tungstenite::tungstenite::protocol::frame::{coding::CloseCode, CloseFrame};
    let frame = CloseFrame {
        code: CloseCode::Normal,
        reason: "".into(),
    };
    let _ = tx.send(Message::Close(Some(frame))).await;
    let _ = tx.close().await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_and_status() {
        let r =
            ExecRequest::from_query("command=sh&command=-c&command=echo+hi&stdin=true&stdout=1");
        assert_eq!(r.command, ["sh", "-c", "echo hi"]);
        assert!(r.stdin && r.stdout && !r.stderr);
        assert_eq!(exit_status(&r.command, 0)["status"], "Success");
        let s = exit_status(&r.command, 3);
        assert_eq!(s["reason"], "NonZeroExitCode");
        assert_eq!(s["details"]["causes"][0]["message"], "3");
    }
}
