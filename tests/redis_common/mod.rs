//! Shared by the Redis engine's tests: a `redis-server` of the test's own, on a free loopback
//! port, with its files in a temporary directory, stopped when dropped; and a Redis Cluster of
//! three such servers ([`RedisCluster`]).

#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// A running `redis-server`.
pub struct RedisServer {
    child: Option<Child>,
    port: u16,
    dir: tempfile::TempDir,
    /// Append-only file with an fsync per write: a restart keeps everything.
    persistent: bool,
    /// More `redis-server` arguments.
    extra: Vec<String>,
    /// The port speaks TLS only: ready when it accepts, and [`command`](Self::command) does
    /// not work.
    tls: bool,
}

/// Stores on a test Redis, each with a name of its own.
pub trait RedisUrls {
    /// A URL for a store name used by no other test here.
    fn url(&self) -> String;
}

impl RedisUrls for RedisServer {
    fn url(&self) -> String {
        RedisServer::url(self)
    }
}

/// A store name used by no other test in this process.
fn unique_store() -> String {
    static N: AtomicUsize = AtomicUsize::new(0);
    format!("t{}", N.fetch_add(1, Ordering::Relaxed))
}

/// A free loopback port (free when asked: the server binds it right after).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free loopback port")
        .port()
}

/// A free port for a cluster node: its cluster bus listens 10,000 higher, which must be a port
/// too (Redis refuses to start above 55535) and free. The kernel's ephemeral range reaches
/// 60999, so about one port in five from [`free_port`] would not do.
fn free_cluster_port() -> u16 {
    loop {
        let p = free_port();
        if p <= 55_535 && TcpListener::bind(("127.0.0.1", p + 10_000)).is_ok() {
            return p;
        }
    }
}

impl RedisServer {
    /// A server that keeps nothing on disk: a restart starts it empty.
    pub fn start() -> RedisServer {
        RedisServer::start_with(false)
    }

    /// A server with `appendonly yes` and `appendfsync always`: a restart keeps every write.
    pub fn start_persistent() -> RedisServer {
        RedisServer::start_with(true)
    }

    fn start_with(persistent: bool) -> RedisServer {
        RedisServer::start_configured(persistent, &[], false)
    }

    /// A server with more arguments (`--cluster-enabled yes`, `--replicaof …`).
    pub fn start_with_args(extra: &[&str]) -> RedisServer {
        RedisServer::start_configured(false, extra, false)
    }

    /// A server whose port speaks TLS only (`--tls-port`, `--port 0`); `extra` names its
    /// certificate files.
    pub fn start_tls(extra: &[&str]) -> RedisServer {
        RedisServer::start_configured(false, extra, true)
    }

    fn start_configured(persistent: bool, extra: &[&str], tls: bool) -> RedisServer {
        let cluster = extra.contains(&"--cluster-enabled");
        let mut s = RedisServer {
            child: None,
            port: if cluster {
                free_cluster_port()
            } else {
                free_port()
            },
            dir: tempfile::tempdir().unwrap(),
            persistent,
            extra: extra.iter().map(|a| a.to_string()).collect(),
            tls,
        };
        s.run();
        s
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// Whether the process is running (not killed by the test).
    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    /// Starts the server process (again) on the same port and directory.
    pub fn run(&mut self) {
        assert!(self.child.is_none(), "already running");
        let mut cmd = Command::new("redis-server");
        if self.tls {
            cmd.args(["--port", "0", "--tls-port"]);
        } else {
            cmd.arg("--port");
        }
        cmd.arg(self.port.to_string())
            .args(["--bind", "127.0.0.1", "--save", ""])
            .arg("--dir")
            .arg(self.dir.path());
        if self.persistent {
            cmd.args(["--appendonly", "yes", "--appendfsync", "always"]);
        } else {
            cmd.args(["--appendonly", "no"]);
        }
        cmd.args(&self.extra);
        let child = cmd
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server must be installed (scripts/test.sh installs it)");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        let ready = |s: &RedisServer| match s.tls {
            true => TcpStream::connect(("127.0.0.1", s.port)).is_ok(),
            false => s.command(&["PING"]).as_deref() == Some("+PONG"),
        };
        while !ready(self) {
            assert!(
                Instant::now() < deadline,
                "redis-server on port {} did not answer PING within 10 s",
                self.port
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Kills the server (SIGKILL: no goodbye, as a crash).
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Stops the process (SIGSTOP): its port still accepts connections, but nothing is
    /// answered, as a server that hangs. [`resume`](Self::resume) lets it go on.
    pub fn pause(&self) {
        self.signal("STOP");
    }

    /// Lets a [paused](Self::pause) server go on (SIGCONT).
    pub fn resume(&self) {
        self.signal("CONT");
    }

    fn signal(&self, sig: &str) {
        let pid = self.child.as_ref().expect("the server is running").id();
        let ok = Command::new("kill")
            .arg(format!("-{sig}"))
            .arg(pid.to_string())
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "kill -{sig} {pid} failed");
    }

    /// Kills and starts it again (empty unless persistent).
    pub fn restart(&mut self) {
        self.kill();
        self.run();
    }

    /// `redis://127.0.0.1:PORT/0?store=NAME` for a store name used by no other test here.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0?store={}", self.port, unique_store())
    }

    /// Runs `redis-cli` against this server (plain TCP) and returns its output, trimmed.
    pub fn cli(&self, args: &[&str]) -> String {
        let out = Command::new("redis-cli")
            .args(["-h", "127.0.0.1", "-p", &self.port.to_string()])
            .args(self.cli_tls())
            .args(args)
            .output()
            .expect("redis-cli comes with redis-server");
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }

    /// `redis-cli`'s TLS flags for this server: the CA it was started with.
    fn cli_tls(&self) -> Vec<String> {
        let ca = self
            .extra
            .iter()
            .skip_while(|a| *a != "--tls-ca-cert-file")
            .nth(1);
        match (self.tls, ca) {
            (true, Some(ca)) => vec!["--tls".into(), "--cacert".into(), ca.clone()],
            _ => Vec::new(),
        }
    }

    /// Sends one command (inline form, no spaces inside arguments) and returns the first line
    /// of the reply, or `None` when the server cannot be reached.
    pub fn command(&self, args: &[&str]) -> Option<String> {
        let mut s = TcpStream::connect(("127.0.0.1", self.port)).ok()?;
        s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
        s.write_all(format!("{}\r\n", args.join(" ")).as_bytes())
            .ok()?;
        let mut buf = [0u8; 512];
        let mut out = Vec::new();
        while !out.ends_with(b"\r\n") {
            let n = s.read(&mut buf).ok()?;
            if n == 0 {
                return None;
            }
            out.extend_from_slice(&buf[..n]);
        }
        let text = String::from_utf8_lossy(&out).into_owned();
        Some(text.lines().next().unwrap_or("").to_owned())
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A Redis Cluster of three masters (no replicas) on loopback, created with
/// `redis-cli --cluster create`; every node is killed when it is dropped.
pub struct RedisCluster {
    pub nodes: Vec<RedisServer>,
    /// TLS clusters: the CA file their certificates are signed by.
    tls_ca: Option<String>,
}

impl RedisCluster {
    /// Starts three `--cluster-enabled` servers, joins them, and waits (up to 30 s) until every
    /// node says `cluster_state:ok`.
    pub fn start() -> RedisCluster {
        RedisCluster::start_with(0, "5000", None, &[])
    }

    /// Three masters without replicas, with `cluster-require-full-coverage no` (the set-up
    /// `docs/redis.md` advises for shared guards) and a node timeout of 1 s: once a master is
    /// marked failed, the others keep serving their own slots instead of answering
    /// `CLUSTERDOWN` for every key.
    pub fn start_partial_coverage() -> RedisCluster {
        RedisCluster::start_with(0, "1000", None, &["--cluster-require-full-coverage", "no"])
    }

    /// The same over TLS only (clients, the cluster bus and replication), with the certificates
    /// [`make_ca`] (`ca`) and [`make_cert`] (`server`) made in `dir`.
    pub fn start_tls_in(dir: &Path) -> RedisCluster {
        RedisCluster::start_with(0, "5000", Some(dir), &[])
    }

    /// Three masters with one replica each (`nodes[3..]`, every one in sync), and a node
    /// timeout of 1 s: a master killed fails over within seconds.
    pub fn start_with_replicas() -> RedisCluster {
        let c = RedisCluster::start_with(1, "1000", None, &[]);
        let deadline = Instant::now() + Duration::from_secs(30);
        for n in &c.nodes {
            let info = || n.cli(&["INFO", "replication"]);
            while info().contains("role:slave") && !info().contains("master_link_status:up") {
                assert!(Instant::now() < deadline, "a replica did not sync in 30 s");
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        c
    }

    fn start_with(
        replicas: usize,
        node_timeout_ms: &str,
        tls: Option<&Path>,
        extra: &[&str],
    ) -> RedisCluster {
        let mut cluster_args = vec![
            "--cluster-enabled",
            "yes",
            "--cluster-config-file",
            "nodes.conf",
            "--cluster-node-timeout",
            node_timeout_ms,
        ];
        cluster_args.extend_from_slice(extra);
        let f = |n: &str| tls.map(|d| d.join(n).to_string_lossy().into_owned());
        let tls_ca = f("ca.pem");
        let nodes: Vec<RedisServer> = (0..3 * (1 + replicas))
            .map(|_| match tls {
                None => RedisServer::start_with_args(&cluster_args),
                Some(_) => {
                    let (cert, key) = (f("server.pem").unwrap(), f("server.key").unwrap());
                    let mut args = vec![
                        "--tls-cert-file",
                        &cert,
                        "--tls-key-file",
                        &key,
                        "--tls-ca-cert-file",
                        tls_ca.as_deref().unwrap(),
                        "--tls-auth-clients",
                        "no",
                        "--tls-cluster",
                        "yes",
                        "--tls-replication",
                        "yes",
                    ];
                    args.extend(&cluster_args);
                    RedisServer::start_tls(&args)
                }
            })
            .collect();
        let addrs: Vec<String> = nodes
            .iter()
            .map(|n| format!("127.0.0.1:{}", n.port()))
            .collect();
        let out = Command::new("redis-cli")
            .args(nodes[0].cli_tls())
            .arg("--cluster")
            .arg("create")
            .args(&addrs)
            .args(["--cluster-replicas", &replicas.to_string(), "--cluster-yes"])
            .output()
            .expect("redis-cli comes with redis-server");
        assert!(
            out.status.success(),
            "redis-cli --cluster create failed: {}",
            String::from_utf8_lossy(&out.stdout)
        );
        let deadline = Instant::now() + Duration::from_secs(30);
        for n in &nodes {
            while !n.cli(&["CLUSTER", "INFO"]).contains("cluster_state:ok") {
                assert!(
                    Instant::now() < deadline,
                    "the cluster did not reach cluster_state:ok within 30 s"
                );
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        RedisCluster { nodes, tls_ca }
    }

    /// `redis+cluster://` with every node as a seed, for a new store name.
    pub fn url(&self) -> String {
        let seeds: Vec<String> = self
            .nodes
            .iter()
            .map(|n| format!("127.0.0.1:{}", n.port()))
            .collect();
        match &self.tls_ca {
            None => format!(
                "redis+cluster://{}/?store={}",
                seeds.join(","),
                unique_store()
            ),
            Some(ca) => format!(
                "rediss+cluster://{}/?store={}&tls_ca={ca}",
                seeds.join(","),
                unique_store()
            ),
        }
    }

    /// The node that holds `slot` now, by its index in [`nodes`](Self::nodes).
    pub fn owner(&self, slot: u16) -> usize {
        self.serving(slot).expect("some node serves every slot")
    }

    /// The running node that says it holds `slot`, if one does.
    pub fn serving(&self, slot: u16) -> Option<usize> {
        self.nodes.iter().position(|n| {
            n.is_running()
                && n.cli(&["CLUSTER", "NODES"])
                    .lines()
                    .any(|l| l.contains("myself") && serves(l, slot))
        })
    }

    /// The node id of `nodes[i]`.
    pub fn node_id(&self, i: usize) -> String {
        self.nodes[i].cli(&["CLUSTER", "MYID"])
    }
}

impl RedisUrls for RedisCluster {
    fn url(&self) -> String {
        RedisCluster::url(self)
    }
}

/// Whether a `CLUSTER NODES` line lists `slot` among its ranges.
fn serves(line: &str, slot: u16) -> bool {
    line.split_whitespace().skip(8).any(|r| {
        let (a, b) = r.split_once('-').unwrap_or((r, r));
        matches!((a.parse::<u16>(), b.parse::<u16>()), (Ok(a), Ok(b)) if (a..=b).contains(&slot))
    })
}

/// `openssl` with `args` (split at spaces), in `dir`; panics with its output when it fails.
fn openssl(dir: &Path, args: &str) {
    let out = Command::new("openssl")
        .current_dir(dir)
        .args(args.split(' '))
        .output()
        .expect("openssl (scripts/test.sh installs it)");
    assert!(
        out.status.success(),
        "openssl {args}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// EC P-256 keys: quick to make.
const NEW_KEY: &str = "-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes";

/// A self-signed CA (`NAME.pem`, `NAME.key`) in `dir`.
pub fn make_ca(dir: &Path, name: &str) {
    openssl(
        dir,
        &format!("req -x509 {NEW_KEY} -days 2 -subj /CN={name} -keyout {name}.key -out {name}.pem"),
    );
}

/// A certificate `NAME.pem` (key `NAME.key`) for 127.0.0.1, signed by the CA `ca` in `dir`.
pub fn make_cert(dir: &Path, ca: &str, name: &str) {
    std::fs::write(dir.join("san.ext"), "subjectAltName=IP:127.0.0.1\n").unwrap();
    openssl(
        dir,
        &format!("req {NEW_KEY} -subj /CN=127.0.0.1 -keyout {name}.key -out {name}.csr"),
    );
    openssl(
        dir,
        &format!(
            "x509 -req -in {name}.csr -CA {ca}.pem -CAkey {ca}.key -CAcreateserial -days 2 \
             -extfile san.ext -out {name}.pem"
        ),
    );
}

impl RedisServer {
    /// A TLS server with the certificates [`make_ca`] (`ca`) and [`make_cert`] (`server`) made
    /// in `dir`; `auth_clients`: it asks for a client certificate signed by `ca`.
    pub fn start_tls_in(dir: &Path, auth_clients: bool) -> RedisServer {
        let f = |n: &str| dir.join(n).to_string_lossy().into_owned();
        let (cert, key, ca) = (f("server.pem"), f("server.key"), f("ca.pem"));
        RedisServer::start_tls(&[
            "--tls-cert-file",
            &cert,
            "--tls-key-file",
            &key,
            "--tls-ca-cert-file",
            &ca,
            "--tls-auth-clients",
            if auth_clients { "yes" } else { "no" },
        ])
    }
}
