//! The TLS workloads' side: one certificate for every peer (ECDSA P-256, issued by a
//! scratch CA with the `openssl` CLI), and TLS 1.3 clients (rustls, ring) that
//! verify it, so that each peer terminates the same handshake.

use std::io::{self, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, ClientConnection, RootCertStore, StreamOwned};

use crate::load::{self, Dial, Stream};

/// The certificate the peers serve.
pub struct Certs {
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
    /// Certificate and key in one file, as HAProxy and socat take them.
    pub combined: PathBuf,
    client: Arc<ClientConfig>,
}

fn openssl(dir: &Path, args: &[&str]) {
    let ok = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(ok, "openssl {args:?} failed (bench/run installs openssl)");
}

impl Certs {
    pub fn new(dir: &Path) -> Certs {
        std::fs::create_dir_all(dir).unwrap();
        let ec = [
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
        ];
        openssl(
            dir,
            &[
                &["req", "-x509"],
                &ec[..],
                &[
                    "-keyout",
                    "ca.key",
                    "-out",
                    "ca.pem",
                    "-days",
                    "2",
                    "-subj",
                    "/CN=bench CA",
                ],
            ]
            .concat(),
        );
        std::fs::write(
            dir.join("ext.cnf"),
            "subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\nkeyUsage=digitalSignature\n",
        )
        .unwrap();
        openssl(
            dir,
            &[
                &["req"],
                &ec[..],
                &[
                    "-keyout",
                    "server.key",
                    "-out",
                    "server.csr",
                    "-subj",
                    "/CN=localhost",
                ],
            ]
            .concat(),
        );
        openssl(
            dir,
            &[
                "x509",
                "-req",
                "-in",
                "server.csr",
                "-CA",
                "ca.pem",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-out",
                "server.pem",
                "-days",
                "2",
                "-extfile",
                "ext.cnf",
            ],
        );
        let (cert, key) = (dir.join("server.pem"), dir.join("server.key"));
        let combined = dir.join("combined.pem");
        let both = [std::fs::read(&cert).unwrap(), std::fs::read(&key).unwrap()].concat();
        std::fs::write(&combined, both).unwrap();
        let mut roots = RootCertStore::empty();
        for ca in CertificateDer::pem_file_iter(dir.join("ca.pem")).unwrap() {
            roots.add(ca.unwrap()).unwrap();
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let client = ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13])
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        Certs {
            ca: dir.join("ca.pem"),
            cert,
            key,
            combined,
            client: Arc::new(client),
        }
    }

    /// TLS connections to 127.0.0.1:`port`, the handshake done before use (each a
    /// full handshake: no session resumption).
    pub fn dial(&self, port: u16) -> Dial {
        let config = self.client.clone();
        Arc::new(move || {
            let tcp = load::connect_tcp(port)?;
            let name = ServerName::try_from("localhost").unwrap();
            let conn = ClientConnection::new(config.clone(), name).map_err(io::Error::other)?;
            let mut stream = StreamOwned::new(conn, tcp);
            while stream.conn.is_handshaking() {
                stream.conn.complete_io(&mut stream.sock)?;
            }
            Ok(Box::new(Tls(stream)) as Box<dyn Stream>)
        })
    }
}

struct Tls(StreamOwned<ClientConnection, TcpStream>);

impl io::Read for Tls {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.0.read(buf)
    }
}

impl io::Write for Tls {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.write(buf)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.0.flush()
    }
}

impl Stream for Tls {
    fn close_write(&mut self) -> io::Result<()> {
        self.0.conn.send_close_notify();
        self.0.flush()?;
        self.0.sock.shutdown(std::net::Shutdown::Write)
    }
    fn tcp(&self) -> &TcpStream {
        &self.0.sock
    }
}
