//! The `/metrics` endpoint (axum). Each scrape asks the controller's main loop for the text,
//! so the numbers are one consistent snapshot.

use std::net::SocketAddr;

use anyhow::{Context, Result};
use axum::{Router, extract::State, http::header, response::IntoResponse, routing::get};
use tokio::sync::{mpsc, oneshot};

/// A scrape: where the controller sends the text.
pub type Scrape = oneshot::Sender<String>;

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
        .with_state(scrapes);
    Ok(tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    }))
}

async fn metrics(State(scrapes): State<mpsc::Sender<Scrape>>) -> impl IntoResponse {
    let (tx, rx) = oneshot::channel();
    let text = match scrapes.send(tx).await {
        Ok(()) => rx.await.unwrap_or_default(),
        Err(_) => String::new(),
    };
    ([(header::CONTENT_TYPE, CONTENT_TYPE)], text)
}
