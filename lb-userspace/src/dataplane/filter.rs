//! The data plane's bitmap filters (VIP_FILTER, REAL_FILTER): hashed address:port:protocol,
//! checked before any hash lookup. A set bit only means "maybe", so a stale bit costs a lookup;
//! a missing bit would send a service's packets to the kernel. Hence bits are added before the
//! entries they stand for appear and removed only after those are gone.

use anyhow::{Context, Result};
use aya::maps::{Array, MapData};
use lb_common::{addr::Addr, hash::vip_filter_bit, maps::VIP_FILTER_WORDS};

/// What a filter map holds, as last written (unknown after a restart: written in full).
#[derive(Default)]
pub struct Filter {
    written: Option<Vec<u64>>,
}

/// The filter words for `entries` (address, port, protocol; network byte order).
pub fn words(entries: impl IntoIterator<Item = (Addr, u16, u8)>) -> Vec<u64> {
    let mut words = vec![0u64; VIP_FILTER_WORDS as usize];
    for (addr, port, proto) in entries {
        let bit = vip_filter_bit(&addr, port, proto);
        words[(bit / 64) as usize] |= 1 << (bit % 64);
    }
    words
}

impl Filter {
    /// Sets the bits of `words` without clearing any yet.
    pub fn add(&mut self, map: &mut Array<MapData, u64>, words: &[u64]) -> Result<()> {
        let union = match &self.written {
            Some(old) => old.iter().zip(words).map(|(a, b)| a | b).collect(),
            None => words.to_vec(),
        };
        self.write(map, union)
    }

    /// Makes the map hold exactly `words`, writing only the words that change.
    pub fn write(&mut self, map: &mut Array<MapData, u64>, words: Vec<u64>) -> Result<()> {
        for (i, &word) in words.iter().enumerate() {
            if self.written.as_ref().map(|old| old[i]) != Some(word) {
                map.set(i as u32, word, 0).context("writing a filter map")?;
            }
        }
        self.written = Some(words);
        Ok(())
    }
}
