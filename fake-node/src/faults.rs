//! The garbage a faulty node sends: the bytes of each [`Fault`] that is not a TS3AudioBot
//! failure (invalid JSON, wrong types, huge bodies, not HTTP, a reset mid-answer, another
//! web server), written straight to the connection.
//!
//! Owns: those bytes and how they are written (streamed from a small buffer for huge bodies,
//! a zero-linger close for the reset). Does not own: which requests get a fault (`lib`'s
//! `fault_for`), reading requests or TS3AudioBot's own answers (`http`).

use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use crate::Fault;

/// Not JSON, though it starts like a BotInfo, so only a real parser notices.
pub const INVALID_JSON: &[u8] = b"{\"Id\":0,\"Name\":\"half\" oops, not JSON";
/// Valid JSON of the wrong shape everywhere: one object where `bot/list` gives an array, and
/// a BotInfo whose Id is a string and whose Status is a boolean.
pub const WRONG_TYPES: &[u8] = b"{\"Id\":\"seven\",\"Name\":null,\"Server\":\"\",\"Status\":true}";
/// What an SSH server sends first.
pub const SSH_BANNER: &[u8] = b"SSH-2.0-OpenSSH_9.2\r\n";
/// nginx's default welcome page (abridged).
pub const NGINX_WELCOME: &[u8] = b"<!DOCTYPE html>\n<html>\n<head>\n<title>Welcome to nginx!</title>\n</head>\n<body>\n<h1>Welcome to nginx!</h1>\n<p>If you see this page, the nginx web server is successfully installed and\nworking. Further configuration is required.</p>\n</body>\n</html>\n";
/// The Content-Length `ResetMidAnswer` announces; it sends only [`RESET_PART`] of it.
pub const RESET_LENGTH: usize = 4096;
/// The part of the body sent before the reset.
pub const RESET_PART: &[u8] = b"[{\"Id\":0,\"Name\":null,\"Server\":\"ts.example\",\"Sta";

/// Pieces a huge body is written in (the node never holds more than this of it).
const HUGE_PIECE: usize = 64 * 1024;

/// Writes `fault`'s garbage as the answer to a request. `Some(keep)`: an answer was written
/// (`keep`: the connection may serve the next request); `None`: not a garbage fault, answer
/// as usual. The connection is closed (reset for [`Fault::ResetMidAnswer`]) when `keep` is
/// false.
pub async fn write(sock: &mut TcpStream, fault: Fault, keep_alive: bool) -> Option<bool> {
    let result = match fault {
        Fault::InvalidJson => answer(sock, "application/json", INVALID_JSON, keep_alive).await,
        Fault::WrongTypes => answer(sock, "application/json", WRONG_TYPES, keep_alive).await,
        Fault::WrongServer => {
            let head = format!(
                "HTTP/1.1 200 OK\r\nServer: nginx/1.24.0\r\nContent-Type: text/html\r\nContent-Length: {}\r\n{}\r\n",
                NGINX_WELCOME.len(),
                close_header(keep_alive)
            );
            write_all(sock, &[head.as_bytes(), NGINX_WELCOME]).await
        }
        Fault::Huge { bytes, declared } => huge(sock, bytes, declared, keep_alive).await,
        Fault::NotHttp => {
            let _ = sock.write_all(SSH_BANNER).await;
            return Some(false);
        }
        Fault::ResetMidAnswer => {
            let head = format!(
                "HTTP/1.1 200 OK\r\nServer: Kestrel\r\nContent-Type: application/json\r\nContent-Length: {RESET_LENGTH}\r\n\r\n"
            );
            let _ = write_all(sock, &[head.as_bytes(), RESET_PART]).await;
            let _ = sock.flush().await;
            // A zero linger turns the close (when the socket is dropped) into a reset.
            let _ = sock.set_zero_linger();
            return Some(false);
        }
        Fault::Status500 | Fault::Hang | Fault::Close => return None,
    };
    Some(
        result.is_ok()
            && keep_alive
            && !matches!(
                fault,
                Fault::Huge {
                    declared: false,
                    ..
                }
            ),
    )
}

fn close_header(keep_alive: bool) -> &'static str {
    if keep_alive {
        ""
    } else {
        "Connection: close\r\n"
    }
}

/// A 200 the way Kestrel frames one, with `body`.
async fn answer(
    sock: &mut TcpStream,
    content_type: &str,
    body: &[u8],
    keep_alive: bool,
) -> std::io::Result<()> {
    let head = format!(
        "HTTP/1.1 200 OK\r\nServer: Kestrel\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n{}\r\n",
        body.len(),
        close_header(keep_alive)
    );
    write_all(sock, &[head.as_bytes(), body]).await
}

async fn write_all(sock: &mut TcpStream, parts: &[&[u8]]) -> std::io::Result<()> {
    for p in parts {
        sock.write_all(p).await?;
    }
    Ok(())
}

/// `[0,0,...,0]` of exactly `bytes` bytes (at least `[]`), streamed. Without a declared
/// length the body ends when the connection closes.
async fn huge(
    sock: &mut TcpStream,
    bytes: u64,
    declared: bool,
    keep_alive: bool,
) -> std::io::Result<()> {
    let bytes = bytes.max(2);
    let head = if declared {
        format!(
            "HTTP/1.1 200 OK\r\nServer: Kestrel\r\nContent-Type: application/json\r\nContent-Length: {bytes}\r\n{}\r\n",
            close_header(keep_alive)
        )
    } else {
        "HTTP/1.1 200 OK\r\nServer: Kestrel\r\nContent-Type: application/json\r\nConnection: close\r\n\r\n".to_string()
    };
    sock.write_all(head.as_bytes()).await?;
    // "[", then `inner` bytes, then "]". A non-empty inner part is "0,0,...,0": pairs of
    // "0," and a last "0", with a space first when the pairs need an odd length (JSON allows
    // it). Every piece is an even number of bytes, so pieces always start at a "0".
    let piece = b"0,".repeat(HUGE_PIECE / 2);
    sock.write_all(b"[").await?;
    let inner = bytes - 2;
    if inner > 0 {
        let mut pairs = inner - 1;
        if pairs % 2 == 1 {
            sock.write_all(b" ").await?;
            pairs -= 1;
        }
        while pairs > 0 {
            let n = usize::try_from(pairs)
                .unwrap_or(usize::MAX)
                .min(piece.len());
            sock.write_all(&piece[..n]).await?;
            pairs -= n as u64;
        }
        sock.write_all(b"0").await?;
    }
    sock.write_all(b"]").await?;
    sock.flush().await
}
