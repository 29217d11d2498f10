//! Interoperability of ddbguard's item format with the official AWS Database Encryption SDK crate
//! (`aws-db-esdk` 1.3.0), both sides using a raw AES keyring with the same namespace, name and key:
//!
//! - items written by either side decrypt on both sides to the original item (numbers compared after
//!   DynamoDB normalization, sets compared as sets), both as written and as DynamoDB would store them,
//!   over both suites, both record versions, with and without a sort key, every attribute type, nested
//!   values, non-ASCII attribute names and DO_NOTHING attributes (listed and by prefix);
//! - both writers produce the same header shape (version, flavor, legend, lengths) and the same
//!   ciphertext lengths for the same item;
//! - edge inputs: values DynamoDB accepts are accepted by both writers; whatever either writer accepts
//!   and DynamoDB could store is read alike by both readers; invalid items are rejected by both;
//! - tampered items (bit flips, swapped or moved ciphertexts, changed signed values, added or removed
//!   attributes) fail on both sides, and ddbguard classifies the failure as an integrity failure or a
//!   policy violation.
//!
//! Case counts: `INTEROP_CASES` per property (default 64 round trips, 96 tampers).
//!
//! [`backfill`]: items of every attribute type rewritten by the backfill engine (over the in-memory DynamoDB,
//! both suites) decrypt with the official crate to the original values.
//!
//! [`cli`]: `ddbguard item decrypt` prints the plaintext of an item the official crate wrote and names a
//! flipped bit `integrity_failed`.
//!
//! [`legacy`]: `ddbguard backfill --from-legacy` (the binary) migrates 2,000 items of the legacy DynamoDB
//! Encryption Client (direct KMS provider, MRK in us-east-1) under a concurrent writer on the local AWS
//! environment; the official crate decrypts every item to the original values or the writer's last ones.
//!
//! [`hierarchy`]: the same both ways with the official key store and hierarchical keyring, on the local
//! AWS environment (started by the tests, or `DDBGUARD_TEST_ENDPOINT`).

#[path = "interop/backfill.rs"]
mod backfill;
#[path = "interop/cli.rs"]
mod cli;
mod common;
#[path = "interop/hierarchy.rs"]
mod hierarchy;
#[path = "interop/legacy.rs"]
mod legacy;

use std::collections::{BTreeMap, BTreeSet};

use common::*;
use proptest::prelude::*;
use proptest::test_runner::TestCaseError;

// ---------------------------------------------------------------------------------------------
// Generators

/// Strings that sort differently in UTF-8 byte order and in UTF-16 code-unit order (U+E000..U+FFFF
/// versus astral-plane characters), plus the empty string.
const TRICKY_STRINGS: &[&str] = &[
    "", "\u{FFFD}", "\u{E000}", "𝟁", "x𝟁", "café", "a\u{0}b", "ü", "Z", "a", "aa",
];

/// Numbers that DynamoDB (and the official crate, before encrypting or signing) normalizes.
const TRICKY_NUMBERS: &[&str] = &[
    "-0.50",
    "1E2",
    "00.100",
    "0",
    "-0",
    "0.0",
    "1e-3",
    "-1.5E+3",
    "12345678901234567890123456789012345678",
    "1E125",
    "1E-129",
    "0.000123e2",
    "100",
    "-100.00",
];

fn string() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => "\\PC{0,12}",
        1 => proptest::sample::select(TRICKY_STRINGS).prop_map(str::to_owned),
    ]
}

fn set_string() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => "\\PC{1,8}",
        1 => proptest::sample::select(&TRICKY_STRINGS[1..]).prop_map(str::to_owned),
    ]
}

fn number() -> impl Strategy<Value = String> {
    let built = (
        any::<bool>(),
        "[0-9]{0,6}",
        proptest::option::of("[0-9]{0,6}"),
        proptest::option::of((prop_oneof![Just('e'), Just('E')], -8i32..8)),
    )
        .prop_filter_map("a number needs a digit", |(neg, int, frac, exp)| {
            if int.is_empty() && frac.as_deref().is_none_or(str::is_empty) {
                return None;
            }
            // "5." and ".5" are edge cases of their own (see `numbers_are_accepted_alike`).
            if frac.as_deref().is_some_and(str::is_empty) || int.is_empty() {
                return None;
            }
            let mut s = String::new();
            if neg {
                s.push('-');
            }
            s.push_str(&int);
            if let Some(f) = frac {
                s.push('.');
                s.push_str(&f);
            }
            if let Some((e, x)) = exp {
                s.push(e);
                s.push_str(&x.to_string());
            }
            Some(s)
        });
    prop_oneof![
        3 => built,
        1 => proptest::sample::select(TRICKY_NUMBERS).prop_map(str::to_owned),
    ]
}

fn bytes(min: usize) -> impl Strategy<Value = Vec<u8>> {
    proptest::collection::vec(any::<u8>(), min..24)
}

/// A non-empty set without duplicates, in an arbitrary (shuffled) order.
fn set_of<T: Ord + Clone + std::fmt::Debug>(
    elem: impl Strategy<Value = T>,
    key: fn(&T) -> String,
) -> impl Strategy<Value = Vec<T>> {
    proptest::collection::vec(elem, 1..5)
        .prop_map(move |v| {
            let mut seen = BTreeSet::new();
            v.into_iter().filter(|x| seen.insert(key(x))).collect::<Vec<_>>()
        })
        .prop_shuffle()
}

fn scalar() -> impl Strategy<Value = AttributeValue> {
    prop_oneof![
        3 => string().prop_map(AttributeValue::S),
        3 => number().prop_map(AttributeValue::N),
        2 => bytes(0).prop_map(AttributeValue::B),
        1 => any::<bool>().prop_map(AttributeValue::Bool),
        1 => Just(AttributeValue::Null),
        1 => set_of(set_string(), |s| s.clone()).prop_map(AttributeValue::Ss),
        1 => set_of(number(), |n| normalize_number(n).expect("generated numbers are valid")).prop_map(AttributeValue::Ns),
        1 => set_of(bytes(1), |b| format!("{b:?}")).prop_map(AttributeValue::Bs),
    ]
}

fn map_key() -> impl Strategy<Value = String> {
    prop_oneof![3 => "\\PC{1,6}", 1 => proptest::sample::select(&TRICKY_STRINGS[1..]).prop_map(str::to_owned)]
}

fn value() -> impl Strategy<Value = AttributeValue> {
    scalar().prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            proptest::collection::btree_map(map_key(), inner.clone(), 0..4).prop_map(AttributeValue::M),
            proptest::collection::vec(inner, 0..4).prop_map(AttributeValue::L),
        ]
    })
}

fn key_value() -> impl Strategy<Value = AttributeValue> {
    prop_oneof![
        "\\PC{1,10}".prop_map(AttributeValue::S),
        number().prop_map(AttributeValue::N),
        bytes(1).prop_map(AttributeValue::B),
    ]
}

/// Attribute names; the last three have the same UTF-16 length but sort differently by UTF-8 bytes
/// and by UTF-16 code units (canonical order is by UTF-16 length, then UTF-8 bytes).
const ATTRIBUTE_NAMES: &[&str] = &[
    "a",
    "blob",
    "meta",
    "tags",
    "secret",
    "café",
    "x𝟁",
    "Zeta",
    "nested",
    "_x",
    "n.1",
    "\u{E000}a",
    "𝟁",
    "\u{FFFD}\u{FFFD}",
];

fn attribute_name() -> impl Strategy<Value = String> {
    prop_oneof![
        2 => proptest::sample::select(ATTRIBUTE_NAMES).prop_map(str::to_owned),
        1 => "[a-zA-Z_][a-zA-Z0-9_.-]{0,12}",
        1 => "[^:\\p{C}]\\PC{0,5}",
    ]
    .prop_filter("reserved or key names", |n| {
        !n.starts_with("aws_dbe_") && !n.starts_with(':') && !is_key_name(n)
    })
}

const KEY_NAMES: &[(&str, &str)] = &[("pk", "sk"), ("PartitionKey", "SortKey"), ("clé", "tri𝟁")];

fn is_key_name(n: &str) -> bool {
    KEY_NAMES.iter().any(|(p, s)| n == *p || n == *s)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Action {
    Encrypt,
    Sign,
    Context,
    Nothing,
}

impl Action {
    fn ours(self) -> CryptoAction {
        match self {
            Action::Encrypt => CryptoAction::EncryptAndSign,
            Action::Sign => CryptoAction::SignOnly,
            Action::Context => CryptoAction::SignAndIncludeInEncryptionContext,
            Action::Nothing => CryptoAction::DoNothing,
        }
    }
}

/// One item together with the table configuration that both sides use for it.
#[derive(Debug, Clone)]
struct Case {
    ecdsa: bool,
    v2: bool,
    table: &'static str,
    keys: (&'static str, &'static str),
    pk: AttributeValue,
    sk: Option<AttributeValue>,
    attrs: BTreeMap<String, (Action, AttributeValue)>,
    /// DO_NOTHING attributes named with the unsigned prefix ":" rather than listed by name.
    prefixed: BTreeMap<String, AttributeValue>,
}

impl Case {
    fn config(&self) -> TableConfig {
        let key_action = if self.v2 {
            CryptoAction::SignAndIncludeInEncryptionContext
        } else {
            CryptoAction::SignOnly
        };
        let mut attribute_actions = BTreeMap::new();
        attribute_actions.insert(self.keys.0.to_owned(), key_action);
        if self.sk.is_some() {
            attribute_actions.insert(self.keys.1.to_owned(), key_action);
        }
        let mut allowed_unsigned_attributes = BTreeSet::new();
        for (name, (action, _)) in &self.attrs {
            attribute_actions.insert(name.clone(), action.ours());
            if *action == Action::Nothing {
                allowed_unsigned_attributes.insert(name.clone());
            }
        }
        for name in self.prefixed.keys() {
            attribute_actions.insert(name.clone(), CryptoAction::DoNothing);
        }
        TableConfig {
            logical_table_name: self.table.to_owned(),
            partition_key: self.keys.0.to_owned(),
            sort_key: self.sk.as_ref().map(|_| self.keys.1.to_owned()),
            attribute_actions,
            allowed_unsigned_attributes,
            allowed_unsigned_attribute_prefix: (!self.prefixed.is_empty()).then(|| ":".to_owned()),
            algorithm_suite: if self.ecdsa {
                AlgorithmSuite::EcdsaP384
            } else {
                AlgorithmSuite::HmacOnly
            },
        }
    }

    fn item(&self) -> Item {
        let mut item = Item::new();
        item.insert(self.keys.0.to_owned(), self.pk.clone());
        if let Some(sk) = &self.sk {
            item.insert(self.keys.1.to_owned(), sk.clone());
        }
        for (name, (_, v)) in &self.attrs {
            item.insert(name.clone(), v.clone());
        }
        for (name, v) in &self.prefixed {
            item.insert(name.clone(), v.clone());
        }
        item
    }

    fn names_with(&self, action: Action) -> Vec<String> {
        self.attrs
            .iter()
            .filter(|(_, (a, _))| *a == action)
            .map(|(n, _)| n.clone())
            .collect()
    }
}

fn case() -> impl Strategy<Value = Case> {
    (
        any::<bool>(),
        any::<bool>(),
        prop_oneof![Just("InteropTable"), Just("Tåble𝟁")],
        proptest::sample::select(KEY_NAMES),
        key_value(),
        proptest::option::of(key_value()),
        any::<bool>(),
    )
        .prop_flat_map(|(ecdsa, v2, table, keys, pk, sk, use_prefix)| {
            let action = if v2 {
                prop_oneof![4 => Just(Action::Encrypt), 2 => Just(Action::Sign), 1 => Just(Action::Context), 1 => Just(Action::Nothing)]
                    .boxed()
            } else {
                prop_oneof![4 => Just(Action::Encrypt), 2 => Just(Action::Sign), 1 => Just(Action::Nothing)].boxed()
            };
            let attrs = proptest::collection::btree_map(attribute_name(), (action, value()), 0..7);
            let prefixed = if use_prefix {
                proptest::collection::btree_map("[a-z]{1,6}".prop_map(|n| format!(":{n}")), value(), 1..3).boxed()
            } else {
                Just(BTreeMap::new()).boxed()
            };
            (attrs, prefixed).prop_map(move |(attrs, prefixed)| Case {
                ecdsa,
                v2,
                table,
                keys,
                pk: pk.clone(),
                sk: sk.clone(),
                attrs,
                prefixed,
            })
        })
}

fn proptest_config(default_cases: u32) -> ProptestConfig {
    let cases = std::env::var("INTEROP_CASES")
        .ok()
        .and_then(|c| c.parse().ok())
        .unwrap_or(default_cases);
    ProptestConfig {
        cases,
        max_shrink_iters: 256,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

fn fail(what: impl std::fmt::Display) -> TestCaseError {
    TestCaseError::fail(what.to_string())
}

// ---------------------------------------------------------------------------------------------
// Round trips

/// The parts of an encrypted item that must agree between two writers given the same input:
/// header version, flavor and legend, header and footer lengths, and per attribute its type and
/// (for ciphertexts) length.
#[derive(Debug, PartialEq)]
struct Shape {
    version: u8,
    flavor: u8,
    legend: Vec<u8>,
    header_len: usize,
    footer_len: usize,
    attributes: BTreeMap<String, String>,
}

fn shape(item: &Item) -> Result<Shape, TestCaseError> {
    let head = binary(item, HEADER).ok_or_else(|| fail("no aws_dbe_head"))?;
    let foot = binary(item, FOOTER).ok_or_else(|| fail("no aws_dbe_foot"))?;
    let legend = legend(head).ok_or_else(|| fail("header too short"))?.to_vec();
    let attributes = item
        .iter()
        .filter(|(n, _)| *n != HEADER && *n != FOOTER)
        .map(|(n, v)| {
            let desc = match v {
                AttributeValue::B(b) => format!("B[{}]", b.len()),
                other => format!("{:?}", canon(other)),
            };
            (n.clone(), desc)
        })
        .collect();
    Ok(Shape {
        version: head[0],
        flavor: head[1],
        legend,
        header_len: head.len(),
        footer_len: foot.len(),
        attributes,
    })
}

fn check_round_trip(case: &Case) -> Result<(), TestCaseError> {
    let cfg = case.config();
    let item = case.item();
    let expected = canon_item(&item);
    runtime().block_on(async {
        let by_ours = ours::encrypt(&cfg, &item)
            .await
            .map_err(|e| fail(format!("ddbguard encrypt: {e}")))?;
        let by_official = official::encrypt(&cfg, &item)
            .await
            .map_err(|e| fail(format!("official encrypt: {e}")))?;

        let (ours_shape, official_shape) = (shape(&by_ours)?, shape(&by_official)?);
        prop_assert_eq!(
            &ours_shape,
            &official_shape,
            "encrypted shape: ddbguard (left) vs official (right)"
        );
        prop_assert_eq!(ours_shape.version, if case.v2 { 2 } else { 1 }, "record version");
        prop_assert_eq!(ours_shape.flavor, u8::from(case.ecdsa), "flavor");

        for (writer, written) in [("ddbguard", &by_ours), ("official", &by_official)] {
            // As written, and as DynamoDB would store and return it (numbers normalized, sets in
            // its own order): a reader of streams or scans sees only the latter.
            for (form, encrypted) in [("as written", written.clone()), ("as stored", canon_item(written))] {
                let official_plain = official::decrypt(&cfg, &encrypted)
                    .await
                    .map_err(|e| fail(format!("official decrypt of {writer}'s item {form}: {e}")))?;
                let ours_plain = ours::decrypt(&cfg, &encrypted)
                    .await
                    .map_err(|e| fail(format!("ddbguard decrypt of {writer}'s item {form}: {e}")))?;
                prop_assert_eq!(
                    &canon_item(&official_plain),
                    &expected,
                    "official decrypt of {}'s item {}",
                    writer,
                    form
                );
                prop_assert_eq!(
                    &canon_item(&ours_plain),
                    &expected,
                    "ddbguard decrypt of {}'s item {}",
                    writer,
                    form
                );
            }
        }
        Ok(())
    })
}

proptest! {
    #![proptest_config(proptest_config(64))]

    #[test]
    fn items_round_trip_between_ddbguard_and_official(case in case()) {
        check_round_trip(&case)?;
    }
}

fn fixed_case(ecdsa: bool, v2: bool, sort_key: bool) -> Case {
    let n = |s: &str| AttributeValue::N(s.to_owned());
    let s = |s: &str| AttributeValue::S(s.to_owned());
    let mut attrs = BTreeMap::new();
    let mut add = |name: &str, action, v| {
        attrs.insert(name.to_owned(), (action, v));
    };
    add("secret", Action::Encrypt, s("top secret"));
    add("blob", Action::Encrypt, AttributeValue::B(vec![0, 1, 2, 255]));
    add("amount", Action::Encrypt, n("-0.50"));
    add("flag", Action::Encrypt, AttributeValue::Bool(true));
    add("nothing", Action::Encrypt, AttributeValue::Null);
    add(
        "ss",
        Action::Encrypt,
        AttributeValue::Ss(vec!["𝟁".into(), "\u{FFFD}".into(), "a".into()]),
    );
    add(
        "ns",
        Action::Sign,
        AttributeValue::Ns(vec!["1E2".into(), "00.100".into(), "-3".into()]),
    );
    add("bs", Action::Encrypt, AttributeValue::Bs(vec![vec![2], vec![1, 0]]));
    add(
        "meta",
        Action::Sign,
        AttributeValue::M(BTreeMap::from([
            ("𝟁".to_owned(), n("1E2")),
            (
                "\u{FFFD}".to_owned(),
                AttributeValue::L(vec![s(""), AttributeValue::M(BTreeMap::new()), n("00.100")]),
            ),
            ("empty".to_owned(), AttributeValue::L(vec![])),
        ])),
    );
    add(
        "tags",
        Action::Sign,
        AttributeValue::L(vec![s("x"), AttributeValue::Ss(vec!["b".into(), "a".into()])]),
    );
    add("café", Action::Encrypt, s("crème"));
    add("x𝟁", Action::Sign, n("7"));
    add("note", Action::Nothing, s("unsigned"));
    if v2 {
        add("tenant", Action::Context, s("t-1"));
    }
    Case {
        ecdsa,
        v2,
        table: "InteropTable",
        keys: ("pk", "sk"),
        pk: s("customer#1"),
        sk: sort_key.then(|| n("42")),
        attrs,
        prefixed: BTreeMap::from([(":free".to_owned(), s("also unsigned"))]),
    }
}

/// Every combination of suite, record version and sort key on one item with every attribute type.
#[test]
fn every_type_round_trips_in_every_configuration() {
    for ecdsa in [false, true] {
        for v2 in [false, true] {
            for sort_key in [false, true] {
                let case = fixed_case(ecdsa, v2, sort_key);
                if let Err(e) = check_round_trip(&case) {
                    panic!(
                        "suite {} v{} sort key {sort_key}: {e}",
                        suite_name(ecdsa),
                        if v2 { 2 } else { 1 }
                    );
                }
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Edge cases: both sides accept and reject alike

fn single_attribute_case(ecdsa: bool, action: Action, v: AttributeValue) -> Case {
    Case {
        ecdsa,
        v2: action == Action::Context,
        table: "InteropTable",
        keys: ("pk", "sk"),
        pk: AttributeValue::S("k".into()),
        sk: None,
        attrs: BTreeMap::from([("v".to_owned(), (action, v))]),
        prefixed: BTreeMap::new(),
    }
}

/// Runs one edge value through both writers with each signed action.
///
/// - A value DynamoDB accepts must be accepted by both writers and round-trip both ways.
/// - A value DynamoDB rejects may be rejected by either writer. Whatever a writer does accept and
///   DynamoDB could store (the value is encrypted, so stored as B) must then be read alike by both
///   readers: same plaintext, or both fail.
///
/// Returns the disagreements (failures) and notes (tolerated differences, printed).
fn edge(v: AttributeValue) -> (Vec<String>, Vec<String>) {
    let (mut problems, mut notes) = (Vec::new(), Vec::new());
    let valid = ddb_valid(&v);
    for action in [Action::Encrypt, Action::Sign, Action::Context] {
        let case = single_attribute_case(false, action, v.clone());
        let (cfg, item) = (case.config(), case.item());
        let what = format!("{} as {action:?}", short(&v));
        let (ours_enc, official_enc) = runtime().block_on(async {
            (
                ours::encrypt(&cfg, &item).await.map_err(|e| e.to_string()),
                official::encrypt(&cfg, &item).await,
            )
        });
        match (&ours_enc, &official_enc) {
            (Err(o), Err(f)) => {
                if valid {
                    notes.push(format!(
                        "{what} (DynamoDB accepts): both reject: ddbguard ({o}), official ({f})"
                    ));
                }
            }
            (Ok(_), Ok(_)) if valid => {
                if let Err(e) = check_round_trip(&case) {
                    problems.push(format!("{what}: both accept, round trip fails: {e}"));
                }
            }
            (ours, official) => {
                let line = format!(
                    "{what} (DynamoDB {}): ddbguard encrypt {}, official encrypt {}",
                    if valid { "accepts" } else { "rejects" },
                    ours.as_ref()
                        .map_or_else(|e| format!("rejects ({e})"), |_| "accepts".to_owned()),
                    official
                        .as_ref()
                        .map_or_else(|e| format!("rejects ({e})"), |_| "accepts".to_owned()),
                );
                if valid { problems.push(line) } else { notes.push(line) }
            }
        }
        if valid || action != Action::Encrypt {
            continue;
        }
        for (writer, encrypted) in [("ddbguard", ours_enc.ok()), ("official", official_enc.ok())] {
            let Some(encrypted) = encrypted else { continue };
            let (a, b) = runtime().block_on(async {
                (
                    official::decrypt(&cfg, &encrypted).await,
                    ours::decrypt(&cfg, &encrypted).await.map_err(|e| e.to_string()),
                )
            });
            match (a, b) {
                (Ok(a), Ok(b)) if canon_item(&a) == canon_item(&b) => {}
                (a, b) => problems.push(format!(
                    "{what}, written by {writer}: official decrypt {}, ddbguard decrypt {}",
                    a.map_or_else(|e| format!("fails ({e})"), |_| "succeeds".to_owned()),
                    b.map_or_else(|e| format!("fails ({e})"), |_| "succeeds".to_owned()),
                )),
            }
        }
    }
    (problems, notes)
}

/// Runs [`edge`] over the values on a thread with a large stack: the official crate recurses deeply
/// (debug builds overflow the default 2 MiB test-thread stack on a 70 KB binary value in the
/// encryption context).
fn edges(what: &str, values: impl IntoIterator<Item = AttributeValue>) {
    let values: Vec<_> = values.into_iter().collect();
    let (problems, notes) = std::thread::Builder::new()
        .stack_size(256 << 20)
        .spawn(move || {
            let (mut problems, mut notes) = (Vec::new(), Vec::new());
            for v in values {
                let (p, n) = edge(v);
                problems.extend(p);
                notes.extend(n);
            }
            (problems, notes)
        })
        .expect("spawn")
        .join()
        .expect("edge cases panicked");
    for n in &notes {
        println!("note: {n}");
    }
    assert_no_problems(what, problems);
}

/// A value's debug form, cut to 100 characters.
fn short(v: &AttributeValue) -> String {
    let s = format!("{v:?}");
    match s.char_indices().nth(100) {
        Some((at, _)) => format!("{}…", &s[..at]),
        None => s,
    }
}

fn assert_no_problems(what: &str, problems: Vec<String>) {
    assert!(
        problems.is_empty(),
        "{what}: {} disagreement(s):\n{}",
        problems.len(),
        problems.join("\n")
    );
}

#[test]
fn numbers_are_accepted_alike() {
    let numbers = [
        "-0.50",
        "1E2",
        "00.100",
        "0",
        "-0",
        "0.0",
        "-0.0e5",
        "+5",
        "5.",
        ".5",
        "1e+2",
        "1E-130",
        "1E-131",
        "1E125",
        "1E126",
        "1E127",
        "9.9999999999999999999999999999999999999E125",
        "12345678901234567890123456789012345678",
        "123456789012345678901234567890123456789",
        "1234567890123456789012345678901234567800000",
        "0.00000000000000000000000000000000000000012345678901234567890123456789012345678",
        "",
        "-",
        "abc",
        "1e",
        "--1",
        " 1",
        "1 ",
        "0x10",
        "1.2.3",
        "Infinity",
        "NaN",
    ];
    edges("numbers", numbers.map(|n| AttributeValue::N(n.to_owned())));
}

#[test]
fn empty_values_are_accepted_alike() {
    let values = [
        AttributeValue::S(String::new()),
        AttributeValue::B(vec![]),
        AttributeValue::M(BTreeMap::new()),
        AttributeValue::L(vec![]),
        AttributeValue::Ss(vec![]),
        AttributeValue::Ns(vec![]),
        AttributeValue::Bs(vec![]),
        AttributeValue::Ss(vec![String::new()]),
        AttributeValue::Bs(vec![vec![]]),
        AttributeValue::M(BTreeMap::from([(String::new(), AttributeValue::Null)])),
    ];
    edges("empty values", values);
}

#[test]
fn large_and_deep_values_are_handled_alike() {
    let nest = |depth: usize| {
        let mut v = AttributeValue::S("leaf".into());
        for i in 0..depth {
            v = if i % 2 == 0 {
                AttributeValue::L(vec![v])
            } else {
                AttributeValue::M(BTreeMap::from([("k".into(), v)]))
            };
        }
        v
    };
    edges(
        "large and deep values",
        [
            AttributeValue::S("a".repeat(70_000)),
            AttributeValue::B(vec![7; 70_000]),
            nest(31),
            nest(32),
            nest(40),
        ],
    );
}

#[test]
fn duplicate_set_entries_are_accepted_alike() {
    let values = [
        AttributeValue::Ss(vec!["a".into(), "a".into()]),
        AttributeValue::Ns(vec!["1".into(), "1".into()]),
        AttributeValue::Ns(vec!["1".into(), "1.0".into()]),
        AttributeValue::Bs(vec![vec![1], vec![1]]),
    ];
    edges("duplicate set entries", values);
}

#[test]
fn invalid_items_are_rejected_alike() {
    let base = fixed_case(true, false, true);
    let mut variants: Vec<(&str, Case, Item)> = Vec::new();

    let mut reserved = base.clone();
    reserved
        .attrs
        .insert("aws_dbe_x".into(), (Action::Sign, AttributeValue::S("x".into())));
    variants.push(("reserved attribute name", reserved.clone(), reserved.item()));

    let mut no_pk = base.item();
    no_pk.remove("pk");
    variants.push(("missing partition key", base.clone(), no_pk));

    let mut no_sk = base.item();
    no_sk.remove("sk");
    variants.push(("missing sort key", base.clone(), no_sk));

    let mut unconfigured = base.item();
    unconfigured.insert("unconfigured".into(), AttributeValue::S("x".into()));
    variants.push(("attribute without an action", base.clone(), unconfigured));

    let v2 = fixed_case(false, true, false);
    let mut no_context = v2.item();
    no_context.remove("tenant");
    variants.push((
        "missing SIGN_AND_INCLUDE_IN_ENCRYPTION_CONTEXT attribute",
        v2.clone(),
        no_context,
    ));

    let mut problems = Vec::new();
    runtime().block_on(async {
        for (what, case, item) in &variants {
            let cfg = case.config();
            let ours = ours::encrypt(&cfg, item).await.map(drop).map_err(|e| e.to_string());
            let official = official::encrypt(&cfg, item).await.map(drop).map_err(|e| e.to_string());
            if ours.is_ok() || official.is_ok() {
                problems.push(format!("{what}: ddbguard {ours:?}, official {official:?}"));
            }
        }
    });
    assert_no_problems("invalid items (both must reject)", problems);
}

// ---------------------------------------------------------------------------------------------
// Tampering

#[derive(Debug, Clone)]
enum Tamper {
    FlipEncrypted { pick: usize, byte: usize, bit: u8 },
    FlipHeader { byte: usize, bit: u8 },
    FlipFooter { byte: usize, bit: u8 },
    SwapEncrypted { pick: usize },
    MoveEncrypted { pick: usize },
    ChangeSignOnly { pick: usize },
    ChangeKey,
    ChangeContextAttribute,
    AddAttribute,
    RemoveSigned { pick: usize },
    RemoveHeader,
    RemoveFooter,
}

fn tamper() -> impl Strategy<Value = Tamper> {
    let pick = any::<usize>();
    prop_oneof![
        3 => (pick, any::<usize>(), 0u8..8).prop_map(|(pick, byte, bit)| Tamper::FlipEncrypted { pick, byte, bit }),
        3 => (any::<usize>(), 0u8..8).prop_map(|(byte, bit)| Tamper::FlipHeader { byte, bit }),
        2 => (any::<usize>(), 0u8..8).prop_map(|(byte, bit)| Tamper::FlipFooter { byte, bit }),
        1 => pick.prop_map(|pick| Tamper::SwapEncrypted { pick }),
        1 => pick.prop_map(|pick| Tamper::MoveEncrypted { pick }),
        1 => pick.prop_map(|pick| Tamper::ChangeSignOnly { pick }),
        1 => Just(Tamper::ChangeKey),
        1 => Just(Tamper::ChangeContextAttribute),
        1 => Just(Tamper::AddAttribute),
        1 => pick.prop_map(|pick| Tamper::RemoveSigned { pick }),
        1 => Just(Tamper::RemoveHeader),
        1 => Just(Tamper::RemoveFooter),
    ]
}

fn flip(item: &mut Item, name: &str, byte: usize, bit: u8) -> String {
    let Some(AttributeValue::B(b)) = item.get_mut(name) else {
        panic!("{name} is not binary")
    };
    let at = byte % b.len();
    b[at] ^= 1 << bit;
    format!("{name} byte {at} of {} bit {bit}", b.len())
}

/// Applies a tamper to an encrypted item; returns a description and whether the change lies inside
/// the header's encrypted data keys, or None if it does not apply.
fn apply(case: &Case, item: &mut Item, t: &Tamper) -> Option<(String, bool)> {
    let in_edks = match t {
        Tamper::FlipHeader { byte, .. } => {
            let head = binary(item, HEADER).expect("header");
            edk_region(head)
                .expect("well-formed header")
                .contains(&(byte % head.len()))
        }
        _ => false,
    };
    let what = apply_change(case, item, t)?;
    Some((what, in_edks))
}

fn apply_change(case: &Case, item: &mut Item, t: &Tamper) -> Option<String> {
    let encrypted = case.names_with(Action::Encrypt);
    let signed = case.names_with(Action::Sign);
    Some(match t {
        Tamper::FlipEncrypted { pick, byte, bit } => flip(item, &encrypted[pick % encrypted.len()], *byte, *bit),
        Tamper::FlipHeader { byte, bit } => flip(item, HEADER, *byte, *bit),
        Tamper::FlipFooter { byte, bit } => flip(item, FOOTER, *byte, *bit),
        Tamper::SwapEncrypted { pick } => {
            let a = &encrypted[pick % encrypted.len()];
            let b = &encrypted[(pick + 1) % encrypted.len()];
            let (va, vb) = (item[a].clone(), item[b].clone());
            item.insert(a.clone(), vb);
            item.insert(b.clone(), va);
            format!("swap {a} and {b}")
        }
        Tamper::MoveEncrypted { pick } => {
            let a = &encrypted[pick % encrypted.len()];
            let b = &encrypted[(pick + 1) % encrypted.len()];
            let va = item[a].clone();
            item.insert(b.clone(), va);
            format!("copy {a} over {b}")
        }
        Tamper::ChangeSignOnly { pick } => {
            let a = &signed[pick % signed.len()];
            let changed = match &item[a] {
                AttributeValue::S(s) => AttributeValue::S(format!("{s}!")),
                AttributeValue::N(n) => AttributeValue::N(format!("{n}1")),
                AttributeValue::L(l) => AttributeValue::L(l[1..].to_vec()),
                AttributeValue::M(m) => {
                    AttributeValue::M(m.iter().skip(1).map(|(k, v)| (k.clone(), v.clone())).collect())
                }
                AttributeValue::Ns(ns) => AttributeValue::Ns(ns[1..].to_vec()),
                other => AttributeValue::S(format!("{other:?}")),
            };
            item.insert(a.clone(), changed);
            format!("change SIGN_ONLY {a}")
        }
        Tamper::ChangeKey => {
            item.insert(case.keys.0.to_owned(), AttributeValue::S("customer#2".into()));
            "change the partition key".to_owned()
        }
        Tamper::ChangeContextAttribute => {
            let name = case.names_with(Action::Context).into_iter().next()?;
            item.insert(name.clone(), AttributeValue::S("t-2".into()));
            format!("change SIGN_AND_INCLUDE_IN_ENCRYPTION_CONTEXT {name}")
        }
        Tamper::AddAttribute => {
            item.insert("intruder".into(), AttributeValue::S("x".into()));
            "add attribute intruder".to_owned()
        }
        Tamper::RemoveSigned { pick } => {
            let all: Vec<_> = encrypted.iter().chain(&signed).collect();
            let a = all[pick % all.len()];
            item.remove(a);
            format!("remove {a}")
        }
        Tamper::RemoveHeader => {
            item.remove(HEADER);
            "remove aws_dbe_head".to_owned()
        }
        Tamper::RemoveFooter => {
            item.remove(FOOTER);
            "remove aws_dbe_foot".to_owned()
        }
    })
}

fn check_tamper(case: &Case, by_ours: bool, t: &Tamper) -> Result<(), TestCaseError> {
    let cfg = case.config();
    let item = case.item();
    runtime().block_on(async {
        let mut encrypted = if by_ours {
            ours::encrypt(&cfg, &item)
                .await
                .map_err(|e| fail(format!("ddbguard encrypt: {e}")))?
        } else {
            official::encrypt(&cfg, &item)
                .await
                .map_err(|e| fail(format!("official encrypt: {e}")))?
        };
        let Some((what, in_edks)) = apply(case, &mut encrypted, t) else {
            return Ok(());
        };
        let writer = if by_ours { "ddbguard" } else { "official" };
        let official = official::decrypt(&cfg, &encrypted).await;
        prop_assert!(
            official.is_err(),
            "official decrypt accepted {}'s item after: {}",
            writer,
            what
        );
        match ours::decrypt(&cfg, &encrypted).await {
            Ok(_) => prop_assert!(false, "ddbguard decrypt accepted {}'s item after: {}", writer, what),
            Err(e) => {
                // A changed EDK (provider id, key name, wrapped key) reads as an item for some other
                // key: without that key it cannot be told apart from tampering, so key_not_mrk is fine.
                let verdict = ours::verdict(&e);
                let ok =
                    matches!(verdict, "integrity_failed" | "policy_violation") || (in_edks && verdict == "key_not_mrk");
                prop_assert!(
                    ok,
                    "ddbguard verdict {} for '{}' on {}'s item: {}",
                    verdict,
                    what,
                    writer,
                    e
                );
            }
        }
        Ok(())
    })
}

proptest! {
    #![proptest_config(proptest_config(96))]

    #[test]
    fn tampered_items_fail_on_both_sides(
        ecdsa in any::<bool>(),
        v2 in any::<bool>(),
        sort_key in any::<bool>(),
        by_ours in any::<bool>(),
        t in tamper(),
    ) {
        check_tamper(&fixed_case(ecdsa, v2, sort_key), by_ours, &t)?;
    }
}

/// Every tamper kind at least once per writer and suite, independent of the random draw above.
#[test]
fn every_tamper_kind_fails_on_both_sides() {
    let kinds = [
        Tamper::FlipEncrypted {
            pick: 0,
            byte: 0,
            bit: 0,
        },
        Tamper::FlipEncrypted {
            pick: 1,
            byte: 7,
            bit: 3,
        },
        Tamper::FlipEncrypted {
            pick: 2,
            byte: usize::MAX,
            bit: 7,
        },
        Tamper::FlipHeader { byte: 0, bit: 0 },
        Tamper::FlipHeader { byte: 1, bit: 0 },
        Tamper::FlipHeader { byte: 10, bit: 2 },
        Tamper::FlipHeader { byte: 36, bit: 1 },
        Tamper::FlipHeader {
            byte: usize::MAX,
            bit: 5,
        },
        Tamper::FlipFooter { byte: 0, bit: 0 },
        Tamper::FlipFooter {
            byte: usize::MAX,
            bit: 7,
        },
        Tamper::SwapEncrypted { pick: 0 },
        Tamper::MoveEncrypted { pick: 3 },
        Tamper::ChangeSignOnly { pick: 0 },
        Tamper::ChangeSignOnly { pick: 1 },
        Tamper::ChangeKey,
        Tamper::ChangeContextAttribute,
        Tamper::AddAttribute,
        Tamper::RemoveSigned { pick: 0 },
        Tamper::RemoveSigned { pick: 9 },
        Tamper::RemoveHeader,
        Tamper::RemoveFooter,
    ];
    let mut problems = Vec::new();
    for ecdsa in [false, true] {
        for v2 in [false, true] {
            let case = fixed_case(ecdsa, v2, true);
            for by_ours in [false, true] {
                for t in &kinds {
                    if let Err(e) = check_tamper(&case, by_ours, t) {
                        problems.push(format!("suite {} v2 {v2}: {e}", suite_name(ecdsa)));
                    }
                }
            }
        }
    }
    assert_no_problems("tampering", problems);
}

/// The positive control for the tamper tests: changing or removing a DO_NOTHING attribute is
/// accepted by both sides.
#[test]
fn unsigned_attributes_may_change() {
    for ecdsa in [false, true] {
        let case = fixed_case(ecdsa, false, true);
        let cfg = case.config();
        runtime().block_on(async {
            for by_ours in [false, true] {
                let mut encrypted = if by_ours {
                    ours::encrypt(&cfg, &case.item()).await.expect("ddbguard encrypt")
                } else {
                    official::encrypt(&cfg, &case.item()).await.expect("official encrypt")
                };
                encrypted.insert("note".into(), AttributeValue::N("5".into()));
                encrypted.remove(":free");
                encrypted.insert(":other".into(), AttributeValue::Null);
                let a = official::decrypt(&cfg, &encrypted).await.expect("official decrypt");
                let b = ours::decrypt(&cfg, &encrypted).await.expect("ddbguard decrypt");
                assert_eq!(canon_item(&a), canon_item(&b));
                assert_eq!(a.get("note"), Some(&AttributeValue::N("5".into())));
                assert_eq!(a.get(":other"), Some(&AttributeValue::Null));
            }
        });
    }
}

// ---------------------------------------------------------------------------------------------
// The helpers themselves

#[test]
fn reference_normalizer_matches_known_values() {
    for (input, want) in [
        ("-0.50", Some("-0.5")),
        ("1E2", Some("100")),
        ("00.100", Some("0.1")),
        ("-0", Some("0")),
        ("0.000123e2", Some("0.0123")),
        ("-1.5E+3", Some("-1500")),
        ("5.", Some("5")),
        (".5", Some("0.5")),
        ("", None),
        ("abc", None),
    ] {
        assert_eq!(normalize_number(input).as_deref(), want, "{input}");
    }
}

#[test]
fn conversions_round_trip() {
    let item = fixed_case(true, true, true).item();
    assert_eq!(from_official_item(&to_official_item(&item)), item);
}

#[test]
fn header_parser_finds_the_raw_aes_edk() {
    for ecdsa in [false, true] {
        let case = fixed_case(ecdsa, true, true);
        let encrypted = runtime()
            .block_on(official::encrypt(&case.config(), &case.item()))
            .expect("official encrypt");
        let head = binary(&encrypted, HEADER).expect("header");
        let region = edk_region(head).expect("EDK region");
        assert_eq!(head[region.start - 1], 1, "one EDK");
        let edk = &head[region];
        let ns_len = usize::from(u16::from_be_bytes([edk[0], edk[1]]));
        assert_eq!(&edk[2..2 + ns_len], KEY_NAMESPACE.as_bytes());
        // Provider info = key name || u32 tag bits || u32 IV length || IV; ciphertext = 32 + 16 + 16
        // (wrapped intermediate key wrapping PDK, then the raw-AES-wrapped intermediate key).
        let info_len = usize::from(u16::from_be_bytes([edk[2 + ns_len], edk[3 + ns_len]]));
        assert_eq!(info_len, KEY_NAME.len() + 4 + 4 + 12);
        let ct_at = 4 + ns_len + info_len;
        let ct_len = usize::from(u16::from_be_bytes([edk[ct_at], edk[ct_at + 1]]));
        assert_eq!(ct_at + 2 + ct_len, edk.len(), "EDK entries end at the commitment");
        assert_eq!(
            legend(head).expect("legend").len(),
            case.attrs.len() + 2 - 1,
            "signed attributes"
        );
    }
}
