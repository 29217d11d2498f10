//! The balancing plan: which leases this worker takes in one round. A pure function of what the worker sees, so
//! that it can be property-tested apart from any store or clock.
//!
//! The rules (KCL's, simplified):
//! - every worker seen holding a live lease counts, plus this worker; the fair share (`target`) is the number of
//!   workable leases divided by the number of workers, rounded up, and never above `max_leases`;
//! - a worker takes unowned and expired leases, in key order, until it holds its share;
//! - when nothing is free and it holds less than its share, it steals one lease from the most loaded worker that
//!   holds more than the share, or at least two more than this worker (one per round, so ownership moves slowly
//!   and the victim notices at its next renew). The second case matters because a worker holding nothing is
//!   invisible to the others: with 4 leases and 4 workers, the first two may each take 2 (each saw a share of 2),
//!   and a third worker, seeing 3 workers and a share of 2, finds nobody above it. A steal from a worker with at
//!   least two more never reverses (afterwards the victim still holds at least as many), so rounds converge.

use std::collections::{BTreeMap, HashSet};

/// A workable lease as this worker sees it (finished leases and those whose dependencies are unfinished are left
/// out by the caller).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Candidate<'a> {
    /// The lease key.
    pub key: &'a str,
    /// The owner, if any.
    pub owner: Option<&'a str>,
    /// The counter as last listed: the take is conditional on it.
    pub counter: u64,
    /// Free to take: unowned, owned by an earlier incarnation of this worker, or its counter has not moved for a
    /// lease duration.
    pub expired: bool,
}

/// One take of the plan.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Take {
    /// The lease key.
    pub key: String,
    /// The counter the take is conditional on.
    pub counter: u64,
    /// `Some(worker)` when the lease is stolen from a live worker to balance the load.
    pub stolen_from: Option<String>,
}

/// What the plan needs to know.
#[derive(Clone, Debug)]
pub struct PlanInput<'a> {
    /// This worker.
    pub me: &'a str,
    /// The workable leases.
    pub candidates: &'a [Candidate<'a>],
    /// The keys this worker holds now.
    pub held: &'a HashSet<String>,
    /// At most this many leases are held by this worker.
    pub max_leases: usize,
    /// Whether to steal from overloaded workers.
    pub steal: bool,
}

/// This round's takes, in the order to try them.
pub fn plan(input: &PlanInput<'_>) -> Vec<Take> {
    let mut load: BTreeMap<&str, usize> = BTreeMap::new();
    load.insert(input.me, 0);
    for c in input.candidates {
        if let Some(o) = c.owner
            && !c.expired
        {
            *load.entry(o).or_default() += 1;
        }
    }
    let target = input.candidates.len().div_ceil(load.len()).min(input.max_leases);
    let room = target.saturating_sub(input.held.len());
    let mut takes: Vec<Take> = input
        .candidates
        .iter()
        .filter(|c| c.expired && !input.held.contains(c.key))
        .map(|c| Take {
            key: c.key.to_owned(),
            counter: c.counter,
            stolen_from: None,
        })
        .collect();
    takes.sort_by(|a, b| a.key.cmp(&b.key));
    takes.truncate(room);
    if takes.is_empty() && input.steal && room > 0 {
        let victim = load
            .iter()
            .filter(|(w, n)| **w != input.me && (**n > target || **n >= input.held.len() + 2))
            .max_by_key(|(_, n)| **n)
            .map(|(w, _)| *w);
        if let Some(victim) = victim {
            let mut theirs: Vec<&Candidate<'_>> = input
                .candidates
                .iter()
                .filter(|c| c.owner == Some(victim) && !c.expired && !input.held.contains(c.key))
                .collect();
            theirs.sort_by_key(|c| c.key);
            if let Some(c) = theirs.first() {
                takes.push(Take {
                    key: c.key.to_owned(),
                    counter: c.counter,
                    stolen_from: Some(victim.to_owned()),
                });
            }
        }
    }
    takes
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn cand(key: &str, owner: Option<&'static str>, expired: bool) -> Candidate<'static> {
        Candidate {
            key: Box::leak(key.to_owned().into_boxed_str()),
            owner,
            counter: 1,
            expired,
        }
    }

    #[test]
    fn takes_free_leases_in_key_order_up_to_the_share() {
        let c = [
            cand("c", None, true),
            cand("a", None, true),
            cand("b", Some("w2"), false),
            cand("d", None, true),
        ];
        let held = HashSet::new();
        let p = plan(&PlanInput {
            me: "w1",
            candidates: &c,
            held: &held,
            max_leases: 64,
            steal: true,
        });
        // Two workers, four leases: a share of two.
        assert_eq!(p.iter().map(|t| t.key.as_str()).collect::<Vec<_>>(), ["a", "c"]);
    }

    #[test]
    fn steals_one_from_the_most_loaded_worker_only_when_nothing_is_free() {
        let c = [
            cand("a", Some("w2"), false),
            cand("b", Some("w2"), false),
            cand("c", Some("w2"), false),
            cand("d", Some("w3"), false),
        ];
        let held = HashSet::new();
        let input = PlanInput {
            me: "w1",
            candidates: &c,
            held: &held,
            max_leases: 64,
            steal: true,
        };
        let p = plan(&input);
        assert_eq!(
            p,
            [Take {
                key: "a".into(),
                counter: 1,
                stolen_from: Some("w2".into())
            }]
        );
        assert!(plan(&PlanInput { steal: false, ..input }).is_empty());
    }

    /// The case the convergence property found: 4 leases, 4 workers, the first two holding 2 each. The third sees
    /// a share of 2 and nobody above it, but takes one from a worker holding two more than it.
    #[test]
    fn a_worker_holding_nothing_steals_from_one_holding_two_more() {
        let c = [
            cand("a", Some("w0"), false),
            cand("b", Some("w0"), false),
            cand("c", Some("w1"), false),
            cand("d", Some("w1"), false),
        ];
        let held = HashSet::new();
        let p = plan(&PlanInput {
            me: "w2",
            candidates: &c,
            held: &held,
            max_leases: 2,
            steal: true,
        });
        assert_eq!(p.len(), 1);
        assert!(p[0].stolen_from.is_some());
        // Holding one, with nobody two above it, it stops.
        let mut c2 = c.clone();
        c2[0].owner = Some("w2");
        let held: HashSet<String> = ["a".to_owned()].into();
        let p = plan(&PlanInput {
            me: "w2",
            candidates: &c2,
            held: &held,
            max_leases: 2,
            steal: true,
        });
        assert!(p.is_empty(), "{p:?}");
    }

    #[test]
    fn never_more_than_max_leases() {
        let c: Vec<_> = (0..10).map(|i| cand(&format!("k{i:02}"), None, true)).collect();
        let held = HashSet::new();
        let p = plan(&PlanInput {
            me: "w1",
            candidates: &c,
            held: &held,
            max_leases: 3,
            steal: true,
        });
        assert_eq!(p.len(), 3);
    }

    /// Leases as (owner index, expired), the worker count, `max_leases`, and which of this worker's leases it
    /// holds.
    type View = (Vec<(Option<u8>, bool)>, u8, usize, Vec<bool>);

    /// A random view: `n` leases, each unowned, owned by one of `workers` live workers, or expired.
    fn view() -> impl Strategy<Value = View> {
        (1usize..40, 1u8..6).prop_flat_map(|(n, workers)| {
            (
                proptest::collection::vec((proptest::option::of(0..workers), any::<bool>()), n),
                Just(workers),
                1usize..50,
                proptest::collection::vec(any::<bool>(), n),
            )
        })
    }

    proptest! {
        /// Whatever it sees, a worker never plans a lease it holds, never goes above its share (nor `max_leases`),
        /// takes only free leases unless it steals, and steals at most one, only from a worker above the share or
        /// holding at least two more than it.
        #[test]
        fn plans_respect_the_share((leases, _workers, max, held_mask) in view(), steal in any::<bool>()) {
            let names: Vec<String> = (0..leases.len()).map(|i| format!("k{i:03}")).collect();
            let owners = ["w0", "w1", "w2", "w3", "w4", "w5"];
            let c: Vec<Candidate<'_>> = leases.iter().enumerate().map(|(i, (o, expired))| Candidate {
                key: &names[i],
                owner: o.map(|o| owners[o as usize]),
                counter: i as u64,
                expired: *expired || o.is_none(),
            }).collect();
            // "w0" is this worker; it holds the leases it owns and that the mask marks.
            let held: HashSet<String> = c.iter().zip(&held_mask)
                .filter(|(c, h)| c.owner == Some("w0") && **h).map(|(c, _)| c.key.to_owned()).collect();
            let p = plan(&PlanInput { me: "w0", candidates: &c, held: &held, max_leases: max, steal });
            let live: HashSet<&str> = c.iter().filter(|c| !c.expired).filter_map(|c| c.owner)
                .chain(["w0"]).collect();
            let target = c.len().div_ceil(live.len()).min(max);
            prop_assert!(held.len() + p.len() <= target.max(held.len()));
            prop_assert!(p.iter().filter(|t| t.stolen_from.is_some()).count() <= 1);
            for t in &p {
                prop_assert!(!held.contains(&t.key));
                let cand = c.iter().find(|c| c.key == t.key).unwrap();
                prop_assert_eq!(cand.counter, t.counter);
                match &t.stolen_from {
                    None => prop_assert!(cand.expired),
                    Some(v) => {
                        prop_assert!(steal);
                        let load = c.iter().filter(|c| c.owner == Some(v.as_str()) && !c.expired).count();
                        prop_assert!(load > target || load >= held.len() + 2);
                    }
                }
            }
        }

        /// Workers that plan in turn, each applying its takes, end with every lease owned and nobody above the
        /// fair share: the plan converges.
        #[test]
        fn rounds_converge_to_a_balanced_assignment(n in 1usize..30, workers in 1usize..5, max in 1usize..40) {
            let names: Vec<String> = (0..n).map(|i| format!("k{i:03}")).collect();
            let ids: Vec<String> = (0..workers).map(|w| format!("w{w}")).collect();
            let mut owner: Vec<Option<usize>> = vec![None; n];
            for _round in 0..(n + 2) * workers + 2 {
                for w in 0..workers {
                    let c: Vec<Candidate<'_>> = (0..n).map(|i| Candidate {
                        key: &names[i],
                        owner: owner[i].map(|o| ids[o].as_str()),
                        counter: 0,
                        expired: owner[i].is_none(),
                    }).collect();
                    let held: HashSet<String> =
                        (0..n).filter(|i| owner[*i] == Some(w)).map(|i| names[i].clone()).collect();
                    for t in plan(&PlanInput { me: &ids[w], candidates: &c, held: &held, max_leases: max, steal: true }) {
                        let i = names.iter().position(|k| *k == t.key).unwrap();
                        owner[i] = Some(w);
                    }
                }
            }
            let share = n.div_ceil(workers).min(max);
            for w in 0..workers {
                prop_assert!(owner.iter().filter(|o| **o == Some(w)).count() <= share);
            }
            if share * workers >= n {
                prop_assert!(owner.iter().all(Option::is_some), "unowned leases left: {owner:?}");
            }
        }
    }
}
