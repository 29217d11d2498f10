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
//! The server speaks just enough HTTP/1.1 for scrapers and load-balancer probes: `GET` only, one
//! request per connection, request heads capped at 8 KiB and read with a timeout, at most
//! [`MAX_CONNECTIONS`] connections at once, so a misbehaving client cannot grow the daemon's memory.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;

/// Most connections served at the same time; further ones wait in the kernel's accept queue.
pub const MAX_CONNECTIONS: usize = 32;
const MAX_REQUEST_HEAD: usize = 8 * 1024;
const READ_TIMEOUT: Duration = Duration::from_secs(5);

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
        let permit = tokio::select! {
            _ = &mut shutdown => return Ok(()),
            permit = permits.clone().acquire_owned() => permit.map_err(std::io::Error::other)?,
        };
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
        let source = source.clone();
        tokio::spawn(async move {
            if let Err(e) = handle(stream, source.as_ref()).await {
                tracing::debug!(%peer, error = %e, "metrics endpoint: connection failed");
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

async fn handle(mut stream: TcpStream, source: &dyn HealthSource) -> std::io::Result<()> {
    let head = match tokio::time::timeout(READ_TIMEOUT, read_head(&mut stream)).await {
        Ok(head) => head?,
        Err(_) => return respond(&mut stream, 408, "text/plain", "request timeout\n").await,
    };
    let Some(head) = head else {
        return respond(&mut stream, 431, "text/plain", "request head too large\n").await;
    };
    let request_line = head.lines().next().unwrap_or_default();
    let mut parts = request_line.split_whitespace();
    let (method, target) = (parts.next().unwrap_or_default(), parts.next().unwrap_or_default());
    let path = target.split('?').next().unwrap_or_default();
    if method != "GET" && method != "HEAD" {
        return respond(&mut stream, 405, "text/plain", "only GET is supported\n").await;
    }
    match path {
        "/metrics" => {
            let body = source.render_metrics();
            respond(&mut stream, 200, "text/plain; version=0.0.4", &body).await
        }
        "/healthz" => respond(&mut stream, 200, "text/plain", "ok\n").await,
        "/readyz" => match source.readiness() {
            Readiness::Ready => respond(&mut stream, 200, "text/plain", "ready\n").await,
            Readiness::NotReady(why) => respond(&mut stream, 503, "text/plain", &format!("not ready: {why}\n")).await,
        },
        _ => {
            respond(
                &mut stream,
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

async fn respond(stream: &mut TcpStream, status: u16, content_type: &str, body: &str) -> std::io::Result<()> {
    let reason = match status {
        200 => "OK",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        431 => "Request Header Fields Too Large",
        503 => "Service Unavailable",
        _ => "Error",
    };
    let head = format!(
        "HTTP/1.1 {status} {reason}\r\ncontent-type: {content_type}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await?;
    stream.write_all(body.as_bytes()).await?;
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
}
