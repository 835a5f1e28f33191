//! Keys typed at a real terminal (a tmux pane): raw mode, scancodes, Ctrl-A x and Ctrl-A h, and
//! the terminal restored afterwards.
//!
//! Needs `tmux` (.ci/run installs it). Each test runs mini-kvm in its own detached tmux session,
//! waits (polling files, bounded by a watchdog, no timing assertion) for the guest to take the
//! keyboard, types with `tmux send-keys`, and reads what mini-kvm wrote to files.

mod common;

use common::terminal::TerminalSession;

/// Waits until the guest has taken the keyboard (mini-kvm announces raw mode on stderr).
fn wait_for_keyboard(session: &TerminalSession) {
    session.wait_for("the guest to take the keyboard", |s| {
        s.file("err").contains("the keyboard goes to the guest")
    });
}

#[test]
fn keys_typed_at_a_terminal_reach_the_guest_as_scancodes() {
    let session = TerminalSession::start("tmux-keys", "interrupts");
    wait_for_keyboard(&session);
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
    session.assert_terminal_restored();
}

#[test]
fn ctrl_a_h_helps_and_ctrl_a_x_quits_and_restores_the_terminal() {
    let session = TerminalSession::start("tmux-quit", "interrupts");
    wait_for_keyboard(&session);
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
    session.assert_terminal_restored();
}

#[test]
fn a_signal_restores_the_terminal() {
    let session = TerminalSession::start("tmux-signal", "interrupts");
    wait_for_keyboard(&session);
    session.signal_mini_kvm(libc::SIGTERM);
    let status = session.finish();
    assert_eq!(
        status,
        128 + libc::SIGTERM,
        "stderr: {:?}",
        session.file("err")
    );
    session.assert_terminal_restored();
}
