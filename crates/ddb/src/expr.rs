//! Typed conditions and updates, and their rendering to DynamoDB expressions.
//!
//! Callers never write expression strings: the SDK implementation renders a [`Condition`] or an [`Update`]
//! with `#n<i>` name and `:v<i>` value placeholders (attribute names may contain any character, including the
//! ones expressions reserve), and the fake evaluates them directly. Names are top-level attribute names; no
//! document paths.

use std::collections::HashMap;

use crate::AttributeValue;

/// A condition on an item's top-level attributes, checked by DynamoDB atomically with a write.
#[derive(Debug, Clone, PartialEq)]
pub enum Condition {
    /// The attribute exists (`attribute_exists`). On a key attribute: the item exists.
    AttributeExists(String),
    /// The attribute does not exist (`attribute_not_exists`). On a key attribute: the item does not exist.
    AttributeNotExists(String),
    /// The attribute exists and equals the value (`=`; numbers compare numerically, sets as sets).
    Equals(String, AttributeValue),
    /// Every condition holds. Must not be empty (DynamoDB has no literal `true`).
    And(Vec<Condition>),
    /// At least one condition holds. Must not be empty.
    Or(Vec<Condition>),
    /// The condition does not hold.
    Not(Box<Condition>),
}

impl Condition {
    /// [`Condition::AttributeExists`].
    pub fn exists(name: impl Into<String>) -> Condition {
        Condition::AttributeExists(name.into())
    }

    /// [`Condition::AttributeNotExists`].
    pub fn not_exists(name: impl Into<String>) -> Condition {
        Condition::AttributeNotExists(name.into())
    }

    /// [`Condition::Equals`].
    pub fn equals(name: impl Into<String>, value: AttributeValue) -> Condition {
        Condition::Equals(name.into(), value)
    }

    /// `self AND other`, flattening nested `And`s.
    pub fn and(self, other: Condition) -> Condition {
        match self {
            Condition::And(mut all) => {
                all.push(other);
                Condition::And(all)
            }
            first => Condition::And(vec![first, other]),
        }
    }
}

/// One action of an [`Update`].
#[derive(Debug, Clone, PartialEq)]
pub enum UpdateAction {
    /// `SET name = value`.
    Set(String, AttributeValue),
    /// `REMOVE name`.
    Remove(String),
    /// `ADD name number`: adds to a number attribute (an absent attribute counts as 0). The value is the
    /// decimal text of the number.
    AddNumber(String, String),
}

/// The changes an `UpdateItem` makes, in order. Build with [`Update::new`] and the chained methods.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Update {
    /// The actions. Must not be empty, and name each attribute at most once (DynamoDB refuses overlapping
    /// paths).
    pub actions: Vec<UpdateAction>,
}

impl Update {
    /// An update without actions.
    pub fn new() -> Update {
        Update::default()
    }

    /// Adds `SET name = value`.
    pub fn set(mut self, name: impl Into<String>, value: AttributeValue) -> Update {
        self.actions.push(UpdateAction::Set(name.into(), value));
        self
    }

    /// Adds `REMOVE name`.
    pub fn remove(mut self, name: impl Into<String>) -> Update {
        self.actions.push(UpdateAction::Remove(name.into()));
        self
    }

    /// Adds `ADD name delta`.
    pub fn add_number(mut self, name: impl Into<String>, delta: i64) -> Update {
        self.actions
            .push(UpdateAction::AddNumber(name.into(), delta.to_string()));
        self
    }
}

/// Why a condition or an update cannot be rendered (or evaluated): it is not a valid DynamoDB expression.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid expression: {0}")]
pub struct InvalidExpression(pub String);

/// Expressions with their placeholder maps, ready for an SDK request.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Rendered {
    /// The condition expression, if any.
    pub condition: Option<String>,
    /// The update expression, if any.
    pub update: Option<String>,
    /// The key condition expression (queries), if any.
    pub key_condition: Option<String>,
    /// `#n<i>` → attribute name.
    pub names: HashMap<String, String>,
    /// `:v<i>` → value.
    pub values: HashMap<String, AttributeValue>,
}

/// Allocates placeholders; one name gets one placeholder however often it appears.
#[derive(Debug, Default)]
pub struct Renderer {
    out: Rendered,
    by_name: HashMap<String, String>,
}

impl Renderer {
    /// A renderer with no placeholders yet.
    pub fn new() -> Renderer {
        Renderer::default()
    }

    fn name(&mut self, name: &str) -> String {
        if let Some(p) = self.by_name.get(name) {
            return p.clone();
        }
        let p = format!("#n{}", self.by_name.len());
        self.by_name.insert(name.to_owned(), p.clone());
        self.out.names.insert(p.clone(), name.to_owned());
        p
    }

    fn value(&mut self, value: &AttributeValue) -> String {
        let p = format!(":v{}", self.out.values.len());
        self.out.values.insert(p.clone(), value.clone());
        p
    }

    /// Renders `condition` as the condition expression.
    pub fn condition(&mut self, condition: &Condition) -> Result<(), InvalidExpression> {
        let text = self.render_condition(condition)?;
        self.out.condition = Some(text);
        Ok(())
    }

    /// Renders `name = value` as the key condition expression of a query.
    pub fn key_condition(&mut self, name: &str, value: &AttributeValue) {
        let n = self.name(name);
        let v = self.value(value);
        self.out.key_condition = Some(format!("{n} = {v}"));
    }

    fn render_condition(&mut self, c: &Condition) -> Result<String, InvalidExpression> {
        Ok(match c {
            Condition::AttributeExists(name) => format!("attribute_exists({})", self.name(name)),
            Condition::AttributeNotExists(name) => format!("attribute_not_exists({})", self.name(name)),
            Condition::Equals(name, v) => format!("{} = {}", self.name(name), self.value(v)),
            Condition::And(all) | Condition::Or(all) => {
                let (op, word) = if matches!(c, Condition::And(_)) {
                    (" AND ", "And")
                } else {
                    (" OR ", "Or")
                };
                if all.is_empty() {
                    return Err(InvalidExpression(format!("an empty {word} has no DynamoDB expression")));
                }
                if all.len() == 1 {
                    return self.render_condition(&all[0]);
                }
                let parts = all
                    .iter()
                    .map(|c| self.render_condition(c).map(|s| format!("({s})")))
                    .collect::<Result<Vec<_>, _>>()?;
                parts.join(op)
            }
            Condition::Not(inner) => format!("NOT ({})", self.render_condition(inner)?),
        })
    }

    /// Renders `update` as the update expression: `SET …, … REMOVE … ADD …` (DynamoDB groups actions by
    /// clause; the order within a clause is kept).
    pub fn update(&mut self, update: &Update) -> Result<(), InvalidExpression> {
        check_update(update)?;
        let (mut set, mut remove, mut add) = (Vec::new(), Vec::new(), Vec::new());
        for action in &update.actions {
            match action {
                UpdateAction::Set(name, v) => set.push(format!("{} = {}", self.name(name), self.value(v))),
                UpdateAction::Remove(name) => remove.push(self.name(name)),
                UpdateAction::AddNumber(name, delta) => add.push(format!(
                    "{} {}",
                    self.name(name),
                    self.value(&AttributeValue::N(delta.clone()))
                )),
            }
        }
        let clauses: Vec<String> = [("SET", set), ("REMOVE", remove), ("ADD", add)]
            .into_iter()
            .filter(|(_, parts)| !parts.is_empty())
            .map(|(word, parts)| format!("{word} {}", parts.join(", ")))
            .collect();
        self.out.update = Some(clauses.join(" "));
        Ok(())
    }

    /// The rendered expressions and placeholder maps.
    pub fn finish(self) -> Rendered {
        self.out
    }
}

/// The checks DynamoDB makes of an update expression: at least one action, each attribute named once.
pub(crate) fn check_update(update: &Update) -> Result<(), InvalidExpression> {
    if update.actions.is_empty() {
        return Err(InvalidExpression("an update needs at least one action".into()));
    }
    let mut seen = std::collections::HashSet::new();
    for action in &update.actions {
        let name = match action {
            UpdateAction::Set(n, _) | UpdateAction::Remove(n) | UpdateAction::AddNumber(n, _) => n,
        };
        if !seen.insert(name.as_str()) {
            return Err(InvalidExpression(format!(
                "two actions of one update name attribute {name:?}"
            )));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &str) -> AttributeValue {
        AttributeValue::S(v.into())
    }

    fn render(c: &Condition) -> Rendered {
        let mut r = Renderer::new();
        r.condition(c).unwrap();
        r.finish()
    }

    #[test]
    fn each_condition_shape_renders_with_placeholders() {
        let r = render(&Condition::exists("a b"));
        assert_eq!(r.condition.as_deref(), Some("attribute_exists(#n0)"));
        assert_eq!(r.names, HashMap::from([("#n0".into(), "a b".into())]));
        assert!(r.values.is_empty());

        let r = render(&Condition::not_exists("branch-key-id"));
        assert_eq!(r.condition.as_deref(), Some("attribute_not_exists(#n0)"));
        assert_eq!(r.names["#n0"], "branch-key-id");

        let r = render(&Condition::equals("x.y", s("1")));
        assert_eq!(r.condition.as_deref(), Some("#n0 = :v0"));
        assert_eq!(r.names["#n0"], "x.y");
        assert_eq!(r.values[":v0"], s("1"));

        let r = render(&Condition::Not(Box::new(Condition::exists("x"))));
        assert_eq!(r.condition.as_deref(), Some("NOT (attribute_exists(#n0))"));
    }

    #[test]
    fn and_or_nest_and_reuse_name_placeholders() {
        let c = Condition::And(vec![
            Condition::exists("id"),
            Condition::Or(vec![Condition::equals("n", s("a")), Condition::equals("n", s("b"))]),
            Condition::not_exists("aws_dbe_head"),
        ]);
        let r = render(&c);
        assert_eq!(
            r.condition.as_deref(),
            Some("(attribute_exists(#n0)) AND ((#n1 = :v0) OR (#n1 = :v1)) AND (attribute_not_exists(#n2))")
        );
        assert_eq!(r.names.len(), 3);
        assert_eq!(r.names["#n2"], "aws_dbe_head");
        assert_eq!((r.values[":v0"].clone(), r.values[":v1"].clone()), (s("a"), s("b")));
        // A single-element group is the element itself.
        assert_eq!(
            render(&Condition::And(vec![Condition::exists("x")]))
                .condition
                .as_deref(),
            Some("attribute_exists(#n0)")
        );
        // `and` flattens.
        assert_eq!(
            Condition::exists("a")
                .and(Condition::exists("b"))
                .and(Condition::exists("c")),
            Condition::And(vec![
                Condition::exists("a"),
                Condition::exists("b"),
                Condition::exists("c")
            ])
        );
    }

    #[test]
    fn empty_groups_and_updates_are_refused() {
        let mut r = Renderer::new();
        assert!(r.condition(&Condition::And(vec![])).is_err());
        assert!(r.condition(&Condition::Not(Box::new(Condition::Or(vec![])))).is_err());
        assert!(r.update(&Update::new()).is_err());
        let twice = Update::new().set("a", s("1")).remove("a");
        assert!(r.update(&twice).unwrap_err().0.contains("\"a\""));
    }

    #[test]
    fn updates_group_actions_by_clause_and_share_placeholders_with_the_condition() {
        let mut r = Renderer::new();
        let u = Update::new()
            .set("owner", s("w1"))
            .add_number("counter", 1)
            .remove("checkpoint")
            .set("token", AttributeValue::N("7".into()));
        r.update(&u).unwrap();
        r.condition(&Condition::equals("counter", AttributeValue::N("6".into())))
            .unwrap();
        let out = r.finish();
        assert_eq!(
            out.update.as_deref(),
            Some("SET #n0 = :v0, #n3 = :v2 REMOVE #n2 ADD #n1 :v1")
        );
        assert_eq!(out.condition.as_deref(), Some("#n1 = :v3"));
        assert_eq!(out.names["#n1"], "counter");
        assert_eq!(out.values[":v1"], AttributeValue::N("1".into()));
        assert_eq!(out.values[":v3"], AttributeValue::N("6".into()));
        assert_eq!(out.names.len(), 4);
        assert_eq!(out.values.len(), 4);
    }

    #[test]
    fn key_conditions_render_with_placeholders() {
        let mut r = Renderer::new();
        r.key_condition("branch-key-id", &s("bk"));
        let out = r.finish();
        assert_eq!(out.key_condition.as_deref(), Some("#n0 = :v0"));
        assert_eq!(out.names["#n0"], "branch-key-id");
    }
}
