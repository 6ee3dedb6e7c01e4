//! The embedded DNS server of user-defined networks: each container on one gets a UDP socket and
//! a TCP listener at 127.0.0.11:53 inside its own network namespace (opened there, served from
//! here), as Docker's. Names of containers sharing a network with it (their names, aliases and
//! short ids) are answered from the running endpoints; every other question is relayed to the
//! host's resolvers from the host's namespace, so a resolver on the host's loopback works too.

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use hickory_proto::op::{Message, MessageType, ResponseCode};
use hickory_proto::rr::rdata::A;
use hickory_proto::rr::{DNSClass, RData, Record, RecordType};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::task::{JoinHandle, JoinSet};

use crate::error::{Error, Result};

/// The TTL Docker's resolver gives container names.
const TTL: u32 = 600;
/// How long a relayed question waits for the host's resolver.
const UPSTREAM_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a TCP client may keep a connection without asking anything.
const IDLE_TIMEOUT: Duration = Duration::from_secs(10);

/// The addresses a name has for the asking container; empty when it is not a container's.
pub type Lookup = Arc<dyn Fn(&str) -> Vec<Ipv4Addr> + Send + Sync>;

/// The server's sockets, bound in a container's network namespace.
pub struct Sockets {
    udp: std::net::UdpSocket,
    tcp: std::net::TcpListener,
}

impl Sockets {
    /// Binds `address`:53 for UDP and TCP in the calling thread's network namespace.
    pub fn bind(address: Ipv4Addr) -> Result<Sockets> {
        let at = SocketAddr::from((address, 53));
        let failed = |e: std::io::Error| Error::Network(format!("cannot open the DNS server's sockets: {e}"));
        let udp = std::net::UdpSocket::bind(at).map_err(failed)?;
        let tcp = std::net::TcpListener::bind(at).map_err(failed)?;
        udp.set_nonblocking(true).map_err(failed)?;
        tcp.set_nonblocking(true).map_err(failed)?;
        Ok(Sockets { udp, tcp })
    }
}

/// How a question arrived, which decides how a relayed one may be answered.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Transport {
    Udp,
    Tcp,
}

struct Resolver {
    lookup: Lookup,
    upstreams: Arc<Vec<SocketAddr>>,
}

/// Answers questions arriving on `sockets` until the returned task is aborted.
pub fn spawn(sockets: Sockets, lookup: Lookup, upstreams: Arc<Vec<SocketAddr>>) -> Result<JoinHandle<()>> {
    let failed = |e: std::io::Error| Error::Network(format!("cannot serve the DNS server's sockets: {e}"));
    let udp = UdpSocket::from_std(sockets.udp).map_err(failed)?;
    let tcp = TcpListener::from_std(sockets.tcp).map_err(failed)?;
    let resolver = Arc::new(Resolver { lookup, upstreams });
    Ok(tokio::spawn(async move {
        tokio::join!(serve_udp(udp, resolver.clone()), serve_tcp(tcp, resolver));
    }))
}

async fn serve_udp(socket: UdpSocket, resolver: Arc<Resolver>) {
    let socket = Arc::new(socket);
    let mut buffer = vec![0u8; 4096];
    let mut pending = JoinSet::new();
    loop {
        tokio::select! {
            received = socket.recv_from(&mut buffer) => {
                let Ok((length, client)) = received else { continue };
                let question = buffer.get(..length).unwrap_or_default().to_vec();
                let (socket, resolver) = (socket.clone(), resolver.clone());
                pending.spawn(async move {
                    if let Some(answer) = resolver.answer(&question, Transport::Udp).await {
                        let _ = socket.send_to(&answer, client).await;
                    }
                });
            }
            Some(_) = pending.join_next(), if !pending.is_empty() => {}
        }
    }
}

async fn serve_tcp(listener: TcpListener, resolver: Arc<Resolver>) {
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    connections.spawn(converse(stream, resolver.clone()));
                }
                // Out of descriptors, say: wait rather than spin.
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            },
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
}

/// One TCP client's questions, answered in turn until it closes or goes idle.
async fn converse(mut stream: TcpStream, resolver: Arc<Resolver>) {
    while let Ok(Ok(question)) = tokio::time::timeout(IDLE_TIMEOUT, read_framed(&mut stream)).await {
        let Some(answer) = resolver.answer(&question, Transport::Tcp).await else { return };
        if write_framed(&mut stream, &answer).await.is_err() {
            return;
        }
    }
}

// DNS over TCP puts each message behind its length in two bytes (RFC 1035 4.2.2); framed here by
// hand because hickory-proto's TCP streams come with its whole client machinery.
async fn read_framed(stream: &mut TcpStream) -> std::io::Result<Vec<u8>> {
    let length = stream.read_u16().await?;
    let mut message = vec![0u8; usize::from(length)];
    stream.read_exact(&mut message).await?;
    Ok(message)
}

async fn write_framed(stream: &mut TcpStream, message: &[u8]) -> std::io::Result<()> {
    let length = u16::try_from(message.len()).map_err(|_| std::io::ErrorKind::InvalidData)?;
    let mut framed = length.to_be_bytes().to_vec();
    framed.extend_from_slice(message);
    stream.write_all(&framed).await
}

impl Resolver {
    async fn answer(&self, question: &[u8], transport: Transport) -> Option<Vec<u8>> {
        let message = Message::from_vec(question).ok()?;
        if message.metadata.message_type != MessageType::Query {
            return None;
        }
        if let Some(local) = answer_locally(&message, &self.lookup) {
            return local.to_vec().ok();
        }
        for upstream in self.upstreams.iter() {
            if let Some(reply) = relay(question, *upstream, transport).await {
                return Some(reply);
            }
        }
        let mut failed = Message::error_msg(message.metadata.id, message.metadata.op_code, ResponseCode::ServFail);
        failed.add_queries(message.queries.clone());
        failed.to_vec().ok()
    }
}

/// The answer for a container's name (A records; no records for other types), or `None` when the
/// question is not about a container.
pub fn answer_locally(message: &Message, lookup: &Lookup) -> Option<Message> {
    let [query] = message.queries.as_slice() else { return None };
    if query.query_class() != DNSClass::IN {
        return None;
    }
    let name = query.name().to_lowercase().to_ascii();
    let addresses = lookup(name.trim_end_matches('.'));
    if addresses.is_empty() {
        return None;
    }
    let mut response = Message::response(message.metadata.id, message.metadata.op_code);
    response.metadata.recursion_desired = message.metadata.recursion_desired;
    response.metadata.recursion_available = true;
    response.add_query(query.clone());
    if matches!(query.query_type(), RecordType::A | RecordType::ANY) {
        for address in addresses {
            response.add_answer(Record::from_rdata(query.name().clone(), TTL, RData::A(A(address))));
        }
    }
    Some(response)
}

/// Asks `upstream` over UDP first; a question that came over TCP and whose answer did not fit is
/// asked again over TCP (a UDP client retries over TCP itself on seeing the truncation).
async fn relay(question: &[u8], upstream: SocketAddr, transport: Transport) -> Option<Vec<u8>> {
    let reply = relay_udp(question, upstream).await?;
    let truncated = Message::from_vec(&reply).is_ok_and(|m| m.metadata.truncation);
    if transport == Transport::Tcp && truncated {
        return relay_tcp(question, upstream).await.or(Some(reply));
    }
    Some(reply)
}

async fn relay_udp(question: &[u8], upstream: SocketAddr) -> Option<Vec<u8>> {
    let local: SocketAddr = if upstream.is_ipv4() { ([0, 0, 0, 0], 0).into() } else { ([0u16; 8], 0).into() };
    let socket = UdpSocket::bind(local).await.ok()?;
    socket.connect(upstream).await.ok()?;
    socket.send(question).await.ok()?;
    let mut buffer = vec![0u8; 4096];
    let length = tokio::time::timeout(UPSTREAM_TIMEOUT, socket.recv(&mut buffer)).await.ok()?.ok()?;
    buffer.truncate(length);
    Some(buffer)
}

async fn relay_tcp(question: &[u8], upstream: SocketAddr) -> Option<Vec<u8>> {
    let exchange = async {
        let mut stream = TcpStream::connect(upstream).await?;
        write_framed(&mut stream, question).await?;
        read_framed(&mut stream).await
    };
    let reply = tokio::time::timeout(UPSTREAM_TIMEOUT, exchange).await.ok()?.ok()?;
    Message::from_vec(&reply).is_ok().then_some(reply)
}

/// The nameservers of a resolv.conf.
pub fn nameservers(resolv_conf: &str) -> Vec<std::net::IpAddr> {
    resolv_conf
        .lines()
        .filter_map(|line| line.trim().strip_prefix("nameserver"))
        .filter_map(|rest| rest.trim().parse().ok())
        .collect()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use hickory_proto::op::Query;
    use hickory_proto::rr::Name;

    use super::*;

    fn ask(name: &str, kind: RecordType) -> Message {
        let mut message = Message::query();
        message.metadata.recursion_desired = true;
        message.add_query(Query::query(Name::from_ascii(name).unwrap(), kind));
        Message::from_vec(&message.to_vec().unwrap()).unwrap()
    }

    /// An upstream whose UDP answers are truncated and whose TCP answers are whole, on one port.
    async fn upstream() -> SocketAddr {
        let udp = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let at = udp.local_addr().unwrap();
        let tcp = TcpListener::bind(at).await.unwrap();
        let reply = |question: &[u8], truncated: bool| {
            let question = Message::from_vec(question).unwrap();
            let mut reply = Message::response(question.metadata.id, question.metadata.op_code);
            reply.metadata.truncation = truncated;
            reply.add_queries(question.queries.clone());
            if !truncated {
                let name = question.queries[0].name().clone();
                reply.add_answer(Record::from_rdata(name, 60, RData::A(A(Ipv4Addr::new(192, 0, 2, 1)))));
            }
            reply.to_vec().unwrap()
        };
        tokio::spawn(async move {
            let mut buffer = vec![0u8; 512];
            while let Ok((length, client)) = udp.recv_from(&mut buffer).await {
                udp.send_to(&reply(&buffer[..length], true), client).await.unwrap();
            }
        });
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = tcp.accept().await {
                let question = read_framed(&mut stream).await.unwrap();
                write_framed(&mut stream, &reply(&question, false)).await.unwrap();
            }
        });
        at
    }

    #[tokio::test]
    async fn a_truncated_relay_is_asked_again_over_tcp_for_a_tcp_client() {
        let upstream = upstream().await;
        let question = ask("example.com.", RecordType::A).to_vec().unwrap();
        let over_tcp = Message::from_vec(&relay(&question, upstream, Transport::Tcp).await.unwrap()).unwrap();
        assert!(!over_tcp.metadata.truncation && over_tcp.answers.len() == 1);
        let over_udp = Message::from_vec(&relay(&question, upstream, Transport::Udp).await.unwrap()).unwrap();
        assert!(over_udp.metadata.truncation && over_udp.answers.is_empty(), "a UDP client retries itself");
    }

    #[test]
    fn container_names_are_answered_and_others_are_not() {
        let lookup: Lookup = Arc::new(|name| match name {
            "web" => vec![Ipv4Addr::new(172, 18, 0, 2)],
            _ => Vec::new(),
        });
        let answer = answer_locally(&ask("WEB.", RecordType::A), &lookup).unwrap();
        assert_eq!(answer.metadata.message_type, MessageType::Response);
        assert_eq!(answer.answers.len(), 1);
        assert_eq!(answer.answers[0].data, RData::A(A(Ipv4Addr::new(172, 18, 0, 2))));
        let empty = answer_locally(&ask("web", RecordType::AAAA), &lookup).unwrap();
        assert!(empty.answers.is_empty() && empty.metadata.response_code == ResponseCode::NoError);
        assert!(answer_locally(&ask("example.com", RecordType::A), &lookup).is_none());
        assert_eq!(
            nameservers("# x\nnameserver 10.0.0.53\nsearch a\nnameserver ::1\n"),
            vec!["10.0.0.53".parse::<std::net::IpAddr>().unwrap(), "::1".parse().unwrap()]
        );
    }
}
