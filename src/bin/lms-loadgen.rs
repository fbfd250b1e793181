//! `lms-loadgen`: load for `lms-longpolld` (or, for comparison, nginx + Nchan).
//!
//! It starts the daemon itself on a fresh temporary store (the `lms-longpolld` binary beside
//! this one) unless `--url` points at a running one, opens N long-poll clients (one kept-alive
//! HTTP/1.1 connection each) over C channels, publishes, and reports delivery latency
//! percentiles, loss and duplicates, throughput, and the server's RSS and CPU.
//!
//! Every event carries `{"seq": n, "t": µs}`: its sequence number (event `n` goes to channel
//! `1 + n % C`) and the wall-clock time it was published, so each client knows exactly which
//! events it must receive once, and how late each one came: both when the response arrived at
//! the client's socket (the kernel's receive timestamp) and when this program's one thread read
//! it, which also counts its own queue of 10,000 sockets. Publishers:
//!
//! * `http`: `POST /v1/events`, signed, one event per request (each acknowledged only once
//!   committed);
//! * `lib`: the library in this process (`EventStore::append_batch`);
//! * `c`: a separate process appending through the C ABI (`tests/c/publisher.c`, as a PHP
//!   worker would).
//!
//! Scenarios: `idle` (N idle long-polls: memory and CPU), `fanout` (one event to N waiters on
//! one channel, repeated), `steady` (R events/s over C channels), `saturate` (as fast as the
//! publisher can), `publish` (P concurrent HTTP publishers, no waiters). Runs are bounded by
//! `--duration`; all traffic stays on loopback.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use clap::{Parser, ValueEnum};
use lms_realtime::token::{self, TokenKey};
use lms_realtime::{EventStore, NewEvent, store};
use serde::Deserialize;
use tokio::io::AsyncWriteExt;

const SECRET: &str = "loadgen-secret-0123456789abcdef0123456789";

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Scenario {
    /// N idle long-polls: the server's memory and CPU while they wait.
    Idle,
    /// One event to N waiters on one channel, `--rounds` times: time until the last delivery.
    Fanout,
    /// `--rate` events/s over `--channels` channels for `--duration` s.
    Steady,
    /// Publish as fast as the publisher can for `--duration` s.
    Saturate,
    /// `--publishers` concurrent HTTP publishers, no waiters.
    Publish,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Publisher {
    /// Signed `POST /v1/events`, one event per request.
    Http,
    /// The library, in this process.
    Lib,
    /// A separate process through the C ABI (tests/c/publisher.c).
    C,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Target {
    /// lms-longpolld.
    Daemon,
    /// nginx with the Nchan module (long-poll subscribers at `/sub/<ch>`, publisher at `/pub/<ch>`).
    Nchan,
}

/// Load generator for lms-longpolld.
#[derive(Debug, Clone, Parser)]
#[command(name = "lms-loadgen", version, about)]
struct Args {
    /// What to run.
    #[arg(value_enum)]
    scenario: Scenario,
    /// Long-poll clients (one connection and one user each).
    #[arg(long, default_value_t = 1000)]
    clients: usize,
    /// Channels the clients are spread over (client i polls channel 1 + i % channels).
    #[arg(long, default_value_t = 100)]
    channels: usize,
    /// Events per second (steady).
    #[arg(long, default_value_t = 1000.0)]
    rate: f64,
    /// Seconds of publishing (steady, saturate, publish) or of holding (idle).
    #[arg(long, default_value_t = 10.0)]
    duration: f64,
    /// How events are published.
    #[arg(long, value_enum, default_value_t = Publisher::Http)]
    publish: Publisher,
    /// Concurrent publishers (HTTP connections or library threads).
    #[arg(long, default_value_t = 1)]
    publishers: usize,
    /// Events per library transaction (lib publisher).
    #[arg(long, default_value_t = 1)]
    batch: usize,
    /// The `timeout=` of each poll, in seconds: a poll that times out re-polls on the same
    /// kept-alive connection.
    #[arg(long, default_value_t = 30)]
    poll_timeout: u64,
    /// The `limit=` of each poll.
    #[arg(long, default_value_t = 200)]
    limit: usize,
    /// Rounds of the fanout scenario.
    #[arg(long, default_value_t = 5)]
    rounds: usize,
    /// What to load.
    #[arg(long, value_enum, default_value_t = Target::Daemon)]
    target: Target,
    /// A running server (host:port) instead of starting the daemon; for the daemon it must
    /// use `--token-key k1:<the loadgen secret>` and `--db` must name its store.
    #[arg(long)]
    url: Option<SocketAddr>,
    /// The running server's pids (for memory and CPU, summed), with --url: e.g. nginx's
    /// master and workers.
    #[arg(long, value_delimiter = ',')]
    pid: Vec<u32>,
    /// The store of a running daemon (with --url), or where to create one.
    #[arg(long)]
    db: Option<PathBuf>,
    /// The daemon binary to start (default: lms-longpolld beside this executable).
    #[arg(long)]
    daemon: Option<PathBuf>,
    /// `--workers` of the started daemon (default: the daemon's, 1).
    #[arg(long)]
    daemon_workers: Option<usize>,
    /// `--shards` of the started daemon (default: the daemon's, one per core).
    #[arg(long)]
    daemon_shards: Option<usize>,
    /// Print a JSON summary line at the end.
    #[arg(long)]
    json: bool,
    /// Threads of the load generator's own runtime. 1 (the default): one thread, which leaves
    /// the other core to the server; more: a work-stealing runtime with that many workers.
    #[arg(long, default_value_t = 1)]
    threads: usize,
}

fn now_us() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as i64)
}

// -- the server under test ----------------------------------------------------------------------

struct Server {
    addr: SocketAddr,
    pids: Vec<u32>,
    child: Option<Child>,
    db: PathBuf,
    /// A temporary directory of ours, removed on drop.
    dir: Option<PathBuf>,
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(c) = &mut self.child {
            // SAFETY: kill(2) on our own child.
            unsafe { libc::kill(c.id() as i32, libc::SIGTERM) };
            let _ = c.wait();
        }
        if let Some(d) = &self.dir {
            let _ = std::fs::remove_dir_all(d);
        }
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or(18_787)
}

async fn start_server(a: &Args) -> Server {
    if let Some(addr) = a.url {
        let db =
            a.db.clone()
                .unwrap_or_else(|| PathBuf::from("lms-realtime.db"));
        return Server {
            addr,
            pids: a.pid.clone(),
            child: None,
            db,
            dir: None,
        };
    }
    assert_eq!(
        a.target,
        Target::Daemon,
        "--target nchan needs --url and --pid"
    );
    let dir =
        std::env::temp_dir().join(format!("lmsrt-loadgen-{}-{}", std::process::id(), now_us()));
    std::fs::create_dir_all(&dir).expect("temporary directory");
    let db = a.db.clone().unwrap_or_else(|| dir.join("bench.db"));
    let exe = a.daemon.clone().unwrap_or_else(|| {
        std::env::current_exe()
            .expect("current exe")
            .with_file_name("lms-longpolld")
    });
    let port = free_port();
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let mut cmd = Command::new(&exe);
    cmd.env_clear()
        .env("LMSRT_LISTEN", addr.to_string())
        .env("LMSRT_DB", &db)
        .env("LMSRT_TOKEN_KEY", format!("k1:{SECRET}"))
        // The limiter stays on (its cost is part of the figures) with limits no load run hits:
        // every client shares the loopback address.
        .env("LMSRT_POLL_RATE", "3000000")
        .env("LMSRT_POLL_BURST", "1000000")
        .env("LMSRT_IP_RATE", "3000000")
        .env("LMSRT_IP_BURST", "1000000")
        .env("LMSRT_MAX_CONNECTIONS", "20000")
        .env("LMSRT_MAX_BATCH", "1000")
        .env("LMSRT_PURGE_INTERVAL", "0")
        .env("LMSRT_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit());
    if let Some(w) = a.daemon_workers {
        cmd.env("LMSRT_WORKERS", w.to_string());
    }
    if let Some(n) = a.daemon_shards {
        cmd.env("LMSRT_SHARDS", n.to_string());
    }
    let mut child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("starting {}: {e}", exe.display()));
    for _ in 0..400 {
        if let Ok(Some(st)) = child.try_wait() {
            panic!("the daemon exited at start: {st}");
        }
        if tokio::net::TcpStream::connect(addr).await.is_ok() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    Server {
        addr,
        pids: vec![child.id()],
        child: Some(child),
        db,
        dir: Some(dir),
    }
}

/// (RSS in KiB, CPU seconds) of processes, summed, from /proc; with the PSS in KiB (shared
/// pages divided among their sharers, so processes sharing memory are not double-counted).
fn procs_usage(pids: &[u32]) -> Option<(u64, f64, u64)> {
    if pids.is_empty() {
        return None;
    }
    let mut total = (0, 0.0, 0);
    for &pid in pids {
        let (rss, cpu) = proc_usage(pid)?;
        let pss = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup"))
            .ok()
            .and_then(|s| {
                s.lines()
                    .find(|l| l.starts_with("Pss:"))
                    .and_then(|l| l.split_whitespace().nth(1))
                    .and_then(|v| v.parse::<u64>().ok())
            })
            .unwrap_or(rss);
        total = (total.0 + rss, total.1 + cpu, total.2 + pss);
    }
    Some(total)
}

/// (RSS in KiB, CPU seconds) of a process, from /proc.
fn proc_usage(pid: u32) -> Option<(u64, f64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let rss = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()?;
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after = &stat[stat.rfind(')')? + 2..];
    let f: Vec<&str> = after.split_whitespace().collect();
    // SAFETY: sysconf has no preconditions.
    let tck = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    let cpu = (f.get(11)?.parse::<f64>().ok()? + f.get(12)?.parse::<f64>().ok()?) / tck;
    Some((rss, cpu))
}

// -- HTTP ---------------------------------------------------------------------------------------

/// One kept-alive HTTP/1.1 connection, spoken by hand: the request is written as prepared
/// bytes and the response read into a reused buffer. The load generator shares the machine's
/// cores with the server it measures, so it does as little as it can per request (hyper's
/// client costs two tasks and a channel hop per request); Nchan is measured with the same
/// client, so the comparison stays fair.
struct Conn {
    tcp: tokio::net::TcpStream,
    buf: BytesMut,
    /// When the kernel received the bytes of the latest read (µs since the epoch, from
    /// `SO_TIMESTAMPNS`), or 0 if it gave no timestamp.
    arrived_us: i64,
}

/// Asks the kernel to stamp every segment this socket receives with its arrival time.
///
/// One thread reads all 10,000 clients' responses, so the time it gets round to a socket is
/// partly its own queue: with a fan-out it is the generator, not the server, that decides
/// when the last response is "seen". The arrival stamp is when the response reached the
/// client's socket, which is what each of 10,000 browsers, on their own CPUs, would see.
fn stamp_arrivals(tcp: &tokio::net::TcpStream) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    let on: libc::c_int = 1;
    // SAFETY: a valid socket descriptor (owned by `tcp`) and a c_int option value of the
    // length given.
    let r = unsafe {
        libc::setsockopt(
            tcp.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_TIMESTAMPNS,
            (&on as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if r == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// One `recvmsg` into the spare capacity of `buf`: the bytes read and, if the kernel stamped
/// them, their arrival time in µs since the epoch.
fn recv_stamped(
    fd: std::os::fd::RawFd,
    buf: &mut BytesMut,
) -> std::io::Result<(usize, Option<i64>)> {
    let spare = buf.spare_capacity_mut();
    let mut iov = libc::iovec {
        iov_base: spare.as_mut_ptr().cast(),
        iov_len: spare.len(),
    };
    // Room for one SCM_TIMESTAMPNS (a timespec) with its header, aligned as cmsg needs.
    let mut control = [0u64; 8];
    // SAFETY: msghdr is plain data; all-zero is a valid empty header, filled in below.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.as_mut_ptr().cast();
    msg.msg_controllen = std::mem::size_of_val(&control) as _;
    // SAFETY: `msg` points at an iovec over `buf`'s spare capacity and at `control`, both
    // alive and writable for the call and of the lengths given.
    let n = unsafe { libc::recvmsg(fd, &mut msg, 0) };
    if n < 0 {
        return Err(std::io::Error::last_os_error());
    }
    let n = n as usize;
    // SAFETY: the kernel initialised the first `n` bytes of the spare capacity.
    unsafe { buf.set_len(buf.len() + n) };
    let mut stamp = None;
    // SAFETY: the CMSG_* walk stays within `msg_controllen`, which the kernel set to what it
    // wrote into `control`; a timestamp cmsg carries a timespec (read unaligned).
    unsafe {
        let mut c = libc::CMSG_FIRSTHDR(&msg);
        while !c.is_null() {
            if (*c).cmsg_level == libc::SOL_SOCKET && (*c).cmsg_type == libc::SCM_TIMESTAMPNS {
                let ts = std::ptr::read_unaligned(libc::CMSG_DATA(c).cast::<libc::timespec>());
                stamp = Some(ts.tv_sec as i64 * 1_000_000 + ts.tv_nsec as i64 / 1_000);
            }
            c = libc::CMSG_NXTHDR(&msg, c);
        }
    }
    Ok((n, stamp))
}

fn other<E: std::fmt::Display>(e: E) -> std::io::Error {
    std::io::Error::other(e.to_string())
}

impl Conn {
    async fn open(addr: SocketAddr) -> std::io::Result<Conn> {
        let tcp = tokio::net::TcpStream::connect(addr).await?;
        let _ = tcp.set_nodelay(true);
        stamp_arrivals(&tcp)?;
        Ok(Conn {
            tcp,
            buf: BytesMut::with_capacity(4096),
            arrived_us: 0,
        })
    }

    /// Writes one request (complete, as bytes) and reads its response.
    async fn send(&mut self, req: &[u8]) -> std::io::Result<(u16, HeaderPair, Bytes)> {
        self.tcp.write_all(req).await?;
        loop {
            if let Some(r) = self.parse()? {
                return Ok(r);
            }
            if self.buf.capacity() - self.buf.len() < 2048 {
                // Asking for no more than the first allocation lets `BytesMut` move what is
                // left to the front of that allocation (the responses read from it are gone)
                // instead of allocating a larger one: with 8 KiB here, every client allocated
                // and faulted in a new buffer in the same fan-out round (the fourth), and the
                // generator read that round's responses tens of milliseconds after they arrived.
                self.buf.reserve(2048);
            }
            if self.read_stamped().await? == 0 {
                return Err(std::io::ErrorKind::UnexpectedEof.into());
            }
        }
    }

    /// Reads what the socket has (at least one byte, or 0 at its end), noting its arrival time.
    async fn read_stamped(&mut self) -> std::io::Result<usize> {
        use std::os::fd::AsRawFd;
        let fd = self.tcp.as_raw_fd();
        loop {
            self.tcp.readable().await?;
            let buf = &mut self.buf;
            match self
                .tcp
                .try_io(tokio::io::Interest::READABLE, || recv_stamped(fd, buf))
            {
                Ok((n, stamp)) => {
                    if let Some(t) = stamp {
                        self.arrived_us = t;
                    }
                    return Ok(n);
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
                Err(e) => return Err(e),
            }
        }
    }

    /// A complete response at the start of the buffer, taken out of it.
    fn parse(&mut self) -> std::io::Result<Option<(u16, HeaderPair, Bytes)>> {
        let mut headers = [httparse::EMPTY_HEADER; 32];
        let mut resp = httparse::Response::new(&mut headers);
        let head = match resp.parse(&self.buf).map_err(other)? {
            httparse::Status::Complete(n) => n,
            httparse::Status::Partial => return Ok(None),
        };
        let status = resp.code.unwrap_or(0);
        let (mut len, mut chunked) = (0usize, false);
        let mut h = HeaderPair::default();
        for x in resp.headers.iter() {
            let name = x.name.as_bytes();
            if name.eq_ignore_ascii_case(b"content-length") {
                len = std::str::from_utf8(x.value)
                    .ok()
                    .and_then(|v| v.trim().parse().ok())
                    .ok_or_else(|| other("bad content-length"))?;
            } else if name.eq_ignore_ascii_case(b"transfer-encoding") {
                chunked = x.value.eq_ignore_ascii_case(b"chunked");
            } else if name.eq_ignore_ascii_case(b"last-modified") {
                h.last_modified = Some(String::from_utf8_lossy(x.value).into_owned());
            } else if name.eq_ignore_ascii_case(b"etag") {
                h.etag = Some(String::from_utf8_lossy(x.value).into_owned());
            }
        }
        if chunked {
            // Chunks: `<hex size>[;ext]\r\n<data>\r\n`, ending with a zero-size chunk and
            // (no trailers expected) `\r\n`.
            let mut body = Vec::new();
            let mut at = head;
            loop {
                let rest = &self.buf[at..];
                let Some(eol) = rest.windows(2).position(|w| w == b"\r\n") else {
                    return Ok(None);
                };
                let size_str = std::str::from_utf8(&rest[..eol]).map_err(other)?;
                let size =
                    usize::from_str_radix(size_str.split(';').next().unwrap_or("").trim(), 16)
                        .map_err(other)?;
                let data = at + eol + 2;
                if self.buf.len() < data + size + 2 {
                    return Ok(None);
                }
                body.extend_from_slice(&self.buf[data..data + size]);
                at = data + size + 2;
                if size == 0 {
                    break;
                }
            }
            let _ = self.buf.split_to(at);
            return Ok(Some((status, h, Bytes::from(body))));
        }
        if self.buf.len() < head + len {
            return Ok(None);
        }
        let mut msg = self.buf.split_to(head + len);
        let body = msg.split_off(head).freeze();
        Ok(Some((status, h, body)))
    }
}

/// A request's bytes: `method path`, a Host header, `headers`, and `body` with its length.
fn request(method: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) -> Vec<u8> {
    use std::io::Write as _;
    let mut v = Vec::with_capacity(160 + path.len() + body.len());
    let _ = write!(v, "{method} {path} HTTP/1.1\r\nhost: localhost\r\n");
    for (k, val) in headers {
        let _ = write!(v, "{k}: {val}\r\n");
    }
    if method != "GET" || !body.is_empty() {
        let _ = write!(v, "content-length: {}\r\n", body.len());
    }
    v.extend_from_slice(b"\r\n");
    v.extend_from_slice(body);
    v
}

#[derive(Default)]
struct HeaderPair {
    last_modified: Option<String>,
    etag: Option<String>,
}

#[derive(Deserialize)]
struct PollResp<'a> {
    events: Vec<Ev>,
    #[serde(borrow)]
    cursor: &'a str,
}

#[derive(Deserialize)]
struct Ev {
    data: Payload,
}

#[derive(Deserialize)]
struct Payload {
    seq: u64,
    t: i64,
}

// -- clients ------------------------------------------------------------------------------------

/// What one client saw.
#[derive(Default)]
struct Seen {
    /// Per seq of its channel (seq / channels): how many times it arrived.
    counts: Vec<u8>,
    latencies_us: Vec<u32>,
    /// The same deliveries measured to their arrival at the client's socket.
    arrival_latencies_us: Vec<u32>,
    polls: u64,
    errors: u64,
}

struct Shared {
    stop: AtomicBool,
    stop_rx: tokio::sync::watch::Receiver<bool>,
    registered: AtomicUsize,
    delivered: AtomicU64,
    /// Per fanout round: the time of the latest receipt (µs).
    last_receipt: AtomicU64,
    /// Per fanout round: the latest arrival at a client's socket (µs).
    last_arrival: AtomicU64,
}

async fn client(
    i: usize,
    a: Arc<Args>,
    addr: SocketAddr,
    start_cursor: String,
    shared: Arc<Shared>,
) -> Seen {
    let channel = 1 + (i % a.channels) as i64;
    let mut seen = Seen::default();
    let key = TokenKey::new("k1", SECRET.as_bytes().to_vec()).unwrap();
    let exp = now_us() / 1_000_000 + 3600;
    let tok = token::issue(&key, 10_000 + i as i64, &[channel], exp, "loadgen").unwrap();
    let auth = format!("Bearer {tok}");
    let mut conn = loop {
        match Conn::open(addr).await {
            Ok(c) => break c,
            Err(_) if !shared.stop.load(Ordering::Relaxed) => {
                tokio::time::sleep(Duration::from_millis(50)).await
            }
            Err(_) => return seen,
        }
    };
    let mut cursor = start_cursor;
    let mut nchan = HeaderPair::default();
    let mut first = true;
    // The daemon's poll, around the cursor: written into one reused buffer per poll.
    let head = format!("GET /v1/poll?channels={channel}&cursor=");
    let tail = format!(
        "&timeout={}&limit={} HTTP/1.1\r\nhost: localhost\r\nauthorization: {auth}\r\n\r\n",
        a.poll_timeout, a.limit
    );
    let mut req: Vec<u8> = Vec::with_capacity(head.len() + tail.len() + 64);
    while !shared.stop.load(Ordering::Relaxed) {
        req.clear();
        match a.target {
            Target::Daemon => {
                req.extend_from_slice(head.as_bytes());
                req.extend_from_slice(cursor.as_bytes());
                req.extend_from_slice(tail.as_bytes());
            }
            Target::Nchan => {
                let mut h: Vec<(&str, &str)> = Vec::new();
                if let Some(lm) = &nchan.last_modified {
                    h.push(("if-modified-since", lm));
                }
                if let Some(et) = &nchan.etag {
                    h.push(("if-none-match", et));
                }
                req = request("GET", &format!("/sub/{channel}"), &h, b"");
            }
        }
        if first {
            shared.registered.fetch_add(1, Ordering::Relaxed);
            first = false;
        }
        let mut stop_rx = shared.stop_rx.clone();
        let r = tokio::select! {
            r = conn.send(&req) => r,
            _ = stop_rx.wait_for(|v| *v) => break,
        };
        seen.polls += 1;
        let (status, headers, body) = match r {
            Ok(x) => x,
            Err(e) => {
                seen.errors += 1;
                if seen.errors <= 1 {
                    eprintln!("client {i}: {e}");
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
                match Conn::open(addr).await {
                    Ok(c) => conn = c,
                    Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
                }
                continue;
            }
        };
        let recv = now_us();
        let arrived = if conn.arrived_us > 0 {
            conn.arrived_us.min(recv)
        } else {
            recv
        };
        let mut events: Vec<Payload> = Vec::new();
        match a.target {
            Target::Daemon => {
                if status != 200 {
                    seen.errors += 1;
                    if seen.errors <= 1 {
                        eprintln!(
                            "client {i}: HTTP {status}: {}",
                            String::from_utf8_lossy(&body)
                        );
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
                match serde_json::from_slice::<PollResp>(&body) {
                    Ok(p) => {
                        cursor.clear();
                        cursor.push_str(p.cursor);
                        events = p.events.into_iter().map(|e| e.data).collect();
                    }
                    Err(_) => seen.errors += 1,
                }
            }
            Target::Nchan => {
                // 200 with one message per response; 304 on a long-poll timeout.
                if status == 200 {
                    if let Ok(p) = serde_json::from_slice::<Payload>(&body) {
                        events.push(p);
                    } else {
                        seen.errors += 1;
                    }
                    nchan = headers;
                } else if status != 304 && status != 408 {
                    seen.errors += 1;
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
        for e in events {
            let slot = (e.seq / a.channels as u64) as usize;
            if seen.counts.len() <= slot {
                seen.counts.resize(slot + 1, 0);
            }
            seen.counts[slot] = seen.counts[slot].saturating_add(1);
            let lat = (recv - e.t).max(0);
            seen.latencies_us.push(lat.min(u32::MAX as i64) as u32);
            let lat = (arrived - e.t).max(0);
            seen.arrival_latencies_us
                .push(lat.min(u32::MAX as i64) as u32);
            shared.delivered.fetch_add(1, Ordering::Relaxed);
            shared
                .last_receipt
                .fetch_max(recv as u64, Ordering::Relaxed);
            shared
                .last_arrival
                .fetch_max(arrived as u64, Ordering::Relaxed);
        }
    }
    seen
}

// -- publishers ---------------------------------------------------------------------------------

/// Publishes events `seq` from `next` (shared) until `stop` or `limit`, at `rate` per second
/// across all publishers (0: as fast as possible). Returns (acknowledged, failed, latencies µs).
async fn http_publisher(
    a: Arc<Args>,
    addr: SocketAddr,
    next: Arc<AtomicU64>,
    limit: u64,
    rate: f64,
    started: Instant,
    stop: Arc<AtomicBool>,
) -> (u64, u64, Vec<u32>, Vec<u64>) {
    let key = TokenKey::new("k1", SECRET.as_bytes().to_vec()).unwrap();
    let mut conn = Conn::open(addr).await.expect("publisher connection");
    let (mut ok, mut failed) = (0, 0);
    let mut lat = Vec::new();
    let mut acked = Vec::new();
    loop {
        if stop.load(Ordering::Relaxed) {
            break;
        }
        let seq = next.fetch_add(1, Ordering::Relaxed);
        if seq >= limit {
            break;
        }
        if rate > 0.0 {
            let due = started + Duration::from_secs_f64(seq as f64 / rate);
            tokio::time::sleep_until(due.into()).await;
        }
        let req = match a.target {
            Target::Daemon => {
                let body = format!(
                    r#"{{"event_type":"message_create","channel_id":{},"message_id":{},"data":{{"seq":{seq},"t":{}}}}}"#,
                    1 + seq % a.channels as u64,
                    seq + 1,
                    now_us()
                );
                let ts = now_us() / 1_000_000;
                let sig = token::sign_publish(&key, ts, body.as_bytes());
                request(
                    "POST",
                    "/v1/events",
                    &[
                        ("content-type", "application/json"),
                        ("x-lms-timestamp", &ts.to_string()),
                        ("x-lms-signature", &sig),
                    ],
                    body.as_bytes(),
                )
            }
            Target::Nchan => {
                let ch = 1 + seq % a.channels as u64;
                let body = format!(r#"{{"seq":{seq},"t":{}}}"#, now_us());
                request("POST", &format!("/pub/{ch}"), &[], body.as_bytes())
            }
        };
        let t0 = Instant::now();
        match conn.send(&req).await {
            Ok((s, _, _)) if (200..300).contains(&s) => {
                ok += 1;
                acked.push(seq);
                lat.push(t0.elapsed().as_micros().min(u32::MAX as u128) as u32);
            }
            Ok(_) => failed += 1,
            Err(_) => {
                failed += 1;
                if let Ok(c) = Conn::open(addr).await {
                    conn = c;
                }
            }
        }
    }
    (ok, failed, lat, acked)
}

/// The library publisher: appends `count` events (in transactions of `batch`) at `rate`.
#[allow(clippy::too_many_arguments)]
fn lib_publisher(
    store: Arc<EventStore>,
    next: Arc<AtomicU64>,
    limit: u64,
    rate: f64,
    batch: usize,
    channels: usize,
    started: Instant,
    stop: Arc<AtomicBool>,
) -> (u64, Vec<u64>) {
    let mut acked = Vec::new();
    while !stop.load(Ordering::Relaxed) {
        let first = next.fetch_add(batch as u64, Ordering::Relaxed);
        if first >= limit {
            break;
        }
        let last = (first + batch as u64).min(limit);
        if rate > 0.0 {
            let due = started + Duration::from_secs_f64(first as f64 / rate);
            let now = Instant::now();
            if due > now {
                std::thread::sleep(due - now);
            }
        }
        let events: Vec<NewEvent> = (first..last)
            .map(|seq| {
                NewEvent::new("message_create", 1 + (seq % channels as u64) as i64)
                    .message_id(seq as i64 + 1)
                    .data(format!(r#"{{"seq":{seq},"t":{}}}"#, now_us()))
            })
            .collect();
        if store.append_batch(events).is_ok() {
            acked.extend(first..last);
        }
    }
    (acked.len() as u64, acked)
}

/// Compiles tests/c/publisher.c against the library beside this executable.
fn c_publisher() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let lib = exe.parent().unwrap().to_path_buf();
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let out = std::env::temp_dir().join(format!("lmsrt-publisher-{}", std::process::id()));
    let st = Command::new(std::env::var("CC").unwrap_or_else(|_| "cc".into()))
        .args(["-std=c11", "-D_POSIX_C_SOURCE=200809L", "-O2"])
        .arg("-I")
        .arg(root.join("include"))
        .arg(root.join("tests/c/publisher.c"))
        .arg("-o")
        .arg(&out)
        .arg(format!("-L{}", lib.display()))
        .arg(format!("-Wl,-rpath,{}", lib.display()))
        .args(["-llms_realtime", "-lpthread"])
        .status()
        .expect("running cc");
    assert!(
        st.success(),
        "compiling tests/c/publisher.c failed (build the cdylib: cargo build --release --lib)"
    );
    out
}

// -- reporting ----------------------------------------------------------------------------------

/// The percentiles the generator reports, in ms, of sorted latencies in µs.
const REPORTED: [(&str, f64); 5] = [
    ("p50", 0.5),
    ("p90", 0.9),
    ("p99", 0.99),
    ("p99.9", 0.999),
    ("max", 1.0),
];

fn pcts_text(sorted: &[u32]) -> String {
    REPORTED
        .iter()
        .map(|(name, p)| format!("{name} {:.2} ms", pct(sorted, *p)))
        .collect::<Vec<_>>()
        .join(", ")
}

fn pcts_json(sorted: &[u32]) -> serde_json::Value {
    REPORTED
        .iter()
        .map(|(name, p)| (name.replace('.', ""), serde_json::json!(pct(sorted, *p))))
        .collect::<serde_json::Map<_, _>>()
        .into()
}

fn pct(sorted: &[u32], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = ((p * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1] as f64 / 1000.0
}

struct Usage {
    pids: Vec<u32>,
    cpu0: f64,
    t0: Instant,
}

impl Usage {
    fn start(pids: &[u32]) -> Usage {
        let cpu0 = procs_usage(pids).map_or(0.0, |u| u.1);
        Usage {
            pids: pids.to_vec(),
            cpu0,
            t0: Instant::now(),
        }
    }

    /// (RSS MiB now, PSS MiB now, CPU % of one core since start).
    fn now(&self) -> (f64, f64, f64) {
        let Some((rss, cpu, pss)) = procs_usage(&self.pids) else {
            return (0.0, 0.0, 0.0);
        };
        let secs = self.t0.elapsed().as_secs_f64();
        (
            rss as f64 / 1024.0,
            pss as f64 / 1024.0,
            (cpu - self.cpu0) / secs * 100.0,
        )
    }
}

async fn wait_registered(server: &Server, shared: &Shared, n: usize, target: Target) {
    let deadline = Instant::now() + Duration::from_secs(120);
    while shared.registered.load(Ordering::Relaxed) < n && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    if target == Target::Daemon {
        // The daemon reports its waiters: wait until every poll is parked.
        let mut c = Conn::open(server.addr).await.expect("health connection");
        while Instant::now() < deadline {
            let req = request("GET", "/healthz", &[], b"");
            if let Ok((_, _, body)) = c.send(&req).await {
                let v: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
                if v["waiters"].as_u64().unwrap_or(0) >= n as u64 {
                    return;
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        eprintln!("warning: not every client was waiting after 120 s");
    } else {
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
}

fn main() {
    let a = Args::parse();
    let (soft, hard) = lms_realtime::daemon::raise_nofile_limit();
    if (a.clients as u64) + 64 > soft {
        eprintln!(
            "warning: {} clients need more descriptors than the open-file limit ({soft}, hard {hard})",
            a.clients
        );
    }
    let mut rt = if a.threads <= 1 {
        tokio::runtime::Builder::new_current_thread()
    } else {
        let mut b = tokio::runtime::Builder::new_multi_thread();
        b.worker_threads(a.threads);
        b
    };
    let rt = rt.enable_all().build().expect("runtime");
    rt.block_on(run(Arc::new(a)));
}

async fn run(a: Arc<Args>) {
    let server = start_server(&a).await;
    let store = if a.target == Target::Daemon {
        Some(Arc::new(
            EventStore::open(&server.db, store::Config::default()).expect("opening the store"),
        ))
    } else {
        None
    };
    let start_cursor = store
        .as_ref()
        .map(|s| s.head_cursor().unwrap().to_string())
        .unwrap_or_default();
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let shared = Arc::new(Shared {
        stop: AtomicBool::new(false),
        stop_rx,
        registered: AtomicUsize::new(0),
        delivered: AtomicU64::new(0),
        last_receipt: AtomicU64::new(0),
        last_arrival: AtomicU64::new(0),
    });
    let n_clients = if a.scenario == Scenario::Publish {
        0
    } else {
        a.clients
    };
    let channels = if a.scenario == Scenario::Fanout {
        1
    } else {
        a.channels
    };
    let a = Arc::new(Args {
        channels,
        ..(*a).clone()
    });
    println!(
        "scenario {:?}: {} clients over {} channels, target {:?} at {}, publisher {:?}, poll timeout {} s",
        a.scenario, n_clients, a.channels, a.target, server.addr, a.publish, a.poll_timeout
    );
    if let Some((rss, _, _)) = procs_usage(&server.pids) {
        println!(
            "server RSS before the clients connect: {:.1} MiB",
            rss as f64 / 1024.0
        );
    }
    let mut clients = Vec::new();
    for i in 0..n_clients {
        clients.push(tokio::spawn(client(
            i,
            a.clone(),
            server.addr,
            start_cursor.clone(),
            shared.clone(),
        )));
        if i % 500 == 499 {
            tokio::task::yield_now().await;
        }
    }
    let t_connect = Instant::now();
    if n_clients > 0 {
        wait_registered(&server, &shared, n_clients, a.target).await;
        println!(
            "{} clients waiting after {:.1} s",
            n_clients,
            t_connect.elapsed().as_secs_f64()
        );
    }
    let usage = Usage::start(&server.pids);
    let mut summary = serde_json::json!({
        "scenario": format!("{:?}", a.scenario).to_lowercase(),
        "target": format!("{:?}", a.target).to_lowercase(),
        "clients": n_clients,
        "channels": a.channels,
        "publisher": format!("{:?}", a.publish).to_lowercase(),
        "poll_timeout_s": a.poll_timeout,
    });

    // Publishing, per scenario. `published` lists every acknowledged seq.
    let mut published: Vec<u64> = Vec::new();
    let mut publish_secs = 0.0;
    let publish_started_us = now_us();
    match a.scenario {
        Scenario::Idle => {
            tokio::time::sleep(Duration::from_secs_f64(a.duration)).await;
        }
        Scenario::Fanout => {
            let mut lasts = Vec::new();
            let mut arrivals = Vec::new();
            let mut conn = Conn::open(server.addr).await.expect("publisher");
            let key = TokenKey::new("k1", SECRET.as_bytes().to_vec()).unwrap();
            for round in 0..a.rounds as u64 {
                shared.last_receipt.store(0, Ordering::Relaxed);
                shared.last_arrival.store(0, Ordering::Relaxed);
                let before = shared.delivered.load(Ordering::Relaxed);
                let cpu_server0 = procs_usage(&server.pids).map_or(0.0, |u| u.1);
                let cpu_self0 = proc_usage(std::process::id()).map_or(0.0, |u| u.1);
                let t = now_us();
                let req = match a.target {
                    Target::Daemon => {
                        let body = serde_json::to_vec(&serde_json::json!({
                            "event_type": "message_create", "channel_id": 1,
                            "data": {"seq": round, "t": t}}))
                        .unwrap();
                        let ts = t / 1_000_000;
                        request(
                            "POST",
                            "/v1/events",
                            &[
                                ("x-lms-timestamp", &ts.to_string()),
                                ("x-lms-signature", &token::sign_publish(&key, ts, &body)),
                            ],
                            &body,
                        )
                    }
                    Target::Nchan => request(
                        "POST",
                        "/pub/1",
                        &[],
                        serde_json::json!({"seq": round, "t": t})
                            .to_string()
                            .as_bytes(),
                    ),
                };
                let r = conn.send(&req).await;
                assert!(
                    r.is_ok_and(|(s, _, _)| (200..300).contains(&s)),
                    "fanout publish failed"
                );
                published.push(round);
                let deadline = Instant::now() + Duration::from_secs(10);
                while shared.delivered.load(Ordering::Relaxed) < before + n_clients as u64
                    && Instant::now() < deadline
                {
                    tokio::time::sleep(Duration::from_millis(2)).await;
                }
                let got = shared.delivered.load(Ordering::Relaxed) - before;
                let last_ms =
                    (shared.last_receipt.load(Ordering::Relaxed) as i64 - t) as f64 / 1000.0;
                let arrival_ms =
                    (shared.last_arrival.load(Ordering::Relaxed) as i64 - t) as f64 / 1000.0;
                let cpu_server = procs_usage(&server.pids).map_or(0.0, |u| u.1) - cpu_server0;
                let cpu_self = proc_usage(std::process::id()).map_or(0.0, |u| u.1) - cpu_self0;
                println!(
                    "round {round}: {got}/{n_clients} delivered, the last arrived after \
                     {arrival_ms:.1} ms and was read after {last_ms:.1} ms \
                     (CPU meanwhile: server {:.0} ms, loadgen {:.0} ms)",
                    cpu_server * 1000.0,
                    cpu_self * 1000.0
                );
                lasts.push(last_ms);
                arrivals.push(arrival_ms);
                // Let every client re-poll before the next round.
                wait_registered(&server, &shared, n_clients, a.target).await;
                tokio::time::sleep(Duration::from_millis(300)).await;
            }
            let median = |v: &[f64]| {
                let mut sorted = v.to_vec();
                sorted.sort_by(f64::total_cmp);
                sorted[sorted.len() / 2]
            };
            let tenths = |v: &[f64]| {
                v.iter()
                    .map(|x| (x * 10.0).round() / 10.0)
                    .collect::<Vec<_>>()
            };
            println!(
                "fanout: last arrival per round {:?} ms; median {:.1} ms",
                tenths(&arrivals),
                median(&arrivals)
            );
            println!(
                "fanout: last read by the client per round {:?} ms; median {:.1} ms",
                tenths(&lasts),
                median(&lasts)
            );
            summary["fanout_last_arrival_ms"] = serde_json::json!(arrivals);
            summary["fanout_last_arrival_median_ms"] = serde_json::json!(median(&arrivals));
            summary["fanout_last_ms"] = serde_json::json!(lasts);
            summary["fanout_last_median_ms"] = serde_json::json!(median(&lasts));
        }
        Scenario::Steady | Scenario::Saturate | Scenario::Publish => {
            let rate = if a.scenario == Scenario::Steady {
                a.rate
            } else {
                0.0
            };
            let limit = if a.scenario == Scenario::Steady {
                (a.rate * a.duration) as u64
            } else {
                u64::MAX
            };
            let stop = Arc::new(AtomicBool::new(false));
            let next = Arc::new(AtomicU64::new(0));
            let started = Instant::now();
            let timer = {
                let stop = stop.clone();
                let d = a.duration;
                tokio::spawn(async move {
                    tokio::time::sleep(Duration::from_secs_f64(d)).await;
                    stop.store(true, Ordering::Relaxed);
                })
            };
            let mut pub_lat: Vec<u32> = Vec::new();
            let mut failed = 0;
            match a.publish {
                Publisher::Http => {
                    let mut tasks = Vec::new();
                    for _ in 0..a.publishers.max(1) {
                        tasks.push(tokio::spawn(http_publisher(
                            a.clone(),
                            server.addr,
                            next.clone(),
                            limit,
                            rate,
                            started,
                            stop.clone(),
                        )));
                    }
                    for t in tasks {
                        let (_, f, lat, acked) = t.await.unwrap();
                        failed += f;
                        pub_lat.extend(lat);
                        published.extend(acked);
                    }
                }
                Publisher::Lib => {
                    let store = store.clone().expect("the lib publisher needs the store");
                    let mut threads = Vec::new();
                    for _ in 0..a.publishers.max(1) {
                        let (store, next, stop) = (store.clone(), next.clone(), stop.clone());
                        let (batch, ch) = (a.batch.max(1), a.channels);
                        threads.push(std::thread::spawn(move || {
                            lib_publisher(store, next, limit, rate, batch, ch, started, stop)
                        }));
                    }
                    for t in threads {
                        let (_, acked) = tokio::task::spawn_blocking(move || t.join().unwrap())
                            .await
                            .unwrap();
                        published.extend(acked);
                    }
                }
                Publisher::C => {
                    let exe = c_publisher();
                    let count = if limit == u64::MAX {
                        (50_000.0 * a.duration) as u64
                    } else {
                        limit
                    };
                    let mut cmd = Command::new(&exe);
                    cmd.arg(&server.db)
                        .arg(a.channels.to_string())
                        .arg(count.to_string())
                        .arg(rate.to_string());
                    let out = tokio::task::spawn_blocking(move || cmd.output())
                        .await
                        .unwrap()
                        .expect("running the C publisher");
                    assert!(
                        out.status.success(),
                        "C publisher: {}",
                        String::from_utf8_lossy(&out.stderr)
                    );
                    published.extend(0..count);
                    let _ = std::fs::remove_file(&exe);
                }
            }
            timer.abort();
            publish_secs = started.elapsed().as_secs_f64();
            let n = published.len();
            println!(
                "published {n} events in {publish_secs:.2} s ({:.0}/s), {failed} failed",
                n as f64 / publish_secs
            );
            summary["published"] = serde_json::json!(n);
            summary["publish_failed"] = serde_json::json!(failed);
            summary["publish_per_s"] = serde_json::json!(n as f64 / publish_secs);
            if !pub_lat.is_empty() {
                pub_lat.sort_unstable();
                println!(
                    "publish request latency: p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
                    pct(&pub_lat, 0.5),
                    pct(&pub_lat, 0.99),
                    pct(&pub_lat, 1.0)
                );
                summary["publish_p50_ms"] = serde_json::json!(pct(&pub_lat, 0.5));
                summary["publish_p99_ms"] = serde_json::json!(pct(&pub_lat, 0.99));
            }
        }
    }
    let (rss_mb, pss_mb, cpu_pct) = usage.now();
    // Drain: give the last deliveries time to arrive.
    if n_clients > 0 && a.scenario != Scenario::Idle {
        let want: u64 = published.len() as u64 * n_clients as u64 / a.channels as u64;
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut last = shared.delivered.load(Ordering::Relaxed);
        let mut quiet = Instant::now();
        while Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(200)).await;
            let now = shared.delivered.load(Ordering::Relaxed);
            if now >= want && now == last && quiet.elapsed() > Duration::from_millis(500) {
                break;
            }
            if now != last {
                quiet = Instant::now();
                last = now;
            }
        }
    }
    shared.stop.store(true, Ordering::Relaxed);
    let _ = stop_tx.send(true);
    let mut seen_all = Vec::new();
    for c in clients {
        if let Ok(s) = c.await {
            seen_all.push(s);
        }
    }
    // Loss and duplicates: client i must have received every acknowledged event of its
    // channel exactly once.
    let mut by_channel: Vec<Vec<u64>> = vec![Vec::new(); a.channels];
    for &seq in &published {
        by_channel[(seq % a.channels as u64) as usize].push(seq);
    }
    let (mut expected, mut lost, mut dups, mut polls, mut errors) = (0u64, 0u64, 0u64, 0u64, 0u64);
    let mut lat: Vec<u32> = Vec::new();
    let mut arrival_lat: Vec<u32> = Vec::new();
    for (i, s) in seen_all.iter().enumerate() {
        polls += s.polls;
        errors += s.errors;
        for &seq in &by_channel[i % a.channels] {
            expected += 1;
            match s
                .counts
                .get((seq / a.channels as u64) as usize)
                .copied()
                .unwrap_or(0)
            {
                0 => lost += 1,
                1 => {}
                n => dups += u64::from(n - 1),
            }
        }
        lat.extend_from_slice(&s.latencies_us);
        arrival_lat.extend_from_slice(&s.arrival_latencies_us);
    }
    lat.sort_unstable();
    arrival_lat.sort_unstable();
    let delivered = lat.len() as u64;
    println!("clients: {polls} polls, {errors} errors");
    if n_clients > 0 && a.scenario != Scenario::Idle {
        println!(
            "delivery latency: {} ({delivered} deliveries)",
            pcts_text(&lat)
        );
        println!(
            "delivery latency to the client's socket: {}",
            pcts_text(&arrival_lat)
        );
        summary["latency_ms"] = pcts_json(&lat);
        summary["arrival_latency_ms"] = pcts_json(&arrival_lat);
        println!(
            "loss {lost} of {expected} ({:.3}%), duplicates {dups}; {polls} polls, {errors} errors",
            if expected > 0 {
                lost as f64 * 100.0 / expected as f64
            } else {
                0.0
            }
        );
        if publish_secs > 0.0 {
            // From the first publish to the last delivery (deliveries may trail the publisher).
            let last = shared.last_receipt.load(Ordering::Relaxed) as i64;
            let span = ((last - publish_started_us) as f64 / 1e6).max(publish_secs);
            println!(
                "deliveries/s: {:.0} ({delivered} from the first publish to the last delivery, {span:.2} s)",
                delivered as f64 / span
            );
            summary["deliveries_per_s"] = serde_json::json!(delivered as f64 / span);
        }
        summary["expected"] = serde_json::json!(expected);
        summary["lost"] = serde_json::json!(lost);
        summary["duplicates"] = serde_json::json!(dups);
        summary["polls"] = serde_json::json!(polls);
        summary["errors"] = serde_json::json!(errors);
    }
    summary["server_rss_mb"] = serde_json::json!(rss_mb);
    summary["server_pss_mb"] = serde_json::json!(pss_mb);
    summary["server_cpu_pct"] = serde_json::json!(cpu_pct);
    println!(
        "server: RSS {rss_mb:.1} MiB (PSS {pss_mb:.1} MiB), CPU {cpu_pct:.0}% of one core during the run"
    );
    if let Some((rss, _)) = proc_usage(std::process::id()) {
        println!("loadgen: RSS {:.1} MiB", rss as f64 / 1024.0);
    }
    if a.json {
        println!("{summary}");
    }
}
