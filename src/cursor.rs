//! Opaque cursors: where a client is in each priority lane.
//!
//! A cursor holds, for each of the four priority lanes, the id up to which that lane has been
//! delivered, plus the epoch of the store that issued it. Clients treat the string as opaque.
//! A plain non-negative integer is accepted as a legacy sequential cursor (`last_event_id`): every
//! lane at that id, from any store.
//!
//! The epoch is a random number chosen when a database file is created. A cursor from another
//! file (a deleted and recreated database, another host) would otherwise silently skip events
//! whose ids the new file reuses; with the epoch the store notices and reports a gap instead.

use std::fmt;
use std::str::FromStr;

use crate::error::{Error, Result};

/// Longest cursor string accepted, so a hostile client cannot make us parse megabytes.
pub const MAX_CURSOR_LEN: usize = 128;

/// A position in the event log: one delivered-up-to id per priority lane.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Cursor {
    /// The issuing store's epoch, `None` for a legacy integer cursor or the start.
    pub(crate) epoch: Option<u32>,
    /// Per lane (critical, high, normal, low): every event of the lane with an id at or below
    /// this has been delivered or reported as a gap.
    pub(crate) lanes: [i64; 4],
}

impl Cursor {
    /// The beginning of the log: every live event is still to come.
    pub const START: Cursor = Cursor {
        epoch: None,
        lanes: [0; 4],
    };

    /// A legacy sequential cursor: every lane at `last_event_id`.
    pub fn from_last_event_id(last_event_id: i64) -> Cursor {
        Cursor {
            epoch: None,
            lanes: [last_event_id.max(0); 4],
        }
    }

    /// The per-lane positions, most urgent lane first.
    pub fn lanes(&self) -> [i64; 4] {
        self.lanes
    }

    /// The lowest lane position: every event at or below it has been delivered in every lane.
    /// This is the value to hand a legacy client as its `last_event_id`.
    pub fn min_position(&self) -> i64 {
        *self.lanes.iter().min().unwrap_or(&0)
    }

    /// Whether every lane is at the same position (a cursor a legacy client can hold as one
    /// integer without losing anything).
    pub fn is_sequential(&self) -> bool {
        self.lanes.iter().all(|p| *p == self.lanes[0])
    }

    /// Parses a cursor string: the opaque form or a legacy integer.
    pub fn parse(s: &str) -> Result<Cursor> {
        if s.len() > MAX_CURSOR_LEN {
            return Err(Error::InvalidCursor(format!(
                "{} bytes, longer than {MAX_CURSOR_LEN}",
                s.len()
            )));
        }
        if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) {
            let id = s
                .parse::<i64>()
                .map_err(|_| Error::InvalidCursor("integer out of range".into()))?;
            return Ok(Cursor::from_last_event_id(id));
        }
        let bad = || Error::InvalidCursor(format!("malformed cursor {s:?}"));
        let mut parts = s.split('.');
        if parts.next() != Some("v1") {
            return Err(bad());
        }
        let epoch_s = parts.next().ok_or_else(bad)?;
        if epoch_s.len() != 8 || !epoch_s.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(bad());
        }
        let epoch = u32::from_str_radix(epoch_s, 16).map_err(|_| bad())?;
        let mut lanes = [0i64; 4];
        for lane in lanes.iter_mut() {
            let p = parts.next().ok_or_else(bad)?;
            if p.is_empty() || p.len() > 19 || !p.bytes().all(|b| b.is_ascii_digit()) {
                return Err(bad());
            }
            *lane = p.parse::<i64>().map_err(|_| bad())?;
        }
        if parts.next().is_some() {
            return Err(bad());
        }
        Ok(Cursor {
            epoch: Some(epoch),
            lanes,
        })
    }
}

impl fmt::Display for Cursor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let [a, b, c, d] = self.lanes;
        write!(
            f,
            "v1.{:08x}.{a}.{b}.{c}.{d}",
            self.epoch.unwrap_or_default()
        )
    }
}

impl FromStr for Cursor {
    type Err = Error;
    fn from_str(s: &str) -> Result<Cursor> {
        Cursor::parse(s)
    }
}

impl serde::Serialize for Cursor {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn legacy_integers() {
        let c = Cursor::parse("42").unwrap();
        assert_eq!(c.lanes(), [42; 4]);
        assert_eq!(c.epoch, None);
        assert!(c.is_sequential());
        assert!(Cursor::parse("99999999999999999999").is_err());
    }

    #[test]
    fn rejects_garbage() {
        for bad in [
            "",
            "-1",
            "v1",
            "v1.zz.1.2.3.4",
            "v1.0000000g.1.2.3.4",
            "v1.00000000.1.2.3",
            "v1.00000000.1.2.3.4.5",
            "v1.00000000.1.2.-3.4",
            "v1.00000000.1..3.4",
            "v2.00000000.1.2.3.4",
            "v1.00000000.1.2.3.99999999999999999999",
            " 1",
            "1 ",
        ] {
            assert!(
                matches!(Cursor::parse(bad), Err(Error::InvalidCursor(_))),
                "{bad:?}"
            );
        }
        assert!(Cursor::parse(&"1".repeat(200)).is_err());
    }

    proptest! {
        #[test]
        fn round_trips(epoch in any::<u32>(), lanes in proptest::array::uniform4(0i64..i64::MAX)) {
            let c = Cursor { epoch: Some(epoch), lanes };
            let s = c.to_string();
            prop_assert!(s.len() <= MAX_CURSOR_LEN);
            prop_assert_eq!(Cursor::parse(&s).unwrap(), c);
        }

        #[test]
        fn never_panics(s in "\\PC{0,140}") {
            let _ = Cursor::parse(&s);
        }
    }
}
