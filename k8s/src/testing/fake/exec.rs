//! The `exec` subresource over WebSocket, answered from scripts.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::header::{
    CONNECTION, HeaderValue, SEC_WEBSOCKET_ACCEPT, SEC_WEBSOCKET_KEY, SEC_WEBSOCKET_PROTOCOL,
    UPGRADE,
};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::json;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::Role;

use super::*;

/// How a scripted exec ends.
#[derive(Debug, Clone)]
pub enum ExecEnd {
    /// Status Success (exit 0) or Failure with an ExitCode cause.
    Exit(i32),
    /// Status Failure without an exit code (e.g. executable not found).
    Failure(String),
}

#[derive(Debug, Clone)]
pub struct ExecScript {
    pub pod: String,
    pub container: String,
    pub command: Vec<String>,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
    pub end: ExecEnd,
    /// Wait this long before answering.
    pub delay: Duration,
}

/// A container whose execs run as real local processes, with its
/// environment ([`FakeCluster::exec_real`]).
#[derive(Debug, Clone)]
pub(super) struct RealExec {
    pub(super) pod: String,
    pub(super) container: String,
    pub(super) env: Vec<(String, String)>,
}

/// One exec call as the fake saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecCall {
    pub namespace: String,
    pub pod: String,
    pub container: String,
    pub command: Vec<String>,
    pub protocol: String,
}

// ---------- exec over WebSocket ----------

pub(super) fn handle_exec(
    state: Arc<Mutex<State>>,
    mut req: Request<Incoming>,
    ns: String,
    pod: String,
    pairs: Vec<(String, String)>,
) -> Response<Full<Bytes>> {
    let command: Vec<String> = pairs
        .iter()
        .filter(|(k, _)| k == "command")
        .map(|(_, v)| v.clone())
        .collect();
    let container_param = pairs
        .iter()
        .find(|(k, _)| k == "container")
        .map(|(_, v)| v.clone());

    let pod_obj = state
        .lock()
        .unwrap()
        .objects
        .get(&(Kind::Pod, ns.clone(), pod.clone()))
        .cloned();
    let Some(pod_obj) = pod_obj else {
        return not_found(Kind::Pod, &pod);
    };
    let containers: Vec<String> = pod_obj["spec"]["containers"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|c| c["name"].as_str().map(str::to_string))
        .collect();
    let container = match container_param {
        Some(c) => c,
        None if containers.len() == 1 => containers[0].clone(),
        None => {
            return error(
                400,
                "BadRequest",
                &format!("a container name must be specified for pod {pod}"),
            );
        }
    };
    if !containers.contains(&container) {
        return error(
            400,
            "BadRequest",
            &format!("container {container} is not valid for pod {pod}"),
        );
    }

    let headers = req.headers();
    let is_upgrade = headers
        .get(UPGRADE)
        .and_then(|h| h.to_str().ok())
        .is_some_and(|h| h.eq_ignore_ascii_case("websocket"));
    let Some(key) = headers
        .get(SEC_WEBSOCKET_KEY)
        .map(|k| k.as_bytes().to_vec())
    else {
        return error(400, "BadRequest", "exec needs a websocket upgrade");
    };
    if !is_upgrade {
        return error(400, "BadRequest", "exec needs a websocket upgrade");
    }
    let offered: Vec<String> = headers
        .get(SEC_WEBSOCKET_PROTOCOL)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("")
        .split(',')
        .map(|s| s.trim().to_string())
        .collect();
    let accepted = state.lock().unwrap().exec_protocols.clone();
    let protocol = accepted
        .into_iter()
        .find(|p| offered.iter().any(|o| o == p));
    let Some(protocol) = protocol else {
        return error(
            400,
            "BadRequest",
            &format!("no supported channel protocol in {offered:?}"),
        );
    };

    let (script, real) = {
        let mut st = state.lock().unwrap();
        st.events
            .push(format!("exec {pod}/{container} {}", command.join(" ")));
        st.execs.push(ExecCall {
            namespace: ns.clone(),
            pod: pod.clone(),
            container: container.clone(),
            command: command.clone(),
            protocol: protocol.to_string(),
        });
        let script = st
            .scripts
            .iter()
            .find(|s| s.pod == pod && s.container == container && s.command == command)
            .cloned();
        let real = st
            .real_exec
            .iter()
            .find(|r| r.pod == pod && r.container == container)
            .map(|r| r.env.clone());
        (script, real)
    };
    if let (None, Some(env)) = (&script, real) {
        let upgrade = hyper::upgrade::on(&mut req);
        tokio::spawn(async move {
            let Ok(upgraded) = upgrade.await else { return };
            let ws =
                WebSocketStream::from_raw_socket(TokioIo::new(upgraded), Role::Server, None).await;
            run_real(ws, command, env).await;
        });
        return switching(&key, protocol);
    }
    let script = script.unwrap_or(ExecScript {
        pod: pod.clone(),
        container: container.clone(),
        command: command.clone(),
        stdout: Vec::new(),
        stderr: Vec::new(),
        end: ExecEnd::Failure(format!(
            "exec: \"{}\": executable file not found in $PATH",
            command.first().cloned().unwrap_or_default()
        )),
        delay: Duration::ZERO,
    });
    let upgrade = hyper::upgrade::on(&mut req);
    tokio::spawn(async move {
        let Ok(upgraded) = upgrade.await else { return };
        let mut ws =
            WebSocketStream::from_raw_socket(TokioIo::new(upgraded), Role::Server, None).await;
        // The real server opens each channel with a one-byte frame.
        for ch in [1u8, 2, 3] {
            if ws.send(Message::binary(vec![ch])).await.is_err() {
                return;
            }
        }
        tokio::time::sleep(script.delay).await;
        for (ch, data) in [(1u8, &script.stdout), (2u8, &script.stderr)] {
            for chunk in data.chunks(1000) {
                let mut frame = vec![ch];
                frame.extend_from_slice(chunk);
                if ws.send(Message::binary(frame)).await.is_err() {
                    return;
                }
            }
        }
        let status = status_json(&script.command, &script.end);
        let mut frame = vec![3u8];
        frame.extend_from_slice(status.to_string().as_bytes());
        let _ = ws.send(Message::binary(frame)).await;
        let _ = ws.close(None).await;
        // Drain until the client goes away.
        while let Some(Ok(_)) = ws.next().await {}
    });

    switching(&key, protocol)
}

/// The 101 answer that upgrades an exec request to a WebSocket.
fn switching(key: &[u8], protocol: &'static str) -> Response<Full<Bytes>> {
    let mut resp = Response::builder()
        .status(StatusCode::SWITCHING_PROTOCOLS)
        .body(Full::new(Bytes::new()))
        .expect("response");
    let h = resp.headers_mut();
    h.insert(UPGRADE, HeaderValue::from_static("websocket"));
    h.insert(CONNECTION, HeaderValue::from_static("Upgrade"));
    h.insert(
        SEC_WEBSOCKET_ACCEPT,
        HeaderValue::from_str(&derive_accept_key(key)).expect("accept"),
    );
    h.insert(SEC_WEBSOCKET_PROTOCOL, HeaderValue::from_static(protocol));
    resp
}

/// The exit status frame's JSON, as the API server writes it.
fn status_json(command: &[String], end: &ExecEnd) -> serde_json::Value {
    match end {
        ExecEnd::Exit(0) => json!({"metadata": {}, "status": "Success"}),
        ExecEnd::Exit(code) => json!({
            "metadata": {},
            "status": "Failure",
            "message": format!("command terminated with non-zero exit code: error executing command {command:?}, exit code {code}"),
            "reason": "NonZeroExitCode",
            "details": {"causes": [{"reason": "ExitCode", "message": code.to_string()}]}
        }),
        ExecEnd::Failure(msg) => json!({
            "metadata": {},
            "status": "Failure",
            "message": msg,
            "reason": "InternalError",
            "code": 500
        }),
    }
}

/// Runs `command` as a real local process bridged to `ws` (see
/// [`FakeCluster::exec_real`]).
async fn run_real<S>(ws: WebSocketStream<S>, command: Vec<String>, env: Vec<(String, String)>)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (mut sink, mut from_client) = ws.split();
    for ch in [1u8, 2, 3] {
        if sink.send(Message::binary(vec![ch])).await.is_err() {
            return;
        }
    }
    let mut cmd = tokio::process::Command::new(command.first().map_or("", String::as_str));
    cmd.args(command.iter().skip(1))
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .envs(env)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => {
            let msg = if e.kind() == std::io::ErrorKind::NotFound {
                format!(
                    "OCI runtime exec failed: exec failed: unable to start container process: exec: \"{}\": executable file not found in $PATH: unknown",
                    command.first().cloned().unwrap_or_default()
                )
            } else {
                format!("OCI runtime exec failed: {e}: unknown")
            };
            let mut frame = vec![3u8];
            frame.extend_from_slice(
                status_json(&command, &ExecEnd::Failure(msg))
                    .to_string()
                    .as_bytes(),
            );
            let _ = sink.send(Message::binary(frame)).await;
            let _ = sink.close().await;
            return;
        }
    };
    let mut stdin = child.stdin.take();
    let (out_tx, mut out_rx) = tokio::sync::mpsc::unbounded_channel::<Vec<u8>>();
    for (ch, pipe) in [
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
        let tx = out_tx.clone();
        tokio::spawn(async move {
            let mut buf = vec![0u8; 4096];
            while let Ok(n) = pipe.read(&mut buf).await {
                if n == 0 {
                    break;
                }
                let mut frame = vec![ch];
                frame.extend_from_slice(&buf[..n]);
                if tx.send(frame).is_err() {
                    break;
                }
            }
        });
    }
    drop(out_tx);
    let mut client_here = true;
    loop {
        tokio::select! {
            frame = out_rx.recv() => match frame {
                Some(f) => {
                    if client_here && sink.send(Message::binary(f)).await.is_err() {
                        client_here = false;
                    }
                }
                // Both pipes closed: the process is ending.
                None => break,
            },
            msg = from_client.next(), if client_here => match msg {
                Some(Ok(Message::Binary(b))) => match b.first() {
                    Some(0) => {
                        if let Some(w) = stdin.as_mut()
                            && (w.write_all(&b[1..]).await.is_err() || w.flush().await.is_err())
                        {
                            stdin = None;
                        }
                    }
                    // v5: the client closed a stream; channel 0 is stdin.
                    Some(255) if b.get(1) == Some(&0) => stdin = None,
                    _ => {}
                },
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => {
                    // The client went away: the process reads the end of
                    // its input, as in a container.
                    client_here = false;
                    stdin = None;
                }
                Some(Ok(_)) => {}
            },
        }
    }
    drop(stdin);
    // Polled, not `child.wait()`: that waits for SIGCHLD through tokio's
    // signal driver, which never wakes this runtime once the test runtime
    // that first listened for signals has been dropped (tests run side by
    // side, each with a runtime of its own).
    let status = loop {
        match child.try_wait() {
            Ok(Some(s)) => break Ok(s),
            Ok(None) => tokio::time::sleep(Duration::from_millis(20)).await,
            Err(e) => break Err(e),
        }
    };
    let end = match status {
        Ok(s) => match s.code() {
            Some(code) => ExecEnd::Exit(code),
            None => ExecEnd::Exit(137),
        },
        Err(e) => ExecEnd::Failure(e.to_string()),
    };
    if client_here {
        let mut frame = vec![3u8];
        frame.extend_from_slice(status_json(&command, &end).to_string().as_bytes());
        let _ = sink.send(Message::binary(frame)).await;
        let _ = sink.close().await;
    }
}
