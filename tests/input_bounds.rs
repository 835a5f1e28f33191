//! Back-pressure on guest input: however fast stdin delivers, mini-kvm reads it only as fast as
//! the guest takes it (a 4 KiB buffer, src/console/input.rs), so its memory stays flat; and an
//! image larger than guest memory is refused from its size, before a byte of it is read; and a
//! labelled line without an end is cut every 64 KiB; and a WRITE hypercall of 1.5 GiB goes out in
//! 64 KiB chunks.
//!
//! This file holds one test on purpose: it reads the peak RSS of this process's children
//! (getrusage RUSAGE_CHILDREN), which other tests running alongside would mix in.

mod common;

use std::fs::File;
use std::io::Read;
use std::process::{Command, Stdio};

use common::{mini_kvm_command, require_kvm, test_guest, wait_watched};

/// Peak resident memory of the waited-for children so far, in KiB.
fn children_peak_rss_kib() -> i64 {
    // SAFETY: getrusage fills the struct we hand it.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    assert_eq!(
        unsafe { libc::getrusage(libc::RUSAGE_CHILDREN, &mut usage) },
        0
    );
    usage.ru_maxrss
}

/// Runs a guest that reads input until `--timeout` with stdin from `source`; returns its
/// status and stdout byte count. The regression this file guards against would make mini-kvm
/// run past its timeout: the wait has a watchdog (common::WATCHDOG), which kills it and fails.
fn flood(guest: &str, args: &[&str], source: Stdio) -> (i32, usize) {
    let mut child = mini_kvm_command()
        .arg("run")
        .args(args)
        .arg(guest)
        .stdin(source)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start mini-kvm");
    let mut stdout = child.stdout.take().unwrap();
    // Read on another thread, so that the watchdog below runs even while nothing comes.
    let reader = std::thread::spawn(move || {
        let mut printed = 0;
        let mut chunk = [0u8; 65536];
        loop {
            match stdout.read(&mut chunk) {
                Ok(0) | Err(_) => break printed,
                Ok(n) => printed += n,
            }
        }
    });
    let status = wait_watched(&mut child, &format!("mini-kvm run {args:?} {guest}"));
    let printed = reader.join().unwrap();
    // Killed by a signal: -1, which no assertion below accepts.
    (status.code().unwrap_or(-1), printed)
}

/// Like [`flood`] without a short `--timeout`: waits for an event, mini-kvm having printed at
/// least `bytes`, then stops it with SIGTERM (under the watchdog, in case it never gets there).
/// Returns the signal that ended it (`None`: it exited by itself) and its stdout byte count.
fn flood_until(guest: &str, args: &[&str], source: Stdio, bytes: usize) -> (Option<i32>, usize) {
    use std::os::unix::process::ExitStatusExt;
    let mut child = mini_kvm_command()
        .args(["run", "--timeout", "600"])
        .args(args)
        .arg(guest)
        .stdin(source)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start mini-kvm");
    let mut stdout = child.stdout.take().unwrap();
    let (enough, got_enough) = std::sync::mpsc::channel();
    let reader = std::thread::spawn(move || {
        let mut printed = 0;
        let mut chunk = [0u8; 65536];
        loop {
            match stdout.read(&mut chunk) {
                Ok(0) | Err(_) => break printed,
                Ok(n) => {
                    printed += n;
                    if printed >= bytes {
                        let _ = enough.send(());
                    }
                }
            }
        }
    });
    let started = std::time::Instant::now();
    loop {
        if got_enough.try_recv().is_ok() || child.try_wait().unwrap().is_some() {
            break;
        }
        if started.elapsed() > common::WATCHDOG {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "mini-kvm run {args:?} {guest} printed less than {bytes} bytes in {:?}",
                common::WATCHDOG
            );
        }
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    // SAFETY: a signal to our own child, which has not been waited for yet.
    unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) };
    let status = wait_watched(&mut child, &format!("mini-kvm run {args:?} {guest}"));
    (status.signal(), reader.join().unwrap())
}

#[test]
fn endless_input_is_read_only_as_fast_as_the_guest_takes_it() {
    require_kvm();
    // Without back-pressure, stdin from /dev/zero grew mini-kvm by gigabytes in two seconds.
    const LIMIT_KIB: i64 = 64 * 1024;

    // /dev/zero cannot be polled (epoll refuses it): read whenever the buffer has room.
    // `echo` takes input with GETCHAR, one hypercall per byte.
    let (status, _) = flood(
        "echo",
        &["--timeout", "2"],
        File::open("/dev/zero").unwrap().into(),
    );
    assert_eq!(status, 124);

    // `uart_echo` polls the UART's line status register, then reads the receive buffer.
    let guest = test_guest("uart_echo");
    let (status, _) = flood(
        guest.to_str().unwrap(),
        &["--timeout", "2"],
        File::open("/dev/zero").unwrap().into(),
    );
    assert_eq!(status, 124);

    // The keyboard: `interrupts` gets scancodes on IRQ 1 from a queue that stops taking
    // input while it is long.
    let (status, _) = flood(
        "interrupts",
        &["--timeout", "2"],
        File::open("/dev/zero").unwrap().into(),
    );
    assert_eq!(status, 124);

    // A pipe that never runs dry (`yes`): polled, and dropped from the poll set while the
    // buffer is full, so `yes` waits on a full pipe.
    let mut yes = Command::new("yes")
        .stdout(Stdio::piped())
        .spawn()
        .expect("start yes");
    let pipe = yes.stdout.take().unwrap();
    // Stopped once it has echoed 16 KiB, four times its input buffer: an event, not a time.
    let (signal, printed) = flood_until("echo", &[], pipe.into(), 16 << 10);
    let _ = yes.kill();
    let _ = yes.wait();
    assert_eq!(
        signal,
        Some(libc::SIGTERM),
        "echo ended before it echoed 16 KiB"
    );
    assert!(printed >= 16 << 10, "echo printed {printed} bytes");

    // Labelled output (two guests) from a guest that never ends its line: once 1.6 GB in a
    // second, now cut every 64 KiB. Stopped once three cuts' worth is out.
    let endless = test_guest("no_newline");
    let (signal, printed) = flood_until(
        "hello",
        &[endless.to_str().unwrap()],
        Stdio::null(),
        3 << 16,
    );
    assert_eq!(signal, Some(libc::SIGTERM), "no_newline ended by itself");
    assert!(printed >= 3 << 16, "only {printed} bytes printed");

    // One WRITE hypercall of 1.5 GiB into a stdout nobody reads: once 4.7 GB and 20 s past a
    // 0.5 s --timeout. Now it goes out 64 KiB at a time, the pipe fills, and the timeout stops
    // the guest between chunks.
    let huge_write = test_guest("huge_write");
    let mut child = mini_kvm_command()
        .args([
            "run",
            "--mode",
            "protected",
            "--mem",
            "2G",
            "--timeout",
            "1",
        ])
        .arg(&huge_write)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start mini-kvm");
    let unread_stdout = child.stdout.take();
    let status = wait_watched(&mut child, "mini-kvm run huge_write").code();
    drop(unread_stdout);
    assert_eq!(status, Some(124));

    // A sparse 5 GiB image for a 2 GiB guest (it once took 5 GB and 30 s to refuse).
    let huge = std::env::temp_dir().join(format!("mini-kvm-test-{}-huge.bin", std::process::id()));
    File::create(&huge).unwrap().set_len(5 << 30).unwrap();
    let (status, _) = flood(huge.to_str().unwrap(), &["--mem", "2G"], Stdio::null());
    let _ = std::fs::remove_file(&huge);
    assert_eq!(status, 1);

    let peak = children_peak_rss_kib();
    assert!(
        peak < LIMIT_KIB,
        "a mini-kvm fed endless input or a huge image peaked at {peak} KiB (limit {LIMIT_KIB} KiB)"
    );
}
