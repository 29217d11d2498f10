//! What ddbguard knows about one protected table: its primary key, its encrypted columns and how each is stored,
//! the encryption context the application binds, and the SQL built from that.
//!
//! Identifiers always go through [`quote_ident`]; values always travel as bind parameters. Primary-key values are
//! carried as text (`pk::text`) and cast back to the column's own type in the statement (`CAST($1 AS bigint)`), so
//! keyset pagination and conditional updates work for any key type without a Rust type per PostgreSQL type.

use std::collections::BTreeMap;

use crate::SqlError;

/// How the application stores a column's AWS Encryption SDK message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    /// A `text`/`varchar` column holding the message in standard base64.
    Base64,
    /// A `bytea` column holding the message's bytes.
    Bytea,
}

impl Encoding {
    /// The configuration spelling (`base64`, `bytea`).
    pub fn as_str(self) -> &'static str {
        match self {
            Encoding::Base64 => "base64",
            Encoding::Bytea => "bytea",
        }
    }

    /// Whether a column of the PostgreSQL type `type_name` (as `format_type` prints it) can hold this encoding.
    pub fn accepts_type(self, type_name: &str) -> bool {
        match self {
            Encoding::Base64 => type_name == "text" || type_name.starts_with("character varying"),
            Encoding::Bytea => type_name == "bytea",
        }
    }
}

/// One part of an encryption-context value template.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Literal(String),
    /// `{column}`: the protected column's name.
    Column,
    /// `{row.COL}`: the row's value of `COL`, as PostgreSQL prints it as text.
    Row(String),
}

/// An encryption-context value as configured, e.g. `"{row.id}"` or `"patients/{column}"`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContextTemplate {
    parts: Vec<Part>,
}

impl ContextTemplate {
    /// Parses a template: `{column}` and `{row.COL}` are placeholders, `{{` and `}}` are literal braces.
    pub fn parse(text: &str) -> Result<ContextTemplate, String> {
        let mut parts = Vec::new();
        let mut literal = String::new();
        let mut rest = text;
        while let Some(c) = rest.chars().next() {
            if let Some(after) = rest.strip_prefix("{{") {
                literal.push('{');
                rest = after;
            } else if let Some(after) = rest.strip_prefix("}}") {
                literal.push('}');
                rest = after;
            } else if c == '{' {
                let end = rest
                    .find('}')
                    .ok_or_else(|| format!("unclosed placeholder in {text:?}"))?;
                let name = &rest[1..end];
                let part = if name == "column" {
                    Part::Column
                } else if let Some(col) = name.strip_prefix("row.").filter(|c| !c.is_empty()) {
                    Part::Row(col.to_owned())
                } else {
                    return Err(format!(
                        "unknown placeholder {{{name}}} in {text:?} (use {{column}} or {{row.COLUMN}})"
                    ));
                };
                if !literal.is_empty() {
                    parts.push(Part::Literal(std::mem::take(&mut literal)));
                }
                parts.push(part);
                rest = &rest[end + 1..];
            } else if c == '}' {
                return Err(format!("unmatched }} in {text:?} (write }}}} for a literal brace)"));
            } else {
                literal.push(c);
                rest = &rest[c.len_utf8()..];
            }
        }
        if !literal.is_empty() {
            parts.push(Part::Literal(literal));
        }
        Ok(ContextTemplate { parts })
    }

    /// The row columns this template reads.
    pub fn row_columns(&self) -> impl Iterator<Item = &str> {
        self.parts.iter().filter_map(|p| match p {
            Part::Row(c) => Some(c.as_str()),
            _ => None,
        })
    }

    /// The value for `column` of a row whose text values `row` gives; `None` when a referenced row value is NULL
    /// or absent (the pair cannot be bound, so no context matches).
    pub fn render(&self, column: &str, row: &dyn Fn(&str) -> Option<String>) -> Option<String> {
        let mut out = String::new();
        for part in &self.parts {
            match part {
                Part::Literal(s) => out.push_str(s),
                Part::Column => out.push_str(column),
                Part::Row(c) => out.push_str(&row(c)?),
            }
        }
        Some(out)
    }
}

/// One protected column.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProtectedColumn {
    /// Column name.
    pub name: String,
    /// How the message is stored.
    pub encoding: Encoding,
}

/// A protected table: the typed form of one `[[sql_tables]]` entry.
#[derive(Debug, Clone)]
pub struct SqlTable {
    /// Table name, optionally schema-qualified (`schema.table`).
    pub name: String,
    /// The primary-key columns, in key order (keyset pagination follows it).
    pub primary_key: Vec<String>,
    /// The protected columns.
    pub columns: Vec<ProtectedColumn>,
    /// The encryption-context pairs the application binds, name → value template.
    pub encryption_context: BTreeMap<String, ContextTemplate>,
    /// `sql verify`: the column whose growth marks new and changed rows (`updated_at`, a sequence id).
    pub cursor_column: Option<String>,
}

/// A row's values as text, by column name (for `{row.COL}` and the report's key).
pub type RowText = BTreeMap<String, Option<String>>;

impl SqlTable {
    /// The expected encryption context of `column` in a row: every configured pair rendered; `None` when a
    /// referenced row value is NULL.
    pub fn expected_context(&self, column: &str, row: &RowText) -> Option<BTreeMap<String, String>> {
        let lookup = |c: &str| row.get(c).cloned().flatten();
        self.encryption_context
            .iter()
            .map(|(k, t)| t.render(column, &lookup).map(|v| (k.clone(), v)))
            .collect()
    }

    /// Non-protected columns read as text for each row: the key, then every `{row.COL}` not already listed.
    pub fn text_columns(&self) -> Vec<String> {
        let mut out = self.primary_key.clone();
        for t in self.encryption_context.values() {
            for c in t.row_columns() {
                if !out.iter().any(|o| o == c) {
                    out.push(c.to_owned());
                }
            }
        }
        out
    }

    /// The quoted, possibly schema-qualified table name.
    pub fn quoted_name(&self) -> String {
        self.name.split('.').map(quote_ident).collect::<Vec<_>>().join(".")
    }
}

/// Quotes an identifier for PostgreSQL (`"a""b"`), so no configured name is ever SQL.
pub fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// The statements for one table, built once the key columns' types are known.
#[derive(Debug, Clone)]
pub struct Statements {
    /// First page: `SELECT … ORDER BY key LIMIT $1`.
    pub first_page: String,
    /// Next page: `SELECT … WHERE (key) > ($2…) ORDER BY key LIMIT $1`.
    pub next_page: String,
    /// One row by key: `SELECT … WHERE (key) = ($1…)`.
    pub by_key: String,
    /// Rows in a key range `(after, upto]`: `$1…$n` after (exclusive), `$n+1…$2n` up to (inclusive).
    pub range: String,
    /// Rows up to a key (inclusive), `$1…$n`.
    pub upto: String,
    /// Rows after a key (exclusive), `$1…$n`.
    pub after: String,
    /// With a cursor column: the next page in (cursor, key) order, `$1` the limit, `$2` the last cursor value,
    /// `$3…` the last key; the cursor value as text is the row's last column.
    pub by_cursor: Option<String>,
    /// With a cursor column: the first page in (cursor, key) order, `$1` the limit.
    pub by_cursor_first: Option<String>,
    /// Number of text columns first in each row (see [`SqlTable::text_columns`]); the protected columns follow,
    /// then a digest of the whole row.
    pub text_columns: Vec<String>,
}

impl Statements {
    /// Builds the statements; `key_types` are the key columns' PostgreSQL types (as `format_type` prints them).
    pub fn new(table: &SqlTable, key_types: &[String], cursor_type: Option<&str>) -> Result<Statements, SqlError> {
        if key_types.len() != table.primary_key.len() {
            return Err(SqlError::Schema {
                table: table.name.clone(),
                message: "key column types do not match the primary key".into(),
            });
        }
        let text_columns = table.text_columns();
        let mut select: Vec<String> = text_columns
            .iter()
            .map(|c| format!("{}::text", quote_ident(c)))
            .collect();
        for col in &table.columns {
            select.push(match col.encoding {
                Encoding::Base64 => format!("{}::text", quote_ident(&col.name)),
                Encoding::Bytea => quote_ident(&col.name),
            });
        }
        // A digest of the whole row, so --compare-primary sees any difference, not only in protected columns.
        select.push("md5(t::text)".into());
        let select = select.join(", ");
        let from = format!("{} AS t", table.quoted_name());
        // Qualified with the alias: a bare name in ORDER BY would mean the `::text` output column of the same
        // name, and the pages would follow text order while the WHERE compares in the column's own order.
        let key = table
            .primary_key
            .iter()
            .map(|c| format!("t.{}", quote_ident(c)))
            .collect::<Vec<_>>()
            .join(", ");
        let params = |first: usize| {
            key_types
                .iter()
                .enumerate()
                .map(|(i, ty)| format!("CAST(${}::text AS {ty})", first + i))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let n = key_types.len();
        let cursor = table
            .cursor_column
            .as_deref()
            .zip(cursor_type)
            .map(|(c, ty)| (format!("t.{}", quote_ident(c)), ty));
        let by_cursor = cursor.as_ref().map(|(c, ty)| {
            format!(
                "SELECT {select}, {c}::text FROM {from} WHERE {c} IS NOT NULL AND ({c}, {key}) > (CAST($2::text AS \
                 {ty}), {}) ORDER BY {c}, {key} LIMIT $1",
                params(3)
            )
        });
        let by_cursor_first = cursor.as_ref().map(|(c, _)| {
            format!("SELECT {select}, {c}::text FROM {from} WHERE {c} IS NOT NULL ORDER BY {c}, {key} LIMIT $1")
        });
        Ok(Statements {
            by_cursor,
            by_cursor_first,
            first_page: format!("SELECT {select} FROM {from} ORDER BY {key} LIMIT $1"),
            next_page: format!(
                "SELECT {select} FROM {from} WHERE ({key}) > ({}) ORDER BY {key} LIMIT $1",
                params(2)
            ),
            by_key: format!("SELECT {select} FROM {from} WHERE ({key}) = ({})", params(1)),
            range: format!(
                "SELECT {select} FROM {from} WHERE ({key}) > ({}) AND ({key}) <= ({}) ORDER BY {key}",
                params(1),
                params(n + 1)
            ),
            upto: format!(
                "SELECT {select} FROM {from} WHERE ({key}) <= ({}) ORDER BY {key}",
                params(1)
            ),
            after: format!(
                "SELECT {select} FROM {from} WHERE ({key}) > ({}) ORDER BY {key}",
                params(1)
            ),
            text_columns,
        })
    }
}

/// The conditional write-back of one protected column: `UPDATE t SET col = $1 WHERE (key) = ($2…) AND col IS NOT
/// DISTINCT FROM $n`, so a concurrent application write (which changes the value) wins.
pub fn conditional_update(table: &SqlTable, column: &ProtectedColumn, key_types: &[String]) -> String {
    let col = quote_ident(&column.name);
    let keys = table
        .primary_key
        .iter()
        .zip(key_types)
        .enumerate()
        .map(|(i, (k, ty))| format!("{} = CAST(${}::text AS {ty})", quote_ident(k), i + 2))
        .collect::<Vec<_>>()
        .join(" AND ");
    let old = key_types.len() + 2;
    let (new, old) = match column.encoding {
        Encoding::Base64 => ("$1::text".to_owned(), format!("${old}::text")),
        Encoding::Bytea => ("$1::bytea".to_owned(), format!("${old}::bytea")),
    };
    format!(
        "UPDATE {} SET {col} = {new} WHERE {keys} AND {col} IS NOT DISTINCT FROM {old}",
        table.quoted_name()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn patients() -> SqlTable {
        SqlTable {
            name: "public.patients".into(),
            primary_key: vec!["id".into()],
            columns: vec![
                ProtectedColumn {
                    name: "ssn".into(),
                    encoding: Encoding::Base64,
                },
                ProtectedColumn {
                    name: "scan".into(),
                    encoding: Encoding::Bytea,
                },
            ],
            encryption_context: [
                ("table".to_owned(), ContextTemplate::parse("patients").unwrap()),
                ("column".to_owned(), ContextTemplate::parse("{column}").unwrap()),
                (
                    "id".to_owned(),
                    ContextTemplate::parse("row-{row.id}/{row.tenant}").unwrap(),
                ),
            ]
            .into(),
            cursor_column: None,
        }
    }

    #[test]
    fn templates_fill_column_and_row_values() {
        let t = patients();
        let row: RowText = [
            ("id".to_owned(), Some("7".to_owned())),
            ("tenant".to_owned(), Some("acme".to_owned())),
        ]
        .into();
        let ctx = t.expected_context("ssn", &row).unwrap();
        assert_eq!(ctx["column"], "ssn");
        assert_eq!(ctx["id"], "row-7/acme");
        assert_eq!(ctx["table"], "patients");
        let null_tenant: RowText = [("id".to_owned(), Some("7".to_owned())), ("tenant".to_owned(), None)].into();
        assert_eq!(t.expected_context("ssn", &null_tenant), None);
    }

    #[test]
    fn template_syntax_errors_are_reported() {
        assert!(ContextTemplate::parse("{row.}").is_err());
        assert!(ContextTemplate::parse("{nope}").is_err());
        assert!(ContextTemplate::parse("{column").is_err());
        assert!(ContextTemplate::parse("a}b").is_err());
        let lit = ContextTemplate::parse("{{x}}").unwrap();
        assert_eq!(lit.render("c", &|_| None).as_deref(), Some("{x}"));
    }

    #[test]
    fn identifiers_are_quoted_and_keys_cast() {
        let t = patients();
        assert_eq!(t.quoted_name(), "\"public\".\"patients\"");
        assert_eq!(quote_ident("a\"b"), "\"a\"\"b\"");
        assert_eq!(t.text_columns(), ["id", "tenant"]);
        let s = Statements::new(&t, &["bigint".into()], None).unwrap();
        assert_eq!(
            s.next_page,
            "SELECT \"id\"::text, \"tenant\"::text, \"ssn\"::text, \"scan\", md5(t::text) FROM \"public\".\"patients\" \
             AS t WHERE (t.\"id\") > (CAST($2::text AS bigint)) ORDER BY t.\"id\" LIMIT $1"
        );
        assert!(Statements::new(&t, &[], None).is_err());
        let u = conditional_update(&t, &t.columns[1], &["bigint".into()]);
        assert_eq!(
            u,
            "UPDATE \"public\".\"patients\" SET \"scan\" = $1::bytea WHERE \"id\" = CAST($2::text AS bigint) AND \
             \"scan\" IS NOT DISTINCT FROM $3::bytea"
        );
    }
}
