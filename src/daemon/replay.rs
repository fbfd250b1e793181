//! Replayed publishes: a signed `POST /v1/events` sent again (by an attacker who captured it,
//! or by a proxy or client retrying) must not append its events again.
//!
//! A publish signature covers the timestamp and the body, and the daemon accepts a timestamp
//! only within `--publish-skew` of its clock; so a signature is only worth remembering until
//! its timestamp leaves that window (`timestamp + skew`), after which the skew check refuses it
//! anyway. Within it, the first request with a signature appends; every later one with the
//! same signature gets the first one's ids (200, the same body), without appending again. A
//! request that arrives while the first is still appending waits for its outcome; if the first
//! fails (nothing was appended), the next one tries for itself.
//!
//! Memory is bounded: entries leave by time, and at most `capacity` publishes are remembered
//! (a batch whose ids are not consecutive counts once per run of consecutive ids). When the
//! window is full of live entries a new publish is refused with 503 and a `Retry-After` until
//! the oldest entry expires, rather than forgetting one, which would let its replay through.
//!
//! The window is per daemon process. Publishers that retry through several daemons, or across a
//! restart, should also send an `idempotency_key`: the store keeps those for good.

use std::collections::{BTreeMap, HashMap};
use std::hash::{BuildHasherDefault, Hash, Hasher};
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::watch;

/// What a request waiting for the first one learns: its ids, or that it failed.
type Outcome = Option<Result<Arc<[i64]>, ()>>;

/// The signature's identity: key id and MAC bytes, in one allocation shared by the map and the
/// expiry order, with its hash computed once.
#[derive(Debug, Clone)]
struct Key {
    hash: u64,
    /// The key id's bytes, `0xFF` (never part of UTF-8), the MAC's bytes.
    bytes: Arc<[u8]>,
}

impl Key {
    fn new(kid: &str, tag: &[u8]) -> Key {
        let mut bytes = Vec::with_capacity(kid.len() + 1 + tag.len());
        bytes.extend_from_slice(kid.as_bytes());
        bytes.push(0xFF);
        bytes.extend_from_slice(tag);
        // The MAC is already a keyed hash: only signatures that verified reach the window, so
        // its bytes cannot be chosen to collide without the publish key. Its first 8 bytes,
        // mixed with the key id's, are the hash (SipHash over every byte was 1 % of an
        // 8-publisher run).
        let mut head = [0u8; 8];
        let n = tag.len().min(8);
        head[..n].copy_from_slice(&tag[..n]);
        let kid_hash = kid.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
        });
        Key {
            hash: u64::from_le_bytes(head) ^ kid_hash,
            bytes: bytes.into(),
        }
    }
}

impl PartialEq for Key {
    fn eq(&self, other: &Key) -> bool {
        self.hash == other.hash && self.bytes == other.bytes
    }
}

impl Eq for Key {}

impl Hash for Key {
    fn hash<H: Hasher>(&self, state: &mut H) {
        state.write_u64(self.hash);
    }
}

/// Passes a [`Key`]'s precomputed hash through.
#[derive(Default)]
struct KeyHasher(u64);

impl Hasher for KeyHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        // Only `write_u64` is used by `Key`; anything else still hashes, slowly.
        for &b in bytes {
            self.0 = (self.0 ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

#[derive(Debug)]
enum State {
    /// The first request is appending; its outcome arrives on the channel.
    Pending(watch::Receiver<Outcome>),
    /// Appended: these are its ids.
    Done(Arc<[i64]>),
}

#[derive(Debug)]
struct Entry {
    /// Unix seconds after which the signature is refused anyway (timestamp + skew).
    expires_s: i64,
    seq: u64,
    weight: usize,
    state: State,
}

#[derive(Debug, Default)]
struct Inner {
    map: HashMap<Key, Entry, BuildHasherDefault<KeyHasher>>,
    /// Entries by expiry (then by age), for eviction by time.
    by_expiry: BTreeMap<(i64, u64), Key>,
    seq: u64,
    /// Sum of the entries' weights.
    weight: usize,
}

/// The replay window (see the module docs).
#[derive(Debug)]
pub(crate) struct ReplayWindow {
    inner: Mutex<Inner>,
    capacity: usize,
}

/// What [`ReplayWindow::begin`] decided.
pub(crate) enum Begin {
    /// A replay of a publish that was appended: answer with these ids.
    Replay(Arc<[i64]>),
    /// The first request with this signature is still appending: wait for it with
    /// [`wait`], then begin again.
    Wait(watch::Receiver<Outcome>),
    /// The first request with this signature: append, then [`Ticket::finish`].
    First(Ticket),
    /// The window is full of live entries: refuse (503) for this many seconds.
    Full {
        /// Seconds until the oldest entry expires.
        retry_after_s: u64,
    },
}

/// Waits for the first request's outcome: `Some(ids)` when it appended, `None` when it
/// failed (then the caller begins again and may append itself).
pub(crate) async fn wait(mut rx: watch::Receiver<Outcome>) -> Option<Arc<[i64]>> {
    match rx.wait_for(|o| o.is_some()).await {
        Ok(o) => o.as_ref().and_then(|r| r.as_ref().ok().cloned()),
        Err(_) => None, // the first request's ticket is gone: it failed
    }
}

/// The first request's duty to record its outcome. Dropped without [`finish`](Self::finish)
/// (a panic), it records a failure, so that waiters retry instead of waiting for ever.
pub(crate) struct Ticket {
    window: Arc<ReplayWindow>,
    key: Option<Key>,
    tx: watch::Sender<Outcome>,
}

impl ReplayWindow {
    /// A window remembering at most `capacity` publishes.
    pub(crate) fn new(capacity: usize) -> ReplayWindow {
        ReplayWindow {
            inner: Mutex::new(Inner::default()),
            capacity: capacity.max(1),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Looks up the signature `(kid, tag)` of a request whose timestamp makes it acceptable
    /// until `expires_s` (Unix seconds), at `now_s`.
    pub(crate) fn begin(
        self: &Arc<Self>,
        kid: &str,
        tag: &[u8],
        expires_s: i64,
        now_s: i64,
    ) -> Begin {
        let key = Key::new(kid, tag);
        let mut inner = self.lock();
        inner.evict_expired(now_s);
        if let Some(e) = inner.map.get(&key) {
            return match &e.state {
                State::Done(ids) => Begin::Replay(ids.clone()),
                State::Pending(rx) => Begin::Wait(rx.clone()),
            };
        }
        if inner.weight >= self.capacity {
            let oldest = inner
                .by_expiry
                .first_key_value()
                .map_or(now_s + 1, |((t, _), _)| *t);
            return Begin::Full {
                retry_after_s: (oldest + 1 - now_s).clamp(1, 3600) as u64,
            };
        }
        let (tx, rx) = watch::channel(None);
        inner.seq += 1;
        let seq = inner.seq;
        inner.weight += 1;
        inner.by_expiry.insert((expires_s, seq), key.clone());
        inner.map.insert(
            key.clone(),
            Entry {
                expires_s,
                seq,
                weight: 1,
                state: State::Pending(rx),
            },
        );
        Begin::First(Ticket {
            window: self.clone(),
            key: Some(key),
            tx,
        })
    }

    /// Publishes remembered now (their total weight).
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.lock().weight
    }
}

impl Inner {
    /// Drops the appended entries whose signatures the skew check refuses by now. A pending
    /// one stays until its request finishes (it removes or completes it then).
    fn evict_expired(&mut self, now_s: i64) {
        let expired: Vec<(i64, u64)> = self
            .by_expiry
            .iter()
            .take_while(|((t, _), _)| *t < now_s)
            .filter(|(_, k)| matches!(self.map.get(k).map(|e| &e.state), Some(State::Done(_))))
            .map(|(at, _)| *at)
            .collect();
        for at in expired {
            if let Some(key) = self.by_expiry.remove(&at)
                && let Some(e) = self.map.remove(&key)
            {
                self.weight -= e.weight;
            }
        }
    }

    fn remove(&mut self, key: &Key) {
        if let Some(e) = self.map.remove(key) {
            self.by_expiry.remove(&(e.expires_s, e.seq));
            self.weight -= e.weight;
        }
    }
}

/// Runs of consecutive ids: what an entry's ids cost against the capacity.
fn runs(ids: &[i64]) -> usize {
    1 + ids.windows(2).filter(|w| w[1] != w[0] + 1).count()
}

impl Ticket {
    /// Records the first request's outcome: its ids for the replays to come, or (on `None`, a
    /// failure that appended nothing) forgets the signature so that a retry may append.
    pub(crate) fn finish(mut self, ids: Option<&[i64]>) {
        let Some(key) = self.key.take() else { return };
        let mut inner = self.window.lock();
        match ids {
            Some(ids) => {
                let ids: Arc<[i64]> = ids.into();
                if let Some(e) = inner.map.get_mut(&key) {
                    let extra = runs(&ids) - e.weight;
                    e.weight += extra;
                    e.state = State::Done(ids.clone());
                    inner.weight += extra;
                }
                drop(inner);
                let _ = self.tx.send(Some(Ok(ids)));
            }
            None => {
                inner.remove(&key);
                drop(inner);
                let _ = self.tx.send(Some(Err(())));
            }
        }
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        if let Some(key) = self.key.take() {
            self.window.lock().remove(&key);
            let _ = self.tx.send(Some(Err(())));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(b: Begin) -> Arc<[i64]> {
        match b {
            Begin::Replay(ids) => ids,
            _ => panic!("expected a replay"),
        }
    }

    #[tokio::test]
    async fn the_first_appends_replays_get_its_ids_failures_are_forgotten() {
        let w = Arc::new(ReplayWindow::new(3));
        let Begin::First(t) = w.begin("k", b"sig-a", 100, 50) else {
            panic!("first")
        };
        // A replay while the first is appending waits for it.
        let Begin::Wait(rx) = w.begin("k", b"sig-a", 100, 50) else {
            panic!("wait")
        };
        let waiter = tokio::spawn(wait(rx));
        t.finish(Some(&[7, 8]));
        assert_eq!(&*waiter.await.unwrap().unwrap(), &[7, 8]);
        assert_eq!(&*ids(w.begin("k", b"sig-a", 100, 60)), &[7, 8]);
        // Another key id with the same bytes is another signature.
        assert!(matches!(w.begin("k2", b"sig-a", 100, 60), Begin::First(_)));
        // A failure forgets the signature: the retry appends.
        let Begin::First(t) = w.begin("k", b"sig-b", 100, 60) else {
            panic!("first")
        };
        let Begin::Wait(rx) = w.begin("k", b"sig-b", 100, 60) else {
            panic!("wait")
        };
        t.finish(None);
        assert!(wait(rx).await.is_none());
        assert!(matches!(w.begin("k", b"sig-b", 100, 60), Begin::First(_)));
    }

    #[tokio::test]
    async fn a_dropped_ticket_releases_its_waiters() {
        let w = Arc::new(ReplayWindow::new(3));
        let Begin::First(t) = w.begin("k", b"s", 100, 50) else {
            panic!()
        };
        let Begin::Wait(rx) = w.begin("k", b"s", 100, 50) else {
            panic!()
        };
        drop(t);
        assert!(wait(rx).await.is_none());
        assert_eq!(w.len(), 0);
    }

    #[test]
    fn full_refuses_until_entries_expire_by_time() {
        let w = Arc::new(ReplayWindow::new(2));
        for (sig, exp) in [(&b"a"[..], 100), (b"b", 130)] {
            let Begin::First(t) = w.begin("k", sig, exp, 50) else {
                panic!()
            };
            t.finish(Some(&[1]));
        }
        match w.begin("k", b"c", 140, 60) {
            Begin::Full { retry_after_s } => assert_eq!(retry_after_s, 41),
            _ => panic!("expected full"),
        }
        // Still full, the remembered ones still answer as replays.
        assert_eq!(&*ids(w.begin("k", b"a", 100, 60)), &[1]);
        // Past a's expiry, a is forgotten (the skew check refuses it by then) and c fits.
        assert!(matches!(w.begin("k", b"c", 140, 101), Begin::First(_)));
        // Non-consecutive ids weigh one per run.
        let w = Arc::new(ReplayWindow::new(3));
        let Begin::First(t) = w.begin("k", b"x", 100, 50) else {
            panic!()
        };
        t.finish(Some(&[1, 2, 5, 9, 10]));
        assert_eq!(w.len(), 3);
        assert!(matches!(w.begin("k", b"y", 100, 50), Begin::Full { .. }));
    }
}
