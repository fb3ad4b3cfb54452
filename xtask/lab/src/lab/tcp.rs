//! Real TCP servers and clients for the lab, running on threads inside namespaces.
//!
//! The server answers each line `who` with its name, so a client learns which real server it
//! reached, and keeps the connection open for more lines (a long-lived "study transfer").
//! It also answers an HTTP GET with its name as the body, so `curl` can be the client
//! (HTTP/1.1 connections stay open for more requests unless the client asks to close), and
//! `get N` with N bytes (a large download: an image retrieval). `peer` (and `GET /peer`, with
//! its name first) answers the address and port the server sees the connection come from:
//! what a translated source looks like from the real's side.

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
    let Ok(peer) = stream.peer_addr() else {
        return;
    };
    let mut writer = match stream.try_clone() {
        Ok(w) => w,
        Err(_) => return,
    };
    let mut lines = BufReader::new(stream).lines();
    while let Some(Ok(line)) = lines.next() {
        if let Some(request) = line.strip_prefix("GET ") {
            // HTTP/1.1 keeps the connection unless a `Connection: close` says otherwise;
            // HTTP/1.0 closes it unless a `Connection: keep-alive` says otherwise.
            let mut keep_alive = request.trim_end().ends_with("HTTP/1.1");
            for header in lines.by_ref() {
                let Ok(header) = header else {
                    return;
                };
                let header = header.trim();
                if header.is_empty() {
                    break;
                }
                if let Some((key, value)) = header.split_once(':')
                    && key.trim().eq_ignore_ascii_case("connection")
                {
                    let value = value.trim();
                    if value.eq_ignore_ascii_case("close") {
                        keep_alive = false;
                    } else if value.eq_ignore_ascii_case("keep-alive") {
                        keep_alive = true;
                    }
                }
            }
            let body = match request.split_whitespace().next() {
                Some("/peer") => format!("{name} {peer}\n"),
                _ => format!("{name}\n"),
            };
            let connection = if keep_alive { "keep-alive" } else { "close" };
            let sent = write!(
                writer,
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: {connection}\r\n\r\n{body}",
                body.len()
            );
            if sent.is_err() || !keep_alive {
                return;
            }
            continue;
        }
        if line.trim() == "peer" {
            if writeln!(writer, "{peer}").is_err() {
                return;
            }
            continue;
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

    /// This end's address and port: the client's side of the flow.
    pub fn local(&self) -> Result<SocketAddr> {
        Ok(self.reader.get_ref().local_addr()?)
    }

    /// The connection itself (any bytes read ahead are dropped: use between exchanges).
    pub fn into_stream(self) -> TcpStream {
        self.reader.into_inner()
    }

    pub fn who(&mut self) -> Result<String> {
        self.ask("who")
    }

    /// The address and port the server sees this connection come from.
    pub fn peer(&mut self) -> Result<SocketAddr> {
        let answer = self.ask("peer")?;
        answer
            .parse()
            .with_context(|| format!("the server's `peer` answer {answer:?}"))
    }

    fn ask(&mut self, question: &str) -> Result<String> {
        writeln!(self.reader.get_mut(), "{question}")?;
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

/// A UDP server in a namespace that answers every datagram with its name, but `peer` with the
/// address and port it came from.
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
                if let Ok((n, from)) = socket.recv_from(&mut buf) {
                    let answer = match &buf[..n] {
                        b"peer" => from.to_string(),
                        _ => name.clone(),
                    };
                    let _ = socket.send_to(answer.as_bytes(), from);
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
    udp_ask(ns, to, "who")
}

/// As `udp_who`, with `question` (`who` or `peer`) as the datagram.
pub fn udp_ask(ns: &Netns, to: SocketAddr, question: &'static str) -> Result<String> {
    ns.within(move || udp_ask_here(to, question))?
}

/// As `udp_ask`, from the calling thread's own namespace (a thread started by `Netns::spawn`).
pub fn udp_ask_here(to: SocketAddr, question: &str) -> Result<String> {
    let socket = std::net::UdpSocket::bind("0.0.0.0:0")?;
    socket.connect(to)?;
    socket.set_read_timeout(Some(Duration::from_secs(2)))?;
    socket.send(question.as_bytes())?;
    let mut buf = [0u8; 1500];
    let n = socket.recv(&mut buf).context("no UDP answer")?;
    Ok(String::from_utf8_lossy(&buf[..n]).into_owned())
}

/// `curl http://to/` from `ns`; returns the body.
pub fn http_get(ns: &Netns, to: SocketAddr) -> Result<String> {
    http_get_path(ns, to, "/")
}

/// `curl http://to{path}` from `ns`; returns the body.
pub fn http_get_path(ns: &Netns, to: SocketAddr, path: &str) -> Result<String> {
    let out = super::netns::run(ns.command("curl").args([
        "-sS",
        "--max-time",
        "3",
        &format!("http://{to}{path}"),
    ]))?;
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// One `curl` from `ns` fetching `http://to{path}` `n` times (curl reuses its connection
/// between the URLs of one invocation when the server keeps it open); returns each body with
/// the number of connections curl opened for it (`%{num_connects}`: 0 when it reused one).
pub fn http_keep_alive(
    ns: &Netns,
    to: SocketAddr,
    path: &str,
    n: usize,
) -> Result<Vec<(String, u32)>> {
    let url = format!("http://{to}{path}");
    let out = super::netns::run(
        ns.command("curl")
            .args(["-sS", "--max-time", "5", "-w", "%{num_connects}\n"])
            .args(std::iter::repeat_n(&url, n)),
    )?;
    // Each body is one line, followed by curl's line.
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let lines: Vec<&str> = text.lines().collect();
    anyhow::ensure!(
        lines.len() == 2 * n,
        "curl printed {} lines for {n} URLs: {text:?}",
        lines.len()
    );
    lines
        .chunks(2)
        .map(|pair| {
            let connects = pair[1]
                .trim()
                .parse()
                .with_context(|| format!("curl's num_connects {:?}", pair[1]))?;
            Ok((pair[0].trim().to_string(), connects))
        })
        .collect()
}

/// The peers of the established TCP connections to local `port` in `ns` (`ss`).
pub fn established_peers(ns: &Netns, port: u16) -> Result<Vec<SocketAddr>> {
    let out = super::netns::run(ns.command("ss").args([
        "-tnH",
        "state",
        "established",
        &format!("( sport = :{port} )"),
    ]))?;
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|line| line.split_whitespace().last())
        .map(|peer| {
            peer.parse()
                .with_context(|| format!("ss printed the peer {peer:?}"))
        })
        .collect()
}
