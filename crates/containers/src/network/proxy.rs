//! Published ports: a listener on the host address and port that relays to the container's
//! address, as Docker's userland proxy does. A relay rather than a DNAT rule, because DNAT in
//! PREROUTING never sees connections the host makes to itself (127.0.0.1, its own addresses),
//! and a relay serves those and outside clients alike. The container sees the host's bridge
//! address as the client's.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::task::JoinHandle;

use crate::error::{Error, Result};

/// How long a UDP client's relay socket lives without traffic.
const UDP_IDLE: Duration = Duration::from_secs(60);

fn bind_error(address: SocketAddr) -> impl FnOnce(std::io::Error) -> Error {
    move |error| match error.kind() {
        std::io::ErrorKind::AddrInUse => {
            Error::Network(format!("Bind for {address} failed: port is already allocated"))
        }
        _ => Error::Network(format!("cannot listen on {address}: {error}")),
    }
}

/// Listens on `listen` and relays each TCP connection to `target`. Returns the bound address (the
/// kernel picks the port when `listen`'s is 0) and the task; aborting it closes the listener.
pub async fn tcp(listen: SocketAddr, target: SocketAddr) -> Result<(SocketAddr, JoinHandle<()>)> {
    let listener = TcpListener::bind(listen).await.map_err(bind_error(listen))?;
    let bound = listener.local_addr().map_err(bind_error(listen))?;
    let task = tokio::spawn(async move {
        let mut connections = tokio::task::JoinSet::new();
        loop {
            tokio::select! {
                accepted = listener.accept() => match accepted {
                    Ok((client, _)) => {
                        connections.spawn(relay_tcp(client, target));
                    }
                    Err(error) => {
                        tracing::debug!(%error, "port proxy: accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                },
                Some(_) = connections.join_next(), if !connections.is_empty() => {}
            }
        }
    });
    Ok((bound, task))
}

async fn relay_tcp(mut client: TcpStream, target: SocketAddr) {
    match TcpStream::connect(target).await {
        Ok(mut server) => {
            let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
        }
        Err(error) => tracing::debug!(%target, %error, "port proxy: the container refused"),
    }
}

/// Listens on `listen` for datagrams; each client gets its own socket towards `target`, whose
/// replies go back to that client.
pub async fn udp(listen: SocketAddr, target: SocketAddr) -> Result<(SocketAddr, JoinHandle<()>)> {
    let socket = Arc::new(UdpSocket::bind(listen).await.map_err(bind_error(listen))?);
    let bound = socket.local_addr().map_err(bind_error(listen))?;
    let task = tokio::spawn(async move {
        let mut clients: HashMap<SocketAddr, Arc<UdpSocket>> = HashMap::new();
        let mut relays = tokio::task::JoinSet::new();
        let (ended_tx, mut ended) = tokio::sync::mpsc::unbounded_channel::<SocketAddr>();
        let mut buffer = vec![0u8; 65536];
        loop {
            tokio::select! {
                received = socket.recv_from(&mut buffer) => {
                    let Ok((length, client)) = received else { continue };
                    let datagram = buffer.get(..length).unwrap_or_default();
                    let upstream = match clients.get(&client) {
                        Some(upstream) => upstream.clone(),
                        None => match connect_udp(target).await {
                            Ok(upstream) => {
                                let upstream = Arc::new(upstream);
                                clients.insert(client, upstream.clone());
                                relays.spawn(relay_replies(socket.clone(), upstream.clone(), client, ended_tx.clone()));
                                upstream
                            }
                            Err(error) => {
                                tracing::debug!(%target, %error, "port proxy: cannot reach the container");
                                continue;
                            }
                        },
                    };
                    let _ = upstream.send(datagram).await;
                }
                Some(client) = ended.recv() => {
                    clients.remove(&client);
                }
                Some(_) = relays.join_next(), if !relays.is_empty() => {}
            }
        }
    });
    Ok((bound, task))
}

async fn connect_udp(target: SocketAddr) -> std::io::Result<UdpSocket> {
    let upstream = UdpSocket::bind(SocketAddr::from(([0, 0, 0, 0], 0))).await?;
    upstream.connect(target).await?;
    Ok(upstream)
}

async fn relay_replies(
    socket: Arc<UdpSocket>,
    upstream: Arc<UdpSocket>,
    client: SocketAddr,
    ended: tokio::sync::mpsc::UnboundedSender<SocketAddr>,
) {
    let mut buffer = vec![0u8; 65536];
    while let Ok(Ok(length)) = tokio::time::timeout(UDP_IDLE, upstream.recv(&mut buffer)).await {
        let _ = socket.send_to(buffer.get(..length).unwrap_or_default(), client).await;
    }
    let _ = ended.send(client);
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    fn any_port() -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], 0))
    }

    #[tokio::test]
    async fn tcp_connections_are_relayed_both_ways() {
        let server = TcpListener::bind(any_port()).await.unwrap();
        let target = server.local_addr().unwrap();
        tokio::spawn(async move {
            let (mut stream, _) = server.accept().await.unwrap();
            let mut buffer = [0u8; 5];
            stream.read_exact(&mut buffer).await.unwrap();
            stream.write_all(&[b"echo ".as_slice(), &buffer].concat()).await.unwrap();
        });
        let (bound, task) = tcp(any_port(), target).await.unwrap();
        let mut client = TcpStream::connect(bound).await.unwrap();
        client.write_all(b"hello").await.unwrap();
        let mut reply = Vec::new();
        client.read_to_end(&mut reply).await.unwrap();
        assert_eq!(reply, b"echo hello");
        let taken = tcp(bound, target).await.err().unwrap().to_string();
        assert!(taken.contains("port is already allocated"), "{taken}");
        task.abort();
    }

    #[tokio::test]
    async fn udp_datagrams_are_relayed_and_replies_reach_their_client() {
        let server = UdpSocket::bind(any_port()).await.unwrap();
        let target = server.local_addr().unwrap();
        tokio::spawn(async move {
            let mut buffer = [0u8; 64];
            loop {
                let (length, from) = server.recv_from(&mut buffer).await.unwrap();
                let reply = [b"echo ".as_slice(), &buffer[..length]].concat();
                server.send_to(&reply, from).await.unwrap();
            }
        });
        let (bound, task) = udp(any_port(), target).await.unwrap();
        for name in [b"one".as_slice(), b"two"] {
            let client = UdpSocket::bind(any_port()).await.unwrap();
            client.send_to(name, bound).await.unwrap();
            let mut buffer = [0u8; 64];
            let length = tokio::time::timeout(Duration::from_secs(5), client.recv(&mut buffer)).await.unwrap().unwrap();
            assert_eq!(&buffer[..length], [b"echo ".as_slice(), name].concat().as_slice());
        }
        task.abort();
    }
}
