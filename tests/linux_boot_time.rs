//! How long Linux takes to boot under mini-kvm, beside QEMU booting the same kernel and
//! initramfs on the same KVM, in the same run (issue 12). It needs hardware KVM, so the rig runs
//! it: tests/hw-kvm/run carries the host's QEMU in, with its libraries and firmware.
//!
//! Each boot is timed from the process's start to the kernel's first line (`Linux version`) and
//! to the initramfs's `/init` marker; then the test types `poweroff -f` and times the exit. The
//! table goes to stdout (the rig's log). The test asserts that every boot reached `/init` and
//! powered off, never a time: these machines are too noisy for thresholds (README, "Standards").
//!
//! kvmtool is not compared: Debian 12 has no kvmtool package, and CI builds nothing that is not
//! in its package lists.

mod common;

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use common::{mini_kvm, mini_kvm_command, scratch};
use mini_kvm::loader::initramfs::INIT_MARKER;

/// What every boot gets: the same memory, CPUs and command line.
const MEMORY: &str = "256M";
/// One CPU: two vCPUs on the rig's one CPU spin-wait for each other at times, where QEMU's TCG
/// has been seen to hang the rig (docs/testing.md, "When the rig hangs").
const CPUS: &str = "1";
const CMDLINE: &str = "console=ttyS0 panic=-1";
/// The longest a boot may take before the test gives up on it.
const BOOT_LIMIT: Duration = Duration::from_secs(240);

fn env_path(name: &str) -> PathBuf {
    PathBuf::from(std::env::var_os(name).unwrap_or_else(|| {
        panic!("{name} is not set: this test runs in the hardware-KVM rig (tests/hw-kvm/run)")
    }))
}

/// When each milestone came, from the process's start.
#[derive(Debug)]
struct BootTimes {
    first_line: Duration,
    init: Duration,
    exit: Duration,
}

/// Runs one boot: waits for the kernel's first line and the `/init` marker in its console
/// (stdout), then types `poweroff -f` and waits for the process to end.
fn time_boot(label: &str, mut command: Command) -> BootTimes {
    let started = Instant::now();
    let mut child = command
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|error| panic!("{label}: cannot start: {error}"));
    let mut stdin = child.stdin.take().unwrap();
    let mut stdout = child.stdout.take().unwrap();
    let mut stderr = child.stderr.take().unwrap();
    let errors = thread::spawn(move || {
        let mut text = String::new();
        let _ = stderr.read_to_string(&mut text);
        text
    });
    // The console, in chunks as they come, each with its time.
    let (chunks, arrivals) = mpsc::channel();
    thread::spawn(move || {
        let mut chunk = [0u8; 4096];
        while let Ok(n @ 1..) = stdout.read(&mut chunk) {
            if chunks.send(chunk[..n].to_vec()).is_err() {
                break;
            }
        }
    });
    let mut console = Vec::new();
    let mut first_line = None;
    let mut init = None;
    let deadline = started + BOOT_LIMIT;
    while init.is_none() {
        let wait = deadline.saturating_duration_since(Instant::now());
        match arrivals.recv_timeout(wait) {
            Ok(chunk) => console.extend_from_slice(&chunk),
            Err(error) => {
                let _ = child.kill();
                let status = child.wait().unwrap();
                let what = match error {
                    mpsc::RecvTimeoutError::Timeout => {
                        format!("no /init marker within {BOOT_LIMIT:?}")
                    }
                    mpsc::RecvTimeoutError::Disconnected => {
                        format!("ended ({status}) before the /init marker")
                    }
                };
                panic!(
                    "{label}: {what}\n--- console ---\n{}\n--- stderr ---\n{}",
                    String::from_utf8_lossy(&console),
                    errors.join().unwrap()
                );
            }
        }
        let text = String::from_utf8_lossy(&console);
        if first_line.is_none() && text.contains("Linux version") {
            first_line = Some(started.elapsed());
        }
        if text.contains(INIT_MARKER) {
            init = Some(started.elapsed());
        }
    }
    let _ = stdin.write_all(b"\npoweroff -f\n");
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("{label}: still running {BOOT_LIMIT:?} after its start, after poweroff -f");
        }
        thread::sleep(Duration::from_millis(5));
    };
    let exit = started.elapsed();
    while let Ok(chunk) = arrivals.try_recv() {
        console.extend_from_slice(&chunk);
    }
    assert!(
        status.success(),
        "{label}: {status}\n--- console ---\n{}\n--- stderr ---\n{}",
        String::from_utf8_lossy(&console),
        errors.join().unwrap()
    );
    BootTimes {
        first_line: first_line.unwrap_or(init.unwrap()),
        init: init.unwrap(),
        exit,
    }
}

fn mini_kvm_boot(kernel: &Path, initrd: &Path) -> Command {
    let mut command = mini_kvm_command();
    command
        .args(["run", "--mem", MEMORY, "--cpus", CPUS, "--cmdline", CMDLINE])
        .arg("--initrd")
        .arg(initrd)
        .arg(kernel);
    command
}

/// QEMU with KVM, no default devices, the console on stdio, the kernel loaded by its own
/// firmware for the machine (SeaBIOS or qboot, and its option ROM for `-kernel`).
fn qemu_boot(machine: &str, kernel: &Path, initrd: &Path) -> Command {
    let mut command = Command::new("qemu-system-x86_64");
    command
        .args([
            "-M", machine, "-accel", "kvm", "-cpu", "host", "-m", MEMORY, "-smp", CPUS,
        ])
        .args([
            "-nodefaults",
            "-no-user-config",
            "-nographic",
            "-serial",
            "stdio",
        ])
        .arg("-kernel")
        .arg(kernel)
        .arg("-initrd")
        .arg(initrd)
        .args(["-append", CMDLINE]);
    command
}

#[test]
#[ignore = "needs hardware KVM and QEMU: run in the rig (tests/hw-kvm/run)"]
fn linux_boot_time_beside_qemu() {
    let dir = scratch("boot-time");
    let kernel = env_path("MINI_KVM_LINUX_KERNEL");
    let initrd = dir.join("initrd.cpio");
    let run = mini_kvm(&["initramfs", "-o", initrd.to_str().unwrap()], b"");
    assert_eq!(run.status, 0, "{run:?}");

    let boots: Vec<(&str, Command)> = vec![
        ("mini-kvm", mini_kvm_boot(&kernel, &initrd)),
        (
            "QEMU -M microvm -accel kvm",
            qemu_boot("microvm", &kernel, &initrd),
        ),
        ("QEMU -M pc -accel kvm", qemu_boot("pc", &kernel, &initrd)),
    ];
    let times: Vec<(&str, BootTimes)> = boots
        .into_iter()
        .map(|(label, command)| (label, time_boot(label, command)))
        .collect();

    let release = common::kernel_release(&std::fs::read(&kernel).unwrap());
    let mut table = format!(
        "\nLinux boot time: Linux {release} (bzImage) and a busybox initramfs, vCPUs: {CPUS}, \
         memory: {MEMORY}, command line \"{CMDLINE}\", on this host's KVM\n{:<28} {:>12} {:>12} {:>12} \
         {:>14}\n",
        "", "first line", "/init", "powered off", "/init vs ours"
    );
    let ours = times[0].1.init.as_secs_f64();
    for (label, time) in &times {
        table += &format!(
            "{label:<28} {:>10.3} s {:>10.3} s {:>10.3} s {:>13.2}x\n",
            time.first_line.as_secs_f64(),
            time.init.as_secs_f64(),
            time.exit.as_secs_f64(),
            time.init.as_secs_f64() / ours
        );
    }
    table += "kvmtool: not compared (Debian 12 has no kvmtool package)\n";
    // Straight to the process's stdout, past libtest's capture: the table is the test's report,
    // for the rig's log whether or not the test passes.
    let mut stdout = std::io::stdout().lock();
    stdout.write_all(table.as_bytes()).unwrap();
    stdout.flush().unwrap();
}
