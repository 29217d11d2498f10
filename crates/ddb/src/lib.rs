//! The one DynamoDB adapter of ddbguard.
//!
//! Every DynamoDB data-plane and table call of the workspace goes through [`DynamoApi`]: typed
//! [`Condition`]s and [`Update`]s instead of expression strings, one error type ([`DdbError`]) with one
//! classification ([`ErrorKind`]), the consumed capacity of every data call ([`Consumed`]), and
//! [`ensure_table`], the single place that creates a table if it is missing and waits until it is ACTIVE.
//!
//! Implementations: [`SdkDynamo`] over `aws_sdk_dynamodb::Client`; behind the `fake` feature, [`FakeDynamo`]
//! (in-memory tables that evaluate conditions, transactions and scan segments the way DynamoDB does) and
//! [`FaultyDynamo`] (injects errors, unprocessed keys and latency into any implementation).
//!
//! Module map: [`expr`] (conditions, updates, their rendering to expressions), [`error`] (classification),
//! [`api`] (the trait and its typed inputs and outputs), [`sdk`], [`backoff`] (jittered exponential backoff), [`size`] (item sizes and capacity units as DynamoDB bills them),
//! `fake`.

#![warn(missing_docs)]

pub mod api;
pub mod backoff;
pub mod error;
pub mod expr;
#[cfg(any(test, feature = "fake"))]
pub mod fake;
pub mod sdk;
pub mod size;

use std::collections::HashMap;

pub use aws_sdk_dynamodb::types::AttributeValue;

pub use api::{
    BatchGetOutput, BillingMode, Consumed, DynamoApi, EnsuredTable, GetItemOutput, KeyAttribute, KeySchema, Page,
    PartitionQuery, ReturnValues, ScalarType, ScanSegment, StreamInfo, TableDescription, TableSpec, TableStatus,
    UpdateItemOutput, WriteOp, ensure_table,
};
pub use backoff::Backoff;
pub use error::{DdbError, ErrorKind};
pub use expr::{Condition, Update, UpdateAction};
#[cfg(any(test, feature = "fake"))]
pub use fake::{FakeDynamo, FaultyDynamo, Op};
pub use sdk::SdkDynamo;
pub use size::item_size;

/// An item (or a key): attribute name to value, as the SDK represents it.
pub type Item = HashMap<String, AttributeValue>;
