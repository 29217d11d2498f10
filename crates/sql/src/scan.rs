//! Keyset-paginated reading of a protected table: `WHERE (key) > (last key) ORDER BY key LIMIT n`, so every page
//! is an index range scan however far the scan has come (no `OFFSET`), and a resumed scan starts where the last
//! page ended.

use tokio_postgres::types::ToSql;
use tokio_postgres::{Client, Row};

use crate::SqlError;
use crate::cipher::Stored;
use crate::table::{Encoding, RowText, SqlTable, Statements};

/// A table checked against the database: the configured columns exist with usable types.
#[derive(Debug, Clone)]
pub struct BoundTable {
    /// The configuration.
    pub table: SqlTable,
    /// The key columns' types.
    pub key_types: Vec<String>,
    /// The statements built for it.
    pub statements: Statements,
}

impl BoundTable {
    /// Reads the table's column types from the catalogue and checks the configuration against them.
    pub async fn bind(client: &Client, table: &SqlTable) -> Result<BoundTable, SqlError> {
        let schema_err = |message: String| SqlError::Schema {
            table: table.name.clone(),
            message,
        };
        let rows = client
            .query(
                "SELECT a.attname::text, format_type(a.atttypid, a.atttypmod) FROM pg_attribute a \
                 WHERE a.attrelid = to_regclass($1::text) AND a.attnum > 0 AND NOT a.attisdropped",
                &[&table.quoted_name()],
            )
            .await
            .map_err(|e| SqlError::query(&table.name, e))?;
        if rows.is_empty() {
            return Err(schema_err("no such table (or no columns visible to this role)".into()));
        }
        let types: std::collections::BTreeMap<String, String> = rows
            .iter()
            .map(|r| (r.get::<_, String>(0), r.get::<_, String>(1)))
            .collect();
        let type_of = |c: &str| {
            types
                .get(c)
                .cloned()
                .ok_or_else(|| schema_err(format!("no column {c:?}")))
        };
        let key_types = table
            .primary_key
            .iter()
            .map(|c| type_of(c))
            .collect::<Result<Vec<_>, _>>()?;
        for col in &table.columns {
            let ty = type_of(&col.name)?;
            if !col.encoding.accepts_type(&ty) {
                return Err(schema_err(format!(
                    "column {:?} is {ty}, which cannot hold encoding {:?}",
                    col.name,
                    col.encoding.as_str()
                )));
            }
        }
        for c in table.text_columns() {
            type_of(&c)?;
        }
        let cursor_type = table.cursor_column.as_deref().map(type_of).transpose()?;
        let statements = Statements::new(table, &key_types, cursor_type.as_deref())?;
        Ok(BoundTable {
            table: table.clone(),
            key_types,
            statements,
        })
    }

    /// One page of at most `limit` rows after `after` (the first page when `None`).
    pub async fn page(
        &self,
        client: &Client,
        after: Option<&[String]>,
        limit: i64,
    ) -> Result<Vec<ScannedRow>, SqlError> {
        let rows = match after {
            None => client.query(&self.statements.first_page, &[&limit]).await,
            Some(key) => {
                let mut params: Vec<&(dyn ToSql + Sync)> = vec![&limit];
                params.extend(key.iter().map(|k| k as &(dyn ToSql + Sync)));
                client.query(&self.statements.next_page, &params).await
            }
        }
        .map_err(|e| SqlError::query(&self.table.name, e))?;
        rows.iter().map(|r| self.decode(r)).collect()
    }

    /// Rows of a statement whose parameters are key values (`by_key`, `range`, `upto`, `after`).
    pub async fn rows_by_keys(
        &self,
        client: &Client,
        statement: &str,
        keys: &[&[String]],
    ) -> Result<Vec<ScannedRow>, SqlError> {
        let params: Vec<&(dyn ToSql + Sync)> = keys
            .iter()
            .flat_map(|k| k.iter().map(|v| v as &(dyn ToSql + Sync)))
            .collect();
        let rows = client
            .query(statement, &params)
            .await
            .map_err(|e| SqlError::query(&self.table.name, e))?;
        rows.iter().map(|r| self.decode(r)).collect()
    }

    /// The next page in (cursor, key) order after `after` (cursor value, key), with each row's cursor value;
    /// `None` when the table has no cursor column.
    pub async fn cursor_page(
        &self,
        client: &Client,
        after: Option<&(String, Vec<String>)>,
        limit: i64,
    ) -> Result<Option<Vec<(ScannedRow, String)>>, SqlError> {
        let (Some(first), Some(next)) = (&self.statements.by_cursor_first, &self.statements.by_cursor) else {
            return Ok(None);
        };
        let rows = match after {
            None => client.query(first, &[&limit]).await,
            Some((cursor, key)) => {
                let mut params: Vec<&(dyn ToSql + Sync)> = vec![&limit, cursor];
                params.extend(key.iter().map(|k| k as &(dyn ToSql + Sync)));
                client.query(next, &params).await
            }
        }
        .map_err(|e| SqlError::query(&self.table.name, e))?;
        let cursor_at = self.statements.text_columns.len() + self.table.columns.len() + 1;
        rows.iter()
            .map(|r| {
                let cursor: String = r.try_get(cursor_at).map_err(|e| SqlError::query(&self.table.name, e))?;
                Ok((self.decode(r)?, cursor))
            })
            .collect::<Result<Vec<_>, _>>()
            .map(Some)
    }

    fn decode(&self, row: &Row) -> Result<ScannedRow, SqlError> {
        let bad = |e: tokio_postgres::Error| SqlError::query(&self.table.name, e);
        let text_columns = &self.statements.text_columns;
        let mut text = RowText::new();
        for (i, c) in text_columns.iter().enumerate() {
            text.insert(c.clone(), row.try_get::<_, Option<String>>(i).map_err(bad)?);
        }
        let key = self
            .table
            .primary_key
            .iter()
            .map(|c| text.get(c).cloned().flatten().unwrap_or_default())
            .collect();
        let mut values = Vec::with_capacity(self.table.columns.len());
        for (j, col) in self.table.columns.iter().enumerate() {
            let i = text_columns.len() + j;
            values.push(match col.encoding {
                Encoding::Base64 => row.try_get::<_, Option<String>>(i).map_err(bad)?.map(Stored::Text),
                Encoding::Bytea => row.try_get::<_, Option<Vec<u8>>>(i).map_err(bad)?.map(Stored::Bytes),
            });
        }
        let digest = row
            .try_get::<_, Option<String>>(text_columns.len() + self.table.columns.len())
            .map_err(bad)?
            .unwrap_or_default();
        Ok(ScannedRow {
            key,
            text,
            values,
            digest,
        })
    }
}

/// One row as read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScannedRow {
    /// The key values as text, in key order.
    pub key: Vec<String>,
    /// The text columns (key and context columns).
    pub text: RowText,
    /// The protected columns' values in configured order; `None` is NULL.
    pub values: Vec<Option<Stored>>,
    /// md5 of the whole row's text form: equal rows have equal digests.
    pub digest: String,
}

impl ScannedRow {
    /// The key as a JSON object `{column: value}` for reports (key values are never protected columns).
    pub fn key_json(&self, table: &SqlTable) -> serde_json::Value {
        table
            .primary_key
            .iter()
            .zip(&self.key)
            .map(|(c, v)| (c.clone(), serde_json::Value::String(v.clone())))
            .collect::<serde_json::Map<_, _>>()
            .into()
    }
}
