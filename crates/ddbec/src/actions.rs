//! What the legacy client did to each attribute.

use std::collections::BTreeMap;

/// The legacy client's per-attribute action.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum LegacyAction {
    /// `DO_NOTHING`: neither signed nor encrypted.
    DoNothing,
    /// `SIGN_ONLY`: signed, stored in plaintext.
    SignOnly,
    /// `ENCRYPT_AND_SIGN`: encrypted and signed (over the ciphertext).
    EncryptAndSign,
}

/// A default action and per-attribute overrides, as the clients' `AttributeActions` are configured.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttributeActions {
    default: LegacyAction,
    overrides: BTreeMap<String, LegacyAction>,
}

impl AttributeActions {
    /// Every attribute gets `default` unless overridden.
    pub fn new(default: LegacyAction) -> AttributeActions {
        AttributeActions {
            default,
            overrides: BTreeMap::new(),
        }
    }

    /// Sets one attribute's action.
    pub fn with(mut self, attribute: impl Into<String>, action: LegacyAction) -> AttributeActions {
        self.overrides.insert(attribute.into(), action);
        self
    }

    /// Marks the table's key attributes: the clients never encrypt them, so `ENCRYPT_AND_SIGN` becomes
    /// `SIGN_ONLY` (what `set_index_keys` / the mapper do).
    pub fn with_key_attributes<'a>(mut self, keys: impl IntoIterator<Item = &'a str>) -> AttributeActions {
        for key in keys {
            let action = self.action(key).min(LegacyAction::SignOnly);
            self.overrides.insert(key.to_owned(), action);
        }
        self
    }

    /// The action for an attribute.
    pub fn action(&self, attribute: &str) -> LegacyAction {
        self.overrides.get(attribute).copied().unwrap_or(self.default)
    }

    /// Whether any attribute may be encrypted.
    pub fn may_encrypt(&self) -> bool {
        self.default == LegacyAction::EncryptAndSign
            || self.overrides.values().any(|a| *a == LegacyAction::EncryptAndSign)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_attributes_are_demoted_to_sign_only_but_never_promoted() {
        let actions = AttributeActions::new(LegacyAction::EncryptAndSign)
            .with("skip", LegacyAction::DoNothing)
            .with_key_attributes(["pk", "skip"]);
        assert_eq!(actions.action("pk"), LegacyAction::SignOnly);
        assert_eq!(actions.action("skip"), LegacyAction::DoNothing);
        assert_eq!(actions.action("other"), LegacyAction::EncryptAndSign);
        assert!(actions.may_encrypt());
        assert!(!AttributeActions::new(LegacyAction::SignOnly).may_encrypt());
    }
}
