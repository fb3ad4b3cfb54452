//! `check: hl7-mllp`: send a minimal HL7 v2 message in MLLP framing (0x0B message 0x1C 0x0D)
//! and expect an ACK whose MSA-1 is AA or CA and whose MSA-2 is the control ID sent.
//!
//! The message is an NMD^N02 (application management data), which interface engines answer
//! without touching patient data.

use std::sync::atomic::{AtomicU64, Ordering};

use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};

use super::{Target, Verdict};

const START: u8 = 0x0b;
const END: [u8; 2] = [0x1c, 0x0d];
/// Largest ACK read.
const ACK_LIMIT: usize = 64 * 1024;

static SEQUENCE: AtomicU64 = AtomicU64::new(1);

pub async fn check(target: Target) -> Verdict {
    let control_id = format!(
        "XDPLB{}{}",
        std::process::id(),
        SEQUENCE.fetch_add(1, Ordering::Relaxed)
    );
    let message = message(&control_id);
    let mut stream = super::connect(target)
        .await
        .map_err(|e| format!("connect: {e}"))?;
    let mut frame = vec![START];
    frame.extend_from_slice(message.as_bytes());
    frame.extend_from_slice(&END);
    stream
        .write_all(&frame)
        .await
        .map_err(|e| format!("send: {e}"))?;
    let reply = read_frame(&mut stream).await?;
    judge(&String::from_utf8_lossy(&reply), &control_id)
}

/// MSH and an NCK segment, segments ended by carriage returns.
fn message(control_id: &str) -> String {
    let now = timestamp();
    format!("MSH|^~\\&|XDPLB|XDPLB|||{now}||NMD^N02^NMD_N02|{control_id}|P|2.5\rNCK|{now}\r")
}

/// YYYYMMDDHHMMSS in UTC (HL7 DTM).
fn timestamp() -> String {
    chrono::Utc::now().format("%Y%m%d%H%M%S").to_string()
}

/// Reads one MLLP frame: bytes after 0x0B up to 0x1C 0x0D.
async fn read_frame(stream: &mut TcpStream) -> Result<Vec<u8>, String> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let n = stream
            .read(&mut chunk)
            .await
            .map_err(|e| format!("receive: {e}"))?;
        if n == 0 {
            return Err(if buf.is_empty() {
                "connection closed without an ACK".into()
            } else {
                "connection closed inside an MLLP frame".into()
            });
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(end) = buf.windows(2).position(|w| w == END) {
            let start = buf
                .iter()
                .position(|&b| b == START)
                .ok_or("reply is not MLLP-framed")?;
            if start > end {
                return Err("reply is not MLLP-framed".into());
            }
            return Ok(buf[start + 1..end].to_vec());
        }
        if buf.len() > ACK_LIMIT {
            return Err("reply too long for an ACK".into());
        }
    }
}

/// Up only on MSA-1 AA or CA with MSA-2 = the control ID sent.
fn judge(reply: &str, control_id: &str) -> Verdict {
    let msh = reply
        .split(['\r', '\n'])
        .find(|s| s.starts_with("MSH"))
        .ok_or("reply has no MSH segment")?;
    let separator = msh.chars().nth(3).ok_or("MSH segment too short")?;
    let msa = reply
        .split(['\r', '\n'])
        .find(|s| s.starts_with("MSA"))
        .ok_or("reply has no MSA segment: not an ACK")?;
    let fields: Vec<&str> = msa.split(separator).collect();
    let code = fields.get(1).copied().unwrap_or("");
    let acked = fields.get(2).copied().unwrap_or("");
    if acked != control_id {
        return Err(format!("ACK for control ID `{acked}`, sent `{control_id}`"));
    }
    match code {
        "AA" | "CA" => Ok(format!("ACK {code}")),
        _ => {
            let text = fields.get(3).copied().unwrap_or("").trim();
            Err(if text.is_empty() {
                format!("ACK {code}")
            } else {
                format!("ACK {code}: {text}")
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn acks_are_judged_by_code_and_control_id() {
        let ack = |code: &str, id: &str| {
            format!(
                "MSH|^~\\&|R|R|XDPLB|XDPLB|20260101||ACK^N02|9|P|2.5\rMSA|{code}|{id}|bad thing\r"
            )
        };
        assert_eq!(judge(&ack("AA", "X1"), "X1"), Ok("ACK AA".into()));
        assert_eq!(judge(&ack("CA", "X1"), "X1"), Ok("ACK CA".into()));
        assert_eq!(
            judge(&ack("AE", "X1"), "X1"),
            Err("ACK AE: bad thing".into())
        );
        assert!(
            judge(&ack("AA", "X2"), "X1")
                .unwrap_err()
                .contains("control ID")
        );
        assert!(judge("MSH|^~\\&|R\r", "X1").unwrap_err().contains("MSA"));
    }

    #[test]
    fn the_message_is_hl7_with_the_control_id() {
        let m = message("ID7");
        assert!(m.starts_with("MSH|^~\\&|XDPLB|"));
        assert!(m.contains("|NMD^N02^NMD_N02|ID7|P|2.5\r"));
        assert_eq!(timestamp().len(), 14);
    }
}
