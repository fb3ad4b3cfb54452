//! `check: http` / `https`: GET a path on a fresh connection, expect a status range and
//! optionally a body matching a regex. With `host`, the request carries it as Host header and
//! TLS server name while still going to the real's address. `https` verifies certificates
//! unless `verify_certificate: false` (imaging servers often have self-signed ones).

use std::{net::SocketAddr, time::Duration};

use anyhow::{Context, Result};
use regex::Regex;

use super::{Target, Verdict, with_causes};
use crate::policy::{CheckKind, HealthCheck};

/// Most of a body a regex is matched against.
const BODY_LIMIT: usize = 64 * 1024;

pub struct HttpProbe {
    client: reqwest::Client,
    url: String,
    expect_status: (u16, u16),
    body: Option<Regex>,
}

impl HttpProbe {
    pub fn new(check: &HealthCheck, target: Target) -> Result<HttpProbe> {
        let scheme = if check.kind == CheckKind::Https {
            "https"
        } else {
            "http"
        };
        let address = SocketAddr::from((target.address, target.port));
        let mut builder = reqwest::Client::builder()
            .danger_accept_invalid_certs(!check.verify_certificate)
            .redirect(reqwest::redirect::Policy::none())
            // Every check proves that a new connection works.
            .pool_max_idle_per_host(0)
            .no_proxy()
            .timeout(check.timeout + Duration::from_millis(100))
            .user_agent(concat!("xdplb-health/", env!("CARGO_PKG_VERSION")));
        let url = match &check.host {
            Some(host) => {
                builder = builder.resolve(host, address);
                format!("{scheme}://{host}:{}{}", target.port, check.path)
            }
            None => format!("{scheme}://{address}{}", check.path),
        };
        let body = match &check.expect_body {
            Some(re) => Some(Regex::new(re).context("expect_body is not a valid regex")?),
            None => None,
        };
        Ok(HttpProbe {
            client: builder.build().context("building the HTTP client")?,
            url,
            expect_status: check.expect_status,
            body,
        })
    }

    pub async fn check(&self) -> Verdict {
        let mut response = self
            .client
            .get(&self.url)
            .send()
            .await
            .map_err(|e| with_causes(&e))?;
        let status = response.status().as_u16();
        let (lo, hi) = self.expect_status;
        if !(lo..=hi).contains(&status) {
            return Err(format!("HTTP {status}, expected {lo}-{hi}"));
        }
        if let Some(re) = &self.body {
            let mut body = Vec::new();
            while body.len() < BODY_LIMIT {
                match response.chunk().await.map_err(|e| with_causes(&e))? {
                    Some(chunk) => body.extend_from_slice(&chunk),
                    None => break,
                }
            }
            let text = String::from_utf8_lossy(&body);
            if !re.is_match(&text) {
                return Err(format!("HTTP {status}, body does not match /{re}/"));
            }
        }
        Ok(format!("HTTP {status}"))
    }
}
