//! The metrics and health endpoint of `ddbguard verify`.
//!
//! Serves three paths on one port (default `0.0.0.0:9464`):
//!
//! | path | answer |
//! |---|---|
//! | `/metrics` | Prometheus text exposition of every `ddbguard_*` metric |
//! | `/healthz` | `200 ok` while the process is alive (ECS container health check) |
//! | `/readyz`  | `200` when the verifier holds its leases and no shard is stalled, else `503` with the reason |
//!
//! The server speaks just enough HTTP/1.1 for scrapers and load-balancer probes: `GET` and `HEAD` (the
//! same status and headers, no body), one request per connection, request heads capped at 8 KiB. A
//! connection lives at most [`CONNECTION_DEADLINE`] from accept to close, reading and writing included, and
//! at most [`MAX_CONNECTIONS`] live at once; a connection beyond that is closed at once instead of waiting
//! for a slot. So slow or idle clients can neither grow the daemon's memory nor hold every slot long
//! enough for the container health check (`ddbguard health`) to time out and get a healthy task killed.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;

/// Most connections served at the same time; further ones are closed as soon as they are accepted.
pub const MAX_CONNECTIONS: usize = 256;
/// Longest a connection lives, from accept to close: the request head must arrive and the answer be written
/// within it. Probes and scrapers need milliseconds; an ECS health check times out after 5 s by default.
pub const CONNECTION_DEADLINE: Duration = Duration::from_secs(2);
const MAX_REQUEST_HEAD: usize = 8 * 1024;

/// Whether the verifier is ready, and if not, why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Readiness {
    Ready,
    NotReady(String),
}

/// What the endpoint reports; implemented by the running verifier.
pub trait HealthSource: Send + Sync + 'static {
    /// The Prometheus text exposition of all metrics.
    fn render_metrics(&self) -> String;
    /// Readiness for `/readyz`.
    fn readiness(&self) -> Readiness;
}

/// Serves `listener` until `shutdown` completes; connections already accepted finish on their own.
pub async fn serve(
    listener: TcpListener,
    source: Arc<dyn HealthSource>,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    let permits = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    tokio::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            _ = &mut shutdown => return Ok(()),
            accepted = listener.accept() => match accepted {
                Ok(conn) => conn,
                Err(e) => {
                    // Out of file descriptors and similar: back off instead of spinning.
                    tracing::warn!(error = %e, "metrics endpoint: accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        // Waiting for a slot would leave new connections (the health check among them) queued behind
        // whatever holds the slots; closing one at once lets its client retry, and each slot frees itself
        // within the deadline.
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            tracing::debug!(%peer, "metrics endpoint: too many connections, closing");
            drop(stream);
            continue;
        };
        let source = source.clone();
        tokio::spawn(async move {
            match tokio::time::timeout(CONNECTION_DEADLINE, handle(stream, source.as_ref())).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => tracing::debug!(%peer, error = %e, "metrics endpoint: connection failed"),
                Err(_) => tracing::debug!(%peer, "metrics endpoint: connection deadline passed, closing"),
            }
            drop(permit);
        });
    }
}

/// Binds a listener for [`serve`], with an error that names the address.
pub async fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    TcpListener::bind(addr)
        .await
        .map_err(|e| std::io::Error::new(e.kind(), format!("cannot listen on {addr} for metrics: {e}")))
}

/// Serves one request. The caller bounds it in time: a client that sends nothing is simply dropped at the
/// deadline (it would not read a `408` either).
async fn handle(mut stream: TcpStream, source: &dyn HealthSource) -> std::io::Result<()> {
    let Some(head) = read_head(&mut stream).await? else {
        return respond(&mut stream, false, 431, "text/plain", "request head too large\n").await;
    };
    let request_line = head.lines().next().unwrap_or_default();
    let mut parts = request_line.split_whitespace();
    let (method, target) = (parts.next().unwrap_or_default(), parts.next().unwrap_or_default());
    let path = target.split('?').next().unwrap_or_default();
    let head_only = method == "HEAD";
    if method != "GET" && !head_only {
        return respond(
            &mut stream,
            false,
            405,
            "text/plain",
            "only GET and HEAD are supported\n",
        )
        .await;
    }
    let stream = &mut stream;
    match path {
        "/metrics" => {
            let body = source.render_metrics();
            respond(stream, head_only, 200, "text/plain; version=0.0.4", &body).await
        }
        "/healthz" => respond(stream, head_only, 200, "text/plain", "ok\n").await,
        "/readyz" => match source.readiness() {
            Readiness::Ready => respond(stream, head_only, 200, "text/plain", "ready\n").await,
            Readiness::NotReady(why) => {
                respond(stream, head_only, 503, "text/plain", &format!("not ready: {why}\n")).await
            }
        },
        _ => {
            respond(
                stream,
                head_only,
                404,
                "text/plain",
                "not found: try /metrics, /healthz or /readyz\n",
            )
            .await
        }
    }
}

/// Reads up to the end of the request head; `None` when it exceeds [`MAX_REQUEST_HEAD`].
async fn read_head(stream: &mut TcpStream) -> std::io::Result<Option<String>> {
    let mut buf = Vec::with_capacity(512);
    let mut chunk = [0u8; 512];
    loop {
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            break;
        }
        buf.extend_from_slice(&chunk[..n]);
        if buf.windows(4).any(|w| w == b"\r\n\r\n") || buf.windows(2).any(|w| w == b"\n\n") {
            break;
        }
        if buf.len() > MAX_REQUEST_HEAD {
            return Ok(None);
        }
    }
    Ok(Some(String::from_utf8_lossy(&buf).into_owned()))
}

/// Writes the answer; with `head_only` (a `HEAD` request) the same status and headers, `content-length`
/// included, and no body.
async fn respond(
    stream: &mut TcpStream,
    head_only: bool,
    status: u16,
    content_type: &str,
    body: &str,
) -> std::io::Result<()> {
    let reason = match status {
        200 => "OK",
        404 => "Not Found",
        405 => "Method Not Allowed",
        431 => "Request Header Fields Too Large",
        503 => "Service Unavailable",
        _ => "Error",
    };
    let head = format!(
        "HTTP/1.1 {status} {reason}\r\ncontent-type: {content_type}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await?;
    if !head_only {
        stream.write_all(body.as_bytes()).await?;
    }
    stream.shutdown().await
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    struct Fixed(Mutex<Readiness>);

    impl HealthSource for Fixed {
        fn render_metrics(&self) -> String {
            "ddbguard_records_total{verdict=\"ok\"} 3\n".to_owned()
        }
        fn readiness(&self) -> Readiness {
            self.0.lock().unwrap().clone()
        }
    }

    async fn get(addr: SocketAddr, request: &str) -> String {
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(request.as_bytes()).await.unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).await.unwrap();
        out
    }

    #[tokio::test]
    async fn serves_metrics_health_and_readiness() {
        let listener = bind("127.0.0.1:0".parse().unwrap()).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let source = Arc::new(Fixed(Mutex::new(Readiness::NotReady("no leases held".into()))));
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(serve(listener, source.clone(), async {
            let _ = rx.await;
        }));

        let metrics = get(addr, "GET /metrics HTTP/1.1\r\nhost: x\r\n\r\n").await;
        assert!(metrics.starts_with("HTTP/1.1 200"), "{metrics}");
        assert!(
            metrics.ends_with("ddbguard_records_total{verdict=\"ok\"} 3\n"),
            "{metrics}"
        );

        assert!(
            get(addr, "GET /healthz HTTP/1.1\r\n\r\n")
                .await
                .starts_with("HTTP/1.1 200")
        );
        let not_ready = get(addr, "GET /readyz HTTP/1.1\r\n\r\n").await;
        assert!(
            not_ready.starts_with("HTTP/1.1 503") && not_ready.contains("no leases held"),
            "{not_ready}"
        );
        *source.0.lock().unwrap() = Readiness::Ready;
        assert!(
            get(addr, "GET /readyz HTTP/1.1\r\n\r\n")
                .await
                .starts_with("HTTP/1.1 200")
        );

        assert!(
            get(addr, "GET /nope HTTP/1.1\r\n\r\n")
                .await
                .starts_with("HTTP/1.1 404")
        );
        assert!(
            get(addr, "POST /metrics HTTP/1.1\r\n\r\n")
                .await
                .starts_with("HTTP/1.1 405")
        );

        tx.send(()).unwrap();
        server.await.unwrap().unwrap();
    }

    async fn start() -> (SocketAddr, tokio::sync::oneshot::Sender<()>) {
        let listener = bind("127.0.0.1:0".parse().unwrap()).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let source = Arc::new(Fixed(Mutex::new(Readiness::Ready)));
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(serve(listener, source, async {
            let _ = rx.await;
        }));
        (addr, tx)
    }

    #[tokio::test]
    async fn head_answers_the_get_headers_without_a_body() {
        let (addr, _stop) = start().await;
        let get_answer = get(addr, "GET /metrics HTTP/1.1\r\n\r\n").await;
        let head_answer = get(addr, "HEAD /metrics HTTP/1.1\r\n\r\n").await;
        let (get_head, get_body) = get_answer.split_once("\r\n\r\n").unwrap();
        assert!(!get_body.is_empty());
        assert_eq!(head_answer, format!("{get_head}\r\n\r\n"));
        assert!(
            head_answer.contains(&format!("content-length: {}\r\n", get_body.len())),
            "{head_answer}"
        );

        let health = get(addr, "HEAD /healthz HTTP/1.1\r\n\r\n").await;
        assert!(
            health.starts_with("HTTP/1.1 200") && health.ends_with("\r\n\r\n"),
            "{health}"
        );
    }

    #[tokio::test]
    async fn idle_connections_do_not_block_the_health_check() {
        let (addr, _stop) = start().await;
        // 64 clients that connect and send nothing (more than the old 32 slots).
        let mut idle = Vec::new();
        for _ in 0..64 {
            idle.push(TcpStream::connect(addr).await.unwrap());
        }
        let started = std::time::Instant::now();
        let health = tokio::time::timeout(Duration::from_secs(1), get(addr, "GET /healthz HTTP/1.1\r\n\r\n"))
            .await
            .expect("/healthz must answer within a second");
        assert!(health.starts_with("HTTP/1.1 200"), "{health}");
        assert!(started.elapsed() < Duration::from_secs(1));
        drop(idle);
    }

    #[tokio::test]
    async fn a_silent_client_is_closed_at_the_deadline() {
        let (addr, _stop) = start().await;
        let mut silent = TcpStream::connect(addr).await.unwrap();
        let mut buf = Vec::new();
        let read = tokio::time::timeout(CONNECTION_DEADLINE * 2, silent.read_to_end(&mut buf)).await;
        let n = read.expect("the server must close an idle connection").unwrap_or(0);
        assert_eq!(n, 0, "no answer to a request never sent");
    }

    #[tokio::test]
    async fn connections_beyond_the_limit_are_closed_not_queued() {
        let (addr, _stop) = start().await;
        let mut held = Vec::new();
        for _ in 0..MAX_CONNECTIONS {
            held.push(TcpStream::connect(addr).await.unwrap());
        }
        // Give the server time to accept them all.
        tokio::time::sleep(Duration::from_millis(200)).await;
        let mut extra = TcpStream::connect(addr).await.unwrap();
        let mut buf = Vec::new();
        let read = tokio::time::timeout(CONNECTION_DEADLINE / 2, extra.read_to_end(&mut buf)).await;
        assert!(
            read.is_ok(),
            "the connection over the limit is closed before the deadline frees a slot"
        );
        assert!(buf.is_empty());
        drop(held);
    }
}
