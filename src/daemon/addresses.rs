//! Connections per client address: one address must not be able to take every connection slot
//! of the daemon (after which `/healthz` too would get 503 until the header timeout reaped
//! them).
//!
//! Without `--trust-proxy` the peer's address is the client's, known at accept: a connection
//! over `--max-connections-per-ip` is answered 429 and closed at once, before it costs a
//! request's worth of work. Behind a proxy every connection comes from the proxy, and the
//! client's address is known only from the request's headers: then it counts the requests in
//! flight per forwarded address (a long-poll is one for as long as it waits), and refuses the
//! request over the cap with 429.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, MutexGuard};

/// Open connections (or requests in flight) per client address.
#[derive(Debug)]
pub(crate) struct Addresses {
    open: Mutex<HashMap<IpAddr, u32>>,
    cap: u32,
}

/// One counted connection or request of an address; uncounted when dropped.
#[derive(Debug)]
pub(crate) struct AddressSlot {
    addresses: Arc<Addresses>,
    ip: IpAddr,
}

impl Addresses {
    /// At most `cap` per address.
    pub(crate) fn new(cap: u32) -> Addresses {
        Addresses {
            open: Mutex::new(HashMap::new()),
            cap: cap.max(1),
        }
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<IpAddr, u32>> {
        self.open.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Counts one more for `ip`, or `None` when it already has `cap`.
    pub(crate) fn acquire(self: &Arc<Self>, ip: IpAddr) -> Option<AddressSlot> {
        let mut open = self.lock();
        let n = open.entry(ip).or_insert(0);
        if *n >= self.cap {
            return None;
        }
        *n += 1;
        Some(AddressSlot {
            addresses: self.clone(),
            ip,
        })
    }

    /// Open now for `ip`.
    #[cfg(test)]
    pub(crate) fn count(&self, ip: IpAddr) -> u32 {
        self.lock().get(&ip).copied().unwrap_or(0)
    }
}

impl Drop for AddressSlot {
    fn drop(&mut self) {
        let mut open = self.addresses.lock();
        if let Some(n) = open.get_mut(&self.ip) {
            *n -= 1;
            // No entry left behind per address ever seen: the map holds open addresses only.
            if *n == 0 {
                open.remove(&self.ip);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caps_each_address_and_forgets_closed_ones() {
        let a = Arc::new(Addresses::new(2));
        let x: IpAddr = "10.0.0.1".parse().unwrap();
        let y: IpAddr = "10.0.0.2".parse().unwrap();
        let s1 = a.acquire(x).unwrap();
        let _s2 = a.acquire(x).unwrap();
        assert!(a.acquire(x).is_none(), "a third from x");
        let _t = a.acquire(y).expect("another address is not affected");
        drop(s1);
        assert_eq!(a.count(x), 1);
        let s3 = a.acquire(x).unwrap();
        drop(s3);
        drop(_s2);
        assert_eq!(a.count(x), 0);
        assert!(!a.lock().contains_key(&x));
    }
}
