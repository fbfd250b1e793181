//! Where each figure lives in the metrics file, in 64-bit words, and the buckets of the latency
//! histograms. The layout is part of the file format (its magic says which); room is reserved
//! so new metrics do not change it.

use super::{Counter, Gauge, Histogram};

pub(super) const MAGIC: u64 = u64::from_le_bytes(*b"LMSRMET1");
/// Room reserved in the layout, so new metrics do not change it.
pub(super) const MAX_COUNTERS: usize = 64;
pub(super) const MAX_GAUGES: usize = 16;
pub(super) const MAX_HISTOGRAMS: usize = 8;
/// Buckets: 16 exact below 16 µs, then 16 per power of two up to 2^36 µs (about 19 hours).
pub(super) const SUB: usize = 16;
pub(super) const BUCKETS: usize = SUB + (36 - 4) * SUB;
pub(super) const EPOCH_MS: u64 = 10_000;
/// Epochs in the window: the current one and the 5 before it.
pub(super) const WINDOW_EPOCHS: u64 = 6;
pub(super) const SLOTS: usize = 8;

// Layout, in words.
pub(super) const HEADER: usize = 8;
pub(super) const COUNTERS: usize = HEADER;
pub(super) const GAUGES: usize = COUNTERS + MAX_COUNTERS;
/// Per histogram: cumulative count, sum (µs), max (µs), spare.
pub(super) const HIST_CUM: usize = GAUGES + MAX_GAUGES;
pub(super) const HIST_CUM_WORDS: usize = 4;
pub(super) const RING: usize = HIST_CUM + MAX_HISTOGRAMS * HIST_CUM_WORDS;
/// A ring slot: epoch stamp, window counters, then per histogram its max and buckets.
pub(super) const SLOT_COUNTERS: usize = 1;
pub(super) const SLOT_HISTS: usize = SLOT_COUNTERS + MAX_COUNTERS;
pub(super) const SLOT_HIST_WORDS: usize = 1 + BUCKETS;
pub(super) const SLOT_WORDS: usize = SLOT_HISTS + MAX_HISTOGRAMS * SLOT_HIST_WORDS;
pub(super) const TOTAL_WORDS: usize = RING + SLOTS * SLOT_WORDS;

const _: () = assert!(Counter::ALL.len() <= MAX_COUNTERS);
const _: () = assert!(Gauge::ALL.len() <= MAX_GAUGES);
const _: () = assert!(Histogram::ALL.len() <= MAX_HISTOGRAMS);

/// The word offset of an epoch's ring slot.
pub(super) fn slot_offset(epoch: u64) -> usize {
    RING + (epoch % SLOTS as u64) as usize * SLOT_WORDS
}

/// The bucket of a value: exact below 16, then 16 buckets per power of two.
#[inline]
pub(super) fn bucket_of(v: u64) -> usize {
    if v < SUB as u64 {
        return v as usize;
    }
    let e = 63 - v.leading_zeros() as usize;
    if e >= 36 {
        return BUCKETS - 1;
    }
    SUB + (e - 4) * SUB + ((v >> (e - 4)) as usize & (SUB - 1))
}

/// The largest value in a bucket.
pub(super) fn bucket_upper(i: usize) -> u64 {
    if i < SUB {
        return i as u64;
    }
    let e = (i - SUB) / SUB + 4;
    let sub = ((i - SUB) % SUB) as u64;
    ((SUB as u64 + sub + 1) << (e - 4)) - 1
}
