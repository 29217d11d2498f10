//! One page of a parallel scan, read within a read-capacity budget: the step the backfill engine and the audit
//! share.
//!
//! What is common to both: wait until the read budget is not in debt, scan one page of one segment, charge the
//! capacity it consumed (DynamoDB's figure, or an estimate from the items' sizes where the endpoint does not
//! report one), and turn a failure into "retry after this jittered delay" or "give up". How to wait (a lease's
//! interruptible pause, a plain sleep) and how many retries to allow stay with the caller.

use std::time::Duration;

use ddbguard_ddb::{Backoff, DdbError, DynamoApi, Item, ScanSegment};

use crate::limiter::Budget;

/// A page read by [`read_page`].
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ScannedPage {
    /// The items.
    pub items: Vec<Item>,
    /// Where the next page starts; `None` (or an empty key) when the segment is done.
    pub last_evaluated_key: Option<Item>,
    /// The items' size as DynamoDB bills it.
    pub bytes: u64,
    /// Read capacity charged to the budget for this page.
    pub read_units: f64,
}

impl ScannedPage {
    /// Whether this was the segment's last page (DynamoDB may end a segment with an empty key).
    pub fn is_last(&self) -> bool {
        self.last_evaluated_key.as_ref().is_none_or(|k| k.is_empty())
    }
}

/// Why [`read_page`] returned no page.
#[derive(Debug)]
pub enum PageError {
    /// Throttled or transient: try again after `delay` (the backoff's next jittered delay).
    Retry {
        /// How long to wait first.
        delay: Duration,
        /// What failed.
        error: DdbError,
    },
    /// Retrying will not help (the table is gone, access denied, a malformed request).
    Fatal(DdbError),
}

/// Reads one page of `scan` from `table` once `budget` allows, and charges what it consumed. `backoff` is reset
/// after a success and advanced after a retryable failure.
pub async fn read_page<D: DynamoApi>(
    db: &D,
    table: &str,
    scan: ScanSegment,
    budget: &Budget,
    backoff: &mut Backoff,
) -> Result<ScannedPage, PageError> {
    budget.ready().await;
    let consistent = scan.consistent;
    match db.scan_segment(table, scan).await {
        Ok(page) => {
            backoff.reset();
            let bytes: usize = page.items.iter().map(ddbguard_ddb::item_size).sum();
            let read_units = if page.consumed.read_units > 0.0 {
                page.consumed.read_units
            } else {
                ddbguard_ddb::size::read_units(bytes, consistent)
            };
            budget.charge(read_units);
            Ok(ScannedPage {
                items: page.items,
                last_evaluated_key: page.last_evaluated_key,
                bytes: bytes as u64,
                read_units,
            })
        }
        Err(error) if error.kind.is_retryable() => Err(PageError::Retry {
            delay: backoff.next_delay(),
            error,
        }),
        Err(error) => Err(PageError::Fatal(error)),
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use ddbguard_ddb::{
        AttributeValue, ErrorKind, FakeDynamo, FaultyDynamo, KeyAttribute, KeySchema, Op, ScalarType, TableSpec,
    };

    use super::*;
    use crate::limiter::BudgetKind;

    fn table(n: usize) -> FaultyDynamo<FakeDynamo> {
        let db = FakeDynamo::new();
        db.add_table(TableSpec::on_demand(
            "T",
            KeySchema {
                hash: KeyAttribute::new("pk", ScalarType::S),
                range: None,
            },
        ));
        for i in 0..n {
            let item = HashMap::from([("pk".to_owned(), AttributeValue::S(format!("k{i}")))]);
            db.put_raw("T", item).unwrap();
        }
        FaultyDynamo::new(db)
    }

    #[tokio::test(start_paused = true)]
    async fn pages_are_charged_and_failures_classified() {
        let db = table(5);
        let budget = Budget::new(BudgetKind::ReadCapacity, None);
        let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(1));
        let scan = ScanSegment {
            segment: 0,
            total_segments: 1,
            limit: Some(3),
            ..ScanSegment::default()
        };

        db.fail_next(Op::Scan, ErrorKind::Throttled, 1);
        match read_page(&db, "T", scan.clone(), &budget, &mut backoff).await {
            Err(PageError::Retry { delay, error }) => {
                assert_eq!(error.kind, ErrorKind::Throttled);
                assert!(delay <= Duration::from_millis(100) && delay >= Duration::from_millis(50));
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(backoff.attempts(), 1);

        let first = read_page(&db, "T", scan.clone(), &budget, &mut backoff).await.unwrap();
        assert_eq!(backoff.attempts(), 0, "a success resets the backoff");
        assert_eq!(first.items.len(), 3);
        assert!(!first.is_last());
        assert!(first.read_units > 0.0);
        assert_eq!(budget.charged(), first.read_units);
        let rest = ScanSegment {
            exclusive_start_key: first.last_evaluated_key.clone(),
            ..scan.clone()
        };
        let second = read_page(&db, "T", rest, &budget, &mut backoff).await.unwrap();
        assert_eq!(second.items.len(), 2);
        assert!(second.is_last());

        match read_page(&db, "Missing", scan, &budget, &mut backoff).await {
            Err(PageError::Fatal(e)) => assert_eq!(e.kind, ErrorKind::NotFound),
            other => panic!("{other:?}"),
        }
    }
}
