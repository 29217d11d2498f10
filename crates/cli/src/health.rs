//! `ddbguard health`: the container health check, without curl.
//!
//! An ECS container health check runs a command inside the image; the runtime image has no shell tools,
//! so the binary checks its own `/healthz`: exit 0 on a `200`, 1 on anything else (another status, refused,
//! timed out), with the reason on stderr. The default URL is the local metrics address, taken from
//! `DDBGUARD_METRICS_ADDR` like `verify --metrics-addr` (a wildcard address becomes loopback).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context as _, bail};
use clap::Args;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// The metrics address `verify` listens on by default.
const DEFAULT_METRICS_ADDR: &str = "0.0.0.0:9464";
/// Most of the answer read: a status line and a few headers are all that matter.
const MAX_ANSWER: u64 = 16 * 1024;

#[derive(Debug, Args)]
pub struct HealthArgs {
    /// The URL to check (`http://host:port/path`); default `/healthz` on the local metrics address.
    #[arg(long, env = "DDBGUARD_HEALTH_URL")]
    pub url: Option<String>,

    /// The metrics address `verify` serves on; the default URL is its `/healthz`.
    #[arg(long, default_value = DEFAULT_METRICS_ADDR, env = "DDBGUARD_METRICS_ADDR", hide = true)]
    pub metrics_addr: SocketAddr,

    /// Give up (unhealthy) after this many seconds.
    #[arg(long, default_value_t = 3.0)]
    pub timeout: f64,
}

/// A parsed `http://` URL: where to connect and what to ask for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// `host:port` as given (a name or an address).
    pub authority: String,
    /// The request target, starting with `/`.
    pub path: String,
}

impl Target {
    /// Parses `http://host[:port][/path]`; the port defaults to 80 and the path to `/healthz`.
    pub fn parse(url: &str) -> anyhow::Result<Self> {
        let Some(rest) = url.strip_prefix("http://") else {
            bail!("{url:?}: only http:// URLs are supported");
        };
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, "/healthz"),
        };
        if authority.is_empty() {
            bail!("{url:?}: no host");
        }
        // A port is present when the last `:` is outside an IPv6 literal's brackets.
        let has_port = authority.rfind(':').is_some_and(|i| !authority[i..].contains(']'));
        let authority = if has_port {
            authority.to_owned()
        } else {
            format!("{authority}:80")
        };
        Ok(Self {
            authority,
            path: path.to_owned(),
        })
    }

    /// `/healthz` on the metrics address, with a wildcard address replaced by loopback.
    pub fn local(metrics_addr: SocketAddr) -> Self {
        let ip = match metrics_addr.ip() {
            IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
            IpAddr::V6(ip) if ip.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
            ip => ip,
        };
        Self {
            authority: SocketAddr::new(ip, metrics_addr.port()).to_string(),
            path: "/healthz".to_owned(),
        }
    }
}

/// Asks `target` and returns its HTTP status code.
pub async fn check(target: &Target) -> anyhow::Result<u16> {
    let mut stream = TcpStream::connect(&target.authority)
        .await
        .with_context(|| format!("cannot connect to {}", target.authority))?;
    let request = format!(
        "GET {} HTTP/1.1\r\nhost: {}\r\nuser-agent: ddbguard-health\r\nconnection: close\r\n\r\n",
        target.path, target.authority
    );
    stream
        .write_all(request.as_bytes())
        .await
        .context("cannot send the request")?;
    let mut answer = Vec::new();
    (&mut stream)
        .take(MAX_ANSWER)
        .read_to_end(&mut answer)
        .await
        .context("cannot read the answer")?;
    let status_line = answer.split(|&b| b == b'\n').next().unwrap_or_default();
    let status_line = String::from_utf8_lossy(status_line);
    let mut parts = status_line.split_whitespace();
    match (parts.next(), parts.next().and_then(|code| code.parse::<u16>().ok())) {
        (Some(version), Some(code)) if version.starts_with("HTTP/") => Ok(code),
        _ => bail!("not an HTTP answer: {:?}", status_line.trim_end()),
    }
}

/// Runs `ddbguard health`: exit 0 when the URL answers `200`, 1 otherwise; 2 for a malformed URL.
pub async fn run(args: HealthArgs) -> anyhow::Result<ExitCode> {
    let target = match &args.url {
        Some(url) => Target::parse(url)?,
        None => Target::local(args.metrics_addr),
    };
    if !(args.timeout.is_finite() && args.timeout > 0.0) {
        bail!("--timeout must be a positive number of seconds");
    }
    let timeout = Duration::from_secs_f64(args.timeout);
    let url = format!("http://{}{}", target.authority, target.path);
    let outcome = tokio::time::timeout(timeout, check(&target)).await;
    Ok(match outcome {
        Ok(Ok(200)) => ExitCode::SUCCESS,
        Ok(Ok(code)) => {
            eprintln!("ddbguard: unhealthy: {url} answered {code}");
            ExitCode::from(1)
        }
        Ok(Err(e)) => {
            eprintln!("ddbguard: unhealthy: {url}: {e:#}");
            ExitCode::from(1)
        }
        Err(_) => {
            eprintln!("ddbguard: unhealthy: {url}: no answer within {timeout:?}");
            ExitCode::from(1)
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use ddbguard_verify::http::{self, HealthSource, Readiness};
    use std::sync::Arc;

    #[test]
    fn parses_urls() {
        assert_eq!(
            Target::parse("http://127.0.0.1:9464/healthz").unwrap(),
            Target {
                authority: "127.0.0.1:9464".into(),
                path: "/healthz".into()
            }
        );
        assert_eq!(
            Target::parse("http://localhost").unwrap(),
            Target {
                authority: "localhost:80".into(),
                path: "/healthz".into()
            }
        );
        assert_eq!(Target::parse("http://[::1]/readyz").unwrap().authority, "[::1]:80");
        assert_eq!(Target::parse("http://[::1]:9/readyz").unwrap().authority, "[::1]:9");
        assert!(Target::parse("https://x/healthz").is_err());
        assert!(Target::parse("http:///healthz").is_err());
    }

    #[test]
    fn the_local_target_replaces_a_wildcard_address() {
        assert_eq!(
            Target::local("0.0.0.0:9464".parse().unwrap()).authority,
            "127.0.0.1:9464"
        );
        assert_eq!(Target::local("[::]:9464".parse().unwrap()).authority, "[::1]:9464");
        assert_eq!(Target::local("10.0.0.5:1".parse().unwrap()).authority, "10.0.0.5:1");
    }

    struct NotReady;
    impl HealthSource for NotReady {
        fn render_metrics(&self) -> String {
            String::new()
        }
        fn readiness(&self) -> Readiness {
            Readiness::NotReady("starting".into())
        }
    }

    #[tokio::test]
    async fn checks_the_metrics_server() {
        let listener = http::bind("127.0.0.1:0".parse().unwrap()).await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(http::serve(listener, Arc::new(NotReady), std::future::pending()));
        let local = Target::local(addr);
        assert_eq!(check(&local).await.unwrap(), 200);
        let readyz = Target {
            path: "/readyz".into(),
            ..local.clone()
        };
        assert_eq!(check(&readyz).await.unwrap(), 503);

        let args = |url: String| HealthArgs {
            url: Some(url),
            metrics_addr: addr,
            timeout: 2.0,
        };
        assert_eq!(
            run(args(format!("http://{addr}/healthz"))).await.unwrap(),
            ExitCode::SUCCESS
        );
        assert_eq!(
            run(args(format!("http://{addr}/readyz"))).await.unwrap(),
            ExitCode::from(1)
        );
    }

    #[tokio::test]
    async fn a_closed_port_is_unhealthy() {
        // Bind then drop: the port is (almost certainly) closed now.
        let addr = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .unwrap()
            .local_addr()
            .unwrap();
        let args = HealthArgs {
            url: None,
            metrics_addr: addr,
            timeout: 2.0,
        };
        assert_eq!(run(args).await.unwrap(), ExitCode::from(1));
    }
}
