//! The `--tui` split-screen view, driven in a real terminal: tmux runs it, `send-keys` types,
//! `capture-pane` reads the screen. Each test checks that the terminal is restored afterwards
//! (canonical mode and echo back on, the summary printed on the normal screen).

mod common;

use std::path::PathBuf;
use std::process::Command;
use std::thread;
use std::time::{Duration, Instant};

use common::{mini_kvm_binary, require_kvm, test_guest};

/// One tmux session running one mini-kvm command line, then a shell epilogue that records the
/// exit status and the terminal settings.
struct Session {
    name: String,
    stty: PathBuf,
}

impl Session {
    fn start(test: &str, args: &[&str]) -> Session {
        require_kvm();
        assert!(
            Command::new("tmux").arg("-V").output().is_ok(),
            "the --tui tests drive a real terminal with tmux: install it (Debian: apt-get install tmux)"
        );
        let name = format!("tui-{test}-{}", std::process::id());
        let stty = std::env::temp_dir().join(format!("{name}.stty"));
        let _ = std::fs::remove_file(&stty);
        let command = format!(
            "{} {}; echo STATUS=$?; stty -a > {}; sleep 60",
            mini_kvm_binary(),
            args.join(" "),
            stty.display()
        );
        let status = Command::new("tmux")
            .args(["new-session", "-d", "-s", &name, "-x", "120", "-y", "32"])
            .arg(command)
            .status()
            .unwrap();
        assert!(status.success(), "tmux new-session failed");
        Session { name, stty }
    }

    fn screen(&self) -> String {
        let output = Command::new("tmux")
            .args(["capture-pane", "-p", "-t", &self.name])
            .output()
            .unwrap();
        String::from_utf8_lossy(&output.stdout).into_owned()
    }

    /// Waits until the screen shows every one of `texts`.
    fn wait_for(&self, texts: &[&str]) -> String {
        let started = Instant::now();
        loop {
            let screen = self.screen();
            if texts.iter().all(|text| screen.contains(text)) {
                return screen;
            }
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "screen never showed {texts:?}:\n{screen}"
            );
            thread::sleep(Duration::from_millis(100));
        }
    }

    fn keys(&self, keys: &[&str]) {
        let status = Command::new("tmux")
            .args(["send-keys", "-t", &self.name])
            .args(keys)
            .status()
            .unwrap();
        assert!(status.success());
    }

    fn type_text(&self, text: &str) {
        self.keys(&["-l", text]);
    }

    /// After mini-kvm has ended: the terminal is back in canonical mode with echo.
    fn assert_terminal_restored(&self) {
        let started = Instant::now();
        while !self.stty.exists() {
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "no stty output"
            );
            thread::sleep(Duration::from_millis(50));
        }
        thread::sleep(Duration::from_millis(100));
        let settings = std::fs::read_to_string(&self.stty).unwrap();
        let words: Vec<&str> = settings.split_whitespace().collect();
        for setting in ["icanon", "echo", "isig"] {
            assert!(
                words.contains(&setting),
                "{setting} is off after --tui:\n{settings}"
            );
        }
    }

    fn pane_pid(&self) -> u32 {
        let output = Command::new("tmux")
            .args(["list-panes", "-t", &self.name, "-F", "#{pane_pid}"])
            .output()
            .unwrap();
        String::from_utf8_lossy(&output.stdout)
            .trim()
            .parse()
            .unwrap()
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        let _ = Command::new("tmux")
            .args(["kill-session", "-t", &self.name])
            .status();
        let _ = std::fs::remove_file(&self.stty);
    }
}

#[test]
fn panes_show_titles_outputs_and_states_and_keys_reach_the_focused_guest() {
    let session = Session::start(
        "panes",
        &["run", "--tui", "hello", "counter", "echo", "matrix"],
    );
    let screen = session.wait_for(&[
        "[1:hello] exited 0 · 2 exits ",
        "[2:counter] exited 0 · 12 exits",
        "[3:echo] running · 1 exit ",
        "[4:matrix] exited 0 · 11 exits",
    ]);
    for text in [
        "Hello, KVM!",
        "0123456789",
        "Matrix 8x8 multiplication",
        "C[0][0] = 162",
        "sum = 16632",
        "Ctrl-Q quit",
    ] {
        assert!(screen.contains(text), "no {text:?} on screen:\n{screen}");
    }
    // Focus the third pane (echo), type a line, end its input.
    session.keys(&["Tab", "Tab"]);
    session.type_text("hi there");
    session.keys(&["Enter", "C-d"]);
    let screen = session.wait_for(&["[3:echo] exited 0", "all guests have ended"]);
    assert!(screen.contains("│hi there"), "{screen}");
    session.keys(&["C-q"]);
    let screen = session.wait_for(&["STATUS=0"]);
    for row in [
        "[1:hello]         0  exited 0",
        "[3:echo]          0  exited 0",
    ] {
        assert!(screen.contains(row), "no {row:?} after quitting:\n{screen}");
    }
    session.assert_terminal_restored();
}

#[test]
fn quitting_stops_guests_that_still_run() {
    let forever = test_guest("forever");
    let session = Session::start(
        "quit",
        &["run", "--tui", "hello", forever.to_str().unwrap()],
    );
    session.wait_for(&["[1:hello] exited 0", "[2:forever.bin] running", "looping"]);
    session.keys(&["C-q"]);
    let screen = session.wait_for(&["STATUS=130"]);
    assert!(
        screen.contains("[2:forever.bin]     130  stopped"),
        "{screen}"
    );
    session.assert_terminal_restored();
}

#[test]
fn a_fault_shows_in_the_pane_title() {
    let triple = test_guest("triple_fault");
    let session = Session::start("fault", &["run", "--tui", triple.to_str().unwrap()]);
    session.wait_for(&[
        "[1:triple_fault.bin] faulted: triple fault (status 125)",
        "before",
    ]);
    session.keys(&["C-q"]);
    session.wait_for(&["STATUS=125"]);
    session.assert_terminal_restored();
}

#[test]
fn sigterm_restores_the_terminal() {
    let forever = test_guest("forever");
    let session = Session::start("sigterm", &["run", "--tui", forever.to_str().unwrap()]);
    session.wait_for(&["[1:forever.bin] running"]);
    // The pane runs `sh -c '...'`; mini-kvm is its child.
    let shell = session.pane_pid();
    let children = Command::new("pgrep")
        .args(["-P", &shell.to_string()])
        .output()
        .expect("pgrep (procps)");
    let pid = String::from_utf8_lossy(&children.stdout).trim().to_string();
    assert!(!pid.is_empty(), "mini-kvm not found under the pane's shell");
    let status = Command::new("kill").args(["-TERM", &pid]).status().unwrap();
    assert!(status.success());
    session.wait_for(&["STATUS=130"]);
    session.assert_terminal_restored();
}
