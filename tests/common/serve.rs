//! `shardlog serve` as a child process, for the tests that drive the real binary.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};

/// A server process, killed if a test panics while it runs.
pub struct ServerProcess(pub Child);

impl ServerProcess {
    /// SIGTERM, then whether it exited cleanly.
    pub fn terminate(mut self) -> bool {
        let _ = Command::new("kill").arg(self.0.id().to_string()).status();
        self.0.wait().is_ok_and(|s| s.success())
    }

    /// SIGKILL.
    pub fn kill(mut self) {
        self.0.kill().unwrap();
        self.0.wait().unwrap();
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Runs `shardlog serve` on a free port and returns it with its address once it listens.
pub fn spawn_server(data: &Path, flush: &str) -> (ServerProcess, SocketAddr) {
    spawn_server_with(data, flush, &[])
}

pub fn spawn_server_with(data: &Path, flush: &str, extra: &[&str]) -> (ServerProcess, SocketAddr) {
    spawn_server_env(data, flush, extra, &[])
}

/// [`spawn_server_with`] with environment variables set for the server.
pub fn spawn_server_env(
    data: &Path,
    flush: &str,
    extra: &[&str],
    envs: &[(&str, &str)],
) -> (ServerProcess, SocketAddr) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_shardlog"))
        .args(["serve", "--listen", "127.0.0.1:0", "--flush", flush])
        .args(extra)
        .envs(envs.iter().copied())
        .arg("--data-dir")
        .arg(data)
        .env("SHARDLOG_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start shardlog serve");
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let addr = line
        .trim()
        .rsplit_once("http://")
        .and_then(|(_, a)| a.parse().ok())
        .unwrap_or_else(|| panic!("no address in {line:?}"));
    (ServerProcess(child), addr)
}

/// The wire API served in this process over `store`, on a free port of 127.0.0.1, with default
/// options otherwise.
pub fn in_process(store: std::sync::Arc<shardlog::Store>) -> shardlog::server::Server {
    shardlog::server::Server::start(
        store,
        None,
        shardlog::server::ServerOptions {
            listen: "127.0.0.1:0".parse().unwrap(),
            ..shardlog::server::ServerOptions::default()
        },
    )
    .unwrap()
}
