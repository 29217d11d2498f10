//! The check the engine and the audit both make before scanning a table: it exists in the region and its
//! primary key is exactly the configured one.
//!
//! Exactly, not "contains": a configuration that names only the partition key of a table with a sort key would
//! encrypt items whose key attributes the DB-ESDK configuration does not sign as keys (and scan keys it cannot
//! rebuild), and one that names a sort key the table lacks cannot address any item.

use ddbguard_ddb::{DdbError, DynamoApi, ErrorKind, TableDescription};
use thiserror::Error;

/// Why a table cannot be scanned under its configuration.
#[derive(Debug, Error)]
pub enum TableCheckError {
    /// The table is not in the region.
    #[error("table {table:?} does not exist in {region}")]
    NotFound {
        /// The table.
        table: String,
        /// The region.
        region: String,
    },
    /// `DescribeTable` failed otherwise.
    #[error("{region}: {source}")]
    Describe {
        /// The region.
        region: String,
        /// The failure.
        #[source]
        source: DdbError,
    },
    /// The table's key attributes differ from the configured ones.
    #[error(
        "table {table:?} in {region} has the key {actual} but the configuration names {configured}: check \
         partition_key / sort_key"
    )]
    KeyMismatch {
        /// The table.
        table: String,
        /// The region.
        region: String,
        /// The table's key attribute names, sorted, comma-separated.
        actual: String,
        /// The configured key attribute names, sorted, comma-separated.
        configured: String,
    },
}

/// Describes `table` in `region` and checks that its key attributes are exactly `key_names` (in any order).
pub async fn describe_keyed<D: DynamoApi>(
    db: &D,
    table: &str,
    region: &str,
    key_names: &[&str],
) -> Result<TableDescription, TableCheckError> {
    let description = match db.describe_table(table).await {
        Ok(d) => d,
        Err(e) if e.kind == ErrorKind::NotFound => {
            return Err(TableCheckError::NotFound {
                table: table.to_owned(),
                region: region.to_owned(),
            });
        }
        Err(source) => {
            return Err(TableCheckError::Describe {
                region: region.to_owned(),
                source,
            });
        }
    };
    let mut actual: Vec<&str> = description.key_schema.names().collect();
    let mut configured: Vec<&str> = key_names.to_vec();
    actual.sort_unstable();
    configured.sort_unstable();
    if actual != configured {
        return Err(TableCheckError::KeyMismatch {
            table: table.to_owned(),
            region: region.to_owned(),
            actual: actual.join(", "),
            configured: configured.join(", "),
        });
    }
    Ok(description)
}

#[cfg(test)]
mod tests {
    use ddbguard_ddb::{FakeDynamo, KeyAttribute, KeySchema, ScalarType, TableSpec};

    use super::*;

    #[tokio::test]
    async fn the_key_must_be_exactly_the_configured_one() {
        let db = FakeDynamo::new();
        db.add_table(TableSpec::on_demand(
            "orders",
            KeySchema {
                hash: KeyAttribute::new("pk", ScalarType::S),
                range: Some(KeyAttribute::new("sk", ScalarType::N)),
            },
        ));
        let d = describe_keyed(&db, "orders", "eu-west-1", &["sk", "pk"]).await.unwrap();
        assert_eq!(d.key_schema.names().collect::<Vec<_>>(), ["pk", "sk"]);
        // A subset (the engine used to accept it) and a superset are both refused, naming both keys.
        for configured in [&["pk"][..], &["pk", "sk", "x"][..]] {
            let e = describe_keyed(&db, "orders", "eu-west-1", configured)
                .await
                .unwrap_err();
            assert!(matches!(e, TableCheckError::KeyMismatch { .. }), "{e}");
            let text = e.to_string();
            assert!(
                text.contains("has the key pk, sk") && text.contains("partition_key"),
                "{text}"
            );
        }
        let e = describe_keyed(&db, "missing", "eu-west-1", &["pk"]).await.unwrap_err();
        assert!(matches!(e, TableCheckError::NotFound { .. }), "{e}");
    }
}
