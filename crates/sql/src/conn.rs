//! Connecting to PostgreSQL: the connection string from the configuration (which never holds a password), the
//! password from `PGPASSWORD` or the PostgreSQL password file (`PGPASSFILE`, else `~/.pgpass`), as libpq does,
//! and TLS by the string's `sslmode` ([`crate::tls`]).

use std::path::{Path, PathBuf};

use tokio_postgres::config::Host;
use tokio_postgres::{Client, Config};
use zeroize::Zeroizing;

use crate::SqlError;

/// Where passwords come from.
#[derive(Clone, Default)]
pub struct Credentials {
    password: Option<Zeroizing<String>>,
    passfile: Option<PathBuf>,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .field("passfile", &self.passfile)
            .finish()
    }
}

impl Credentials {
    /// libpq's sources: `PGPASSWORD`, else the file `PGPASSFILE` names, else `$HOME/.pgpass`. `env` looks up
    /// environment variables (`std::env::var` in the binary).
    pub fn from_env(env: &dyn Fn(&str) -> Option<String>) -> Credentials {
        let password = env("PGPASSWORD").filter(|p| !p.is_empty()).map(Zeroizing::new);
        let passfile = env("PGPASSFILE")
            .filter(|p| !p.is_empty())
            .map(PathBuf::from)
            .or_else(|| env("HOME").map(|h| Path::new(&h).join(".pgpass")));
        Credentials { password, passfile }
    }

    /// Passwords from this password file only.
    pub fn passfile(path: impl Into<PathBuf>) -> Credentials {
        Credentials {
            password: None,
            passfile: Some(path.into()),
        }
    }

    /// The password for a connection, if any source has one.
    fn lookup(&self, host: &str, port: u16, database: &str, user: &str) -> Option<Zeroizing<String>> {
        if let Some(p) = &self.password {
            return Some(p.clone());
        }
        let text = Zeroizing::new(std::fs::read_to_string(self.passfile.as_ref()?).ok()?);
        passfile_lookup(&text, host, port, database, user)
    }
}

/// The password of the first matching line of a password file (`host:port:database:user:password`, `*`
/// matches anything, `\:` and `\\` escape).
pub fn passfile_lookup(text: &str, host: &str, port: u16, database: &str, user: &str) -> Option<Zeroizing<String>> {
    let port = port.to_string();
    for line in text.lines() {
        if line.starts_with('#') || line.trim().is_empty() {
            continue;
        }
        let fields = split_passfile_line(line);
        let [h, p, d, u, pw] = fields.as_slice() else {
            continue;
        };
        let hit = |field: &str, value: &str| field == "*" || field == value;
        if hit(h, host) && hit(p, &port) && hit(d, database) && hit(u, user) {
            return Some(Zeroizing::new(pw.clone()));
        }
    }
    None
}

fn split_passfile_line(line: &str) -> Vec<String> {
    let mut fields = vec![String::new()];
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => {
                if let Some(next) = chars.next()
                    && let Some(last) = fields.last_mut()
                {
                    last.push(next);
                }
            }
            // Only the first four colons separate; the password may contain more.
            ':' if fields.len() < 5 => fields.push(String::new()),
            c => {
                if let Some(last) = fields.last_mut() {
                    last.push(c);
                }
            }
        }
    }
    fields
}

/// A connection string with any password removed, for messages.
pub fn redact(url: &str) -> String {
    let url = crate::tls::split_tls_options(url).map_or_else(|_| url.to_owned(), |(rest, _)| rest);
    match url.parse::<Config>() {
        Ok(config) => {
            let hosts: Vec<String> = config
                .get_hosts()
                .iter()
                .zip(config.get_ports().iter().chain(std::iter::repeat(&5432)))
                .map(|(h, p)| match h {
                    Host::Tcp(h) => format!("{h}:{p}"),
                    Host::Unix(path) => path.display().to_string(),
                })
                .collect();
            format!(
                "postgresql://{}@{}/{}",
                config.get_user().unwrap_or(""),
                hosts.join(","),
                config.get_dbname().unwrap_or("")
            )
        }
        Err(_) => "<unparsable connection string>".to_owned(),
    }
}

/// An error and its causes, `error: cause: cause`. tokio-postgres leaves the cause out of its message, and "error
/// performing TLS handshake" alone does not say that the certificate is not trusted (nor "db error" which
/// server error it was). Connection-time causes carry no row data.
fn with_causes(error: &(dyn std::error::Error + 'static)) -> String {
    let mut message = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let text = cause.to_string();
        if !message.ends_with(&text) {
            message.push_str(": ");
            message.push_str(&text);
        }
        source = cause.source();
    }
    message
}

/// Opens a connection and drives it on the runtime; the connection ends when the [`Client`] is dropped.
///
/// `application_name` is set to `ddbguard` so operators see the connections in `pg_stat_activity`.
pub async fn connect(url: &str, credentials: &Credentials) -> Result<Client, SqlError> {
    let (rest, tls) = crate::tls::split_tls_options(url).map_err(|e| SqlError::Connect {
        target: redact(url),
        message: e.to_string(),
    })?;
    let mut config: Config = rest.parse().map_err(|e| SqlError::Connect {
        target: redact(url),
        message: format!("invalid connection string: {e}"),
    })?;
    if config.get_password().is_some() {
        return Err(SqlError::Connect {
            target: redact(url),
            message: "the connection string holds a password: use PGPASSWORD or a password file".into(),
        });
    }
    if config.get_application_name().is_none() {
        config.application_name("ddbguard");
    }
    let user = config.get_user().unwrap_or("").to_owned();
    let database = config.get_dbname().unwrap_or(&user).to_owned();
    if let Some(Host::Tcp(host)) = config.get_hosts().first() {
        let port = config.get_ports().first().copied().unwrap_or(5432);
        if let Some(password) = credentials.lookup(host, port, &database, &user) {
            config.password(password.as_bytes());
        }
    }
    config.ssl_mode(tls.pg_mode());
    let connector = tls.connector().map_err(|e| SqlError::Connect {
        target: redact(url),
        message: e.to_string(),
    })?;
    let (client, connection) = config.connect(connector).await.map_err(|e| SqlError::Connect {
        target: redact(url),
        message: with_causes(&e),
    })?;
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::warn!(error = %e, "postgres connection ended");
        }
    });
    Ok(client)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connect_errors_say_why() {
        #[derive(Debug, thiserror::Error)]
        #[error("error performing TLS handshake")]
        struct Outer(#[source] Middle);
        #[derive(Debug, thiserror::Error)]
        #[error("invalid peer certificate: UnknownIssuer")]
        struct Middle(#[source] std::io::Error);
        let e = Outer(Middle(std::io::Error::other("invalid peer certificate: UnknownIssuer")));
        // A cause that repeats the previous message (io::Error wrapping the rustls error) is said once.
        assert_eq!(
            with_causes(&e),
            "error performing TLS handshake: invalid peer certificate: UnknownIssuer"
        );
    }

    #[test]
    fn passfile_lines_match_like_libpq() {
        let text = "# comment\n\
                    other:5432:*:app:wrong\n\
                    127.0.0.1:5433:*:app:p\\:w:d\n\
                    *:*:*:*:fallback\n";
        assert_eq!(
            passfile_lookup(text, "127.0.0.1", 5433, "app", "app")
                .as_deref()
                .map(String::as_str),
            Some("p:w:d")
        );
        assert_eq!(
            passfile_lookup(text, "127.0.0.1", 5434, "app", "app")
                .as_deref()
                .map(String::as_str),
            Some("fallback")
        );
        assert_eq!(passfile_lookup("h:1:d:u", "h", 1, "d", "u"), None);
    }

    #[test]
    fn environment_password_wins_and_urls_are_redacted() {
        let env = |k: &str| match k {
            "PGPASSWORD" => Some("secret".to_owned()),
            "HOME" => Some("/nonexistent".to_owned()),
            _ => None,
        };
        let c = Credentials::from_env(&env);
        assert_eq!(
            c.lookup("h", 1, "d", "u").as_deref().map(String::as_str),
            Some("secret")
        );
        assert!(!format!("{c:?}").contains("secret"));
        assert_eq!(
            redact("postgresql://app:hunter2@db.example:5433/app"),
            "postgresql://app@db.example:5433/app"
        );
        assert_eq!(
            redact("postgresql://app:hunter2@db.example/app?sslmode=verify-full&sslrootcert=/etc/ca.pem"),
            "postgresql://app@db.example:5432/app"
        );
    }

    #[tokio::test]
    async fn a_password_in_the_connection_string_is_refused() {
        let err = connect("postgresql://app:hunter2@127.0.0.1:1/app", &Credentials::default())
            .await
            .unwrap_err();
        assert!(err.to_string().contains("PGPASSWORD"), "{err}");
        assert!(!err.to_string().contains("hunter2"), "{err}");
    }

    #[tokio::test]
    async fn an_unsupported_sslmode_is_a_connect_error_naming_it() {
        let err = connect(
            "postgresql://app@127.0.0.1:1/app?sslmode=verify-ca",
            &Credentials::default(),
        )
        .await
        .unwrap_err();
        assert!(matches!(err, SqlError::Connect { .. }), "{err}");
        assert!(err.to_string().contains("verify-ca"), "{err}");
    }

    #[tokio::test]
    async fn require_against_a_server_without_tls_fails_and_disable_gets_past_tls() {
        // A listener that answers the TLS request with 'N' (no TLS), as a server without ssl = on does, then
        // closes: `require` must stop there; `disable` never asks and fails later, on the closed socket.
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let server = std::thread::spawn(move || {
            use std::io::{Read, Write};
            let mut seen = Vec::new();
            for _ in 0..2 {
                let (mut socket, _) = listener.accept().unwrap();
                let mut request = [0u8; 8];
                socket.read_exact(&mut request).unwrap();
                seen.push(request);
                let _ = socket.write_all(b"N");
            }
            seen
        });
        let url = |mode: &str| format!("postgresql://app@127.0.0.1:{port}/app?sslmode={mode}");
        let err = connect(&url("require"), &Credentials::default()).await.unwrap_err();
        assert!(err.to_string().to_lowercase().contains("tls"), "{err}");
        let _ = connect(&url("disable"), &Credentials::default()).await;
        let seen = server.join().unwrap();
        // The SSLRequest code 80877103 first, then a plain startup message (protocol 3.0).
        assert_eq!(&seen[0][4..], &80_877_103u32.to_be_bytes());
        assert_eq!(&seen[1][4..], &196_608u32.to_be_bytes());
    }
}
