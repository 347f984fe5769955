//! A real `prometheus` process for tests: scraping one target every second and evaluating a
//! rules file every second, on a free loopback port in its own temporary directory, killed when
//! dropped. Also the `promtool` command that ships with it.

use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tempfile::TempDir;

/// How long Prometheus gets to answer `/-/ready`.
const STARTUP_BOUND: Duration = Duration::from_secs(30);
/// Attempts at finding a port nobody else grabbed in the meantime.
const PORT_ATTEMPTS: usize = 10;

/// The path of `name` (`prometheus` or `promtool`), or a panic telling how to install it.
pub fn tool(name: &str) -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|candidate| candidate.is_file())
        .unwrap_or_else(|| {
            panic!(
                "{name} not found: install it (Debian/Ubuntu: apt-get install -y prometheus, \
                 which ships promtool) — tests never skip"
            )
        })
}

/// A running `prometheus` scraping one target as job `quiver`; killed when dropped.
pub struct PrometheusServer {
    _dir: TempDir,
    child: Child,
    addr: SocketAddr,
}

impl PrometheusServer {
    /// Starts Prometheus with `rules` (the text of a rules file) scraping `target` (`host:port`)
    /// every second and evaluating the rules every second, and returns once it is ready.
    pub fn start(target: SocketAddr, rules: &str) -> PrometheusServer {
        let binary = tool("prometheus");
        let dir = tempfile::tempdir().expect("temp dir for prometheus");
        std::fs::write(dir.path().join("rules.yml"), rules).expect("write rules");
        let config = format!(
            "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n  evaluation_interval: 1s\n\
             rule_files: [rules.yml]\n\
             scrape_configs:\n  - job_name: quiver\n    static_configs:\n      - targets: ['{target}']\n"
        );
        let config_path = dir.path().join("prometheus.yml");
        std::fs::write(&config_path, config).expect("write prometheus.yml");
        for _ in 0..PORT_ATTEMPTS {
            let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, free_port()));
            let mut child = spawn(&binary, &config_path, dir.path(), addr);
            if wait_ready(&mut child, addr) {
                return PrometheusServer {
                    _dir: dir,
                    child,
                    addr,
                };
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        panic!(
            "prometheus did not start after {PORT_ATTEMPTS} attempts (its log: {})",
            dir.path().join("prometheus.log").display()
        );
    }

    /// `http://<addr>`.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The state (`inactive`, `pending`, `firing`) of every alerting rule it evaluates.
    pub async fn rule_states(&self) -> Vec<(String, String)> {
        let body = get_json(&format!("{}/api/v1/rules?type=alert", self.base_url())).await;
        body["data"]["groups"]
            .as_array()
            .unwrap_or_else(|| panic!("no rule groups: {body}"))
            .iter()
            .flat_map(|g| g["rules"].as_array().cloned().unwrap_or_default())
            .map(|r| {
                let name = r["name"].as_str().unwrap_or_default().to_string();
                (name, r["state"].as_str().unwrap_or_default().to_string())
            })
            .collect()
    }

    /// The state of one alerting rule.
    pub async fn state_of(&self, alert: &str) -> String {
        let states = self.rule_states().await;
        states
            .iter()
            .find(|(name, _)| name == alert)
            .map(|(_, state)| state.clone())
            .unwrap_or_else(|| panic!("Prometheus does not evaluate {alert}: {states:?}"))
    }

    /// The firing alerts, as (alertname, labels).
    pub async fn firing_alerts(&self) -> Vec<(String, serde_json::Value)> {
        let body = get_json(&format!("{}/api/v1/alerts", self.base_url())).await;
        body["data"]["alerts"]
            .as_array()
            .cloned()
            .unwrap_or_default()
            .into_iter()
            .filter(|a| a["state"] == "firing")
            .map(|a| {
                let name = a["labels"]["alertname"].as_str().unwrap_or_default().into();
                (name, a["labels"].clone())
            })
            .collect()
    }

    /// The value of the instant query `query` for its first series, if any.
    pub async fn query(&self, query: &str) -> Option<String> {
        let body = get_json(&format!("{}/api/v1/query?query={query}", self.base_url())).await;
        body["data"]["result"][0]["value"][1]
            .as_str()
            .map(str::to_owned)
    }
}

/// The directory of the shipped rules (`deploy/prometheus`).
pub fn rules_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/prometheus")
}

/// The shipped rules file with every `for:` shortened to one second, so alerts fire within
/// seconds of their condition: the expressions, labels and annotations are the shipped ones.
pub fn rules_with_short_for() -> String {
    let rules = std::fs::read_to_string(rules_dir().join("quiver-alerts.yml")).unwrap();
    let mut shortened = 0;
    let text: Vec<String> = rules
        .lines()
        .map(|line| match line.split_once("for: ") {
            Some((indent, _)) if indent.trim().is_empty() => {
                shortened += 1;
                format!("{indent}for: 1s")
            }
            _ => line.to_string(),
        })
        .collect();
    assert!(shortened >= 5, "the rules file has `for:` durations");
    text.join("\n")
}

/// `GET url` as JSON.
pub async fn get_json(url: &str) -> serde_json::Value {
    reqwest::get(url)
        .await
        .unwrap_or_else(|e| panic!("GET {url}: {e}"))
        .json()
        .await
        .unwrap_or_else(|e| panic!("GET {url}: not JSON: {e}"))
}

impl Drop for PrometheusServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn spawn(binary: &Path, config: &Path, dir: &Path, addr: SocketAddr) -> Child {
    let log = std::fs::File::create(dir.join("prometheus.log")).expect("prometheus log");
    Command::new(binary)
        .arg(format!("--config.file={}", config.display()))
        .arg(format!(
            "--storage.tsdb.path={}",
            dir.join("data").display()
        ))
        .arg(format!("--web.listen-address={addr}"))
        .current_dir(dir)
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("start prometheus")
}

/// Waits (bounded) for `/-/ready`; false when the process exited first (its port was taken).
fn wait_ready(child: &mut Child, addr: SocketAddr) -> bool {
    let deadline = Instant::now() + STARTUP_BOUND;
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return false;
        }
        if crate::process::http_get_status(addr, "/-/ready") == Some(200) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("prometheus at {addr} was not ready within {STARTUP_BOUND:?}");
}

fn free_port() -> u16 {
    TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("cannot bind a loopback port")
}
