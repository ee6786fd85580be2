//! A TCP proxy the test can cut and restore, to make Postgres "go away" for one app without
//! stopping the server every other test shares.

use std::sync::{Arc, Mutex};

use tokio::{
    io::AsyncReadExt,
    net::{TcpListener, TcpStream},
};
use tokio_util::sync::CancellationToken;

pub struct TcpProxy {
    pub port: u16,
    state: Arc<Mutex<State>>,
    stop: CancellationToken,
}

struct State {
    up: bool,
    /// Accept connections but never forward a byte: a database that hangs.
    stalled: bool,
    connections: CancellationToken,
    /// Cancelled by [`TcpProxy::hang`]: open connections stop forwarding.
    frozen: CancellationToken,
}

impl TcpProxy {
    /// Forwards `127.0.0.1:<port>` to `target` (`host:port`).
    pub async fn start(target: String) -> std::io::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let port = listener.local_addr()?.port();
        let state = Arc::new(Mutex::new(State {
            up: true,
            stalled: false,
            connections: CancellationToken::new(),
            frozen: CancellationToken::new(),
        }));
        let stop = CancellationToken::new();
        let (s, st) = (state.clone(), stop.clone());
        tokio::spawn(async move {
            loop {
                let accepted = tokio::select! {
                    a = listener.accept() => a,
                    _ = st.cancelled() => return,
                };
                let Ok((mut inbound, _)) = accepted else {
                    continue;
                };
                let (up, stalled, token, frozen) = match s.lock() {
                    Ok(g) => (g.up, g.stalled, g.connections.clone(), g.frozen.clone()),
                    Err(_) => return,
                };
                if !up {
                    drop(inbound);
                    continue;
                }
                if stalled {
                    tokio::spawn(async move {
                        token.cancelled().await;
                        drop(inbound);
                    });
                    continue;
                }
                let target = target.clone();
                tokio::spawn(async move {
                    let Ok(mut outbound) = TcpStream::connect(&target).await else {
                        return;
                    };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
                        _ = token.cancelled() => {}
                        _ = frozen.cancelled() => {
                            // Nothing more reaches either end, but both stay open until the
                            // client hangs up (then the server sees it go) or the proxy is cut.
                            let mut discard = [0_u8; 4096];
                            loop {
                                tokio::select! {
                                    read = inbound.read(&mut discard) => {
                                        if !matches!(read, Ok(n) if n > 0) {
                                            break;
                                        }
                                    }
                                    _ = token.cancelled() => break,
                                }
                            }
                        }
                    }
                });
            }
        });
        Ok(Self { port, state, stop })
    }

    /// Cuts every open connection and refuses new ones.
    pub fn cut(&self) {
        if let Ok(mut g) = self.state.lock() {
            g.up = false;
            g.connections.cancel();
            g.connections = CancellationToken::new();
        }
    }

    /// Accepts connections and then hangs them, like an overloaded server.
    pub fn stall(&self) {
        if let Ok(mut g) = self.state.lock() {
            g.stalled = true;
        }
    }

    /// Hangs new connections as [`Self::stall`] does, and open ones too: they stay open but
    /// forward nothing more, like a database that stopped answering mid-session. A client that
    /// gives up and closes its end closes the server's end as well.
    pub fn hang(&self) {
        if let Ok(mut g) = self.state.lock() {
            g.stalled = true;
            g.frozen.cancel();
            g.frozen = CancellationToken::new();
        }
    }

    /// Accepts connections again.
    pub fn restore(&self) {
        if let Ok(mut g) = self.state.lock() {
            g.up = true;
            g.stalled = false;
        }
    }
}

impl Drop for TcpProxy {
    fn drop(&mut self) {
        self.stop.cancel();
        self.cut();
    }
}
