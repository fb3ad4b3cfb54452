//! Real TCP servers and clients for the lab, running on threads inside namespaces.
//!
//! The server answers each line `who` with its name, so a client learns which real server it
//! reached, and keeps the connection open for more lines (a long-lived "study transfer").
//! It also answers an HTTP GET with its name as the body, so `curl` can be the client, and
//! `get N` with N bytes (a large download: an image retrieval).

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
    let mut lines = BufReader::new(stream).lines();
    while let Some(Ok(line)) = lines.next() {
        if line.starts_with("GET ") {
            // Read the request headers, answer, close.
            for header in lines.by_ref() {
                if header.map(|h| h.trim().is_empty()).unwrap_or(true) {
                    break;
                }
            }
            let body = format!("{name}\n");
            let _ = write!(
                writer,
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
            return;
        }
        if let Some(n) = line.trim().strip_prefix("get ") {
            let Ok(mut left) = n.parse::<usize>() else {
                return;
            };
            let block = [b'x'; 65536];
            while left > 0 {
                let chunk = left.min(block.len());
                if writer.write_all(&block[..chunk]).is_err() {
                    return;
                }
                left -= chunk;
            }
            continue;
        }
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
        Conversation::over(stream)
    }

    /// Opens from the calling thread's own namespace (a thread started by `Netns::spawn`).
    pub fn open_here(to: SocketAddr) -> Result<Conversation> {
        Conversation::over(TcpStream::connect_timeout(&to, Duration::from_secs(3))?)
    }

    fn over(stream: TcpStream) -> Result<Conversation> {
        stream.set_read_timeout(Some(Duration::from_secs(3)))?;
        Ok(Conversation {
            reader: BufReader::new(stream),
        })
    }

    /// The connection itself (any bytes read ahead are dropped: use between exchanges).
    pub fn into_stream(self) -> TcpStream {
        self.reader.into_inner()
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

/// Downloads `bytes` bytes from the server at `to` (its `get` command), from `ns`; fails if
/// the transfer stalls for `stall` (a Path MTU black hole looks like that).
pub fn download(ns: &Netns, to: SocketAddr, bytes: usize, stall: Duration) -> Result<()> {
    ns.within(move || -> Result<()> {
        let mut stream = TcpStream::connect_timeout(&to, Duration::from_secs(3))?;
        stream.set_read_timeout(Some(stall))?;
        writeln!(stream, "get {bytes}")?;
        let mut got = 0;
        let mut buffer = vec![0u8; 65536];
        while got < bytes {
            let n = std::io::Read::read(&mut stream, &mut buffer)
                .with_context(|| format!("stalled after {got} of {bytes} bytes"))?;
            anyhow::ensure!(n > 0, "closed after {got} of {bytes} bytes");
            got += n;
        }
        Ok(())
    })?
}

/// One short connection: connect, ask, close. Returns the server's name.
pub fn who(ns: &Netns, to: SocketAddr) -> Result<String> {
    Conversation::open(ns, to)?.who()
}

/// A UDP server in a namespace that answers every datagram with its name.
pub struct UdpNameServer {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl UdpNameServer {
    pub fn start(ns: &Netns, port: u16, name: &str) -> Result<UdpNameServer> {
        let socket = ns.within(move || std::net::UdpSocket::bind(("0.0.0.0", port)))??;
        socket.set_read_timeout(Some(Duration::from_millis(50)))?;
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let name = name.to_string();
        let thread = std::thread::spawn(move || {
            let mut buf = [0u8; 1500];
            while !flag.load(Ordering::Relaxed) {
                if let Ok((_, from)) = socket.recv_from(&mut buf) {
                    let _ = socket.send_to(name.as_bytes(), from);
                }
            }
        });
        Ok(UdpNameServer {
            stop,
            thread: Some(thread),
        })
    }
}

impl Drop for UdpNameServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// One UDP request from `ns` to `to`; the answer must come from `to` itself (a connected
/// socket drops datagrams from any other source), which checks the reply's source address.
pub fn udp_who(ns: &Netns, to: SocketAddr) -> Result<String> {
    ns.within(move || -> Result<String> {
        let socket = std::net::UdpSocket::bind("0.0.0.0:0")?;
        socket.connect(to)?;
        socket.set_read_timeout(Some(Duration::from_secs(2)))?;
        socket.send(b"who")?;
        let mut buf = [0u8; 1500];
        let n = socket.recv(&mut buf).context("no UDP answer")?;
        Ok(String::from_utf8_lossy(&buf[..n]).into_owned())
    })?
}

/// `curl http://to/` from `ns`; returns the body.
pub fn http_get(ns: &Netns, to: SocketAddr) -> Result<String> {
    let out = super::netns::run(ns.command("curl").args([
        "-sS",
        "--max-time",
        "3",
        &format!("http://{to}/"),
    ]))?;
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}
