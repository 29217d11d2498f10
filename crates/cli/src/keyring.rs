//! Builds the keyring a table's settings describe.

use ddbguard_dbe::Keyring;
use ddbguard_keys::RawAesKeyring;

use crate::config::KeyringSettings;

/// The keyring for these settings, ready to decrypt and encrypt.
pub fn build(settings: &KeyringSettings) -> Box<dyn Keyring> {
    match settings {
        KeyringSettings::RawAes { namespace, name, key } => {
            Box::new(RawAesKeyring::new(namespace.clone(), name.clone(), key.clone()))
        }
    }
}
