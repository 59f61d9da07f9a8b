//! The edge's public listener: session websockets at `/v1/sessions/{id}`, team presence at
//! `/v1/teams/{team}/presence`, `/livez`, `/readyz`, and `/metrics` unless it has a listener of
//! its own; and the accept loop both binaries serve HTTP with, plain or TLS.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{ConnectInfo, Path, Request, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use duet_ws::tls::ServerTls;
use hyper_util::rt::TokioIo;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::EdgeState;

/// The path prefix of session websockets; `edge.url` is `<public_url>/v1/sessions/<id>`.
pub const SESSION_PATH: &str = "/v1/sessions";

#[derive(Clone)]
struct AppState {
    edge: Arc<EdgeState>,
    tasks: TaskTracker,
}

fn error(status: StatusCode, code: &str, message: impl Into<String>) -> Response {
    let body = serde_json::json!({ "error": { "code": code, "message": message.into() } });
    (status, Json(body)).into_response()
}

pub fn router(edge: Arc<EdgeState>, tasks: TaskTracker) -> Router {
    Router::new()
        .route("/livez", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/v1/sessions/{session_id}", get(session_ws))
        .route("/v1/teams/{team}/presence", get(presence_ws))
        .fallback(|| async { error(StatusCode::NOT_FOUND, "not_found", "no such route") })
        .with_state(AppState { edge, tasks })
}

/// 200 once the edge has registered with a locator (and so holds its token keys), 503 before
/// that and from the start of a drain or shutdown: orchestrators route nothing new here and
/// rolling updates wait for it. Liveness (`/livez`) never depends on the locator.
async fn readyz(State(app): State<AppState>) -> Response {
    if app.edge.is_ready() {
        (StatusCode::OK, "ready\n").into_response()
    } else if app.edge.shutdown.is_cancelled() {
        (StatusCode::SERVICE_UNAVAILABLE, "shutting down\n").into_response()
    } else if app.edge.is_draining() {
        (StatusCode::SERVICE_UNAVAILABLE, "draining: running sessions continue, new ones go elsewhere\n")
            .into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not registered with the locator yet\n").into_response()
    }
}

/// Session ids are what the locator generates; anything else is refused before the upgrade.
fn valid_session_id(id: &str) -> bool {
    !id.is_empty() && id.len() <= 64 && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// One open websocket counted against its client address; released on drop.
struct AddressSlot {
    edge: Arc<EdgeState>,
    ip: IpAddr,
}

impl AddressSlot {
    /// Counts a connection from `ip`, or refuses it when that address is at its limit.
    fn take(edge: &Arc<EdgeState>, ip: IpAddr) -> Option<AddressSlot> {
        let max = edge.config.max_connections_per_address;
        let mut count = edge.per_address.entry(ip).or_insert(0);
        if max > 0 && *count >= max {
            return None;
        }
        *count += 1;
        drop(count);
        Some(AddressSlot { edge: edge.clone(), ip })
    }
}

impl Drop for AddressSlot {
    fn drop(&mut self) {
        if let Some(mut count) = self.edge.per_address.get_mut(&self.ip) {
            *count = count.saturating_sub(1);
        }
        self.edge.per_address.remove_if(&self.ip, |_, count| *count == 0);
    }
}

async fn session_ws(
    State(app): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Path(session_id): Path<String>,
    req: Request,
) -> Response {
    if !valid_session_id(&session_id) {
        return error(StatusCode::BAD_REQUEST, "bad_request", "invalid session id");
    }
    upgrade(app, peer, req, move |edge, ws| crate::relay::serve(edge, session_id, ws))
}

async fn presence_ws(
    State(app): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Path(team): Path<String>,
    req: Request,
) -> Response {
    if !crate::presence::valid_team(&team) {
        return error(StatusCode::BAD_REQUEST, "bad_request", "invalid team name");
    }
    upgrade(app, peer, req, move |edge, ws| crate::presence::serve(edge, team, ws))
}

/// The websocket upgrade both endpoints share: refused while shutting down and past the client
/// address's connection limit; `serve` runs the connection, which holds its address slot.
fn upgrade<F, Fut>(app: AppState, peer: SocketAddr, mut req: Request, serve: F) -> Response
where
    F: FnOnce(Arc<EdgeState>, duet_ws::Stream) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    if !fastwebsockets::upgrade::is_upgrade_request(&req) {
        return error(StatusCode::BAD_REQUEST, "bad_request", "expected a websocket upgrade");
    }
    if app.edge.shutdown.is_cancelled() {
        return error(StatusCode::SERVICE_UNAVAILABLE, "shutting_down", "edge is shutting down; ask the locator again");
    }
    let client = duet_netaddr::client_ip(peer.ip(), req.headers(), &app.edge.trusted_proxies);
    let Some(slot) = AddressSlot::take(&app.edge, client) else {
        tracing::info!(client.ip = %client, "connection refused: too many from this address");
        let max = app.edge.config.max_connections_per_address;
        let message = format!("{client} already has {max} open connections to this edge");
        return error(StatusCode::TOO_MANY_REQUESTS, "too_many_connections", message);
    };
    let (response, upgrade) = match fastwebsockets::upgrade::upgrade(&mut req) {
        Ok(x) => x,
        Err(e) => return error(StatusCode::BAD_REQUEST, "bad_request", format!("websocket upgrade failed: {e}")),
    };
    let edge = app.edge.clone();
    app.tasks.spawn(async move {
        match upgrade.await {
            Ok(ws) => serve(edge, duet_ws::server_stream(ws)).await,
            Err(e) => tracing::debug!(error = %e, "websocket upgrade did not complete"),
        }
        drop(slot);
    });
    response.map(Body::new)
}

/// Serves the edge's public listener until shutdown; upgraded connections are tracked
/// separately and close themselves.
pub async fn serve(edge: Arc<EdgeState>, listener: TcpListener, tls: Option<ServerTls>, tasks: TaskTracker) {
    let app = router(edge.clone(), tasks.clone());
    let public_metrics = edge.config.serve_metrics && edge.config.metrics_listen.is_none();
    let app = if public_metrics { app.merge(metrics_router(edge.clone())) } else { app };
    serve_app(listener, tls, app, edge.config.handshake_timeout, edge.shutdown.clone(), tasks).await
}

/// `GET /metrics` alone, for the public listener or a listener of its own.
pub fn metrics_router(edge: Arc<EdgeState>) -> Router {
    Router::new().route(
        "/metrics",
        get(move || {
            let edge = edge.clone();
            async move { crate::metrics::response(crate::metrics::scrape(&edge)) }
        }),
    )
}

/// Serves `app` on `listener` until `shutdown`, over TLS when `tls` is set; connections are
/// spawned on `tasks` and finish the request in flight after `shutdown` (then close).
///
/// The accept loop is hyper's HTTP/1 server, not `axum::serve`, so that a request's headers (and
/// the TLS handshake before them) must arrive within `header_timeout` (answered with 408 and
/// closed): a client that opens TCP connections and sends half a request cannot hold them.
pub async fn serve_app(
    listener: TcpListener,
    tls: Option<ServerTls>,
    app: Router,
    header_timeout: Duration,
    shutdown: CancellationToken,
    tasks: TaskTracker,
) {
    let acceptor = tls.as_ref().map(ServerTls::acceptor);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(x) => x,
                Err(e) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = shutdown.cancelled() => return,
        };
        let _ = stream.set_nodelay(true);
        let app = app.clone();
        let shutdown = shutdown.clone();
        let acceptor = acceptor.clone();
        tasks.spawn(async move {
            match acceptor {
                None => serve_connection(TokioIo::new(stream), peer, app, header_timeout, shutdown).await,
                Some(acceptor) => match tokio::time::timeout(header_timeout, acceptor.accept(stream)).await {
                    Ok(Ok(tls)) => serve_connection(TokioIo::new(tls), peer, app, header_timeout, shutdown).await,
                    Ok(Err(e)) => tracing::debug!(client.addr = %peer, error = %e, "tls handshake failed"),
                    Err(_) => tracing::debug!(client.addr = %peer, "tls handshake timed out"),
                },
            }
        });
    }
}

async fn serve_connection<I>(
    io: I,
    peer: SocketAddr,
    app: Router,
    header_timeout: Duration,
    shutdown: CancellationToken,
) where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let service = hyper::service::service_fn(move |mut req: Request<hyper::body::Incoming>| {
        req.extensions_mut().insert(ConnectInfo(peer));
        tower::ServiceExt::oneshot(app.clone(), req.map(Body::new))
    });
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder.timer(hyper_util::rt::TokioTimer::new()).header_read_timeout(header_timeout);
    let conn = builder.serve_connection(io, service).with_upgrades();
    tokio::pin!(conn);
    tokio::select! {
        result = conn.as_mut() => {
            if let Err(e) = result {
                tracing::debug!(client.addr = %peer, error = %e, "http connection ended with an error");
            }
        }
        _ = shutdown.cancelled() => {
            conn.as_mut().graceful_shutdown();
            let _ = conn.await;
        }
    }
}
