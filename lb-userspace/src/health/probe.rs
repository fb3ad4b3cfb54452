//! One real's checker, built once from the policy (an HTTP client, a compiled regex) and run
//! every interval with the check's timeout.

use std::time::Instant;

use anyhow::Result;

use super::{Outcome, Target, Verdict, dicom, exec, hl7, http::HttpProbe, tcp};
use crate::policy::{CheckKind, HealthCheck};

pub struct Probe {
    check: HealthCheck,
    service: String,
    target: Target,
    http: Option<HttpProbe>,
}

impl Probe {
    pub fn new(check: &HealthCheck, service: &str, target: Target) -> Result<Probe> {
        let http = match check.kind {
            CheckKind::Http | CheckKind::Https => Some(HttpProbe::new(check, target)?),
            _ => None,
        };
        Ok(Probe {
            check: check.clone(),
            service: service.to_string(),
            target,
            http,
        })
    }

    pub fn target(&self) -> Target {
        self.target
    }

    /// Runs the check once; never takes longer than the check's timeout.
    pub async fn run(&self) -> Outcome {
        let start = Instant::now();
        let verdict = match tokio::time::timeout(self.check.timeout, self.verdict()).await {
            Ok(verdict) => verdict,
            Err(_) => Err(format!(
                "no answer within {} ms",
                self.check.timeout.as_millis()
            )),
        };
        let latency = start.elapsed();
        match verdict {
            Ok(seen) => Outcome {
                up: true,
                reason: seen,
                latency,
            },
            Err(why) => Outcome {
                up: false,
                reason: why,
                latency,
            },
        }
    }

    async fn verdict(&self) -> Verdict {
        let c = &self.check;
        match c.kind {
            CheckKind::None => Ok("not checked (check: none)".into()),
            CheckKind::Tcp => tcp::check(self.target).await,
            CheckKind::Http | CheckKind::Https => match &self.http {
                Some(http) => http.check().await,
                None => Err("HTTP client missing".into()),
            },
            CheckKind::DicomEcho => dicom::check(self.target, &c.called_ae, &c.calling_ae).await,
            CheckKind::Hl7Mllp => hl7::check(self.target).await,
            CheckKind::Exec => exec::check(&c.command, &self.service, self.target).await,
        }
    }
}
