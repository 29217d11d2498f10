//! TLS for the PostgreSQL connections, chosen by the connection string's `sslmode` as libpq does.
//!
//! Aurora PostgreSQL 15 defaults to `rds.force_ssl = 1`, so plaintext connections are refused there. tokio-postgres
//! parses only `disable`, `prefer` and `require` and knows no `sslrootcert`, so both are taken out of the
//! connection string here before it is parsed:
//!
//! - `disable`: no TLS.
//! - `prefer` (libpq's default): TLS when the server offers it, plaintext otherwise; the certificate is not
//!   checked (as libpq without a root certificate).
//! - `require`: TLS or no connection; the certificate is not checked (as libpq without a root certificate).
//! - `verify-full`: TLS, the chain checked against `sslrootcert` (a PEM file, e.g. the RDS global bundle) or, when
//!   absent or `system`, the platform's trust store, and the host name checked against the certificate.
//!
//! `verify-ca` (chain without host name) is refused rather than silently weakened or strengthened.

use std::path::PathBuf;
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
use tokio_postgres::config::SslMode as PgSslMode;
use tokio_postgres_rustls::MakeRustlsConnect;

/// The `sslmode` values ddbguard honours.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SslMode {
    /// No TLS.
    Disable,
    /// TLS when offered, certificate not checked; libpq's default.
    #[default]
    Prefer,
    /// TLS required, certificate not checked.
    Require,
    /// TLS required, chain and host name checked.
    VerifyFull,
}

/// The TLS settings taken out of a connection string.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TlsSettings {
    /// `sslmode`.
    pub mode: SslMode,
    /// `sslrootcert`: a PEM file of trusted roots; `None` (or `system`) is the platform's trust store.
    pub root_cert: Option<PathBuf>,
}

/// Why the TLS settings cannot be used. Messages name options and paths, never the connection string.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// An `sslmode` value ddbguard does not honour.
    #[error("sslmode={0:?} is not supported (use disable, prefer, require or verify-full)")]
    UnsupportedMode(String),
    /// `sslrootcert` could not be read or holds no certificate.
    #[error("sslrootcert {path}: {message}")]
    RootCert {
        /// The file.
        path: PathBuf,
        /// Why.
        message: String,
    },
    /// The platform trust store could not be loaded.
    #[error("the platform trust store: {0}")]
    TrustStore(String),
    /// rustls refused the configuration.
    #[error("TLS configuration: {0}")]
    Config(String),
}

impl TlsSettings {
    /// The mode tokio-postgres negotiates with: it only knows whether TLS is optional or required.
    pub fn pg_mode(&self) -> PgSslMode {
        match self.mode {
            SslMode::Disable => PgSslMode::Disable,
            SslMode::Prefer => PgSslMode::Prefer,
            SslMode::Require | SslMode::VerifyFull => PgSslMode::Require,
        }
    }

    /// The rustls connector for these settings (unused by tokio-postgres with `disable`).
    pub fn connector(&self) -> Result<MakeRustlsConnect, TlsError> {
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let builder = ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| TlsError::Config(e.to_string()))?;
        let config = match self.mode {
            SslMode::VerifyFull => builder.with_root_certificates(self.roots()?).with_no_client_auth(),
            SslMode::Disable | SslMode::Prefer | SslMode::Require => builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(EncryptOnly(provider)))
                .with_no_client_auth(),
        };
        Ok(MakeRustlsConnect::new(config))
    }

    fn roots(&self) -> Result<RootCertStore, TlsError> {
        let mut roots = RootCertStore::empty();
        match &self.root_cert {
            Some(path) => {
                let certs = CertificateDer::pem_file_iter(path)
                    .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
                    .map_err(|e| TlsError::RootCert {
                        path: path.clone(),
                        message: e.to_string(),
                    })?;
                let (added, _) = roots.add_parsable_certificates(certs);
                if added == 0 {
                    return Err(TlsError::RootCert {
                        path: path.clone(),
                        message: "no usable certificate".into(),
                    });
                }
            }
            None => {
                let loaded = rustls_native_certs::load_native_certs();
                if let Some(e) = loaded.errors.first()
                    && loaded.certs.is_empty()
                {
                    return Err(TlsError::TrustStore(e.to_string()));
                }
                roots.add_parsable_certificates(loaded.certs);
            }
        }
        Ok(roots)
    }
}

/// Takes `sslmode` and `sslrootcert` out of a connection string (URL `?a=b&c=d` or `key=value` form), returning
/// the rest for tokio-postgres and the TLS settings. Other options are left as they are.
pub fn split_tls_options(conn: &str) -> Result<(String, TlsSettings), TlsError> {
    let mut settings = TlsSettings::default();
    let mut take = |key: &str, value: String| -> Result<bool, TlsError> {
        match key {
            "sslmode" => {
                settings.mode = match value.as_str() {
                    "disable" => SslMode::Disable,
                    "prefer" => SslMode::Prefer,
                    "require" => SslMode::Require,
                    "verify-full" => SslMode::VerifyFull,
                    _ => return Err(TlsError::UnsupportedMode(value)),
                };
                Ok(true)
            }
            "sslrootcert" => {
                settings.root_cert = (value != "system").then(|| PathBuf::from(value));
                Ok(true)
            }
            _ => Ok(false),
        }
    };
    let rest = if conn.starts_with("postgres://") || conn.starts_with("postgresql://") {
        match conn.split_once('?') {
            None => conn.to_owned(),
            Some((base, query)) => {
                let mut kept = Vec::new();
                for pair in query.split('&').filter(|p| !p.is_empty()) {
                    let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
                    if !take(key, percent_decode(value))? {
                        kept.push(pair);
                    }
                }
                if kept.is_empty() {
                    base.to_owned()
                } else {
                    format!("{base}?{}", kept.join("&"))
                }
            }
        }
    } else {
        let mut kept = Vec::new();
        for token in conn.split_whitespace() {
            let (key, value) = token.split_once('=').unwrap_or((token, ""));
            if !take(key.trim(), value.trim_matches('\'').to_owned())? {
                kept.push(token);
            }
        }
        kept.join(" ")
    };
    Ok((rest, settings))
}

/// `%XX` escapes of a URL query value (a path may carry `%2F` or `%20`); anything malformed is kept as is.
fn percent_decode(value: &str) -> String {
    let bytes = value.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (bytes[i], hex) {
            (b'%', Some(b)) => {
                out.push(b);
                i += 3;
            }
            (c, _) => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// `prefer` and `require` as libpq without a root certificate: the session is encrypted, the peer is not
/// authenticated. Handshake signatures are still checked, so the session keys belong to the presented certificate.
#[derive(Debug)]
struct EncryptOnly(Arc<CryptoProvider>);

impl ServerCertVerifier for EncryptOnly {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split(conn: &str) -> (String, TlsSettings) {
        split_tls_options(conn).unwrap()
    }

    #[test]
    fn libpq_default_is_prefer_and_the_string_is_untouched() {
        let (rest, s) = split("postgresql://app@db.example:5432/app");
        assert_eq!(rest, "postgresql://app@db.example:5432/app");
        assert_eq!(s, TlsSettings::default());
        assert_eq!(s.mode, SslMode::Prefer);
        assert_eq!(s.pg_mode(), PgSslMode::Prefer);
    }

    #[test]
    fn url_options_are_taken_out_and_others_kept() {
        let (rest, s) = split(
            "postgresql://app@db.example/app?connect_timeout=5&sslmode=verify-full&sslrootcert=%2Fetc%2Frds%20ca.pem",
        );
        assert_eq!(rest, "postgresql://app@db.example/app?connect_timeout=5");
        assert_eq!(s.mode, SslMode::VerifyFull);
        assert_eq!(s.root_cert, Some(PathBuf::from("/etc/rds ca.pem")));
        assert_eq!(s.pg_mode(), PgSslMode::Require);
        rest.parse::<tokio_postgres::Config>().unwrap();

        let (rest, s) = split("postgres://app@h/app?sslmode=disable");
        assert_eq!((rest.as_str(), s.mode), ("postgres://app@h/app", SslMode::Disable));
        assert_eq!(s.pg_mode(), PgSslMode::Disable);
        let (_, s) = split("postgres://app@h/app?sslmode=require&sslrootcert=system");
        assert_eq!((s.mode, s.root_cert), (SslMode::Require, None));
    }

    #[test]
    fn key_value_options_are_taken_out() {
        let (rest, s) = split("host=db.example user=app sslmode=require dbname=app");
        assert_eq!(rest, "host=db.example user=app dbname=app");
        assert_eq!(s.mode, SslMode::Require);
        assert_eq!(s.pg_mode(), PgSslMode::Require);
    }

    #[test]
    fn unsupported_modes_are_refused() {
        for mode in ["verify-ca", "allow", "VERIFY-FULL", ""] {
            let e = split_tls_options(&format!("postgresql://app@h/app?sslmode={mode}")).unwrap_err();
            assert!(matches!(&e, TlsError::UnsupportedMode(m) if m == mode), "{mode}: {e}");
        }
    }

    #[test]
    fn a_root_cert_file_without_certificates_is_refused() {
        let dir = std::env::temp_dir().join(format!("ddbguard-tls-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let empty = dir.join("empty.pem");
        std::fs::write(&empty, "not a certificate\n").unwrap();
        let settings = TlsSettings {
            mode: SslMode::VerifyFull,
            root_cert: Some(empty.clone()),
        };
        let Err(e) = settings.connector() else {
            panic!("a file without certificates was accepted");
        };
        assert!(matches!(&e, TlsError::RootCert { path, .. } if *path == empty), "{e}");
        let missing = TlsSettings {
            mode: SslMode::VerifyFull,
            root_cert: Some(dir.join("missing.pem")),
        };
        assert!(matches!(missing.connector(), Err(TlsError::RootCert { .. })));
        // Without verification no file is read.
        let require = TlsSettings {
            mode: SslMode::Require,
            root_cert: Some(dir.join("missing.pem")),
        };
        assert!(require.connector().is_ok());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
