//! CPU time from `/proc`, to report what each request costs the servers: Quiver's (the threads of
//! the server runtime, named `quiver-server`) and the store's (redis-server, or a PostgreSQL
//! server's postmaster and its backends, which are its children).

use std::path::Path;

/// Clock ticks per second of `utime`/`stime` in `/proc/<pid>/stat` (`getconf CLK_TCK`).
pub fn ticks_per_second() -> f64 {
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(100.0)
}

/// `(parent pid, utime + stime)` from a `stat` file; `None` when unreadable.
fn stat(path: &Path) -> Option<(u32, u64)> {
    let text = std::fs::read_to_string(path).ok()?;
    // The command name may hold spaces and parentheses: fields start after the last ')'.
    let fields: Vec<&str> = text.rsplit_once(')')?.1.split_whitespace().collect();
    let ppid = fields.get(1)?.parse().ok()?;
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some((ppid, utime + stime))
}

/// CPU ticks used so far by this process's threads whose name starts with `prefix`.
pub fn own_threads(prefix: &str) -> u64 {
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return 0;
    };
    tasks
        .flatten()
        .filter(|t| {
            std::fs::read_to_string(t.path().join("comm")).is_ok_and(|c| c.starts_with(prefix))
        })
        .filter_map(|t| stat(&t.path().join("stat")))
        .map(|(_, ticks)| ticks)
        .sum()
}

/// CPU ticks used so far by process `pid` (all its threads).
pub fn process(pid: u32) -> u64 {
    stat(&Path::new("/proc").join(pid.to_string()).join("stat")).map_or(0, |(_, t)| t)
}

/// CPU ticks used so far by process `pid`, its children that exited and were waited for
/// (`cutime` + `cstime`), and its live children: a postmaster and every backend it ever ran, so
/// the figure only grows even when connections are replaced.
pub fn process_and_children(pid: u32) -> u64 {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return 0;
    };
    let children: u64 = entries
        .flatten()
        .filter(|e| {
            e.file_name()
                .to_str()
                .is_some_and(|n| n.bytes().all(|b| b.is_ascii_digit()))
        })
        .filter_map(|e| stat(&e.path().join("stat")))
        .filter(|(parent, _)| *parent == pid)
        .map(|(_, ticks)| ticks)
        .sum();
    let waited = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|text| {
            let fields: Vec<u64> = text
                .rsplit_once(')')?
                .1
                .split_whitespace()
                .skip(13)
                .take(2)
                .filter_map(|f| f.parse().ok())
                .collect();
            Some(fields.iter().sum::<u64>())
        })
        .unwrap_or(0);
    process(pid) + waited + children
}

/// CPU ticks used so far by the live processes of process group `pgid` (a `feast serve`: the
/// command, gunicorn's master and its workers).
pub fn process_group(pgid: u32) -> u64 {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return 0;
    };
    entries
        .flatten()
        .filter(|e| {
            e.file_name()
                .to_str()
                .is_some_and(|n| n.bytes().all(|b| b.is_ascii_digit()))
        })
        .filter_map(|e| {
            let text = std::fs::read_to_string(e.path().join("stat")).ok()?;
            let fields: Vec<&str> = text.rsplit_once(')')?.1.split_whitespace().collect();
            // fields[0] is field 3 (state): pgrp is field 5, utime 14, stime 15.
            let pgrp: u32 = fields.get(2)?.parse().ok()?;
            let utime: u64 = fields.get(11)?.parse().ok()?;
            let stime: u64 = fields.get(12)?.parse().ok()?;
            (pgrp == pgid).then_some(utime + stime)
        })
        .sum()
}
