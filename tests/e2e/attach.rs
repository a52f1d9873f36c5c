//! `kubectl attach` and `kubectl run -i`/`-it` on the in-process node: the container's
//! own output streamed live to every attached client, stdin from kubectl to the
//! container (kept open across sessions, or closed after the first with `stdinOnce`),
//! and a terminal of the client's size. Needs root, as CI is.

use crate::harness::{wait_until, Kubectl, Server};
use crate::node::{apply, phase, wait_pod, KUBECTL, SOON};
use serde_json::{json, Value};
use std::io::Write;
use std::process::Stdio;

/// Waits until pod `name`'s phase is `want`.
#[track_caller]
fn wait_phase(s: &Server, name: &str, want: &str) {
    wait_pod(s, name, want, |p| phase(p) == want);
}

/// A child process killed and reaped when dropped, even when the test fails.
struct Reaped(std::process::Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn pod(name: &str, script: &str, stdin: bool, stdin_once: bool) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name},
        "spec": {
            "restartPolicy": "Never",
            "terminationGracePeriodSeconds": 1,
            "containers": [{
                "name": "main", "image": "busybox", "command": ["sh", "-c", script],
                "stdin": stdin, "stdinOnce": stdin_once,
            }]
        }
    })
}

/// `kubectl attach` streams what the container writes from then on, stdout and stderr
/// apart, with both kubectl versions; two clients attached at once both get it, and
/// stdin (not `stdinOnce`) stays open from one `attach -i` to the next.
#[test]
fn attach_streams_output_and_keeps_stdin_across_sessions() {
    let s = Server::start_node(&[]);
    apply(
        &s,
        &pod(
            "talk",
            "i=0; while true; do echo \"out $i\"; echo \"err $i\" >&2; i=$((i+1)); sleep 0.2; done",
            false,
            false,
        ),
    );
    wait_phase(&s, "talk", "Running");
    // Two clients at once, one of each kubectl version: once both have seen a line,
    // both get every line after it.
    let mut a = s.kubectl(Kubectl::V132).spawn(&["attach", "talk"]);
    let mut b = s.kubectl(Kubectl::Current).spawn(&["attach", "talk"]);
    let number = |line: String| -> u64 { line["out ".len()..].parse().unwrap() };
    let seen_a = number(a.wait_for_line(SOON, |l| l.starts_with("out ")));
    let seen_b = number(b.wait_for_line(SOON, |l| l.starts_with("out ")));
    let next = format!("out {}", seen_a.max(seen_b) + 1);
    a.wait_for_line(SOON, |l| l == next);
    b.wait_for_line(SOON, |l| l == next);
    for stderr in [a.stop(), b.stop()] {
        assert!(stderr.contains("err "), "stderr apart: {stderr}");
    }

    apply(
        &s,
        &pod(
            "echo",
            "while read l; do echo \"got $l\"; [ \"$l\" = quit ] && exit 0; done; echo eof",
            true,
            false,
        ),
    );
    wait_phase(&s, "echo", "Running");
    // A first session writes a line and sees the answer (kubectl sends input only once
    // attached), then goes away without ending the input.
    let mut first = Reaped(
        s.kubectl(KUBECTL)
            .command(&["attach", "-i", "echo"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let mut input = first.0.stdin.take().unwrap();
    let stdout = first.0.stdout.take().unwrap();
    let (tx, lines) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufRead::lines(std::io::BufReader::new(stdout)) {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    input.write_all(b"one\n").unwrap();
    input.flush().unwrap();
    let answer = lines
        .recv_timeout(SOON)
        .expect("the first session's answer");
    assert_eq!(answer, "got one");
    drop(first);
    drop(input);
    // The container's stdin is still open for the next session, whose input ends it.
    let out = s
        .kubectl(KUBECTL)
        .stdin("two\nquit\n")
        .run(&["attach", "-i", "echo"]);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(out.stdout, "got two\ngot quit\n", "{out:?}");
    wait_phase(&s, "echo", "Succeeded");
    let logs = s.kubectl(KUBECTL).run(&["logs", "echo"]);
    assert_eq!(logs.ok(), "got one\ngot two\ngot quit\n");
    assert!(!logs.stdout.contains("eof"));
}

/// `kubectl run -i --rm` (stdinOnce): the container reads what kubectl sends, its
/// output comes back, the input ends with kubectl's, and the pod is deleted after.
/// With `-t` under a terminal (`script` gives kubectl one), the container runs on a
/// terminal of the client's size (which kubectl sends once attached, so under load the
/// typed-ahead line may arrive first: the shell looks again until the size is there).
#[test]
fn run_interactive_with_and_without_a_terminal() {
    let s = Server::start_node(&[]);
    for (i, k) in [Kubectl::V132, Kubectl::Current].into_iter().enumerate() {
        let name = format!("once{i}");
        let out = s.kubectl(k).stdin("hello\nmore\n").run(&[
            "run",
            &name,
            "--image=busybox",
            "--restart=Never",
            "-i",
            "--rm",
            "--",
            "sh",
            "-c",
            "read line; echo \"got $line\"; cat; echo \"input ended\"",
        ]);
        assert!(out.status.success(), "{out:?}");
        assert!(out.stdout.contains("got hello"), "{out:?}");
        assert!(out.stdout.contains("more\ninput ended"), "{out:?}");
        assert!(
            out.stdout.contains(&format!("pod \"{name}\" deleted")),
            "{out:?}"
        );
    }

    let cmd = format!(
        "stty cols 100 rows 30; {} run tty --image=busybox --restart=Never -it --rm -- sh -c 'read x; for i in 1 2 3 4 5 6 7 8 9 10; do s=$(stty size 2>/dev/null); [ -n \"$s\" ] && [ \"$s\" != \"0 0\" ] && break; sleep 0.2; done; echo \"got $x on $(tty) sized $s\"'",
        KUBECTL.program().display()
    );
    let mut child = Reaped(
        std::process::Command::new("script")
            .args(["-qec", &cmd, "/dev/null"])
            .env("KUBECONFIG", s.kubeconfig())
            .env("HOME", s.home())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("script (util-linux) runs kubectl on a terminal"),
    );
    // Typed ahead: the client's terminal holds the line until kubectl attaches. The
    // input stays open until the session ends, as a person's would.
    let mut input = child.0.stdin.take().unwrap();
    input.write_all(b"hello\n").unwrap();
    input.flush().unwrap();
    let mut stdout = child.0.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = std::io::Read::read_to_string(&mut stdout, &mut text);
        text
    });
    let status = wait_until(SOON, "kubectl run -it to end", || {
        match child.0.try_wait() {
            Ok(Some(status)) => Ok(status),
            _ => Err("still running".to_string()),
        }
    });
    drop(input);
    let text = reader.join().unwrap();
    assert!(status.success(), "{text}");
    assert!(
        text.contains("got hello on /dev/pts/0 sized 30 100"),
        "{text}"
    );
    assert!(text.contains("pod \"tty\" deleted"), "{text}");
}
