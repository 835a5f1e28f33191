//! VM exits: how a guest run ended, the statistics of its exits, and the reports printed when a
//! guest faults (what happened in words, the registers, the instruction at RIP decoded).

use std::collections::BTreeMap;
use std::fmt::{self, Write as _};
use std::time::Duration;

use iced_x86::{Decoder, DecoderOptions, Formatter, GasFormatter, Instruction};
use kvm_bindings::{kvm_regs, kvm_segment, kvm_sregs};

use crate::arch::CpuMode;

/// The registers of a vCPU at one moment, and the code bytes at its RIP.
#[derive(Clone)]
pub struct CpuSnapshot {
    pub regs: kvm_regs,
    pub sregs: kvm_sregs,
    /// Up to 15 bytes (the longest x86 instruction) read at CS.base + RIP; fewer when RIP is
    /// near the end of RAM or unmapped.
    pub code: [u8; 15],
    pub code_len: usize,
    /// The 15 bytes just before RIP (fewer at a page start): an instruction that KVM has
    /// already completed is there.
    pub preceding: [u8; 15],
    pub preceding_len: usize,
    /// For exits caused by an instruction RIP may have moved past: that instruction.
    pub caused_by: Option<String>,
}

impl CpuSnapshot {
    pub fn mode(&self) -> CpuMode {
        CpuMode::of(&self.sregs)
    }

    /// "1000:0005" in real mode, "0x00100005" otherwise.
    pub fn location(&self) -> String {
        match self.mode() {
            CpuMode::Real => format!("{:04x}:{:04x}", self.sregs.cs.selector, self.regs.rip),
            CpuMode::Long64 => format!("{:#018x}", self.regs.rip),
            _ => format!("{:#010x}", self.regs.rip),
        }
    }

    /// The instruction at RIP in AT&T syntax (the syntax of our guest sources), with its bytes.
    pub fn instruction(&self) -> String {
        let bytes = &self.code[..self.code_len];
        if bytes.is_empty() {
            return "(no code: RIP is outside guest memory or unmapped)".to_string();
        }
        match self.decode(bytes, self.regs.rip) {
            Some(instruction) => format_instruction(&instruction, bytes),
            None => format!("(not a valid instruction: {})", hex_bytes(bytes)),
        }
    }

    /// The instruction that caused an exit. KVM leaves RIP *after* a `hlt` and after an
    /// emulated MMIO write; for `in`/`out`, hardware KVM exits with RIP on the instruction, while
    /// KVM's instruction emulator (kvm_pvm) has already completed it (`io_completed`). When the
    /// cause is the instruction ending exactly at RIP, it is shown as "after ...".
    pub fn exit_instruction(&self, cause: ExitCause, io_completed: bool) -> String {
        let at_rip = &self.code[..self.code_len];
        let rip_matches = self
            .decode(at_rip, self.regs.rip)
            .is_some_and(|i| cause.matches(&i));
        let before = self.instruction_ending_at_rip(cause);
        let prefer_before = match cause {
            ExitCause::PortIn | ExitCause::PortOut => io_completed,
            ExitCause::Halt | ExitCause::MemoryWrite => true,
        };
        match (prefer_before, before, rip_matches) {
            (true, Some(before), _) => before,
            (_, _, true) => self.instruction(),
            (false, Some(before), false) => before,
            _ => self.instruction(),
        }
    }

    /// The instruction of kind `cause` that ends exactly at RIP, if the bytes before RIP hold one.
    fn instruction_ending_at_rip(&self, cause: ExitCause) -> Option<String> {
        let before = &self.preceding[..self.preceding_len];
        (0..before.len()).find_map(|start| {
            let bytes = &before[start..];
            let ip = self.regs.rip.wrapping_sub(bytes.len() as u64);
            let instruction = self.decode(bytes, ip)?;
            (cause.matches(&instruction) && instruction.len() == bytes.len())
                .then(|| format!("after {}", format_instruction(&instruction, bytes)))
        })
    }

    fn decode(&self, bytes: &[u8], ip: u64) -> Option<Instruction> {
        let mut decoder = Decoder::with_ip(self.mode().bits(), bytes, ip, DecoderOptions::NONE);
        let mut instruction = Instruction::default();
        decoder.decode_out(&mut instruction);
        (!instruction.is_invalid()).then_some(instruction)
    }
}

/// The kind of instruction behind an exit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExitCause {
    PortIn,
    PortOut,
    Halt,
    MemoryWrite,
}

impl ExitCause {
    fn matches(self, instruction: &Instruction) -> bool {
        use iced_x86::Mnemonic::*;
        let mnemonic = instruction.mnemonic();
        match self {
            ExitCause::PortIn => matches!(mnemonic, In | Insb | Insw | Insd),
            ExitCause::PortOut => matches!(mnemonic, Out | Outsb | Outsw | Outsd),
            ExitCause::Halt => mnemonic == Hlt,
            ExitCause::MemoryWrite => (0..instruction.op_count())
                .any(|i| instruction.op_kind(i) == iced_x86::OpKind::Memory),
        }
    }
}

fn format_instruction(instruction: &Instruction, bytes: &[u8]) -> String {
    let mut text = String::new();
    GasFormatter::new().format(instruction, &mut text);
    format!("{text}  [{}]", hex_bytes(&bytes[..instruction.len()]))
}

fn hex_bytes(bytes: &[u8]) -> String {
    bytes
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(" ")
}

fn segment(name: &str, s: &kvm_segment) -> String {
    format!(
        "{name}={:04x} (base {:#x}, limit {:#x}, type {:#x}{}{})",
        s.selector,
        s.base,
        s.limit,
        s.type_,
        if s.db != 0 { ", 32-bit" } else { "" },
        if s.l != 0 { ", 64-bit" } else { "" }
    )
}

impl fmt::Display for CpuSnapshot {
    /// A register dump for reports.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let r = &self.regs;
        let s = &self.sregs;
        writeln!(f, "  mode: {}", self.mode().name())?;
        writeln!(
            f,
            "  rax={:016x} rbx={:016x} rcx={:016x} rdx={:016x}",
            r.rax, r.rbx, r.rcx, r.rdx
        )?;
        writeln!(
            f,
            "  rsi={:016x} rdi={:016x} rsp={:016x} rbp={:016x}",
            r.rsi, r.rdi, r.rsp, r.rbp
        )?;
        if self.mode() == CpuMode::Long64 {
            writeln!(
                f,
                "  r8 ={:016x} r9 ={:016x} r10={:016x} r11={:016x}",
                r.r8, r.r9, r.r10, r.r11
            )?;
            writeln!(
                f,
                "  r12={:016x} r13={:016x} r14={:016x} r15={:016x}",
                r.r12, r.r13, r.r14, r.r15
            )?;
        }
        writeln!(f, "  rip={:016x} rflags={:08x}", r.rip, r.rflags)?;
        writeln!(f, "  {}  {}", segment("cs", &s.cs), segment("ss", &s.ss))?;
        writeln!(f, "  {}  {}", segment("ds", &s.ds), segment("es", &s.es))?;
        writeln!(
            f,
            "  cr0={:08x} cr2={:016x} cr3={:016x} cr4={:08x} efer={:x}",
            s.cr0, s.cr2, s.cr3, s.cr4, s.efer
        )?;
        writeln!(
            f,
            "  gdt base={:#x} limit={:#x}  idt base={:#x} limit={:#x}",
            s.gdt.base, s.gdt.limit, s.idt.base, s.idt.limit
        )?;
        write!(f, "  at {}: {}", self.location(), self.instruction())?;
        if let Some(cause) = &self.caused_by {
            write!(f, "\n  exit caused by: {cause}")?;
        }
        Ok(())
    }
}

/// Why a guest was stopped by something it did wrong, or by something the VMM cannot handle.
#[derive(Debug, Clone)]
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
}

/// How one guest's run ended.
pub enum GuestOutcome {
    /// The EXIT hypercall, with the guest's status.
    Exited(u8),
    /// `hlt` with interrupts disabled: the guest is done.
    Halted,
    /// The guest pulled the reset line (i8042 0xFE).
    Rebooted,
    /// The user quit with Ctrl-A x (src/terminal.rs).
    Quit,
    /// Still running at the `--timeout`; where it was.
    TimedOut {
        after: Duration,
        cpu: Box<CpuSnapshot>,
    },
    /// Stopped by a fault; where it was.
    Faulted { fault: Fault, cpu: Box<CpuSnapshot> },
    /// Stopped by the user (quitting the `--tui` view, Ctrl-C) while still running.
    Cancelled { cpu: Box<CpuSnapshot> },
}

impl GuestOutcome {
    /// The status the mini-kvm process exits with for this outcome.
    pub fn exit_code(&self) -> u8 {
        match self {
            GuestOutcome::Exited(status) => *status,
            GuestOutcome::Halted | GuestOutcome::Rebooted | GuestOutcome::Quit => 0,
            GuestOutcome::TimedOut { .. } => exit_code::TIMEOUT,
            GuestOutcome::Faulted { fault, .. } => fault.exit_code(),
            GuestOutcome::Cancelled { .. } => exit_code::CANCELLED,
        }
    }

    /// A few words for summaries: "exited 0", "timed out", "faulted: triple fault", ...
    pub fn short_description(&self) -> String {
        match self {
            GuestOutcome::Exited(status) => format!("exited {status}"),
            GuestOutcome::Halted => "halted".to_string(),
            GuestOutcome::Rebooted => "rebooted".to_string(),
            GuestOutcome::TimedOut { .. } => "timed out".to_string(),
            GuestOutcome::Faulted { fault, .. } => format!("faulted: {}", fault.short_name()),
            GuestOutcome::Cancelled { .. } => "stopped".to_string(),
            GuestOutcome::Quit => "quit (Ctrl-A x)".to_string(),
        }
    }

    /// A message for stderr, or `None` when the guest ended normally.
    pub fn report(&self, guest: &str) -> Option<String> {
        match self {
            GuestOutcome::Exited(_) | GuestOutcome::Halted => None,
            GuestOutcome::Rebooted => Some(format!(
                "mini-kvm: guest '{guest}' asked for a reboot (0xfe to the i8042 command port): stopped"
            )),
            GuestOutcome::Quit => Some(format!(
                "mini-kvm: guest '{guest}' stopped: you pressed Ctrl-A x"
            )),
            GuestOutcome::TimedOut { after, cpu } => Some(format!(
                "mini-kvm: guest '{guest}' was still running after {:.1} s (--timeout): stopped\n{cpu}",
                after.as_secs_f64()
            )),
            GuestOutcome::Faulted { fault, cpu } => {
                Some(format!("mini-kvm: guest '{guest}' faulted: {fault}\n{cpu}"))
            }
            GuestOutcome::Cancelled { cpu } => Some(format!(
                "mini-kvm: guest '{guest}' was stopped while still running\n{cpu}"
            )),
        }
    }
}

/// What other threads may watch while a guest runs: its exit count, and how it ended.
#[derive(Debug, Default)]
pub struct LiveCounters {
    exits: std::sync::atomic::AtomicU64,
    ended: std::sync::Mutex<Option<(u8, String)>>,
}

impl LiveCounters {
    pub fn count_exit(&self) {
        self.exits
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }

    pub fn exits(&self) -> u64 {
        self.exits.load(std::sync::atomic::Ordering::Relaxed)
    }

    pub fn finish(&self, status: u8, description: String) {
        *self.ended.lock().unwrap_or_else(|p| p.into_inner()) = Some((status, description));
    }

    /// `None` while the guest runs; then its exit status and a short description.
    pub fn ended(&self) -> Option<(u8, String)> {
        self.ended.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

/// Counts of VM exits and where the time went.
#[derive(Debug, Default, Clone)]
pub struct ExitStats {
    /// Exits by reason ("IO_OUT", "HLT", ...).
    pub by_reason: BTreeMap<&'static str, u64>,
    /// Port-I/O exits by (port, "in"/"out"), with the device's name.
    pub by_port: BTreeMap<(u16, &'static str), (&'static str, u64)>,
    /// Wall time inside KVM_RUN (guest code, plus what KVM handles in the kernel).
    pub in_guest: Duration,
    /// Wall time from the start of the run to its end.
    pub total: Duration,
}

impl ExitStats {
    pub fn total_exits(&self) -> u64 {
        self.by_reason.values().sum()
    }

    pub fn count(&mut self, reason: &'static str) {
        *self.by_reason.entry(reason).or_default() += 1;
    }

    pub fn count_port(&mut self, port: u16, direction: &'static str, device: &'static str) {
        self.by_port
            .entry((port, direction))
            .or_insert((device, 0))
            .1 += 1;
    }

    /// The `--stats` table. `host` names the host's KVM module: the figures mean very different
    /// things under hardware virtualization and under KVM's instruction emulator.
    pub fn table(&self, guest: &str, host: &str) -> String {
        let mut out = String::new();
        let total = self.total_exits();
        let _ = writeln!(out, "VM exits of '{guest}': {total}");
        let _ = writeln!(out, "  host KVM: {host}");
        let _ = writeln!(out, "  {:<20} {:>10}", "by reason", "exits");
        for (reason, count) in &self.by_reason {
            let _ = writeln!(out, "  {reason:<20} {count:>10}");
        }
        if !self.by_port.is_empty() {
            let _ = writeln!(out, "  {:<20} {:>10}  device", "by port", "exits");
            for ((port, direction), (device, count)) in &self.by_port {
                let _ = writeln!(
                    out,
                    "  {:<20} {count:>10}  {device}",
                    format!("{port:#06x} {direction}")
                );
            }
        }
        let in_vmm = self.total.saturating_sub(self.in_guest);
        let percent = |part: Duration| {
            if self.total.is_zero() {
                0.0
            } else {
                100.0 * part.as_secs_f64() / self.total.as_secs_f64()
            }
        };
        let _ = writeln!(out, "  {:<20} {:>10}  share", "time", "ms");
        let _ = writeln!(
            out,
            "  {:<20} {:>10.3}  {:.1}%",
            "in guest (KVM_RUN)",
            ms(self.in_guest),
            percent(self.in_guest)
        );
        let _ = writeln!(
            out,
            "  {:<20} {:>10.3}  {:.1}%",
            "in VMM",
            ms(in_vmm),
            percent(in_vmm)
        );
        let _ = writeln!(out, "  {:<20} {:>10.3}", "total run time", ms(self.total));
        if total > 0 {
            let _ = writeln!(
                out,
                "  {:<20} {:>10.3}",
                "per exit (avg, us)",
                self.total.as_secs_f64() * 1e6 / total as f64
            );
        }
        out
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}
