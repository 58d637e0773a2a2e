//! A loopback TCP proxy that a test can cut and restore, to partition one client (say one
//! replica) from a server (say Redis) while everyone else still reaches it.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// A proxy from a port-0 loopback listener to `upstream`.
#[derive(Debug)]
pub struct TcpProxy {
    addr: SocketAddr,
    cut: Arc<AtomicBool>,
    /// Bumped on every cut, which closes every open connection.
    generation: watch::Sender<u64>,
    accepted: Arc<AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

impl TcpProxy {
    /// Starts forwarding to `upstream`.
    pub async fn start(upstream: SocketAddr) -> TcpProxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
        let addr = listener.local_addr().expect("proxy address");
        let cut = Arc::new(AtomicBool::new(false));
        let (generation, _) = watch::channel(0u64);
        let accepted = Arc::new(AtomicU64::new(0));
        let task = {
            let cut = Arc::clone(&cut);
            let generation = generation.clone();
            let accepted = Arc::clone(&accepted);
            tokio::spawn(async move {
                loop {
                    let Ok((mut client, _)) = listener.accept().await else {
                        continue;
                    };
                    if cut.load(Ordering::Acquire) {
                        // Refused: close at once, as a partitioned peer would look to the client.
                        let _ = client.shutdown().await;
                        continue;
                    }
                    accepted.fetch_add(1, Ordering::Relaxed);
                    let mut closed = generation.subscribe();
                    let start = *closed.borrow_and_update();
                    tokio::spawn(async move {
                        let Ok(mut server) = TcpStream::connect(upstream).await else {
                            return;
                        };
                        tokio::select! {
                            _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
                            _ = closed.wait_for(|g| *g != start) => {}
                        }
                    });
                }
            })
        };
        TcpProxy {
            addr,
            cut,
            generation,
            accepted,
            task,
        }
    }

    /// The address clients connect to.
    #[must_use]
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Closes every open connection and refuses new ones until [`TcpProxy::restore`].
    pub fn cut(&self) {
        self.cut.store(true, Ordering::Release);
        self.generation.send_modify(|g| *g += 1);
    }

    /// Forwards again.
    pub fn restore(&self) {
        self.cut.store(false, Ordering::Release);
    }

    /// Connections forwarded so far.
    #[must_use]
    pub fn accepted(&self) -> u64 {
        self.accepted.load(Ordering::Relaxed)
    }
}

impl Drop for TcpProxy {
    fn drop(&mut self) {
        self.cut();
        self.task.abort();
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    async fn echo_server() -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            loop {
                let (mut s, _) = listener.accept().await.unwrap();
                tokio::spawn(async move {
                    let (mut r, mut w) = s.split();
                    let _ = tokio::io::copy(&mut r, &mut w).await;
                });
            }
        });
        addr
    }

    async fn round_trip(addr: SocketAddr) -> std::io::Result<Vec<u8>> {
        let mut s = TcpStream::connect(addr).await?;
        s.write_all(b"ping").await?;
        let mut buf = [0u8; 4];
        s.read_exact(&mut buf).await?;
        Ok(buf.to_vec())
    }

    #[tokio::test]
    async fn forwards_then_cuts_then_forwards_again() {
        let proxy = TcpProxy::start(echo_server().await).await;
        assert_eq!(round_trip(proxy.addr()).await.unwrap(), b"ping");
        let mut open = TcpStream::connect(proxy.addr()).await.unwrap();
        open.write_all(b"x").await.unwrap();
        let mut one = [0u8; 1];
        open.read_exact(&mut one).await.unwrap();
        proxy.cut();
        assert!(
            round_trip(proxy.addr()).await.is_err(),
            "new connections refused"
        );
        let mut rest = Vec::new();
        let n = open.read_to_end(&mut rest).await.unwrap_or(0);
        assert_eq!(n, 0, "open connections closed");
        proxy.restore();
        assert_eq!(round_trip(proxy.addr()).await.unwrap(), b"ping");
        assert_eq!(proxy.accepted(), 3);
    }
}
