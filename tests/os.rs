//! The teaching OS (`mini-kvm run os`), in scripted sessions through a pipe: the exact output
//! of every program (the original 1K OS's texts, byte for byte), the calculator's cases, echo's truncation and
//! backspace, unknown options, the empty line, the end of input, a user process killed by a
//! fault while the shell goes on, and the kernel's fault report.

mod common;

use common::os::{GOODBYE, MENU, assert_session, transcript};
use common::{Run, mini_kvm, require_kvm, stats_value, total_exits};

/// Runs the OS with `input` on stdin (generous timeout: nothing may hang CI).
fn os(input: &str) -> Run {
    require_kvm();
    mini_kvm(&["run", "--timeout", "60", "os"], input.as_bytes())
}

const MULTIPLICATION: &str = "\n=== Multiplication Table ===\n\
    2*1=2 2*2=4 2*3=6 2*4=8 2*5=10 2*6=12 2*7=14 2*8=16 2*9=18 \n\
    3*1=3 3*2=6 3*3=9 3*4=12 3*5=15 3*6=18 3*7=21 3*8=24 3*9=27 \n\
    4*1=4 4*2=8 4*3=12 4*4=16 4*5=20 4*6=24 4*7=28 4*8=32 4*9=36 \n\
    5*1=5 5*2=10 5*3=15 5*4=20 5*5=25 5*6=30 5*7=35 5*8=40 5*9=45 \n\
    6*1=6 6*2=12 6*3=18 6*4=24 6*5=30 6*6=36 6*7=42 6*8=48 6*9=54 \n\
    7*1=7 7*2=14 7*3=21 7*4=28 7*5=35 7*6=42 7*7=49 7*8=56 7*9=63 \n\
    8*1=8 8*2=16 8*3=24 8*4=32 8*5=40 8*6=48 8*7=56 8*8=64 8*9=72 \n\
    9*1=9 9*2=18 9*3=27 9*4=36 9*5=45 9*6=54 9*7=63 9*8=72 9*9=81 \n";

const COUNTER: &str = "\n=== Counter 0-9 ===\n0 1 2 3 4 5 6 7 8 9 \n";

const FIBONACCI: &str = "\n=== Fibonacci Sequence (first 15 numbers) ===\nF(0) = 0\nF(1) = 1\n\
    F(2) = 1\nF(3) = 2\nF(4) = 3\nF(5) = 5\nF(6) = 8\nF(7) = 13\nF(8) = 21\nF(9) = 34\n\
    F(10) = 55\nF(11) = 89\nF(12) = 144\nF(13) = 233\nF(14) = 377\n";

const PRIMES: &str = "\n=== Prime Numbers up to 100 ===\n2 3 5 7 11 13 17 19 23 29 \n\
    31 37 41 43 47 53 59 61 67 71 \n73 79 83 89 97 \nTotal: 25 primes\n";

const FACTORIAL: &str = "\n=== Factorial Calculator ===\nCalculating factorials for n = 0 to 12\n\n\
    0! = 1\n1! = 1\n2! = 2\n3! = 6\n4! = 24\n5! = 120\n6! = 720\n7! = 5040\n8! = 40320\n\
    9! = 362880\n10! = 3628800\n11! = 39916800\n12! = 479001600\n\n\
    Note: 13! = 6227020800 (overflow on 32-bit)\n";

const GCD: &str = "\n=== GCD (Greatest Common Divisor) ===\nExamples of Euclidean algorithm:\n\n\
    GCD(48, 18) = 6\nGCD(100, 75) = 25\nGCD(123, 456) = 3\nGCD(17, 19) = 1\nGCD(1071, 462) = 21\n";

#[test]
fn every_program_prints_its_exact_output() {
    let run = os("1\n2\n4\n5\n7\n8\n");
    assert_session(
        &run,
        &transcript(&[
            ("1", MULTIPLICATION),
            ("2", COUNTER),
            ("4", FIBONACCI),
            ("5", PRIMES),
            ("7", FACTORIAL),
            ("8", GCD),
        ]),
    );
}

#[test]
fn zero_exits_with_status_0_and_ignores_the_rest() {
    let run = os("0\n4\n");
    assert_eq!(run.stdout_text(), format!("{MENU}0\n{GOODBYE}"), "{run:?}");
    assert_eq!(run.status, 0, "{run:?}");
}

#[test]
fn the_end_of_input_exits_like_0() {
    let run = os("");
    assert_session(&run, &format!("{MENU}{GOODBYE}"));
}

#[test]
fn the_calculator_cases() {
    let run = os("6\n42 + 58\n-7 * 3\n100 / 0\n9 / 2\n5 % 2\n10+5\nq\n6\nquit\n");
    let intro = "\n=== Simple Calculator ===\nEnter two numbers and operator (+, -, *, /)\n\
        Example: 12 + 5\nType 'q' to quit\n\n";
    let first = format!(
        "{intro}Calculate: 42 + 58\nResult: 100\nCalculate: -7 * 3\nResult: -21\n\
         Calculate: 100 / 0\nError: Division by zero\nCalculate: 9 / 2\nResult: 4\n\
         Calculate: 5 % 2\nError: Invalid operator\nCalculate: 10+5\nResult: 15\n\
         Calculate: q\nExiting calculator\n"
    );
    let second = format!("{intro}Calculate: quit\nExiting calculator\n");
    assert_session(&run, &transcript(&[("6", &first), ("6", &second)]));
}

#[test]
fn echo_truncates_long_lines_and_handles_backspace() {
    let long = "x".repeat(100);
    // "hellp", Backspace (DEL), "o"; "ab", Backspace (^H), "c".
    let input = format!("3\nhellp\x7fo\nab\x08c\n{long}\nquit\n");
    let run = os(&input);
    let output = format!(
        "\n=== Echo Program (type 'quit' to exit) ===\n\
         $ hellp\x08 \x08o\nEcho: hello\n\
         $ ab\x08 \x08c\nEcho: ac\n\
         $ {long}\nWarning: Input truncated to 63 characters\nEcho: {}\n\
         $ quit\nExiting echo program\n",
        "x".repeat(63)
    );
    assert_session(&run, &transcript(&[("3", &output)]));
}

#[test]
fn the_end_of_input_inside_a_program_returns_to_the_shell_which_exits() {
    // The last line has no newline: it still counts.
    let run = os("3\nbye");
    let output = "\n=== Echo Program (type 'quit' to exit) ===\n$ byeEcho: bye\n$ ";
    assert_session(&run, &format!("{MENU}3\n{output}{MENU}{GOODBYE}"));
}

#[test]
fn unknown_options_and_the_empty_line() {
    let run = os("x\n\n42\n");
    assert_session(
        &run,
        &transcript(&[
            ("x", "Unknown option: x\nPlease select 0-9\n"),
            ("", ""),
            ("42", "Unknown option: 42\nPlease select 0-9\n"),
        ]),
    );
}

#[test]
fn about_tells_what_the_os_is() {
    let run = os("9\n");
    assert_eq!(run.status, 0, "{run:?}");
    let stdout = run.stdout_text();
    let about = stdout
        .split_once("Select: 9\n")
        .and_then(|(_, rest)| rest.split_once(MENU))
        .map(|(about, _)| about)
        .unwrap_or_else(|| panic!("no About screen: {run:?}"));
    assert!(about.starts_with("\n=== About 1K OS ===\n"), "{about}");
    common::assert_contains_all(
        about,
        &[
            "64-bit long mode, 4-level paging",
            "preemptive round-robin",
            "keyboard interrupts",
            "ring 3",
            "system calls: write, read, exit, getpid, yield, sleep, uptime",
            "ud2",
            "This is process ",
        ],
    );
}

#[test]
fn ps_lists_the_processes_with_their_ticks() {
    let run = os("p\n");
    assert_eq!(run.status, 0, "{run:?}");
    let stdout = run.stdout_text();
    let table = stdout
        .split_once("Select: p\n\n=== Processes ===\n")
        .and_then(|(_, rest)| rest.split_once(MENU))
        .map(|(table, _)| table)
        .unwrap_or_else(|| panic!("no process list: {run:?}"));
    let lines: Vec<&str> = table.lines().collect();
    assert_eq!(lines[0], "  PID  STATE     TICKS  NAME", "{table}");
    let row = |pid: &str, name: &str| {
        lines
            .iter()
            .find(|line| {
                let words: Vec<&str> = line.split_whitespace().collect();
                words.first() == Some(&pid) && words.last() == Some(&name)
            })
            .unwrap_or_else(|| panic!("no {name} (pid {pid}) in:\n{table}"))
            .split_whitespace()
            .collect::<Vec<_>>()
    };
    // The shell waits for ps; or the timer took the CPU from it between spawn and wait.
    assert!(
        ["waiting", "ready"].contains(&row("1", "shell")[1]),
        "{table}"
    );
    assert_eq!(row("0", "idle")[1], "ready", "{table}");
    // ps itself is the one running.
    assert_eq!(row("3", "ps")[1], "running", "{table}");
    let bgcount = row("2", "bgcount");
    assert!(["ready", "sleeping"].contains(&bgcount[1]), "{table}");
    assert!(bgcount[2].parse::<u64>().is_ok(), "{table}");
}

#[test]
fn a_user_process_that_reads_address_0_is_killed_and_the_shell_goes_on() {
    let run = os("null\n4\n");
    assert_eq!(run.status, 0, "{run:?}");
    let stdout = run.stdout_text();
    let killed = "\n=== Null Pointer Test ===\nReading address 0...\n\
        os: process 3 (null) killed: page fault (#PF) at rip 0x";
    assert!(stdout.contains(killed), "{run:?}");
    assert!(
        stdout.contains(", address 0x0000000000000000, error code 0x0000000000000004\n"),
        "{run:?}"
    );
    assert!(!stdout.contains("this should not happen"), "{run:?}");
    // The shell runs the next program as if nothing happened.
    assert!(
        stdout.ends_with(&format!("4\n{FIBONACCI}{MENU}{GOODBYE}")),
        "{run:?}"
    );
}

#[test]
fn a_fault_in_the_kernel_is_reported_and_stops_the_machine() {
    require_kvm();
    let run = mini_kvm(
        &["run", "--timeout", "60", "--cmdline", "kernel-fault", "os"],
        b"",
    );
    assert_eq!(run.status, 3, "{run:?}");
    let stdout = run.stdout_text();
    assert!(
        stdout.starts_with("\nos: KERNEL FAULT: page fault (#PF), vector 14, in the kernel\n"),
        "{run:?}"
    );
    common::assert_contains_all(
        &stdout,
        &[
            "  error code 0x0000000000000000  rip 0x",
            "  cr2 0x0000000000000000 (the address that faulted)\n",
            "  rax 0x",
            "  r15 0x",
            "os: the kernel cannot go on: stopping with status 3\n",
        ],
    );
    // No menu: the fault came before the shell.
    assert!(!stdout.contains("Select:"), "{run:?}");
}

#[test]
fn verbose_boot_tells_what_the_kernel_set_up() {
    require_kvm();
    let run = mini_kvm(
        &["run", "--timeout", "60", "--cmdline", "verbose", "os"],
        b"0\n",
    );
    assert_eq!(run.status, 0, "{run:?}");
    let stdout = run.stdout_text();
    assert!(stdout.starts_with("os: 16 MiB of RAM, "), "{run:?}");
    assert!(
        stdout.contains(
            " free page frames\n\
             os: 1 CPU in the MP table\n\
             os: long mode, 4-level paging, page 0 unmapped; GDT, TSS, IDT\n\
             os: PIC at vectors 32-47, PIT at 100 Hz, i8042 keyboard on IRQ 1\n\
             os: started shell (pid 1) and bgcount (pid 2)\n"
        ),
        "{run:?}"
    );
    assert!(stdout.ends_with(&format!("{MENU}0\n{GOODBYE}")), "{run:?}");
}

#[test]
fn the_os_counts_the_cpus_in_the_mp_table() {
    require_kvm();
    // The other CPUs wait for INIT and STARTUP, which this kernel never sends: the session is
    // the same as on one CPU.
    let run = mini_kvm(
        &[
            "run",
            "--timeout",
            "60",
            "--cpus",
            "4",
            "--cmdline",
            "verbose",
            "os",
        ],
        b"0\n",
    );
    assert_eq!(run.status, 0, "{run:?}");
    let stdout = run.stdout_text();
    assert!(
        stdout.contains(
            " free page frames\nos: 4 CPUs in the MP table; the kernel runs on CPU 0 only\n"
        ),
        "{run:?}"
    );
    assert!(stdout.ends_with(&format!("{MENU}0\n{GOODBYE}")), "{run:?}");
}

#[test]
fn the_os_runs_in_little_memory_and_says_when_it_has_too_little() {
    require_kvm();
    let run = mini_kvm(&["run", "--timeout", "60", "--mem", "2M", "os"], b"4\n");
    assert_session(&run, &transcript(&[("4", FIBONACCI)]));
    let run = mini_kvm(&["run", "--timeout", "60", "--mem", "1M", "os"], b"");
    common::assert_error(&run, 1, "does not fit in guest memory");
}

#[test]
fn os_is_a_kernel_built_in() {
    require_kvm();
    let run = mini_kvm(&["list"], b"");
    assert!(
        run.stdout_text()
            .lines()
            .any(|line| line.starts_with("os ") && line.contains("teaching OS")),
        "{run:?}"
    );
    let run = mini_kvm(&["run", "--mode", "long", "os"], b"");
    common::assert_error(&run, 1, "os is a multiboot kernel");
}

#[test]
fn a_menu_round_trip_costs_few_vm_exits() {
    require_kvm();
    // The same session with and without one run of program 4: the difference is one round
    // trip (keys, echo, the program's output, the menu).
    let ports = |input: &[u8]| {
        let run = mini_kvm(&["run", "--timeout", "60", "--stats", "os"], input);
        assert_eq!(run.status, 0, "{run:?}");
        let stats = &run.stderr;
        let rows = stats
            .split_once("  by port ")
            .and_then(|(_, rest)| rest.split_once("\n  time "))
            .unwrap_or_else(|| panic!("no port table: {run:?}"))
            .0;
        let count = |port: &str| stats_value(rows, port) as u64;
        // Every exit of a session is one of these: nothing else leaves the host kernel.
        let virtio: u64 = (0..8)
            .flat_map(|slot: u64| [0, 8].map(move |offset| 0xd000_0000 + slot * 0x1000 + offset))
            .map(|address| count(&format!("{address:#x} read")))
            .sum();
        let (keys, status, hypercalls) =
            (count("0x0060 in"), count("0x0064 in"), count("0x0500 out"));
        assert_eq!(
            keys + status + hypercalls + virtio,
            total_exits(stats),
            "exits the port table does not show: {run:?}"
        );
        // The slot scan: the MagicValue and DeviceID of 8 empty slots.
        assert_eq!(virtio, 16, "{run:?}");
        // The interrupt handler reads the status port before each scancode (more often when
        // the timer interrupts the line editor: that part depends on timing).
        assert!(status >= keys, "{run:?}");
        (keys, status, hypercalls)
    };
    let (without, with) = (ports(b"0\n"), ports(b"4\n0\n"));
    // docs/os.md, "What it costs on our hosts": 4 scancodes (press and release of `4` and
    // Enter), each one read of port 0x60; the echo, the program's output and the menu are 3
    // WRITE hypercalls. How often the status port 0x64 is polled depends on when the timer
    // interrupts the line editor (checked above: at least once per scancode).
    assert_eq!(without.0, 4, "the scancodes of `0` and Enter: {without:?}");
    assert_eq!(
        with.0 - without.0,
        4,
        "scancode reads: {without:?} vs {with:?}"
    );
    assert_eq!(
        with.2 - without.2,
        3,
        "WRITE hypercalls: {without:?} vs {with:?}"
    );
}
