//! Records of applied migrations in the ledger table.
//!
//! The ledger table is the lease table of the backfill's segments (hash key `lease_key`, S). A migration's record
//! lives beside the segment leases, in a layout the lease coordinator reads as a finished lease of no job:
//! - `lease_key` = `migration#<id>` — never of the `<table>/<job>/<total>/<segment>` form of segment leases, so no
//!   run ever counts, takes or waits for it;
//! - `finished` = `true`, no `lease_owner`: were a coordinator to look at it, it is done and free;
//! - `migration` (S, the id), `table` (S), `region` (S, where it ran), `checksum` (S, SHA-256 of the file, hex),
//!   `applied_at_ms` (N, Unix epoch milliseconds) and `report` (S, the run's counters as JSON).
//!
//! A record is written once, with a condition that it does not exist yet.

use std::collections::HashMap;
use std::time::{SystemTime, UNIX_EPOCH};

use ddbguard_ddb::{AttributeValue, Condition, DdbError, DynamoApi, ErrorKind, Item};
use ddbguard_lease::LeaseTable;

/// The prefix of migration records' keys.
pub const RECORD_PREFIX: &str = "migration#";

/// An applied migration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MigrationRecord {
    /// The migration id (file stem).
    pub id: String,
    /// The table it rewrote.
    pub table: String,
    /// The region it ran in.
    pub region: String,
    /// SHA-256 of the migration file, hex.
    pub checksum: String,
    /// When it finished, Unix epoch milliseconds.
    pub applied_at_ms: u64,
    /// The run's counters (JSON).
    pub report: String,
}

fn key_attribute(ledger_table: &str) -> String {
    LeaseTable::new(ledger_table).key_attribute
}

fn key(ledger_table: &str, id: &str) -> Item {
    HashMap::from([(
        key_attribute(ledger_table),
        AttributeValue::S(format!("{RECORD_PREFIX}{id}")),
    )])
}

/// Milliseconds since the Unix epoch, now.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// The record of migration `id`, if it was applied. A missing ledger table means nothing was applied.
pub async fn read_record<D: DynamoApi>(
    db: &D,
    ledger_table: &str,
    id: &str,
) -> Result<Option<MigrationRecord>, DdbError> {
    let out = match db.get_item(ledger_table, key(ledger_table, id), true).await {
        Ok(out) => out,
        Err(e) if e.kind == ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    let Some(item) = out.item else { return Ok(None) };
    let s = |name: &str| match item.get(name) {
        Some(AttributeValue::S(s)) => s.clone(),
        _ => String::new(),
    };
    let applied_at_ms = match item.get("applied_at_ms") {
        Some(AttributeValue::N(n)) => n.parse().unwrap_or(0),
        _ => 0,
    };
    Ok(Some(MigrationRecord {
        id: s("migration"),
        table: s("table"),
        region: s("region"),
        checksum: s("checksum"),
        applied_at_ms,
        report: s("report"),
    }))
}

/// Writes the record of an applied migration; [`ErrorKind::Conflict`] if one exists already.
pub async fn write_record<D: DynamoApi>(db: &D, ledger_table: &str, record: &MigrationRecord) -> Result<(), DdbError> {
    let mut item = key(ledger_table, &record.id);
    for (name, value) in [
        ("migration", &record.id),
        ("table", &record.table),
        ("region", &record.region),
        ("checksum", &record.checksum),
        ("report", &record.report),
    ] {
        item.insert(name.to_owned(), AttributeValue::S(value.clone()));
    }
    item.insert(
        "applied_at_ms".into(),
        AttributeValue::N(record.applied_at_ms.to_string()),
    );
    item.insert("finished".into(), AttributeValue::Bool(true));
    db.put_item(
        ledger_table,
        item,
        Some(Condition::not_exists(key_attribute(ledger_table))),
    )
    .await
    .map(|_| ())
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use ddbguard_ddb::fake::FakeDynamo;
    use ddbguard_lease::{DynamoLeaseStore, LeaseStore};

    use super::*;

    fn record() -> MigrationRecord {
        MigrationRecord {
            id: "0001_encrypt".into(),
            table: "Orders".into(),
            region: "us-east-1".into(),
            checksum: "ab".repeat(32),
            applied_at_ms: 1_700_000_000_000,
            report: "{\"encrypted\":3}".into(),
        }
    }

    #[tokio::test]
    async fn records_round_trip_and_look_like_finished_leases_of_no_job() {
        let db = Arc::new(FakeDynamo::new());
        // No ledger table yet: nothing applied.
        assert_eq!(read_record(&db, "ledger", "0001_encrypt").await.unwrap(), None);
        let store = DynamoLeaseStore::new(db.clone(), LeaseTable::new("ledger"));
        store.initialize().await.unwrap();
        write_record(&db, "ledger", &record()).await.unwrap();
        assert_eq!(
            read_record(&db, "ledger", "0001_encrypt").await.unwrap(),
            Some(record())
        );
        assert_eq!(read_record(&db, "ledger", "0002_other").await.unwrap(), None);
        // Written once only.
        let again = write_record(&db, "ledger", &record()).await.unwrap_err();
        assert_eq!(again.kind, ErrorKind::Conflict);
        // The lease store parses it as a finished, unowned lease outside every `<table>/<job>/` prefix.
        let leases = store.list_leases().await.unwrap();
        assert_eq!(leases.len(), 1);
        assert!(leases[0].finished && leases[0].owner.is_none());
        assert!(leases[0].key.starts_with(RECORD_PREFIX) && !leases[0].key.contains('/'));
    }
}
