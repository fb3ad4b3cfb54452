//! Maglev consistent hashing (Eisenbud et al., NSDI 2016) with weights.
//!
//! Each real walks its own permutation of the table slots, derived from a hash of its
//! identity (address and port), so a real's preferred slots do not depend on which other
//! reals exist: adding or removing one real moves little more than that real's own share.
//! Weights: every round, each real earns `weight` credit and claims a slot for each
//! `max_weight` it has saved, so shares follow the weights.

use std::net::IpAddr;

use lb_common::maps::NO_REAL;
use xxhash_rust::xxh3::xxh3_64_with_seed;

/// One real as the table builder sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backend {
    /// What the permutation is derived from: stable across restarts and reloads.
    pub address: IpAddr,
    pub port: u16,
    pub weight: u16,
    /// Value written into the slots this backend owns (its real id).
    pub id: u32,
}

const OFFSET_SEED: u64 = 0x6d61_676c_6576_3031;
const SKIP_SEED: u64 = 0x6d61_676c_6576_3032;

/// Builds a table of `size` entries (`size` must be prime). Entries hold backend ids, or
/// `NO_REAL` everywhere when no backend has weight above 0.
pub fn build(backends: &[Backend], size: u32) -> Vec<u32> {
    let mut table = vec![NO_REAL; size as usize];
    let live: Vec<&Backend> = backends.iter().filter(|b| b.weight > 0).collect();
    let Some(max_weight) = live.iter().map(|b| b.weight as u64).max() else {
        return table;
    };
    let m = size as u64;
    struct Walk {
        offset: u64,
        skip: u64,
        next: u64,
        credit: u64,
    }
    let mut walks: Vec<Walk> = live
        .iter()
        .map(|b| {
            // Address and port bytes: an IPv4 real's 6 are what every xdplb since the first
            // hashed, so balancers of different versions build the same table.
            let mut identity = match b.address {
                IpAddr::V4(v4) => v4.octets().to_vec(),
                IpAddr::V6(v6) => v6.octets().to_vec(),
            };
            identity.extend_from_slice(&b.port.to_be_bytes());
            Walk {
                offset: xxh3_64_with_seed(&identity, OFFSET_SEED) % m,
                skip: xxh3_64_with_seed(&identity, SKIP_SEED) % (m - 1) + 1,
                next: 0,
                credit: 0,
            }
        })
        .collect();

    let mut filled = 0u64;
    while filled < m {
        for (backend, walk) in live.iter().zip(walks.iter_mut()) {
            walk.credit += backend.weight as u64;
            if walk.credit < max_weight {
                continue;
            }
            walk.credit -= max_weight;
            // Claim this backend's next preferred slot that nobody holds yet.
            loop {
                let slot = ((walk.offset + walk.next * walk.skip) % m) as usize;
                walk.next += 1;
                if table[slot] == NO_REAL {
                    table[slot] = backend.id;
                    filled += 1;
                    break;
                }
            }
            if filled == m {
                break;
            }
        }
    }
    table
}

#[cfg(test)]
mod tests {
    use super::*;
    use lb_common::maps::MAGLEV_TABLE_SIZE;

    fn backend(i: u8, weight: u16) -> Backend {
        Backend {
            address: std::net::Ipv4Addr::new(198, 18, 0, 10 + i).into(),
            port: 0,
            weight,
            id: i as u32,
        }
    }

    fn shares(table: &[u32], n: usize) -> Vec<f64> {
        let mut counts = vec![0usize; n];
        for &id in table {
            counts[id as usize] += 1;
        }
        counts
            .iter()
            .map(|&c| c as f64 / table.len() as f64)
            .collect()
    }

    #[test]
    fn shares_follow_weights_within_one_percent() {
        let weights = [100u16, 200, 300, 400, 1, 65535];
        let backends: Vec<_> = weights
            .iter()
            .enumerate()
            .map(|(i, &w)| backend(i as u8, w))
            .collect();
        let table = build(&backends, MAGLEV_TABLE_SIZE);
        let total: f64 = weights.iter().map(|&w| w as f64).sum();
        for (i, share) in shares(&table, weights.len()).iter().enumerate() {
            let expected = weights[i] as f64 / total;
            // 1% of the expected share, or one slot for shares too small to measure in slots.
            let tolerance = (expected * 0.01).max(1.0 / MAGLEV_TABLE_SIZE as f64);
            assert!(
                (share - expected).abs() <= tolerance,
                "backend {i}: share {share:.5}, expected {expected:.5}"
            );
        }
    }

    #[test]
    fn equal_weights_get_equal_shares() {
        let backends: Vec<_> = (0..7).map(|i| backend(i, 100)).collect();
        let table = build(&backends, MAGLEV_TABLE_SIZE);
        for share in shares(&table, 7) {
            assert!((share - 1.0 / 7.0).abs() <= 0.01 / 7.0, "share {share}");
        }
    }

    #[test]
    fn removing_one_of_ten_moves_its_share_and_little_else() {
        let all: Vec<_> = (0..10).map(|i| backend(i, 100)).collect();
        let before = build(&all, MAGLEV_TABLE_SIZE);
        let without: Vec<_> = all.iter().copied().filter(|b| b.id != 3).collect();
        let after = build(&without, MAGLEV_TABLE_SIZE);
        assert!(!after.contains(&3), "the removed real must own no entries");
        let changed = before.iter().zip(&after).filter(|(a, b)| a != b).count();
        let owned = before.iter().filter(|&&id| id == 3).count();
        assert!(
            changed as f64 <= 0.15 * MAGLEV_TABLE_SIZE as f64,
            "{changed} of {MAGLEV_TABLE_SIZE} entries changed"
        );
        assert!(
            changed >= owned,
            "all {owned} entries of the removed real must move"
        );
    }

    #[test]
    fn zero_weight_is_drained_and_no_backend_means_no_real() {
        let table = build(&[backend(0, 0), backend(1, 5)], 13);
        assert!(table.iter().all(|&id| id == 1));
        assert!(build(&[backend(0, 0)], 13).iter().all(|&id| id == NO_REAL));
        assert!(build(&[], 13).iter().all(|&id| id == NO_REAL));
    }

    #[test]
    fn table_is_deterministic_and_independent_of_order() {
        let a: Vec<_> = (0..5).map(|i| backend(i, 100)).collect();
        let mut b = a.clone();
        b.reverse();
        // Order changes which backend claims first in a round, so allow a small difference.
        let ta = build(&a, MAGLEV_TABLE_SIZE);
        assert_eq!(ta, build(&a, MAGLEV_TABLE_SIZE));
        let diff = ta
            .iter()
            .zip(build(&b, MAGLEV_TABLE_SIZE))
            .filter(|(x, y)| **x != *y)
            .count();
        assert!(
            diff < MAGLEV_TABLE_SIZE as usize / 10,
            "{diff} entries differ by order"
        );
    }
}
