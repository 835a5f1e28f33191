//! Guests that misbehave: each is reported on stderr (what happened, the registers, the
//! instruction) with its own exit status, and none hangs or panics the VMM.

mod common;

use std::io::Read;

use common::{Run, host_kvm_module, mini_kvm, require_kvm, test_guest};

fn run_test_guest(name: &str, extra: &[&str], input: &[u8]) -> Run {
    require_kvm();
    let guest = test_guest(name);
    let mut args = vec!["run"];
    args.extend_from_slice(extra);
    args.push(guest.to_str().unwrap());
    mini_kvm(&args, input)
}

fn assert_report(run: &Run, status: i32, lines: &[&str]) {
    assert_eq!(run.status, status, "{run:?}");
    for line in lines {
        assert!(run.stderr.contains(line), "stderr lacks {line:?}: {run:?}");
    }
    assert!(!run.stderr.contains("panicked"), "{run:?}");
}

#[test]
fn exit_status_reaches_the_process() {
    let run = run_test_guest("exit42", &[], b"");
    assert_eq!(run.status, 42, "{run:?}");
    assert!(run.stdout.is_empty() && run.stderr.is_empty(), "{run:?}");
}

#[test]
fn triple_fault_is_reported() {
    let run = run_test_guest("triple_fault", &[], b"");
    assert_eq!(run.stdout, b"before\n", "{run:?}");
    let common = [
        "mini-kvm: guest 'triple_fault.bin' faulted: triple fault (KVM_EXIT_SHUTDOWN): the CPU \
         hit an exception it could not deliver, then failed to deliver the double fault, and \
         shut down\n",
        "\n  mode: real mode (16-bit)\n",
    ];
    assert_report(&run, 125, &common);
    match host_kvm_module() {
        // kvm_amd resets the vCPU at a shutdown: the report says so instead of showing the
        // faulting registers, which are the reset state (CS:IP f000:fff0, RFLAGS 2).
        "kvm_amd" => assert_report(
            &run,
            125,
            &[
                "(kvm_amd resets the vCPU at a triple fault: these are its reset registers",
                "\n  rip=000000000000fff0 rflags=00000002\n",
            ],
        ),
        // kvm_pvm and kvm_intel keep the faulting state: the `div %cx` by zero with no IDT.
        "kvm_pvm" | "kvm_intel" => assert_report(
            &run,
            125,
            &[
                "\n  rax=0000000000000007 rbx=000000000000001c rcx=0000000000000000 \
                 rdx=0000000000000500\n",
                "\n  rip=0000000000000013 rflags=00010046\n",
                "\n  gdt base=0x0 limit=0xffff  idt base=0x200000 limit=0x0\n",
                "\n  at 1000:0013: div %cx  [f7 f1]\n",
            ],
        ),
        other => panic!("unknown host KVM module {other}: cannot say what its report holds"),
    }
}

#[test]
fn endless_loop_is_stopped_by_the_timeout() {
    let run = run_test_guest("forever", &["--timeout", "1"], b"");
    assert_eq!(run.stdout, b"looping\n", "{run:?}");
    assert_report(
        &run,
        124,
        &[
            "mini-kvm: guest 'forever.bin' was still running after 1.0 s (--timeout): stopped\n",
            "\n  mode: real mode (16-bit)\n",
            // The loop is one instruction, so where it stopped is known exactly.
            "\n  rip=000000000000000d rflags=00000002\n",
            "\n  at 1000:000d: jmp 0x000D  [eb fe]\n",
        ],
    );
}

#[test]
fn a_guest_waiting_for_input_is_stopped_by_the_timeout() {
    // `echo` blocks in GETCHAR; its stdin is a pipe that stays open and never delivers a byte.
    require_kvm();
    let mut child = common::mini_kvm_command()
        .args(["run", "--timeout", "0.5", "echo"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let _open_stdin = child.stdin.take();
    let started = std::time::Instant::now();
    while child.try_wait().unwrap().is_none() {
        assert!(started.elapsed().as_secs() < 60, "mini-kvm hung");
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    let output = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(124), "{stderr}");
    assert!(
        stderr.starts_with(
            "mini-kvm: guest 'echo' was still running after 0.5 s (--timeout): stopped\n"
        ),
        "{stderr}"
    );
    // No input, so nothing echoed.
    assert!(output.stdout.is_empty(), "{stderr}");
}

#[test]
fn the_timeout_stops_guests_whose_stdout_nobody_reads() {
    // `flood` prints forever into a pipe that stays open and is never read: the pipe fills and
    // mini-kvm's writes wait for room, which must not keep --timeout from ending the run. Three
    // guests share the blocked stdout.
    require_kvm();
    let flood = test_guest("flood");
    let mut child = common::mini_kvm_command()
        .args(["run", "--timeout", "0.5"])
        .args([&flood, &flood, &flood])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let unread_stdout = child.stdout.take();
    let started = std::time::Instant::now();
    while child.try_wait().unwrap().is_none() {
        if started.elapsed().as_secs() >= 60 {
            let _ = child.kill();
            panic!("mini-kvm hung on a stdout nobody reads");
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    // What did get into the pipe is whole labelled lines: nothing torn by the stop.
    let mut in_the_pipe = String::new();
    unread_stdout
        .unwrap()
        .read_to_string(&mut in_the_pipe)
        .unwrap();
    assert!(!in_the_pipe.is_empty());
    assert!(in_the_pipe.ends_with('\n'), "a torn last line");
    for line in in_the_pipe.lines() {
        assert!(
            [
                "[1:flood.bin] flood",
                "[2:flood.bin] flood",
                "[3:flood.bin] flood"
            ]
            .contains(&line),
            "{line:?}"
        );
    }
    let output = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(124), "{stderr}");
    assert_eq!(
        stderr
            .matches(
                "mini-kvm: guest 'flood.bin' was still running after 0.5 s (--timeout): stopped"
            )
            .count(),
        3,
        "{stderr}"
    );
    for guest in 1..=3 {
        assert!(
            stderr.contains(&format!("[{guest}:flood.bin]     124  timed out\n")),
            "{stderr}"
        );
    }
}

#[test]
fn access_outside_ram_is_an_unhandled_mmio_exit() {
    let run = run_test_guest("beyond_ram", &[], b"");
    assert_eq!(run.stdout, b"poke\n", "{run:?}");
    assert_report(
        &run,
        127,
        &[
            "mini-kvm: guest 'beyond_ram.bin' faulted: unhandled MMIO (KVM_EXIT_MMIO): a 1-byte \
             write at guest-physical 0x100000, which is neither RAM nor a device\n",
            "\n  mode: real mode (16-bit)\n",
            "\n  ds=1000 (base 0x10000, limit 0xffff, type 0x3)  es=ffff (base 0xffff0, limit \
             0xffff, type 0x3)\n",
            // KVM finishes the `movb` before the exit: RIP is past it, and the report names it.
            "\n  at 1000:0017: xor %bx,%bx  [31 db]\n",
            "\n  exit caused by: after movb $0x2A,%es:0x10  [26 c6 06 10 00 2a]\n",
        ],
    );
}

/// `popcnt` and `pxor` run natively on hardware KVM, but KVM's instruction emulator (all that
/// kvm_pvm has) cannot execute them: there the VMM must report an emulation failure.
fn check_unemulatable(name: &str, mnemonic: &str, hardware_output: &[u8]) {
    let run = run_test_guest(name, &[], b"");
    let module = host_kvm_module();
    match module {
        "kvm_pvm" => {
            assert_report(
                &run,
                126,
                &[
                    &format!(
                        "mini-kvm: guest '{name}.bin' faulted: emulation failure \
                         (KVM_EXIT_INTERNAL_ERROR, KVM_INTERNAL_ERROR_EMULATION): the host KVM \
                         could not emulate this instruction"
                    ),
                    &format!(": {mnemonic} "),
                    mini_kvm::vmm::outcome::KVM_PVM_HINT,
                ],
            );
            assert_eq!(
                run.stdout,
                format!("{name}:").as_bytes(),
                "the partial line before the fault is flushed: {run:?}"
            );
        }
        "kvm_intel" | "kvm_amd" => {
            assert_eq!(run.status, 0, "{run:?}");
            assert_eq!(run.stdout, hardware_output, "{run:?}");
        }
        other => panic!("unknown host KVM module {other}: cannot say what {name} should do"),
    }
}

#[test]
fn popcnt_is_reported_where_kvm_cannot_emulate_it() {
    check_unemulatable("popcnt", "popcnt", b"popcnt:4\n");
}

#[test]
fn pxor_is_reported_where_kvm_cannot_emulate_it() {
    check_unemulatable("pxor", "pxor", b"pxor:ok\n");
}

/// `--verbose` traces every exit on stderr; with stderr a pipe nobody reads, the pipe fills and
/// the vCPU's trace waits for room. The --timeout must still end the run, and its report goes
/// as far as the pipe takes it: the status says how the run ended.
#[test]
fn the_timeout_holds_when_stderr_nobody_reads() {
    require_kvm();
    let flood = test_guest("flood");
    let mut pipe = [0 as libc::c_int; 2];
    // SAFETY: pipe2 fills two descriptors, which the OwnedFds below then own.
    assert_eq!(
        unsafe { libc::pipe2(pipe.as_mut_ptr(), libc::O_CLOEXEC) },
        0
    );
    // SAFETY: both descriptors were just made and are owned by nothing else.
    let (unread, write_end) = unsafe {
        use std::os::fd::FromRawFd;
        (
            std::os::fd::OwnedFd::from_raw_fd(pipe[0]),
            std::os::fd::OwnedFd::from_raw_fd(pipe[1]),
        )
    };
    let mut child = common::mini_kvm_command()
        .args(["run", "--verbose", "--timeout", "2"])
        .arg(&flood)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::from(write_end))
        .spawn()
        .unwrap();
    let status = common::wait_watched(&mut child, "mini-kvm with a stderr nobody reads");
    assert_eq!(status.code(), Some(124));
    // The pipe is full of traces: the run wrote until it could not.
    let mut in_the_pipe = Vec::new();
    std::fs::File::from(unread)
        .read_to_end(&mut in_the_pipe)
        .unwrap();
    // (How much fits depends on the pipe: lines of traces, each whole.)
    let traces = String::from_utf8(in_the_pipe).unwrap();
    assert!(traces.starts_with("exit #1 "), "{:?}", &traces[..200]);
    assert!(traces.len() > 32768, "{} bytes", traces.len());
    assert!(traces.ends_with('\n'), "a torn last trace");
}
