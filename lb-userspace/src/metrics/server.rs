//! The metrics listener (axum): `/metrics` (OpenMetrics), the status page at `/` and its data,
//! `/status.json` (what `xdplb status --json` prints). Each request asks the controller's main
//! loop, so the numbers are one consistent snapshot. Read-only: nothing here changes anything.

use std::net::SocketAddr;

use anyhow::{Context, Result};
use axum::{Router, extract::State, http::header, response::IntoResponse, routing::get};
use tokio::sync::{mpsc, oneshot};

/// A request to the controller, with where it sends the text.
pub enum Scrape {
    /// The OpenMetrics text.
    Metrics(oneshot::Sender<String>),
    /// The status as JSON.
    Status(oneshot::Sender<String>),
}

const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

pub async fn serve(
    listen: SocketAddr,
    scrapes: mpsc::Sender<Scrape>,
) -> Result<tokio::task::JoinHandle<()>> {
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("metrics: cannot listen on {listen}"))?;
    let app = Router::new()
        .route("/metrics", get(metrics))
        .route("/status.json", get(status))
        .route("/", get(page))
        .with_state(scrapes);
    Ok(tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    }))
}

async fn metrics(State(scrapes): State<mpsc::Sender<Scrape>>) -> impl IntoResponse {
    let text = ask(&scrapes, Scrape::Metrics).await;
    ([(header::CONTENT_TYPE, CONTENT_TYPE)], text)
}

async fn status(State(scrapes): State<mpsc::Sender<Scrape>>) -> impl IntoResponse {
    let text = ask(&scrapes, Scrape::Status).await;
    (
        [
            (header::CONTENT_TYPE, "application/json"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        text,
    )
}

async fn page() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
        super::page::PAGE,
    )
}

/// Asks the controller for a text; empty if it is gone.
async fn ask(
    scrapes: &mpsc::Sender<Scrape>,
    kind: impl FnOnce(oneshot::Sender<String>) -> Scrape,
) -> String {
    let (tx, rx) = oneshot::channel();
    match scrapes.send(kind(tx)).await {
        Ok(()) => rx.await.unwrap_or_default(),
        Err(_) => String::new(),
    }
}
