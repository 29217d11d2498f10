//! The coordinator over the memory store, with paused Tokio time: takes, takeover after a crash, fencing, and a
//! shutdown that ends every task and releases every lease within the deadline.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use crate::{Coordinator, CoordinatorConfig, Lease, LeaseStore, MemoryLeaseStore, Position, TaskEnd};

fn config(worker: &str) -> CoordinatorConfig {
    let mut c = CoordinatorConfig::new(worker);
    c.lease_duration = Duration::from_secs(10);
    c.shutdown_deadline = Duration::from_secs(5);
    c
}

fn wanted(n: usize) -> Vec<Lease> {
    (0..n).map(|i| Lease::new(format!("seg-{i}"), vec![])).collect()
}

/// A task that checkpoints a counter every second until stopped.
async fn counting(mut ctx: crate::LeaseContext<MemoryLeaseStore>) -> TaskEnd {
    let mut n = 0u64;
    loop {
        if !ctx.pause(Duration::from_secs(1)).await {
            return ctx.stopped().unwrap_or(TaskEnd::Stopped);
        }
        n += 1;
        if let Err(end) = ctx.checkpoint(Some(&Position::new(n.to_string())), false).await {
            return end;
        }
    }
}

#[tokio::test(start_paused = true)]
async fn two_workers_split_the_leases_and_a_crashed_ones_are_taken_over() {
    let store = MemoryLeaseStore::new();
    let mut a = Coordinator::new(store.clone(), config("a"));
    let mut b = Coordinator::new(store.clone(), config("b"));
    a.refresh(wanted(4)).await.unwrap();
    for t in a.balance(|_| true).await {
        a.spawn(t, counting);
    }
    assert_eq!(a.held_keys().count(), 4, "alone, a takes everything");
    // b arrives: nothing is free, so it steals one lease per round until both hold their share.
    for _ in 0..3 {
        b.refresh(wanted(4)).await.unwrap();
        for t in b.balance(|_| true).await {
            b.spawn(t, counting);
        }
        a.renew().await;
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    assert_eq!(b.held_keys().count(), 2);
    // a's tasks of the stolen leases learn it at the next renewal or checkpoint and end LeaseLost.
    a.renew().await;
    let lost = tokio::time::timeout(Duration::from_secs(5), a.next_done())
        .await
        .unwrap();
    assert_eq!(lost.end, Ok(TaskEnd::LeaseLost));
    // a crashes: no release. b takes its leases over after the lease duration.
    let a_keys: Vec<String> = store
        .list_leases()
        .await
        .unwrap()
        .into_iter()
        .filter(|l| l.owner.as_deref() == Some("a"))
        .map(|l| l.key)
        .collect();
    assert_eq!(a_keys.len(), 2);
    drop(a);
    b.refresh(wanted(4)).await.unwrap();
    assert!(b.balance(|_| true).await.is_empty(), "a's leases are not expired yet");
    for _ in 0..4 {
        tokio::time::sleep(Duration::from_secs(4)).await;
        b.renew().await;
        b.refresh(wanted(4)).await.unwrap();
        for t in b.balance(|_| true).await {
            // The take returns the position a wrote last, not the one of an older listing.
            assert!(t.lease.position.is_some(), "{:?}", t.lease);
            b.spawn(t, counting);
        }
    }
    assert_eq!(b.held_keys().count(), 4);
    let report = b.shutdown().await;
    assert_eq!((report.released, report.timed_out), (4, false));
    assert!(store.list_leases().await.unwrap().iter().all(|l| l.owner.is_none()));
}

#[tokio::test(start_paused = true)]
async fn shutdown_aborts_a_hung_task_within_the_deadline_and_still_releases() {
    let store = MemoryLeaseStore::new();
    let mut c = Coordinator::new(store.clone(), config("a"));
    c.refresh(wanted(2)).await.unwrap();
    let ended = Arc::new(AtomicUsize::new(0));
    for t in c.balance(|_| true).await {
        let ended = ended.clone();
        let hang = t.grant.key == "seg-0";
        c.spawn(t, move |mut ctx| async move {
            if hang {
                // Ignores the stop signal.
                tokio::time::sleep(Duration::from_secs(3600)).await;
            } else {
                ctx.stop_requested().await;
            }
            ended.fetch_add(1, Ordering::Relaxed);
            TaskEnd::Stopped
        });
    }
    let started = tokio::time::Instant::now();
    let report = c.shutdown().await;
    assert!(started.elapsed() <= Duration::from_secs(5));
    assert!(report.timed_out);
    assert_eq!(report.released, 2);
    assert_eq!(
        ended.load(Ordering::Relaxed),
        1,
        "the hung task was aborted, not left running"
    );
    assert!(!c.has_tasks());
}

#[tokio::test(start_paused = true)]
async fn finished_leases_are_never_taken_again_and_dependencies_wait() {
    let store = MemoryLeaseStore::new();
    let mut c = Coordinator::new(store.clone(), config("a"));
    let leases = vec![Lease::new("parent", vec![]), Lease::new("child", vec!["parent".into()])];
    c.refresh(leases.clone()).await.unwrap();
    let deps_done = |c: &Coordinator<MemoryLeaseStore>, l: &Lease| {
        l.dependencies
            .iter()
            .all(|d| c.leases().get(d).is_some_and(|p| p.finished))
    };
    let view = c.leases().clone();
    let taken = c
        .balance(|l| l.dependencies.iter().all(|d| view.get(d).is_some_and(|p| p.finished)))
        .await;
    assert_eq!(
        taken.iter().map(|t| t.grant.key.as_str()).collect::<Vec<_>>(),
        ["parent"]
    );
    for t in taken {
        c.spawn(t, |mut ctx| async move {
            match ctx.checkpoint(Some(&Position::new("end")), true).await {
                Ok(()) => TaskEnd::Finished,
                Err(e) => e,
            }
        });
    }
    let done = c.next_done().await;
    assert_eq!((done.key.as_str(), done.end), ("parent", Ok(TaskEnd::Finished)));
    c.refresh(leases).await.unwrap();
    assert!(deps_done(&c, &c.leases()["child"].clone()));
    let view = c.leases().clone();
    let taken = c
        .balance(|l| l.dependencies.iter().all(|d| view.get(d).is_some_and(|p| p.finished)))
        .await;
    assert_eq!(
        taken.iter().map(|t| t.grant.key.as_str()).collect::<Vec<_>>(),
        ["child"]
    );
}

#[tokio::test(start_paused = true)]
async fn a_panicking_task_releases_its_lease() {
    let store = MemoryLeaseStore::new();
    let mut c = Coordinator::new(store.clone(), config("a"));
    c.refresh(wanted(1)).await.unwrap();
    for t in c.balance(|_| true).await {
        c.spawn(t, |_ctx| async move { panic!("boom") });
    }
    let done = c.next_done().await;
    assert!(done.end.is_err());
    assert_eq!(store.get("seg-0").unwrap().owner, None);
}
