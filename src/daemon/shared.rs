//! A poll's checks with the guards in Redis (`--guards redis`): the address's and the user's
//! limits and the slot are awaited on the connection the serving thread multiplexes
//! (`guards::redis`), and so is the slot's release before the answer. A round trip then holds
//! only the request that needs it: the thread serves the others meanwhile, the calls of many
//! requests share writes and reads, and a Redis that stops answering holds up only the
//! requests waiting on it, each for at most the guards' I/O timeout. Measured against the
//! calls made in line: `benches/journal/2026-12-07-redis-guards.md`, "Awaited on the serving
//! thread".
//!
//! Streams still take their slot (once per stream) and renew its lease in line, and on a Redis
//! Cluster every call is still made in line (`guards::redis::RedisGuards::eval_async`).

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use hyper::Request;
use hyper::http::request::Parts;

use super::error::ApiError;
use super::fanout::Format;
use super::limits::{address_allowed, channels_allowed, no_slot, user_allowed};
use super::poll::{
    PollJob, PollParams, SlotGuard, counted_wait, parse_query, poll_response, render, verify,
};
use super::response::{HandlerFuture, Meta};
use super::state::State;
use crate::guards::Lease;
use crate::token::Claims;

/// Serves a `GET /v1/poll`: its checks in the order `poll.rs` makes them (the address's limit
/// first), the guards' calls awaited.
pub(crate) fn serve_poll<B>(
    state: Arc<State>,
    mut meta: Meta,
    peer: SocketAddr,
    req: Request<B>,
) -> HandlerFuture {
    let ip = super::auth::client_ip(req.headers(), peer, state.config.trust_proxy);
    // Boxed, and dropped once checked: the head shares hyper's read buffer, which hyper reuses
    // while the poll waits, and the future of a waiting poll keeps no room for it.
    let head = Box::new(req.into_parts().0);
    Box::pin(async move {
        // Each step boxed: the future of a waiting poll keeps room for its largest state.
        let mut job = match Box::pin(checks(&state, &mut meta, ip, head)).await {
            Ok(job) => job,
            Err(e) => return meta.respond(&state, Err(e)),
        };
        let result = Box::pin(counted_wait(&state, &mut job.params, Format::Poll, render)).await;
        Box::pin(release(job)).await;
        let r = result.map(|batch| poll_response(&state, &batch, meta.gzip));
        meta.respond(&state, r)
    })
}

/// Every check of a poll, cheapest first: the address's limit, the token, the query, then
/// [`admit`].
async fn checks(
    state: &Arc<State>,
    meta: &mut Meta,
    ip: IpAddr,
    head: Box<Parts>,
) -> Result<PollJob, ApiError> {
    check_ip(state, ip).await?;
    let claims = verify(state, meta, &head.headers)?;
    let params = parse_query(state, head.uri.query())?;
    drop(head);
    admit(state, &claims, params).await
}

/// The last checks of a parsed poll: its channels against the token, the user's limit, then
/// one of the user's slots, held by the job.
pub(crate) async fn admit(
    state: &Arc<State>,
    claims: &Claims,
    params: PollParams,
) -> Result<PollJob, ApiError> {
    channels_allowed(claims, &params.req.channels)?;
    let user = claims.uid.to_string();
    let d = state
        .limiter
        .check_async("poll", &user)
        .await
        .map_err(|e| ApiError::Internal(e.to_string()))?;
    user_allowed(&d)?;
    let lease = state.slots.acquire_async(&user).await.map_err(no_slot)?;
    Ok(PollJob {
        params,
        slot: SlotGuard(state.clone(), lease),
    })
}

/// The address's limit, awaited.
pub(crate) async fn check_ip(state: &State, ip: IpAddr) -> Result<(), ApiError> {
    let d = state
        .limiter
        .check_async("ip", &ip.to_string())
        .await
        .map_err(|e| ApiError::Internal(e.to_string()))?;
    address_allowed(&d)
}

/// Gives the job's slot back, awaited: a client that polls again at once finds it free.
pub(crate) async fn release(mut job: PollJob) {
    let SlotGuard(state, lease) = &mut job.slot;
    let held = std::mem::replace(lease, Lease { token: 0, ..*lease });
    state.slots.release_async(&held).await;
}
