//! KMS multi-Region keys: cross-region decrypt with the local replica, and the key states ddbguard classifies
//! as `key_unavailable`.

use aws_sdk_kms::operation::decrypt::DecryptError;
use aws_sdk_kms::operation::generate_data_key::GenerateDataKeyError;
use aws_sdk_kms::primitives::Blob;
use aws_sdk_kms::types::{DataKeySpec, KeyState};
use ddbguard_e2e::{LocalAws, PRIMARY_REGION, REPLICA_REGION, unique_name};

/// A data key generated in us-east-1 decrypts in ap-southeast-2 with the replica's ARN, to the same plaintext.
#[tokio::test]
async fn data_key_from_primary_decrypts_with_replica_arn() -> anyhow::Result<()> {
    let env = LocalAws::shared();
    let mrk = env.create_replicated_mrk(&unique_name("mrk", "cross-region")).await?;
    let replica_arn = mrk.replica_arn.clone().expect("replicated");
    assert!(mrk.key_id.starts_with("mrk-"), "{}", mrk.key_id);
    assert_eq!(replica_arn, mrk.arn_in(REPLICA_REGION));

    let generated = env
        .kms(PRIMARY_REGION)
        .await
        .generate_data_key()
        .key_id(&mrk.primary_arn)
        .key_spec(DataKeySpec::Aes256)
        .encryption_context("tenant", "t1")
        .send()
        .await?;
    let plaintext = generated.plaintext().expect("plaintext").clone();
    assert_eq!(plaintext.as_ref().len(), 32);
    assert_eq!(generated.key_id(), Some(mrk.primary_arn.as_str()));

    let decrypted = env
        .kms(REPLICA_REGION)
        .await
        .decrypt()
        .ciphertext_blob(generated.ciphertext_blob().expect("ciphertext").clone())
        .key_id(&replica_arn)
        .encryption_context("tenant", "t1")
        .send()
        .await?;
    assert_eq!(decrypted.plaintext().expect("plaintext").as_ref(), plaintext.as_ref());
    assert_eq!(decrypted.key_id(), Some(replica_arn.as_str()));
    Ok(())
}

/// MRK ciphertexts decrypt in their own region too (moto's fixed-size key-id field broke this), with and without
/// a KeyId, and a wrong encryption context is refused.
#[tokio::test]
async fn mrk_ciphertext_decrypts_in_same_region() -> anyhow::Result<()> {
    let env = LocalAws::shared();
    let mrk = env.create_mrk(&unique_name("mrk", "same-region")).await?;
    let kms = env.kms_no_retry(PRIMARY_REGION).await;
    let encrypted = kms
        .encrypt()
        .key_id(&mrk.key_id)
        .plaintext(Blob::new(b"secret".to_vec()))
        .send()
        .await?;
    let blob = encrypted.ciphertext_blob().expect("ciphertext").clone();

    let with_key = kms
        .decrypt()
        .ciphertext_blob(blob.clone())
        .key_id(&mrk.primary_arn)
        .send()
        .await?;
    assert_eq!(with_key.plaintext().expect("plaintext").as_ref(), b"secret");
    let without_key = kms.decrypt().ciphertext_blob(blob.clone()).send().await?;
    assert_eq!(without_key.plaintext().expect("plaintext").as_ref(), b"secret");
    assert_eq!(without_key.key_id(), Some(mrk.primary_arn.as_str()));

    let wrong_context = kms
        .decrypt()
        .ciphertext_blob(blob)
        .encryption_context("k", "v")
        .send()
        .await;
    let err = wrong_context
        .expect_err("wrong encryption context must fail")
        .into_service_error();
    assert!(matches!(err, DecryptError::InvalidCiphertextException(_)), "{err:?}");
    Ok(())
}

/// A disabled replica refuses to decrypt with the modeled `DisabledException`; the primary still works, and
/// re-enabling the replica (by ARN) restores it.
#[tokio::test]
async fn disabled_replica_is_disabled_exception() -> anyhow::Result<()> {
    let env = LocalAws::shared();
    let mrk = env.create_replicated_mrk(&unique_name("mrk", "disabled")).await?;
    let replica_arn = mrk.replica_arn.clone().expect("replicated");
    let primary = env.kms_no_retry(PRIMARY_REGION).await;
    let replica = env.kms_no_retry(REPLICA_REGION).await;
    let blob = primary
        .encrypt()
        .key_id(&mrk.primary_arn)
        .plaintext(Blob::new(b"x".to_vec()))
        .send()
        .await?
        .ciphertext_blob()
        .expect("ciphertext")
        .clone();

    replica.disable_key().key_id(&replica_arn).send().await?;
    let described = replica.describe_key().key_id(&replica_arn).send().await?;
    assert_eq!(
        described.key_metadata().and_then(|m| m.key_state()),
        Some(&KeyState::Disabled)
    );

    let err = replica
        .decrypt()
        .ciphertext_blob(blob.clone())
        .key_id(&replica_arn)
        .send()
        .await;
    let err = err.expect_err("disabled replica must refuse").into_service_error();
    assert!(matches!(err, DecryptError::DisabledException(_)), "{err:?}");

    let err = replica
        .generate_data_key()
        .key_id(&replica_arn)
        .number_of_bytes(32)
        .send()
        .await;
    let err = err.expect_err("disabled replica must refuse").into_service_error();
    assert!(matches!(err, GenerateDataKeyError::DisabledException(_)), "{err:?}");

    // The primary's state is its own.
    let ok = primary.decrypt().ciphertext_blob(blob.clone()).send().await?;
    assert_eq!(ok.plaintext().expect("plaintext").as_ref(), b"x");

    replica.enable_key().key_id(&replica_arn).send().await?;
    let ok = replica
        .decrypt()
        .ciphertext_blob(blob)
        .key_id(&replica_arn)
        .send()
        .await?;
    assert_eq!(ok.plaintext().expect("plaintext").as_ref(), b"x");
    Ok(())
}

/// A replica scheduled for deletion is `KMSInvalidStateException` (modeled as `KmsInvalidStateException`).
#[tokio::test]
async fn pending_deletion_replica_is_invalid_state() -> anyhow::Result<()> {
    let env = LocalAws::shared();
    let mrk = env
        .create_replicated_mrk(&unique_name("mrk", "pending-deletion"))
        .await?;
    let replica_arn = mrk.replica_arn.clone().expect("replicated");
    let blob = env
        .kms(PRIMARY_REGION)
        .await
        .encrypt()
        .key_id(&mrk.primary_arn)
        .plaintext(Blob::new(b"x".to_vec()))
        .send()
        .await?
        .ciphertext_blob()
        .expect("ciphertext")
        .clone();
    let replica = env.kms_no_retry(REPLICA_REGION).await;
    replica
        .schedule_key_deletion()
        .key_id(&replica_arn)
        .pending_window_in_days(7)
        .send()
        .await?;

    let err = replica
        .decrypt()
        .ciphertext_blob(blob.clone())
        .key_id(&replica_arn)
        .send()
        .await;
    let err = err.expect_err("pending deletion must refuse").into_service_error();
    assert!(matches!(err, DecryptError::KmsInvalidStateException(_)), "{err:?}");

    let err = replica
        .generate_data_key()
        .key_id(&replica_arn)
        .key_spec(DataKeySpec::Aes256)
        .send()
        .await;
    let err = err.expect_err("pending deletion must refuse").into_service_error();
    assert!(
        matches!(err, GenerateDataKeyError::KmsInvalidStateException(_)),
        "{err:?}"
    );

    // CancelKeyDeletion leaves the key Disabled, as KMS does.
    replica.cancel_key_deletion().key_id(&replica_arn).send().await?;
    let err = replica
        .decrypt()
        .ciphertext_blob(blob)
        .key_id(&replica_arn)
        .send()
        .await;
    let err = err
        .expect_err("cancelled deletion leaves it disabled")
        .into_service_error();
    assert!(matches!(err, DecryptError::DisabledException(_)), "{err:?}");
    Ok(())
}

/// An MRK never replicated to ap-southeast-2 is `NotFoundException` there: by its would-be replica ARN, by its
/// id, by the primary's ARN (another region), and for a ciphertext decrypted without a KeyId.
#[tokio::test]
async fn never_replicated_key_is_not_found() -> anyhow::Result<()> {
    let env = LocalAws::shared();
    let mrk = env.create_mrk(&unique_name("mrk", "not-replicated")).await?;
    let blob = env
        .kms(PRIMARY_REGION)
        .await
        .encrypt()
        .key_id(&mrk.primary_arn)
        .plaintext(Blob::new(b"x".to_vec()))
        .send()
        .await?
        .ciphertext_blob()
        .expect("ciphertext")
        .clone();
    let replica = env.kms_no_retry(REPLICA_REGION).await;

    for key_id in [mrk.arn_in(REPLICA_REGION), mrk.primary_arn.clone()] {
        let err = replica
            .decrypt()
            .ciphertext_blob(blob.clone())
            .key_id(&key_id)
            .send()
            .await;
        let err = err.expect_err("no replica here").into_service_error();
        assert!(matches!(err, DecryptError::NotFoundException(_)), "{key_id}: {err:?}");
    }
    let err = replica.decrypt().ciphertext_blob(blob).send().await;
    let err = err.expect_err("no replica here").into_service_error();
    assert!(matches!(err, DecryptError::NotFoundException(_)), "{err:?}");

    let err = replica
        .generate_data_key()
        .key_id(&mrk.key_id)
        .number_of_bytes(32)
        .send()
        .await;
    let err = err.expect_err("no replica here").into_service_error();
    assert!(matches!(err, GenerateDataKeyError::NotFoundException(_)), "{err:?}");
    Ok(())
}

/// Decrypting with a KeyId that is not the ciphertext's key is `IncorrectKeyException`.
#[tokio::test]
async fn decrypt_with_another_key_is_incorrect_key() -> anyhow::Result<()> {
    let env = LocalAws::shared();
    let a = env.create_mrk(&unique_name("mrk", "incorrect-a")).await?;
    let b = env.create_mrk(&unique_name("mrk", "incorrect-b")).await?;
    let kms = env.kms_no_retry(PRIMARY_REGION).await;
    let blob = kms
        .encrypt()
        .key_id(&a.key_id)
        .plaintext(Blob::new(b"x".to_vec()))
        .send()
        .await?;
    let err = kms
        .decrypt()
        .ciphertext_blob(blob.ciphertext_blob().expect("ct").clone())
        .key_id(&b.primary_arn)
        .send();
    let err = err.await.expect_err("wrong key").into_service_error();
    assert!(matches!(err, DecryptError::IncorrectKeyException(_)), "{err:?}");
    Ok(())
}
