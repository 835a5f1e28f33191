//! Keys typed at a real terminal (a tmux pane): raw mode, scancodes, Ctrl-A x and Ctrl-A h, and
//! the terminal restored afterwards.
//!
//! Needs `tmux` (.ci/run installs it). Each test runs mini-kvm in its own detached tmux session,
//! waits (polling files, bounded by a watchdog, no timing assertion) for the guest to take the
//! keyboard, types with `tmux send-keys`, and reads what mini-kvm wrote to files.

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::thread;
use std::time::{Duration, Instant};

use common::{mini_kvm_binary, require_kvm, scratch};

const WATCHDOG: Duration = Duration::from_secs(60);

struct Session {
    name: String,
    dir: PathBuf,
}

impl Session {
    /// Starts `mini-kvm run ARGS` in a new tmux session; records the terminal settings before and
    /// after, the output, stderr and the exit status in files.
    fn start(test: &str, args: &str) -> Session {
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
            .args([
                "new-session",
                "-d",
                "-s",
                &name,
                "-x",
                "120",
                "-y",
                "40",
                &script,
            ])
            .status()
            .expect("run tmux");
        assert!(started.success(), "tmux new-session failed");
        Session { name, dir }
    }

    fn file(&self, name: &str) -> String {
        fs::read_to_string(self.dir.join(name)).unwrap_or_default()
    }

    fn wait_for(&self, what: &str, done: impl Fn(&Session) -> bool) {
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

    /// Waits until the guest has taken the keyboard (mini-kvm announces raw mode on stderr).
    fn wait_for_keyboard(&self) {
        self.wait_for("the guest to take the keyboard", |s| {
            s.file("err").contains("the keyboard goes to the guest")
        });
    }

    fn send(&self, keys: &[&str]) {
        let status = Command::new("tmux")
            .args(["send-keys", "-t", &self.name])
            .args(keys)
            .status()
            .expect("tmux send-keys");
        assert!(status.success());
    }

    /// Waits for mini-kvm to end; returns its status.
    fn finish(&self) -> i32 {
        self.wait_for("mini-kvm to end", |s| s.dir.join("status").exists());
        self.file("status").trim().parse().expect("a status")
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        let _ = Command::new("tmux")
            .args(["kill-session", "-t", &self.name])
            .status();
    }
}

fn terminal_restored(session: &Session) {
    let (before, after) = (session.file("before"), session.file("after"));
    assert!(!before.is_empty(), "no terminal settings recorded");
    assert_eq!(before, after, "the terminal was not restored");
}

#[test]
fn keys_typed_at_a_terminal_reach_the_guest_as_scancodes() {
    let session = Session::start("tmux-keys", "interrupts");
    session.wait_for_keyboard();
    // Raw mode: Ctrl-C is a key for the guest, not SIGINT; arrows are escape sequences.
    session.send(&["-l", "Hi"]);
    session.send(&["C-c", "Up", "Tab", "Enter"]);
    let status = session.finish();
    let out = session.file("out");
    assert_eq!(
        status,
        0,
        "stdout: {out:?}, stderr: {:?}",
        session.file("err")
    );
    assert!(out.contains("\nHi^C[up][tab]\n"), "stdout: {out:?}");
    assert!(
        out.contains("\nscancodes: 2a 23 a3 aa 17 97 1d 2e ae 9d e0 48 e0 c8 0f 8f 1c\n"),
        "stdout: {out:?}"
    );
    terminal_restored(&session);
}

#[test]
fn ctrl_a_h_helps_and_ctrl_a_x_quits_and_restores_the_terminal() {
    let session = Session::start("tmux-quit", "interrupts");
    session.wait_for_keyboard();
    session.send(&["C-a", "h"]);
    session.wait_for("the help", |s| {
        s.file("err").contains("Ctrl-A x        quit mini-kvm")
    });
    session.send(&["C-a", "x"]);
    let status = session.finish();
    assert_eq!(status, 0, "stderr: {:?}", session.file("err"));
    assert!(
        session
            .file("err")
            .contains("mini-kvm: guest 'interrupts' stopped: you pressed Ctrl-A x"),
        "stderr: {:?}",
        session.file("err")
    );
    terminal_restored(&session);
}

#[test]
fn a_signal_restores_the_terminal() {
    let session = Session::start("tmux-signal", "interrupts");
    session.wait_for_keyboard();
    // SIGTERM to mini-kvm (the only process of that binary in this session's directory).
    let pid = find_pid(&session.dir);
    let status = Command::new("kill").arg(pid.to_string()).status().unwrap();
    assert!(status.success());
    let status = session.finish();
    assert_eq!(
        status,
        128 + libc::SIGTERM,
        "stderr: {:?}",
        session.file("err")
    );
    terminal_restored(&session);
}

/// The pid of the mini-kvm whose working directory is `dir`.
fn find_pid(dir: &Path) -> u32 {
    let dir = fs::canonicalize(dir).unwrap();
    for entry in fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let cwd = fs::read_link(entry.path().join("cwd")).ok();
        let exe = fs::read_link(entry.path().join("exe")).ok();
        if cwd.as_deref() == Some(dir.as_path())
            && exe.is_some_and(|e| e.file_name().is_some_and(|n| n == "mini-kvm"))
        {
            return pid;
        }
    }
    panic!("no mini-kvm running in {}", dir.display());
}
