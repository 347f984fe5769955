//! `quiver serve` in its own process: the real binary (`quiver-under-test`, built from
//! runtime/src/main.rs for this package), on a free loopback port.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, mpsc};
use std::time::Duration;

/// A running `quiver -c <config> serve`; killed when dropped.
pub struct QuiverProcess {
    child: Child,
    addr: SocketAddr,
    /// Every line it logged so far.
    log: Arc<Mutex<Vec<String>>>,
}

impl QuiverProcess {
    /// Starts `quiver -c <config> serve --bind 127.0.0.1:0` (without a write token from the
    /// environment) and returns once it answers `/health`, which is after it replayed its
    /// write-ahead logs. Its log is kept ([`QuiverProcess::log`]) and echoed to the test's stderr,
    /// prefixed with `quiver:`.
    pub fn serve(binary: &Path, config: &Path) -> QuiverProcess {
        QuiverProcess::serve_with_env(binary, config, &[])
    }

    /// [`QuiverProcess::serve`] with extra environment variables (credentials, say).
    pub fn serve_with_env(binary: &Path, config: &Path, env: &[(String, String)]) -> QuiverProcess {
        let mut child = Command::new(binary)
            .arg("-c")
            .arg(config)
            .args(["serve", "--bind", "127.0.0.1:0"])
            .envs(env.iter().map(|(k, v)| (k, v)))
            .env("QUIVER_LOG", "info")
            .env("NO_COLOR", "1")
            .env_remove("QUIVER_WRITE_TOKEN")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start quiver");
        // The address is in the start-up log line; the rest of the log is echoed (and drained, so
        // the process never blocks on a full pipe).
        let (tx, rx) = mpsc::channel();
        let stderr = child.stderr.take().expect("piped stderr");
        let log = Arc::new(Mutex::new(Vec::new()));
        let lines = Arc::clone(&log);
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                eprintln!("quiver: {line}");
                if let Some(rest) = line.split("serving on http://").nth(1) {
                    let addr = rest.split_whitespace().next().unwrap_or_default();
                    let _ = tx.send(addr.parse::<SocketAddr>().expect("address in the log"));
                }
                lines.lock().unwrap().push(line);
            }
        });
        let addr = match rx.recv_timeout(Duration::from_secs(60)) {
            Ok(addr) => addr,
            Err(_) => {
                let _ = child.kill();
                panic!("quiver did not start within 60 s (its log is above)");
            }
        };
        let process = QuiverProcess { child, addr, log };
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while !process.healthy() {
            assert!(
                std::time::Instant::now() < deadline,
                "quiver at {addr} did not answer /health within 30 s"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        process
    }

    /// The address it listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Its process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Every line it logged so far.
    pub fn log(&self) -> Vec<String> {
        self.log.lock().unwrap().clone()
    }

    /// SIGKILL: no shutdown flush, no destructors.
    pub fn kill(mut self) {
        self.child.kill().expect("SIGKILL");
        self.child.wait().expect("reaped");
    }

    /// `http://<addr>`.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn healthy(&self) -> bool {
        http_get_status(self.addr, "/health") == Some(200)
    }
}

impl Drop for QuiverProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The status of `GET <path>` on `addr` with a plain blocking HTTP/1.0 request, or `None` when
/// nothing answers. For readiness polls from synchronous test code.
pub fn http_get_status(addr: SocketAddr, path: &str) -> Option<u16> {
    use std::io::{Read, Write};
    let mut stream =
        std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(500)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(stream, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").ok()?;
    let mut head = [0u8; 12];
    stream.read_exact(&mut head).ok()?;
    std::str::from_utf8(&head[9..12]).ok()?.parse().ok()
}
