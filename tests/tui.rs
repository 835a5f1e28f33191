//! The `--tui` split-screen view, driven in a real terminal: tmux runs it, `send-keys` types,
//! `capture-pane` reads the screen. Each test checks that the terminal is restored afterwards
//! (canonical mode and echo back on, the summary printed on the normal screen).

mod common;

use common::terminal::TerminalSession;
use common::test_guest;

/// `mini-kvm run --tui ARGS` on a terminal of its own.
fn start(test: &str, args: &[&str]) -> TerminalSession {
    TerminalSession::on_screen(test, &format!("run --tui {}", args.join(" ")), &[])
}

#[test]
fn panes_show_titles_outputs_and_states_and_keys_reach_the_focused_guest() {
    let session = start("panes", &["hello", "counter", "echo", "matrix"]);
    let screen = session.wait_for_screen(&[
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
    session.send(&["Tab", "Tab"]);
    session.send(&["-l", "hi there"]);
    session.send(&["Enter", "C-d"]);
    let screen = session.wait_for_screen(&["[3:echo] exited 0", "all guests have ended"]);
    assert!(screen.contains("│hi there"), "{screen}");
    session.send(&["C-q"]);
    let screen = session.wait_for_screen(&["STATUS=0"]);
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
    let session = start("quit", &["hello", forever.to_str().unwrap()]);
    session.wait_for_screen(&["[1:hello] exited 0", "[2:forever.bin] running", "looping"]);
    session.send(&["C-q"]);
    let screen = session.wait_for_screen(&["STATUS=130"]);
    assert!(
        screen.contains("[2:forever.bin]     130  stopped"),
        "{screen}"
    );
    session.assert_terminal_restored();
}

#[test]
fn a_fault_shows_in_the_pane_title() {
    let triple = test_guest("triple_fault");
    let session = start("fault", &[triple.to_str().unwrap()]);
    session.wait_for_screen(&[
        "[1:triple_fault.bin] faulted: triple fault (status 125)",
        "before",
    ]);
    session.send(&["C-q"]);
    session.wait_for_screen(&["STATUS=125"]);
    session.assert_terminal_restored();
}

#[test]
fn a_closed_terminal_ends_the_view_with_status_129() {
    // The terminal going away mid-run (a closed window): mini-kvm must end, not spin on a
    // terminal that reads end of file forever (crossterm's event loop did, at 100% of a CPU),
    // and with the status src/tui/mod.rs promises, 129 (nothing to restore).
    //
    // Its shell dies with the terminal (and sends it SIGHUP), so nobody in the session is left
    // to report how mini-kvm ended: this process becomes the subreaper of its descendants, so
    // that the orphaned mini-kvm becomes its child and can be waited for.
    // SAFETY: prctl with an integer argument has no memory effects.
    let made = unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) };
    assert_eq!(made, 0, "prctl(PR_SET_CHILD_SUBREAPER)");
    let forever = test_guest("forever");
    let session = start("closed", &[forever.to_str().unwrap()]);
    session.wait_for_screen(&["[1:forever.bin] running"]);
    let pid = session.mini_kvm_pid() as libc::pid_t;
    session.close_terminal();
    let started = std::time::Instant::now();
    let status = loop {
        let mut status = 0;
        // SAFETY: waitpid writes only to `status`. ECHILD: its shell has not died yet.
        if unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) } == pid {
            break status;
        }
        assert!(
            started.elapsed() < std::time::Duration::from_secs(60),
            "mini-kvm (pid {pid}) still runs a minute after its terminal closed (watchdog)"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    assert!(
        libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 129,
        "mini-kvm ended with wait status {status:#x}, not exit status 129"
    );
}

#[test]
fn a_closed_terminal_ends_the_view_even_when_its_shell_ignores_sighup() {
    // `trap '' HUP` (or nohup): the shell survives the terminal and passes no SIGHUP on, so
    // mini-kvm learns of the closed window only from its terminal, which reads end of file for
    // ever. crossterm spun on that at 100% of a CPU, deaf even to SIGTERM, until the view
    // polled the terminal itself (src/tui/mod.rs, `wait_for_terminal`).
    let forever = test_guest("forever");
    let session = TerminalSession::on_screen_ignoring_hangup(
        "closed-nohup",
        &format!("run --tui {}", forever.display()),
    );
    session.wait_for_screen(&["[1:forever.bin] running"]);
    // The shell outlives its terminal (it lingers for the screen to be read): its process
    // group goes when the test ends, and so would a mini-kvm still spinning if the test failed.
    let _group = ProcessGroupKiller::of(session.mini_kvm_pid() as libc::pid_t);
    session.close_terminal();
    // The shell lives on, so it reports the status (to the file `status`).
    assert_eq!(session.finish(), 129);
}

/// Kills a process group with SIGKILL when dropped.
struct ProcessGroupKiller(libc::pid_t);

impl ProcessGroupKiller {
    fn of(pid: libc::pid_t) -> Self {
        // SAFETY: getpgid has no memory effects.
        let group = unsafe { libc::getpgid(pid) };
        assert!(group > 0, "getpgid({pid})");
        ProcessGroupKiller(group)
    }
}

impl Drop for ProcessGroupKiller {
    fn drop(&mut self) {
        // SAFETY: kill has no memory effects; the group is the terminal's, never this test's.
        unsafe { libc::kill(-self.0, libc::SIGKILL) };
    }
}

#[test]
fn sigterm_restores_the_terminal() {
    let forever = test_guest("forever");
    let session = start("sigterm", &[forever.to_str().unwrap()]);
    session.wait_for_screen(&["[1:forever.bin] running"]);
    session.signal_mini_kvm(libc::SIGTERM);
    session.wait_for_screen(&["STATUS=130"]);
    session.assert_terminal_restored();
}
