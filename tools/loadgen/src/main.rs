//! `lms-loadgen`: load for `lms-longpolld` (or, for comparison, nginx + Nchan).
//!
//! It starts the daemon itself on a fresh temporary store (the `lms-longpolld` binary beside
//! this one) unless `--url` points at a running one, opens N clients (one kept-alive HTTP/1.1
//! connection each: long-polls, or with `--transport stream` server-sent event streams) over C
//! channels, publishes, and reports delivery latency percentiles, loss, duplicates and late
//! events, throughput, and the server's RSS and CPU.
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
//!
//! Modules: `http` (the hand-written HTTP/1.1 connection), `chunked` (its streamed chunked
//! bodies), `sse` (the event-stream parser), `server` (the server under test: started,
//! measured), `client` (the long-poll clients), `streams` (the stream clients), `publishers`,
//! `scenarios` (one run, from connecting the clients to the report) and `report`
//! (percentiles, loss, duplicates, late events).

mod chunked;
mod client;
mod http;
mod publishers;
mod report;
mod scenarios;
mod server;
mod sse;
mod streams;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use clap::{Parser, ValueEnum};
use lms_realtime::token::TokenKey;

/// The token key's secret, shared with the daemon the generator starts (`--token-key`).
pub(crate) const SECRET: &str = "loadgen-secret-0123456789abcdef0123456789";

/// The key (id `k1`, [`SECRET`]) that signs the clients' tokens and the publish requests.
pub(crate) fn token_key() -> TokenKey {
    TokenKey::new("k1", SECRET.as_bytes().to_vec()).unwrap()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum Scenario {
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
pub(crate) enum Publisher {
    /// Signed `POST /v1/events`, one event per request.
    Http,
    /// The library, in this process.
    Lib,
    /// A separate process through the C ABI (tests/c/publisher.c).
    C,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum Transport {
    /// Long-polls: `GET /v1/poll` (daemon), `GET /sub/<ch>` (Nchan's long-poll).
    Poll,
    /// Server-sent events, resumed with `Last-Event-ID` whenever the server ends one:
    /// `GET /v1/stream` (daemon), `GET /sub/<ch>` with `Accept: text/event-stream` (Nchan's
    /// EventSource).
    Stream,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum Target {
    /// lms-longpolld.
    Daemon,
    /// nginx with the Nchan module (long-poll subscribers at `/sub/<ch>`, publisher at `/pub/<ch>`).
    Nchan,
}

/// Load generator for lms-longpolld.
#[derive(Debug, Clone, Parser)]
#[command(name = "lms-loadgen", version, about)]
pub(crate) struct Args {
    /// What to run.
    #[arg(value_enum)]
    pub(crate) scenario: Scenario,
    /// Clients (one connection and one user each).
    #[arg(long, default_value_t = 1000)]
    pub(crate) clients: usize,
    /// Channels the clients are spread over (client i polls channel 1 + i % channels).
    #[arg(long, default_value_t = 100)]
    pub(crate) channels: usize,
    /// Events per second (steady).
    #[arg(long, default_value_t = 1000.0)]
    pub(crate) rate: f64,
    /// Seconds of publishing (steady, saturate, publish) or of holding (idle).
    #[arg(long, default_value_t = 10.0)]
    pub(crate) duration: f64,
    /// How events are published.
    #[arg(long, value_enum, default_value_t = Publisher::Http)]
    pub(crate) publish: Publisher,
    /// Concurrent publishers (HTTP connections or library threads).
    #[arg(long, default_value_t = 1)]
    pub(crate) publishers: usize,
    /// Events per library transaction (lib publisher).
    #[arg(long, default_value_t = 1)]
    pub(crate) batch: usize,
    /// The `timeout=` of each poll, in seconds: a poll that times out re-polls on the same
    /// kept-alive connection.
    #[arg(long, default_value_t = 30)]
    pub(crate) poll_timeout: u64,
    /// The `limit=` of each poll.
    #[arg(long, default_value_t = 200)]
    pub(crate) limit: usize,
    /// Rounds of the fanout scenario.
    #[arg(long, default_value_t = 5)]
    pub(crate) rounds: usize,
    /// How the clients subscribe.
    #[arg(long, value_enum, default_value_t = Transport::Poll)]
    pub(crate) transport: Transport,
    /// Seconds each client token lasts from when it is minted (daemon). A stream ends when its
    /// token expires and is resumed with a fresh one: `--transport stream --token-ttl 2` has
    /// the daemon end every stream within 2 s.
    #[arg(long, default_value_t = 3600)]
    pub(crate) token_ttl: u64,
    /// Seconds after which the client itself drops each stream and resumes it with
    /// `Last-Event-ID` on a new connection (0: never), as after a proxy's timeout: Nchan never
    /// ends a stream that keeps getting messages (its `nchan_subscriber_timeout` restarts at
    /// each one), so this is how both servers get streams ended every few seconds.
    #[arg(long, default_value_t = 0.0)]
    pub(crate) stream_max_age: f64,
    /// What to load.
    #[arg(long, value_enum, default_value_t = Target::Daemon)]
    pub(crate) target: Target,
    /// A running server (host:port) instead of starting the daemon; for the daemon it must
    /// use `--token-key k1:<the loadgen secret>` and `--db` must name its store.
    #[arg(long)]
    pub(crate) url: Option<SocketAddr>,
    /// A second running daemon on the same store (with --url): every other client goes to it,
    /// and its parked waiters count too; events are still published through --url. For the
    /// fan-out across daemons sharing one Redis (`--db redis://…`, a build with the feature).
    #[arg(long, requires = "url")]
    pub(crate) also_url: Option<SocketAddr>,
    /// The running server's pids (for memory and CPU, summed), with --url: e.g. nginx's
    /// master and workers.
    #[arg(long, value_delimiter = ',')]
    pub(crate) pid: Vec<u32>,
    /// The store of a running daemon (with --url), or where to create one.
    #[arg(long)]
    pub(crate) db: Option<PathBuf>,
    /// The daemon binary to start (default: lms-longpolld beside this executable).
    #[arg(long)]
    pub(crate) daemon: Option<PathBuf>,
    /// `--workers` of the started daemon (default: the daemon's, 1).
    #[arg(long)]
    pub(crate) daemon_workers: Option<usize>,
    /// `--shards` of the started daemon (default: the daemon's, one per core).
    #[arg(long)]
    pub(crate) daemon_shards: Option<usize>,
    /// Print a JSON summary line at the end.
    #[arg(long)]
    pub(crate) json: bool,
    /// Threads of the load generator's own runtime. 1 (the default): one thread, which leaves
    /// the other core to the server; more: a work-stealing runtime with that many workers.
    #[arg(long, default_value_t = 1)]
    pub(crate) threads: usize,
}

/// Wall-clock time in µs since the epoch: what each event carries as its publish time.
pub(crate) fn now_us() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as i64)
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
    rt.block_on(scenarios::run(Arc::new(a)));
}
