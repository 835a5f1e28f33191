//! The teaching OS at a real terminal (a tmux pane): keys typed one at a time reach the OS as
//! scancodes through mini-kvm's i8042, its keyboard driver and line editor echo them,
//! Backspace erases, and Ctrl-D on an empty line ends the input, which ends the shell.
//!
//! Needs `tmux` (.ci/run installs it). Same approach as tests/keyboard.rs: a detached tmux
//! session, polling files with a watchdog, no timing assertions.

mod common;

use std::fs;
use std::path::PathBuf;
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
            .args(["new-session", "-d", "-s", &name, "-x", "120", "-y", "40"])
            .arg(&script)
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

    /// Waits until stdout holds `text` `times` times.
    fn wait_for_output(&self, text: &str, times: usize) {
        self.wait_for(&format!("{text:?} x{times}"), |s| {
            s.file("out").matches(text).count() >= times
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

    fn finish(&self) -> i32 {
        self.wait_for("mini-kvm to end", |s| s.dir.join("status").exists());
        self.file("status").trim().parse().expect("a status")
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        let _ = Command::new("tmux")
            .args(["kill-session", "-t", &self.name])
            .stderr(std::process::Stdio::null())
            .status();
    }
}

#[test]
fn typing_at_a_terminal_with_backspace_and_ctrl_d() {
    let session = Session::start("os-terminal", "--timeout 60 os");
    session.wait_for_output("Select: ", 1);
    // Typed one key at a time, as a person would: each is an IRQ 1 and a read.
    session.send(&["3", "Enter"]);
    session.wait_for_output("$ ", 1);
    session.send(&["-l", "hellp"]);
    session.send(&["BSpace"]);
    session.send(&["o", "Enter"]);
    session.wait_for_output("Echo: hello\n", 1);
    session.send(&["-l", "quit"]);
    session.send(&["Enter"]);
    session.wait_for_output("Select: ", 2);
    session.send(&["4", "Enter"]);
    session.wait_for_output("F(14) = 377\n", 1);
    session.wait_for_output("Select: ", 3);
    // Ctrl-D on an empty line: the end of input, as on Unix; the shell says goodbye.
    session.send(&["C-d"]);
    let status = session.finish();
    let out = session.file("out");
    assert_eq!(
        status,
        0,
        "stdout: {out:?}, stderr: {:?}",
        session.file("err")
    );
    assert!(
        out.contains("Select: 3\n\n=== Echo Program (type 'quit' to exit) ===\n$ hellp\x08 \x08o\nEcho: hello\n$ quit\nExiting echo program\n"),
        "stdout: {out:?}"
    );
    assert!(
        out.ends_with("Select: \nExiting shell...\nThank you for using 1K OS!\n"),
        "stdout: {out:?}"
    );
    let (before, after) = (session.file("before"), session.file("after"));
    assert!(!before.is_empty(), "no terminal settings recorded");
    assert_eq!(before, after, "the terminal was not restored");
}
