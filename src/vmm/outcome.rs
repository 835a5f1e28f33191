//! How a guest run ended: the faults a guest can hit, the exit statuses mini-kvm uses, and the
//! report printed for each (what happened in words, then the registers: vmm/cpu_report.rs).
//!
//! A guest with several vCPUs ends as a whole: the first vCPU that ends it (an EXIT, a fault)
//! decides the outcome, and the report names that CPU.

use std::fmt;
use std::time::Duration;

use super::cpu_report::CpuReport;
use super::kvm::HostKvm;
use super::snapshot::Taken;

/// Why a guest was stopped by something it did wrong, or by something the VMM cannot handle.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fault {
    /// KVM_EXIT_SHUTDOWN: a triple fault.
    TripleFault,
    /// KVM_EXIT_INTERNAL_ERROR with suberror KVM_INTERNAL_ERROR_EMULATION.
    EmulationFailure,
    /// KVM_EXIT_INTERNAL_ERROR with another suberror.
    InternalError { suberror: u32 },
    /// KVM_EXIT_MMIO: an access to a guest-physical address that is neither RAM nor a device.
    UnhandledMmio {
        address: u64,
        write: bool,
        len: usize,
    },
    /// KVM_EXIT_FAIL_ENTRY: the CPU refused to enter the guest (invalid guest state).
    FailedEntry { reason: u64 },
    /// `hlt` with interrupts enabled, but nothing that could ever raise an interrupt.
    HaltedForever,
    /// Any other exit reason the VMM does not handle.
    UnhandledExit { reason: String },
    /// The KVM_RUN ioctl itself failed.
    RunFailed { error: String },
}

impl Fault {
    /// The process exit status for this fault (README: "Exit statuses").
    pub fn exit_code(&self) -> u8 {
        match self {
            Fault::TripleFault => exit_code::TRIPLE_FAULT,
            Fault::EmulationFailure | Fault::InternalError { .. } => exit_code::KVM_INTERNAL_ERROR,
            _ => exit_code::UNHANDLED_EXIT,
        }
    }
}

impl Fault {
    /// A name for summaries.
    pub fn short_name(&self) -> &'static str {
        match self {
            Fault::TripleFault => "triple fault",
            Fault::EmulationFailure => "emulation failure",
            Fault::InternalError { .. } => "KVM internal error",
            Fault::UnhandledMmio { .. } => "unhandled MMIO",
            Fault::FailedEntry { .. } => "failed entry",
            Fault::HaltedForever => "halted forever",
            Fault::UnhandledExit { .. } => "unhandled exit",
            Fault::RunFailed { .. } => "KVM_RUN failed",
        }
    }
}

impl fmt::Display for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Fault::TripleFault => write!(
                f,
                "triple fault (KVM_EXIT_SHUTDOWN): the CPU hit an exception it could not deliver, \
                 then failed to deliver the double fault, and shut down"
            ),
            Fault::EmulationFailure => write!(
                f,
                "emulation failure (KVM_EXIT_INTERNAL_ERROR, KVM_INTERNAL_ERROR_EMULATION): the \
                 host KVM could not emulate this instruction"
            ),
            Fault::InternalError { suberror } => write!(
                f,
                "KVM internal error (KVM_EXIT_INTERNAL_ERROR, suberror {suberror})"
            ),
            Fault::UnhandledMmio {
                address,
                write,
                len,
            } => write!(
                f,
                "unhandled MMIO (KVM_EXIT_MMIO): a {len}-byte {} at guest-physical {address:#x}, \
                 which is neither RAM nor a device",
                if *write { "write" } else { "read" }
            ),
            Fault::FailedEntry { reason } => write!(
                f,
                "KVM could not enter the guest (KVM_EXIT_FAIL_ENTRY, hardware reason {reason:#x})"
            ),
            Fault::HaltedForever => write!(
                f,
                "`hlt` with interrupts enabled, but the guest has no interrupt controller: \
                 nothing can ever wake it"
            ),
            Fault::UnhandledExit { reason } => {
                write!(f, "unhandled VM exit {reason}")
            }
            Fault::RunFailed { error } => write!(f, "KVM_RUN failed: {error}"),
        }
    }
}

/// The process exit statuses mini-kvm uses besides the guest's own (README: "Exit statuses").
pub mod exit_code {
    /// mini-kvm could not set up the guest (no KVM, unreadable image, ...).
    pub const SETUP_ERROR: u8 = 1;
    /// A bad command line (clap's convention).
    pub const USAGE_ERROR: u8 = 2;
    /// A Linux guest's kernel panicked (it reset the machine with the warm-reset flag that
    /// `reboot=panic_warm` sets on a panic: docs/linux.md).
    pub const KERNEL_PANIC: u8 = 123;
    /// The guest was still running at the `--timeout` (as coreutils `timeout`).
    pub const TIMEOUT: u8 = 124;
    /// The guest triple-faulted.
    pub const TRIPLE_FAULT: u8 = 125;
    /// KVM reported an internal error, such as an instruction it could not emulate.
    pub const KVM_INTERNAL_ERROR: u8 = 126;
    /// Any other VM exit mini-kvm cannot handle (MMIO outside RAM, failed entry, ...).
    pub const UNHANDLED_EXIT: u8 = 127;
    /// The user stopped the guest (quit the `--tui` view) while it was running: 128 + SIGINT,
    /// as a shell reports a program ended by Ctrl-C.
    pub const CANCELLED: u8 = 130;
    /// gdb killed the guest (128 + SIGKILL, as a shell shows a killed process).
    pub const KILLED: u8 = 137;
}

/// After an emulation failure on kvm_pvm: why, and what to do.
pub const KVM_PVM_HINT: &str = "mini-kvm: this host's KVM is kvm_pvm, which runs every guest \
     instruction in KVM's emulator and cannot emulate them all (SSE, x87, popcnt, cmpxchg16b...): \
     run this guest where KVM has hardware virtualization (kvm_intel, kvm_amd), e.g. in the \
     hardware-KVM rig (tests/hw-kvm/run)";

/// The registers of every vCPU of a guest, in CPU order (CPU 0 first), at one moment.
pub type AllCpus = Vec<Box<CpuReport>>;

/// Formats the registers of every CPU: one CPU as before SMP, several each under a heading.
fn format_cpus(cpus: &AllCpus) -> String {
    match cpus.as_slice() {
        [only] => only.to_string(),
        several => several
            .iter()
            .enumerate()
            .map(|(index, cpu)| format!("  CPU {index}:\n{cpu}"))
            .collect::<Vec<_>>()
            .join("\n"),
    }
}

/// How one guest's run ended.
pub enum GuestOutcome {
    /// The EXIT hypercall, with the guest's status.
    Exited(u8),
    /// `hlt` with interrupts disabled: the guest is done.
    Halted,
    /// The guest reset the machine (0xfe to the i8042, or the ACPI reset register).
    Rebooted,
    /// The guest powered off through ACPI (the soft-off sleep state).
    PoweredOff,
    /// A Linux kernel panicked: it reset the machine after marking the reset warm.
    KernelPanic,
    /// The user quit with Ctrl-A x (src/terminal.rs).
    Quit,
    /// gdb's `kill` command (`--gdb`).
    Killed,
    /// Still running at the `--timeout`; where each CPU was.
    TimedOut { after: Duration, cpus: AllCpus },
    /// Stopped by a fault; where the faulting CPU was. `on_cpu` names it when the guest has
    /// several.
    Faulted {
        fault: Fault,
        cpu: Box<CpuReport>,
        on_cpu: Option<usize>,
    },
    /// Stopped by the user (quitting the `--tui` view, Ctrl-C) while still running.
    Cancelled { cpus: AllCpus },
    /// `--snapshot`: the guest was saved to a snapshot and stopped there.
    Snapshotted(Taken),
    /// `--snapshot`: the moment came, and saving failed (the message says why).
    SnapshotFailed(String),
}

impl GuestOutcome {
    /// The status the mini-kvm process exits with for this outcome.
    pub fn exit_code(&self) -> u8 {
        match self {
            GuestOutcome::Exited(status) => *status,
            GuestOutcome::Halted
            | GuestOutcome::Rebooted
            | GuestOutcome::PoweredOff
            | GuestOutcome::Quit => 0,
            GuestOutcome::KernelPanic => exit_code::KERNEL_PANIC,
            GuestOutcome::TimedOut { .. } => exit_code::TIMEOUT,
            GuestOutcome::Faulted { fault, .. } => fault.exit_code(),
            GuestOutcome::Cancelled { .. } => exit_code::CANCELLED,
            GuestOutcome::Killed => exit_code::KILLED,
            GuestOutcome::Snapshotted(_) => 0,
            GuestOutcome::SnapshotFailed(_) => exit_code::SETUP_ERROR,
        }
    }

    /// A few words for summaries: "exited 0", "timed out", "faulted: triple fault", ...
    pub fn short_description(&self) -> String {
        match self {
            GuestOutcome::Exited(status) => format!("exited {status}"),
            GuestOutcome::Halted => "halted".to_string(),
            GuestOutcome::Rebooted => "rebooted".to_string(),
            GuestOutcome::PoweredOff => "powered off".to_string(),
            GuestOutcome::KernelPanic => "kernel panic".to_string(),
            GuestOutcome::TimedOut { .. } => "timed out".to_string(),
            GuestOutcome::Faulted { fault, .. } => format!("faulted: {}", fault.short_name()),
            GuestOutcome::Cancelled { .. } => "stopped".to_string(),
            GuestOutcome::Quit => "quit (Ctrl-A x)".to_string(),
            GuestOutcome::Killed => "killed by gdb".to_string(),
            GuestOutcome::Snapshotted(_) => "saved to a snapshot".to_string(),
            GuestOutcome::SnapshotFailed(_) => "snapshot failed".to_string(),
        }
    }

    /// A message for stderr, or `None` when the guest ended normally.
    pub fn report(&self, guest: &str) -> Option<String> {
        match self {
            GuestOutcome::Exited(_) | GuestOutcome::Halted | GuestOutcome::PoweredOff => None,
            GuestOutcome::Rebooted => Some(format!(
                "mini-kvm: guest '{guest}' asked for a reboot (the i8042's reset line or the ACPI \
                 reset register): stopped"
            )),
            GuestOutcome::KernelPanic => Some(format!(
                "mini-kvm: guest '{guest}': the kernel panicked (see its message above) and reset \
                 the machine: stopped"
            )),
            GuestOutcome::Quit => Some(format!(
                "mini-kvm: guest '{guest}' stopped: you pressed Ctrl-A x"
            )),
            GuestOutcome::Killed => {
                Some(format!("mini-kvm: guest '{guest}' stopped: gdb killed it"))
            }
            GuestOutcome::Snapshotted(taken) => Some(format!(
                "mini-kvm: guest '{guest}' saved to the snapshot {} and stopped ({} KiB of RAM, \
                 {} KiB of it written); go on with: mini-kvm restore {}",
                taken.dir.display(),
                taken.ram_size >> 10,
                taken.ram_written >> 10,
                taken.dir.display()
            )),
            GuestOutcome::SnapshotFailed(error) => Some(format!(
                "mini-kvm: error: guest '{guest}' could not be saved: {error}"
            )),
            GuestOutcome::TimedOut { after, cpus } => Some(format!(
                "mini-kvm: guest '{guest}' was still running after {:.1} s (--timeout): stopped\n{}",
                after.as_secs_f64(),
                format_cpus(cpus)
            )),
            GuestOutcome::Faulted { fault, cpu, on_cpu } => {
                // kvm_amd re-initialises the vCPU when it intercepts a shutdown (the VMCB is
                // undefined afterwards), so the registers KVM then reports are the reset state.
                let note = if matches!(fault, Fault::TripleFault)
                    && HostKvm::detect() == HostKvm::Amd
                {
                    "\n  (kvm_amd resets the vCPU at a triple fault: these are its reset registers, \
                     not the faulting ones)"
                } else {
                    ""
                };
                let on = on_cpu.map_or(String::new(), |index| format!(" on CPU {index}"));
                // On software KVM, say what to do about it (a distribution's kernel meets this
                // within a minute: README "Hosts").
                let hint = if matches!(fault, Fault::EmulationFailure)
                    && HostKvm::detect() == HostKvm::Pvm
                {
                    format!("\n{KVM_PVM_HINT}")
                } else {
                    String::new()
                };
                Some(format!(
                    "mini-kvm: guest '{guest}' faulted{on}: {fault}{note}\n{cpu}{hint}"
                ))
            }
            GuestOutcome::Cancelled { cpus } => Some(format!(
                "mini-kvm: guest '{guest}' was stopped while still running\n{}",
                format_cpus(cpus)
            )),
        }
    }
}
