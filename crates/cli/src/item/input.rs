//! `ddbguard item` input as a stream of JSON documents, each with the input line it started on.
//!
//! Memory is bounded by one document ([`MAX_DOCUMENT_BYTES`]), not by the input: a DynamoDB S3 export of millions
//! of lines is read line by line. Accepted shapes, freely mixed:
//!
//! - JSON lines: one document per line (the usual `item` input, and DynamoDB's S3 export in DYNAMODB_JSON
//!   format, one `{"Item":{…}}` per line);
//! - a document spread over several lines (the pretty-printed output of `aws dynamodb get-item`): lines are
//!   joined until the document's brackets balance.
//!
//! A line that cannot start or continue a document is an [`InputError`] naming that line; reading goes on with
//! the next line, so one broken line never hides the items after it. A line that is on its own a complete JSON
//! object always starts a new document: a truncated JSON line costs only itself, not the lines after it.

use std::collections::VecDeque;
use std::io::{self, BufRead, Read};

use serde_json::Value;

/// The largest document accepted (DynamoDB items are at most 400 KB; their DynamoDB JSON, base64 and
/// pretty-printing included, stays well below this).
pub const MAX_DOCUMENT_BYTES: usize = 16 * 1024 * 1024;

/// Input that is not an item at all: not a verdict (nothing was judged), reported as `input_error`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InputErrorKind {
    /// The text is not JSON (or a document is cut off).
    NotJson,
    /// The bytes are not UTF-8.
    NotUtf8,
    /// A document larger than [`MAX_DOCUMENT_BYTES`].
    TooLarge,
    /// JSON, but not a DynamoDB JSON item (nor `{"Item": …}` around one).
    NotAnItem,
}

impl InputErrorKind {
    /// The `input_error` value of the result line.
    pub fn as_str(self) -> &'static str {
        match self {
            InputErrorKind::NotJson => "not_json",
            InputErrorKind::NotUtf8 => "not_utf8",
            InputErrorKind::TooLarge => "too_large",
            InputErrorKind::NotAnItem => "not_an_item",
        }
    }
}

/// A document that could not be read. The message names the line and the parser's position, never the text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InputError {
    /// What is wrong.
    pub kind: InputErrorKind,
    /// Details.
    pub message: String,
}

impl InputError {
    pub(crate) fn new(kind: InputErrorKind, message: impl Into<String>) -> InputError {
        InputError {
            kind,
            message: message.into(),
        }
    }
}

/// One document of the input.
#[derive(Debug)]
pub struct Document {
    /// The 1-based input line the document starts on.
    pub line: usize,
    /// The document, or why it could not be read.
    pub value: Result<Value, InputError>,
}

/// Bracket depth of JSON text, fed line by line (strings and escapes skipped).
#[derive(Debug, Default, Clone, Copy)]
struct Depth {
    depth: i64,
    in_string: bool,
    escaped: bool,
}

impl Depth {
    fn feed(&mut self, text: &str) {
        for b in text.bytes() {
            if self.in_string {
                match b {
                    _ if self.escaped => self.escaped = false,
                    b'\\' => self.escaped = true,
                    b'"' => self.in_string = false,
                    _ => {}
                }
                continue;
            }
            match b {
                b'"' => self.in_string = true,
                b'{' | b'[' => self.depth += 1,
                b'}' | b']' => self.depth -= 1,
                _ => {}
            }
        }
    }

    /// Whether the text so far can be a whole document (or is broken beyond what more lines can fix: JSON strings
    /// never span lines).
    fn closed(&self) -> bool {
        self.depth <= 0 || self.in_string
    }
}

/// The documents of a `BufRead`, in order.
#[derive(Debug)]
pub struct Documents<R> {
    reader: R,
    /// Lines read so far.
    line: usize,
    /// The document being joined: its first line and text so far.
    pending: Option<(usize, String, Depth)>,
    ready: VecDeque<Document>,
    done: bool,
}

impl<R: BufRead> Documents<R> {
    /// Documents of `reader`.
    pub fn new(reader: R) -> Documents<R> {
        Documents {
            reader,
            line: 0,
            pending: None,
            ready: VecDeque::new(),
            done: false,
        }
    }

    /// Reads the next line (without its line break), at most [`MAX_DOCUMENT_BYTES`]; `Ok(None)` at the end. A
    /// longer line is consumed to its end and reported as too large.
    fn next_line(&mut self) -> io::Result<Option<Result<String, InputError>>> {
        let mut bytes = Vec::new();
        let limit = MAX_DOCUMENT_BYTES as u64 + 1;
        let n = Read::take(&mut self.reader, limit).read_until(b'\n', &mut bytes)?;
        if n == 0 {
            return Ok(None);
        }
        self.line += 1;
        if bytes.last() != Some(&b'\n') && n as u64 == limit {
            // Skip the rest of the over-long line.
            loop {
                let buf = self.reader.fill_buf()?;
                if buf.is_empty() {
                    break;
                }
                match buf.iter().position(|&b| b == b'\n') {
                    Some(i) => {
                        self.reader.consume(i + 1);
                        break;
                    }
                    None => {
                        let len = buf.len();
                        self.reader.consume(len);
                    }
                }
            }
            return Ok(Some(Err(InputError::new(
                InputErrorKind::TooLarge,
                format!("line {} is longer than {MAX_DOCUMENT_BYTES} bytes", self.line),
            ))));
        }
        while matches!(bytes.last(), Some(b'\n' | b'\r')) {
            bytes.pop();
        }
        Ok(Some(String::from_utf8(bytes).map_err(|e| {
            InputError::new(
                InputErrorKind::NotUtf8,
                format!(
                    "line {} is not UTF-8 (byte {})",
                    self.line,
                    e.utf8_error().valid_up_to() + 1
                ),
            )
        })))
    }

    /// Parses a joined document (one or more values) into `ready`.
    fn finish(&mut self, line: usize, text: &str) {
        let mut values = serde_json::Deserializer::from_str(text).into_iter::<Value>();
        loop {
            match values.next() {
                None => break,
                Some(Ok(value)) => self.ready.push_back(Document { line, value: Ok(value) }),
                Some(Err(e)) => {
                    // The parser's position is relative to the document: name the input line it is on.
                    let at = line + e.line().saturating_sub(1);
                    let what = if e.is_eof() { "is cut off" } else { "is not JSON" };
                    self.ready.push_back(Document {
                        line,
                        value: Err(InputError::new(
                            InputErrorKind::NotJson,
                            format!(
                                "the document starting on line {line} {what} (line {at}, column {})",
                                e.column()
                            ),
                        )),
                    });
                    break;
                }
            }
        }
    }

    fn finish_pending(&mut self) {
        if let Some((line, text, _)) = self.pending.take() {
            self.finish(line, &text);
        }
    }

    fn step(&mut self) -> io::Result<()> {
        let Some(line) = self.next_line()? else {
            self.finish_pending();
            self.done = true;
            return Ok(());
        };
        let number = self.line;
        let text = match line {
            Ok(text) => text,
            Err(e) => {
                // A line that cannot be read breaks the document it was part of.
                self.finish_pending();
                self.ready.push_back(Document {
                    line: number,
                    value: Err(e),
                });
                return Ok(());
            }
        };
        if let Some((_, joined, depth)) = &mut self.pending {
            if !starts_complete_object(&text) {
                if joined.len() + text.len() + 1 > MAX_DOCUMENT_BYTES {
                    let (start, _, _) = self.pending.take().unwrap_or_default();
                    self.ready.push_back(Document {
                        line: start,
                        value: Err(InputError::new(
                            InputErrorKind::TooLarge,
                            format!("the document starting on line {start} is longer than {MAX_DOCUMENT_BYTES} bytes"),
                        )),
                    });
                    return Ok(());
                }
                joined.push('\n');
                joined.push_str(&text);
                depth.feed(&text);
                if depth.closed() {
                    self.finish_pending();
                }
                return Ok(());
            }
            // A complete object on its own line: the pending document was cut off before it.
            self.finish_pending();
        }
        if text.trim().is_empty() {
            return Ok(());
        }
        let mut depth = Depth::default();
        depth.feed(&text);
        if depth.closed() {
            self.finish(number, &text);
        } else {
            self.pending = Some((number, text, depth));
        }
        Ok(())
    }
}

/// Whether `line` starts a JSON object and closes it on the same line (a JSON line, or an S3 export line).
fn starts_complete_object(line: &str) -> bool {
    let trimmed = line.trim();
    if !trimmed.starts_with('{') || trimmed == "{}" {
        return false;
    }
    let mut depth = Depth::default();
    depth.feed(trimmed);
    depth.depth == 0 && !depth.in_string && trimmed.ends_with('}')
}

impl<R: BufRead> Iterator for Documents<R> {
    type Item = io::Result<Document>;

    fn next(&mut self) -> Option<io::Result<Document>> {
        loop {
            if let Some(doc) = self.ready.pop_front() {
                return Some(Ok(doc));
            }
            if self.done {
                return None;
            }
            if let Err(e) = self.step() {
                self.done = true;
                return Some(Err(e));
            }
        }
    }
}

/// The item of a document: the document itself (a DynamoDB JSON item), or the `Item` of a `get-item` response or
/// an S3 export line (`{"Item":{…}}`, other top-level keys such as `ConsumedCapacity` ignored).
///
/// A document is taken as a wrapper only when it lacks the table's partition key and has an object under `Item`:
/// an item always has its partition key, so a table whose items have an attribute named `Item` is read right.
pub fn item_of(document: Value, partition_key: &str) -> Value {
    match document {
        Value::Object(mut map) if !map.contains_key(partition_key) && map.get("Item").is_some_and(Value::is_object) => {
            map.remove("Item").unwrap_or_default()
        }
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn docs(input: &str) -> Vec<(usize, Result<Value, InputErrorKind>)> {
        Documents::new(input.as_bytes())
            .map(|d| {
                let d = d.unwrap();
                (d.line, d.value.map_err(|e| e.kind))
            })
            .collect()
    }

    #[test]
    fn json_lines_keep_their_line_numbers_and_skip_blank_lines() {
        let got = docs("{\"a\":1}\n\n  \n{\"b\":2}\r\n{\"c\":3}");
        assert_eq!(
            got,
            [
                (1, Ok(serde_json::json!({"a": 1}))),
                (4, Ok(serde_json::json!({"b": 2}))),
                (5, Ok(serde_json::json!({"c": 3}))),
            ]
        );
    }

    #[test]
    fn a_pretty_document_spans_lines_and_starts_on_its_first() {
        let pretty = "{\n    \"Item\": {\n        \"pk\": {\n            \"S\": \"a}{\\\"\"\n        }\n    },\n    \"ConsumedCapacity\": null\n}\n";
        let got = docs(&format!("{pretty}{{\"x\":1}}\n{pretty}"));
        assert_eq!(got.len(), 3, "{got:?}");
        assert_eq!(got[0].0, 1);
        assert_eq!(got[0].1.as_ref().unwrap()["Item"]["pk"]["S"], "a}{\"");
        assert_eq!(got[1].0, 9);
        assert_eq!(got[2].0, 10);
    }

    #[test]
    fn a_broken_line_is_an_error_naming_it_and_the_rest_is_read() {
        let input = "{\"a\":1}\nnot json 123-45-6789\n{\"b\":2\n{\"c\":3}\n\"unterminated\n{\"d\":4}\n";
        let got = docs(input);
        assert_eq!(
            got,
            [
                (1, Ok(serde_json::json!({"a": 1}))),
                (2, Err(InputErrorKind::NotJson)),
                (3, Err(InputErrorKind::NotJson)),
                (4, Ok(serde_json::json!({"c": 3}))),
                (5, Err(InputErrorKind::NotJson)),
                (6, Ok(serde_json::json!({"d": 4}))),
            ]
        );
        let messages: Vec<String> = Documents::new(input.as_bytes())
            .filter_map(|d| d.unwrap().value.err().map(|e| e.message))
            .collect();
        assert!(messages[0].contains("line 2"), "{messages:?}");
        assert!(messages.iter().all(|m| !m.contains("6789")), "{messages:?}");
    }

    #[test]
    fn a_document_cut_off_at_the_end_names_its_first_line() {
        let got = docs("{\"a\":1}\n{\n  \"b\": [\n");
        assert_eq!(got[1], (2, Err(InputErrorKind::NotJson)));
    }

    #[test]
    fn bad_utf8_is_an_error_for_that_line_only() {
        let mut input = b"{\"a\":1}\n".to_vec();
        input.extend_from_slice(b"{\"b\":\"\xff\"}\n{\"c\":3}\n");
        let got: Vec<_> = Documents::new(&input[..])
            .map(|d| d.unwrap())
            .map(|d| (d.line, d.value.is_ok()))
            .collect();
        assert_eq!(got, [(1, true), (2, false), (3, true)]);
    }

    #[test]
    fn item_of_unwraps_get_item_and_export_shapes_only() {
        let item = serde_json::json!({"pk": {"S": "a"}});
        assert_eq!(
            item_of(serde_json::json!({"Item": item, "ConsumedCapacity": {}}), "pk"),
            item
        );
        assert_eq!(item_of(serde_json::json!({"Item": item}), "pk"), item);
        // An item with an attribute called Item stays an item.
        let with_item_attr = serde_json::json!({"pk": {"S": "a"}, "Item": {"S": "x"}});
        assert_eq!(item_of(with_item_attr.clone(), "pk"), with_item_attr);
        assert_eq!(item_of(serde_json::json!([1]), "pk"), serde_json::json!([1]));
    }
}
