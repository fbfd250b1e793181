//! The guards on a Redis Cluster: each decision goes to the master of its key's slot.
//!
//! The slot map (`CLUSTER SLOTS`) is asked of the seeds on the first decision, and again when
//! a node cannot be reached (a failover may have moved its slots) or says it is a replica now
//! (`READONLY`). `MOVED` points the slot at the node it names; `ASK` (the slot is being
//! migrated) runs the call there once after `ASKING` (the script is loaded there on `NOSCRIPT`,
//! so a second `ASK` may follow). Each of these replies means the script did not run, so
//! running it again is safe. Nothing waits: `TRYAGAIN`, `CLUSTERDOWN`, `MASTERDOWN` and
//! `LOADING` fail the call as a node that is down does, and the guard decides without Redis.
//!
//! Each node has its own back-off ([`Node`]): a master that is down, or a slot no master
//! serves, sends only its own keys' decisions to the fallback. Asking for the map has one
//! too, so a cluster that is down is not asked on every decision.
//!
//! Why not the `redis` crate's `ClusterConnection` (feature `cluster`): it is one connection
//! per caller (not `Sync`), so a pool of them would hold a connection to every master per
//! idle entry and ask for the whole map on each new one; it retries and sleeps inside a call,
//! loads a script on every master at once (so one master down fails `NOSCRIPT` everywhere),
//! and its errors do not say which node failed, which a back-off per node needs. The store's
//! engine made the same choice for its one slot (`store::redis_store::connect`); this file
//! shares its parsing and slot code.

use std::sync::{Arc, RwLock};
use std::time::Instant;

use ::redis::{Connection, ErrorKind, RedisError, RedisResult, ServerErrorKind};

use super::IO_TIMEOUT;
use super::node::{Backoff, Failure, Node};
use crate::store::redis_for_guards::{NodeUrl, cluster_reply, hash_slot, slot_ranges};

/// Slots in a Redis Cluster.
const SLOTS: usize = 16_384;
/// No master known for a slot.
const NONE: u16 = u16::MAX;
/// Redirects one call follows.
const MAX_HOPS: u32 = 3;

/// A Redis Cluster as the guards see it.
pub(super) struct Cluster {
    /// `host:port`, from the URL.
    seeds: Vec<String>,
    url: NodeUrl,
    map: RwLock<Map>,
    /// Of asking for the map: when no node answers, decisions on slots of no known master fail
    /// at once for a while.
    discovery: Backoff,
}

/// Which node serves each slot.
struct Map {
    /// Per slot, an index in `nodes`, or [`NONE`].
    owner: Box<[u16]>,
    /// Every node seen (seeds, masters, redirect targets): kept, with their pools and back-off.
    nodes: Vec<Arc<Node>>,
}

/// What to do after a reply that says the script did not run.
enum Next {
    /// `MOVED`: the slot is served there now.
    Moved(String),
    /// `ASK`: run it there once, after `ASKING`.
    Ask(String),
    /// The node is not there or not a master any more: ask for the map, then try again if the
    /// slot has another master.
    Remap,
}

impl Cluster {
    /// A cluster reached through `seeds`; nothing is connected yet. A seed that is no address
    /// is a [`RedisError`] (the URL's parser checked their form already).
    pub(super) fn new(seeds: Vec<String>, url: NodeUrl) -> RedisResult<Cluster> {
        let mut map = Map {
            owner: vec![NONE; SLOTS].into_boxed_slice(),
            nodes: Vec::new(),
        };
        for seed in &seeds {
            map.node(seed, &url)?;
        }
        Ok(Cluster {
            seeds,
            url,
            map: RwLock::new(map),
            discovery: Backoff::new(),
        })
    }

    /// Whether decisions try Redis now: the map can be asked for, and no master is backing off.
    pub(super) fn is_up(&self) -> bool {
        let map = self.map.read().unwrap_or_else(|p| p.into_inner());
        self.discovery.is_up()
            && map
                .owner
                .iter()
                .all(|&i| i == NONE || map.nodes[usize::from(i)].backoff.is_up())
    }

    /// How many of the masters the slot map names are backing off, and how many it names (none
    /// before the first decision asked for the map).
    pub(super) fn masters(&self) -> (usize, usize) {
        let map = self.map.read().unwrap_or_else(|p| p.into_inner());
        let mut named = vec![false; map.nodes.len()];
        for &i in map.owner.iter().filter(|&&i| i != NONE) {
            named[usize::from(i)] = true;
        }
        let down = (named.iter().zip(&map.nodes))
            .filter(|(named, node)| **named && !node.backoff.is_up())
            .count();
        (down, named.iter().filter(|n| **n).count())
    }

    /// Runs `f` on the master of `key`'s slot, following the cluster's redirects.
    pub(super) fn call<T>(
        &self,
        key: &str,
        mut f: impl FnMut(&mut Connection) -> RedisResult<T>,
    ) -> Result<T, Failure> {
        let slot = usize::from(hash_slot(key.as_bytes()));
        let started = Instant::now();
        let mut ask: Option<Arc<Node>> = None;
        let mut remapped = false;
        let mut hops = 0;
        loop {
            let asking = ask.is_some();
            let node = match ask.take() {
                Some(node) => node,
                None => self.owner(slot)?,
            };
            if !node.backoff.is_up() {
                return Err(Failure::BackingOff);
            }
            let r = if asking {
                node.run(|c| {
                    ::redis::cmd("ASKING").exec(c)?;
                    f(c)
                })
            } else {
                node.run(&mut f)
            };
            let e = match r {
                Ok(v) => {
                    node.backoff.succeeded();
                    return Ok(v);
                }
                Err(e) => e,
            };
            // Every step is bounded by IO_TIMEOUT; no new one starts after that much.
            let more = hops < MAX_HOPS && started.elapsed() < IO_TIMEOUT;
            hops += 1;
            match next(&e, &node.addr) {
                Some(Next::Moved(addr)) if more => {
                    let mut map = self.map.write().unwrap_or_else(|p| p.into_inner());
                    map.owner[slot] = map.node(&addr, &self.url).map_err(Failure::Redis)?;
                }
                Some(Next::Ask(addr)) if more => {
                    let mut map = self.map.write().unwrap_or_else(|p| p.into_inner());
                    let i = map.node(&addr, &self.url).map_err(Failure::Redis)?;
                    ask = Some(map.nodes[usize::from(i)].clone());
                }
                Some(Next::Remap) if more && !remapped => {
                    remapped = true;
                    // Left alone while the map is asked for (so it is not the one asked), and
                    // afterwards unless the map names another master for the slot.
                    node.backoff.failed();
                    let elsewhere = self.remap().is_ok()
                        && self
                            .known_owner(slot)
                            .is_some_and(|owner| !Arc::ptr_eq(&owner, &node));
                    if !elsewhere {
                        return Err(Failure::Redis(e));
                    }
                }
                _ => {
                    node.backoff.failed();
                    return Err(Failure::Redis(e));
                }
            }
        }
    }

    /// The master of `slot`; the map is asked for when none is known.
    fn owner(&self, slot: usize) -> Result<Arc<Node>, Failure> {
        if let Some(node) = self.known_owner(slot) {
            return Ok(node);
        }
        self.remap()?;
        self.known_owner(slot).ok_or_else(|| {
            self.discovery.failed();
            Failure::Redis(RedisError::from((
                ErrorKind::ClusterConnectionNotFound,
                "no master serves the slot",
                format!("slot {slot}"),
            )))
        })
    }

    fn known_owner(&self, slot: usize) -> Option<Arc<Node>> {
        let map = self.map.read().unwrap_or_else(|p| p.into_inner());
        let i = map.owner[slot];
        (i != NONE).then(|| map.nodes[usize::from(i)].clone())
    }

    /// Asks the known nodes not backing off (seeds first), one after the other until one
    /// answers, for the slot map, and takes it.
    fn remap(&self) -> Result<(), Failure> {
        if !self.discovery.is_up() {
            return Err(Failure::BackingOff);
        }
        let started = Instant::now();
        let candidates: Vec<Arc<Node>> = {
            let map = self.map.read().unwrap_or_else(|p| p.into_inner());
            map.nodes.clone()
        };
        let mut last = None;
        for node in candidates.iter().filter(|n| n.backoff.is_up()) {
            if started.elapsed() >= IO_TIMEOUT {
                break;
            }
            match node.run(|c| slot_ranges(c, &node.addr)) {
                Ok(ranges) if !ranges.is_empty() => {
                    node.backoff.succeeded();
                    self.discovery.succeeded();
                    let mut map = self.map.write().unwrap_or_else(|p| p.into_inner());
                    map.owner.fill(NONE);
                    for (start, end, master) in ranges {
                        let i = map.node(&master, &self.url).map_err(Failure::Redis)?;
                        map.owner[usize::from(start)..=usize::from(end)].fill(i);
                    }
                    return Ok(());
                }
                Ok(_) => {
                    last = Some(RedisError::from((
                        ErrorKind::ClusterConnectionNotFound,
                        "the node serves no slot: not (yet) in a cluster",
                        node.addr.clone(),
                    )))
                }
                Err(e) => {
                    if e.is_io_error() {
                        node.backoff.failed();
                    }
                    last = Some(e);
                }
            }
        }
        self.discovery.failed();
        Err(Failure::Redis(last.unwrap_or_else(|| {
            RedisError::from((
                ErrorKind::ClusterConnectionNotFound,
                "no node of the cluster can be asked for its slots now",
                self.seeds.join(","),
            ))
        })))
    }
}

impl Map {
    /// The index of the node at `addr`, added when new.
    fn node(&mut self, addr: &str, url: &NodeUrl) -> RedisResult<u16> {
        let i = match self.nodes.iter().position(|n| n.addr == addr) {
            Some(i) => i,
            None => {
                let client = url.client(addr)?;
                self.nodes
                    .push(Arc::new(Node::new(addr.to_owned(), client)));
                self.nodes.len() - 1
            }
        };
        u16::try_from(i)
            .ok()
            .filter(|&i| i != NONE)
            .ok_or_else(|| RedisError::from((ErrorKind::Client, "too many cluster nodes")))
    }
}

/// What `e` (from the node at `at`) asks for, if it says the script did not run and may run
/// elsewhere.
fn next(e: &RedisError, at: &str) -> Option<Next> {
    if e.is_io_error() && !e.is_timeout() {
        // Refused or reset: the node is gone, maybe failed over (after a timeout, the node is
        // slow rather than gone, and a second wait would double the stall).
        return Some(Next::Remap);
    }
    let (kind, detail) = cluster_reply(e)?;
    // `MOVED 3999 host:port`; a node that does not know its address sends `:port`.
    let target = || {
        let addr = detail.as_deref()?.split_whitespace().nth(1)?;
        Some(match addr.strip_prefix(':') {
            Some(port) => format!("{}:{port}", at.rsplit_once(':').map_or(at, |(h, _)| h)),
            None => addr.to_owned(),
        })
    };
    match kind {
        ServerErrorKind::Moved => target().map(Next::Moved),
        ServerErrorKind::Ask => target().map(Next::Ask),
        ServerErrorKind::ReadOnly => Some(Next::Remap),
        _ => None,
    }
}
