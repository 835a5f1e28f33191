//! Several vCPUs in one VM (`--cpus N`): the built-in `smp` guest wakes the other CPUs with
//! INIT-SIPI-SIPI and shares a count of primes; a fault on a secondary CPU names that CPU; the
//! timeout report shows every CPU; bad counts are refused.

mod common;

use common::{assert_error, mini_kvm, require_kvm, test_guest};

/// Whether `n` is prime (trial division, as the guest does it).
fn is_prime(n: u32) -> bool {
    n >= 2
        && (2..)
            .take_while(|d| d * d <= n)
            .all(|d| !n.is_multiple_of(d))
}

/// The exact output of `mini-kvm run --cpus N smp`: the 40 blocks of 100 numbers below 4000 are
/// dealt round-robin to the first min(N, 16) CPUs, so each CPU's count depends only on N, never
/// on timing. The counts are computed here, and for 1, 2 and 4 CPUs also written out.
fn smp_output(cpus: usize) -> String {
    let used = cpus.min(16);
    let per_cpu: Vec<(u32, u32)> = (0..used)
        .map(|cpu| {
            let blocks: Vec<u32> = (cpu as u32..40).step_by(used).collect();
            let primes = blocks
                .iter()
                .map(|block| {
                    (block * 100..block * 100 + 100)
                        .filter(|&n| is_prime(n))
                        .count()
                })
                .sum::<usize>();
            (primes as u32, blocks.len() as u32)
        })
        .collect();
    let written_out: Option<&[(u32, u32)]> = match cpus {
        1 => Some(&[(550, 40)]),
        2 => Some(&[(288, 20), (262, 20)]),
        4 => Some(&[(147, 10), (131, 10), (141, 10), (131, 10)]),
        _ => None,
    };
    if let Some(written_out) = written_out {
        assert_eq!(
            per_cpu, written_out,
            "the test's own prime counting is wrong"
        );
    }
    let noun = if cpus == 1 { "CPU" } else { "CPUs" };
    let ids: Vec<String> = (0..used).map(|id| id.to_string()).collect();
    let mut text = format!(
        "smp: the MP table lists {cpus} {noun}, APIC IDs {}",
        ids.join(" ")
    );
    if cpus > used {
        text += &format!(" ... (this guest uses the first {used})");
    }
    text += "\n";
    for (cpu, (primes, blocks)) in per_cpu.iter().enumerate() {
        text += &format!("smp: CPU {cpu} found {primes} primes in {blocks} blocks\n");
    }
    text + "smp: 550 primes below 4000\n"
}

fn check_smp(cpus: usize) {
    require_kvm();
    let count = cpus.to_string();
    let run = mini_kvm(&["run", "--timeout", "60", "--cpus", &count, "smp"], b"");
    assert_eq!(run.status, 0, "{run:?}");
    assert_eq!(run.stdout_text(), smp_output(cpus), "{run:?}");
    assert_eq!(run.stderr, "", "{run:?}");
}

#[test]
fn smp_on_one_cpu() {
    check_smp(1);
}

#[test]
fn smp_on_two_cpus() {
    check_smp(2);
}

#[test]
fn smp_on_four_cpus() {
    check_smp(4);
}

#[test]
fn a_fault_on_a_secondary_cpu_names_that_cpu() {
    require_kvm();
    let guest = test_guest("ap_fault");
    let args = [
        "run",
        "--timeout",
        "60",
        "--mode",
        "protected",
        "--cpus",
        "2",
    ];
    let mut args = args.to_vec();
    args.extend(["--mem", "512K", guest.to_str().unwrap()]);
    let run = mini_kvm(&args, b"");
    assert_eq!(run.status, 127, "{run:?}");
    assert_eq!(run.stdout_text(), "waking CPU 1\n", "{run:?}");
    for line in [
        "mini-kvm: guest 'ap_fault.bin' faulted on CPU 1: unhandled MMIO (KVM_EXIT_MMIO): \
         a 1-byte read at guest-physical 0x90000, which is neither RAM nor a device\n",
        "  mode: real mode (16-bit)\n",
        // (The type's accessed bit differs between kvm_pvm and kvm_amd.)
        "  cs=1100 (base 0x11000, limit 0xffff, type 0x",
        "  at 1100:0005: mov 0,%al  [a0 00 00]\n",
    ] {
        assert!(run.stderr.contains(line), "lacks {line:?}: {run:?}");
    }
    assert!(!run.stderr.contains("panicked"), "{run:?}");
}

#[test]
fn the_timeout_report_shows_every_cpu() {
    require_kvm();
    // `forever` is a real-mode loop; with --irqchip and two CPUs, CPU 1 waits for a SIPI that
    // never comes, and the report says so instead of showing reset registers.
    let guest = test_guest("forever");
    let args = [
        "run",
        "--timeout",
        "0.5",
        "--cpus",
        "2",
        guest.to_str().unwrap(),
    ];
    let run = mini_kvm(&args, b"");
    assert_eq!(run.status, 124, "{run:?}");
    let stderr = &run.stderr;
    for line in [
        "mini-kvm: guest 'forever.bin' was still running after 0.5 s (--timeout): stopped\n",
        "  CPU 0:\n  mode: real mode (16-bit)\n",
        "  CPU 1:\n  never started: waiting for the INIT and SIPI that would start this CPU\n",
    ] {
        assert!(stderr.contains(line), "lacks {line:?}: {run:?}");
    }
}

#[test]
fn cpus_must_be_a_whole_number_from_one() {
    for bad in ["0", "-1", "two", "1.5", ""] {
        let run = mini_kvm(&["run", &format!("--cpus={bad}"), "smp"], b"");
        assert_error(
            &run,
            2,
            &format!(
                "error: invalid value '{bad}' for '--cpus <N>': '{bad}' is not a CPU count: \
                 give a whole number from 1 (e.g. --cpus 2)"
            ),
        );
    }
}

#[test]
fn more_cpus_than_mini_kvm_describes_are_refused() {
    require_kvm();
    let run = mini_kvm(&["run", "--cpus", "1000", "smp"], b"");
    assert_error(
        &run,
        1,
        "mini-kvm: error: --cpus 1000: this host's KVM allows at most ",
    );
    assert!(
        run.stderr
            .contains(" vCPUs in a VM, and mini-kvm at most 181 (what its MP table describes): give --cpus 1 to "),
        "{run:?}"
    );
}

#[test]
fn a_trace_to_a_closed_stderr_does_not_hang_the_other_cpus() {
    require_kvm();
    // Once stderr's reader is gone, trace writes fail (EPIPE). They once panicked the vCPU that
    // wrote them, unannounced, while CPU 0 waited for it forever.
    let mut child = common::mini_kvm_command()
        .args(["run", "--verbose", "--cpus", "2", "smp"])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("start mini-kvm");
    let mut first_bytes = [0u8; 16];
    std::io::Read::read_exact(child.stderr.as_mut().unwrap(), &mut first_bytes).unwrap();
    drop(child.stderr.take());
    let started = std::time::Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if started.elapsed() > std::time::Duration::from_secs(60) {
            let _ = child.kill();
            panic!("mini-kvm still runs 60 s after its stderr closed");
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    assert_eq!(status.code(), Some(0));
}

#[test]
fn stats_of_several_cpus_share_out_their_added_up_time() {
    require_kvm();
    let run = mini_kvm(&["run", "--stats", "--cpus", "2", "smp"], b"");
    assert_eq!(run.status, 0, "{run:?}");
    assert_eq!(run.stdout_text(), smp_output(2), "{run:?}");
    assert!(
        run.stderr
            .contains("\n  time (all vCPUs)             ms  share\n"),
        "{run:?}"
    );
    let share = |label: &str| -> f64 {
        let line = run
            .stderr
            .lines()
            .find(|line| line.starts_with(label))
            .unwrap_or_else(|| panic!("no {label:?} line: {run:?}"));
        line.rsplit(' ')
            .next()
            .and_then(|share| share.trim_end_matches('%').parse().ok())
            .unwrap_or_else(|| panic!("no share in {line:?}"))
    };
    let (guest, vmm) = (share("  in guest (KVM_RUN)"), share("  in VMM"));
    assert!((0.0..=100.0).contains(&guest), "{run:?}");
    assert!((99.8..=100.2).contains(&(guest + vmm)), "{run:?}");
}

#[test]
fn smp_uses_at_most_sixteen_cpus_and_says_so() {
    require_kvm();
    let run = mini_kvm(&["run", "--timeout", "60", "--cpus", "20", "smp"], b"");
    assert_eq!(run.status, 0, "{run:?}");
    // Every CPU's count, exactly: CPUs 0-7 get 3 blocks each, 8-15 get 2, 16-19 none.
    assert_eq!(run.stdout_text(), smp_output(20), "{run:?}");
    assert!(
        run.stdout_text().starts_with(
            "smp: the MP table lists 20 CPUs, APIC IDs 0 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 \
             ... (this guest uses the first 16)\nsmp: CPU 0 found 51 primes in 3 blocks\n"
        ),
        "{run:?}"
    );
    assert_eq!(run.stderr, "", "{run:?}");
}
