//! The teaching OS's shell sessions (tests/os.rs, tests/os_disk.rs): its menu and goodbye text
//! (the original 1K OS's, byte for byte), whole transcripts, and a
//! comparison that shows where two transcripts part.

use super::Run;

pub const MENU: &str = "\n=== 1K OS Menu ===\n\n  1. Multiplication Table (2x1 ~ 9x9)\n  \
    2. Counter (0-9)\n  3. Echo (interactive)\n  4. Fibonacci Sequence\n  \
    5. Prime Numbers (up to 100)\n  6. Calculator\n  7. Factorial (0! ~ 12!)\n  \
    8. GCD (Greatest Common Divisor)\n  9. About 1K OS\n  0. Exit\n\nSelect: ";

pub const GOODBYE: &str = "\nExiting shell...\nThank you for using 1K OS!\n";

/// The transcript of a session: the menu, then for each (typed line, output) the echoed line
/// and the output and the menu again, then the end of input.
pub fn transcript(steps: &[(&str, &str)]) -> String {
    let mut text = String::from(MENU);
    for (typed, output) in steps {
        text.push_str(typed);
        text.push('\n');
        text.push_str(output);
        text.push_str(MENU);
    }
    text.push_str(GOODBYE);
    text
}

/// The run ended with status 0 and printed exactly `expected`; if not, the panic shows where
/// the two part (whole transcripts are long).
pub fn assert_session(run: &Run, expected: &str) {
    assert_eq!(run.status, 0, "{run:?}");
    let stdout = run.stdout_text();
    if stdout != expected {
        let at = stdout
            .bytes()
            .zip(expected.bytes())
            .position(|(a, b)| a != b)
            .unwrap_or(stdout.len().min(expected.len()));
        let from = at.saturating_sub(80);
        panic!(
            "the transcripts differ at byte {at}:\n--- got ---\n{:?}\n--- expected ---\n{:?}\n{run:?}",
            &stdout[from.min(stdout.len())..(at + 80).min(stdout.len())],
            &expected[from.min(expected.len())..(at + 80).min(expected.len())]
        );
    }
}
