//! Every built-in real-mode guest: exact output bytes, exit status, and exit counts (the README's
//! "Built-in guests" table shows them), run on the real /dev/kvm.

mod common;

use common::{mini_kvm, require_kvm, total_exits};

/// Runs a built-in guest with `--stats`; checks the status is 0 and stdout is exactly `expected`.
/// Returns the number of VM exits.
fn check_guest(name: &str, input: &[u8], expected: &[u8]) -> u64 {
    require_kvm();
    let run = mini_kvm(&["run", "--stats", name], input);
    assert_eq!(run.status, 0, "{name}: {run:?}");
    assert_eq!(
        run.stdout,
        expected,
        "{name} printed {:?}, expected {:?}",
        run.stdout_text(),
        String::from_utf8_lossy(expected)
    );
    total_exits(&run.stderr)
}

#[test]
fn minimal_is_one_hlt_exit() {
    let exits = check_guest("minimal", b"", b"");
    assert_eq!(exits, 1);
}

#[test]
fn hello_prints_over_the_uart_in_two_exits() {
    // The first UART write exits (and turns coalescing on), the other 11 queue, then EXIT
    // (tests/coalesced_io.rs has the 13 exits without coalescing).
    let exits = check_guest("hello", b"", b"Hello, KVM!\n");
    assert_eq!(exits, 2);
}

#[test]
fn counter() {
    check_guest("counter", b"", b"0123456789\n");
}

#[test]
fn hctest_uses_every_basic_hypercall() {
    check_guest("hctest", b"", b"Hello!\n42\n1234\nwritten in one exit\n");
}

#[test]
fn multiplication() {
    let mut expected = String::new();
    for a in 2..=9 {
        let row: Vec<String> = (1..=9).map(|b| format!("{a}x{b}={}", a * b)).collect();
        expected.push_str(&row.join(" "));
        expected.push('\n');
    }
    check_guest("multiplication", b"", expected.as_bytes());
}

#[test]
fn multiplication_short() {
    check_guest(
        "multiplication_short",
        b"",
        b"2x1=2 2x2=4 2x3=6 2x4=8 2x5=10 2x6=12 2x7=14 2x8=16 2x9=18\n",
    );
}

#[test]
fn fibonacci() {
    check_guest(
        "fibonacci",
        b"",
        b"Fibonacci: 0, 1, 1, 2, 3, 5, 8, 13, 21, 34, 55, 89, 144, 233, 377\n",
    );
}

#[test]
fn matrix() {
    check_guest(
        "matrix",
        b"",
        b"Matrix 8x8 multiplication\nC[0][0] = 162\nC[7][7] = 198\nsum = 16632\n",
    );
}

#[test]
fn echo_returns_its_input_unchanged() {
    // Every byte value, including 0xFF (which must not be taken for end of input).
    let input: Vec<u8> = (0..=255u8).chain(b"end\n".iter().copied()).collect();
    check_guest("echo", &input, &input);
}

#[test]
fn echo_with_no_input_prints_nothing() {
    check_guest("echo", b"", b"");
}

#[test]
fn vga_text_writes_its_screen_without_an_exit_per_character() {
    // 4 `out`s to the CRT controller, the WRITE and the EXIT: the 2000 cells of the buffer are
    // memory writes (tests/display.rs checks the screen itself).
    let exits = check_guest(
        "vga_text",
        b"",
        b"vga_text: the screen is in the text buffer at 0xb8000\n",
    );
    assert_eq!(exits, 6);
}

#[test]
fn list_names_every_builtin_guest() {
    let run = mini_kvm(&["list"], b"");
    assert_eq!(run.status, 0);
    let names: Vec<String> = run
        .stdout_text()
        .lines()
        .map(|line| line.split_whitespace().next().unwrap_or("").to_string())
        .collect();
    // Every built-in guest, in the order `list` gives them, and nothing else.
    assert_eq!(
        names,
        [
            "os",
            "counter",
            "echo",
            "fibonacci",
            "hctest",
            "hello",
            "matrix",
            "minimal",
            "multiplication",
            "multiplication_short",
            "vga_text",
            "interrupts",
            "mandelbrot",
            "pm_hello",
            "pm_paging",
            "smp",
            "long_hello",
        ],
        "{run:?}"
    );
    assert_eq!(run.stderr, "", "{run:?}");
    // Each line says what the guest demonstrates.
    for line in run.stdout_text().lines() {
        assert!(line.split_whitespace().count() > 2, "no summary: {line:?}");
    }
}
