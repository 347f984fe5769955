//! A real S3 API server for the tests: moto's standalone server (`moto_server`, pinned, from PyPI
//! into `target/python/moto`) on a free loopback port in its own process group, its request log
//! kept so tests can count the objects read, and optionally behind a proxy that kills it after a
//! number of response bytes (a server dying mid-read).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use object_store::ObjectStore;
use object_store::aws::AmazonS3Builder;
use object_store::path::Path as ObjectPath;

use crate::python::venv;

/// The pinned moto every S3 test runs.
pub const MOTO: &[&str] = &["moto[server]==5.2.5"];

/// Credentials the tests give Quiver for a server that accepts any.
pub const ACCESS_KEY_ID: &str = "AKIAQUIVERTESTKEY01";
/// The secret that goes with [`ACCESS_KEY_ID`]; tests check it never appears in output.
pub const SECRET_ACCESS_KEY: &str = "quiver-test-secret-Zx81mQpL0vN3";

/// A running `moto_server`.
pub struct S3Server {
    child: Option<Child>,
    port: u16,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl S3Server {
    /// Starts a server that accepts any credentials.
    pub fn start() -> S3Server {
        S3Server::start_with_env(&[])
    }

    /// Starts a server with extra environment variables (e.g. moto's
    /// `INITIAL_NO_AUTH_ACTION_COUNT`, which makes it check credentials after that many
    /// requests).
    pub fn start_with_env(env: &[(&str, &str)]) -> S3Server {
        let venv = venv("moto", MOTO);
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("moto.log");
        let port = free_port();
        let mut command = Command::new(venv.join("bin/moto_server"));
        command
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(dir.path().join("moto.out")).unwrap())
            .stderr(std::fs::File::create(&log).unwrap());
        for (k, v) in env {
            command.env(k, v);
        }
        #[cfg(unix)]
        std::os::unix::process::CommandExt::process_group(&mut command, 0);
        let child = command.spawn().unwrap_or_else(|e| {
            panic!(
                "cannot start moto_server: {e} (the tests install it with pip from PyPI: \
                 apt-get install -y python3 python3-venv)"
            )
        });
        let server = S3Server {
            child: Some(child),
            port,
            log,
            _dir: dir,
        };
        let started = Instant::now();
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                started.elapsed() < Duration::from_secs(60),
                "moto_server did not listen on {port}:\n{}",
                server.log_text()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        server
    }

    /// `http://127.0.0.1:<port>`.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The port it listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The process id (its process group id too).
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    /// Everything the server logged (one line per request, among others).
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The paths of the GET requests logged so far (`/bucket/key`), in order.
    pub fn gets(&self) -> Vec<String> {
        self.log_text()
            .lines()
            .map(strip_colors)
            .filter_map(|line| {
                let rest = &line[line.find("\"GET ")? + 5..];
                let path = rest.split_whitespace().next()?;
                Some(path.split('?').next().unwrap_or(path).to_string())
            })
            .collect()
    }

    /// Creates a bucket (the server accepts unsigned requests while it checks no credentials).
    pub fn create_bucket(&self, bucket: &str) {
        let response = http(self.port, &format!("PUT /{bucket} HTTP/1.1"));
        assert!(
            response.starts_with("HTTP/1.1 200") || response.starts_with("HTTP/1.0 200"),
            "creating bucket {bucket}: {response}"
        );
    }

    /// A client of `bucket` with the test credentials.
    pub fn client(&self, bucket: &str) -> Arc<dyn ObjectStore> {
        Arc::new(
            AmazonS3Builder::new()
                .with_endpoint(self.endpoint())
                .with_allow_http(true)
                .with_region("us-east-1")
                .with_bucket_name(bucket)
                .with_access_key_id(ACCESS_KEY_ID)
                .with_secret_access_key(SECRET_ACCESS_KEY)
                .build()
                .unwrap(),
        )
    }

    /// Uploads a local file as `s3://bucket/key`.
    pub fn upload(&self, bucket: &str, key: &str, file: &Path) {
        let bytes = std::fs::read(file).unwrap();
        self.put(bucket, key, bytes);
    }

    /// Writes `bytes` as `s3://bucket/key`.
    pub fn put(&self, bucket: &str, key: &str, bytes: Vec<u8>) {
        let client = self.client(bucket);
        let path = ObjectPath::from(key);
        runtime()
            .block_on(client.put(&path, bytes.into()))
            .unwrap_or_else(|e| panic!("uploading s3://{bucket}/{key}: {e}"));
    }

    /// The bytes of `s3://bucket/key`, or `None` when it does not exist.
    pub fn get(&self, bucket: &str, key: &str) -> Option<Vec<u8>> {
        let client = self.client(bucket);
        let path = ObjectPath::from(key);
        runtime().block_on(async {
            match client.get(&path).await {
                Ok(r) => Some(r.bytes().await.unwrap().to_vec()),
                Err(object_store::Error::NotFound { .. }) => None,
                Err(e) => panic!("reading s3://{bucket}/{key}: {e}"),
            }
        })
    }

    /// The keys below `prefix` in `bucket`, sorted.
    pub fn list(&self, bucket: &str, prefix: &str) -> Vec<String> {
        use futures::StreamExt;
        let client = self.client(bucket);
        let prefix = ObjectPath::from(prefix);
        let mut keys: Vec<String> = runtime().block_on(async {
            client
                .list(Some(&prefix))
                .map(|m| m.unwrap().location.to_string())
                .collect()
                .await
        });
        keys.sort();
        keys
    }

    /// Kills the server at once (SIGKILL to its process group).
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            #[cfg(unix)]
            kill_group(child.id());
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A log line without its terminal color codes (`ESC [ ... m`).
fn strip_colors(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c == 'm' {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(unix)]
fn kill_group(pid: u32) {
    let _ = Command::new("kill")
        .args(["-KILL", "--", &format!("-{pid}")])
        .stderr(Stdio::null())
        .status();
}

/// The environment that points Quiver's S3 client at `server` with the test credentials (and no
/// shared files of the machine's user).
pub fn quiver_env(server: &S3Server) -> Vec<(String, String)> {
    quiver_env_at(&server.endpoint())
}

/// [`quiver_env`] for an endpoint (a proxy in front of the server, say).
pub fn quiver_env_at(endpoint: &str) -> Vec<(String, String)> {
    [
        ("AWS_ACCESS_KEY_ID", ACCESS_KEY_ID),
        ("AWS_SECRET_ACCESS_KEY", SECRET_ACCESS_KEY),
        ("AWS_REGION", "us-east-1"),
        ("AWS_ENDPOINT_URL", endpoint),
        ("AWS_CONFIG_FILE", "/dev/null"),
        ("AWS_SHARED_CREDENTIALS_FILE", "/dev/null"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect()
}

fn runtime() -> &'static tokio::runtime::Runtime {
    static RUNTIME: std::sync::OnceLock<tokio::runtime::Runtime> = std::sync::OnceLock::new();
    RUNTIME.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap()
    })
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Sends one bodiless request and returns the response head.
fn http(port: u16, request_line: &str) -> String {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    write!(
        stream,
        "{request_line}\r\nHost: 127.0.0.1:{port}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut response = String::new();
    let _ = stream.read_to_string(&mut response);
    response
}

/// A TCP proxy in front of a server that, once it has relayed `budget` bytes of responses,
/// kills the server (through `kill`), drops every connection and stops accepting: to a client,
/// the server died in the middle of a response.
pub struct DyingProxy {
    addr: SocketAddr,
    /// Whether the budget ran out.
    pub died: Arc<AtomicBool>,
    relayed: Arc<AtomicU64>,
}

impl DyingProxy {
    /// A proxy to `127.0.0.1:upstream` dying after `budget` response bytes.
    pub fn start(upstream: u16, budget: u64, kill: impl Fn() + Send + Sync + 'static) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let died = Arc::new(AtomicBool::new(false));
        let relayed = Arc::new(AtomicU64::new(0));
        let counted = Arc::clone(&relayed);
        let kill = Arc::new(kill);
        let state = Arc::clone(&died);
        std::thread::spawn(move || {
            for client in listener.incoming() {
                if state.load(Ordering::SeqCst) {
                    break; // dropping the listener refuses later connections
                }
                let Ok(client) = client else { continue };
                let Ok(server) = TcpStream::connect(("127.0.0.1", upstream)) else {
                    continue;
                };
                let (c2, s2) = (client.try_clone().unwrap(), server.try_clone().unwrap());
                // Requests flow as they are.
                std::thread::spawn(move || pipe(c2, s2, None));
                let budget = Some((budget, Arc::clone(&relayed), Arc::clone(&state), {
                    let kill = Arc::clone(&kill);
                    Arc::new(move || kill()) as Arc<dyn Fn() + Send + Sync>
                }));
                std::thread::spawn(move || pipe(server, client, budget));
            }
        });
        DyingProxy {
            addr,
            died,
            relayed: counted,
        }
    }

    /// Response bytes relayed so far.
    pub fn relayed(&self) -> u64 {
        self.relayed.load(Ordering::SeqCst)
    }

    /// `http://<addr>`.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }
}

type Budget = (
    u64,
    Arc<AtomicU64>,
    Arc<AtomicBool>,
    Arc<dyn Fn() + Send + Sync>,
);

fn pipe(mut from: TcpStream, mut to: TcpStream, budget: Option<Budget>) {
    let mut buf = [0u8; 16 * 1024];
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        if let Some((limit, relayed, died, kill)) = &budget {
            if died.load(Ordering::SeqCst) {
                break;
            }
            let before = relayed.fetch_add(n as u64, Ordering::SeqCst);
            if before + n as u64 > *limit {
                let allowed = limit.saturating_sub(before) as usize;
                let _ = to.write_all(&buf[..allowed.min(n)]);
                if !died.swap(true, Ordering::SeqCst) {
                    kill();
                    // Wake the accept loop so it sees the flag and stops listening.
                    let _ = TcpStream::connect(to.local_addr().unwrap());
                }
                break;
            }
        }
        if to.write_all(&buf[..n]).is_err() {
            break;
        }
    }
    let _ = from.shutdown(std::net::Shutdown::Both);
    let _ = to.shutdown(std::net::Shutdown::Both);
}
