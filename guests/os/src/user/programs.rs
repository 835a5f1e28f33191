//! The programs of the menu (their texts are the original 1K OS's, byte for byte: tests/os.rs), the
//! process list, the null-pointer test and the background counter. Each runs as its own
//! process and returns its exit status.

use crate::abi::{ProcessInfo, STATE_NAMES};
use crate::io::{Out, read_line};
use crate::sys;

/// 1: the multiplication tables 2 to 9.
pub fn multiplication() -> i64 {
    let mut out = Out::new();
    out.s(b"\n=== Multiplication Table ===\n");
    for i in 2..=9 {
        for j in 1..=9 {
            out.u(i).s(b"*").u(j).s(b"=").u(i * j).s(b" ");
        }
        out.s(b"\n");
    }
    0
}

/// 2: counts to 9, one number every 50 ms (the `sleep` system call at work).
pub fn counter() -> i64 {
    let mut out = Out::new();
    out.s(b"\n=== Counter 0-9 ===\n");
    for i in 0..10 {
        out.u(i).s(b" ").flush();
        sys::sleep(50);
    }
    out.s(b"\n");
    0
}

/// 3: echoes lines until `quit`.
pub fn echo() -> i64 {
    Out::new().s(b"\n=== Echo Program (type 'quit' to exit) ===\n");
    loop {
        Out::new().s(b"$ ");
        let Some(line) = read_line() else {
            return 0;
        };
        let mut out = Out::new();
        if line.text() == b"quit" {
            out.s(b"Exiting echo program\n");
            return 0;
        }
        if line.truncated {
            out.s(b"Warning: Input truncated to 63 characters\n");
        }
        out.s(b"Echo: ").s(line.text()).s(b"\n");
    }
}

/// 4: the first 15 Fibonacci numbers.
pub fn fibonacci() -> i64 {
    let mut out = Out::new();
    out.s(b"\n=== Fibonacci Sequence (first 15 numbers) ===\n");
    let (mut a, mut b) = (0u64, 1u64);
    for i in 0..15 {
        out.s(b"F(").u(i).s(b") = ").u(a).s(b"\n");
        (a, b) = (b, a + b);
    }
    0
}

/// 5: the primes up to 100, ten to a line.
pub fn primes() -> i64 {
    let mut out = Out::new();
    out.s(b"\n=== Prime Numbers up to 100 ===\n");
    let mut count = 0;
    for n in 2..=100u64 {
        if (2..n).take_while(|d| d * d <= n).all(|d| n % d != 0) {
            out.u(n).s(b" ");
            count += 1;
            if count % 10 == 0 {
                out.s(b"\n");
            }
        }
    }
    if count % 10 != 0 {
        out.s(b"\n");
    }
    out.s(b"Total: ").u(count).s(b" primes\n");
    0
}

/// 6: a calculator for `A op B`.
pub fn calculator() -> i64 {
    Out::new().s(
        b"\n=== Simple Calculator ===\nEnter two numbers and operator (+, -, *, /)\n\
          Example: 12 + 5\nType 'q' to quit\n\n",
    );
    loop {
        Out::new().s(b"Calculate: ");
        let Some(line) = read_line() else {
            return 0;
        };
        let mut out = Out::new();
        match line.text() {
            b"q" | b"quit" => {
                out.s(b"Exiting calculator\n");
                return 0;
            }
            b"" => {}
            text => match parse_calculation(text) {
                None => {
                    out.s(b"Error: Invalid input\n");
                }
                Some((_, b'/', 0)) => {
                    out.s(b"Error: Division by zero\n");
                }
                Some((a, operator, b)) => {
                    let result = match operator {
                        b'+' => a.wrapping_add(b),
                        b'-' => a.wrapping_sub(b),
                        b'*' => a.wrapping_mul(b),
                        b'/' => a.wrapping_div(b),
                        _ => {
                            out.s(b"Error: Invalid operator\n");
                            continue;
                        }
                    };
                    out.s(b"Result: ").i(result).s(b"\n");
                }
            },
        }
    }
}

/// `A op B`, spaces optional around the operator: (A, op, B). The operator is any one
/// character; the caller says which ones it knows.
fn parse_calculation(text: &[u8]) -> Option<(i64, u8, i64)> {
    let mut rest = text;
    let a = parse_number(&mut rest)?;
    skip_spaces(&mut rest);
    let (&operator, after) = rest.split_first()?;
    rest = after;
    let b = parse_number(&mut rest)?;
    skip_spaces(&mut rest);
    rest.is_empty().then_some((a, operator, b))
}

fn skip_spaces(text: &mut &[u8]) {
    while let [b' ', rest @ ..] = text {
        *text = rest;
    }
}

/// An optionally signed decimal number at the start of `text` (after spaces).
fn parse_number(text: &mut &[u8]) -> Option<i64> {
    skip_spaces(text);
    let negative = match text {
        [b'-', rest @ ..] => {
            *text = rest;
            true
        }
        [b'+', rest @ ..] => {
            *text = rest;
            false
        }
        _ => false,
    };
    let mut value: i64 = 0;
    let mut digits = 0;
    while let [digit @ b'0'..=b'9', rest @ ..] = text {
        value = value.wrapping_mul(10).wrapping_add(i64::from(digit - b'0'));
        digits += 1;
        *text = rest;
    }
    (digits > 0).then_some(if negative {
        value.wrapping_neg()
    } else {
        value
    })
}

/// 7: 0! to 12!, which fit in 32 bits.
pub fn factorial() -> i64 {
    let mut out = Out::new();
    out.s(b"\n=== Factorial Calculator ===\nCalculating factorials for n = 0 to 12\n\n");
    let mut value: u32 = 1;
    for n in 0..=12u32 {
        if n > 0 {
            value *= n;
        }
        out.u(u64::from(n)).s(b"! = ").u(u64::from(value)).s(b"\n");
    }
    out.s(b"\nNote: 13! = 6227020800 (overflow on 32-bit)\n");
    0
}

/// 8: Euclid's algorithm on five pairs.
pub fn gcd() -> i64 {
    let mut out = Out::new();
    out.s(b"\n=== GCD (Greatest Common Divisor) ===\nExamples of Euclidean algorithm:\n\n");
    for (a, b) in [(48, 18), (100, 75), (123, 456), (17, 19), (1071, 462)] {
        let (mut x, mut y) = (a, b);
        while y != 0 {
            (x, y) = (y, x % y);
        }
        out.s(b"GCD(").u(a).s(b", ").u(b).s(b") = ").u(x).s(b"\n");
    }
    0
}

/// 9: what this OS is.
pub fn about() -> i64 {
    Out::new()
        .s(b"\n=== About 1K OS ===\n")
        .s(b"A small teaching OS in Rust, booted by mini-kvm as a multiboot kernel.\n")
        .s(b"- 64-bit long mode, 4-level paging; every process has its own address space\n")
        .s(b"- PIT timer interrupts (100 Hz) drive preemptive round-robin scheduling\n")
        .s(b"- i8042 keyboard interrupts feed a line editor (echo, backspace)\n")
        .s(b"- the shell and each program are user processes in ring 3\n")
        .s(b"- system calls: write, read, exit, getpid, yield, sleep, uptime, spawn, wait, ps,\n")
        .s(b"  list, read_file, write_file, random; made with ud2 and a marker, because KVM's\n")
        .s(b"  instruction emulator (hosts without hardware virtualization) runs neither\n")
        .s(b"  syscall nor int $0x80\n")
        .s(b"- also: p lists the processes, null runs a program that reads address 0\n")
        .s(b"- with mini-kvm --disk FILE: ls, cat NAME, write NAME TEXT (a tar archive on a\n")
        .s(b"  virtio disk); with --rng: random (bytes from a virtio entropy device)\n")
        .s(b"This is process ")
        .i(sys::getpid())
        .s(b"; up ")
        .u(sys::uptime_ms())
        .s(b" ms.\n");
    0
}

/// p: the process list.
pub fn ps() -> i64 {
    let mut records = [ProcessInfo {
        pid: 0,
        state: 0,
        ticks: 0,
        name: [0; 16],
    }; 8];
    let count = sys::ps(&mut records);
    let mut out = Out::new();
    out.s(b"\n=== Processes ===\n  PID  STATE     TICKS  NAME\n");
    for record in &records[..count] {
        let name_len = record.name.iter().position(|&b| b == 0).unwrap_or(16);
        let state = STATE_NAMES
            .get(record.state as usize)
            .copied()
            .unwrap_or(b"?");
        out.u_right(u64::from(record.pid), 5)
            .s(b"  ")
            .s_left(state, 8)
            .u_right(record.ticks, 7)
            .s(b"  ")
            .s(&record.name[..name_len])
            .s(b"\n");
    }
    0
}

/// null: reads address 0. The kernel kills this process with a page fault; the shell goes on.
pub fn null_pointer() -> i64 {
    Out::new().s(b"\n=== Null Pointer Test ===\nReading address 0...\n");
    let value: u8;
    // Through `asm!`, so the compiler cannot treat the null read as undefined behaviour.
    unsafe { core::arch::asm!("mov {}, byte ptr [{}]", out(reg_byte) value, in(reg) 0u64) };
    Out::new()
        .s(b"read ")
        .u(u64::from(value))
        .s(b": this should not happen\n");
    1
}

/// The background process: counts in bursts of busy work, 20 ms each by the clock, during
/// which only the timer's preemption lets other processes run (its ticks grow in `ps`); gives
/// the CPU away between two bursts (`yield`) and sleeps before them, so that an emulated CPU is
/// not kept busy all the time (and the shell has the CPU to itself at boot).
pub fn bgcount() -> i64 {
    let mut count: u64 = 0;
    loop {
        sys::sleep(300);
        for _ in 0..2 {
            let end = sys::uptime_ms() + 20;
            while sys::uptime_ms() < end {
                for _ in 0..1_000 {
                    count = core::hint::black_box(count + 1);
                }
            }
            sys::yield_now();
        }
    }
}
