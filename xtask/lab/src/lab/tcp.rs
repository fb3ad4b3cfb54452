//! Real TCP servers and clients for the lab, running on threads inside namespaces.
//!
//! The server answers each line `who` with its name, so a client learns which real server it
//! reached, and keeps the connection open for more lines (a long-lived "study transfer").

use std::{
    io::{BufRead, BufReader, Write},
    net::{SocketAddr, TcpListener, TcpStream},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    thread::JoinHandle,
    time::Duration,
};

use anyhow::{Context, Result};

use super::Netns;

pub struct EchoServer {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl EchoServer {
    /// Listens on `0.0.0.0:port` in `ns` (so on the VIP held on lo too) and answers with `name`.
    pub fn start(ns: &Netns, port: u16, name: &str) -> Result<EchoServer> {
        let stop = Arc::new(AtomicBool::new(false));
        let listener = ns.within(move || TcpListener::bind(("0.0.0.0", port)))??;
        listener.set_nonblocking(true)?;
        let name = name.to_string();
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            while !flag.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((stream, _)) => {
                        let name = name.clone();
                        std::thread::spawn(move || serve(stream, &name));
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(2)),
                }
            }
        });
        Ok(EchoServer {
            stop,
            thread: Some(thread),
        })
    }
}

fn serve(stream: TcpStream, name: &str) {
    let _ = stream.set_nonblocking(false);
    let _ = stream.set_read_timeout(Some(Duration::from_secs(120)));
    let mut writer = match stream.try_clone() {
        Ok(w) => w,
        Err(_) => return,
    };
    for line in BufReader::new(stream).lines() {
        let Ok(line) = line else { return };
        if line.trim() == "who" && writeln!(writer, "{name}").is_err() {
            return;
        }
    }
}

impl Drop for EchoServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A connection that asks `who` and reads the answer.
pub struct Conversation {
    reader: BufReader<TcpStream>,
}

impl Conversation {
    pub fn open(ns: &Netns, to: SocketAddr) -> Result<Conversation> {
        let stream =
            ns.within(move || TcpStream::connect_timeout(&to, Duration::from_secs(3)))??;
        stream.set_read_timeout(Some(Duration::from_secs(3)))?;
        Ok(Conversation {
            reader: BufReader::new(stream),
        })
    }

    pub fn who(&mut self) -> Result<String> {
        writeln!(self.reader.get_mut(), "who")?;
        let mut answer = String::new();
        self.reader
            .read_line(&mut answer)
            .context("reading the server's answer")?;
        anyhow::ensure!(!answer.is_empty(), "connection closed");
        Ok(answer.trim().to_string())
    }
}

/// One short connection: connect, ask, close. Returns the server's name.
pub fn who(ns: &Netns, to: SocketAddr) -> Result<String> {
    Conversation::open(ns, to)?.who()
}
