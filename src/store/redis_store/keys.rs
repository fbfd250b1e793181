//! The store's key names: every one starts with `lmsrt:{NAME}:`, one Redis Cluster hash tag
//! per store, so all of a store's keys live in one slot (see `docs/redis.md`).

use crate::error::{Error, Result};

/// Longest store name accepted in `?store=`.
const MAX_NAME: usize = 64;

/// Key names of one store.
#[derive(Debug, Clone)]
pub(super) struct Keys {
    prefix: String,
}

impl Keys {
    /// Keys of the store called `name` (`[A-Za-z0-9_-]{1,64}`).
    pub(super) fn new(name: &str) -> Result<Keys> {
        let ok = !name.is_empty()
            && name.len() <= MAX_NAME
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
        if !ok {
            return Err(Error::InvalidArgument(format!(
                "a Redis store name is 1 to {MAX_NAME} of [A-Za-z0-9_-], not {name:?}"
            )));
        }
        Ok(Keys {
            prefix: format!("lmsrt:{{{name}}}:"),
        })
    }

    fn key(&self, suffix: &str) -> String {
        format!("{}{suffix}", self.prefix)
    }

    /// Hash: `epoch`.
    pub(super) fn meta(&self) -> String {
        self.key("meta")
    }

    /// String: the last id assigned.
    pub(super) fn seq(&self) -> String {
        self.key("seq")
    }

    /// Sorted set: every lane key, scored by the highest id appended to it (what the tail reads
    /// from: the lanes holding events past an id).
    pub(super) fn lanes(&self) -> String {
        self.key("lanes")
    }

    /// Sorted set: expiry ranges (`LANEKEY|FIRST|LAST`, scored by their lowest expiry).
    pub(super) fn expiry(&self) -> String {
        self.key("exp")
    }

    /// Hash: idempotency key → `id|fingerprint`.
    pub(super) fn idem(&self) -> String {
        self.key("idem")
    }

    /// Sorted set: purge records.
    pub(super) fn purged(&self) -> String {
        self.key("purged")
    }

    /// Hash: consumer → cursor.
    pub(super) fn cursors(&self) -> String {
        self.key("cursors")
    }

    /// The pub/sub channel every append publishes the new head on.
    pub(super) fn wake(&self) -> String {
        self.key("wake")
    }

    /// Stream: one channel's lane (0–3), one entry per event, its stream id the event's id.
    /// The purge script reads channel and lane back from the name's end (`l:CHANNEL:LANE`).
    pub(super) fn lane(&self, channel: i64, lane: usize) -> String {
        format!("{}l:{channel}:{lane}", self.prefix)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_key_carries_the_stores_hash_tag() {
        let k = Keys::new("site-1").unwrap();
        for key in [
            k.meta(),
            k.seq(),
            k.lanes(),
            k.expiry(),
            k.idem(),
            k.purged(),
            k.cursors(),
            k.lane(42, 3),
        ] {
            assert!(key.starts_with("lmsrt:{site-1}:"), "{key}");
        }
        for bad in ["", "a}b", "a{b", "a b", &"x".repeat(65)] {
            assert!(Keys::new(bad).is_err(), "{bad:?}");
        }
    }
}
