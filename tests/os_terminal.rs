//! The teaching OS at a real terminal (a tmux pane): keys typed one at a time reach the OS as
//! scancodes through mini-kvm's i8042, its keyboard driver and line editor echo them,
//! Backspace erases, and Ctrl-D on an empty line ends the input, which ends the shell.
//!
//! Needs `tmux` (.ci/run installs it). Same approach as tests/keyboard.rs: a detached tmux
//! session, polling files with a watchdog, no timing assertions.

mod common;

use common::terminal::TerminalSession;

#[test]
fn typing_at_a_terminal_with_backspace_and_ctrl_d() {
    let session = TerminalSession::start("os-terminal", "--timeout 60 os");
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
    session.assert_terminal_restored();
}
