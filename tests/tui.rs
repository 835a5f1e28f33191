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
fn a_closed_terminal_ends_the_view() {
    // The terminal going away mid-run (a closed window): mini-kvm must end, not spin on a
    // terminal that reads end of file forever (crossterm's event loop did, at 100% of a CPU).
    let forever = test_guest("forever");
    let session = start("closed", &[forever.to_str().unwrap()]);
    session.wait_for_screen(&["[1:forever.bin] running"]);
    let pid = session.mini_kvm_pid();
    session.close_terminal();
    let proc = std::path::PathBuf::from(format!("/proc/{pid}"));
    let started = std::time::Instant::now();
    // Gone, or a zombie nobody reaps (its shell went with the terminal).
    let ended = || {
        std::fs::read_to_string(proc.join("stat"))
            .map(|stat| stat.contains(") Z "))
            .unwrap_or(true)
    };
    while !ended() {
        assert!(
            started.elapsed() < std::time::Duration::from_secs(60),
            "mini-kvm (pid {pid}) still runs a minute after its terminal closed"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
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
