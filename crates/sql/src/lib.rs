//! The SQL side of ddbguard: Aurora Global Database (PostgreSQL) columns encrypted client-side with the AWS
//! Encryption SDK under a KMS multi-Region key.
//!
//! The same two promises as on DynamoDB — every row replicates, and every protected value decrypts with the local
//! replica of the key — checked on a region's reader: [`audit`] (one pass, optionally compared with the primary),
//! and backfill of plaintext columns on the primary. Every protected value gets one [`ddbguard_dbe::Verdict`] from
//! one judge ([`cipher::judge`]); the AWS Encryption SDK itself sits behind [`cipher::ValueCipher`].
//!
//! Modules: [`table`] (the typed table configuration and the SQL built from it), [`conn`] (connection strings and
//! passwords), [`backfill`], [`cipher`] (the cipher trait and the judge), [`esdk`] (the AWS Encryption SDK cipher), [`scan`] (keyset pagination), [`audit`], [`verify`] (incremental, full passes, [`canary`]), [`metrics`].
#![warn(missing_docs)]

pub mod audit;
pub mod backfill;
pub mod canary;
pub mod cipher;
pub mod conn;
pub mod esdk;
pub mod metrics;
pub mod scan;
pub mod table;
pub mod tls;
pub mod verify;

pub use audit::{AuditConfig, AuditReport, audit};
pub use backfill::{BackfillConfig, BackfillReport, backfill};
pub use cipher::{Stored, ValueCipher};
pub use conn::{Credentials, connect};
pub use esdk::EsdkCipher;
pub use scan::BoundTable;
pub use table::{ContextTemplate, Encoding, ProtectedColumn, SqlTable};

/// A failure of the SQL side: the database refused or failed, or the table does not match its configuration.
#[derive(Debug, thiserror::Error)]
pub enum SqlError {
    /// The connection could not be made (the target is shown without any password).
    #[error("cannot connect to {target}: {message}")]
    Connect {
        /// The connection string, redacted.
        target: String,
        /// Why.
        message: String,
    },
    /// The table in the database does not match the configuration.
    #[error("table {table:?}: {message}")]
    Schema {
        /// The configured table name.
        table: String,
        /// What is wrong.
        message: String,
    },
    /// A statement failed.
    #[error("table {table:?}: {message}")]
    Query {
        /// The table the statement was for.
        table: String,
        /// The database's message (statements carry values as parameters, so it holds no column value).
        message: String,
        /// The SQLSTATE, when the database answered with an error.
        sqlstate: Option<String>,
    },
}

impl SqlError {
    pub(crate) fn query(table: &str, e: tokio_postgres::Error) -> SqlError {
        // `Display` of a database error is its message only; the detail (which could quote a value) is left out.
        let message = match e.as_db_error() {
            Some(db) => format!("{}: {}", db.code().code(), db.message()),
            None => e.to_string(),
        };
        SqlError::Query {
            table: table.to_owned(),
            message,
            sqlstate: e.code().map(|c| c.code().to_owned()),
        }
    }

    /// Whether the database refused the statement for the values it carried — a data exception (class 22, e.g. a
    /// value too long for its column), an integrity constraint (class 23: a check, a unique index) or an error a
    /// trigger raised (`P0001`) — so that the same statement for another row may succeed. Anything else (the
    /// connection, a missing table or column, privileges, a timeout) concerns every row.
    pub fn rejects_values(&self) -> bool {
        match self {
            SqlError::Query {
                sqlstate: Some(state), ..
            } => state.starts_with("22") || state.starts_with("23") || state == "P0001",
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::SqlError;

    fn query(sqlstate: Option<&str>) -> SqlError {
        SqlError::Query {
            table: "t".into(),
            message: "m".into(),
            sqlstate: sqlstate.map(str::to_owned),
        }
    }

    #[test]
    fn only_errors_about_the_values_reject_values() {
        for state in ["22001", "23514", "23505", "P0001"] {
            assert!(query(Some(state)).rejects_values(), "{state}");
        }
        for state in ["42P01", "42501", "08006", "57014", "40P01"] {
            assert!(!query(Some(state)).rejects_values(), "{state}");
        }
        assert!(!query(None).rejects_values());
        let schema = SqlError::Schema {
            table: "t".into(),
            message: "m".into(),
        };
        assert!(!schema.rejects_values());
    }
}
