//! The bound of #22's HTTP publish rows: what tokio + hyper alone cost per request on this
//! machine, with the daemon's runtime and HTTP settings (one current-thread runtime, hyper's
//! HTTP/1 with keep-alive, `TCP_NODELAY`) and nothing else: every request's body is read and
//! answered `200 {"ids":[1]}`, the answer `lms-loadgen publish` expects. No store, no token, no
//! JSON parse. CPU per request of this server, measured with the same client beside the daemon
//! and Nchan (`benches/daemon-cpu.sh`, `BARE=` below), is the least the daemon's HTTP layer can
//! cost: a row where it alone costs more than Nchan cannot reach 1.0 with hyper.
//!
//! ```sh
//! cargo build --release --features daemon --example bare_hyper
//! target/release/examples/bare_hyper 127.0.0.1:18990
//! ```

use std::convert::Infallible;
use std::net::SocketAddr;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

async fn answer(req: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    // Read the body as the daemon must before it answers (a publish is answered after it).
    let _ = req.into_body().collect().await;
    let mut r = Response::new(Full::new(Bytes::from_static(b"{\"ids\":[1]}")));
    r.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/json"),
    );
    Ok(r)
}

fn main() -> std::io::Result<()> {
    let addr: SocketAddr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:18990".into())
        .parse()
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .event_interval(lms_realtime::daemon::RUNTIME_EVENT_INTERVAL)
        .build()?;
    rt.block_on(async move {
        let listener = TcpListener::bind(addr).await?;
        loop {
            let (tcp, _) = listener.accept().await?;
            let _ = tcp.set_nodelay(true);
            tokio::spawn(async move {
                let _ = http1::Builder::new()
                    .keep_alive(true)
                    .serve_connection(TokioIo::new(tcp), service_fn(answer))
                    .await;
            });
        }
    })
}
