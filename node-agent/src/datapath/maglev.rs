//! Maglev lookup tables (Eisenbud et al., "Maglev: A Fast and Reliable Software Network Load
//! Balancer", NSDI 2016, section 3.4) for services whose external flows must reach the same
//! backend on every node: pure functions, written to the `MAGLEV` map by [`super::sync`] only.
//!
//! A table has [`TABLE_SIZE`] entries (a prime). Each backend has a preference list, the
//! permutation `(offset + j * skip) mod M` for `j = 0, 1, …`, where `offset` and `skip` come from
//! two different fixed hashes of its address and port ([`offset_and_skip`]). Backends take turns,
//! in address order, claiming the next entry of their list that is still free, until every entry
//! is taken; so each backend gets `M / N` entries, give or take one, and a change of the backend
//! set moves few entries that belonged to the backends that stay. The table depends on the set of
//! backend addresses only (not on their order, the node, the time or the process), so every node
//! computes the same one.

use std::net::SocketAddrV4;

use keelson_ebpf_common::{Backend, MAGLEV_TABLE_SIZE};

/// Entries of a table (the paper's M), as a `usize`.
pub const TABLE_SIZE: usize = MAGLEV_TABLE_SIZE as usize;

/// The Maglev table of `backends` (duplicates count once, order does not matter): entry `i` is
/// the backend of flows whose hash is `i` modulo [`TABLE_SIZE`]. Empty when there are no
/// backends; otherwise exactly [`TABLE_SIZE`] entries. With more backends than entries, some
/// backends get none.
pub fn table(backends: &[SocketAddrV4]) -> Vec<SocketAddrV4> {
    let mut backends: Vec<SocketAddrV4> = backends.to_vec();
    // Address order, so that the turns (and thus the table) do not depend on the input order.
    backends.sort_unstable();
    backends.dedup();
    if backends.is_empty() {
        return Vec::new();
    }
    let permutations: Vec<(usize, usize)> = backends.iter().map(|b| offset_and_skip(*b)).collect();
    // How far down its preference list each backend is.
    let mut next = vec![0usize; backends.len()];
    let mut entries: Vec<Option<usize>> = vec![None; TABLE_SIZE];
    let mut filled = 0;
    // Each turn fills one entry, and a backend's list visits every entry (the skip is coprime
    // with the prime size), so every turn ends and the loop stops after `TABLE_SIZE` turns.
    'fill: loop {
        for (backend, &(offset, skip)) in permutations.iter().enumerate() {
            let mut entry = (offset + next[backend] * skip) % TABLE_SIZE;
            while entries[entry].is_some() {
                next[backend] += 1;
                entry = (offset + next[backend] * skip) % TABLE_SIZE;
            }
            entries[entry] = Some(backend);
            next[backend] += 1;
            filled += 1;
            if filled == TABLE_SIZE {
                break 'fill;
            }
        }
    }
    entries.into_iter().map(|entry| backends[entry.unwrap_or_default()]).collect()
}

/// A backend's permutation: `offset` in `0..M` and `skip` in `1..M`, from two different fixed
/// hashes of its address and port (SplitMix64's finaliser over the 48-bit `address << 16 | port`,
/// with two different seeds). Fixed in the source so every node and every version agrees.
fn offset_and_skip(backend: SocketAddrV4) -> (usize, usize) {
    const OFFSET_SEED: u64 = 0x6d61_676c_6576_3031; // "maglev01"
    const SKIP_SEED: u64 = 0x6d61_676c_6576_3032; // "maglev02"
    let key = (u64::from(backend.ip().to_bits()) << 16) | u64::from(backend.port());
    let size = MAGLEV_TABLE_SIZE as u64;
    // Both remainders are below `MAGLEV_TABLE_SIZE`, a `u32`, so the casts are lossless.
    let offset = (splitmix64(key ^ OFFSET_SEED) % size) as usize;
    let skip = (splitmix64(key ^ SKIP_SEED) % (size - 1) + 1) as usize;
    (offset, skip)
}

/// SplitMix64's output function (Steele, Lea, Flood 2014): a bijection of `u64` in which every
/// input bit affects every output bit.
const fn splitmix64(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// [`table`] in map form.
pub(crate) fn backend_table(backends: &[Backend]) -> Vec<Backend> {
    let addrs: Vec<SocketAddrV4> = backends.iter().map(Backend::socket_addr).collect();
    table(&addrs).into_iter().map(Backend::new).collect()
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::net::Ipv4Addr;

    use super::*;

    fn backends(n: u8) -> Vec<SocketAddrV4> {
        (1..=n).map(|i| SocketAddrV4::new(Ipv4Addr::new(10, 244, i % 4, i), 8080)).collect()
    }

    fn shares(table: &[SocketAddrV4]) -> HashMap<SocketAddrV4, usize> {
        let mut shares = HashMap::new();
        for backend in table {
            *shares.entry(*backend).or_default() += 1;
        }
        shares
    }

    #[test]
    fn every_entry_is_filled_with_one_of_the_backends() {
        for n in [1, 2, 3, 7, 10, 50] {
            let set = backends(n);
            let table = table(&set);
            assert_eq!(table.len(), TABLE_SIZE, "{n} backends");
            assert!(table.iter().all(|b| set.contains(b)), "{n} backends");
            assert_eq!(shares(&table).len(), set.len(), "every one of {n} backends has entries");
        }
    }

    #[test]
    fn shares_are_even() {
        for n in [2, 3, 5, 10, 20] {
            let table = table(&backends(n));
            let even = TABLE_SIZE as f64 / f64::from(n);
            for (backend, share) in shares(&table) {
                // The population gives each backend M/N entries, give or take one.
                assert!((share as f64 - even).abs() <= 1.0, "{n} backends: {backend} has {share}, even is {even:.1}");
            }
        }
    }

    #[test]
    fn tables_are_deterministic_and_ignore_order_and_duplicates() {
        let set = backends(9);
        let first = table(&set);
        assert_eq!(table(&set), first);
        let mut shuffled: Vec<SocketAddrV4> = set.iter().rev().copied().collect();
        shuffled.push(set[3]);
        assert_eq!(table(&shuffled), first);
        // Pinned, so that a change of the hashes or the loop (which would move flows between
        // nodes running different versions) does not go unnoticed.
        let two = table(&backends(2));
        let first_of = |b: SocketAddrV4| two.iter().position(|e| *e == b);
        assert_eq!((first_of(backends(2)[0]), first_of(backends(2)[1])), PINNED_FIRST_ENTRIES);
    }

    /// Where each of `backends(2)`'s backends first appears in its table.
    const PINNED_FIRST_ENTRIES: (Option<usize>, Option<usize>) = (Some(0), Some(2));

    #[test]
    fn removing_a_backend_keeps_the_others_entries() {
        for n in [3, 5, 10, 20] {
            let set = backends(n);
            let before = table(&set);
            for removed in [0, usize::from(n) / 2, usize::from(n) - 1] {
                let kept: Vec<SocketAddrV4> = set.iter().copied().filter(|b| *b != set[removed]).collect();
                let after = table(&kept);
                let others = before.iter().filter(|b| **b != set[removed]).count();
                let moved = before.iter().zip(&after).filter(|(b, a)| **b != set[removed] && b != a).count();
                // The removed backend's entries (1/N of them) move; of the others only a few.
                let moved_share = moved as f64 / others as f64;
                assert!(moved_share <= 0.05, "{n} backends, removing #{removed}: {moved} of {others} entries moved");
            }
        }
    }

    #[test]
    fn no_backends_no_table() {
        assert!(table(&[]).is_empty());
        assert!(backend_table(&[]).is_empty());
    }

    #[test]
    fn backend_table_is_the_table_in_map_form() {
        let set = backends(4);
        let mapped: Vec<Backend> = set.iter().map(|b| Backend::new(*b)).collect();
        let expected: Vec<Backend> = table(&set).into_iter().map(Backend::new).collect();
        assert_eq!(backend_table(&mapped), expected);
    }
}
