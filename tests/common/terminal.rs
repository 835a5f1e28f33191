//! A real terminal for the tests: mini-kvm runs in a detached tmux session, its stdout, stderr,
//! exit status and the terminal settings before and after (`stty -g`) go to files, keys are
//! typed with `tmux send-keys`, and every wait is bounded by a watchdog (no timing assertions).

use std::fs;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use super::{mini_kvm_binary, require_kvm, scratch};

const WATCHDOG: Duration = Duration::from_secs(60);

pub struct TerminalSession {
    name: String,
    dir: PathBuf,
}

impl TerminalSession {
    /// Starts `mini-kvm run ARGS` in a new 120x40 tmux session.
    pub fn start(test: &str, args: &str) -> TerminalSession {
        require_kvm();
        assert!(
            Command::new("tmux").arg("-V").output().is_ok(),
            "these tests need tmux (Debian: apt-get install tmux)"
        );
        let dir = scratch(test);
        let name = format!("mini-kvm-{}-{test}", std::process::id());
        let script = format!(
            "cd {dir}; stty -g > before; {binary} run {args} > out 2> err; echo $? > status.tmp; \
             stty -g > after; mv status.tmp status",
            dir = dir.display(),
            binary = mini_kvm_binary(),
        );
        let started = Command::new("tmux")
            .args(["new-session", "-d", "-s", &name, "-x", "120", "-y", "40"])
            .arg(&script)
            .status()
            .expect("run tmux");
        assert!(started.success(), "tmux new-session failed");
        TerminalSession { name, dir }
    }

    /// The directory mini-kvm runs in (and writes its files to).
    pub fn dir(&self) -> &std::path::Path {
        &self.dir
    }

    /// One of the files the session writes: out, err, status, before, after.
    pub fn file(&self, name: &str) -> String {
        fs::read_to_string(self.dir.join(name)).unwrap_or_default()
    }

    pub fn wait_for(&self, what: &str, done: impl Fn(&TerminalSession) -> bool) {
        let started = Instant::now();
        while !done(self) {
            assert!(
                started.elapsed() < WATCHDOG,
                "waited {WATCHDOG:?} for {what}; stdout: {:?}, stderr: {:?}",
                self.file("out"),
                self.file("err")
            );
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits until stdout holds `text` `times` times.
    pub fn wait_for_output(&self, text: &str, times: usize) {
        self.wait_for(&format!("{text:?} x{times}"), |s| {
            s.file("out").matches(text).count() >= times
        });
    }

    /// Types `keys` (tmux key names, or `-l` and literal text).
    pub fn send(&self, keys: &[&str]) {
        let status = Command::new("tmux")
            .args(["send-keys", "-t", &self.name])
            .args(keys)
            .status()
            .expect("tmux send-keys");
        assert!(status.success());
    }

    /// Waits for mini-kvm to end; returns its status.
    pub fn finish(&self) -> i32 {
        self.wait_for("mini-kvm to end", |s| s.dir.join("status").exists());
        self.file("status").trim().parse().expect("a status")
    }

    /// The terminal settings after mini-kvm are the ones before it.
    pub fn assert_terminal_restored(&self) {
        let (before, after) = (self.file("before"), self.file("after"));
        assert!(!before.is_empty(), "no terminal settings recorded");
        assert_eq!(before, after, "the terminal was not restored");
    }
}

impl Drop for TerminalSession {
    fn drop(&mut self) {
        let _ = Command::new("tmux")
            .args(["kill-session", "-t", &self.name])
            .stderr(Stdio::null())
            .status();
    }
}
