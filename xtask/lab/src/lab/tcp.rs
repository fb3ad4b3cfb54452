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
    /// Listens on `0.0.0.0:port` and `[::]:port` in `ns` (so on the VIPs held on lo too) and
    /// answers with `name`. The IPv6 socket is IPv6-only, so an IPv4 client is seen with its
    /// own address, not a mapped one; a namespace without IPv6 gets the IPv4 socket alone.
    pub fn start(ns: &Netns, port: u16, name: &str) -> Result<EchoServer> {
        let stop = Arc::new(AtomicBool::new(false));
        let mut listeners = vec![ns.within(move || TcpListener::bind(("0.0.0.0", port)))??];
        if let Ok(v6) = ns.within(move || {
            listen_v6_only(SocketAddr::from((std::net::Ipv6Addr::UNSPECIFIED, port)))
        })? {
            listeners.push(v6);
        }
        for listener in &listeners {
            listener.set_nonblocking(true)?;
        }
        let name = name.to_string();
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            while !flag.load(Ordering::Relaxed) {
                let mut idle = true;
                for listener in &listeners {
                    if let Ok((stream, _)) = listener.accept() {
                        idle = false;
                        let name = name.clone();
                        std::thread::spawn(move || serve(stream, &name));
                    }
                }
                if idle {
                    std::thread::sleep(Duration::from_millis(2));
                }
            }
        });
        Ok(EchoServer {
            stop,
            thread: Some(thread),
        })
    }
}

/// A TCP listener on IPv6 `addr` that takes IPv6 connections only (IPV6_V6ONLY), so an IPv4
/// listener can share its port.
fn listen_v6_only(addr: SocketAddr) -> Result<TcpListener> {
    use nix::sys::socket::{
        AddressFamily, Backlog, SockFlag, SockType, SockaddrIn6, bind, listen, setsockopt, socket,
        sockopt,
    };
    use std::os::fd::AsRawFd;
    let SocketAddr::V6(v6) = addr else {
        anyhow::bail!("{addr} is not an IPv6 address");
    };
    let fd = socket(
        AddressFamily::Inet6,
        SockType::Stream,
        SockFlag::SOCK_CLOEXEC,
        None,
    )?;
    setsockopt(&fd, sockopt::Ipv6V6Only, &true)?;
    setsockopt(&fd, sockopt::ReuseAddr, &true)?;
    bind(fd.as_raw_fd(), &SockaddrIn6::from(v6))?;
    listen(&fd, Backlog::new(128)?)?;
    Ok(TcpListener::from(fd))
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
    threads: Vec<JoinHandle<()>>,
}

impl UdpNameServer {
    /// Answers on `0.0.0.0:port` and, where the namespace has IPv6, `[::]:port`. A reply
    /// leaves from the address the kernel picks for the client (the host's own on the way
    /// there): right for NAT, where the reals' replies are translated. A DR real must answer
    /// from the VIP: `start_on` the VIP.
    pub fn start(ns: &Netns, port: u16, name: &str) -> Result<UdpNameServer> {
        let mut sockets = vec![ns.within(move || std::net::UdpSocket::bind(("0.0.0.0", port)))??];
        if let Ok(v6) = ns.within(move || {
            bind_udp_v6_only(SocketAddr::from((std::net::Ipv6Addr::UNSPECIFIED, port)))
        })? {
            sockets.push(v6);
        }
        UdpNameServer::serve(sockets, name)
    }

    /// Answers on `addr` only (a DR real's VIP: its replies then come from the VIP, as the
    /// client's connected socket requires).
    pub fn start_on(ns: &Netns, addr: SocketAddr, name: &str) -> Result<UdpNameServer> {
        let socket = ns.within(move || match addr {
            SocketAddr::V6(_) => bind_udp_v6_only(addr),
            SocketAddr::V4(_) => Ok(std::net::UdpSocket::bind(addr)?),
        })??;
        UdpNameServer::serve(vec![socket], name)
    }

    fn serve(sockets: Vec<std::net::UdpSocket>, name: &str) -> Result<UdpNameServer> {
        let stop = Arc::new(AtomicBool::new(false));
        let mut threads = Vec::new();
        for socket in sockets {
            socket.set_read_timeout(Some(Duration::from_millis(50)))?;
            let flag = stop.clone();
            let name = name.to_string();
            threads.push(std::thread::spawn(move || {
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
            }));
        }
        Ok(UdpNameServer { stop, threads })
    }
}

/// A UDP socket bound to IPv6 `addr`, IPv6 only (IPV6_V6ONLY), so an IPv4 socket can share
/// its port.
fn bind_udp_v6_only(addr: SocketAddr) -> Result<std::net::UdpSocket> {
    use nix::sys::socket::{
        AddressFamily, SockFlag, SockType, SockaddrIn6, bind, setsockopt, socket, sockopt,
    };
    use std::os::fd::AsRawFd;
    let SocketAddr::V6(v6) = addr else {
        anyhow::bail!("{addr} is not an IPv6 address");
    };
    let fd = socket(
        AddressFamily::Inet6,
        SockType::Datagram,
        SockFlag::SOCK_CLOEXEC,
        None,
    )?;
    setsockopt(&fd, sockopt::Ipv6V6Only, &true)?;
    bind(fd.as_raw_fd(), &SockaddrIn6::from(v6))?;
    Ok(std::net::UdpSocket::from(fd))
}

impl Drop for UdpNameServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
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
    let socket = std::net::UdpSocket::bind(if to.is_ipv6() { "[::]:0" } else { "0.0.0.0:0" })?;
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
