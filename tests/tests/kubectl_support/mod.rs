//! Helpers shared by the `kubectl_*` tests: reading kubectl's tables and `describe` output, the
//! tutorial's manifests, polling, and a long-running kubectl (`get -w`, `wait`) read line by line.
//!
//! Each `kubectl_*.rs` test binary declares `mod common;` and `mod kubectl_support;`.

#![allow(dead_code, reason = "each test binary uses a different part of these helpers")]

use std::io::BufRead as _;
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use crate::common::{Cluster, fixture, kubectl_path};

/// Path of one of the tutorial's manifests (`tests/fixtures/tutorial/<name>`).
pub fn tutorial(name: &str) -> PathBuf {
    fixture(&format!("fixtures/tutorial/{name}"))
}

/// The folder of the tutorial's manifests, as a kubectl argument (`kubectl apply -f <dir>`).
pub fn fixture_dir() -> String {
    fixture("fixtures/tutorial").to_str().expect("fixture path is UTF-8").to_string()
}

/// The tutorial manifest as a string argument for kubectl.
pub fn tutorial_arg(name: &str) -> String {
    tutorial(name).to_str().expect("fixture path is UTF-8").to_string()
}

/// Text of one of the tutorial's manifests.
pub fn tutorial_text(name: &str) -> String {
    std::fs::read_to_string(tutorial(name)).expect("tutorial fixture exists")
}

pub fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Parses YAML (kubectl's `-o yaml`) into JSON values, which are easier to index.
pub fn yaml(text: &str) -> serde_json::Value {
    serde_yaml::from_str(text).unwrap_or_else(|e| panic!("kubectl printed invalid YAML ({e}):\n{text}"))
}

/// Runs kubectl with `path` as a string argument (paths of temp files and fixtures).
pub fn arg(path: &std::path::Path) -> &str {
    path.to_str().expect("path is UTF-8")
}

/// One table printed by `kubectl get`: headers and cells, cut at the header's column starts
/// (kubectl aligns every cell of a column with its header; headers such as `ACCESS MODES` hold
/// single spaces, columns are separated by at least two).
#[derive(Debug, Clone)]
pub struct Table {
    pub headers: Vec<String>,
    pub rows: Vec<Vec<String>>,
}

impl Table {
    /// The first table in `text`; panics when there is none.
    pub fn parse(text: &str) -> Table {
        Table::all(text).into_iter().next().unwrap_or_else(|| panic!("no table in kubectl output:\n{text}"))
    }

    /// Every table in `text` (`kubectl get a,b` prints one per kind, separated by blank lines).
    pub fn all(text: &str) -> Vec<Table> {
        let mut tables = Vec::new();
        let mut block: Vec<&str> = Vec::new();
        for line in text.lines().chain(std::iter::once("")) {
            if line.trim().is_empty() {
                if !block.is_empty() {
                    tables.push(Table::from_lines(&block));
                    block.clear();
                }
            } else {
                block.push(line);
            }
        }
        tables
    }

    fn from_lines(lines: &[&str]) -> Table {
        let header = lines[0].as_bytes();
        let mut starts = vec![0usize];
        for i in 2..header.len() {
            if header[i] != b' ' && header[i - 1] == b' ' && header[i - 2] == b' ' {
                starts.push(i);
            }
        }
        let cut = |line: &str| -> Vec<String> {
            (0..starts.len())
                .map(|k| {
                    let from = starts[k].min(line.len());
                    let to = starts.get(k + 1).copied().unwrap_or(line.len()).min(line.len());
                    line.get(from..to).unwrap_or("").trim().to_string()
                })
                .collect()
        };
        Table { headers: cut(lines[0]), rows: lines[1..].iter().map(|l| cut(l)).collect() }
    }

    /// Index of a column, by its header.
    pub fn col(&self, header: &str) -> usize {
        self.headers
            .iter()
            .position(|h| h == header)
            .unwrap_or_else(|| panic!("no column {header:?}; headers are {:?}", self.headers))
    }

    /// The cells of the `NAME` column, in order.
    pub fn names(&self) -> Vec<String> {
        let c = self.col("NAME");
        self.rows.iter().map(|r| r[c].clone()).collect()
    }

    /// The row whose `NAME` cell is `name`.
    pub fn row(&self, name: &str) -> &[String] {
        let c = self.col("NAME");
        self.rows
            .iter()
            .find(|r| r[c] == name)
            .unwrap_or_else(|| panic!("no row named {name:?} in table {:?}", self.rows))
    }

    /// The cell in column `header` of the row named `name`.
    pub fn cell(&self, name: &str, header: &str) -> String {
        self.row(name)[self.col(header)].clone()
    }
}

/// Whether some line of `text`, split at whitespace, is exactly `tokens`.
pub fn has_line(text: &str, tokens: &[&str]) -> bool {
    text.lines().any(|l| l.split_whitespace().eq(tokens.iter().copied()))
}

/// Asserts that some line of `text` consists of `tokens` (whitespace-insensitive).
#[track_caller]
pub fn assert_line(text: &str, tokens: &[&str]) {
    assert!(has_line(text, tokens), "no line {:?} in:\n{text}", tokens.join(" "));
}

/// The value of a top-level `Key:   value` line of `kubectl describe` output.
pub fn describe_field(text: &str, key: &str) -> Option<String> {
    let prefix = format!("{key}:");
    text.lines().find(|l| l.starts_with(&prefix)).map(|l| l[prefix.len()..].trim().to_string())
}

/// Calls `f` until it returns `Some`, for at most `timeout`.
pub fn eventually<T>(timeout: Duration, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out after {timeout:?} waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A kubectl that keeps running (`get -w`, `wait`), its stdout and stderr read line by line on
/// threads. Killed (by its PID, through `Child::kill`) when dropped.
pub struct Streaming {
    child: Child,
    /// `(from stderr, line)`.
    lines: mpsc::Receiver<(bool, String)>,
    /// Every line read so far, for failure messages and [`Streaming::finish`].
    pub seen: Vec<(bool, String)>,
}

impl Streaming {
    pub fn spawn(c: &Cluster, args: &[&str]) -> Streaming {
        let mut child = Command::new(kubectl_path())
            .args(args)
            .env("KUBECONFIG", &c.kubeconfig)
            .env("HOME", c.dir.path())
            .env_remove("KUBERNETES_SERVICE_HOST")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("kubectl starts");
        let (tx, lines) = mpsc::channel();
        let out = child.stdout.take().expect("stdout is piped");
        let err = child.stderr.take().expect("stderr is piped");
        forward(out, false, tx.clone());
        forward(err, true, tx);
        Streaming { child, lines, seen: Vec::new() }
    }

    /// Reads until a stdout line satisfies `pred` and returns it; panics after `timeout`.
    pub fn line_matching(&mut self, timeout: Duration, what: &str, pred: impl Fn(&str) -> bool) -> String {
        self.next_matching(false, timeout, what, pred)
    }

    /// Reads until a stderr line (kubectl's `-v` log) satisfies `pred`; panics after `timeout`.
    pub fn stderr_matching(&mut self, timeout: Duration, what: &str, pred: impl Fn(&str) -> bool) -> String {
        self.next_matching(true, timeout, what, pred)
    }

    fn next_matching(&mut self, stderr: bool, timeout: Duration, what: &str, pred: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok((is_err, line)) => {
                    self.seen.push((is_err, line.clone()));
                    if is_err == stderr && pred(&line) {
                        return line;
                    }
                }
                Err(_) => {
                    let _ = self.child.kill();
                    panic!("no line {what} within {timeout:?}; lines so far (true = stderr): {:#?}", self.seen);
                }
            }
        }
    }

    /// Waits for the process to exit by itself; returns its status and everything it printed on
    /// stdout.
    pub fn finish(mut self, timeout: Duration) -> (std::process::ExitStatus, String) {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().expect("poll kubectl") {
                // The reader threads end at EOF, which disconnects the channel.
                while let Ok(line) = self.lines.recv_timeout(Duration::from_secs(2)) {
                    self.seen.push(line);
                }
                let out: Vec<&str> = self.seen.iter().filter(|(e, _)| !e).map(|(_, l)| l.as_str()).collect();
                return (status, out.join("\n"));
            }
            assert!(Instant::now() < deadline, "kubectl did not exit within {timeout:?}: {:#?}", self.seen);
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// Sends each line of `from` on `tx`, tagged with `is_err`, until EOF.
fn forward(from: impl std::io::Read + Send + 'static, is_err: bool, tx: mpsc::Sender<(bool, String)>) {
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(from).lines() {
            let Ok(line) = line else { break };
            if tx.send((is_err, line)).is_err() {
                break;
            }
        }
    });
}

impl Drop for Streaming {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
