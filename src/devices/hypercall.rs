//! The hypercall device on port 0x500: the guest↔VMM interface of docs/hypercall-abi.md.
//!
//! A guest writes a call number to port 0x500 with its arguments in RBX, RCX and RSI (at the
//! width of its mode). That one `out` is one VM exit; this device does the call and writes the
//! result into RAX before the guest resumes. Pointers are guest-linear: the whole range is checked
//! (and translated page by page when paging is on) before a byte is read or written.

use std::time::Instant;

use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

use super::bus::{GuestCpu, GuestStop, IoAction, PortIoDevice};
use crate::arch::CpuMode;
use crate::console::{GuestInput, GuestOutput, InputWait};
use crate::vmm::memory::range_is_ram;

pub const HYPERCALL_PORT: u16 = 0x500;

/// The call numbers of ABI v1.
pub mod call {
    pub const EXIT: u8 = 0x00;
    pub const PUTCHAR: u8 = 0x01;
    pub const PUTNUM: u8 = 0x02;
    pub const NEWLINE: u8 = 0x03;
    pub const GETCHAR: u8 = 0x04;
    pub const WRITE: u8 = 0x05;
    pub const READ: u8 = 0x06;
    pub const CLOCK: u8 = 0x07;
}

/// The name of a call, for traces.
pub fn call_name(number: u8) -> &'static str {
    match number {
        call::EXIT => "EXIT",
        call::PUTCHAR => "PUTCHAR",
        call::PUTNUM => "PUTNUM",
        call::NEWLINE => "NEWLINE",
        call::GETCHAR => "GETCHAR",
        call::WRITE => "WRITE",
        call::READ => "READ",
        call::CLOCK => "CLOCK",
        _ => "unknown",
    }
}

/// A failed call: the guest gets a negative result and keeps running.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HypercallError {
    /// -1: no such call.
    UnknownCall,
    /// -2: a pointer range outside guest memory, or not mapped.
    Fault,
    /// -3: an argument out of range.
    InvalidArgument,
}

impl HypercallError {
    pub fn code(self) -> i64 {
        match self {
            HypercallError::UnknownCall => -1,
            HypercallError::Fault => -2,
            HypercallError::InvalidArgument => -3,
        }
    }

    fn describe(self) -> &'static str {
        match self {
            HypercallError::UnknownCall => "unknown call number",
            HypercallError::Fault => "EFAULT: the buffer is not (all) in guest memory",
            HypercallError::InvalidArgument => "invalid argument",
        }
    }
}

/// What one call did.
enum Outcome {
    Result(u64),
    Stop(GuestStop),
}

pub struct HypercallDevice {
    memory: GuestMemoryMmap,
    output: GuestOutput,
    input: GuestInput,
    started: Instant,
    /// Print a line per call on stderr (`--verbose`), after this label (the guest's label when
    /// several guests run, or "").
    trace: Option<String>,
    /// Reused for WRITE and READ, so a call does not allocate once they have grown.
    buffer: Vec<u8>,
    pieces: Vec<(u64, u64)>,
}

impl HypercallDevice {
    pub fn new(
        memory: GuestMemoryMmap,
        output: GuestOutput,
        input: GuestInput,
        trace: Option<String>,
    ) -> HypercallDevice {
        HypercallDevice {
            memory,
            output,
            input,
            started: Instant::now(),
            trace,
            buffer: Vec::new(),
            pieces: Vec::new(),
        }
    }

    fn call(
        &mut self,
        number: u8,
        args: [u64; 3],
        cpu: &mut dyn GuestCpu,
    ) -> Result<Outcome, HypercallError> {
        match number {
            call::EXIT => {
                let status = u8::try_from(args[0]).map_err(|_| HypercallError::InvalidArgument)?;
                Ok(Outcome::Stop(GuestStop::Exit(status)))
            }
            call::PUTCHAR => {
                self.output.write_bytes(&[args[0] as u8]);
                Ok(Outcome::Result(0))
            }
            call::PUTNUM => {
                let mut digits = [0u8; 20];
                self.output
                    .write_bytes(format_decimal(args[0], &mut digits));
                Ok(Outcome::Result(0))
            }
            call::NEWLINE => {
                self.output.write_bytes(b"\n");
                Ok(Outcome::Result(0))
            }
            call::GETCHAR => {
                self.output.flush();
                let mut byte = [0u8; 1];
                match self.input.read_blocking(&mut byte) {
                    InputWait::Read(_) => Ok(Outcome::Result(u64::from(byte[0]))),
                    // -1 ends the input; a cancelled wait means the guest is being stopped
                    // anyway, and the result is never seen.
                    InputWait::EndOfInput | InputWait::Cancelled => {
                        Ok(Outcome::Result(negative(-1)))
                    }
                }
            }
            call::WRITE => {
                let (pointer, len) = (args[0], args[1]);
                self.check_guest_buffer(cpu, pointer, len)?;
                self.buffer.resize(len as usize, 0);
                read_chunks(&self.memory, &self.pieces, &mut self.buffer);
                self.output.write_bytes(&self.buffer);
                // A buffer is a unit the guest chose, often a prompt without its newline (the
                // teaching OS's "Select: ", read back through the keyboard, not GETCHAR): show
                // it now, not at the next 100 ms flush. (Labelled output still waits for whole
                // lines.)
                self.output.flush();
                Ok(Outcome::Result(len))
            }
            call::READ => {
                let (pointer, capacity) = (args[0], args[1]);
                if capacity == 0 {
                    return Err(HypercallError::InvalidArgument);
                }
                self.check_guest_buffer(cpu, pointer, capacity)?;
                self.output.flush();
                self.buffer.resize(capacity as usize, 0);
                match self.input.read_blocking(&mut self.buffer) {
                    InputWait::Read(n) => {
                        write_chunks(&self.memory, &self.pieces, &self.buffer[..n]);
                        Ok(Outcome::Result(n as u64))
                    }
                    InputWait::EndOfInput | InputWait::Cancelled => Ok(Outcome::Result(0)),
                }
            }
            call::CLOCK => Ok(Outcome::Result(self.started.elapsed().as_nanos() as u64)),
            _ => Err(HypercallError::UnknownCall),
        }
    }

    /// Checks a guest buffer and leaves in `self.pieces` the guest-physical pieces it is made of
    /// (one piece when paging is off). Fails unless every byte is mapped and is guest RAM.
    fn check_guest_buffer(
        &mut self,
        cpu: &mut dyn GuestCpu,
        pointer: u64,
        len: u64,
    ) -> Result<(), HypercallError> {
        let mode = cpu.mode();
        let linear = if mode == CpuMode::Real {
            // Real mode: the pointer is an offset into the data segment.
            cpu.data_segment_base() + (pointer & 0xffff)
        } else {
            pointer
        };
        let end = linear.checked_add(len).ok_or(HypercallError::Fault)?;
        if mode != CpuMode::Long64 && end > 1 << 32 {
            return Err(HypercallError::Fault);
        }
        let pieces = &mut self.pieces;
        pieces.clear();
        let mut address = linear;
        while address < end {
            const PAGE: u64 = 4096;
            let piece_end = end.min((address / PAGE + 1) * PAGE);
            let physical = cpu.translate(address).ok_or(HypercallError::Fault)?;
            let piece_len = piece_end - address;
            if !range_is_ram(&self.memory, physical, piece_len) {
                return Err(HypercallError::Fault);
            }
            match pieces.last_mut() {
                Some((start, len)) if *start + *len == physical => *len += piece_len,
                _ => pieces.push((physical, piece_len)),
            }
            address = piece_end;
        }
        Ok(())
    }
}

/// Formats `value` in decimal into `digits` without allocating; returns the digits used.
fn format_decimal(mut value: u64, digits: &mut [u8; 20]) -> &[u8] {
    let mut start = digits.len();
    loop {
        start -= 1;
        digits[start] = b'0' + (value % 10) as u8;
        value /= 10;
        if value == 0 {
            return &digits[start..];
        }
    }
}

/// -1, -2, ... as a 64-bit two's complement value (`set_result` cuts it to the mode's width).
fn negative(value: i64) -> u64 {
    value as u64
}

/// Copies guest memory pieces into `buffer` (already checked to be RAM).
fn read_chunks(memory: &GuestMemoryMmap, pieces: &[(u64, u64)], buffer: &mut [u8]) {
    let mut offset = 0;
    for &(address, len) in pieces {
        let len = len as usize;
        // Cannot fail: `guest_buffer` checked that every piece is RAM.
        let _ = memory.read_slice(&mut buffer[offset..offset + len], GuestAddress(address));
        offset += len;
    }
}

/// Copies `bytes` into guest memory pieces (already checked to be RAM), in order.
fn write_chunks(memory: &GuestMemoryMmap, pieces: &[(u64, u64)], bytes: &[u8]) {
    let mut remaining = bytes;
    for &(address, len) in pieces {
        let n = remaining.len().min(len as usize);
        let _ = memory.write_slice(&remaining[..n], GuestAddress(address));
        remaining = &remaining[n..];
        if remaining.is_empty() {
            break;
        }
    }
}

impl PortIoDevice for HypercallDevice {
    fn name(&self) -> &'static str {
        "hypercall"
    }

    /// Nothing to read from port 0x500: all ones, like an unclaimed port.
    fn read(&mut self, _port: u16, data: &mut [u8]) {
        data.fill(0xff);
    }

    fn write(&mut self, _port: u16, data: &[u8], cpu: &mut dyn GuestCpu) -> IoAction {
        // The call number is AL, whatever the width of the `out`.
        let number = data.first().copied().unwrap_or(0xff);
        let mask = cpu.mode().register_mask();
        let args = cpu.hypercall_args().map(|arg| arg & mask);
        let outcome = self.call(number, args, cpu);
        if let Some(label) = &self.trace {
            trace_call(label, number, args, &outcome, mask);
        }
        match outcome {
            Ok(Outcome::Result(value)) => {
                cpu.set_result(value);
                IoAction::Continue
            }
            Ok(Outcome::Stop(stop)) => {
                self.output.flush();
                IoAction::Stop(stop)
            }
            Err(error) => {
                cpu.set_result(negative(error.code()));
                IoAction::Continue
            }
        }
    }

    fn flush(&mut self) {
        self.output.flush();
    }
}

fn trace_call(
    label: &str,
    number: u8,
    args: [u64; 3],
    outcome: &Result<Outcome, HypercallError>,
    mask: u64,
) {
    let [a0, a1, a2] = args;
    let what = match outcome {
        Ok(Outcome::Result(value)) => format!("-> {}", value & mask),
        Ok(Outcome::Stop(GuestStop::Exit(status))) => {
            format!("-> guest exits with status {status}")
        }
        Ok(Outcome::Stop(GuestStop::Reboot)) => "-> reboot".to_string(),
        Err(error) => format!("-> {} ({})", error.code(), error.describe()),
    };
    eprintln!(
        "{label}    hypercall {number:#04x} {}(arg0={a0:#x}, arg1={a1:#x}, arg2={a2:#x}) {what}",
        call_name(number)
    );
}
