//! TLS passthrough: the ClientHello is read without taking it off the socket
//! (`MSG_PEEK`), so the rules can route on the name the client asked for while the
//! encrypted bytes go on untouched, and a session of two sockets still splices.

use std::io;
use std::time::Duration;

use serde_json::{Value, json};
use tokio::net::TcpStream;

use super::HANDSHAKE_TIMEOUT;

/// The most of a ClientHello read: four full records (post-quantum key shares make
/// hellos of a few KiB; nothing legitimate comes close to this).
const MAX_HELLO: usize = 64 << 10;

/// The `TLS` metadata of a connection's ClientHello: `{sni, alpn_offered, mode}`.
pub async fn client_hello(stream: &TcpStream) -> io::Result<Value> {
    tokio::time::timeout(HANDSHAKE_TIMEOUT, peek(stream))
        .await
        .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "no ClientHello in time"))?
}

async fn peek(stream: &TcpStream) -> io::Result<Value> {
    let mut buf = vec![0u8; MAX_HELLO];
    let mut seen = 0;
    loop {
        let n = stream.peek(&mut buf).await?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "closed before its ClientHello",
            ));
        }
        if n > seen {
            seen = n;
            if let Some(hello) = parse(&buf[..n])? {
                return Ok(hello);
            }
            if n == MAX_HELLO {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("a ClientHello larger than {MAX_HELLO} bytes"),
                ));
            }
        }
        // The rest of the hello is on its way; a peek would answer at once with what
        // is already here.
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

/// The hello's metadata, `None` while it is incomplete.
fn parse(mut bytes: &[u8]) -> io::Result<Option<Value>> {
    let not_tls = |e: rustls::Error| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("not a TLS ClientHello: {e}"),
        )
    };
    let mut acceptor = rustls::server::Acceptor::default();
    while !bytes.is_empty() {
        if acceptor.read_tls(&mut bytes)? == 0 {
            break;
        }
        let accepted = match acceptor.accept() {
            Ok(None) => continue,
            Ok(Some(accepted)) => accepted,
            Err((e, _)) => return Err(not_tls(e)),
        };
        let hello = accepted.client_hello();
        let alpn: Vec<String> = hello
            .alpn()
            .map(|list| {
                list.map(|p| String::from_utf8_lossy(p).into_owned())
                    .collect()
            })
            .unwrap_or_default();
        return Ok(Some(json!({
            "mode": "passthrough",
            "sni": hello.server_name(),
            "alpn_offered": alpn,
        })));
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn garbage_is_not_a_hello_and_a_prefix_is_incomplete() {
        assert!(parse(b"GET / HTTP/1.1\r\n\r\n").is_err());
        // A handshake record header promising more than is here.
        assert!(
            parse(&[0x16, 0x03, 0x01, 0x02, 0x00, 0x01])
                .unwrap()
                .is_none()
        );
    }
}
