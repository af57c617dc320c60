//! A local S3-compatible server (moto) started on 127.0.0.1 for one test and stopped when dropped. The server
//! must be installed (`scripts/test.sh` installs `moto[server]`); a missing server fails the test rather than
//! skipping it.

use midge_host::s3::{S3Config, S3ObjectStore};
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A running moto server; killed on drop.
#[derive(Debug)]
pub struct Moto {
    child: Child,
    /// The port it listens on (127.0.0.1 only).
    pub port: u16,
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Moto {
    /// Starts a server on a free port and waits until it accepts connections.
    pub fn start() -> Moto {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = Command::new("moto_server")
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("moto_server is required (pip install 'moto[server]'; scripts/test.sh installs it)");
        let moto = Moto { child, port };
        let deadline = Instant::now() + Duration::from_secs(30);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "moto_server did not start");
            std::thread::sleep(Duration::from_millis(100));
        }
        moto
    }

    /// Creates `bucket` and returns a store on it (test credentials; moto accepts any).
    pub fn bucket(&self, bucket: &str) -> S3ObjectStore {
        let mut s = TcpStream::connect(("127.0.0.1", self.port)).unwrap();
        write!(
            s,
            "PUT /{bucket} HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
            self.port
        )
        .unwrap();
        let mut resp = String::new();
        s.read_to_string(&mut resp).unwrap();
        assert!(resp.starts_with("HTTP/1.1 200"), "create bucket: {resp}");
        S3ObjectStore::new(&S3Config {
            endpoint: Some(format!("http://127.0.0.1:{}", self.port)),
            bucket: bucket.into(),
            credentials: Some(("test".into(), "test".into())),
            allow_http: true,
            ..Default::default()
        })
        .unwrap()
    }
}
