//! The local environment itself: health, knob validation, AWS-shaped errors where moto gave HTML.

use aws_sdk_dynamodbstreams::error::ProvideErrorMetadata;
use ddbguard_e2e::{Knob, LocalAws, PRIMARY_REGION, unique_name};

/// `/_local/health` answers JSON naming the pinned moto.
#[tokio::test]
async fn health_reports_moto_version() -> anyhow::Result<()> {
    let env = LocalAws::shared();
    let (status, body) = env.http("GET", "/_local/health", String::new()).await?;
    assert_eq!(status, 200, "{body}");
    let health: serde_json::Value = serde_json::from_str(&body)?;
    assert_eq!(health["moto"], "5.2.5");
    Ok(())
}

/// Invalid knob bodies are 400 with an AWS-shaped `ValidationException`; a valid one shows in the state.
#[tokio::test]
async fn knobs_are_validated_and_reported() -> anyhow::Result<()> {
    let env = LocalAws::shared();
    for bad in [
        "{not json",
        r#"{"paused": "yes"}"#,
        r#"{"lag_ms": -1}"#,
        r#"{"frobnicate": 1}"#,
        "[1]",
    ] {
        let (status, body) = env.http("POST", "/_local/replication", bad.to_string()).await?;
        assert_eq!(status, 400, "{bad}: {body}");
        let error: serde_json::Value = serde_json::from_str(&body)?;
        assert_eq!(error["__type"], "ValidationException", "{bad}");
    }
    let table = unique_name("knob", "state");
    let state = env
        .set_replication(&Knob::table(&table).lag_ms(750).drop_next(2))
        .await?;
    let knobs = state["knobs"].as_array().expect("knobs");
    let mine = knobs
        .iter()
        .find(|k| k["table"] == table.as_str())
        .expect("knob listed");
    assert_eq!(mine["lag_ms"], 750);
    assert_eq!(mine["drop_next"], 2);
    assert!(state["queue_depth"].is_u64());
    Ok(())
}

/// A garbage shard iterator is a JSON 400 `ValidationException` (moto answered an HTML 500).
#[tokio::test]
async fn bad_shard_iterator_is_validation_error() -> anyhow::Result<()> {
    let env = LocalAws::shared();
    let streams = env.streams_no_retry(PRIMARY_REGION).await;
    let err = streams
        .get_records()
        .shard_iterator("x".repeat(100))
        .send()
        .await
        .expect_err("garbage iterator");
    let err = err.into_service_error();
    assert_eq!(err.code(), Some("ValidationException"), "{err:?}");
    Ok(())
}
