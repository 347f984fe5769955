//! Parsing `connection_string`: `redis://[user:password@]host:port[/db]`, `rediss://...` (TLS),
//! or Feast's `host:port[,host:port...][,password=...,ssl=true,db=N,username=...]`.

use std::fmt;

/// The default Redis port.
pub const DEFAULT_PORT: u16 = 6379;

/// Where and how to reach Redis, as parsed from a connection string.
#[derive(Clone, PartialEq, Eq)]
pub struct RedisTarget {
    /// `(host, port)` of each node; several are cluster seed nodes.
    pub nodes: Vec<(String, u16)>,
    /// Connect with TLS.
    pub tls: bool,
    /// ACL user name.
    pub username: Option<String>,
    /// Password (for the ACL user, or `requirepass`).
    pub password: Option<String>,
    /// Database number (standalone only).
    pub db: i64,
}

impl fmt::Debug for RedisTarget {
    // Hand-written so that the password never reaches a log line.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisTarget")
            .field("nodes", &self.nodes)
            .field("tls", &self.tls)
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .field("db", &self.db)
            .finish()
    }
}

impl RedisTarget {
    /// Parses a connection string in URL or Feast form.
    pub fn parse(text: &str) -> Result<Self, String> {
        let s = text.trim();
        if s.is_empty() {
            return Err("empty connection string".into());
        }
        if let Some(rest) = s.strip_prefix("redis://") {
            parse_url(rest, false)
        } else if let Some(rest) = s.strip_prefix("rediss://") {
            parse_url(rest, true)
        } else if s.contains("://") {
            Err(format!(
                "unsupported scheme in {s:?}: expected redis:// or rediss://"
            ))
        } else {
            parse_feast(s)
        }
    }
}

fn parse_url(rest: &str, tls: bool) -> Result<RedisTarget, String> {
    if rest.contains('?') || rest.contains('#') {
        return Err("query parameters are not supported in redis:// URLs".into());
    }
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i + 1..]),
        None => (rest, ""),
    };
    let (userinfo, hostport) = match authority.rfind('@') {
        Some(i) => (Some(&authority[..i]), &authority[i + 1..]),
        None => (None, authority),
    };
    let (username, password) = match userinfo {
        None => (None, None),
        Some(info) => match info.split_once(':') {
            Some((user, pass)) => (
                non_empty(percent_decode(user)?),
                non_empty(percent_decode(pass)?),
            ),
            None => (non_empty(percent_decode(info)?), None),
        },
    };
    let nodes = hostport
        .split(',')
        .map(parse_host_port)
        .collect::<Result<Vec<_>, _>>()?;
    let db = match path.trim_end_matches('/') {
        "" => 0,
        n => parse_db(n)?,
    };
    Ok(RedisTarget {
        nodes,
        tls,
        username,
        password,
        db,
    })
}

fn parse_feast(s: &str) -> Result<RedisTarget, String> {
    let mut target = RedisTarget {
        nodes: Vec::new(),
        tls: false,
        username: None,
        password: None,
        db: 0,
    };
    for item in s.split(',').map(str::trim) {
        if item.is_empty() {
            return Err(format!("empty item in connection string {s:?}"));
        }
        match item.split_once('=') {
            Some((key, value)) => match key.trim().to_ascii_lowercase().as_str() {
                "password" => target.password = non_empty(value.to_string()),
                "username" | "user" => target.username = non_empty(value.to_string()),
                "db" => target.db = parse_db(value.trim())?,
                "ssl" => {
                    target.tls = match value.trim().to_ascii_lowercase().as_str() {
                        "true" | "1" | "yes" => true,
                        "false" | "0" | "no" => false,
                        other => return Err(format!("ssl must be true or false, got {other:?}")),
                    }
                }
                other => return Err(format!("unknown connection option {other:?}")),
            },
            None => target.nodes.push(parse_host_port(item)?),
        }
    }
    if target.nodes.is_empty() {
        return Err(format!("no host:port in connection string {s:?}"));
    }
    Ok(target)
}

fn parse_host_port(s: &str) -> Result<(String, u16), String> {
    let s = s.trim();
    let (host, port) = if let Some(v6) = s.strip_prefix('[') {
        let (host, after) = v6
            .split_once(']')
            .ok_or_else(|| format!("unterminated IPv6 address in {s:?}"))?;
        match after {
            "" => (host, None),
            p => (
                host,
                Some(
                    p.strip_prefix(':')
                        .ok_or_else(|| format!("invalid address {s:?}"))?,
                ),
            ),
        }
    } else {
        match s.rsplit_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (s, None),
        }
    };
    if host.is_empty() {
        return Err(format!("missing host in {s:?}"));
    }
    let port = match port {
        None => DEFAULT_PORT,
        Some(p) => p
            .parse::<u16>()
            .ok()
            .filter(|p| *p != 0)
            .ok_or_else(|| format!("invalid port {p:?} in {s:?}"))?,
    };
    Ok((host.to_string(), port))
}

fn parse_db(s: &str) -> Result<i64, String> {
    s.parse::<i64>()
        .ok()
        .filter(|db| *db >= 0)
        .ok_or_else(|| format!("invalid database number {s:?}"))
}

fn non_empty(s: String) -> Option<String> {
    (!s.is_empty()).then_some(s)
}

fn percent_decode(s: &str) -> Result<String, String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes
                .get(i + 1..i + 3)
                .and_then(|h| std::str::from_utf8(h).ok())
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or("invalid percent-encoding in connection string credentials")?;
            out.push(hex);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| "credentials are not valid UTF-8".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(host: &str, port: u16) -> (String, u16) {
        (host.to_string(), port)
    }

    #[test]
    fn a_plain_url_gives_host_port_and_database_zero() {
        let t = RedisTarget::parse("redis://127.0.0.1:6380").unwrap();
        assert_eq!(t.nodes, vec![node("127.0.0.1", 6380)]);
        assert_eq!(
            (t.tls, t.db, t.username, t.password),
            (false, 0, None, None)
        );
    }

    #[test]
    fn a_url_carries_user_password_and_database() {
        let t = RedisTarget::parse("redis://alice:s%40cret@redis.internal:7000/3").unwrap();
        assert_eq!(t.nodes, vec![node("redis.internal", 7000)]);
        assert_eq!(t.username.as_deref(), Some("alice"));
        assert_eq!(t.password.as_deref(), Some("s@cret"));
        assert_eq!(t.db, 3);
    }

    #[test]
    fn a_url_with_only_a_password_has_no_user() {
        let t = RedisTarget::parse("redis://:pw@localhost/").unwrap();
        assert_eq!(t.nodes, vec![node("localhost", DEFAULT_PORT)]);
        assert_eq!(t.username, None);
        assert_eq!(t.password.as_deref(), Some("pw"));
    }

    #[test]
    fn rediss_urls_turn_tls_on() {
        let t = RedisTarget::parse("rediss://cache.example.com:6380/1").unwrap();
        assert!(t.tls);
        assert_eq!(t.db, 1);
    }

    #[test]
    fn ipv6_hosts_are_written_in_brackets() {
        let t = RedisTarget::parse("redis://[::1]:7001").unwrap();
        assert_eq!(t.nodes, vec![node("::1", 7001)]);
        let t = RedisTarget::parse("[::1]").unwrap();
        assert_eq!(t.nodes, vec![node("::1", DEFAULT_PORT)]);
    }

    #[test]
    fn the_feast_form_lists_seed_nodes_and_options() {
        let t = RedisTarget::parse("10.0.0.1:7000, 10.0.0.2:7001,password=pa=ss,ssl=true,db=2")
            .unwrap();
        assert_eq!(
            t.nodes,
            vec![node("10.0.0.1", 7000), node("10.0.0.2", 7001)]
        );
        assert_eq!(t.password.as_deref(), Some("pa=ss"));
        assert!(t.tls);
        assert_eq!(t.db, 2);
    }

    #[test]
    fn the_feast_form_defaults_the_port() {
        let t = RedisTarget::parse("localhost").unwrap();
        assert_eq!(t.nodes, vec![node("localhost", DEFAULT_PORT)]);
        assert!(!t.tls);
    }

    #[test]
    fn malformed_strings_are_rejected_with_a_reason() {
        for bad in [
            "",
            "http://localhost",
            "localhost:notaport",
            "localhost:0",
            "localhost:70000",
            "password=x",
            "localhost,ssl=maybe",
            "localhost,timeout=3",
            "localhost,,other",
            "redis://localhost/-1",
            "redis://localhost?db=1",
            "redis://:6379",
            "redis://u:%zz@localhost",
        ] {
            assert!(
                RedisTarget::parse(bad).is_err(),
                "{bad:?} should be rejected"
            );
        }
    }

    #[test]
    fn debug_output_never_shows_the_password() {
        let t = RedisTarget::parse("redis://:hunter2@localhost").unwrap();
        assert!(!format!("{t:?}").contains("hunter2"));
    }
}
