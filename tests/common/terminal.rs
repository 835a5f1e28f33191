//! A real terminal for the tests: mini-kvm runs in a detached tmux session, keys are typed with
//! `tmux send-keys`, the screen is read with `capture-pane`, and the exit status and the terminal
//! settings before and after (`stty -g`) go to files. Every wait is bounded by a watchdog (no
//! timing assertions).
//!
//! Each session has a tmux server of its own (`tmux -S DIR/tmux.socket`). With one shared server, a
//! session started just as another test killed the server's last session could meet a server on
//! its way out ("server exited unexpectedly"), and the test failed for nothing it checks.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use super::{CALLER_VARIABLES, mini_kvm_binary, require_kvm, scratch};

const WATCHDOG: Duration = Duration::from_secs(60);

pub struct TerminalSession {
    /// The session's name on its own tmux server.
    name: String,
    dir: PathBuf,
}

/// Where mini-kvm's stdout and stderr go.
enum Output {
    /// To the files `out` and `err` in the session's directory.
    Files,
    /// To the terminal, where `screen()` reads them.
    Screen,
}

impl TerminalSession {
    /// Starts `mini-kvm run ARGS` in a new 120x40 terminal, its stdout and stderr going to the
    /// files `out` and `err`.
    pub fn start(test: &str, args: &str) -> TerminalSession {
        Self::launch(test, args, &[], Output::Files, "")
    }

    /// Starts `mini-kvm ARGS` (the whole command line) with `ENV` set, in a new 120x40 terminal
    /// that shows its stdout and stderr. The terminal stays open after mini-kvm ends, with
    /// `STATUS=n` as its last line, so that `screen()` can read what it printed.
    pub fn on_screen(test: &str, args: &str, env: &[(&str, &str)]) -> TerminalSession {
        Self::launch(test, args, env, Output::Screen, "")
    }

    /// As `on_screen`, from a shell that ignores SIGHUP (`trap '' HUP`, as `nohup` does): when
    /// the terminal closes, that shell neither exits nor passes SIGHUP on, so mini-kvm gets no
    /// signal, only a terminal that reads as end of file.
    pub fn on_screen_ignoring_hangup(test: &str, args: &str) -> TerminalSession {
        Self::launch(test, args, &[], Output::Screen, "trap '' HUP; ")
    }

    fn launch(
        test: &str,
        args: &str,
        env: &[(&str, &str)],
        output: Output,
        shell_prelude: &str,
    ) -> TerminalSession {
        require_kvm();
        assert!(
            Command::new("tmux").arg("-V").output().is_ok(),
            "these tests drive a real terminal with tmux: install it (Debian: apt-get install tmux)"
        );
        let dir = scratch(test);
        let name = format!("mini-kvm-{test}");
        let env: String = env.iter().map(|(k, v)| format!("{k}={v} ")).collect();
        let binary = mini_kvm_binary();
        let run = match output {
            Output::Files => format!("{env}{binary} run {args} > out 2> err"),
            Output::Screen => format!("{env}{binary} {args}"),
        };
        let linger = match output {
            Output::Files => "",
            Output::Screen => "; echo STATUS=$s; sleep 600",
        };
        // The caller's environment reaches the tmux server: mini-kvm starts without the
        // variables it reads, then gets only those the test sets (`env`).
        let script = format!(
            "{shell_prelude}unset {unset}; cd {dir}; stty -g > before; {run}; s=$?; stty -g > after; echo $s > status.tmp; \
             mv status.tmp status{linger}",
            unset = CALLER_VARIABLES.join(" "),
            dir = dir.display(),
        );
        let session = TerminalSession { name, dir };
        let started = session
            .tmux()
            .args([
                "new-session",
                "-d",
                "-s",
                &session.name,
                "-x",
                "120",
                "-y",
                "40",
            ])
            .arg(&script)
            .status()
            .expect("run tmux");
        assert!(started.success(), "tmux new-session failed");
        session
    }

    /// A tmux command on this session's own server, without the user's tmux configuration.
    fn tmux(&self) -> Command {
        let mut command = Command::new("tmux");
        command.arg("-S").arg(self.dir.join("tmux.socket"));
        command.args(["-f", "/dev/null"]);
        command
    }

    /// The directory mini-kvm runs in (and writes its files to).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// One of the files the session writes: out, err, status, before, after.
    pub fn file(&self, name: &str) -> String {
        fs::read_to_string(self.dir.join(name)).unwrap_or_default()
    }

    /// The screen as it is now; with `colours`, its colours as SGR escape sequences.
    pub fn screen(&self, colours: bool) -> String {
        let mut command = self.tmux();
        command.args(["capture-pane", "-p", "-t", &self.name]);
        if colours {
            command.arg("-e");
        }
        let output = command.output().expect("tmux capture-pane");
        String::from_utf8_lossy(&output.stdout).into_owned()
    }

    /// The screen as it is now, cell by cell: each character with its colours, from the SGR
    /// sequences tmux writes (`capture-pane -e`).
    pub fn cells(&self) -> Vec<Vec<Cell>> {
        parse_screen(&self.screen(true))
    }

    pub fn wait_for(&self, what: &str, done: impl Fn(&TerminalSession) -> bool) {
        let started = Instant::now();
        while !done(self) {
            assert!(
                started.elapsed() < WATCHDOG,
                "waited {WATCHDOG:?} for {what}; stdout: {:?}, stderr: {:?}, screen:\n{}",
                self.file("out"),
                self.file("err"),
                self.screen(false)
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

    /// Waits until the screen shows every one of `texts`; returns the screen.
    pub fn wait_for_screen(&self, texts: &[&str]) -> String {
        self.wait_for(&format!("the screen to show {texts:?}"), |s| {
            let screen = s.screen(false);
            texts.iter().all(|text| screen.contains(text))
        });
        self.screen(false)
    }

    /// Types `keys` (tmux key names, or `-l` and literal text).
    pub fn send(&self, keys: &[&str]) {
        let status = self
            .tmux()
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
        self.finish();
        let (before, after) = (self.file("before"), self.file("after"));
        assert!(!before.is_empty(), "no terminal settings recorded");
        assert_eq!(before, after, "the terminal was not restored");
    }

    /// Sends `signal` to the mini-kvm this session runs.
    pub fn signal_mini_kvm(&self, signal: libc::c_int) {
        let pid = self.mini_kvm_pid();
        // SAFETY: kill(2) on a pid we just found running our binary.
        let sent = unsafe { libc::kill(pid as libc::pid_t, signal) };
        assert_eq!(sent, 0, "kill({pid}, {signal}) failed");
    }

    /// The pid of the mini-kvm this session runs (the only process of that binary whose
    /// working directory is the session's).
    pub fn mini_kvm_pid(&self) -> u32 {
        let dir = fs::canonicalize(&self.dir).unwrap();
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
}

impl TerminalSession {
    /// From now on, copies every byte mini-kvm writes to its terminal, escape sequences and all,
    /// to the file `name` in the session's directory (`tmux pipe-pane`): what tmux itself would
    /// not show, such as images.
    pub fn record_output(&self, name: &str) {
        let status = self
            .tmux()
            .args(["pipe-pane", "-o", "-t", &self.name])
            .arg(format!("cat > {}", self.dir.join(name).display()))
            .status()
            .expect("tmux pipe-pane");
        assert!(status.success());
    }

    /// Closes the terminal under mini-kvm, as closing its window does: the tmux server goes, and
    /// with it the pseudo-terminal (SIGHUP, then end of file on every read).
    pub fn close_terminal(&self) {
        let _ = self
            .tmux()
            .arg("kill-server")
            .stderr(Stdio::null())
            .status();
    }
}

impl Drop for TerminalSession {
    fn drop(&mut self) {
        // Ends the session's server too: it has no other session.
        self.close_terminal();
    }
}

/// A colour as a terminal sets it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Colour {
    Default,
    /// One of the 256 indexed colours (0-15: the terminal's 16).
    Indexed(u8),
    Rgb(u8, u8, u8),
}

/// One character cell of the screen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cell {
    pub character: char,
    pub foreground: Colour,
    pub background: Colour,
    pub reversed: bool,
}

/// Splits `capture-pane -e` output into cells, following the SGR sequences (`ESC [ ... m`) it
/// holds: reset, reverse video, and the foreground and background colours in all their forms.
pub fn parse_screen(screen: &str) -> Vec<Vec<Cell>> {
    let mut state = Cell {
        character: ' ',
        foreground: Colour::Default,
        background: Colour::Default,
        reversed: false,
    };
    let mut rows = Vec::new();
    for line in screen.lines() {
        let mut row = Vec::new();
        let mut chars = line.chars().peekable();
        while let Some(character) = chars.next() {
            if character != '\x1b' {
                row.push(Cell { character, ..state });
                continue;
            }
            // ESC [ parameters m
            chars.next();
            let mut parameters = String::new();
            for c in chars.by_ref() {
                if c == 'm' {
                    break;
                }
                parameters.push(c);
            }
            let numbers: Vec<u8> = parameters
                .split(';')
                .map(|n| n.parse().unwrap_or(0))
                .collect();
            let mut numbers = numbers.into_iter();
            while let Some(number) = numbers.next() {
                let colour = |numbers: &mut std::vec::IntoIter<u8>| match numbers.next() {
                    Some(5) => Colour::Indexed(numbers.next().unwrap_or(0)),
                    _ => Colour::Rgb(
                        numbers.next().unwrap_or(0),
                        numbers.next().unwrap_or(0),
                        numbers.next().unwrap_or(0),
                    ),
                };
                match number {
                    0 => {
                        state.foreground = Colour::Default;
                        state.background = Colour::Default;
                        state.reversed = false;
                    }
                    7 => state.reversed = true,
                    27 => state.reversed = false,
                    30..=37 => state.foreground = Colour::Indexed(number - 30),
                    90..=97 => state.foreground = Colour::Indexed(number - 90 + 8),
                    40..=47 => state.background = Colour::Indexed(number - 40),
                    100..=107 => state.background = Colour::Indexed(number - 100 + 8),
                    38 => state.foreground = colour(&mut numbers),
                    48 => state.background = colour(&mut numbers),
                    39 => state.foreground = Colour::Default,
                    49 => state.background = Colour::Default,
                    // Bold, underline and the like: not what these tests look at.
                    _ => {}
                }
            }
        }
        rows.push(row);
    }
    rows
}
