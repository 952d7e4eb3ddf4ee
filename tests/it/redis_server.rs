//! A throwaway `redis-server` on a free loopback port, without persistence, in a folder
//! of its own. A missing `redis-server` fails the test that asks for one: `make test`
//! installs it.

use std::{process::Stdio, time::Duration};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
    process::{Child, Command},
};

pub struct RedisServer {
    pub port: u16,
    child: Option<Child>,
    dir: tempfile::TempDir,
}

impl RedisServer {
    /// Starts a server and waits until it answers `PING`.
    pub async fn start() -> RedisServer {
        // Another process may take the free port between the look and the bind; try again.
        for _ in 0..3 {
            let port = super::support::closed_port().await.port();
            let mut server = RedisServer {
                port,
                child: None,
                dir: tempfile::tempdir().unwrap(),
            };
            if server.spawn().await {
                return server;
            }
        }
        panic!("redis-server did not start; see its log above");
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    /// Stops the server; its data goes with it.
    pub async fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().await.unwrap();
        }
    }

    /// Starts a stopped server again on the same port.
    pub async fn restart(&mut self) {
        assert!(self.spawn().await, "redis-server did not start again");
    }

    /// Freezes the server (SIGSTOP): connections stay open and nothing answers, as
    /// with an overloaded server or a lost network path. `resume` undoes it.
    pub fn pause(&self) {
        self.signal("-STOP");
    }

    pub fn resume(&self) {
        self.signal("-CONT");
    }

    fn signal(&self, signal: &str) {
        let pid = self.child.as_ref().and_then(Child::id).expect("running");
        let status = std::process::Command::new("kill")
            .args([signal, &pid.to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    }

    async fn spawn(&mut self) -> bool {
        let log = self.dir.path().join("redis.log");
        let spawned = Command::new("redis-server")
            .args(["--bind", "127.0.0.1", "--port", &self.port.to_string()])
            .args(["--save", "", "--appendonly", "no", "--daemonize", "no"])
            .arg("--dir")
            .arg(self.dir.path())
            .arg("--logfile")
            .arg(&log)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .kill_on_drop(true)
            .spawn();
        let mut child = match spawned {
            Ok(child) => child,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => panic!(
                "redis-server is not installed; `make test` installs it \
                 (apt-get install -y redis-server)"
            ),
            Err(e) => panic!("cannot run redis-server: {e}"),
        };
        for _ in 0..100 {
            if ping(self.port).await {
                self.child = Some(child);
                return true;
            }
            if child.try_wait().unwrap().is_some() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let _ = child.kill().await;
        eprintln!(
            "redis-server on port {}:\n{}",
            self.port,
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        false
    }
}

async fn ping(port: u16) -> bool {
    let Ok(mut stream) = TcpStream::connect(("127.0.0.1", port)).await else {
        return false;
    };
    let mut answer = [0u8; 7];
    stream.write_all(b"PING\r\n").await.is_ok()
        && stream.read_exact(&mut answer).await.is_ok()
        && &answer == b"+PONG\r\n"
}
