//! The embedded DNS server of user-defined networks: each container on one gets a UDP socket at
//! 127.0.0.11:53 inside its own network namespace (opened there, served from here). Names of
//! containers sharing a network with it (their names, aliases and short ids) are answered from
//! the running endpoints; every other question is relayed to the host's resolvers from the
//! host's namespace, so a resolver on the host's loopback works too.

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use hickory_proto::op::{Message, MessageType, ResponseCode};
use hickory_proto::rr::rdata::A;
use hickory_proto::rr::{DNSClass, RData, Record, RecordType};
use tokio::net::UdpSocket;

/// The TTL Docker's resolver gives container names.
const TTL: u32 = 600;
/// How long a relayed question waits for the host's resolver.
const UPSTREAM_TIMEOUT: Duration = Duration::from_secs(5);

/// The addresses a name has for the asking container; empty when it is not a container's.
pub type Lookup = Arc<dyn Fn(&str) -> Vec<Ipv4Addr> + Send + Sync>;

/// Answers questions arriving on `socket` until the task is aborted.
pub async fn serve(socket: UdpSocket, lookup: Lookup, upstreams: Arc<Vec<SocketAddr>>) {
    let socket = Arc::new(socket);
    let mut buffer = vec![0u8; 4096];
    let mut pending = tokio::task::JoinSet::new();
    loop {
        tokio::select! {
            received = socket.recv_from(&mut buffer) => {
                let Ok((length, client)) = received else { continue };
                let question = buffer.get(..length).unwrap_or_default().to_vec();
                let (socket, lookup, upstreams) = (socket.clone(), lookup.clone(), upstreams.clone());
                pending.spawn(async move {
                    if let Some(answer) = answer(&question, &lookup, &upstreams).await {
                        let _ = socket.send_to(&answer, client).await;
                    }
                });
            }
            Some(_) = pending.join_next(), if !pending.is_empty() => {}
        }
    }
}

async fn answer(question: &[u8], lookup: &Lookup, upstreams: &[SocketAddr]) -> Option<Vec<u8>> {
    let message = Message::from_vec(question).ok()?;
    if message.metadata.message_type != MessageType::Query {
        return None;
    }
    if let Some(local) = answer_locally(&message, lookup) {
        return local.to_vec().ok();
    }
    for upstream in upstreams {
        if let Some(reply) = relay(question, *upstream).await {
            return Some(reply);
        }
    }
    let mut failed = Message::error_msg(message.metadata.id, message.metadata.op_code, ResponseCode::ServFail);
    failed.add_queries(message.queries.clone());
    failed.to_vec().ok()
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

async fn relay(question: &[u8], upstream: SocketAddr) -> Option<Vec<u8>> {
    let local: SocketAddr = if upstream.is_ipv4() { ([0, 0, 0, 0], 0).into() } else { ([0u16; 8], 0).into() };
    let socket = UdpSocket::bind(local).await.ok()?;
    socket.connect(upstream).await.ok()?;
    socket.send(question).await.ok()?;
    let mut buffer = vec![0u8; 4096];
    let length = tokio::time::timeout(UPSTREAM_TIMEOUT, socket.recv(&mut buffer)).await.ok()?.ok()?;
    buffer.truncate(length);
    Some(buffer)
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
