//! A vCPU's register report: its registers at one moment, with the instruction at RIP decoded (iced-x86, AT&T syntax
//! like our guest sources): what fault reports, timeouts and `--verbose` show.

use std::fmt;

use iced_x86::{Decoder, DecoderOptions, Formatter, GasFormatter, Instruction};
use kvm_bindings::{kvm_regs, kvm_segment, kvm_sregs};

use crate::arch::CpuMode;

/// The registers of a vCPU at one moment, and the code bytes at its RIP.
#[derive(Clone)]
pub struct CpuReport {
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
    /// An application processor still waiting for the INIT and SIPI that would start it: its
    /// registers are the reset state, of no interest.
    pub never_started: bool,
}

impl CpuReport {
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

impl fmt::Display for CpuReport {
    /// A register dump for reports.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.never_started {
            return write!(
                f,
                "  never started: waiting for the INIT and SIPI that would start this CPU"
            );
        }
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
