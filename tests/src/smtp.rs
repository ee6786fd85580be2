//! A real SMTP server on loopback that records what it receives: enough of RFC 5321 for
//! lettre (EHLO/HELO, AUTH PLAIN accepting any credentials and recording them, MAIL, RCPT, DATA
//! with dot-unstuffing, RSET, NOOP, QUIT), no TLS. It can be told to fail: answer a stage with
//! a code (421, 451, 550, ...) or drop the connection there, for the next N attempts, for a
//! share of all attempts, or always for one recipient.

use std::{
    collections::{HashMap, VecDeque},
    sync::{Arc, Mutex},
};

use tokio::{
    io::{AsyncBufReadExt, AsyncWriteExt, BufReader},
    net::TcpListener,
};

/// One message as received.
#[derive(Debug, Clone)]
pub struct Received {
    pub from: String,
    pub to: Vec<String>,
    /// The message (headers and body) exactly as sent, CRLF line ends.
    pub data: String,
    /// `user:password` of the session's `AUTH PLAIN`, if it authenticated.
    pub auth: Option<String>,
}

impl Received {
    /// The message with quoted-printable soft line breaks and `=XX` escapes undone, so links
    /// and text can be searched.
    pub fn decoded(&self) -> String {
        let joined = self.data.replace("=\r\n", "");
        let bytes = joined.as_bytes();
        let mut out = Vec::with_capacity(bytes.len());
        let mut i = 0;
        while i < bytes.len() {
            if bytes[i] == b'='
                && i + 2 < bytes.len()
                && let Ok(byte) = u8::from_str_radix(&joined[i + 1..i + 3], 16)
            {
                out.push(byte);
                i += 3;
                continue;
            }
            out.push(bytes[i]);
            i += 1;
        }
        String::from_utf8_lossy(&out).into_owned()
    }
}

/// Where in a session a fault strikes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Stage {
    /// The greeting.
    Connect,
    Mail,
    Rcpt,
    /// After the message was received, instead of accepting it (it is not recorded).
    Data,
}

/// What a fault does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Answer with this code (4xx transient, 5xx permanent); a 421 also closes the connection.
    Reply(u16),
    /// Close the connection without answering.
    Drop,
    /// At [`Stage::Data`]: keep the message (it counts as received), then close the connection
    /// without answering — the client cannot know it was accepted.
    AcceptThenDrop,
}

/// What the sink says about authentication.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Auth {
    /// Offers `AUTH PLAIN` and accepts any credentials (the default).
    #[default]
    Plain,
    /// Offers no authentication (a local mail sink).
    Absent,
    /// Offers `AUTH PLAIN` and refuses every credential with 535.
    Refused,
}

#[derive(Default)]
struct Faults {
    auth: Auth,
    connections: usize,
    next: VecDeque<(Stage, Fault)>,
    share: HashMap<Stage, (Fault, u32)>,
    recipients: HashMap<String, u16>,
    /// xorshift state: the same faults every run.
    seed: u64,
    injected: usize,
}

impl Faults {
    fn at(&mut self, stage: Stage) -> Option<Fault> {
        if let Some(i) = self.next.iter().position(|(s, _)| *s == stage) {
            self.injected += 1;
            return self.next.remove(i).map(|(_, f)| f);
        }
        let (fault, percent) = *self.share.get(&stage)?;
        self.seed ^= self.seed << 13;
        self.seed ^= self.seed >> 7;
        self.seed ^= self.seed << 17;
        (self.seed % 100 < u64::from(percent)).then(|| {
            self.injected += 1;
            fault
        })
    }
}

/// The server; dropped with the test.
pub struct SmtpSink {
    pub port: u16,
    received: Arc<Mutex<Vec<Received>>>,
    faults: Arc<Mutex<Faults>>,
}

impl SmtpSink {
    /// # Panics
    /// When no loopback port can be bound.
    pub async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .unwrap_or_else(|e| panic!("binding the SMTP sink: {e}"));
        let port = listener
            .local_addr()
            .unwrap_or_else(|e| panic!("{e}"))
            .port();
        let received = Arc::new(Mutex::new(Vec::new()));
        let faults = Arc::new(Mutex::new(Faults {
            seed: 0x9E37_79B9_7F4A_7C15,
            ..Faults::default()
        }));
        let (store, injected) = (received.clone(), faults.clone());
        tokio::spawn(async move {
            while let Ok((socket, _)) = listener.accept().await {
                tokio::spawn(session(socket, store.clone(), injected.clone()));
            }
        });
        Self {
            port,
            received,
            faults,
        }
    }

    fn faults(&self) -> std::sync::MutexGuard<'_, Faults> {
        self.faults
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The next `times` sessions reaching `stage` get `fault`.
    pub fn fail_next(&self, stage: Stage, fault: Fault, times: usize) {
        self.faults()
            .next
            .extend(std::iter::repeat_n((stage, fault), times));
    }

    /// `percent` of everything reaching `stage` gets `fault` (pseudo-random, the same each run).
    pub fn fail_share(&self, stage: Stage, fault: Fault, percent: u32) {
        self.faults().share.insert(stage, (fault, percent));
    }

    /// `RCPT TO` this address is always answered with `code`.
    pub fn reject_recipient(&self, address: &str, code: u16) {
        self.faults()
            .recipients
            .insert(address.to_ascii_lowercase(), code);
    }

    /// How many faults were injected so far.
    /// Sets what the sink says about authentication from the next command on.
    pub fn set_auth(&self, auth: Auth) {
        self.faults().auth = auth;
    }

    /// TCP connections accepted so far.
    pub fn connections(&self) -> usize {
        self.faults().connections
    }

    pub fn injected(&self) -> usize {
        self.faults().injected
    }

    /// What arrived so far.
    pub fn messages(&self) -> Vec<Received> {
        self.received.lock().map(|m| m.clone()).unwrap_or_default()
    }

    /// How many messages arrived so far.
    pub fn received(&self) -> usize {
        self.received.lock().map(|m| m.len()).unwrap_or_default()
    }

    /// Settings that send system email here.
    pub fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("ZOARK_EMAIL_TRANSPORT", "smtp".into()),
            ("ZOARK_SMTP_HOST", "127.0.0.1".into()),
            ("ZOARK_SMTP_PORT", self.port.to_string()),
            ("ZOARK_SMTP_SECURITY", "none".into()),
            ("ZOARK_EMAIL_FROM", "Zoark <no-reply@zoark.test>".into()),
        ]
    }
}

fn fault_at(faults: &Mutex<Faults>, stage: Stage) -> Option<Fault> {
    faults
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .at(stage)
}

fn reply_for(code: u16) -> Vec<u8> {
    let text = match code {
        421 => "service not available, closing channel",
        450 | 451 => "requested action aborted: local error, try again later",
        452 => "insufficient system storage",
        550 => "mailbox unavailable: no such user",
        552 => "exceeded storage allocation",
        553 => "mailbox name not allowed",
        554 => "transaction failed",
        _ => "injected failure",
    };
    format!("{code} {text}\r\n").into_bytes()
}

async fn session(
    socket: tokio::net::TcpStream,
    store: Arc<Mutex<Vec<Received>>>,
    faults: Arc<Mutex<Faults>>,
) {
    let (read, mut write) = socket.into_split();
    let mut lines = BufReader::new(read);
    faults
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .connections += 1;
    match fault_at(&faults, Stage::Connect) {
        Some(Fault::Drop | Fault::AcceptThenDrop) => return,
        Some(Fault::Reply(code)) => {
            let _ = write.write_all(&reply_for(code)).await;
            return;
        }
        None => {}
    }
    let _ = write.write_all(b"220 zoark-test ESMTP\r\n").await;
    let (mut from, mut to) = (String::new(), Vec::new());
    let mut auth: Option<String> = None;
    let mut line = String::new();
    loop {
        line.clear();
        if lines.read_line(&mut line).await.unwrap_or(0) == 0 {
            return;
        }
        let command = line.trim_end().to_owned();
        let upper = command.to_ascii_uppercase();
        let stage = if upper.starts_with("MAIL FROM:") {
            Some(Stage::Mail)
        } else if upper.starts_with("RCPT TO:") {
            Some(Stage::Rcpt)
        } else {
            None
        };
        let mut fault = stage.and_then(|stage| fault_at(&faults, stage));
        if stage == Some(Stage::Rcpt) && fault.is_none() {
            let address = command[8..]
                .trim()
                .trim_matches(['<', '>'])
                .to_ascii_lowercase();
            let rejected = faults
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .recipients
                .get(&address)
                .copied();
            fault = rejected.map(Fault::Reply);
        }
        match fault {
            Some(Fault::Drop | Fault::AcceptThenDrop) => return,
            Some(Fault::Reply(code)) => {
                if write.write_all(&reply_for(code)).await.is_err() || code == 421 {
                    return;
                }
                continue;
            }
            None => {}
        }
        let mode = faults
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .auth;
        let reply: &[u8] = if upper.starts_with("EHLO") {
            if mode == Auth::Absent {
                b"250-zoark-test\r\n250 8BITMIME\r\n"
            } else {
                b"250-zoark-test\r\n250-AUTH PLAIN\r\n250 8BITMIME\r\n"
            }
        } else if upper.starts_with("AUTH") && mode != Auth::Plain {
            b"535 5.7.8 authentication credentials invalid\r\n"
        } else if upper.starts_with("AUTH PLAIN ") {
            use base64::Engine as _;
            let decoded = base64::engine::general_purpose::STANDARD
                .decode(command[11..].trim())
                .unwrap_or_default();
            let parts: Vec<String> = decoded
                .split(|b| *b == 0)
                .map(|p| String::from_utf8_lossy(p).into_owned())
                .collect();
            auth = parts.get(1..3).map(|p| format!("{}:{}", p[0], p[1]));
            b"235 authenticated\r\n"
        } else if upper.starts_with("HELO") || upper.starts_with("NOOP") {
            b"250 OK\r\n"
        } else if upper.starts_with("MAIL FROM:") {
            from = command[10..].trim().to_owned();
            to.clear();
            b"250 OK\r\n"
        } else if upper.starts_with("RCPT TO:") {
            to.push(command[8..].trim().to_owned());
            b"250 OK\r\n"
        } else if upper.starts_with("RSET") {
            from.clear();
            to.clear();
            b"250 OK\r\n"
        } else if upper == "DATA" {
            let _ = write.write_all(b"354 end with <CRLF>.<CRLF>\r\n").await;
            let mut data = String::new();
            loop {
                line.clear();
                if lines.read_line(&mut line).await.unwrap_or(0) == 0 {
                    return;
                }
                if line == ".\r\n" || line == ".\n" {
                    break;
                }
                data.push_str(line.strip_prefix('.').unwrap_or(&line));
            }
            let fault = fault_at(&faults, Stage::Data);
            if matches!(fault, None | Some(Fault::AcceptThenDrop))
                && let Ok(mut messages) = store.lock()
            {
                messages.push(Received {
                    from: from.clone(),
                    to: to.clone(),
                    data: data.clone(),
                    auth: auth.clone(),
                });
            }
            match fault {
                Some(Fault::Drop | Fault::AcceptThenDrop) => return,
                Some(Fault::Reply(code)) => {
                    if write.write_all(&reply_for(code)).await.is_err() || code == 421 {
                        return;
                    }
                    continue;
                }
                None => {}
            }
            b"250 OK queued\r\n"
        } else if upper.starts_with("QUIT") {
            let _ = write.write_all(b"221 bye\r\n").await;
            return;
        } else {
            b"502 command not implemented\r\n"
        };
        if write.write_all(reply).await.is_err() {
            return;
        }
    }
}
