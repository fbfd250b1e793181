//! The server under test: started as a child process (or given by `--url`), and measured from
//! `/proc`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::{Args, SECRET, Target, now_us};

/// The server under test: started here (and stopped on drop), or one already running.
pub(crate) struct Server {
    pub(crate) addr: SocketAddr,
    pub(crate) pids: Vec<u32>,
    child: Option<Child>,
    pub(crate) db: PathBuf,
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

/// A port free on loopback a moment ago, for the daemon to bind.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or(18_787)
}

/// The server `--url` names, or the daemon started on a fresh store on a free loopback port.
pub(crate) async fn start_server(a: &Args) -> Server {
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
        .env("LMSRT_MAX_CONNECTIONS_PER_IP", "20000")
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
pub(crate) fn procs_usage(pids: &[u32]) -> Option<(u64, f64, u64)> {
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
pub(crate) fn proc_usage(pid: u32) -> Option<(u64, f64)> {
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

/// The server's memory now and CPU since the measured part of a run began.
pub(crate) struct Usage {
    pids: Vec<u32>,
    cpu0: f64,
    t0: Instant,
}

impl Usage {
    pub(crate) fn start(pids: &[u32]) -> Usage {
        let cpu0 = procs_usage(pids).map_or(0.0, |u| u.1);
        Usage {
            pids: pids.to_vec(),
            cpu0,
            t0: Instant::now(),
        }
    }

    /// (RSS MiB now, PSS MiB now, CPU % of one core since start).
    pub(crate) fn now(&self) -> (f64, f64, f64) {
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
