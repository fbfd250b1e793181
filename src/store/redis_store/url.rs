//! A Redis store's location taken apart: the four URL forms (one node or a Redis Cluster's
//! seeds, plain or TLS), this library's query parameters (`store`, `tls_*`, `wait_*`) and the
//! slot of a store on a cluster. The forms are documented on
//! [`StoreLocation`](crate::store::StoreLocation); connecting is `connect`'s.

use std::time::Duration;

use ::redis::{Client, ClientTlsConfig, IntoConnectionInfo, RedisResult, TlsCertificates};

use crate::error::{Error, Result};

/// `wait_timeout_ms` when only `wait_replicas` is given.
const DEFAULT_WAIT: Duration = Duration::from_millis(1000);
/// Longest `wait_timeout_ms` accepted: an append blocks for up to this (0, Redis's "forever",
/// is refused, so nothing hangs).
const MAX_WAIT: Duration = Duration::from_secs(60);
/// Store name when the URL gives none.
const DEFAULT_NAME: &str = "lmsrt";

/// `WAIT` after every acknowledged write: how many replicas, for how long at most.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Replicas {
    pub(super) count: u32,
    pub(super) timeout: Duration,
}

/// A Redis location taken apart.
#[derive(Debug)]
pub(super) struct Location {
    /// `?store=`, not yet checked (`Keys::new` does).
    pub(super) name: String,
    /// The URL without its password, for messages and `EventStore::path`.
    pub(super) shown: String,
    pub(super) replicas: Option<Replicas>,
    pub(super) target: Target,
}

/// What the store connects to.
#[derive(Debug)]
pub(crate) enum Target {
    /// One node (`redis://`, `rediss://`).
    Node(Client),
    /// A Redis Cluster (`redis+cluster://`, `rediss+cluster://`).
    Cluster {
        /// `host:port`.
        seeds: Vec<String>,
        node: NodeUrl,
        /// The store's slot (of its hash tag, the store name).
        slot: u16,
    },
}

/// Parses `url` (see [`StoreLocation`](crate::store::StoreLocation)); nothing is connected yet.
/// A malformed URL or parameter, or a certificate file that cannot be read or parsed, is
/// [`Error::InvalidArgument`].
pub(super) fn parse(url: &str) -> Result<Location> {
    let bad = |m: String| Error::InvalidArgument(format!("redis URL: {m}"));
    let (scheme, rest) = url
        .split_once("://")
        .ok_or_else(|| bad("no scheme".into()))?;
    let (tls, cluster) = match scheme.to_ascii_lowercase().as_str() {
        "redis" => (false, false),
        "rediss" => (true, false),
        "redis+cluster" => (false, true),
        "rediss+cluster" => (true, true),
        other => return Err(bad(format!("unknown scheme {other:?}"))),
    };
    let (before_query, query) = rest.split_once('?').unwrap_or((rest, ""));
    let params = Params::parse(query).map_err(bad)?;
    if !tls && params.has_tls_files() {
        return Err(bad(
            "tls_ca, tls_cert and tls_key need rediss:// (or rediss+cluster://)".into(),
        ));
    }
    let certs = params.certificates().map_err(bad)?;
    let (authority, path) = before_query
        .split_once('/')
        .map_or((before_query, ""), |(a, p)| (a, p));
    let (userinfo, hosts) = match authority.rfind('@') {
        Some(at) => (&authority[..=at], &authority[at + 1..]),
        None => ("", authority),
    };
    let node = NodeUrl {
        scheme: if tls { "rediss" } else { "redis" },
        userinfo: userinfo.to_owned(),
        query: params.rest.join("&"),
        certs,
    };
    let target = if cluster {
        if !path.is_empty() && path != "0" {
            return Err(bad(format!(
                "a Redis Cluster has only database 0, not /{path}"
            )));
        }
        let seeds = hosts
            .split(',')
            .map(|h| seed(h).map_err(bad))
            .collect::<Result<Vec<_>>>()?;
        Target::Cluster {
            seeds,
            node,
            slot: hash_slot(params.name.as_bytes()),
        }
    } else {
        if hosts.contains(',') {
            return Err(bad(
                "several hosts are a Redis Cluster's seeds: write redis+cluster://h1:p1,h2:p2"
                    .into(),
            ));
        }
        let mut plain = format!("{scheme}://{before_query}");
        if !node.query.is_empty() {
            plain = format!("{plain}?{}", node.query);
        }
        Target::Node(node.client_for(&plain).map_err(|e| bad(e.to_string()))?)
    };
    Ok(Location {
        name: params.name,
        shown: without_password(url),
        replicas: params.replicas,
        target,
    })
}

/// Where the shared guards (`guards::redis`) go for the store at `url`, the store's name and
/// the URL without its password: the one node, or the cluster's seeds and how to reach any of
/// its nodes (the guards' keys are spread over slots on purpose, so they route each call
/// themselves instead of riding the store's one slot). TLS parameters apply as for the store;
/// a bad URL or store name is [`Error::InvalidArgument`].
pub(crate) fn shared_location(url: &str) -> Result<(Target, String, String)> {
    let location = parse(url)?;
    // The store's own rule for its name, so the guards' keys are named after a valid store.
    super::keys::Keys::new(&location.name)?;
    Ok((location.target, location.name, location.shown))
}

/// This library's query parameters; the rest is the `redis` crate's.
#[derive(Debug, Default)]
struct Params {
    name: String,
    ca: Option<String>,
    cert: Option<String>,
    key: Option<String>,
    replicas: Option<Replicas>,
    rest: Vec<String>,
}

impl Params {
    fn parse(query: &str) -> std::result::Result<Params, String> {
        let mut p = Params {
            name: DEFAULT_NAME.to_owned(),
            ..Params::default()
        };
        let mut count = None;
        let mut timeout = None;
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            match k {
                "store" => p.name = v.to_owned(),
                "tls_ca" => p.ca = Some(percent_decoded(v)?),
                "tls_cert" => p.cert = Some(percent_decoded(v)?),
                "tls_key" => p.key = Some(percent_decoded(v)?),
                "wait_replicas" => count = Some(number(k, v, 1, 1_000)?),
                "wait_timeout_ms" => {
                    timeout = Some(number(k, v, 1, MAX_WAIT.as_millis() as u64)?);
                }
                _ => p.rest.push(pair.to_owned()),
            }
        }
        p.replicas = match (count, timeout) {
            (Some(n), t) => Some(Replicas {
                count: n as u32,
                timeout: t.map_or(DEFAULT_WAIT, Duration::from_millis),
            }),
            (None, Some(_)) => return Err("wait_timeout_ms needs wait_replicas".into()),
            (None, None) => None,
        };
        Ok(p)
    }

    fn has_tls_files(&self) -> bool {
        self.ca.is_some() || self.cert.is_some() || self.key.is_some()
    }

    /// The CA and client certificate files, read now: a missing file fails the open, not the
    /// first call.
    fn certificates(&self) -> std::result::Result<Option<TlsCertificates>, String> {
        if !self.has_tls_files() {
            return Ok(None);
        }
        let read = |what: &str, path: &str| {
            std::fs::read(path).map_err(|e| format!("cannot read {what} {path:?}: {e}"))
        };
        let client_tls = match (&self.cert, &self.key) {
            (Some(c), Some(k)) => Some(ClientTlsConfig {
                client_cert: read("tls_cert", c)?,
                client_key: read("tls_key", k)?,
            }),
            (None, None) => None,
            _ => return Err("tls_cert and tls_key go together".into()),
        };
        let root_cert = self
            .ca
            .as_deref()
            .map(|ca| read("tls_ca", ca))
            .transpose()?;
        Ok(Some(TlsCertificates {
            client_tls,
            root_cert,
        }))
    }
}

fn number(key: &str, v: &str, min: u64, max: u64) -> std::result::Result<u64, String> {
    v.parse::<u64>()
        .ok()
        .filter(|n| (min..=max).contains(n))
        .ok_or_else(|| format!("{key} must be {min} to {max}, not {v:?}"))
}

/// `%XX` escapes decoded (a path with `&`, `%` or spaces in a URL parameter).
fn percent_decoded(s: &str) -> std::result::Result<String, String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = s
                .get(i + 1..i + 3)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or_else(|| format!("bad %-escape in {s:?}"))?;
            out.push(hex);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| format!("{s:?} is not UTF-8 once decoded"))
}

/// `host:port`, `[v6]:port` or `host` (port 6379), as `host:port`.
fn seed(h: &str) -> std::result::Result<String, String> {
    let (host, port) = match h.strip_prefix('[') {
        Some(v6) => {
            let (host, after) = v6
                .split_once(']')
                .ok_or_else(|| format!("bad seed {h:?}"))?;
            (host, after.strip_prefix(':'))
        }
        None => match h.rsplit_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (h, None),
        },
    };
    let port: u16 = match port {
        Some(p) => p.parse().map_err(|_| format!("bad port in seed {h:?}"))?,
        None => 6379,
    };
    if host.is_empty() {
        return Err(format!("empty host in the seed list ({h:?})"));
    }
    Ok(format!("{host}:{port}"))
}

/// The URL with any `user:password@` taken out, for messages and `EventStore::path`.
fn without_password(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => format!("{}{}", &url[..s + 3], &url[at + 1..]),
        _ => url.to_owned(),
    }
}

/// The Redis Cluster hash slot of a key: CRC16 (XMODEM) of its hash tag (the text between the
/// first `{` and the next `}`, when not empty) or of the whole key, modulo 16384. By table, a
/// byte a step: the shared guards compute one for every decision.
pub(crate) fn hash_slot(key: &[u8]) -> u16 {
    let tagged = key.iter().position(|&b| b == b'{').and_then(|open| {
        let inner = &key[open + 1..];
        let close = inner.iter().position(|&b| b == b'}')?;
        (close > 0).then(|| &inner[..close])
    });
    let crc = tagged.unwrap_or(key).iter().fold(0u16, |crc, &byte| {
        (crc << 8) ^ CRC16[usize::from((crc >> 8) as u8 ^ byte)]
    });
    crc % 16384
}

/// CRC16-XMODEM (polynomial 0x1021) of each byte value.
const CRC16: [u16; 256] = {
    let mut table = [0u16; 256];
    let mut i = 0;
    while i < 256 {
        let mut crc = (i as u16) << 8;
        let mut bit = 0;
        while bit < 8 {
            crc = if crc & 0x8000 != 0 {
                (crc << 1) ^ 0x1021
            } else {
                crc << 1
            };
            bit += 1;
        }
        table[i] = crc;
        i += 1;
    }
    table
};

/// How to reach any node of the deployment: scheme, credentials, the crate's parameters and
/// the TLS certificates.
#[derive(Debug)]
pub(crate) struct NodeUrl {
    scheme: &'static str,
    userinfo: String,
    query: String,
    certs: Option<TlsCertificates>,
}

impl NodeUrl {
    /// A client for `addr` (`host:port`, as `CLUSTER SLOTS` and `MOVED` give it).
    pub(crate) fn client(&self, addr: &str) -> RedisResult<Client> {
        let (host, port) = addr.rsplit_once(':').unwrap_or((addr, "6379"));
        let host = if host.contains(':') && !host.starts_with('[') {
            format!("[{host}]")
        } else {
            host.to_owned()
        };
        let mut url = format!("{}://{}{host}:{port}/0", self.scheme, self.userinfo);
        if !self.query.is_empty() {
            url = format!("{url}?{}", self.query);
        }
        self.client_for(&url)
    }

    /// A client whose connections send no `CLIENT SETINFO` when they open: two replies fewer
    /// to wait for, and a node that stopped answering costs a new connection one I/O timeout
    /// instead of one per unanswered reply (a guard's first call to a hung master took twice
    /// its timeout).
    fn client_for(&self, url: &str) -> RedisResult<Client> {
        let info = url.into_connection_info()?;
        let settings = info.redis_settings().clone().set_skip_set_lib_name();
        let info = info.set_redis_settings(settings);
        match &self.certs {
            Some(c) => Client::build_with_tls(info, c.clone()),
            None => Client::open(info),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_guards_take_a_node_or_a_cluster_with_a_valid_store_name() {
        let (target, name, shown) = shared_location("redis://u:pw@h:1/2?store=site-2").unwrap();
        assert!(matches!(target, Target::Node(_)));
        assert_eq!(
            (name.as_str(), shown.as_str()),
            ("site-2", "redis://h:1/2?store=site-2")
        );
        let (target, name, shown) =
            shared_location("rediss+cluster://u:pw@h:1,h:2/?store=x").unwrap();
        let Target::Cluster { seeds, .. } = target else {
            panic!("not a cluster")
        };
        assert_eq!(seeds, ["h:1", "h:2"]);
        assert_eq!(
            (name.as_str(), shown.as_str()),
            ("x", "rediss+cluster://h:1,h:2/?store=x")
        );
        for bad in [
            "redis+cluster://h:1,h:2/?store=no%20spaces",
            "redis+cluster://h:1,h:x/?store=x",
            "redis://h:1/0?store=no%20spaces",
            "redis://h:1/0?store=",
        ] {
            assert!(
                matches!(shared_location(bad), Err(Error::InvalidArgument(_))),
                "{bad} must be refused"
            );
        }
    }

    #[test]
    fn store_name_password_and_our_parameters_are_taken_out_of_the_url() {
        let l = parse("redis://u:secret@h:1/0?store=site-2&protocol=resp3").unwrap();
        assert_eq!(l.name, "site-2");
        assert_eq!(l.shown, "redis://h:1/0?store=site-2&protocol=resp3");
        assert!(l.replicas.is_none());
        let l = parse("redis://h:1?wait_replicas=2&wait_timeout_ms=250").unwrap();
        assert_eq!(l.name, "lmsrt");
        assert_eq!(
            l.replicas,
            Some(Replicas {
                count: 2,
                timeout: Duration::from_millis(250)
            })
        );
        let l = parse("redis://h:1?wait_replicas=1").unwrap();
        assert_eq!(l.replicas.unwrap().timeout, DEFAULT_WAIT);
        assert_eq!(without_password("redis://h:1/0"), "redis://h:1/0");
    }

    #[test]
    fn bad_parameters_are_refused() {
        for url in [
            "redis://h:1?wait_timeout_ms=10",
            "redis://h:1?wait_replicas=0",
            "redis://h:1?wait_replicas=1&wait_timeout_ms=0",
            "redis://h:1?wait_replicas=1&wait_timeout_ms=60001",
            "redis://h:1?tls_ca=/etc/ca.pem",
            "rediss://h:1?tls_cert=/a.pem",
            "rediss://h:1?tls_ca=/nonexistent/ca.pem",
            "redis://h1:1,h2:2",
            "redis+cluster://h1:1,h2:x",
            "redis+cluster://h1:1/3",
            "redis+cluster://h1:1,,h2:2",
            "rediss://h:1?tls_ca=%zz",
            "memcached://h:1",
        ] {
            let e = parse(url).expect_err(url);
            assert!(matches!(e, Error::InvalidArgument(_)), "{url}: {e:?}");
        }
    }

    #[test]
    fn cluster_seeds_are_parsed_with_default_ports_and_v6() {
        let l = parse("redis+cluster://u:p@h1:7000,[::1]:7001,h3/?store=x&protocol=resp2").unwrap();
        let Target::Cluster { seeds, node, slot } = &l.target else {
            panic!("not a cluster")
        };
        assert_eq!(seeds, &["h1:7000", "::1:7001", "h3:6379"]);
        assert_eq!(node.userinfo, "u:p@");
        assert_eq!(node.query, "protocol=resp2");
        assert_eq!(*slot, hash_slot(b"lmsrt:{x}:meta"));
        assert_eq!(
            l.shown,
            "redis+cluster://h1:7000,[::1]:7001,h3/?store=x&protocol=resp2"
        );
        assert_eq!(percent_decoded("/a%20b%26c").unwrap(), "/a b&c");
    }

    #[test]
    fn hash_slots_are_redis_clusters() {
        // Values from `CLUSTER KEYSLOT` (Redis 7.0).
        assert_eq!(hash_slot(b"foo"), 12182);
        assert_eq!(hash_slot(b"123456789"), 12739);
        assert_eq!(hash_slot(b"{user1000}.following"), hash_slot(b"user1000"));
        assert_eq!(hash_slot(b"foo{}{bar}"), hash_slot(b"foo{}{bar}"));
        assert_ne!(hash_slot(b"foo{}{bar}"), hash_slot(b"bar"));
        assert_eq!(hash_slot(b"lmsrt:{t1}:ev"), hash_slot(b"t1"));
    }
}
