use super::*;
use crate::upstream::PassiveCheck;
use std::collections::HashMap;

fn endpoints(n: usize) -> Vec<Arc<Endpoint>> {
    (0..n)
        .map(|i| {
            Arc::new(Endpoint::new(
                "b",
                format!("10.0.0.{i}:80").parse().unwrap(),
            ))
        })
        .collect()
}

fn backend(name: &str, weight: u32, eps: Vec<Arc<Endpoint>>, kind: Kind) -> Backend {
    Backend::new(name, weight, eps, kind)
}

fn counts<'a>(picks: impl Iterator<Item = &'a Arc<Endpoint>>) -> HashMap<String, usize> {
    let mut m = HashMap::new();
    for e in picks {
        *m.entry(e.authority.to_string()).or_default() += 1;
    }
    m
}

fn health(panic_percent: u32) -> Arc<HealthPolicy> {
    Arc::new(HealthPolicy {
        passive: None,
        active: None,
        panic_percent,
    })
}

fn eject(e: &Endpoint) {
    let check = PassiveCheck {
        consecutive_failures: 1,
        base_ejection: Duration::from_secs(600),
        max_ejection: Duration::from_secs(600),
    };
    e.health.record(false, &check, now_ms());
}

#[test]
fn weighted_round_robin_is_exact_and_interleaved() {
    let set = BackendSet::new(vec![
        backend("a", 5, endpoints(1), Kind::RoundRobin),
        backend("b", 1, endpoints(1), Kind::RoundRobin),
        backend("c", 1, endpoints(1), Kind::RoundRobin),
    ]);
    let order: String = (0..7)
        .map(|_| {
            &*set
                .pick(Kind::RoundRobin, &Hints::default())
                .unwrap()
                .backend
                .name
        })
        .collect();
    // Each set starts at a random turn of the same schedule.
    assert!("aabacaa".repeat(2).contains(&order), "{order}");
    let mut n = HashMap::new();
    for _ in 0..7000 {
        *n.entry(
            set.pick(Kind::RoundRobin, &Hints::default())
                .unwrap()
                .backend
                .name
                .clone(),
        )
        .or_insert(0) += 1;
    }
    assert_eq!(n[&Arc::from("a")], 5000);
    assert_eq!(n[&Arc::from("b")], 1000);
}

#[test]
fn huge_weight_sums_draw_at_random_within_tolerance() {
    let set = BackendSet::new(vec![
        backend("a", 999_983, endpoints(1), Kind::RoundRobin),
        backend("b", 333_331, endpoints(1), Kind::RoundRobin),
    ]);
    assert!(set.schedule.is_empty());
    let a = (0..40_000)
        .filter(|_| {
            &*set
                .pick(Kind::RoundRobin, &Hints::default())
                .unwrap()
                .backend
                .name
                == "a"
        })
        .count();
    // Expected 30,000 (three in four); 2 % tolerance is over 10 standard deviations.
    assert!((29_400..=30_600).contains(&a), "{a}");
}

#[test]
fn zero_weights_pick_nothing() {
    let set = BackendSet::new(vec![backend("a", 0, endpoints(1), Kind::RoundRobin)]);
    assert!(set.pick(Kind::RoundRobin, &Hints::default()).is_none());
}

#[test]
fn round_robin_takes_endpoints_in_turn_and_skips_unavailable_ones() {
    let eps = endpoints(4);
    let b = backend("a", 1, eps.clone(), Kind::RoundRobin).with_health(Some(health(0)));
    let c = counts((0..4000).map(|_| b.choose(Kind::RoundRobin, &Hints::default()).unwrap()));
    assert!(c.values().all(|&n| n == 1000), "{c:?}");
    eject(&eps[1]);
    let c = counts((0..3000).map(|_| b.choose(Kind::RoundRobin, &Hints::default()).unwrap()));
    assert_eq!(c.get("10.0.0.1:80"), None);
    assert!(c.values().all(|&n| (900..=1100).contains(&n)), "{c:?}");
}

#[test]
fn panic_threshold_spreads_over_all_when_too_few_are_healthy() {
    let eps = endpoints(4);
    let b = backend("a", 1, eps.clone(), Kind::RoundRobin).with_health(Some(health(50)));
    eject(&eps[0]);
    eject(&eps[1]);
    // 2 of 4 healthy is 50 %: health still decides.
    let c = counts((0..400).map(|_| b.choose(Kind::RoundRobin, &Hints::default()).unwrap()));
    assert_eq!(c.len(), 2, "{c:?}");
    eject(&eps[2]);
    // 1 of 4 is below 50 %: everyone gets traffic again.
    let c = counts((0..400).map(|_| b.choose(Kind::RoundRobin, &Hints::default()).unwrap()));
    assert_eq!(c.len(), 4, "{c:?}");
    eject(&eps[3]);
    // None healthy, even with the threshold off: still every endpoint.
    let b = backend("a", 1, eps, Kind::RoundRobin).with_health(Some(health(0)));
    let c = counts((0..400).map(|_| b.choose(Kind::RoundRobin, &Hints::default()).unwrap()));
    assert_eq!(c.len(), 4, "{c:?}");
}

#[test]
fn least_request_prefers_idle_endpoints() {
    let eps = endpoints(4);
    let b = backend("a", 1, eps.clone(), Kind::LeastRequest);
    // Endpoint 0 is busy with 10 requests: it loses every draw, and the idle ones share
    // the traffic evenly.
    let _busy: Vec<_> = (0..10).map(|_| eps[0].start()).collect();
    let c = counts((0..30_000).map(|_| b.choose(Kind::LeastRequest, &Hints::default()).unwrap()));
    assert_eq!(c.get("10.0.0.0:80"), None, "{c:?}");
    for i in 1..4 {
        let n = c[&format!("10.0.0.{i}:80")];
        assert!((9_500..=10_500).contains(&n), "{c:?}");
    }
    // A busy endpoint still gets traffic once the others are as busy.
    let _others: Vec<_> = eps[1..]
        .iter()
        .flat_map(|e| (0..10).map(|_| e.start()))
        .collect();
    let c = counts((0..4_000).map(|_| b.choose(Kind::LeastRequest, &Hints::default()).unwrap()));
    assert!(c.values().all(|&n| (800..=1_200).contains(&n)), "{c:?}");
}

#[test]
fn consistent_hash_spreads_keys_evenly() {
    let b = backend("a", 1, endpoints(10), Kind::ConsistentHash);
    let c = counts((0..100_000u64).map(|k| {
        let hints = Hints {
            hash: Some(hash_key(&k.to_le_bytes())),
            ..Hints::default()
        };
        b.choose(Kind::ConsistentHash, &hints).unwrap()
    }));
    // Each endpoint's share within 25 % of the fair 10,000.
    assert!(c.values().all(|&n| (7_500..=12_500).contains(&n)), "{c:?}");
}

#[test]
fn consistent_hash_moves_only_the_keys_of_endpoints_that_come_or_go() {
    let all = endpoints(11);
    let ten = backend("a", 1, all[..10].to_vec(), Kind::ConsistentHash);
    let nine = backend("a", 1, all[..9].to_vec(), Kind::ConsistentHash);
    let eleven = backend("a", 1, all.clone(), Kind::ConsistentHash);
    let place = |b: &Backend, k: u64| {
        let hints = Hints {
            hash: Some(hash_key(&k.to_le_bytes())),
            ..Hints::default()
        };
        b.choose(Kind::ConsistentHash, &hints)
            .unwrap()
            .authority
            .to_string()
    };
    let keys = 0..50_000u64;
    let (mut moved_removed, mut moved_added) = (0, 0);
    for k in keys.clone() {
        let before = place(&ten, k);
        let after = place(&nine, k);
        if before != after {
            // Only keys of the endpoint that left move.
            assert_eq!(before, "10.0.0.9:80");
            moved_removed += 1;
        }
        let grown = place(&eleven, k);
        if before != grown {
            // Only keys that the new endpoint takes move.
            assert_eq!(grown, "10.0.0.10:80");
            moved_added += 1;
        }
    }
    // About a tenth, and an eleventh, of the keys.
    assert!((3_750..=6_250).contains(&moved_removed), "{moved_removed}");
    assert!((3_400..=5_700).contains(&moved_added), "{moved_added}");
}

#[test]
fn consistent_hash_skips_an_unavailable_owner_and_returns_to_it() {
    let eps = endpoints(5);
    let b = backend("a", 1, eps.clone(), Kind::ConsistentHash).with_health(Some(health(0)));
    let hints = Hints {
        hash: Some(hash_key(b"user-42")),
        ..Hints::default()
    };
    let owner = b.choose(Kind::ConsistentHash, &hints).unwrap().clone();
    owner.health.record(
        false,
        &PassiveCheck {
            consecutive_failures: 1,
            base_ejection: Duration::from_millis(50),
            max_ejection: Duration::from_millis(50),
        },
        now_ms(),
    );
    let stand_in = b.choose(Kind::ConsistentHash, &hints).unwrap().clone();
    assert!(!Arc::ptr_eq(&owner, &stand_in));
    std::thread::sleep(Duration::from_millis(60));
    assert!(Arc::ptr_eq(
        &owner,
        b.choose(Kind::ConsistentHash, &hints).unwrap()
    ));
}

#[test]
fn retries_go_to_an_endpoint_not_yet_tried() {
    let eps = endpoints(3);
    for kind in [Kind::RoundRobin, Kind::LeastRequest, Kind::ConsistentHash] {
        let b = backend("a", 1, eps.clone(), kind);
        for k in 0..100u64 {
            let first = b
                .choose(
                    kind,
                    &Hints {
                        hash: Some(k),
                        ..Hints::default()
                    },
                )
                .unwrap()
                .clone();
            let tried = [first.clone()];
            let hints = Hints {
                hash: Some(k),
                tried: &tried,
                ..Hints::default()
            };
            assert!(
                !Arc::ptr_eq(&first, b.choose(kind, &hints).unwrap()),
                "{kind:?}"
            );
        }
    }
    // With one endpoint the retry goes to it again.
    let one = backend("a", 1, endpoints(1), Kind::RoundRobin);
    let tried = [one.endpoints[0].clone()];
    let hints = Hints {
        tried: &tried,
        ..Hints::default()
    };
    assert!(one.choose(Kind::RoundRobin, &hints).is_some());
}

#[test]
fn a_session_cookie_pins_its_endpoint_until_it_is_unavailable() {
    let eps = endpoints(3);
    let set = BackendSet::new(vec![
        backend("a", 1, eps.clone(), Kind::RoundRobin).with_health(Some(health(0)))
    ]);
    let value = eps[2].session_value.to_string();
    let hints = Hints {
        session: Some(&value),
        ..Hints::default()
    };
    for _ in 0..10 {
        let p = set.pick(Kind::RoundRobin, &hints).unwrap();
        assert!(p.pinned);
        assert!(Arc::ptr_eq(p.endpoint.unwrap(), &eps[2]));
    }
    eject(&eps[2]);
    let p = set.pick(Kind::RoundRobin, &hints).unwrap();
    assert!(!p.pinned);
    assert!(!Arc::ptr_eq(p.endpoint.unwrap(), &eps[2]));
    // An unknown value is a new client.
    let hints = Hints {
        session: Some("0123456789abcdef"),
        ..Hints::default()
    };
    assert!(!set.pick(Kind::RoundRobin, &hints).unwrap().pinned);
}

#[test]
fn session_values_are_stable_and_distinct() {
    let a = Endpoint::new("ns/users:80", "10.0.0.1:80".parse().unwrap());
    let b = Endpoint::new("ns/users:80", "10.0.0.1:80".parse().unwrap());
    let c = Endpoint::new("ns/orders:80", "10.0.0.1:80".parse().unwrap());
    assert_eq!(a.session_value, b.session_value);
    assert_ne!(a.session_value, c.session_value);
    assert_eq!(a.session_value.len(), 16);
}
