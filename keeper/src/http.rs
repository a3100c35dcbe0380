//! The keeper's HTTP listener (`http_listen` in keeper.toml): the
//! endpoints a load balancer routes by ([`crate::endpoints`]) and
//! `/metrics` ([`crate::metrics`]).
//!
//! It decides nothing and touches nothing: every request reads the
//! snapshot the agent last published (a watch channel the agent writes
//! after every engine call that can change it) and calls the pure
//! [`endpoints::status`] with the clock's `now`, so `/primary` turns 503
//! at the fencing deadline even while the agent's loop is busy.

use std::sync::Arc;

use anyhow::Context;
use axum::extract::{RawQuery, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use pgpilot_proto::HttpListen;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::clock;
use crate::endpoints::{self, Answer, Endpoint, View};
use crate::metrics::{self, Metrics};

/// What every request reads.
#[derive(Clone)]
struct Shared {
    view: watch::Receiver<View>,
    metrics: Arc<Metrics>,
}

/// Binds the listener, or `None` when `http_listen` is off. Done before
/// the keeper starts its work, so that a taken port is refused at once
/// with the setting to change.
pub async fn bind(listen: &HttpListen) -> anyhow::Result<Option<TcpListener>> {
    let Some((host, port)) = listen.addr() else {
        return Ok(None);
    };
    let listener = TcpListener::bind((host.as_str(), port))
        .await
        .with_context(|| {
            format!(
                "listen for HTTP on {listen} (http_listen in keeper.toml, --http-listen of create \
                 postgres): choose a free address, or set http_listen = \"off\""
            )
        })?;
    Ok(Some(listener))
}

/// Serves until `cancel` fires.
pub async fn serve(
    listener: TcpListener,
    view: watch::Receiver<View>,
    metrics: Arc<Metrics>,
    cancel: CancellationToken,
) {
    let addr = listener
        .local_addr()
        .map_or_else(|_| "?".to_string(), |a| a.to_string());
    tracing::info!(%addr, "keeper serving HTTP (/primary, /replica, /read-only, /sync, /health, /metrics)");
    let mut app = Router::new().route("/metrics", get(scrape));
    for e in Endpoint::ALL {
        // GET (and HEAD) or OPTIONS, as HAProxy's `option httpchk` sends.
        let handler = move |State(s): State<Shared>, RawQuery(q): RawQuery| async move {
            answer(&s, e, q.as_deref())
        };
        app = app.route(e.path(), get(handler).options(handler));
    }
    let app = app.with_state(Shared { view, metrics });
    if let Err(e) = axum::serve(listener, app)
        .with_graceful_shutdown(cancel.cancelled_owned())
        .await
    {
        tracing::error!("failed to serve HTTP: {e:#}");
    }
}

fn answer(s: &Shared, e: Endpoint, query: Option<&str>) -> Response {
    let view = s.view.borrow().clone();
    let a = match endpoints::parse_query(query) {
        Ok(q) => endpoints::status(&view, clock::now(), e, &q),
        Err(why) => endpoints::bad_request(&view, why),
    };
    json(a)
}

fn json(a: Answer) -> Response {
    let code = StatusCode::from_u16(a.code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let body = serde_json::to_string(&a.body).unwrap_or_else(|_| "{}".into());
    (code, [(header::CONTENT_TYPE, "application/json")], body).into_response()
}

async fn scrape(State(s): State<Shared>) -> Response {
    let view = s.view.borrow().clone();
    (
        [(header::CONTENT_TYPE, metrics::CONTENT_TYPE)],
        s.metrics.encode(&view),
    )
        .into_response()
}
